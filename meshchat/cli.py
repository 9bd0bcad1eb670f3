"""The ``meshchat`` command: create a profile, show who you are, share invites, compare safety numbers.

This is the top layer (DESIGN.md: ... -> node -> cli), a thin typer + rich front end over
``meshchat.identity``, ``meshchat.wire`` and ``meshchat.crypto``. It holds no protocol logic: it finds
profiles, asks for passphrases, prints, and turns the library's typed errors into one line on stderr.
It is not the network node; ``node``, ``chat``, ``send`` and friends arrive with the layers they drive.
``sim`` runs the deterministic network simulator (``meshchat.sim``) and reports what it measured.

A profile is a folder holding ``identity.key`` (written by ``meshchat.identity.save_identity``) and
``profile.json`` (``{"name": ...}``, the display name). The folder is ``--profile DIR``, else
``$MESHCHAT_PROFILE``, else the platform's user data folder.

Contract for scripts: with ``--json`` a command prints exactly one JSON object on stdout and nothing
else there; ``meshchat invite`` prints the bare token on stdout; decoration goes to stderr. Exit status:
0 success; 1 a failure, explained by one ``error: ...`` line on stderr; 2 a command line that does not
parse (also one ``error:`` line); 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import platformdirs
import trio
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from meshchat.crypto import open_envelope, seal
from meshchat.errors import (
    BadInvite,
    DecryptionFailed,
    KeyFileError,
    KeyFileProblem,
    MeshchatError,
    ProfileError,
)
from meshchat.gossip import GossipConfig, ScoreParams
from meshchat.identity import (
    KEY_FILE_NAME,
    Identity,
    PublicIdentity,
    is_encrypted,
    load_identity,
    read_public_key,
    replace_atomically,
    safety_number,
    save_identity,
)
from meshchat.sim import Results, Scenario, TopologyKind, parse_latency, parse_partition
from meshchat.sim import run as run_simulation
from meshchat.sim.plot import plot_results
from meshchat.store.mailbox import MailboxLimits
from meshchat.wire import Invite, decode_envelope, message_id

__all__ = [
    "KEY_FILE",
    "LIBP2P_LOG_ENV",
    "PASSPHRASE_ENV",
    "PROFILE_ENV",
    "PROFILE_FILE",
    "CommandError",
    "DemoPerson",
    "app",
    "main",
    "run_demo",
]

#: The key file inside a profile folder.
KEY_FILE = KEY_FILE_NAME
#: The display-name file inside a profile folder.
PROFILE_FILE = "profile.json"
#: Environment variable holding the passphrase, for scripts and CI (a terminal prompt otherwise).
PASSPHRASE_ENV = "MESHCHAT_PASSPHRASE"
#: Environment variable naming the profile folder when ``--profile`` is not given.
PROFILE_ENV = "MESHCHAT_PROFILE"
#: Environment variable: the level of py-libp2p's own log on stderr (default CRITICAL: silent).
LIBP2P_LOG_ENV = "MESHCHAT_LIBP2P_LOG"
#: Exit status of a command that failed for a reason its ``error:`` line explains.
EXIT_FAILURE = 1
#: Pixels per QR module in a saved PNG: about 500 px for a typical invite, crisp on screen and paper.
QR_PNG_SCALE = 8
#: Most bytes ``safety-number -`` reads from stdin: an invite is at most 4,096 characters, plus
#: whatever line wrapping a mail client added.
MAX_STDIN_INVITE = 64 * 1024
#: Groups of five digits per row when a safety number is shown (12 groups: 3 rows of 4).
SAFETY_GROUPS_PER_ROW = 4
#: Seal/open round trips the demo times; enough for a stable figure, fast enough to finish at once.
DEMO_TIMING_ROUNDS = 200
#: What Alice sends Bob in the demo: (language, text). Non-Latin scripts and emoji on purpose.
DEMO_MESSAGES: tuple[tuple[str, str], ...] = (
    ("Russian", "Привет, Боб! Как дела?"),
    ("Tatar", "Сәлам, Боб! Хәлләр ничек? Җәй җитте!"),
    ("Chechen", "Ӏуьйре дика йойла, Боб! Муха ду хьал?"),  # noqa: RUF001 (Cyrillic on purpose)
    ("emoji", "🔐📨 сообщение дошло 🎉"),
)


class CommandError(Exception):
    """A command cannot do what was asked: a missing passphrase, a bad argument, a file it cannot write.

    Library errors (``MeshchatError``) explain themselves; this covers what only the command line knows.
    """


class _MeshchatGroup(TyperGroup):
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
        except (MeshchatError, CommandError) as exc:
            _print_error(_describe(exc))
            sys.exit(EXIT_FAILURE)
        except typer.TyperException as exc:  # click's usage and parameter errors, vendored by typer
            if type(exc).__name__ == "NoArgsIsHelpError":
                sys.exit(exc.exit_code)  # typer has already printed the help; the same test typer makes
            ctx = getattr(exc, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            _print_error(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except typer.Abort:
            _print_error("aborted")
            sys.exit(EXIT_FAILURE)
        sys.exit(status if isinstance(status, int) else 0)


app = typer.Typer(
    cls=_MeshchatGroup,
    name="meshchat",
    help="meshchat: end-to-end encrypted peer-to-peer messaging with no central operator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ProfileOption = Annotated[
    Path | None,
    typer.Option(
        "--profile",
        envvar=PROFILE_ENV,
        metavar="DIR",
        show_default=False,
        help="Profile folder (default: $MESHCHAT_PROFILE, else the user data folder).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of text.")]
MailboxOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="MULTIADDR", help="Store sent messages on, and sync from, this mailbox (repeatable)."
    ),
]


# --- output ---------------------------------------------------------------------------------------


#: Where the demo narrates: ``Console.print``, or nothing with ``--json``.
Say = Callable[..., None]


def _stdout() -> Console:
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _print_error(message: str) -> None:
    line = " ".join(message.splitlines()).strip()
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {line}", err=True)


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyFileError) and exc.problem is KeyFileProblem.INSECURE_PERMISSIONS:
        # The library's text says "other users may read it"; name the problem so it can be searched.
        return f"insecure permissions: {exc}"
    return str(exc)


def _emit_json(value: dict[str, object]) -> None:
    typer.echo(json.dumps(value))


# --- profiles -------------------------------------------------------------------------------------


def _profile_dir(option: Path | None) -> Path:
    if option is not None:
        return option.expanduser()
    return Path(platformdirs.user_data_dir("meshchat", appauthor=False))


def _require_key_file(profile: Path) -> Path:
    key_path = profile / KEY_FILE
    if not key_path.is_file():
        raise ProfileError(
            f"no meshchat profile in {profile}; run: meshchat init --profile {shlex.quote(str(profile))}"
        )
    return key_path


def _read_profile_name(profile: Path) -> str:
    path = profile / PROFILE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CommandError(f"{path} is not valid UTF-8 JSON: {exc}") from exc
    name = data.get("name", "") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise CommandError(f'{path} must be a JSON object whose "name" is a string')
    return name


def _write_profile(profile: Path, name: str) -> None:
    """Write ``profile.json`` atomically: a reader sees the old file or the new one, never half of one."""
    path = profile / PROFILE_FILE
    data = json.dumps({"name": name}, ensure_ascii=False, indent=2) + "\n"
    try:
        replace_atomically(path, data.encode("utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _public_identity(profile: Path) -> PublicIdentity:
    return PublicIdentity.from_bytes(read_public_key(_require_key_file(profile)))


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
        raise CommandError("no passphrase entered") from exc


@dataclass(frozen=True, slots=True)
class _Passphrase:
    #: The passphrase text, never empty.
    value: str
    #: True if it came from ``$MESHCHAT_PASSPHRASE`` rather than a prompt.
    from_env: bool


def _passphrase(prompt: str, *, confirm: bool) -> _Passphrase:
    """The passphrase from ``$MESHCHAT_PASSPHRASE``, else a hidden prompt; never hangs without a terminal."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        if not env:
            raise CommandError(f"{PASSPHRASE_ENV} is set but empty; an empty passphrase protects nothing")
        return _Passphrase(env, from_env=True)
    if not _stdin_is_interactive():
        raise CommandError(f"a passphrase is needed: set {PASSPHRASE_ENV} or run in a terminal")
    value = _ask_hidden(prompt)
    if not value:
        raise CommandError("an empty passphrase protects nothing")
    if confirm and _ask_hidden("Repeat the passphrase: ") != value:
        raise CommandError("the two passphrases do not match")
    return _Passphrase(value, from_env=False)


def _load_identity(profile: Path) -> Identity:
    """Load the profile's secret key, asking for the passphrase only if the key file is encrypted."""
    key_path = _require_key_file(profile)
    if not is_encrypted(key_path):
        return load_identity(key_path, None)
    passphrase = _passphrase(f"Passphrase for {key_path}: ", confirm=False)
    try:
        return load_identity(key_path, passphrase.value)
    except KeyFileError as exc:
        if exc.problem is KeyFileProblem.WRONG_PASSPHRASE and passphrase.from_env:
            raise CommandError(f"{exc} (the passphrase came from ${PASSPHRASE_ENV})") from exc
        raise


# --- commands -------------------------------------------------------------------------------------


@app.command()
def init(
    *,
    profile: ProfileOption = None,
    name: Annotated[str, typer.Option(help="Display name put in your invites.")] = "",
    insecure_no_passphrase: Annotated[
        bool,
        typer.Option(
            "--insecure-no-passphrase",
            help="Store the key unencrypted, protected only by file permissions.",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Create a new identity in a profile folder; never replaces an existing one."""
    folder = _profile_dir(profile)
    key_path = folder / KEY_FILE
    if key_path.exists():
        raise CommandError(f"{folder} already holds a meshchat identity ({KEY_FILE}); not replaced")
    identity = Identity.generate()
    try:
        # The invite is where the name travels, so its rules (length, no control characters) apply.
        name = Invite.create(identity, name=name).name
    except BadInvite as exc:
        raise CommandError(f"cannot use --name: {exc.problem}") from exc
    passphrase = None if insecure_no_passphrase else _passphrase("New passphrase: ", confirm=True).value
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CommandError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    # profile.json first: if saving the key then fails, `init` can simply be run again.
    _write_profile(folder, name)
    save_identity(key_path, identity, passphrase)
    if passphrase is None:
        _stderr().print(
            f"[yellow]warning: {escape(str(key_path))} is NOT encrypted; anyone who can read it can "
            "act as you. Only its file permissions (0600) protect it.[/]"
        )
    public = identity.public
    if json_output:
        _emit_json({**_identity_json(folder, name, public), "encrypted": passphrase is not None})
        return
    table = _identity_table(name, public)
    table.add_row("key file", f"{key_path} ({'encrypted' if passphrase else 'unencrypted'})")
    _stdout().print(Panel(table, title="new meshchat identity", expand=False))


@app.command("id")
def show_id(*, profile: ProfileOption = None, json_output: JsonOption = False) -> None:
    """Show this profile's PeerId and fingerprint (no passphrase needed)."""
    folder = _profile_dir(profile)
    public = _public_identity(folder)
    name = _read_profile_name(folder)
    if json_output:
        _emit_json(_identity_json(folder, name, public))
        return
    _stdout().print(_identity_table(name, public))


def _identity_json(folder: Path, name: str, public: PublicIdentity) -> dict[str, object]:
    return {
        "profile": str(folder),
        "name": name,
        "peer_id": public.peer_id,
        "fingerprint": public.fingerprint,
    }


def _identity_table(name: str, public: PublicIdentity) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("name", escape(name) if name else "[dim](none)[/]")
    table.add_row("PeerId", public.peer_id)
    table.add_row("fingerprint", public.fingerprint)
    return table


@app.command()
def invite(
    *,
    profile: ProfileOption = None,
    name: Annotated[
        str | None, typer.Option(help="Name in the invite (default: the profile's name).", show_default=False)
    ] = None,
    addr: Annotated[
        list[str] | None,
        typer.Option("--addr", metavar="MULTIADDR", help="Address where you can be reached; repeatable."),
    ] = None,
    mailbox: Annotated[
        list[str] | None,
        typer.Option(
            metavar="MULTIADDR", help="A mailbox you sync from (ends in /p2p/<PeerId>); repeatable."
        ),
    ] = None,
    qr: Annotated[
        Path | None, typer.Option("--qr", metavar="FILE.png", help="Also save the invite as a QR code PNG.")
    ] = None,
    qr_terminal: Annotated[
        bool, typer.Option("--qr-terminal", help="Also draw the QR code in the terminal (on stderr).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Print a signed invite token alone on stdout, so TOKEN=$(meshchat invite) works."""
    if qr is not None and qr.suffix.lower() != ".png":
        raise CommandError(f"--qr saves a PNG image; give a file name ending in .png, not {qr.name!r}")
    folder = _profile_dir(profile)
    identity = _load_identity(folder)
    display_name = _read_profile_name(folder) if name is None else name
    try:
        card = Invite.create(
            identity, name=display_name, addrs=tuple(addr or ()), mailboxes=tuple(mailbox or ())
        )
    except BadInvite as exc:
        raise CommandError(f"cannot create the invite: {exc.problem}") from exc
    token = card.to_text()
    if qr is not None:
        try:
            card.qr().save(str(qr), kind="png", scale=QR_PNG_SCALE)
        except OSError as exc:
            raise CommandError(f"cannot write the QR code to {qr}: {exc.strerror or exc}") from exc
    if qr_terminal:
        card.qr().terminal(out=sys.stderr, compact=True)
    if json_output:
        _emit_json(
            {
                "token": token,
                "name": card.name,
                "peer_id": card.public.peer_id,
                "addrs": list(card.addrs),
                "qr": None if qr is None else str(qr),
            }
        )
        return
    err = _stderr()
    who = escape(card.name) if card.name else "you"
    err.print(
        f"[dim]Invite for {who} ({card.public.peer_id}); whoever adds it should compare safety numbers.[/]"
    )
    if qr is not None:
        err.print(f"[dim]QR code saved to {escape(str(qr))}[/]")
    typer.echo(token)


@app.command("safety-number")
def safety_number_command(
    *,
    invite_text: Annotated[
        str,
        typer.Argument(
            metavar="INVITE", help="The contact's invite token (MESHCHAT:...), or - to read stdin."
        ),
    ],
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show the safety number you and a contact should both see (no passphrase needed)."""
    folder = _profile_dir(profile)
    own = _public_identity(folder)
    text = sys.stdin.read(MAX_STDIN_INVITE) if invite_text == "-" else invite_text
    card = Invite.from_text(text)
    number = safety_number(own, card.public)
    if json_output:
        _emit_json(
            {
                "name": card.name,
                "peer_id": card.public.peer_id,
                "addrs": list(card.addrs),
                "safety_number": number,
                "own_peer_id": own.peer_id,
                "own_invite": card.public == own,
            }
        )
        return
    out = _stdout()
    contact = escape(card.name) if card.name else "(no name)"
    out.print(f"[bold]contact[/]  {contact} [dim](the name is what the invite claims)[/]")
    out.print(f"[bold]PeerId[/]   {card.public.peer_id}")
    out.print(Panel(_safety_rows(number), title="safety number", expand=False))
    if card.public == own:
        out.print("[yellow]This invite carries your own key.[/]")
    out.print(
        "Compare these 60 digits with your contact in person or over a call; if they match, nobody sits "
        "between you.",
    )


def _safety_rows(number: str) -> str:
    groups = number.split()
    step = SAFETY_GROUPS_PER_ROW
    return "\n".join(" ".join(groups[i : i + step]) for i in range(0, len(groups), step))


@app.command()
def demo(*, json_output: JsonOption = False) -> None:
    """Walk through identities, invites, sealed messages and what a relay sees, then send them across
    four nodes on 127.0.0.1 over TCP + Noise + yamux (everything in a temporary folder)."""
    from meshchat.demo_net import run_network_demo  # noqa: PLC0415 (py-libp2p takes ~0.6 s to import)

    _quiet_libp2p()

    console = None if json_output else _stdout()
    with tempfile.TemporaryDirectory(prefix="meshchat-demo-") as workdir:
        summary = run_demo(Path(workdir), wall_now=time.time(), console=console)
        alice, bob = (_load_identity(Path(workdir) / name) for name in ("alice", "bob"))
        texts = [text for _, text in DEMO_MESSAGES]
        say: Say = console.print if console is not None else _silent
        summary["network"] = trio.run(run_network_demo, alice, bob, texts, say)
    if json_output:
        _emit_json(summary)


# --- demo -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoPerson:
    """One demo participant: a profile folder and the identity loaded back from it."""

    #: Display name, also written to the profile.
    name: str
    #: The profile folder.
    profile: Path
    #: The secret key, as loaded from the profile's key file.
    identity: Identity


def run_demo(workdir: Path, *, wall_now: float, console: Console | None) -> dict[str, object]:
    """Run the demo in ``workdir`` and return its summary; narrate it on ``console`` if one is given.

    Each step is its own function taking what the previous ones produced, so a step (a relay, a mailbox,
    a network of nodes) can be added without touching the others. Raises ``CommandError`` if any
    promise the demo shows does not hold.
    """
    say: Say = console.print if console is not None else _silent
    say(Panel.fit("[bold]meshchat demo[/]: three people, sealed messages, and what a relay sees"))
    people = _demo_profiles(workdir, say)
    alice, bob, carol = people["Alice"], people["Bob"], people["Carol"]
    number, alice_card = _demo_invites(alice, bob, say)
    envelopes = [
        seal(alice.identity, bob.identity.public, text.encode(), wall_now=wall_now)
        for _, text in DEMO_MESSAGES
    ]
    relay_view = _demo_relay_view(envelopes, say)
    received = _demo_receive(bob, alice_card, envelopes, wall_now, say)
    attacks = _demo_attacks(bob, carol, envelopes[0], wall_now, say)
    timings = _demo_timings(alice, bob, wall_now, say)
    return {
        "safety_number": number,
        "messages": received,
        "relay_view": relay_view,
        **attacks,
        "timings_ms": timings,
    }


def _silent(*_objects: object) -> None:
    """Narrate nothing (``--json``)."""


def _demo_profiles(workdir: Path, say: Say) -> dict[str, DemoPerson]:
    """Alice, Bob and Carol each get a profile folder, loaded back the way every command loads one."""
    people: dict[str, DemoPerson] = {}
    for name in ("Alice", "Bob", "Carol"):
        folder = workdir / name.lower()
        folder.mkdir(mode=0o700)
        _write_profile(folder, name)
        # Demo only: no passphrase, so it runs unattended. `meshchat init` encrypts with argon2id.
        save_identity(folder / KEY_FILE, Identity.generate(), None)
        people[name] = DemoPerson(name=name, profile=folder, identity=_load_identity(folder))
    table = Table(title="1. three profiles", title_justify="left")
    table.add_column("name")
    table.add_column("PeerId", overflow="fold")
    for person in people.values():
        table.add_row(person.name, person.identity.public.peer_id)
    say(table)
    say(
        "[dim]Key files saved WITHOUT a passphrase (demo only; `meshchat init` encrypts them) in a "
        "temporary folder deleted at the end.[/]"
    )
    return people


def _demo_invites(alice: DemoPerson, bob: DemoPerson, say: Say) -> tuple[str, Invite]:
    """Alice and Bob swap invite tokens; each computes the safety number from their own side."""
    alice_token = Invite.create(alice.identity, name=alice.name).to_text()
    bob_token = Invite.create(bob.identity, name=bob.name).to_text()
    alice_card = Invite.from_text(alice_token)  # what Bob holds, signature verified
    bob_card = Invite.from_text(bob_token)  # what Alice holds, signature verified
    alice_sees = safety_number(alice.identity.public, bob_card.public)
    bob_sees = safety_number(bob.identity.public, alice_card.public)
    if alice_sees != bob_sees:
        raise CommandError("demo: Alice and Bob computed different safety numbers")
    say("\n[bold]2. invites[/]: Alice and Bob swap signed invite tokens. Alice's begins:")
    say(f"[dim]{alice_token[:56]}…[/] ({len(alice_token)} characters)")
    say(Panel(_safety_rows(alice_sees), title="safety number: Alice's view = Bob's view", expand=False))
    return alice_sees, alice_card


def _demo_relay_view(envelopes: list[bytes], say: Say) -> dict[str, object]:
    """Everything a relay or mailbox can learn from an envelope: routing data, no sender, no text."""
    data = envelopes[0]
    envelope = decode_envelope(data)
    expiry = datetime.fromtimestamp(envelope.expiry, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    sizes = sorted({len(e) for e in envelopes})
    table = Table(title="3. what a relay sees of message 1", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("size", f"{len(data)} bytes (every message here: {', '.join(map(str, sizes))}; padded)")
    table.add_row("kind", envelope.kind.name)
    table.add_row("inbox tag", f"{envelope.inbox_tag.hex()} (blinded, changes daily)")
    table.add_row("expiry", f"{envelope.expiry} ({expiry})")
    table.add_row("message id", message_id(data).hex())
    table.add_row("sender", "[green]not visible[/] (sealed inside)")
    table.add_row("text", "[green]not visible[/]")
    say(table)
    return {
        "size_bytes": len(data),
        "kind": envelope.kind.name,
        "inbox_tag": envelope.inbox_tag.hex(),
        "expiry": envelope.expiry,
        "message_id": message_id(data).hex(),
        "sender": "not visible",
    }


def _demo_receive(
    bob: DemoPerson, alice_card: Invite, envelopes: list[bytes], wall_now: float, say: Say
) -> list[dict[str, object]]:
    """Bob opens each envelope; the sender is named only if its verified key is the one in Alice's invite."""
    table = Table(title="4. Bob opens them", title_justify="left")
    table.add_column("#")
    table.add_column("language")
    table.add_column("verified sender")
    table.add_column("text")
    received: list[dict[str, object]] = []
    for number, ((language, text), data) in enumerate(zip(DEMO_MESSAGES, envelopes, strict=True), 1):
        message = open_envelope(bob.identity, data, wall_now=wall_now)
        sender = alice_card.name if message.sender == alice_card.public else "unknown key"
        body = message.body.decode("utf-8")
        if sender != alice_card.name or body != text:
            raise CommandError(f"demo: message {number} did not arrive intact from {alice_card.name}")
        table.add_row(str(number), language, f"[green]{escape(sender)} ✓[/]", escape(body))
        received.append({"language": language, "text": body, "sender": sender, "verified": True})
    say(table)
    return received


def _demo_attacks(
    bob: DemoPerson, carol: DemoPerson, data: bytes, wall_now: float, say: Say
) -> dict[str, object]:
    """Carol, who is not the recipient, cannot open it; one flipped byte makes it unopenable for Bob too."""
    table = Table(title="5. what fails, as it should", title_justify="left")
    table.add_column("attempt")
    table.add_column("result")
    outcomes: dict[str, object] = {}
    tampered = bytearray(data)
    tampered[-1] ^= 0x01  # the last byte belongs to the ciphertext
    attempts = (
        ("carol", "Carol opens Bob's message 1", carol.identity, bytes(data)),
        ("tampered", "Bob opens message 1 with one byte flipped", bob.identity, bytes(tampered)),
    )
    for key, label, identity, attempt in attempts:
        try:
            open_envelope(identity, attempt, wall_now=wall_now)
        except DecryptionFailed as exc:
            outcomes[key] = type(exc).__name__
            table.add_row(label, f"[green]{type(exc).__name__}[/] (expected): {escape(str(exc))}")
        except MeshchatError as exc:
            outcomes[key] = type(exc).__name__
            table.add_row(label, f"[green]{type(exc).__name__}[/] (rejected): {escape(str(exc))}")
        else:
            raise CommandError(f"demo: {label} succeeded; it must not")
    say(table)
    return outcomes


def _demo_timings(alice: DemoPerson, bob: DemoPerson, wall_now: float, say: Say) -> dict[str, float]:
    """Time seal and open on a short message, the common case."""
    body = DEMO_MESSAGES[0][1].encode()
    start = time.perf_counter()
    sealed = [
        seal(alice.identity, bob.identity.public, body, wall_now=wall_now) for _ in range(DEMO_TIMING_ROUNDS)
    ]
    sealed_at = time.perf_counter()
    for data in sealed:
        open_envelope(bob.identity, data, wall_now=wall_now)
    opened_at = time.perf_counter()
    timings = {
        "seal": (sealed_at - start) * 1000 / DEMO_TIMING_ROUNDS,
        "open": (opened_at - sealed_at) * 1000 / DEMO_TIMING_ROUNDS,
    }
    say(
        f"\n[bold]6. timings[/] over {DEMO_TIMING_ROUNDS} messages: "
        f"seal {timings['seal']:.3f} ms, open (decrypt + verify) {timings['open']:.3f} ms per message"
    )
    return timings


# --- the real network -----------------------------------------------------------------------------


def _quiet_libp2p() -> None:
    """Set py-libp2p's log level from $MESHCHAT_LIBP2P_LOG (default: only critical messages)."""
    level = os.environ.get(LIBP2P_LOG_ENV, "CRITICAL").upper()
    if level not in logging.getLevelNamesMapping():
        raise CommandError(
            f"${LIBP2P_LOG_ENV} must be a log level (DEBUG, INFO, WARNING, ERROR), not {level!r}"
        )
    logging.getLogger("libp2p").setLevel(level)


def _run_on_network(
    profile: Path | None, listen: list[str] | None, bootstrap: list[str] | None, run: Any, **options: Any
) -> None:
    """Load the profile's identity and run ``run(folder, identity, listen=..., bootstrap=..., **options)``
    under trio (the shared start of ``node``, ``send`` and ``chat``)."""
    from meshchat.node import DEFAULT_LISTEN  # noqa: PLC0415 (py-libp2p takes ~0.6 s to import)

    # py-libp2p logs every failed redial of a peer that left at ERROR level on stderr; meshchat counts
    # what matters in its own statistics. $MESHCHAT_LIBP2P_LOG (a level name) shows them again.
    _quiet_libp2p()
    folder = _profile_dir(profile)
    identity = _load_identity(folder)
    listen_on = listen or list(DEFAULT_LISTEN)
    call = functools.partial(run, folder, identity, listen=listen_on, bootstrap=bootstrap or [], **options)
    trio.run(call)


@app.command("node")
def node_command(
    *,
    profile: ProfileOption = None,
    listen: Annotated[
        list[str] | None,
        typer.Option(metavar="MULTIADDR", help="Listen here (repeatable; default /ip4/0.0.0.0/tcp/0)."),
    ] = None,
    bootstrap: Annotated[
        list[str] | None,
        typer.Option(metavar="MULTIADDR", help="Dial at start; ends in /p2p/<PeerId> (repeatable)."),
    ] = None,
    mdns: Annotated[bool, typer.Option("--mdns", help="Find peers on the local network (mDNS).")] = False,
    topic: Annotated[
        list[str] | None, typer.Option(metavar="NAME", help="Join this gossip topic (repeatable).")
    ] = None,
    signed_topic: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME", help="Join this topic with StrictSign (signed by authors; repeatable)."),
    ] = None,
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Publish each line of standard input to the first topic.")
    ] = False,
    relay: Annotated[
        bool, typer.Option("--relay", help="Join every inbox shard, to carry everyone's sealed messages.")
    ] = False,
    circuit_relay: Annotated[
        bool, typer.Option("--circuit-relay", help="Relay connections for peers behind NAT (circuit v2).")
    ] = False,
    reserve: Annotated[
        list[str] | None,
        typer.Option(metavar="MULTIADDR", help="Reserve a slot on this circuit relay; print the address."),
    ] = None,
    mailbox: MailboxOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object per event.")] = False,
) -> None:
    """Run a node on the network until Ctrl-C: print its PeerId and addresses, then every event.
    It goes on delivering the profile's outbox and syncs its inbox from mailboxes."""
    from meshchat.cli_node import run_node  # noqa: PLC0415 (py-libp2p takes ~0.6 s to import)

    topics = (topic or []) + (signed_topic or [])
    if stdin and not topics:
        raise CommandError("--stdin publishes to the first --topic (or --signed-topic); give one")
    _run_on_network(
        profile,
        listen,
        bootstrap,
        run_node,
        mdns=mdns,
        topics=topics,
        signed_topics=signed_topic or [],
        json_lines=json_output,
        read_stdin=stdin,
        out=sys.stdout,
        relay=relay,
        circuit_relay=circuit_relay,
        reserve=reserve or [],
        mailboxes=mailbox or [],
    )


@app.command("add")
def add_command(
    invite_text: Annotated[str, typer.Argument(metavar="INVITE", help="Their MESHCHAT:… invite.")],
    *,
    profile: ProfileOption = None,
    name: Annotated[str | None, typer.Option(help="Your name for them (default: their invite's).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Verify an invite and store it as a contact."""
    from meshchat.contacts import Contacts  # noqa: PLC0415

    folder = _profile_dir(profile)
    _require_key_file(folder)
    contact = Contacts(folder).add(invite_text.strip(), name=name)
    if json_output:
        _emit_json({"name": contact.name, "peer_id": contact.peer_id, "addrs": list(contact.addrs)})
    else:
        _stdout().print(f"added [bold]{escape(contact.name)}[/] ({contact.peer_id})")


@app.command("send")
def send_command(
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The message.")],
    *,
    to: Annotated[str, typer.Option("--to", metavar="CONTACT", help="Contact name or PeerId.")],
    profile: ProfileOption = None,
    listen: Annotated[list[str] | None, typer.Option(metavar="MULTIADDR", help="Listen here.")] = None,
    bootstrap: Annotated[list[str] | None, typer.Option(metavar="MULTIADDR", help="Dial at start.")] = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Send one sealed message to a contact: it waits in the outbox until a peer on their shard (or a
    --mailbox) has it; `meshchat status` and `meshchat outbox` then show where it is."""
    from meshchat.cli_node import run_send  # noqa: PLC0415

    _run_on_network(
        profile,
        listen,
        bootstrap,
        run_send,
        to=to,
        text=text,
        json_lines=json_output,
        out=sys.stdout,
        mailboxes=mailbox or [],
    )


@app.command("chat")
def chat_command(
    *,
    to: Annotated[str, typer.Option("--to", metavar="CONTACT", help="Contact name or PeerId.")],
    profile: ProfileOption = None,
    listen: Annotated[list[str] | None, typer.Option(metavar="MULTIADDR", help="Listen here.")] = None,
    bootstrap: Annotated[list[str] | None, typer.Option(metavar="MULTIADDR", help="Dial at start.")] = None,
    mailbox: MailboxOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object per event.")] = False,
) -> None:
    """Talk to a contact: each line you type goes to them sealed; what anyone sends you is printed."""
    _run_node(profile, listen, bootstrap, json_output, read_stdin=True, chat_with=to, mailboxes=mailbox or [])


def _run_node(
    profile: Path | None,
    listen: list[str] | None,
    bootstrap: list[str] | None,
    json_output: bool,
    **options: Any,
) -> None:
    """``run_node`` with no topics and no stdin unless ``options`` say otherwise (chat, mailbox)."""
    from meshchat.cli_node import run_node  # noqa: PLC0415 (py-libp2p takes ~0.6 s to import)

    settings: dict[str, Any] = {"mdns": False, "topics": [], "signed_topics": [], "read_stdin": False}
    _run_on_network(
        profile, listen, bootstrap, run_node, json_lines=json_output, out=sys.stdout, **(settings | options)
    )


_DEFAULT_LIMITS = MailboxLimits()


@app.command("mailbox")
def mailbox_command(
    *,
    profile: ProfileOption = None,
    listen: Annotated[
        list[str] | None,
        typer.Option(metavar="MULTIADDR", help="Listen here (repeatable; default /ip4/0.0.0.0/tcp/0)."),
    ] = None,
    bootstrap: Annotated[list[str] | None, typer.Option(metavar="MULTIADDR", help="Dial at start.")] = None,
    quota_tag: Annotated[
        int, typer.Option(metavar="BYTES", help="Bytes held per recipient inbox tag.")
    ] = _DEFAULT_LIMITS.per_tag_bytes,
    quota_peer: Annotated[
        int, typer.Option(metavar="BYTES", help="Bytes held per sending peer.")
    ] = _DEFAULT_LIMITS.per_peer_bytes,
    budget: Annotated[
        int, typer.Option(metavar="BYTES", help="Bytes held in total (disk budget).")
    ] = _DEFAULT_LIMITS.total_bytes,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object per event.")] = False,
) -> None:
    """Run a mailbox until Ctrl-C: keep sealed envelopes for offline recipients (it cannot read them)
    until they sync or the envelopes expire, within per-recipient, per-sender and total quotas."""
    if min(quota_tag, quota_peer, budget) <= 0:
        raise CommandError("--quota-tag, --quota-peer and --budget must be positive byte counts")
    limits = MailboxLimits(per_tag_bytes=quota_tag, per_peer_bytes=quota_peer, total_bytes=budget)
    _run_node(profile, listen, bootstrap, json_output, mailbox_limits=limits)


@app.command("outbox")
def outbox_command(
    *,
    profile: ProfileOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show this many, newest first.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """Where your sent messages are: queued, relayed, stored, delivered, read, expired or failed."""
    from meshchat.cli_store import names_of, open_store, outbox_json, outbox_table  # noqa: PLC0415

    folder = _profile_dir(profile)
    names = names_of(folder)
    with open_store(folder) as store:
        records = store.outbox_recent(limit)
    if json_output:
        _emit_json({"outbox": [outbox_json(r, names) for r in records]})
    else:
        _stdout().print(outbox_table(records, names))


@app.command("status")
def status_command(
    message: Annotated[
        str, typer.Argument(metavar="MSG_ID", help="A sent message's id (hex, or 8+ digits).")
    ],
    *,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Where one sent message is, and the last problem reported for it."""
    from meshchat.cli_store import find_outbox_record, names_of, open_store, outbox_json  # noqa: PLC0415

    folder = _profile_dir(profile)
    with open_store(folder) as store:
        record = outbox_json(find_outbox_record(store, message), names_of(folder))
    if json_output:
        _emit_json(record)
        return
    to = record["to_name"] or record["to"]
    _stdout().print(f"{record['message_id']} to {escape(str(to))}: [bold]{record['status']}[/]")
    if record["stored_on"]:
        _stdout().print(f"  stored on {len(record['stored_on'])} mailbox(es)")  # type: ignore[arg-type]
    if record["error"]:
        _stdout().print(f"  last problem: {escape(str(record['error']))}")


@app.command("inbox")
def inbox_command(
    *,
    profile: ProfileOption = None,
    after: Annotated[int, typer.Option(min=0, help="Only messages numbered after this one.")] = 0,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 100,
    json_output: JsonOption = False,
) -> None:
    """Messages this profile received (kept in its store, in arrival order, each exactly once)."""
    from meshchat.cli_store import inbox_json, inbox_table, names_of, open_store  # noqa: PLC0415

    folder = _profile_dir(profile)
    names = names_of(folder)
    with open_store(folder) as store:
        messages = store.inbox_after(after, limit)
    if json_output:
        _emit_json({"inbox": [inbox_json(m, names) for m in messages]})
    else:
        _stdout().print(inbox_table(messages, names))


# --- simulation -----------------------------------------------------------------------------------


@app.command("sim")
def sim_command(
    *,
    nodes: Annotated[int, typer.Option(help="Honest nodes.")] = 100,
    degree: Annotated[int, typer.Option(help="Connections per node at the start.")] = 6,
    messages: Annotated[int, typer.Option(help="Messages published by random honest nodes.")] = 100,
    rate: Annotated[float, typer.Option(help="Messages per second (virtual), after the warm-up.")] = 10.0,
    latency: Annotated[
        str, typer.Option(help="One-way link delay: 80ms, 50-150ms or lognormal:80ms:0.5.")
    ] = "50-150ms",
    jitter: Annotated[float, typer.Option(help="Extra random delay per packet, up to this many ms.")] = 0.0,
    loss: Annotated[float, typer.Option(help="Probability that a link loses an RPC.")] = 0.0,
    bandwidth: Annotated[
        float | None,
        typer.Option(help="Uplink per node, bytes per second (default: unlimited).", show_default=False),
    ] = None,
    topology: Annotated[
        str, typer.Option(help="random-regular, small-world or clusters.", metavar="KIND")
    ] = "random-regular",
    seed: Annotated[int, typer.Option(help="Seed of every random choice; same seed, same results.")] = 0,
    workers: Annotated[
        int,
        typer.Option(help="Processes sharing the nodes (one per core; results depend on the count too)."),
    ] = 1,
    churn: Annotated[float, typer.Option(help="Fraction of nodes that leave once and come back.")] = 0.0,
    partition: Annotated[
        str | None,
        typer.Option(
            metavar="AT:HEAL",
            help="Split the network in two from AT to HEAL s (AT: never heals).",
            show_default=False,
        ),
    ] = None,
    sybils: Annotated[int, typer.Option(help="Sybils that connect en masse and never forward.")] = 0,
    eclipse: Annotated[int, typer.Option(help="Sybils that all connect to one victim.")] = 0,
    flooders: Annotated[int, typer.Option(help="Attackers flooding invalid messages.")] = 0,
    spammers: Annotated[int, typer.Option(help="Attackers publishing valid junk.")] = 0,
    fast_path: Annotated[
        bool,
        typer.Option("--fast-path", help="Check size and version byte only, instead of decoding envelopes."),
    ] = False,
    no_scoring: Annotated[bool, typer.Option("--no-scoring", help="Turn peer scoring off.")] = False,
    no_idontwant: Annotated[bool, typer.Option("--no-idontwant", help="Never send IDONTWANT.")] = False,
    json_path: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="FILE",
            help="Write the results JSON to FILE (- for stdout).",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE.png", help="Draw the latency CDF and delivery over time."),
    ] = None,
) -> None:
    """Simulate a gossip network of real routers on a virtual clock and report delivery and latency."""
    if plot is not None and plot.suffix.lower() != ".png":
        raise CommandError(f"--plot saves a PNG image; give a file name ending in .png, not {plot.name!r}")
    try:
        kind = TopologyKind(topology)
    except ValueError:
        kinds = ", ".join(k.value for k in TopologyKind)
        raise CommandError(f"--topology must be one of {kinds}, not {topology!r}") from None
    scenario = Scenario(
        seed=seed,
        workers=workers,
        nodes=nodes,
        degree=degree,
        topology=kind,
        latency=parse_latency(latency),
        jitter=jitter / 1000,
        loss=loss,
        bandwidth=bandwidth,
        messages=messages,
        rate=rate,
        gossip=GossipConfig(idontwant=not no_idontwant),
        score_params=None if no_scoring else ScoreParams(),
        fast_path=fast_path,
        partition=None if partition is None else parse_partition(partition),
        churn=churn,
        sybils=sybils,
        eclipse=eclipse,
        flooders=flooders,
        spammers=spammers,
    )
    err = _stderr()
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% of {task.fields[virtual]:.0f} virtual s"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("sim", total=1.0, virtual=scenario.duration)
        results = run_simulation(scenario, progress=lambda done: bar.update(task, completed=done))
    text = results.to_json(indent=2)
    if json_path == "-":
        typer.echo(text)
    elif json_path is not None:
        try:
            Path(json_path).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {json_path}: {exc.strerror or exc}") from exc
    if plot is not None:
        plot_results(results, plot)
    # With --json - stdout holds the JSON alone, so the table goes to stderr.
    (err if json_path == "-" else _stdout()).print(_sim_table(results, json_path=json_path, plot=plot))


def _sim_table(results: Results, *, json_path: str | None, plot: Path | None) -> Table:
    latency = results.latency_ms
    table = Table(title="meshchat sim", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    workers = results.parameters.get("workers", 1)
    table.add_row(
        "network",
        f"{results.nodes:,} nodes, seed {results.seed}, {results.validation} validation"
        + (f", {workers} workers" if workers != 1 else ""),
    )
    ratio = "n/a" if results.delivery_ratio is None else f"{results.delivery_ratio:.4f}"
    table.add_row(
        "delivery",
        f"{ratio} ({results.deliveries:,} of {results.expected_deliveries:,} expected, "
        f"{results.messages:,} messages)",
    )
    if latency["p50"] is not None:
        table.add_row(
            "latency ms",
            f"mean {latency['mean']:.0f}  p50 {latency['p50']:.0f}  p90 {latency['p90']:.0f}  "
            f"p99 {latency['p99']:.0f}  max {latency['max']:.0f}",
        )
    duplicates = results.duplicates_per_message
    table.add_row("duplicates", "n/a" if duplicates is None else f"{duplicates:.2f} extra copies per node")
    sent = results.bytes_per_node
    if sent["mean"] is not None and sent["max"] is not None:
        table.add_row("bytes per node", f"mean {sent['mean']:,.0f}  max {sent['max']:,.0f}")
    for layer in ("network", "router"):
        counts = {k: v for k, v in results.drops[layer].items() if v}
        table.add_row(f"{layer} drops", ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "none")
    attack = {k: v for k, v in results.attack.items() if v}
    if attack:
        table.add_row("attack", ", ".join(f"{k} {v}" for k, v in sorted(attack.items())))
    speed = results.virtual_seconds / results.wall_seconds if results.wall_seconds else math.inf
    table.add_row(
        "time",
        f"{results.virtual_seconds:.1f} s virtual in {results.wall_seconds:.1f} s ({speed:.1f}x real time), "
        f"{results.events:,} events",
    )
    if json_path not in (None, "-"):
        table.add_row("results", escape(str(json_path)))
    if plot is not None:
        table.add_row("plot", escape(str(plot)))
    return table


def main() -> None:
    """Run the ``meshchat`` command (the console script and ``python -m meshchat``)."""
    app(prog_name="meshchat")
