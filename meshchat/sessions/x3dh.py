"""The session set-up: X3DH with PQXDH's ML-KEM-768 hybrid, from a prekey bundle (or from the identity alone).

What: the initial key agreement of Signal's X3DH spec (section 3) with the post-quantum KEM of Signal's
PQXDH spec (section 3.3): ``initiate`` (Alice: from Bob's bundle to a shared secret and the header she
sends) and ``respond`` (Bob: from that header and his ``Prekeys`` to the same secret). What it is not:
the Double Ratchet that runs on the secret (``meshchat.sessions.ratchet``), nor the attaching of headers
to messages and the replay guard over recent ephemerals (``meshchat.sessions.session``). Sans-IO: the
time and the randomness come from the caller.

Construction, with IK the devices' identity keys in X25519 form, EK_A a fresh ephemeral key, SPK_B,
OPK_B and PQSPK_B from Bob's bundle::

    DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   [DH4 = DH(EK_A, OPK_B)]
    [(SS, CT) = ML-KEM-768.Encaps(PQSPK_B)]
    SK = HKDF-SHA256(salt = 32 zero bytes, ikm = 0xFF * 32 || DH1 || DH2 || DH3 [|| DH4] [|| SS],
                     info = "meshchat X3DH v1", or "meshchat PQXDH v1 X25519 SHA-256 ML-KEM-768" with SS)
    AD = IK_A (Ed25519) || IK_B (Ed25519)

which is X3DH and PQXDH as specified (the 0xFF prefix, the zero salt the size of the hash, the KEM
secret appended after the DH outputs, a distinct info string for the hybrid). The one-time prekey is
picked at random among the bundle's so that several initiators holding the same bundle seldom pick the
same one. The header names the keys used by id (``InitHeader``); Bob's ``respond`` finds them in his
``Prekeys``, computes the same SK and deletes the one-time secret (used once).

Choices where the specs leave room:

- Signatures are Ed25519 by the device identity, not XEdDSA (see ``prekeys``): a meshchat identity is
  an Ed25519 key, so it signs as it does everywhere else; the DH identity key is its X25519 form.
- The PQ prekey is a signed "last-resort" key, rotated with the SPK (PQXDH allows last-resort keys; we
  have no server to hand out one-time KEM keys). Reusing it for several set-ups is what PQXDH's
  last-resort case accepts: its secret dies when its generation is forgotten.
- ``AD`` is the two raw Ed25519 keys (X3DH suggests an encoding with a curve byte; there is only one
  curve here, and the keys are fixed length).
- The identity-only set-up: when no bundle is known, or the known one is older than ``BUNDLE_MAX_AGE``,
  Alice still starts a session with ``DH1 = DH(IK_A, IK_B)`` and ``DH2 = DH(EK_A, IK_B)`` (header
  ``spk_id = 0``, the ratchet starts on Bob's identity X25519 key). It gives up what the prekeys buy:
  until Bob replies (and the ratchet steps onto a fresh key of his) the first messages have no forward
  secrecy against a later theft of Bob's identity key (whoever steals it and kept the messages reads
  them), and nothing makes a replayed set-up fail on Bob's side but the session layer's replay guard.
  Secrecy against everyone who never holds Bob's identity secret, and authentication of both sides,
  remain. It is what lets a contact write at once from a bare invite.
- ``initiate`` raises ``BadBundle`` for a bundle of another identity even when it is too old to use:
  handing it one is the caller's (or a lying relay's) fault, never a reason to fall back silently.
- The ML-KEM encapsulation draws its randomness from OpenSSL (cryptography offers no seeded
  ``encapsulate``), so only the classical part follows ``random_bytes``.

Every DH output is checked: libsodium's ``crypto_scalarmult`` refuses an all-zero result (a low-order
public key), which becomes ``BadBundle`` for a key from a bundle and ``DecryptionFailed`` for the
ephemeral key in a header. Bounds: a header is at most ``MAX_INIT_HEADER`` bytes; ids are u32, 0 = none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import nacl.bindings as sodium
import nacl.exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshchat.errors import BadBundle, DecodeError, DecryptionFailed, MeshchatError
from meshchat.identity import Identity, PublicIdentity, RandomBytes
from meshchat.sessions.prekeys import (
    BUNDLE_MAX_AGE,
    MAX_PREKEY_ID,
    MLKEM768_CIPHERTEXT_SIZE,
    X25519_KEY_SIZE,
    PrekeyBundle,
    Prekeys,
)
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "INFO_PQXDH",
    "INFO_X3DH",
    "MAX_INIT_HEADER",
    "InitHeader",
    "Initiation",
    "initiate",
    "respond",
]

#: HKDF info of the classical agreement (with or without a bundle).
INFO_X3DH: Final = b"meshchat X3DH v1"
#: HKDF info when an ML-KEM-768 shared secret is part of the input (PQXDH names its parameters).
INFO_PQXDH: Final = b"meshchat PQXDH v1 X25519 SHA-256 ML-KEM-768"
#: An encoded init header: 32 + 1088 bytes of keys, three ids and msgpack framing fit in 1,200.
MAX_INIT_HEADER: Final = 1200
_F: Final = b"\xff" * 32
_SALT: Final = b"\x00" * 32
_HEADER_VERSION: Final = 1


def _is_id(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_PREKEY_ID


def _header_problem(h: InitHeader) -> str:
    """Why ``h`` cannot be an init header, or ``""``."""
    checks = (
        (
            type(h.ephemeral) is bytes and len(h.ephemeral) == X25519_KEY_SIZE,
            "ephemeral key must be 32 bytes",
        ),
        # X25519 ignores the top bit (RFC 7748, 5): with it set, the same set-up would pass the
        # replay check under a second byte form (found by scripts/fuzz.py). Keys made here never set it.
        (type(h.ephemeral) is not bytes or h.ephemeral[-1:] < b"\x80", "ephemeral key has its top bit set"),
        (_is_id(h.spk_id) and _is_id(h.one_time_id) and _is_id(h.pq_id), f"ids must be 0..{MAX_PREKEY_ID}"),
        (h.spk_id != 0 or (h.one_time_id == 0 and h.pq_id == 0), "an identity-only set-up names no prekeys"),
        (
            type(h.pq_ciphertext) is bytes
            and len(h.pq_ciphertext) == (MLKEM768_CIPHERTEXT_SIZE if h.pq_id else 0),
            f"PQ ciphertext must be {MLKEM768_CIPHERTEXT_SIZE} bytes with a PQ prekey id, else empty",
        ),
    )
    for ok, problem in checks:
        if not ok:
            return problem
    return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InitHeader:
    """What the initiator sends with its first messages so the responder can compute the same secret.

    Constructing one checks every field (``DecodeError``).
    """

    #: EK_A's X25519 public key (32 bytes).
    ephemeral: bytes
    #: The responder's signed prekey used; 0 = identity-only set-up (no bundle known).
    spk_id: int
    #: The responder's one-time prekey used; 0 = none.
    one_time_id: int
    #: The responder's ML-KEM-768 prekey encapsulated to; 0 = none.
    pq_id: int
    #: The ML-KEM-768 ciphertext (1088 bytes), b"" when ``pq_id`` is 0.
    pq_ciphertext: bytes = field(repr=False)

    def __post_init__(self) -> None:
        problem = _header_problem(self)
        if problem:
            raise DecodeError("init header", problem)

    def encode(self) -> bytes:
        """The header's canonical bytes (at most MAX_INIT_HEADER)."""
        return pack(
            {
                1: _HEADER_VERSION,
                2: self.ephemeral,
                3: self.spk_id,
                4: self.one_time_id,
                5: self.pq_id,
                6: self.pq_ciphertext,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> InitHeader:
        """Parse a header; ``DecodeError`` (``TooLarge`` over MAX_INIT_HEADER) for anything malformed."""
        fields = unpack_canonical(data, what="init header", limit=MAX_INIT_HEADER)
        if type(fields) is not dict or fields.keys() != set(range(1, 7)):
            raise DecodeError("init header", "not a map of fields 1 to 6")
        if type(fields[1]) is not int or fields[1] != _HEADER_VERSION:
            raise DecodeError("init header", f"version {fields[1]!r} (this meshchat reads {_HEADER_VERSION})")
        return cls(
            ephemeral=fields[2],
            spk_id=fields[3],
            one_time_id=fields[4],
            pq_id=fields[5],
            pq_ciphertext=fields[6],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Initiation:
    """The initiator's result: the secret and AD for the ratchet, and the header to send."""

    #: SK, 32 bytes.
    shared_secret: bytes = field(repr=False)
    #: Attach to the first messages until the responder replies.
    header: InitHeader
    #: Associated data: IK_A Ed25519 || IK_B Ed25519.
    ad: bytes
    #: The responder's first ratchet public key: its SPK, or its identity's X25519 key (identity-only).
    peer_ratchet_key: bytes


def _dh(secret: bytes, public: bytes, error: Callable[[], MeshchatError]) -> bytes:
    """X25519; ``error()`` is raised when the result is all zeros (a low-order public key)."""
    try:
        out: bytes = sodium.crypto_scalarmult(secret, public)
    except nacl.exceptions.RuntimeError as exc:  # libsodium returns -1 on an all-zero output
        raise error() from exc
    return out


def _kdf(ikm: bytes, *, pq: bool) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=INFO_PQXDH if pq else INFO_X3DH)
    return hkdf.derive(_F + ikm)


def _bad_key(what: str) -> Callable[[], MeshchatError]:
    return lambda: BadBundle(f"{what} is a low-order point")


def initiate(
    identity: Identity,
    peer: PublicIdentity,
    bundle: PrekeyBundle | None,
    *,
    wall_now: float,
    random_bytes: RandomBytes,
) -> Initiation:
    """Start a session with ``peer``'s device from its ``bundle`` (identity-only if None or too old).

    Raises ``BadBundle`` if the bundle is of another identity, a signature does not verify, a key is of
    low order or the PQ key is not a valid ML-KEM-768 key.
    """
    if bundle is not None and bundle.identity != peer.ed25519:
        raise BadBundle("the bundle is signed by another identity than the peer's")
    ephemeral_secret = random_bytes(X25519_KEY_SIZE)
    ephemeral = sodium.crypto_scalarmult_base(ephemeral_secret)
    ad = identity.public.ed25519 + peer.ed25519
    if bundle is None or wall_now - bundle.created > BUNDLE_MAX_AGE:
        dh1 = _dh(identity.x25519_secret, peer.x25519, _bad_key("the identity key"))
        dh2 = _dh(ephemeral_secret, peer.x25519, _bad_key("the identity key"))
        header = InitHeader(ephemeral=ephemeral, spk_id=0, one_time_id=0, pq_id=0, pq_ciphertext=b"")
        return Initiation(
            shared_secret=_kdf(dh1 + dh2, pq=False), header=header, ad=ad, peer_ratchet_key=peer.x25519
        )
    bundle.verify()
    ikm = (
        _dh(identity.x25519_secret, bundle.spk, _bad_key("the signed prekey"))
        + _dh(ephemeral_secret, peer.x25519, _bad_key("the identity key"))
        + _dh(ephemeral_secret, bundle.spk, _bad_key("the signed prekey"))
    )
    one_time_id = 0
    if bundle.one_time:
        picked = bundle.one_time[int.from_bytes(random_bytes(8), "big") % len(bundle.one_time)]
        ikm += _dh(ephemeral_secret, picked.key, _bad_key(f"one-time prekey {picked.key_id}"))
        one_time_id = picked.key_id
    ciphertext = b""
    if bundle.pq_id:
        try:
            pq_public = MLKEM768PublicKey.from_public_bytes(bundle.pq_key)
        except ValueError as exc:
            raise BadBundle("the post-quantum prekey is not an ML-KEM-768 key") from exc
        pq_shared, ciphertext = pq_public.encapsulate()
        ikm += pq_shared
    header = InitHeader(
        ephemeral=ephemeral,
        spk_id=bundle.spk_id,
        one_time_id=one_time_id,
        pq_id=bundle.pq_id,
        pq_ciphertext=ciphertext,
    )
    return Initiation(
        shared_secret=_kdf(ikm, pq=bool(bundle.pq_id)), header=header, ad=ad, peer_ratchet_key=bundle.spk
    )


def respond(
    identity: Identity, prekeys: Prekeys, peer: PublicIdentity, header: InitHeader
) -> tuple[bytes, bytes, bytes]:
    """Answer ``peer``'s set-up: ``(shared_secret, ad, own_ratchet_secret)``.

    ``own_ratchet_secret`` is the signed prekey's secret (the identity's X25519 secret for an
    identity-only set-up): the key the initiator's ratchet starts on. Consumes the one-time prekey
    named, and only on success (``prekeys`` is mutated: persist it in the transaction that stores what
    the set-up opened; better, run this on ``prekeys.copy()`` and keep the copy once the first message
    decrypts, so a forged or replayed header burns nothing).

    Raises ``UnknownPrekey(kind="signed" / "one-time" / "post-quantum")`` for a key no longer held,
    ``DecryptionFailed`` for a low-order ephemeral key, ``DecodeError`` for a malformed ciphertext.
    """
    if prekeys.identity != identity.public.ed25519:
        raise ValueError("these prekeys belong to another identity")
    ad = peer.ed25519 + identity.public.ed25519
    if header.spk_id == 0:
        ikm = _dh(identity.x25519_secret, peer.x25519, DecryptionFailed) + _dh(
            identity.x25519_secret, header.ephemeral, DecryptionFailed
        )
        return _kdf(ikm, pq=False), ad, identity.x25519_secret
    spk_secret = prekeys.signed_secret(header.spk_id)
    one_time_secret = prekeys.one_time_secret(header.one_time_id) if header.one_time_id else None
    pq_secret = prekeys.pq_secret(header.pq_id) if header.pq_id else None
    ikm = (
        _dh(spk_secret, peer.x25519, DecryptionFailed)
        + _dh(identity.x25519_secret, header.ephemeral, DecryptionFailed)
        + _dh(spk_secret, header.ephemeral, DecryptionFailed)
    )
    if one_time_secret is not None:
        ikm += _dh(one_time_secret, header.ephemeral, DecryptionFailed)
    if pq_secret is not None:
        if len(header.pq_ciphertext) != MLKEM768_CIPHERTEXT_SIZE:
            raise DecodeError(
                "init header", f"post-quantum ciphertext is not {MLKEM768_CIPHERTEXT_SIZE} bytes"
            )
        try:
            ikm += pq_secret.decapsulate(header.pq_ciphertext)
        except ValueError as exc:
            raise DecodeError("init header", "not an ML-KEM-768 ciphertext") from exc
    shared_secret = _kdf(ikm, pq=pq_secret is not None)
    if header.one_time_id:
        prekeys.consume_one_time(header.one_time_id)
    return shared_secret, ad, spk_secret
