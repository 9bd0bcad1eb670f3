"""The simulator figures the gossip issue asks for, each printed next to its target.

Run: python benchmarks/bench_sim.py [--scale S] [--seed N] [--big]

Scenarios (at ``--scale 1``, the issue's sizes): 1,000 nodes, D=6, 50-150 ms links, 1,000 messages
from random publishers, with IDONTWANT on and off; the same with 10 % link loss; 1,000 honest nodes
plus 4,000 Sybils that never forward, scoring on and off; ``--big`` adds 10,000 nodes (fast path).
``--scale 0.1`` runs everything at a tenth of the nodes and messages, for a quick look.

Speed is a ratio measured in the same run: virtual seconds simulated per wall second ("x real time").
Peak memory is this process's maximum resident set size (``resource.getrusage``).
The last line reads ``delivery=… p99_ms=… dup=… loss_delivery=… sybil_delivery=… speed_x=…``.
"""

from __future__ import annotations

import argparse
import resource
from dataclasses import replace

from meshchat.gossip import GossipConfig, ScoreParams
from meshchat.sim import Results, Scenario, UniformLatency, run

LINKS = UniformLatency(low=0.050, high=0.150)


def line(name: str, result: Results, target: str) -> None:
    """One row: the figures of ``result`` and what the issue asks of them."""
    lat = result.latency_ms
    speed = result.virtual_seconds / result.wall_seconds if result.wall_seconds else float("inf")
    delivery = result.delivery_ratio if result.delivery_ratio is not None else float("nan")
    dup = result.duplicates_per_message if result.duplicates_per_message is not None else float("nan")
    print(
        f"{name:34s} delivery {delivery:8.4%}  mean {lat['mean'] or 0:4.0f} ms  p99 {lat['p99'] or 0:5.0f} ms"
        f"  dup {dup:5.2f}  "
        f"{result.virtual_seconds:7.1f} s virtual in {result.wall_seconds:6.1f} s ({speed:5.1f}x)  [{target}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's sizes (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--big", action="store_true", help="also run 10,000 nodes (slow: many minutes)")
    args = parser.parse_args()
    nodes, messages = max(20, int(1000 * args.scale)), max(20, int(1000 * args.scale))
    # Envelopes are small (a chat message pads to 367 bytes), under the router's default IDONTWANT
    # size threshold (1 KiB); "IDONTWANT on" here applies it to every message to show what it saves.
    idontwant_all = GossipConfig(idontwant_min_size=0)
    base = Scenario(
        seed=args.seed, nodes=nodes, degree=6, messages=messages, latency=LINKS, gossip=idontwant_all
    )

    broadcast = run(base)
    line("broadcast, IDONTWANT on", broadcast, "100%, mean <= 500 ms, p99 <= 1000 ms, dup <= 3")
    no_idontwant = run(replace(base, gossip=GossipConfig(idontwant=False)))
    line("broadcast, IDONTWANT off", no_idontwant, "contrast")
    lossy = run(replace(base, loss=0.10))
    line("10% link loss", lossy, ">= 99.9%")
    sybil = replace(base, sybils=4 * nodes)
    with_scoring = run(sybil)
    line(f"{4 * nodes} Sybils, scoring on", with_scoring, ">= 99%")
    without_scoring = run(replace(sybil, score_params=None))
    line(f"{4 * nodes} Sybils, scoring off", without_scoring, "contrast")
    if args.big:
        big = run(replace(base, nodes=10 * nodes, fast_path=True, score_params=ScoreParams()))
        line("10x nodes, fast path", big, "<= 10 min wall, <= 8 GiB")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory {peak_mib:,.0f} MiB (nodes={nodes}, messages={messages}, scale={args.scale})")
    speed = broadcast.virtual_seconds / broadcast.wall_seconds
    print(
        f"delivery={broadcast.delivery_ratio:.4f} p99_ms={broadcast.latency_ms['p99'] or 0:.0f} "
        f"dup={broadcast.duplicates_per_message:.2f} loss_delivery={lossy.delivery_ratio:.4f} "
        f"sybil_delivery={with_scoring.delivery_ratio:.4f} speed_x={speed:.1f}"
    )


if __name__ == "__main__":
    main()
