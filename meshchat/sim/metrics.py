"""Per-message bookkeeping: who received how many copies of each honest message, who delivered it, when.

The engine reports three things: a publish, the message copies in each RPC an honest node received
(duplicates included), and each ``Deliver`` an honest router produced. Messages are recognised by
their envelope bytes (the very object published travels by reference, and ``bytes`` caches its hash,
so the lookup costs no hashing). Per message this keeps two compact arrays over the honest nodes
(copies, delivery time): 12 bytes per node per message, ~120 MB for 10,000 nodes x 1,000 messages.

Whether a delivery is counted is decided when it happens, from the churn schedule known in advance
(see ``meshchat.sim.results`` for the definitions). This module does no I/O and keeps no global
state; ``finish`` turns the records into the figures of ``Results``.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from meshchat.gossip.messages import PubMessage
from meshchat.sim.results import CDF_POINTS, DIGITS, percentile

__all__ = ["MAX_TIME_BUCKETS", "MessageRecord", "Metrics", "MetricsShare"]

#: Most points in ``delivery_over_time``: enough for a readable plot of any run length.
MAX_TIME_BUCKETS = 200
_NAN = float("nan")


class MessageRecord:
    """One honest message: its publish, and per honest node its copies and delivery time."""

    __slots__ = (
        "copies",
        "data",
        "delivered",
        "delivered_at",
        "eligible",
        "index",
        "published_at",
        "publisher",
        "window_end",
    )

    def __init__(
        self, *, index: int, data: bytes, publisher: int, published_at: float, drain: float, nodes: int
    ):
        #: Its position in publish order.
        self.index = index
        #: The envelope bytes.
        self.data = data
        #: The publishing node's index.
        self.publisher = publisher
        #: Publish time, virtual seconds from the start of the run.
        self.published_at = published_at
        #: End of its lifetime: deliveries after this are not counted.
        self.window_end = published_at + drain
        #: Copies each honest node received.
        self.copies = array("I", [0]) * nodes
        #: When each honest node delivered it (NaN: never), seconds from the start.
        self.delivered_at = array("d", [_NAN]) * nodes
        #: Deliveries expected (honest subscribed nodes but the publisher, online all lifetime).
        self.eligible = 0
        #: Deliveries counted.
        self.delivered = 0


@dataclass(slots=True, kw_only=True)
class MetricsShare:
    """One worker's measurements of the honest nodes it ran (``Metrics.share``)."""

    #: The honest node indices it ran.
    nodes: list[int]
    #: Every honest message: (data, publisher, published_at), in publish order (every worker has all).
    published: list[tuple[bytes, int, float]]
    #: Per message, copies received by ``nodes``.
    copies: list[array[int]]
    #: Per message, when ``nodes`` delivered it.
    delivered_at: list[array[float]]
    #: Per message, deliveries counted at ``nodes``.
    delivered: list[int]
    #: Latencies of the deliveries counted at ``nodes``.
    latencies: array[float]
    #: Other deliveries at ``nodes``, by kind.
    other_deliveries: dict[str, int]


class Metrics:
    """Records of every honest message, and counters of everything else delivered."""

    def __init__(
        self,
        *,
        subscribed: Sequence[bool],
        away: Sequence[Sequence[tuple[float, float]]],
        drain: float,
    ) -> None:
        """Track messages over honest nodes ``0..len(subscribed)-1``.

        ``away[i]`` lists the intervals (seconds from the start) honest node ``i`` is scheduled to be
        offline; ``drain`` is each message's lifetime.
        """
        self._nodes = len(subscribed)
        self._subscribed = list(subscribed)
        self._subscribed_count = sum(self._subscribed)
        self._away = [tuple(a) for a in away]
        self._churned = [i for i, a in enumerate(self._away) if a and self._subscribed[i]]
        self._drain = drain
        self._by_data: dict[bytes, MessageRecord] = {}
        self._junk: dict[bytes, str] = {}
        #: Every honest message, in publish order.
        self.records: list[MessageRecord] = []
        #: Latency of every counted delivery, seconds.
        self.latencies = array("d")
        #: Deliveries of messages that are not honest ones, by kind (``spam``, ``invalid``, ``unknown``).
        self.other_deliveries: dict[str, int] = {"spam": 0, "invalid": 0, "unknown": 0}

    # --- events -----------------------------------------------------------------------------------

    def published(self, data: bytes, *, publisher: int, at: float) -> MessageRecord:
        """An honest node published ``data`` at ``at`` (seconds from the start)."""
        record = MessageRecord(
            index=len(self.records),
            data=data,
            publisher=publisher,
            published_at=at,
            drain=self._drain,
            nodes=self._nodes,
        )
        eligible = self._subscribed_count - (1 if self._subscribed[publisher] else 0)
        for node in self._churned:
            if node != publisher and self._away_during(node, record):
                eligible -= 1
        record.eligible = eligible
        self.records.append(record)
        self._by_data[data] = record
        return record

    def junk(self, data: bytes, kind: str) -> None:
        """An attacker sent ``data`` (kind ``spam`` or ``invalid``); delivering it is counted apart."""
        self._junk[data] = kind

    def received(self, node: int, messages: Sequence[PubMessage]) -> None:
        """Honest ``node`` received an RPC carrying ``messages``."""
        for message in messages:
            record = self._by_data.get(message.data)
            if record is not None:
                record.copies[node] += 1

    def delivered(self, node: int, data: bytes, at: float) -> None:
        """Honest ``node``'s router delivered ``data`` at ``at`` (seconds from the start)."""
        record = self._by_data.get(data)
        if record is None:
            kind = self._junk.get(data, "unknown")
            self.other_deliveries[kind] += 1
            return
        times = record.delivered_at
        if not math.isnan(times[node]):
            return  # a rejoined node's fresh router delivered it again: the first delivery stands
        times[node] = at
        if at <= record.window_end and self.eligible(node, record):
            record.delivered += 1
            self.latencies.append(at - record.published_at)

    # --- several workers (``meshchat.sim.parallel``) ----------------------------------------------

    def share(self, nodes: list[int]) -> MetricsShare:
        """What this worker measured of the honest nodes ``nodes`` (the ones it ran)."""
        return MetricsShare(
            nodes=nodes,
            published=[(r.data, r.publisher, r.published_at) for r in self.records],
            copies=[array("I", [r.copies[node] for node in nodes]) for r in self.records],
            delivered_at=[array("d", [r.delivered_at[node] for node in nodes]) for r in self.records],
            delivered=[r.delivered for r in self.records],
            latencies=self.latencies,
            other_deliveries=dict(self.other_deliveries),
        )

    def merge(self, shares: Sequence[MetricsShare]) -> None:
        """Take the workers' shares as this run's measurements (these metrics must be unused)."""
        if self.records or not shares:
            raise ValueError("merge needs unused metrics and at least one share")
        for data, publisher, at in shares[0].published:
            self.published(data, publisher=publisher, at=at)
        for share in shares:
            if len(share.published) != len(self.records):
                raise ValueError("the workers disagree on what was published")
            for index, record in enumerate(self.records):
                copies, times = record.copies, record.delivered_at
                for node, count, at in zip(
                    share.nodes, share.copies[index], share.delivered_at[index], strict=True
                ):
                    copies[node] = count
                    times[node] = at
                record.delivered += share.delivered[index]
            self.latencies.extend(share.latencies)
            for kind, count in share.other_deliveries.items():
                self.other_deliveries[kind] += count

    # --- questions --------------------------------------------------------------------------------

    def _away_during(self, node: int, record: MessageRecord) -> bool:
        return any(left < record.window_end and back > record.published_at for left, back in self._away[node])

    def eligible(self, node: int, record: MessageRecord) -> bool:
        """True if ``node`` is expected to deliver ``record`` (see ``meshchat.sim.results``)."""
        return (
            self._subscribed[node]
            and node != record.publisher
            and not (self._away[node] and self._away_during(node, record))
        )

    def record_of(self, data: bytes) -> MessageRecord | None:
        """The record of honest message ``data``, if it is one."""
        return self._by_data.get(data)

    # --- figures ----------------------------------------------------------------------------------

    def delivery(self) -> tuple[int, int]:
        """(deliveries counted, deliveries expected) over all messages."""
        return sum(r.delivered for r in self.records), sum(r.eligible for r in self.records)

    def duplicates_per_message(self) -> float | None:
        """Mean (copies - 1) over (message, honest non-publisher) pairs with at least one copy."""
        copies = receivers = 0
        for record in self.records:
            counts = record.copies
            own = counts[record.publisher]
            copies += sum(counts) - own
            receivers += self._nodes - counts.count(0) - (1 if own else 0)
        return None if receivers == 0 else round((copies - receivers) / receivers, DIGITS)

    @staticmethod
    def latency_cdf_ms(ordered: Sequence[float]) -> tuple[float, ...]:
        """The latency at each percentile 0..100, ms, of ``ordered`` (sorted latencies, seconds)."""
        if not ordered:
            return ()
        return tuple(round(percentile(ordered, p) * 1000, DIGITS) for p in range(CDF_POINTS))

    def delivery_over_time(
        self, first_publish: float, last_publish: float
    ) -> list[dict[str, float | int | None]]:
        """Delivery ratio per publish-time bucket (1 s, widened to keep at most ``MAX_TIME_BUCKETS``)."""
        if not self.records:
            return []
        span = last_publish - first_publish
        width = max(1.0, math.ceil(span / MAX_TIME_BUCKETS))
        buckets: dict[int, list[int]] = {}
        for record in self.records:
            slot = int((record.published_at - first_publish) // width)
            totals = buckets.setdefault(slot, [0, 0, 0])
            totals[0] += 1
            totals[1] += record.delivered
            totals[2] += record.eligible
        return [
            {
                "t": round(slot * width, DIGITS),
                "messages": count,
                "delivery_ratio": round(delivered / eligible, DIGITS) if eligible else None,
            }
            for slot, (count, delivered, eligible) in sorted(buckets.items())
        ]

    def node_delivery_ratio(self, node: int) -> float | None:
        """Counted / expected deliveries of one honest node (the eclipse victim's figure)."""
        expected = counted = 0
        for record in self.records:
            if self.eligible(node, record):
                expected += 1
                at = record.delivered_at[node]
                counted += at <= record.window_end  # False for NaN
        return round(counted / expected, DIGITS) if expected else None
