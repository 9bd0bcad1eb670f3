"""``meshchat files [--fetch NUMBER]`` and the command line half of ``meshchat send --file``.

- ``meshchat files`` lists the attachments this profile received (number, sender, name, type, size,
  state, where the file is) and the files it sent, reading ``files.db`` (``meshchat.files.sqlite``,
  encrypted with the identity's store key, so it asks for the passphrase as ``inbox`` does) without
  trio or py-libp2p, even while the profile's node runs.
- ``meshchat files --fetch NUMBER`` opens a node on the profile, fetches that attachment with a
  progress bar (bytes, rate, ETA) on stderr, and prints where it landed: the profile's downloads
  folder, under ``meshchat.files.names.safe_name`` of the sender's name. It resumes what an earlier
  run (or a killed node) started. The network half is in ``meshchat.cli.file_runner``.
- ``meshchat send --to CONTACT --file PATH [--caption TEXT]`` (registered in ``meshchat.cli.network``)
  sends a file and stays up until the contact has it: see ``file_runner.run_send_file``.

A file name is chosen by its sender: text output passes it (and the caption) through
``terminal_markup``; ``--json`` carries it exactly, next to ``safe_name``. ``describe_file_event`` is
how ``meshchat node`` and ``chat`` print ``Attachment``, ``AttachmentFetched`` and ``FileProblem``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

from meshchat.cli.common import (
    JsonOption,
    MailboxOption,
    ProfileOption,
    UsageError,
    emit_json,
    load_profile_identity,
    profile_dir,
    stdout_console,
    terminal_markup,
)
from meshchat.cli.store import names_of
from meshchat.i18n import _

if TYPE_CHECKING:
    from rich.table import Table

    from meshchat.files.manifest import Manifest
    from meshchat.files.sqlite import FileStore, ReceivedRecord, SentRecord

__all__ = [
    "FETCH_TIMEOUT",
    "describe_file_event",
    "files_command",
    "human_size",
    "received_json",
    "send_file",
    "sent_json",
]

#: Seconds ``meshchat files --fetch`` waits for the whole file by default: a 1 GiB file at the
#: ~100 MB/s of a libp2p stream takes ~10 s; the rest is room for slow links and retries.
FETCH_TIMEOUT = 600.0


def files_command(
    *,
    profile: ProfileOption = None,
    fetch: Annotated[
        int | None,
        typer.Option(
            "--fetch",
            metavar="NUMBER",
            min=1,
            help=_("Fetch this attachment (its # in the list) into the profile's downloads folder."),
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help=_("List at most this many of each."))] = 100,
    timeout: Annotated[
        float,
        typer.Option(metavar="SECONDS", min=0.1, help=_("With --fetch: give up after this long.")),
    ] = FETCH_TIMEOUT,
    listen: Annotated[
        list[str] | None,
        typer.Option(metavar="MULTIADDR", help=_("With --fetch: listen here (default: nowhere).")),
    ] = None,
    bootstrap: Annotated[
        list[str] | None,
        typer.Option(metavar="MULTIADDR", help=_("With --fetch: dial at start (the sender, say).")),
    ] = None,
    mailbox: MailboxOption = None,
    json_output: JsonOption = False,
) -> None:
    """Files received (attachments, numbered) and sent; --fetch NUMBER fetches one (a progress bar on
    stderr) into the profile's downloads folder and prints where it landed."""
    if fetch is None:
        if listen or bootstrap or mailbox:
            raise UsageError(_("--listen, --bootstrap and --mailbox go with --fetch"))
        _list_files(profile_dir(profile), limit=limit, json_output=json_output)
        return
    from meshchat.cli.file_runner import run_fetch  # noqa: PLC0415 (trio, py-libp2p)
    from meshchat.cli.network import _run_on_network  # noqa: PLC0415

    _run_on_network(
        profile,
        listen or [],
        bootstrap,
        run_fetch,
        number=fetch,
        timeout=timeout,
        json_output=json_output,
        out=sys.stdout,
        mailboxes=mailbox or [],
    )


def send_file(
    text: str | None,
    *,
    to: str,
    path: Path,
    caption: str,
    timeout: float | None,
    profile: Path | None,
    listen: list[str] | None,
    bootstrap: list[str] | None,
    mailboxes: list[str],
    json_output: bool,
) -> None:
    """``meshchat send --to CONTACT --file PATH``: refuse, before any work, what cannot work (TEXT as
    well, no such regular file, a caption longer than a manifest carries: ``UsageError``, exit status
    2), then run ``file_runner.run_send_file`` on a node that listens nowhere unless told (like send)."""
    from meshchat.cli.file_runner import SEND_FILE_TIMEOUT, run_send_file  # noqa: PLC0415
    from meshchat.cli.network import _run_on_network  # noqa: PLC0415
    from meshchat.files.manifest import MAX_CAPTION_BYTES  # noqa: PLC0415

    if text is not None:
        raise UsageError(_("give TEXT or --file PATH, not both (--caption TEXT goes with the file)"))
    if not path.is_file():
        raise UsageError(
            _("--file {path}: ").format(path=path)
            + (_("not a regular file") if path.exists() else _("no such file"))
        )
    if len(caption.encode("utf-8")) > MAX_CAPTION_BYTES:
        raise UsageError(
            _("--caption is at most {max_caption_bytes:,} bytes of UTF-8").format(
                max_caption_bytes=MAX_CAPTION_BYTES
            )
        )
    _run_on_network(
        profile,
        listen or [],
        bootstrap,
        run_send_file,
        to=to,
        path=path,
        caption=caption,
        timeout=SEND_FILE_TIMEOUT if timeout is None else timeout,
        json_output=json_output,
        out=sys.stdout,
        mailboxes=mailboxes,
    )


# --- listing --------------------------------------------------------------------------------------


def _list_files(folder: Path, *, limit: int, json_output: bool) -> None:
    names = names_of(folder)
    store = _open_files(folder)
    if store is None:
        received: list[ReceivedRecord] = []
        sent: list[SentRecord] = []
        uploads: dict[bytes, dict[str, tuple[int, bool]]] = {}
    else:
        try:
            received = _newest_received(store, limit)
            sent = store.sent_files(limit)
            uploads = {record.file_id: store.uploaded(record.file_id) for record in sent}
        finally:
            store.close()
    if json_output:
        emit_json(
            {
                "received": [received_json(r, names) for r in received],
                "sent": [sent_json(r, uploads.get(r.file_id, {})) for r in sent],
            }
        )
        return
    console = stdout_console()
    console.print(_received_table(received, names))
    console.print(_sent_table(sent, uploads))


def _open_files(folder: Path) -> FileStore | None:
    """The profile's ``files.db`` (None if it never had one: nothing sent or received yet)."""
    from meshchat.files.sqlite import FILES_FILE, FileStore  # noqa: PLC0415
    from meshchat.store.encrypted import store_key  # noqa: PLC0415

    path = folder / FILES_FILE
    if not path.exists():
        return None
    return FileStore(path, key=store_key(load_profile_identity(folder)))


def _newest_received(store: FileStore, limit: int) -> list[ReceivedRecord]:
    """The last ``limit`` attachments, oldest first (the store pages from the oldest: walk to the end,
    keeping a window; the list is bounded by what one profile received)."""
    kept: list[ReceivedRecord] = []
    after = 0
    while page := store.received_list(after=after, limit=500):
        kept = (kept + page)[-limit:]
        after = page[-1].number
    return kept


def _manifest(record: ReceivedRecord | SentRecord) -> Manifest:
    from meshchat.files.manifest import decode_manifest  # noqa: PLC0415

    return decode_manifest(record.manifest)


def _peer_id(public_key: bytes) -> str:
    from meshchat.identity.peerid import peer_id_from_public_key  # noqa: PLC0415

    return peer_id_from_public_key(public_key)


def _media_json(manifest: Manifest) -> dict[str, object]:
    from meshchat.files.names import safe_name  # noqa: PLC0415

    return {
        "name": manifest.name,
        "safe_name": safe_name(manifest.name),
        "mime": manifest.mime,
        "size": manifest.size,
        "caption": manifest.caption,
        "width": manifest.width,
        "height": manifest.height,
        "duration_ms": manifest.duration_ms,
        "thumbnail_bytes": len(manifest.thumbnail),
        "mailboxes": list(manifest.mailboxes),
        "expiry": manifest.expiry,
    }


def received_json(record: ReceivedRecord, names: dict[str, str]) -> dict[str, object]:
    """One received attachment as JSON (the name exactly as sent, and the safe name it is saved as)."""
    peer = _peer_id(record.sender)
    return {
        "number": record.number,
        "from": peer,
        "from_name": names.get(peer),
        "message_id": record.message_id.hex(),
        "file_id": record.file_id.hex(),
        "received_at": record.received_at,
        "state": record.state.value,
        "path": record.path or None,
        "error": record.error,
        **_media_json(_manifest(record)),
    }


def sent_json(record: SentRecord, uploads: dict[str, tuple[int, bool]]) -> dict[str, object]:
    """One sent file as JSON, with each mailbox's upload (chunks stored, finished)."""
    return {
        "file_id": record.file_id.hex(),
        "message_id": record.message_id.hex() if record.message_id is not None else None,
        "path": record.path,
        "created_at": record.created_at,
        "uploads": {m: {"chunks": n, "finished": f} for m, (n, f) in uploads.items()},
        **_media_json(_manifest(record)),
    }


def human_size(size: float) -> str:
    """``48,902 B``, ``1.5 MiB``: what a person reads in a table."""
    if size < 1024:
        return f"{size:,.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:,.1f} {unit}"


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


def _received_table(records: list[ReceivedRecord], names: dict[str, str]) -> Table:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=_("files received"))
    for column in ("#", _("from"), _("name"), _("type"), _("size"), _("state")):
        table.add_column(column)
    table.add_column(_("path"), overflow="fold")
    table.add_column(_("caption"))
    for record in records:
        manifest = _manifest(record)
        peer = _peer_id(record.sender)
        state = record.state.value + (f": {record.error}" if record.error else "")
        table.add_row(
            str(record.number),
            terminal_markup(names.get(peer, peer[-12:])),
            terminal_markup(manifest.name),
            terminal_markup(manifest.mime),
            human_size(manifest.size),
            terminal_markup(state),
            terminal_markup(record.path),
            terminal_markup(manifest.caption),
        )
    return table


def _sent_table(records: list[SentRecord], uploads: dict[bytes, dict[str, tuple[int, bool]]]) -> Table:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=_("files sent (newest first)"))
    for column in (_("file"), _("name"), _("type"), _("size"), _("sent"), _("mailboxes")):
        table.add_column(column)
    for record in records:
        manifest = _manifest(record)
        done = sum(finished for _n, finished in uploads.get(record.file_id, {}).values())
        table.add_row(
            record.file_id.hex()[:16],
            terminal_markup(manifest.name),
            terminal_markup(manifest.mime),
            human_size(manifest.size),
            _when(record.created_at),
            _("{done} of {count} have it").format(done=done, count=len(manifest.mailboxes)),
        )
    return table


# --- events of a running node ---------------------------------------------------------------------


class EventPrinter(Protocol):
    """What ``describe_file_event`` prints through (``runner._Printer``)."""

    def event(self, kind: str, text: str, **fields: object) -> None: ...


def describe_file_event(event: object, printer: EventPrinter, *, names: dict[str, str]) -> bool:
    """Print a file event (``attachment``, ``attachment_fetched``, ``file_problem``); False if
    ``event`` is not one. ``names``: contact names by PeerId."""
    from meshchat.files.events import Attachment, AttachmentFetched, FileProblem  # noqa: PLC0415

    match event:
        case Attachment(number=number, sender=sender, manifest=m, fetching=fetching):
            who = names.get(sender.peer_id, sender.peer_id)
            caption = f' "{m.caption}"' if m.caption else ""
            then = (
                _("fetching")
                if fetching
                else _("fetch with: meshchat files --fetch {number}").format(number=number)
            )
            printer.event(
                "attachment",
                _("#{number} from {who}: {name} ({size}, {mime}){caption}; {then}").format(
                    number=number,
                    who=who,
                    name=m.name,
                    size=human_size(m.size),
                    mime=m.mime,
                    caption=caption,
                    then=then,
                ),
                number=number,
                sender=sender.peer_id,
                contact=names.get(sender.peer_id),
                message_id=event.message_id.hex(),
                fetching=fetching,
                **_media_json(m),
            )
        case AttachmentFetched(number=number, path=path):
            printer.event(
                "attachment_fetched",
                _("#{number} saved as {path}").format(number=number, path=path),
                number=number,
                path=path,
            )
        case FileProblem(number=number, file_id=file_id, error=error, final=final):
            what = f"#{number}" if number else _("sent file {file_id}").format(file_id=file_id.hex()[:16])
            printer.event(
                "file_problem",
                f"{what}: {error}" + ("" if final else " (retrying)"),
                number=number,
                file_id=file_id.hex(),
                error=error,
                final=final,
            )
        case _:
            return False
    return True
