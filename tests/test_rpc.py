"""The pubsub RPC codec against the reference: the official ``protobuf`` package on the spec's schema.

The schema is ``tests/pubsub_schema.py`` (the one copy, shared with ``benchmarks/bench_rpc.py``). Every
property is checked both ways: our bytes are protobuf's bytes, protobuf's bytes decode to the records
protobuf itself sees, and on arbitrary bytes the two parsers agree wherever we accept; where protobuf
accepts and we refuse, the refusal is one of the documented stricter rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import base58
import pytest
from conftest import MULTILINGUAL_SAMPLES
from google.protobuf.message import DecodeError as ProtobufDecodeError
from hypothesis import example, given, settings
from hypothesis import strategies as st

import meshchat.gossip.rpc as rpc_module
from meshchat.errors import DecodeError, TooLarge
from meshchat.gossip.messages import (
    RPC,
    ControlMessage,
    Graft,
    IDontWant,
    IHave,
    IWant,
    PeerInfo,
    Prune,
    PubMessage,
    SubOpts,
)
from meshchat.gossip.rpc import (
    DEFAULT_MAX_RPC_SIZE,
    MAX_FRAME_PREFIX_BYTES,
    FrameDecoder,
    RpcLimits,
    decode_rpc,
    encode_rpc,
    frame,
    rpc_size,
)
from meshchat.identity import Identity
from tests.pubsub_schema import protobuf_classes

# ------------------------------------------------------------------------------ the reference schema

PB = protobuf_classes("meshchat.test.pubsub")


class NotRepresentable(ValueError):
    """Protobuf parsed it, but the records cannot hold it (our documented stricter rules)."""


def to_protobuf(rpc: RPC) -> Any:
    """Records as a reference protobuf message, every field the codec writes set explicitly."""
    out = PB["RPC"]()
    for sub in rpc.subscriptions:
        out.subscriptions.add(subscribe=sub.subscribe, topicid=sub.topic)
    for m in rpc.publish:
        optional = {"from": m.from_peer, "seqno": m.seqno, "signature": m.signature, "key": m.key}
        out.publish.add(data=m.data, topic=m.topic, **{k: v for k, v in optional.items() if v is not None})
    if rpc.control is not None:
        control = out.control
        control.SetInParent()
        for ihave in rpc.control.ihave:
            control.ihave.add(topicID=ihave.topic, messageIDs=ihave.message_ids)
        for iwant in rpc.control.iwant:
            control.iwant.add(messageIDs=iwant.message_ids)
        for graft in rpc.control.graft:
            control.graft.add(topicID=graft.topic)
        for prune in rpc.control.prune:
            entry = control.prune.add(topicID=prune.topic)
            if prune.backoff is not None:
                entry.backoff = prune.backoff
            for info in prune.peers:
                peer = entry.peers.add()
                if info.peer_id is not None:
                    peer.peerID = _peer_bytes(info.peer_id)
                if info.signed_peer_record is not None:
                    peer.signedPeerRecord = info.signed_peer_record
        for idontwant in rpc.control.idontwant:
            control.idontwant.add(messageIDs=idontwant.message_ids)
    return out


def _text(value: str | bytes) -> str:
    # proto2 strings are not UTF-8 checked by upb: an invalid one comes back as bytes.
    if isinstance(value, bytes):
        raise NotRepresentable("invalid UTF-8")
    return value


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes([value])


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    """A raw protobuf field: tag, then the payload (behind its length for wire type 2)."""
    return _varint(number << 3 | wire_type) + (_varint(len(payload)) if wire_type == 2 else b"") + payload


def _peer_bytes(peer_id: str | None) -> bytes | None:
    return None if peer_id is None else bytes(base58.b58decode(peer_id))


def _peer_text(raw: bytes) -> str:
    """The spec's rule, written independently: identity multihash <= 42 bytes, or sha2-256."""
    ok = len(raw) >= 2 and (
        (raw[0] == 0x00 and 0 < raw[1] <= 42 and len(raw) == 2 + raw[1])
        or (raw[0] == 0x12 and raw[1] == 32 and len(raw) == 34)
    )
    if not ok:
        raise NotRepresentable("PeerId")
    return base58.b58encode(raw).decode()


def _opt(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _prune_record(prune: Any) -> Prune:
    peers = tuple(
        PeerInfo(
            peer_id=None if not p.HasField("peerID") else _peer_text(p.peerID),
            signed_peer_record=_opt(p, "signedPeerRecord"),
        )
        for p in prune.peers
    )
    return Prune(topic=_text(prune.topicID), peers=peers, backoff=_opt(prune, "backoff"))


def from_protobuf(parsed: Any) -> RPC:
    """What the records should be for a message protobuf parsed (absent fields: protobuf defaults)."""
    if not all(m.HasField("topic") for m in parsed.publish):
        raise NotRepresentable("no topic")
    c = parsed.control
    control = ControlMessage(
        ihave=tuple(IHave(topic=_text(i.topicID), message_ids=tuple(i.messageIDs)) for i in c.ihave),
        iwant=tuple(IWant(message_ids=tuple(i.messageIDs)) for i in c.iwant),
        graft=tuple(Graft(topic=_text(g.topicID)) for g in c.graft),
        prune=tuple(_prune_record(p) for p in c.prune),
        idontwant=tuple(IDontWant(message_ids=tuple(i.messageIDs)) for i in c.idontwant),
    )
    return RPC(
        subscriptions=tuple(
            SubOpts(subscribe=s.subscribe, topic=_text(s.topicid)) for s in parsed.subscriptions
        ),
        publish=tuple(
            PubMessage(
                topic=_text(m.topic),
                data=m.data,
                from_peer=_opt(m, "from"),
                seqno=_opt(m, "seqno"),
                signature=_opt(m, "signature"),
                key=_opt(m, "key"),
            )
            for m in parsed.publish
        ),
        control=control if parsed.HasField("control") else None,
    )


#: Why we may refuse what protobuf accepts: each is a documented rule of ``rpc.py``.
STRICTER = ("groups", "UTF-8", "PeerId", "no topic", "more than", "topic is")


def assert_agrees_with_protobuf(data: bytes) -> RPC | DecodeError:
    """Decode with both; ours must be protobuf's records, or a refusal protobuf shares or we document."""
    try:
        ours: RPC | DecodeError = decode_rpc(data)
    except DecodeError as exc:  # TooLarge included; any other exception fails the test
        ours = exc
    try:
        theirs: RPC | Exception = from_protobuf(PB["RPC"].FromString(data))
    except (ProtobufDecodeError, NotRepresentable) as exc:
        theirs = exc
    if isinstance(ours, RPC):
        assert ours == theirs
    elif isinstance(theirs, RPC):
        assert any(reason in str(ours) for reason in STRICTER), f"refused {data.hex()}: {ours}"
    return ours


# -------------------------------------------------------------------------------------- strategies

topics = st.one_of(
    st.sampled_from(MULTILINGUAL_SAMPLES), st.just("/meshchat/inbox/1/shard-0017"), st.text(max_size=30)
)
blobs = st.binary(max_size=300)  # past 127 bytes, lengths take two varint bytes
optional_blobs = st.none() | blobs
id_tuples = st.one_of(
    st.lists(st.binary(max_size=140), max_size=6),  # mixed lengths, some past 127: the field loop
    st.integers(0, 140).flatmap(
        lambda n: st.lists(st.binary(min_size=n, max_size=n), min_size=1, max_size=9)
    ),
    st.lists(st.binary(min_size=32, max_size=32), min_size=4, max_size=12),  # BLAKE2b ids: strided slices
).map(tuple)
ED25519_PEERS = [Identity(bytes([n]) * 32).public.peer_id for n in range(6)]


def _multihash_text(code: int, digest: bytes) -> str:
    return base58.b58encode(bytes([code, len(digest)]) + digest).decode()


peer_ids = st.one_of(
    st.sampled_from(ED25519_PEERS),
    st.binary(min_size=32, max_size=32).map(lambda d: _multihash_text(0x12, d)),  # RSA-style
    st.binary(min_size=1, max_size=42).map(lambda d: _multihash_text(0x00, d)),  # other inline keys
)
peer_infos = st.builds(PeerInfo, peer_id=st.none() | peer_ids, signed_peer_record=optional_blobs)
prunes = st.builds(
    Prune,
    topic=topics,
    peers=st.lists(peer_infos, max_size=3).map(tuple),
    backoff=st.none() | st.integers(0, 2**64 - 1),
)
controls = st.builds(
    ControlMessage,
    ihave=st.lists(st.builds(IHave, topic=topics, message_ids=id_tuples), max_size=3).map(tuple),
    iwant=st.lists(st.builds(IWant, message_ids=id_tuples), max_size=3).map(tuple),
    graft=st.lists(st.builds(Graft, topic=topics), max_size=3).map(tuple),
    prune=st.lists(prunes, max_size=2).map(tuple),
    idontwant=st.lists(st.builds(IDontWant, message_ids=id_tuples), max_size=3).map(tuple),
)
messages = st.builds(
    PubMessage,
    topic=topics,
    data=blobs,
    from_peer=optional_blobs,
    seqno=optional_blobs,
    signature=optional_blobs,
    key=optional_blobs,
)
rpcs = st.builds(
    RPC,
    subscriptions=st.lists(st.builds(SubOpts, subscribe=st.booleans(), topic=topics), max_size=4).map(tuple),
    publish=st.lists(messages, max_size=3).map(tuple),
    control=st.none() | controls,
)


def ctl(**entries: Any) -> RPC:
    """An RPC carrying only control entries."""
    return RPC(control=ControlMessage(**entries))


def sub(topic: str = "", *, subscribe: bool = True) -> RPC:
    """An RPC carrying one subscription change."""
    return RPC(subscriptions=(SubOpts(subscribe=subscribe, topic=topic),))


#: One of everything: every field set, empty and two-byte lengths, Unicode, PX with and without PeerId.
RICH = RPC(
    subscriptions=(SubOpts(subscribe=True, topic="Привет"), SubOpts(subscribe=False, topic="")),
    publish=(
        PubMessage(topic="t", data=bytes(200), from_peer=b"", seqno=b"\x01", signature=b"s" * 64, key=b"k"),
        PubMessage(topic="🦊", data=b""),
    ),
    control=ControlMessage(
        ihave=(IHave(topic="t", message_ids=tuple(bytes([n]) * 32 for n in range(5))),),
        iwant=(IWant(message_ids=(b"", b"x" * 130)),),
        graft=(Graft(topic="g"),),
        prune=(
            Prune(
                topic="p",
                peers=(PeerInfo(peer_id=ED25519_PEERS[0], signed_peer_record=b"r"), PeerInfo()),
                backoff=300,
            ),
        ),
        idontwant=(IDontWant(message_ids=(b"\x07" * 32,)),),
    ),
)

# ---------------------------------------------------------------------------- round trips and bytes


@given(rpcs)
@example(RPC())
@example(RPC(control=ControlMessage()))
@example(RICH)
def test_round_trip_and_exact_size(rpc: RPC) -> None:
    data = encode_rpc(rpc)
    assert decode_rpc(data) == rpc
    assert rpc_size(rpc) == len(data)


@given(rpcs)
@example(RPC(control=ControlMessage()))  # an empty control is present on the wire: 1a 00
@example(RICH)
def test_encoding_is_byte_for_byte_protobufs(rpc: RPC) -> None:
    assert encode_rpc(rpc) == to_protobuf(rpc).SerializeToString()


@st.composite
def protobuf_messages(draw: st.DrawFn) -> Any:
    """Reference messages, including fields the records always set being absent on the wire."""
    message = to_protobuf(draw(rpcs))
    maybe_clear = [(s, "subscribe") for s in message.subscriptions] + [
        (s, "topicid") for s in message.subscriptions
    ]
    maybe_clear += [(m, "data") for m in message.publish]
    c = message.control
    maybe_clear += [(e, "topicID") for e in (*c.ihave, *c.graft, *c.prune)]
    for owner, name in maybe_clear:
        if draw(st.booleans()):
            owner.ClearField(name)
    return message


@given(protobuf_messages())
def test_decodes_what_protobuf_encodes(message: Any) -> None:
    data = message.SerializeToString()
    assert decode_rpc(data) == from_protobuf(PB["RPC"].FromString(data))


def test_none_and_empty_are_different_on_the_wire() -> None:
    absent = RPC(publish=(PubMessage(topic="t", data=b""),))
    empty = PubMessage(topic="t", data=b"", from_peer=b"", seqno=b"", signature=b"", key=b"")
    present = RPC(publish=(empty,), control=ControlMessage())
    assert encode_rpc(absent) == bytes.fromhex("12051200220174")
    assert encode_rpc(present) == bytes.fromhex("120d0a0012001a002201742a0032001a00")
    assert decode_rpc(encode_rpc(absent)) == absent
    assert decode_rpc(encode_rpc(present)) == present
    prune = Prune(topic="p", peers=(PeerInfo(), PeerInfo(signed_peer_record=b"")), backoff=0)
    assert decode_rpc(encode_rpc(RPC(control=ControlMessage(prune=(prune,))))).control == ControlMessage(
        prune=(prune,)
    )
    assert decode_rpc(b"") == RPC()


def test_known_encodings() -> None:
    subscribe = RPC(subscriptions=(SubOpts(subscribe=True, topic="t"),))
    assert encode_rpc(subscribe) == bytes.fromhex("0a050801120174")
    assert encode_rpc(RPC(control=ControlMessage(graft=(Graft(topic="t"),)))) == bytes.fromhex(
        "1a051a030a0174"
    )


# ------------------------------------------------------------------------------- hostile input


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_random_bytes_give_an_rpc_or_a_decode_error(data: bytes) -> None:
    assert_agrees_with_protobuf(data)


@settings(max_examples=300)
@given(rpcs, st.data())
def test_mutated_encodings_agree_with_protobuf(rpc: RPC, draw: st.DataObject) -> None:
    data = bytearray(encode_rpc(rpc))
    for _ in range(draw.draw(st.integers(1, 3))):
        if data:
            index = draw.draw(st.integers(0, len(data) - 1))
            data[index] = draw.draw(st.integers(0, 255))
    assert_agrees_with_protobuf(bytes(data))


def _raw_fields(payloads: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Well-framed protobuf fields with numbers 1-8 (the schema's and a few more) and any wire type."""
    field = st.one_of(
        st.builds(lambda n, v: _field(n, 0, _varint(v)), st.integers(1, 8), st.integers(0, 2**64 - 1)),
        st.builds(lambda n, v: _field(n, 2, v), st.integers(1, 8), payloads),
        st.builds(lambda n, v: _field(n, 1, v), st.integers(1, 8), st.binary(min_size=8, max_size=8)),
        st.builds(lambda n, v: _field(n, 5, v), st.integers(1, 8), st.binary(min_size=4, max_size=4)),
    )
    return st.lists(field, max_size=5).map(b"".join)


#: Nested messages of random fields: every known field number appears with every wire type, at depth.
raw_messages = st.recursive(
    st.sampled_from([b"", b"t", "Привет".encode(), _peer_bytes(ED25519_PEERS[0]) or b"", bytes(32)]),
    _raw_fields,
    max_leaves=12,
)


@settings(max_examples=300)
@given(raw_messages)
def test_random_well_framed_messages_agree_with_protobuf(data: bytes) -> None:
    assert_agrees_with_protobuf(data)


def _top_level_boundaries(rpc: RPC) -> set[int]:
    """Offsets where each top-level field ends: a prefix ending there is a whole, valid message."""
    ends, offset = {0}, 0
    for sub in rpc.subscriptions:
        offset += rpc_size(RPC(subscriptions=(sub,)))
        ends.add(offset)
    for message in rpc.publish:
        offset += rpc_size(RPC(publish=(message,)))
        ends.add(offset)
    if rpc.control is not None:
        ends.add(offset + rpc_size(RPC(control=rpc.control)))
    return ends


def test_every_truncation_is_refused_unless_it_ends_on_a_field_boundary() -> None:
    data = encode_rpc(RICH)
    valid = set()
    for cut in range(len(data) + 1):
        result = assert_agrees_with_protobuf(data[:cut])
        if isinstance(result, RPC):
            valid.add(cut)
        else:
            assert "truncated" in str(result), (cut, result)
    assert valid == _top_level_boundaries(RICH)


def test_oversized_input_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parsing(*args: object) -> None:
        raise AssertionError("the parser was started")

    monkeypatch.setattr(rpc_module, "_Parser", no_parsing)
    with pytest.raises(TooLarge) as caught:
        decode_rpc(b"\xff" * (4 << 20))
    assert (caught.value.size, caught.value.limit) == (4 << 20, DEFAULT_MAX_RPC_SIZE)
    monkeypatch.undo()
    assert decode_rpc(b"\x48\x00" * (DEFAULT_MAX_RPC_SIZE // 2)) == RPC()  # at the limit: unknown fields


#: For each limit, an RPC with n of the limited things (bytes, for the sizes).
LIMITED: dict[str, Callable[[int], RPC]] = {
    "max_subscriptions": lambda n: RPC(subscriptions=sub("a").subscriptions * n),
    "max_messages": lambda n: RPC(publish=(PubMessage(topic="t", data=b"x"),) * n),
    "max_ids_per_entry": lambda n: ctl(ihave=(IHave(topic="t", message_ids=(b"i" * 32,) * n),)),
    "max_control_entries": lambda n: ctl(
        graft=(Graft(topic="g"),) * (n // 2), iwant=(IWant(message_ids=()),) * (n - n // 2)
    ),
    "max_peers_per_prune": lambda n: ctl(prune=(Prune(topic="p", peers=(PeerInfo(),) * n),)),
    "max_topic_length": lambda n: sub("é" * (n // 2) + "x" * (n % 2)),
    "max_rpc_size": lambda n: RPC(publish=(PubMessage(topic="", data=b"x" * (n - 6)),)),
}


@pytest.mark.parametrize("name", LIMITED)
def test_limits_are_enforced(name: str) -> None:
    limits = RpcLimits(**{name: 7})
    at_limit, over_limit = LIMITED[name](7), LIMITED[name](8)
    assert decode_rpc(encode_rpc(at_limit), limits=limits) == at_limit
    with pytest.raises(DecodeError):
        decode_rpc(encode_rpc(over_limit), limits=limits)


@pytest.mark.parametrize(
    "rpc",
    [
        ctl(iwant=(IWant(message_ids=(b"a", b"bb", b"c" * 200)),)),  # ids of mixed lengths: the slow path
        ctl(idontwant=(IDontWant(message_ids=(b"a", b"b", b"c")),)),
    ],
)
def test_id_limit_applies_to_every_kind_and_path(rpc: RPC) -> None:
    assert decode_rpc(encode_rpc(rpc), limits=RpcLimits(max_ids_per_entry=3)) == rpc
    with pytest.raises(DecodeError, match="message ids"):
        decode_rpc(encode_rpc(rpc), limits=RpcLimits(max_ids_per_entry=2))


def test_limits_apply_across_merged_control_fields() -> None:
    one = encode_rpc(RPC(control=ControlMessage(graft=(Graft(topic="g"),) * 2)))
    assert decode_rpc(one * 2).control == ControlMessage(graft=(Graft(topic="g"),) * 4)  # protobuf merges
    with pytest.raises(DecodeError, match="control entries"):
        decode_rpc(one * 2, limits=RpcLimits(max_control_entries=3))


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        RpcLimits(max_messages=-1)


# -------------------------------------------------------------------- protobuf's rules, followed


#: Fields no pubsub schema has, one of each skippable wire type, as newer peers could send them:
#: gossipsub v1.3's ``testExtension`` (6492434, a 4-byte tag), go's ``partial`` (10), a fixed32, a fixed64.
UNKNOWN = (
    _field(6492434, 2, b"")
    + _field(10, 2, _field(1, 2, b"topic"))
    + _field(15, 0, b"\xff" * 9 + b"\x01")
    + _field(16, 1, bytes(8))
    + _field(17, 5, bytes(4))
)


def _msg(*fields: bytes) -> bytes:
    """A message body with UNKNOWN before and after its fields."""
    return UNKNOWN + b"".join(fields) + UNKNOWN


def _optional(fields: dict[int, bytes | None]) -> list[bytes]:
    return [_field(number, 2, value) for number, value in fields.items() if value is not None]


def _ids(number: int, values: tuple[bytes, ...]) -> bytes:
    return b"".join(_field(number, 2, v) for v in values)


def _with_unknown_fields(rpc: RPC) -> bytes:
    """``rpc`` encoded by a second, independent encoder, UNKNOWN fields around every message's fields."""
    parts = [
        _field(1, 2, _msg(_field(1, 0, bytes([s.subscribe])), _field(2, 2, s.topic.encode())))
        for s in rpc.subscriptions
    ]
    for m in rpc.publish:
        signed = _optional({1: m.from_peer, 3: m.seqno, 5: m.signature, 6: m.key})
        parts.append(_field(2, 2, _msg(_field(2, 2, m.data), _field(4, 2, m.topic.encode()), *signed)))
    if (c := rpc.control) is not None:
        control = [
            _field(1, 2, _msg(_field(1, 2, i.topic.encode()), _ids(2, i.message_ids))) for i in c.ihave
        ]
        control += [_field(2, 2, _msg(_ids(1, i.message_ids))) for i in c.iwant]
        control += [_field(3, 2, _msg(_field(1, 2, g.topic.encode()))) for g in c.graft]
        for p in c.prune:
            peers = [
                _field(2, 2, _msg(*_optional({1: _peer_bytes(i.peer_id), 2: i.signed_peer_record})))
                for i in p.peers
            ]
            backoff = [] if p.backoff is None else [_field(3, 0, _varint(p.backoff))]
            control.append(_field(4, 2, _msg(_field(1, 2, p.topic.encode()), *peers, *backoff)))
        control += [_field(5, 2, _msg(_ids(1, i.message_ids))) for i in c.idontwant]
        parts.append(_field(3, 2, _msg(*control)))
    return _msg(*parts)


@given(rpcs)
@example(RICH)
def test_unknown_fields_are_skipped_at_every_level(rpc: RPC) -> None:
    data = _with_unknown_fields(rpc)
    assert decode_rpc(data) == rpc
    assert_agrees_with_protobuf(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x8a\x00\x02\x08\x01", RPC(subscriptions=sub().subscriptions)),  # a tag in 2 bytes
        (b"\x0a\x82\x00\x08\x01", RPC(subscriptions=sub().subscriptions)),  # a length in 2 bytes
        (b"\x12\x06\x22\x01a\x22\x01b", RPC(publish=(PubMessage(topic="b", data=b""),))),  # last wins
        (b"\x0a\x0b\x08" + b"\x80" * 9 + b"\x02", sub(subscribe=False)),  # 2**64 wraps to 0, as in C
        (b"\x1a\x0d\x22\x0b\x18" + b"\xff" * 9 + b"\x7f", ctl(prune=(Prune(topic="", backoff=2**64 - 1),))),
        (b"\x0a\x02\x10\x00", sub(subscribe=False)),  # a known field with another wire type: unknown
        (b"\xf8\xff\xff\xff\x0f\x00", RPC()),  # the largest field number
        (b"\x12\x05\x10\x05\x22\x01t", RPC(publish=(PubMessage(topic="t", data=b""),))),  # data as a varint
        (b"\x1a\x04\x10\x05\x28\x01", ctl()),  # IWANT and IDONTWANT numbers as varints: unknown fields
    ],
)
def test_protobuf_corner_cases_read_as_protobuf_reads_them(data: bytes, expected: RPC) -> None:
    assert decode_rpc(data) == expected
    assert assert_agrees_with_protobuf(data) == expected


def _ids_region(lengths: list[int], declared: list[int], tail: bytes = b"", tags: bytes = b"") -> bytes:
    """An RPC with one IWANT: ids of ``lengths`` bytes whose length bytes say ``declared``, then ``tail``.

    ``tags`` replaces the tag bytes (the id field's tag, 0x0a, by default).
    """
    tags = tags or b"\x0a" * len(lengths)
    fields = b"".join(bytes([t, d]) + bytes([n]) * n for t, n, d in zip(tags, lengths, declared, strict=True))
    return _field(3, 2, _field(2, 2, fields + tail))


@pytest.mark.parametrize(
    "data",
    [
        _ids_region([32] * 5, [32] * 5, b"\x10\x00"),  # uniform ids, then an unknown field
        _ids_region([32] * 4 + [30], [32] * 4 + [30], b"\x10\x00"),  # tags on the stride, last length not
        _ids_region([32] * 4 + [31], [32] * 4 + [31], b"\x0a\x00"),  # one id short, one empty id after
        _ids_region([32] * 4, [32, 32, 33, 31]),  # lengths that add up but do not match
        _ids_region([32] * 6, [32] * 6, b"\x0a"),  # a dangling tag
        _ids_region([32] * 5, [32] * 5, tags=b"\x0a\x0a\x12\x0a\x0a"),  # an unknown field among the ids
    ],
)
def test_id_lists_that_only_look_uniform_are_read_field_by_field(data: bytes) -> None:
    try:
        expected: RPC | None = from_protobuf(PB["RPC"].FromString(data))
    except ProtobufDecodeError:
        expected = None
    result = assert_agrees_with_protobuf(data)
    assert result == expected if expected is not None else isinstance(result, DecodeError)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x0b\x0c", "groups"),  # field 1 start group, end group: protobuf skips them, we refuse
        (b"\x4b\x4c", "groups"),
        (b"\x0e", "wire type 6"),
        (b"\x0f", "wire type 7"),
        (b"\x00\x00", "field number 0"),
        (b"\xf8\xff\xff\xff\x7f\x00", "32 bits"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10"),
        (b"\x0a\x80\x80\x80\x80\x10", "truncated"),
        (b"\x12\x02\x12\x00", "no topic"),
        (b"\x0a\x04\x12\x02\xc3\x28", "UTF-8"),  # subscription topic
        (b"\x12\x03\x22\x01\xff", "UTF-8"),  # message topic
        (b"\x1a\x05\x0a\x03\x0a\x01\x80", "UTF-8"),  # IHAVE topic
        (b"\x1a\x05\x1a\x03\x0a\x01\xed", "UTF-8"),  # GRAFT topic
        (b"\x1a\x05\x22\x03\x0a\x01\xfe", "UTF-8"),  # PRUNE topic
        (b"\x1a\x06\x22\x04\x12\x02\x0a\x00", "PeerId"),  # empty PeerId
        (b"\x1a\x08\x22\x06\x12\x04\x0a\x02\x00\x01", "PeerId"),  # identity multihash, digest missing
        (b"\x1a\x08\x22\x06\x12\x04\x0a\x02\x12\x00", "PeerId"),  # sha2-256 of 0 bytes
        (b"\x1a\x08\x22\x06\x12\x04\x0a\x02\x13\x00", "PeerId"),  # unknown multihash code
    ],
)
def test_malformed_input_raises_decode_error(data: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        decode_rpc(data)
    assert_agrees_with_protobuf(data)


@pytest.mark.parametrize(
    "raw", [b"\x00\x2b" + bytes(43), b"\x12\x21" + bytes(33), b"\x00\x01", b"\x00\x81\x00" + bytes(128)]
)
def test_peer_ids_that_are_not_multihashes_of_keys_are_refused(raw: bytes) -> None:
    prune = _field(1, 2, b"p") + _field(2, 2, _field(1, 2, raw))
    with pytest.raises(DecodeError, match="PeerId"):
        decode_rpc(_field(3, 2, _field(4, 2, prune)))


def test_decoder_accepts_any_bytes_like_and_returns_bytes_fields() -> None:
    data = encode_rpc(RICH)
    assert decode_rpc(bytearray(data)) == RICH
    assert all(type(m.data) is bytes for m in decode_rpc(memoryview(data)).publish)


@pytest.mark.parametrize(
    "rpc",
    [
        ctl(prune=(Prune(topic="p", peers=(PeerInfo(peer_id="zed"),)),)),  # a simulation name, not a PeerId
        ctl(prune=(Prune(topic="p", peers=(PeerInfo(peer_id=" " + ED25519_PEERS[0]),)),)),  # not canonical
        ctl(prune=(Prune(topic="p", peers=(PeerInfo(peer_id="Qm"),)),)),  # base58, but no multihash
        ctl(prune=(Prune(topic="p", backoff=2**64),)),
        ctl(prune=(Prune(topic="p", backoff=-1),)),
        sub("\ud800"),  # a lone surrogate has no UTF-8
    ],
)
def test_caller_mistakes_raise_value_error(rpc: RPC) -> None:
    with pytest.raises(ValueError):
        encode_rpc(rpc)


# --------------------------------------------------------------------------------------- framing

payload_lists = st.lists(st.binary(max_size=300), max_size=5)


@given(payload_lists)
@example([b"", b"x" * 127, b"y" * 128, b"z"])
def test_frames_come_out_whole_at_every_split_point(payloads: list[bytes]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == payloads
    decoder = FrameDecoder()
    assert [f for i in range(len(stream)) for f in decoder.feed(stream[i : i + 1])] == payloads


def test_a_three_byte_prefix_split_anywhere_in_it() -> None:
    stream = frame(b"a") + frame(b"z" * 16384) + frame(b"b")
    for cut in range(2, 6):  # before, inside and after the 3-byte prefix of the second frame
        decoder = FrameDecoder()
        assert decoder.feed(stream[:cut]) == [b"a"]
        assert decoder.feed(stream[cut:]) == [b"z" * 16384, b"b"]


def test_frame_prefix_is_the_unsigned_varint_length() -> None:
    assert frame(b"") == b"\x00"
    assert frame(b"a" * 300) == b"\xac\x02" + b"a" * 300
    assert len(frame(bytes(DEFAULT_MAX_RPC_SIZE))) == DEFAULT_MAX_RPC_SIZE + 3


def test_oversized_frame_is_refused_before_its_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    assert decoder.feed(frame(b"a" * 1000)[:2]) == []
    decoder = FrameDecoder(max_frame_size=1000)
    with pytest.raises(TooLarge) as caught:
        decoder.feed(frame(b"a" * 1001)[:2])  # the prefix alone
    assert (caught.value.size, caught.value.limit) == (1001, 1000)
    with pytest.raises(TooLarge):  # the stream cannot be resynchronised: it stays failed
        decoder.feed(b"a")
    with pytest.raises(TooLarge):
        FrameDecoder().feed(b"\xff\xff\xff\x7f")  # 256 MiB declared


@pytest.mark.parametrize(
    "prefix",
    [b"\x80" * MAX_FRAME_PREFIX_BYTES, b"\x80" * 9 + b"\x01", b"\xff" * 10, b"\x81\x00", b"\x80\x80\x00"],
)
def test_overlong_or_non_minimal_frame_prefix_is_refused(prefix: bytes) -> None:
    decoder = FrameDecoder(max_frame_size=2**70)
    with pytest.raises(DecodeError) as caught:
        for byte in prefix:
            decoder.feed(bytes([byte]))
    assert not isinstance(caught.value, TooLarge)
    with pytest.raises(DecodeError):  # and it stays failed
        decoder.feed(b"\x01")


@settings(max_examples=50)
@given(st.lists(st.binary(max_size=20), max_size=10))
def test_frame_decoder_never_raises_anything_else(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame_size=64)
    try:
        for chunk in chunks:
            for body in decoder.feed(chunk):
                assert len(body) <= 64
    except DecodeError:
        pass
