"""``meshchat init | id | invite | safety-number | add``: who you are and who your contacts are.

Thin commands over ``meshchat.identity``, ``meshchat.wire.Invite`` and ``meshchat.contacts``; none
touches the network. ``invite`` puts in the addresses a running node of the profile recorded
(``addresses.json``) unless ``--addr`` names others, and warns on stderr when the invite has none.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshchat.cli.common import (
    KEY_FILE,
    CommandError,
    JsonOption,
    ProfileOption,
    emit_json,
    load_profile_identity,
    passphrase,
    profile_dir,
    profile_holder,
    public_identity,
    read_profile_name,
    read_recorded_addresses,
    require_key_file,
    stderr_console,
    stdout_console,
    terminal_markup,
    write_profile,
)
from meshchat.i18n import _

if TYPE_CHECKING:
    from rich.table import Table

    from meshchat.identity import Identity, PublicIdentity
    from meshchat.wire import Invite

__all__ = [
    "MAX_STDIN_INVITE",
    "QR_PNG_SCALE",
    "SAFETY_GROUPS_PER_ROW",
    "add_command",
    "init",
    "invite",
    "safety_number_command",
    "safety_rows",
    "show_id",
]

#: Pixels per QR module in a saved PNG: about 500 px for a typical invite, crisp on screen and paper.
QR_PNG_SCALE = 8
#: Most bytes ``safety-number -`` reads from stdin: an invite is at most 4,096 characters, plus
#: whatever line wrapping a mail client added.
MAX_STDIN_INVITE = 64 * 1024
#: Groups of five digits per row when a safety number is shown (12 groups: 3 rows of 4).
SAFETY_GROUPS_PER_ROW = 4


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
    from rich.panel import Panel  # noqa: PLC0415

    from meshchat.errors import BadInvite  # noqa: PLC0415
    from meshchat.identity import Identity, save_identity  # noqa: PLC0415
    from meshchat.wire import Invite  # noqa: PLC0415

    folder = profile_dir(profile)
    key_path = folder / KEY_FILE
    if key_path.exists():
        raise CommandError(f"{folder} already holds a meshchat identity ({KEY_FILE}); not replaced")
    identity = Identity.generate()
    try:
        # The invite is where the name travels, so its rules (length, no control characters) apply.
        name = Invite.create(identity, name=name).name
    except BadInvite as exc:
        raise CommandError(f"cannot use --name: {exc.problem}") from exc
    secret = None if insecure_no_passphrase else passphrase("New passphrase: ", confirm=True).value
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CommandError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    # profile.json first: if saving the key then fails, `init` can simply be run again.
    write_profile(folder, name)
    save_identity(key_path, identity, secret)
    if secret is None:
        stderr_console().print(
            f"[yellow]warning: {terminal_markup(str(key_path))} is NOT encrypted; anyone who can read it "
            "can act as you. Only its file permissions (0600) protect it.[/]"
        )
    public = identity.public
    if json_output:
        emit_json({**_identity_json(folder, name, public), "encrypted": secret is not None})
        return
    table = _identity_table(name, public)
    table.add_row("key file", terminal_markup(f"{key_path} ({'encrypted' if secret else 'unencrypted'})"))
    stdout_console().print(Panel(table, title="new meshchat identity", expand=False))


def show_id(*, profile: ProfileOption = None, json_output: JsonOption = False) -> None:
    """Show this profile's PeerId and fingerprint (no passphrase needed)."""
    folder = profile_dir(profile)
    public = public_identity(folder)
    name = read_profile_name(folder)
    root = _root_invite(folder)  # a linked device: its person is the root's key
    if json_output:
        person = None if root is None else root.public.peer_id
        emit_json({**_identity_json(folder, name, public), "device_of": person})
        return
    table = _identity_table(name, public)
    if root is not None:
        table.add_row("device of", f"{root.public.peer_id} (the safety number is this key's)")
    stdout_console().print(table)


def _identity_json(folder: Path, name: str, public: PublicIdentity) -> dict[str, object]:
    return {
        "profile": str(folder),
        "name": name,
        "peer_id": public.peer_id,
        "fingerprint": public.fingerprint,
    }


def _identity_table(name: str, public: PublicIdentity) -> Table:
    from rich.table import Table  # noqa: PLC0415

    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("name", terminal_markup(name) if name else "[dim](none)[/]")
    table.add_row("PeerId", public.peer_id)
    table.add_row("fingerprint", public.fingerprint)
    return table


def profile_bundle(folder: Path, identity: Identity) -> bytes:
    """The profile's encoded prekey bundle for an invite (its prekeys made, or rotated, and stored
    first in the profile's store), so a new contact starts a forward-secret session at once.

    While a node of the profile runs, that node owns the prekeys: it holds them in memory, rotates
    them itself and writes them back. Rotating them here would hand out a signed prekey the node does
    not know (and its next write would erase it), so the stored ones go into the invite as they are
    (a signed prekey due for rotation stays answerable for ``SPK_KEEP`` after the node retires it)."""
    import time  # noqa: PLC0415

    import nacl.utils  # noqa: PLC0415

    from meshchat.errors import StorageError  # noqa: PLC0415
    from meshchat.sessions.prekeys import Prekeys  # noqa: PLC0415
    from meshchat.store.encrypted import store_key  # noqa: PLC0415
    from meshchat.store.sessions import PREKEYS_KEY, own_bundle  # noqa: PLC0415
    from meshchat.store.sqlite import STORE_FILE, SqliteStorage  # noqa: PLC0415

    try:
        with SqliteStorage(folder / STORE_FILE, key=store_key(identity)) as storage:
            if profile_holder(folder) is not None:
                stored = storage.state_get(PREKEYS_KEY)
                if stored is not None:
                    return Prekeys.decode(stored).bundle(identity).encode()
            return own_bundle(
                identity, storage, wall_now=time.time(), random_bytes=nacl.utils.random
            ).encode()
    except StorageError as exc:
        raise CommandError(f"cannot read or write the profile's prekeys: {exc}") from exc


def invite(
    *,
    profile: ProfileOption = None,
    name: Annotated[
        str | None, typer.Option(help="Name in the invite (default: the profile's name).", show_default=False)
    ] = None,
    addr: Annotated[
        list[str] | None,
        typer.Option(
            "--addr",
            metavar="MULTIADDR",
            help="Address where you can be reached; repeatable (default: the addresses a running "
            "`meshchat node` or `chat` of this profile recorded).",
        ),
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
    """Print a signed invite token alone on stdout, so TOKEN=$(meshchat invite) works.

    Without --addr it carries the addresses a running node of this profile recorded; with none, and no
    --mailbox, it warns on stderr that nobody can reach you with it yet."""
    from meshchat.errors import BadInvite  # noqa: PLC0415
    from meshchat.wire import Invite  # noqa: PLC0415

    if qr is not None and qr.suffix.lower() != ".png":
        raise CommandError(f"--qr saves a PNG image; give a file name ending in .png, not {qr.name!r}")
    folder = profile_dir(profile)
    if _print_root_invite(
        folder, changed=bool(name is not None or addr or mailbox), qr=qr, json_output=json_output
    ):
        return
    identity = load_profile_identity(folder)
    display_name = read_profile_name(folder) if name is None else name
    addrs = tuple(addr) if addr else tuple(read_recorded_addresses(folder))
    bundle = profile_bundle(folder, identity)
    try:
        card = Invite.create(
            identity, name=display_name, addrs=addrs, mailboxes=tuple(mailbox or ()), bundle=bundle
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
    err = stderr_console()
    if card.addrs and not addr:
        shown = ", ".join(card.addrs)
        err.print(f"[dim]With the addresses this profile's node recorded: {terminal_markup(shown)}[/]")
        if profile_holder(folder) is None:
            err.print(
                "[yellow]warning: no `meshchat node` or `meshchat chat` of this profile runs now: these "
                "addresses reach you only while one listens there again (the same --listen port).[/]"
            )
    if not card.addrs and not card.mailboxes:
        err.print(
            "[yellow]warning: this invite has no address and no mailbox: "
            + ("" if addr else "no `meshchat node` or `meshchat chat` of this profile is running, so ")
            + "whoever adds it can reach you only through peers on your inbox shard, and `meshchat send` "
            "to you will wait in their outbox. Run `meshchat node` (or `chat`) first and invite again, "
            "or pass --addr MULTIADDR or --mailbox MULTIADDR.[/]"
        )
    if json_output:
        emit_json(_invite_json(card, token, qr))
        return
    who = terminal_markup(card.name) if card.name else "you"
    err.print(
        f"[dim]Invite for {who} ({card.public.peer_id}); whoever adds it should compare safety numbers.[/]"
    )
    if qr is not None:
        err.print(f"[dim]QR code saved to {terminal_markup(str(qr))}[/]")
    typer.echo(token)


def _root_invite(folder: Path) -> Invite | None:
    """A linked device's root invite (``meshchat device link`` wrote it), or None on a primary."""
    from meshchat.device_api import ROOT_INVITE_FILE  # noqa: PLC0415
    from meshchat.wire import Invite  # noqa: PLC0415

    path = folder / ROOT_INVITE_FILE
    if not path.exists():
        return None
    try:
        return Invite.from_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc


def _invite_json(card: Invite, token: str, qr: Path | None) -> dict[str, object]:
    """What ``meshchat invite --json`` prints about ``card``."""
    return {
        "token": token,
        "name": card.name,
        "peer_id": card.public.peer_id,
        "addrs": list(card.addrs),
        "mailboxes": list(card.mailboxes),
        "qr": None if qr is None else str(qr),
    }


def _print_root_invite(folder: Path, *, changed: bool, qr: Path | None, json_output: bool) -> bool:
    """On a linked device (``meshchat device link``): print its person's root invite, which the primary
    made (a device key cannot sign one for the person), and return True; False on a primary."""
    card = _root_invite(folder)
    if card is None:
        return False
    if changed:
        raise CommandError(
            "this profile is a linked device: it hands out its primary's invite as the primary made it "
            "(--name, --addr and --mailbox need the primary: run `meshchat invite` there)"
        )
    if qr is not None:
        try:
            card.qr().save(str(qr), kind="png", scale=QR_PNG_SCALE)
        except OSError as exc:
            raise CommandError(f"cannot write the QR code to {qr}: {exc.strerror or exc}") from exc
    token = card.to_text()
    if json_output:
        emit_json({**_invite_json(card, token, qr), "linked_device": True})
        return True
    stderr_console().print(
        f"[dim]This is a linked device: the invite of your primary ({card.public.peer_id}), which it "
        "made when it linked this one. Contacts who add it reach all your devices.[/]"
    )
    typer.echo(token)
    return True


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
    from rich.panel import Panel  # noqa: PLC0415

    from meshchat.identity import safety_number  # noqa: PLC0415
    from meshchat.wire import Invite  # noqa: PLC0415

    folder = profile_dir(profile)
    root = _root_invite(folder)
    # A linked device's safety number is its person's: the root key, not the device's own.
    own = public_identity(folder) if root is None else root.public
    text = sys.stdin.read(MAX_STDIN_INVITE) if invite_text == "-" else invite_text
    card = Invite.from_text(text)
    number = safety_number(own, card.public)
    if json_output:
        emit_json(
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
    out = stdout_console()
    contact = terminal_markup(card.name) if card.name else "(no name)"
    out.print(f"[bold]contact[/]  {contact} [dim](the name is what the invite claims)[/]")
    out.print(f"[bold]PeerId[/]   {card.public.peer_id}")
    out.print(Panel(safety_rows(number), title="safety number", expand=False))
    if card.public == own:
        out.print("[yellow]This invite carries your own key.[/]")
    out.print(
        "Compare these 60 digits with your contact in person or over a call; if they match, nobody sits "
        "between you.",
    )


def safety_rows(number: str) -> str:
    """A safety number as rows of ``SAFETY_GROUPS_PER_ROW`` groups."""
    groups = number.split()
    step = SAFETY_GROUPS_PER_ROW
    return "\n".join(" ".join(groups[i : i + step]) for i in range(0, len(groups), step))


def add_command(
    invite_text: Annotated[str, typer.Argument(metavar="INVITE", help="Their MESHCHAT:… invite.")],
    *,
    profile: ProfileOption = None,
    name: Annotated[str | None, typer.Option(help="Your name for them (default: their invite's).")] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Accept a new key for a contact of the same name (their safety number changed: compare "
            "it with them first).",
        ),
    ] = False,
    verified: Annotated[
        bool,
        typer.Option(
            "--verified", help=_("You got this invite from them in person (a QR code scanned face to face).")
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Verify an invite and store it as a contact."""
    from meshchat.contacts import Contacts, Verification  # noqa: PLC0415
    from meshchat.errors import KeyChanged  # noqa: PLC0415

    folder = profile_dir(profile)
    require_key_file(folder)
    try:
        contact = Contacts(folder).add(invite_text.strip(), name=name, replace_key=replace, verified=verified)
    except KeyChanged as exc:
        raise CommandError(
            f"warning: the safety number of {exc.name} changed (their key is not the one you have: a new "
            f"phone, or someone else). Was {exc.old}, now {exc.new}. Compare it with them (meshchat "
            "safety-number), then run this again with --replace."
        ) from exc
    if json_output:
        emit_json(
            {
                "name": contact.name,
                "peer_id": contact.peer_id,
                "addrs": list(contact.addrs),
                "mailboxes": list(contact.mailboxes),
                "verification": contact.verification.value,
            }
        )
        return
    out = stdout_console()
    out.print(f"added [bold]{terminal_markup(contact.name)}[/] ({contact.peer_id})")
    if contact.verification is Verification.CHANGED:
        stderr_console().print(
            "[yellow]"
            + _(
                "their key is marked changed: run meshchat contact accept-key {name} (or contact verify "
                "{name}) before sending to them"
            ).format(name=terminal_markup(contact.name))
            + "[/]"
        )
    if not contact.addrs and not contact.mailboxes:
        stderr_console().print(
            "[yellow]warning: their invite has no address and no mailbox: messages to them are "
            "delivered only while both of you share a peer on their inbox shard (e.g. --bootstrap a "
            "common node); ask them for an invite made while their `meshchat node` runs.[/]"
        )
