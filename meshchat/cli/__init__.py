"""The ``meshchat`` command: profiles, invites, contacts, the node, the store and the simulator.

This is the top layer (DESIGN.md: ... -> node -> cli), a thin typer + rich front end. It holds no
protocol logic: it finds profiles, asks for passphrases, prints, and turns the library's typed errors
into one line on stderr. One module per command group:

- ``identity``: ``init``, ``id``, ``invite``, ``safety-number``, ``add``
- ``contacts``: ``contact list | verify | accept-key | rename | block | unblock | blocked`` (no node)
- ``network``: ``node``, ``chat``, ``send``, ``mailbox`` (the live node runs in ``runner``)
- ``app``: ``app`` (the local web app: ``meshchat.app``)
- ``daemon``: ``daemon`` (JSON-RPC over a Unix socket and a WebSocket: ``meshchat.app``)
- ``store``: ``outbox``, ``status``, ``inbox``
- ``files``: ``files [--fetch N]``, ``send --file`` (the network part in ``file_runner``)
- ``group``: ``group create | invite | join | members | remove | leave | rename | promote | demote |
  send | history | list`` (the network part in ``group_runner``; ``chat --group`` too)
- ``devices``: ``device link | approve | list | remove`` (the network part in ``device_runner``)
- ``documents``: ``sign``, ``verify`` (offline), ``cosign propose | list | status | sign | revoke |
  export`` (the network part in ``cosign_runner``)
- ``credentials``: ``credential request | issue | revoke | list | present | verify | trust`` (network part
  in ``credential_runner``)
- ``sim``: ``sim``; ``demo``: ``demo`` (its steps in ``demo_local``, its network part in ``demo_net``)
- ``common``: options, consoles, the error line, ``terminal_text``, profiles and passphrases
- ``typer_words``: typer's own words ("Usage:", "Options", the help option) in the user's language

Every user-visible string goes through ``meshchat.i18n`` (``_("sent to {name}").format(name=n)``); a
command's help is ``help=_(...)`` in its decorator, not its docstring, which gettext cannot see
(tests/test_i18n.py checks both).

Start-up stays fast (``meshchat --help``): command modules import trio, py-libp2p, the simulator and
matplotlib only inside the commands that use them.

Contract for scripts: with ``--json`` a command prints exactly one JSON object on stdout and nothing
else there (``node``, ``chat`` and ``mailbox``: one object per line); ``meshchat invite`` prints the bare
token on stdout; decoration and warnings go to stderr. Text output never passes a peer's control
characters or rich markup to the terminal; JSON carries them exactly. Exit status: 0 success; 1 a
failure, explained by one ``error: ...`` line on stderr; 2 a command line that does not parse or
cannot work as given (also one ``error:`` line); 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from meshchat.cli import app as _app
from meshchat.cli import contacts as _contacts
from meshchat.cli import credentials as _credentials
from meshchat.cli import daemon as _daemon
from meshchat.cli import demo as _demo
from meshchat.cli import devices as _devices
from meshchat.cli import documents as _documents
from meshchat.cli import files as _files
from meshchat.cli import group as _group
from meshchat.cli import identity as _identity
from meshchat.cli import network as _network
from meshchat.cli import sim as _sim
from meshchat.cli import store as _store
from meshchat.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    KEY_FILE,
    LIBP2P_LOG_ENV,
    PASSPHRASE_ENV,
    PROFILE_ENV,
    PROFILE_FILE,
    CommandError,
    UsageError,
    describe,
    print_error,
)
from meshchat.cli.typer_words import TranslatedGroup, use_meshchat_domain
from meshchat.errors import MeshchatError
from meshchat.i18n import _

__all__ = [
    "KEY_FILE",
    "LIBP2P_LOG_ENV",
    "PASSPHRASE_ENV",
    "PROFILE_ENV",
    "PROFILE_FILE",
    "CommandError",
    "app",
    "main",
]


class _MeshchatGroup(TranslatedGroup):
    """The command group, with one error policy for every command: one ``error:`` line, no traceback."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run a command; report ``MeshchatError``, ``CommandError`` and usage errors as one line.

        typer's standalone mode would print usage errors as a multi-line panel and let library errors
        escape as tracebacks, so this runs it non-standalone and does the exiting itself. typer still
        turns Ctrl-C into exit status 130, quietly.
        """
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            status = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except UsageError as exc:
            print_error(str(exc))
            sys.exit(EXIT_USAGE)
        except (MeshchatError, CommandError) as exc:
            print_error(describe(exc))
            sys.exit(EXIT_FAILURE)
        except typer.TyperException as exc:  # click's usage and parameter errors, vendored by typer
            if type(exc).__name__ == "NoArgsIsHelpError":
                sys.exit(exc.exit_code)  # typer has already printed the help; the same test typer makes
            ctx = getattr(exc, "ctx", None)
            hint = _(" (see: {command} --help)").format(command=ctx.command_path) if ctx is not None else ""
            print_error(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except typer.Abort:
            print_error(_("aborted"))
            sys.exit(EXIT_FAILURE)
        sys.exit(status if isinstance(status, int) else 0)


app = typer.Typer(
    cls=_MeshchatGroup,
    name="meshchat",
    help=_("meshchat: end-to-end encrypted peer-to-peer messaging with no central operator."),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from meshchat import __version__  # noqa: PLC0415

        typer.echo(f"meshchat {__version__}")
        raise typer.Exit


@app.callback(help=_("meshchat: end-to-end encrypted peer-to-peer messaging with no central operator."))
def _options(
    *,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help=_("Print the version and exit.")
        ),
    ] = False,
) -> None:
    """meshchat: end-to-end encrypted peer-to-peer messaging with no central operator."""


app.command("init", help=_("Create a new identity in a profile folder; never replaces an existing one."))(
    _identity.init
)
app.command("id", help=_("Show this profile's PeerId and fingerprint (no passphrase needed)."))(
    _identity.show_id
)
app.command(
    "invite",
    help=_(
        "Print a signed invite token alone on stdout, so TOKEN=$(meshchat invite) works.\n"
        "\n"
        "Without --addr it carries the addresses a running node of this profile recorded; with none, and no\n"
        "--mailbox, it warns on stderr that nobody can reach you with it yet."
    ),
)(_identity.invite)
app.command(
    "safety-number",
    help=_("Show the safety number you and a contact should both see (no passphrase needed)."),
)(_identity.safety_number_command)
app.command("add", help=_("Verify an invite and store it as a contact."))(_identity.add_command)
app.add_typer(_contacts.contact_app, name="contact")
app.command(
    "demo",
    help=_(
        "Walk through identities, invites, sealed messages and what a relay sees, then send them across\n"
        "four nodes on 127.0.0.1 over TCP + Noise + yamux (everything in a temporary folder)."
    ),
)(_demo.demo)
app.command(
    "node",
    help=_(
        "Run a node on the network until Ctrl-C: print its PeerId and addresses, then every event.\n"
        "It goes on delivering the profile's outbox and syncs its inbox from mailboxes."
    ),
)(_network.node_command)
app.command(
    "send",
    help=_(
        "Send one sealed message to a contact: it waits in the outbox until a peer on their shard (or a\n"
        "--mailbox) has it, and, when that is the contact itself, a few seconds for their receipt;\n"
        "`meshchat status` and `meshchat outbox` then show where it is. With --file PATH it sends a file\n"
        "and stays up (a progress bar on stderr) until the contact fetched it or a mailbox holds it all."
    ),
)(_network.send_command)
app.command(
    "chat",
    help=_(
        "Talk to a contact (--to) or a group (--group): each line you type goes to them sealed, in order;\n"
        "what anyone sends you is printed."
    ),
)(_network.chat_command)
app.command(
    "mailbox",
    help=_(
        "Run a mailbox until Ctrl-C: keep sealed envelopes for offline recipients (it cannot read them)\n"
        "until they sync or the envelopes expire, within per-recipient, per-sender and total quotas."
    ),
)(_network.mailbox_command)
app.command(
    "app",
    help=_(
        "Run the node with the local web app on 127.0.0.1 until Ctrl-C; print the app's address "
        "(it carries this run's token: keep it to yourself)."
    ),
)(_app.app_command)
app.command("daemon", help=_daemon.DAEMON_HELP)(_daemon.daemon_command)
app.command(
    "outbox",
    help=_("Where your sent messages are: queued, relayed, stored, delivered, read, expired or failed."),
)(_store.outbox_command)
app.command("status", help=_("Where one sent message is, and the last problem reported for it."))(
    _store.status_command
)
app.command(
    "inbox",
    help=_("Messages this profile received (kept in its store, in arrival order, each exactly once)."),
)(_store.inbox_command)
app.command(
    "files",
    help=_(
        "Files received (attachments, numbered) and sent; --fetch NUMBER fetches one (a progress bar on\n"
        "stderr) into the profile's downloads folder and prints where it landed."
    ),
)(_files.files_command)
app.command(
    "sim",
    help=_("Simulate a gossip network of real routers on a virtual clock and report delivery and latency."),
)(_sim.sim_command)
app.add_typer(_group.group_app, name="group")
app.add_typer(_devices.device_app, name="device")
app.command(
    "sign",
    help=_(
        "Sign FILE (or text on standard input) with this profile's key: a detached signature anyone can\n"
        "check offline."
    ),
)(_documents.sign_command)
app.command(
    "verify",
    help=_("Check a signature (or a co-signing bundle) against FILE, offline: who signed it and when."),
)(_documents.verify_command)
app.add_typer(_documents.cosign_app, name="cosign")
app.add_typer(_credentials.credential_app, name="credential")


def main() -> None:
    """Run the ``meshchat`` command (the console script and ``python -m meshchat``), in the user's
    language (typer's own words too: ``typer_words``)."""
    use_meshchat_domain()
    app(prog_name="meshchat")
