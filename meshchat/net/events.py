"""What the gossip driver reports: its events for the application, its drop reasons, its statistics.

Kept apart from ``meshchat.net.driver`` (the I/O) so that readers of a node's events and counters need
not read the driver; the driver re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from meshchat.gossip import Protocol, RouterStatistics
from meshchat.gossip.messages import PeerId, Topic
from meshchat.net.budget import BudgetStatistics

__all__ = [
    "DriverStatistics",
    "KeeperStatistics",
    "MessageDelivered",
    "NetDrop",
    "NetEvent",
    "PeerJoined",
    "PeerLeft",
]


class NetDrop(Enum):
    """Why the driver discarded something. Each is counted."""

    #: An RPC frame that did not decode (its stream was reset).
    MALFORMED_RPC = "malformed rpc"
    #: A frame longer than the RPC size limit (its stream was reset before the body was read).
    OVERSIZED_FRAME = "oversized frame"
    #: A stream left a frame unfinished for ``FRAME_STALL_TIMEOUT`` (it was reset).
    STALLED_STREAM = "stalled stream"
    #: A frame for a peer whose send queue was full.
    SEND_QUEUE_FULL = "send queue full"
    #: A frame for a peer with no connection, or whose stream failed to open or write.
    SEND_FAILED = "send failed"
    #: An event the application did not take in time (the event queue was full).
    EVENT_QUEUE_FULL = "event queue full"
    #: A peer-exchange dial that failed or had no address to use.
    DIAL_FAILED = "dial failed"
    #: An inbound TCP connection that never became a libp2p connection (idle until the handshake
    #: timeout, garbage, wrong key, over the connection cap); counted by ``InboundCounter``.
    HANDSHAKE_FAILED = "inbound handshake failed"
    #: An inbound connection closed mid-handshake to make room for newer ones
    #: (``meshchat.net.host.MAX_PENDING_HANDSHAKES``); counted by ``InboundCounter``.
    HANDSHAKE_EVICTED = "inbound handshake evicted"
    #: A stream whose unfinished frame would have taken its peer past its share of the buffer budget,
    #: or all peers past the total (``meshchat.net.budget``); it was reset.
    BUFFER_FULL = "buffer budget exceeded"
    #: An older inbound pubsub stream of a peer that opened another one; the older was reset (one
    #: inbound stream per peer, as go-libp2p-pubsub keeps).
    DUPLICATE_STREAM = "duplicate pubsub stream"
    #: An inbound stream of a peer that had ``meshchat.net.host.MAX_INBOUND_STREAMS_PER_PEER`` open
    #: already (any protocol); it was reset. Counted by ``InboundCounter``.
    TOO_MANY_STREAMS = "too many inbound streams"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDelivered:
    """A validated message arrived, once per message id."""

    #: The topic.
    topic: Topic
    #: Its id.
    message_id: bytes
    #: The payload.
    data: bytes
    #: The peer it first came from (what this node publishes is not delivered back to it).
    source: PeerId


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerJoined:
    """A peer's pubsub stream negotiated a protocol: it is a gossip peer now."""

    #: The peer.
    peer: PeerId
    #: The gossipsub version it speaks.
    protocol: Protocol
    #: True if this node dialled the connection.
    outbound: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerLeft:
    """The last connection to a gossip peer closed."""

    #: The peer.
    peer: PeerId


NetEvent: TypeAlias = MessageDelivered | PeerJoined | PeerLeft


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverStatistics:
    """Counters of the driver and of the router it runs."""

    #: What the driver discarded, by reason.
    drops: dict[NetDrop, int]
    #: RPC frames written to peers.
    frames_sent: int
    #: RPC frames read from peers and decoded.
    frames_received: int
    #: Gossip peers now.
    peers: int
    #: The router's own counters.
    router: RouterStatistics
    #: Bytes of unfinished frames held for peers (their pubsub streams), now and at most.
    buffer: BudgetStatistics | None = None
    #: Bytes queued for sending, all peers together.
    queued_bytes: int = 0
    #: What the node's connection keeper and keepalive did (None: it runs neither).
    keeper: KeeperStatistics | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeeperStatistics:
    """Counters of ``meshchat.net.keeper_driver``: redials below the floor, lookups, keepalive pings."""

    #: Dials made to get back to the floor, or to reconnect a stalled connection (bootstraps too).
    redials: int
    #: Those of them that failed (unreachable, refused, timed out, no address known).
    redial_failures: int
    #: Lookups for more peers (a DHT random walk and/or the bootstrap peers redialled).
    lookups: int
    #: Pings sent to quiet gossip peers.
    pings: int
    #: Pings that failed or were not answered in time.
    pings_failed: int
    #: Connections closed as stalled (a ping unanswered and nothing heard within the timeout).
    stalls_closed: int
    #: Older inbound connections closed because the same peer dialled us again (it gave them up).
    superseded_closed: int
    #: Times the driver woke over ``LATE_WAKE`` late (the node was held up; pings got a fresh timeout).
    late_wakes: int
    #: Connections we dialled that the network closed (a reset, a censor's cut), dialled again at once.
    cuts_redialled: int = 0
    #: Of those drops, the ones not redialled at once: the peer's budget of immediate redials was spent.
    cuts_deferred: int = 0
