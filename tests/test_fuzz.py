"""The fuzz harness (``scripts/fuzz.py``) in CI: a short run per decoder, zero findings, zero forgeries.

The full run is ``python scripts/fuzz.py`` (10^6 inputs per decoder). Here each decoder gets
``CI_COUNT`` inputs from a fixed mutator seed, so a failure reproduces exactly; the harness itself is
checked too (an untyped exception is a finding, an accepted change of signed content a forgery).
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from meshchat.errors import DecodeError
from meshchat.wire import PAD_BUCKETS


def _load(name: str) -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fuzz = _load("fuzz")
targets_module = sys.modules["fuzz_targets"]
TARGETS = fuzz.build_targets()
#: Inputs per decoder in CI (the whole file stays under a minute on a loaded 2-core machine).
CI_COUNT = 3000
#: The mutator seed of the CI run.
CI_SEED = 18


def _explain(result: object) -> str:
    lines: list[str] = []
    fuzz.report(result, out=lines.append)
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_decoder_refuses_mutated_input_with_typed_errors_and_accepts_no_forgery(name: str) -> None:
    result = fuzz.fuzz_target(TARGETS[name], CI_COUNT, CI_SEED)
    assert result.inputs == CI_COUNT
    assert result.finding_count == 0, _explain(result)
    assert result.forgery_count == 0, _explain(result)
    assert result.refused > 0  # the mutations reach the decoder's checks


def test_every_seed_is_a_valid_encoding_the_decoder_accepts() -> None:
    for target in TARGETS.values():
        for seed in target.seeds:
            target.check(seed)  # raises if a seed is not a real encoding


def test_the_mutator_is_deterministic_and_makes_varied_inputs() -> None:
    seeds = (bytes(range(40)), b"\x82\x01\xc4\x03abc")
    first = fuzz.Mutator(seeds, random.Random(5))
    second = fuzz.Mutator(seeds, random.Random(5))
    a = [first.mutate() for _ in range(500)]
    assert a == [second.mutate() for _ in range(500)]
    assert len(set(a)) > 400 and not set(a) & set(seeds)
    assert any(len(x) < 40 for x in a) and any(len(x) > 40 for x in a)


def _fake(check: object, *, signed: bool = False) -> object:
    target = targets_module.Target("fake", "a test double", (b"\x01\x02\x03\x04" * 4,), check, signed)
    return targets_module.Target(
        target.name, target.about, target.seeds, target.check, signed, target.typed, frozenset({b"ok"})
    )


def test_an_untyped_exception_is_a_finding_with_a_reproducer() -> None:
    def brittle(data: bytes) -> object:
        if len(data) < 16:
            return data[20]  # IndexError: a decoder bug
        raise DecodeError("fake", "refused")

    result = fuzz.fuzz_target(_fake(brittle), 300, 1)
    assert result.finding_count > 0 and result.refused > 0
    assert ("IndexError", "test_fuzz.py:" + str(brittle.__code__.co_firstlineno + 2)) in result.findings
    assert "FINDING fake IndexError" in _explain(result)


def test_an_accepted_change_of_signed_content_is_a_forgery() -> None:
    result = fuzz.fuzz_target(_fake(lambda data: data, signed=True), 200, 1)
    assert result.malleable == 0 and result.forgery_count > 150  # all but the no-op mutations
    assert "FORGERY fake" in _explain(result)


def test_the_script_prints_per_decoder_counts_and_a_last_key_value_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert fuzz.main(["--count", "200", "--only", "payload,invite"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("payload ") and "rate=" in lines[0] and "forgeries=0" in lines[0]
    assert lines[-1] == "fuzz_inputs=400 fuzz_findings=0 fuzz_forgeries=0"


def test_an_envelope_padded_past_its_smallest_bucket_is_refused() -> None:
    """Found by the fuzzer (``envelope_open`` accepted it as 'malleable'): the same sealed message
    re-padded to the next bucket opened with the same content under another id."""
    seed = TARGETS["envelope_open"].seeds[1]
    layer = TARGETS["envelope_open"].layers[0]
    opened = layer(seed, random.Random(0))
    assert opened is not None
    plaintext, rebuild = opened
    assert TARGETS["envelope_open"].check(rebuild(plaintext))  # the unchanged plaintext still opens
    with pytest.raises(DecodeError, match="bad padding"):
        TARGETS["envelope_open"].check(rebuild(plaintext + bytes(PAD_BUCKETS[1] - len(plaintext))))


def test_a_session_set_up_with_the_ephemeral_keys_top_bit_flipped_is_refused() -> None:
    """Found by the fuzzer (``session_message`` accepted it as 'malleable'): X25519 ignores the top
    bit, so the same set-up opened under a second ephemeral key, past the replay check."""
    seed = TARGETS["session_message"].seeds[2]  # identity-only set-up: kind, size, header, message
    size = int.from_bytes(seed[1:3], "big")
    header = targets_module.InitHeader.decode(seed[3 : 3 + size])
    at = 3 + seed[3 : 3 + size].index(header.ephemeral) + 31
    flipped = seed[:at] + bytes([seed[at] ^ 0x80]) + seed[at + 1 :]
    assert TARGETS["session_message"].check(seed) == b"no bundle"
    with pytest.raises(DecodeError, match="top bit"):
        TARGETS["session_message"].check(flipped)
