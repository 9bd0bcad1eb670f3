"""The credential control messages: a holder asks an issuer for a credential; the issuer sends it back.

They travel as 1:1 control messages (``Messenger.send(..., control=True)``): sealed to the recipient
and signed by the sender's identity, so the recipient knows which person sent them. The body is a
canonical msgpack map whose first key is 1 with value ``CREDENTIAL_CONTROL`` (66; files' offers use
64, co-signing 65), then ``2: kind``:

- ``REQUEST`` (holder -> issuer) ``{1: 66, 2: 1, 3: proof, 4: note}``. ``proof`` is a compact JWS
  (header ``{"alg": "EdDSA", "typ": REQUEST_TYP, "jwk": holder key}``, payload ``{"aud": issuer did,
  "nonce", "vct", "iat"}``) signed by the *holder key* the credential is to be bound to: a key derived
  for this one credential from the holder's seed (``holder_key(seed, key_id)``; ``key_id`` stays in the
  holder's wallet and is never sent). The signature proves the holder controls that key, so nobody can
  have a credential bound to a key they cannot present with, and the issuer learns a fresh key, not
  the holder's messenger identity (that it knows anyway, from the seal: the binding is unlinkable for
  verifiers, not for the issuer). ``nonce`` (base64url of 16 random bytes) names the request; the
  ISSUED answer quotes it. ``note`` is free text for the issuer (at most ``MAX_NOTE`` bytes).
- ``ISSUED`` (issuer -> holder) ``{1: 66, 2: 2, 3: credential, 4: nonce}``: the SD-JWT (issuer JWT and
  disclosures, no key binding) and the request it answers.

``decode_control`` checks size, structure, types and the proof's signature; anything else raises
``DecodeError`` (``TooLarge`` for oversized bodies) and never any other exception. It does not check
that the request is addressed to us (``aud``) or that the credential parses: the receiver does
(``meshchat.credential_api``), with its own identity and the credential parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeAlias

from meshchat.errors import BadSignature, DecodeError
from meshchat.identity import Identity, PublicIdentity
from meshchat.wire.codec import pack, unpack_canonical
from meshchat.wire.jose import jwk_of, parse_jws, public_of_jwk, sign_jws, verify_jws

__all__ = [
    "CREDENTIAL_CONTROL",
    "MAX_CONTROL",
    "MAX_CREDENTIAL",
    "MAX_NOTE",
    "MAX_VCT",
    "REQUEST_TYP",
    "ControlKind",
    "CredentialControl",
    "CredentialRequest",
    "IssuedCredential",
    "decode_control",
    "encode_issued",
    "encode_request",
    "is_credential_control",
]

#: The value of key 1 that marks a credential control (files 64, co-signing 65).
CREDENTIAL_CONTROL: Final = 66
#: Largest control body, bytes: a credential with dozens of claims is a few KiB; the messenger's
#: payload limit (64 KiB) must leave room for the seal.
MAX_CONTROL: Final = 48 * 1024
#: Largest credential text in an ISSUED control, characters.
MAX_CREDENTIAL: Final = MAX_CONTROL - 256
#: Largest credential type (``vct``) in a request, characters: type URIs are far shorter.
MAX_VCT: Final = 200
#: Largest note a holder may add to a request, UTF-8 bytes.
MAX_NOTE: Final = 500
#: The proof of possession's JWS ``typ``.
REQUEST_TYP: Final = "meshchat-credential-request+jwt"

_HEAD: Final = b"\x01\x42"  # key 1, value 66 (positive fixints)
_NONCE: Final = re.compile(r"[A-Za-z0-9_-]{22}")
_DID: Final = re.compile(r"did:key:z[1-9A-HJ-NP-Za-km-z]{1,60}")


class ControlKind(Enum):
    """What a credential control carries (its key 2)."""

    #: A holder asks for a credential bound to a key it proves it holds.
    REQUEST = 1
    #: An issuer sends the credential a request asked for.
    ISSUED = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialRequest:
    """A decoded REQUEST whose proof of possession verified."""

    #: The key the credential is to be bound to (``cnf.jwk``); it signed ``proof``.
    holder: PublicIdentity
    #: The issuer the proof is addressed to (``aud``: compare with our own did).
    audience: str
    #: The credential type asked for.
    vct: str
    #: Names the request; the ISSUED answer quotes it.
    nonce: str
    #: When the holder made it (its claim, unix seconds).
    requested_at: int
    #: Free text for the issuer.
    note: str
    #: The proof's compact JWS, as received.
    proof: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCredential:
    """A decoded ISSUED: the credential text (not parsed yet) and the request it answers."""

    compact: str
    nonce: str


CredentialControl: TypeAlias = CredentialRequest | IssuedCredential


def is_credential_control(body: bytes) -> bool:
    """Whether a control body is a credential control (a map whose first entry is ``1: 66``)."""
    return len(body) > 3 and body[0] & 0xF0 == 0x80 and body[1:3] == _HEAD


def encode_request(
    holder_key: Identity, *, issuer_did: str, vct: str, nonce: str, now: float, note: str = ""
) -> bytes:
    """A REQUEST body, its proof signed by ``holder_key``. ``ValueError`` for a ``vct``, ``note`` or
    ``nonce`` the receiver would refuse."""
    if not vct or len(vct) > MAX_VCT or not vct.isprintable():
        raise ValueError(f"a credential type is 1 to {MAX_VCT} printable characters")
    if len(note.encode("utf-8")) > MAX_NOTE:
        raise ValueError(f"a request's note is at most {MAX_NOTE} bytes")
    if _NONCE.fullmatch(nonce) is None:
        raise ValueError("a request nonce is base64url of 16 bytes (22 characters)")
    header = {"typ": REQUEST_TYP, "jwk": jwk_of(holder_key.public)}
    payload = {"aud": issuer_did, "nonce": nonce, "vct": vct, "iat": int(now)}
    proof = sign_jws(header, payload, holder_key.sign)
    return pack({1: CREDENTIAL_CONTROL, 2: ControlKind.REQUEST.value, 3: proof, 4: note})


def encode_issued(compact: str, *, nonce: str) -> bytes:
    """An ISSUED body carrying ``compact`` (an SD-JWT without key binding) for request ``nonce``."""
    if len(compact) > MAX_CREDENTIAL:
        raise ValueError(f"a credential sent is at most {MAX_CREDENTIAL} characters")
    return pack({1: CREDENTIAL_CONTROL, 2: ControlKind.ISSUED.value, 3: compact, 4: nonce})


def decode_control(body: bytes) -> CredentialControl:
    """Parse and check a credential control; ``DecodeError`` (``TooLarge``) for anything malformed."""
    fields = unpack_canonical(body, what="credential control", limit=MAX_CONTROL)
    if (
        not isinstance(fields, dict)
        or fields.keys() != {1, 2, 3, 4}
        or fields[1] != CREDENTIAL_CONTROL
        or type(fields[2]) is not int
        or type(fields[3]) is not str
        or type(fields[4]) is not str
    ):
        raise DecodeError("credential control", "not a map of fields 1 to 4 (66, kind, text, text)")
    if fields[2] == ControlKind.ISSUED.value:
        if _NONCE.fullmatch(fields[4]) is None:
            raise DecodeError("credential control", "the request nonce is not base64url of 16 bytes")
        return IssuedCredential(compact=fields[3], nonce=fields[4])
    if fields[2] != ControlKind.REQUEST.value:
        raise DecodeError("credential control", f"unknown kind {fields[2]}")
    if len(fields[4].encode("utf-8")) > MAX_NOTE:
        raise DecodeError("credential request", f"the note is over {MAX_NOTE} bytes")
    return _request(fields[3], fields[4])


def _request(proof: str, note: str) -> CredentialRequest:
    what = "credential request"
    jws = parse_jws(proof, what=what, max_size=MAX_CONTROL)
    if jws.header.get("typ") != REQUEST_TYP:
        raise DecodeError(what, f"typ is not {REQUEST_TYP}")
    holder = public_of_jwk(jws.header.get("jwk"))
    payload = jws.payload
    if payload.keys() != {"aud", "nonce", "vct", "iat"}:
        raise DecodeError(what, "the proof's payload is not aud, nonce, vct, iat")
    audience, nonce, vct, iat = payload["aud"], payload["nonce"], payload["vct"], payload["iat"]
    if not isinstance(audience, str) or _DID.fullmatch(audience) is None:
        raise DecodeError(what, "aud is not a did:key")
    if not isinstance(nonce, str) or _NONCE.fullmatch(nonce) is None:
        raise DecodeError(what, "the nonce is not base64url of 16 bytes")
    if not isinstance(vct, str) or not vct or len(vct) > MAX_VCT or not vct.isprintable():
        raise DecodeError(what, f"vct is not 1 to {MAX_VCT} printable characters")
    if type(iat) is not int or not 0 <= iat < 2**53:
        raise DecodeError(what, "iat is not a NumericDate")
    try:
        verify_jws(jws, holder, what=what)
    except BadSignature as exc:  # a proof by another key than the one it names is malformed
        raise DecodeError(what, "the proof of possession is not signed by the key it names") from exc
    return CredentialRequest(
        holder=holder, audience=audience, vct=vct, nonce=nonce, requested_at=iat, note=note, proof=proof
    )
