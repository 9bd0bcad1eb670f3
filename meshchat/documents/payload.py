"""What a co-signing round sends: the control message encoding and the three JWS it carries besides
signatures (the proposal, a revocation, a witness stamp).

Controls travel as 1:1 control messages (``Messenger.send(..., control=True)``), canonical msgpack::

    {1: 65, 2: kind, 3: JWS text (ASCII bytes), 4: document bytes (PROPOSE only, may be b"")}

The first key ``1`` with the value ``65`` lets the node route it without decoding
(``is_document_control``); file offers use 64, credentials 66.

JWS formats (all ``alg`` EdDSA, header member ``v`` 1, members named as in JWT):

- proposal, typ ``meshchat-cosign+jwt``: ``{"iss": proposer did, "iat", "sub": document digest, "size",
  "name", "signers": [did, ...], "threshold": M, "witnesses": [did, ...], "quorum": k, "exp"?}``;
  its id is ``doc_id = b64url(sha256(compact))[:22]`` (128 bits), so nobody picks another round's id.
- revocation, typ ``meshchat-revocation+jwt``: ``{"iss": signer did, "iat", "sub": b64url(sha256(the
  signature's compact text)), "cosign": doc_id, "reason": text}``.
- witness stamp, typ ``meshchat-witness+jwt``: ``{"iss": witness did, "iat": seen at, "sub":
  b64url(sha256(the signature's compact text))}``.

Parsing checks size, structure and every member, then the issuer's signature (``DecodeError``,
``UnsupportedVersion``, ``BadSignature``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from meshchat.documents.signature import (
    MAX_NAME,
    MAX_PURPOSE,
    check_digest,
    check_doc_id,
    check_header,
    numeric_date,
)
from meshchat.errors import DecodeError
from meshchat.identity import Identity, PublicIdentity
from meshchat.wire.codec import pack, unpack_canonical
from meshchat.wire.jose import Jws, b64url_encode, did_key, parse_jws, public_of_did, sign_jws, verify_jws

__all__ = [
    "DOCUMENT_CONTROL",
    "MAX_CONTROL_SIZE",
    "MAX_INLINE",
    "MAX_PROPOSAL_SIZE",
    "MAX_SIGNERS",
    "MAX_WITNESSES",
    "PROPOSAL_TYP",
    "REVOCATION_TYP",
    "STAMP_TYP",
    "ControlKind",
    "DocumentControl",
    "Proposal",
    "Revocation",
    "Stamp",
    "decode_control",
    "doc_id_of",
    "encode_control",
    "is_document_control",
    "parse_proposal",
    "parse_revocation",
    "parse_stamp",
    "sign_proposal",
    "sign_revocation",
    "sign_stamp",
    "signature_hash",
]

#: Value of key 1 that marks a document control (files' offers use 64, credentials 66).
DOCUMENT_CONTROL: Final = 65
#: A document at most this large travels inside the PROPOSE control; a larger one another way (files).
MAX_INLINE: Final = 40 * 1024
#: The most signers a round names: a board or a partnership, not a petition (each signature travels
#: to every participant, so a round costs signers² controls).
MAX_SIGNERS: Final = 32
#: The most timestamp witnesses: a handful of peers bound the signing time; more adds nothing.
MAX_WITNESSES: Final = 8
#: The largest proposal text, characters: 40 did:keys of 56 characters and the rest fit in ~3 KiB.
MAX_PROPOSAL_SIZE: Final = 8 * 1024
#: The largest revocation or stamp text (a reason of ``MAX_PURPOSE`` characters, up to 4 bytes each).
_MAX_SMALL_JWS: Final = 4 * 1024
#: The largest control body: an inline document plus its proposal and the msgpack framing.
MAX_CONTROL_SIZE: Final = MAX_INLINE + MAX_PROPOSAL_SIZE + 64

PROPOSAL_TYP: Final = "meshchat-cosign+jwt"
REVOCATION_TYP: Final = "meshchat-revocation+jwt"
STAMP_TYP: Final = "meshchat-witness+jwt"
_VERSION: Final = 1
_DOC_ID_CHARS: Final = 22
_CONTROL_HEAD: Final = b"\x01\x41"


class ControlKind(IntEnum):
    """What a document control carries (key 2)."""

    #: A proposal (3) and the document (4, or b"" when it travels as a file).
    PROPOSE = 1
    #: A signer's co-signature (3), to every participant.
    SIGNATURE = 2
    #: A signer's revocation of its co-signature (3), to every participant.
    REVOCATION = 3
    #: A signer asks a witness to stamp its signature (3 = the signature).
    WITNESS_REQUEST = 4
    #: A witness's stamp (3), to the requester, who forwards it to every participant.
    STAMP = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentControl:
    """A decoded control (its JWS not yet parsed)."""

    kind: ControlKind
    #: The JWS text.
    jws: str
    #: The document (PROPOSE only; None otherwise; b"" when it travels another way).
    content: bytes | None = None


def is_document_control(body: bytes) -> bool:
    """Whether a control message body is a document control (cheap, no decoding)."""
    return len(body) > 3 and body[0] & 0xF0 == 0x80 and body[1:3] == _CONTROL_HEAD


def encode_control(kind: ControlKind, jws: str, content: bytes | None = None) -> bytes:
    """The control body for ``kind`` carrying ``jws`` (and ``content`` for PROPOSE)."""
    value: dict[int, object] = {1: DOCUMENT_CONTROL, 2: int(kind), 3: jws.encode("ascii")}
    if kind is ControlKind.PROPOSE:
        value[4] = b"" if content is None else content
    elif content is not None:
        raise ValueError("only a PROPOSE control carries the document")
    return pack(value)


def decode_control(body: bytes) -> DocumentControl:
    """Decode a control body; ``TooLarge``/``DecodeError`` for anything but a well-formed control."""
    value = unpack_canonical(body, what="document control", limit=MAX_CONTROL_SIZE)
    if not isinstance(value, dict) or value.get(1) != DOCUMENT_CONTROL:
        raise DecodeError("document control", "not a document control")
    raw_kind = value.get(2)
    try:
        kind = ControlKind(raw_kind if isinstance(raw_kind, int) else -1)
    except ValueError as exc:
        raise DecodeError("document control", f"unknown kind {raw_kind!r}") from exc
    expected = {1, 2, 3, 4} if kind is ControlKind.PROPOSE else {1, 2, 3}
    if set(value) != expected:
        raise DecodeError("document control", f"a {kind.name} control has keys {sorted(expected)}")
    raw = value[3]
    if not isinstance(raw, bytes) or not raw.isascii():
        raise DecodeError("document control", "the JWS is not ASCII bytes")
    content = value.get(4)
    if kind is ControlKind.PROPOSE and not isinstance(content, bytes):
        raise DecodeError("document control", "the document is not bytes")
    if content is not None and len(content) > MAX_INLINE:
        raise DecodeError("document control", f"an inline document is at most {MAX_INLINE} bytes")
    return DocumentControl(kind=kind, jws=raw.decode("ascii"), content=content)


def signature_hash(compact: str) -> str:
    """base64url SHA-256 of a signature's text: how revocations and stamps name it."""
    return b64url_encode(hashlib.sha256(compact.encode("ascii")).digest())


def doc_id_of(proposal_compact: str) -> str:
    """A round's id: the first 22 characters (128 bits) of the base64url SHA-256 of its proposal."""
    return signature_hash(proposal_compact)[:_DOC_ID_CHARS]


# --- proposal ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proposal:
    """A co-signing round as its proposer signed it."""

    #: The round's id (``doc_id_of(compact)``).
    doc_id: str
    #: base64url SHA-256 of the document.
    digest: str
    #: The document's size in bytes.
    size: int
    #: Its file name (display only).
    name: str
    proposer: PublicIdentity
    #: Who is asked to sign, distinct, in the proposer's order.
    signers: tuple[PublicIdentity, ...]
    #: How many valid, unrevoked signatures make the document complete (M of N).
    threshold: int
    #: Timestamp witnesses, distinct.
    witnesses: tuple[PublicIdentity, ...]
    #: How many witness stamps bound a signature's time (the k-th earliest is the bound).
    quorum: int
    #: When the proposer made it (its own clock).
    created: float
    #: After this time (unix seconds) the round takes no new signatures; None = never.
    expires: float | None
    #: The proposal's JWS text.
    compact: str


def sign_proposal(
    identity: Identity,
    *,
    digest: str,
    size: int,
    name: str,
    signers: tuple[PublicIdentity, ...],
    threshold: int,
    witnesses: tuple[PublicIdentity, ...],
    quorum: int,
    expires: float | None,
    now: float,
) -> str:
    """The proposal JWS; ``ValueError`` for a round a reader would refuse."""
    try:
        check_digest(digest, what="proposal")
    except DecodeError as exc:
        raise ValueError(str(exc)) from exc
    problem = _round_problem(
        size=size, name=name, signers=signers, threshold=threshold, witnesses=witnesses, quorum=quorum
    )
    if problem is not None:
        raise ValueError(problem)
    if expires is not None and int(expires) <= int(now):
        raise ValueError("a round's deadline must be in the future")
    payload: dict[str, object] = {
        "iss": did_key(identity.public),
        "iat": int(now),
        "sub": digest,
        "size": size,
        "name": name,
        "signers": [did_key(s) for s in signers],
        "threshold": threshold,
        "witnesses": [did_key(w) for w in witnesses],
        "quorum": quorum,
    }
    if expires is not None:
        payload["exp"] = int(expires)
    return sign_jws({"typ": PROPOSAL_TYP, "v": _VERSION}, payload, identity.sign)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _round_problem(
    *,
    size: object,
    name: object,
    signers: tuple[PublicIdentity, ...],
    threshold: object,
    witnesses: tuple[PublicIdentity, ...],
    quorum: object,
) -> str | None:
    if not _is_int(size) or not 0 <= size < 2**63:  # type: ignore[operator]  # _is_int checked it
        return "size is not a non-negative integer"
    if not isinstance(name, str) or len(name) > MAX_NAME:
        return f"name is not text of at most {MAX_NAME} characters"
    if not 1 <= len(signers) <= MAX_SIGNERS or len(set(signers)) != len(signers):
        return f"a round names 1 to {MAX_SIGNERS} distinct signers"
    if not _is_int(threshold) or not 1 <= threshold <= len(signers):  # type: ignore[operator]
        return f"the threshold must be 1 to {len(signers)} (the number of signers)"
    if len(witnesses) > MAX_WITNESSES or len(set(witnesses)) != len(witnesses):
        return f"a round names at most {MAX_WITNESSES} distinct witnesses"
    if not _is_int(quorum) or not 0 <= quorum <= len(witnesses):  # type: ignore[operator]
        return f"the witness quorum must be 0 to {len(witnesses)} (the number of witnesses)"
    return None


def _dids(value: object, *, limit: int, what: str) -> tuple[PublicIdentity, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise DecodeError("proposal", f"{what} is not a list of at most {limit} did:keys")
    return tuple(public_of_did(item) for item in value)


def _parse(text: str, *, typ: str, what: str, max_size: int) -> Jws:
    if not isinstance(text, str):
        raise DecodeError(what, "not text")
    jws = parse_jws(text, what=what, max_size=max_size)
    check_header(jws, typ=typ, version=_VERSION, what=what)
    return jws


def parse_proposal(text: str, *, verify: bool = True) -> Proposal:
    """A proposal from its JWS text; ``verify=False`` skips the EdDSA check (for one's own store)."""
    jws = _parse(text, typ=PROPOSAL_TYP, what="proposal", max_size=MAX_PROPOSAL_SIZE)
    p = jws.payload
    proposer = public_of_did(p.get("iss"))
    created = numeric_date(p, "iat", what="proposal")
    digest = check_digest(p.get("sub"), what="proposal")
    signers = _dids(p.get("signers"), limit=MAX_SIGNERS, what="signers")
    witnesses = _dids(p.get("witnesses"), limit=MAX_WITNESSES, what="witnesses")
    size, name, threshold, quorum = p.get("size"), p.get("name"), p.get("threshold"), p.get("quorum")
    problem = _round_problem(
        size=size, name=name, signers=signers, threshold=threshold, witnesses=witnesses, quorum=quorum
    )
    if problem is not None:
        raise DecodeError("proposal", problem)
    expires = None if "exp" not in p else float(numeric_date(p, "exp", what="proposal"))
    if verify:
        verify_jws(jws, proposer, what="proposal")
    assert isinstance(size, int) and isinstance(name, str)  # _round_problem checked them
    assert isinstance(threshold, int) and isinstance(quorum, int)
    return Proposal(
        doc_id=doc_id_of(jws.compact),
        digest=digest,
        size=size,
        name=name,
        proposer=proposer,
        signers=signers,
        threshold=threshold,
        witnesses=witnesses,
        quorum=quorum,
        created=float(created),
        expires=expires,
        compact=jws.compact,
    )


# --- revocation ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revocation:
    """A signer withdraws its co-signature."""

    doc_id: str
    signer: PublicIdentity
    signer_did: str
    #: When (the signer's clock).
    revoked_at: float
    #: ``signature_hash`` of the signature it withdraws.
    signature: str
    reason: str
    compact: str


def sign_revocation(identity: Identity, *, doc_id: str, signature: str, reason: str, now: float) -> str:
    """The revocation JWS of the signature whose text is ``signature``."""
    if len(reason) > MAX_PURPOSE:
        raise ValueError(f"a reason is at most {MAX_PURPOSE} characters, not {len(reason)}")
    payload = {
        "iss": did_key(identity.public),
        "iat": int(now),
        "sub": signature_hash(signature),
        "cosign": doc_id,
        "reason": reason,
    }
    return sign_jws({"typ": REVOCATION_TYP, "v": _VERSION}, payload, identity.sign)


def parse_revocation(text: str, *, verify: bool = True) -> Revocation:
    """A revocation from its JWS text (``verify=False`` skips the EdDSA check)."""
    jws = _parse(text, typ=REVOCATION_TYP, what="revocation", max_size=_MAX_SMALL_JWS)
    p = jws.payload
    signer_did = p.get("iss")
    signer = public_of_did(signer_did)
    revoked_at = numeric_date(p, "iat", what="revocation")
    sub = check_digest(p.get("sub"), what="revocation")
    doc_id = check_doc_id(p.get("cosign"), what="revocation")
    reason = p.get("reason")
    if not isinstance(reason, str) or len(reason) > MAX_PURPOSE:
        raise DecodeError("revocation", f"reason is not text of at most {MAX_PURPOSE} characters")
    if verify:
        verify_jws(jws, signer, what="revocation")
    assert isinstance(signer_did, str)
    return Revocation(
        doc_id=doc_id,
        signer=signer,
        signer_did=signer_did,
        revoked_at=float(revoked_at),
        signature=sub,
        reason=reason,
        compact=jws.compact,
    )


# --- witness stamp -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stamp:
    """A witness says it saw a signature at ``seen_at``."""

    witness: PublicIdentity
    witness_did: str
    seen_at: float
    #: ``signature_hash`` of the stamped signature.
    signature: str
    compact: str


def sign_stamp(identity: Identity, *, signature: str, now: float) -> str:
    """A witness's stamp of the signature whose text is ``signature``, seen at ``now``."""
    payload = {"iss": did_key(identity.public), "iat": int(now), "sub": signature_hash(signature)}
    return sign_jws({"typ": STAMP_TYP, "v": _VERSION}, payload, identity.sign)


def parse_stamp(text: str, *, verify: bool = True) -> Stamp:
    """A stamp from its JWS text (``verify=False`` skips the EdDSA check)."""
    jws = _parse(text, typ=STAMP_TYP, what="witness stamp", max_size=_MAX_SMALL_JWS)
    p = jws.payload
    witness_did = p.get("iss")
    witness = public_of_did(witness_did)
    seen_at = numeric_date(p, "iat", what="witness stamp")
    sub = check_digest(p.get("sub"), what="witness stamp")
    if verify:
        verify_jws(jws, witness, what="witness stamp")
    assert isinstance(witness_did, str)
    return Stamp(
        witness=witness, witness_did=witness_did, seen_at=float(seen_at), signature=sub, compact=jws.compact
    )
