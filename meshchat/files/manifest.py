"""The manifest: what a recipient needs to fetch, check and name a file, sealed inside a message.

It travels inside an ordinary sealed message (a 1:1 control message, or a group message), so only the
recipients learn the file's name, type and key; mailboxes and relays see padded chunks by address.
A canonical msgpack map with integer keys::

    {1: version, 2: name, 3: mime, 4: size, 5: key, 6: index addresses, 7: thumbnail, 8: width,
     9: height, 10: duration_ms, 11: caption, 12: mailboxes, 13: expiry}

Decoding checks every field against a stated bound and the counts against each other (the number of
index addresses must be what ``size`` implies), and raises ``BadManifest`` otherwise: a lying sender
cannot make a recipient plan a 1 TB download or read past a file's end. The name is kept as sent;
``meshchat.files.names.safe_name`` makes it safe before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from meshchat.errors import BadManifest, DecodeError
from meshchat.files.chunks import (
    ADDRESS_SIZE,
    KEY_SIZE,
    MAX_FILE_SIZE,
    chunk_count,
    file_id_of,
    index_chunk_count,
)
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "MANIFEST_VERSION",
    "MAX_CAPTION_BYTES",
    "MAX_MAILBOXES",
    "MAX_MANIFEST",
    "MAX_NAME_BYTES",
    "MAX_THUMBNAIL",
    "Manifest",
    "decode_manifest",
    "decode_offer",
    "encode_manifest",
    "encode_offer",
    "is_offer",
]

MANIFEST_VERSION: Final = 1
#: A file name's UTF-8 bytes (most file systems allow 255).
MAX_NAME_BYTES: Final = 255
#: A MIME type ("type/subtype", RFC 6838 caps each half at 127 characters).
MAX_MIME: Final = 255
#: The thumbnail or poster frame (JPEG): it shares one 64 KiB envelope with the rest.
MAX_THUMBNAIL: Final = 24 * 1024
#: A caption's UTF-8 bytes.
MAX_CAPTION_BYTES: Final = 4096
#: Mailboxes named as holding the chunks (the sender stores on a few, like messages).
MAX_MAILBOXES: Final = 8
#: A PeerId's text form (base58 of an identity multihash: 52 characters for Ed25519; room for others).
_MAX_PEER_ID = 128
#: A duration: ten days of audio or video is beyond any voice note or film.
_MAX_DURATION_MS = 10 * 86_400_000
#: Pixels along a side (JPEG's and PNG's practical limits are 65,535 and 2^31).
_MAX_SIDE = 1 << 20
#: The encoded manifest: it must fit an envelope's body with the message around it.
MAX_MANIFEST: Final = 48 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """Everything about one file but its bytes."""

    #: The file's name as the sender had it (not yet safe to write: ``names.safe_name``).
    name: str
    #: Its MIME type.
    mime: str
    #: Bytes.
    size: int
    #: The AES-256 key of its chunks.
    key: bytes = field(repr=False)
    #: Addresses of its index chunks.
    index: tuple[bytes, ...]
    #: A small JPEG (an image's thumbnail or a video's poster frame), or empty.
    thumbnail: bytes = b""
    #: The original image's or video's size in pixels (0: unknown).
    width: int = 0
    height: int = 0
    #: Audio or video length in milliseconds (0: none or unknown).
    duration_ms: int = 0
    #: The sender's caption.
    caption: str = ""
    #: PeerIds of mailboxes the sender stored the chunks on (the sender serves them too).
    mailboxes: tuple[str, ...] = ()
    #: Unix seconds after which mailboxes drop the chunks.
    expiry: int = 0

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def file_id(self) -> bytes:
        """The file's id (``chunks.file_id_of`` its index)."""
        return file_id_of(self.index)

    @property
    def chunks(self) -> int:
        """How many data chunks it has."""
        return chunk_count(self.size)


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest's canonical bytes."""
    m = manifest
    return pack(
        {
            1: MANIFEST_VERSION,
            2: m.name,
            3: m.mime,
            4: m.size,
            5: m.key,
            6: list(m.index),
            7: m.thumbnail,
            8: m.width,
            9: m.height,
            10: m.duration_ms,
            11: m.caption,
            12: list(m.mailboxes),
            13: m.expiry,
        }
    )


_TYPES: Final = {2: str, 3: str, 4: int, 5: bytes, 7: bytes, 8: int, 9: int, 10: int, 11: str, 13: int}


def decode_manifest(data: bytes) -> Manifest:
    """Parse and check a manifest; ``BadManifest`` (or ``TooLarge``) for anything off."""
    try:
        fields = unpack_canonical(data, what="file manifest", limit=MAX_MANIFEST)
    except DecodeError as exc:
        if isinstance(exc, BadManifest):
            raise
        raise BadManifest(exc.problem) from exc
    if not isinstance(fields, dict) or fields.keys() != set(range(1, 14)):
        raise BadManifest("not a map of fields 1 to 13")
    if type(fields[1]) is not int or fields[1] != MANIFEST_VERSION:
        raise BadManifest(f"version {fields[1]!r} (this is {MANIFEST_VERSION})")
    for key, kind in _TYPES.items():
        if type(fields[key]) is not kind:
            raise BadManifest(f"field {key} must be {kind.__name__}")
    index, mailboxes = fields[6], fields[12]
    if not isinstance(index, tuple) or any(type(a) is not bytes for a in index):
        raise BadManifest("index must be a list of addresses")
    if not isinstance(mailboxes, tuple) or any(type(p) is not str for p in mailboxes):
        raise BadManifest("mailboxes must be a list of PeerIds")
    try:
        return Manifest(
            name=fields[2],
            mime=fields[3],
            size=fields[4],
            key=fields[5],
            index=index,
            thumbnail=fields[7],
            width=fields[8],
            height=fields[9],
            duration_ms=fields[10],
            caption=fields[11],
            mailboxes=mailboxes,
            expiry=fields[13],
        )
    except ValueError as exc:
        raise BadManifest(str(exc)) from exc


def _utf8(text: str) -> int:
    """``text``'s UTF-8 length, or -1 if it has no UTF-8 form (lone surrogates)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return -1


def _problem(m: Manifest) -> str:
    """Why ``m`` cannot be a manifest, or ``""``."""
    checks = (
        (0 <= m.size <= MAX_FILE_SIZE, f"size {m.size} outside 0..{MAX_FILE_SIZE}"),
        (len(m.key) == KEY_SIZE, "key must be 32 bytes"),
        (len(m.index) == index_chunk_count(m.size), f"{len(m.index)} index chunks for {m.size} bytes"),
        (all(len(a) == ADDRESS_SIZE for a in m.index), "index addresses must be 32 bytes"),
        (0 < _utf8(m.name) <= MAX_NAME_BYTES, "name empty, too long or not UTF-8"),
        (0 < len(m.mime) <= MAX_MIME and m.mime.isascii() and "/" in m.mime, "mime must be type/subtype"),
        (len(m.thumbnail) <= MAX_THUMBNAIL, f"thumbnail over {MAX_THUMBNAIL} bytes"),
        (0 <= m.width <= _MAX_SIDE and 0 <= m.height <= _MAX_SIDE, "width or height out of range"),
        (0 <= m.duration_ms <= _MAX_DURATION_MS, "duration out of range"),
        (0 <= _utf8(m.caption) <= MAX_CAPTION_BYTES, "caption too long or not UTF-8"),
        (len(m.mailboxes) <= MAX_MAILBOXES, f"more than {MAX_MAILBOXES} mailboxes"),
        (all(0 < _utf8(p) <= _MAX_PEER_ID for p in m.mailboxes), "a mailbox PeerId is empty or too long"),
        (0 <= m.expiry < 2**53 and not math.isnan(m.expiry), "expiry out of range"),
    )
    for ok, problem in checks:
        if not ok:
            return problem
    return ""


#: The control message type of a file offer (group controls use 1 to 4).
_OFFER = 64
#: How every offer's bytes begin: a two-field map whose field 1 is ``_OFFER``.
_OFFER_HEAD: Final = b"\x82\x01\x40"


def encode_offer(manifest: Manifest) -> bytes:
    """The control message body that carries ``manifest`` to a contact."""
    return pack({1: _OFFER, 2: encode_manifest(manifest)})


def is_offer(body: bytes) -> bool:
    """Whether a control message body is a file offer (rather than a group's)."""
    return body.startswith(_OFFER_HEAD)


def decode_offer(body: bytes) -> Manifest:
    """The manifest in a file offer; ``BadManifest`` if it is not one."""
    try:
        fields = unpack_canonical(body, what="file offer", limit=MAX_MANIFEST + 64)
    except DecodeError as exc:
        raise BadManifest(exc.problem) from exc
    if (
        not isinstance(fields, dict)
        or fields.keys() != {1, 2}
        or fields[1] != _OFFER
        or type(fields[2]) is not bytes
    ):
        raise BadManifest("not a file offer")
    return decode_manifest(fields[2])
