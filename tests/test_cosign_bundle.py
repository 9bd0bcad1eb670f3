"""Bundles (``NAME.cosign.json``): exported by a core, checked offline by ``verify_bundle``; an altered
document, a forged or foreign JWS, another version: each a typed error."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.documents import CosignCore, DocumentStore, SendControl, digest_bytes, verify_bundle
from meshchat.documents.payload import sign_revocation, sign_stamp
from meshchat.documents.signature import sign_digest
from meshchat.errors import (
    BadSignature,
    DecodeError,
    DocumentMismatch,
    MeshchatError,
    NotASigner,
    UnsupportedVersion,
)
from meshchat.identity import Identity
from meshchat.wire.jose import did_key

NOW = 1_780_000_000.0
DOC = b"Lease: flat 3, 900 EUR a month, from 1 January.\n"
ALICE, BOB, CAROL, WITNESS, MALLORY = (Identity(bytes([n]) * 32) for n in (11, 12, 13, 14, 15))


def _round() -> tuple[CosignCore, str]:
    """Alice proposes 2 of 3 with one witness; Alice and Bob sign, Bob's signature is stamped."""
    cores = {i.public: CosignCore(i, DocumentStore(":memory:")) for i in (ALICE, BOB, CAROL, WITNESS)}
    flight: list[tuple[object, object, bytes]] = []

    def take(sender: Identity, actions: list[object]) -> None:
        flight.extend((a.recipient, sender.public, a.body) for a in actions if isinstance(a, SendControl))

    def deliver() -> None:
        for _ in range(1000):
            if not flight:
                return
            recipient, sender, body = flight.pop(0)
            core = cores[recipient]  # type: ignore[index]
            take(core.identity, core.control_received(sender, body, wall_now=NOW + 30))  # type: ignore[arg-type]

    proposal, actions = cores[ALICE.public].propose(
        DOC,
        digest=digest_bytes(DOC),
        size=len(DOC),
        name="lease.txt",
        signers=[ALICE.public, BOB.public, CAROL.public],
        threshold=2,
        witnesses=[WITNESS.public],
        quorum=1,
        wall_now=NOW,
    )
    take(ALICE, actions)  # type: ignore[arg-type]
    deliver()
    take(ALICE, cores[ALICE.public].sign(proposal.doc_id, wall_now=NOW + 1))  # type: ignore[arg-type]
    take(BOB, cores[BOB.public].sign(proposal.doc_id, wall_now=NOW + 2))  # type: ignore[arg-type]
    deliver()
    return cores[CAROL.public], proposal.doc_id


def test_exported_bundle_verifies_offline() -> None:
    core, doc_id = _round()
    text = core.bundle(doc_id)
    report = verify_bundle(text, digest=digest_bytes(DOC), now=NOW + 100)
    assert report.complete and not report.expired
    assert report.proposal.doc_id == doc_id
    assert [s.signer for s in report.signatures] == [ALICE.public, BOB.public]
    assert report.missing == (CAROL.public,) and report.revoked == ()
    assert report.signed_no_later_than == {
        did_key(ALICE.public): float(int(NOW + 30)),
        did_key(BOB.public): float(int(NOW + 30)),
    }
    assert verify_bundle(text, digest=None, now=NOW).complete  # without the document at hand
    parsed = json.loads(text)
    assert set(parsed) == {"v", "proposal", "signatures", "revocations", "stamps"} and parsed["v"] == 1


def test_altered_document_fails_with_document_mismatch() -> None:
    core, doc_id = _round()
    with pytest.raises(DocumentMismatch) as caught:
        verify_bundle(core.bundle(doc_id), digest=digest_bytes(DOC.replace(b"900", b"090")), now=NOW)
    assert caught.value.signed == digest_bytes(DOC)


def test_revocation_in_the_bundle_is_applied() -> None:
    core, doc_id = _round()
    bundle = json.loads(core.bundle(doc_id))
    bob_sig = next(s for s in bundle["signatures"] if did_key(BOB.public) in json.dumps(_payload(s)))
    bundle["revocations"].append(
        sign_revocation(BOB, doc_id=doc_id, signature=bob_sig, reason="", now=NOW + 9)
    )
    report = verify_bundle(json.dumps(bundle), digest=digest_bytes(DOC), now=NOW)
    assert not report.complete and report.revoked == ((BOB.public, float(int(NOW + 9))),)
    assert report.missing == (BOB.public, CAROL.public)
    # Alice cannot revoke Bob's signature: her revocation names a signature that is not hers.
    bundle["revocations"] = [sign_revocation(ALICE, doc_id=doc_id, signature=bob_sig, reason="", now=NOW)]
    assert verify_bundle(json.dumps(bundle), digest=None, now=NOW).complete


def _payload(compact: str) -> dict[str, object]:
    import base64  # noqa: PLC0415  # a one-off decode in a test helper

    part = compact.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def test_foreign_and_forged_content_is_refused_typed() -> None:
    core, doc_id = _round()
    bundle = json.loads(core.bundle(doc_id))

    def check(changed: dict[str, object], error: type[MeshchatError]) -> None:
        with pytest.raises(error):
            verify_bundle(json.dumps(changed), digest=digest_bytes(DOC), now=NOW)

    check({**bundle, "v": 2}, UnsupportedVersion)
    check({**bundle, "proposal": 7}, DecodeError)
    mallory = sign_digest(MALLORY, digest_bytes(DOC), len(DOC), now=NOW, cosign=doc_id)
    check({**bundle, "signatures": [*bundle["signatures"], mallory]}, NotASigner)
    carol_other = sign_digest(CAROL, digest_bytes(b"another"), 7, now=NOW, cosign=doc_id)
    check({**bundle, "signatures": [*bundle["signatures"], carol_other]}, DocumentMismatch)
    carol_elsewhere = sign_digest(CAROL, digest_bytes(DOC), len(DOC), now=NOW, cosign="B" * 22)
    check({**bundle, "signatures": [*bundle["signatures"], carol_elsewhere]}, DecodeError)
    check({**bundle, "signatures": [*bundle["signatures"], bundle["signatures"][0]]}, DecodeError)
    fake_stamp = sign_stamp(MALLORY, signature=bundle["signatures"][0], now=NOW)
    check({**bundle, "stamps": [*bundle["stamps"], fake_stamp]}, DecodeError)
    head, payload, _ = bundle["signatures"][0].split(".")
    other_sig = bundle["signatures"][1].split(".")[2]
    check({**bundle, "signatures": [f"{head}.{payload}.{other_sig}", bundle["signatures"][1]]}, BadSignature)
    with pytest.raises(DecodeError):
        verify_bundle("[]", digest=None, now=NOW)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_altered_character_of_a_bundle_jws_fails_typed(data: st.DataObject) -> None:
    core, doc_id = _ROUND
    bundle = json.loads(core.bundle(doc_id))
    field = data.draw(st.sampled_from(["proposal", "signatures", "stamps"]))
    texts = [bundle[field]] if field == "proposal" else bundle[field]
    index = data.draw(st.integers(min_value=0, max_value=len(texts) - 1))
    text = texts[index]
    position = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    char = data.draw(st.sampled_from("AQgw_-.0z"))
    altered = text[:position] + char + text[position + 1 :]
    if altered == text:
        return
    if field == "proposal":
        bundle["proposal"] = altered
    else:
        bundle[field][index] = altered
    with pytest.raises(MeshchatError):
        verify_bundle(json.dumps(bundle), digest=digest_bytes(DOC), now=NOW)


_ROUND = _round()
