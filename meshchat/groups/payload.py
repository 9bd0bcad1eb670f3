"""The bodies groups send: inside group envelopes, and as control messages on the sealed 1:1 path.

Canonical msgpack maps with integer keys (``meshchat.wire.codec``)::

    group message body (sealed with the sender's chain, ``meshchat.groups.seal``):
      text:     {1: 1, 2: body, 3: ref}
      ops:      {1: 2, 4: [op, ...]}                 membership operations (``meshchat.groups.ops``)
    control body (a ``Control`` payload sealed to one member, ``meshchat.store.payload``):
      ops:      {1: 1, 2: group id, 3: [op, ...]}    an invitation (the op set, in parts) or news
      chain:    {1: 2, 2: group id, 3: generation, 4: handout}
      receipt:  {1: 3, 2: group id, 3: kind, 4: ids}  kind 1 = delivered, 2 = read; ids flat, 32 bytes each
      wanted:   {1: 4, 2: group id, 3: op ids}        ops we lack (parents of ops we hold); ids flat

Ops travel as a list of at most ``MAX_OPS_PER_BODY`` encoded ops whose total stays within
``MAX_OPS_BYTES`` (``pack_ops`` cuts a longer list into several bodies). A decoder accepts exactly
these shapes and raises ``DecodeError`` (or ``TooLarge``) for anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from meshchat.errors import DecodeError
from meshchat.store.payload import MAX_RECEIPT_IDS, ReceiptKind
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "MAX_OPS_BYTES",
    "MAX_OPS_PER_BODY",
    "MAX_WANTED_OPS",
    "ChainControl",
    "Control",
    "GroupBody",
    "OpsBody",
    "OpsControl",
    "OpsWanted",
    "ReceiptControl",
    "TextBody",
    "decode_body",
    "decode_control",
    "encode_body",
    "encode_control",
    "pack_ops",
]

#: Ops in one body: the codec's container limit (64) with room to spare.
MAX_OPS_PER_BODY = 48
#: Bytes of ops in one body: a CREATE naming 1,000 members (~32 KB) fits, with the envelope's framing.
MAX_OPS_BYTES = 48 * 1024
#: Decoding limit of a body (no envelope carries more).
_MAX_BODY = 64 * 1024
_ID = 32
_K_TYPE = 1
_TEXT, _OPS = 1, 2
_C_OPS, _C_CHAIN, _C_RECEIPT, _C_WANTED = 1, 2, 3, 4
#: Op ids one ``OpsWanted`` names.
MAX_WANTED_OPS = 64
_MAX_REF_BYTES = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class TextBody:
    """An application message to the group."""

    #: The application's bytes.
    body: bytes
    #: The sender's reference (what it replies to, or an idempotency key); "" if none.
    ref: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsBody:
    """Membership operations published to the group."""

    #: Encoded ops (``meshchat.groups.ops.encode_op``).
    ops: tuple[bytes, ...]


GroupBody: TypeAlias = TextBody | OpsBody


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsControl:
    """Ops of one group sent to one member: an invitation (the whole set) or what it missed."""

    #: The group.
    group_id: bytes
    #: Encoded ops.
    ops: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainControl:
    """A member's sending chain for a group (``meshchat.groups.chains.ChainHandout`` bytes)."""

    #: The group.
    group_id: bytes
    #: The sender's chain number in this group (1, 2, ...): older handouts arriving late are ignored.
    generation: int
    #: The encoded handout.
    handout: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptControl:
    """Group messages of the recipient's that the sender of this receipt received or read."""

    #: The group.
    group_id: bytes
    #: Delivered or read.
    kind: ReceiptKind
    #: The message ids (at most ``MAX_RECEIPT_IDS``).
    message_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsWanted:
    """A member asks for ops it lacks: parents named by ops it holds (answered with ``OpsControl``)."""

    #: The group.
    group_id: bytes
    #: The op ids (at most ``MAX_WANTED_OPS``).
    op_ids: tuple[bytes, ...]


Control: TypeAlias = OpsControl | ChainControl | ReceiptControl | OpsWanted


def encode_body(body: GroupBody) -> bytes:
    """The bytes to seal with the sender's chain."""
    if isinstance(body, TextBody):
        if len(body.ref.encode("utf-8")) > _MAX_REF_BYTES:
            raise ValueError(f"ref is longer than {_MAX_REF_BYTES} bytes")
        return pack({_K_TYPE: _TEXT, 2: body.body, 3: body.ref})
    _check_ops(body.ops)
    return pack({_K_TYPE: _OPS, 4: list(body.ops)})


def decode_body(data: bytes) -> GroupBody:
    """Parse a group message body; ``DecodeError`` for anything else."""
    fields = _fields(data, "group message body")
    kind = fields.get(_K_TYPE)
    if kind == _TEXT and fields.keys() == {_K_TYPE, 2, 3}:
        body, ref = fields[2], fields[3]
        if type(body) is not bytes or type(ref) is not str or len(ref.encode("utf-8")) > _MAX_REF_BYTES:
            raise DecodeError("group message body", "text body or ref has the wrong type or size")
        return TextBody(body=body, ref=ref)
    if kind == _OPS and fields.keys() == {_K_TYPE, 4}:
        return OpsBody(ops=_ops_of(fields[4], "group message body"))
    raise DecodeError("group message body", f"unknown body type {kind!r} or wrong fields")


def encode_control(control: Control) -> bytes:
    """The bytes to seal to one member as a control message."""
    _check_id(control.group_id)
    match control:
        case OpsControl():
            _check_ops(control.ops)
            return pack({_K_TYPE: _C_OPS, 2: control.group_id, 3: list(control.ops)})
        case ChainControl():
            if not 0 < control.generation < 2**63:
                raise ValueError("generation out of range")
            return pack({_K_TYPE: _C_CHAIN, 2: control.group_id, 3: control.generation, 4: control.handout})
        case OpsWanted():
            if not 0 < len(control.op_ids) <= MAX_WANTED_OPS or any(len(i) != _ID for i in control.op_ids):
                raise ValueError(f"1 to {MAX_WANTED_OPS} op ids of 32 bytes")
            return pack({_K_TYPE: _C_WANTED, 2: control.group_id, 3: b"".join(control.op_ids)})
        case ReceiptControl():
            if not 0 < len(control.message_ids) <= MAX_RECEIPT_IDS:
                raise ValueError(f"a receipt names 1 to {MAX_RECEIPT_IDS} messages")
            ids = b"".join(control.message_ids)
            return pack({_K_TYPE: _C_RECEIPT, 2: control.group_id, 3: int(control.kind), 4: ids})


def decode_control(data: bytes) -> Control:
    """Parse a control body; ``DecodeError`` for anything else."""
    what = "group control message"
    fields = _fields(data, what)
    kind, group_id = fields.get(_K_TYPE), fields.get(2)
    if type(group_id) is not bytes or len(group_id) != _ID:
        raise DecodeError(what, "group id must be 32 bytes")
    if kind == _C_OPS and fields.keys() == {_K_TYPE, 2, 3}:
        return OpsControl(group_id=group_id, ops=_ops_of(fields[3], what))
    if kind == _C_CHAIN and fields.keys() == {_K_TYPE, 2, 3, 4}:
        generation, handout = fields[3], fields[4]
        if type(generation) is not int or not 0 < generation < 2**63 or type(handout) is not bytes:
            raise DecodeError(what, "chain generation or handout has the wrong type or range")
        return ChainControl(group_id=group_id, generation=generation, handout=handout)
    if kind == _C_RECEIPT and fields.keys() == {_K_TYPE, 2, 3, 4}:
        receipt_kind, ids = fields[3], fields[4]
        if type(receipt_kind) is not int or receipt_kind not in ReceiptKind._value2member_map_:
            raise DecodeError(what, f"unknown receipt kind {receipt_kind!r}")
        if type(ids) is not bytes or not ids or len(ids) % _ID or len(ids) > _ID * MAX_RECEIPT_IDS:
            raise DecodeError(what, "receipt ids must be 1 to 1,000 ids of 32 bytes")
        split = tuple(ids[i : i + _ID] for i in range(0, len(ids), _ID))
        return ReceiptControl(group_id=group_id, kind=ReceiptKind(receipt_kind), message_ids=split)
    if kind == _C_WANTED and fields.keys() == {_K_TYPE, 2, 3}:
        ids = fields[3]
        if type(ids) is not bytes or not ids or len(ids) % _ID or len(ids) > _ID * MAX_WANTED_OPS:
            raise DecodeError(what, f"wanted op ids must be 1 to {MAX_WANTED_OPS} ids of 32 bytes")
        return OpsWanted(group_id=group_id, op_ids=tuple(ids[i : i + _ID] for i in range(0, len(ids), _ID)))
    raise DecodeError(what, f"unknown control type {kind!r} or wrong fields")


def pack_ops(ops: Sequence[bytes]) -> list[tuple[bytes, ...]]:
    """Cut encoded ops into parts that each fit one body (order kept)."""
    parts: list[tuple[bytes, ...]] = []
    current: list[bytes] = []
    size = 0
    for op in ops:
        if len(op) > MAX_OPS_BYTES:
            raise ValueError(f"an op of {len(op):,} bytes does not fit a body")
        if current and (len(current) == MAX_OPS_PER_BODY or size + len(op) > MAX_OPS_BYTES):
            parts.append(tuple(current))
            current, size = [], 0
        current.append(op)
        size += len(op)
    if current:
        parts.append(tuple(current))
    return parts


def _fields(data: bytes, what: str) -> dict[object, object]:
    fields = unpack_canonical(data, what=what, limit=_MAX_BODY)
    if not isinstance(fields, dict):
        raise DecodeError(what, "not a map")
    if type(fields.get(_K_TYPE)) is not int:
        raise DecodeError(what, "type must be an integer")
    return fields


def _ops_of(value: object, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list | tuple) or not 0 < len(value) <= MAX_OPS_PER_BODY:
        raise DecodeError(what, f"ops must be a list of 1 to {MAX_OPS_PER_BODY}")
    if any(type(op) is not bytes for op in value) or sum(len(op) for op in value) > MAX_OPS_BYTES:
        raise DecodeError(what, "ops must be bytes, within the size limit")
    return tuple(value)


def _check_ops(ops: Sequence[bytes]) -> None:
    if not 0 < len(ops) <= MAX_OPS_PER_BODY or sum(len(op) for op in ops) > MAX_OPS_BYTES:
        raise ValueError("1 to 48 ops, within 48 KiB: cut them with pack_ops")


def _check_id(group_id: bytes) -> None:
    if len(group_id) != _ID:
        raise ValueError("a group id is 32 bytes")
