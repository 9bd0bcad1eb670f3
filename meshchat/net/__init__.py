"""The real network: meshchat's gossip router over py-libp2p (TCP, Noise, yamux/mplex).

``build_host`` makes a libp2p host whose key is the user's identity; ``GossipDriver`` runs the same
sans-IO ``GossipRouter`` the simulator runs on that host's ``/meshsub/1.x`` streams; ``MailboxServer``
and ``call_mailbox`` speak the mailbox protocol. What a remote peer can make a node hold is bounded
and every refusal counted: unfinished frames by a ``BufferBudget`` (per peer and in total), streams
per peer, send queues in frames and bytes, handshakes pending (``InboundCounter``).

Logging: py-libp2p logs under the ``libp2p`` logger and, left alone, its WARNING and ERROR records
(failed protocol probes and the like, which are routine here) reach stderr through ``logging``'s
last-resort handler. Importing this package gives that logger a ``NullHandler``, so they are dropped
by default. To see them, attach a handler to it (``logging.getLogger("libp2p").addHandler(...)``) or
set ``LIBP2P_DEBUG`` (py-libp2p's own switch, e.g. ``LIBP2P_DEBUG=WARNING``) before importing it.
"""

from meshchat.net.budget import BudgetStatistics, BufferBudget
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
    "BudgetStatistics",
    "BufferBudget",
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
