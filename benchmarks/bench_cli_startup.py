"""How long ``meshchat --help`` takes to start, against an empty Python in the same run.

Run: python benchmarks/bench_cli_startup.py [--runs N]

Each round starts, in alternating order, ``python -c pass`` (the floor: the interpreter alone),
``python -m meshchat --help`` and ``python -c "import meshchat"`` (the library's own import, which the
CLI cannot go below without changing ``meshchat/__init__.py``), each as a fresh process with the same
environment, and times it with a monotonic clock. It prints the median and best of each and the ratio
of the medians. The last line reads
``help_ms=X python_ms=Y import_ms=Z help_ratio=R`` (R = help median / python median).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

#: Commands timed, by name: each a fresh process.
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import meshchat'": [sys.executable, "-c", "import meshchat"],
    "meshchat --help": [sys.executable, "-m", "meshchat", "--help"],
}
#: Seconds one start may take before the benchmark gives up (the old CLI took ~0.9 s).
START_TIMEOUT = 30.0


def _time_once(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env, timeout=START_TIMEOUT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="Rounds (each starts every command once).")
    args = parser.parse_args()
    env = {**os.environ, "COLUMNS": "100"}
    names = list(COMMANDS)
    for name in names:  # warm the file cache, so the first round is not an outlier
        _time_once(COMMANDS[name], env)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(args.runs):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_time_once(COMMANDS[name], env))
    print(f"{'start-up, ' + str(args.runs) + ' runs':32s} {'median ms':>10s} {'best ms':>10s}")
    for name in names:
        print(f"{name:32s} {statistics.median(times[name]) * 1000:10.0f} {min(times[name]) * 1000:10.0f}")
    python_ms = statistics.median(times["python -c pass"]) * 1000
    import_ms = statistics.median(times["python -c 'import meshchat'"]) * 1000
    help_ms = statistics.median(times["meshchat --help"]) * 1000
    ratio = help_ms / python_ms
    print(f"\nmeshchat --help takes {ratio:.1f}x an empty Python ({help_ms - python_ms:.0f} ms more)")
    print(f"help_ms={help_ms:.0f} python_ms={python_ms:.0f} import_ms={import_ms:.0f} help_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
