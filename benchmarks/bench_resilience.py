"""Issue 18's figures in one run: removal, eclipse, stamps, choking, soak.

Run: python benchmarks/bench_resilience.py [--scale F] [--seed N] [--soak-seconds S] [--quick]

It runs, in this order, each printing its own figures above the summary:

- the removal experiments (``meshchat sim --scenario remove-bootstraps``, ``remove-hubs``,
  ``remove-mailboxes``) with the defence on and off; ``removal_delivery`` is the *lowest* delivery of
  the three with the defence on;
- the eclipse experiment (50 Sybils dial one victim); ``eclipse_delivery`` is the victim's delivery
  with the defence on;
- ``benchmarks/bench_stamps.py`` (``stamp_s``: median time to mint a stamp at the default cost on one
  core; ``stamp_verify_us``: one verification);
- ``benchmarks/bench_choke.py`` (``dup_choked``: duplicates per node per message with choking on,
  1,000 nodes; ``p99_choked_ms``);
- ``benchmarks/soak.py`` (``soak_rss_growth_mib``: the node's resident memory growth from the end of
  its first minute to the end, under honest and abusive load).

Each sub-benchmark runs as its own process (its last ``key=value`` line is read), so one's memory
does not colour another's. ``--quick`` shrinks everything (scale 0.1, a 60 s soak, fewer stamps) to
check the wiring; the published figures are the defaults. The last line is
``removal_delivery=… eclipse_delivery=… stamp_s=… stamp_verify_us=… dup_choked=… p99_choked_ms=…
soak_rss_growth_mib=…``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from meshchat.sim.experiments import EXPERIMENTS
from meshchat.sim.experiments_base import ExperimentReport

HERE = Path(__file__).resolve().parent
#: Removal experiments whose defence-on delivery makes ``removal_delivery`` (the lowest of them).
REMOVALS = ("remove-bootstraps", "remove-hubs", "remove-mailboxes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="experiment size (1.0: published)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="small everything, to check the wiring")
    args = parser.parse_args()
    scale = 0.1 if args.quick else args.scale
    soak_seconds = 60.0 if args.quick else args.soak_seconds
    figures: dict[str, str] = {}

    removal = [experiment(name, args.seed, scale) for name in REMOVALS]
    figures["removal_delivery"] = f"{min(defence_on(r) for r in removal):.4f}"
    figures["eclipse_delivery"] = f"{victim_delivery(experiment('eclipse', args.seed, scale)):.4f}"

    stamps = sub(
        "bench_stamps.py",
        *(["--count", "5", "--stall-count", "1", "--lxmf-count", "1"] if args.quick else []),
    )
    figures["stamp_s"] = stamps["stamp_s"]
    figures["stamp_verify_us"] = stamps["stamp_verify_us"]
    choke = sub("bench_choke.py", *(["--scale", "0.2", "--rows", "2:0.1075"] if args.quick else []))
    figures["dup_choked"] = choke["dup_choked"]
    figures["p99_choked_ms"] = choke["p99_choked_ms"]
    soak = sub("soak.py", "--seconds", f"{soak_seconds:g}")
    figures["soak_rss_growth_mib"] = soak["soak_rss_growth_mib"]
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


def experiment(name: str, seed: int, scale: float) -> ExperimentReport:
    """Run one named experiment and print its arms."""
    started = time.perf_counter()
    report = EXPERIMENTS[name].run(seed, scale)
    print(f"== {name} (scale {scale:g}, seed {seed}, {time.perf_counter() - started:.0f} s wall)")
    print(f"   {report.summary}")
    for arm in report.arms:
        p50 = "-" if arm.p50_s is None else f"{arm.p50_s:.2f} s"
        p99 = "-" if arm.p99_s is None else f"{arm.p99_s:.2f} s"
        print(
            f"   {arm.label:<28} delivery {arm.delivery:7.2%} ({arm.delivered}/{arm.expected})"
            f"  p50 {p50:>9}  p99 {p99:>9}"
        )
    for note in report.notes:
        print(f"   {note}")
    sys.stdout.flush()
    return report


def defence_on(report: ExperimentReport) -> float:
    """The defence-on arm's delivery (the first arm, by convention)."""
    return report.arms[0].delivery


def victim_delivery(report: ExperimentReport) -> float:
    """The eclipse victim's delivery with the defence on (its own arm, else the first arm)."""
    for arm in report.arms:
        if "victim" in arm.label and "off" not in arm.label:
            return arm.delivery
    return defence_on(report)


def sub(script: str, *arguments: str) -> dict[str, str]:
    """Run ``benchmarks/SCRIPT`` as its own process, echo its output, return its last line's figures."""
    print(f"== {script} {' '.join(arguments)}".rstrip())
    sys.stdout.flush()
    done = subprocess.run(
        [sys.executable, str(HERE / script), *arguments],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = done.stdout.strip().splitlines()
    for line in lines:
        print(f"   {line}")
    return dict(pair.split("=", 1) for pair in lines[-1].split() if "=" in pair)


if __name__ == "__main__":
    main()
