"""The libp2p host a meshchat node runs on: TCP, Noise, yamux (mplex as fallback), identify, ping.

What it is: a thin constructor around py-libp2p's ``new_host``. The host's key *is* the user's
meshchat identity (the same Ed25519 seed), so the PeerId other peers see after the Noise handshake is
the one in the user's invite. Only Noise is offered for security: py-libp2p's defaults also offer
plaintext and SECIO, which would let a peer negotiate an unauthenticated, unencrypted connection.

What it is not: it does not speak pubsub (``meshchat.net.driver`` runs meshchat's own gossip router on
the host's streams) and does not persist anything.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Sequence

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import THandler, TProtocol
from libp2p.io.abc import ReadWriteCloser
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP, TCPListener

from meshchat.errors import BadAddress
from meshchat.identity import Identity

__all__ = ["HANDSHAKE_TIMEOUT", "MUXERS", "InboundCounter", "build_host", "key_pair_of", "parse_multiaddr"]

#: Seconds a connection may take to negotiate security and muxing (and a stream its protocol) before
#: py-libp2p closes it: a handshake on a real network takes well under a second; idle connections that
#: never start one are dropped after this (py-libp2p's default is 30 s).
HANDSHAKE_TIMEOUT = 10
#: Most simultaneous connections, pending handshakes included (py-libp2p counts both against one pool
#: of ``max - min`` inbound slots; its default, 300, lets 250 idle sockets lock out every new peer for a
#: handshake timeout). Capped by half the process's file-descriptor limit.
MAX_CONNECTIONS = 1024
#: Stream multiplexers in order of preference: yamux, then mplex for peers that only speak mplex.
MUXERS: tuple[TProtocol, ...] = (TProtocol(YAMUX_PROTOCOL_ID), TProtocol(MPLEX_PROTOCOL_ID))


def key_pair_of(identity: Identity) -> KeyPair:
    """The libp2p key pair of ``identity``: the same Ed25519 key, hence the same PeerId."""
    return create_new_key_pair(identity.seed)


def parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    """``text`` as a multiaddr; ``BadAddress`` if it is not one."""
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:  # the multiaddr package raises several unrelated types
        raise BadAddress(text, str(exc) or type(exc).__name__) from None


class InboundCounter:
    """Counts inbound TCP connections that never became libp2p connections: idle until the handshake
    timeout, garbage instead of a handshake, the wrong key, or over the connection cap.

    py-libp2p 0.8.1 keeps a listener's per-connection handler running for as long as an upgraded
    connection may live (until the host stops), and returns from it at once when the upgrade fails or
    is refused; a return before ``closing`` is set is therefore a failed inbound connection. It exposes
    no counter of its own for these, which is why this wraps its TCP listener.
    """

    def __init__(self) -> None:
        #: Inbound TCP connections accepted.
        self.accepted = 0
        #: Of those, the ones that ended without becoming a libp2p connection.
        self.failed = 0
        #: Set when the host starts closing: handlers that return from then on are not failures.
        self.closing = False
        #: Called after every change (the node wakes its waiters with it).
        self.on_change: Callable[[], None] = _nothing

    def wrap(self, handler: THandler) -> THandler:
        """``handler`` (the swarm's), counting what it does with each connection."""

        async def counted(stream: ReadWriteCloser) -> None:
            self.accepted += 1
            await handler(stream)  # cancelled at shutdown: then nothing below runs
            if not self.closing:
                self.failed += 1
                self.on_change()

        return counted


def _nothing() -> None:
    pass


class _CountingTCP(TCP):
    """py-libp2p's TCP transport with an ``InboundCounter`` around its listeners' handler."""

    def __init__(self, counter: InboundCounter) -> None:
        super().__init__()
        self._counter = counter

    def create_listener(self, handler_function: THandler) -> TCPListener:
        return super().create_listener(self._counter.wrap(handler_function))


def build_host(
    identity: Identity,
    *,
    listen: Sequence[str] = (),
    mdns: bool = False,
    inbound: InboundCounter | None = None,
) -> IHost:
    """A host for ``identity``: TCP, Noise only, yamux then mplex; mDNS discovery if ``mdns``; failed
    inbound connections counted in ``inbound`` if given."""
    key_pair = key_pair_of(identity)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={MUXERS[0]: Yamux, MUXERS[1]: Mplex},
        listen_addrs=[parse_multiaddr(a) for a in listen] or None,
        transports=[_CountingTCP(inbound or InboundCounter())],
        enable_mDNS=mdns,
        negotiate_timeout=HANDSHAKE_TIMEOUT,
        connection_config=ConnectionConfig(
            max_connections=_connection_limit(),
            inbound_upgrade_timeout=HANDSHAKE_TIMEOUT,
            outbound_upgrade_timeout=HANDSHAKE_TIMEOUT,
        ),
    )


def _connection_limit() -> int:
    """``MAX_CONNECTIONS``, or half the open-file limit if that is lower (each connection is a socket)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(ConnectionConfig().high_watermark, min(MAX_CONNECTIONS, soft // 2))
