"""Goodput under issue 17's 16 KB cut, against plain TCP in the same run (``reach_censor.py`` and
``bench_reach.py`` import it).

Run: python benchmarks/reach_cut16k.py [--messages N] [--size BYTES] [--reset]

Two nodes on 127.0.0.1 with ``DEFAULT_KEEPER``; Alice sends Bob ``messages`` direct messages of
``size`` bytes one after the other, each awaited at Bob: once to Bob's own address, once through
``tests/censor_proxy.py`` cutting every connection after 16 KB (silently stalled, or reset with
``reset``); the stalled connection is noticed by the keepalive, the reset one at once, and Alice
dials again through the censor; the outbox resends what a cut lost. The measurement is
``benchmarks/bench_keeper.py``'s ``send_all`` (one implementation for both). Last line:
``cut16k_ratio=… cut16k_s=… plain_s=… cuts=…``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_keeper import CUT_BYTES, send_all

#: Messages and their size unless told otherwise: 12 KB of bodies, more than a connection carries.
CUT16K_MESSAGES = 8
CUT16K_SIZE = 1500


async def measure_cut16k(
    messages: int = CUT16K_MESSAGES, size: int = CUT16K_SIZE, *, reset: bool = False
) -> tuple[float, float, int]:
    """Seconds to deliver plainly, seconds under the 16 KB cut, and the connections the censor cut."""
    with tempfile.TemporaryDirectory() as tmp:
        plain_s, _ = await send_all(Path(tmp) / "p", messages, size, budget=None, proxied=False)
    with tempfile.TemporaryDirectory() as tmp:
        cut_s, cuts = await send_all(
            Path(tmp) / "c", messages, size, budget=CUT_BYTES, proxied=True, reset=reset
        )
    return plain_s, cut_s, cuts


def cut16k_ratio(messages: int = CUT16K_MESSAGES, size: int = CUT16K_SIZE, *, reset: bool = False) -> float:
    """Goodput under the 16 KB cut divided by plain goodput, measured in this run (not from inside
    trio: ``measure_cut16k`` is the async form)."""
    plain_s, cut_s, _ = trio.run(lambda: measure_cut16k(messages, size, reset=reset))
    return plain_s / cut_s


async def _main(args: argparse.Namespace) -> None:
    plain_s, cut_s, cuts = await measure_cut16k(args.messages, args.size, reset=args.reset)
    how = "reset" if args.reset else "stalled"
    print(
        f"{args.messages} messages of {args.size} B: plain {plain_s:.1f} s, 16 KB cut ({how}) {cut_s:.1f} s"
    )
    print(f"cut16k_ratio={plain_s / cut_s:.3f} cut16k_s={cut_s:.2f} plain_s={plain_s:.2f} cuts={cuts}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=CUT16K_MESSAGES)
    parser.add_argument("--size", type=int, default=CUT16K_SIZE)
    parser.add_argument("--reset", action="store_true", help="the censor resets instead of stalling")
    trio.run(_main, parser.parse_args())
