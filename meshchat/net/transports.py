"""A transport with no fixed byte pattern on the wire: libp2p over WebSocket inside TLS 1.3 (``wss``).

What it is: py-libp2p 0.8.1's WebSocket transport (``libp2p.transport.websocket``, on trio-websocket)
for dialing, a listener of our own on trio-websocket (py-libp2p's bounds neither how many inbound
connections may sit in their handshakes nor for how long: see ``_WssListener``), and the TLS set up
for a peer-to-peer network. A listening node makes a fresh self-signed certificate (ECDSA P-256)
each time it starts; a dialing node does not check it, because the Noise handshake inside the
WebSocket authenticates the peer's key (the PeerId in the address) exactly as over TCP, so a man in
the middle who terminates the TLS learns nothing and cannot impersonate the peer. Both sides require
TLS 1.3, in which the certificate travels encrypted. Users list it like any address:
``--listen /ip4/0.0.0.0/tcp/443/tls/ws`` (reported as ``…/tcp/443/wss``; both spellings dial), and
invites carry it with the node's other addresses. Plain TCP stays the default.

Why this one: ``benchmarks/obfs_candidates.py`` measured the candidates on 127.0.0.1 (the 2-core
machine shared with other work: absolute rates swung 33-93 MiB/s for TCP between runs, so ratios taken
in the same run are what counts; four runs), 20 MiB through one libp2p stream with Noise and yamux
inside each, a tap in front of the listener showing what a DPI box sees; ``benchmarks/reach_censor.py``
``obfs_ratio`` repeats the WSS figure through the censor proxy on every run (0.40-0.58).

==========  ============  ==========  ==============================================================
candidate   goodput /     start-up    what a DPI box sees of the client's first packet
            plain TCP
==========  ============  ==========  ==============================================================
plain TCP   1             0           20 bytes, "\\x13/multistream/1.0.0\\n" then "/noise" in clear:
                                      the fingerprint rule (the censor proxy's rule 1) drops it
WSS         0.39-0.48     6-11 ms     a 225-byte TLS 1.3 ClientHello (no SNI for an IP address;
(chosen)                  (the cert)  OpenSSL's, like any Python or curl client), then encrypted
                                      records: HTTPS to an IP address. Passes the fingerprint rule
                                      and the fully-encrypted-traffic rule (a TLS record is exempt)
obfs4       0.51-0.70     11-47 ms    1.5-7.4 KB of uniformly random bytes (4.0 bits set per byte):
            (one run      (2 Go       no pattern, which is itself the signal: the Great Firewall's
            1.1 under     processes)  rule for fully encrypted traffic (Wu et al., USENIX Security
            load)                     2023; Ex1-Ex5 in the benchmark) flags it; it passes the
                                      fingerprint rule
Tor         not run       minutes     needs the Tor network's directory authorities (not reachable
                                      from the test machine); its relays are on public block lists
==========  ============  ==========  ==============================================================

obfs4 moves bytes faster on loopback (its crypto runs in the Go processes beside Python's, and it has
no WebSocket framing), but was not chosen: (1) its server certificate (a 70-character ``cert=``
argument) must reach the dialer out of band, and no multiaddr protocol carries it, so invites, the DHT
and peer exchange could not hand out obfs4 addresses without a format of our own that no other libp2p
implementation reads; (2) it needs ``obfs4proxy`` installed and two helper processes per node, driven
over the pluggable-transport protocol and SOCKS5; (3) random bytes with no protocol at all are what
the networks issue 17 names have blocked since 2021 (obfs4 there; the published GFW rule in the table
flags every obfs4 connection measured). WSS looks like the most common traffic there is, is spoken by
go-libp2p and js-libp2p (browsers dial it), needs no external program, and its cost is CPU: a chat is
a few hundred bytes, and a real link is far slower than the 14-33 MiB/s it reached here. Plain TCP
stays the default: twice as cheap where nothing blocks it.

What a censor can still do against WSS (not solved here): block the IP address (the 16 KB cut and
address block lists are issue 17's other rules); fingerprint OpenSSL's ClientHello (which also blocks
every Python and curl client); probe the port actively and notice a self-signed certificate and a
WebSocket that answers only binary frames (a certificate for a real domain, ``/dns/…/tls/ws``, would
answer that: not done); and watch sizes and timing.

What it is not: no obfs4 or Tor driver (measured, not kept: see above); no domain fronting.

Failures: a transport that cannot start (no TLS 1.3 certificate can be made, the port cannot be
bound: taken by another program, or an address not this machine's) does not stop the node: its listen
addresses are skipped, the reason is kept (``transport_failures``; ``TransportUnavailable`` names what
is missing) and every other transport goes on. (trio-websocket cannot be the missing piece: py-libp2p
0.8.1 itself does not import without it.)
"""

from __future__ import annotations

import datetime
import os
import secrets
import ssl
import tempfile
from collections import OrderedDict, deque
from typing import Any

import multiaddr
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from libp2p.abc import IHost, IListener, ITransport
from libp2p.custom_types import THandler
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.transport.exceptions import OpenConnectionError
from libp2p.transport.upgrader import TransportUpgrader
from libp2p.transport.websocket.connection import P2PWebSocketConnection
from libp2p.transport.websocket.multiaddr_utils import parse_websocket_multiaddr
from libp2p.transport.websocket.transport import WebsocketConfig, WebsocketTransport
from libp2p.utils.multiaddr_utils import extract_ip_from_multiaddr
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from meshchat.errors import TransportUnavailable

__all__ = [
    "CERTIFICATE_DAYS",
    "MAX_FAILURES_KEPT",
    "MAX_WEBSOCKET_MESSAGE",
    "WSS_PROTOCOLS",
    "is_obfuscated",
    "server_tls_context",
    "transport_failures",
    "wss_transport",
]

#: Multiaddr protocols that mark a WebSocket address (``/tls/ws`` and ``/wss`` are both TLS ones).
WSS_PROTOCOLS = frozenset({"ws", "wss"})
#: Days a listener's self-signed certificate is valid: it is made anew at each start, so only a node
#: that runs for longer would need a new one (clients do not check it: Noise authenticates the peer).
CERTIFICATE_DAYS = 365
#: Largest WebSocket message accepted (py-libp2p's default is 32 MiB). Each write of the Noise layer
#: above is one message of at most 65,537 bytes (a 2-byte length and a 65,535-byte Noise frame), so
#: this leaves room without letting a peer make a node buffer 32 MiB per connection.
MAX_WEBSOCKET_MESSAGE = 256 * 1024
#: Failures kept per transport for ``transport_failures`` (one per listen address at most, so a
#: node's own ``--listen`` list bounds it; the cap guards a caller that listens again and again).
MAX_FAILURES_KEPT = 16


#: What a connection that went away (or never spoke TLS and WebSocket) raises in its handshakes.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed)


def is_obfuscated(address: str | multiaddr.Multiaddr) -> bool:
    """Whether ``address`` is one of this module's transport (a ``/tls/ws`` or ``/wss`` address)."""
    names = {p.name for p in multiaddr.Multiaddr(str(address)).protocols()}
    return "wss" in names or ("ws" in names and "tls" in names)


def transport_failures(host: IHost) -> list[TransportUnavailable]:
    """Why some of ``host``'s listen addresses could not be listened on (what was missing), oldest
    first; empty when every transport started."""
    manager = host.get_network().transport_manager  # type: ignore[attr-defined]  # the Swarm's
    failures: list[TransportUnavailable] = []
    for transport in manager.get_transports():
        if isinstance(transport, _Reporting):
            failures += transport.failures
    return failures


class _Reporting:
    """A transport that keeps the reasons its listeners could not start."""

    def __init__(self) -> None:
        #: The reasons, oldest first, at most ``MAX_FAILURES_KEPT``.
        self.failures: deque[TransportUnavailable] = deque(maxlen=MAX_FAILURES_KEPT)


def wss_transport(*, handshake_timeout: float, max_connections: int, max_pending: int) -> ITransport:
    """The WSS transport. ``handshake_timeout`` bounds the TCP, TLS and WebSocket handshakes of a dial
    and of an inbound connection; ``max_pending``: inbound connections still in those handshakes at
    once, the oldest closed for each one beyond; ``max_connections`` caps dialled connections."""
    return _WssTransport(
        handshake_timeout=handshake_timeout, max_connections=max_connections, max_pending=max_pending
    )


class _WssTransport(WebsocketTransport, _Reporting):
    """py-libp2p's WebSocket transport: TLS 1.3 both ways, a self-signed certificate made when a
    listener starts, the peer's certificate not checked (Noise authenticates it).

    Its listeners bind with trio (SO_REUSEADDR, no SO_REUSEPORT), so the kernel itself refuses a port
    another socket listens on: that is one of the failures kept, not the node's end.
    """

    def __init__(self, *, handshake_timeout: float, max_connections: int, max_pending: int) -> None:
        self._max_pending = max_pending
        config = WebsocketConfig(
            tls_client_config=_client_context(),
            handshake_timeout=handshake_timeout,
            max_connections=max_connections,
            max_message_size=MAX_WEBSOCKET_MESSAGE,
        )
        # py-libp2p's WebSocket transport keeps the upgrader only to hand it to its listeners, which
        # never use it (the swarm upgrades every connection): an empty one will do.
        WebsocketTransport.__init__(self, TransportUpgrader({}, {}), config=config)
        _Reporting.__init__(self)

    def can_dial(self, maddr: multiaddr.Multiaddr) -> bool:
        """A WebSocket address, ``/p2p/<PeerId>`` or not (py-libp2p 0.8.1 refuses ``/tls/ws/p2p/…``
        while it takes ``/wss/p2p/…``: it checks the whole address, then dials only ip and port)."""
        return bool(super().can_dial(_without_peer(maddr)))

    async def dial(self, maddr: multiaddr.Multiaddr) -> RawConnection:
        """Open a TLS connection and a WebSocket in it to ``maddr`` (the swarm then runs Noise)."""
        raw = await super().dial(_without_peer(maddr))
        return _SocketClosingConnection(raw.stream, raw.is_initiator)

    def create_listener(self, handler: THandler) -> IListener:
        """A listener with a new certificate; if none can be made, one that reports why."""
        try:
            context = server_tls_context()
        except (ssl.SSLError, OSError, ValueError) as exc:
            return _FailedListener(self, TransportUnavailable("wss", "a TLS 1.3 certificate", str(exc)))
        return _WssListener(
            self, handler, context, handshake_timeout=self._handshake_timeout, max_pending=self._max_pending
        )


class _SocketClosingConnection(RawConnection):
    """A dialled WebSocket connection whose close always closes its socket.

    When the network ends a connection (a censor's reset, a cut), trio-websocket 0.12 records an
    abnormal closure and never closes its stream; its ``aclose`` then returns at once, and py-libp2p's
    ``P2PWebSocketConnection.close`` does not even call it once a read saw the closure, so the dialled
    TCP socket stayed open until garbage collection (a ResourceWarning in the tests; a descriptor per
    cut connection in a long-lived node). Listeners are not affected: trio's ``serve_listeners`` closes
    each accepted socket when its handler returns.
    """

    async def close(self) -> None:
        """Close the WebSocket, then its socket, whatever state the WebSocket was left in."""
        try:
            await super().close()
        finally:
            # py-libp2p's P2PWebSocketConnection keeps trio-websocket's connection, which keeps the
            # stream it was given (neither exposes them publicly)
            websocket = getattr(self.stream, "_ws_connection", None)
            stream = getattr(websocket, "_stream", None)
            if isinstance(stream, trio.abc.AsyncResource):
                await trio.aclose_forcefully(stream)


def _without_peer(maddr: multiaddr.Multiaddr) -> multiaddr.Multiaddr:
    """``maddr`` without its final ``/p2p/<PeerId>``, if it has one (a relayed address is left whole:
    it is the circuit relay's to dial)."""
    head, found, peer = str(maddr).rpartition("/p2p/")
    return multiaddr.Multiaddr(head) if found and "/" not in peer and "/p2p" not in head else maddr


def _client_context() -> ssl.SSLContext:
    """TLS for dialing: 1.3 only (the server's certificate travels encrypted), certificate unchecked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the Noise handshake inside authenticates the peer's key
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def server_tls_context() -> ssl.SSLContext:
    """TLS for listening: 1.3 only, with a new self-signed ECDSA P-256 certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    # a name like any other host's, not one that says meshchat (only an active prober sees it)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{secrets.token_hex(6)}.net")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
        .sign(key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # ssl loads keys only from files: a private folder, deleted as soon as they are loaded
    with tempfile.TemporaryDirectory(prefix="meshchat-wss-") as folder:
        cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        with open(cert_path, "wb") as out:
            out.write(certificate.public_bytes(serialization.Encoding.PEM))
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        context.load_cert_chain(cert_path, key_path)
    return context


class _WssListener(IListener):
    """Accepts TLS connections, then a WebSocket in each, and hands it to the swarm.

    Written here instead of using py-libp2p's ``WebsocketListener``, which runs trio-websocket's
    ``serve_websocket`` with its defaults: any number of inbound connections may sit in the TLS and
    WebSocket handshakes, each for up to 60 s, so idle sockets could use up a node's file descriptors.
    Here at most ``max_pending`` are mid-handshake (for each one beyond, the oldest is closed, as
    ``meshchat.net.host.InboundCounter`` does for TCP) and each has ``handshake_timeout`` seconds.
    Binding with trio (SO_REUSEADDR, no SO_REUSEPORT) lets the kernel refuse a port another socket
    listens on: a failure kept in the transport's ``failures``, not the node's end.
    """

    def __init__(
        self,
        transport: _WssTransport,
        handler: THandler,
        context: ssl.SSLContext,
        *,
        handshake_timeout: float,
        max_pending: int,
    ) -> None:
        self._transport = transport
        self._handler = handler
        self._context = context
        self._handshake_timeout = handshake_timeout
        self._max_pending = max(1, max_pending)
        # handshakes in progress, oldest first: at most max_pending (bounded above)
        self._pending: OrderedDict[int, trio.CancelScope] = OrderedDict()
        self._scope = trio.CancelScope()
        self._addrs: tuple[multiaddr.Multiaddr, ...] = ()
        #: Set by the swarm before ``listen`` (py-libp2p sets it on every listener).
        self.background_nursery: trio.Nursery | None = None
        #: Inbound connections closed mid-handshake to make room for newer ones.
        self.evicted = 0
        #: Inbound WebSocket connections whose libp2p upgrade failed.
        self.failed = 0

    async def listen(self, maddr: multiaddr.Multiaddr) -> None:
        """Listen on ``maddr``; ``OpenConnectionError`` (which the swarm skips) if it cannot."""
        parsed = parse_websocket_multiaddr(maddr)
        host = extract_ip_from_multiaddr(parsed.rest_multiaddr) or "0.0.0.0"
        try:
            listeners = await trio.open_tcp_listeners(
                int(parsed.rest_multiaddr.value_for_protocol("tcp") or 0), host=host
            )
        except OSError as exc:
            problem = TransportUnavailable(
                "wss", "a socket it can listen on", exc.strerror or str(exc), address=str(maddr)
            )
            self._transport.failures.append(problem)
            raise OpenConnectionError(str(problem)) from exc
        assert self.background_nursery is not None, "the swarm sets it before listening"
        ip, port = listeners[0].socket.getsockname()[:2]
        family = "ip6" if ":" in ip else "ip4"
        self._addrs = (multiaddr.Multiaddr(f"/{family}/{ip}/tcp/{port}/wss"),)
        await self.background_nursery.start(self._serve, listeners)

    async def _serve(
        self,
        listeners: list[trio.SocketListener],
        task_status: Any = trio.TASK_STATUS_IGNORED,  # trio's TaskStatus, typed as the drivers do
    ) -> None:
        with self._scope:
            task_status.started()
            await trio.serve_listeners(self._accept, listeners)

    async def _accept(self, stream: trio.SocketStream) -> None:
        key = id(stream)
        while len(self._pending) >= self._max_pending:
            _, oldest = self._pending.popitem(last=False)
            oldest.cancel()
            self.evicted += 1
        handshake = self._pending[key] = trio.move_on_after(self._handshake_timeout)
        tls = trio.SSLStream(stream, self._context, server_side=True, https_compatible=True)
        try:
            async with trio.open_nursery() as websocket_tasks:  # trio-websocket's reader task
                connection = None
                try:
                    with handshake:
                        await tls.do_handshake()
                        request = await wrap_server_stream(
                            websocket_tasks, tls, max_message_size=MAX_WEBSOCKET_MESSAGE
                        )
                        connection = await request.accept()
                except _GONE:
                    pass  # no TLS, no WebSocket, or the peer left: its socket is closed below
                self._pending.pop(key, None)
                if connection is not None:
                    await self._hand_over(connection)
                websocket_tasks.cancel_scope.cancel()
        except* _GONE:
            pass  # the reader task saw the peer leave
        finally:
            self._pending.pop(key, None)
            await trio.aclose_forcefully(tls)

    async def _hand_over(self, connection: WebSocketConnection) -> None:
        """Give the swarm ``connection`` to upgrade and keep (returns when it is over)."""
        wrapped = P2PWebSocketConnection(
            connection, is_secure=True, max_buffered_amount=MAX_WEBSOCKET_MESSAGE
        )
        try:
            await self._handler(wrapped)
        except Exception:
            # the swarm's upgrade of this connection failed (Noise, muxer, limits: any of py-libp2p's
            # errors): the connection's end, never the listener's (py-libp2p's TCP listener does so too)
            self.failed += 1
        finally:
            await wrapped.close()

    def get_addrs(self) -> tuple[multiaddr.Multiaddr, ...]:
        """Where it listens."""
        return self._addrs

    async def close(self) -> None:
        """Stop listening and close its connections."""
        self._scope.cancel()
        await trio.lowlevel.checkpoint()


class _FailedListener(IListener):
    """A listener that could not be made: ``listen`` records and raises its reason."""

    def __init__(self, transport: _Reporting, problem: TransportUnavailable) -> None:
        self._transport = transport
        self._problem = problem

    async def listen(self, maddr: multiaddr.Multiaddr) -> None:
        """Record the reason and raise it as the ``OpenConnectionError`` the swarm skips."""
        await trio.lowlevel.checkpoint()
        self._transport.failures.append(self._problem.at(str(maddr)))
        raise OpenConnectionError(str(self._problem))

    def get_addrs(self) -> tuple[multiaddr.Multiaddr, ...]:
        """None: it never listened."""
        return ()

    async def close(self) -> None:
        """Nothing to close."""
        await trio.lowlevel.checkpoint()
