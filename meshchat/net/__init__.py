"""The real network: meshchat's gossip router over py-libp2p (TCP, Noise, yamux/mplex).

``build_host`` makes a libp2p host whose key is the user's identity; ``GossipDriver`` runs the same
sans-IO ``GossipRouter`` the simulator runs on that host's ``/meshsub/1.x`` streams.
"""

from meshchat.net.driver import (
    EVENT_QUEUE,
    PUBSUB_PROTOCOLS,
    DriverStatistics,
    GossipDriver,
    MessageDelivered,
    NetDrop,
    NetEvent,
    PeerJoined,
    PeerLeft,
)
from meshchat.net.host import MUXERS, InboundCounter, build_host, key_pair_of, parse_multiaddr

__all__ = [
    "EVENT_QUEUE",
    "MUXERS",
    "PUBSUB_PROTOCOLS",
    "DriverStatistics",
    "GossipDriver",
    "InboundCounter",
    "MessageDelivered",
    "NetDrop",
    "NetEvent",
    "PeerJoined",
    "PeerLeft",
    "build_host",
    "key_pair_of",
    "parse_multiaddr",
]
