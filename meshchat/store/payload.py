"""What travels inside a sealed envelope's body: a chat message, a receipt or a control message.

The seal (``meshchat.crypto.seal``) signs and encrypts a body; this module gives that body a shape,
a canonical msgpack map with integer keys::

    chat:     {1: 1, 2: seq, 3: body [, 6: devices]}  seq = position in the sender's conversation
    receipt:  {1: 2, 4: receipt kind, 5: [ids...]}     kind 1 = delivered, 2 = read
    control:  {1: 3, 2: seq, 3: body [, 6: devices]}  machinery (groups: invites, chain handouts)
    copy:     {1: 4, 2: seq, 3: body, 7: to}           a chat one of our devices sent to ``to``
    devices:  {1: 5, 2: seq, 6: devices}               the sender's new signed device list
    grant:    {1: 6, 2: seq, 6: devices, 8: snapshot}  the primary device admits a new one

``devices`` is a signed device list (``meshchat.identity.devices``), as bytes: a linked device attaches
its person's list to the first messages of a session, so the recipient knows whose device it is.

A control message travels and is receipted like a chat, but is not for the user's inbox: the
messenger hands it to the machinery it is for (``ControlReceived``), which is its own dedup.

A receipt is sealed to the original sender and signed by the recipient like any message, so nobody
on the way (relay, mailbox) can read it, let alone forge "delivered". One receipt covers up to
``MAX_RECEIPT_IDS`` messages, so syncing thousands of messages costs a handful of receipts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from meshchat.errors import DecodeError
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "MAX_RECEIPT_IDS",
    "MAX_SNAPSHOT",
    "Chat",
    "Control",
    "Copy",
    "DeviceUpdate",
    "Grant",
    "Payload",
    "Receipt",
    "ReceiptKind",
    "decode_payload",
    "encode_payload",
]

#: Message ids one receipt may name: 1,000 x 33 bytes stays well inside one envelope (64 KiB).
MAX_RECEIPT_IDS = 1000
_ID_SIZE = 32
_CHAT, _RECEIPT, _CONTROL, _COPY, _DEVICES, _GRANT = 1, 2, 3, 4, 5, 6
_K_TYPE, _K_SEQ, _K_BODY, _K_RECEIPT_KIND, _K_IDS, _K_DEVICES, _K_TO, _K_SNAPSHOT = 1, 2, 3, 4, 5, 6, 7, 8
#: Largest profile snapshot a grant carries (the rest of an envelope holds the device list and framing).
MAX_SNAPSHOT = 48 * 1024
#: Largest encoded device list a payload carries (16 devices with names stay far below).
_MAX_DEVICES_BYTES = 4096
_MAX_SEQ = 2**63 - 1
#: Decoding limit for a body, bytes: an envelope's body can never be larger.
_MAX_PAYLOAD = 64 * 1024


class ReceiptKind(IntEnum):
    """What a receipt says about the messages it names."""

    #: The recipient's node accepted them (stored in its inbox).
    DELIVERED = 1
    #: The recipient's application marked them read.
    READ = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Chat:
    """An application message."""

    #: Position in the sender's conversation with this recipient: 1, 2, ...
    seq: int
    #: The application's bytes.
    body: bytes
    #: The sender's person's signed device list (a linked device's first messages), or b"".
    devices: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """The recipient's signed statement that it received (or read) messages."""

    #: Delivered or read.
    kind: ReceiptKind
    #: Ids of the messages it covers.
    message_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Control:
    """A message for the node's machinery (group invites, chain handouts, group receipts), not the inbox."""

    #: Position in the sender's conversation with this recipient (shared with chats): 1, 2, ...
    seq: int
    #: The machinery's bytes.
    body: bytes
    #: As ``Chat.devices``.
    devices: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy:
    """A chat one of our other devices sent, so every device shows the whole conversation."""

    seq: int
    #: What was sent.
    body: bytes
    #: To whom (their root key).
    to: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceUpdate:
    """The sender's person's new signed device list (a device added or removed)."""

    seq: int
    devices: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """The primary device admits a new device: the signed list naming it, and the profile to start from."""

    seq: int
    devices: bytes
    #: The node's bytes for the new device (name, the root's invite, contacts), at most ``MAX_SNAPSHOT``.
    snapshot: bytes


Payload: TypeAlias = Chat | Receipt | Control | Copy | DeviceUpdate | Grant


def encode_payload(payload: Payload) -> bytes:
    """The body bytes to seal for ``payload``."""
    if isinstance(payload, Chat | Control):
        kind = _CHAT if isinstance(payload, Chat) else _CONTROL
        fields: dict[int, object] = {_K_TYPE: kind, _K_SEQ: payload.seq, _K_BODY: payload.body}
        if payload.devices:
            fields[_K_DEVICES] = payload.devices
        return pack(fields)
    if isinstance(payload, Copy):
        return pack({_K_TYPE: _COPY, _K_SEQ: payload.seq, _K_BODY: payload.body, _K_TO: payload.to})
    if isinstance(payload, DeviceUpdate):
        return pack({_K_TYPE: _DEVICES, _K_SEQ: payload.seq, _K_DEVICES: payload.devices})
    if isinstance(payload, Grant):
        return pack(
            {_K_TYPE: _GRANT, _K_SEQ: payload.seq, _K_DEVICES: payload.devices, _K_SNAPSHOT: payload.snapshot}
        )
    if not 0 < len(payload.message_ids) <= MAX_RECEIPT_IDS:
        raise ValueError(f"a receipt names 1 to {MAX_RECEIPT_IDS} messages, not {len(payload.message_ids)}")
    # codec.pack limits containers to 64 items; the ids list is one flat bytes string instead.
    return pack(
        {_K_TYPE: _RECEIPT, _K_RECEIPT_KIND: int(payload.kind), _K_IDS: b"".join(payload.message_ids)}
    )


def decode_payload(data: bytes) -> Payload:
    """Parse a sealed body; ``DecodeError`` for anything but a well-formed chat, receipt or control."""
    fields = unpack_canonical(data, what="message payload", limit=_MAX_PAYLOAD)
    if not isinstance(fields, dict):
        raise DecodeError("message payload", "not a map")
    kind = fields.get(_K_TYPE)
    if type(kind) is not int:
        # True == 1 == 1.0 in Python: without this exact-type check ``True`` and ``1.0`` would be two more
        # byte forms of a chat's type tag (each canonical msgpack in itself), so one payload, three ids.
        raise DecodeError("message payload", f"payload type must be an integer, not {kind!r}")
    if kind in (_CHAT, _CONTROL, _COPY, _DEVICES, _GRANT):
        return _decode_numbered(kind, fields)
    if kind == _RECEIPT and fields.keys() == {_K_TYPE, _K_RECEIPT_KIND, _K_IDS}:
        receipt_kind, ids = fields[_K_RECEIPT_KIND], fields[_K_IDS]
        if type(receipt_kind) is not int or receipt_kind not in ReceiptKind._value2member_map_:
            raise DecodeError("message payload", f"unknown receipt kind {receipt_kind!r}")
        if type(ids) is not bytes or not ids or len(ids) % _ID_SIZE or len(ids) > _ID_SIZE * MAX_RECEIPT_IDS:
            raise DecodeError("message payload", "receipt ids must be 1 to 1,000 ids of 32 bytes")
        split = tuple(ids[i : i + _ID_SIZE] for i in range(0, len(ids), _ID_SIZE))
        return Receipt(kind=ReceiptKind(receipt_kind), message_ids=split)
    raise DecodeError("message payload", f"unknown payload type {kind!r} or wrong fields")


_SHAPES: dict[int, tuple[frozenset[int], ...]] = {
    _CHAT: (frozenset({_K_TYPE, _K_SEQ, _K_BODY}), frozenset({_K_TYPE, _K_SEQ, _K_BODY, _K_DEVICES})),
    _CONTROL: (frozenset({_K_TYPE, _K_SEQ, _K_BODY}), frozenset({_K_TYPE, _K_SEQ, _K_BODY, _K_DEVICES})),
    _COPY: (frozenset({_K_TYPE, _K_SEQ, _K_BODY, _K_TO}),),
    _DEVICES: (frozenset({_K_TYPE, _K_SEQ, _K_DEVICES}),),
    _GRANT: (frozenset({_K_TYPE, _K_SEQ, _K_DEVICES, _K_SNAPSHOT}),),
}


def _decode_numbered(kind: int, fields: dict[object, object]) -> Payload:
    if fields.keys() not in _SHAPES[kind]:
        raise DecodeError("message payload", f"payload type {kind} with the wrong fields")
    seq = fields[_K_SEQ]
    if type(seq) is not int or not 0 < seq <= _MAX_SEQ:
        raise DecodeError("message payload", "seq has the wrong type or range")
    body, devices = fields.get(_K_BODY, b""), fields.get(_K_DEVICES, b"")
    to, snapshot = fields.get(_K_TO, b""), fields.get(_K_SNAPSHOT, b"")
    if (
        type(body) is not bytes
        or type(devices) is not bytes
        or type(to) is not bytes
        or type(snapshot) is not bytes
    ):
        raise DecodeError("message payload", "a field has the wrong type")
    if (_K_DEVICES in fields and not 0 < len(devices) <= _MAX_DEVICES_BYTES) or len(snapshot) > MAX_SNAPSHOT:
        raise DecodeError("message payload", "device list or snapshot size out of range")
    if kind == _CHAT:
        return Chat(seq=seq, body=body, devices=devices)
    if kind == _CONTROL:
        return Control(seq=seq, body=body, devices=devices)
    if kind == _COPY:
        if len(to) != 32:
            raise DecodeError("message payload", "a copy's recipient is not a 32-byte key")
        return Copy(seq=seq, body=body, to=to)
    if kind == _DEVICES:
        return DeviceUpdate(seq=seq, devices=devices)
    return Grant(seq=seq, devices=devices, snapshot=snapshot)
