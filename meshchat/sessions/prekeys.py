"""Prekeys: the signed prekey bundle a device publishes, and the secrets behind it (``Prekeys``).

What: the public half (``PrekeyBundle``, published in the DHT, on the device's mailboxes and in invites)
and the private half (``Prekeys``, one blob in the device's storage) of X3DH's prekeys (Signal's X3DH
spec, section 2.5 / 3.2) with PQXDH's post-quantum prekey (Signal's PQXDH spec, section 3.2). What it is
not: the key agreement itself (``meshchat.sessions.x3dh``) or where bundles are stored and fetched.

A bundle holds, for one device identity (Ed25519, 32 bytes):

- a signed prekey (SPK): an X25519 public key with an id and its creation time, signed by the identity;
- a post-quantum "last-resort" prekey: an ML-KEM-768 public key (1184 bytes), signed the same way. It is
  made, rotated and retired together with the SPK (one *generation*), never consumed: there is no
  server to hand out one-time KEM keys one at a time, and a bundle holding a hundred 1184-byte keys would
  not fit an invite;
- up to ``MAX_BUNDLE_ONE_TIME`` one-time prekeys (OPKs): X25519 public keys with ids, unsigned (as in
  X3DH: a forged one-time key only removes its own DH output from the agreement, it cannot replace the
  signed ones).

Signatures (the choice where the specs leave room): X3DH and PQXDH sign with XEdDSA because Signal's
identity key is an X25519 key. A meshchat identity *is* an Ed25519 key (its PeerId, its invites and its
envelopes' signatures use it), so prekeys are signed with plain Ed25519 by that key, over a domain
string, the id and the creation time as well as the key::

    SPK: b"meshchat/spk/v1\\x00"   || spk_id u32 BE || created u64 BE || spk (32)
    PQ:  b"meshchat/pqspk/v1\\x00" || pq_id u32 BE  || created u64 BE || pq_key (1184)

so a signature cannot be moved to another id, another time, or between the two kinds of key. The DH
half of the identity is the X25519 form of the Ed25519 key (``Identity.x25519_secret``), as libsodium
and python-x3dh's ``ED_25519`` identity format do.

Encodings are canonical msgpack maps with integer keys (``meshchat.wire.codec``). The one-time keys are
one byte string of ``id u32 BE || key (32)`` records in ascending id order, so a full bundle stays
within the codec's 64-item container bound. ``PrekeyBundle.decode`` checks the exact key set, exact
types, every size and id, and raises ``BadBundle``; it does not check signatures (``verify`` does, and
``x3dh.initiate`` calls it).

Bounds and why (each a named constant below):

- ids are u32 from 1; 0 means "none" only where a field is optional (the PQ prekey of a bundle);
- ``SPK_ROTATION`` (7 days): how long one generation is current (Signal rotates weekly to monthly);
- ``BUNDLE_MAX_AGE`` (60 days): an initiator ignores a bundle older than this (``x3dh.initiate`` falls
  back to the identity-only set-up), so a device that went quiet does not keep stale keys in use;
- ``SPK_KEEP`` (92 days): a retired generation is kept until it is this old, because a set-up made
  from a bundle ``BUNDLE_MAX_AGE`` old may sit in a mailbox for ``MAX_TTL`` (30 days) before it
  arrives; two days more cover clocks that disagree (far beyond the envelope layer's ``CLOCK_SKEW``);
- so at most ``SPK_KEEP // SPK_ROTATION + 1`` = 13 + 1 = ``MAX_RETIRED`` (14) retired generations are
  kept when ``maintain`` runs on time (13 rotations fit in 92 days, one more for the rounding of the
  last); the list is capped there anyway, oldest dropped first, so a clock that steps back and forth
  cannot grow it. Each costs 32 + 64 bytes of secrets and two signatures;
- ``ONE_TIME_POOL`` (100): one-time secrets kept; ``maintain`` tops the pool up when it falls below
  half. A bundle carries at most ``MAX_BUNDLE_ONE_TIME`` (100) of them.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass, field
from typing import Final

import nacl.bindings as sodium
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

from meshchat.crypto import MAX_TTL
from meshchat.errors import BadBundle, BadSignature, DecodeError, UnknownPrekey
from meshchat.identity import Identity, PublicIdentity, RandomBytes
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "BUNDLE_MAX_AGE",
    "MAX_BUNDLE_ONE_TIME",
    "MAX_BUNDLE_SIZE",
    "MAX_PREKEY_ID",
    "MAX_RETIRED",
    "MLKEM768_CIPHERTEXT_SIZE",
    "MLKEM768_PUBLIC_SIZE",
    "MLKEM_SEED_SIZE",
    "ONE_TIME_POOL",
    "SPK_KEEP",
    "SPK_ROTATION",
    "X25519_KEY_SIZE",
    "OneTimeKey",
    "PrekeyBundle",
    "Prekeys",
    "pq_signed_message",
    "spk_signed_message",
]

DAY: Final = 86_400
#: How long one signed prekey generation (SPK + PQ prekey) stays current, seconds.
SPK_ROTATION: Final = 7 * DAY
#: An initiator uses no bundle older than this (by its ``created``), seconds.
BUNDLE_MAX_AGE: Final = 60 * DAY
#: A retired generation is forgotten once this old: a set-up from a bundle BUNDLE_MAX_AGE old can wait
#: MAX_TTL in a mailbox; two days more for clocks that disagree.
SPK_KEEP: Final = BUNDLE_MAX_AGE + MAX_TTL + 2 * DAY
#: Retired generations kept at most: SPK_KEEP // SPK_ROTATION + 1 = 14.
MAX_RETIRED: Final = SPK_KEEP // SPK_ROTATION + 1
#: One-time secrets this device keeps; topped up when fewer than half are left.
ONE_TIME_POOL: Final = 100
#: One-time keys a bundle may carry.
MAX_BUNDLE_ONE_TIME: Final = 100
#: Largest prekey id (ids are u32; 0 means "none").
MAX_PREKEY_ID: Final = 2**32 - 1
#: An X25519 public or secret key, bytes.
X25519_KEY_SIZE: Final = 32
#: An ML-KEM-768 encapsulation key (FIPS 203), bytes.
MLKEM768_PUBLIC_SIZE: Final = 1184
#: An ML-KEM-768 ciphertext (FIPS 203), bytes.
MLKEM768_CIPHERTEXT_SIZE: Final = 1088
#: The seed an ML-KEM-768 key pair is made from (d || z, FIPS 203), bytes.
MLKEM_SEED_SIZE: Final = 64
_SIGNATURE_SIZE: Final = 64
_ONE_TIME_RECORD: Final = 4 + X25519_KEY_SIZE
#: A full bundle (100 one-time keys) is about 5 KiB; nothing larger is parsed.
MAX_BUNDLE_SIZE: Final = 6 * 1024
#: The Prekeys blob: 15 generations of secrets and signatures and 100 one-time secrets, about 7 KiB.
_MAX_PREKEYS_SIZE: Final = 16 * 1024
_MAX_U64: Final = 2**64 - 1

BUNDLE_VERSION: Final = 1
PREKEYS_VERSION: Final = 1
_SPK_DOMAIN: Final = b"meshchat/spk/v1\x00"
_PQ_DOMAIN: Final = b"meshchat/pqspk/v1\x00"


def spk_signed_message(spk_id: int, created: int, spk: bytes) -> bytes:
    """The bytes an identity signs for a signed prekey."""
    return _SPK_DOMAIN + struct.pack(">IQ", spk_id, created) + spk


def pq_signed_message(pq_id: int, created: int, pq_key: bytes) -> bytes:
    """The bytes an identity signs for a post-quantum prekey."""
    return _PQ_DOMAIN + struct.pack(">IQ", pq_id, created) + pq_key


def _is_id(value: object, *, zero_ok: bool = False) -> bool:
    return type(value) is int and (0 if zero_ok else 1) <= value <= MAX_PREKEY_ID


def _is_bytes(value: object, size: int) -> bool:
    return type(value) is bytes and len(value) == size


@dataclass(frozen=True, slots=True, kw_only=True)
class OneTimeKey:
    """A one-time prekey's public half, as a bundle carries it."""

    #: Its id (u32, from 1), named in the set-up that uses it.
    key_id: int
    #: The X25519 public key (32 bytes).
    key: bytes

    def __post_init__(self) -> None:
        if not _is_id(self.key_id):
            raise BadBundle(f"one-time key id {self.key_id!r} outside 1..{MAX_PREKEY_ID}")
        if not _is_bytes(self.key, X25519_KEY_SIZE):
            raise BadBundle(f"one-time key {self.key_id} is not {X25519_KEY_SIZE} bytes")


def _bundle_problem(b: PrekeyBundle) -> str:
    """Why ``b`` cannot be a bundle, or ``""``."""
    pq_ok = (
        (b.pq_key == b"" and b.pq_signature == b"")
        if b.pq_id == 0
        else (_is_bytes(b.pq_key, MLKEM768_PUBLIC_SIZE) and _is_bytes(b.pq_signature, _SIGNATURE_SIZE))
    )
    ids = [k.key_id for k in b.one_time] if type(b.one_time) is tuple else []
    checks = (
        (_is_bytes(b.identity, 32), "identity must be a 32-byte Ed25519 key"),
        (type(b.created) is int and 0 <= b.created <= _MAX_U64, "created must be a u64"),
        (_is_id(b.spk_id), f"signed prekey id outside 1..{MAX_PREKEY_ID}"),
        (_is_bytes(b.spk, X25519_KEY_SIZE), f"signed prekey must be {X25519_KEY_SIZE} bytes"),
        (_is_bytes(b.spk_signature, _SIGNATURE_SIZE), "signed prekey signature must be 64 bytes"),
        (_is_id(b.pq_id, zero_ok=True), f"post-quantum prekey id outside 0..{MAX_PREKEY_ID}"),
        (pq_ok, "post-quantum prekey must be 1184 bytes with a 64-byte signature, or absent (id 0)"),
        (type(b.one_time) is tuple and all(type(k) is OneTimeKey for k in b.one_time), "bad one-time keys"),
        (len(ids) <= MAX_BUNDLE_ONE_TIME, f"more than {MAX_BUNDLE_ONE_TIME} one-time keys"),
        (all(a < c for a, c in itertools.pairwise(ids)), "one-time key ids not strictly ascending"),
    )
    for ok, problem in checks:
        if not ok:
            return problem
    return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PrekeyBundle:
    """What an initiator needs to start a session with one device: its signed and one-time prekeys.

    Constructing one checks every field's type, size and id (``BadBundle``); signatures are checked
    by :meth:`verify`.
    """

    #: The device's Ed25519 identity key (32 bytes).
    identity: bytes
    #: Unix seconds the signed prekey (and the PQ prekey) were made.
    created: int
    #: The signed prekey's id (u32, from 1).
    spk_id: int
    #: The signed prekey, X25519 (32 bytes).
    spk: bytes
    #: Ed25519 signature by ``identity`` over ``spk_signed_message``.
    spk_signature: bytes = field(repr=False)
    #: The ML-KEM-768 last-resort prekey's id, 0 if the bundle has none.
    pq_id: int
    #: The ML-KEM-768 encapsulation key (1184 bytes), or b"".
    pq_key: bytes = field(repr=False)
    #: Ed25519 signature by ``identity`` over ``pq_signed_message``, or b"".
    pq_signature: bytes = field(repr=False)
    #: One-time prekeys in ascending id order, at most MAX_BUNDLE_ONE_TIME.
    one_time: tuple[OneTimeKey, ...] = ()

    def __post_init__(self) -> None:
        problem = _bundle_problem(self)
        if problem:
            raise BadBundle(problem)

    def encode(self) -> bytes:
        """The bundle's canonical bytes (what ``decode`` reads)."""
        one_time = b"".join(struct.pack(">I", k.key_id) + k.key for k in self.one_time)
        return pack(
            {
                1: BUNDLE_VERSION,
                2: self.identity,
                3: self.created,
                4: self.spk_id,
                5: self.spk,
                6: self.spk_signature,
                7: self.pq_id,
                8: self.pq_key,
                9: self.pq_signature,
                10: one_time,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> PrekeyBundle:
        """Parse a bundle; ``BadBundle`` (``TooLarge`` over MAX_BUNDLE_SIZE) for anything malformed.

        Signatures are not checked here: call :meth:`verify`.
        """
        try:
            fields = unpack_canonical(data, what="prekey bundle", limit=MAX_BUNDLE_SIZE)
        except DecodeError as exc:  # TooLarge among them: decode raises BadBundle and nothing else
            raise BadBundle(exc.problem) from exc
        if type(fields) is not dict or fields.keys() != set(range(1, 11)):
            raise BadBundle("not a map of fields 1 to 10")
        if type(fields[1]) is not int or fields[1] != BUNDLE_VERSION:
            raise BadBundle(f"version {fields[1]!r} (this meshchat reads {BUNDLE_VERSION})")
        blob = fields[10]
        if type(blob) is not bytes or len(blob) % _ONE_TIME_RECORD:
            raise BadBundle(f"one-time keys must be {_ONE_TIME_RECORD}-byte records")
        if len(blob) > MAX_BUNDLE_ONE_TIME * _ONE_TIME_RECORD:
            raise BadBundle(f"more than {MAX_BUNDLE_ONE_TIME} one-time keys")
        one_time = tuple(
            OneTimeKey(key_id=int.from_bytes(blob[i : i + 4], "big"), key=blob[i + 4 : i + _ONE_TIME_RECORD])
            for i in range(0, len(blob), _ONE_TIME_RECORD)
        )
        return cls(
            identity=fields[2],
            created=fields[3],
            spk_id=fields[4],
            spk=fields[5],
            spk_signature=fields[6],
            pq_id=fields[7],
            pq_key=fields[8],
            pq_signature=fields[9],
            one_time=one_time,
        )

    def verify(self) -> None:
        """Raise ``BadBundle`` unless ``identity`` is a usable key that signed both prekeys."""
        try:
            public = PublicIdentity.from_bytes(self.identity)
        except DecodeError as exc:
            raise BadBundle("identity is not a usable Ed25519 key") from exc
        try:
            public.verify(spk_signed_message(self.spk_id, self.created, self.spk), self.spk_signature)
        except BadSignature as exc:
            raise BadBundle("signed prekey signature does not verify") from exc
        if self.pq_id:
            try:
                public.verify(pq_signed_message(self.pq_id, self.created, self.pq_key), self.pq_signature)
            except BadSignature as exc:
                raise BadBundle("post-quantum prekey signature does not verify") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class _Generation:
    """One signed prekey and its post-quantum prekey: made, published and retired together."""

    key_id: int
    created: int
    spk_secret: bytes = field(repr=False)
    pq_seed: bytes = field(repr=False)
    spk_signature: bytes = field(repr=False)
    pq_signature: bytes = field(repr=False)

    @classmethod
    def make(cls, identity: Identity, key_id: int, created: int, random_bytes: RandomBytes) -> _Generation:
        spk_secret = random_bytes(X25519_KEY_SIZE)
        pq_seed = random_bytes(MLKEM_SEED_SIZE)
        spk = sodium.crypto_scalarmult_base(spk_secret)
        pq_key = MLKEM768PrivateKey.from_seed_bytes(pq_seed).public_key().public_bytes_raw()
        return cls(
            key_id=key_id,
            created=created,
            spk_secret=spk_secret,
            pq_seed=pq_seed,
            spk_signature=identity.sign(spk_signed_message(key_id, created, spk)),
            pq_signature=identity.sign(pq_signed_message(key_id, created, pq_key)),
        )

    def encode(self) -> dict[int, object]:
        return {
            1: self.key_id,
            2: self.created,
            3: self.spk_secret,
            4: self.pq_seed,
            5: self.spk_signature,
            6: self.pq_signature,
        }

    @classmethod
    def decode(cls, fields: object) -> _Generation:
        if type(fields) is not dict or fields.keys() != set(range(1, 7)):
            raise DecodeError("prekeys", "a generation is not a map of fields 1 to 6")
        if not _is_id(fields[1]) or type(fields[2]) is not int or not 0 <= fields[2] <= _MAX_U64:
            raise DecodeError("prekeys", "a generation's id or time is out of range")
        sizes = {3: X25519_KEY_SIZE, 4: MLKEM_SEED_SIZE, 5: _SIGNATURE_SIZE, 6: _SIGNATURE_SIZE}
        if not all(_is_bytes(fields[k], size) for k, size in sizes.items()):
            raise DecodeError("prekeys", "a generation's keys or signatures have the wrong size")
        return cls(
            key_id=fields[1],
            created=fields[2],
            spk_secret=fields[3],
            pq_seed=fields[4],
            spk_signature=fields[5],
            pq_signature=fields[6],
        )


def _next_id(after: int, in_use: set[int] | dict[int, bytes]) -> int:
    """The id after ``after`` (u32, wrapping to 1), skipping ids still in use."""
    candidate = after
    for _ in range(len(in_use) + 1):
        candidate = candidate % MAX_PREKEY_ID + 1
        if candidate not in in_use:
            return candidate
    raise AssertionError("unreachable: more ids in use than tried")


def _unix_seconds(wall_now: float) -> int:
    if math.isnan(wall_now) or not 0 <= wall_now <= _MAX_U64:
        raise ValueError(f"wall_now {wall_now!r} is not a unix time")
    return int(wall_now)


class Prekeys:
    """This device's prekey secrets: the current generation, the retired ones still kept, the one-time pool.

    Mutable: :meth:`maintain` rotates and tops up, ``x3dh.respond`` consumes one-time keys; the caller
    persists :meth:`encode` whenever either reports a change (respond: always, in the transaction that
    stores what the set-up opened). See the module docstring for every bound.
    """

    __slots__ = ("_current", "_identity", "_next_one_time", "_one_time", "_retired")

    def __init__(
        self,
        *,
        identity: bytes,
        current: _Generation,
        retired: list[_Generation],
        one_time: dict[int, bytes],
        next_one_time: int,
    ) -> None:
        # Private: use create or decode.
        self._identity = identity
        self._current = current
        self._retired = retired  # newest first
        self._one_time = one_time  # id -> X25519 secret, ascending ids
        self._next_one_time = next_one_time  # the last one-time id handed out

    @classmethod
    def create(cls, identity: Identity, *, wall_now: float, random_bytes: RandomBytes) -> Prekeys:
        """Fresh prekeys for ``identity``: generation 1 made now and a full one-time pool."""
        current = _Generation.make(identity, 1, _unix_seconds(wall_now), random_bytes)
        prekeys = cls(
            identity=identity.public.ed25519, current=current, retired=[], one_time={}, next_one_time=0
        )
        prekeys._top_up(random_bytes)
        return prekeys

    def _check_identity(self, identity: Identity) -> None:
        if identity.public.ed25519 != self._identity:
            raise ValueError("these prekeys belong to another identity")

    def _top_up(self, random_bytes: RandomBytes) -> None:
        while len(self._one_time) < ONE_TIME_POOL:
            self._next_one_time = _next_id(self._next_one_time, self._one_time)
            self._one_time[self._next_one_time] = random_bytes(X25519_KEY_SIZE)
        self._one_time = dict(sorted(self._one_time.items()))

    def bundle(self, identity: Identity, *, one_time: int = 0) -> PrekeyBundle:
        """The bundle to publish: the current SPK and PQ prekey and up to ``one_time`` one-time keys.

        The one-time keys are the pool's first (oldest) ids. ``ValueError`` if ``identity`` is not the
        one these prekeys were made for, or ``one_time`` is outside 0..MAX_BUNDLE_ONE_TIME.
        """
        self._check_identity(identity)
        if not 0 <= one_time <= MAX_BUNDLE_ONE_TIME:
            raise ValueError(f"a bundle carries 0 to {MAX_BUNDLE_ONE_TIME} one-time keys, not {one_time}")
        g = self._current
        picked = list(self._one_time.items())[:one_time]
        return PrekeyBundle(
            identity=self._identity,
            created=g.created,
            spk_id=g.key_id,
            spk=sodium.crypto_scalarmult_base(g.spk_secret),
            spk_signature=g.spk_signature,
            pq_id=g.key_id,
            pq_key=MLKEM768PrivateKey.from_seed_bytes(g.pq_seed).public_key().public_bytes_raw(),
            pq_signature=g.pq_signature,
            one_time=tuple(OneTimeKey(key_id=i, key=sodium.crypto_scalarmult_base(s)) for i, s in picked),
        )

    def maintain(self, identity: Identity, *, wall_now: float, random_bytes: RandomBytes) -> bool:
        """Rotate, forget and top up as ``wall_now`` requires; True if anything changed (persist then).

        A current generation SPK_ROTATION old is retired and a new one made (also one made more than
        SPK_ROTATION in the future: the clock was wrong then, and a bundle dated ahead would look
        fresh to initiators for as long); retired generations older than SPK_KEEP are forgotten (and
        never more than MAX_RETIRED kept); the one-time pool is refilled to ONE_TIME_POOL when fewer
        than half are left.
        """
        self._check_identity(identity)
        now = _unix_seconds(wall_now)
        changed = False
        if abs(now - self._current.created) >= SPK_ROTATION:
            in_use = {g.key_id for g in self._retired}
            key_id = _next_id(self._current.key_id, in_use | {self._current.key_id})
            self._retired.insert(0, self._current)
            self._current = _Generation.make(identity, key_id, now, random_bytes)
            changed = True
        kept = [g for g in self._retired if now - g.created <= SPK_KEEP][:MAX_RETIRED]
        if len(kept) != len(self._retired):
            self._retired = kept
            changed = True
        if len(self._one_time) < ONE_TIME_POOL // 2:
            self._top_up(random_bytes)
            changed = True
        return changed

    # Lookups for x3dh.respond.

    def _generation(self, key_id: int, kind: str) -> _Generation:
        for g in (self._current, *self._retired):
            if g.key_id == key_id:
                return g
        raise UnknownPrekey(kind=kind, prekey_id=key_id)

    def signed_secret(self, spk_id: int) -> bytes:
        """The X25519 secret of signed prekey ``spk_id``; ``UnknownPrekey("signed")`` if retired."""
        return self._generation(spk_id, "signed").spk_secret

    def pq_secret(self, pq_id: int) -> MLKEM768PrivateKey:
        """The ML-KEM-768 key of PQ prekey ``pq_id``; ``UnknownPrekey("post-quantum")`` if gone."""
        return MLKEM768PrivateKey.from_seed_bytes(self._generation(pq_id, "post-quantum").pq_seed)

    def one_time_secret(self, key_id: int) -> bytes:
        """The X25519 secret of one-time prekey ``key_id``; ``UnknownPrekey("one-time")`` if used."""
        secret = self._one_time.get(key_id)
        if secret is None:
            raise UnknownPrekey(kind="one-time", prekey_id=key_id)
        return secret

    def consume_one_time(self, key_id: int) -> None:
        """Forget one-time prekey ``key_id`` (used once); ``UnknownPrekey`` if it is not there."""
        if self._one_time.pop(key_id, None) is None:
            raise UnknownPrekey(kind="one-time", prekey_id=key_id)

    @property
    def identity(self) -> bytes:
        """The Ed25519 public key these prekeys belong to."""
        return self._identity

    @property
    def current_spk_id(self) -> int:
        """The id of the current signed (and PQ) prekey."""
        return self._current.key_id

    @property
    def signed_ids(self) -> tuple[int, ...]:
        """Ids of the signed prekeys still kept, current first."""
        return tuple(g.key_id for g in (self._current, *self._retired))

    @property
    def one_time_ids(self) -> tuple[int, ...]:
        """Ids of the one-time prekeys not used yet, ascending."""
        return tuple(self._one_time)

    def copy(self) -> Prekeys:
        """An independent copy (to run ``x3dh.respond`` on before the set-up has proved itself)."""
        return Prekeys(
            identity=self._identity,
            current=self._current,
            retired=list(self._retired),
            one_time=dict(self._one_time),
            next_one_time=self._next_one_time,
        )

    def encode(self) -> bytes:
        """The storage blob (secrets: keep it where the identity key is kept)."""
        return pack(
            {
                1: PREKEYS_VERSION,
                2: self._identity,
                3: [g.encode() for g in (self._current, *self._retired)],
                4: b"".join(struct.pack(">I", i) + s for i, s in self._one_time.items()),
                5: self._next_one_time,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Prekeys:
        """Read a blob written by :meth:`encode`; ``DecodeError`` if it is malformed or out of bounds."""
        fields = unpack_canonical(data, what="prekeys", limit=_MAX_PREKEYS_SIZE)
        if type(fields) is not dict or fields.keys() != set(range(1, 6)):
            raise DecodeError("prekeys", "not a map of fields 1 to 5")
        if fields[1] != PREKEYS_VERSION or type(fields[1]) is not int:
            raise DecodeError("prekeys", f"version {fields[1]!r} (this is {PREKEYS_VERSION})")
        if not _is_bytes(fields[2], 32):
            raise DecodeError("prekeys", "identity must be 32 bytes")
        gens = fields[3]
        if type(gens) is not tuple or not 1 <= len(gens) <= MAX_RETIRED + 1:
            raise DecodeError("prekeys", f"1 to {MAX_RETIRED + 1} generations expected")
        generations = [_Generation.decode(g) for g in gens]
        if len({g.key_id for g in generations}) != len(generations):
            raise DecodeError("prekeys", "two generations share an id")
        blob = fields[4]
        if (
            type(blob) is not bytes
            or len(blob) % _ONE_TIME_RECORD
            or len(blob) > ONE_TIME_POOL * _ONE_TIME_RECORD
        ):
            raise DecodeError(
                "prekeys", f"at most {ONE_TIME_POOL} one-time records of {_ONE_TIME_RECORD} bytes"
            )
        one_time: dict[int, bytes] = {}
        previous = 0
        for i in range(0, len(blob), _ONE_TIME_RECORD):
            key_id = int.from_bytes(blob[i : i + 4], "big")
            if key_id <= previous:
                raise DecodeError("prekeys", "one-time ids must be ascending u32 from 1")
            one_time[key_id] = blob[i + 4 : i + _ONE_TIME_RECORD]
            previous = key_id
        if not _is_id(fields[5], zero_ok=True):
            raise DecodeError("prekeys", "next one-time id out of range")
        return cls(
            identity=fields[2],
            current=generations[0],
            retired=generations[1:],
            one_time=one_time,
            next_one_time=fields[5],
        )
