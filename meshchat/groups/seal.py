"""The group envelope: one message, sealed once under the sender's chain, readable by every member.

What it is: sealing and opening of ``EnvelopeKind.GROUP`` envelopes (GROUPS.md section 3); the key
schedule is ``meshchat.groups.chains``, deciding which chain to use is the groups core's. It reuses the
1:1 envelope's fields (``meshchat.wire.envelope``), so relays and mailboxes carry it unchanged:

- ``inbox_tag`` = ``group_tag(group_id, day)``: a keyed BLAKE2b-128 of the day number under the group
  id. Outsiders, who do not know the group id, cannot link one day's tag (and gossip topic,
  ``group_topic``) to the next's, nor tell which group a tag is.
- ``ephemeral_key`` = the encrypted header ``(chain_id 16 || iteration 8 || check 8) XOR
  BLAKE2b-256(key=header_key, data=nonce, person="meshchat-ghdr1")`` with ``header_key =
  BLAKE2b-256(group_id, person="meshchat-ghk1")`` and ``check = BLAKE2b-64(key=header_key,
  data=chain_id || iteration, person="meshchat-ghchk1")``. The random nonce makes every header look
  new, so an outsider cannot tell which messages come from one chain (one sender). The check lets a
  member refuse, before any key work, a header not made with the group's header key. GROUPS.md
  wrote 8 zero bytes there; a keyed check is as cheap and also stops an outsider (a relay) who flips
  bits of a captured header (the XOR passes flips through) from making every member derive up to
  ``MAX_SKIP`` keys for a message that then fails to decrypt.
- plaintext = canonical msgpack ``{1: sent_at_ms, 2: body, 3: signature}``, padded like
  ``meshchat.crypto.seal`` (``0x80`` then zeros to the next ``PAD_BUCKETS`` size); the signature is the
  chain's Ed25519 key over ``DOMAIN || group_id || associated data || sent_at_ms (8 bytes) || body``
  (``DOMAIN = "meshchat/group-seal/v1\\x00"``).
  Members share the chain key, so they could all encrypt a message on it; only the sender holds the
  signing key, so none of them can make one that verifies (no member can forge another's message).
- ciphertext = XChaCha20-Poly1305 under the message key, the envelope header as associated data.

Sealing costs one Ed25519 signature, a few BLAKE2b calls and one AEAD, whatever the group size (no
Diffie-Hellman, nothing per member): less than one 1:1 ``seal``, which adds two X25519 operations.

``open_group`` checks, in order: size and structure, the kind, expiry, the header, the chain (``Replay``,
``ChainJumpTooFar``; ``UnknownChain`` if the header names another chain than the one given), decryption,
padding and inner structure, the signature. Only then does it commit the receiving chain's advance, so
a forged message with a valid header burns no key and grows no skipped-key store.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from meshchat.crypto import DEFAULT_TTL, MAX_TTL, epoch_of
from meshchat.errors import BadSignature, DecodeError, DecryptionFailed, Expired, TooLarge, UnknownChain
from meshchat.groups.chains import CHAIN_ID_SIZE, ReceiverChain, SenderChain
from meshchat.identity import SIGNATURE_SIZE, RandomBytes
from meshchat.wire import (
    INBOX_TAG_SIZE,
    MAX_PADDED_PLAINTEXT,
    NONCE_SIZE,
    PAD_BUCKETS,
    Envelope,
    EnvelopeKind,
    associated_data,
    decode_envelope,
    message_id,
)
from meshchat.wire.codec import pack, unpack_canonical
from meshchat.wire.envelope import encode_fields

__all__ = [
    "GROUP_ID_SIZE",
    "GROUP_TOPIC_PREFIX",
    "MAX_GROUP_BODY",
    "OpenedGroupMessage",
    "group_tag",
    "group_tags_around",
    "group_topic",
    "header_key",
    "open_group",
    "read_header",
    "seal_group",
]

#: Size of a group id (the BLAKE2b-256 id of its CREATE operation), bytes.
GROUP_ID_SIZE = 32
#: Prefix of a group's gossip topic for one day (the tag's hex follows).
GROUP_TOPIC_PREFIX = "meshchat/group/"
_DOMAIN = b"meshchat/group-seal/v1\x00"
_TAG_PERSON = b"meshchat-gtag1"
_HEADER_KEY_PERSON = b"meshchat-ghk1"
_HEADER_PERSON = b"meshchat-ghdr1"
_CHECK_PERSON = b"meshchat-ghchk1"
_HEADER_SIZE = 32
_CHECK_SIZE = _HEADER_SIZE - CHAIN_ID_SIZE - 8
_KIND = EnvelopeKind.GROUP
_PAD_MARKER = b"\x80"
_K_SENT_AT, _K_BODY, _K_SIGNATURE = 1, 2, 3
_INNER_FIELDS = frozenset((_K_SENT_AT, _K_BODY, _K_SIGNATURE))
_MAX_SENT_AT = 2**63 - 1
#: Latest sealing time whose expiry (at most MAX_TTL later) still fits the envelope's uint32 field.
_MAX_WALL_NOW = 2**32 - 1 - MAX_TTL


def _inner_overhead() -> int:
    # Everything but the body, for the largest body the format can carry (msgpack bin32 header).
    probe = {_K_SENT_AT: _MAX_SENT_AT, _K_BODY: bytes(2**16), _K_SIGNATURE: bytes(SIGNATURE_SIZE)}
    return len(pack(probe)) - 2**16 + len(_PAD_MARKER)


#: Largest body one group envelope carries, bytes.
MAX_GROUP_BODY = MAX_PADDED_PLAINTEXT - _inner_overhead()


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenedGroupMessage:
    """A group message that decrypted and whose signature verified against its chain's key."""

    #: The member who sends on the chain (its 32-byte identity key, from the chain's handout).
    sender: bytes
    #: The sending chain's id.
    chain_id: bytes
    #: The message's index on that chain.
    iteration: int
    #: The body exactly as the sender passed it.
    body: bytes
    #: The sender's clock when sealing, milliseconds since the unix epoch (the sender's claim).
    sent_at_ms: int
    #: The message id (BLAKE2b-256 of the envelope bytes).
    message_id: bytes
    #: The envelope's expiry, unix seconds.
    expiry: int


def group_tag(group_id: bytes, day: int) -> bytes:
    """The 16-byte tag of ``group_id``'s envelopes on ``day`` (``meshchat.crypto.epoch_of``)."""
    return hashlib.blake2b(
        day.to_bytes(8, "big"), key=group_id, digest_size=INBOX_TAG_SIZE, person=_TAG_PERSON
    ).digest()


def group_tags_around(group_id: bytes, wall_now: float) -> dict[bytes, int]:
    """The group's tags for yesterday, today and tomorrow (senders' clocks and midnight), by day."""
    today = epoch_of(wall_now)
    return {group_tag(group_id, day): day for day in (today - 1, today, today + 1)}


def group_topic(tag: bytes) -> str:
    """The gossip topic that carries a group's envelopes tagged ``tag`` (one topic per group and day)."""
    return GROUP_TOPIC_PREFIX + tag.hex()


def header_key(group_id: bytes) -> bytes:
    """The key that hides message headers (chain id, index) from everyone outside the group."""
    return hashlib.blake2b(group_id, digest_size=_HEADER_SIZE, person=_HEADER_KEY_PERSON).digest()


def _header_mask(hkey: bytes, nonce: bytes) -> int:
    mask = hashlib.blake2b(nonce, key=hkey, digest_size=_HEADER_SIZE, person=_HEADER_PERSON)
    return int.from_bytes(mask.digest(), "big")


def _header_check(hkey: bytes, position: bytes) -> bytes:
    return hashlib.blake2b(position, key=hkey, digest_size=_CHECK_SIZE, person=_CHECK_PERSON).digest()


def _signed_bytes(group_id: bytes, ad: bytes, sent_at_ms: int, body: bytes) -> bytes:
    return b"".join((_DOMAIN, group_id, ad, sent_at_ms.to_bytes(8, "big"), body))


def _padded_size(size: int) -> int:
    for bucket in PAD_BUCKETS:
        if size <= bucket:
            return bucket
    raise AssertionError("unreachable: size checked against MAX_GROUP_BODY")


def seal_group(
    chain: SenderChain,
    *,
    group_id: bytes,
    body: bytes,
    wall_now: float,
    ttl: int = DEFAULT_TTL,
    random_bytes: RandomBytes = nacl.utils.random,
) -> tuple[bytes, int]:
    """Seal ``body`` on ``chain`` for every member of ``group_id``; return ``(envelope, iteration)``.

    Moves the chain on by one message (its old key is gone). ``wall_now`` is the current unix time,
    the envelope expires ``ttl`` seconds later. ``TooLarge`` for a body over ``MAX_GROUP_BODY``,
    ``ValueError`` for a ttl, clock or group id out of range (checked before the chain moves).
    """
    if len(body) > MAX_GROUP_BODY:
        raise TooLarge(what="group message body", size=len(body), limit=MAX_GROUP_BODY)
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds, not {ttl}")
    if not 0 <= wall_now <= _MAX_WALL_NOW:
        raise ValueError(f"wall_now must be a unix time between 0 and {_MAX_WALL_NOW}, not {wall_now}")
    if len(group_id) != GROUP_ID_SIZE:
        raise ValueError(f"a group id is {GROUP_ID_SIZE} bytes, not {len(group_id)}")
    nonce = random_bytes(NONCE_SIZE)
    iteration, key = chain.next_message_key()
    hkey = header_key(group_id)
    position = chain.chain_id + iteration.to_bytes(8, "big")
    header = int.from_bytes(position + _header_check(hkey, position), "big")
    ephemeral = (header ^ _header_mask(hkey, nonce)).to_bytes(_HEADER_SIZE, "big")
    tag = group_tag(group_id, epoch_of(wall_now))
    expiry = int(wall_now) + ttl
    ad = associated_data(_KIND, tag, expiry, ephemeral, nonce)
    sent_at_ms = int(wall_now * 1000)
    signature = chain.sign(_signed_bytes(group_id, ad, sent_at_ms, body))
    inner = pack({_K_SENT_AT: sent_at_ms, _K_BODY: body, _K_SIGNATURE: signature})
    padded = inner + _PAD_MARKER + bytes(_padded_size(len(inner) + 1) - len(inner) - 1)
    ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, ad, nonce, key)
    envelope = encode_fields(
        kind=_KIND, inbox_tag=tag, expiry=expiry, ephemeral_key=ephemeral, nonce=nonce, ciphertext=ciphertext
    )
    return envelope, iteration


def read_header(envelope: Envelope, group_id: bytes) -> tuple[bytes, int]:
    """``(chain_id, iteration)`` of a group envelope; ``DecodeError`` if its header was not made with
    ``group_id``'s header key (another group's message, or altered: the check bytes do not match).
    """
    hkey = header_key(group_id)
    mask = _header_mask(hkey, envelope.nonce)
    plain = (int.from_bytes(envelope.ephemeral_key, "big") ^ mask).to_bytes(_HEADER_SIZE, "big")
    position = plain[: CHAIN_ID_SIZE + 8]
    if not hmac.compare_digest(plain[CHAIN_ID_SIZE + 8 :], _header_check(hkey, position)):
        raise DecodeError("group message header", "not made for this group, or altered")
    return position[:CHAIN_ID_SIZE], int.from_bytes(position[CHAIN_ID_SIZE:], "big")


def open_group(
    envelope_bytes: bytes,
    *,
    group_id: bytes,
    chain: ReceiverChain,
    wall_now: float,
    envelope: Envelope | None = None,
) -> OpenedGroupMessage:
    """Open a group envelope sent on ``chain``, verify its signature, then move ``chain`` on.

    Pass ``envelope`` if the caller already decoded ``envelope_bytes`` (to find the group by tag and
    the chain by ``read_header``): it is not decoded twice. Raises ``TooLarge``/``UnsupportedVersion``/
    ``DecodeError`` for malformed bytes or a header not made for ``group_id``, ``Expired`` past the
    expiry, ``UnknownChain`` if the header names another chain, ``Replay`` for a message already read,
    ``ChainJumpTooFar`` for an index too far ahead, ``DecryptionFailed`` if the ciphertext was altered,
    ``BadSignature`` if the chain's signing key did not sign it. On any error ``chain`` is unchanged.
    """
    if envelope is None:
        envelope = decode_envelope(envelope_bytes)
    if envelope.kind is not _KIND:
        raise DecodeError("group message", f"envelope kind is {envelope.kind.name}, not GROUP")
    if wall_now > envelope.expiry:
        raise Expired(expiry=envelope.expiry, now=wall_now)
    chain_id, iteration = read_header(envelope, group_id)
    if chain_id != chain.chain_id:
        raise UnknownChain(chain_id)
    key, advance = chain.key_for(iteration)
    ad = envelope.associated_data()
    try:
        padded = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            envelope.ciphertext, ad, envelope.nonce, key
        )
    except nacl.exceptions.CryptoError as exc:
        raise DecryptionFailed() from exc
    inner = padded.rstrip(b"\x00")
    # The smallest bucket that fits, as sealing pads: a larger one would give the same message a
    # second byte form (and id) and break "one size, one bucket" (found by scripts/fuzz.py).
    if (
        not inner.endswith(_PAD_MARKER)
        or len(padded) not in PAD_BUCKETS
        or len(padded) != _padded_size(len(inner))
    ):
        raise DecodeError("group message", "bad padding")
    fields = unpack_canonical(inner[:-1], what="group message", limit=MAX_PADDED_PLAINTEXT)
    if not isinstance(fields, dict) or fields.keys() != _INNER_FIELDS:
        raise DecodeError("group message", f"expected a map with keys {sorted(_INNER_FIELDS)}")
    sent_at_ms, body, signature = fields[_K_SENT_AT], fields[_K_BODY], fields[_K_SIGNATURE]
    if type(body) is not bytes or type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        raise DecodeError("group message", "body or signature has the wrong type or size")
    if type(sent_at_ms) is not int or not 0 <= sent_at_ms <= _MAX_SENT_AT:
        raise DecodeError("group message", "timestamp out of range")
    try:
        sodium.crypto_sign_open(signature + _signed_bytes(group_id, ad, sent_at_ms, body), chain.signing_key)
    except nacl.exceptions.BadSignatureError as exc:
        raise BadSignature("group message") from exc
    chain.commit(advance)
    return OpenedGroupMessage(
        sender=chain.sender,
        chain_id=chain_id,
        iteration=iteration,
        body=body,
        sent_at_ms=sent_at_ms,
        message_id=message_id(envelope_bytes),
        expiry=envelope.expiry,
    )
