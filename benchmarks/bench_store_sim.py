"""Store-and-forward at scale: the issue's figure, from the store-and-forward simulator.

Run: python benchmarks/bench_store_sim.py [--users N] [--messages N] [--seed N] [--json PATH]

The scenario (``meshchat.sim.store_sim``): 1,000 users, each a real ``Messenger``; 10 mailboxes, each a
real ``MailboxCore``; 2,000 messages from random online users to random users over 3 virtual hours,
then a 6-hour drain; 50-150 ms links losing 1 % of requests, responses and gossip copies; 30 % of the
users going offline at random (periods of 30 minutes on average); and a 50/50 partition of users and
mailboxes from 0:30 to 1:30 that then heals. Messages live 24 hours.

One knob differs from ``StoreScenario``'s defaults: users sync with each mailbox every 10 minutes
(``--sync-interval 600``) instead of every 2. The periodic sync only matters for messages whose gossip
copy was lost or that a user missed while away (a user coming back, or a mailbox coming into view,
syncs at once), and at 2 minutes a 1,000-user run makes ~5x the mailbox calls and takes ~5x as
long: pass ``--sync-interval 120`` to measure it.

It prints a summary table, the latency percentiles (send to the recipient's app, and send to the
sender's "delivered"), and ends with one line ``store_sim_delivery=… p50_s=… p99_s=… exactly_once=…
wall_s=…``.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

from meshchat.sim.store_sim import StoreResults, StoreScenario, run_store

#: Seconds between syncs with each mailbox in this benchmark (see the module docstring).
SYNC_INTERVAL = 600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sync-interval", type=float, default=SYNC_INTERVAL, help="seconds (default 600)")
    parser.add_argument("--carriers", type=int, default=0, help="mailboxes that switch partition sides")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results JSON here")
    args = parser.parse_args()
    scenario = StoreScenario(
        users=args.users,
        messages=args.messages,
        seed=args.seed,
        sync_interval=args.sync_interval,
        carriers=args.carriers,
    )
    interactive = sys.stderr.isatty()
    result = run_store(scenario, progress=show_progress if interactive else None)
    if interactive:
        print(file=sys.stderr)
    if args.json is not None:
        args.json.write_text(result.to_json(indent=2) + "\n")
    table(scenario, result)
    latency = result.latency_s
    print(
        f"store_sim_delivery={result.delivery_ratio:.4f} p50_s={latency['p50']:.3f} "
        f"p99_s={latency['p99']:.1f} exactly_once={result.delivered_exactly_once} "
        f"wall_s={result.wall_seconds:.1f}"
    )


def show_progress(fraction: float) -> None:
    """A one-line progress indicator on stderr."""
    print(f"\rsimulating: {fraction:4.0%}", end="", file=sys.stderr, flush=True)


def table(scenario: StoreScenario, result: StoreResults) -> None:
    """The figures, one per row."""
    cross = result.cross_partition
    offline = result.offline_recipients
    partition = scenario.partition
    rows = [
        ("users / mailboxes / carriers", f"{result.users:,} / {result.mailboxes} / {result.carriers}"),
        ("messages sent", f"{result.messages:,} (unsent: {result.unsent})"),
        (
            "partition",
            "none" if partition is None else f"50/50 from {partition[0]:,.0f} s to {partition[1]:,.0f} s",
        ),
        ("churn", f"{scenario.churn:.0%} of users, offline {scenario.offline_mean:,.0f} s on average"),
        ("sync interval", f"{scenario.sync_interval:,.0f} s"),
        ("delivery ratio (within TTL)", f"{result.delivery_ratio:.4%}  [>= 99.9 %]"),
        ("exactly once", f"{result.delivered_exactly_once} (duplicates to apps: {result.duplicates_to_app})"),
        ("delivered via", ", ".join(f"{k} {v:,}" for k, v in sorted(result.delivered_via.items()))),
        ("cross-partition", f"{cross['delivered']:,} / {cross['sent']:,} delivered"),
        ("  ... during the partition", f"{cross['delivered_during_partition']:,}"),
        ("to offline recipients", f"{offline['delivered']:,} / {offline['sent']:,} delivered"),
        ("receipts (sender saw delivered)", f"{result.receipts_ratio:.4%}"),
        ("final outbox statuses", ", ".join(f"{k} {v:,}" for k, v in sorted(result.statuses.items()))),
        (
            "mailbox calls / failures",
            f"{result.mailbox_calls:,} / {result.mailbox_failures:,} "
            f"(lost {result.mailbox_failure_reasons['lost']:,}, "
            f"closed {result.mailbox_failure_reasons['closed']:,})",
        ),
        (
            "  ... by request",
            ", ".join(f"{k} {v:,}" for k, v in result.mailbox_calls_by_kind.items())
            + f" (deletes that removed nothing: {result.empty_deletes:,})",
        ),
        ("mailbox items left at the end", f"{result.mailbox_items_at_end:,}"),
        ("gossip copies", f"{result.gossip_copies:,}"),
        ("bytes per user", f"{result.bytes_per_user:,.0f}"),
        ("stale deadlines", f"{result.stale_deadlines}"),
        ("events", f"{result.events:,}"),
        (
            "virtual / wall time",
            f"{result.virtual_seconds:,.0f} s / {result.wall_seconds:,.1f} s "
            f"({result.virtual_seconds / max(result.wall_seconds, 1e-9):,.0f}x real time)",
        ),
        ("peak memory", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print()
    print(f"{'latency, seconds':<{width}}  {'mean':>9} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}")
    for name, figures in (
        ("send -> recipient's app", result.latency_s),
        ("send -> sender sees delivered", result.receipt_latency_s),
    ):
        cells = " ".join(f"{figures[k] if figures[k] is not None else float('nan'):9.3f}" for k in _KEYS)
        print(f"{name:<{width}}  {cells}")
    print()


_KEYS = ("mean", "p50", "p90", "p99", "max")

if __name__ == "__main__":
    main()
