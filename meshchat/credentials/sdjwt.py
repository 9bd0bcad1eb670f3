"""The low level of SD-JWT (RFC 9901): disclosures, their digests, decoys, the compact form, ``sd_hash``.

What it is: the pieces a credential is made of, each checked strictly on the way in (types, sizes,
canonical base64url) so :mod:`meshchat.credentials.credential` builds issue / present / verify on parts
that are already well formed. What it is not: no signatures and no policy (which claims, whose keys,
which times) live here.

Choices where RFC 9901 leaves room:

- Hash: ``sha-256`` only (``_sd_alg``), the RFC's default and the one every wallet implements.
- Only top-level object properties are selectively disclosable (three-element disclosures); a nested
  value is disclosed whole. Disclosures of nested members or array elements (another issuer's) are
  refused with ``BadDisclosure``; nested digests without a disclosure (decoys, undisclosed members)
  are dropped, as RFC 9901 section 7.1 does with undisclosed claims.
- Salts are 16 random bytes (128 bits, RFC 9901 section 9.3's recommendation), base64url.
- Decoy digests (section 4.2.5) pad ``_sd`` to a multiple of ``DECOY_MULTIPLE``: a verifier learns the
  number of claims only to within four. A decoy is the digest of a fresh random salt, so it looks
  like any other digest.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Final

from meshchat.errors import BadDisclosure, DecodeError, TooLarge
from meshchat.identity import RandomBytes
from meshchat.wire.jose import MAX_JWS_SIZE, b64url_decode, b64url_encode, dump_json, parse_json

__all__ = [
    "DECOY_MULTIPLE",
    "DIGEST_SIZE",
    "MAX_CLAIM_NAME",
    "MAX_DISCLOSURES",
    "MAX_DISCLOSURE_SIZE",
    "MAX_PRESENTATION_SIZE",
    "SALT_SIZE",
    "SD_ALG",
    "SEPARATOR",
    "CompactParts",
    "Disclosure",
    "decoy_digests",
    "digest_of",
    "has_sd_syntax",
    "join_compact",
    "make_disclosure",
    "parse_digest_list",
    "parse_disclosure",
    "sd_hash",
    "split_compact",
    "strip_undisclosed",
]

#: The only ``_sd_alg`` written and accepted.
SD_ALG: Final = "sha-256"
#: The compact form's separator between the issuer JWT, the disclosures and the KB-JWT.
SEPARATOR: Final = "~"
#: Bytes of randomness in a salt (RFC 9901 section 9.3 asks for at least 128 bits).
SALT_SIZE: Final = 16
#: A sha-256 digest's size, bytes (43 base64url characters).
DIGEST_SIZE: Final = 32
#: ``_sd`` is padded with decoys to a multiple of this many digests.
DECOY_MULTIPLE: Final = 4
#: At most this many claims per credential (and disclosures per presentation): ID cards and diplomas
#: have a dozen or two; the bound keeps a hostile presentation's digest work small.
MAX_DISCLOSURES: Final = 64
#: One disclosure's largest encoded size, characters: room for an address or a small photo thumbnail.
MAX_DISCLOSURE_SIZE: Final = 16 * 1024
#: A whole presentation's largest size, characters, checked before anything is split or decoded.
MAX_PRESENTATION_SIZE: Final = MAX_JWS_SIZE
#: A claim name's longest length, characters.
MAX_CLAIM_NAME: Final = 64
#: Member names SD-JWT gives a meaning inside any object: no claim value may use them.
_SD_NAMES: Final = frozenset({"_sd", "_sd_alg", "..."})


@dataclass(frozen=True, slots=True)
class Disclosure:
    """One selectively disclosable claim: ``base64url(JSON [salt, name, value])``."""

    #: The encoded disclosure exactly as it travels (what the digest covers).
    text: str
    #: The salt, base64url of ``SALT_SIZE`` random bytes (or whatever another issuer chose).
    salt: str
    #: The claim name.
    name: str
    #: The claim value (any JSON value).
    value: object
    #: ``base64url(sha256(text))``, the entry of ``_sd`` that commits to it.
    digest: str


@dataclass(frozen=True, slots=True)
class CompactParts:
    """A compact SD-JWT split at ``~``: issuer JWT, disclosures, and the KB-JWT if any."""

    #: The issuer-signed JWT (three dot-separated parts).
    issuer_jwt: str
    #: The disclosures in the order given.
    disclosures: tuple[str, ...]
    #: The key binding JWT, or None for an SD-JWT without one (ending in ``~``).
    kb_jwt: str | None


def digest_of(text: str) -> str:
    """``base64url(sha256(ascii text))``: a disclosure's digest, or ``sd_hash`` of a compact prefix."""
    return b64url_encode(hashlib.sha256(text.encode("ascii")).digest())


def make_disclosure(name: str, value: object, random_bytes: RandomBytes) -> Disclosure:
    """Make a disclosure with a fresh salt for claim ``name``."""
    salt = b64url_encode(random_bytes(SALT_SIZE))
    text = b64url_encode(dump_json([salt, name, value]))
    return Disclosure(text=text, salt=salt, name=name, value=value, digest=digest_of(text))


def parse_disclosure(text: object) -> Disclosure:
    """Decode one disclosure strictly; ``BadDisclosure`` for anything but ``[salt, name, value]``."""
    if not isinstance(text, str) or not text:
        raise BadDisclosure("empty disclosure")
    if len(text) > MAX_DISCLOSURE_SIZE:
        raise BadDisclosure(f"a disclosure is {len(text):,} characters; the limit is {MAX_DISCLOSURE_SIZE:,}")
    try:
        value = parse_json(b64url_decode(text, what="disclosure"), what="disclosure")
    except DecodeError as exc:  # TooLarge is a DecodeError
        raise BadDisclosure(exc.problem) from exc
    if not isinstance(value, list):
        raise BadDisclosure("not a JSON array")
    if len(value) == 2:
        raise BadDisclosure("array-element disclosures are not supported (claims are top level)")
    if len(value) != 3:
        raise BadDisclosure("a disclosure is [salt, name, value]")
    salt, name, claim = value
    if not isinstance(salt, str) or not salt:
        raise BadDisclosure("the salt is not a string")
    if not isinstance(name, str) or not name or len(name) > MAX_CLAIM_NAME:
        raise BadDisclosure("the claim name is not a short string")
    if name in ("_sd", "..."):
        raise BadDisclosure(f"{name!r} cannot be a claim name")
    return Disclosure(text=text, salt=salt, name=name, value=strip_undisclosed(claim), digest=digest_of(text))


def strip_undisclosed(value: object) -> object:
    """``value`` without nested ``_sd`` arrays and ``{"...": digest}`` array elements (RFC 9901 7.1).

    Another issuer may make nested members selectively disclosable, or add decoys inside nested
    objects (the sd_jwt package does). meshchat discloses top-level claims only, so nested digests
    are never matched: they are checked for form and dropped, which is what an undisclosed claim
    becomes. A disclosure for one of them is refused by the caller (its digest is not top level).
    """
    if isinstance(value, dict):
        if "_sd_alg" in value:
            raise BadDisclosure("_sd_alg inside a claim")
        if "_sd" in value:
            parse_digest_list(value["_sd"])
        return {k: strip_undisclosed(v) for k, v in value.items() if k != "_sd"}
    if isinstance(value, list):
        kept = []
        for item in value:
            if isinstance(item, dict) and "..." in item:
                if len(item) != 1:
                    raise BadDisclosure("an array element digest has other members")
                parse_digest_list([item["..."]])
                continue
            kept.append(strip_undisclosed(item))
        return kept
    if isinstance(value, float) and not math.isfinite(value):  # json reads 1e999 as inf
        raise BadDisclosure("a claim value is not a finite number")
    return value


def has_sd_syntax(value: object) -> bool:
    """True if a JSON value holds a member named ``_sd``, ``_sd_alg`` or ``...`` (which SD-JWT reserves)."""
    if isinstance(value, dict):
        return bool(_SD_NAMES & value.keys()) or any(has_sd_syntax(v) for v in value.values())
    if isinstance(value, list):
        return any(has_sd_syntax(v) for v in value)
    return False


def decoy_digests(real: int, random_bytes: RandomBytes) -> list[str]:
    """Digests of random salts that pad ``real`` digests up to a multiple of ``DECOY_MULTIPLE``."""
    count = -real % DECOY_MULTIPLE
    return [digest_of(b64url_encode(random_bytes(SALT_SIZE))) for _ in range(count)]


def parse_digest_list(value: object) -> tuple[str, ...]:
    """Check an ``_sd`` array: distinct base64url sha-256 digests, at most a bounded number."""
    if not isinstance(value, list):
        raise BadDisclosure("_sd is not an array")
    if len(value) > MAX_DISCLOSURES * 2:
        raise BadDisclosure(f"_sd has {len(value)} digests; the limit is {MAX_DISCLOSURES * 2}")
    for item in value:
        if not isinstance(item, str):
            raise BadDisclosure("an _sd entry is not a string")
        try:
            raw = b64url_decode(item, what="digest")
        except DecodeError as exc:
            raise BadDisclosure("an _sd entry is not base64url") from exc
        if len(raw) != DIGEST_SIZE:
            raise BadDisclosure("an _sd entry is not a sha-256 digest")
    if len(set(value)) != len(value):
        raise BadDisclosure("_sd repeats a digest")
    return tuple(value)


def split_compact(text: object) -> CompactParts:
    """Split ``<issuer-jwt>~<disclosure>~...~[<kb-jwt>]``; size first, then structure."""
    if not isinstance(text, str):
        raise DecodeError("SD-JWT", "not text")
    if len(text) > MAX_PRESENTATION_SIZE:
        raise TooLarge(what="SD-JWT", size=len(text), limit=MAX_PRESENTATION_SIZE)
    if not text.isascii():
        raise DecodeError("SD-JWT", "not ASCII")
    if text.count(SEPARATOR) > MAX_DISCLOSURES + 1:
        raise BadDisclosure(f"more than {MAX_DISCLOSURES} disclosures")
    parts = text.split(SEPARATOR)
    if len(parts) < 2:
        raise DecodeError("SD-JWT", "no '~' after the issuer JWT")
    issuer_jwt, *disclosures, last = parts
    if not issuer_jwt:
        raise DecodeError("SD-JWT", "empty issuer JWT")
    if any(not d for d in disclosures):
        raise BadDisclosure("empty disclosure (two '~' in a row)")
    return CompactParts(issuer_jwt=issuer_jwt, disclosures=tuple(disclosures), kb_jwt=last or None)


def join_compact(parts: CompactParts) -> str:
    """The compact form of ``parts`` (the inverse of :func:`split_compact`)."""
    return SEPARATOR.join((parts.issuer_jwt, *parts.disclosures, parts.kb_jwt or ""))


def sd_hash(issuer_jwt: str, disclosures: tuple[str, ...] | list[str]) -> str:
    """The KB-JWT's ``sd_hash``: the digest of everything up to and including the last ``~``."""
    return digest_of(SEPARATOR.join((issuer_jwt, *disclosures, "")))
