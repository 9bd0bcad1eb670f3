"""Mutation: every altered sealed envelope is rejected with a MeshchatError, never accepted, never a crash.

The issue asks for exhaustive single-bit flips on a small envelope, every truncation, extensions, and
random multi-byte mutations. A mutated envelope must raise a ``MeshchatError`` subclass (which one
depends on where the change lands) or, only if the bytes did not actually change, open to the original.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.crypto import open_envelope, seal
from meshchat.errors import DecodeError, MeshchatError
from meshchat.identity import Identity, KeyCache
from meshchat.wire import decode_envelope, encode_envelope

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))
NOW = 1_800_000_000.0
ENVELOPE = seal(ALICE, BOB.public, b"hello", wall_now=NOW)
CACHE = KeyCache()


def rejection(data: bytes) -> str:
    """The error class name opening ``data`` raises; fails the test if it opens or raises otherwise."""
    try:
        open_envelope(BOB, data, wall_now=NOW, key_cache=CACHE)
    except MeshchatError as exc:
        return type(exc).__name__
    raise AssertionError(f"a mutated envelope was accepted: {data.hex()}")


def test_the_original_opens() -> None:
    assert open_envelope(BOB, ENVELOPE, wall_now=NOW).body == b"hello"
    assert len(ENVELOPE) < 400  # small enough for the exhaustive sweep below


def test_every_single_bit_flip_is_rejected() -> None:
    seen: Counter[str] = Counter()
    for bit in range(len(ENVELOPE) * 8):
        mutated = bytearray(ENVELOPE)
        mutated[bit // 8] ^= 1 << (bit % 8)
        seen[rejection(bytes(mutated))] += 1
    assert sum(seen.values()) == len(ENVELOPE) * 8
    # Flips in the ciphertext and the authenticated header fail decryption; in the framing, decoding.
    assert seen["DecryptionFailed"] > len(ENVELOPE) * 6
    assert seen["DecodeError"] > 0
    assert seen["UnsupportedVersion"] == 8  # the version byte


def test_every_truncation_is_rejected() -> None:
    for length in range(len(ENVELOPE)):
        rejection(ENVELOPE[:length])


@settings(max_examples=200)
@given(extra=st.binary(min_size=1, max_size=64))
def test_every_extension_is_rejected(extra: bytes) -> None:
    rejection(ENVELOPE + extra)
    rejection(extra + ENVELOPE)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(ENVELOPE)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(["overwrite", "insert", "delete"])):
            case "overwrite":
                chunk = draw(st.binary(min_size=1, max_size=8))
                data[where : where + len(chunk)] = chunk
            case "insert":
                data[where:where] = draw(st.binary(min_size=1, max_size=8))
            case _:
                del data[where : where + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=400)
@given(mutated=mutations())
def test_random_mutations_are_rejected_unless_nothing_changed(mutated: bytes) -> None:
    if mutated == ENVELOPE:
        assert open_envelope(BOB, mutated, wall_now=NOW).body == b"hello"
    else:
        rejection(mutated)


def test_every_bit_flip_decodes_canonically_or_is_a_decode_error() -> None:
    for bit in range(len(ENVELOPE) * 8):
        mutated = bytearray(ENVELOPE)
        mutated[bit // 8] ^= 1 << (bit % 8)
        try:
            envelope = decode_envelope(bytes(mutated))
        except DecodeError:
            continue
        assert encode_envelope(envelope) == bytes(mutated)  # one envelope, one byte form
