"""Stateful tests of the mailbox side of the store cores (STYLE.md section 8; issue 12 "Tests the cores
still lack"): ``SyncSession`` against its state table, ``MailboxCore`` against its quotas and owners.
``tests/test_messenger_machine.py`` runs the ``Messenger`` itself."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshchat.crypto import epoch_of, inbox_tag, seal
from meshchat.errors import DecodeError, InvalidTransition
from meshchat.identity import Identity
from meshchat.store.mailbox import STRANGER_SHARE, MailboxCore, MailboxLimits, owned_tags
from meshchat.store.payload import Chat, encode_payload
from meshchat.store.protocol import (
    Deleted,
    DeleteRequest,
    ErrorCode,
    Fetched,
    FetchRequest,
    MailboxError,
    StoreCode,
    Stored,
    StoreRequest,
    Synced,
    SyncRequest,
    WithdrawRequest,
)
from meshchat.store.reconcile import Reconciler, decode_message, encode_message
from meshchat.store.storage import MemoryStorage
from meshchat.store.sync import SYNC_TRANSITIONS, SyncInput, SyncSession, SyncState
from meshchat.wire import EnvelopeKind, decode_envelope, message_id
from meshchat.wire.envelope import encode_fields

NOW = 1_800_000_000.0
ALICE, BOB = Identity(b"\x01" * 32), Identity(b"\x02" * 32)
#: Envelopes sealed once (sealing is the slow part): Alice to Bob, expiries a few seconds apart.
SEALED = [
    seal(ALICE, BOB.public, encode_payload(Chat(seq=i + 1, body=b"x")), wall_now=NOW + i // 3)
    for i in range(24)
]

# --- SyncSession -----------------------------------------------------------------------------------


class SyncMachine(RuleBasedStateMachine):
    """Feed a session its mailbox's real answers, garbage, and inputs in the wrong state: every pair
    ``SYNC_TRANSITIONS`` lacks raises ``InvalidTransition`` naming both and changes nothing."""

    @initialize(held=st.integers(0, len(SEALED)), seen=st.integers(0, len(SEALED)), batch=st.integers(1, 8))
    def start(self, held: int, seen: int, batch: int) -> None:
        self.core = MailboxCore(MemoryStorage())
        if held:
            self.core.handle(ALICE.public.peer_id, StoreRequest(envelopes=tuple(SEALED[:held])), wall_now=NOW)
        have = [(decode_envelope(e).expiry, message_id(e)) for e in SEALED[:seen]]
        self.session = SyncSession(owned_tags(BOB.public, NOW), have, fetch_batch=batch)
        self.request = self.session.take_request()
        self.accepted: list[bytes] = []
        self.pending_accept = False
        self.expected = [e for e in SEALED[:held] if e not in SEALED[:seen]]

    def _feed(self, event: SyncInput, call: object) -> None:
        before = self.session.state
        if (before, event) not in SYNC_TRANSITIONS:
            with pytest.raises(InvalidTransition) as caught:
                call()  # type: ignore[operator]
            assert before.name in str(caught.value) and event.value in str(caught.value)
            assert self.session.state is before
            return
        call()  # type: ignore[operator]
        assert self.session.state in SYNC_TRANSITIONS[before, event]

    @precondition(lambda self: self.request is not None and not self.pending_accept)
    @rule()
    def mailbox_answers(self) -> None:
        request = self.request
        assert request is not None
        answer = self.core.handle(BOB.public.peer_id, request, wall_now=NOW)
        match answer:
            case Synced():
                self._feed(SyncInput.SYNCED, lambda: self.session.synced(answer))
            case Fetched():
                assert isinstance(request, FetchRequest)

                def fetched() -> None:
                    got, problems = self.session.fetched(request, answer)
                    assert not problems
                    self.accepted.extend(got)
                    self.pending_accept = True

                self._feed(SyncInput.FETCHED, fetched)
            case Deleted():
                self._feed(SyncInput.DELETED, self.session.deleted)
        self.request = self.session.take_request()

    @precondition(lambda self: self.pending_accept)
    @rule()
    def stored(self) -> None:
        self._feed(SyncInput.ACCEPTED, self.session.accepted)
        self.pending_accept = False
        self.request = self.session.take_request()

    @rule(event=st.sampled_from(list(SyncInput)))
    def an_input_out_of_turn(self, event: SyncInput) -> None:
        """Inputs the state may not take raise; allowed ones are left to the rules above."""
        if (self.session.state, event) in SYNC_TRANSITIONS:
            return
        calls = {
            SyncInput.SYNCED: lambda: self.session.synced(Synced(reconcile=b"", generation=0, held=0)),
            SyncInput.FETCHED: lambda: self.session.fetched(
                FetchRequest(message_ids=()), Fetched(envelopes=())
            ),
            SyncInput.ACCEPTED: self.session.accepted,
            SyncInput.DELETED: self.session.deleted,
        }
        self._feed(event, calls[event])

    @precondition(lambda self: self.session.state is SyncState.RECONCILING and self.request is not None)
    @rule(garbage=st.binary(max_size=40))
    def garbage_reconcile(self, garbage: bytes) -> None:
        """A mailbox's garbage instead of its answer is not an exception: the session FAILED."""
        reply = Synced(reconcile=garbage, generation=0, held=0)
        self._feed(SyncInput.SYNCED, lambda: self.session.synced(reply))
        self.request = self.session.take_request()
        try:
            decode_message(garbage)
        except DecodeError:
            assert self.session.state is SyncState.FAILED

    @invariant()
    def finished_sessions_ask_nothing(self) -> None:
        if self.session.state in (SyncState.DONE, SyncState.FAILED):
            assert self.session.take_request() is None and self.request is None

    @invariant()
    def a_complete_sync_fetched_exactly_what_we_lacked_in_expiry_order(self) -> None:
        if self.session.state is SyncState.DONE:
            assert sorted(self.accepted) == sorted(self.expected)
            expiries = [decode_envelope(e).expiry for e in self.accepted]
            assert expiries == sorted(expiries)


SyncMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_sync_session_state_table = SyncMachine.TestCase


# --- MailboxCore -----------------------------------------------------------------------------------

LIMITS = MailboxLimits(per_tag_bytes=6_000, per_peer_bytes=5_000, total_bytes=16_000)
OWNER = Identity(b"\x10" * 32)
FRIEND = Identity(b"\x11" * 32)
STRANGERS = [Identity(bytes([0x20 + i]) * 32) for i in range(4)]
PEOPLE = [OWNER, FRIEND, *STRANGERS]


class MailboxMachine(RuleBasedStateMachine):
    """Stores from the owner, a contact and strangers; owners' syncs, fetches and deletes; anyone's
    attempts on others' tags; withdrawals; time passing. Quotas are never exceeded, only owners see
    their envelopes, and the counts add up."""

    @initialize(seed=st.integers(0, 2**32))
    def start(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = NOW
        self.storage = MemoryStorage()
        self.core = MailboxCore(self.storage, LIMITS, owner=OWNER.public)
        self.core.set_friends([FRIEND.public])
        self.sent: dict[bytes, tuple[str, bytes]] = {}  # id -> (storing peer, tag)

    def _tag(self, who: Identity) -> bytes:
        return inbox_tag(who.public, epoch_of(self.now))

    @rule(
        sender=st.sampled_from(PEOPLE),
        to=st.sampled_from(PEOPLE),
        count=st.integers(1, 4),
        size=st.integers(600, 2500),
    )
    def store(self, sender: Identity, to: Identity, count: int, size: int) -> None:
        envelopes = tuple(
            encode_fields(
                kind=EnvelopeKind.SEALED,
                inbox_tag=self._tag(to),
                expiry=int(self.now) + self.rng.randrange(60, 7200),
                ephemeral_key=self.rng.randbytes(32),
                nonce=self.rng.randbytes(24),
                ciphertext=self.rng.randbytes(size),
            )
            for _ in range(count)
        )
        answer = self.core.handle(sender.public.peer_id, StoreRequest(envelopes=envelopes), wall_now=self.now)
        assert isinstance(answer, Stored) and len(answer.results) == count
        for data, result in zip(envelopes, answer.results, strict=True):
            assert result.message_id == message_id(data)
            if result.code is StoreCode.STORED:
                self.sent[result.message_id] = (sender.public.peer_id, self._tag(to))

    @rule(sender=st.sampled_from(STRANGERS), to=st.sampled_from(STRANGERS))
    def strangers_flood(self, sender: Identity, to: Identity) -> None:
        """Fresh identities each fill their per-peer quota (the issue's attack)."""
        self.store(sender, to, 4, 2400)

    @rule(asker=st.sampled_from(PEOPLE), owner=st.sampled_from(PEOPLE))
    def fetch(self, asker: Identity, owner: Identity) -> None:
        ids = tuple(m for m, (_, tag) in self.sent.items() if tag == self._tag(owner))[:50]
        answer = self.core.handle(asker.public.peer_id, FetchRequest(message_ids=ids), wall_now=self.now)
        assert isinstance(answer, Fetched)
        mine = set(owned_tags(asker.public, self.now))
        assert all(decode_envelope(e).inbox_tag in mine for e in answer.envelopes)
        if asker is owner:
            held = {i.message_id for i in self.storage.mailbox_get(ids)}
            assert {message_id(e) for e in answer.envelopes} == held

    @rule(asker=st.sampled_from(PEOPLE), owner=st.sampled_from(PEOPLE))
    def sync_and_delete(self, asker: Identity, owner: Identity) -> None:
        tags = owned_tags(owner.public, self.now)
        sync = SyncRequest(tags=tags, reconcile=encode_message(Reconciler([]).initiate()))
        answer = self.core.handle(asker.public.peer_id, sync, wall_now=self.now)
        if asker is not owner:
            # Someone else's tags: only group envelopes are listed (none here: all are sealed).
            assert isinstance(answer, Synced) and answer.held == 0
            assert len(self.storage.mailbox_items(tags, kind=EnvelopeKind.GROUP)) == 0
            denied = self.core.handle(
                asker.public.peer_id, DeleteRequest(tags=tags, generation=10**9), wall_now=self.now
            )
            assert isinstance(denied, MailboxError) and denied.code is ErrorCode.NOT_YOUR_TAG
            return
        assert isinstance(answer, Synced)
        assert answer.held == len(self.storage.mailbox_items(tags))
        gone = self.core.handle(
            asker.public.peer_id, DeleteRequest(tags=tags, generation=answer.generation), wall_now=self.now
        )
        assert isinstance(gone, Deleted) and not self.storage.mailbox_items(tags)

    @rule(peer=st.sampled_from(PEOPLE))
    def withdraw(self, peer: Identity) -> None:
        ids = tuple(self.sent)[:20]
        answer = self.core.handle(peer.public.peer_id, WithdrawRequest(message_ids=ids), wall_now=self.now)
        assert isinstance(answer, Deleted)
        assert all(i.from_peer != peer.public.peer_id for i in self.storage.mailbox_get(ids))

    @rule(dt=st.floats(0, 4000))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.core.prune(wall_now=self.now)

    @invariant()
    def quotas_hold(self) -> None:
        items = self.storage.mailbox_all()
        by_tag: Counter[bytes] = Counter()
        by_peer: Counter[str] = Counter()
        for item in items:
            by_tag[item.inbox_tag] += item.size
            by_peer[item.from_peer] += item.size
        assert sum(by_tag.values()) <= LIMITS.total_bytes
        assert all(b <= LIMITS.per_tag_bytes for b in by_tag.values())
        assert all(b <= LIMITS.per_peer_bytes for b in by_peer.values())
        assert self.core.statistics().stranger_bytes <= LIMITS.total_bytes * STRANGER_SHARE
        trusted = {OWNER.public.peer_id, FRIEND.public.peer_id}
        from_strangers: Counter[bytes] = Counter()
        for item in items:
            if item.from_peer not in trusted:
                from_strangers[item.inbox_tag] += item.size
        assert all(b <= LIMITS.per_tag_bytes * STRANGER_SHARE for b in from_strangers.values())

    @invariant()
    def counts_add_up(self) -> None:
        stats = self.core.statistics()
        items = self.storage.mailbox_all()
        assert stats.items == len(items) and stats.bytes == sum(i.size for i in items)
        assert stats.stored - stats.deleted - stats.withdrawn - stats.expired == stats.items


MailboxMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_mailbox_core_quotas_and_owners = MailboxMachine.TestCase
