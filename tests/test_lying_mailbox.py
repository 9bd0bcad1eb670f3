"""A mailbox that lies costs only itself (issue 12, item 1): nothing it answers raises out of the
``Messenger``; each bad item is counted by reason, the mailbox is set aside for ``MAILBOX_PENALTY``,
the good envelopes of the same sync are accepted, and the messenger goes on."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshchat.crypto import epoch_of, inbox_tag
from meshchat.identity import Identity
from meshchat.store.messenger import MAILBOX_PENALTY, CallMailbox, StoreConfig
from meshchat.store.protocol import (
    Deleted,
    ErrorCode,
    Fetched,
    FetchRequest,
    MailboxError,
    MailboxRequest,
    MailboxResponse,
    StoreCode,
    Stored,
    StoreRequest,
    StoreResult,
    Synced,
    SyncRequest,
    WithdrawRequest,
)
from meshchat.store.reasons import DiscardReason
from meshchat.store.reconcile import FINGERPRINT_SIZE, INFINITY, Mode, Range, ReconcileMessage, encode_message
from meshchat.store.storage import MailboxItem, MemoryStorage, OutboxStatus
from meshchat.store.sync import MAX_RECONCILE_ROUNDS
from meshchat.wire import message_id
from tests.store_harness import Harness, User

GOOD = [b"one", b"two", b"three"]


def bodies(user: User) -> list[bytes]:
    return sorted(m.message.body for m in user.received)


def stored_for_bob(h: Harness) -> tuple[str, User, User]:
    """One mailbox holding three messages from Alice for Bob, who is offline."""
    box = h.add_mailbox()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    h.connect("alice")
    h.disconnect("bob")
    for body in GOOD:
        h.send("alice", "bob", body)
    h.settle()
    h.disconnect("alice")
    return box, alice, bob


def plant(h: Harness, box: str, data: bytes, tag: bytes) -> None:
    """Put ``data`` into the mailbox's storage under ``tag`` (a mailbox whose disk lies)."""
    storage = h.mailboxes[box]._storage
    assert isinstance(storage, MemoryStorage)
    item = MailboxItem(
        message_id=message_id(data),
        inbox_tag=tag,
        expiry=int(h.now) + 3600,
        envelope=data,
        from_peer="someone",
        size=len(data),
    )
    storage.mailbox_put([item])


def a_valid_envelope_for_bob(h: Harness) -> bytes:
    alice = h.users["alice"]
    record, _ = alice.messenger.send(h.users["bob"].identity.public, b"spare", wall_now=h.now)
    return record.envelope


def bad_item(form: str, h: Harness) -> tuple[bytes, DiscardReason]:
    envelope = a_valid_envelope_for_bob(h)
    match form:
        case "empty":
            return b"", DiscardReason.FETCHED_MALFORMED
        case "trailing bytes":
            return envelope + b"\x00", DiscardReason.FETCHED_MALFORMED
        case "wrong map":
            return envelope[:1] + msgpack.packb({1: 2}), DiscardReason.FETCHED_MALFORMED
        case "another tag":
            carol = Identity(b"\x07" * 32).public
            record, _ = h.users["alice"].messenger.send(carol, b"for carol", wall_now=h.now)
            return record.envelope, DiscardReason.FETCHED_WRONG_TAG
    raise AssertionError(form)


@pytest.mark.parametrize("form", ["empty", "trailing bytes", "wrong map", "another tag"])
def test_a_fetched_item_that_is_not_an_envelope_for_us_costs_only_the_mailbox(form: str) -> None:
    h = Harness()
    box, _alice, bob = stored_for_bob(h)
    data, reason = bad_item(form, h)
    plant(h, box, data, inbox_tag(bob.identity.public, epoch_of(h.now)))
    h.connect("bob")
    h.settle()  # raised DecodeError out of mailbox_replied before the fix (or delivered silently)
    stats = bob.messenger.statistics()
    assert stats.discarded[reason] == 1
    assert stats.penalties == 1
    assert bodies(bob) == sorted(GOOD)  # the good envelopes of the same fetch are in
    assert h.mailboxes[box].statistics().deleted == 0  # the sync was abandoned: no delete
    assert bob.messenger.next_deadline() == pytest.approx(h.now + MAILBOX_PENALTY, abs=61)
    # The messenger goes on: by gossip meanwhile, and with the mailbox again after the penalty.
    h.connect("alice")
    h.send("alice", "bob", b"later")
    h.settle()
    assert b"later" in bodies(bob)
    h.advance(MAILBOX_PENALTY + 1)
    assert bob.messenger.statistics().penalties == 2  # synced again, and the same lie costs again
    assert bodies(bob) == sorted([*GOOD, b"later", b"spare"])  # Alice retried her spare one too


def tamper_with(h: Harness, change: Callable[[MailboxRequest, MailboxResponse], MailboxResponse]) -> None:
    h.tamper = lambda _peer, request, response: change(request, response)


def test_unasked_envelopes_in_a_fetch_are_counted_and_penalised_and_the_asked_ones_accepted() -> None:
    h = Harness()
    _box, _alice, bob = stored_for_bob(h)
    extra = a_valid_envelope_for_bob(h)

    def add(request: MailboxRequest, response: MailboxResponse) -> MailboxResponse:
        if isinstance(response, Fetched):
            return Fetched(envelopes=(*response.envelopes, extra, extra))
        return response

    tamper_with(h, add)
    h.connect("bob")
    h.settle()
    assert bob.messenger.statistics().discarded[DiscardReason.UNASKED] == 2
    assert bob.messenger.statistics().penalties == 1
    assert bodies(bob) == sorted(GOOD)


@pytest.mark.parametrize("garbage", [b"", b"\x01garbage", msgpack.packb([1, 2, 3])])
def test_a_synced_with_garbage_abandons_the_sync_and_penalises(garbage: bytes) -> None:
    h = Harness()
    box, _alice, bob = stored_for_bob(h)

    def garble(request: MailboxRequest, response: MailboxResponse) -> MailboxResponse:
        if isinstance(response, Synced):
            return Synced(reconcile=garbage, generation=response.generation, held=response.held)
        return response

    tamper_with(h, garble)
    h.connect("bob")
    h.settle()
    stats = bob.messenger.statistics()
    assert stats.discarded[DiscardReason.BAD_RECONCILE] == 1 and stats.penalties == 1
    assert bob.received == []
    h.tamper = None  # the mailbox mends its ways: after the penalty Bob syncs from it again
    h.advance(MAILBOX_PENALTY + 1)
    assert bodies(bob) == sorted(GOOD)
    assert h.mailboxes[box].statistics().items == 1  # Bob's one receipt waits for Alice


def test_an_endless_reconciliation_is_cut_off() -> None:
    h = Harness()
    _box, _alice, bob = stored_for_bob(h)
    calls: list[MailboxRequest] = []
    never_matches = ReconcileMessage(
        ranges=(Range(upper=INFINITY, mode=Mode.FINGERPRINT, fingerprint=b"\x05" * FINGERPRINT_SIZE),)
    )

    def endless(request: MailboxRequest, response: MailboxResponse) -> MailboxResponse:
        if isinstance(request, SyncRequest):
            calls.append(request)
            return Synced(reconcile=encode_message(never_matches), generation=1, held=1)
        return response

    tamper_with(h, endless)
    h.connect("bob")
    h.settle()  # looped until the harness gave up before the fix
    stats = bob.messenger.statistics()
    assert stats.discarded[DiscardReason.ENDLESS_RECONCILE] == 1 and stats.penalties == 1
    assert len(calls) == MAX_RECONCILE_ROUNDS


def test_store_results_for_what_was_not_sent_or_left_out_penalise_and_move_nothing() -> None:
    h = Harness(config=StoreConfig(mailbox_copies=1))
    h.add_mailbox()
    alice, _bob = h.add_user("alice"), h.add_user("bob")
    h.connect("alice")
    h.disconnect("bob")
    other = h.send("alice", "bob", b"queued elsewhere")  # stored honestly
    h.settle()
    assert alice.messenger.status(other).status is OutboxStatus.STORED  # type: ignore[union-attr]

    def lie(request: MailboxRequest, response: MailboxResponse) -> MailboxResponse:
        if isinstance(request, StoreRequest) and isinstance(response, Stored):
            fake = StoreResult(message_id=b"\x09" * 32, code=StoreCode.STORED, detail="")
            return Stored(results=(fake,))  # the real result left out, an unknown id acknowledged
        return response

    tamper_with(h, lie)
    mid = h.send("alice", "bob", b"x")
    h.settle()
    stats = alice.messenger.statistics()
    assert stats.discarded[DiscardReason.STORED_UNASKED] == 1
    assert stats.discarded[DiscardReason.STORED_MISSING] == 1
    assert stats.penalties == 1
    assert alice.messenger.status(mid).status is not OutboxStatus.STORED  # type: ignore[union-attr]


def test_a_withdraw_answered_with_more_deletions_than_asked_is_a_lie() -> None:
    h = Harness()
    box = h.add_mailbox()
    alice = h.add_user("alice")
    h.connect("alice")
    h.settle()
    request = WithdrawRequest(message_ids=(b"\x01" * 32,))
    alice.messenger.mailbox_replied(box, request, Deleted(count=5), wall_now=h.now)
    stats = alice.messenger.statistics()
    assert stats.discarded[DiscardReason.DELETED_TOO_MANY] == 1 and stats.penalties == 1


def test_a_wrong_kind_of_answer_is_a_lie_and_an_error_answer_is_counted_by_code() -> None:
    h = Harness()
    box = h.add_mailbox()
    alice = h.add_user("alice")
    h.connect("alice")
    h.settle()
    request = StoreRequest(envelopes=())
    alice.messenger.mailbox_replied(box, request, Fetched(envelopes=(b"",)), wall_now=h.now)
    alice.messenger.mailbox_replied(
        box, request, MailboxError(code=ErrorCode.STORAGE_FAILED, detail="disk"), wall_now=h.now
    )
    stats = alice.messenger.statistics()
    assert stats.discarded[DiscardReason.WRONG_ANSWER] == 1 and stats.penalties == 1
    assert stats.discarded[DiscardReason.MAILBOX_ERROR] == 1
    assert stats.mailbox_errors == {ErrorCode.STORAGE_FAILED: 1}


def test_a_late_answer_to_an_abandoned_sync_is_ignored() -> None:
    h = Harness()
    box, _alice, bob = stored_for_bob(h)
    actions = bob.messenger.mailboxes_changed([box], wall_now=h.now)
    call = next(a for a in actions if hasattr(a, "request"))
    bob.messenger.mailbox_failed(box, call.request, "timed out", wall_now=h.now)  # type: ignore[union-attr]
    late = Synced(reconcile=b"\x01", generation=0, held=0)
    bob.messenger.mailbox_replied(box, call.request, late, wall_now=h.now)  # type: ignore[union-attr]
    stats = bob.messenger.statistics()
    assert stats.discarded[DiscardReason.STALE_REPLY] == 1 and stats.penalties == 0
    fetch = FetchRequest(message_ids=(b"\x02" * 32,))
    bob.messenger.mailbox_replied(box, fetch, Fetched(envelopes=(b"junk",)), wall_now=h.now)
    assert bob.messenger.statistics().discarded[DiscardReason.UNASKED] == 1


# --- whatever a mailbox answers, nothing raises (h11's fuzzing rule) ---------------------------------

ids = st.binary(min_size=32, max_size=32)
responses = st.one_of(
    st.builds(
        Stored,
        results=st.lists(
            st.builds(
                StoreResult, message_id=ids, code=st.sampled_from(StoreCode), detail=st.text(max_size=5)
            ),
            max_size=4,
        ).map(tuple),
    ),
    st.builds(
        Synced, reconcile=st.binary(max_size=80), generation=st.integers(0, 99), held=st.integers(0, 99)
    ),
    st.builds(Fetched, envelopes=st.lists(st.binary(max_size=120), max_size=4).map(tuple)),
    st.builds(Deleted, count=st.integers(0, 2000)),
    st.builds(MailboxError, code=st.sampled_from(ErrorCode), detail=st.text(max_size=5)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers=st.lists(st.tuples(st.integers(0, 50), st.none() | responses), min_size=1, max_size=12))
def test_no_answer_a_mailbox_gives_raises_out_of_the_messenger(
    answers: list[tuple[int, MailboxResponse | None]],
) -> None:
    """Each answer is the honest mailbox's (None) or anything else, to any request it was asked."""
    h = Harness(seed=4)
    box, _alice, bob = stored_for_bob(h)
    plant(h, box, b"", inbox_tag(bob.identity.public, epoch_of(h.now)))  # and one lie on its disk
    calls = [a for a in bob.messenger.mailboxes_changed([box], wall_now=h.now) if isinstance(a, CallMailbox)]
    requests: list[MailboxRequest] = [c.request for c in calls]
    for pick, lie in answers:
        request = requests[pick % len(requests)] if requests else StoreRequest(envelopes=())
        honest = h.mailboxes[box].handle(bob.identity.public.peer_id, request, wall_now=h.now)
        response = honest if lie is None else lie
        actions = bob.messenger.mailbox_replied(box, request, response, wall_now=h.now)
        requests += [a.request for a in actions if isinstance(a, CallMailbox)]
        h.now += 1
        bob.messenger.on_timer(wall_now=h.now)
    assert bob.messenger.statistics().received <= len(GOOD)
