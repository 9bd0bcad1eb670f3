"""Detached document signatures: a compact JWS (EdDSA) over a document's SHA-256, checkable offline.

A signature is one line of text (a ``NAME.sig`` file beside the document)::

    header  {"alg": "EdDSA", "typ": "meshchat-signature+jwt", "v": 1}
    payload {"iss": did:key of the signer, "iat": NumericDate, "sub": b64url(sha256(document)),
             "hash": "sha-256", "size": bytes, "name": file name?, "purpose": text <= 200?,
             "cosign": doc id (only in a co-signing round)}

It signs the document's hash, not the document, so a signature of a 4 GiB file is as small as one of
a line of text, and ``meshchat verify`` streams the file once. The signer is named by its ``did:key``
(the key itself), so no registry is needed to check it; the time is the signer's own claim (a
co-signing round's witnesses bound it from above, see ``meshchat.documents.cosign``).

What this is not: a qualified electronic signature under eIDAS (no certificate authority vouches for
who holds the key; a contact's verified safety number does), and not a timestamp.

Checks, in order: size and structure (``DecodeError``/``TooLarge``), the header's ``typ`` and ``v``
(``UnsupportedVersion``), the payload's members and types (``DecodeError``), the signer's signature
(``BadSignature``), and in ``verify_document`` the document's hash (``DocumentMismatch``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import BinaryIO, Final

from meshchat.errors import DecodeError, DocumentMismatch, UnsupportedVersion
from meshchat.identity import Identity, PublicIdentity
from meshchat.wire.jose import (
    Jws,
    b64url_decode,
    b64url_encode,
    did_key,
    parse_jws,
    public_of_did,
    sign_jws,
    verify_jws,
)

__all__ = [
    "DIGEST_SIZE",
    "HASH_NAME",
    "MAX_NAME",
    "MAX_PURPOSE",
    "MAX_SIGNATURE_SIZE",
    "SIGNATURE_TYP",
    "SIGNATURE_VERSION",
    "SignatureInfo",
    "check_digest",
    "check_doc_id",
    "check_header",
    "digest_bytes",
    "digest_file",
    "digest_stream",
    "numeric_date",
    "optional_text",
    "parse_signature",
    "sign_digest",
    "sign_document",
    "signature_info",
    "verify_document",
]

#: The JWS ``typ`` of a detached signature (RFC 8725 section 3.11: explicit typing, so a signature
#: cannot be passed off as a proposal, a revocation or a credential).
SIGNATURE_TYP: Final = "meshchat-signature+jwt"
#: The format version this meshchat writes and reads (header member ``v``).
SIGNATURE_VERSION: Final = 1
#: The hash named in ``hash``; the only one (a second would be a new version).
HASH_NAME: Final = "sha-256"
#: Bytes of a SHA-256 digest (``sub`` decodes to exactly this).
DIGEST_SIZE: Final = 32
#: The longest ``purpose``, characters: a line such as "approve the 2026 budget", not a document.
MAX_PURPOSE: Final = 200
#: The longest ``name``, characters: file names are at most 255 bytes on common file systems.
MAX_NAME: Final = 255
#: The largest signature text accepted, characters: the members above fit in ~1.5 KiB; the bound
#: keeps a hostile ``.sig`` (or a control carrying one) cheap to refuse.
MAX_SIGNATURE_SIZE: Final = 4096
#: Bytes read at a time by ``digest_file``.
_READ_SIZE: Final = 1024 * 1024
#: A co-signing round's id: 22 base64url characters (128 bits of a SHA-256).
_DOC_ID: Final = re.compile(r"[A-Za-z0-9_-]{22}")
_WHAT: Final = "signature"


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """A parsed signature whose signer's EdDSA signature verified (not yet compared with a document)."""

    #: The signer's key.
    signer: PublicIdentity
    #: The signer as ``did:key`` (the ``iss`` member).
    signer_did: str
    #: When the signer says it signed (unix seconds, its own clock).
    signed_at: float
    #: base64url SHA-256 of the signed document.
    digest: str
    #: The signed document's size in bytes.
    size: int
    #: The document's file name, if the signer gave one.
    name: str | None
    #: Why it was signed, if the signer said.
    purpose: str | None
    #: The co-signing round (doc id) this signature belongs to, or None for a plain signature.
    cosign: str | None
    #: The whole signature text.
    compact: str


def digest_bytes(data: bytes) -> str:
    """base64url (unpadded) SHA-256 of ``data``: the ``sub`` of a signature over it."""
    return b64url_encode(hashlib.sha256(data).digest())


def digest_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """base64url SHA-256 and size of the file at ``path``, read 1 MiB at a time (``OSError`` passes)."""
    with open(path, "rb") as f:
        return digest_stream(f)


def digest_stream(stream: BinaryIO) -> tuple[str, int]:
    """base64url SHA-256 and size of everything left in ``stream`` (a pipe too), 1 MiB at a time."""
    hasher = hashlib.sha256()
    size = 0
    while chunk := stream.read(_READ_SIZE):
        hasher.update(chunk)
        size += len(chunk)
    return b64url_encode(hasher.digest()), size


def check_digest(digest: object, *, what: str = _WHAT) -> str:
    """``digest`` if it is a base64url SHA-256 (43 characters, 32 bytes); ``DecodeError`` otherwise."""
    if not isinstance(digest, str) or len(b64url_decode(digest, what=f"{what} digest")) != DIGEST_SIZE:
        raise DecodeError(what, f"the digest is not a base64url {HASH_NAME} ({DIGEST_SIZE} bytes)")
    return digest


def check_doc_id(doc_id: object, *, what: str = _WHAT) -> str:
    """``doc_id`` if it is a co-signing round's id (22 base64url characters); ``DecodeError`` otherwise."""
    if not isinstance(doc_id, str) or _DOC_ID.fullmatch(doc_id) is None:
        raise DecodeError(what, "the document id is not 22 base64url characters")
    return doc_id


def sign_digest(
    identity: Identity,
    digest: str,
    size: int,
    *,
    now: float,
    name: str | None = None,
    purpose: str | None = None,
    cosign: str | None = None,
) -> str:
    """Sign the document whose SHA-256 is ``digest`` (base64url) and length ``size``; the signature text.

    ``ValueError`` for arguments a reader would refuse (a malformed digest, a negative size, a purpose
    over ``MAX_PURPOSE`` characters, a name over ``MAX_NAME``, a malformed round id).
    """
    try:
        check_digest(digest)
        if cosign is not None:
            check_doc_id(cosign)
    except DecodeError as exc:
        raise ValueError(str(exc)) from exc
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"a document size is a non-negative integer, not {size!r}")
    if purpose is not None and len(purpose) > MAX_PURPOSE:
        raise ValueError(f"a purpose is at most {MAX_PURPOSE} characters, not {len(purpose)}")
    if name is not None and len(name) > MAX_NAME:
        raise ValueError(f"a document name is at most {MAX_NAME} characters, not {len(name)}")
    payload: dict[str, object] = {
        "iss": did_key(identity.public),
        "iat": int(now),
        "sub": digest,
        "hash": HASH_NAME,
        "size": size,
    }
    if name is not None:
        payload["name"] = name
    if purpose is not None:
        payload["purpose"] = purpose
    if cosign is not None:
        payload["cosign"] = cosign
    header = {"typ": SIGNATURE_TYP, "v": SIGNATURE_VERSION}
    return sign_jws(header, payload, identity.sign)


def sign_document(
    identity: Identity, data: bytes, *, now: float, name: str | None = None, purpose: str | None = None
) -> str:
    """Sign ``data`` (held in memory); for a file use ``digest_file`` and ``sign_digest``."""
    return sign_digest(identity, digest_bytes(data), len(data), now=now, name=name, purpose=purpose)


def check_header(jws: Jws, *, typ: str, version: int, what: str) -> None:
    """``DecodeError`` unless ``jws`` has ``typ``; ``UnsupportedVersion`` unless its ``v`` is ``version``."""
    if jws.header.get("typ") != typ:
        raise DecodeError(what, f"typ is {jws.header.get('typ')!r}, not {typ!r}")
    v = jws.header.get("v")
    if isinstance(v, bool) or not isinstance(v, int):
        raise DecodeError(what, "the header has no integer version v")
    if v != version:
        raise UnsupportedVersion(what=what, version=v, supported=(version,))


def numeric_date(payload: dict[str, object], key: str, *, what: str) -> int:
    """The integer ``payload[key]`` (a JWT NumericDate, seconds, >= 0); ``DecodeError`` otherwise."""
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise DecodeError(what, f"{key} is not an integer time")
    return value


def optional_text(payload: dict[str, object], key: str, limit: int, *, what: str) -> str | None:
    """``payload[key]``: None if absent, else text of at most ``limit`` characters (``DecodeError``)."""
    value = payload.get(key)
    if value is None and key not in payload:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise DecodeError(what, f"{key} is not text of at most {limit} characters")
    return value


def parse_signature(text: str) -> SignatureInfo:
    """Parse ``text`` and check its signer's signature (not the document: see ``verify_document``).

    ``TooLarge``/``DecodeError`` for malformed text, ``UnsupportedVersion`` for another ``v``,
    ``BadSignature`` if the key named in ``iss`` did not sign it.
    """
    jws = parse_jws(text.strip() if isinstance(text, str) else text, what=_WHAT, max_size=MAX_SIGNATURE_SIZE)
    info = signature_info(jws)
    verify_jws(jws, info.signer, what=_WHAT)
    return info


def signature_info(jws: Jws) -> SignatureInfo:
    """The members of a signature ``jws`` checked for structure (not its EdDSA signature: the caller
    verifies, or read it from its own store where only verified signatures are written)."""
    check_header(jws, typ=SIGNATURE_TYP, version=SIGNATURE_VERSION, what=_WHAT)
    payload = jws.payload
    signer_did = payload.get("iss")
    signer = public_of_did(signer_did)
    iat = numeric_date(payload, "iat", what=_WHAT)
    digest = check_digest(payload.get("sub"))
    if payload.get("hash") != HASH_NAME:
        raise DecodeError(_WHAT, f"hash is {payload.get('hash')!r}, not {HASH_NAME!r}")
    size = payload.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**63:
        raise DecodeError(_WHAT, "size is not a non-negative integer")
    name = optional_text(payload, "name", MAX_NAME, what=_WHAT)
    purpose = optional_text(payload, "purpose", MAX_PURPOSE, what=_WHAT)
    cosign = None if "cosign" not in payload else check_doc_id(payload["cosign"])
    assert isinstance(signer_did, str)  # public_of_did accepted it
    return SignatureInfo(
        signer=signer,
        signer_did=signer_did,
        signed_at=float(iat),
        digest=digest,
        size=size,
        name=name,
        purpose=purpose,
        cosign=cosign,
        compact=jws.compact,
    )


def verify_document(data_digest: str, text: str) -> SignatureInfo:
    """Check signature ``text`` against a document whose SHA-256 is ``data_digest`` (``digest_bytes``/
    ``digest_file``): the errors of ``parse_signature``, then ``DocumentMismatch`` if the hashes differ."""
    info = parse_signature(text)
    if info.digest != data_digest:
        raise DocumentMismatch(signed=info.digest, actual=data_digest)
    return info
