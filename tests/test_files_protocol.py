"""What crosses the wire about files: the chunk protocol's frames and the manifest.

Every message round-trips; every field out of its bound, every wrong type, count or size, and any
bytes at all give a ``DecodeError`` (``TooLarge`` for an oversized frame, ``BadManifest`` for a
manifest), never another exception.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshchat.errors import BadManifest, DecodeError, TooLarge
from meshchat.files.chunks import (
    ADDRESSES_PER_INDEX_CHUNK,
    CHUNK_SIZE,
    KEY_SIZE,
    MAX_CHUNK_WIRE,
    MAX_FILE_SIZE,
    build_index,
    index_chunk_count,
)
from meshchat.files.manifest import (
    MANIFEST_VERSION,
    MAX_CAPTION_BYTES,
    MAX_MAILBOXES,
    MAX_MANIFEST,
    MAX_NAME_BYTES,
    MAX_THUMBNAIL,
    Manifest,
    decode_manifest,
    encode_manifest,
)
from meshchat.files.protocol import (
    MAX_CHUNK_FRAME,
    MAX_GET,
    MAX_TOKENS,
    Bulk,
    ChunkData,
    ChunkMissing,
    ChunkReply,
    ChunkRequest,
    Done,
    ErrorCode,
    Failed,
    Get,
    Has,
    Held,
    Hold,
    Offer,
    Ok,
    Put,
    decode_reply,
    decode_request,
    encode,
)
from meshchat.wire.codec import pack

A = bytes(range(32))
B = bytes(range(1, 33))
FILE_ID = b"\xf1" * 32

REQUESTS: list[ChunkRequest] = [
    Get(addresses=(A, B)),
    Get(addresses=()),
    Get(addresses=tuple(bytes([i]) * 32 for i in range(MAX_GET))),
    Has(addresses=(B,)),
    Has(addresses=tuple(bytes([i]) * 32 for i in range(MAX_GET))),
    Hold(file_id=FILE_ID, expiry=1_900_000_000, token_hashes=(A, B), total_bytes=5 * CHUNK_SIZE),
    Hold(file_id=FILE_ID, expiry=0, token_hashes=(), total_bytes=0),
    Hold(file_id=FILE_ID, expiry=2**53, token_hashes=(A,) * MAX_TOKENS, total_bytes=2**53),
    Put(file_id=FILE_ID, address=A, data=b"chunk bytes"),
    Put(file_id=FILE_ID, address=A, data=os.urandom(MAX_CHUNK_WIRE)),
    Put(file_id=FILE_ID, address=A, data=b""),
    Done(file_id=FILE_ID, token=b"t" * 16),
    Bulk(),
]
REPLIES: list[ChunkReply] = [
    ChunkData(address=A, data=os.urandom(1040)),
    ChunkData(address=A, data=os.urandom(MAX_CHUNK_WIRE)),
    ChunkMissing(address=B),
    Ok(),
    *[Failed(code=code, text=f"because {code.name}") for code in ErrorCode],
    Failed(code=ErrorCode.QUOTA, text=""),
    Held(addresses=(A, B)),
    Held(addresses=()),
    Offer(port=1, ticket=b"k" * 16, key=b"K" * 32),
    Offer(port=65535, ticket=b"k" * 16, key=b"K" * 32),
]


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: type(m).__name__)
def test_requests_round_trip(message: ChunkRequest) -> None:
    frame = encode(message)
    assert len(frame) <= MAX_CHUNK_FRAME
    assert decode_request(frame) == message
    with pytest.raises(DecodeError):
        decode_reply(frame)  # a request is never taken for a reply


@pytest.mark.parametrize("message", REPLIES, ids=lambda m: type(m).__name__)
def test_replies_round_trip(message: ChunkReply) -> None:
    frame = encode(message)
    assert len(frame) <= MAX_CHUNK_FRAME
    assert decode_reply(frame) == message
    with pytest.raises(DecodeError):
        decode_request(frame)


def test_the_wire_form_is_the_documented_one() -> None:
    assert msgpack.unpackb(encode(Get(addresses=(A,))), strict_map_key=False) == {1: 1, 2: [A]}
    assert msgpack.unpackb(encode(Has(addresses=(A,))), strict_map_key=False) == {1: 5, 2: [A]}
    assert msgpack.unpackb(encode(Done(file_id=FILE_ID, token=b"t" * 16)), strict_map_key=False) == {
        1: 4,
        2: FILE_ID,
        3: b"t" * 16,
    }
    assert encode(Ok()) == pack({1: 12})
    assert encode(Bulk()) == pack({1: 6})
    assert encode(ChunkMissing(address=A)) == pack({1: 11, 2: A})
    assert encode(Failed(code=ErrorCode.MISMATCH, text="x")) == pack({1: 13, 2: 5, 3: "x"})


def test_a_long_error_text_is_cut() -> None:
    decoded = decode_reply(encode(Failed(code=ErrorCode.STORAGE, text="é" * 2000)))
    assert isinstance(decoded, Failed)
    assert decoded.text == "é" * 512
    # A peer that sends a longer text is cut the same way on decode.
    decoded = decode_reply(pack({1: 13, 2: 6, 3: "x" * 5000}))
    assert isinstance(decoded, Failed)
    assert decoded.text == "x" * 512


def _bad(fields: dict[Any, Any]) -> bytes:
    return pack(fields)


BAD_REQUESTS = {
    "address 31 bytes": _bad({1: 1, 2: [b"a" * 31]}),
    "address 33 bytes": _bad({1: 1, 2: [b"a" * 33]}),
    "address as str": _bad({1: 1, 2: ["a" * 32]}),
    "addresses not a list": _bad({1: 1, 2: b"a" * 32}),
    "too many GET addresses": _bad({1: 1, 2: [A] * (MAX_GET + 1)}),
    "too many HAS addresses": _bad({1: 5, 2: [A] * (MAX_GET + 1)}),
    "GET without addresses": _bad({1: 1}),
    "GET with an extra field": _bad({1: 1, 2: [A], 3: 0}),
    "token 15 bytes": _bad({1: 4, 2: FILE_ID, 3: b"t" * 15}),
    "token 17 bytes": _bad({1: 4, 2: FILE_ID, 3: b"t" * 17}),
    "DONE file id 31 bytes": _bad({1: 4, 2: FILE_ID[:31], 3: b"t" * 16}),
    "too many token hashes": _bad({1: 2, 2: FILE_ID, 3: 0, 4: [A] * (MAX_TOKENS + 1), 5: 0}),
    "token hash 16 bytes": _bad({1: 2, 2: FILE_ID, 3: 0, 4: [b"t" * 16], 5: 0}),
    "token hashes not a list": _bad({1: 2, 2: FILE_ID, 3: 0, 4: A, 5: 0}),
    "HOLD negative expiry": _bad({1: 2, 2: FILE_ID, 3: -1, 4: [], 5: 0}),
    "HOLD expiry too far": _bad({1: 2, 2: FILE_ID, 3: 2**53 + 1, 4: [], 5: 0}),
    "HOLD expiry a bool": _bad({1: 2, 2: FILE_ID, 3: True, 4: [], 5: 0}),
    "HOLD expiry a float": _bad({1: 2, 2: FILE_ID, 3: 1.5, 4: [], 5: 0}),
    "HOLD negative total": _bad({1: 2, 2: FILE_ID, 3: 0, 4: [], 5: -5}),
    "HOLD missing total": _bad({1: 2, 2: FILE_ID, 3: 0, 4: []}),
    "PUT data over a chunk": _bad({1: 3, 2: FILE_ID, 3: A, 4: b"d" * (MAX_CHUNK_WIRE + 1)}),
    "PUT data as str": _bad({1: 3, 2: FILE_ID, 3: A, 4: "data"}),
    "PUT address 31 bytes": _bad({1: 3, 2: FILE_ID, 3: A[:31], 4: b"d"}),
    "BULK with a field": _bad({1: 6, 2: 1}),
    "unknown type 7": _bad({1: 7}),
    "unknown type 0": _bad({1: 0, 2: [A]}),
    "a reply type": _bad({1: 12}),
    "type as str": _bad({1: "1", 2: [A]}),
    "type as bool": _bad({1: True, 2: [A]}),
    "type missing": _bad({2: [A]}),
    "not a map": _bad([1, [A]]),
    "an int": _bad(1),
    "empty": b"",
    "truncated": encode(Get(addresses=(A, B)))[:-1],
    "trailing bytes": encode(Get(addresses=(A,))) + b"\x00",
    "an extension type": msgpack.packb({1: 1, 2: msgpack.ExtType(1, b"x")}),
}


@pytest.mark.parametrize("frame", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_are_refused(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_request(frame)


BAD_REPLIES = {
    "CHUNK address 31 bytes": _bad({1: 10, 2: A[:31], 3: b"d"}),
    "CHUNK data over a chunk": _bad({1: 10, 2: A, 3: b"d" * (MAX_CHUNK_WIRE + 1)}),
    "CHUNK without data": _bad({1: 10, 2: A}),
    "MISSING with an extra field": _bad({1: 11, 2: A, 3: b""}),
    "OK with a field": _bad({1: 12, 2: 0}),
    "ERROR unknown code": _bad({1: 13, 2: 99, 3: "x"}),
    "ERROR code as str": _bad({1: 13, 2: "1", 3: "x"}),
    "ERROR code as bool": _bad({1: 13, 2: True, 3: "x"}),
    "ERROR text as bytes": _bad({1: 13, 2: 1, 3: b"x"}),
    "too many HELD addresses": _bad({1: 14, 2: [A] * (MAX_GET + 1)}),
    "OFFER port 0": _bad({1: 15, 2: 0, 3: b"k" * 16, 4: b"K" * 32}),
    "OFFER port 65536": _bad({1: 15, 2: 65536, 3: b"k" * 16, 4: b"K" * 32}),
    "OFFER ticket 15 bytes": _bad({1: 15, 2: 80, 3: b"k" * 15, 4: b"K" * 32}),
    "OFFER key 31 bytes": _bad({1: 15, 2: 80, 3: b"k" * 16, 4: b"K" * 31}),
    "unknown type 16": _bad({1: 16}),
    "a request type": _bad({1: 6}),
    "truncated": encode(ChunkData(address=A, data=b"x" * 100))[:-10],
    "not msgpack": b"\xc1",
}


@pytest.mark.parametrize("frame", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
def test_bad_replies_are_refused(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_reply(frame)


def test_an_oversized_frame_is_refused_before_parsing() -> None:
    frame = encode(Put(file_id=FILE_ID, address=A, data=b"d" * MAX_CHUNK_FRAME))
    assert len(frame) > MAX_CHUNK_FRAME
    with pytest.raises(TooLarge):
        decode_request(frame)
    with pytest.raises(TooLarge):
        decode_reply(encode(ChunkData(address=A, data=b"d" * MAX_CHUNK_FRAME)))
    with pytest.raises(TooLarge):
        decode_request(b"\xc1" * (MAX_CHUNK_FRAME + 1))  # not even looked at


#: msgpack values shaped like frames: small maps of plausible types, with plausible sizes.
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.binary(max_size=40),
    st.sampled_from([A, b"t" * 16, b"K" * 32, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 65535, 2**53]),
    st.text(max_size=10),
)
_value = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=10)
_frames = st.dictionaries(st.integers(0, 6), _value, max_size=6).map(
    lambda d: msgpack.packb(d, use_bin_type=True)
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), _frames))
def test_any_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    for decode in (decode_request, decode_reply):
        try:
            message = decode(data)
        except DecodeError:
            continue
        assert decode(encode(message)) == message  # what is accepted is a real message


# --- the manifest -----------------------------------------------------------------------------------


def _manifest(**changes: Any) -> Manifest:
    key = os.urandom(KEY_SIZE)
    base = Manifest(
        name="holiday photo.jpg",
        mime="image/jpeg",
        size=3 * CHUNK_SIZE + 5,
        key=key,
        index=build_index(key, os.urandom(4 * 32)).addresses,
    )
    return replace(base, **changes)


FULL = _manifest(
    thumbnail=b"\xff\xd8" + os.urandom(MAX_THUMBNAIL - 2),
    width=4032,
    height=3024,
    duration_ms=12_345,
    caption="Закат 🌅 " * 10,
    mailboxes=("12D3KooWA" + "x" * 43, "12D3KooWB" + "y" * 43),
    expiry=1_900_000_000,
)


def test_manifest_round_trip_keeps_every_field() -> None:
    data = encode_manifest(FULL)
    assert len(data) <= MAX_MANIFEST
    decoded = decode_manifest(data)
    assert decoded == FULL
    assert decoded.key == FULL.key  # not part of repr, but compared
    assert decoded.file_id == FULL.file_id
    assert decoded.chunks == 4
    assert encode_manifest(decoded) == data
    assert "key=" not in repr(FULL)
    assert FULL.key.hex() not in repr(FULL)


def test_manifest_with_every_field_at_its_limit_fits() -> None:
    biggest = _manifest(
        name="n" * MAX_NAME_BYTES,
        mime="application/" + "m" * 200,
        thumbnail=b"t" * MAX_THUMBNAIL,
        caption="c" * MAX_CAPTION_BYTES,
        mailboxes=tuple("p" * 128 for _ in range(MAX_MAILBOXES)),
        expiry=2**53 - 1,
        width=1 << 20,
        height=1 << 20,
        duration_ms=10 * 86_400_000,
    )
    data = encode_manifest(biggest)
    assert len(data) <= MAX_MANIFEST
    assert decode_manifest(data) == biggest


def test_manifest_for_the_largest_and_empty_files() -> None:
    key = os.urandom(KEY_SIZE)
    for size in (0, MAX_FILE_SIZE, ADDRESSES_PER_INDEX_CHUNK * CHUNK_SIZE + 1):
        index = tuple(os.urandom(32) for _ in range(index_chunk_count(size)))
        m = Manifest(name="f", mime="a/b", size=size, key=key, index=index)
        assert decode_manifest(encode_manifest(m)) == m


def _fields(m: Manifest = FULL) -> dict[int, Any]:
    fields = msgpack.unpackb(encode_manifest(m), strict_map_key=False)
    assert set(fields) == set(range(1, 14))
    return dict(fields)


def _with(**changes: Any) -> bytes:
    """FULL's encoding with raw fields replaced (``f4=...`` sets field 4; ``None`` removes it)."""
    fields = _fields()
    for name, value in changes.items():
        number = int(name[1:])
        if value is None:
            del fields[number]
        else:
            fields[number] = value
    return pack(fields)


BAD_MANIFESTS = {
    "size over MAX_FILE_SIZE": _with(f4=MAX_FILE_SIZE + 1, f6=[os.urandom(32) for _ in range(3)]),
    "size far too big": _with(f4=2**63, f6=[os.urandom(32)]),
    "negative size": _with(f4=-1, f6=[os.urandom(32)]),
    "index count short of the size": _with(
        f4=ADDRESSES_PER_INDEX_CHUNK * CHUNK_SIZE + 1, f6=[os.urandom(32)]
    ),
    "index count over the size": _with(f6=[os.urandom(32), os.urandom(32)]),
    "no index": _with(f6=[]),
    "index address 31 bytes": _with(f6=[os.urandom(31)]),
    "index address as str": _with(f6=["a" * 32]),
    "index not a list": _with(f6=os.urandom(32)),
    "thumbnail over MAX_THUMBNAIL": _with(f7=b"t" * (MAX_THUMBNAIL + 1)),
    "empty name": _with(f2=""),
    "name over 255 bytes": _with(f2="é" * 128),
    "name as bytes": _with(f2=b"name"),
    "caption too long": _with(f11="c" * (MAX_CAPTION_BYTES + 1)),
    "caption too long in bytes": _with(f11="é" * (MAX_CAPTION_BYTES // 2 + 1)),
    "too many mailboxes": _with(f12=["p" * 52] * (MAX_MAILBOXES + 1)),
    "empty mailbox": _with(f12=[""]),
    "mailbox too long": _with(f12=["p" * 129]),
    "mailbox as bytes": _with(f12=[b"p" * 52]),
    "version 2": _with(f1=MANIFEST_VERSION + 1),
    "version 0": _with(f1=0),
    "version as str": _with(f1="1"),
    "missing expiry": _with(f13=None),
    "missing name": _with(f2=None),
    "extra field": pack({**_fields(), 14: 0}),
    "field 0": pack({0: 0, **_fields()}),
    "key 31 bytes": _with(f5=os.urandom(31)),
    "key as str": _with(f5="k" * 32),
    "size as a float": _with(f4=float(FULL.size)),
    "size as a bool": _with(f4=True, f6=[os.urandom(32)]),
    "mime without a slash": _with(f3="jpeg"),
    "mime not ascii": _with(f3="image/jpég"),
    "empty mime": _with(f3=""),
    "negative width": _with(f8=-1),
    "height too big": _with(f9=(1 << 20) + 1),
    "negative duration": _with(f10=-1),
    "negative expiry": _with(f13=-1),
    "expiry past 2**53": _with(f13=2**53),
    "not a map": pack([1, 2, 3]),
    "keys out of order": msgpack.packb(dict(sorted(_fields().items(), reverse=True)), use_bin_type=True),
    "a wide integer": encode_manifest(FULL).replace(b"\x01\x01", b"\x01\xcc\x01", 1),
    "trailing bytes": encode_manifest(FULL) + b"\x00",
    "truncated": encode_manifest(FULL)[:-1],
    "empty": b"",
    "oversized": b"\x80" + b"\x00" * MAX_MANIFEST,
}


@pytest.mark.parametrize("data", BAD_MANIFESTS.values(), ids=BAD_MANIFESTS.keys())
def test_bad_manifests_are_refused(data: bytes) -> None:
    with pytest.raises(BadManifest):
        decode_manifest(data)


def test_the_wide_integer_case_really_is_non_canonical() -> None:
    data = BAD_MANIFESTS["a wide integer"]
    assert data != encode_manifest(FULL)
    assert msgpack.unpackb(data, strict_map_key=False) == _fields()  # same values, another spelling


@pytest.mark.parametrize("version", [True, 1.0], ids=["bool", "float"])
def test_the_version_must_be_the_integer_1(version: object) -> None:
    with pytest.raises(BadManifest, match="version"):
        decode_manifest(_with(f1=version))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"size": -1}, "size -1"),
        ({"size": MAX_FILE_SIZE + 1}, "size"),
        ({"key": b"k" * 16}, "key must be 32 bytes"),
        ({"index": ()}, "0 index chunks"),
        ({"index": (b"a" * 31,)}, "index addresses must be 32 bytes"),
        ({"name": ""}, "name empty"),
        ({"name": "n" * (MAX_NAME_BYTES + 1)}, "too long"),
        ({"mime": "plain"}, "mime"),
        ({"thumbnail": b"t" * (MAX_THUMBNAIL + 1)}, "thumbnail"),
        ({"caption": "c" * (MAX_CAPTION_BYTES + 1)}, "caption"),
        ({"mailboxes": ("p",) * (MAX_MAILBOXES + 1)}, "mailboxes"),
        ({"expiry": -1}, "expiry"),
        ({"width": -1}, "width"),
        ({"duration_ms": -1}, "duration"),
    ],
    ids=lambda c: next(iter(c)) if isinstance(c, dict) else "",
)
def test_a_bad_manifest_cannot_be_built(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _manifest(**changes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_are_a_bad_manifest(data: bytes) -> None:
    with pytest.raises(BadManifest):
        decode_manifest(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_damaged_manifest_decodes_to_a_valid_one_or_is_refused(data: st.DataObject) -> None:
    encoded = bytearray(encode_manifest(_manifest(caption="hi", mailboxes=("peer",))))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    try:
        manifest = decode_manifest(bytes(encoded[:cut]))
    except DecodeError:
        return
    assert decode_manifest(encode_manifest(manifest)) == manifest  # only a valid manifest passes


@settings(max_examples=200, deadline=None)
@given(
    name=st.text(min_size=1, max_size=120),
    caption=st.text(max_size=120),
    # PeerIds are base58 text: their limit is in bytes, so any alphabet past ASCII can pass it
    mailboxes=st.lists(
        st.text(alphabet=st.characters(max_codepoint=127), min_size=1, max_size=60), max_size=MAX_MAILBOXES
    ),
)
def test_any_text_fields_round_trip(name: str, caption: str, mailboxes: list[str]) -> None:
    try:
        m = _manifest(name=name, caption=caption, mailboxes=tuple(mailboxes))
    except ValueError:
        assert not _encodable(name) or not _encodable(caption) or len(name.encode()) > MAX_NAME_BYTES
        return
    assert decode_manifest(encode_manifest(m)) == m


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize("field_name", ["name", "caption"])
def test_a_manifest_that_can_be_built_can_be_encoded(field_name: str) -> None:
    text = os.fsdecode(b"\xff\xfeholiday.jpg")  # a Linux file name that is not UTF-8
    assert "\udcff" in text
    try:
        m = _manifest(**{field_name: text})
    except ValueError:
        return  # refused when built: fine
    assert decode_manifest(encode_manifest(m)) == m
