"""``CosignCore``: co-signing rounds (M of N signers, timestamp witnesses), sans-IO.

A proposer sends a proposal (the document's hash, the signers, the threshold M, witnesses and their
quorum k, an optional deadline) to every participant; each signer's co-signature (a detached
signature naming the round) and any revocation of it go to every participant; the state any of them
sees is the same function of what it received: **complete** when at least M signatures are valid and
not revoked, **expired** when not complete and past the deadline, else **open**.

Witnesses bound *when* a signature was made without a timestamp authority: a signer asks each witness
(``WITNESS_REQUEST``), a witness that counts the signer among its contacts answers within its rate
with a stamp "seen at T", and the signer forwards stamps to every participant. The quorum-th earliest
stamp is the signature's "signed no later than". Nothing bounds it from below beyond the signer's own
``iat``: a signer can always claim an earlier time, never a later stamp.

The core never does network I/O and never reads the clock: ``wall_now`` is passed in, it returns
``SendControl`` actions and events, and it writes its ``DocumentStore`` within the call that changes
state, in one transaction per call, so a control is durable (whole) when ``control_received``
returns and the node may mark it handled.

Hostile peers: ``control_received`` never raises for bad input. Every refusal is counted by reason in
``counts`` (``Refusal`` values; "duplicate" and "waiting" are counted too, though not refusals) and
returns ``[]``. It checks every JWS signature, that a signature
names this round and its digest, that only listed signers sign and only a signature's own signer
revokes it, that a proposal comes from its proposer and a witness request from the signer, and
bounds what a peer can make it keep (``MAX_DOCUMENTS``, ``MAX_ORPHANS``, one signature and one
revocation per signer, ``quorum + STAMP_SLACK`` stamps per signature, ``WITNESS_ANSWERS_PER_HOUR``).
A signer who sends two different signatures keeps its first one at each participant (an honest core
re-sends the same one); revocations and stamps that arrive before what they name wait as orphans
and are replayed when it arrives, so any order of delivery ends in the same view.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Final

from meshchat.documents.bundle import BUNDLE_VERSION
from meshchat.documents.events import (
    Action,
    DocumentCompleted,
    DocumentProposed,
    DocumentRevoked,
    DocumentSigned,
    DocumentStamped,
    DocumentState,
    DocumentView,
    Refusal,
    SendControl,
)
from meshchat.documents.payload import (
    MAX_INLINE,
    ControlKind,
    DocumentControl,
    Proposal,
    Revocation,
    Stamp,
    decode_control,
    encode_control,
    parse_proposal,
    parse_revocation,
    parse_stamp,
    sign_proposal,
    sign_revocation,
    sign_stamp,
    signature_hash,
)
from meshchat.documents.signature import (
    SignatureInfo,
    digest_bytes,
    parse_signature,
    sign_digest,
    signature_info,
)
from meshchat.documents.sqlite import DocumentStore
from meshchat.errors import (
    BadSignature,
    DecodeError,
    DocumentExpired,
    DocumentMismatch,
    NotASigner,
    NotSigned,
    SignatureRevoked,
    UnknownDocument,
    UnsupportedVersion,
)
from meshchat.identity import Identity, PublicIdentity
from meshchat.wire.jose import did_key, parse_jws

__all__ = [
    "CLOCK_SKEW",
    "MAX_DOCUMENTS",
    "MAX_OPEN_PER_PROPOSER",
    "MAX_ORPHANS",
    "MAX_ORPHANS_PER_SENDER",
    "STAMP_SLACK",
    "WITNESS_ANSWERS_PER_HOUR",
    "CosignCore",
    "Refusal",
]

#: Open rounds kept from one proposer (other than this profile): one contact cannot fill the store
#: with rounds that never finish.
MAX_OPEN_PER_PROPOSER: Final = 100
#: Rounds kept; past it the oldest finished (complete or expired) one goes first, and a peer's new
#: proposal is refused when none is finished (a flood cannot push out rounds still being signed).
MAX_DOCUMENTS: Final = 10_000
#: Controls kept while waiting for the proposal or signature they name (out-of-order delivery).
MAX_ORPHANS: Final = 1_000
#: ... of which from one sender: one peer cannot fill the room others' late controls need.
MAX_ORPHANS_PER_SENDER: Final = 100
#: Stamps kept per signature beyond the quorum (the earliest ones): a spare for a witness whose stamp
#: a reader may distrust; more witnesses add nothing to the bound.
STAMP_SLACK: Final = 2
#: Stamps a witness gives one requester per hour: a witness signs for others, so a contact cannot make
#: it sign without end.
WITNESS_ANSWERS_PER_HOUR: Final = 60
#: How far ahead of a witness's clock a signature's own time may be and still be stamped: a stamp
#: "seen at T" of a signature claiming a later time would bound nothing.
CLOCK_SKEW: Final = 300.0
#: How long a witness remembers a stamp it gave (to answer a repeated request with the same stamp).
_GIVEN_MEMORY: Final = 7 * 86_400.0
_HOUR: Final = 3_600.0


def _always(_: PublicIdentity) -> bool:
    return True


class CosignCore:
    """See the module docstring."""

    def __init__(
        self,
        identity: Identity,
        store: DocumentStore,
        *,
        is_contact: Callable[[PublicIdentity], bool] = _always,
    ) -> None:
        self.identity = identity
        self.store = store
        self.is_contact = is_contact
        #: Refusals (and duplicates, waits) by ``Refusal`` value.
        self.counts: dict[str, int] = {}
        self._me = identity.public
        self._me_did = did_key(identity.public)
        #: Parsed proposals by id (a cache of the store; bounded like it).
        self._proposals: dict[str, Proposal] = {}
        #: The latest ``wall_now`` seen: what ``view`` judges expiry by unless given a time.
        self._now = 0.0

    # --- the local user's calls ----------------------------------------------------------------------

    def propose(
        self,
        content: bytes | None,
        *,
        digest: str,
        size: int,
        name: str,
        signers: Sequence[PublicIdentity],
        threshold: int,
        witnesses: Sequence[PublicIdentity] = (),
        quorum: int = 0,
        expires: float | None = None,
        wall_now: float,
    ) -> tuple[Proposal, list[Action]]:
        """Start a round; the proposal and PROPOSE controls to every signer and witness but oneself.

        ``content`` (the document, or None when it travels as a file) must match ``digest`` and
        ``size`` (``DocumentMismatch``); it goes inline when at most ``MAX_INLINE`` bytes. ``ValueError``
        for a round a reader would refuse (threshold out of range, repeated signers, too many).
        """
        self._now = max(self._now, wall_now)
        if content is not None and (digest_bytes(content) != digest or len(content) != size):
            raise DocumentMismatch(signed=digest, actual=digest_bytes(content))
        compact = sign_proposal(
            self.identity,
            digest=digest,
            size=size,
            name=name,
            signers=tuple(signers),
            threshold=threshold,
            witnesses=tuple(witnesses),
            quorum=quorum,
            expires=expires,
            now=wall_now,
        )
        proposal = parse_proposal(compact, verify=False)
        inline = content if content is not None and len(content) <= MAX_INLINE else None
        with self.store.batch("propose"):
            if self.store.count_documents() >= MAX_DOCUMENTS:
                self._evict_finished(wall_now)  # the user's own round is kept even when none is finished
            self._add_document(proposal, inline, wall_now)
        self._proposals[proposal.doc_id] = proposal
        body = encode_control(ControlKind.PROPOSE, compact, b"" if inline is None else inline)
        actions: list[Action] = [
            SendControl(p, body) for p in _unique((*proposal.signers, *proposal.witnesses)) if p != self._me
        ]
        actions.append(DocumentProposed(self.view(proposal.doc_id)))
        return proposal, actions

    def sign(self, doc_id: str, *, wall_now: float, content_digest: str | None = None) -> list[Action]:
        """Co-sign round ``doc_id``: SIGNATURE to every participant, WITNESS_REQUEST to each witness.

        Signing again re-sends the same signature. ``UnknownDocument``, ``NotASigner``,
        ``DocumentMismatch`` (``content_digest`` of the file at hand differs from the proposal's),
        ``SignatureRevoked`` (this profile revoked its signature), ``DocumentExpired``.
        """
        self._now = max(self._now, wall_now)
        proposal = self._proposal(doc_id)
        if self._me not in proposal.signers:
            raise NotASigner(document=doc_id, key=self._me_did)
        if content_digest is not None and content_digest != proposal.digest:
            raise DocumentMismatch(signed=proposal.digest, actual=content_digest)
        revocations = {signer: compact for signer, _, compact in self.store.revocations(doc_id)}
        if self._me_did in revocations:
            at = parse_revocation(revocations[self._me_did], verify=False).revoked_at
            raise SignatureRevoked(signer=self._me_did, at=at)
        mine = {signer: compact for signer, _, compact in self.store.signatures(doc_id)}.get(self._me_did)
        if mine is not None:
            return self._signature_sends(proposal, mine)
        if proposal.expires is not None and int(wall_now) > proposal.expires:
            raise DocumentExpired(document=doc_id, expired=proposal.expires, now=wall_now)
        compact = sign_digest(
            self.identity,
            proposal.digest,
            proposal.size,
            now=wall_now,
            name=proposal.name or None,
            cosign=doc_id,
        )
        with self.store.batch("sign"):
            events = self._accept_signature(proposal, signature_info(parse_jws(compact, what="signature")))
        return [*self._signature_sends(proposal, compact), *events]

    def revoke(self, doc_id: str, *, reason: str = "", wall_now: float) -> list[Action]:
        """Withdraw this profile's signature of ``doc_id``: REVOCATION to every participant.

        Revoking again re-sends the same revocation. ``UnknownDocument``, ``NotASigner``, ``NotSigned``;
        ``ValueError`` for a reason over ``MAX_PURPOSE`` characters.
        """
        self._now = max(self._now, wall_now)
        proposal = self._proposal(doc_id)
        if self._me not in proposal.signers:
            raise NotASigner(document=doc_id, key=self._me_did)
        existing = {signer: compact for signer, _, compact in self.store.revocations(doc_id)}.get(
            self._me_did
        )
        if existing is None:
            mine = {signer: compact for signer, _, compact in self.store.signatures(doc_id)}.get(self._me_did)
            if mine is None:
                raise NotSigned(document=doc_id, key=self._me_did)
            existing = sign_revocation(
                self.identity, doc_id=doc_id, signature=mine, reason=reason, now=wall_now
            )
            with self.store.batch("revoke"):
                events = self._accept_revocation(proposal, parse_revocation(existing, verify=False))
        else:
            events = []
        body = encode_control(ControlKind.REVOCATION, existing)
        return [*(SendControl(p, body) for p in self._participants(proposal)), *events]

    # --- controls from peers -------------------------------------------------------------------------

    def control_received(self, sender: PublicIdentity, body: bytes, *, wall_now: float) -> list[Action]:
        """Handle a document control from ``sender``; never raises for bad input (see ``counts``)."""
        self._now = max(self._now, wall_now)
        try:
            control = decode_control(body)
        except DecodeError:
            return self._refuse(Refusal.MALFORMED)
        with self.store.batch("take a document control"):  # all of its effects are written, or none
            return self._handle(sender, control, wall_now)

    def _handle(self, sender: PublicIdentity, control: DocumentControl, wall_now: float) -> list[Action]:
        try:
            match control.kind:
                case ControlKind.PROPOSE:
                    return self._on_propose(sender, control, wall_now)
                case ControlKind.SIGNATURE:
                    return self._on_signature(sender, control, wall_now)
                case ControlKind.REVOCATION:
                    return self._on_revocation(sender, control, wall_now)
                case ControlKind.WITNESS_REQUEST:
                    return self._on_witness_request(sender, control, wall_now)
                case ControlKind.STAMP:
                    return self._on_stamp(sender, control, wall_now)
        except UnsupportedVersion:
            return self._refuse(Refusal.UNKNOWN_VERSION)
        except DecodeError:
            return self._refuse(Refusal.MALFORMED)
        except BadSignature:
            return self._refuse(Refusal.BAD_SIGNATURE)

    def _on_propose(self, sender: PublicIdentity, control: DocumentControl, wall_now: float) -> list[Action]:
        proposal = parse_proposal(control.jws)
        if sender != proposal.proposer:
            return self._refuse(Refusal.NOT_PROPOSER)
        if self._me not in proposal.signers and self._me not in proposal.witnesses:
            return self._refuse(Refusal.NOT_PARTICIPANT)
        content = control.content or None
        if content is None and proposal.size == 0:
            content = b""
        if content is not None and (
            digest_bytes(content) != proposal.digest or len(content) != proposal.size
        ):
            return self._refuse(Refusal.CONTENT_MISMATCH)
        if self.store.document(proposal.doc_id) is not None:
            self._add_document(proposal, content, wall_now)  # fills in the bytes if they were missing
            # Nothing should wait for a stored round (a control is one transaction); cheap insurance.
            return self._refuse(Refusal.DUPLICATE) + self._replay(proposal.doc_id, wall_now)
        if self.store.count_open(did_key(proposal.proposer), wall_now) >= MAX_OPEN_PER_PROPOSER:
            return self._refuse(Refusal.TOO_MANY_DOCUMENTS)
        if self.store.count_documents() >= MAX_DOCUMENTS and not self._evict_finished(wall_now):
            return self._refuse(Refusal.TOO_MANY_DOCUMENTS)
        self._add_document(proposal, content, wall_now)
        actions: list[Action] = [DocumentProposed(self.view(proposal.doc_id))]
        return actions + self._replay(proposal.doc_id, wall_now)

    def _on_signature(
        self, sender: PublicIdentity, control: DocumentControl, wall_now: float
    ) -> list[Action]:
        info = parse_signature(control.jws)  # anyone may forward it: the signer signed it
        if info.cosign is None:
            return self._refuse(Refusal.MALFORMED)
        proposal = self._known(info.cosign)
        if proposal is None:
            return self._wait(info.cosign, control, sender, wall_now)
        return self._accept_signature(proposal, info, wall_now=wall_now)

    def _on_revocation(
        self, sender: PublicIdentity, control: DocumentControl, wall_now: float
    ) -> list[Action]:
        revocation = parse_revocation(control.jws)
        proposal = self._known(revocation.doc_id)
        if proposal is None:
            return self._wait(revocation.doc_id, control, sender, wall_now)
        return self._accept_revocation(proposal, revocation)

    def _on_witness_request(
        self, sender: PublicIdentity, control: DocumentControl, wall_now: float
    ) -> list[Action]:
        info = parse_signature(control.jws)
        if info.cosign is None:
            return self._refuse(Refusal.MALFORMED)
        if sender != info.signer:
            return self._refuse(Refusal.NOT_REQUESTER)
        if not self.is_contact(sender):
            return self._refuse(Refusal.NOT_CONTACT)
        proposal = self._known(info.cosign)
        if proposal is None:
            return self._wait(info.cosign, control, sender, wall_now)
        if self._me not in proposal.witnesses:
            return self._refuse(Refusal.NOT_A_WITNESS)
        problem = self._signature_problem(proposal, info)
        if problem is not None:
            return self._refuse(problem)
        if info.signed_at > wall_now + CLOCK_SKEW:
            return self._refuse(Refusal.FUTURE)
        actions: list[Action] = list(self._accept_signature(proposal, info, wall_now=wall_now, quiet=True))
        hash_ = signature_hash(info.compact)
        if self.store.signature_by_hash(hash_) is None:
            return actions  # the signer's second signature: refused (counted) above, not stamped
        stamp = self.store.given_stamp(hash_)
        if stamp is None:
            if self.store.answers_since(sender.ed25519, wall_now - _HOUR) >= WITNESS_ANSWERS_PER_HOUR:
                return actions + self._refuse(Refusal.RATE)
            stamp = sign_stamp(self.identity, signature=info.compact, now=wall_now)
            self.store.add_given_stamp(
                hash_,
                requester=sender.ed25519,
                compact=stamp,
                at=wall_now,
                forget_before=wall_now - _GIVEN_MEMORY,
            )
            actions += self._accept_stamp(parse_stamp(stamp, verify=False), forward=False)
        actions.append(SendControl(sender, encode_control(ControlKind.STAMP, stamp)))
        return actions

    def _on_stamp(self, sender: PublicIdentity, control: DocumentControl, wall_now: float) -> list[Action]:
        stamp = parse_stamp(control.jws)  # from the witness or forwarded by the signer: the witness signed it
        if self.store.signature_by_hash(stamp.signature) is None:
            return self._wait(stamp.signature, control, sender, wall_now)
        return self._accept_stamp(stamp, forward=True)

    # --- applying what was checked -------------------------------------------------------------------

    def _signature_problem(self, proposal: Proposal, info: SignatureInfo) -> Refusal | None:
        if info.cosign != proposal.doc_id or info.digest != proposal.digest or info.size != proposal.size:
            return Refusal.WRONG_DOCUMENT
        if info.signer not in proposal.signers:
            return Refusal.NOT_A_SIGNER
        if proposal.expires is not None and info.signed_at > proposal.expires:
            return Refusal.AFTER_DEADLINE
        return None

    def _accept_signature(
        self, proposal: Proposal, info: SignatureInfo, *, wall_now: float | None = None, quiet: bool = False
    ) -> list[Action]:
        problem = self._signature_problem(proposal, info)
        if problem is not None:
            return self._refuse(problem)
        before = self._complete(proposal.doc_id)
        hash_ = signature_hash(info.compact)
        if not self.store.add_signature(proposal.doc_id, info.signer_did, hash=hash_, compact=info.compact):
            held = {s: h for s, h, _ in self.store.signatures(proposal.doc_id)}.get(info.signer_did)
            if held != hash_:
                return self._refuse(Refusal.SECOND_SIGNATURE)
            refused = [] if quiet else self._refuse(Refusal.DUPLICATE)
            # As for a repeated proposal: nothing should wait for a stored signature; cheap insurance.
            return refused + ([] if wall_now is None else self._replay(hash_, wall_now))
        actions: list[Action] = [DocumentSigned(proposal.doc_id, info.signer)]
        revoked = {s: h for s, h, _ in self.store.revocations(proposal.doc_id)}.get(info.signer_did)
        if revoked == hash_:
            actions.append(DocumentRevoked(proposal.doc_id, info.signer))
        actions += self._state_events(proposal.doc_id, before)
        if wall_now is not None:
            actions += self._replay(hash_, wall_now)
        return actions

    def _accept_revocation(self, proposal: Proposal, revocation: Revocation) -> list[Action]:
        if revocation.doc_id != proposal.doc_id:
            return self._refuse(Refusal.WRONG_DOCUMENT)
        if revocation.signer not in proposal.signers:
            return self._refuse(Refusal.NOT_A_SIGNER)
        before = self._complete(proposal.doc_id)
        stored = self.store.add_revocation(
            proposal.doc_id, revocation.signer_did, hash=revocation.signature, compact=revocation.compact
        )
        if not stored:
            held = {s: c for s, _, c in self.store.revocations(proposal.doc_id)}.get(revocation.signer_did)
            return self._refuse(
                Refusal.DUPLICATE if held == revocation.compact else Refusal.SECOND_REVOCATION
            )
        signed = {s: h for s, h, _ in self.store.signatures(proposal.doc_id)}.get(revocation.signer_did)
        if signed != revocation.signature:
            return []  # names a signature not (yet) seen here; it applies if that one arrives
        return [
            DocumentRevoked(proposal.doc_id, revocation.signer),
            *self._state_events(proposal.doc_id, before),
        ]

    def _accept_stamp(self, stamp: Stamp, *, forward: bool) -> list[Action]:
        found = self.store.signature_by_hash(stamp.signature)
        assert found is not None  # callers checked
        doc_id, signer_did, _ = found
        proposal = self._proposal(doc_id)
        if stamp.witness not in proposal.witnesses:
            return self._refuse(Refusal.NOT_A_WITNESS)
        keep = proposal.quorum + STAMP_SLACK
        added = self.store.add_stamp(
            stamp.signature, stamp.witness_did, seen_at=stamp.seen_at, compact=stamp.compact, keep=keep
        )
        if not added:
            held = {w: c for w, _, c in self.store.stamps(stamp.signature)}.get(stamp.witness_did)
            return self._refuse(Refusal.DUPLICATE if held == stamp.compact else Refusal.EXTRA_STAMP)
        signer = next(s for s in proposal.signers if did_key(s) == signer_did)
        actions: list[Action] = [DocumentStamped(doc_id, signer, stamp.witness)]
        if forward and signer_did == self._me_did:  # the requester forwards to every participant
            body = encode_control(ControlKind.STAMP, stamp.compact)
            actions += [SendControl(p, body) for p in self._participants(proposal) if p != stamp.witness]
        return actions

    def _replay(self, key: str, wall_now: float) -> list[Action]:
        actions: list[Action] = []
        for orphan in self.store.take_orphans(key):
            control = DocumentControl(kind=ControlKind(orphan.kind), jws=orphan.jws)
            actions += self._handle(PublicIdentity.from_bytes(orphan.sender), control, wall_now)
        return actions

    def _wait(
        self, key: str, control: DocumentControl, sender: PublicIdentity, wall_now: float
    ) -> list[Action]:
        kept = self.store.add_orphan(
            key,
            kind=int(control.kind),
            jws=control.jws,
            sender=sender.ed25519,
            received=wall_now,
            limit=MAX_ORPHANS,
            per_sender=MAX_ORPHANS_PER_SENDER,
        )
        if kept is None:
            return self._refuse(Refusal.DUPLICATE)
        return self._refuse(Refusal.WAITING if kept else Refusal.ORPHANS_FULL)

    def _refuse(self, reason: Refusal) -> list[Action]:
        self.counts[reason.value] = self.counts.get(reason.value, 0) + 1
        return []

    # --- state ---------------------------------------------------------------------------------------

    def _complete(self, doc_id: str) -> bool:
        return self.view(doc_id).state is DocumentState.COMPLETE

    def _state_events(self, doc_id: str, before: bool) -> list[Action]:
        view = self.view(doc_id)
        self.store.set_finished(doc_id, view.state is not DocumentState.OPEN)
        if view.state is DocumentState.COMPLETE and not before:
            return [DocumentCompleted(doc_id)]
        return []

    def _add_document(self, proposal: Proposal, content: bytes | None, wall_now: float) -> None:
        self.store.add_document(
            proposal.doc_id,
            proposal.compact,
            proposer=did_key(proposal.proposer),
            expires=proposal.expires,
            content=content,
            received=wall_now,
        )
        self._proposals[proposal.doc_id] = proposal

    def _evict_finished(self, wall_now: float) -> bool:
        doc_id = self.store.oldest_finished(wall_now)
        if doc_id is None:
            return False
        self.store.remove_document(doc_id)
        self._proposals.pop(doc_id, None)
        return True

    def _known(self, doc_id: str) -> Proposal | None:
        try:
            return self._proposal(doc_id)
        except UnknownDocument:
            return None

    def _proposal(self, doc_id: str) -> Proposal:
        proposal = self._proposals.get(doc_id)
        if proposal is None:
            record = self.store.document(doc_id)
            if record is None:
                raise UnknownDocument(doc_id)
            proposal = parse_proposal(record.proposal, verify=False)  # verified before it was stored
            if len(self._proposals) >= MAX_DOCUMENTS:
                self._proposals.clear()
            self._proposals[doc_id] = proposal
        return proposal

    def _participants(self, proposal: Proposal) -> list[PublicIdentity]:
        """Proposer and signers but oneself (where signatures, revocations and stamps go)."""
        return [p for p in _unique((proposal.proposer, *proposal.signers)) if p != self._me]

    def _signature_sends(self, proposal: Proposal, compact: str) -> list[Action]:
        body = encode_control(ControlKind.SIGNATURE, compact)
        actions: list[Action] = [SendControl(p, body) for p in self._participants(proposal)]
        if proposal.quorum > 0:
            request = encode_control(ControlKind.WITNESS_REQUEST, compact)
            actions += [SendControl(w, request) for w in proposal.witnesses if w != self._me]
        return actions

    # --- reading -------------------------------------------------------------------------------------

    def view(self, doc_id: str, *, wall_now: float | None = None) -> DocumentView:
        """What this profile knows about round ``doc_id`` (``UnknownDocument``); expiry is judged at
        ``wall_now``, or at the latest time the core was given."""
        proposal = self._proposal(doc_id)
        record = self.store.document(doc_id)
        if record is None:
            raise UnknownDocument(doc_id)
        signatures = {s: (h, c) for s, h, c in self.store.signatures(doc_id)}
        revocations = {s: (h, c) for s, h, c in self.store.revocations(doc_id)}
        valid: list[SignatureInfo] = []
        revoked: list[tuple[PublicIdentity, float]] = []
        pending: list[PublicIdentity] = []
        stamps: dict[str, tuple[float, ...]] = {}
        signed_by: dict[str, float] = {}
        for signer in proposal.signers:
            did = did_key(signer)
            if did not in signatures:
                pending.append(signer)
                continue
            hash_, compact = signatures[did]
            if did in revocations and revocations[did][0] == hash_:
                revoked.append((signer, parse_revocation(revocations[did][1], verify=False).revoked_at))
                pending.append(signer)
                continue
            valid.append(signature_info(parse_jws(compact, what="signature")))
            times = tuple(seen for _, seen, _ in self.store.stamps(hash_))
            if times:
                stamps[did] = times
            if 0 < proposal.quorum <= len(times):
                signed_by[did] = times[proposal.quorum - 1]
        now = self._now if wall_now is None else wall_now
        if len(valid) >= proposal.threshold:
            state = DocumentState.COMPLETE
        elif proposal.expires is not None and now > proposal.expires:
            state = DocumentState.EXPIRED
        else:
            state = DocumentState.OPEN
        return DocumentView(
            proposal=proposal,
            state=state,
            signatures=tuple(valid),
            revoked=tuple(revoked),
            pending=tuple(pending),
            stamps=stamps,
            signed_by=signed_by,
            has_content=record.content is not None,
            signed_by_me=any(s.signer == self._me for s in valid),
        )

    def documents(self, *, wall_now: float | None = None) -> list[DocumentView]:
        """Every round kept, the most recently stored first (expiry judged as in ``view``)."""
        return [self.view(doc_id, wall_now=wall_now) for doc_id in self.store.document_ids()]

    def content(self, doc_id: str) -> bytes | None:
        """The document's bytes when they came inline (``UnknownDocument``)."""
        record = self.store.document(doc_id)
        if record is None:
            raise UnknownDocument(doc_id)
        return record.content

    def bundle(self, doc_id: str) -> str:
        """Everything needed to check round ``doc_id`` offline (``verify_bundle``), as JSON text:
        ``{"v": 1, "proposal": jws, "signatures": [...], "revocations": [...], "stamps": [...]}``."""
        proposal = self._proposal(doc_id)
        signatures = self.store.signatures(doc_id)
        hashes = {h for _, h, _ in signatures}
        bundle = {
            "v": BUNDLE_VERSION,
            "proposal": proposal.compact,
            "signatures": [c for _, _, c in signatures],
            "revocations": [c for _, h, c in self.store.revocations(doc_id) if h in hashes],
            "stamps": [c for _, h, _ in signatures for _, _, c in self.store.stamps(h)],
        }
        return json.dumps(bundle, indent=1) + "\n"


def _unique(keys: Sequence[PublicIdentity]) -> list[PublicIdentity]:
    return list(dict.fromkeys(keys))
