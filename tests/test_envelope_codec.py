"""Envelope wire format and the strict msgpack codec: round trips, limits, and every kind of bad input."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.errors import DecodeError, MeshchatError, TooLarge, UnsupportedVersion
from meshchat.wire import (
    ENVELOPE_VERSION,
    MAX_ENVELOPE_SIZE,
    Envelope,
    EnvelopeKind,
    decode_envelope,
    encode_envelope,
    message_id,
)
from meshchat.wire.codec import pack, unpack_canonical


def fields(**changes: object) -> dict[int, object]:
    base: dict[int, object] = {
        1: 1,
        2: bytes(16),
        3: 1_800_000_000,
        4: bytes(range(32)),
        5: bytes(24),
        6: bytes(40),
    }
    for key, value in changes.items():
        index = int(key.removeprefix("k"))
        if value is _MISSING:
            del base[index]
        else:
            base[index] = value
    return base


_MISSING = object()


def raw(fields_: dict[int, object], *, version: int = ENVELOPE_VERSION) -> bytes:
    return bytes([version]) + msgpack.packb(fields_, use_bin_type=True)


envelopes = st.builds(
    Envelope,
    kind=st.just(EnvelopeKind.SEALED),
    inbox_tag=st.binary(min_size=16, max_size=16),
    expiry=st.integers(0, 2**32 - 1),
    ephemeral_key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=24, max_size=24),
    ciphertext=st.binary(min_size=16, max_size=3000),
)


@settings(max_examples=200)
@given(envelope=envelopes)
def test_round_trip(envelope: Envelope) -> None:
    data = encode_envelope(envelope)
    assert decode_envelope(data) == envelope
    assert message_id(data) == hashlib.blake2b(data, digest_size=32).digest()


def test_message_ids_differ_for_different_envelopes() -> None:
    a, b = raw(fields()), raw(fields(k3=1_800_000_001))
    assert decode_envelope(a) != decode_envelope(b)
    assert message_id(a) != message_id(b)


def test_too_large_is_refused_before_parsing() -> None:
    garbage = b"\xc1" * (MAX_ENVELOPE_SIZE + 1)  # 0xc1 is never valid msgpack
    with pytest.raises(TooLarge) as caught:
        decode_envelope(garbage)
    assert str(caught.value) == "envelope is 65,537 bytes; the limit is 65,536"
    assert (caught.value.size, caught.value.limit) == (65_537, 65_536)


def test_encode_refuses_an_oversized_envelope() -> None:
    envelope = Envelope(
        kind=EnvelopeKind.SEALED,
        inbox_tag=bytes(16),
        expiry=0,
        ephemeral_key=bytes(32),
        nonce=bytes(24),
        ciphertext=bytes(MAX_ENVELOPE_SIZE),
    )
    with pytest.raises(TooLarge):
        encode_envelope(envelope)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_versions(version: int) -> None:
    with pytest.raises(UnsupportedVersion) as caught:
        decode_envelope(raw(fields(), version=version))
    assert caught.value.version == version
    assert "reads version 1" in str(caught.value)


BAD = {
    "empty": b"",
    "version only": bytes([ENVELOPE_VERSION]),
    "trailing bytes": raw(fields()) + b"\x00",
    "missing field": raw(fields(k6=_MISSING)),
    "extra field": raw({**fields(), 7: 0}),
    "not a map": bytes([ENVELOPE_VERSION]) + msgpack.packb([1, 2, 3]),
    "tag is int": raw(fields(k2=5)),
    "tag is str": raw(fields(k2="x" * 16)),
    "tag too short": raw(fields(k2=bytes(15))),
    "nonce too long": raw(fields(k5=bytes(25))),
    "ephemeral too short": raw(fields(k4=bytes(31))),
    "expiry negative": raw(fields(k3=-1)),
    "expiry over 32 bits": raw(fields(k3=2**32)),
    "expiry float": raw(fields(k3=1.5)),
    "kind bool": raw(fields(k1=True)),
    "kind unknown": raw(fields(k1=9)),
    "ciphertext shorter than a tag": raw(fields(k6=bytes(15))),
    "ciphertext str": raw(fields(k6="x" * 40)),
    "kind as uint8 (non-canonical)": raw(fields()).replace(b"\x01\x01", b"\x01\xcc\x01", 1),
    "keys out of order": bytes([ENVELOPE_VERSION]) + msgpack.packb(dict(reversed(list(fields().items())))),
    "ext type": bytes([ENVELOPE_VERSION]) + b"\xd4\x01\x00",
    "deep nesting": bytes([ENVELOPE_VERSION]) + b"\x91" * 5000 + b"\x00",
    "invalid utf-8 str": bytes([ENVELOPE_VERSION]) + b"\x81\x01\xa2\xff\xfe",
}


@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_malformed_envelopes_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_envelope(data)


def test_the_constructor_refuses_invalid_fields() -> None:
    good = {
        "kind": EnvelopeKind.SEALED,
        "inbox_tag": bytes(16),
        "expiry": 1,
        "ephemeral_key": bytes(32),
        "nonce": bytes(24),
        "ciphertext": bytes(16),
    }
    Envelope(**good)  # type: ignore[arg-type]
    for name, bad in [
        ("kind", 1),
        ("inbox_tag", bytes(3)),
        ("expiry", -5),
        ("nonce", "n" * 24),
        ("ciphertext", b""),
    ]:
        with pytest.raises(DecodeError):
            Envelope(**{**good, name: bad})  # type: ignore[arg-type]


# --- the codec ------------------------------------------------------------------------------------

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5).map(tuple) | st.dictionaries(st.integers(0, 100), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(value=values)
def test_canonical_round_trip(value: object) -> None:
    assert unpack_canonical(pack(value), what="test", limit=10_000) == value


@settings(max_examples=500)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_a_decode_error(data: bytes) -> None:
    try:
        value = unpack_canonical(data, what="test", limit=150)
    except DecodeError:
        return
    assert pack(value) == data  # whatever is accepted is the one canonical encoding


@settings(max_examples=500)
@given(data=st.binary(max_size=400))
def test_arbitrary_envelope_bytes_never_raise_anything_else(data: bytes) -> None:
    for candidate in (data, bytes([ENVELOPE_VERSION]) + data):
        try:
            envelope = decode_envelope(candidate)
        except MeshchatError:
            continue
        assert encode_envelope(envelope) == candidate
