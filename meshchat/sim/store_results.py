"""The figures of a store-and-forward run (``StoreResults``), read off a ``StoreSimulation``.

Split from ``meshchat.sim.store_sim`` (the driver) to keep each module readable; see that module's
docstring for what each figure means. Also ``on_time``: a message delivered within its TTL.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

from meshchat.sim.results import DIGITS, summarize
from meshchat.sim.store_scenario import SentMessage, StoreResults
from meshchat.store.storage import OutboxStatus

if TYPE_CHECKING:
    from meshchat.sim.store_sim import StoreSimulation

__all__ = ["RECEIPTED", "collect_results", "on_time"]

#: Statuses in which the sender has seen the recipient's receipt.
RECEIPTED = frozenset({OutboxStatus.DELIVERED, OutboxStatus.READ})


def collect_results(sim: StoreSimulation, *, wall_seconds: float) -> StoreResults:
    """The figures of ``sim``'s run so far."""
    s = sim.scenario
    records = list(sim.sent.values())
    latencies = sorted(
        r.delivered_at - r.sent_at
        for r in records
        if r.delivered_at is not None and r.delivered_at - r.sent_at <= s.ttl
    )
    timely = [on_time(r, s.ttl) for r in records]
    receipts = sorted(r.receipt_at - r.sent_at for r in records if r.receipt_at is not None)
    statuses: Counter[str] = Counter()
    receipted = 0
    for mid, record in sim.sent.items():
        outbox = sim.users[record.sender].storage.outbox_get(mid)
        status = outbox.status if outbox is not None else None
        statuses["missing" if status is None else status.value] += 1
        receipted += status in RECEIPTED
    cross = [r for r in records if r.cross_partition]
    heal = s.partition[1] if s.partition is not None else math.inf
    offline = [r for r in records if r.recipient_offline]
    duplicates = sum(max(0, r.deliveries - 1) for r in records)
    sent = len(records)
    discarded, rejected = Counter(sim.retired_discards), Counter(sim.retired_rejects)
    for user in sim.users:
        statistics = user.messenger.statistics()
        discarded.update(statistics.discarded)
        rejected.update(statistics.rejected)
    return StoreResults(
        seed=s.seed,
        users=s.users,
        mailboxes=s.mailboxes,
        carriers=s.carriers,
        messages=sent,
        unsent=sim.unsent,
        delivery_ratio=round(sum(timely) / sent, DIGITS) if sent else None,
        delivered=sum(timely),
        delivered_exactly_once=duplicates == 0 and sim.misdelivered == 0,
        duplicates_to_app=duplicates,
        latency_s=summarize(latencies, ordered=True),
        receipt_latency_s=summarize(receipts, ordered=True),
        cross_partition={
            "sent": len(cross),
            "delivered": sum(on_time(r, s.ttl) for r in cross),
            "delivered_during_partition": sum(
                r.delivered_at is not None and r.delivered_at < heal for r in cross
            ),
        },
        offline_recipients={
            "sent": len(offline),
            "delivered": sum(on_time(r, s.ttl) for r in offline),
        },
        delivered_via=dict(Counter(r.via for r, ok in zip(records, timely, strict=True) if ok)),
        receipts_ratio=round(receipted / sent, DIGITS) if sent else None,
        statuses=dict(statuses),
        mailbox_calls=sim.calls,
        mailbox_calls_by_kind=dict(sim.calls_by_kind),
        empty_deletes=sim.empty_deletes,
        mailbox_failures=sum(sim.failures.values()),
        mailbox_failure_reasons={"lost": sim.failures["lost"], "closed": sim.failures["closed"]},
        gossip_copies=sim.gossip_copies,
        bytes_per_user=round(sim.bytes / s.users, DIGITS),
        store_problems=sim.store_problems,
        stale_deadlines=sim.stale_deadlines,
        discarded=dict(discarded),
        rejected=dict(rejected),
        mailbox_items_at_end=sum(m.core.statistics().items for m in sim.mailboxes),
        events=sim.events,
        virtual_seconds=round(sim.elapsed, DIGITS),
        wall_seconds=round(wall_seconds, 3),
        parameters=s.to_dict(),
    )


def on_time(record: SentMessage, ttl: int) -> bool:
    """``record`` reached its recipient's app within ``ttl`` seconds of its sending."""
    return record.delivered_at is not None and record.delivered_at - record.sent_at <= ttl
