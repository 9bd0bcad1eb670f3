"""Receiver-side choking: which mesh peers push full messages to us, and which only announce them.

What it is: the bookkeeping of meshchat's choke extension, after the Episub proposal (libp2p specs
PR 413, vyzo's "latency-avg" choking strategy) and the CHOKE/UNCHOKE control messages of the choke
extension drafts (specs PRs 664 and 681). With a mesh of D peers every node receives each message
about D - 2 times over (duplicates = mean mesh degree - 2); chat-sized messages are too small for
IDONTWANT to arrive in time. So each node keeps only its ``keep`` fastest mesh peers per topic
*unchoked* (they push full messages) and sends CHOKE to the others: a choked peer stays in the mesh
but, for each new message, sends an IHAVE with its id at once instead of the message (not at the next
heartbeat as in Episub: the announcement travels exactly when the message would have, so a late
unchoked path costs one IWANT round trip, not a heartbeat). The node asks for an announced message it
has not seen with IWANT at once, so every mesh link still carries every message, lazily.

How peers are ranked: per topic and mesh peer, a sliding window of delays, each the time between the
first arrival of a message (from anyone) and this peer's copy (unchoked peers) or announcement
(choked peers); 0 when the peer was first. Both are comparable, because a choked peer announces when
it would have forwarded. The ``keep`` peers with the lowest mean delay are unchoked; a peer currently
unchoked gets ``margin`` seconds off its mean (hysteresis, so two similar peers do not swap at every
heartbeat); at most ``churn`` peers per topic are choked per decision, while unchokes are never
delayed (they only add copies). Peers with fewer than ``min_samples`` samples (just grafted) stay
unchoked and do not count towards ``keep``; so do peers whose mean delay is under ``late`` seconds
(beyond the fastest ``keep``, a peer that is often nearly first still saves many messages an IWANT
round trip, while one whose copies come late only makes duplicates). Tried and dropped: ranking by how
often a peer is first (same results), and a greedy choice of the set that minimises modelled arrival
times with per-peer IWANT round trips (worse p99 in the 200-node run).

What it is not: it sends nothing and knows no clock: the router (``meshchat.gossip.router``) computes
each delay from its seen cache's first-arrival times, reports mesh departures, calls ``decide`` from
its heartbeat and turns the answer into CHOKE/UNCHOKE control entries. The sending side (honouring a
peer's CHOKE) is the router's.

Bounds: one record per (joined topic, peer that sent a sample); the router removes a peer's record when
it leaves the mesh and samples come only from messages of joined topics, so the table holds at most
joined topics x connected peers records (each a ``window``-long deque) until the next ``decide`` trims
it to the mesh.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Set
from dataclasses import dataclass

from meshchat.gossip.config import GossipConfig
from meshchat.gossip.messages import PeerId, Topic

__all__ = ["MAX_DELAY_SAMPLE", "ChokeDecision", "ChokeTable"]

#: Longest delay one sample counts, seconds. A copy that comes seconds late (a retransmission, an IWANT
#: answer after a lost packet) says the peer is slow, not how slow: capped, so one outlier does not
#: outweigh a window of ordinary samples. Twice the published p99 of the 1,000-node run (~0.45 s).
MAX_DELAY_SAMPLE = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChokeDecision:
    """What one decision round changed in one topic."""

    #: Peers to send CHOKE to (they are now recorded as choked).
    choke: tuple[PeerId, ...]
    #: Peers to send UNCHOKE to (they are now recorded as unchoked).
    unchoke: tuple[PeerId, ...]


_NO_CHANGE = ChokeDecision(choke=(), unchoke=())


class _Record:
    """One mesh peer in one topic: its recent delay samples and whether we choked it."""

    __slots__ = ("choked", "samples", "total")

    def __init__(self, window: int) -> None:
        self.samples: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.choked = False

    def add(self, delay: float) -> None:
        samples = self.samples
        if len(samples) == samples.maxlen:
            self.total -= samples[0]
        samples.append(delay)
        self.total += delay

    def mean(self) -> float:
        return self.total / len(self.samples)


class ChokeTable:
    """Delay samples and choke state of each mesh peer in each joined topic (receiver side)."""

    __slots__ = ("_churn", "_keep", "_late", "_margin", "_min_samples", "_topics", "_window")

    def __init__(
        self, *, keep: int, window: int, min_samples: int, churn: int, margin: float, late: float = 0.0
    ) -> None:
        """Keep ``keep`` peers unchoked per topic, ranked over the last ``window`` samples.

        ``min_samples`` samples are needed before a peer is ranked; at most ``churn`` chokes per topic
        per ``decide``; an unchoked peer's mean counts ``margin`` seconds less (hysteresis); a peer
        whose mean delay is under ``late`` seconds is never choked (it is often first: choking it would
        put an IWANT round trip on many messages).
        """
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        if not 1 <= min_samples <= window:
            raise ValueError(f"need 1 <= min_samples <= window, not {min_samples}, {window}")
        if churn < 1 or margin < 0 or late < 0:
            raise ValueError("churn must be at least 1, margin and late at least 0")
        self._keep = keep
        self._window = window
        self._min_samples = min_samples
        self._churn = churn
        self._margin = margin
        self._late = late
        self._topics: dict[Topic, dict[PeerId, _Record]] = {}

    @classmethod
    def from_config(cls, config: GossipConfig) -> ChokeTable:
        """A table with ``config``'s ``choke_*`` parameters."""
        return cls(
            keep=config.choke_keep,
            window=config.choke_window,
            min_samples=config.choke_min_samples,
            churn=config.choke_churn,
            margin=config.choke_margin,
            late=config.choke_late,
        )

    def is_choked(self, topic: Topic, peer: PeerId) -> bool:
        """True if we asked ``peer`` to announce rather than push ``topic``'s messages."""
        records = self._topics.get(topic)
        if records is None:
            return False
        record = records.get(peer)
        return record is not None and record.choked

    def choked(self, topic: Topic) -> set[PeerId]:
        """The peers choked in ``topic``."""
        return {peer for peer, record in self._topics.get(topic, {}).items() if record.choked}

    def observe(self, topic: Topic, peer: PeerId, delay: float) -> None:
        """``peer``'s copy or announcement in ``topic`` came ``delay`` seconds after the first arrival."""
        records = self._topics.get(topic)
        if records is None:
            records = self._topics[topic] = {}
        record = records.get(peer)
        if record is None:
            record = records[peer] = _Record(self._window)
        record.add(min(delay, MAX_DELAY_SAMPLE))

    def remove_peer(self, topic: Topic, peer: PeerId) -> None:
        """``peer`` left the mesh of ``topic``: its samples and choke state go (a re-graft starts afresh)."""
        records = self._topics.get(topic)
        if records is not None:
            records.pop(peer, None)
            if not records:
                del self._topics[topic]

    def forget_topic(self, topic: Topic) -> None:
        """We left ``topic``."""
        self._topics.pop(topic, None)

    def decide(self, topic: Topic, mesh: Set[PeerId]) -> ChokeDecision:
        """Rank ``topic``'s mesh peers and choose whom to choke and unchoke now.

        Records of peers no longer in ``mesh`` are dropped first (the router reports departures, this
        also bounds records made by samples from peers that were never in the mesh).
        """
        records = self._topics.get(topic)
        if records is None:
            return _NO_CHANGE
        for gone in [peer for peer in records if peer not in mesh]:
            del records[gone]
        ranked: list[tuple[float, PeerId]] = []
        for peer, record in records.items():
            if len(record.samples) >= self._min_samples:
                ranked.append((record.mean() - (0.0 if record.choked else self._margin), peer))
        ranked.sort()
        best = {peer for _, peer in ranked[: self._keep]}
        unchoke = tuple(
            sorted(p for p, r in records.items() if r.choked and (p in best or len(mesh) <= self._keep))
        )
        chokes: list[PeerId] = []
        if len(mesh) > self._keep:
            # Worst first, so a churn limit chokes the slowest.
            for _, peer in reversed(ranked):
                if len(chokes) >= self._churn:
                    break
                if peer not in best and not records[peer].choked and records[peer].mean() >= self._late:
                    chokes.append(peer)
        for peer in unchoke:
            records[peer].choked = False
        for peer in chokes:
            records[peer].choked = True
        if not chokes and not unchoke:
            return _NO_CHANGE
        return ChokeDecision(choke=tuple(sorted(chokes)), unchoke=unchoke)

    def __len__(self) -> int:
        return sum(len(records) for records in self._topics.values())
