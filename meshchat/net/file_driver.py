"""Files on the real network: uploads to mailboxes, downloads from every source, resumed after a crash.

What it is: the I/O half of ``meshchat.files`` (STYLE §1). A ``Download`` (sans-IO) decides which
chunk to ask which source for and checks what comes back; this driver opens the channels
(``chunk_server.open_source``: a bulk channel where the peer offers one), keeps ``FileConfig.window``
chunks in flight per source, writes each checked chunk at its place in a partial file in the
downloads folder (``.partial/<file id>.part``), and records the written chunks in ``files.db`` after
an ``fsync``, so a download killed at any point resumes with what was on disk. Once every chunk is in,
the partial file is renamed to a safe, unclaimed name (``names.claim_path``), and each mailbox named
in the manifest is shown this recipient's token so it can drop the chunks once every recipient has
them.

Uploads of sent files to mailboxes run in ``meshchat.net.file_upload`` (``FileDriver.uploads``);
this driver starts them, resumes them at start, and reports their progress.

Failures: a source that lies (``ChunkMismatch``) is counted and, after ``MAX_STRIKES``, dropped; a
source that goes away gives its chunks back to the others; with no source holding what is missing,
the download waits (``FileConfig.retry_initial`` doubling to ``retry_max``) and tries again. A full
disk raises ``DiskFull`` inside, becomes a ``FileProblem`` event, keeps the partial file and retries
later. A sender's broken file (chunks that hash right but do not decrypt) fails the download for good.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from libp2p.abc import IHost

from meshchat.errors import (
    BadManifest,
    ChunkMismatch,
    DecodeError,
    DiskFull,
    NetworkError,
    StorageError,
    UnknownFile,
)
from meshchat.files.chunks import (
    CHUNK_SIZE,
    ChunkKind,
    address_of,
    build_index,
    encrypt_chunk,
    fetch_token,
    plain_length,
)
from meshchat.files.download import Download, Want
from meshchat.files.events import Attachment, AttachmentFetched, FileEvent, FileProblem, FileProgress
from meshchat.files.hold import ChunkHold
from meshchat.files.manifest import Manifest, decode_manifest, decode_offer, encode_manifest
from meshchat.files.names import claim_path
from meshchat.files.protocol import (
    ChunkData,
    ChunkMissing,
    Done,
    Get,
    decode_reply,
    encode,
)
from meshchat.files.sqlite import FileStore, ReceivedRecord, ReceivedState
from meshchat.identity import Identity, PublicIdentity
from meshchat.net.bulk import BulkListener
from meshchat.net.chunk_server import SOURCE_ERRORS, Channel, ChunkServer, open_source
from meshchat.net.file_upload import Uploads

__all__ = ["MAX_DOWNLOADS", "FileConfig", "FileDriver", "FileStatistics"]

#: Downloads running at once (more wait their turn: each holds a window of chunks per source).
MAX_DOWNLOADS: Final = 8
#: Chunks written between two ``fsync``s and records of what was written (16 MiB): a crash costs at
#: most this much re-fetching.
_SYNC_EVERY: Final = 64
_PARTIAL: Final = ".partial"
#: Chunks checked and written per worker-thread call (2 MiB): one thread hop per chunk cost more than
#: hashing it on this machine.
_WRITE_BATCH: Final = 8
#: Attempts at one download before it waits for the next retry round (each source tried each time).
_ROUNDS: Final = 4
#: A source or mailbox failing us: its answers, its stream, the network.
_DONE_ERRORS: tuple[type[Exception], ...] = (trio.TooSlowError, *SOURCE_ERRORS)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileConfig:
    """How files are sent and fetched."""

    #: Attachments up to this many bytes are fetched as soon as they arrive; larger ones wait for
    #: ``node.fetch`` (``meshchat files --fetch``).
    auto_fetch: int = 16 * 1024 * 1024
    #: Where received files land (default: ``<profile>/downloads``).
    downloads: Path | None = None
    #: Seconds mailboxes keep a file's chunks (they drop them sooner once every recipient has them).
    ttl: float = 14 * 86400.0
    #: Chunks in flight per source (32 x 256 KiB = 8 MiB: enough to hide a mailbox reading chunks from
    #: its disk; 16 left the recipient waiting).
    window: int = 32
    #: Mailboxes a sent file is uploaded to.
    mailbox_copies: int = 2
    #: Seconds before a stalled transfer is tried again, doubling up to ``retry_max``.
    retry_initial: float = 10.0
    retry_max: float = 600.0
    #: Offer and use bulk channels (direct TCP, much faster than a libp2p stream here).
    bulk: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStatistics:
    """Counters of the file machinery."""

    #: Chunks fetched and written; bytes written.
    chunks_fetched: int
    bytes_fetched: int
    #: Chunks uploaded to mailboxes.
    chunks_uploaded: int
    #: Chunk bytes served to others (sent files and, on a mailbox, held ones).
    bytes_served: int
    #: Wrong chunks by source.
    mismatches: dict[str, int]
    #: Offers that were not valid manifests.
    bad_offers: int
    #: Offers lost because ``files.db`` could not record them (``FileProblem`` events say so).
    store_failures: int
    #: Requests this node refused, by reason.
    refused: dict[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Arrived:
    """A data chunk a fetcher received, for the writer."""

    source: str
    address: bytes
    data: bytes


@dataclass(slots=True)
class _Running:
    """A download in progress (one per attachment)."""

    record: ReceivedRecord
    plan: Download
    unsynced: list[int] = field(default_factory=list)
    #: Why the sender's file cannot be fetched from anyone ("" while it can).
    broken: str = ""
    #: Chunks an earlier run recorded as written, not yet checked against the partial file.
    claimed: set[int] = field(default_factory=set)


class FileDriver:
    """Sends and fetches files for one node (see the module docstring)."""

    def __init__(
        self,
        host: IHost,
        store: FileStore,
        *,
        identity: Identity,
        hold: ChunkHold | None,
        config: FileConfig,
        downloads: Path,
        wall_clock: Callable[[], float] = time.time,
        on_event: Callable[[FileEvent], None],
        reach: Callable[[str], Awaitable[bool]],
        on_change: Callable[[], None] = lambda: None,
        group_peers: Callable[[bytes], list[str]] = lambda group_id: [],
    ) -> None:
        """Serve ``store``'s files (and ``hold`` on a mailbox) on ``host``; ``reach(peer)`` dials a
        peer if needed and says whether it is connected; ``on_change`` is called whenever a transfer
        moves on (the node wakes its ``wait_for`` waiters); ``group_peers(group_id)`` names the members of
        a group connected now: a file sent to the group is asked of them too (one may have it already)."""
        self._group_peers = group_peers
        self.host = host
        self.store = store
        self.identity = identity
        self.config = config
        self.downloads = downloads
        self._wall_clock = wall_clock
        self._on_event = on_event
        self._reach = reach
        self._on_change = on_change
        self.server = ChunkServer(host, store, hold=hold, wall_clock=wall_clock)
        self.server.on_change = self._changed_now
        #: Uploads of sent files to mailboxes.
        self.uploads = Uploads(
            host,
            store,
            config=config,
            reach=reach,
            problem=lambda file_id, text: self._problem(0, file_id, text),
            changed=self._changed_now,
        )
        self._nursery: trio.Nursery | None = None
        self._running: dict[int, _Running] = {}
        self._download_slots = trio.Semaphore(MAX_DOWNLOADS)
        self._mismatches: dict[str, int] = {}
        self._chunks_fetched = 0
        self._bytes_fetched = 0
        self._bad_offers = 0
        self._store_failures = 0
        self._changed = trio.Event()

    # --- running ----------------------------------------------------------------------------------

    async def run(self, *, bulk_ip: str | None, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve and transfer until cancelled; resume unfinished uploads and downloads first."""
        async with contextlib.AsyncExitStack() as stack:
            if bulk_ip is not None and self.config.bulk:
                listener = await stack.enter_async_context(BulkListener.open(bulk_ip, self.server.on_bulk))
                self.server.bulk = listener
            nursery = await stack.enter_async_context(trio.open_nursery())
            self._nursery = self.uploads.nursery = nursery
            for record in self.store.unfinished():
                self.start_download(record.number)
            for file_id, mailbox, _next in self.store.pending_uploads():
                self.uploads.start(file_id, mailbox)
            task_status.started()
            await trio.sleep_forever()

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
        self._on_change()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checked whenever a transfer moves on."""
        while not condition():
            await self._changed.wait()

    # --- receiving --------------------------------------------------------------------------------

    def offered(
        self, sender: PublicIdentity, body: bytes, message_id: bytes, *, group_id: bytes = b""
    ) -> None:
        """A file offer arrived (a control message, or a message to ``group_id``): record it,
        announce it, maybe fetch it. A bad manifest is counted and dropped (``StorageError``
        propagates: then no receipt is sent)."""
        try:
            manifest = decode_offer(body)
        except BadManifest:
            self._bad_offers += 1
            return
        try:
            record = self.store.add_received(
                message_id=message_id,
                file_id=manifest.file_id,
                sender=sender.ed25519,
                manifest=encode_manifest(manifest),
                received_at=self._wall_clock(),
                group_id=group_id,
            )
        except StorageError as exc:  # as for group messages: counted, reported, the node goes on
            self._store_failures += 1
            self._problem(0, manifest.file_id, f"could not record an attachment: {exc}")
            return
        if record is None:  # a redelivery: announced before
            return
        fetching = manifest.size <= self.config.auto_fetch
        if fetching:
            self.store.set_received(record.number, ReceivedState.FETCHING)
            self.start_download(record.number)
        self._on_event(
            Attachment(
                number=record.number,
                sender=sender,
                message_id=message_id,
                manifest=manifest,
                fetching=fetching,
                group_id=group_id,
            )
        )

    def fetch(self, number: int) -> None:
        """Start fetching attachment ``number`` (``UnknownFile`` if there is none)."""
        record = self.store.received(number)
        if record is None:
            raise UnknownFile(str(number))
        if record.state in (ReceivedState.DONE, ReceivedState.FAILED):
            return
        if record.state is ReceivedState.OFFERED:
            self.store.set_received(number, ReceivedState.FETCHING)
        self.start_download(number)

    async def wait_fetched(self, number: int) -> ReceivedRecord:
        """Wait until attachment ``number`` is complete or failed; its record."""

        def settled() -> bool:
            record = self.store.received(number)
            return record is None or record.state in (ReceivedState.DONE, ReceivedState.FAILED)

        await self.wait_for(settled)
        record = self.store.received(number)
        if record is None:
            raise UnknownFile(str(number))
        return record

    def received_progress(self, number: int) -> FileProgress:
        """How much of attachment ``number`` is written."""
        record = self.store.received(number)
        if record is None:
            raise UnknownFile(str(number))
        manifest = decode_manifest(record.manifest)
        running = self._running.get(number)
        if record.state is ReceivedState.DONE:
            done = manifest.size
        elif running is not None:
            done = running.plan.bytes_done
        else:
            done = Download(manifest, done=self.store.written(number)).bytes_done
        return FileProgress(
            total=manifest.size, stored=0, fetched=done, complete=record.state is ReceivedState.DONE
        )

    def start_download(self, number: int) -> None:
        """Run attachment ``number``'s download in the background (once)."""
        if number in self._running or self._nursery is None:
            return
        record = self.store.received(number)
        if record is None:
            return
        manifest = decode_manifest(record.manifest)
        sources = [PublicIdentity.from_bytes(record.sender).peer_id, *manifest.mailboxes]
        if record.group_id:
            sources += [p for p in self._group_peers(record.group_id) if p not in sources]
        try:
            plan = Download(manifest, sources=sources, addresses=self.store.addresses(number))
        except BadManifest:  # a damaged record: fetch the index again
            plan = Download(manifest, sources=sources)
        running = _Running(record=record, plan=plan, claimed=self.store.written(number))
        self._running[number] = running
        self._nursery.start_soon(self._download, running)

    async def _download(self, running: _Running) -> None:
        number, plan = running.record.number, running.plan
        partial = self.downloads / _PARTIAL / f"{plan.manifest.file_id.hex()}.part"
        # the name claimed before a crash: the file may be there already (renamed, not yet recorded)
        claimed = Path(running.record.path) if running.record.path else None
        if claimed is not None and not partial.exists() and claimed.exists():
            partial = claimed
        delay = self.config.retry_initial
        try:
            async with self._download_slots:
                partial.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    if running.claimed and plan.addresses is not None:
                        for index in await trio.to_thread.run_sync(_intact, fd, plan, running.claimed):
                            plan.written(index)
                    running.claimed.clear()
                    while not plan.complete:
                        problem = await self._rounds(running, fd)
                        if running.broken:
                            raise BadManifest(running.broken)
                        if plan.complete:
                            break
                        self._problem(
                            number, plan.manifest.file_id, problem or "no source holds the rest yet"
                        )
                        await trio.sleep(delay)  # a timer: nothing signals a mailbox getting the chunks
                        delay = min(delay * 2, self.config.retry_max)
                        plan.retry_missing()
                    await self._sync(running, fd)
                    await trio.to_thread.run_sync(os.fsync, fd)  # the finished file is durable
                finally:
                    os.close(fd)
                final = claimed or claim_path(self.downloads, plan.manifest.name)
                if claimed is None:  # recorded before the rename: a crash in between finds it
                    self.store.set_received(number, ReceivedState.FETCHING, path=str(final))
                os.replace(partial, final)
                self.store.finished(number, str(final))
                self._hold(plan, final)
            self._on_event(AttachmentFetched(number=number, path=str(final)))
            self._changed_now()  # fetch() returns now, not after the mailboxes answered
            if self._nursery is not None:
                self._nursery.start_soon(self._tell_mailboxes, plan.manifest)
        except BadManifest as exc:
            self.store.set_received(number, ReceivedState.FAILED, error=str(exc))
            self._on_event(
                FileProblem(number=number, file_id=plan.manifest.file_id, error=str(exc), final=True)
            )
        except (StorageError, OSError) as exc:  # files.db or the downloads folder failed: try later
            self._problem(number, plan.manifest.file_id, f"stopped: {exc}; fetch it again to resume")
        finally:
            self._running.pop(number, None)
            self._changed_now()

    async def _rounds(self, running: _Running, fd: int) -> str:
        """Fetch from every source in parallel, a few rounds; the last problem met, or ""."""
        plan, problem = running.plan, ""
        for _ in range(_ROUNDS):
            problems: list[str] = []
            async with trio.open_nursery() as nursery:
                # fetchers hand data chunks to one writer: receiving goes on while chunks are checked
                # and written, a window of them at a time on a worker thread (the queue is bounded)
                send, receive = trio.open_memory_channel[_Arrived](self.config.window)
                nursery.start_soon(self._writer, running, receive, fd, problems, nursery.cancel_scope)
                async with send, trio.open_nursery() as fetchers:
                    for source in list(plan.sources):
                        fetchers.start_soon(self._fetch_from, running, source, send.clone(), problems)
            plan.release()  # a round cancelled half-way (a full disk) left chunks marked in flight
            await self._sync(running, fd)
            if plan.complete or running.broken or plan.stalled() or not problems:
                return problems[-1] if problems else problem
            problem = problems[-1]
        return problem

    async def _fetch_from(
        self, running: _Running, source: str, writer: trio.MemorySendChannel[_Arrived], problems: list[str]
    ) -> None:
        async with writer:
            plan = running.plan
            if source == self.identity.public.peer_id or not plan.want(source, 1, peek=True):
                return
            if not await self._reach(source):
                problems.append(f"cannot reach {source[-12:]}")
                return
            try:
                channel = await open_source(self.host, source, bulk=self.config.bulk)
            except NetworkError as exc:
                problems.append(str(exc))
                return
            try:
                await self._fetch_on(running, source, channel, writer)
            except SOURCE_ERRORS as exc:
                problems.append(f"{source[-12:]}: {exc}")
                plan.source_failed(source)
            except BadManifest as exc:
                running.broken = str(exc)
            finally:
                await channel.aclose()

    async def _fetch_on(
        self, running: _Running, source: str, channel: Channel, writer: trio.MemorySendChannel[_Arrived]
    ) -> None:
        """Keep ``window`` chunks asked of ``source``; index chunks are taken here, data chunks go to
        the writer (they stay in flight in the plan until written, so nobody asks for them again)."""
        plan, window = running.plan, self.config.window
        in_flight: deque[Want] = deque()
        while True:
            room = window - len(in_flight)
            wants = plan.want(source, min(room, 64)) if room >= window // 2 or not in_flight else []
            if wants:
                in_flight.extend(wants)
                await channel.send(encode(Get(addresses=tuple(w.address for w in wants))))
            if not in_flight:
                return
            reply = decode_reply(await channel.receive())
            want = in_flight.popleft()
            match reply:
                case ChunkData() if reply.address == want.address and want.kind is ChunkKind.DATA:
                    await writer.send(_Arrived(source=source, address=reply.address, data=reply.data))
                case ChunkData() if reply.address == want.address:
                    self._take_index(running, source, reply.address, reply.data)
                case ChunkMissing() if reply.address == want.address:
                    plan.missing(source, reply.address)
                case _:
                    raise DecodeError("chunk reply", "an answer out of order")

    def _take_index(self, running: _Running, source: str, address: bytes, data: bytes) -> None:
        plan = running.plan
        try:
            plan.arrived(source, address, data)
        except ChunkMismatch:
            self._mismatches[source] = self._mismatches.get(source, 0) + 1
            return
        if plan.addresses is not None:
            self.store.set_addresses(running.record.number, b"".join(plan.addresses))

    async def _writer(
        self,
        running: _Running,
        arrivals: trio.MemoryReceiveChannel[_Arrived],
        fd: int,
        problems: list[str],
        round_scope: trio.CancelScope,
    ) -> None:
        """Check, decrypt and write what the fetchers hand over, up to ``_WRITE_BATCH`` chunks per
        worker-thread call; a full disk or a broken file ends the round."""
        plan = running.plan
        async with arrivals:
            async for first in arrivals:
                batch = [first]
                while len(batch) < _WRITE_BATCH:
                    try:
                        batch.append(arrivals.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                try:
                    results = await trio.to_thread.run_sync(self._write_batch, plan, batch, fd)
                except (DiskFull, OSError) as exc:  # kept: the round ends, the download retries later
                    problems.append(str(exc))
                    round_scope.cancel()
                    return
                except BadManifest as exc:
                    running.broken = str(exc)
                    round_scope.cancel()
                    return
                for arrived, written in zip(batch, results, strict=True):
                    plan.received(arrived.source, arrived.address)
                    if written is None:
                        plan.strike(arrived.source)
                        self._mismatches[arrived.source] = self._mismatches.get(arrived.source, 0) + 1
                        continue
                    for index, length in written:
                        plan.written(index)
                        running.unsynced.append(index)
                        self._chunks_fetched += 1
                        self._bytes_fetched += length
                if len(running.unsynced) >= _SYNC_EVERY:
                    await self._sync(running, fd)
                self._changed_now()

    def _write_batch(
        self, plan: Download, batch: list[_Arrived], fd: int
    ) -> list[list[tuple[int, int]] | None]:
        """Check, decrypt and write each chunk of ``batch`` (on a worker thread): the (position, length)
        pairs written for each, or None for one that does not match its address."""
        results: list[list[tuple[int, int]] | None] = []
        for arrived in batch:
            try:
                gots = plan.open_data(arrived.source, arrived.address, arrived.data)
            except ChunkMismatch:
                results.append(None)
                continue
            written = []
            for got in gots:
                try:
                    os.pwrite(fd, got.plaintext, got.index * CHUNK_SIZE)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise DiskFull(path=str(self.downloads), needed=len(got.plaintext)) from exc
                    raise
                written.append((got.index, len(got.plaintext)))
            results.append(written)
        return results

    async def _sync(self, running: _Running, fd: int) -> None:
        """Record which chunks were written. Not flushed first: a resumed download checks each one
        against its address (``_intact``), which costs far less than an fsync every 16 MiB."""
        if not running.unsynced:
            return
        positions, running.unsynced = running.unsynced, []
        self.store.chunks_written(running.record.number, positions)

    def _hold(self, plan: Download, final: Path) -> None:
        """Serve the complete file to others from now on (its index is rebuilt: it is deterministic)."""
        assert plan.addresses is not None
        manifest = plan.manifest
        index = build_index(manifest.key, b"".join(plan.addresses))
        self.store.hold(
            file_id=manifest.file_id,
            path=str(final),
            size=manifest.size,
            mtime_ns=os.stat(final).st_mtime_ns,
            key=manifest.key,
            index=list(zip(index.addresses, index.chunks, strict=True)),
            addresses=plan.addresses,
        )

    async def _tell_mailboxes(self, manifest: Manifest) -> None:
        """Show each mailbox our token: it drops the file once every recipient has (best effort)."""
        token = fetch_token(manifest.key, self.identity.public.ed25519)
        for mailbox in manifest.mailboxes:
            with contextlib.suppress(*_DONE_ERRORS):
                with trio.fail_after(30):
                    if await self._reach(mailbox):
                        channel = await open_source(self.host, mailbox, bulk=False)
                        try:
                            await channel.send(encode(Done(file_id=manifest.file_id, token=token)))
                            decode_reply(await channel.receive())
                        finally:
                            await channel.aclose()

    def _problem(self, number: int, file_id: bytes, error: str) -> None:
        self._on_event(FileProblem(number=number, file_id=file_id, error=error, final=False))

    # --- sending ------------------------------------------------------------------------------------

    def start_upload(self, file_id: bytes, mailbox: str) -> None:
        """Upload a sent file to ``mailbox`` in the background (``meshchat.net.file_upload``)."""
        self.uploads.start(file_id, mailbox)

    def sent_progress(self, file_id: bytes) -> FileProgress:
        """How far a sent file got: bytes on the best mailbox, bytes served."""
        record = self.store.sent(file_id)
        if record is None:
            raise UnknownFile(file_id.hex())
        uploads = self.store.uploaded(file_id)
        best = max([self.uploads.acked(file_id, m, n) for m, (n, _f) in uploads.items()], default=0)
        complete = any(f for _n, f in uploads.values())
        stored = record.size if complete else min(record.size, best * CHUNK_SIZE)
        served = min(record.size, self.server.served[file_id])
        return FileProgress(total=record.size, stored=stored, fetched=served, complete=complete)

    def statistics(self) -> FileStatistics:
        """Counters (see ``FileStatistics``)."""
        return FileStatistics(
            chunks_fetched=self._chunks_fetched,
            bytes_fetched=self._bytes_fetched,
            chunks_uploaded=self.uploads.chunks_uploaded,
            bytes_served=self.server.bytes_served,
            mismatches=dict(self._mismatches),
            bad_offers=self._bad_offers,
            store_failures=self._store_failures,
            refused=dict(self.server.refused),
        )


def _intact(fd: int, plan: Download, claimed: set[int]) -> list[int]:
    """The chunks among ``claimed`` that the partial file really holds: each is encrypted again and
    must give its address (a crash can lose writes the store recorded). Runs on a worker thread."""
    assert plan.addresses is not None
    aead = AESGCM(plan.manifest.key)
    good = []
    for index in sorted(claimed):
        if not 0 <= index < len(plan.addresses):
            continue
        length = plain_length(plan.manifest.size, index)
        plain = os.pread(fd, length, index * CHUNK_SIZE)
        if (
            len(plain) == length
            and address_of(encrypt_chunk(aead, ChunkKind.DATA, index, plain)) == plan.addresses[index]
        ):
            good.append(index)
    return good
