"""The envelope: the only thing relays, mailboxes and the gossip mesh ever see of a message.

Wire format: one version byte, then a canonical msgpack map with integer keys::

    1: kind (int)   2: inbox tag (16 bytes)   3: expiry (unix seconds, uint32)
    4: ephemeral X25519 public key (32)       5: nonce (24)     6: ciphertext
    7: stamp (1 to 32 bytes; present only when not empty)

Everything but the ciphertext is public routing data; who sent the message and what it says are inside
the ciphertext (see ``meshchat.crypto.seal``). The total size is capped at ``MAX_ENVELOPE_SIZE`` and the
cap is checked before a single byte is parsed. Ciphertexts come in a few size buckets (``PAD_BUCKETS``),
so the length of an envelope says little about the length of the message in it.

A message's id is the BLAKE2b-256 hash of its envelope bytes (content addressing, as gossip with
StrictNoSign expects); canonical decoding guarantees one envelope has exactly one byte form.

Field 7 is a stranger's proof of work (``meshchat.crypto.stamps``), computed over the envelope's bytes
without it: it is added after sealing, outside what the AEAD authenticates, and an envelope without
one is byte for byte what it was before field 7 existed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

import msgpack

from meshchat.errors import DecodeError, TooLarge, UnsupportedVersion
from meshchat.wire.codec import unpack_canonical

__all__ = [
    "ENVELOPE_VERSION",
    "INBOX_TAG_SIZE",
    "MAX_ENVELOPE_SIZE",
    "MAX_PADDED_PLAINTEXT",
    "MAX_STAMP_SIZE",
    "NONCE_SIZE",
    "PAD_BUCKETS",
    "Envelope",
    "EnvelopeKind",
    "associated_data",
    "decode_envelope",
    "encode_envelope",
    "encode_fields",
    "message_id",
    "unstamped",
    "with_stamp",
]

#: The envelope format version this meshchat writes and reads (the first byte on the wire).
ENVELOPE_VERSION = 1
#: Largest envelope accepted or produced, bytes. 64 KiB keeps one envelope within one gossip message
#: under every libp2p implementation's default limit (go-libp2p and js-libp2p allow 1 MiB RPCs) and
#: bounds the work a peer can make us do per message; bigger payloads travel as attachments.
MAX_ENVELOPE_SIZE = 64 * 1024
#: Size of a blinded inbox tag, bytes.
INBOX_TAG_SIZE = 16
#: Size of an XChaCha20 nonce, bytes.
NONCE_SIZE = 24
#: Size of an X25519 public key, bytes.
EPHEMERAL_KEY_SIZE = 32
#: Size of the Poly1305 authentication tag each ciphertext carries, bytes.
AEAD_TAG_SIZE = 16
#: Room left for the version byte and the msgpack map around the ciphertext (95 bytes at most today).
_ENVELOPE_FRAMING_ALLOWANCE = 128
#: Largest padded plaintext a sealed envelope may carry.
MAX_PADDED_PLAINTEXT = MAX_ENVELOPE_SIZE - _ENVELOPE_FRAMING_ALLOWANCE - AEAD_TAG_SIZE
#: Sizes every padded plaintext is rounded up to. Four steps of 4x, then the maximum: a message leaks
#: its size class only, at worst 4x padding overhead, and short chats (the common case) all look alike.
PAD_BUCKETS = (256, 1024, 4096, 16384, MAX_PADDED_PLAINTEXT)
_MAX_EXPIRY = 2**32 - 1
_VERSION_BYTE = bytes([ENVELOPE_VERSION])
#: Largest stamp field, bytes (meshchat's stamps are 8; room for a longer form later, bounded).
MAX_STAMP_SIZE = 32
_K_KIND, _K_TAG, _K_EXPIRY, _K_EPHEMERAL, _K_NONCE, _K_CIPHERTEXT, _K_STAMP = range(1, 8)
_FIELDS = frozenset(range(1, 7))
_STAMPED_FIELDS = frozenset(range(1, 8))


class EnvelopeKind(IntEnum):
    """What an envelope is, as far as relays need to know."""

    #: Sealed to one recipient's inbox: sealed sender, signed inside (``meshchat.crypto.seal``).
    SEALED = 1
    #: A group message (``meshchat.groups.seal``): the inbox tag is the group's tag for the day, the
    #: ephemeral-key field carries the encrypted chain header, the ciphertext is under a chain key.
    GROUP = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A decoded envelope. Constructing one checks every field, so an invalid envelope cannot exist."""

    #: What the envelope is.
    kind: EnvelopeKind
    #: Blinded, rotating tag of the recipient's inbox (``meshchat.crypto.tags``).
    inbox_tag: bytes
    #: Unix time (seconds) after which nobody should store or forward it.
    expiry: int
    #: The sender's one-time X25519 public key.
    ephemeral_key: bytes
    #: The XChaCha20-Poly1305 nonce.
    nonce: bytes
    #: The sealed payload, ``AEAD_TAG_SIZE`` bytes longer than the padded plaintext.
    ciphertext: bytes
    #: A stranger's proof of work over the envelope without it (b"": none; ``meshchat.crypto.stamps``).
    stamp: bytes = b""

    def __post_init__(self) -> None:
        # One cheap test on the hot path; the detailed diagnosis only when it fails.
        if not (
            type(self.kind) is EnvelopeKind
            and type(self.inbox_tag) is bytes
            and len(self.inbox_tag) == INBOX_TAG_SIZE
            and type(self.expiry) is int
            and 0 <= self.expiry <= _MAX_EXPIRY
            and type(self.ephemeral_key) is bytes
            and len(self.ephemeral_key) == EPHEMERAL_KEY_SIZE
            and type(self.nonce) is bytes
            and len(self.nonce) == NONCE_SIZE
            and type(self.ciphertext) is bytes
            and len(self.ciphertext) >= AEAD_TAG_SIZE
            and type(self.stamp) is bytes
            and len(self.stamp) <= MAX_STAMP_SIZE
        ):
            raise DecodeError("envelope", self._problem())

    def _problem(self) -> str:
        checks = (
            (type(self.kind) is EnvelopeKind, "kind is not an EnvelopeKind"),
            (_is_bytes(self.inbox_tag, INBOX_TAG_SIZE), f"inbox tag must be {INBOX_TAG_SIZE} bytes"),
            (type(self.expiry) is int and 0 <= self.expiry <= _MAX_EXPIRY, "expiry out of range"),
            (
                _is_bytes(self.ephemeral_key, EPHEMERAL_KEY_SIZE),
                f"ephemeral key must be {EPHEMERAL_KEY_SIZE} bytes",
            ),
            (_is_bytes(self.nonce, NONCE_SIZE), f"nonce must be {NONCE_SIZE} bytes"),
            (
                type(self.stamp) is bytes and len(self.stamp) <= MAX_STAMP_SIZE,
                f"stamp must be bytes, at most {MAX_STAMP_SIZE}",
            ),
        )
        for ok, problem in checks:
            if not ok:
                return problem
        return "ciphertext must be bytes, at least as long as its authentication tag"

    def associated_data(self) -> bytes:
        """The public header bytes the AEAD authenticates: altering any routing field breaks the seal."""
        return associated_data(self.kind, self.inbox_tag, self.expiry, self.ephemeral_key, self.nonce)


def _is_bytes(value: object, size: int) -> bool:
    return type(value) is bytes and len(value) == size


def associated_data(
    kind: EnvelopeKind, inbox_tag: bytes, expiry: int, ephemeral_key: bytes, nonce: bytes
) -> bytes:
    """The header bytes a sealed envelope's AEAD authenticates (fixed widths, so unambiguous)."""
    return bytes([ENVELOPE_VERSION, kind]) + inbox_tag + expiry.to_bytes(4, "big") + ephemeral_key + nonce


def encode_envelope(envelope: Envelope) -> bytes:
    """Return the canonical wire bytes of ``envelope``; ``TooLarge`` if they exceed the limit."""
    return with_stamp(envelope, envelope.stamp)


def encode_fields(
    *,
    kind: EnvelopeKind,
    inbox_tag: bytes,
    expiry: int,
    ephemeral_key: bytes,
    nonce: bytes,
    ciphertext: bytes,
    stamp: bytes = b"",
) -> bytes:
    """Encode envelope fields the caller produced itself and knows valid (the sealing hot path).

    Skips building and checking an ``Envelope``; ``encode_envelope`` is the checked way.
    """
    # Keys written in ascending order, as the canonical form requires (codec.pack would sort them).
    fields: dict[int, int | bytes] = {
        _K_KIND: int(kind),
        _K_TAG: inbox_tag,
        _K_EXPIRY: expiry,
        _K_EPHEMERAL: ephemeral_key,
        _K_NONCE: nonce,
        _K_CIPHERTEXT: ciphertext,
    }
    if stamp:  # absent when empty: an unstamped envelope is what it was before stamps
        fields[_K_STAMP] = stamp
    data: bytes = _VERSION_BYTE + msgpack.packb(fields, use_bin_type=True)
    if len(data) > MAX_ENVELOPE_SIZE:
        raise TooLarge(size=len(data), limit=MAX_ENVELOPE_SIZE)
    return data


def decode_envelope(data: bytes) -> Envelope:
    """Parse wire bytes into an ``Envelope``: size first, then version, then structure and types.

    Raises ``TooLarge``, ``UnsupportedVersion`` or ``DecodeError``; never anything else.
    """
    if len(data) > MAX_ENVELOPE_SIZE:
        raise TooLarge(size=len(data), limit=MAX_ENVELOPE_SIZE)
    if not data:
        raise DecodeError("envelope", "empty")
    if data[0] != ENVELOPE_VERSION:
        raise UnsupportedVersion(what="envelope", version=data[0], supported=(ENVELOPE_VERSION,))
    fields = unpack_canonical(data[1:], what="envelope", limit=MAX_ENVELOPE_SIZE)
    if not isinstance(fields, dict) or (fields.keys() != _FIELDS and fields.keys() != _STAMPED_FIELDS):
        raise DecodeError("envelope", f"expected a map with keys {sorted(_FIELDS)} (and 7, a stamp)")
    stamp = fields.get(_K_STAMP, b"")
    if _K_STAMP in fields and (type(stamp) is not bytes or not 0 < len(stamp) <= MAX_STAMP_SIZE):
        # An empty stamp is left out, not written: one envelope, one byte form.
        raise DecodeError("envelope", f"a stamp is 1 to {MAX_STAMP_SIZE} bytes")
    kind = fields[_K_KIND]
    if type(kind) is not int or kind not in EnvelopeKind._value2member_map_:
        raise DecodeError("envelope", f"unknown kind {kind!r}")
    return Envelope(
        kind=EnvelopeKind(kind),
        inbox_tag=fields[_K_TAG],
        expiry=fields[_K_EXPIRY],
        ephemeral_key=fields[_K_EPHEMERAL],
        nonce=fields[_K_NONCE],
        ciphertext=fields[_K_CIPHERTEXT],
        stamp=stamp,
    )


def unstamped(envelope: Envelope) -> bytes:
    """``envelope``'s bytes without its stamp: what a stamp is computed over (canonical, so these are
    exactly the bytes the sender stamped)."""
    return with_stamp(envelope, b"")


def with_stamp(envelope: Envelope, stamp: bytes) -> bytes:
    """The wire bytes of ``envelope`` carrying ``stamp`` instead of its own (``DecodeError`` for a stamp
    longer than ``MAX_STAMP_SIZE``; ``TooLarge`` past the size limit)."""
    if len(stamp) > MAX_STAMP_SIZE:
        raise DecodeError("envelope", f"a stamp is at most {MAX_STAMP_SIZE} bytes")
    return encode_fields(
        kind=envelope.kind,
        inbox_tag=envelope.inbox_tag,
        expiry=envelope.expiry,
        ephemeral_key=envelope.ephemeral_key,
        nonce=envelope.nonce,
        ciphertext=envelope.ciphertext,
        stamp=stamp,
    )


def message_id(data: bytes) -> bytes:
    """The 32-byte id of a message: BLAKE2b-256 of its envelope bytes."""
    return hashlib.blake2b(data, digest_size=32).digest()
