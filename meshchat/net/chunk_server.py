"""The chunk protocol on the network: channels, the server every node runs, and opening a source.

A *channel* carries frames of the chunk protocol (``meshchat.files.protocol``) both ways: over a
libp2p stream (``/meshchat/chunks/1.0.0``, length-prefixed) or, when the peer offers one, over a bulk
channel (``meshchat.net.bulk``: a direct TCP connection keyed over the libp2p stream, ~10x faster
here). ``open_source`` opens a stream to a peer and asks for a bulk channel; where that fails (a
relayed connection, a firewall) the stream itself carries the chunks.

``ChunkServer`` answers requests: GET from what this profile can serve (its own sent files, encrypted
again from the file on disk, and, on a mailbox, the chunk hold), HOLD/PUT/DONE/HAS on a mailbox, BULK
when it has a bulk listener. Answers go out one chunk at a time, so a stream holds at most one chunk
in memory whatever it asked for. A peer gets ``MAX_STREAMS_PER_PEER`` streams at once and all peers
``MAX_STREAMS``; bad frames end the stream; every refusal is counted by reason.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshchat.errors import (
    ChunkMismatch,
    DecodeError,
    DiskFull,
    NetworkError,
    QuotaExceeded,
    StorageError,
    TooLarge,
    UnknownFile,
)
from meshchat.files.chunks import CHUNK_SIZE, ChunkKind, address_of, encrypt_chunk, plain_length
from meshchat.files.hold import ChunkHold
from meshchat.files.protocol import (
    CHUNK_PROTOCOL,
    MAX_CHUNK_FRAME,
    Bulk,
    ChunkData,
    ChunkMissing,
    ChunkReply,
    ChunkRequest,
    Done,
    ErrorCode,
    Failed,
    Get,
    Has,
    Held,
    Hold,
    Offer,
    Ok,
    Put,
    decode_reply,
    decode_request,
    encode,
)
from meshchat.files.sqlite import FileStore
from meshchat.gossip.rpc import frame
from meshchat.net.bulk import BulkChannel, BulkListener, BulkTicket, open_bulk
from meshchat.net.host import IO_ERRORS

__all__ = [
    "MAX_STREAMS",
    "MAX_STREAMS_PER_PEER",
    "SOURCE_ERRORS",
    "Channel",
    "ChunkServer",
    "StreamChannel",
    "open_source",
]

_PROTOCOL = TProtocol(CHUNK_PROTOCOL)
#: Chunk streams one peer may have open here (a download uses one per source; an upload one).
MAX_STREAMS_PER_PEER: Final = 4
#: All peers together: each holds at most one chunk (256 KiB) in memory at a time.
MAX_STREAMS: Final = 128
#: Seconds a stream may wait for its next request before it is closed (a fetcher that went quiet).
IDLE_TIMEOUT: Final = 120.0
#: Seconds to open a stream and learn whether a bulk channel is on offer.
OPEN_TIMEOUT: Final = 15.0
_READ = 256 * 1024
#: Chunks loaded per worker-thread call (1 MiB: a thread hop per chunk costs more than it saves).
_LOAD_BATCH: Final = 4
#: What opening a source can fail with short of a bug: the network, a deadline, a bad answer.
_OPEN_ERRORS: tuple[type[Exception], ...] = (*IO_ERRORS, trio.TooSlowError, ValueError)
#: A source or mailbox failing us: its answers, its stream or bulk channel (``NetworkError``: reset).
SOURCE_ERRORS: tuple[type[Exception], ...] = (DecodeError, EOFError, NetworkError, *IO_ERRORS)
_BULK_ERRORS: tuple[type[Exception], ...] = (
    *IO_ERRORS,
    trio.TooSlowError,
    EOFError,
    DecodeError,
    NetworkError,
)


class Channel(Protocol):
    """Frames both ways (a libp2p stream or a bulk channel)."""

    async def send(self, frame: bytes) -> None: ...
    async def receive(self) -> bytes: ...
    async def aclose(self) -> None: ...


class StreamChannel:
    """Length-prefixed frames on a libp2p stream, at most ``MAX_CHUNK_FRAME`` bytes each."""

    def __init__(self, stream: INetStream) -> None:
        """Frame ``stream``."""
        self.stream = stream
        self._buffer = bytearray()

    async def send(self, data: bytes) -> None:
        """Write one frame."""
        await self.stream.write(frame(data))

    async def receive(self) -> bytes:
        """Read one frame; ``EOFError`` at a clean end, ``DecodeError`` for a bad length."""
        length, start = await self._length()
        need = start + length
        while len(self._buffer) < need:
            chunk = await self.stream.read(max(_READ, need - len(self._buffer)))
            if not chunk:
                raise DecodeError("chunk frame", "the stream ended inside a frame")
            self._buffer += chunk
        data = bytes(self._buffer[start:need])
        del self._buffer[:need]
        return data

    async def _length(self) -> tuple[int, int]:
        for _ in range(11):  # a varint is at most 10 bytes: one more read to find its end is enough
            value, shift = 0, 0
            for position, byte in enumerate(self._buffer[:10]):
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    if value > MAX_CHUNK_FRAME:
                        raise TooLarge(what="chunk frame", size=value, limit=MAX_CHUNK_FRAME)
                    return value, position + 1
            if len(self._buffer) >= 10:
                raise DecodeError("chunk frame", "length prefix longer than 10 bytes")
            chunk = await self.stream.read(_READ)
            if not chunk:
                if self._buffer:
                    raise DecodeError("chunk frame", "the stream ended inside a length")
                raise EOFError("the stream ended")
            self._buffer += chunk
        raise DecodeError("chunk frame", "length prefix unreadable")

    async def aclose(self) -> None:
        """Close the stream."""
        with contextlib.suppress(*IO_ERRORS):
            await self.stream.close()


async def open_source(host: IHost, peer: str, *, bulk: bool = True) -> Channel:
    """A channel to ``peer`` (connected already): its bulk channel if it offers one and it can be
    reached directly, else the libp2p stream. ``NetworkError`` if no stream can be opened."""
    try:
        with trio.fail_after(OPEN_TIMEOUT):
            stream = await host.new_stream(ID.from_base58(peer), [_PROTOCOL])
    except _OPEN_ERRORS as exc:
        raise NetworkError(f"open a chunk stream to {peer[-12:]}", str(exc) or type(exc).__name__) from exc
    channel = StreamChannel(stream)
    remote = stream.get_remote_address()
    relayed = any("/p2p-circuit" in str(a) for a in stream.muxed_conn.get_transport_addresses())
    if not bulk or remote is None or relayed:
        return channel
    try:
        with trio.fail_after(OPEN_TIMEOUT):
            await channel.send(encode(Bulk()))
            reply = decode_reply(await channel.receive())
            if not isinstance(reply, Offer):
                return channel
            fast = await open_bulk(
                remote[0],
                reply.port,
                BulkTicket(port=reply.port, ticket=reply.ticket, key=reply.key),
                peer=peer,
            )
    except _BULK_ERRORS:
        return channel  # no bulk channel: the stream carries the chunks
    try:
        await channel.aclose()
    except BaseException:  # cancelled while closing the stream: the bulk channel must not leak
        await fast.aclose()
        raise
    return fast


class ChunkServer:
    """Serves the chunk protocol on ``host`` (see the module docstring)."""

    def __init__(
        self,
        host: IHost,
        store: FileStore,
        *,
        hold: ChunkHold | None,
        wall_clock: Callable[[], float],
    ) -> None:
        """Register the stream handler; serve ``store``'s files and, on a mailbox, ``hold``."""
        self._store = store
        self.hold = hold
        self._wall_clock = wall_clock
        self.bulk: BulkListener | None = None
        #: Requests refused, by reason.
        self.refused: Counter[str] = Counter()
        #: Chunk bytes sent, by file id (sent files) and in all.
        self.served: Counter[bytes] = Counter()
        self.bytes_served = 0
        self._streams: Counter[str] = Counter()
        #: Called after each answered request (progress waiters look at ``served``).
        self.on_change: Callable[[], None] = lambda: None
        host.set_stream_handler(_PROTOCOL, self._on_stream)

    async def _on_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        await self.serve(StreamChannel(stream), peer)

    async def on_bulk(self, channel: BulkChannel) -> None:
        """A bulk channel a ticket opened (the listener's handler)."""
        await self.serve(channel, channel.peer)

    def serving(self, peer: str) -> bool:
        """Whether ``peer`` has a chunk stream or a bulk channel open to us now (a fetcher closes its
        own when its download is done: a sender that leaves before that may cut off chunks in flight)."""
        return self._streams[peer] > 0 or (self.bulk is not None and self.bulk.open_with(peer))

    async def serve(self, channel: Channel, peer: str) -> None:
        """Answer ``peer``'s requests on ``channel`` until it ends, goes idle, or misbehaves."""
        if self._streams[peer] >= MAX_STREAMS_PER_PEER or self._streams.total() >= MAX_STREAMS:
            self.refused["too many streams"] += 1
            await channel.aclose()
            return
        self._streams[peer] += 1
        try:
            while True:
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    raw = await channel.receive()
                if idle.cancelled_caught:
                    self.refused["idle"] += 1
                    return
                request = decode_request(raw)
                await self._answer(channel, peer, request)
                self.on_change()
        except EOFError:
            pass
        except DecodeError as exc:
            self.refused[f"bad request: {exc.problem}"[:80]] += 1
            with contextlib.suppress(*IO_ERRORS):
                await channel.send(encode(Failed(code=ErrorCode.BAD_REQUEST, text=exc.problem)))
        except IO_ERRORS:
            self.refused["broken stream"] += 1
        except StorageError:  # files.db or the hold failed while serving: this stream ends, counted
            self.refused["storage"] += 1
        finally:
            self._streams[peer] -= 1
            if not self._streams[peer]:
                del self._streams[peer]
            await channel.aclose()

    async def _answer(self, channel: Channel, peer: str, request: ChunkRequest) -> None:
        match request:
            case Get():
                # the hold's sqlite connection stays on this thread; a sent file's chunks are read and
                # encrypted on a worker thread, ``_LOAD_BATCH`` at a time (OpenSSL and reads let the
                # event loop go on meanwhile)
                addresses = request.addresses
                for start in range(0, len(addresses), _LOAD_BATCH):
                    batch = addresses[start : start + _LOAD_BATCH]
                    loaded = await trio.to_thread.run_sync(self._load_many, batch)
                    for address, data in zip(batch, loaded, strict=True):
                        reply: ChunkReply = (
                            ChunkMissing(address=address)
                            if data is None
                            else ChunkData(address=address, data=data)
                        )
                        await channel.send(encode(reply))
            case Bulk():
                if self.bulk is None:
                    await channel.send(encode(Failed(code=ErrorCode.NO_BULK, text="no bulk channel here")))
                else:
                    ticket = self.bulk.issue(peer, now=trio.current_time())
                    await channel.send(encode(Offer(port=ticket.port, ticket=ticket.ticket, key=ticket.key)))
            case Hold() | Put() | Done() | Has():
                await channel.send(encode(await self._mailbox(peer, request)))

    async def _mailbox(self, peer: str, request: Hold | Put | Done | Has) -> ChunkReply:
        hold, now = self.hold, self._wall_clock()
        if hold is None:
            self.refused["not a mailbox"] += 1
            return Failed(code=ErrorCode.NOT_A_MAILBOX, text="this peer holds no files for others")
        try:
            # on a worker thread: a put fsyncs, a done unlinks every chunk of the file
            return await trio.to_thread.run_sync(self._hold_call, hold, peer, request, now)
        except QuotaExceeded as exc:
            return self._refuse(ErrorCode.QUOTA, exc)
        except UnknownFile as exc:
            return self._refuse(ErrorCode.UNKNOWN_FILE, exc)
        except ChunkMismatch as exc:
            return self._refuse(ErrorCode.MISMATCH, exc)
        except (DiskFull, StorageError) as exc:
            return self._refuse(ErrorCode.STORAGE, exc)
        except DecodeError as exc:
            return self._refuse(ErrorCode.BAD_REQUEST, exc)

    @staticmethod
    def _hold_call(hold: ChunkHold, peer: str, request: Hold | Put | Done | Has, now: float) -> ChunkReply:
        match request:
            case Hold():
                hold.register(
                    peer,
                    file_id=request.file_id,
                    expiry=request.expiry,
                    token_hashes=request.token_hashes,
                    total_bytes=request.total_bytes,
                    now=now,
                )
            case Put():
                hold.put(peer, file_id=request.file_id, address=request.address, data=request.data, now=now)
            case Done():
                hold.done(file_id=request.file_id, token=request.token, now=now)
            case Has():
                return Held(addresses=tuple(hold.has(request.addresses)))
        return Ok()

    def _refuse(self, code: ErrorCode, exc: Exception) -> Failed:
        self.refused[code.name.lower()] += 1
        return Failed(code=code, text=str(exc))

    def _held(self, address: bytes) -> bytes | None:
        """A chunk from the hold (a mailbox's), if there."""
        if self.hold is None:
            return None
        data = self.hold.get(address, now=self._wall_clock())
        if data is not None:
            self.bytes_served += len(data)
        return data

    def _load_many(self, batch: Sequence[bytes]) -> list[bytes | None]:
        """The chunks of ``batch``, from the hold or a file (runs on a worker thread: ``ChunkHold`` and
        ``FileStore`` each lock their own connection)."""
        return [self._held(address) or self._load(address) for address in batch]

    def _load(self, address: bytes) -> bytes | None:
        """A chunk encrypted again from a file this profile sent (runs on a worker thread)."""
        found = self._store.chunk(address)
        if found is None:
            return None
        if found.position < 0:
            data = found.data
        else:
            try:
                with open(found.path, "rb") as source:
                    changed = os.fstat(source.fileno())
                    source.seek(found.position * CHUNK_SIZE)
                    plain = source.read(plain_length(found.size, found.position))
            except OSError:
                self.refused["sent file unreadable"] += 1
                return None
            data = encrypt_chunk(found.key, ChunkKind.DATA, found.position, plain)
            if (changed.st_size, changed.st_mtime_ns) != (found.size, found.mtime_ns) and address_of(
                data
            ) != address:
                self.refused["sent file changed"] += 1
                return None
        self.served[found.file_id] += len(data)
        self.bytes_served += len(data)
        return data
