"""What goes into the gossip router and what comes out of it.

Inputs say what happened (``RpcReceived``); actions say what the driver must do (``SendRpc``). Both are
small frozen records; the sets are closed unions, dispatched with ``match`` and ``assert_never``.
Drops are not actions: the router counts every discarded message by ``DropReason`` in
``GossipRouter.statistics()`` (a ``RouterStatistics``), so a driver that reports metrics sees them
without a per-duplicate event. The application's say in what is delivered, the ``Validator`` and its
``ValidationResult``, is defined here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from meshchat.gossip.messages import RPC, MessageId, PeerId, Topic

__all__ = [
    "Deliver",
    "Dial",
    "Disconnect",
    "DropReason",
    "Join",
    "Leave",
    "PeerConnected",
    "PeerDisconnected",
    "Protocol",
    "Publish",
    "RouterAction",
    "RouterInput",
    "RouterStatistics",
    "RpcReceived",
    "SendFailed",
    "SendRpc",
    "ValidationResult",
    "Validator",
]


class Protocol(Enum):
    """The pubsub protocol a peer negotiated."""

    #: gossipsub v1.0: no peer exchange, no backoff in PRUNE, no IDONTWANT.
    MESHSUB_V10 = "/meshsub/1.0.0"
    #: gossipsub v1.1: peer exchange, backoff, scoring-aware peers.
    MESHSUB_V11 = "/meshsub/1.1.0"
    #: gossipsub v1.2: adds IDONTWANT.
    MESHSUB_V12 = "/meshsub/1.2.0"


class DropReason(Enum):
    """Why the router discarded a message, a control entry or an RPC. Each is counted."""

    #: The message id was already seen.
    DUPLICATE = "duplicate"
    #: The validator rejected the message (the sender is penalised).
    INVALID = "invalid"
    #: The message broke its topic's signature policy: unsigned or badly signed on a StrictSign topic,
    #: or carrying author/seqno/signature on a StrictNoSign one (penalised like INVALID).
    BAD_SIGNATURE = "bad signature"
    #: The validator asked to ignore the message (no penalty).
    IGNORED = "ignored"
    #: A message, IHAVE or PRUNE for a topic this router has not joined.
    UNKNOWN_TOPIC = "unknown topic"
    #: A SUBSCRIBE beyond ``GossipConfig.max_topics_per_peer`` topics for that peer.
    TOPIC_LIMIT = "topics over limit"
    #: The sending peer's score is below the graylist threshold: its whole RPC was ignored.
    GRAYLISTED = "graylisted"
    #: IHAVE beyond the per-heartbeat limits, or from a peer below the gossip threshold.
    IHAVE_LIMIT = "ihave over limit"
    #: IWANT for a message asked too often by this peer, or no longer cached.
    IWANT_UNSERVED = "iwant unserved"
    #: IDONTWANT beyond the per-heartbeat limit.
    IDONTWANT_LIMIT = "idontwant over limit"
    #: A GRAFT refused (backoff not over, unknown topic, negative score, or mesh full).
    GRAFT_REFUSED = "graft refused"
    #: The driver could not deliver an RPC to the peer.
    SEND_FAILED = "send failed"
    #: An RPC from a peer the router does not know (not connected).
    UNKNOWN_PEER = "unknown peer"
    #: A published message beyond the sender's rate (``GossipConfig.max_messages_per_second``).
    MESSAGE_RATE_LIMIT = "messages over rate"
    #: Control entries beyond the sender's rate (``GossipConfig.max_control_per_second``); the whole
    #: control part of that RPC is dropped, each entry counted.
    CONTROL_RATE_LIMIT = "control over rate"


# --- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConnected:
    """A pubsub stream to ``peer`` is open."""

    #: The peer.
    peer: PeerId
    #: True if this side dialled the connection (the D_out quota counts these).
    outbound: bool
    #: The protocol the stream negotiated.
    protocol: Protocol = Protocol.MESHSUB_V12
    #: The peer's IP address, for the IP colocation penalty (P6); None if unknown.
    ip: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerDisconnected:
    """The connection to ``peer`` closed."""

    #: The peer.
    peer: PeerId


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcReceived:
    """``peer`` sent ``rpc``."""

    #: The sender.
    peer: PeerId
    #: What it sent, already decoded.
    rpc: RPC


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    """The local application publishes ``data`` on ``topic``."""

    #: The topic.
    topic: Topic
    #: The payload.
    data: bytes
    #: A retry: a message this router already saw goes to the publish targets once more instead of
    #: being dropped as a duplicate (store-and-forward publishes until the recipient's receipt comes).
    again: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Join:
    """The local application subscribes to ``topic`` (JOIN in the spec)."""

    #: The topic.
    topic: Topic


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave:
    """The local application unsubscribes from ``topic`` (LEAVE in the spec)."""

    #: The topic.
    topic: Topic


@dataclass(frozen=True, slots=True, kw_only=True)
class SendFailed:
    """The driver could not send an RPC the router asked for (queue full, stream reset)."""

    #: The peer it was for.
    peer: PeerId


RouterInput: TypeAlias = PeerConnected | PeerDisconnected | RpcReceived | Publish | Join | Leave | SendFailed


# --- actions --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRpc:
    """Send ``rpc`` to ``peer``."""

    #: The recipient.
    peer: PeerId
    #: What to send.
    rpc: RPC


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver:
    """Hand a validated message to the local application, exactly once per message id."""

    #: The topic it arrived on.
    topic: Topic
    #: Its id.
    message_id: MessageId
    #: The payload.
    data: bytes
    #: The peer it first arrived from.
    source: PeerId


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnect:
    """Close the connection to ``peer`` (its score fell below the graylist threshold)."""

    #: The peer.
    peer: PeerId
    #: Why, for logs and metrics.
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dial:
    """Try to connect to ``peer``, offered by peer exchange in a PRUNE from a well-scored peer."""

    #: The peer to dial.
    peer: PeerId
    #: Its signed peer record (addresses), if the PRUNE carried one.
    signed_peer_record: bytes | None


RouterAction: TypeAlias = SendRpc | Deliver | Disconnect | Dial


# --- the validator and the counters ----------------------------------------------------------------


class ValidationResult(Enum):
    """An extended validator's verdict (gossipsub-v1.1.md, "Extended Validators")."""

    #: Deliver and forward.
    ACCEPT = "accept"
    #: Drop and penalise the sender (P4).
    REJECT = "reject"
    #: Drop without penalty.
    IGNORE = "ignore"


#: ``validator(topic, data, message_id)`` decides whether a new message is delivered and forwarded.
Validator = Callable[[Topic, bytes, MessageId], ValidationResult]


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterStatistics:
    """Counters of one router since it started."""

    #: Discarded messages and control entries, by reason.
    drops: Mapping[DropReason, int]
    #: Messages handed to the application.
    delivered: int
    #: Messages published by the local application.
    published: int
    #: Message copies sent to peers (publishing, forwarding and IWANT answers).
    messages_sent: int
    #: Message copies not sent because the peer had said IDONTWANT.
    suppressed_by_idontwant: int
    #: IWANT requests answered with the message.
    iwant_served: int
    #: RPCs emitted.
    rpcs_sent: int
    #: IHAVEs sent to mesh peers that choked us, in place of the message (choke extension).
    announced_to_choked: int = 0
    #: CHOKE entries sent.
    chokes_sent: int = 0
    #: UNCHOKE entries sent.
    unchokes_sent: int = 0
