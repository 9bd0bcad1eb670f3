"""Fuzz every meshchat decoder of bytes or text that a peer (or a pasted token) can hand us.

Usage: ``python scripts/fuzz.py [--count N] [--only NAME[,NAME...]] [--seed S] [--list]``.

For each decoder (the targets in ``scripts/fuzz_targets.py``) a seed corpus of valid encodings is made
by the real encoders, then ``--count`` inputs (default 10^6) are derived from it by a seeded mutator:
bit flips, bytes replaced by interesting values, truncations, insertions, duplicated spans, splices of
two seeds, and edits of length-like fields (varint / msgpack / big-endian prefixes), one to four per
input. Each input goes through the decoder (and, for signed or authenticated objects, through the
verification a receiver does). Two things are counted:

- a *finding*: any exception that is not a typed error (a ``meshchat.errors.MeshchatError``, or the
  one typed refusal a target names, e.g. JSON-RPC's ``_Refused``). A reproducer is printed: the target
  name and the input in hex (``--replay NAME HEX`` runs it again under a traceback);
- a *forgery*: for signed/authenticated targets, a mutated input that decodes AND verifies and whose
  verified content (what a receiver would act on: sender, body, claims...) differs from every seed's.
  Inputs that verify with the *same* content in other bytes are counted apart as ``malleable``
  (not forgeries: nothing unsigned gets through; they matter where bytes are ids).

Why a hand-written mutator here, with atheris beside it: atheris 3.0.0 installs cleanly on Python
3.11 (a throwaway venv; it runs meshchat with ``PYTHONPATH`` naming the worktree and meshchat's
site-packages) and ``scripts/fuzz_atheris.py NAME`` runs any target below under it, coverage-guided.
But atheris is not a meshchat dependency (CI would need it), libFuzzer stops at the first failure
(here every finding is counted and grouped) and cannot be held to one deterministic input set for CI.
This mutator is deterministic for a given ``--seed``, so a CI failure reproduces exactly.

Accepted inputs in other bytes with the seed's verified content ("malleable") seen so far, none of them
a forgery: RPCs (their unsigned parts: control, subscriptions, unsigned messages); invites and link
requests (lower case and white space are accepted by design); prekey bundles (one-time prekeys are
unsigned by design, X3DH); co-signing bundles (a subset of the separately signed items, unknown
members ignored); credentials with disclosures left out (selective disclosure, by design); detached
document signatures with white space around them (stripped, by design). Two were not by design and
are refused now: sealed envelopes re-padded to a larger bucket, and X3DH set-ups whose ephemeral key
had X25519's unused top bit flipped (which also slipped past the replay check).

The last line is ``fuzz_inputs=… fuzz_findings=… fuzz_forgeries=…``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzz_targets import Layer, Target, build_targets

#: Default inputs per decoder: the issue's 10^6.
DEFAULT_COUNT = 1_000_000
#: Most mutations stacked on one input.
MAX_STACKED = 4
#: Longest input the mutator makes: past every decoder's size limit (they must refuse it, typed).
MAX_INPUT = 1 << 17
#: Reproducers printed per target (the rest are only counted, grouped by exception type and place).
MAX_REPORTED = 5

#: Values that break parsers: zero, one, sign edges, msgpack type markers, protobuf/varint edges.
INTERESTING_BYTES = (
    0x00, 0x01, 0x02, 0x07, 0x08, 0x0A, 0x10, 0x1F, 0x20, 0x2E, 0x3F, 0x40, 0x7E, 0x7F, 0x80, 0x81,
    0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xCA, 0xCB, 0xCC,
    0xCD, 0xCE, 0xCF, 0xD0, 0xD3, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xFE, 0xFF,
)  # fmt: skip
#: Multi-byte values for length-field edits (big-endian widths 2, 4, 8 and varints).
INTERESTING_LENGTHS = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Mutator:
    """Derives inputs from a seed corpus with a seeded ``random.Random`` (deterministic).

    With ``layers`` (a target's inner encodings: base32 inside a token, base64url JSON inside a JWS),
    half the inputs are made by mutating the inner bytes of a seed and wrapping them again, so the
    parser behind the outer encoding sees broken structure, not only broken base32."""

    def __init__(self, seeds: Sequence[bytes], rng: random.Random, layers: Sequence[Layer] = ()) -> None:
        self.seeds = [s for s in seeds if s] or [b"\x00"]
        self.rng = rng
        self.layers = tuple(layers)
        self._ops: tuple[Callable[[bytearray], bytearray], ...] = (
            self._flip_bit,
            self._flip_bit,
            self._replace_interesting,
            self._replace_random,
            self._truncate,
            self._insert,
            self._duplicate_span,
            self._delete_span,
            self._splice,
            self._edit_length,
            self._edit_length,
            self._swap_bytes,
        )

    def mutate(self) -> bytes:
        """One new input: a seed with one to ``MAX_STACKED`` mutations (never equal to nothing)."""
        rng = self.rng
        seed = rng.choice(self.seeds)
        if self.layers and rng.random() < 0.5:
            opened = rng.choice(self.layers)(seed, rng)
            if opened is not None:
                inner, rebuild = opened
                return rebuild(self._stack(bytearray(inner)))
        return self._stack(bytearray(seed))

    def _stack(self, data: bytearray) -> bytes:
        rng = self.rng
        for _ in range(rng.randint(1, MAX_STACKED)):
            data = rng.choice(self._ops)(data)
            if len(data) > MAX_INPUT:
                del data[MAX_INPUT:]
        return bytes(data)

    def _pos(self, data: bytearray) -> int:
        return self.rng.randrange(len(data)) if data else 0

    def _flip_bit(self, data: bytearray) -> bytearray:
        if data:
            bit = self.rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
        return data

    def _replace_interesting(self, data: bytearray) -> bytearray:
        if data:
            data[self._pos(data)] = self.rng.choice(INTERESTING_BYTES)
        return data

    def _replace_random(self, data: bytearray) -> bytearray:
        if data:
            data[self._pos(data)] = self.rng.randrange(256)
        return data

    def _swap_bytes(self, data: bytearray) -> bytearray:
        if len(data) > 1:
            i, j = self._pos(data), self._pos(data)
            data[i], data[j] = data[j], data[i]
        return data

    def _truncate(self, data: bytearray) -> bytearray:
        rng = self.rng
        cut = self._pos(data)
        return data[:cut] if rng.random() < 0.7 else data[cut:]

    def _insert(self, data: bytearray) -> bytearray:
        rng = self.rng
        size = rng.choice((1, 1, 2, 4, 8, 32, 256))
        blob = rng.randbytes(size) if rng.random() < 0.5 else bytes([rng.choice(INTERESTING_BYTES)]) * size
        at = rng.randint(0, len(data))
        data[at:at] = blob
        return data

    def _duplicate_span(self, data: bytearray) -> bytearray:
        if not data:
            return data
        rng = self.rng
        start = self._pos(data)
        end = min(len(data), start + rng.randint(1, 64))
        span = data[start:end] * rng.choice((1, 1, 2, 16))
        at = rng.randint(0, len(data))
        data[at:at] = span
        return data

    def _delete_span(self, data: bytearray) -> bytearray:
        if data:
            start = self._pos(data)
            del data[start : start + self.rng.randint(1, 16)]
        return data

    def _splice(self, data: bytearray) -> bytearray:
        other = self.rng.choice(self.seeds)
        return data[: self._pos(data)] + other[self.rng.randrange(len(other)) :]

    def _edit_length(self, data: bytearray) -> bytearray:
        """Rewrite a byte or a width-2/4/8 big-endian number, or put a varint there: lengths and counts
        are where parsers over-read or over-allocate."""
        if not data:
            return data
        rng = self.rng
        at = self._pos(data)
        choice = rng.randrange(4)
        if choice == 0:  # nudge one byte (a short length: msgpack fixstr/fixarray/fixmap, protobuf len)
            data[at] = (data[at] + rng.choice((-2, -1, 1, 2, 16, 64))) % 256
        elif choice == 1:  # a big-endian length of width 2, 4 or 8
            width = rng.choice((2, 4, 8))
            value = rng.choice(INTERESTING_LENGTHS) % (1 << (8 * width))
            data[at : at + width] = value.to_bytes(width, "big")
        elif choice == 2:  # a varint (protobuf, multiformats)
            data[at : at + 1] = _varint(rng.choice((*INTERESTING_LENGTHS, 1 << 63, (1 << 64) - 1)))
        else:  # a msgpack bin/str/array/map header with a hostile length
            marker = rng.choice((0xC4, 0xC5, 0xC6, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF))
            width = {0xC4: 1, 0xD9: 1, 0xC5: 2, 0xDA: 2, 0xDC: 2, 0xDE: 2}.get(marker, 4)
            value = rng.choice(INTERESTING_LENGTHS) % (1 << (8 * width))
            data[at : at + 1 + width] = bytes((marker,)) + value.to_bytes(width, "big")
        return data


@dataclass(slots=True)
class Result:
    """What fuzzing one target found."""

    name: str
    inputs: int = 0
    #: Inputs refused with a typed error.
    refused: int = 0
    #: Inputs accepted (decoded, and verified where the target verifies).
    accepted: int = 0
    #: Accepted with the same verified content as a seed but other bytes (signed targets).
    malleable: int = 0
    #: The first few malleable inputs (reported, so each can be explained).
    malleable_samples: list[bytes] = field(default_factory=list)
    #: Untyped exceptions, grouped by (type, file:line of the raise) -> (count, first input).
    findings: dict[tuple[str, str], tuple[int, bytes]] = field(default_factory=dict)
    #: Forged inputs (accepted with content no seed had), the first few kept.
    forgeries: list[bytes] = field(default_factory=list)
    forgery_count: int = 0
    seconds: float = 0.0

    @property
    def finding_count(self) -> int:
        return sum(count for count, _ in self.findings.values())


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return f"{os.path.basename(last.filename)}:{last.lineno}" if last else "?"


def run_one(target: Target, data: bytes) -> object:
    """The target's verdict on ``data``: its verified content, or raises (typed or not)."""
    return target.check(data)


def fuzz_target(target: Target, count: int, seed: int) -> Result:
    """Run ``count`` mutated inputs through ``target``; return the counts (never raises for findings)."""
    rng = random.Random(f"{seed}:{target.name}")
    mutator = Mutator(target.seeds, rng, target.layers)
    seeds = set(target.seeds)
    result = Result(name=target.name)
    typed = target.typed
    allowed_items: frozenset[object] = (
        frozenset().union(*target.seed_contents) if target.items else frozenset()  # type: ignore[arg-type]
    )
    started = time.perf_counter()
    for _ in range(count):
        data = mutator.mutate()
        result.inputs += 1
        try:
            content = target.check(data)
        except typed:
            result.refused += 1
            continue
        except Exception as exc:  # the point: every untyped exception is a finding
            _record(result, exc, data)
            continue
        result.accepted += 1
        if target.signed and data not in seeds:
            if content in target.seed_contents or (target.items and content <= allowed_items):  # type: ignore[operator]
                result.malleable += 1
                if len(result.malleable_samples) < MAX_REPORTED:
                    result.malleable_samples.append(data)
            else:
                result.forgery_count += 1
                if len(result.forgeries) < MAX_REPORTED:
                    result.forgeries.append(data)
    result.seconds = time.perf_counter() - started
    return result


def _record(result: Result, exc: BaseException, data: bytes) -> None:
    key = (type(exc).__name__, _where(exc))
    count, first = result.findings.get(key, (0, data))
    result.findings[key] = (count + 1, first)


def report(result: Result, out: Callable[[str], None] = print, *, verbose: bool = False) -> None:
    """Print one target's line and its reproducers."""
    rate = result.inputs / result.seconds if result.seconds else 0.0
    out(
        f"{result.name:24} inputs={result.inputs:>9,} rate={rate:>9,.0f}/s refused={result.refused:,} "
        f"accepted={result.accepted:,} malleable={result.malleable:,} "
        f"findings={result.finding_count} forgeries={result.forgery_count}"
    )
    for (kind, where), (count, data) in list(result.findings.items())[:MAX_REPORTED]:
        out(f"  FINDING {result.name} {kind} at {where} x{count}: --replay {result.name} {data.hex()}")
    for data in result.forgeries:
        out(f"  FORGERY {result.name}: --replay {result.name} {data.hex()}")
    if verbose:
        for data in result.malleable_samples:
            out(f"  MALLEABLE {result.name}: --replay {result.name} {data.hex()}")


def replay(targets: dict[str, Target], name: str, hex_input: str) -> None:
    """Run one input through one target with the traceback shown."""
    content = targets[name].check(bytes.fromhex(hex_input))
    print(f"accepted: {content!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="inputs per decoder")
    parser.add_argument("--only", default="", help="comma-separated target names")
    parser.add_argument("--seed", type=int, default=1, help="mutator seed")
    parser.add_argument("--list", action="store_true", help="list targets and exit")
    parser.add_argument("--verbose", action="store_true", help="also print malleable inputs")
    parser.add_argument("--replay", nargs=2, metavar=("NAME", "HEX"), help="run one input with a traceback")
    args = parser.parse_args(argv)
    targets = build_targets()
    if args.list:
        for target in targets.values():
            print(f"{target.name:24} seeds={len(target.seeds)} signed={target.signed}  {target.about}")
        return 0
    if args.replay:
        replay(targets, *args.replay)
        return 0
    names = [n for n in args.only.split(",") if n] or list(targets)
    unknown = [n for n in names if n not in targets]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}; --list shows them")
    total = findings = forgeries = 0
    for name in names:
        result = fuzz_target(targets[name], args.count, args.seed)
        report(result, verbose=args.verbose)
        sys.stdout.flush()
        total += result.inputs
        findings += result.finding_count
        forgeries += result.forgery_count
    print(f"fuzz_inputs={total} fuzz_findings={findings} fuzz_forgeries={forgeries}")
    return 1 if findings or forgeries else 0


if __name__ == "__main__":
    sys.exit(main())
