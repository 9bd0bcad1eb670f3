"""Duplicates, bytes and latency with the choke extension on and off, in the 1,000-node simulation.

Run: python benchmarks/bench_choke.py [--scale S] [--seed N] [--rows KEEP:LATE ...]

The scenario is the broadcast row of ``benchmarks/bench_sim.py`` (1,000 nodes, 6 connections each,
D=6, 50-150 ms links, 1,000 chat-sized messages from random publishers at 10 messages/s, IDONTWANT on
for every size), run once with plain gossipsub and once per ``--rows`` entry with ``GossipConfig.choke``
on: ``KEEP:LATE`` sets ``choke_keep`` (mesh peers kept unchoked per topic) and ``choke_late`` (peers
whose copies come on average less than LATE seconds after the first are never choked); the default
rows are ``2:0.1075`` (the defaults of ``GossipConfig``) and ``3:0`` (choking harder). It prints per run the
delivery ratio, duplicates per node per message, mean bytes sent per node and the latency percentiles,
and the choked runs' ratios to the plain one (same seed, same run). The target (issue 18): duplicates
<= 2 with delivery 100 % and p99 within +20 % of plain gossipsub.

The last line reads ``dup_choked=… p99_choked_ms=… dup_plain=… p99_plain_ms=… delivery_choked=…
bytes_choked=… bytes_plain=…`` for the first row.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from meshchat.gossip import GossipConfig
from meshchat.sim import Results, Scenario, UniformLatency, run

LINKS = UniformLatency(low=0.050, high=0.150)


def row(name: str, result: Results, plain: Results | None) -> None:
    """One line of figures, with ratios to ``plain`` when given."""
    lat = result.latency_ms
    ratio = ""
    if plain is not None:
        ratio = (
            f"  (p99 x{(lat['p99'] or 0) / (plain.latency_ms['p99'] or 1):.2f},"
            f" bytes x{(result.bytes_per_node['mean'] or 0) / (plain.bytes_per_node['mean'] or 1):.2f})"
        )
    dup = result.duplicates_per_message or 0
    print(
        f"{name:22s} delivery {result.delivery_ratio or 0:8.4%}  dup {dup:6.3f}"
        f"  bytes/node {result.bytes_per_node['mean'] or 0:10,.0f}  p50 {lat['p50'] or 0:4.0f} ms"
        f"  p99 {lat['p99'] or 0:4.0f} ms  max {lat['max'] or 0:4.0f} ms"
        f"  wall {result.wall_seconds:5.1f} s{ratio}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 1,000 nodes and messages")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rows", nargs="+", default=["2:0.1075", "3:0"], help="KEEP:LATE per choked run")
    args = parser.parse_args()
    size = max(20, int(1000 * args.scale))
    plain_config = GossipConfig(idontwant_min_size=0)  # bench_sim.py's broadcast row
    base = Scenario(seed=args.seed, nodes=size, degree=6, messages=size, latency=LINKS, gossip=plain_config)
    plain = run(base)
    row("plain gossipsub", plain, None)
    choked: list[Results] = []
    for spec in args.rows:
        keep, _, late = spec.partition(":")
        config = replace(plain_config, choke=True, choke_keep=int(keep), choke_late=float(late or 0))
        result = run(replace(base, gossip=config))
        row(f"choke, keep {keep}, late {float(late or 0):g}", result, plain)
        choked.append(result)
    first = choked[0]
    print(
        f"dup_choked={first.duplicates_per_message:.3f} p99_choked_ms={first.latency_ms['p99'] or 0:.0f} "
        f"dup_plain={plain.duplicates_per_message:.3f} p99_plain_ms={plain.latency_ms['p99'] or 0:.0f} "
        f"delivery_choked={first.delivery_ratio:.4f} bytes_choked={first.bytes_per_node['mean'] or 0:.0f} "
        f"bytes_plain={plain.bytes_per_node['mean'] or 0:.0f}"
    )


if __name__ == "__main__":
    main()
