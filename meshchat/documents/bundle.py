"""Offline check of a co-signing round exported as a bundle (``NAME.cosign.json``).

A bundle is JSON ``{"v": 1, "proposal": jws, "signatures": [jws...], "revocations": [jws...],
"stamps": [jws...]}``: everything a reader needs, with the document, to see who signed it, who revoked,
whether the M-of-N rule holds and by when each signature existed, with no network and no registry.

``verify_bundle`` is strict: a bundle that carries anything forged or foreign (a bad signature, a
signer the proposal does not list, a signature of another round or document, a stamp by a non-witness)
raises a typed error rather than being reported with a flag, since an honest exporter never writes
one. Revocations are applied; a revocation naming a signature not in the bundle is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from meshchat.documents.payload import (
    MAX_SIGNERS,
    MAX_WITNESSES,
    Proposal,
    parse_proposal,
    parse_revocation,
    parse_stamp,
    signature_hash,
)
from meshchat.documents.signature import SignatureInfo, parse_signature
from meshchat.errors import DecodeError, DocumentMismatch, NotASigner, UnsupportedVersion
from meshchat.identity import PublicIdentity
from meshchat.wire.jose import did_key, parse_json

__all__ = ["BUNDLE_VERSION", "MAX_BUNDLE_SIZE", "BundleReport", "verify_bundle"]

#: The bundle format version (member ``v``).
BUNDLE_VERSION: Final = 1
#: The largest bundle accepted, bytes: 32 signatures, 32 revocations, 320 stamps of ~1 KiB at most.
MAX_BUNDLE_SIZE: Final = 512 * 1024
_WHAT: Final = "co-signing bundle"


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What a bundle proves."""

    proposal: Proposal
    #: Valid, unrevoked signatures, in the proposal's signer order.
    signatures: tuple[SignatureInfo, ...]
    #: Signers who revoked their signature, and when (their clock).
    revoked: tuple[tuple[PublicIdentity, float], ...]
    #: Signers without a valid, unrevoked signature.
    missing: tuple[PublicIdentity, ...]
    #: At least ``threshold`` valid, unrevoked signatures.
    complete: bool
    #: Signer did -> the quorum-th earliest witness stamp of its signature ("signed no later than").
    signed_no_later_than: dict[str, float]
    #: Not complete and past the deadline at ``now``.
    expired: bool


def _texts(bundle: dict[str, object], key: str, limit: int) -> list[str]:
    value = bundle.get(key, [])
    if not isinstance(value, list) or len(value) > limit or not all(isinstance(v, str) for v in value):
        raise DecodeError(_WHAT, f"{key} is not a list of at most {limit} texts")
    return [str(v) for v in value]


def verify_bundle(text: str, *, digest: str | None, now: float) -> BundleReport:
    """Check a bundle, against the document whose digest is ``digest`` when given.

    ``TooLarge``/``DecodeError`` (malformed or foreign content), ``UnsupportedVersion``,
    ``BadSignature`` (any JWS not signed by its issuer), ``NotASigner`` (a signature or revocation by a
    key the proposal does not list), ``DocumentMismatch`` (``digest`` or a signature's hash is not the
    proposal's document).
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    bundle = parse_json(data, what=_WHAT, max_size=MAX_BUNDLE_SIZE)
    if not isinstance(bundle, dict):
        raise DecodeError(_WHAT, "not a JSON object")
    version = bundle.get("v")
    if isinstance(version, bool) or not isinstance(version, int):
        raise DecodeError(_WHAT, "no integer version v")
    if version != BUNDLE_VERSION:
        raise UnsupportedVersion(what=_WHAT, version=version, supported=(BUNDLE_VERSION,))
    raw_proposal = bundle.get("proposal")
    if not isinstance(raw_proposal, str):
        raise DecodeError(_WHAT, "no proposal")
    proposal = parse_proposal(raw_proposal)
    if digest is not None and digest != proposal.digest:
        raise DocumentMismatch(signed=proposal.digest, actual=digest)
    signers = {did_key(s): s for s in proposal.signers}
    by_signer = _signatures(bundle, proposal)
    hashes = {signature_hash(info.compact): did for did, info in by_signer.items()}
    revoked_at = _revocations(bundle, proposal, hashes)
    stamps = _stamps(bundle, proposal, hashes)
    valid = tuple(by_signer[d] for d in signers if d in by_signer and d not in revoked_at)
    signed_no_later_than = {}
    for info in valid:
        times = sorted(stamps.get(info.signer_did, []))
        if 0 < proposal.quorum <= len(times):
            signed_no_later_than[info.signer_did] = times[proposal.quorum - 1]
    complete = len(valid) >= proposal.threshold
    valid_dids = {info.signer_did for info in valid}
    return BundleReport(
        proposal=proposal,
        signatures=valid,
        revoked=tuple((signers[d], revoked_at[d]) for d in signers if d in revoked_at),
        missing=tuple(s for d, s in signers.items() if d not in valid_dids),
        complete=complete,
        signed_no_later_than=signed_no_later_than,
        expired=not complete and proposal.expires is not None and now > proposal.expires,
    )


def _signatures(bundle: dict[str, object], proposal: Proposal) -> dict[str, SignatureInfo]:
    signers = {did_key(s) for s in proposal.signers}
    by_signer: dict[str, SignatureInfo] = {}
    for compact in _texts(bundle, "signatures", MAX_SIGNERS):
        info = parse_signature(compact)
        if info.cosign != proposal.doc_id:
            raise DecodeError(_WHAT, "a signature belongs to another round")
        if info.digest != proposal.digest:
            raise DocumentMismatch(signed=info.digest, actual=proposal.digest)
        if info.signer_did not in signers:
            raise NotASigner(document=proposal.doc_id, key=info.signer_did)
        if info.signer_did in by_signer:
            raise DecodeError(_WHAT, "two signatures by one signer")
        if proposal.expires is not None and info.signed_at > proposal.expires:
            raise DecodeError(_WHAT, "a signature made after the round's deadline")
        by_signer[info.signer_did] = info
    return by_signer


def _revocations(bundle: dict[str, object], proposal: Proposal, hashes: dict[str, str]) -> dict[str, float]:
    signers = {did_key(s) for s in proposal.signers}
    revoked_at: dict[str, float] = {}
    for compact in _texts(bundle, "revocations", MAX_SIGNERS):
        revocation = parse_revocation(compact)
        if revocation.doc_id != proposal.doc_id:
            raise DecodeError(_WHAT, "a revocation belongs to another round")
        if revocation.signer_did not in signers:
            raise NotASigner(document=proposal.doc_id, key=revocation.signer_did)
        if hashes.get(revocation.signature) == revocation.signer_did:  # only its own signer revokes
            revoked_at[revocation.signer_did] = revocation.revoked_at
    return revoked_at


def _stamps(bundle: dict[str, object], proposal: Proposal, hashes: dict[str, str]) -> dict[str, list[float]]:
    witnesses = {did_key(w) for w in proposal.witnesses}
    stamps: dict[str, list[float]] = {}
    seen: set[tuple[str, str]] = set()
    for compact in _texts(bundle, "stamps", MAX_SIGNERS * MAX_WITNESSES):
        stamp = parse_stamp(compact)
        if stamp.witness_did not in witnesses:
            raise DecodeError(_WHAT, "a stamp by a key that is not one of the round's witnesses")
        signer = hashes.get(stamp.signature)
        if signer is None:
            raise DecodeError(_WHAT, "a stamp of a signature not in the bundle")
        if (stamp.signature, stamp.witness_did) in seen:
            raise DecodeError(_WHAT, "two stamps by one witness of one signature")
        seen.add((stamp.signature, stamp.witness_did))
        stamps.setdefault(signer, []).append(stamp.seen_at)
    return stamps
