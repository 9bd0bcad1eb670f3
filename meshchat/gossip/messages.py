"""The libp2p pubsub RPC as typed records: what gossipsub peers say to each other.

These mirror the protobuf schema of the libp2p pubsub spec (``pubsub/README.md``) with the gossipsub
v1.0 control messages, the v1.1 PRUNE extensions (peer exchange, backoff) and the v1.2 IDONTWANT.
``rpc.py`` turns bytes into these records and back; the router only ever sees records. Optional
protobuf fields that the router must tell apart from "empty" are ``None`` when absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = [
    "RPC",
    "Choke",
    "ControlMessage",
    "Graft",
    "IDontWant",
    "IHave",
    "IWant",
    "MessageId",
    "PeerId",
    "PeerInfo",
    "Prune",
    "PubMessage",
    "SubOpts",
    "Topic",
    "Unchoke",
]

#: A peer's identity as the router knows it: its PeerId text (any hashable text works in simulations).
PeerId: TypeAlias = str
#: A topic name.
Topic: TypeAlias = str
#: A message id: for meshchat envelopes, BLAKE2b-256 of the envelope bytes.
MessageId: TypeAlias = bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SubOpts:
    """A subscription change announced by a peer."""

    #: True to subscribe, False to unsubscribe.
    subscribe: bool
    #: The topic concerned.
    topic: Topic


@dataclass(frozen=True, slots=True, kw_only=True)
class PubMessage:
    """A published message (protobuf ``Message``). Under StrictNoSign only ``topic`` and ``data`` are set."""

    #: The topic it is published on.
    topic: Topic
    #: The payload: for meshchat, an envelope.
    data: bytes
    #: The author's PeerId bytes (StrictSign topics only).
    from_peer: bytes | None = None
    #: The author's sequence number (StrictSign topics only).
    seqno: bytes | None = None
    #: The author's signature (StrictSign topics only).
    signature: bytes | None = None
    #: The author's public key, when it cannot be derived from ``from_peer``.
    key: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IHave:
    """Gossip: "I have these recent messages in this topic"."""

    #: The topic the ids belong to.
    topic: Topic
    #: Ids of messages the sender holds in its message cache.
    message_ids: tuple[MessageId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class IWant:
    """A request for full messages previously announced with IHAVE."""

    #: Ids of the wanted messages.
    message_ids: tuple[MessageId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Graft:
    """ "I added you to my mesh for this topic"."""

    #: The topic concerned.
    topic: Topic


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerInfo:
    """A peer offered in peer exchange (gossipsub v1.1)."""

    #: The offered peer (the codec turns the wire's PeerId bytes into PeerId text).
    peer_id: PeerId | None = None
    #: Its signed peer record, if the pruning peer has one.
    signed_peer_record: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Prune:
    """ "I removed you from my mesh for this topic"; v1.1 adds peer exchange and the backoff."""

    #: The topic concerned.
    topic: Topic
    #: Other peers the pruned peer may connect to (peer exchange).
    peers: tuple[PeerInfo, ...] = ()
    #: Seconds the pruned peer must wait before grafting again, if given.
    backoff: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IDontWant:
    """ "Do not send me these; I already have them" (gossipsub v1.2)."""

    #: Ids of messages the sender already received.
    message_ids: tuple[MessageId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Choke:
    """ "Stop pushing full messages of this topic to me; announce each with IHAVE at once instead".

    meshchat's choke extension (after the Episub / gossipsub v2.0 CHOKE proposals, libp2p specs PRs 413,
    664 and 681); see ``meshchat.gossip.choke``. Peers that do not know it skip the field.
    """

    #: The topic concerned (the sender must be in the receiver's mesh for it).
    topic: Topic


@dataclass(frozen=True, slots=True, kw_only=True)
class Unchoke:
    """ "Push full messages of this topic to me again" (ends a ``Choke``)."""

    #: The topic concerned.
    topic: Topic


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlMessage:
    """The gossipsub control messages piggybacked on one RPC."""

    #: Gossip announcements.
    ihave: tuple[IHave, ...] = ()
    #: Requests for announced messages.
    iwant: tuple[IWant, ...] = ()
    #: Mesh additions.
    graft: tuple[Graft, ...] = ()
    #: Mesh removals.
    prune: tuple[Prune, ...] = ()
    #: Duplicate suppression (v1.2).
    idontwant: tuple[IDontWant, ...] = ()
    #: "Announce, do not push" (meshchat's choke extension).
    choke: tuple[Choke, ...] = ()
    #: "Push again" (meshchat's choke extension).
    unchoke: tuple[Unchoke, ...] = ()

    def entry_count(self) -> int:
        """How many control entries it carries (what the per-peer control rate limit counts)."""
        return (
            len(self.ihave)
            + len(self.iwant)
            + len(self.graft)
            + len(self.prune)
            + len(self.idontwant)
            + len(self.choke)
            + len(self.unchoke)
        )

    def is_empty(self) -> bool:
        """True if the control message carries nothing."""
        return not (
            self.ihave
            or self.iwant
            or self.graft
            or self.prune
            or self.idontwant
            or self.choke
            or self.unchoke
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RPC:
    """One pubsub RPC: subscription changes, messages and control, any of them possibly empty."""

    #: Subscription changes.
    subscriptions: tuple[SubOpts, ...] = ()
    #: Published or forwarded messages.
    publish: tuple[PubMessage, ...] = ()
    #: Control messages, if any.
    control: ControlMessage | None = field(default=None)
