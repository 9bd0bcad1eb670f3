"""The envelope wire format and the strict msgpack codec under it.

What is proven here: every valid envelope survives a round trip and has exactly one byte form; its id
is BLAKE2b-256 of those bytes; ``decode_envelope`` checks size before anything else, then the version,
then structure and types, and refuses every other shape with exactly the error class the design names
(``TooLarge``, ``UnsupportedVersion``, plain ``DecodeError``), never another exception; ``Envelope``'s
constructor makes an invalid envelope impossible; ``unpack_canonical`` either returns the one value a
byte string canonically encodes or raises ``DecodeError``.

Malformed inputs are written byte by byte (``_map``, ``_bin``…) rather than with ``msgpack.packb``
where the point is an encoding msgpack itself would never write (wider integer formats, ``str`` for
``bin``, keys out of order).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import meshchat
from meshchat.errors import DecodeError, MeshchatError, TooLarge, UnsupportedVersion
from meshchat.wire import (
    ENVELOPE_VERSION,
    INBOX_TAG_SIZE,
    MAX_ENVELOPE_SIZE,
    NONCE_SIZE,
    Envelope,
    EnvelopeKind,
    decode_envelope,
    encode_envelope,
    message_id,
)
from meshchat.wire.codec import MAX_CONTAINER_ITEMS, pack, unpack_canonical
from meshchat.wire.envelope import AEAD_TAG_SIZE, EPHEMERAL_KEY_SIZE, encode_fields

MAX_EXPIRY = 2**32 - 1

# --- hand-written msgpack -------------------------------------------------------------------------


def _bin(data: bytes) -> bytes:
    """msgpack ``bin`` in its shortest form (what ``packb`` writes for bytes)."""
    return msgpack.packb(data, use_bin_type=True)


def _map(items: list[tuple[bytes, bytes]]) -> bytes:
    """A fixmap of already-encoded (key, value) pairs, in the order given."""
    assert len(items) < 16
    return bytes([0x80 | len(items)]) + b"".join(key + value for key, value in items)


TAG = bytes(range(INBOX_TAG_SIZE))
EXPIRY = 1_800_000_000
EPHEMERAL = bytes(range(100, 100 + EPHEMERAL_KEY_SIZE))
NONCE = bytes(range(200, 200 + NONCE_SIZE))
CIPHERTEXT = bytes(range(40))
GOOD_FIELDS: dict[int, object] = {
    1: int(EnvelopeKind.SEALED),
    2: TAG,
    3: EXPIRY,
    4: EPHEMERAL,
    5: NONCE,
    6: CIPHERTEXT,
}


def _items(**encoded: bytes) -> list[tuple[bytes, bytes]]:
    """The good fields as encoded pairs; ``k3=b"..."`` replaces field 3's encoded value."""
    out = []
    for key, value in GOOD_FIELDS.items():
        out.append((msgpack.packb(key), encoded.get(f"k{key}", msgpack.packb(value, use_bin_type=True))))
    return out


def _envelope_bytes(items: list[tuple[bytes, bytes]], *, version: int = ENVELOPE_VERSION) -> bytes:
    return bytes([version]) + _map(items)


def _with(**values: object) -> bytes:
    """Envelope bytes with some fields' *values* replaced (encoded by msgpack; ``...`` drops the field)."""
    fields = dict(GOOD_FIELDS)
    for name, value in values.items():
        key = int(name.removeprefix("k"))
        if value is Ellipsis:
            del fields[key]
        else:
            fields[key] = value
    return bytes([ENVELOPE_VERSION]) + msgpack.packb(fields, use_bin_type=True)


GOOD = _envelope_bytes(_items())


def test_the_hand_written_envelope_is_valid() -> None:
    # Every malformed case below is a small change of this; it must itself be accepted, or the
    # DecodeErrors below would prove nothing.
    assert _with() == GOOD
    envelope = decode_envelope(GOOD)
    assert envelope.kind is EnvelopeKind.SEALED
    assert (envelope.inbox_tag, envelope.expiry, envelope.ephemeral_key) == (TAG, EXPIRY, EPHEMERAL)
    assert (envelope.nonce, envelope.ciphertext) == (NONCE, CIPHERTEXT)
    assert encode_envelope(envelope) == GOOD


# --- round trips and ids --------------------------------------------------------------------------

envelopes = st.builds(
    Envelope,
    kind=st.sampled_from(EnvelopeKind),
    inbox_tag=st.binary(min_size=INBOX_TAG_SIZE, max_size=INBOX_TAG_SIZE),
    expiry=st.integers(0, MAX_EXPIRY),
    ephemeral_key=st.binary(min_size=EPHEMERAL_KEY_SIZE, max_size=EPHEMERAL_KEY_SIZE),
    nonce=st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE),
    # 16..70_000 would mostly draw oversized envelopes; sizes across every msgpack bin width are
    # drawn here and the exact limit is tested on its own below.
    ciphertext=st.one_of(
        st.binary(min_size=AEAD_TAG_SIZE, max_size=300),
        st.integers(AEAD_TAG_SIZE, 60_000).map(lambda n: bytes([n % 251]) * n),
    ),
)


@settings(max_examples=300, deadline=None)
@given(envelope=envelopes)
def test_round_trip(envelope: Envelope) -> None:
    data = encode_envelope(envelope)
    assert data[0] == ENVELOPE_VERSION
    assert decode_envelope(data) == envelope
    assert encode_envelope(decode_envelope(data)) == data
    # The unchecked hot-path encoder writes the same bytes as the checked one.
    assert (
        encode_fields(
            kind=envelope.kind,
            inbox_tag=envelope.inbox_tag,
            expiry=envelope.expiry,
            ephemeral_key=envelope.ephemeral_key,
            nonce=envelope.nonce,
            ciphertext=envelope.ciphertext,
        )
        == data
    )


@settings(max_examples=200, deadline=None)
@given(envelope=envelopes)
def test_message_id_is_blake2b_256_of_the_bytes(envelope: Envelope) -> None:
    data = encode_envelope(envelope)
    assert message_id(data) == hashlib.blake2b(data, digest_size=32).digest()
    assert len(message_id(data)) == 32


@settings(max_examples=200, deadline=None)
@given(a=envelopes, b=envelopes)
def test_different_envelopes_have_different_ids(a: Envelope, b: Envelope) -> None:
    assume(a != b)
    assert encode_envelope(a) != encode_envelope(b)
    assert message_id(encode_envelope(a)) != message_id(encode_envelope(b))


def test_ids_differ_when_one_field_changes() -> None:
    ids = {
        message_id(data)
        for data in (
            GOOD,
            _with(k2=bytes(16)),
            _with(k3=1_800_000_001),
            _with(k4=bytes(32)),
            _with(k5=bytes(24)),
            _with(k6=bytes(40)),
        )
    }
    assert len(ids) == 6


def _envelope_of_size(size: int) -> Envelope:
    """A valid envelope whose encoding is exactly ``size`` bytes (the ciphertext takes up the slack)."""

    def make(ciphertext_size: int) -> Envelope:
        return Envelope(
            kind=EnvelopeKind.SEALED,
            inbox_tag=TAG,
            expiry=MAX_EXPIRY,
            ephemeral_key=EPHEMERAL,
            nonce=NONCE,
            ciphertext=bytes(ciphertext_size),
        )

    # Every ciphertext from 256 bytes to 64 KiB has the same 3-byte bin16 header, so the overhead
    # measured at 256 bytes holds up to the limit.
    overhead = len(encode_envelope(make(256))) - 256
    return make(size - overhead)


def test_the_size_limit_is_inclusive() -> None:
    largest = _envelope_of_size(MAX_ENVELOPE_SIZE)
    data = encode_envelope(largest)
    assert len(data) == MAX_ENVELOPE_SIZE
    assert decode_envelope(data) == largest
    too_big = _envelope_of_size(MAX_ENVELOPE_SIZE + 1)
    with pytest.raises(TooLarge) as caught:
        encode_envelope(too_big)
    assert (caught.value.size, caught.value.limit) == (MAX_ENVELOPE_SIZE + 1, MAX_ENVELOPE_SIZE)


# --- TooLarge: checked before parsing --------------------------------------------------------------


def test_too_large_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    garbage = b"\xc1" * (MAX_ENVELOPE_SIZE + 1)  # 0xc1 is never valid msgpack, and not version 1

    def no_parsing(*args: object, **kwargs: object) -> object:
        raise AssertionError("msgpack was asked to parse an oversized envelope")

    monkeypatch.setattr(msgpack, "unpackb", no_parsing)
    with pytest.raises(TooLarge) as caught:
        decode_envelope(garbage)
    assert type(caught.value) is TooLarge
    assert str(caught.value) == "envelope is 65,537 bytes; the limit is 65,536"
    assert (caught.value.size, caught.value.limit, caught.value.what) == (65_537, 65_536, "envelope")


OVERSIZED = {
    "wrong version too (size is checked first)": b"\x02" * (MAX_ENVELOPE_SIZE + 1),
    "a valid envelope of the limit plus a byte": encode_envelope(_envelope_of_size(MAX_ENVELOPE_SIZE))
    + b"\x00",
    "ten times the limit": bytes(10 * MAX_ENVELOPE_SIZE),
}


@pytest.mark.parametrize("data", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_anything_over_the_limit_is_too_large(data: bytes) -> None:
    with pytest.raises(TooLarge) as caught:
        decode_envelope(data)
    assert (caught.value.size, caught.value.limit) == (len(data), MAX_ENVELOPE_SIZE)
    assert str(caught.value) == f"envelope is {len(data):,} bytes; the limit is 65,536"


def test_garbage_at_exactly_the_limit_is_a_decode_error_not_too_large() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_envelope(b"\x01" + b"\xc1" * (MAX_ENVELOPE_SIZE - 1))
    assert type(caught.value) is DecodeError


# --- UnsupportedVersion ---------------------------------------------------------------------------


def test_every_other_version_byte_is_unsupported() -> None:
    for version in range(256):
        if version == ENVELOPE_VERSION:
            continue
        with pytest.raises(UnsupportedVersion) as caught:
            decode_envelope(bytes([version]) + GOOD[1:])
        assert (caught.value.version, caught.value.supported) == (version, (ENVELOPE_VERSION,))
        assert str(caught.value) == f"envelope has version {version}; this meshchat reads version 1"


def test_the_version_is_checked_before_the_structure() -> None:
    with pytest.raises(UnsupportedVersion):
        decode_envelope(b"\x02")
    with pytest.raises(UnsupportedVersion):
        decode_envelope(b"\x00\xc1\xc1")


# --- DecodeError: everything else ----------------------------------------------------------------

_F64_ONE = b"\xcb" + struct.pack(">d", 1.0)

MALFORMED: dict[str, bytes] = {
    # framing
    "empty": b"",
    "version only": b"\x01",
    "trailing zero byte": GOOD + b"\x00",
    "trailing second envelope": GOOD + GOOD[1:],
    "truncated by one byte": GOOD[:-1],
    "never-used byte 0xc1": b"\x01\xc1",
    "not a map: array": b"\x01" + msgpack.packb(list(GOOD_FIELDS.values())),
    "not a map: int": b"\x01\x05",
    "not a map: nil": b"\x01\xc0",
    "empty map": b"\x01\x80",
    # keys
    **{f"missing field {k}": _with(**{f"k{k}": ...}) for k in range(1, 7)},
    "extra field 7": _envelope_bytes([*_items(), (b"\x07", b"\x00")]),
    "extra field 0": _envelope_bytes([(b"\x00", b"\x00"), *_items()]),
    "string keys": b"\x01" + msgpack.packb({str(k): v for k, v in GOOD_FIELDS.items()}),
    "duplicate key": _envelope_bytes([_items()[0], *_items()]),
    "keys out of order (1 and 2 swapped)": _envelope_bytes([_items()[1], _items()[0], *_items()[2:]]),
    "keys in reverse order": _envelope_bytes(list(reversed(_items()))),
    "key 1 written as uint8": _envelope_bytes([(b"\xcc\x01", _items()[0][1]), *_items()[1:]]),
    # An integer key written as another type that compares equal to it is the same map to Python
    # but another byte string: a second byte form (and message id) of one envelope.
    "key 1 written as true": _envelope_bytes([(b"\xc3", _items()[0][1]), *_items()[1:]]),
    "key 1 written as float64 1.0": _envelope_bytes([(_F64_ONE, _items()[0][1]), *_items()[1:]]),
    # wrong types
    "kind is true": _with(k1=True),
    "kind is nil": _with(k1=None),
    "kind is float": _with(k1=1.0),
    "kind is bytes": _with(k1=b"\x01"),
    "tag is int": _with(k2=5),
    "tag is str": _with(k2="x" * 16),
    "tag is array": _with(k2=list(range(16))),
    "expiry is true": _with(k3=True),
    "expiry is false": _with(k3=False),
    "expiry is negative": _with(k3=-1),
    "expiry is 2**32": _with(k3=2**32),
    "expiry is 2**64-1": _with(k3=2**64 - 1),
    "expiry is float64": _with(k3=1_800_000_000.0),
    "expiry is float32": _envelope_bytes(_items(k3=b"\xca" + struct.pack(">f", 1.5e9))),
    "expiry is bytes": _with(k3=(1_800_000_000).to_bytes(4, "big")),
    "ephemeral key is int": _with(k4=0),
    "ephemeral key is str": _with(k4="e" * 32),
    "nonce is int": _with(k5=0),
    "nonce is str": _with(k5="n" * 24),
    "ciphertext is int": _with(k6=0),
    "ciphertext is str": _with(k6="c" * 40),
    "ciphertext is nil": _with(k6=None),
    # wrong lengths
    "tag of 0 bytes": _with(k2=b""),
    "tag of 15 bytes": _with(k2=bytes(15)),
    "tag of 17 bytes": _with(k2=bytes(17)),
    "ephemeral key of 31 bytes": _with(k4=bytes(31)),
    "ephemeral key of 33 bytes": _with(k4=bytes(33)),
    "nonce of 23 bytes": _with(k5=bytes(23)),
    "nonce of 25 bytes": _with(k5=bytes(25)),
    "nonce of 12 bytes (IETF ChaCha20)": _with(k5=bytes(12)),
    "ciphertext of 0 bytes": _with(k6=b""),
    "ciphertext of 15 bytes": _with(k6=bytes(15)),
    # unknown kinds
    "kind 0": _with(k1=0),
    "kind 3": _with(k1=3),  # (2 is GROUP)
    "kind 127": _with(k1=127),
    "kind -1": _with(k1=-1),
    "kind 2**32": _with(k1=2**32),
    # non-canonical encodings of valid values
    "kind as uint8": _envelope_bytes(_items(k1=b"\xcc\x01")),
    "kind as int8": _envelope_bytes(_items(k1=b"\xd0\x01")),
    "kind as uint64": _envelope_bytes(_items(k1=b"\xcf" + (1).to_bytes(8, "big"))),
    "expiry as uint64": _envelope_bytes(_items(k3=b"\xcf" + (1_800_000_000).to_bytes(8, "big"))),
    "expiry as int64": _envelope_bytes(_items(k3=b"\xd3" + (1_800_000_000).to_bytes(8, "big"))),
    "small expiry as uint32": _envelope_bytes(_items(k3=b"\xce" + (5).to_bytes(4, "big"))),
    "tag as bin16": _envelope_bytes(_items(k2=b"\xc5\x00\x10" + TAG)),
    "tag as bin32": _envelope_bytes(_items(k2=b"\xc6\x00\x00\x00\x10" + TAG)),
    "map as map16": b"\x01\xde\x00\x06" + GOOD[2:],
    "map as map32": b"\x01\xdf\x00\x00\x00\x06" + GOOD[2:],
    "tag as fixstr (str where bin)": _envelope_bytes(_items(k2=b"\xb0" + b"t" * 16)),
    "tag as str8 (str where bin)": _envelope_bytes(_items(k2=b"\xd9\x10" + b"t" * 16)),
    "ciphertext as raw str8": _envelope_bytes(_items(k6=b"\xd9\x28" + b"c" * 40)),
    # extension types
    "ciphertext as fixext1": _envelope_bytes(_items(k6=b"\xd4\x01\x00")),
    "ciphertext as ext8": _envelope_bytes(_items(k6=b"\xc7\x28\x05" + bytes(40))),
    "expiry as timestamp ext": _envelope_bytes(_items(k3=b"\xd6\xff" + (1_800_000_000).to_bytes(4, "big"))),
    "ext as a key": _envelope_bytes([(b"\xd4\x01\x01", _items()[0][1]), *_items()[1:]]),
    "bare ext": b"\x01\xd4\x01\x00",
    "empty ext8": _envelope_bytes(_items(k6=b"\xc7\x00\x01")),
    # containers
    "ciphertext as nested array": _with(k6=[[[b"x" * 20]]]),
    "ciphertext as nested map": _with(k6={1: {2: {3: b"x" * 20}}}),
    "array of 65 items": _envelope_bytes(_items(k6=b"\xdc\x00\x41" + b"\x00" * 65)),
    "array claiming 2**32-1 items": _envelope_bytes(_items(k6=b"\xdd\xff\xff\xff\xff\x00")),
    "bin claiming more bytes than there are": _envelope_bytes(_items(k6=b"\xc6\x00\x01\x00\x00" + bytes(40))),
    "str claiming 4 GiB": _envelope_bytes(_items(k6=b"\xdb\xff\xff\xff\xff")),
    # invalid UTF-8 in a str (where a str is never valid anyway, but decoding must not crash)
    "str of 0xff bytes": _envelope_bytes(_items(k2=b"\xb0" + b"\xff" * 16)),
    "str with an overlong NUL": _envelope_bytes(_items(k2=b"\xb0" + b"\xc0\x80" * 8)),
    "str with a UTF-16 surrogate": _envelope_bytes(_items(k2=b"\xb0" + b"\xed\xa0\x80" * 5 + b"x")),
    "str with a truncated sequence": _envelope_bytes(_items(k2=b"\xb0" + b"x" * 15 + b"\xe2")),
    "invalid UTF-8 as a key": b"\x01\x81\xa2\xff\xfe\x00",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_envelopes_are_plain_decode_errors(data: bytes) -> None:
    with pytest.raises(MeshchatError) as caught:
        decode_envelope(data)
    # Exactly DecodeError: not TooLarge or UnsupportedVersion (wrong diagnosis), not anything else.
    assert type(caught.value) is DecodeError, repr(caught.value)
    assert caught.value.what == "envelope"
    assert str(caught.value).startswith("malformed envelope: ")


def test_every_bytes_field_of_the_wrong_length_is_refused() -> None:
    sizes = {2: INBOX_TAG_SIZE, 4: EPHEMERAL_KEY_SIZE, 5: NONCE_SIZE}
    for key, size in sizes.items():
        for length in range(2 * size + 2):
            data = _with(**{f"k{key}": bytes(length)})
            if length == size:
                assert decode_envelope(data) is not None
                continue
            with pytest.raises(DecodeError) as caught:
                decode_envelope(data)
            assert type(caught.value) is DecodeError


def test_expiry_bounds_are_inclusive() -> None:
    for expiry in (0, 1, 127, 128, 255, 256, 65_535, 65_536, MAX_EXPIRY):
        assert decode_envelope(_with(k3=expiry)).expiry == expiry


NESTING_SHAPES = {"array": b"\x91", "map": b"\x81\x00", "array16": b"\xdc\x00\x01", "map as key": b"\x81"}


@pytest.mark.parametrize("opening", NESTING_SHAPES.values(), ids=NESTING_SHAPES.keys())
def test_deeply_nested_structures_are_decode_errors(opening: bytes) -> None:
    # Nested values where the ciphertext should be, as deep as the size limit allows. Each must be a
    # DecodeError; a RecursionError (or any other exception) escaping the decoder is a crash bug.
    escaped: dict[int, str] = {}
    for depth in (*range(1, 2000, 37), 497, 498, 499, 500, 512, 1000, 1023, 1024, 1025, 5000, 20_000):
        data = _envelope_bytes(_items(k6=opening * depth + b"\x00"))
        if len(data) > MAX_ENVELOPE_SIZE:
            continue
        try:
            decode_envelope(data)
        except DecodeError as exc:
            assert type(exc) is DecodeError
        except Exception as exc:  # the point of the test: nothing else may escape
            escaped[depth] = type(exc).__name__
        else:
            raise AssertionError(f"nested value of depth {depth} accepted as a ciphertext")
    assert not escaped, (
        f"{len(escaped)} depths from {min(escaped)} to {max(escaped)} escaped as {set(escaped.values())}"
    )


# --- the constructor ------------------------------------------------------------------------------

VALID = {
    "kind": EnvelopeKind.SEALED,
    "inbox_tag": bytes(16),
    "expiry": 1,
    "ephemeral_key": bytes(32),
    "nonce": bytes(24),
    "ciphertext": bytes(16),
}

INVALID_FIELDS = [
    ("kind", 1, "kind"),
    ("kind", True, "kind"),
    ("kind", "SEALED", "kind"),
    ("kind", None, "kind"),
    ("inbox_tag", bytes(15), "inbox tag"),
    ("inbox_tag", bytes(17), "inbox tag"),
    ("inbox_tag", bytearray(16), "inbox tag"),
    ("inbox_tag", "t" * 16, "inbox tag"),
    ("inbox_tag", memoryview(bytes(16)), "inbox tag"),
    ("expiry", -1, "expiry"),
    ("expiry", 2**32, "expiry"),
    ("expiry", True, "expiry"),
    ("expiry", 1.0, "expiry"),
    ("expiry", "1", "expiry"),
    ("ephemeral_key", bytes(31), "ephemeral key"),
    ("ephemeral_key", bytes(33), "ephemeral key"),
    ("ephemeral_key", None, "ephemeral key"),
    ("nonce", bytes(23), "nonce"),
    ("nonce", bytes(12), "nonce"),
    ("nonce", "n" * 24, "nonce"),
    ("ciphertext", b"", "ciphertext"),
    ("ciphertext", bytes(15), "ciphertext"),
    ("ciphertext", "c" * 16, "ciphertext"),
    ("ciphertext", bytearray(16), "ciphertext"),
]


def test_the_constructor_accepts_the_valid_fields() -> None:
    envelope = Envelope(**VALID)  # type: ignore[arg-type]
    assert envelope.associated_data() == (
        bytes([ENVELOPE_VERSION, 1]) + bytes(16) + (1).to_bytes(4, "big") + bytes(32) + bytes(24)
    )


@pytest.mark.parametrize(("field", "value", "named"), INVALID_FIELDS)
def test_the_constructor_refuses_invalid_fields(field: str, value: object, named: str) -> None:
    with pytest.raises(DecodeError) as caught:
        Envelope(**{**VALID, field: value})  # type: ignore[arg-type]
    assert type(caught.value) is DecodeError
    assert caught.value.what == "envelope"
    assert named in caught.value.problem  # the message names the field at fault


# --- the codec ------------------------------------------------------------------------------------

_ints = st.integers(-(2**63), 2**64 - 1)
values = st.recursive(
    st.one_of(_ints, st.binary(max_size=80), st.text(max_size=40), st.booleans(), st.none()),
    lambda children: st.one_of(
        st.lists(children, max_size=8).map(tuple),
        st.dictionaries(_ints, children, max_size=8),
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(value=values)
def test_canonical_round_trip_of_any_value(value: object) -> None:
    data = pack(value)
    decoded = unpack_canonical(data, what="value", limit=len(data))
    assert decoded == value
    assert pack(decoded) == data  # also tells True from 1, which == does not


@settings(max_examples=200, deadline=None)
@given(mapping=st.dictionaries(_ints, _ints, min_size=2, max_size=MAX_CONTAINER_ITEMS))
def test_pack_sorts_keys_and_unsorted_keys_are_refused(mapping: dict[int, int]) -> None:
    data = pack(mapping)
    assert data == msgpack.packb(dict(sorted(mapping.items())))
    assert unpack_canonical(data, what="map", limit=len(data)) == mapping
    backwards = msgpack.packb(dict(sorted(mapping.items(), reverse=True)))
    with pytest.raises(DecodeError) as caught:
        unpack_canonical(backwards, what="map", limit=len(backwards))
    assert "ascending" in str(caught.value)


def _nested(opening: bytes, depth: int, tail: bytes) -> bytes:
    return opening * depth + tail


#: Byte strings: raw noise, and msgpack-shaped noise (deep nesting, mutated valid encodings) that
#: reaches far deeper into the decoder than uniform random bytes do. (Hypothesis raises the recursion
#: limit while a test runs, so a recursion-depth crash shows in the plain test above, not here.)
arbitrary_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(
        _nested,
        st.sampled_from(list(NESTING_SHAPES.values())),
        st.integers(0, 1500),
        st.binary(max_size=6),
    ),
    st.builds(
        lambda data, where, byte: data[:where] + bytes([byte]) + data[where + 1 :],
        values.map(pack),
        st.integers(0, 400),
        st.integers(0, 255),
    ),
)


@settings(max_examples=1000, deadline=None)
@given(data=arbitrary_bytes, limit=st.integers(0, 4000))
def test_arbitrary_bytes_give_a_value_or_a_decode_error_never_anything_else(data: bytes, limit: int) -> None:
    try:
        value = unpack_canonical(data, what="fuzz", limit=limit)
    except TooLarge as exc:
        assert len(data) > limit
        assert (exc.size, exc.limit) == (len(data), limit)
        return
    except DecodeError as exc:
        assert exc.what == "fuzz"
        return
    assert len(data) <= limit
    assert pack(value) == data  # whatever is accepted is the one canonical encoding of its value


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=500))
def test_arbitrary_envelope_bytes_decode_canonically_or_raise_a_decode_error(data: bytes) -> None:
    for candidate in (data, b"\x01" + data, b"\x01\x86" + data):
        try:
            envelope = decode_envelope(candidate)
        except DecodeError:
            continue
        assert encode_envelope(envelope) == candidate


def test_unpack_canonical_checks_the_size_before_parsing() -> None:
    with pytest.raises(TooLarge) as caught:
        unpack_canonical(b"\xc1" * 11, what="thing", limit=10)
    assert str(caught.value) == "thing is 11 bytes; the limit is 10"
    with pytest.raises(DecodeError) as caught_small:
        unpack_canonical(b"\xc1" * 10, what="thing", limit=10)
    assert type(caught_small.value) is DecodeError


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not valid msgpack"),
        (b"\x01\x02", "trailing bytes"),
        (b"\x82\x02\x00\x01\x00", "ascending"),
        (b"\x82\x01\x00\x01\x00", "ascending"),  # duplicate keys
        (b"\x82\x01\x00\xa1a\x00", ""),  # int and str keys: no order between them
        (b"\xcc\x05", "non-canonical"),
        (b"\xca\x3f\xc0\x00\x00", "non-canonical"),  # float32 1.5
        (b"\xd4\x01\x00", "not valid msgpack"),
        (b"\xa2\xff\xfe", "not valid msgpack"),
        (b"\x81\x80\x00", ""),  # a map as a map key: unhashable in Python
    ],
)
def test_codec_failures_say_what_is_wrong(data: bytes, problem: str) -> None:
    # An empty ``problem``: any DecodeError will do (the diagnosis is the decoder's choice).
    with pytest.raises(DecodeError) as caught:
        unpack_canonical(data, what="thing", limit=100)
    assert type(caught.value) is DecodeError
    assert caught.value.what == "thing"
    assert problem in caught.value.problem


def test_only_the_codec_calls_msgpack_unpackb_in_wire_crypto_gossip_and_sim() -> None:
    """Peers' bytes reach msgpack only through ``unpack_bounded`` (size, lengths and depth bounded)."""
    package = Path(meshchat.__file__).parent
    callers = [
        str(path.relative_to(package))
        for folder in ("wire", "crypto", "gossip", "sim")
        for path in sorted((package / folder).glob("*.py"))
        if "unpackb" in path.read_text(encoding="utf-8")
    ]
    assert callers == ["wire/codec.py"]
