"""Sender chains: each member's hash ratchet for the messages it sends to a group (Signal "sender keys").

What it is: the key schedule and its bookkeeping, nothing else (no envelopes: ``meshchat.groups.seal``;
no handing out: the groups core sends a ``ChainHandout`` over the sealed 1:1 path). Design: GROUPS.md
section 3.

A member sending to a group holds one ``SenderChain``: a random 16-byte ``chain_id``, a 32-byte chain
key ``ck``, the index ``iteration`` of its next message, and an Ed25519 key made for this chain only.
Message ``i`` is encrypted under ``mk_i`` and the chain key moves on::

    mk_i     = BLAKE2b-256(key=ck_i, data=0x01, person="meshchat-gmk1")
    ck_{i+1} = BLAKE2b-256(key=ck_i, data=0x02, person="meshchat-gck1")

The old chain key is dropped at once (forward secrecy: whoever takes a member's state today cannot
compute yesterday's message keys, BLAKE2b does not run backwards). Every other member holds a
``ReceiverChain`` built from the sender's ``ChainHandout``. All members share the chain key, so a
message key proves nothing about who wrote a message: the chain's signing key does (only the sender
holds its seed), which is why the handout carries the public half.

Receiving, in two steps so that nothing changes before a message is proven genuine:

1. ``key_for(i)`` returns ``mk_i`` and an ``Advance`` describing the new state, mutating nothing. A key
   already used, or an index below the chain that is not among the kept skipped keys, raises ``Replay``;
   an index more than ``MAX_SKIP`` ahead raises ``ChainJumpTooFar`` before a single key is derived
   (a claimed jump of 10^6 costs one subtraction).
2. ``commit(advance)`` after the message decrypted and its signature verified: the used key is gone,
   the keys of messages skipped on the way are kept for late arrivals, at most ``MAX_SKIPPED_KEYS``
   (the oldest dropped first, counted in ``dropped_keys``; a message that arrives after its key was
   dropped is refused as a ``Replay``, it cannot be told apart from one).

Both chain kinds serialise to canonical msgpack (``to_bytes``/``from_bytes``) for storage;
``from_bytes`` refuses corrupt data with ``DecodeError``. BLAKE2b is hashlib's (the same function as
libsodium's generichash, cheaper to call); Ed25519 is libsodium's, as in ``meshchat.identity``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TypeGuard

import nacl.bindings as sodium

from meshchat.errors import ChainJumpTooFar, DecodeError, InvalidTransition, Replay
from meshchat.identity import (
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    KeyCache,
    PublicIdentity,
    RandomBytes,
)
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "CHAIN_ID_SIZE",
    "CHAIN_KEY_SIZE",
    "MAX_ITERATION",
    "MAX_SKIP",
    "MAX_SKIPPED_KEYS",
    "Advance",
    "ChainHandout",
    "ReceiverChain",
    "SenderChain",
    "decode_handout",
    "encode_handout",
]

#: Largest jump ahead one message may claim: keys for every message skipped on the way are derived
#: and kept, so this bounds the work (2,000 x 2 BLAKE2b calls, about a millisecond) and memory one
#: message can cost. A sender whose messages are lost 2,000 in a row has bigger problems; Signal's
#: MAX_MESSAGE_KEYS is the same order (2,000).
MAX_SKIP = 2_000
#: Skipped message keys kept per receiving chain for messages that arrive out of order (40 bytes
#: each, 80 KB at most); beyond it the oldest are dropped and counted.
MAX_SKIPPED_KEYS = 2_000
#: Size of a chain id, bytes: random, so two chains of one group never collide (2^-64 at 2^32 chains).
CHAIN_ID_SIZE = 16
#: Size of a chain key and of a message key, bytes.
CHAIN_KEY_SIZE = 32
#: Last message index a sending chain uses; msgpack's int64 range, far beyond any real chain
#: (members rotate chains on a schedule).
MAX_ITERATION = 2**63 - 1
#: Largest index a stored receiving chain may reach (msgpack's uint64): a receiver moves at most
#: ``MAX_SKIP + 1`` past a verified message, and each needs a valid signature.
_MAX_STORED_ITERATION = 2**64 - 1
_MESSAGE_PERSON = b"meshchat-gmk1"
_CHAIN_PERSON = b"meshchat-gck1"
_MESSAGE_INPUT, _CHAIN_INPUT = b"\x01", b"\x02"
_SKIPPED_ENTRY = 8 + CHAIN_KEY_SIZE  # iteration (8 bytes big-endian) || message key
_FORMAT = 1
# Storage and handout map keys.
_K_FORMAT, _K_CHAIN_ID, _K_CHAIN_KEY, _K_ITERATION = 1, 2, 3, 4
_K_SIGNING, _K_CREATED_AT, _K_SENDER, _K_SKIPPED, _K_DROPPED = 5, 6, 7, 8, 9
_SENDER_FIELDS = frozenset((_K_FORMAT, _K_CHAIN_ID, _K_CHAIN_KEY, _K_ITERATION, _K_SIGNING, _K_CREATED_AT))
_RECEIVER_FIELDS = frozenset(
    (_K_FORMAT, _K_CHAIN_ID, _K_CHAIN_KEY, _K_ITERATION, _K_SIGNING, _K_SENDER, _K_SKIPPED, _K_DROPPED)
)
_HANDOUT_FIELDS = frozenset((_K_FORMAT, _K_CHAIN_ID, _K_CHAIN_KEY, _K_ITERATION, _K_SIGNING))
#: Largest encoded handout: four fixed-size fields and their framing fit in 128 bytes.
_MAX_HANDOUT_SIZE = 256
#: Largest stored receiving chain: the skipped keys plus the fixed fields and framing.
_MAX_RECEIVER_SIZE = MAX_SKIPPED_KEYS * _SKIPPED_ENTRY + 1024
_MAX_SENDER_SIZE = 512
_MAX_COUNT = 2**63 - 1


def _message_key(chain_key: bytes) -> bytes:
    return hashlib.blake2b(
        _MESSAGE_INPUT, key=chain_key, digest_size=CHAIN_KEY_SIZE, person=_MESSAGE_PERSON
    ).digest()


def _next_chain_key(chain_key: bytes) -> bytes:
    return hashlib.blake2b(
        _CHAIN_INPUT, key=chain_key, digest_size=CHAIN_KEY_SIZE, person=_CHAIN_PERSON
    ).digest()


def _is_bytes(value: object, size: int) -> TypeGuard[bytes]:
    return type(value) is bytes and len(value) == size


def _is_count(value: object, limit: int = _MAX_COUNT) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= limit


def _checked_signing_key(signing_key: bytes, what: str, key_cache: KeyCache | None) -> bytes:
    if not _is_bytes(signing_key, PUBLIC_KEY_SIZE):
        raise DecodeError(what, f"signing key must be {PUBLIC_KEY_SIZE} bytes")
    # Refuses points off the curve, of small order or with a torsion part, as for identities (about
    # 45 us; a shared KeyCache pays it once per key, e.g. a simulator whose members all decode one
    # sender's handout).
    if key_cache is None:
        return PublicIdentity.from_bytes(signing_key).ed25519
    return key_cache.public_identity(signing_key).ed25519


def _replay_id(chain_id: bytes, iteration: int) -> bytes:
    """The identifier a ``Replay`` names for message ``iteration`` of chain ``chain_id``."""
    return chain_id + iteration.to_bytes(8, "big")


def _unpack_map(data: bytes, *, what: str, limit: int, keys: frozenset[int]) -> dict[int, object]:
    if type(data) is not bytes:
        raise DecodeError(what, "not bytes")
    fields = unpack_canonical(data, what=what, limit=limit)
    if not isinstance(fields, dict) or fields.keys() != keys:
        raise DecodeError(what, f"expected a map with keys {sorted(keys)}")
    if fields[_K_FORMAT] != _FORMAT or type(fields[_K_FORMAT]) is not int:
        raise DecodeError(what, f"unknown format {fields[_K_FORMAT]!r}")
    return fields


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainHandout:
    """What another member needs to read a sending chain from ``iteration`` on (sent sealed, 1:1)."""

    #: The chain's random id, as every message header names it.
    chain_id: bytes
    #: The chain key for message ``iteration`` (earlier messages stay unreadable to the receiver).
    chain_key: bytes
    #: Index of the first message the receiver can read.
    iteration: int
    #: The chain's 32-byte Ed25519 public key: every message on it is signed by its secret half.
    signing_key: bytes

    def __post_init__(self) -> None:
        if not (
            _is_bytes(self.chain_id, CHAIN_ID_SIZE)
            and _is_bytes(self.chain_key, CHAIN_KEY_SIZE)
            and _is_count(self.iteration, MAX_ITERATION)
            and _is_bytes(self.signing_key, PUBLIC_KEY_SIZE)
        ):
            raise DecodeError("chain handout", "a field has the wrong type or size")


def encode_handout(handout: ChainHandout) -> bytes:
    """The canonical msgpack bytes of ``handout`` (at most ``_MAX_HANDOUT_SIZE``)."""
    return pack(
        {
            _K_FORMAT: _FORMAT,
            _K_CHAIN_ID: handout.chain_id,
            _K_CHAIN_KEY: handout.chain_key,
            _K_ITERATION: handout.iteration,
            _K_SIGNING: handout.signing_key,
        }
    )


def decode_handout(data: bytes, *, key_cache: KeyCache | None = None) -> ChainHandout:
    """Parse handout bytes: size, canonical structure, exact types, a usable signing key.

    Raises ``TooLarge`` or ``DecodeError``, never anything else. Pass a ``key_cache`` to check each
    signing key once across calls.
    """
    fields = _unpack_map(data, what="chain handout", limit=_MAX_HANDOUT_SIZE, keys=_HANDOUT_FIELDS)
    signing_key = fields[_K_SIGNING]
    if type(signing_key) is not bytes:
        raise DecodeError("chain handout", "signing key is not bytes")
    handout = ChainHandout(
        chain_id=fields[_K_CHAIN_ID],  # type: ignore[arg-type]  # checked by ChainHandout itself
        chain_key=fields[_K_CHAIN_KEY],  # type: ignore[arg-type]  # idem
        iteration=fields[_K_ITERATION],  # type: ignore[arg-type]  # idem
        signing_key=signing_key,
    )
    _checked_signing_key(signing_key, "chain handout", key_cache)
    return handout


@dataclass(slots=True, kw_only=True)
class SenderChain:
    """This member's sending chain in one group. Mutable: ``next_message_key`` moves it on."""

    #: Random id naming the chain in every message header.
    chain_id: bytes
    #: Key of message ``iteration``; replaced (not kept) by the next one at each message.
    chain_key: bytes = field(repr=False)
    #: Index of the next message.
    iteration: int
    #: Seed of the chain's Ed25519 signing key (made for this chain only).
    signing_seed: bytes = field(repr=False)
    #: When the chain was made, unix seconds (the core rotates chains on a schedule).
    created_at: int
    _public_key: bytes = field(init=False, repr=False, compare=False)
    _secret_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (
            _is_bytes(self.chain_id, CHAIN_ID_SIZE)
            and _is_bytes(self.chain_key, CHAIN_KEY_SIZE)
            and _is_count(self.iteration, MAX_ITERATION + 1)
            and _is_bytes(self.signing_seed, SEED_SIZE)
            and _is_count(self.created_at)
        ):
            raise DecodeError("sender chain", "a field has the wrong type or size")
        self._public_key, self._secret_key = sodium.crypto_sign_seed_keypair(self.signing_seed)

    @classmethod
    def new(cls, random_bytes: RandomBytes, *, wall_now: float) -> SenderChain:
        """A fresh chain from ``random_bytes``: new id, new chain key, new signing key, iteration 0."""
        randomness = random_bytes(CHAIN_ID_SIZE + CHAIN_KEY_SIZE + SEED_SIZE)
        if len(randomness) != CHAIN_ID_SIZE + CHAIN_KEY_SIZE + SEED_SIZE:
            raise ValueError("random_bytes returned the wrong number of bytes")
        return cls(
            chain_id=randomness[:CHAIN_ID_SIZE],
            chain_key=randomness[CHAIN_ID_SIZE : CHAIN_ID_SIZE + CHAIN_KEY_SIZE],
            iteration=0,
            signing_seed=randomness[CHAIN_ID_SIZE + CHAIN_KEY_SIZE :],
            created_at=max(0, int(wall_now)),
        )

    @property
    def signing_key(self) -> bytes:
        """The chain's 32-byte Ed25519 public key."""
        return self._public_key

    def next_message_key(self) -> tuple[int, bytes]:
        """Return ``(iteration, message key)`` for the next message and move the chain on past it.

        The chain key it came from is gone afterwards. ``ValueError`` once ``MAX_ITERATION`` is used.
        """
        iteration = self.iteration
        if iteration > MAX_ITERATION:
            raise ValueError("this sending chain is used up; start a new one")
        chain_key = self.chain_key
        self.chain_key = _next_chain_key(chain_key)
        self.iteration = iteration + 1
        return iteration, _message_key(chain_key)

    def sign(self, message: bytes) -> bytes:
        """The chain signing key's 64-byte Ed25519 signature of ``message``."""
        return sodium.crypto_sign(message, self._secret_key)[:SIGNATURE_SIZE]

    def handout(self) -> ChainHandout:
        """What other members need to read this chain from its next message on."""
        return ChainHandout(
            chain_id=self.chain_id,
            chain_key=self.chain_key,
            iteration=self.iteration,
            signing_key=self._public_key,
        )

    def to_bytes(self) -> bytes:
        """Canonical msgpack bytes for storage (secret: they hold the chain key and signing seed)."""
        return pack(
            {
                _K_FORMAT: _FORMAT,
                _K_CHAIN_ID: self.chain_id,
                _K_CHAIN_KEY: self.chain_key,
                _K_ITERATION: self.iteration,
                _K_SIGNING: self.signing_seed,
                _K_CREATED_AT: self.created_at,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderChain:
        """Restore a chain from ``to_bytes``; ``DecodeError`` (or ``TooLarge``) for anything corrupt."""
        fields = _unpack_map(data, what="sender chain", limit=_MAX_SENDER_SIZE, keys=_SENDER_FIELDS)
        return cls(
            chain_id=fields[_K_CHAIN_ID],  # type: ignore[arg-type]  # checked in __post_init__
            chain_key=fields[_K_CHAIN_KEY],  # type: ignore[arg-type]  # idem
            iteration=fields[_K_ITERATION],  # type: ignore[arg-type]  # idem
            signing_seed=fields[_K_SIGNING],  # type: ignore[arg-type]  # idem
            created_at=fields[_K_CREATED_AT],  # type: ignore[arg-type]  # idem
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Advance:
    """How a receiving chain changes once the message ``iteration`` verified (from ``key_for``)."""

    #: The chain it applies to.
    chain_id: bytes
    #: Index of the message whose key was handed out.
    iteration: int
    #: The chain's ``iteration`` when ``key_for`` ran: an advance applies to that state only.
    base_iteration: int
    #: The chain key after the message (None: the key came from the skipped store, the chain stays).
    chain_key: bytes | None = field(repr=False)
    #: ``(index, message key)`` of the messages skipped on the way, oldest first.
    skipped: tuple[tuple[int, bytes], ...] = field(repr=False)


@dataclass(slots=True, kw_only=True)
class ReceiverChain:
    """Another member's sending chain as this member reads it. Mutable: ``commit`` moves it on."""

    #: The chain's id.
    chain_id: bytes
    #: Key of message ``iteration`` (every earlier key is gone or among ``skipped_keys``).
    chain_key: bytes = field(repr=False)
    #: Index of the next message this chain has not derived a key for.
    iteration: int
    #: The chain's Ed25519 public key: every message must be signed by it.
    signing_key: bytes
    #: The member who sends on it (32-byte Ed25519 identity key).
    sender: bytes
    #: Keys of skipped messages by index, oldest first, at most ``MAX_SKIPPED_KEYS``.
    skipped_keys: dict[int, bytes] = field(default_factory=dict, repr=False)
    #: Skipped keys dropped to stay within ``MAX_SKIPPED_KEYS`` (their messages can no longer be read).
    dropped_keys: int = 0

    @classmethod
    def from_handout(
        cls, handout: ChainHandout, sender: bytes, *, key_cache: KeyCache | None = None
    ) -> ReceiverChain:
        """A receiving chain that reads ``sender``'s chain from ``handout.iteration`` on.

        ``DecodeError`` if the handout's signing key is not a usable Ed25519 key (checked again, as a
        ``ChainHandout`` may be built without ``decode_handout``; a ``key_cache`` makes it a lookup) or
        ``sender`` is not 32 bytes.
        """
        if not _is_bytes(sender, PUBLIC_KEY_SIZE):
            raise DecodeError("receiver chain", f"sender must be a {PUBLIC_KEY_SIZE}-byte key")
        return cls(
            chain_id=handout.chain_id,
            chain_key=handout.chain_key,
            iteration=handout.iteration,
            signing_key=_checked_signing_key(handout.signing_key, "chain handout", key_cache),
            sender=sender,
        )

    def key_for(self, iteration: int) -> tuple[bytes, Advance]:
        """The message key of message ``iteration`` and the change to commit once it verified.

        Changes nothing. Raises ``Replay`` if the key was used already (or dropped, or precedes the
        handout) and ``ChainJumpTooFar`` if ``iteration`` is more than ``MAX_SKIP`` ahead, both before
        any key is derived.
        """
        if iteration < self.iteration:
            key = self.skipped_keys.get(iteration)
            if key is None:
                raise Replay(_replay_id(self.chain_id, iteration))
            return key, Advance(
                chain_id=self.chain_id,
                iteration=iteration,
                base_iteration=self.iteration,
                chain_key=None,
                skipped=(),
            )
        jump = iteration - self.iteration
        if jump > MAX_SKIP:
            raise ChainJumpTooFar(jump=jump, limit=MAX_SKIP)
        chain_key = self.chain_key
        skipped = []
        for index in range(self.iteration, iteration):
            skipped.append((index, _message_key(chain_key)))
            chain_key = _next_chain_key(chain_key)
        return _message_key(chain_key), Advance(
            chain_id=self.chain_id,
            iteration=iteration,
            base_iteration=self.iteration,
            chain_key=_next_chain_key(chain_key),
            skipped=tuple(skipped),
        )

    def commit(self, advance: Advance) -> None:
        """Apply ``advance`` (after its message verified): its key is gone, skipped keys are kept.

        ``InvalidTransition`` if the advance is for another chain or another state of this one (two
        advances from one state: commit one, ask ``key_for`` again for the other); ``Replay`` if its
        skipped key was used in between.
        """
        if advance.chain_id != self.chain_id or (
            advance.chain_key is not None and advance.base_iteration != self.iteration
        ):
            raise InvalidTransition(
                machine="ReceiverChain",
                state=f"chain {self.chain_id.hex()[:8]} at {self.iteration}",
                event=f"advance of chain {advance.chain_id.hex()[:8]} from {advance.base_iteration}",
            )
        if advance.chain_key is None:
            if self.skipped_keys.pop(advance.iteration, None) is None:
                raise Replay(_replay_id(self.chain_id, advance.iteration))
            return
        self.chain_key = advance.chain_key
        self.iteration = advance.iteration + 1
        skipped_keys = self.skipped_keys
        skipped_keys.update(advance.skipped)
        excess = len(skipped_keys) - MAX_SKIPPED_KEYS
        if excess > 0:
            for index in list(skipped_keys)[:excess]:  # dicts keep insertion order: oldest first
                del skipped_keys[index]
            self.dropped_keys += excess

    def to_bytes(self) -> bytes:
        """Canonical msgpack bytes for storage (secret: they hold the chain key and skipped keys)."""
        skipped = b"".join(index.to_bytes(8, "big") + key for index, key in self.skipped_keys.items())
        return pack(
            {
                _K_FORMAT: _FORMAT,
                _K_CHAIN_ID: self.chain_id,
                _K_CHAIN_KEY: self.chain_key,
                _K_ITERATION: self.iteration,
                _K_SIGNING: self.signing_key,
                _K_SENDER: self.sender,
                _K_SKIPPED: skipped,
                _K_DROPPED: self.dropped_keys,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, key_cache: KeyCache | None = None) -> ReceiverChain:
        """Restore a chain from ``to_bytes``; ``DecodeError`` (or ``TooLarge``) for anything corrupt.

        Pass a ``key_cache`` to check each signing key once across calls.
        """
        what = "receiver chain"
        fields = _unpack_map(data, what=what, limit=_MAX_RECEIVER_SIZE, keys=_RECEIVER_FIELDS)
        chain_id, chain_key, iteration = fields[_K_CHAIN_ID], fields[_K_CHAIN_KEY], fields[_K_ITERATION]
        sender, skipped, dropped = fields[_K_SENDER], fields[_K_SKIPPED], fields[_K_DROPPED]
        signing_key = fields[_K_SIGNING]
        if not (
            _is_bytes(chain_id, CHAIN_ID_SIZE)
            and _is_bytes(chain_key, CHAIN_KEY_SIZE)
            and _is_count(iteration, _MAX_STORED_ITERATION)
            and _is_bytes(sender, PUBLIC_KEY_SIZE)
            and _is_count(dropped)
            and type(skipped) is bytes
            and type(signing_key) is bytes
        ):
            raise DecodeError(what, "a field has the wrong type or size")
        if len(skipped) % _SKIPPED_ENTRY or len(skipped) > MAX_SKIPPED_KEYS * _SKIPPED_ENTRY:
            raise DecodeError(
                what, f"skipped keys must be at most {MAX_SKIPPED_KEYS} entries of {_SKIPPED_ENTRY} bytes"
            )
        skipped_keys: dict[int, bytes] = {}
        for start in range(0, len(skipped), _SKIPPED_ENTRY):
            index = int.from_bytes(skipped[start : start + 8], "big")
            if index >= iteration or index in skipped_keys:
                raise DecodeError(what, "a skipped key is not below the chain or appears twice")
            skipped_keys[index] = skipped[start + 8 : start + _SKIPPED_ENTRY]
        return cls(
            chain_id=chain_id,
            chain_key=chain_key,
            iteration=iteration,
            signing_key=_checked_signing_key(signing_key, what, key_cache),
            sender=sender,
            skipped_keys=skipped_keys,
            dropped_keys=dropped,
        )
