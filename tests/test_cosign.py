"""CosignCore: a simulated three-party round with cores passing their SendControl bodies to each other
in-process; hostile controls counted and ignored; any order of delivery converges; witnesses; the
local user's typed errors; the store survives a reopen."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meshchat.documents import (
    MAX_INLINE,
    ControlKind,
    CosignCore,
    DocumentCompleted,
    DocumentProposed,
    DocumentRevoked,
    DocumentSigned,
    DocumentStamped,
    DocumentState,
    DocumentStore,
    SendControl,
    digest_bytes,
    is_document_control,
)
from meshchat.documents.cosign import WITNESS_ANSWERS_PER_HOUR, Action
from meshchat.documents.payload import (
    decode_control,
    encode_control,
    sign_proposal,
    sign_revocation,
    sign_stamp,
)
from meshchat.documents.signature import sign_digest
from meshchat.errors import (
    DocumentExpired,
    DocumentMismatch,
    NotASigner,
    NotSigned,
    SignatureRevoked,
    StorageError,
    UnknownDocument,
)
from meshchat.identity import Identity, PublicIdentity
from meshchat.wire.jose import did_key

NOW = 1_780_000_000.0
DOC = b"Partnership agreement: Alice, Bob and Carol share the bakery's profits equally.\n"


def _identity(n: int) -> Identity:
    return Identity(bytes([n]) * 32)


ALICE, BOB, CAROL, WITNESS, MALLORY, DAVE = (_identity(n) for n in (1, 2, 3, 4, 5, 6))


class Net:
    """Cores by key, and the controls in flight (recipient, sender, body)."""

    def __init__(self, *identities: Identity, stores: dict[Identity, DocumentStore] | None = None) -> None:
        self.cores = {
            i.public: CosignCore(i, (stores or {}).get(i) or DocumentStore(":memory:")) for i in identities
        }
        self.flight: list[tuple[PublicIdentity, PublicIdentity, bytes]] = []
        self.events: dict[PublicIdentity, list[Action]] = {i.public: [] for i in identities}

    def core(self, who: Identity) -> CosignCore:
        return self.cores[who.public]

    def take(self, sender: Identity | PublicIdentity, actions: Sequence[Action]) -> None:
        sender_key = sender.public if isinstance(sender, Identity) else sender
        for action in actions:
            if isinstance(action, SendControl):
                assert is_document_control(action.body)
                self.flight.append((action.recipient, sender_key, action.body))
            else:
                self.events[sender_key].append(action)

    def deliver_all(self, *, now: float = NOW, rng: random.Random | None = None, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.flight:
                return
            index = rng.randrange(len(self.flight)) if rng else 0
            recipient, sender, body = self.flight.pop(index)
            if recipient in self.cores:
                self.take(recipient, self.cores[recipient].control_received(sender, body, wall_now=now))
        raise AssertionError("controls kept flowing")


def _propose(net: Net, proposer: Identity = ALICE, **kwargs: object) -> str:
    options: dict[str, object] = {
        "digest": digest_bytes(DOC),
        "size": len(DOC),
        "name": "bakery.txt",
        "signers": [ALICE.public, BOB.public, CAROL.public],
        "threshold": 2,
        "wall_now": NOW,
    }
    options.update(kwargs)
    proposal, actions = net.core(proposer).propose(DOC, **options)  # type: ignore[arg-type]
    net.take(proposer, actions)
    return proposal.doc_id


def test_two_of_three_complete_then_a_revocation_reopens_everywhere() -> None:
    net = Net(ALICE, BOB, CAROL)
    doc_id = _propose(net)
    net.deliver_all()
    for core in net.cores.values():
        view = core.view(doc_id)
        assert view.state is DocumentState.OPEN and view.has_content
        assert core.content(doc_id) == DOC
    assert any(isinstance(e, DocumentProposed) for e in net.events[BOB.public])

    net.take(ALICE, net.core(ALICE).sign(doc_id, wall_now=NOW + 10))
    net.deliver_all()
    assert net.core(CAROL).view(doc_id).state is DocumentState.OPEN
    net.take(BOB, net.core(BOB).sign(doc_id, wall_now=NOW + 20, content_digest=digest_bytes(DOC)))
    net.deliver_all()
    for who, core in net.cores.items():
        view = core.view(doc_id)
        assert view.state is DocumentState.COMPLETE
        assert {s.signer for s in view.signatures} == {ALICE.public, BOB.public}
        assert view.pending == (CAROL.public,)
        assert view.signed_by_me == (who in (ALICE.public, BOB.public))
        assert sum(isinstance(e, DocumentCompleted) for e in net.events[who]) == 1

    net.take(BOB, net.core(BOB).revoke(doc_id, reason="changed my mind", wall_now=NOW + 30))
    net.deliver_all()
    for who, core in net.cores.items():
        view = core.view(doc_id)
        assert view.state is DocumentState.OPEN
        assert view.revoked == ((BOB.public, float(int(NOW + 30))),)
        assert [s.signer for s in view.signatures] == [ALICE.public]
        assert any(isinstance(e, DocumentRevoked) and e.signer == BOB.public for e in net.events[who])
    with pytest.raises(SignatureRevoked):
        net.core(BOB).sign(doc_id, wall_now=NOW + 40)

    net.take(CAROL, net.core(CAROL).sign(doc_id, wall_now=NOW + 50))
    net.deliver_all()
    assert all(c.view(doc_id).state is DocumentState.COMPLETE for c in net.cores.values())
    assert all(not c.counts.keys() - {"duplicate"} for c in net.cores.values()), [
        c.counts for c in net.cores.values()
    ]


def test_forged_signature_by_a_non_signer_is_counted_and_ignored() -> None:
    net = Net(ALICE, BOB, CAROL)
    doc_id = _propose(net)
    net.deliver_all()
    forged = sign_digest(MALLORY, digest_bytes(DOC), len(DOC), now=NOW, cosign=doc_id)
    core = net.core(BOB)
    assert (
        core.control_received(MALLORY.public, encode_control(ControlKind.SIGNATURE, forged), wall_now=NOW)
        == []
    )
    assert core.counts == {"not a signer": 1}
    # Mallory signs as Carol: the signature does not verify against Carol's key.
    as_carol = sign_digest(CAROL, digest_bytes(DOC), len(DOC), now=NOW, cosign=doc_id)
    head, payload, _ = as_carol.split(".")
    mallory_sig = sign_digest(MALLORY, digest_bytes(DOC), len(DOC), now=NOW, cosign=doc_id).split(".")[2]
    assert (
        core.control_received(
            MALLORY.public,
            encode_control(ControlKind.SIGNATURE, f"{head}.{payload}.{mallory_sig}"),
            wall_now=NOW,
        )
        == []
    )
    assert core.counts["bad signature"] == 1
    # Carol's real signature over another document.
    other = sign_digest(CAROL, digest_bytes(b"other"), 5, now=NOW, cosign=doc_id)
    core.control_received(MALLORY.public, encode_control(ControlKind.SIGNATURE, other), wall_now=NOW)
    assert core.counts["wrong document"] == 1
    # Garbage of every kind.
    for body in (
        b"\x84\x01\x41",
        b"\x83\x01\x41\x02\x02\x03\xc4\x01x",
        encode_control(ControlKind.STAMP, "a.b.c"),
    ):
        assert core.control_received(MALLORY.public, body, wall_now=NOW) == []
    assert core.counts["malformed"] == 3
    view = core.view(doc_id)
    assert view.signatures == () and view.state is DocumentState.OPEN


def test_a_replayed_control_is_idempotent() -> None:
    net = Net(ALICE, BOB, CAROL)
    doc_id = _propose(net)
    propose_body = next(b for r, _, b in net.flight if r == BOB.public)
    net.deliver_all()
    actions = net.core(ALICE).sign(doc_id, wall_now=NOW)
    signature_body = next(a.body for a in actions if isinstance(a, SendControl) and a.recipient == BOB.public)
    bob = net.core(BOB)
    first = bob.control_received(ALICE.public, signature_body, wall_now=NOW)
    assert [type(a) for a in first] == [DocumentSigned]
    for _ in range(3):
        assert bob.control_received(ALICE.public, signature_body, wall_now=NOW + 5) == []
        assert bob.control_received(ALICE.public, propose_body, wall_now=NOW + 5) == []
    assert bob.counts == {"duplicate": 6}
    assert len(bob.view(doc_id).signatures) == 1
    assert bob.documents()[0].doc_id == doc_id and len(bob.documents()) == 1
    # Signing twice re-sends the same signature; revoking twice the same revocation.
    again = net.core(ALICE).sign(doc_id, wall_now=NOW + 99)
    assert [a.body for a in again if isinstance(a, SendControl)] == [
        a.body for a in actions if isinstance(a, SendControl)
    ]
    r1 = net.core(ALICE).revoke(doc_id, wall_now=NOW + 100)
    r2 = net.core(ALICE).revoke(doc_id, wall_now=NOW + 200)
    assert [a for a in r1 if isinstance(a, SendControl)] == [a for a in r2 if isinstance(a, SendControl)]


def test_proposal_checks_sender_participant_and_content() -> None:
    core = CosignCore(BOB, DocumentStore(":memory:"))
    compact = sign_proposal(
        ALICE,
        digest=digest_bytes(DOC),
        size=len(DOC),
        name="x",
        signers=(ALICE.public, BOB.public),
        threshold=1,
        witnesses=(),
        quorum=0,
        expires=None,
        now=NOW,
    )
    core.control_received(MALLORY.public, encode_control(ControlKind.PROPOSE, compact, DOC), wall_now=NOW)
    assert core.counts == {"not from the proposer": 1}
    core.control_received(
        ALICE.public, encode_control(ControlKind.PROPOSE, compact, DOC + b"!"), wall_now=NOW
    )
    assert core.counts["content mismatch"] == 1
    stranger = CosignCore(CAROL, DocumentStore(":memory:"))
    stranger.control_received(ALICE.public, encode_control(ControlKind.PROPOSE, compact, DOC), wall_now=NOW)
    assert stranger.counts == {"not a participant": 1} and stranger.documents() == []
    # Without the bytes (a large document travels as a file): kept, has_content False.
    actions = core.control_received(
        ALICE.public, encode_control(ControlKind.PROPOSE, compact, b""), wall_now=NOW
    )
    assert isinstance(actions[0], DocumentProposed) and not actions[0].view.has_content
    # The bytes arriving later fill it in.
    core.control_received(ALICE.public, encode_control(ControlKind.PROPOSE, compact, DOC), wall_now=NOW)
    assert core.content(actions[0].view.doc_id) == DOC


def test_only_the_signer_revokes_its_own_signature() -> None:
    net = Net(ALICE, BOB, CAROL)
    doc_id = _propose(net, threshold=1)
    net.deliver_all()
    signed = net.core(BOB).sign(doc_id, wall_now=NOW)
    net.take(BOB, signed)
    net.deliver_all()
    bob_sig = next(s.compact for s in net.core(ALICE).view(doc_id).signatures)
    # Mallory (not a signer) revokes Bob's signature; Carol (a signer) revokes Bob's signature.
    for who in (MALLORY, CAROL):
        text = sign_revocation(who, doc_id=doc_id, signature=bob_sig, reason="", now=NOW)
        net.core(ALICE).control_received(
            who.public, encode_control(ControlKind.REVOCATION, text), wall_now=NOW
        )
    view = net.core(ALICE).view(doc_id)
    assert view.state is DocumentState.COMPLETE and view.revoked == ()
    assert net.core(ALICE).counts["not a signer"] == 1


def test_local_errors_are_typed() -> None:
    net = Net(ALICE, BOB, CAROL)
    with pytest.raises(UnknownDocument):
        net.core(ALICE).sign("A" * 22, wall_now=NOW)
    with pytest.raises(UnknownDocument):
        net.core(ALICE).view("A" * 22)
    doc_id = _propose(net, signers=[BOB.public, CAROL.public], threshold=1, expires=NOW + 100)
    net.deliver_all()
    with pytest.raises(NotASigner):
        net.core(ALICE).sign(doc_id, wall_now=NOW)
    with pytest.raises(DocumentMismatch):
        net.core(BOB).sign(doc_id, wall_now=NOW, content_digest=digest_bytes(DOC + b" "))
    with pytest.raises(NotSigned):
        net.core(BOB).revoke(doc_id, wall_now=NOW)
    with pytest.raises(DocumentExpired):
        net.core(BOB).sign(doc_id, wall_now=NOW + 101)
    assert net.core(BOB).view(doc_id, wall_now=NOW + 101).state is DocumentState.EXPIRED
    with pytest.raises(DocumentMismatch):
        net.core(ALICE).propose(
            DOC, digest=digest_bytes(b"x"), size=1, name="", signers=[BOB.public], threshold=1, wall_now=NOW
        )
    with pytest.raises(ValueError, match="threshold"):
        _propose(net, threshold=4)
    with pytest.raises(ValueError, match="distinct"):
        _propose(net, signers=[BOB.public, BOB.public])


def test_a_signature_made_after_the_deadline_is_refused() -> None:
    net = Net(ALICE, BOB, CAROL)
    doc_id = _propose(net, expires=NOW + 100)
    net.deliver_all()
    late = sign_digest(BOB, digest_bytes(DOC), len(DOC), now=NOW + 101, cosign=doc_id)
    net.core(ALICE).control_received(
        BOB.public, encode_control(ControlKind.SIGNATURE, late), wall_now=NOW + 101
    )
    assert net.core(ALICE).counts == {"after the deadline": 1}
    # One made in time and delivered late (a mailbox) counts.
    early = sign_digest(BOB, digest_bytes(DOC), len(DOC), now=NOW + 99, cosign=doc_id)
    net.core(CAROL).control_received(
        BOB.public, encode_control(ControlKind.SIGNATURE, early), wall_now=NOW + 500
    )
    assert len(net.core(CAROL).view(doc_id).signatures) == 1


def test_large_document_travels_without_content() -> None:
    big = bytes(MAX_INLINE + 1)
    net = Net(ALICE, BOB)
    proposal, actions = net.core(ALICE).propose(
        big,
        digest=digest_bytes(big),
        size=len(big),
        name="big",
        signers=[BOB.public],
        threshold=1,
        wall_now=NOW,
    )
    sends = [a for a in actions if isinstance(a, SendControl)]
    assert len(sends) == 1 and decode_control(sends[0].body).content == b""
    net.take(ALICE, actions)
    net.deliver_all()
    assert not net.core(BOB).view(proposal.doc_id).has_content
    assert net.core(BOB).content(proposal.doc_id) is None


def test_witnesses_stamp_contacts_and_bound_the_signing_time() -> None:
    net = Net(ALICE, BOB, CAROL, WITNESS)
    doc_id = _propose(net, witnesses=[WITNESS.public], quorum=1)
    net.deliver_all()
    assert net.core(WITNESS).view(doc_id).state is DocumentState.OPEN  # the witness got the proposal
    net.take(BOB, net.core(BOB).sign(doc_id, wall_now=NOW + 5))
    net.deliver_all(now=NOW + 60)  # the witness sees it a minute later
    for who in (ALICE, BOB, CAROL, WITNESS):
        view = net.core(who).view(doc_id)
        assert view.stamps == {did_key(BOB.public): (float(int(NOW + 60)),)}, who
        assert view.signed_by == {did_key(BOB.public): float(int(NOW + 60))}
    assert any(isinstance(e, DocumentStamped) for e in net.events[CAROL.public])
    # A stamp by a key that is not a witness is refused.
    bob_sig = net.core(ALICE).view(doc_id).signatures[0].compact
    fake = sign_stamp(MALLORY, signature=bob_sig, now=NOW)
    net.core(ALICE).control_received(MALLORY.public, encode_control(ControlKind.STAMP, fake), wall_now=NOW)
    assert net.core(ALICE).counts["not a witness"] == 1
    # The witness only answers the signer itself, and contacts only.
    witness = net.core(WITNESS)
    request = encode_control(ControlKind.WITNESS_REQUEST, bob_sig)
    assert witness.control_received(MALLORY.public, request, wall_now=NOW) == []
    assert witness.counts["request not from the signer"] == 1
    witness.is_contact = lambda key: key != BOB.public
    assert witness.control_received(BOB.public, request, wall_now=NOW) == []
    assert witness.counts["request from a stranger"] == 1


def test_witness_rate_per_requester() -> None:
    store = DocumentStore(":memory:")
    witness = CosignCore(WITNESS, store)
    answered = 0
    for n in range(WITNESS_ANSWERS_PER_HOUR + 5):
        compact = sign_proposal(
            BOB,
            digest=digest_bytes(DOC + bytes([n])),
            size=len(DOC) + 1,
            name="",
            signers=(BOB.public,),
            threshold=1,
            witnesses=(WITNESS.public,),
            quorum=1,
            expires=None,
            now=NOW + n,
        )
        actions = witness.control_received(
            BOB.public, encode_control(ControlKind.PROPOSE, compact, b""), wall_now=NOW
        )
        doc_id = actions[0].view.doc_id  # type: ignore[union-attr]
        sig = sign_digest(BOB, digest_bytes(DOC + bytes([n])), len(DOC) + 1, now=NOW, cosign=doc_id)
        out = witness.control_received(
            BOB.public, encode_control(ControlKind.WITNESS_REQUEST, sig), wall_now=NOW
        )
        answered += any(isinstance(a, SendControl) for a in out)
    assert answered == WITNESS_ANSWERS_PER_HOUR
    assert witness.counts["witness rate"] == 5


def test_state_survives_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "documents.db"
    stores = {BOB: DocumentStore(path)}
    net = Net(ALICE, BOB, CAROL, stores=stores)
    doc_id = _propose(net)
    net.deliver_all()
    net.take(ALICE, net.core(ALICE).sign(doc_id, wall_now=NOW))
    net.take(CAROL, net.core(CAROL).sign(doc_id, wall_now=NOW))
    net.deliver_all()
    stores[BOB].close()
    reopened = CosignCore(BOB, DocumentStore(path))
    view = reopened.view(doc_id)
    assert view.state is DocumentState.COMPLETE and len(view.signatures) == 2
    assert reopened.content(doc_id) == DOC
    assert reopened.bundle(doc_id) == net.core(ALICE).bundle(doc_id)


def _full_round_flight() -> tuple[Net, str, list[tuple[PublicIdentity, PublicIdentity, bytes]]]:
    """Every control of a round (proposal, three signatures, one revocation, stamps), not yet delivered;
    Dave, a fourth signer who does not sign, has seen none of it (any control may reach him first)."""
    net = Net(ALICE, BOB, CAROL, WITNESS, DAVE)
    signers = [ALICE.public, BOB.public, CAROL.public, DAVE.public]
    doc_id = _propose(net, signers=signers, witnesses=[WITNESS.public], quorum=1)
    net.take(ALICE, net.core(ALICE).sign(doc_id, wall_now=NOW + 1))
    for who in (BOB, CAROL):
        # Their cores need the proposal to sign: give it to them directly (not through the flight).
        body = next(
            b for r, _, b in net.flight if r == who.public and decode_control(b).kind is ControlKind.PROPOSE
        )
        net.core(who).control_received(ALICE.public, body, wall_now=NOW)
        net.take(who, net.core(who).sign(doc_id, wall_now=NOW + 2))
    net.take(CAROL, net.core(CAROL).revoke(doc_id, wall_now=NOW + 3))
    return net, doc_id, net.flight


def _summary(core: CosignCore, doc_id: str) -> tuple[object, ...]:
    view = core.view(doc_id)
    return (
        view.state,
        tuple(s.compact for s in view.signatures),
        view.revoked,
        view.pending,
        tuple(sorted(view.signed_by.items())),
        core.bundle(doc_id),
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_any_order_of_delivery_converges(seed: int) -> None:
    net, doc_id, _ = _full_round_flight()
    net.deliver_all(rng=random.Random(seed), now=NOW + 10)
    summaries = {_summary(net.core(who), doc_id) for who in (ALICE, BOB, CAROL, DAVE)}
    assert len(summaries) == 1, summaries
    state, signatures, revoked, pending, signed_by, _ = summaries.pop()
    assert state is DocumentState.COMPLETE and len(signatures) == 2  # type: ignore[arg-type]
    assert revoked == ((CAROL.public, float(int(NOW + 3))),) and pending == (CAROL.public, DAVE.public)
    assert {d for d, _ in signed_by} == {did_key(ALICE.public), did_key(BOB.public)}  # type: ignore[attr-defined]
    assert all(c.store.count_orphans() == 0 for c in net.cores.values())


def test_a_second_different_signature_keeps_the_first_and_is_not_stamped() -> None:
    net = Net(ALICE, BOB, WITNESS)
    doc_id = _propose(net, signers=[ALICE.public, BOB.public], witnesses=[WITNESS.public], quorum=1)
    net.deliver_all()
    net.take(BOB, net.core(BOB).sign(doc_id, wall_now=NOW))
    net.deliver_all()
    second = sign_digest(BOB, digest_bytes(DOC), len(DOC), now=NOW + 7, cosign=doc_id)
    for kind in (ControlKind.SIGNATURE, ControlKind.WITNESS_REQUEST):
        for who in (ALICE, WITNESS):
            assert (
                net.core(who).control_received(BOB.public, encode_control(kind, second), wall_now=NOW) == []
            )
    assert net.core(ALICE).counts == {"second signature": 1, "not a witness": 1}
    assert net.core(WITNESS).counts == {"second signature": 2}  # as a signature and as a request
    assert [s.signed_at for s in net.core(ALICE).view(doc_id).signatures] == [float(int(NOW))]


def test_rounds_are_bounded_finished_ones_evicted_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshchat.documents import cosign  # noqa: PLC0415  # patch the bounds small

    monkeypatch.setattr(cosign, "MAX_DOCUMENTS", 3)
    monkeypatch.setattr(cosign, "MAX_OPEN_PER_PROPOSER", 2)
    bob = CosignCore(BOB, DocumentStore(":memory:"))

    def offer(n: int, proposer: Identity, expires: float | None = None) -> str | None:
        compact = sign_proposal(
            proposer,
            digest=digest_bytes(bytes([n])),
            size=1,
            name=str(n),
            signers=(BOB.public,),
            threshold=1,
            witnesses=(),
            quorum=0,
            expires=expires,
            now=NOW,
        )
        actions = bob.control_received(
            proposer.public, encode_control(ControlKind.PROPOSE, compact, b""), wall_now=NOW + 10
        )
        return actions[0].view.doc_id if actions else None  # type: ignore[union-attr]

    first = offer(1, ALICE, expires=NOW + 5)  # already expired when it arrives: finished
    assert first is not None and offer(2, ALICE) is not None and offer(3, ALICE) is not None
    assert offer(4, ALICE) is None  # Alice has 2 open rounds already
    assert bob.counts == {"too many documents": 1}
    fourth = offer(5, CAROL)  # the store is full: the expired round goes
    assert fourth is not None and first not in {v.doc_id for v in bob.documents()}
    assert offer(6, CAROL) is None  # full, nothing finished: refused, nothing pushed out
    assert bob.counts == {"too many documents": 2} and len(bob.documents()) == 3


def _valid_bodies() -> tuple[bytes, list[bytes]]:
    """Dave's PROPOSE control, and every distinct control of a full round."""
    _, _, flight = _full_round_flight()
    propose = next(
        b for r, _, b in flight if r == DAVE.public and decode_control(b).kind is ControlKind.PROPOSE
    )
    return propose, sorted({body for _, _, body in flight})


_PROPOSE, _BODIES = _valid_bodies()


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_control_received_never_raises_on_altered_or_random_bodies(data: st.DataObject) -> None:
    core = CosignCore(DAVE, DocumentStore(":memory:"))
    if data.draw(st.booleans()):  # with the round known, altered signatures reach the deeper checks
        assert core.control_received(ALICE.public, _PROPOSE, wall_now=NOW)
    for _ in range(3):
        if data.draw(st.booleans()):
            body = data.draw(st.binary(max_size=200))
        else:
            body = bytearray(data.draw(st.sampled_from(_BODIES)))
            for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
                i = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
                body[i] = data.draw(st.integers(min_value=0, max_value=255))
            body = bytes(body)
        sender = data.draw(st.sampled_from([ALICE.public, BOB.public, MALLORY.public]))
        core.control_received(sender, body, wall_now=NOW)
    assert all(isinstance(v, int) and v > 0 for v in core.counts.values())


def test_encrypted_store_keeps_rounds_unreadable_on_disk(tmp_path: Path) -> None:
    key = bytes(range(32))
    path = tmp_path / "documents.db"
    secret = b"Secret merger terms: ACME buys Initech."
    core = CosignCore(ALICE, DocumentStore(path, key=key))
    proposal, _ = core.propose(
        secret,
        digest=digest_bytes(secret),
        size=len(secret),
        name="merger-terms.txt",
        signers=[BOB.public],
        threshold=1,
        wall_now=NOW,
    )
    core.store.close()
    for file in tmp_path.iterdir():
        raw = file.read_bytes()
        assert b"ACME" not in raw and b"merger-terms" not in raw, file
    again = CosignCore(ALICE, DocumentStore(path, key=key))
    assert again.content(proposal.doc_id) == secret
    assert again.view(proposal.doc_id).proposal == proposal


def test_a_control_is_written_whole_or_not_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net(ALICE, BOB, CAROL)
    doc_id = _propose(net)
    net.deliver_all()
    bob = net.core(BOB)
    signed = net.core(ALICE).sign(doc_id, wall_now=NOW)
    body = next(a.body for a in signed if isinstance(a, SendControl) and a.recipient == BOB.public)

    def fail(*_: object, **__: object) -> None:
        raise StorageError("disk full (simulated)")

    monkeypatch.setattr(bob.store, "set_finished", fail)  # after the signature row is written
    with pytest.raises(StorageError):
        bob.control_received(ALICE.public, body, wall_now=NOW)
    monkeypatch.undo()
    assert bob.store.signatures(doc_id) == []  # rolled back with the rest of the control
    assert [type(a) for a in bob.control_received(ALICE.public, body, wall_now=NOW)] == [DocumentSigned]


class CosignMachine(RuleBasedStateMachine):
    """Three signers (2 of 3) and a witness; controls delivered in any order, replayed, forged. A
    core never shows a signature nobody made or a revocation nobody sent; once everything is
    delivered, every core shows exactly the model's round."""

    def __init__(self) -> None:
        super().__init__()
        self.net = Net(ALICE, BOB, CAROL, WITNESS)
        self.doc_id = _propose(self.net, witnesses=[WITNESS.public], quorum=1)
        self.signed: set[PublicIdentity] = set()
        self.revoked: set[PublicIdentity] = set()
        self.delivered: list[tuple[PublicIdentity, PublicIdentity, bytes]] = []
        self.now = NOW

    def _proposal_known(self, who: Identity) -> bool:
        return any(v.doc_id == self.doc_id for v in self.net.core(who).documents())

    @rule(who=st.sampled_from([ALICE, BOB, CAROL]))
    def sign(self, who: Identity) -> None:
        if not self._proposal_known(who) or who.public in self.revoked:
            return
        self.net.take(who, self.net.core(who).sign(self.doc_id, wall_now=self.now))
        self.signed.add(who.public)

    @rule(who=st.sampled_from([ALICE, BOB, CAROL]))
    def revoke(self, who: Identity) -> None:
        if who.public not in self.signed:
            return
        self.net.take(who, self.net.core(who).revoke(self.doc_id, wall_now=self.now))
        self.revoked.add(who.public)

    @rule(pick=st.integers(min_value=0))
    def deliver_one(self, pick: int) -> None:
        if not self.net.flight:
            return
        recipient, sender, body = self.net.flight.pop(pick % len(self.net.flight))
        self.delivered.append((recipient, sender, body))
        core = self.net.cores[recipient]
        self.net.take(recipient, core.control_received(sender, body, wall_now=self.now))

    @rule(pick=st.integers(min_value=0))
    def replay(self, pick: int) -> None:
        if self.delivered:
            recipient, sender, body = self.delivered[pick % len(self.delivered)]
            self.net.take(
                recipient, self.net.cores[recipient].control_received(sender, body, wall_now=self.now)
            )

    @rule(target_who=st.sampled_from([ALICE, BOB, CAROL]))
    def forge(self, target_who: Identity) -> None:
        forged = sign_digest(MALLORY, digest_bytes(DOC), len(DOC), now=self.now, cosign=self.doc_id)
        core = self.net.core(target_who)
        assert (
            core.control_received(
                MALLORY.public, encode_control(ControlKind.SIGNATURE, forged), wall_now=self.now
            )
            == []
        )

    @rule(dt=st.integers(min_value=0, max_value=120))
    def wait(self, dt: int) -> None:
        self.now += dt

    @invariant()
    def nothing_unmade_is_shown(self) -> None:
        for who in (ALICE, BOB, CAROL):
            if not self._proposal_known(who):
                continue
            view = self.net.core(who).view(self.doc_id)
            assert {s.signer for s in view.signatures} <= self.signed
            assert {k for k, _ in view.revoked} <= self.revoked
            assert MALLORY.public not in {s.signer for s in view.signatures}
            unexpected = set(self.net.core(who).counts) - {"duplicate", "waiting", "not a signer"}
            assert not unexpected, self.net.core(who).counts

    def teardown(self) -> None:
        self.net.deliver_all(now=self.now)
        valid = self.signed - self.revoked
        for who in (ALICE, BOB, CAROL):
            view = self.net.core(who).view(self.doc_id)
            assert {s.signer for s in view.signatures} == valid
            assert {k for k, _ in view.revoked} == self.revoked
            assert (view.state is DocumentState.COMPLETE) == (len(valid) >= 2)
            assert set(view.signed_by) == {did_key(k) for k in valid}


CosignMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_cosign_machine = CosignMachine.TestCase


def test_a_control_waiting_for_its_proposal_twice_is_a_duplicate_not_a_full_store() -> None:
    net = Net(ALICE, BOB, CAROL)
    doc_id = _propose(net)
    propose_to_carol = next(b for r, _, b in net.flight if r == CAROL.public)
    net.flight.clear()
    signature = sign_digest(BOB, digest_bytes(DOC), len(DOC), now=NOW, cosign=doc_id)
    carol = net.core(CAROL)
    for _ in range(2):
        assert (
            carol.control_received(BOB.public, encode_control(ControlKind.SIGNATURE, signature), wall_now=NOW)
            == []
        )
    assert carol.counts == {"waiting": 1, "duplicate": 1}
    actions = carol.control_received(ALICE.public, propose_to_carol, wall_now=NOW)
    assert [type(a) for a in actions] == [DocumentProposed, DocumentSigned]
    assert carol.store.count_orphans() == 0


def test_a_witness_does_not_stamp_a_signature_from_the_future() -> None:
    net = Net(ALICE, BOB, WITNESS)
    doc_id = _propose(net, signers=[ALICE.public, BOB.public], witnesses=[WITNESS.public], quorum=1)
    net.deliver_all()
    ahead = sign_digest(BOB, digest_bytes(DOC), len(DOC), now=NOW + 3600, cosign=doc_id)
    witness = net.core(WITNESS)
    out = witness.control_received(
        BOB.public, encode_control(ControlKind.WITNESS_REQUEST, ahead), wall_now=NOW
    )
    assert not [a for a in out if isinstance(a, SendControl)]
    assert witness.counts == {"signed in the future": 1}
