"""Sealed sender: sign a message, then encrypt it so only the recipient learns who sent it.

Seal (``seal``):

1. ``signed = DOMAIN || recipient Ed25519 key || kind || sender Ed25519 key || sent_at_ms || body``;
   the sender signs it with Ed25519. Binding the recipient's key stops the recipient from re-sealing a
   signed message to a third person so that it appears to have been sent to them.
2. Plaintext: canonical msgpack ``{1: sender key, 2: sent_at_ms, 3: body, 4: signature}``, padded
   (ISO/IEC 7816-4: ``0x80`` then zeros) to the next ``PAD_BUCKETS`` size.
3. A fresh ephemeral X25519 key ``e``; ``k = BLAKE2b-256(X25519(e, R) || E || R)`` with ``R`` the
   recipient's X25519 key derived from their Ed25519 key and ``E = e·G`` (hashing both public keys in,
   as libsodium's ``crypto_box_seal`` and RFC 7748 section 7 advise).
4. XChaCha20-Poly1305 under ``k`` with a random 24-byte nonce; the envelope header (version, kind,
   inbox tag, expiry, ``E``, nonce) is the associated data, so no routing field can be changed.

Open (``open_envelope``) runs the same steps backwards and checks, in order: size, structure, expiry,
decryption, padding, inner structure, the signature. The result is a verified sender and body or an
exception; nothing unverified is ever returned.

This is a hand-written composition of libsodium primitives (PyNaCl has no sealed-sender construction:
``SealedBox`` carries no sender, ``Box`` reveals it); every primitive is libsodium's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from meshchat.crypto.tags import epoch_of, inbox_tag
from meshchat.errors import DecodeError, DecryptionFailed, Expired, TooLarge
from meshchat.identity import SIGNATURE_SIZE, Identity, KeyCache, PublicIdentity, RandomBytes
from meshchat.wire import (
    MAX_PADDED_PLAINTEXT,
    NONCE_SIZE,
    PAD_BUCKETS,
    EnvelopeKind,
    associated_data,
    decode_envelope,
    message_id,
)
from meshchat.wire.codec import pack, unpack_canonical
from meshchat.wire.envelope import encode_fields

__all__ = ["CLOCK_SKEW", "DEFAULT_TTL", "MAX_BODY_SIZE", "MAX_TTL", "OpenedMessage", "open_envelope", "seal"]

#: How long an envelope lives by default: a week covers a phone left off over a long holiday weekend.
DEFAULT_TTL = 7 * 24 * 3600
#: Longest lifetime a sender may ask for; mailboxes and seen windows are sized to cover it.
MAX_TTL = 30 * 24 * 3600
#: Seconds a peer's clock may be ahead of ours: an expiry up to ``MAX_TTL + CLOCK_SKEW`` ahead is
#: accepted, and what expired is kept this much longer (the one value every layer uses).
CLOCK_SKEW = 600
_DOMAIN = b"meshchat/seal/v1\x00"
_PERSON = b"meshchat-seal-v1"
_KEY_SIZE = sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
_PAD_MARKER = b"\x80"
_K_SENDER, _K_SENT_AT, _K_BODY, _K_SIGNATURE = 1, 2, 3, 4
_INNER_FIELDS = frozenset((_K_SENDER, _K_SENT_AT, _K_BODY, _K_SIGNATURE))
_MAX_SENT_AT = 2**63 - 1
#: Latest sealing time whose expiry (at most MAX_TTL later) still fits the envelope's uint32 field.
_MAX_WALL_NOW = 2**32 - 1 - MAX_TTL


def _inner_overhead() -> int:
    # Everything but the body, for the largest body the format can carry (msgpack bin32 header).
    probe = {_K_SENDER: bytes(32), _K_SENT_AT: _MAX_SENT_AT, _K_BODY: bytes(2**16), _K_SIGNATURE: bytes(64)}
    return len(pack(probe)) - 2**16 + len(_PAD_MARKER)


#: Largest message body one envelope carries, bytes.
MAX_BODY_SIZE = MAX_PADDED_PLAINTEXT - _inner_overhead()


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenedMessage:
    """A message that opened and verified: the sender is proven, the body untouched."""

    #: Who signed it.
    sender: PublicIdentity
    #: The body exactly as the sender passed it.
    body: bytes
    #: The sender's clock when sealing, milliseconds since the unix epoch (the sender's claim).
    sent_at_ms: int
    #: The envelope kind.
    kind: EnvelopeKind
    #: The message id (BLAKE2b-256 of the envelope bytes).
    message_id: bytes
    #: The envelope's expiry, unix seconds.
    expiry: int


def _signed_bytes(recipient: bytes, kind: int, sender: bytes, sent_at_ms: int, body: bytes) -> bytes:
    return b"".join((_DOMAIN, recipient, bytes([kind]), sender, sent_at_ms.to_bytes(8, "big"), body))


def _key(shared: bytes, ephemeral: bytes, recipient_x25519: bytes) -> bytes:
    # hashlib's BLAKE2b is the same function as libsodium's generichash, at a seventh of the call cost.
    return hashlib.blake2b(
        shared + ephemeral + recipient_x25519, digest_size=_KEY_SIZE, person=_PERSON
    ).digest()


def _padded_size(size: int) -> int:
    for bucket in PAD_BUCKETS:
        if size <= bucket:
            return bucket
    raise AssertionError("unreachable: size checked against MAX_BODY_SIZE")


def seal(
    sender: Identity,
    recipient: PublicIdentity,
    body: bytes,
    *,
    wall_now: float,
    ttl: int = DEFAULT_TTL,
    kind: EnvelopeKind = EnvelopeKind.SEALED,
    random_bytes: RandomBytes = nacl.utils.random,
) -> bytes:
    """Sign ``body`` as ``sender`` and seal it to ``recipient``; return the envelope bytes.

    ``wall_now`` is the current unix time (seconds); the envelope expires ``ttl`` seconds later.
    Raises ``TooLarge`` for a body over ``MAX_BODY_SIZE`` and ``ValueError`` for a ttl out of range.
    """
    if len(body) > MAX_BODY_SIZE:
        raise TooLarge(what="message body", size=len(body), limit=MAX_BODY_SIZE)
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds, not {ttl}")
    if not 0 <= wall_now <= _MAX_WALL_NOW:
        raise ValueError(f"wall_now must be a unix time between 0 and {_MAX_WALL_NOW}, not {wall_now}")
    sent_at_ms = int(wall_now * 1000)
    sender_key = sender.public.ed25519
    signature = sender.sign(_signed_bytes(recipient.ed25519, kind, sender_key, sent_at_ms, body))
    inner = pack({_K_SENDER: sender_key, _K_SENT_AT: sent_at_ms, _K_BODY: body, _K_SIGNATURE: signature})
    padded = inner + _PAD_MARKER + bytes(_padded_size(len(inner) + 1) - len(inner) - 1)

    randomness = random_bytes(32 + NONCE_SIZE)
    ephemeral_secret, nonce = randomness[:32], randomness[32:]
    ephemeral = sodium.crypto_scalarmult_base(ephemeral_secret)
    shared = sodium.crypto_scalarmult(ephemeral_secret, recipient.x25519)
    tag = inbox_tag(recipient, epoch_of(wall_now))
    expiry = int(wall_now) + ttl
    ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        padded,
        associated_data(kind, tag, expiry, ephemeral, nonce),
        nonce,
        _key(shared, ephemeral, recipient.x25519),
    )
    return encode_fields(
        kind=kind, inbox_tag=tag, expiry=expiry, ephemeral_key=ephemeral, nonce=nonce, ciphertext=ciphertext
    )


def open_envelope(
    recipient: Identity, data: bytes, *, wall_now: float, key_cache: KeyCache | None = None
) -> OpenedMessage:
    """Open envelope bytes sealed to ``recipient`` and verify the sender's signature.

    Pass the same ``key_cache`` to every call to check each sender's key only once (a receiver sees
    the same few senders again and again); without one, every call checks the key afresh.

    Raises ``TooLarge``/``UnsupportedVersion``/``DecodeError`` for malformed bytes, ``Expired`` past the
    expiry, ``DecryptionFailed`` if the envelope is for another key or was altered, ``BadSignature`` if
    the inner signature does not verify.
    """
    envelope = decode_envelope(data)
    if wall_now > envelope.expiry:
        raise Expired(expiry=envelope.expiry, now=wall_now)
    own_x25519 = recipient.public.x25519
    try:
        shared = sodium.crypto_scalarmult(recipient.x25519_secret, envelope.ephemeral_key)
        padded = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            envelope.ciphertext,
            envelope.associated_data(),
            envelope.nonce,
            _key(shared, envelope.ephemeral_key, own_x25519),
        )
    except nacl.exceptions.CryptoError as exc:
        # A low-order ephemeral key (all-zero shared secret) or a failed tag check.
        raise DecryptionFailed() from exc
    inner = padded.rstrip(b"\x00")
    # The smallest bucket that fits, as sealing pads: a larger one would give the same message a
    # second byte form (and id) and break "one size, one bucket" (found by scripts/fuzz.py).
    if (
        not inner.endswith(_PAD_MARKER)
        or len(padded) not in PAD_BUCKETS
        or len(padded) != _padded_size(len(inner))
    ):
        raise DecodeError("sealed payload", "bad padding")
    fields = unpack_canonical(inner[:-1], what="sealed payload", limit=MAX_PADDED_PLAINTEXT)
    if not isinstance(fields, dict) or fields.keys() != _INNER_FIELDS:
        raise DecodeError("sealed payload", f"expected a map with keys {sorted(_INNER_FIELDS)}")
    sender_key, sent_at_ms = fields[_K_SENDER], fields[_K_SENT_AT]
    body, signature = fields[_K_BODY], fields[_K_SIGNATURE]
    if type(body) is not bytes or type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        raise DecodeError("sealed payload", "body or signature has the wrong type or size")
    if type(sent_at_ms) is not int or not 0 <= sent_at_ms <= _MAX_SENT_AT:
        raise DecodeError("sealed payload", "timestamp out of range")
    if type(sender_key) is not bytes:
        raise DecodeError("sealed payload", "sender key is not bytes")
    if key_cache is None:
        sender = PublicIdentity.from_bytes(sender_key)
    else:
        sender = key_cache.public_identity(sender_key)
    sender.verify(
        _signed_bytes(recipient.public.ed25519, envelope.kind, sender_key, sent_at_ms, body),
        signature,
        what="sealed message",
    )
    return OpenedMessage(
        sender=sender,
        body=body,
        sent_at_ms=sent_at_ms,
        kind=envelope.kind,
        message_id=message_id(data),
        expiry=envelope.expiry,
    )
