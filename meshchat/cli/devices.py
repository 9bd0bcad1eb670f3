"""``meshchat device link | approve | list | remove``: one person, several devices.

Linking a laptop to the phone that holds your identity (the primary):

1. On the laptop: ``meshchat init --profile laptop`` (a new profile), then ``meshchat device link
   --profile laptop --name laptop`` (it runs a node and waits). It prints the link request alone on
   stdout (``--qr FILE.png`` saves it as a QR code too) and its six-digit code on stderr.
2. On the primary: ``meshchat device approve 'MESHCHAT-LINK:…'``. It shows the code and the device's
   name and asks whether both screens show the same code (``--code NNNNNN`` checks it for you,
   ``--yes`` skips the question), then runs a node, hands the laptop your profile (name, your invite,
   your contacts) and sends every contact your new device list.
3. The laptop prints ``linked to <your PeerId> as laptop`` and exits: from now on ``meshchat node`` on
   it receives what your contacts send you, and what either device sends shows on the other.

``approve`` and ``remove`` run a node of the primary's profile as ``meshchat send`` does (listening
nowhere unless ``--listen``; stop that profile's ``meshchat node`` first), and wait at most ``--wait``
seconds for what they sent to leave (what did not waits in the outbox for the next ``meshchat
node``). On a linked device ``meshchat invite`` prints the primary's invite and ``safety-number`` is
the person's. ``meshchat device list`` reads the profile's store (no network, even while its node runs);
``meshchat device remove NAME|PEERID`` (on the primary) signs a list without that device and sends it
to every contact: nothing sent afterwards is sealed to it. ``--json`` prints one JSON object (``link``:
one per line, ``request`` then ``linked``). Contacts' nodes print "Alice added a device 'laptop'".
The network work is in ``meshchat.cli.device_runner`` (trio, py-libp2p: imported when a command runs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from meshchat.cli.common import (
    CommandError,
    JsonOption,
    MailboxOption,
    ProfileOption,
    emit_json,
    load_profile_identity,
    profile_dir,
    require_key_file,
    stderr_console,
    stdout_console,
    terminal_markup,
)
from meshchat.i18n import _

__all__ = ["DEFAULT_APPROVE_WAIT", "approve_command", "device_app", "link_command", "list_command"]

#: Seconds ``approve`` and ``remove`` wait for what they sent to leave (the new device's grant, the
#: lists to contacts); what did not stays in the outbox and ``meshchat node`` sends it.
DEFAULT_APPROVE_WAIT = 20.0

device_app = typer.Typer(
    name="device",
    help=_("Several devices per person: link a new one, approve it on the primary, list, remove."),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ListenOption = Annotated[
    list[str] | None, typer.Option(metavar="MULTIADDR", help=_("Listen here (default: every interface)."))
]
OutboundListenOption = Annotated[
    list[str] | None,
    typer.Option(metavar="MULTIADDR", help=_("Listen here (default: nowhere; it only dials out).")),
]
BootstrapOption = Annotated[list[str] | None, typer.Option(metavar="MULTIADDR", help=_("Dial at start."))]
WaitOption = Annotated[
    float,
    typer.Option(
        "--wait", metavar="SECONDS", min=0.1, help=_("Wait this long for what it sent to leave (default 20).")
    ),
]


def _run(
    profile: Path | None,
    listen: list[str] | None,
    bootstrap: list[str] | None,
    run: object,
    **options: object,
) -> None:
    """``run`` on a node of the profile, as ``meshchat send`` runs (``meshchat.cli.network``)."""
    from meshchat.cli.network import _run_on_network  # noqa: PLC0415

    _run_on_network(profile, listen, bootstrap, run, out=sys.stdout, **options)


@device_app.command(
    "link",
    help=_(
        "On a NEW device: print a link request (stdout) and its code (stderr), wait for the primary's\n"
        "approval while running a node, then take the profile it sends (name, contacts)."
    ),
)
def link_command(
    *,
    profile: ProfileOption = None,
    name: Annotated[
        str, typer.Option(help=_("This device's name, as your contacts will see it."))
    ] = "laptop",
    qr: Annotated[
        Path | None,
        typer.Option("--qr", metavar="FILE.png", help=_("Also save the request as a QR code PNG.")),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(metavar="SECONDS", min=1.0, help=_("Wait this long for the approval (default 600).")),
    ] = 600.0,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    json_output: Annotated[bool, typer.Option("--json", help=_("Print one JSON object per line."))] = False,
) -> None:
    """On a NEW device: print a link request (stdout) and its code (stderr), wait for the primary's
    approval while running a node, then take the profile it sends (name, contacts)."""
    from meshchat.cli.device_runner import run_link  # noqa: PLC0415

    if qr is not None and qr.suffix.lower() != ".png":
        raise CommandError(
            _("--qr saves a PNG image; give a file name ending in .png, not {name!r}").format(name=qr.name)
        )
    _run(profile, listen, bootstrap, run_link, name=name, qr=qr, timeout=timeout, json_lines=json_output)


@device_app.command(
    "approve",
    help=_(
        "On the primary: add the device whose request this is (after comparing its code), hand it this\n"
        "profile and tell every contact."
    ),
)
def approve_command(
    text: Annotated[str, typer.Argument(metavar="REQUEST", help=_("The new device's MESHCHAT-LINK:… text."))],
    *,
    code: Annotated[
        str | None, typer.Option(metavar="NNNNNN", help=_("The code the new device shows (checked for you)."))
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help=_("Do not ask: the codes were compared already."))
    ] = False,
    name: Annotated[
        str, typer.Option("--primary-name", help=_("This device's name in the list, at the first link."))
    ] = "primary",
    profile: ProfileOption = None,
    listen: OutboundListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    wait: WaitOption = DEFAULT_APPROVE_WAIT,
    json_output: JsonOption = False,
) -> None:
    """On the primary: add the device whose request this is (after comparing its code), hand it this
    profile and tell every contact."""
    from meshchat.errors import LinkCodeMismatch  # noqa: PLC0415
    from meshchat.identity.devices import LinkRequest  # noqa: PLC0415

    request = LinkRequest.from_text(text, wall_now=time.time())
    shown = request.code()
    err = stderr_console()
    err.print(
        _("Device [bold]{name}[/] ({peer_id}) asks to join; code [bold]{code_start} {code_end}[/]").format(
            name=terminal_markup(request.name),
            peer_id=request.to_device(wall_now=0).public.peer_id,
            code_start=shown[:3],
            code_end=shown[3:],
        )
    )
    if code is not None:
        if "".join(code.split()) != shown:
            raise LinkCodeMismatch()
    elif not yes and not typer.confirm(_("Does the new device show this same code?"), err=True):
        raise CommandError(_("not approved: the codes differ or you said no"))
    from meshchat.cli.device_runner import run_approve  # noqa: PLC0415

    _run(
        profile,
        listen or [],
        bootstrap,
        run_approve,
        text=text,
        primary_name=name,
        mailboxes=mailbox or [],
        wait=wait,
        json_lines=json_output,
    )


@device_app.command(
    "remove", help=_("On the primary: remove a device (a lost phone): nothing sent afterwards reaches it.")
)
def remove_command(
    device: Annotated[str, typer.Argument(metavar="NAME|PEERID", help=_("The device to remove."))],
    *,
    profile: ProfileOption = None,
    listen: OutboundListenOption = None,
    bootstrap: BootstrapOption = None,
    mailbox: MailboxOption = None,
    wait: WaitOption = DEFAULT_APPROVE_WAIT,
    json_output: JsonOption = False,
) -> None:
    """On the primary: remove a device (a lost phone): nothing sent afterwards reaches it."""
    from meshchat.cli.device_runner import run_remove  # noqa: PLC0415

    _run(
        profile,
        listen or [],
        bootstrap,
        run_remove,
        device=device,
        mailboxes=mailbox or [],
        wait=wait,
        json_lines=json_output,
    )


@device_app.command(
    "list", help=_("This person's devices (reads the profile's store; works while its node runs).")
)
def list_command(*, profile: ProfileOption = None, json_output: JsonOption = False) -> None:
    """This person's devices (reads the profile's store; works while its node runs)."""
    from meshchat.errors import StorageError  # noqa: PLC0415
    from meshchat.store.devices import DeviceBook  # noqa: PLC0415
    from meshchat.store.encrypted import store_key  # noqa: PLC0415
    from meshchat.store.sqlite import STORE_FILE, SqliteStorage  # noqa: PLC0415
    from meshchat.store.storage import MemoryStorage  # noqa: PLC0415

    folder = profile_dir(profile)
    require_key_file(folder)
    identity = load_profile_identity(folder)
    me = identity.public
    try:
        if (folder / STORE_FILE).exists():
            with SqliteStorage(folder / STORE_FILE, key=store_key(identity)) as storage:
                book = DeviceBook(identity, storage)
        else:
            book = DeviceBook(identity, MemoryStorage())
    except StorageError as exc:
        raise CommandError(_("cannot read the profile's store: {exc}").format(exc=exc)) from exc
    own = book.own_list
    rows = (
        [(d.name, d.public.peer_id, d.added, d.key == book.root, d.key == me.ed25519) for d in own.devices]
        if own is not None
        else [("primary", me.peer_id, 0, True, True)]
    )
    root = rows[0][1] if own is not None else me.peer_id
    if json_output:
        emit_json(
            {
                "root": root,
                "primary": book.is_primary,
                "version": 0 if own is None else own.version,
                "devices": [
                    {"name": n, "peer_id": p, "added": a, "primary": pr, "this": t} for n, p, a, pr, t in rows
                ],
            }
        )
        return
    out = stdout_console()
    for name, peer, added, primary, this in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(added)) if added else ""
        marks = ", ".join(m for m, on in ((_("primary"), primary), (_("this device"), this)) if on)
        out.print(
            _("{name:16s} {peer} {when} [dim]{marks}[/]").format(
                name=terminal_markup(name), peer=peer, when=when, marks=marks
            )
        )
    if own is None:
        out.print(_("[dim]One device (this one). Link another with `meshchat device link` on it.[/]"))
    sys.stdout.flush()
