"""The simulator figures the gossip issue asks for, each printed next to its target.

Run: python benchmarks/bench_sim.py [--scale S] [--seed N] [--workers W] [--big]

Scenarios (at ``--scale 1``, the issue's sizes): 1,000 nodes, D=6, 50-150 ms links, 1,000 messages
from random publishers at 10 messages/s, with IDONTWANT on and off; the same with 10 % link loss;
1,000 honest nodes plus 4,000 Sybils that never forward, scoring on and off; large messages (16 KiB
bodies, 1 MB/s uplinks), where IDONTWANT has time to act, on and off; and the speed run, on one
process and on ``--workers`` processes (default: 2, or 1 on a one-core machine;
``meshchat.sim.parallel``). ``--big`` adds 10,000 nodes (fast path, default router settings) on
``--workers`` processes. ``--scale 0.1`` runs everything at a tenth of the nodes and messages, for a
quick look. The figure rows run on one process: a worker count is part of a run's identity.

Speed is a ratio measured in the same run: virtual seconds simulated per wall second ("x real
time"). How fast a run goes depends on the offered load, so it is printed at two: 1 message/s, the
load of a 1,000-user inbox shard where everyone sends ~86 messages a day (the speed run), and the
10 messages/s of the broadcast rows, ten times that. Peak memory is this process's maximum resident
set size (``resource.getrusage``); with workers, the parent's plus the largest worker's times the
worker count (an upper bound: pages the workers share with the parent are counted in each).

The last line reads ``delivery=… p99_ms=… dup=… loss_delivery=… sybil_delivery=… speed_x=…
speed_x_at_10_per_s=… speed_x_workers=…``.
"""

from __future__ import annotations

import argparse
import os
import resource
from dataclasses import replace

from meshchat.gossip import GossipConfig
from meshchat.sim import Results, Scenario, UniformLatency, run

LINKS = UniformLatency(low=0.050, high=0.150)


def line(name: str, result: Results, target: str) -> None:
    """One row: the figures of ``result`` and what the issue asks of them."""
    lat = result.latency_ms
    delivery = result.delivery_ratio if result.delivery_ratio is not None else float("nan")
    dup = result.duplicates_per_message if result.duplicates_per_message is not None else float("nan")
    print(
        f"{name:34s} delivery {delivery:8.4%}  mean {lat['mean'] or 0:4.0f} ms  p99 {lat['p99'] or 0:5.0f} ms"
        f"  dup {dup:5.2f}  {result.virtual_seconds:7.1f} s virtual in {result.wall_seconds:6.1f} s"
        f" ({speed(result):5.1f}x)  [{target}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's sizes (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--big", action="store_true", help="also run 10,000 nodes (slow: many minutes)")
    parser.add_argument("--big-only", action="store_true", help="run only the 10,000-node scenario")
    parser.add_argument("--speed-only", action="store_true", help="run only the speed run (1 msg/s)")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes for the parallel speed run and the 10,000-node run (default: 2)",
    )
    args = parser.parse_args()
    nodes, messages = max(20, int(1000 * args.scale)), max(20, int(1000 * args.scale))
    # Envelopes are small (a chat message pads to 367 bytes), under the router's default IDONTWANT
    # size threshold (1 KiB); "IDONTWANT on" here applies it to every message to show what it saves.
    idontwant_all = GossipConfig(idontwant_min_size=0)
    base = Scenario(
        seed=args.seed, nodes=nodes, degree=6, messages=messages, latency=LINKS, gossip=idontwant_all
    )

    if args.big_only:
        big_run(base, args.workers)
        return
    # The speed run first, while the machine is quiet: the broadcast scenario at 1 message/s, on one
    # process, then shared by the workers.
    realistic = run(replace(base, gossip=GossipConfig(), rate=1.0))
    line("speed run: 1 msg/s", realistic, ">= 10x real time")
    shared = run(replace(base, gossip=GossipConfig(), rate=1.0, workers=args.workers))
    line(f"speed run, {args.workers} workers", shared, ">= 10x real time")
    if args.speed_only:
        print(f"speed_x={speed(realistic):.1f} speed_x_workers={speed(shared):.1f}")
        return
    broadcast = run(base)
    line("broadcast, IDONTWANT on", broadcast, "100%, mean <= 500 ms, p99 <= 1000 ms, dup <= 3")
    no_idontwant = run(replace(base, gossip=GossipConfig(idontwant=False)))
    line("broadcast, IDONTWANT off", no_idontwant, "contrast")
    lossy = run(replace(base, loss=0.10))
    line("10% link loss", lossy, ">= 99.9%")
    # 16 KiB bodies (an attachment chunk) over 1 MB/s uplinks: a copy spends 16 ms on the uplink, so
    # an IDONTWANT can overtake copies not yet queued. At 1 message/s, so the uplinks are not saturated.
    # Default IDONTWANT threshold (1 KiB).
    large = replace(
        base, body_size=16 * 1024, bandwidth=1_000_000.0, rate=1.0, messages=max(20, messages // 5)
    )
    large_on = run(replace(large, gossip=GossipConfig()))
    line("16 KiB, 1 MB/s, IDONTWANT on", large_on, "IDONTWANT where it can act")
    large_off = run(replace(large, gossip=GossipConfig(idontwant=False)))
    line("16 KiB, 1 MB/s, IDONTWANT off", large_off, "contrast")
    sybil = replace(base, sybils=4 * nodes)
    with_scoring = run(sybil)
    line(f"{4 * nodes} Sybils, scoring on", with_scoring, ">= 99%")
    without_scoring = run(replace(sybil, score_params=None))
    line(f"{4 * nodes} Sybils, scoring off", without_scoring, "contrast")
    if args.big:
        big_run(base, args.workers)
    print(f"peak memory {peak_memory(args.workers)} (nodes={nodes}, messages={messages}, scale={args.scale})")
    print(
        f"delivery={broadcast.delivery_ratio:.4f} p99_ms={broadcast.latency_ms['p99'] or 0:.0f} "
        f"dup={broadcast.duplicates_per_message:.2f} loss_delivery={lossy.delivery_ratio:.4f} "
        f"sybil_delivery={with_scoring.delivery_ratio:.4f} speed_x={speed(realistic):.1f} "
        f"speed_x_at_10_per_s={speed(broadcast):.1f} speed_x_workers={speed(shared):.1f}"
    )


def big_run(base: Scenario, workers: int) -> None:
    """Ten times the nodes, fast-path validation, default router settings; prints its row and memory."""
    big = run(replace(base, nodes=10 * base.nodes, fast_path=True, gossip=GossipConfig(), workers=workers))
    line(f"{big.nodes} nodes, fast path, {workers} workers", big, "<= 10 min wall, <= 8 GiB")
    print(f"peak memory so far {peak_memory(workers)}")
    print(f"big_wall_s={big.wall_seconds:.0f} big_delivery={big.delivery_ratio:.4f}")


def peak_memory(workers: int) -> str:
    """Peak resident memory of this process and (an upper bound on) its workers together."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if not child:
        return f"{own:,.0f} MiB"
    total = own + workers * child
    return f"{total:,.0f} MiB at most (parent {own:,.0f} MiB + {workers} x largest worker {child:,.0f} MiB)"


def speed(result: Results) -> float:
    """Virtual seconds per wall second."""
    return result.virtual_seconds / result.wall_seconds if result.wall_seconds else float("inf")


if __name__ == "__main__":
    main()
