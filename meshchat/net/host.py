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
from collections.abc import Sequence

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from meshchat.errors import BadAddress
from meshchat.identity import Identity

__all__ = ["HANDSHAKE_TIMEOUT", "MUXERS", "build_host", "key_pair_of", "parse_multiaddr"]

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


def build_host(identity: Identity, *, listen: Sequence[str] = (), mdns: bool = False) -> IHost:
    """A host for ``identity``: TCP, Noise only, yamux then mplex; mDNS discovery if ``mdns``."""
    key_pair = key_pair_of(identity)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={MUXERS[0]: Yamux, MUXERS[1]: Mplex},
        listen_addrs=[parse_multiaddr(a) for a in listen] or None,
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
