"""What every ``meshchat`` command shares: option types, consoles, the one error line, text made safe
for a terminal, profile folders and passphrases.

This module imports nothing heavy (no trio, py-libp2p or simulator): every command module imports it,
and ``meshchat --help`` loads every command module. Commands import the heavy layers inside their
bodies. It holds no protocol logic.

A profile is a folder holding ``identity.key`` (written by ``meshchat.identity.save_identity``) and
``profile.json`` (``{"name": ...}``, the display name). The folder is ``--profile DIR``, else
``$MESHCHAT_PROFILE``, else the platform's user data folder.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import shlex
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from meshchat.errors import KeyFileError, KeyFileProblem, ProfileError
from meshchat.i18n import _
from meshchat.profile import (
    ADDRESSES_FILE,
    LOCK_FILE,
    ProfileHolder,
    check_profile_free,
    profile_holder,
)

if TYPE_CHECKING:
    from meshchat.identity import Identity, PublicIdentity

__all__ = [
    "ADDRESSES_FILE",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "KEY_FILE",
    "LIBP2P_LOG_ENV",
    "LOCK_FILE",
    "MAX_RECORDED_ADDRESSES",
    "MAX_RECORDED_ADDRESS_LENGTH",
    "PASSPHRASE_ENV",
    "PROFILE_ENV",
    "PROFILE_FILE",
    "CommandError",
    "JsonOption",
    "MailboxOption",
    "ProfileHolder",
    "ProfileOption",
    "UsageError",
    "check_profile_free",
    "describe",
    "emit_json",
    "load_profile_identity",
    "print_error",
    "profile_dir",
    "profile_holder",
    "public_identity",
    "quiet_libp2p",
    "read_profile_name",
    "read_recorded_addresses",
    "require_key_file",
    "stderr_console",
    "stdout_console",
    "terminal_markup",
    "terminal_text",
    "write_profile",
]

#: The key file inside a profile folder (``meshchat.identity.KEY_FILE_NAME``, spelled out here so this
#: module does not import the identity layer and its crypto library at start-up).
KEY_FILE = "identity.key"
#: The display-name file inside a profile folder.
PROFILE_FILE = "profile.json"
#: Largest ``addresses.json`` read, bytes: a few dozen multiaddrs fit in a fraction of it.
MAX_ADDRESSES_FILE = 64 * 1024
#: Most recorded addresses an invite takes, in the node's order: what one invite carries
#: (``meshchat.wire.invite.MAX_ADDRS``; a test keeps the two equal).
MAX_RECORDED_ADDRESSES = 8
#: Longest recorded address used (``meshchat.wire.invite.MAX_ADDR_LENGTH``).
MAX_RECORDED_ADDRESS_LENGTH = 256
#: Environment variable holding the passphrase, for scripts and CI (a terminal prompt otherwise).
PASSPHRASE_ENV = "MESHCHAT_PASSPHRASE"
#: Environment variable naming the profile folder when ``--profile`` is not given.
PROFILE_ENV = "MESHCHAT_PROFILE"
#: Environment variable: the level of py-libp2p's own log on stderr (default CRITICAL: silent).
LIBP2P_LOG_ENV = "MESHCHAT_LIBP2P_LOG"
#: Exit status of a command that failed for a reason its ``error:`` line explains.
EXIT_FAILURE = 1
#: Exit status of a command line that cannot work as given (click's usage errors use it too).
EXIT_USAGE = 2


class CommandError(Exception):
    """A command cannot do what was asked: a missing passphrase, a bad argument, a file it cannot write.

    Library errors (``MeshchatError``) explain themselves; this covers what only the command line knows.
    """


class UsageError(CommandError):
    """The command line asks for something that cannot work (an output path in a missing folder):
    found before any work is done, exit status 2 like any other usage error."""


ProfileOption = Annotated[
    Path | None,
    typer.Option(
        "--profile",
        envvar=PROFILE_ENV,
        metavar="DIR",
        show_default=False,
        help=_("Profile folder (default: $MESHCHAT_PROFILE, else the user data folder)."),
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help=_("Print one JSON object on stdout instead of text."))
]
MailboxOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="MULTIADDR", help=_("Store sent messages on, and sync from, this mailbox (repeatable).")
    ),
]


# --- text for a terminal --------------------------------------------------------------------------

#: Escape sequences a terminal acts on: CSI (colours, cursor moves, erasing), OSC / DCS / APC / PM /
#: SOS strings (window title, hyperlinks, clipboard) up to their terminator, and two-byte ``ESC x``.
_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI: parameters, intermediates, final byte
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, DCS, SOS, PM, APC strings
    r"|\x1b[ -~]?"  # any other escape: the next character is the command
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # the 8-bit CSI
    r"|[\x90\x9d\x98\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # the 8-bit string introducers
)
#: Characters that reorder what follows them on screen (Trojan Source, CVE-2021-42574): a name or a
#: message could show text in another order than it holds.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def _visible(ch: str) -> str:
    """What a control character shows as: its escape, as Python writes it (``\\x07``, ``\\u202e``)."""
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def terminal_text(text: str, *, multiline: bool = False) -> str:
    """``text`` made safe to print on a terminal: nothing in it can colour, move the cursor, set the
    window title, ring, erase or reorder what the terminal shows.

    Escape sequences are removed whole; every other control character (C0 but tab, and newline when
    ``multiline``; DEL; C1; bidi overrides and isolates) is shown as its ``\\x..`` / ``\\u....`` escape.
    Single-line output (a chat line, an event, a name) escapes newlines too, so a message cannot print
    a line that looks like another message. JSON output needs none of this: it escapes them already.
    """
    stripped = _ESCAPE_SEQUENCE.sub("", text)
    keep = "\t\n" if multiline else "\t"
    return "".join(
        _visible(ch)
        if ch not in keep
        and (unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS or ch in "\u2028\u2029")
        else ch
        for ch in stripped
    )


def terminal_markup(text: str, *, multiline: bool = False) -> str:
    """``terminal_text`` for a rich markup string: also escaped, so ``[bold]`` in a name is shown, not
    obeyed."""
    return escape(terminal_text(text, multiline=multiline))


# --- output ---------------------------------------------------------------------------------------


def stdout_console() -> Console:
    """Rich output on stdout (no automatic highlighting: peer-chosen text gets no colours)."""
    return Console(highlight=False)


def stderr_console() -> Console:
    """Rich output on stderr: decoration, warnings and progress, so stdout stays for results."""
    return Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """The one ``error: ...`` line on stderr (an error may quote a peer's text: made safe)."""
    line = terminal_text(" ".join(message.splitlines()).strip())
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {line}", err=True)


def describe(exc: Exception) -> str:
    """An error's text for its ``error:`` line."""
    if isinstance(exc, KeyFileError) and exc.problem is KeyFileProblem.INSECURE_PERMISSIONS:
        # The library's text says "other users may read it"; name the problem so it can be searched.
        return f"insecure permissions: {exc}"
    return str(exc)


def emit_json(value: dict[str, object]) -> None:
    """The one JSON object a ``--json`` command prints on stdout."""
    typer.echo(json.dumps(value))


def quiet_libp2p() -> None:
    """Show py-libp2p's log records on stderr from level $MESHCHAT_LIBP2P_LOG up (unset: none).

    ``meshchat.net`` gives the ``libp2p`` logger a ``NullHandler`` (nothing reaches stderr by default);
    asking for a level attaches a stderr handler to that logger.
    """
    level = os.environ.get(LIBP2P_LOG_ENV, "").upper()
    if not level:
        return
    if level not in logging.getLevelNamesMapping():
        raise CommandError(
            _("${libp2p_log_env} must be a log level (DEBUG, INFO, WARNING, ERROR), not {level!r}").format(
                libp2p_log_env=LIBP2P_LOG_ENV, level=level
            )
        )
    logger = logging.getLogger("libp2p")
    logger.setLevel(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("libp2p %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)


# --- profiles -------------------------------------------------------------------------------------


def profile_dir(option: Path | None) -> Path:
    """The profile folder: ``--profile`` (or ``$MESHCHAT_PROFILE``), else the user data folder."""
    if option is not None:
        return option.expanduser()
    import platformdirs  # noqa: PLC0415 (only when no folder was given)

    return Path(platformdirs.user_data_dir("meshchat", appauthor=False))


def require_key_file(profile: Path) -> Path:
    """The profile's key file; ``ProfileError`` saying how to create one if there is none."""
    key_path = profile / KEY_FILE
    if not key_path.is_file():
        raise ProfileError(
            f"no meshchat profile in {profile}; run: meshchat init --profile {shlex.quote(str(profile))}"
        )
    return key_path


def read_profile_name(profile: Path) -> str:
    """The display name in ``profile.json`` ("" without one)."""
    path = profile / PROFILE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise CommandError(_("cannot read {path}: {exc}").format(path=path, exc=exc.strerror or exc)) from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CommandError(_("{path} is not valid UTF-8 JSON: {exc}").format(path=path, exc=exc)) from exc
    name = data.get("name", "") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise CommandError(_('{path} must be a JSON object whose "name" is a string').format(path=path))
    return name


def write_profile(profile: Path, name: str) -> None:
    """Write ``profile.json`` atomically: a reader sees the old file or the new one, never half of one."""
    from meshchat.identity import replace_atomically  # noqa: PLC0415

    path = profile / PROFILE_FILE
    data = json.dumps({"name": name}, ensure_ascii=False, indent=2) + "\n"
    try:
        replace_atomically(path, data.encode("utf-8"))
    except OSError as exc:
        raise CommandError(
            _("cannot write {path}: {exc}").format(path=path, exc=exc.strerror or exc)
        ) from exc


def read_recorded_addresses(profile: Path) -> list[str]:
    """The addresses a running node of this profile recorded in ``addresses.json`` (``[]`` if there is
    no such file or it is unreadable or malformed: the caller then says the invite has no address).
    Entries an invite could not carry are skipped; at most ``MAX_RECORDED_ADDRESSES`` are returned."""
    path = profile / ADDRESSES_FILE
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_ADDRESSES_FILE + 1)
    except OSError:
        return []
    if len(raw) > MAX_ADDRESSES_FILE:
        return []
    try:
        data: Any = json.loads(raw.decode("utf-8"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return []
    addrs = data.get("addrs") if isinstance(data, dict) else None
    if not isinstance(addrs, list):
        return []
    usable = [
        a
        for a in addrs
        if isinstance(a, str)
        and a.startswith("/")
        and len(a) <= MAX_RECORDED_ADDRESS_LENGTH
        and a.isascii()
        and a.isprintable()
        and " " not in a
    ]
    return usable[:MAX_RECORDED_ADDRESSES]


def public_identity(profile: Path) -> PublicIdentity:
    """The profile's public key (no passphrase needed)."""
    from meshchat.identity import PublicIdentity, read_public_key  # noqa: PLC0415

    return PublicIdentity.from_bytes(read_public_key(require_key_file(profile)))


# --- passphrases ----------------------------------------------------------------------------------


def _stdin_is_interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _ask_hidden(prompt: str) -> str:
    try:
        return getpass.getpass(prompt, stream=sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write("\n")  # leave the shell prompt on a line of its own
        raise
    except EOFError as exc:
        raise CommandError(_("no passphrase entered")) from exc


@dataclass(frozen=True, slots=True)
class Passphrase:
    """A passphrase and where it came from."""

    #: The passphrase text, never empty.
    value: str
    #: True if it came from ``$MESHCHAT_PASSPHRASE`` rather than a prompt.
    from_env: bool


def passphrase(prompt: str, *, confirm: bool) -> Passphrase:
    """The passphrase from ``$MESHCHAT_PASSPHRASE``, else a hidden prompt; never hangs without a terminal."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        if not env:
            raise CommandError(
                _("{passphrase_env} is set but empty; an empty passphrase protects nothing").format(
                    passphrase_env=PASSPHRASE_ENV
                )
            )
        return Passphrase(env, from_env=True)
    if not _stdin_is_interactive():
        raise CommandError(
            _("a passphrase is needed: set {passphrase_env} or run in a terminal").format(
                passphrase_env=PASSPHRASE_ENV
            )
        )
    value = _ask_hidden(prompt)
    if not value:
        raise CommandError(_("an empty passphrase protects nothing"))
    if confirm and _ask_hidden(_("Repeat the passphrase: ")) != value:
        raise CommandError(_("the two passphrases do not match"))
    return Passphrase(value, from_env=False)


def load_profile_identity(profile: Path) -> Identity:
    """Load the profile's secret key, asking for the passphrase only if the key file is encrypted."""
    from meshchat.identity import is_encrypted, load_identity  # noqa: PLC0415

    key_path = require_key_file(profile)
    if not is_encrypted(key_path):
        return load_identity(key_path, None)
    secret = passphrase(_("Passphrase for {key_path}: ").format(key_path=key_path), confirm=False)
    try:
        return load_identity(key_path, secret.value)
    except KeyFileError as exc:
        if exc.problem is KeyFileProblem.WRONG_PASSPHRASE and secret.from_env:
            raise CommandError(
                _("{exc} (the passphrase came from ${passphrase_env})").format(
                    exc=exc, passphrase_env=PASSPHRASE_ENV
                )
            ) from exc
        raise
