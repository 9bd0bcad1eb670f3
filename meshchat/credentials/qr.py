"""Presentations as QR codes: ``MCVP1:`` + base45(zlib(msgpack of the compact form's raw parts)).

What it is: a reversible packing of an SD-JWT presentation for a QR code a phone shows at a till.
``from_qr_text(to_qr_text(p)) == p`` exactly, so the verifier checks the very text the holder signed.
What it is not: a new credential format; the payload is the RFC 9901 compact form, re-spelled.

Why this packing: base64url costs 4 characters per 3 bytes and repeats the JSON headers; the binary
form carries each part's bytes once (header and payload JSON, 64-byte signatures, disclosure JSON)
and deflate, primed with a preset dictionary of the JSON every presentation repeats, removes the
rest of the repetition. The result is base45 (RFC 9285), whose 45 characters are exactly QR's
alphanumeric set (5.5 bits per character against 8 in byte mode), the EU digital COVID
certificate's choice for the same job. Base45 is written here (30 lines) rather than taken from
PyPI so that every malformed payload becomes a ``DecodeError`` with a reason and the decoder is
strict (one spelling per byte string), as the rest of meshchat's decoders are.

Binary form (canonical msgpack): ``[1, issuer header, issuer payload, issuer signature,
[disclosure, ...], [kb header, kb payload, kb signature] or []]``, every element raw bytes, deflated
with the preset dictionary ``_ZDICT``.
Parts are re-encoded with unpadded base64url, which is exactly reversible because
``meshchat.wire.jose.b64url_decode`` accepts only canonical spellings.

One payload is not the only spelling of its presentation: the padding bits of deflate's last byte are
covered by no checksum (zlib's Adler-32 covers the inflated bytes), so changing the last characters can
give another payload that inflates to the same bytes. That is harmless: the verifier checks the
presentation those bytes spell, identical to the holder's, and the one-way replay cache keys on the
KB-JWT, not on the QR text. Refusing other spellings would mean re-deflating and comparing, which
breaks as soon as two zlib builds (zlib, zlib-ng) compress differently.
"""

from __future__ import annotations

import zlib
from typing import Final

import segno

from meshchat.credentials.sdjwt import (
    MAX_DISCLOSURES,
    MAX_PRESENTATION_SIZE,
    CompactParts,
    join_compact,
    split_compact,
)
from meshchat.errors import DecodeError, TooLarge, UnsupportedVersion
from meshchat.wire.codec import pack, unpack_canonical
from meshchat.wire.jose import b64url_decode, b64url_encode

__all__ = [
    "MAX_QR_TEXT",
    "QR_PREFIX",
    "QR_VERSION",
    "b45decode",
    "b45encode",
    "from_qr_text",
    "qr_code",
    "to_qr_text",
]

#: Every presentation QR payload starts with this (in QR's alphanumeric set, so the mode stays).
QR_PREFIX: Final = "MCVP1:"
#: The binary form's version (first array element).
QR_VERSION: Final = 1
#: Largest QR text accepted: a version 40 code at level L holds 4,296 alphanumeric characters.
MAX_QR_TEXT: Final = 4296
#: Largest inflated size: the binary form is never larger than the compact text it re-spells.
MAX_INFLATED: Final = MAX_PRESENTATION_SIZE

#: Preset deflate dictionary of version 1 (RFC 1950 FDICT): the JSON every presentation repeats
#: (headers, member names, did:key and JWK prefixes, the predicates). Fixed forever for version 1;
#: it saves about a fifth of an age check's payload (714 -> 570 deflated bytes).
_ZDICT: Final = (
    b'{"alg":"EdDSA","typ":"kb+jwt"}{"iat":"aud":"meshchat:one-way","nonce":"","sd_hash":""}'
    b'{"alg":"EdDSA","typ":"dc+sd-jwt"}{"iss":"did:key:z6Mk","iat":"nbf":"exp":"vct":"age",'
    b'"cnf":{"jwk":{"kty":"OKP","crv":"Ed25519","x":""}},"status":{"status_list":{"idx":"uri":'
    b'"meshchat:status:did:key:z6Mk"}},"_sd_alg":"sha-256","_sd":["",""]}",'
    b'"given_name","family_name","birth_date","document_number","student",true]'
    b'"pensioner",true]"large_family",true]","age_over_21",false]","age_over_18",true]'
)
_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_VALUE: Final = {char: value for value, char in enumerate(_ALPHABET)}
_WHAT: Final = "QR payload"


def b45encode(data: bytes) -> str:
    """Base45 (RFC 9285): two bytes -> three characters, a last odd byte -> two, least significant first."""
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        out += (_ALPHABET[n % 45], _ALPHABET[n // 45 % 45], _ALPHABET[n // 2025])
    if len(data) % 2:
        out += (_ALPHABET[data[-1] % 45], _ALPHABET[data[-1] // 45])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Strict base45: ``DecodeError`` for foreign characters, a dangling character or an overflow."""
    if len(text) % 3 == 1:
        raise DecodeError(_WHAT, "base45 length leaves a single character")
    try:
        values = [_VALUE[char] for char in text]
    except KeyError as exc:
        raise DecodeError(_WHAT, "character outside the base45 alphabet") from exc
    out = bytearray()
    for i in range(0, len(values), 3):
        chunk = values[i : i + 3]
        n = sum(v * 45**k for k, v in enumerate(chunk))
        if len(chunk) == 3:
            if n > 0xFFFF:  # RFC 9285 section 4.2: such triples must be refused
                raise DecodeError(_WHAT, "base45 triple above 65535")
            out += n.to_bytes(2, "big")
        else:
            if n > 0xFF:
                raise DecodeError(_WHAT, "base45 pair above 255")
            out.append(n)
    return bytes(out)


def _raw_jws(text: str) -> list[bytes]:
    pieces = text.split(".")
    if len(pieces) != 3:
        raise DecodeError(_WHAT, "a JWS part does not have three segments")
    return [b64url_decode(piece, what=_WHAT) for piece in pieces]


def to_qr_text(presentation: str) -> str:
    """The QR payload of ``presentation`` (``DecodeError`` if it is not a well-formed compact SD-JWT)."""
    parts = split_compact(presentation)
    kb = [] if parts.kb_jwt is None else _raw_jws(parts.kb_jwt)
    disclosures = [b64url_decode(d, what=_WHAT) for d in parts.disclosures]
    binary = pack([QR_VERSION, *_raw_jws(parts.issuer_jwt), disclosures, kb])
    deflater = zlib.compressobj(9, zdict=_ZDICT)
    return QR_PREFIX + b45encode(deflater.compress(binary) + deflater.flush())


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(zdict=_ZDICT)
    try:
        out = inflater.decompress(data, MAX_INFLATED)
    except zlib.error as exc:
        raise DecodeError(_WHAT, "not zlib data") from exc
    if inflater.unconsumed_tail:
        raise TooLarge(what=_WHAT, size=MAX_INFLATED + 1, limit=MAX_INFLATED)
    if not inflater.eof or inflater.unused_data:
        raise DecodeError(_WHAT, "not one complete zlib stream")
    return out


def _bytes_list(value: object, *, most: int) -> list[bytes]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) > most
        or not all(isinstance(v, bytes) for v in value)
    ):
        raise DecodeError(_WHAT, "expected a list of byte strings")
    return list(value)


def from_qr_text(text: str) -> str:
    """The presentation a QR payload carries; ``DecodeError`` (or ``TooLarge``) for anything malformed."""
    if not isinstance(text, str):
        raise DecodeError(_WHAT, "not text")
    text = text.strip()
    if len(text) > MAX_QR_TEXT + len(QR_PREFIX):
        raise TooLarge(what=_WHAT, size=len(text), limit=MAX_QR_TEXT + len(QR_PREFIX))
    if not text.startswith(QR_PREFIX):
        raise DecodeError(_WHAT, f"does not start with {QR_PREFIX}")
    binary = _inflate(b45decode(text[len(QR_PREFIX) :]))
    value = unpack_canonical(binary, what=_WHAT, limit=MAX_INFLATED)
    if not isinstance(value, tuple) or not value or type(value[0]) is not int:
        raise DecodeError(_WHAT, "not a presentation")
    if value[0] != QR_VERSION:
        raise UnsupportedVersion(what=_WHAT, version=value[0], supported=(QR_VERSION,))
    if len(value) != 6:
        raise DecodeError(_WHAT, "a presentation has six fields")
    header, payload, signature = _bytes_list(value[1:4], most=3)
    disclosures = _bytes_list(value[4], most=MAX_DISCLOSURES)
    kb = _bytes_list(value[5], most=3)
    if len(kb) not in (0, 3):
        raise DecodeError(_WHAT, "the KB-JWT has three parts or none")
    if not all((header, payload, signature, *disclosures, *kb)):
        raise DecodeError(_WHAT, "empty part")
    compact = join_compact(
        CompactParts(
            issuer_jwt=".".join(b64url_encode(p) for p in (header, payload, signature)),
            disclosures=tuple(b64url_encode(d) for d in disclosures),
            kb_jwt=".".join(b64url_encode(p) for p in kb) if kb else None,
        )
    )
    if len(compact) > MAX_PRESENTATION_SIZE:
        raise TooLarge(what=_WHAT, size=len(compact), limit=MAX_PRESENTATION_SIZE)
    return compact


def qr_code(presentation: str) -> segno.QRCode:
    """A QR code (error correction level M) of ``presentation``'s payload."""
    return segno.make_qr(to_qr_text(presentation), error="m")
