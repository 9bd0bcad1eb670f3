"""Group operations: one byte form per operation, every per-kind rule enforced, signatures binding.

Decoding must either return the identical operation or raise ``TooLarge``, ``DecodeError`` or
``BadSignature`` (never anything else), whatever bytes it is handed.
"""

from __future__ import annotations

import dataclasses
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.errors import BadSignature, DecodeError, TooLarge
from meshchat.groups.ops import (
    CREATE_NONCE_SIZE,
    MAX_GROUP_MEMBERS,
    MAX_NAME_BYTES,
    MAX_OP_SIZE,
    MAX_PARENTS,
    MAX_TARGETS,
    GroupOp,
    OpKind,
    decode_op,
    encode_op,
    op_id_of,
    sign_op,
)
from meshchat.identity import Identity, KeyCache
from meshchat.sim.payloads import make_identities

ALICE, BOB, CAROL = make_identities(3, random.Random(13))
KEYS = [bytes([i]) * 32 for i in range(1, 40)]
PARENT = bytes(range(32))


def _create(members: int = 3, name: str = "family") -> GroupOp:
    targets = {ALICE.public.ed25519, BOB.public.ed25519, *KEYS[: members - 2]}
    return sign_op(
        ALICE,
        kind=OpKind.CREATE,
        group_id=b"",
        parents=(),
        targets=targets,
        name=name,
        nonce=b"n" * CREATE_NONCE_SIZE,
        created_at_ms=1_700_000_000_000,
    )


def _op(kind: OpKind, *, identity: Identity = ALICE, **fields: object) -> GroupOp:
    base: dict[str, object] = {
        "group_id": _create().op_id,
        "parents": (PARENT,),
        "created_at_ms": 1_700_000_000_001,
    }
    if kind in (OpKind.ADD, OpKind.REMOVE, OpKind.PROMOTE, OpKind.DEMOTE):
        base["targets"] = (BOB.public.ed25519,)
    if kind is OpKind.RENAME:
        base["name"] = "new name"
    base.update(fields)
    return sign_op(identity, kind=kind, **base)  # type: ignore[arg-type]


def _all_kinds() -> list[GroupOp]:
    return [_create()] + [_op(kind) for kind in OpKind if kind is not OpKind.CREATE]


def _fields(op: GroupOp) -> dict[int, object]:
    value = msgpack.unpackb(encode_op(op), raw=False, strict_map_key=False)
    assert isinstance(value, dict)
    return value


def _resigned(fields: dict[int, object], identity: Identity = ALICE) -> bytes:
    """Encode ``fields`` with a valid signature over them: only the per-kind rules can refuse it."""
    unsigned = {k: v for k, v in fields.items() if k != 9}
    signature = identity.sign(b"meshchat/group-op/v1\x00" + msgpack.packb(dict(sorted(unsigned.items()))))
    return msgpack.packb(dict(sorted({**unsigned, 9: signature}.items())), use_bin_type=True)


@pytest.mark.parametrize("op", _all_kinds(), ids=lambda op: op.kind.name)
def test_round_trip_every_kind(op: GroupOp) -> None:
    data = encode_op(op)
    assert decode_op(data) == op
    assert decode_op(data, key_cache=KeyCache()) == op
    assert op.op_id == op_id_of(data)
    assert encode_op(decode_op(data)) == data


def test_group_id_is_the_create_op_id() -> None:
    create = _create()
    assert create.group_id == b""
    add = _op(OpKind.ADD, group_id=create.op_id)
    assert add.group_id == create.op_id == op_id_of(encode_op(create))
    other = sign_op(
        ALICE,
        kind=OpKind.CREATE,
        group_id=b"",
        parents=(),
        targets=(ALICE.public.ed25519,),
        name="family",
        nonce=b"m" * CREATE_NONCE_SIZE,
        created_at_ms=1_700_000_000_000,
    )
    assert other.op_id != create.op_id  # only the nonce differs: another group


def test_sign_op_sorts_and_deduplicates() -> None:
    op = _op(OpKind.ADD, targets=(KEYS[3], KEYS[1], KEYS[3]), parents=(KEYS[9], KEYS[2]))
    assert op.targets == (KEYS[1], KEYS[3])
    assert op.parents == (KEYS[2], KEYS[9])


def test_full_create_fits() -> None:
    members = make_identities(MAX_GROUP_MEMBERS - 1, random.Random(1))
    op = sign_op(
        ALICE,
        kind=OpKind.CREATE,
        group_id=b"",
        parents=(),
        targets=[m.public.ed25519 for m in members] + [ALICE.public.ed25519],
        name="x" * MAX_NAME_BYTES,
        nonce=b"n" * CREATE_NONCE_SIZE,
        created_at_ms=2**63 - 1,
    )
    data = encode_op(op)
    assert len(data) <= MAX_OP_SIZE
    assert decode_op(data) == op


_CREATE_BAD: list[tuple[str, dict[int, object]]] = [
    ("create with a group id", {2: PARENT}),
    ("create with parents", {4: PARENT}),
    ("create without members", {5: b""}),
    ("create without its author", {5: KEYS[0]}),
    ("create without a nonce", {7: b""}),
    ("create with a short nonce", {7: b"n" * 15}),
    ("create with an empty name", {6: ""}),
    ("create with a long name", {6: "x" * (MAX_NAME_BYTES + 1)}),
    ("create with a control character", {6: "fam\nily"}),
    ("create with a bidi override", {6: "fam\u202eily"}),
    (
        "create with too many members",
        {5: b"".join(sorted(bytes([i, j]) * 16 for i in range(4) for j in range(251)))},
    ),
]

_ADD_BAD: list[tuple[str, dict[int, object]]] = [
    ("add without a group id", {2: b""}),
    ("add with a short group id", {2: b"g" * 31}),
    ("add without parents", {4: b""}),
    ("add with too many parents", {4: b"".join(bytes([i]) * 32 for i in range(1, MAX_PARENTS + 2))}),
    ("add with unsorted parents", {4: KEYS[2] + KEYS[1]}),
    ("add with a repeated parent", {4: KEYS[1] + KEYS[1]}),
    ("add with a ragged parent list", {4: KEYS[1] + b"x"}),
    ("add without targets", {5: b""}),
    (
        "add with too many targets",
        {5: b"".join(sorted(bytes([i, j]) * 16 for i in range(5) for j in range(250)))},
    ),
    ("add with unsorted targets", {5: KEYS[2] + KEYS[1]}),
    ("add with a name", {6: "x"}),
    ("add with a nonce", {7: b"n" * 16}),
    ("add with a negative time", {8: -1}),
    ("add with a float time", {8: 1.5}),
    ("add with a bool time", {8: True}),
    ("add with a bool kind", {1: True}),
    ("add with kind 0", {1: 0}),
    ("add with kind 8", {1: 8}),
    ("add with a str author", {3: "a" * 32}),
    ("add with a short author", {3: b"a" * 31}),
    ("add with str parents", {4: "p" * 32}),
    ("add with a list of parents", {4: [PARENT]}),
    ("add with bytes name", {6: b""}),
]


def test_rule_table_bounds_are_the_constants() -> None:
    assert MAX_TARGETS == MAX_GROUP_MEMBERS == 1000
    assert len(_CREATE_BAD[-1][1][5]) // 32 == MAX_GROUP_MEMBERS + 4  # type: ignore[arg-type]
    assert len(_ADD_BAD[8][1][5]) // 32 == MAX_TARGETS + 250  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("label", "change"), _CREATE_BAD + _ADD_BAD, ids=[c[0] for c in _CREATE_BAD + _ADD_BAD]
)
def test_each_rule_violation_is_refused(label: str, change: dict[int, object]) -> None:
    base = _create() if label.startswith("create") else _op(OpKind.ADD)
    fields = {**_fields(base), **change}
    with pytest.raises(DecodeError) as info:
        decode_op(_resigned(fields))
    assert not isinstance(info.value, TooLarge) or len(_resigned(fields)) > MAX_OP_SIZE


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        (OpKind.LEAVE, {5: KEYS[1]}),
        (OpKind.RENAME, {5: KEYS[1]}),
        (OpKind.RENAME, {6: ""}),
        (OpKind.RENAME, {6: "\x00"}),
        (OpKind.LEAVE, {6: "x"}),
        (OpKind.REMOVE, {5: b""}),
        (OpKind.PROMOTE, {5: b""}),
        (OpKind.DEMOTE, {5: b""}),
        (OpKind.RENAME, {7: b"n" * 16}),
    ],
    ids=lambda v: v.name if isinstance(v, OpKind) else str(sorted(v)),
)
def test_per_kind_rules(kind: OpKind, change: dict[int, object]) -> None:
    fields = {**_fields(_op(kind)), **change}
    with pytest.raises(DecodeError):
        decode_op(_resigned(fields))


def test_missing_and_extra_fields_are_refused() -> None:
    fields = _fields(_op(OpKind.ADD))
    for key in fields:
        if key != 9:
            with pytest.raises(DecodeError):
                decode_op(_resigned({k: v for k, v in fields.items() if k != key}))
    with pytest.raises(DecodeError):
        decode_op(_resigned({**fields, 10: 0}))


def test_construction_checks_the_rules() -> None:
    good = _op(OpKind.ADD)
    with pytest.raises(ValueError, match="names 1 to"):
        GroupOp(
            **{
                **{f.name: getattr(good, f.name) for f in dataclasses.fields(GroupOp) if f.init},
                "targets": (),
            }
        )
    with pytest.raises(ValueError, match="CREATE"):
        sign_op(
            ALICE,
            kind=OpKind.CREATE,
            group_id=b"",
            parents=(),
            targets=(BOB.public.ed25519,),
            name="x",
            nonce=bytes(16),
            created_at_ms=0,
        )


def test_oversized_input_is_too_large_before_parsing() -> None:
    with pytest.raises(TooLarge):
        decode_op(b"\xc1" * (MAX_OP_SIZE + 1))


def test_author_not_a_curve_point_is_a_decode_error() -> None:
    fields = _fields(_op(OpKind.ADD))
    fields[3] = bytes(32)  # small order point
    with pytest.raises(DecodeError):
        decode_op(_resigned(fields))


def test_every_changed_byte_is_refused() -> None:
    """Flip each byte of a valid encoding in turn: a typed error every time, never a forgery."""
    for op in _all_kinds():
        data = encode_op(op)
        for i in range(len(data)):
            for flip in (0x01, 0x80):
                mutated = data[:i] + bytes([data[i] ^ flip]) + data[i + 1 :]
                with pytest.raises((DecodeError, BadSignature)):
                    decode_op(mutated)


def test_signature_by_another_key_is_refused() -> None:
    fields = _fields(_op(OpKind.ADD))
    with pytest.raises(BadSignature):
        decode_op(_resigned(fields, identity=BOB))  # Bob signs an op claiming Alice as author


def test_signature_is_bound_to_the_domain() -> None:
    op = _op(OpKind.ADD)
    fields = _fields(op)
    unsigned = {k: v for k, v in fields.items() if k != 9}
    fields[9] = ALICE.sign(msgpack.packb(dict(sorted(unsigned.items()))))  # no domain prefix
    with pytest.raises(BadSignature):
        decode_op(msgpack.packb(dict(sorted(fields.items())), use_bin_type=True))


_SEEDS = [encode_op(op) for op in _all_kinds()]


def _check_decode(data: bytes) -> None:
    try:
        op = decode_op(data)
    except (DecodeError, BadSignature):
        return  # TooLarge is a DecodeError
    assert encode_op(op) == data  # one byte form: anything accepted is exactly what it decodes to


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _check_decode(data)


@settings(max_examples=400, deadline=None)
@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255), st.sampled_from("rid")),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_mutated_valid_encodings(seed: bytes, edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(seed)
    for position, value, how in edits:
        i = position % (len(data) + 1)
        if how == "r" and i < len(data):
            data[i] = value
        elif how == "i":
            data.insert(i, value)
        elif i < len(data):
            del data[i]
    _check_decode(bytes(data))
