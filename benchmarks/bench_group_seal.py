"""Sender cost of one group message against one sealed 1:1 message, in the same run.

Run: python benchmarks/bench_group_seal.py [--rounds R] [--n N]

For a 100-byte body, times ``meshchat.groups.seal.seal_group`` (one Ed25519 signature, a few BLAKE2b
calls, one XChaCha20-Poly1305: nothing per member, so the group's size does not enter) and
``meshchat.crypto.seal`` (the same plus two X25519 operations). The cases alternate round by round
(the order rotates) and each side's best round counts, as the machine is shared and noisy. The last
line reads ``group_seal_ratio=<x> seal_us=<a> group_seal_us=<b>``; the issue's target is a ratio of at
most 1.5. ``measure_seal_ratio`` is the function ``bench_group.py`` imports.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable

from meshchat.crypto import seal
from meshchat.groups.chains import SenderChain
from meshchat.groups.seal import seal_group
from meshchat.identity import Identity

BODY = bytes(range(100))
NOW = 1_800_000_000.5
GROUP_ID = hashlib.blake2b(b"benchmark group", digest_size=32).digest()


def _best_per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def measure_seal_ratio(rounds: int = 5, n: int = 2000) -> dict[str, float]:
    """Best per-message cost (microseconds) of ``seal`` and ``seal_group`` over ``rounds`` rounds of ``n``.

    Returns ``{"seal_us": a, "group_seal_us": b, "ratio": b / a}``.
    """
    if rounds < 1 or n < 1:
        raise ValueError("rounds and n must be at least 1")
    alice, bob = Identity(bytes([0xA1]) * 32), Identity(bytes([0xB0]) * 32)
    chain = SenderChain.new(lambda size: bytes(range(size)), wall_now=NOW)

    def one_seal() -> object:
        return seal(alice, bob.public, BODY, wall_now=NOW)

    def one_group_seal() -> object:
        return seal_group(chain, group_id=GROUP_ID, body=BODY, wall_now=NOW)

    cases: dict[str, Callable[[], object]] = {"seal_us": one_seal, "group_seal_us": one_group_seal}
    best = {name: float("inf") for name in cases}
    for fn in cases.values():
        _best_per_call_us(fn, max(1, n // 10))  # warm up
    names = list(cases)
    for round_number in range(rounds):
        rotation = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in rotation:
            best[name] = min(best[name], _best_per_call_us(cases[name], n))
    return {**best, "ratio": best["group_seal_us"] / best["seal_us"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case (default 5)")
    parser.add_argument("--n", type=int, default=2000, help="messages per round (default 2000)")
    args = parser.parse_args()
    figures = measure_seal_ratio(args.rounds, args.n)
    print(f"body: {len(BODY)} bytes, best of {args.rounds} rounds of {args.n} messages")
    print(f"1:1 seal (crypto.seal):   {figures['seal_us']:8.1f} us per message")
    print(f"group seal (seal_group):  {figures['group_seal_us']:8.1f} us per message (any group size)")
    print(f"ratio group/1:1:          {figures['ratio']:8.2f} (target <= 1.5)")
    print(
        f"group_seal_ratio={figures['ratio']:.2f} seal_us={figures['seal_us']:.1f} "
        f"group_seal_us={figures['group_seal_us']:.1f}"
    )


if __name__ == "__main__":
    main()
