"""Gossipsub v1.1 peer scoring: P1-P7, decay, retention after disconnect.

The score function, counters and decay follow gossipsub-v1.1.md "The Score Function" and "Topic
Parameter Calculation and Decay" (pseudo-go there); the structure follows go-libp2p-pubsub's
``score.go``. This module keeps counters and computes scores; it never decides what to do with a
score (the router does) and it never reads a clock (``now`` comes in with every call).

Scores are cached between counter changes that matter: a router asks for a peer's score on every
RPC (graylisting), while counters only change the score noticeably at decay time or on a penalty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshchat.gossip.config import ScoreParams
from meshchat.gossip.messages import PeerId, Topic

__all__ = ["MAX_RETAINED_PEERS", "PeerScore"]

#: Departed peers whose scores are remembered (for ``retain_score``) at once. Identities cost nothing,
#: so without a cap every connect-and-leave would add an entry kept for an hour. Past the cap the
#: oldest departed peer is forgotten first; laundering one bad score that way takes this many fresh
#: connections, each of which the host's connection limits slow down.
MAX_RETAINED_PEERS = 10_000


@dataclass(slots=True)
class _TopicStats:
    in_mesh: bool = False
    graft_time: float = 0.0
    mesh_time: float = 0.0
    first_message_deliveries: float = 0.0
    mesh_message_deliveries: float = 0.0
    mesh_failure_penalty: float = 0.0
    invalid_message_deliveries: float = 0.0


@dataclass(slots=True)
class _PeerStats:
    connected: bool = True
    expires: float = 0.0
    ip: str | None = None
    behaviour_penalty: float = 0.0
    app_specific: float = 0.0
    topics: dict[Topic, _TopicStats] = field(default_factory=dict)


class PeerScore:
    """Scores of the peers one router knows, per gossipsub v1.1."""

    __slots__ = ("_cache", "_ips", "_next_decay", "_params", "_peers", "_retained")

    def __init__(self, params: ScoreParams) -> None:
        """Score peers with ``params``."""
        self._params = params
        self._peers: dict[PeerId, _PeerStats] = {}
        self._ips: dict[str, set[PeerId]] = {}
        self._cache: dict[PeerId, float] = {}
        #: Departed peers in the order they left (that is, expiry order: ``retain_score`` is fixed).
        self._retained: dict[PeerId, None] = {}
        self._next_decay: float | None = None

    @property
    def params(self) -> ScoreParams:
        """The parameters in use."""
        return self._params

    # --- peers ------------------------------------------------------------------------------------

    def add_peer(self, peer: PeerId, ip: str | None) -> None:
        """A peer connected (again: a retained score is kept)."""
        stats = self._peers.get(peer)
        if stats is None:
            stats = self._peers[peer] = _PeerStats()
        stats.connected = True
        self._retained.pop(peer, None)
        if ip is not None:
            stats.ip = ip
            self._ips.setdefault(ip, set()).add(peer)
            for other in self._ips[ip]:
                self._cache.pop(other, None)
        self._cache.pop(peer, None)

    def remove_peer(self, peer: PeerId, *, now: float) -> None:
        """A peer disconnected: keep its score for ``retain_score`` so it cannot reset it by reconnecting."""
        stats = self._peers.get(peer)
        if stats is None:
            return
        for topic, tstats in stats.topics.items():
            if tstats.in_mesh:
                self._apply_mesh_failure(topic, tstats, now)
                tstats.in_mesh = False
        stats.connected = False
        stats.expires = now + self._params.retain_score
        self._forget_ip(peer, stats)
        self._cache.pop(peer, None)
        self._retained[peer] = None
        while len(self._retained) > MAX_RETAINED_PEERS:
            oldest = next(iter(self._retained))
            del self._retained[oldest]
            del self._peers[oldest]

    def _forget_ip(self, peer: PeerId, stats: _PeerStats) -> None:
        if stats.ip is None:
            return
        peers_at_ip = self._ips.get(stats.ip)
        if peers_at_ip is not None:
            peers_at_ip.discard(peer)
            for other in peers_at_ip:
                self._cache.pop(other, None)
            if not peers_at_ip:
                del self._ips[stats.ip]

    def set_app_specific(self, peer: PeerId, value: float) -> None:
        """Set P5, the application's own opinion of ``peer``."""
        self._stats(peer).app_specific = value
        self._cache.pop(peer, None)

    def _stats(self, peer: PeerId) -> _PeerStats:
        stats = self._peers.get(peer)
        if stats is None:
            stats = self._peers[peer] = _PeerStats()
        return stats

    def _topic(self, peer: PeerId, topic: Topic) -> _TopicStats | None:
        if self._params.topic(topic) is None:
            return None
        stats = self._peers.get(peer)
        if stats is None:
            return None  # not (or no longer) known: counters are kept only for added peers
        tstats = stats.topics.get(topic)
        if tstats is None:
            tstats = stats.topics[topic] = _TopicStats()
        return tstats

    # --- events -----------------------------------------------------------------------------------

    def graft(self, peer: PeerId, topic: Topic, *, now: float) -> None:
        """``peer`` joined our mesh for ``topic``."""
        tstats = self._topic(peer, topic)
        if tstats is not None:
            tstats.in_mesh = True
            tstats.graft_time = now
            tstats.mesh_time = 0.0
            self._cache.pop(peer, None)

    def prune(self, peer: PeerId, topic: Topic, *, now: float) -> None:
        """``peer`` left our mesh for ``topic``: a delivery deficit at this moment becomes sticky (P3b)."""
        tstats = self._topic(peer, topic)
        if tstats is not None and tstats.in_mesh:
            self._apply_mesh_failure(topic, tstats, now)
            tstats.in_mesh = False
            self._cache.pop(peer, None)

    def _apply_mesh_failure(self, topic: Topic, tstats: _TopicStats, now: float) -> None:
        params = self._params.topic(topic)
        assert params is not None  # stats exist only for scored topics
        tstats.mesh_time = now - tstats.graft_time
        if tstats.mesh_time > params.mesh_message_deliveries_activation:
            deficit = params.mesh_message_deliveries_threshold - tstats.mesh_message_deliveries
            if deficit > 0:
                tstats.mesh_failure_penalty += deficit * deficit

    def first_delivery(self, peer: PeerId, topic: Topic) -> None:
        """``peer`` was the first to bring us a valid message (P2, and P3 if in the mesh)."""
        tstats = self._topic(peer, topic)
        if tstats is None:
            return
        params = self._params.topic(topic)
        assert params is not None
        tstats.first_message_deliveries = min(
            tstats.first_message_deliveries + 1, params.first_message_deliveries_cap
        )
        if tstats.in_mesh:
            tstats.mesh_message_deliveries = min(
                tstats.mesh_message_deliveries + 1, params.mesh_message_deliveries_cap
            )

    def near_first_delivery(self, peer: PeerId, topic: Topic, *, delay: float) -> None:
        """``peer`` brought a duplicate ``delay`` s after the first copy; in the window it counts (P3)."""
        params = self._params.topic(topic)
        # Most duplicates come well after the window: decide that before touching the peer's stats.
        if params is None or delay > params.mesh_message_deliveries_window:
            return
        tstats = self._topic(peer, topic)
        if tstats is not None and tstats.in_mesh:
            tstats.mesh_message_deliveries = min(
                tstats.mesh_message_deliveries + 1, params.mesh_message_deliveries_cap
            )

    def invalid_delivery(self, peer: PeerId, topic: Topic) -> None:
        """``peer`` sent a message that failed validation (P4)."""
        tstats = self._topic(peer, topic)
        if tstats is not None:
            tstats.invalid_message_deliveries += 1
            self._cache.pop(peer, None)

    def penalize(self, peer: PeerId, count: float = 1.0) -> None:
        """Add to ``peer``'s behaviour penalty (P7): broken IWANT promises, GRAFT during backoff.

        A peer not known (never added, or its retained score expired) is not penalised: an IWANT
        promise that breaks after its advertiser was forgotten must not create a record that no
        ``remove_peer`` would ever expire.
        """
        stats = self._peers.get(peer)
        if stats is None:
            return
        stats.behaviour_penalty += count
        self._cache.pop(peer, None)

    # --- score ------------------------------------------------------------------------------------

    def score(self, peer: PeerId, *, now: float) -> float:
        """``peer``'s current score (0 for a peer never seen)."""
        cached = self._cache.get(peer)
        if cached is not None:
            return cached
        stats = self._peers.get(peer)
        value = 0.0 if stats is None else self._compute(stats, now)
        self._cache[peer] = value
        return value

    def _compute(self, stats: _PeerStats, now: float) -> float:
        # Called for every mesh peer at every heartbeat: counters that are zero (most of them, most of
        # the time) are skipped rather than multiplied.
        params = self._params
        topics_total = 0.0
        for topic, tstats in stats.topics.items():
            tparams = params.topic(topic)
            if tparams is None:
                continue
            topic_score = 0.0
            if tstats.in_mesh:
                mesh_time = now - tstats.graft_time
                p1 = min(mesh_time / tparams.time_in_mesh_quantum, tparams.time_in_mesh_cap)
                topic_score += p1 * tparams.time_in_mesh_weight
                if mesh_time > tparams.mesh_message_deliveries_activation:
                    deficit = tparams.mesh_message_deliveries_threshold - tstats.mesh_message_deliveries
                    if deficit > 0:
                        topic_score += deficit * deficit * tparams.mesh_message_deliveries_weight
            if tstats.first_message_deliveries:
                topic_score += tstats.first_message_deliveries * tparams.first_message_deliveries_weight
            if tstats.mesh_failure_penalty:
                topic_score += tstats.mesh_failure_penalty * tparams.mesh_failure_penalty_weight
            p4 = tstats.invalid_message_deliveries
            if p4:
                topic_score += p4 * p4 * tparams.invalid_message_deliveries_weight
            topics_total += topic_score * tparams.topic_weight
        if params.topic_score_cap > 0:
            topics_total = min(topics_total, params.topic_score_cap)
        value = topics_total
        if stats.app_specific:
            value += stats.app_specific * params.app_specific_weight
        if stats.ip is not None:
            surplus = len(self._ips.get(stats.ip, ())) - params.ip_colocation_factor_threshold
            if surplus > 0:
                value += surplus * surplus * params.ip_colocation_factor_weight
        penalty = stats.behaviour_penalty
        if penalty:
            value += penalty * penalty * params.behaviour_penalty_weight
        return value

    # --- time -------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the next decay round is due (None before the first ``tick``)."""
        return self._next_decay

    def tick(self, *, now: float) -> None:
        """Run the decay rounds that are due and drop expired retained scores; call from the heartbeat."""
        if self._next_decay is None:
            self._next_decay = now + self._params.decay_interval
            return
        while now >= self._next_decay:
            self._decay()
            self._next_decay += self._params.decay_interval
        while self._retained:
            oldest = next(iter(self._retained))
            if self._peers[oldest].expires > now:
                break
            del self._retained[oldest]
            del self._peers[oldest]
        self._cache.clear()

    def _decay(self) -> None:
        # Every counter of every known peer, once per decay interval (each heartbeat by default):
        # zero counters, the usual case, are left alone.
        params = self._params
        zero = params.decay_to_zero
        for stats in self._peers.values():
            for topic, t in stats.topics.items():
                tp = params.topic(topic)
                if tp is None:
                    continue
                if t.first_message_deliveries:
                    t.first_message_deliveries = _decayed(
                        t.first_message_deliveries, tp.first_message_deliveries_decay, zero
                    )
                if t.mesh_message_deliveries:
                    t.mesh_message_deliveries = _decayed(
                        t.mesh_message_deliveries, tp.mesh_message_deliveries_decay, zero
                    )
                if t.mesh_failure_penalty:
                    t.mesh_failure_penalty = _decayed(
                        t.mesh_failure_penalty, tp.mesh_failure_penalty_decay, zero
                    )
                if t.invalid_message_deliveries:
                    t.invalid_message_deliveries = _decayed(
                        t.invalid_message_deliveries, tp.invalid_message_deliveries_decay, zero
                    )
            if stats.behaviour_penalty:
                stats.behaviour_penalty = _decayed(
                    stats.behaviour_penalty, params.behaviour_penalty_decay, zero
                )


def _decayed(value: float, factor: float, zero: float) -> float:
    value *= factor
    return 0.0 if value < zero else value
