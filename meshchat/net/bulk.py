"""The bulk channel: file chunks over a plain TCP connection, framed with AES-256-GCM.

What it is: a side channel for the bytes of files. A chunk server (``meshchat.net.chunk_protocol``)
hands a peer a ``BulkTicket`` (port, one-time ticket id, 32-byte key) over the libp2p stream the peer
already opened, which Noise authenticated; the peer connects to that port, presents the ticket id, and
both sides then exchange frames sealed with keys derived from the ticket key. Whoever holds the key
learnt it from the authenticated stream, so the channel is as authenticated as that stream, and the
server learns from the ticket which peer it serves (a ticket is bound to the peer it was issued to,
single-use, and expires after ``TICKET_TTL``).

Why hand-written: on this machine a py-libp2p stream (TCP + Noise + yamux) between two nodes on
127.0.0.1 tops out near 100 MB/s, while a raw trio TCP copy moves ~2,800 MB/s (FILES.md, "Why a side
channel"). TLS with a pre-shared key would be the standard answer, but Python's ``ssl`` module offers
no TLS-PSK (1.3 external PSKs) and a certificate would add a second identity to check. AES-256-GCM from
OpenSSL (``cryptography``) runs at ~9 GB/s here, so a few lines of framing around it keep the channel
close to raw TCP. The libp2p stream stays the fallback (NAT, relays) and carries the same frames.

What it is not: it does not hide frame sizes or timing, it does not resume a broken connection (the
caller asks for a new ticket), and its secrecy is the libp2p stream's, no more: the key crossed that
stream (Noise, ephemeral keys), is fresh per ticket, and the listener forgets it once the ticket is
used.

Wire (all integers big-endian):
- the client connects and sends the 16-byte ticket id;
- then each side sends frames: a 4-byte ciphertext length ``L`` (``16 <= L <= MAX_BULK_FRAME + 16``,
  checked before the body is read), then ``L`` bytes of AES-256-GCM ciphertext (plaintext + 16-byte
  tag), the 4-byte header as associated data;
- keys: HKDF-SHA256(ticket key, salt=ticket id, info=b"meshchat bulk client->server" or
  b"meshchat bulk server->client"), one per direction;
- nonce: the 12-byte frame counter of its direction (0, 1, 2, ...), so a frame cannot be dropped,
  replayed or reordered without the next one failing to authenticate.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshchat.errors import DecodeError, NetworkError, TooLarge

__all__ = [
    "HELLO_TIMEOUT",
    "MAX_BULK_FRAME",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_PEER",
    "MAX_HELLOS",
    "MAX_TICKETS",
    "MAX_TICKETS_PER_PEER",
    "TICKET_TTL",
    "BulkChannel",
    "BulkListener",
    "BulkStatistics",
    "BulkTicket",
    "Refusal",
    "derive_keys",
    "open_bulk",
]

#: Seconds a ticket waits for its connection. The client dials as soon as the offer arrives over the
#: libp2p stream; 30 s covers a slow dial to a busy node, and a ticket that leaked is useless after.
TICKET_TTL = 30.0
#: Seconds a new connection has to present its ticket. An honest client sends the 16 bytes right after
#: connecting (one round trip); anyone who can reach the port can open connections that say nothing,
#: and each holds a socket and a task until this runs out.
HELLO_TIMEOUT = 5.0
#: Tickets outstanding per peer (more: the oldest is dropped, counted). A download uses one or two bulk
#: channels per source; 4 leaves room for a retry while an old offer is still pending.
MAX_TICKETS_PER_PEER = 4
#: Tickets outstanding for all peers (more: the oldest is dropped, counted): ~100 bytes each, room for
#: 64 peers with 4 each.
MAX_TICKETS = 256
#: Open bulk connections per peer (more: refused, counted): one for the transfer, one while a broken
#: one is being replaced.
MAX_CONNECTIONS_PER_PEER = 2
#: Open bulk connections for all peers (more: refused, counted). Each holds a socket, a task and up to
#: three frames (send buffer, receive buffer, the frame handed out): ~0.75 MiB with 256 KiB chunks,
#: 48 MiB for 64; 3 MiB each, 192 MiB in all, only if every peer sends maximum-size frames.
MAX_CONNECTIONS = 64
#: Connections that have not yet presented a ticket (more: closed at once, counted). Anyone who can
#: reach the port can open them; this bounds what they cost to 64 sockets for ``HELLO_TIMEOUT`` each.
MAX_HELLOS = 64
#: Plaintext bytes per frame. A chunk frame is 256 KiB + 16 (``MAX_CHUNK_WIRE``) plus a few bytes of
#: framing; 1 MiB leaves room for a batch of small frames without letting a peer make us hold more.
MAX_BULK_FRAME = 1 << 20

TICKET_ID_SIZE = 16
KEY_SIZE = 32
_TAG_SIZE = 16  # AES-GCM tag
_HEADER_SIZE = 4  # ciphertext length, big-endian
_NONCE_SIZE = 12
#: Frames per direction: the nonce is the frame counter, and a nonce must never be used twice with a
#: key. 2**64 frames of even one byte would take centuries; the check costs nothing.
MAX_FRAMES = 1 << 64
_INFO_CLIENT_TO_SERVER = b"meshchat bulk client->server"
_INFO_SERVER_TO_CLIENT = b"meshchat bulk server->client"


class Refusal(StrEnum):
    """Why the listener refused or cut a bulk connection (the keys of ``BulkListener.refused``)."""

    #: The ticket id was never issued, was already used, or was dropped or forgotten.
    UNKNOWN_TICKET = "unknown ticket"
    #: The ticket was issued more than ``TICKET_TTL`` seconds before the connection presented it.
    EXPIRED_TICKET = "expired ticket"
    #: The connection did not present a ticket id within ``HELLO_TIMEOUT``.
    HELLO_TIMEOUT = "hello timeout"
    #: The connection closed or broke before its ticket id was complete.
    BROKEN_HELLO = "broken hello"
    #: ``MAX_HELLOS`` connections were already waiting for their ticket id.
    TOO_MANY_HELLOS = "too many hellos"
    #: The peer already had ``MAX_CONNECTIONS_PER_PEER`` open, or all peers ``MAX_CONNECTIONS``.
    TOO_MANY_CONNECTIONS = "too many connections"
    #: The handler met a frame that did not authenticate, an oversized length or a truncated frame.
    BAD_FRAME = "bad frame"
    #: The handler's connection broke (reset) in the middle of its work.
    BROKEN_CONNECTION = "broken connection"


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkTicket:
    """What a chunk server offers a peer (over the authenticated libp2p stream) to open a bulk channel."""

    #: The TCP port the bulk listener listens on.
    port: int
    #: The one-time ticket id the client presents first (16 random bytes).
    ticket: bytes
    #: The secret the channel keys are derived from (32 random bytes); kept out of ``repr``.
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise DecodeError("bulk ticket", f"port {self.port} is not a TCP port")
        if len(self.ticket) != TICKET_ID_SIZE:
            raise DecodeError("bulk ticket", f"ticket id is {len(self.ticket)} bytes, not {TICKET_ID_SIZE}")
        if len(self.key) != KEY_SIZE:
            raise DecodeError("bulk ticket", f"key is {len(self.key)} bytes, not {KEY_SIZE}")


def derive_keys(ticket: BulkTicket) -> tuple[bytes, bytes]:
    """The two AES-256-GCM keys of a ticket's channel: (client->server, server->client)."""

    def derive(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=ticket.ticket, info=info).derive(
            ticket.key
        )

    return derive(_INFO_CLIENT_TO_SERVER), derive(_INFO_SERVER_TO_CLIENT)


class BulkChannel(trio.abc.AsyncResource):
    """One bulk connection, either side: ``send`` and ``receive`` whole frames of at most
    ``MAX_BULK_FRAME`` bytes.

    Sends from several tasks are serialised; one task receives at a time. A cancelled ``receive``
    loses nothing (the next call resumes the frame); a ``send`` cancelled in the middle of a frame
    leaves the channel unusable for sending (``NetworkError``), as trio's streams do. After a bad frame
    every ``receive`` raises ``DecodeError``: what follows it cannot be trusted.
    """

    def __init__(self, stream: trio.SocketStream, *, send_key: bytes, receive_key: bytes, peer: str) -> None:
        #: The PeerId at the other end: the one the ticket was issued to (server side), or the one the
        #: caller named (client side).
        self.peer = peer
        #: Plaintext bytes of the frames sent and received whole.
        self.bytes_sent = 0
        self.bytes_received = 0
        self._stream = stream
        self._socket = stream.socket
        self._sealer = AESGCM(send_key)
        self._opener = AESGCM(receive_key)
        self._send_lock = trio.StrictFIFOLock()
        self._frames_sent = 0
        self._send_broken = False
        # Reused for every frame sent, grown to the largest (at most MAX_BULK_FRAME + 20 bytes).
        self._send_buffer = bytearray()
        # The frame being received, kept here so a cancelled receive resumes where it stopped.
        self._receiving = False
        self._frames_received = 0
        self._header = bytearray(_HEADER_SIZE)
        self._header_got = 0
        self._body = bytearray()  # grown to the largest frame received, at most MAX_BULK_FRAME + 16
        self._body_got = 0
        self._failure: str | None = None
        self._closed = False

    def _what(self) -> str:
        return f"bulk channel with {self.peer}"

    async def send(self, frame: bytes) -> None:
        """Seal and send one frame (``TooLarge`` beyond ``MAX_BULK_FRAME``: the caller's mistake).
        ``NetworkError`` if the connection broke."""
        size = len(frame)
        if size > MAX_BULK_FRAME:
            raise TooLarge(what="bulk frame", size=size, limit=MAX_BULK_FRAME)
        async with self._send_lock:
            if self._send_broken:
                raise NetworkError(self._what(), "an earlier send broke off mid-frame; open a new channel")
            if self._frames_sent >= MAX_FRAMES:
                raise NetworkError(self._what(), "frame counter exhausted; open a new channel")
            sealed = size + _TAG_SIZE
            wire_size = _HEADER_SIZE + sealed
            if len(self._send_buffer) < wire_size:
                self._send_buffer = bytearray(wire_size)
            wire = memoryview(self._send_buffer)[:wire_size]
            header = sealed.to_bytes(_HEADER_SIZE, "big")
            wire[:_HEADER_SIZE] = header
            nonce = self._frames_sent.to_bytes(_NONCE_SIZE, "big")
            self._sealer.encrypt_into(nonce, frame, header, wire[_HEADER_SIZE:])
            self._frames_sent += 1
            self._send_broken = True  # until the whole frame is out: a cancel mid-frame leaves it set
            try:
                await self._stream.send_all(wire)
            except trio.BrokenResourceError as exc:
                raise NetworkError(
                    self._what(), f"connection broke while sending: {exc.__cause__ or exc}"
                ) from exc
            self._send_broken = False
            self.bytes_sent += size

    async def receive(self) -> bytes:
        """The next frame. ``EOFError`` if the peer closed cleanly between frames; ``DecodeError`` for a
        frame that does not authenticate, an oversized length or a connection closed mid-frame;
        ``NetworkError`` if the connection broke."""
        if self._closed:
            raise trio.ClosedResourceError(f"{self._what()} was closed here")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this bulk channel")
        if self._failure is not None:
            raise DecodeError("bulk frame", f"the channel already failed: {self._failure}")
        self._receiving = True
        try:
            return await self._receive_frame()
        except DecodeError as exc:
            self._failure = exc.problem
            raise
        finally:
            self._receiving = False

    async def _receive_frame(self) -> bytes:
        header_view = memoryview(self._header)
        while self._header_got < _HEADER_SIZE:  # at most 4 rounds: each reads at least a byte or stops
            got = await self._receive_into(header_view[self._header_got :])
            if got == 0:
                if self._header_got == 0:
                    raise EOFError(f"{self._what()} closed by the peer")
                raise DecodeError("bulk frame", f"connection closed after {self._header_got} header bytes")
            self._header_got += got
            if self._header_got == _HEADER_SIZE:
                self._check_length()
        sealed = int.from_bytes(self._header, "big")
        body_view = memoryview(self._body)[:sealed]
        while self._body_got < sealed:  # at most `sealed` rounds, each reads at least a byte or stops
            got = await self._receive_into(body_view[self._body_got :])
            if got == 0:
                raise DecodeError("bulk frame", f"connection closed after {self._body_got} of {sealed} bytes")
            self._body_got += got
        nonce = self._frames_received.to_bytes(_NONCE_SIZE, "big")
        try:
            frame = self._opener.decrypt(nonce, body_view, self._header)
        except InvalidTag as exc:
            raise DecodeError(
                "bulk frame",
                f"frame {self._frames_received} does not authenticate (altered, reordered or lost)",
            ) from exc
        self._frames_received += 1
        self._header_got = self._body_got = 0
        self.bytes_received += len(frame)
        return frame

    def _check_length(self) -> None:
        """Checks a complete header before a byte of the body is read, and makes room for the body."""
        sealed = int.from_bytes(self._header, "big")
        if sealed > MAX_BULK_FRAME + _TAG_SIZE:
            raise TooLarge(what="bulk frame", size=sealed, limit=MAX_BULK_FRAME + _TAG_SIZE)
        if sealed < _TAG_SIZE:
            raise DecodeError("bulk frame", f"length {sealed} is shorter than the {_TAG_SIZE}-byte tag")
        if self._frames_received >= MAX_FRAMES:
            raise DecodeError("bulk frame", "frame counter exhausted")
        if len(self._body) < sealed:
            self._body = bytearray(sealed)

    async def _receive_into(self, view: memoryview) -> int:
        # The socket itself rather than SocketStream.receive_some: reading into our buffer saves an
        # allocation and a copy per read, which is most of the cost at GB/s.
        try:
            return await self._socket.recv_into(view)
        except OSError as exc:
            raise NetworkError(self._what(), f"connection broke while receiving: {exc}") from exc

    async def aclose(self) -> None:
        """Closes the connection (the peer's ``receive`` then raises ``EOFError``)."""
        self._closed = True
        await self._stream.aclose()


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkStatistics:
    """A snapshot of a ``BulkListener``."""

    #: Tickets handed out by ``issue``.
    tickets_issued: int
    #: Tickets issued and neither used, dropped nor expired yet.
    tickets_outstanding: int
    #: Tickets dropped unused because their peer or all peers had too many outstanding.
    tickets_dropped: int
    #: Tickets forgotten unused after ``TICKET_TTL``.
    tickets_expired: int
    #: Connections that presented a valid ticket and were handed to the handler.
    connections_accepted: int
    #: Connections whose handler is running now.
    open_connections: int
    #: Connections refused or cut, by ``Refusal`` (a copy).
    refused: dict[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Issued:
    peer: str
    key: bytes = field(repr=False)
    expires_at: float


BulkHandler = Callable[[BulkChannel], Awaitable[None]]


class BulkListener:
    """Listens for bulk connections, checks their tickets and runs the handler for each good one.

    Create it with ``BulkListener.open``; hand out tickets with ``issue``. The handler runs in a nursery
    the listener owns; its channel is closed when it returns or raises. A ``DecodeError`` (bad frame),
    ``NetworkError`` (broken connection) or ``EOFError`` (the peer closed) leaving the handler ends that
    connection only, counted in ``refused``; anything else is a bug and propagates.
    """

    def __init__(self, *, port: int, handler: BulkHandler) -> None:
        #: The TCP port to put in tickets.
        self.port = port
        #: Connections refused or cut, by ``Refusal``.
        self.refused: collections.Counter[str] = collections.Counter()
        self._handler = handler
        # Outstanding tickets by id, oldest first: at most MAX_TICKETS (MAX_TICKETS_PER_PEER per peer).
        self._tickets: dict[bytes, _Issued] = {}
        # Open connections per peer (an entry is deleted at 0): at most MAX_CONNECTIONS in all.
        self._open: collections.Counter[str] = collections.Counter()
        self._hellos = 0
        self._issued = 0
        self._dropped = 0
        self._expired = 0
        self._accepted = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, ip: str, handler: BulkHandler) -> AsyncIterator[BulkListener]:
        """Listens on ``ip`` (one address), on a port the system picks, until the block is left.
        ``NetworkError`` if it cannot listen."""
        try:
            listeners = await trio.open_tcp_listeners(0, host=ip)
        except OSError as exc:
            raise NetworkError(f"listen for bulk channels on {ip}", str(exc)) from exc
        for extra in listeners[1:]:  # a port 0 per address family would differ: serve the first only
            await extra.aclose()
        port = int(listeners[0].socket.getsockname()[1])
        listener = cls(port=port, handler=handler)
        try:
            async with trio.open_nursery() as nursery:
                serve = partial(trio.serve_listeners, handler_nursery=nursery)
                nursery.start_soon(serve, listener._serve_connection, listeners[:1])
                try:
                    yield listener
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # trio wraps what ends a nursery (the caller's body, a handler's bug) in exception groups;
            # one error is raised as itself, as callers expect (as meshchat.net.host.only_exception).
            error: BaseException = group
            while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                error = error.exceptions[0]
            if isinstance(error, BaseExceptionGroup):
                raise
            raise error from None

    def issue(self, peer: str, *, now: float) -> BulkTicket:
        """A fresh single-use ticket for ``peer``, valid until ``now + TICKET_TTL`` (``now`` from
        ``trio.current_time()``, the clock connections are checked against)."""
        for ticket_id in [t for t, issued in self._tickets.items() if issued.expires_at < now]:
            del self._tickets[ticket_id]
            self._expired += 1
        mine = [t for t, issued in self._tickets.items() if issued.peer == peer]
        if len(mine) >= MAX_TICKETS_PER_PEER:
            del self._tickets[mine[0]]
            self._dropped += 1
        if len(self._tickets) >= MAX_TICKETS:
            del self._tickets[next(iter(self._tickets))]
            self._dropped += 1
        ticket = BulkTicket(
            port=self.port, ticket=secrets.token_bytes(TICKET_ID_SIZE), key=secrets.token_bytes(KEY_SIZE)
        )
        self._tickets[ticket.ticket] = _Issued(peer=peer, key=ticket.key, expires_at=now + TICKET_TTL)
        self._issued += 1
        return ticket

    def open_with(self, peer: str) -> bool:
        """Whether a bulk connection from ``peer`` is open now."""
        return self._open[peer] > 0

    def statistics(self) -> BulkStatistics:
        return BulkStatistics(
            tickets_issued=self._issued,
            tickets_outstanding=len(self._tickets),
            tickets_dropped=self._dropped,
            tickets_expired=self._expired,
            connections_accepted=self._accepted,
            open_connections=self._open.total(),
            refused=dict(self.refused),
        )

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            if self._hellos >= MAX_HELLOS:
                self.refused[Refusal.TOO_MANY_HELLOS] += 1
                return
            self._hellos += 1
            try:
                ticket_id = await self._receive_hello(stream)
            finally:
                self._hellos -= 1
            if ticket_id is None:
                return
            issued = self._tickets.pop(ticket_id, None)  # single use, whatever happens next
            if issued is None:
                self.refused[Refusal.UNKNOWN_TICKET] += 1
                return
            if trio.current_time() > issued.expires_at:
                self.refused[Refusal.EXPIRED_TICKET] += 1
                return
            peer = issued.peer
            if self._open[peer] >= MAX_CONNECTIONS_PER_PEER or self._open.total() >= MAX_CONNECTIONS:
                self.refused[Refusal.TOO_MANY_CONNECTIONS] += 1
                return
            client_to_server, server_to_client = derive_keys(
                BulkTicket(port=self.port, ticket=ticket_id, key=issued.key)
            )
            channel = BulkChannel(stream, send_key=server_to_client, receive_key=client_to_server, peer=peer)
            self._accepted += 1
            self._open[peer] += 1
            try:
                await self._handler(channel)
            except DecodeError:
                self.refused[Refusal.BAD_FRAME] += 1
            except NetworkError:
                self.refused[Refusal.BROKEN_CONNECTION] += 1
            except EOFError:
                pass  # the peer closed between frames and the handler let that end it: nothing wrong
            finally:
                self._open[peer] -= 1
                if self._open[peer] <= 0:
                    del self._open[peer]

    async def _receive_hello(self, stream: trio.SocketStream) -> bytes | None:
        """The ticket id the connection presents, or None (counted) if it does not within the time."""
        hello = bytearray()
        with trio.move_on_after(HELLO_TIMEOUT):
            while len(hello) < TICKET_ID_SIZE:  # at most 16 rounds: each reads at least a byte or stops
                try:
                    data = await stream.receive_some(TICKET_ID_SIZE - len(hello))
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    self.refused[Refusal.BROKEN_HELLO] += 1
                    return None
                hello += data
            return bytes(hello)
        self.refused[Refusal.HELLO_TIMEOUT] += 1
        return None


# A timeout parameter (ASYNC109) because the chunk driver dials many sources with one deadline each and
# a NetworkError naming the limit reads better than a TooSlowError from the caller's own scope.
async def open_bulk(
    ip: str,
    port: int,
    ticket: BulkTicket,
    *,
    peer: str,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> BulkChannel:
    """Connects to a bulk listener and presents ``ticket``; ``peer`` is the server's PeerId (for the
    channel's ``peer`` and messages). ``NetworkError`` if it cannot connect within ``timeout`` seconds.
    A refused ticket shows as ``EOFError`` on the first ``receive`` (the server closes without a word)."""
    what = f"bulk channel to {peer} at {ip}:{port}"
    client_to_server, server_to_client = derive_keys(ticket)
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(ip, port)
            try:
                await stream.send_all(ticket.ticket)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError as exc:
        raise NetworkError(what, f"no connection within {timeout:g} s") from exc
    except (OSError, trio.BrokenResourceError) as exc:
        raise NetworkError(what, str(exc)) from exc
    return BulkChannel(stream, send_key=client_to_server, receive_key=server_to_client, peer=peer)
