"""Compact JWS with EdDSA (Ed25519) only, strict base64url, ``did:key`` and Ed25519 JWKs.

Signed documents (``meshchat.documents``) and credentials (``meshchat.credentials``, SD-JWT per RFC 9901)
are JSON Web Signatures so that tools outside meshchat can check them. This module is the one place
that reads and writes them:

- ``sign_jws`` / ``parse_jws`` / ``verify_jws``: RFC 7515 compact serialisation, ``alg`` ``EdDSA``
  (RFC 8037) or its fully specified name ``Ed25519`` (RFC 9864). Any other ``alg`` is refused, so the
  algorithm-confusion bugs of general JOSE stacks ("none", HMAC with a public key) cannot happen here.
- ``b64url_decode`` refuses padding, characters outside the alphabet and non-canonical trailing bits,
  so every accepted string has exactly one byte value (a signature covers the text, a digest the bytes).
- ``parse_json``: size bound first, then JSON with duplicate names, NaN/Infinity (also as ``1e999``)
  and deep nesting refused.
- ``did_key`` / ``public_of_did``: ``did:key:z6Mk...`` (multicodec ``ed25519-pub`` 0xed01, base58btc),
  the self-certifying issuer and signer name other wallets resolve without a registry.

Why by hand rather than jwcrypto or joserfc: those are general JOSE stacks (many algorithms, key types,
JWE) that raise their own exception types and accept inputs this project must refuse (duplicate JSON
names, non-canonical base64); one fixed algorithm over libsodium, which ``meshchat.identity`` already
uses, is ~150 lines and several times faster per verification. The tests cross-check the output with
jwcrypto and the ``sd-jwt`` package.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import base58

from meshchat.errors import DecodeError, TooLarge
from meshchat.identity import PublicIdentity

__all__ = [
    "JWS_ALGS",
    "MAX_JSON_DEPTH",
    "MAX_JWS_SIZE",
    "Jws",
    "b64url_decode",
    "b64url_encode",
    "did_key",
    "dump_json",
    "jwk_of",
    "parse_json",
    "parse_jws",
    "public_of_did",
    "public_of_jwk",
    "sign_jws",
    "verify_jws",
]

#: The largest compact JWS accepted, characters: a credential with dozens of claims is a few KiB, a
#: status list for 100,000 credentials about 20 KiB; the bound keeps a hostile token's parse cheap.
MAX_JWS_SIZE: Final = 256 * 1024
#: Deepest JSON nesting accepted: claims here are flat or one or two levels deep.
MAX_JSON_DEPTH: Final = 16
#: The ``alg`` values accepted: RFC 8037's ``EdDSA`` (written) and RFC 9864's ``Ed25519`` (read too).
JWS_ALGS: Final = frozenset({"EdDSA", "Ed25519"})

_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
_DID_KEY_PREFIX: Final = "did:key:z"
_ED25519_MULTICODEC: Final = b"\xed\x01"
_SIGNATURE_SIZE: Final = 64


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, what: str) -> bytes:
    """Decode unpadded base64url; ``DecodeError`` for padding, foreign characters or non-canonical bits."""
    if not isinstance(text, str) or _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise DecodeError(what, "not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(what, "not unpadded base64url") from exc
    if b64url_encode(data) != text:  # stray low bits in the last character: two spellings of one value
        raise DecodeError(what, "non-canonical base64url")
    return data


def dump_json(value: object) -> bytes:
    """Compact UTF-8 JSON, keys in the order given (what meshchat signs)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as inf: not a number JSON can carry
        raise ValueError(f"{text} is not a finite number")
    return value


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def _depth_ok(text: str) -> bool:
    """True if brackets nest at most ``MAX_JSON_DEPTH`` deep (counted outside strings)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        elif char in "]}":
            depth -= 1
    return True


def parse_json(data: bytes, *, what: str, max_size: int = MAX_JWS_SIZE) -> object:
    """Parse UTF-8 JSON strictly: size first; duplicate names, NaN, Infinity, deep nesting refused."""
    if len(data) > max_size:
        raise TooLarge(what=what, size=len(data), limit=max_size)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(what, "not UTF-8") from exc
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and not _depth_ok(text):  # fewer cannot nest deeper
        raise DecodeError(what, f"nested deeper than {MAX_JSON_DEPTH}")
    try:
        return json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constants, parse_float=_finite)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise DecodeError(what, f"not JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Jws:
    """A parsed, not yet verified, compact JWS."""

    #: The protected header (``alg`` is one of ``JWS_ALGS``).
    header: dict[str, object]
    #: The payload, a JSON object.
    payload: dict[str, object]
    #: ``BASE64URL(header) || "." || BASE64URL(payload)``, what the signature covers.
    signing_input: bytes
    #: The 64-byte Ed25519 signature.
    signature: bytes
    #: The whole compact string.
    compact: str


def sign_jws(
    header: Mapping[str, object], payload: Mapping[str, object], sign: Callable[[bytes], bytes]
) -> str:
    """Serialise and sign: ``alg`` is set to ``EdDSA`` first, then ``header``'s own members follow."""
    full = {"alg": "EdDSA", **{k: v for k, v in header.items() if k != "alg"}}
    signing_input = f"{b64url_encode(dump_json(full))}.{b64url_encode(dump_json(dict(payload)))}"
    signature = sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def _object(data: bytes, *, what: str) -> dict[str, object]:
    value = parse_json(data, what=what)
    if not isinstance(value, dict):
        raise DecodeError(what, "not a JSON object")
    return value


def parse_jws(text: str, *, what: str, max_size: int = MAX_JWS_SIZE) -> Jws:
    """Split and decode a compact JWS (no signature check yet); ``DecodeError`` for anything malformed."""
    if not isinstance(text, str):
        raise DecodeError(what, "not text")
    if len(text) > max_size:
        raise TooLarge(what=what, size=len(text), limit=max_size)
    parts = text.split(".")
    if len(parts) != 3:
        raise DecodeError(what, "a compact JWS has three parts")
    header = _object(b64url_decode(parts[0], what=f"{what} header"), what=f"{what} header")
    if header.get("alg") not in JWS_ALGS:
        raise DecodeError(what, f"algorithm {header.get('alg')!r} is not EdDSA")
    if "crit" in header:  # RFC 7515 4.1.11: extensions we do not understand must fail
        raise DecodeError(what, "critical header extensions are not supported")
    payload = _object(b64url_decode(parts[1], what=f"{what} payload"), what=f"{what} payload")
    signature = b64url_decode(parts[2], what=f"{what} signature")
    if len(signature) != _SIGNATURE_SIZE:
        raise DecodeError(what, f"an Ed25519 signature is {_SIGNATURE_SIZE} bytes")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return Jws(header=header, payload=payload, signing_input=signing_input, signature=signature, compact=text)


def verify_jws(jws: Jws, key: PublicIdentity, *, what: str) -> None:
    """Raise ``BadSignature`` unless ``key`` signed ``jws``."""
    key.verify(jws.signing_input, jws.signature, what=what)


def did_key(public: PublicIdentity) -> str:
    """The ``did:key`` naming an Ed25519 key (``did:key:z6Mk...``)."""
    return _DID_KEY_PREFIX + base58.b58encode(_ED25519_MULTICODEC + public.ed25519).decode("ascii")


def public_of_did(did: object) -> PublicIdentity:
    """The key a ``did:key`` (Ed25519) names; ``DecodeError`` for any other DID or a bad key."""
    if not isinstance(did, str) or not did.startswith(_DID_KEY_PREFIX) or len(did) > 64:
        raise DecodeError("did:key", "not an Ed25519 did:key")
    try:
        raw = base58.b58decode(did[len(_DID_KEY_PREFIX) :])
    except ValueError as exc:
        raise DecodeError("did:key", "not base58btc") from exc
    if not raw.startswith(_ED25519_MULTICODEC):
        raise DecodeError("did:key", "not an Ed25519 key (multicodec 0xed)")
    public = PublicIdentity.from_bytes(raw[len(_ED25519_MULTICODEC) :])
    if did_key(public) != did:  # leading-zero and alphabet variants: one spelling per key
        raise DecodeError("did:key", "non-canonical encoding")
    return public


def jwk_of(public: PublicIdentity) -> dict[str, str]:
    """The RFC 8037 JWK of an Ed25519 public key."""
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(public.ed25519)}


def public_of_jwk(jwk: object) -> PublicIdentity:
    """The key an Ed25519 JWK holds; ``DecodeError`` for another key type, a private key or a bad point."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise DecodeError("JWK", "not an Ed25519 (OKP) public key")
    if "d" in jwk:
        raise DecodeError("JWK", "carries a private key")
    return PublicIdentity.from_bytes(b64url_decode(jwk.get("x"), what="JWK"))  # type: ignore[arg-type]
