"""The chunk protocol's messages: ``/meshchat/chunks/1.0.0`` (a libp2p stream, or a bulk channel).

Each frame is one canonical msgpack map with integer keys, field 1 its type. A stream carries many
requests and the answers come in request order, so a client keeps several in flight::

    GET   {1: 1, 2: [address, ...]}                    -> CHUNK or MISSING for each address, in order
    HOLD  {1: 2, 2: file_id, 3: expiry, 4: [token hash, ...], 5: total bytes}   -> OK | ERROR
    PUT   {1: 3, 2: file_id, 3: address, 4: data}      -> OK | ERROR
    DONE  {1: 4, 2: file_id, 3: token}                 -> OK
    HAS   {1: 5, 2: [address, ...]}                    -> HELD {1: 14, 2: [address, ...]}
    BULK  {1: 6}                                       -> OFFER {1: 15, 2: port, 3: ticket, 4: key} | ERROR
    CHUNK {1: 10, 2: address, 3: data}    MISSING {1: 11, 2: address}
    OK    {1: 12}                         ERROR   {1: 13, 2: code, 3: text}

Every field is checked against its bound on decode (``DecodeError``); the frame itself is bounded by
``MAX_CHUNK_FRAME`` before decoding, so a chunk-sized frame is the most a peer can make anyone buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeAlias

from meshchat.errors import DecodeError
from meshchat.files.chunks import ADDRESS_SIZE, KEY_SIZE, MAX_CHUNK_WIRE, TOKEN_SIZE
from meshchat.wire.codec import pack, unpack_bounded

__all__ = [
    "CHUNK_PROTOCOL",
    "MAX_CHUNK_FRAME",
    "MAX_GET",
    "MAX_TOKENS",
    "Bulk",
    "ChunkData",
    "ChunkMissing",
    "ChunkReply",
    "ChunkRequest",
    "Done",
    "ErrorCode",
    "Failed",
    "Get",
    "Has",
    "Held",
    "Hold",
    "Offer",
    "Ok",
    "Put",
    "decode_reply",
    "decode_request",
    "encode",
]

CHUNK_PROTOCOL: Final = "/meshchat/chunks/1.0.0"
#: Addresses one GET or HAS may name (64 chunks: 16 MiB of answers; a client pipelines more GETs).
MAX_GET: Final = 64
#: Token hashes one HOLD may carry: one per recipient, a 1,000-member group's file fits.
MAX_TOKENS: Final = 1024
#: The largest frame: a chunk with its address and framing, or a HOLD with all its token hashes.
MAX_CHUNK_FRAME: Final = MAX_CHUNK_WIRE + 1024
_MAX_TEXT = 512


class ErrorCode(IntEnum):
    """Why a request was refused."""

    #: Not understood.
    BAD_REQUEST = 1
    #: This peer holds nothing for others (not a mailbox).
    NOT_A_MAILBOX = 2
    #: The uploader's or the mailbox's quota is used up.
    QUOTA = 3
    #: PUT for a file never registered with HOLD.
    UNKNOWN_FILE = 4
    #: The bytes do not hash to the address.
    MISMATCH = 5
    #: The mailbox's disk failed.
    STORAGE = 6
    #: No bulk channel here.
    NO_BULK = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class Get:
    """Send these chunks."""

    addresses: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """Keep a file's chunks (an upload to a mailbox starts with this)."""

    file_id: bytes
    expiry: int
    token_hashes: tuple[bytes, ...]
    total_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Put:
    """One chunk of a held file."""

    file_id: bytes
    address: bytes
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """A recipient has the whole file: its token."""

    file_id: bytes
    token: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Has:
    """Which of these chunks do you hold (an upload resuming)."""

    addresses: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Bulk:
    """Offer me a bulk channel."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkData:
    """A chunk's bytes (not yet checked: the receiver hashes them)."""

    address: bytes
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkMissing:
    """Not held here."""

    address: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Ok:
    """Done as asked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """Refused, and why."""

    code: ErrorCode
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    """The chunks of a HAS that are held."""

    addresses: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """Connect to ``port`` (same IP as this connection) and show ``ticket``; frames keyed by ``key``."""

    port: int
    ticket: bytes
    key: bytes


ChunkRequest: TypeAlias = Get | Hold | Put | Done | Has | Bulk
ChunkReply: TypeAlias = ChunkData | ChunkMissing | Ok | Failed | Held | Offer


def encode(message: ChunkRequest | ChunkReply) -> bytes:
    """A message's frame body."""
    match message:
        case Get() | Has():
            return pack({1: 1 if isinstance(message, Get) else 5, 2: list(message.addresses)})
        case Hold():
            return pack(
                {
                    1: 2,
                    2: message.file_id,
                    3: message.expiry,
                    4: list(message.token_hashes),
                    5: message.total_bytes,
                }
            )
        case Put():
            return pack({1: 3, 2: message.file_id, 3: message.address, 4: message.data})
        case Done():
            return pack({1: 4, 2: message.file_id, 3: message.token})
        case Bulk():
            return pack({1: 6})
        case ChunkData():
            return pack({1: 10, 2: message.address, 3: message.data})
        case ChunkMissing():
            return pack({1: 11, 2: message.address})
        case Ok():
            return pack({1: 12})
        case Failed():
            return pack({1: 13, 2: int(message.code), 3: message.text[:_MAX_TEXT]})
        case Held():
            return pack({1: 14, 2: list(message.addresses)})
        case Offer():
            return pack({1: 15, 2: message.port, 3: message.ticket, 4: message.key})


def _fields(data: bytes, what: str) -> dict[object, object]:
    fields = unpack_bounded(data, what=what, limit=MAX_CHUNK_FRAME, max_items=MAX_TOKENS, max_map=8)
    if not isinstance(fields, dict) or type(fields.get(1)) is not int:
        raise DecodeError(what, "not a map with a type")
    return fields


def _bytes(value: object, size: int | None, what: str, *, limit: int = MAX_CHUNK_WIRE) -> bytes:
    if type(value) is not bytes or (len(value) != size if size is not None else len(value) > limit):
        raise DecodeError(what, "a bytes field has the wrong type or size")
    return value


def _addresses(value: object, what: str, limit: int) -> tuple[bytes, ...]:
    if not isinstance(value, tuple) or len(value) > limit:
        raise DecodeError(what, f"expected at most {limit} addresses")
    return tuple(_bytes(a, ADDRESS_SIZE, what) for a in value)


def _int(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise DecodeError(what, f"an integer field is outside {low}..{high}")
    return value


def decode_request(data: bytes) -> ChunkRequest:
    """A request frame's message; ``DecodeError`` if it is not one."""
    what = "chunk request"
    f = _fields(data, what)
    kind, keys = f[1], set(f)
    if kind in (1, 5) and keys == {1, 2}:
        addresses = _addresses(f[2], what, MAX_GET)
        return Get(addresses=addresses) if kind == 1 else Has(addresses=addresses)
    if kind == 2 and keys == {1, 2, 3, 4, 5}:
        hashes = f[4]
        if not isinstance(hashes, tuple) or len(hashes) > MAX_TOKENS:
            raise DecodeError(what, f"at most {MAX_TOKENS} token hashes")
        return Hold(
            file_id=_bytes(f[2], ADDRESS_SIZE, what),
            expiry=_int(f[3], what, 0, 2**53),
            token_hashes=tuple(_bytes(h, 32, what) for h in hashes),
            total_bytes=_int(f[5], what, 0, 2**53),
        )
    if kind == 3 and keys == {1, 2, 3, 4}:
        return Put(
            file_id=_bytes(f[2], ADDRESS_SIZE, what),
            address=_bytes(f[3], ADDRESS_SIZE, what),
            data=_bytes(f[4], None, what),
        )
    if kind == 4 and keys == {1, 2, 3}:
        return Done(file_id=_bytes(f[2], ADDRESS_SIZE, what), token=_bytes(f[3], TOKEN_SIZE, what))
    if kind == 6 and keys == {1}:
        return Bulk()
    raise DecodeError(what, f"unknown type {kind!r} or wrong fields")


def decode_reply(data: bytes) -> ChunkReply:
    """A reply frame's message; ``DecodeError`` if it is not one."""
    what = "chunk reply"
    f = _fields(data, what)
    kind, keys = f[1], set(f)
    if kind == 10 and keys == {1, 2, 3}:
        return ChunkData(address=_bytes(f[2], ADDRESS_SIZE, what), data=_bytes(f[3], None, what))
    if kind == 11 and keys == {1, 2}:
        return ChunkMissing(address=_bytes(f[2], ADDRESS_SIZE, what))
    if kind == 12 and keys == {1}:
        return Ok()
    if kind == 13 and keys == {1, 2, 3}:
        code, text = f[2], f[3]
        if type(code) is not int or code not in ErrorCode._value2member_map_ or type(text) is not str:
            raise DecodeError(what, "error code or text")
        return Failed(code=ErrorCode(code), text=text[:_MAX_TEXT])
    if kind == 14 and keys == {1, 2}:
        return Held(addresses=_addresses(f[2], what, MAX_GET))
    if kind == 15 and keys == {1, 2, 3, 4}:
        return Offer(
            port=_int(f[2], what, 1, 65535), ticket=_bytes(f[3], 16, what), key=_bytes(f[4], KEY_SIZE, what)
        )
    raise DecodeError(what, f"unknown type {kind!r} or wrong fields")
