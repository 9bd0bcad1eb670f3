"""The libp2p host a meshchat node runs on: TCP and WSS, Noise, yamux (mplex as fallback), identify, ping.

What it is: a thin constructor around py-libp2p's ``new_host``. The host's key *is* the user's
meshchat identity (the same Ed25519 seed), so the PeerId other peers see after the Noise handshake is
the one in the user's invite. Only Noise is offered for security: py-libp2p's defaults also offer
plaintext and SECIO, which would let a peer negotiate an unauthenticated, unencrypted connection.

Two guards py-libp2p 0.8.1 lacks live here. A listen address another process already listens on is
refused with ``AddressInUse`` (py-libp2p binds with SO_REUSEPORT for hole punching, so the kernel would
let a second process share the port and take some of its connections). ``InboundCounter`` keeps room
for authenticated peers: once ``MAX_PENDING_HANDSHAKES`` inbound connections are still handshaking,
the oldest of them is closed for each new one, so idle sockets cannot fill the connection cap.

What it is not: it does not speak pubsub (``meshchat.net.driver`` runs meshchat's own gossip router on
the host's streams) and does not persist anything.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import socket
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import (
    IHost,
    IMuxedConn,
    INetConn,
    INetStream,
    INetwork,
    INotifee,
    IRawConnection,
    ISecureConn,
)
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import THandler, TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.identity.identify_push.identify_push import ID_PUSH as IDENTIFY_PUSH
from libp2p.io.abc import ReadWriteCloser
from libp2p.io.trio import TrioTCPStream
from libp2p.network.config import ConnectionConfig
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, Yamux
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.transport.exceptions import OpenConnectionError
from libp2p.transport.tcp.tcp import TCP, TCPListener
from libp2p.utils.address_validation import expand_wildcard_address
from libp2p.utils.multiaddr_utils import extract_ip_from_multiaddr
from multiaddr.exceptions import Error as MultiaddrError
from multiaddr.exceptions import ProtocolLookupError

from meshchat.errors import AddressInUse, BadAddress, NetworkError
from meshchat.identity import Identity
from meshchat.net.transports import wss_transport

__all__ = [
    "CLOSE_ERRORS",
    "HANDSHAKE_TIMEOUT",
    "IO_ERRORS",
    "MAX_IDENTIFY_PUSHES_PER_PEER",
    "MAX_INBOUND_STREAMS_PER_PEER",
    "MAX_PENDING_HANDSHAKES",
    "MAX_STREAM_BUFFER",
    "MUXERS",
    "InboundCounter",
    "WindowedYamux",
    "build_host",
    "close_connections",
    "dialable_addrs",
    "key_pair_of",
    "listen_ip",
    "only_exception",
    "parse_multiaddr",
]

#: What py-libp2p 0.8.1's connection and stream calls raise when the network fails them (the I/O
#: boundary every ``except`` in ``meshchat.net`` stops at). The set is open-ended in py-libp2p: its
#: ``NetStream`` wraps whatever a muxer raises into ``StreamError``/``StreamReset``/``StreamEOF``,
#: ``new_stream`` raises ``StreamFailure``, dials ``SwarmException``, the muxers and multistream-select
#: their own types, so the narrowest common type is its ``BaseLibp2pError``. Sockets raise ``OSError``
#: (``TimeoutError`` is one: mplex raises it when a close times out) and trio's stream errors come
#: through where py-libp2p passes a socket's errors on.
IO_ERRORS: tuple[type[Exception], ...] = (
    BaseLibp2pError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)
#: ``IO_ERRORS`` and what closing a stream raises besides: mplex's ``close`` raises a bare
#: ``RuntimeError`` when its connection went away first (py-libp2p 0.8.1 ``mplex_stream.py``).
CLOSE_ERRORS: tuple[type[Exception], ...] = (*IO_ERRORS, RuntimeError)

#: Seconds a connection may take to negotiate security and muxing (and a stream its protocol) before
#: py-libp2p closes it: a handshake on a real network takes well under a second; idle connections that
#: never start one are dropped after this (py-libp2p's default is 30 s).
HANDSHAKE_TIMEOUT = 10
#: Most simultaneous connections, pending handshakes included (py-libp2p counts both against one pool
#: of ``max - min`` inbound slots; its default, 300, lets 250 idle sockets lock out every new peer for a
#: handshake timeout). Capped by half the process's file-descriptor limit.
MAX_CONNECTIONS = 1024
#: Inbound connections that may be mid-handshake (not yet authenticated) at once; for each one beyond,
#: the oldest is closed. A handshake takes milliseconds, so even hundreds of honest peers arriving in
#: the same second stay far below it; idle or slow sockets (a flood, a slowloris) can then hold at most
#: this many of the ``MAX_CONNECTIONS`` slots, and authenticated peers always find room.
MAX_PENDING_HANDSHAKES = 256
#: Inbound streams one peer may have open at once; each one beyond is reset as it arrives (counted in
#: ``InboundCounter.streams_refused``). py-libp2p's own protocol handlers (identify push, the circuit
#: relay's stop) read a message of up to 1 MiB per stream and the number of streams was unbounded:
#: 200 identify-push streams stalled 256 KiB into their message held 59 MiB of one node. meshchat keeps
#: one pubsub stream per peer and at most ``meshchat.net.mailbox.MAX_CALLS_PER_PEER`` mailbox calls;
#: identify, ping, DHT queries and relay circuits add a few short-lived ones.
MAX_INBOUND_STREAMS_PER_PEER = 32
#: Identify pushes one peer may have in progress at once (more are reset, counted with the streams
#: above): a peer pushes when its addresses or protocols change, one message of a few KiB, while
#: py-libp2p's handler takes up to 1 MiB each for up to 10 s.
MAX_IDENTIFY_PUSHES_PER_PEER = 1
#: Stream multiplexers in order of preference: yamux, then mplex for peers that only speak mplex.
MUXERS: tuple[TProtocol, ...] = (TProtocol(YAMUX_PROTOCOL_ID), TProtocol(MPLEX_PROTOCOL_ID))


def _quiet_libp2p_logging() -> None:
    """Stop py-libp2p's log records from reaching stderr unless someone asked for them.

    py-libp2p 0.8.1 clears the handlers of its ``libp2p`` logger on import and stops its propagation
    (unless ``LIBP2P_DEBUG`` is set), meaning to silence it; but a record that finds no handler at
    all goes to ``logging.lastResort``, which prints WARNING and above on stderr (a dozen lines for
    an ordinary run of two nodes). A ``NullHandler`` on that logger is the logging HOWTO's advice for
    libraries: such records are dropped, and a handler the application attaches to the ``libp2p``
    logger (or ``LIBP2P_DEBUG``, py-libp2p's own switch) still gets them. Propagation is left as
    py-libp2p sets it: some of its modules log through the root logger's functions, which install a
    stderr handler on the root, so propagating would print everything again.
    """
    logger = logging.getLogger("libp2p")
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())


_quiet_libp2p_logging()


def key_pair_of(identity: Identity) -> KeyPair:
    """The libp2p key pair of ``identity``: the same Ed25519 key, hence the same PeerId."""
    return create_new_key_pair(identity.seed)


async def close_connections(host: IHost, peer: ID) -> None:
    """Close every connection to ``peer`` one by one, each reported ``disconnected``.

    Not ``host.disconnect``: py-libp2p 0.8.1's ``Swarm.close_peer`` closes the connections it found,
    then drops the peer's whole entry, so a connection that arrived while it was closing (the peer
    redialling a stall we were closing too) is forgotten open: never closed, never reported
    disconnected; the gossip driver kept a link for it and wrote into a dead one (a chat through the
    16 KB cut stalled for minutes), and its socket was left to the garbage collector. A connection
    whose close fails (it was going away already) does not stop the others' (as ``close_peer``).
    """
    for conn in list(host.get_network().connections.get(peer, [])):
        with contextlib.suppress(*CLOSE_ERRORS):
            await conn.close()


def dialable_addrs(host: IHost, peer_id: str) -> list[str]:
    """Where other peers can dial ``host``: its listen addresses, a wildcard (``0.0.0.0``) expanded to
    this machine's interfaces (loopback last), each ending in ``/p2p/<peer_id>``."""
    suffix = f"/p2p/{peer_id}"
    addrs: list[str] = []
    for transport_addr in host.get_transport_addrs():
        # the expansion keeps only /ip/tcp/port; put back what follows (/wss, /tls/ws)
        tail = "".join(f"/{part}" for part in str(transport_addr).split("/")[5:])
        concrete = [
            a if a.endswith(tail) else f"{a}{tail}" for a in map(str, expand_wildcard_address(transport_addr))
        ]
        if str(transport_addr).startswith("/ip4/0.0.0.0/"):  # peers on this machine too
            concrete.append(str(transport_addr).replace("/ip4/0.0.0.0/", "/ip4/127.0.0.1/", 1))
        addrs += [f"{a}{suffix}" for a in concrete if f"{a}{suffix}" not in addrs]
    return addrs


def only_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` and any groups nested in it, or None if there are several
    (trio wraps what ends a nursery in groups; one error is raised as itself, as callers expect)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error


def parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    """``text`` as a multiaddr; ``BadAddress`` if it is not one."""
    try:
        return multiaddr.Multiaddr(text)
    except (MultiaddrError, ValueError) as exc:  # its parse errors are both (30,000 fuzzed strings)
        raise BadAddress(text, str(exc) or type(exc).__name__) from None


#: Most unread bytes one yamux stream may hold, whatever window py-libp2p's auto-tuning granted: four
#: maximum-size meshchat frames (1 MiB); meshchat's readers take frames as they come, and py-libp2p's
#: own protocols (identify, ping, DHT, relay reservations) exchange small messages.
MAX_STREAM_BUFFER = 4 * 1024 * 1024


class _WindowedBuffer(bytearray):
    """A yamux stream's receive buffer that refuses data beyond the window its receiver granted."""

    def __init__(self, value: bytes | bytearray, muxer: Yamux, stream_id: int) -> None:
        super().__init__(value)
        self._muxer = muxer
        self._stream_id = stream_id

    def extend(self, data: object) -> None:
        """Append ``data`` (bytes), or raise ``MuxedStreamError`` if the sender ignored the window."""
        assert isinstance(data, bytes | bytearray | memoryview), "yamux appends bytes"
        stream = self._muxer.streams.get(self._stream_id)
        window = stream.target_recv_window if stream is not None else DEFAULT_WINDOW_SIZE
        if len(self) + len(data) > min(window, MAX_STREAM_BUFFER):
            if isinstance(self._muxer, WindowedYamux):
                self._muxer.refused_frames += 1
            raise MuxedStreamError(f"peer sent past the receive window of stream {self._stream_id}")
        super().extend(data)


class _WindowedBuffers(dict[int, bytearray]):
    """A yamux connection's receive buffers, each a ``_WindowedBuffer``."""

    def __init__(self, muxer: Yamux) -> None:
        super().__init__()
        self._muxer = muxer

    def __setitem__(self, stream_id: int, value: bytearray) -> None:
        super().__setitem__(stream_id, _WindowedBuffer(value, self._muxer, stream_id))


class WindowedYamux(Yamux):
    """py-libp2p's yamux, holding a peer to the receive window it was granted, and each stream's
    unread data to ``MAX_STREAM_BUFFER``.

    py-libp2p 0.8.1's yamux logs "peer exceeded receive window" and buffers the data anyway, so a peer
    that ignores flow control could make a node buffer without limit on any stream whose reader is
    slow or stalled (a stream still negotiating, a ping whose echoes it never reads). Its window
    auto-tuning also grows a stream's window to 16 MiB after a few quick small reads. Here a stream's
    buffer refuses data beyond the smaller of the two; py-libp2p then marks that stream closed for
    reading and drops what else comes for it (the yamux spec makes a window violation a protocol
    error; go-yamux closes the whole session).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream_buffers = _WindowedBuffers(self)
        #: Data frames refused (dropped) because they went past a stream's bound.
        self.refused_frames = 0


class _WindowedMuxerMultistream(MuxerMultistream):
    """py-libp2p's muxer negotiation, building the negotiated muxer from the class it was given:
    py-libp2p 0.8.1's own builds a plain ``Yamux`` for yamux whatever class ``muxer_opt`` names."""

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        protocol, transport_class = await self._selector.select(
            conn, conn.is_initiator, self.negotiate_timeout
        )
        return self._annotate_connection(transport_class(conn, peer_id), conn, protocol)


def _use_windowed_yamux(host: IHost) -> None:
    """Make ``host``'s connections use ``WindowedYamux`` (see ``_WindowedMuxerMultistream``)."""
    upgrader = host.get_network().upgrader  # type: ignore[attr-defined]  # the Swarm's, not in INetwork
    negotiation: MuxerMultistream = upgrader.muxer_multistream
    transports = {protocol: cls for protocol, cls in negotiation.transports.items()}
    transports[MUXERS[0]] = WindowedYamux
    upgrader.muxer_multistream = _WindowedMuxerMultistream(transports, negotiation.negotiate_timeout)


class _Inbound:
    """One inbound TCP connection's handler: the scope to end it with and what became of it."""

    __slots__ = ("authenticated", "evicted", "scope", "stream")

    def __init__(self, stream: ReadWriteCloser) -> None:
        self.stream = stream
        self.scope = trio.CancelScope()
        self.authenticated = False  # py-libp2p reported it as a connection (handshake done)
        self.evicted = False  # its socket was closed mid-handshake to make room for a newer one


class InboundCounter:
    """Counts inbound TCP connections that never became libp2p connections (idle until the handshake
    timeout, garbage instead of a handshake, the wrong key, over the connection cap), and keeps room
    for authenticated peers by closing the oldest handshakes beyond ``max_pending``.

    py-libp2p 0.8.1 runs one handler per inbound TCP connection. It returns at once when the upgrade
    fails or is refused; when the upgrade succeeds it never returns before the host stops, and holds
    one of the swarm's inbound slots all that time, even after the connection closed (so a long-lived
    node would run out of inbound slots). This wraps that handler: a return before ``closing`` is set
    is a failed inbound connection; a connection py-libp2p reports as connected is no longer pending;
    when it disconnects its handler is cancelled, which gives the slot back. py-libp2p exposes no
    counter or policy of its own for any of this, which is why this wraps its TCP listener.
    """

    def __init__(self, *, max_pending: int = MAX_PENDING_HANDSHAKES) -> None:
        #: Most inbound connections mid-handshake; for each one beyond, the oldest is closed.
        self.max_pending = max_pending
        #: Inbound TCP connections accepted.
        self.accepted = 0
        #: Of those, the ones that ended without becoming a libp2p connection (evicted ones excluded).
        self.failed = 0
        #: Of those, the ones closed mid-handshake to make room (``max_pending``).
        self.evicted = 0
        #: Set when the host starts closing: handlers that return from then on are not failures.
        self.closing = False
        #: Inbound streams reset because their peer had ``max_streams_per_peer`` open already.
        self.streams_refused = 0
        #: Most inbound streams one peer may have open at once.
        self.max_streams_per_peer = MAX_INBOUND_STREAMS_PER_PEER
        #: Called after every change (the node wakes its waiters with it).
        self.on_change: Callable[[], None] = _nothing
        # Every running handler by remote (ip, port), and those still handshaking, oldest first. Both
        # are bounded by the sockets the listener holds (``max_pending`` pending plus authenticated
        # connections, which the swarm caps at its connection limit).
        self._handlers: dict[object, _Inbound] = {}
        self._pending: OrderedDict[object, _Inbound] = OrderedDict()

    @property
    def pending(self) -> int:
        """Inbound connections mid-handshake now."""
        return len(self._pending)

    @property
    def handlers(self) -> int:
        """py-libp2p inbound handlers running now (each holds one of the swarm's inbound slots)."""
        return len(self._handlers)

    def wrap(self, handler: THandler) -> THandler:
        """``handler`` (the swarm's), counting what it does with each connection."""

        async def counted(stream: ReadWriteCloser) -> None:
            self.accepted += 1
            key = _remote_of(stream)
            entry = _Inbound(stream)
            while len(self._pending) >= max(1, self.max_pending):
                # Closing its socket (not cancelling its handler) lets py-libp2p's failed-upgrade path
                # run to its end, which gives back the resource manager's slot for it too.
                _, oldest = self._pending.popitem(last=False)
                oldest.evicted = True
                await _close_quietly(oldest.stream)
            self._handlers[key] = self._pending[key] = entry
            try:
                with entry.scope:
                    await handler(stream)  # cancelled at shutdown: then nothing below runs
            finally:
                if self._handlers.get(key) is entry:
                    del self._handlers[key]
                if self._pending.get(key) is entry:
                    del self._pending[key]
            if entry.evicted:
                self.evicted += 1
                self.on_change()
            elif not entry.authenticated and not self.closing:
                self.failed += 1
                self.on_change()

        return counted

    def wrap_streams(
        self, handler: Callable[[INetStream], Any], *, limit: int | None = None
    ) -> Callable[[INetStream], Any]:
        """``handler`` (the swarm's for every inbound stream, or one protocol's), resetting each stream
        beyond ``limit`` (default ``max_streams_per_peer``) open ones of the same peer."""
        open_streams: dict[ID, int] = {}  # per peer; an entry is deleted at 0

        async def limited(stream: INetStream) -> None:
            peer = stream.muxed_conn.peer_id
            open_now = open_streams.get(peer, 0)
            if open_now >= (self.max_streams_per_peer if limit is None else limit):
                self.streams_refused += 1
                self.on_change()
                with trio.move_on_after(HANDSHAKE_TIMEOUT), contextlib.suppress(*CLOSE_ERRORS):
                    await stream.reset()
                return
            open_streams[peer] = open_now + 1
            try:
                await handler(stream)
            finally:
                if open_streams[peer] == 1:
                    del open_streams[peer]
                else:
                    open_streams[peer] -= 1

        return limited

    def notifee(self) -> INotifee:
        """The swarm notifee that tells this counter which connections authenticated and closed."""
        return _InboundNotifee(self)

    def _connected(self, conn: INetConn) -> None:
        key = _remote_of_conn(conn)
        entry = self._handlers.get(key)
        if entry is not None:
            entry.authenticated = True
            self._pending.pop(key, None)
            self.on_change()

    def _disconnected(self, conn: INetConn) -> None:
        entry = self._handlers.get(_remote_of_conn(conn))
        if entry is not None and entry.authenticated:
            entry.scope.cancel()  # its handler only holds a swarm slot now: give it back


class _InboundNotifee(INotifee):
    """Reports connections opening and closing to an ``InboundCounter`` (never blocks the swarm)."""

    def __init__(self, counter: InboundCounter) -> None:
        self._counter = counter

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        """A connection authenticated: if inbound, it is no longer pending."""
        self._counter._connected(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        """A connection closed: if inbound, its handler may end."""
        self._counter._disconnected(conn)

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        """Not needed."""

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        """Not needed."""


def _remote_of(stream: ReadWriteCloser) -> object:
    """The key of an inbound connection: its remote (ip, port), which py-libp2p's muxed connection
    reports too (or the stream itself if the transport does not tell)."""
    remote = stream.get_remote_address()
    return remote if remote is not None else stream


def _remote_of_conn(conn: INetConn) -> object:
    """The remote (ip, port) of ``conn``: yamux and mplex report it (``IMuxedConn`` does not declare
    it, hence the lookup); None for a connection that does not tell, which matches no handler."""
    remote = getattr(conn.muxed_conn, "get_remote_address", None)
    return remote() if callable(remote) else None


async def _close_quietly(stream: ReadWriteCloser) -> None:
    with trio.move_on_after(RESET_TIMEOUT) as scope:
        scope.shield = True
        with contextlib.suppress(*CLOSE_ERRORS):  # closed already by py-libp2p's clean-up
            await stream.close()


#: Seconds closing a socket may take while its task is being torn down.
RESET_TIMEOUT = 1.0


def _nothing() -> None:
    pass


class _GuardedTCPListener(TCPListener):
    """py-libp2p's TCP listener, refusing an address that another socket already listens on."""

    async def listen(self, maddr: multiaddr.Multiaddr) -> None:
        _refuse_if_taken(maddr)
        await super().listen(maddr)


def _refuse_if_taken(maddr: multiaddr.Multiaddr) -> None:
    """``AddressInUse`` if another socket listens on ``maddr``'s (ip, port); ``NetworkError`` if the
    address cannot be bound at all (not one of this machine's).

    py-libp2p binds its listeners with SO_REUSEPORT (hole punching dials from the listen port), and
    the kernel then lets a second process bind the same port and hands it part of the connections.
    A probe bind without SO_REUSEPORT fails while any socket listens there; SO_REUSEADDR keeps a
    restart on the same port possible while the old connections sit in TIME_WAIT. The probe is
    closed before py-libp2p binds: two processes starting in the same millisecond could still both
    pass, which a check from outside the kernel cannot exclude.
    """
    try:
        port = int(maddr.value_for_protocol("tcp") or 0)
    except (ProtocolLookupError, ValueError):
        return  # not a TCP address: py-libp2p reports that itself
    if port == 0:
        return  # the kernel picks a free port
    ip = extract_ip_from_multiaddr(maddr) or "0.0.0.0"
    probe = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((ip, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(str(maddr)) from None
        raise NetworkError(f"listen on {maddr}", exc.strerror or str(exc)) from None
    finally:
        probe.close()


class _CountingTCP(TCP):
    """py-libp2p's TCP transport with an ``InboundCounter`` around its listeners' handler and a
    refusal of addresses in use."""

    def __init__(self, counter: InboundCounter) -> None:
        super().__init__()
        self._counter = counter

    def create_listener(self, handler_function: THandler) -> TCPListener:
        return _GuardedTCPListener(self._counter.wrap(handler_function))

    async def dial_with_source(self, maddr: multiaddr.Multiaddr, source: tuple[str, int]) -> IRawConnection:
        """py-libp2p's dial from ``source`` (the listen port: hole punching, ``meshchat.net.punch``),
        closing its socket when the dial is cancelled.

        py-libp2p 0.8.1's ``_open_tcp_stream_from`` closes the socket only when bind or connect
        raises ``OSError``; DCUtR cancels its other dials once one connects (and each round after
        5 s), which left one open socket per cancelled dial (ResourceWarning: unclosed socket,
        ``laddr=('0.0.0.0', 0)``). DNS addresses go to py-libp2p's own code (no hole punching there).
        """
        ip = extract_ip_from_multiaddr(maddr)
        try:
            port = int(maddr.value_for_protocol("tcp") or 0)
        except (ProtocolLookupError, ValueError):
            port = 0
        if ip is None or not port:
            return await super().dial_with_source(maddr, source)
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # shared with our listener
            await sock.bind(source)
            await sock.connect((ip, port))
        except OSError as exc:
            sock.close()
            raise OpenConnectionError(f"connect {ip}:{port} from {source[0]}:{source[1]}: {exc}") from exc
        except BaseException:  # cancelled: the socket must not outlive the dial
            sock.close()
            raise
        return RawConnection(TrioTCPStream(trio.SocketStream(sock)), True)


def build_host(
    identity: Identity,
    *,
    listen: Sequence[str] = (),
    inbound: InboundCounter | None = None,
) -> IHost:
    """A host for ``identity``: TCP and WebSocket-in-TLS (``/tls/ws``, ``meshchat.net.transports``),
    Noise only, yamux then mplex; failed inbound TCP connections counted in ``inbound`` if given.
    (mDNS: ``meshchat.net.lan``, not py-libp2p's: see there why.)"""
    key_pair = key_pair_of(identity)
    counter = inbound or InboundCounter()
    limit = _connection_limit()
    counter.max_pending = min(counter.max_pending, max(1, limit // 4))
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={MUXERS[0]: Yamux, MUXERS[1]: Mplex},
        listen_addrs=[parse_multiaddr(a) for a in listen] or None,
        transports=[
            _CountingTCP(counter),
            # /tls/ws addresses (meshchat.net.transports); dials them always, listens
            # where --listen names one; one that cannot start is skipped with its reason, TCP goes on
            wss_transport(
                handshake_timeout=HANDSHAKE_TIMEOUT, max_connections=limit, max_pending=counter.max_pending
            ),
        ],
        negotiate_timeout=HANDSHAKE_TIMEOUT,
        connection_config=ConnectionConfig(
            max_connections=limit,
            inbound_upgrade_timeout=HANDSHAKE_TIMEOUT,
            outbound_upgrade_timeout=HANDSHAKE_TIMEOUT,
        ),
    )
    network = host.get_network()
    network.register_notifee(counter.notifee())
    swarm_handler = network.common_stream_handler  # type: ignore[attr-defined]  # the Swarm's, not in INetwork
    network.set_stream_handler(counter.wrap_streams(swarm_handler))
    push = host.get_mux().handlers[IDENTIFY_PUSH]  # one push at a time per peer: see the constant
    assert push is not None, "py-libp2p's host serves identify push"
    host.set_stream_handler(IDENTIFY_PUSH, counter.wrap_streams(push, limit=MAX_IDENTIFY_PUSHES_PER_PEER))
    _use_windowed_yamux(host)
    return host


def listen_ip(host: IHost) -> str | None:
    """The first IPv4 address ``host`` listens on (``0.0.0.0`` for all interfaces), or None: where a
    node's side channels (``meshchat.net.bulk``) listen beside it."""
    for addr in host.get_addrs():
        with contextlib.suppress(ValueError, MultiaddrError, ProtocolLookupError):
            return str(addr.value_for_protocol("ip4"))
    return None


def _connection_limit() -> int:
    """``MAX_CONNECTIONS``, or half the open-file limit if that is lower (each connection is a socket)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(ConnectionConfig().high_watermark, min(MAX_CONNECTIONS, soft // 2))
