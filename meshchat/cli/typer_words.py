"""typer's own words ("Usage:", "Options", "Show this message and exit.") in the user's language.

meshchat's strings go through ``meshchat.i18n``; the words typer itself prints come from two places:

- typer's ``rich_utils`` and ``core`` call the standard ``gettext.gettext`` (the process-wide text
  domain, "messages" unless changed) for the panel titles and markers: "Options", "Commands",
  "Arguments", "[default: {}]", "[required]", "Error", ... ``use_meshchat_domain`` makes meshchat's
  catalog that domain. It changes process-wide state, so only the ``meshchat`` command's entry point
  (``meshchat.cli.main``) calls it, never the library; ``TYPER_WORDS`` lists those msgids so that the
  extraction puts them in meshchat's template.
- the click that typer 0.29 vendors has no gettext calls left: "Usage: " and the help option's "Show
  this message and exit." are plain strings. ``adopt`` replaces those two in every command
  and group of the ``meshchat`` command (``adopt``).

click's parse errors ("No such option", "Missing argument") stay English: they are f-strings inside
the vendored click, out of reach of a catalog.
"""

from __future__ import annotations

import gettext
from typing import TYPE_CHECKING, Any

from typer.core import TyperGroup

from meshchat.i18n import DOMAIN, LOCALE_DIR, N_, _

if TYPE_CHECKING:  # the click typer vendors (typer._click), for annotations only
    from typer._click.core import Command, Context
    from typer._click.formatting import HelpFormatter
    from typer.core import TyperOption

__all__ = ["TYPER_WORDS", "TranslatedGroup", "adopt", "use_meshchat_domain"]

#: The attribute ``adopt`` marks a command with.
_ADOPTED = "_meshchat_translated"

#: The strings typer 0.29 passes to ``gettext.gettext`` (typer/rich_utils.py and typer/core.py), as
#: msgids of meshchat's catalog. A newer typer may add some: they then show in English until listed.
TYPER_WORDS = (
    N_("Arguments"),
    N_("Options"),
    N_("Commands"),
    N_("Error"),
    N_("Aborted."),
    N_("Aborted!"),
    N_("(deprecated) "),
    N_("[default: {}]"),
    N_("[env var: {}]"),
    N_("[required]"),
    N_("default: {default}"),
    N_("env var: {var}"),
    N_("required"),
    N_("(dynamic)"),
    N_("Missing command."),
    N_("No such command {name!r}."),
    N_("Try [blue]'{command_path} {help_option}'[/] for help."),
)


def use_meshchat_domain() -> None:
    """Make meshchat's catalog the process's default gettext domain, so typer's ``gettext.gettext``
    calls find their translations in it (in the language ``meshchat.i18n`` chose: both read the same
    environment variables). Process-wide: for the ``meshchat`` command's entry point only."""
    gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))
    gettext.textdomain(DOMAIN)


class TranslatedGroup(TyperGroup):
    """typer's group class whose help, and every subcommand's, speaks the user's language (``adopt``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        adopt(self)


def adopt(command: Command | None) -> Command | None:
    """``command`` with "Usage: " and its help option's text translated; for a group, every command it
    hands out adopted too (typer builds commands from its own classes, one per module's ``typer.Typer``
    and ``@app.command``: this reaches all of them without a ``cls=`` at each). Instance attributes
    over the class's methods, so nothing else about the command changes."""
    if command is None or getattr(command, _ADOPTED, False):
        return command
    cls = type(command)

    def get_help_option(ctx: Context) -> TyperOption | None:
        option: TyperOption | None = cls.get_help_option(command, ctx)
        if option is not None:
            option.help = _("Show this message and exit.")
        return option

    def format_usage(ctx: Context, formatter: HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, " ".join(command.collect_usage_pieces(ctx)), _("Usage: "))

    def get_command(ctx: Context, cmd_name: str) -> Command | None:
        return adopt(cls.get_command(command, ctx, cmd_name))  # type: ignore[attr-defined]

    setattr(command, "get_help_option", get_help_option)  # noqa: B010 (mypy: a method is not assignable)
    setattr(command, "format_usage", format_usage)  # noqa: B010
    if isinstance(command, TyperGroup):
        setattr(command, "get_command", get_command)  # noqa: B010
    setattr(command, _ADOPTED, True)
    return command
