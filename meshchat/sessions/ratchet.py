"""The Double Ratchet with header encryption: per-message keys for one 1:1 session.

What it is: Signal's Double Ratchet, the header-encryption variant (Perrin and Marlinspike, "The Double
Ratchet Algorithm", revision 1, section 4: ``RatchetInitAliceHE``, ``RatchetInitBobHE``,
``RatchetEncryptHE``, ``RatchetDecryptHE``, ``DHRatchetHE``), exactly as specified there, with:

- ``KDF_RK_HE(rk, dh_out)``: HKDF-SHA256 (RFC 5869) with salt ``rk``, input ``dh_out``, info
  ``b"meshchat ratchet v1"``, 96 bytes -> new root key, chain key, next header key. HKDF's output is
  prefix-stable, so the first 64 bytes are what the non-HE ``KDF_RK`` with the same info gives.
- ``KDF_CK(ck)``: message key ``HMAC-SHA256(ck, 0x01)``, next chain key ``HMAC-SHA256(ck, 0x02)``.
- ``ENCRYPT`` and ``HENCRYPT``: XChaCha20-Poly1305 (libsodium), a random 24-byte nonce prepended. Its
  192-bit nonce is what makes a random nonce safe under a header key that stays the same for a whole
  chain. The header is ``dh (32) || pn (u32 BE) || n (u32 BE)``, sealed under the sending header key
  with the session's associated data; the body is sealed under the message key with
  ``ad || encrypted header`` as associated data.

Message bytes: ``encrypted header (24 + 40 + 16 = 80) || nonce (24) || ciphertext (+16)``. Whoever does not
hold the header keys sees no ratchet key, no counter and nothing that links two messages of a session.

What it is not: the set-up (``meshchat.sessions.x3dh`` makes the shared secret and header keys), nor the
choice between a peer's sessions (``meshchat.sessions.session``). ``decrypt`` returns ``None`` for a
message whose header opens under none of this session's header keys, so the caller tries the next one.

Bounds, and why:

- ``MAX_SKIP`` (1,000): a header may claim a position at most this far ahead of the receiving chain, in
  the chain it belongs to and in the chain before it (``pn``). Deriving skipped keys costs two HMACs and
  76 stored bytes each; a peer announcing a jump of 10**6 gets ``TooManySkipped`` before anything is
  derived, and the state is untouched.
- ``MAX_SKIPPED`` (2,000): message keys kept for messages that have not arrived yet, per session. The
  oldest are evicted first and counted in ``skipped_evicted``; two full jumps (previous and current
  chain) fit.
- ``SKIPPED_TTL`` (``MAX_TTL + CLOCK_SKEW``): a skipped key is dropped this long after it was skipped:
  the message it would open has expired everywhere by then.
- ``MAX_RETIRED_HEADER_KEYS`` (32): receiving header keys of chains the peer has moved on from. They
  find the skipped keys of older chains, and they let a duplicate of an old chain's message raise
  ``Replay`` instead of looking like another session's message. Each costs one trial header decryption
  for a message that is not this session's, so they are few; one goes with each peer ratchet step (a
  round trip), and one that expires or is evicted takes its chain's skipped keys with it.

Every ``decrypt`` is all-or-nothing: it computes the new chain keys, counters and skipped keys in local
variables and writes them to the session only after the body authenticated, so any error (a tampered
byte, a too-large jump, a replay, a bad ratchet key) leaves the state exactly as it was. The DH ratchet
step (two X25519 and one key generation) runs only when a header opens under the next header key, i.e.
once per round trip; a message in the current chain costs two HMACs and two AEAD calls.

Where the code differs from the spec's pseudocode, with the same results: ``TrySkippedMessageKeysHE``
tries the header under the header key of every skipped key; here the header is tried once per header
key (current, next, then the retired ones, newest first) and the skipped key looked up by ``(hk, n)``:
a header opens under one key only, so the outcome is the same at a fraction of the cost. Where the spec
would fail with a generic error, a header that opens but whose key was used, evicted or expired raises
``Replay`` (``message_id`` = the first 32 bytes of the encrypted header).

Stored form (``encode``): a canonical msgpack map with integer keys; the skipped keys and retired header
keys are each one byte string of fixed-size records (the codec bounds arrays at 64 items).

Why hand-written: the Python implementations looked at do not fit. ``doubleratchet`` (PyPI,
python-doubleratchet 1.3, the maintained one) is an async API over pydantic models that deep-copies its
whole ratchet on every decryption, and it has no header encryption: its ``Header`` is a named tuple of
ratchet key and counters sent in the clear (``doubleratchet/types.py``, ``double_ratchet.py``).
``python-olm`` binds libolm, which Matrix has deprecated for vodozemac, and Olm sends its ratchet key and
chain index in the clear too; ``libsignal`` and ``python-axolotl`` on PyPI are ports last released in
2019. So this module composes libsodium (PyNaCl) X25519 and XChaCha20-Poly1305 with ``hmac.digest``
(HKDF is RFC 5869 written out in four HMAC calls; the tests compare it with ``cryptography``'s HKDF),
and the tests check its root, chain and message keys against ``doubleratchet`` configured with the
constants above.
"""

from __future__ import annotations

import hmac
import math
import struct
from typing import Final

import nacl.bindings as sodium
import nacl.exceptions

from meshchat.crypto import CLOCK_SKEW, MAX_TTL
from meshchat.errors import DecodeError, DecryptionFailed, Replay, SessionError, TooManySkipped
from meshchat.identity import RandomBytes
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "HEADER_SIZE",
    "MAX_RETIRED_HEADER_KEYS",
    "MAX_SKIP",
    "MAX_SKIPPED",
    "MESSAGE_OVERHEAD",
    "SKIPPED_TTL",
    "Ratchet",
]

#: Furthest a header may claim to be ahead of the receiving chain (current or previous chain).
MAX_SKIP: Final = 1000
#: Skipped message keys kept per session; the oldest go first (two full jumps fit).
MAX_SKIPPED: Final = 2000
#: Seconds a skipped key is kept: by then the message it opens has expired in every mailbox.
SKIPPED_TTL: Final = MAX_TTL + CLOCK_SKEW
#: Header keys of the peer's past sending chains kept to find old skipped keys and detect replays.
MAX_RETIRED_HEADER_KEYS: Final = 32
#: Largest associated data a session takes (the set-up's is two Ed25519 keys, 64 bytes).
MAX_AD: Final = 1024

_KEY = 32
_NONCE = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_TAG = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
_PLAIN_HEADER = _KEY + 4 + 4
#: Bytes of the encrypted header at the start of every message.
HEADER_SIZE: Final = _NONCE + _PLAIN_HEADER + _TAG
#: Bytes a ratchet message adds to its plaintext.
MESSAGE_OVERHEAD: Final = HEADER_SIZE + _NONCE + _TAG
_MAX_COUNTER = 2**32 - 1
_INFO = b"meshchat ratchet v1"
_HKDF_BLOCKS = (b"\x01", b"\x02", b"\x03")
_MK_INPUT = b"\x01"
_CK_INPUT = b"\x02"
_COUNTERS = struct.Struct(">II")
_encrypt = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt
_decrypt = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt
_digest = hmac.digest

# The stored form: canonical msgpack, integer keys.
_STATE_VERSION = 1
(_F_VERSION, _F_AD, _F_RK, _F_DHS, _F_DHS_PUB, _F_CKS, _F_CKR, _F_HKS, _F_HKR, _F_NHKS, _F_NHKR) = range(
    1, 12
)
(_F_NS, _F_NR, _F_PN, _F_SKIPPED, _F_RETIRED, _F_EVICTED) = range(12, 18)
_FIELDS = frozenset(range(1, 18))
_SKIPPED_RECORD = struct.Struct(">32sI32sQ")  # header key, n, message key, expiry (unix seconds)
_RETIRED_RECORD = struct.Struct(">32sQ")  # header key, expiry
_MAX_STATE = (
    1024 + MAX_AD + MAX_SKIPPED * _SKIPPED_RECORD.size + MAX_RETIRED_HEADER_KEYS * _RETIRED_RECORD.size
)
_MAX_EXPIRY = 2**64 - 1

# (header key, n) -> (message key, expiry)
_Skipped = dict[tuple[bytes, int], tuple[bytes, int]]


def _kdf_rk(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF_RK_HE: HKDF-SHA256(salt=rk, ikm=dh_out, info) -> (root key, chain key, next header key)."""
    prk = _digest(rk, dh_out, "sha256")
    t1 = _digest(prk, _INFO + _HKDF_BLOCKS[0], "sha256")
    t2 = _digest(prk, t1 + _INFO + _HKDF_BLOCKS[1], "sha256")
    t3 = _digest(prk, t2 + _INFO + _HKDF_BLOCKS[2], "sha256")
    return t1, t2, t3


def _dh(secret: bytes, public: bytes) -> bytes:
    try:
        return sodium.crypto_scalarmult(secret, public)
    except nacl.exceptions.RuntimeError as exc:  # libsodium refuses an all-zero result (a low-order point)
        raise DecodeError("ratchet key", "a low-order point (no shared secret)") from exc


def _open_header(hk: bytes, enc_header: bytes, ad: bytes) -> tuple[bytes, int, int] | None:
    try:
        header = _decrypt(enc_header[_NONCE:], ad, enc_header[:_NONCE], hk)
    except nacl.exceptions.CryptoError:
        return None
    pn, n = _COUNTERS.unpack_from(header, _KEY)
    return header[:_KEY], pn, n


def _open_body(mk: bytes, message: bytes, ad: bytes) -> bytes:
    body_ad = ad + message[:HEADER_SIZE]
    try:
        return _decrypt(
            message[HEADER_SIZE + _NONCE :], body_ad, message[HEADER_SIZE : HEADER_SIZE + _NONCE], mk
        )
    except nacl.exceptions.CryptoError as exc:
        raise DecryptionFailed() from exc


def _skip(
    ck: bytes, start: int, until: int, *, hk: bytes, expiry: int, out: list[tuple[bytes, int, bytes, int]]
) -> bytes:
    """SkipMessageKeysHE from ``start`` up to ``until`` (exclusive) into ``out``; the chain key after them."""
    for n in range(start, until):
        out.append((hk, n, _digest(ck, _MK_INPUT, "sha256"), expiry))
        ck = _digest(ck, _CK_INPUT, "sha256")
    return ck


def _check_key(name: str, value: bytes) -> None:
    if type(value) is not bytes or len(value) != _KEY:
        raise ValueError(f"{name} must be {_KEY} bytes")


class Ratchet:
    """One Double Ratchet session with header encryption (spec section 4), its state in memory.

    Build it with ``initiator`` or ``responder``, store it with ``encode`` / ``decode``. Not thread-safe;
    the caller persists ``encode()`` after every ``encrypt`` and successful ``decrypt``.
    """

    __slots__ = (
        "_ad",
        "_ckr",
        "_cks",
        "_dhs",
        "_dhs_pub",
        "_hkr",
        "_hks",
        "_nhkr",
        "_nhks",
        "_nr",
        "_ns",
        "_pn",
        "_retired",
        "_rk",
        "_skipped",
        "skipped_evicted",
    )

    _ad: bytes
    _rk: bytes
    _dhs: bytes
    _dhs_pub: bytes
    _cks: bytes | None
    _ckr: bytes | None
    _hks: bytes | None
    _hkr: bytes | None
    _nhks: bytes
    _nhkr: bytes
    _ns: int
    _nr: int
    _pn: int
    _skipped: _Skipped
    _retired: dict[bytes, int]
    #: Skipped message keys dropped before use because of ``MAX_SKIPPED`` or ``MAX_RETIRED_HEADER_KEYS``.
    skipped_evicted: int

    def __init__(self) -> None:
        raise TypeError("use Ratchet.initiator, Ratchet.responder or Ratchet.decode")

    @classmethod
    def _blank(cls, ad: bytes) -> Ratchet:
        if type(ad) is not bytes or len(ad) > MAX_AD:
            raise ValueError(f"ad must be bytes of at most {MAX_AD}")
        self = object.__new__(cls)
        self._ad = ad
        self._cks = self._ckr = self._hks = self._hkr = None
        self._ns = self._nr = self._pn = 0
        self._skipped = {}
        self._retired = {}
        self.skipped_evicted = 0
        return self

    @classmethod
    def initiator(
        cls,
        shared_secret: bytes,
        peer_ratchet_key: bytes,
        *,
        ad: bytes,
        shared_hka: bytes,
        shared_nhkb: bytes,
        random_bytes: RandomBytes,
    ) -> Ratchet:
        """RatchetInitAliceHE: the side that ran the set-up; it can send at once."""
        for name, value in (
            ("shared_secret", shared_secret),
            ("peer_ratchet_key", peer_ratchet_key),
            ("shared_hka", shared_hka),
            ("shared_nhkb", shared_nhkb),
        ):
            _check_key(name, value)
        self = cls._blank(ad)
        self._dhs = random_bytes(_KEY)
        self._dhs_pub = sodium.crypto_scalarmult_base(self._dhs)
        self._rk, self._cks, self._nhks = _kdf_rk(shared_secret, _dh(self._dhs, peer_ratchet_key))
        self._hks = shared_hka
        self._nhkr = shared_nhkb
        return self

    @classmethod
    def responder(
        cls,
        shared_secret: bytes,
        own_ratchet_secret: bytes,
        *,
        ad: bytes,
        shared_hka: bytes,
        shared_nhkb: bytes,
    ) -> Ratchet:
        """RatchetInitBobHE: the side that answers a set-up; it sends once its first message arrived."""
        for name, value in (
            ("shared_secret", shared_secret),
            ("own_ratchet_secret", own_ratchet_secret),
            ("shared_hka", shared_hka),
            ("shared_nhkb", shared_nhkb),
        ):
            _check_key(name, value)
        self = cls._blank(ad)
        self._dhs = own_ratchet_secret
        self._dhs_pub = sodium.crypto_scalarmult_base(own_ratchet_secret)
        self._rk = shared_secret
        self._nhks = shared_nhkb
        self._nhkr = shared_hka
        return self

    @property
    def has_received(self) -> bool:
        """True once a message from the peer has opened (an initiator then stops attaching its set-up)."""
        return self._hkr is not None

    # --- sending ----------------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, *, random_bytes: RandomBytes) -> bytes:
        """RatchetEncryptHE: the message bytes for ``plaintext``; advances the sending chain."""
        ck, hk = self._cks, self._hks
        if ck is None or hk is None:
            raise SessionError("this session cannot send before its first message has arrived")
        if self._ns >= _MAX_COUNTER:
            raise SessionError("the sending chain is exhausted (2**32 messages without a reply)")
        nonces = random_bytes(2 * _NONCE)
        header_nonce, body_nonce = nonces[:_NONCE], nonces[_NONCE:]
        ad = self._ad
        enc_header = header_nonce + _encrypt(
            self._dhs_pub + _COUNTERS.pack(self._pn, self._ns), ad, header_nonce, hk
        )
        mk = _digest(ck, _MK_INPUT, "sha256")
        body = _encrypt(plaintext, ad + enc_header, body_nonce, mk)
        self._cks = _digest(ck, _CK_INPUT, "sha256")
        self._ns += 1
        return enc_header + body_nonce + body

    # --- receiving --------------------------------------------------------------------------------

    def decrypt(self, message: bytes, *, wall_now: float, random_bytes: RandomBytes) -> bytes | None:
        """RatchetDecryptHE: the plaintext, or ``None`` if no header key of this session opens the header.

        Raises ``DecodeError`` (too short, a bad ratchet key), ``TooManySkipped`` (a jump over
        ``MAX_SKIP``), ``Replay`` (this message's key was used or is gone) or ``DecryptionFailed`` (the
        header opened, the body did not). On any error the state is unchanged.
        """
        if len(message) < MESSAGE_OVERHEAD:
            raise DecodeError("ratchet message", f"{len(message)} bytes; at least {MESSAGE_OVERHEAD}")
        enc_header = message[:HEADER_SIZE]
        ad = self._ad
        hkr = self._hkr
        if hkr is not None and (header := _open_header(hkr, enc_header, ad)) is not None:
            return self._receive_current(message, hkr, header[2], wall_now)
        if (header := _open_header(self._nhkr, enc_header, ad)) is not None:
            return self._receive_next(message, header, wall_now, random_bytes)
        for hk in reversed(self._retired):
            if (header := _open_header(hk, enc_header, ad)) is not None:
                return self._receive_skipped(message, hk, header[2], wall_now)
        return None

    def _receive_skipped(self, message: bytes, hk: bytes, n: int, wall_now: float) -> bytes:
        """A message of an older chain, or an earlier one of the current chain: its key was kept, or not."""
        entry = self._skipped.get((hk, n))
        if entry is None or entry[1] < wall_now:
            raise Replay(message_id=message[:32])
        plaintext = _open_body(entry[0], message, self._ad)
        del self._skipped[hk, n]
        self._expire(wall_now)
        return plaintext

    def _receive_current(self, message: bytes, hk: bytes, n: int, wall_now: float) -> bytes:
        nr = self._nr
        if n < nr:
            return self._receive_skipped(message, hk, n, wall_now)
        if n - nr > MAX_SKIP:
            raise TooManySkipped(jump=n - nr, limit=MAX_SKIP)
        ck = self._ckr
        assert ck is not None  # a receiving header key always comes with its chain key
        skipped: list[tuple[bytes, int, bytes, int]] = []
        if n > nr:
            ck = _skip(ck, nr, n, hk=hk, expiry=self._expiry(wall_now), out=skipped)
        plaintext = _open_body(_digest(ck, _MK_INPUT, "sha256"), message, self._ad)
        self._ckr = _digest(ck, _CK_INPUT, "sha256")
        self._nr = n + 1
        self._commit_skipped(skipped, wall_now)
        return plaintext

    def _receive_next(
        self, message: bytes, header: tuple[bytes, int, int], wall_now: float, random_bytes: RandomBytes
    ) -> bytes:
        """The peer stepped its ratchet: finish the old receiving chain up to ``pn``, then DHRatchetHE."""
        dh, pn, n = header
        nr = self._nr
        # Both jumps are checked before anything is derived (SkipMessageKeysHE checks each in turn).
        if pn - nr > MAX_SKIP:
            raise TooManySkipped(jump=pn - nr, limit=MAX_SKIP)
        if n > MAX_SKIP:
            raise TooManySkipped(jump=n, limit=MAX_SKIP)
        expiry = self._expiry(wall_now)
        skipped: list[tuple[bytes, int, bytes, int]] = []
        old_hkr, old_ckr = self._hkr, self._ckr
        if old_ckr is not None and old_hkr is not None and pn > nr:
            _skip(old_ckr, nr, pn, hk=old_hkr, expiry=expiry, out=skipped)
        # DHRatchetHE
        rk, ckr, nhkr = _kdf_rk(self._rk, _dh(self._dhs, dh))
        dhs = random_bytes(_KEY)
        rk, cks, nhks = _kdf_rk(rk, _dh(dhs, dh))
        hkr = self._nhkr
        if n > 0:
            ckr = _skip(ckr, 0, n, hk=hkr, expiry=expiry, out=skipped)
        plaintext = _open_body(_digest(ckr, _MK_INPUT, "sha256"), message, self._ad)
        dhs_pub = sodium.crypto_scalarmult_base(dhs)
        # Commit: nothing below can fail.
        self._pn, self._ns, self._nr = self._ns, 0, n + 1
        self._hks, self._hkr = self._nhks, hkr
        self._rk, self._ckr, self._nhkr = rk, _digest(ckr, _CK_INPUT, "sha256"), nhkr
        self._dhs, self._dhs_pub = dhs, dhs_pub
        self._cks, self._nhks = cks, nhks
        if old_hkr is not None:
            self._retire(old_hkr, expiry)
        self._commit_skipped(skipped, wall_now)
        return plaintext

    @staticmethod
    def _expiry(wall_now: float) -> int:
        return min(max(math.ceil(wall_now), 0) + SKIPPED_TTL, _MAX_EXPIRY)

    def _retire(self, hk: bytes, expiry: int) -> None:
        retired = self._retired
        retired[hk] = expiry
        while len(retired) > MAX_RETIRED_HEADER_KEYS:
            self._forget_header_key(next(iter(retired)))

    def _forget_header_key(self, hk: bytes) -> None:
        del self._retired[hk]
        gone = [key for key in self._skipped if key[0] == hk]
        for key in gone:
            del self._skipped[key]
        self.skipped_evicted += len(gone)

    def _commit_skipped(self, new: list[tuple[bytes, int, bytes, int]], wall_now: float) -> None:
        skipped = self._skipped
        for hk, n, mk, expiry in new:
            skipped[hk, n] = (mk, expiry)
        excess = len(skipped) - MAX_SKIPPED
        if excess > 0:
            for key in list(skipped)[:excess]:
                del skipped[key]
            self.skipped_evicted += excess
        self._expire(wall_now)

    def _expire(self, wall_now: float) -> None:
        """Drop skipped keys and retired header keys past their expiry (oldest first: insertion order)."""
        skipped = self._skipped
        while skipped:
            key = next(iter(skipped))
            if skipped[key][1] >= wall_now:
                break
            del skipped[key]
        retired = self._retired
        while retired:
            hk = next(iter(retired))
            if retired[hk] >= wall_now:
                break
            self._forget_header_key(hk)

    # --- storage ----------------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The whole state as canonical msgpack (secret: store it encrypted)."""
        skipped = b"".join(
            _SKIPPED_RECORD.pack(hk, n, mk, expiry) for (hk, n), (mk, expiry) in self._skipped.items()
        )
        retired = b"".join(_RETIRED_RECORD.pack(hk, expiry) for hk, expiry in self._retired.items())
        return pack(
            {
                _F_VERSION: _STATE_VERSION,
                _F_AD: self._ad,
                _F_RK: self._rk,
                _F_DHS: self._dhs,
                _F_DHS_PUB: self._dhs_pub,
                _F_CKS: self._cks,
                _F_CKR: self._ckr,
                _F_HKS: self._hks,
                _F_HKR: self._hkr,
                _F_NHKS: self._nhks,
                _F_NHKR: self._nhkr,
                _F_NS: self._ns,
                _F_NR: self._nr,
                _F_PN: self._pn,
                _F_SKIPPED: skipped,
                _F_RETIRED: retired,
                _F_EVICTED: self.skipped_evicted,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Ratchet:
        """A state ``encode`` wrote; ``DecodeError`` for anything else."""
        what = "ratchet state"
        value = unpack_canonical(data, what=what, limit=_MAX_STATE)
        if type(value) is not dict or value.keys() != _FIELDS:
            raise DecodeError(what, "expected a map with the ratchet's fields")
        if type(value[_F_VERSION]) is not int or value[_F_VERSION] != _STATE_VERSION:
            raise DecodeError(what, f"unsupported version {value[_F_VERSION]!r}")

        def key(field: int) -> bytes:
            item = value[field]
            if type(item) is not bytes or len(item) != _KEY:
                raise DecodeError(what, f"field {field} must be {_KEY} bytes")
            return item

        def optional_key(field: int) -> bytes | None:
            return None if value[field] is None else key(field)

        def counter(field: int, limit: int) -> int:
            item = value[field]
            if type(item) is not int or not 0 <= item <= limit:
                raise DecodeError(what, f"field {field} must be an integer from 0 to {limit}")
            return item

        ad = value[_F_AD]
        if type(ad) is not bytes or len(ad) > MAX_AD:
            raise DecodeError(what, f"associated data must be bytes of at most {MAX_AD}")
        self = cls._blank(ad)
        self._rk, self._dhs, self._dhs_pub = key(_F_RK), key(_F_DHS), key(_F_DHS_PUB)
        self._nhks, self._nhkr = key(_F_NHKS), key(_F_NHKR)
        self._cks, self._hks = optional_key(_F_CKS), optional_key(_F_HKS)
        self._ckr, self._hkr = optional_key(_F_CKR), optional_key(_F_HKR)
        if (self._cks is None) != (self._hks is None) or (self._ckr is None) != (self._hkr is None):
            raise DecodeError(what, "a chain key without its header key")
        self._ns, self._nr, self._pn = (counter(f, _MAX_COUNTER) for f in (_F_NS, _F_NR, _F_PN))
        self.skipped_evicted = counter(_F_EVICTED, 2**63 - 1)
        self._skipped = cls._decode_records(value[_F_SKIPPED], what)
        retired = value[_F_RETIRED]
        if type(retired) is not bytes or len(retired) % _RETIRED_RECORD.size:
            raise DecodeError(what, "retired header keys must be whole records")
        if len(retired) > MAX_RETIRED_HEADER_KEYS * _RETIRED_RECORD.size:
            raise DecodeError(what, f"more than {MAX_RETIRED_HEADER_KEYS} retired header keys")
        self._retired = dict(_RETIRED_RECORD.iter_unpack(retired))
        if len(self._retired) * _RETIRED_RECORD.size != len(retired):
            raise DecodeError(what, "a retired header key appears twice")
        return self

    @staticmethod
    def _decode_records(blob: object, what: str) -> _Skipped:
        if type(blob) is not bytes or len(blob) % _SKIPPED_RECORD.size:
            raise DecodeError(what, "skipped keys must be whole records")
        if len(blob) > MAX_SKIPPED * _SKIPPED_RECORD.size:
            raise DecodeError(what, f"more than {MAX_SKIPPED} skipped keys")
        skipped: _Skipped = {(hk, n): (mk, expiry) for hk, n, mk, expiry in _SKIPPED_RECORD.iter_unpack(blob)}
        if len(skipped) * _SKIPPED_RECORD.size != len(blob):
            raise DecodeError(what, "a skipped key appears twice")
        return skipped
