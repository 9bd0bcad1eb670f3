"""The network half of ``meshchat send --file`` and ``meshchat files --fetch``: a live ``Node`` under
trio with a progress bar (imported only when one of them runs: trio and py-libp2p take most of a
second to import).

**Sending** (``run_send_file``) hands the file to ``node.send_file`` (the manifest goes sealed in an
ordinary message; the file is recorded in ``files.db``, so ``meshchat node`` on the profile goes on
serving it and uploading it to mailboxes if this command stops early) and then stays up until the
contact can have the file without this process:

- every chunk of it (the data chunks and the index, ``wire_size`` bytes on the wire) was served at
  least once (to the contact, the only one the manifest is sealed to, fetching it while connected)
  and the contact closed its chunk streams and bulk channels: its download is done (a sender leaving
  as the last chunk is written could reset the connection with it still in flight); or
- a mailbox stored every chunk (``FileProgress.complete``) and the manifest message left (``relayed``,
  ``stored`` or later): the contact fetches from the mailbox whenever it comes online.

Waiting for the contact's message receipt alone would not do: it comes back when the manifest
arrives, before a byte of the file is fetched, and a sender that left then would leave the contact
with nowhere to fetch from. The progress bar (stderr, on a terminal) shows the larger of the bytes
served and the bytes on the best mailbox. ``--timeout`` bounds the wait (``SEND_FILE_TIMEOUT``);
past it the command fails with an ``error:`` line saying how far it got, as ``meshchat send`` does
when nobody took a message, and the file stays queued.

**Fetching** (``run_fetch``) starts (or resumes) the download of one attachment and shows its bytes
as they are written; it prints where the file landed, or fails after ``--timeout`` naming the last
problem (no source reachable, a full disk), the partial file kept for the next run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import trio
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from meshchat.cli.common import emit_json, stderr_console, terminal_markup, terminal_text
from meshchat.cli.files import human_size
from meshchat.cli.runner import RECEIPT_WAIT, _connected, _hears, _unreachable_now
from meshchat.errors import BadManifest, NetworkError
from meshchat.files.chunks import CHUNK_SIZE, chunk_count, padded_length, plain_length
from meshchat.files.events import FileProblem
from meshchat.files.sqlite import ReceivedState, SentRecord
from meshchat.i18n import _
from meshchat.identity import Identity, PublicIdentity
from meshchat.node import Node
from meshchat.store.storage import OutboxStatus

__all__ = ["REFRESH", "SEND_FILE_TIMEOUT", "run_fetch", "run_send_file", "wire_size"]

#: Seconds ``meshchat send --file`` waits by default for the contact (or a mailbox) to have the
#: whole file: ten minutes moves a 1 GiB file at a couple of MB/s.
SEND_FILE_TIMEOUT = 600.0
#: Seconds between two redraws of the progress bar when no byte moved (its rate and ETA change with
#: time alone); a chunk written redraws it at once.
REFRESH = 0.25
#: AES-GCM's tag on every chunk (``meshchat.files.chunks``).
_TAG = 16


def wire_size(size: int, index_bytes: int) -> int:
    """Bytes every chunk of a ``size``-byte file takes on the wire: its padded, sealed data chunks and
    its index chunks (``index_bytes``, as stored). What a sender serves for one complete fetch."""
    count = chunk_count(size)
    if not count:
        return index_bytes
    last = padded_length(plain_length(size, count - 1)) + _TAG
    return (count - 1) * (CHUNK_SIZE + _TAG) + last + index_bytes


class _Bar:
    """One rich progress bar (bytes, rate, ETA) on stderr, drawn only when stderr is a terminal:
    stdout stays for the result, and a log file gets no redraws."""

    def __init__(self, description: str, total: int, *, clock: Callable[[], float] | None = None) -> None:
        """``clock``: seconds for the rate and ETA (rich's monotonic clock unless a test gives one)."""
        console = stderr_console()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            get_time=clock,
            disable=not console.is_terminal,
        )
        self.task: TaskID = self.progress.add_task(terminal_markup(description), total=total)

    def show(self, done: int, description: str | None = None) -> None:
        if description is None:
            self.progress.update(self.task, completed=done)
        else:
            self.progress.update(self.task, completed=done, description=terminal_markup(description))


async def _follow(
    node: Node, bar: _Bar, done: Callable[[], bool], amount: Callable[[], int], label: Callable[[], str]
) -> None:
    """Redraw ``bar`` with ``amount()`` whenever a transfer moves (at least every ``REFRESH`` s)
    until ``done()``."""
    while True:
        bar.show(amount(), label())
        if done():
            return
        with trio.move_on_after(REFRESH):
            await node.files.driver.wait_for(_moved_on(done, amount))


def _moved_on(done: Callable[[], bool], amount: Callable[[], int]) -> Callable[[], bool]:
    """A condition that holds once ``done()`` or ``amount()`` changed from what it is now."""
    seen = amount()
    return lambda: done() or amount() != seen


def _sent_record(node: Node, message_id: bytes) -> SentRecord:
    """The record ``send_file`` just made (the newest with this message)."""
    for record in node.files.sent(limit=16):
        if record.message_id == message_id:
            return record
    raise NetworkError("send file", "the sent file's record is missing from files.db")


async def run_send_file(
    profile: Path,
    identity: Identity,
    *,
    to: str,
    path: Path,
    caption: str,
    timeout: float,  # noqa: ASYNC109 (a command line option handed on as is)
    listen: Sequence[str],
    bootstrap: Sequence[str],
    json_output: bool,
    out: TextIO,
    mailboxes: Sequence[str] = (),
) -> None:
    """Send the file at ``path`` to contact ``to`` and return once they can have it without this
    process (the module docstring says when); ``NetworkError`` if that does not happen within
    ``timeout`` seconds, or at once if nothing could carry the manifest. The file stays queued either
    way: ``meshchat node`` on this profile serves it and uploads it to mailboxes."""
    started = trio.current_time()
    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        contact = node.contacts.find(to)
        handle = await node.send_file(contact, path, caption=caption)
        record = _sent_record(node, handle.message_id)
        manifest = node.files.manifest(record)
        index_bytes = sum(
            len(data) for _address, data in node.files.driver.store.index_chunks(record.file_id)
        )
        wire = wire_size(record.size, index_bytes)
        served = node.files.driver.server.served  # wire bytes served, by file id

        def progress() -> tuple[int, int, bool]:
            now = node.files.sent_progress(record.file_id)
            return now.stored, served[record.file_id], now.complete

        def finished() -> bool:
            _stored, sent, complete = progress()
            left = handle.status not in (OutboxStatus.QUEUED, OutboxStatus.FAILED)
            # Every chunk was written out, and the contact closed its chunk streams and bulk channels
            # (its download is done): leaving earlier can reset a connection with chunks still in flight.
            fetched = sent >= wire and not node.files.driver.server.serving(contact.peer_id)
            return fetched or (complete and left)

        def amount() -> int:
            stored, sent, _complete = progress()
            return max(stored, min(record.size, sent * record.size // max(wire, 1)))

        def label() -> str:
            stored, sent, _complete = progress()
            where = "served" if sent * record.size // max(wire, 1) >= stored else "on a mailbox"
            return f"{manifest.name} → {contact.name} ({handle.status.value}, {where})"

        what = f"send {terminal_text(manifest.name)} to {contact.name}"
        if _unreachable_now(contact, bootstrap, mailboxes):
            raise NetworkError(
                what,
                f"{contact.name}'s invite has no address and no mailbox and no --bootstrap or --mailbox "
                "was given, so nothing can carry it now; the file is queued and `meshchat node` on this "
                f"profile sends it (ask {contact.name} for an invite made while their `meshchat node` runs)",
            )
        with trio.move_on_after(timeout):
            if not (contact.mailboxes or bootstrap or mailboxes):
                await node.reach(contact)  # only they can take it: say so at once if they are not there
                if not _connected(node, contact):
                    raise NetworkError(
                        what,
                        f"{contact.name} could not be reached at the address in their invite or by the "
                        "DHT; the file is queued and `meshchat node` on this profile sends it",
                    )
            bar = _Bar(label(), record.size)
            with bar.progress:
                await _follow(node, bar, finished, amount, label)
        if not finished():
            stored, sent, _complete = progress()
            raise NetworkError(
                what,
                f"in {timeout:g} s the manifest is {handle.status.value}, {human_size(min(sent, wire))} of "
                f"{human_size(wire)} were served and {human_size(stored)} stored on a mailbox; the file "
                "is queued and `meshchat node` on this profile serves it and uploads it to mailboxes",
            )
        if handle.status in (OutboxStatus.RELAYED, OutboxStatus.STORED) and _hears(node, contact):
            with trio.move_on_after(RECEIPT_WAIT):
                await handle.wait_until(OutboxStatus.DELIVERED)
        stored, sent, complete = progress()
        result: dict[str, object] = {
            "event": "sent_file",
            "to": contact.peer_id,
            "to_name": contact.name,
            "message_id": handle.message_id.hex(),
            "file_id": record.file_id.hex(),
            "name": manifest.name,
            "mime": manifest.mime,
            "size": record.size,
            "status": handle.status.value,
            "served": sent,
            "wire_size": wire,
            "stored": stored,
            "on_mailbox": complete,
            "seconds": round(trio.current_time() - started, 3),
        }
    if json_output:
        emit_json(result)
        return
    how = (
        _("{name} fetched it").format(name=contact.name) if sent >= wire else _("a mailbox holds every chunk")
    )
    out.write(
        terminal_text(
            _("sent {name} ({size}, {mime}) to {contact}: {status}; {how}").format(
                name=manifest.name,
                size=human_size(record.size),
                mime=manifest.mime,
                contact=contact.name,
                status=result["status"],
                how=how,
            )
        )
        + "\n"
    )


async def run_fetch(
    profile: Path,
    identity: Identity,
    *,
    number: int,
    timeout: float,  # noqa: ASYNC109 (a command line option handed on as is)
    listen: Sequence[str],
    bootstrap: Sequence[str],
    json_output: bool,
    out: TextIO,
    mailboxes: Sequence[str] = (),
) -> None:
    """Fetch attachment ``number`` (resuming what was written before) and print where it landed;
    ``UnknownFile`` if there is none, ``BadManifest`` if the sender's file cannot be fetched,
    ``NetworkError`` if it is not complete within ``timeout`` seconds (the partial file is kept)."""
    started = trio.current_time()
    async with Node.open(
        profile, identity=identity, listen=listen, bootstrap=bootstrap, mailboxes=mailboxes
    ) as node:
        record = node.files.attachment(number)
        manifest = node.files.manifest(record)
        already = record.state is ReceivedState.DONE
        problems: list[str] = []

        async def watch_problems() -> None:
            async for event in node.events():
                if isinstance(event, FileProblem) and event.number == number:
                    problems.append(event.error)

        def settled() -> bool:
            return node.files.attachment(number).state in (ReceivedState.DONE, ReceivedState.FAILED)

        def amount() -> int:
            return node.files.progress(number).fetched

        def label() -> str:
            return f"#{number} {manifest.name}"

        if not already:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_problems)
                node.files.start_fetch(number)
                with trio.move_on_after(timeout):
                    bar = _Bar(label(), manifest.size)
                    with bar.progress:
                        await _follow(node, bar, settled, amount, label)
                nursery.cancel_scope.cancel()
        record = node.files.attachment(number)
        got = amount()
    if record.state is ReceivedState.FAILED:
        raise BadManifest(record.error)
    if record.state is not ReceivedState.DONE:
        last = f"; the last problem: {problems[-1]}" if problems else ""
        raise NetworkError(
            f"fetch #{number} {terminal_text(manifest.name)}",
            f"{human_size(got)} of {human_size(manifest.size)} in {timeout:g} s{last}; the partial file "
            f"is kept: run `meshchat files --fetch {number}` again to resume",
        )
    seconds = trio.current_time() - started
    sender = PublicIdentity.from_bytes(record.sender).peer_id
    if json_output:
        emit_json(
            {
                "event": "fetched",
                "number": number,
                "from": sender,
                "name": manifest.name,
                "mime": manifest.mime,
                "size": manifest.size,
                "path": record.path,
                "already": already,
                "seconds": round(seconds, 3),
            }
        )
        return
    rate = "" if already or seconds <= 0 else f" in {seconds:.1f} s"
    out.write(
        terminal_text(f"#{number} {manifest.name} ({human_size(manifest.size)}){rate}: {record.path}") + "\n"
    )
