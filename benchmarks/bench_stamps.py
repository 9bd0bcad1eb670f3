"""meshchat's proof-of-work stamps beside LXMF's, in one run.

Run: python benchmarks/bench_stamps.py [--count 25] [--cost 19] [--lxmf-count 5] [--lxmf-python PATH]

1. meshchat: ``--count`` stamps at ``--cost`` (default ``DEFAULT_STAMP_COST``), each for a different
   sealed-size envelope (``meshchat.crypto.stamps.stamp_envelope``), on one core: median, mean and
   90th percentile seconds (attempts are geometric, so the three differ: median ~ ln 2 of the mean),
   and the hash rate.
2b. The node's loop while a stamp is minted: a trio task ticking every millisecond records its worst
   lateness while ``--stall-count`` stamps are minted on the loop itself (as ``Messenger.send`` does)
   and in a worker thread (as ``Node.send`` does: ``meshchat.node_parts.queue_chat``).
2. Checking: ``envelope_stamp_bits`` on a decoded stamped envelope (re-encoding the envelope without
   its stamp, two SHA-256), microseconds, as a recipient or a mailbox pays it per envelope.
3. LXMF: ``LXMF.LXStamper.generate_stamp`` at its cost 13 (``--lxmf-count`` stamps: median seconds;
   on Linux it runs its workers on every core) and its check (``stamp_workblock`` + ``stamp_valid``),
   in a subprocess of a separate venv that has ``lxmf`` installed (``--lxmf-python``, default
   ``/tmp/lxmfvenv/bin/python``: ``python3.11 -m venv /tmp/lxmfvenv && /tmp/lxmfvenv/bin/pip install
   lxmf``); without one it says it was not measured.

The last line reads ``stamp_s=… stamp_verify_us=… lxmf_stamp_s=…`` (``lxmf_stamp_s=nan`` when not
measured).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

from meshchat.crypto.stamps import DEFAULT_STAMP_COST, envelope_stamp_bits, stamp_envelope
from meshchat.wire import EnvelopeKind, decode_envelope
from meshchat.wire.envelope import encode_fields

LXMF_COST = 13
#: Seconds the LXMF subprocess may take in all (its stamps use every core; a loaded machine is slow).
LXMF_TIMEOUT = 600.0
_LXMF_SCRIPT = """
import json, os, sys, time, statistics
import RNS
import LXMF.LXStamper as S
RNS.loglevel = RNS.LOG_CRITICAL
count, cost = int(sys.argv[1]), int(sys.argv[2])
mint, check = [], []
for _ in range(count):
    message_id = os.urandom(32)
    t = time.perf_counter()
    stamp, value = S.generate_stamp(message_id, cost)
    mint.append(time.perf_counter() - t)
    t = time.perf_counter()
    ok = S.stamp_valid(stamp, cost, S.stamp_workblock(message_id))
    check.append(time.perf_counter() - t)
    assert ok and value >= cost
print(json.dumps({"mint": mint, "check": check}))
"""


def envelope(seed: int) -> bytes:
    """A sealed-envelope-shaped byte string (the smallest padding bucket), different for each seed."""
    rnd = os.urandom
    return encode_fields(
        kind=EnvelopeKind.SEALED,
        inbox_tag=seed.to_bytes(16, "big"),
        expiry=1_800_000_000,
        ephemeral_key=rnd(32),
        nonce=rnd(24),
        ciphertext=rnd(256 + 16),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def ours(count: int, cost: int) -> tuple[list[float], float]:
    """Seconds per stamp, and microseconds per check."""
    times = []
    stamped = b""
    for seed in range(count):
        data = envelope(seed)
        start = time.perf_counter()
        stamped = stamp_envelope(data, cost)
        times.append(time.perf_counter() - start)
    decoded = decode_envelope(stamped)
    checks = 20_000
    start = time.perf_counter()
    for _ in range(checks):
        envelope_stamp_bits(decoded)
    verify_us = (time.perf_counter() - start) / checks * 1e6
    assert envelope_stamp_bits(decoded) >= cost
    return times, verify_us


async def worst_stall(mint: Callable[[], object], *, threaded: bool) -> float:
    """The longest a 1 ms ticker on the trio loop waited beyond its tick while ``mint`` ran, seconds."""
    worst = 0.0
    done = trio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            before = trio.current_time()
            await trio.sleep(0.001)
            worst = max(worst, trio.current_time() - before - 0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.01)
        if threaded:
            await trio.to_thread.run_sync(mint)
        else:
            mint()
        await trio.sleep(0.01)
        done.set()
    return worst


def stalls(count: int, cost: int) -> tuple[float, float]:
    """The worst loop stall over ``count`` mints on the loop, and over ``count`` in a thread."""
    on_loop, in_thread = 0.0, 0.0
    for seed in range(count):
        mint = functools.partial(stamp_envelope, envelope(1000 + seed), cost)
        on_loop = max(on_loop, trio.run(functools.partial(worst_stall, mint, threaded=False)))
        in_thread = max(in_thread, trio.run(functools.partial(worst_stall, mint, threaded=True)))
    return on_loop, in_thread


def lxmf(python: Path, count: int) -> tuple[list[float], list[float]] | None:
    """LXMF's mint and check seconds, or None when its venv is missing or the run failed."""
    if not python.exists():
        print(f"LXMF: not measured ({python} does not exist; see the module docstring)")
        return None
    try:
        done = subprocess.run(
            [str(python), "-c", _LXMF_SCRIPT, str(count), str(LXMF_COST)],
            capture_output=True,
            text=True,
            timeout=LXMF_TIMEOUT,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"LXMF: not measured ({type(exc).__name__}: {exc})")
        return None
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures["mint"], figures["check"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=25, help="meshchat stamps to mint (>= 20 for the median)"
    )
    parser.add_argument("--cost", type=int, default=DEFAULT_STAMP_COST, help="meshchat stamp cost, bits")
    parser.add_argument("--stall-count", type=int, default=5, help="stamps minted per loop-stall case")
    parser.add_argument("--lxmf-count", type=int, default=5, help="LXMF stamps to mint")
    parser.add_argument("--lxmf-python", type=Path, default=Path("/tmp/lxmfvenv/bin/python"))
    args = parser.parse_args()

    times, verify_us = ours(args.count, args.cost)
    median = statistics.median(times)
    mean = statistics.fmean(times)
    rate = 2**args.cost / mean if mean else 0.0
    print(f"meshchat stamps: {args.count} at cost {args.cost} bits (one core)")
    print(
        f"  mint median {median:.3f} s  mean {mean:.3f} s  p90 {percentile(times, 0.9):.3f} s  "
        f"max {max(times):.3f} s  (~{rate / 1e6:.2f} M hashes/s)"
    )
    print(f"  check {verify_us:.1f} us per envelope (re-encode without the stamp + 2 SHA-256)")
    on_loop, in_thread = stalls(args.stall_count, args.cost)
    print(
        f"  worst trio-loop stall over {args.stall_count} mints: {on_loop * 1e3:.0f} ms minted on the loop, "
        f"{in_thread * 1e3:.0f} ms minted in a worker thread (Node.send)"
    )
    lxmf_median = math.nan
    measured = lxmf(args.lxmf_python, args.lxmf_count)
    if measured is not None:
        mint, check = measured
        lxmf_median = statistics.median(mint)
        print(f"LXMF stamps: {len(mint)} at cost {LXMF_COST} (generate_stamp, its workers on every core)")
        print(
            f"  mint median {lxmf_median:.3f} s  mean {statistics.fmean(mint):.3f} s  "
            f"check median {statistics.median(check) * 1e3:.1f} ms (workblock + stamp_valid)"
        )
        print(
            f"  ratio: ours/LXMF mint {median / lxmf_median:.2f}, "
            f"LXMF/ours check {statistics.median(check) * 1e6 / verify_us:,.0f}x"
        )
    sys.stdout.flush()
    print(f"stamp_s={median:.3f} stamp_verify_us={verify_us:.1f} lxmf_stamp_s={lxmf_median:.3f}")


if __name__ == "__main__":
    main()
