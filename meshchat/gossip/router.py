"""The gossipsub router: a sans-IO state machine for gossipsub v1.0, v1.1 and v1.2.

It keeps the mesh, fanout, message cache, seen cache, backoffs, gossip promises and peer scores of
one node, and turns inputs (``meshchat.gossip.events``) into actions. It does no I/O and never reads a
clock: every call brings ``now`` (seconds, monotonic), randomness comes from the injected
``random.Random``. The simulator and the libp2p driver run this same class.

Spec map: gossipsub-v1.0.md (mesh, fanout, gossip, heartbeat, control messages), gossipsub-v1.1.md
(PRUNE backoff and peer exchange, flood publishing, adaptive gossip, outbound quotas, scoring with
its thresholds, opportunistic grafting, extended validators, spam protection), gossipsub-v1.2.md
(IDONTWANT); the choke extension (``meshchat.gossip.choke``: CHOKE/UNCHOKE after the Episub proposals;
a choked peer announces each new message with an immediate IHAVE instead of pushing it) and per-peer
token-bucket rate limits (``meshchat.gossip.ratelimit``). Messages are content addressed and unsigned
(StrictNoSign): the id is a hash of the data (``message_id_fn``), and validation is the application's
(``validator``). Floodsub peers, explicit peering agreements and signed-topic validation are out of
scope here (the network driver verifies libp2p signatures on StrictSign topics before handing messages
in).

The tables peers fill live beside it, each with its bound: ``tables`` (backoffs, IWANT promises,
IDONTWANT ids), ``mcache`` (messages and seen ids), ``score`` (peer scores); the peers' topic sets and
the mesh stay here, bounded by ``GossipConfig.max_topics_per_peer`` and the mesh degree.

What it is not: a transport. Drivers frame, encode and send the RPCs in ``SendRpc`` actions, open and
close connections for ``Dial``/``Disconnect``, and call ``on_timer`` once ``now >= next_deadline()``.
"""

from __future__ import annotations

import math
import random
import statistics as stats_lib
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from typing import assert_never

from meshchat.gossip.choke import ChokeTable
from meshchat.gossip.config import GossipConfig, ScoreParams
from meshchat.gossip.events import (
    Deliver,
    Dial,
    Disconnect,
    DropReason,
    Join,
    Leave,
    PeerConnected,
    PeerDisconnected,
    Protocol,
    Publish,
    RouterAction,
    RouterInput,
    RouterStatistics,
    RpcReceived,
    SendFailed,
    SendRpc,
    ValidationResult,
    Validator,
)
from meshchat.gossip.mcache import MessageCache, SeenCache
from meshchat.gossip.messages import (
    RPC,
    Choke,
    ControlMessage,
    Graft,
    IDontWant,
    IHave,
    IWant,
    MessageId,
    PeerId,
    PeerInfo,
    Prune,
    PubMessage,
    SubOpts,
    Topic,
    Unchoke,
)
from meshchat.gossip.outbox import Outbox
from meshchat.gossip.ratelimit import TokenBucket
from meshchat.gossip.score import PeerScore
from meshchat.gossip.signing import MessageSigner, signature_problem, signed_message_id, unsigned_problem
from meshchat.gossip.tables import Backoffs, DontSend, Promises
from meshchat.wire import message_id as content_id

__all__ = ["GossipRouter", "RouterStatistics", "ValidationResult", "Validator"]


def _accept_all(_topic: Topic, _data: bytes, _mid: MessageId) -> ValidationResult:
    return ValidationResult.ACCEPT


@dataclass(slots=True)
class _Peer:
    protocol: Protocol
    outbound: bool
    topics: set[Topic]
    messages: TokenBucket
    control: TokenBucket
    ihave_messages: int = 0
    ihave_ids: int = 0
    idontwant_ids: int = 0


class GossipRouter:
    """One node's gossipsub router. Feed it inputs with ``handle``; call ``on_timer`` when due."""

    def __init__(
        self,
        config: GossipConfig,
        *,
        local_peer: PeerId,
        rng: random.Random,
        validator: Validator | None = None,
        score_params: ScoreParams | None = None,
        message_id_fn: Callable[[bytes], MessageId] = content_id,
        signer: MessageSigner | None = None,
    ) -> None:
        """Create a router for ``local_peer``; ``score_params=None`` turns peer scoring off.

        ``signer`` signs what this node publishes on ``config.signed_topics`` (StrictSign); without
        one, publishing there raises ``ValueError``.
        """
        self.config = config
        self.local_peer = local_peer
        self._rng = rng
        self._validator = validator or _accept_all
        self._message_id = message_id_fn
        self._signer = signer
        self._signed_topics = config.signed_topics
        self._score = PeerScore(score_params) if score_params is not None else None
        # With scoring off every score is 0 and no threshold (all negative) is ever crossed.
        thresholds = score_params.thresholds if score_params is not None else None
        self._gossip_threshold = thresholds.gossip_threshold if thresholds else -math.inf
        self._publish_threshold = thresholds.publish_threshold if thresholds else -math.inf
        self._graylist_threshold = thresholds.graylist_threshold if thresholds else -math.inf
        self._accept_px_threshold = thresholds.accept_px_threshold if thresholds else -math.inf
        self._opportunistic_threshold = thresholds.opportunistic_graft_threshold if thresholds else -math.inf
        self._peers: dict[PeerId, _Peer] = {}
        self._topic_peers: dict[Topic, set[PeerId]] = {}
        self._mesh: dict[Topic, set[PeerId]] = {}
        self._fanout: dict[Topic, set[PeerId]] = {}
        self._fanout_last_publish: dict[Topic, float] = {}
        self._joined: set[Topic] = set()
        self._backoff = Backoffs()
        self._mcache = MessageCache(history=config.mcache_len, gossip=config.mcache_gossip)
        self._seen = SeenCache(config.seen_ttl)
        self._promises = Promises()
        self._dont_send = DontSend()
        self._dont_by_peer = self._dont_send.by_peer  # the forwarding hot path reads it directly
        self._next_heartbeat: float | None = None
        self._heartbeats = 0
        self._outbox = Outbox()
        self._drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)
        self._duplicates = 0  # DropReason.DUPLICATE, kept apart: an enum key costs two hash calls
        self._delivered = 0
        self._published = 0
        self._messages_sent = 0
        self._suppressed = 0
        self._iwant_served = 0
        self._rpcs_sent = 0
        self._actions: list[RouterAction] = []
        #: Receiver side of the choke extension (None: we choke nobody). The sender side, which mesh
        #: peers choked us per topic, is always kept: CHOKE is honoured whatever our own setting.
        self._choke = ChokeTable.from_config(config) if config.choke else None
        self._choked_by: dict[Topic, set[PeerId]] = {}  # bounded: joined topics x mesh peers
        self._announced = self._chokes_sent = self._unchokes_sent = 0

    # --- read-only views --------------------------------------------------------------------------

    @property
    def mesh(self) -> Mapping[Topic, Set[PeerId]]:
        """The mesh peers of each joined topic (a live view; do not modify)."""
        return self._mesh

    @property
    def fanout(self) -> Mapping[Topic, Set[PeerId]]:
        """The fanout peers of topics published to but not joined."""
        return self._fanout

    @property
    def peers(self) -> Set[PeerId]:
        """Connected pubsub peers."""
        return self._peers.keys()

    def topic_peers(self, topic: Topic) -> Set[PeerId]:
        """Connected peers subscribed to ``topic``."""
        return self._topic_peers.get(topic, frozenset())

    def score(self, peer: PeerId, *, now: float) -> float:
        """``peer``'s score (0 with scoring off)."""
        return 0.0 if self._score is None else self._score.score(peer, now=now)

    def choked_by(self, topic: Topic) -> Set[PeerId]:
        """Mesh peers of ``topic`` that choked us (we announce new messages to them instead)."""
        return self._choked_by.get(topic, frozenset())

    def choking(self, topic: Topic) -> Set[PeerId]:
        """Mesh peers of ``topic`` we choked (empty with ``GossipConfig.choke`` off)."""
        return frozenset() if self._choke is None else self._choke.choked(topic)

    def backoff_until(self, topic: Topic, peer: PeerId) -> float | None:
        """When the GRAFT backoff for ``peer`` in ``topic`` ends, or None if there is none."""
        return self._backoff.until(topic, peer)

    def statistics(self) -> RouterStatistics:
        """A snapshot of the counters."""
        return RouterStatistics(
            drops={**self._drops, DropReason.DUPLICATE: self._drops[DropReason.DUPLICATE] + self._duplicates},
            delivered=self._delivered,
            published=self._published,
            messages_sent=self._messages_sent,
            suppressed_by_idontwant=self._suppressed,
            iwant_served=self._iwant_served,
            rpcs_sent=self._rpcs_sent,
            announced_to_choked=self._announced,
            chokes_sent=self._chokes_sent,
            unchokes_sent=self._unchokes_sent,
        )

    # --- entry points -----------------------------------------------------------------------------

    def handle(self, event: RouterInput, *, now: float) -> list[RouterAction]:
        """Process one input at time ``now``; return what the driver must do."""
        if type(event) is RpcReceived and self._next_heartbeat is not None:
            self._on_rpc(event.peer, event.rpc, now)  # nearly every input: skip the pattern match below
            if not self._actions and not self._outbox.pending:
                return []  # most RPCs (duplicate copies) ask for nothing
            return self._take_actions()
        if self._next_heartbeat is None:
            self._next_heartbeat = now + self.config.heartbeat_interval
        match event:
            case RpcReceived(peer=peer, rpc=rpc):
                self._on_rpc(peer, rpc, now)
            case Publish(topic=topic, data=data, again=again):
                self._publish(topic, data, now, again=again)
            case PeerConnected():
                self._on_connected(event, now)
            case PeerDisconnected(peer=peer):
                self._on_disconnected(peer, now)
            case Join(topic=topic):
                self._join(topic, now)
            case Leave(topic=topic):
                self._leave(topic, now)
            case SendFailed(peer=peer):
                self._drop(DropReason.SEND_FAILED)
            case _:
                assert_never(event)
        return self._take_actions()

    def next_deadline(self) -> float | None:
        """When ``on_timer`` must next be called (the next heartbeat), or None before any input."""
        return self._next_heartbeat

    def on_timer(self, *, now: float) -> list[RouterAction]:
        """Run the heartbeat if it is due; return what the driver must do."""
        if self._next_heartbeat is None or now < self._next_heartbeat:
            return []
        interval = self.config.heartbeat_interval
        # Missed heartbeats are not replayed one by one: one heartbeat catches up, as in go-libp2p.
        while self._next_heartbeat <= now:
            self._next_heartbeat += interval
        self._heartbeat(now)
        return self._take_actions()

    # --- helpers ----------------------------------------------------------------------------------

    def _take_actions(self) -> list[RouterAction]:
        sends = self._outbox.flush()
        if not sends and not self._actions:
            return []  # most inputs (duplicates) produce nothing: skip the swap
        self._rpcs_sent += len(sends)
        actions = self._actions
        actions.extend(sends)
        self._actions = []
        return actions

    def _drop(self, reason: DropReason, count: int = 1) -> None:
        self._drops[reason] += count

    def _score_of(self, peer: PeerId, now: float) -> float:
        return 0.0 if self._score is None else self._score.score(peer, now=now)

    def _in_backoff(self, topic: Topic, peer: PeerId, now: float) -> bool:
        return self._backoff.active(topic, peer, now)

    def _add_backoff(self, topic: Topic, peer: PeerId, until: float) -> None:
        self._backoff.add(topic, peer, until, connected=self._peers)

    def _gossipsub_peers(self, topic: Topic) -> set[PeerId]:
        return self._topic_peers.get(topic, set())

    # --- connections ------------------------------------------------------------------------------

    def _on_connected(self, event: PeerConnected, now: float) -> None:
        if event.peer in self._peers:
            return
        config = self.config
        self._peers[event.peer] = _Peer(
            protocol=event.protocol,
            outbound=event.outbound,
            topics=set(),
            messages=TokenBucket(rate=config.max_messages_per_second, burst=config.message_burst, now=now),
            control=TokenBucket(rate=config.max_control_per_second, burst=config.control_burst, now=now),
        )
        if self._score is not None:
            self._score.add_peer(event.peer, event.ip)
        for topic in sorted(self._joined):
            self._outbox.subscription(event.peer, SubOpts(subscribe=True, topic=topic))

    def _on_disconnected(self, peer: PeerId, now: float) -> None:
        state = self._peers.pop(peer, None)
        if state is None:
            return
        for topic in state.topics:
            self._forget_topic_peer(topic, peer)
        for topic, members in self._mesh.items():
            if peer in members:
                self._left_mesh(topic, peer, now)
        for members in self._fanout.values():
            members.discard(peer)
        if self._score is not None:
            self._score.remove_peer(peer, now=now)
        self._dont_send.forget_peer(peer)
        self._outbox.discard(peer)

    # --- subscriptions ----------------------------------------------------------------------------

    def _join(self, topic: Topic, now: float) -> None:
        if topic in self._joined:
            return
        self._joined.add(topic)
        for peer in self._peers:
            self._outbox.subscription(peer, SubOpts(subscribe=True, topic=topic))
        mesh: set[PeerId] = set()
        for peer in sorted(self._fanout.pop(topic, set())):
            if len(mesh) < self.config.d and self._graftable(topic, peer, now):
                mesh.add(peer)
        self._fanout_last_publish.pop(topic, None)
        if len(mesh) < self.config.d:
            candidates = [p for p in self._gossipsub_peers(topic) - mesh if self._graftable(topic, p, now)]
            mesh.update(self._sample(candidates, self.config.d - len(mesh)))
        self._mesh[topic] = set()
        for peer in mesh:
            self._graft_peer(topic, peer, now)

    def _leave(self, topic: Topic, now: float) -> None:
        if topic not in self._joined:
            return
        self._joined.discard(topic)
        for peer in self._peers:
            self._outbox.subscription(peer, SubOpts(subscribe=False, topic=topic))
        for peer in sorted(self._mesh.get(topic, ())):
            self._left_mesh(topic, peer, now)
            self._add_backoff(topic, peer, now + self.config.unsubscribe_backoff)
            self._send_prune(peer, topic, now, backoff=self.config.unsubscribe_backoff, exchange=False)
        self._mesh.pop(topic, None)
        self._choked_by.pop(topic, None)
        if self._choke is not None:
            self._choke.forget_topic(topic)

    def _left_mesh(self, topic: Topic, peer: PeerId, now: float) -> None:
        """``peer`` leaves the mesh of ``topic``: its score stops counting mesh time, choking ends."""
        self._mesh[topic].discard(peer)
        if self._score is not None:
            self._score.prune(peer, topic, now=now)
        choked_by = self._choked_by.get(topic)
        if choked_by is not None:
            choked_by.discard(peer)
        if self._choke is not None:
            self._choke.remove_peer(topic, peer)

    def _graftable(self, topic: Topic, peer: PeerId, now: float) -> bool:
        return not self._in_backoff(topic, peer, now) and self._score_of(peer, now) >= 0

    def _graft_peer(self, topic: Topic, peer: PeerId, now: float) -> None:
        self._mesh[topic].add(peer)
        if self._score is not None:
            self._score.graft(peer, topic, now=now)
        self._outbox.graft(peer, Graft(topic=topic))

    def _sample(self, candidates: list[PeerId], count: int) -> list[PeerId]:
        if count <= 0:
            return []
        # Candidate lists come from sets, which iterate in str-hash order (random per process): sort,
        # so the same seed picks the same peers in every run.
        candidates.sort()
        if len(candidates) <= count:
            return candidates
        return self._rng.sample(candidates, count)

    # --- publishing and forwarding ----------------------------------------------------------------

    def _publish(self, topic: Topic, data: bytes, now: float, *, again: bool = False) -> None:
        message = PubMessage(topic=topic, data=data)
        if topic in self._signed_topics:
            if self._signer is None:
                raise ValueError(f"topic {topic!r} is StrictSign and this router has no signer")
            message = self._signer.sign(message)
            mid = signed_message_id(message)
        else:
            mid = self._message_id(data)
        if mid not in self._seen:
            self._seen.add(mid, now=now, valid=True)
            self._mcache.put(mid, message)
            self._published += 1
        elif not again:
            self._drop(DropReason.DUPLICATE)
            return
        if self.config.flood_publish:
            targets = {
                p for p in self._gossipsub_peers(topic) if self._score_of(p, now) >= self._publish_threshold
            }
        elif topic in self._joined:
            targets = set(self._mesh.get(topic, ()))
        else:
            targets = self._fanout_peers(topic, now)
        if topic not in self._joined:
            self._fanout_last_publish[topic] = now
            if self.config.flood_publish:
                self._fanout_peers(topic, now)  # keeps fanout state so gossip about it is emitted
        for peer in sorted(targets):
            self._send_message(peer, mid, message)

    def _fanout_peers(self, topic: Topic, now: float) -> set[PeerId]:
        fanout = self._fanout.setdefault(topic, set())
        self._fanout_last_publish[topic] = now
        if len(fanout) < self.config.d:
            candidates = [
                p
                for p in self._gossipsub_peers(topic) - fanout
                if self._score_of(p, now) >= self._publish_threshold
            ]
            fanout.update(self._sample(candidates, self.config.d - len(fanout)))
        return fanout

    def _send_message(self, peer: PeerId, mid: MessageId, message: PubMessage) -> None:
        dont = self._dont_by_peer.get(peer)
        if dont is not None and mid in dont:
            self._suppressed += 1
            return
        self._messages_sent += 1
        self._outbox.message(peer, message)

    def _on_rpc(self, peer: PeerId, rpc: RPC, now: float) -> None:
        state = self._peers.get(peer)
        if state is None:
            self._drop(DropReason.UNKNOWN_PEER)
            return
        score = self._score
        if score is not None and score.score(peer, now=now) < self._graylist_threshold:
            self._drop(DropReason.GRAYLISTED, max(1, len(rpc.publish)))
            return
        publish = rpc.publish
        if publish and (allowed := state.messages.take(len(publish), now)) < len(publish):
            self._drop(DropReason.MESSAGE_RATE_LIMIT, len(publish) - allowed)
            publish = publish[:allowed]
        if len(publish) == 1 and rpc.control is None and not rpc.subscriptions:
            self._on_message(peer, publish[0], now)  # a forwarded copy and nothing else: most RPCs
            return
        for sub in rpc.subscriptions:
            self._on_subscription(peer, state, sub, now)
        for message in publish:
            self._on_message(peer, message, now)
        control = rpc.control
        if control is not None:
            entries = control.entry_count()
            if state.control.take(entries, now) < entries:
                self._drop(DropReason.CONTROL_RATE_LIMIT, entries)  # the tokens taken stay spent
                return
            self._on_control(peer, state, control, now)

    def _on_subscription(self, peer: PeerId, state: _Peer, sub: SubOpts, now: float) -> None:
        if sub.subscribe:
            if sub.topic in state.topics:
                return
            if len(state.topics) >= self.config.max_topics_per_peer:
                self._drop(DropReason.TOPIC_LIMIT)
                return
            state.topics.add(sub.topic)
            self._topic_peers.setdefault(sub.topic, set()).add(peer)
            return
        if sub.topic in state.topics:  # else never subscribed: no entry is made for the topic
            state.topics.discard(sub.topic)
            self._forget_topic_peer(sub.topic, peer)
        mesh = self._mesh.get(sub.topic)
        if mesh is not None and peer in mesh:
            self._left_mesh(sub.topic, peer, now)
        fanout = self._fanout.get(sub.topic)
        if fanout is not None:
            fanout.discard(peer)

    def _forget_topic_peer(self, topic: Topic, peer: PeerId) -> None:
        members = self._topic_peers.get(topic)
        if members is not None:
            members.discard(peer)
            if not members:
                del self._topic_peers[topic]  # churn through many topics must not leave empty sets

    def _on_message(self, peer: PeerId, message: PubMessage, now: float) -> None:
        topic = message.topic
        if topic not in self._joined:
            self._drop(DropReason.UNKNOWN_TOPIC)
            return
        signed = topic in self._signed_topics
        mid = signed_message_id(message) if signed else self._message_id(message.data)
        record = self._seen.records.get(mid)
        choke = self._choke
        if record is not None:
            self._duplicates += 1  # the hot path: three in four copies are duplicates
            if choke is not None and not choke.is_choked(topic, peer):  # its IHAVE was the sample
                choke.observe(topic, peer, now - record.first_seen)
            if self._score is not None:
                if record.valid:
                    self._score.near_first_delivery(peer, topic, delay=now - record.first_seen)
                else:
                    self._score.invalid_delivery(peer, topic)
            return
        mesh = sorted(self._mesh.get(topic, ()))  # sorted: action order must not depend on str hashing
        if self.config.idontwant and len(message.data) >= self.config.idontwant_min_size:
            # v1.2: tell mesh peers at once, before validation, in an RPC of its own that the driver
            # sends ahead of the (larger) forwarded copies: piggybacked on them it would arrive too late
            # to save anything ("immediately broadcasts (not queue for later piggybacking)").
            notice = RPC(control=ControlMessage(idontwant=(IDontWant(message_ids=(mid,)),)))
            for other in mesh:
                if other != peer and self._peers[other].protocol is Protocol.MESHSUB_V12:
                    self._actions.append(SendRpc(peer=other, rpc=notice))
                    self._rpcs_sent += 1
        problem = signature_problem(message) if signed else unsigned_problem(message)
        verdict = ValidationResult.REJECT if problem else self._validator(topic, message.data, mid)
        self._seen.add(mid, now=now, valid=verdict is ValidationResult.ACCEPT)
        self._promises.fulfil(mid)
        if verdict is ValidationResult.REJECT:
            self._drop(DropReason.BAD_SIGNATURE if problem else DropReason.INVALID)
            if self._score is not None:
                self._score.invalid_delivery(peer, topic)
            return
        if verdict is ValidationResult.IGNORE:
            self._drop(DropReason.IGNORED)
            return
        if self._score is not None:
            self._score.first_delivery(peer, topic)
        if choke is not None and not choke.is_choked(topic, peer):
            choke.observe(topic, peer, 0.0)
        self._mcache.put(mid, message)
        self._delivered += 1
        self._actions.append(Deliver(topic=topic, message_id=mid, data=message.data, source=peer))
        choked_by = self._choked_by.get(topic)
        for other in mesh:
            if other != peer:
                if choked_by and other in choked_by:
                    self._announce(other, topic, mid)
                else:
                    self._send_message(other, mid, message)

    def _announce(self, peer: PeerId, topic: Topic, mid: MessageId) -> None:
        """``peer`` choked us in ``topic``: tell it of ``mid`` now, instead of sending it."""
        dont = self._dont_by_peer.get(peer)
        if dont is not None and mid in dont:
            self._suppressed += 1
            return
        self._announced += 1
        self._outbox.ihave(peer, IHave(topic=topic, message_ids=(mid,)))

    # --- control ----------------------------------------------------------------------------------

    def _on_control(self, peer: PeerId, state: _Peer, control: ControlMessage, now: float) -> None:
        for graft in control.graft:
            self._on_graft(peer, state, graft.topic, now)
        for prune in control.prune:
            self._on_prune(peer, prune, now)
        for ihave in control.ihave:
            self._on_ihave(peer, state, ihave, now)
        for iwant in control.iwant:
            self._on_iwant(peer, iwant, now)
        for idontwant in control.idontwant:
            self._on_idontwant(peer, state, idontwant, now)
        for choke in control.choke:
            self._on_choke(peer, choke)
        for unchoke in control.unchoke:
            self._on_choke(peer, unchoke)

    def _on_choke(self, peer: PeerId, entry: Choke | Unchoke) -> None:
        mesh = self._mesh.get(entry.topic)
        if mesh is None:
            self._drop(DropReason.UNKNOWN_TOPIC)
            return
        if type(entry) is Unchoke:
            self._choked_by.get(entry.topic, set()).discard(peer)
        elif peer in mesh:  # choking is a mesh relation: outside it, there is nothing to hold back
            self._choked_by.setdefault(entry.topic, set()).add(peer)

    def _on_graft(self, peer: PeerId, state: _Peer, topic: Topic, now: float) -> None:
        mesh = self._mesh.get(topic)
        if mesh is None:
            # v1.1 spam protection: GRAFTs for topics we did not join are ignored, not answered.
            self._drop(DropReason.GRAFT_REFUSED)
            return
        if peer in mesh:
            return
        until = self._backoff.until(topic, peer)
        if until is not None and until > now:
            self._drop(DropReason.GRAFT_REFUSED)
            if self._score is not None:
                self._score.penalize(peer)
                if until - now > self.config.prune_backoff - self.config.graft_flood_threshold:
                    self._score.penalize(peer)  # grafted right after the prune: flooding
            self._add_backoff(topic, peer, now + self.config.prune_backoff)
            self._send_prune(peer, topic, now, backoff=self.config.prune_backoff, exchange=False)
            return
        full = len(mesh) >= self.config.d_hi and not state.outbound
        if self._score_of(peer, now) < 0 or full:
            self._drop(DropReason.GRAFT_REFUSED)
            self._add_backoff(topic, peer, now + self.config.prune_backoff)
            self._send_prune(peer, topic, now, backoff=self.config.prune_backoff, exchange=full)
            return
        mesh.add(peer)
        self._choked_by.get(topic, set()).discard(peer)  # a fresh mesh link starts unchoked
        if self._score is not None:
            self._score.graft(peer, topic, now=now)

    def _on_prune(self, peer: PeerId, prune: Prune, now: float) -> None:
        mesh = self._mesh.get(prune.topic)
        if mesh is None:
            # Not joined: we would never GRAFT there, so a backoff is pointless, and recording one
            # would let a peer grow the backoff table with made-up topics (go-libp2p also skips these).
            self._drop(DropReason.UNKNOWN_TOPIC)
            return
        if peer in mesh:
            self._left_mesh(prune.topic, peer, now)
        backoff = self.config.prune_backoff if prune.backoff is None else float(prune.backoff)
        self._add_backoff(prune.topic, peer, now + min(backoff, self.config.max_prune_backoff))
        if not prune.peers or self._score_of(peer, now) < self._accept_px_threshold:
            return
        offered = [
            info
            for info in prune.peers
            if info.peer_id is not None
            and info.peer_id not in self._peers
            and info.peer_id != self.local_peer
        ]
        for info in offered[: self.config.prune_peers]:
            assert info.peer_id is not None  # filtered above
            self._actions.append(Dial(peer=info.peer_id, signed_peer_record=info.signed_peer_record))

    def _on_ihave(self, peer: PeerId, state: _Peer, ihave: IHave, now: float) -> None:
        if ihave.topic not in self._joined:
            self._drop(DropReason.UNKNOWN_TOPIC)
            return
        if self._choke is not None and self._choke.is_choked(ihave.topic, peer):
            self._on_announcement(peer, state, ihave, now)
            return
        state.ihave_messages += 1
        if (
            self._score_of(peer, now) < self._gossip_threshold
            or state.ihave_messages > self.config.max_ihave_messages
        ):
            self._drop(DropReason.IHAVE_LIMIT)
            return
        budget = self.config.max_ihave_length - state.ihave_ids
        if budget <= 0:
            self._drop(DropReason.IHAVE_LIMIT)
            return
        wanted = [mid for mid in dict.fromkeys(ihave.message_ids) if mid not in self._seen]
        if not wanted:
            return
        self._rng.shuffle(wanted)
        wanted = wanted[:budget]
        state.ihave_ids += len(wanted)
        self._outbox.iwant(peer, IWant(message_ids=tuple(wanted)))
        # v1.1: track one random id per IWANT; if it never arrives, the advertiser lied or stalled.
        promised = self._rng.choice(wanted)
        self._promises.add(promised, peer, now + self.config.iwant_followup_time)

    def _on_announcement(self, peer: PeerId, state: _Peer, ihave: IHave, now: float) -> None:
        """An IHAVE from a mesh peer we choked: one per new message, sent when it would have pushed it.

        Not held to ``max_ihave_messages`` (it comes per message, not per heartbeat; the control rate
        limit bounds it); the ids still count towards ``max_ihave_length``. Each id is a delay sample;
        an id not seen yet is asked for at once, unless an IWANT for it is already out.
        """
        if self._score_of(peer, now) < self._gossip_threshold:
            self._drop(DropReason.IHAVE_LIMIT)
            return
        budget = self.config.max_ihave_length - state.ihave_ids
        ids = ihave.message_ids[: max(budget, 0)]
        if len(ids) < len(ihave.message_ids):
            self._drop(DropReason.IHAVE_LIMIT)
        state.ihave_ids += len(ids)
        choke, topic = self._choke, ihave.topic
        assert choke is not None  # the caller checked
        seen, wanted = self._seen.records, []
        for mid in ids:
            record = seen.get(mid)
            choke.observe(topic, peer, 0.0 if record is None else now - record.first_seen)
            if record is None and not self._promises.pending(mid):
                wanted.append(mid)
                self._promises.add(mid, peer, now + self.config.iwant_followup_time)
        if wanted:
            self._outbox.iwant(peer, IWant(message_ids=tuple(wanted)))
        # It has them: pushing them to it (it may not have choked us) would only make duplicates.
        self._dont_send.add(peer, ids, now)

    def _on_iwant(self, peer: PeerId, iwant: IWant, now: float) -> None:
        if self._score_of(peer, now) < self._gossip_threshold:
            self._drop(DropReason.IWANT_UNSERVED, len(iwant.message_ids))
            return
        dont = self._dont_by_peer.get(peer)
        for mid in iwant.message_ids:
            if dont is not None and mid in dont:
                # It asked, then said it has it (the copy came meanwhile): IDONTWANT wins, as in
                # rust-libp2p (PR 5901). Counted with the copies IDONTWANT saved.
                self._suppressed += 1
                continue
            message = self._mcache.get_for_peer(mid, peer, self.config.gossip_retransmission)
            if message is None:
                self._drop(DropReason.IWANT_UNSERVED)
                continue
            self._iwant_served += 1
            self._messages_sent += 1
            self._outbox.message(peer, message)

    def _on_idontwant(self, peer: PeerId, state: _Peer, idontwant: IDontWant, now: float) -> None:
        room = self.config.max_idontwant_ids - state.idontwant_ids
        ids = idontwant.message_ids
        if len(ids) > room:
            self._drop(DropReason.IDONTWANT_LIMIT, len(ids) - max(room, 0))
            ids = ids[: max(room, 0)]
        state.idontwant_ids += len(ids)
        if ids:
            self._dont_send.add(peer, ids, now)

    def _send_prune(self, peer: PeerId, topic: Topic, now: float, *, backoff: float, exchange: bool) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        if state.protocol is Protocol.MESHSUB_V10:
            self._outbox.prune(peer, Prune(topic=topic))
            return
        offered: tuple[PeerInfo, ...] = ()
        if exchange and self._score_of(peer, now) >= 0:
            candidates = [
                p for p in self._gossipsub_peers(topic) if p != peer and self._score_of(p, now) >= 0
            ]
            offered = tuple(PeerInfo(peer_id=p) for p in self._sample(candidates, self.config.prune_peers))
        self._outbox.prune(peer, Prune(topic=topic, peers=offered, backoff=int(backoff)))

    # --- heartbeat --------------------------------------------------------------------------------

    def _heartbeat(self, now: float) -> None:
        self._heartbeats += 1
        if self._score is not None:
            self._score.tick(now=now)
        self._check_promises(now)
        self._backoff.expire(now)
        for topic in sorted(self._mesh):
            self._maintain_mesh(topic, now)
            if self._choke is not None:
                self._decide_chokes(topic)
        self._maintain_fanout(now)
        self._emit_gossip(now)
        self._disconnect_graylisted(now)
        for state in self._peers.values():
            state.ihave_messages = state.ihave_ids = state.idontwant_ids = 0
        self._dont_send.expire(now - self.config.mcache_len * self.config.heartbeat_interval)
        self._seen.expire(now)
        self._mcache.shift()

    def _check_promises(self, now: float) -> None:
        for peer in self._promises.broken(now):
            if self._score is not None:
                self._score.penalize(peer)

    def _maintain_mesh(self, topic: Topic, now: float) -> None:
        config = self.config
        mesh = self._mesh[topic]
        for peer in sorted(p for p in mesh if self._score_of(p, now) < 0):
            self._remove_from_mesh(topic, peer, now, exchange=False)
        if len(mesh) < config.d_lo:
            candidates = [p for p in self._gossipsub_peers(topic) - mesh if self._graftable(topic, p, now)]
            for peer in self._sample(candidates, config.d - len(mesh)):
                self._graft_peer(topic, peer, now)
        if len(mesh) > config.d_hi:
            self._prune_oversubscribed(topic, mesh, now)
        if len(mesh) >= config.d_lo:
            outbound = sum(1 for p in mesh if self._peers[p].outbound)
            if outbound < config.d_out:
                candidates = [
                    p
                    for p in self._gossipsub_peers(topic) - mesh
                    if self._peers[p].outbound and self._graftable(topic, p, now)
                ]
                for peer in self._sample(candidates, config.d_out - outbound):
                    self._graft_peer(topic, peer, now)
        if (
            self._score is not None
            and self._heartbeats % config.opportunistic_graft_ticks == 0
            and len(mesh) > 1
        ):
            self._opportunistic_graft(topic, mesh, now)

    def _decide_chokes(self, topic: Topic) -> None:
        assert self._choke is not None  # the caller checked
        decision = self._choke.decide(topic, self._mesh[topic])
        for peer in decision.choke:
            self._chokes_sent += 1
            self._outbox.choke(peer, Choke(topic=topic))
        for peer in decision.unchoke:
            self._unchokes_sent += 1
            self._outbox.choke(peer, Unchoke(topic=topic))

    def _prune_oversubscribed(self, topic: Topic, mesh: set[PeerId], now: float) -> None:
        config = self.config
        ranked = sorted(mesh, key=lambda p: (-self._score_of(p, now), p))
        keep = ranked[: config.d_score]
        rest = ranked[config.d_score :]
        self._rng.shuffle(rest)
        keep += rest[: config.d - len(keep)]
        outbound_kept = sum(1 for p in keep if self._peers[p].outbound)
        if outbound_kept < config.d_out:
            spare_outbound = [p for p in rest[config.d - config.d_score :] if self._peers[p].outbound]
            for peer in spare_outbound[: config.d_out - outbound_kept]:
                # Replace the lowest-ranked inbound peer that is not among the best-scored.
                for index in range(len(keep) - 1, config.d_score - 1, -1):
                    if not self._peers[keep[index]].outbound:
                        keep[index] = peer
                        break
        kept = set(keep)
        for peer in sorted(mesh - kept):
            self._remove_from_mesh(topic, peer, now, exchange=True)

    def _opportunistic_graft(self, topic: Topic, mesh: set[PeerId], now: float) -> None:
        median = stats_lib.median(self._score_of(p, now) for p in mesh)
        if median >= self._opportunistic_threshold:
            return
        candidates = [
            p
            for p in self._gossipsub_peers(topic) - mesh
            if self._score_of(p, now) > median and not self._in_backoff(topic, p, now)
        ]
        for peer in self._sample(candidates, self.config.opportunistic_graft_peers):
            self._graft_peer(topic, peer, now)

    def _remove_from_mesh(self, topic: Topic, peer: PeerId, now: float, *, exchange: bool) -> None:
        self._left_mesh(topic, peer, now)
        self._add_backoff(topic, peer, now + self.config.prune_backoff)
        self._send_prune(peer, topic, now, backoff=self.config.prune_backoff, exchange=exchange)

    def _maintain_fanout(self, now: float) -> None:
        for topic in sorted(self._fanout):
            if now - self._fanout_last_publish.get(topic, now) > self.config.fanout_ttl:
                del self._fanout[topic]
                self._fanout_last_publish.pop(topic, None)
                continue
            fanout = self._fanout[topic]
            topic_peers = self._gossipsub_peers(topic)
            for peer in [
                p for p in fanout if p not in topic_peers or self._score_of(p, now) < self._publish_threshold
            ]:
                fanout.discard(peer)
            if len(fanout) < self.config.d:
                candidates = [
                    p for p in topic_peers - fanout if self._score_of(p, now) >= self._publish_threshold
                ]
                fanout.update(self._sample(candidates, self.config.d - len(fanout)))

    def _emit_gossip(self, now: float) -> None:
        for topic in sorted(set(self._mesh) | set(self._fanout)):
            exclude = self._mesh.get(topic) or self._fanout.get(topic) or set()
            candidates = [
                p
                for p in self._gossipsub_peers(topic)
                if p not in exclude and self._score_of(p, now) >= self._gossip_threshold
            ]
            if not candidates:
                continue  # every topic peer is in the mesh (common in small networks): nobody to tell
            ids = self._mcache.gossip_ids(topic)
            if not ids:
                continue
            count = max(self.config.d_lazy, int(self.config.gossip_factor * len(candidates)))
            if len(ids) > self.config.max_ihave_length:
                ids = self._rng.sample(ids, self.config.max_ihave_length)
            for peer in self._sample(candidates, count):
                self._outbox.ihave(peer, IHave(topic=topic, message_ids=tuple(ids)))

    def _disconnect_graylisted(self, now: float) -> None:
        if self._score is None:
            return
        for peer in sorted(self._peers):
            if self._score_of(peer, now) < self._graylist_threshold:
                self._actions.append(Disconnect(peer=peer, reason="score below the graylist threshold"))
