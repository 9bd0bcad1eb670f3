"""What groups need from store-and-forward: control messages on the 1:1 sealed path, watched (group)
tags, shared envelopes stored on mailboxes, mailboxes holding GROUP envelopes for every member."""

from __future__ import annotations

import hashlib

import pytest

from meshchat.store.mailbox import owned_tags
from meshchat.store.messenger import (
    CallMailbox,
    ControlReceived,
    GroupEnvelopes,
    PublishEnvelope,
    StoreProblem,
)
from meshchat.store.protocol import (
    MAX_SYNC_TAGS,
    MailboxError,
    MailboxRequest,
    MailboxResponse,
    Synced,
    SyncRequest,
)
from meshchat.store.reconcile import Reconciler, decode_message, encode_message
from meshchat.store.shared import MAX_WATCHED_TAGS
from meshchat.store.storage import MemoryStorage, OutboxStatus, SeenEntry
from meshchat.wire import EnvelopeKind, message_id
from meshchat.wire.envelope import encode_fields
from tests.store_harness import Harness

# --- A. control messages ------------------------------------------------------------------------


def test_a_control_message_is_announced_not_stored_and_receipted_like_a_chat() -> None:
    h = Harness()
    h.add_mailbox()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    h.connect("alice")
    h.connect("bob")
    record, actions = alice.messenger.send(
        bob.identity.public, b"invite: op set", wall_now=h.now, control=True, ref="invite-1"
    )
    h.feed("alice", actions)
    h.settle()
    assert [(c.body, c.message_id, c.sender) for c in bob.controls] == [
        (b"invite: op set", record.message_id, alice.identity.public)
    ]
    assert 0 < bob.controls[0].sent_at_ms <= int(h.now * 1000)
    assert bob.received == []  # not a chat: nothing for the app's inbox
    assert bob.storage.inbox_after(0, 10) == []
    assert bob.storage.seen([record.message_id]) == set()  # the groups core is its dedup
    assert bob.messenger.statistics().controls == 1
    assert alice.messenger.status(record.message_id).status is OutboxStatus.DELIVERED  # type: ignore[union-attr]


def test_a_control_message_waits_on_a_mailbox_for_an_offline_recipient() -> None:
    h = Harness()
    h.add_mailbox()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    h.connect("alice")
    h.disconnect("bob")
    record, actions = alice.messenger.send(bob.identity.public, b"handout", wall_now=h.now, control=True)
    h.feed("alice", actions)
    h.settle()
    assert alice.messenger.status(record.message_id).status is OutboxStatus.STORED  # type: ignore[union-attr]
    h.connect("bob")
    h.settle()
    assert [c.body for c in bob.controls] == [b"handout"]
    h.advance(30)  # alice's quick syncs fetch the receipt bob stored for her
    assert alice.messenger.status(record.message_id).status is OutboxStatus.DELIVERED  # type: ignore[union-attr]


def test_every_copy_of_a_control_is_announced_and_re_receipted_per_interval() -> None:
    h = Harness()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    record, _ = alice.messenger.send(bob.identity.public, b"handout", wall_now=h.now, control=True)
    first = bob.messenger.receive([record.envelope], wall_now=h.now)
    kinds = [type(a).__name__ for a in first]
    assert kinds[0] == "ControlReceived"
    # The announcement precedes the receipt: a driver hands it on (and commits) before any receipt leaves.
    receipt_at = kinds.index("PublishEnvelope")
    assert kinds.index("ControlReceived") < receipt_at
    again = bob.messenger.receive([record.envelope], wall_now=h.now + 1)
    assert [type(a) for a in again if isinstance(a, ControlReceived)] == [ControlReceived]
    assert not any(isinstance(a, PublishEnvelope) for a in again)  # within RERECEIPT_INTERVAL: no receipt
    later = bob.messenger.receive([record.envelope], wall_now=h.now + 61)
    assert sum(isinstance(a, ControlReceived) for a in later) == 1
    assert sum(isinstance(a, PublishEnvelope) for a in later) == 1  # re-receipted after the interval
    assert bob.messenger.statistics().controls == 3
    assert "duplicate" not in bob.messenger.statistics().discarded


def test_the_receipt_for_a_control_moves_the_senders_outbox_to_delivered() -> None:
    h = Harness()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    record, _ = alice.messenger.send(bob.identity.public, b"handout", wall_now=h.now, control=True)
    receipts = [
        a.envelope
        for a in bob.messenger.receive([record.envelope], wall_now=h.now)
        if isinstance(a, PublishEnvelope)
    ]
    assert len(receipts) == 1
    alice.messenger.receive(receipts, wall_now=h.now)
    assert alice.messenger.status(record.message_id).status is OutboxStatus.DELIVERED  # type: ignore[union-attr]


def test_a_forged_or_altered_control_is_rejected_and_counted_like_a_chat() -> None:
    h = Harness()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    record, _ = alice.messenger.send(bob.identity.public, b"handout", wall_now=h.now, control=True)
    altered = bytearray(record.envelope)
    altered[-20] ^= 1  # inside the ciphertext
    actions = bob.messenger.receive([bytes(altered)], wall_now=h.now)
    assert actions == []
    assert bob.messenger.statistics().rejected == {"DecryptionFailed": 1}
    assert bob.messenger.statistics().controls == 0


# --- B. watched (group) tags --------------------------------------------------------------------


def group_envelope(tag: bytes, now: float, n: int, *, ttl: int = 3600) -> bytes:
    """A GROUP envelope as the groups core seals one (the store never opens it: random bytes inside)."""
    return encode_fields(
        kind=EnvelopeKind.GROUP,
        inbox_tag=tag,
        expiry=int(now) + ttl,
        ephemeral_key=bytes([n % 256]) * 32,
        nonce=n.to_bytes(24, "big"),
        ciphertext=b"group message %d" % n + bytes(16),
    )


def tag_of(n: int) -> bytes:
    return hashlib.blake2b(b"group tag %d" % n, digest_size=16).digest()


def test_a_gossiped_group_envelope_comes_out_unopened_and_duplicates_go_after_group_accepted() -> None:
    h = Harness()
    bob = h.add_user("bob")
    assert bob.messenger.watch_tags([tag_of(1), tag_of(2)], wall_now=h.now) == []  # no mailbox to sync
    one, two, other = (
        group_envelope(tag_of(1), h.now, 1),
        group_envelope(tag_of(2), h.now, 2),
        group_envelope(tag_of(3), h.now, 3),
    )
    actions = bob.messenger.receive([one, two, one, other], wall_now=h.now)
    assert actions == [GroupEnvelopes(envelopes=(one, two))]
    stats = bob.messenger.statistics()
    assert stats.rejected == {}  # not opened
    assert stats.discarded == {"duplicate": 1, "not ours": 1}  # only the unwatched one is not ours
    # Not accepted yet: another copy comes out again (the groups core is its judge until it accepts).
    assert bob.messenger.receive([one], wall_now=h.now) == [GroupEnvelopes(envelopes=(one,))]
    entry = SeenEntry(message_id=message_id(one), inbox_tag=tag_of(1), expiry=int(h.now) + 3600)
    assert bob.messenger.group_accepted([entry, entry], wall_now=h.now) == []
    assert bob.messenger.group_accepted([entry], wall_now=h.now) == []  # idempotent
    assert bob.messenger.receive([one, two], wall_now=h.now) == [GroupEnvelopes(envelopes=(two,))]
    assert bob.storage.seen_items([tag_of(1)]) == [(int(h.now) + 3600, message_id(one))]
    assert bob.messenger.statistics().discarded["duplicate"] == 2
    # Unwatched again: its envelopes are someone else's.
    bob.messenger.watch_tags([], wall_now=h.now)
    assert bob.messenger.receive([two], wall_now=h.now) == []


def test_group_accepted_reports_a_storage_failure_instead_of_raising() -> None:
    h = Harness()
    bob = h.add_user("bob", storage=MemoryStorage())
    entry = SeenEntry(message_id=bytes(32), inbox_tag=tag_of(1), expiry=int(h.now) + 60)
    bob.storage.fail_next = 1  # type: ignore[attr-defined]
    [problem] = bob.messenger.group_accepted([entry], wall_now=h.now)
    assert isinstance(problem, StoreProblem)
    assert bob.storage.seen([entry.message_id]) == set()


def test_watched_tags_are_bounded_and_checked() -> None:
    h = Harness()
    bob = h.add_user("bob")
    with pytest.raises(ValueError, match="2400"):
        bob.messenger.watch_tags([tag_of(i) for i in range(MAX_WATCHED_TAGS + 1)], wall_now=h.now)
    with pytest.raises(ValueError, match="16 bytes"):
        bob.messenger.watch_tags([b"short"], wall_now=h.now)
    bob.messenger.watch_tags([tag_of(i) for i in range(MAX_WATCHED_TAGS)], wall_now=h.now)


def answer_foreign_syncs_empty(
    peer: str, request: MailboxRequest, response: MailboxResponse
) -> MailboxResponse:
    """Until mailboxes serve group tags: an honest empty answer for a sync of tags not the requester's."""
    if isinstance(request, SyncRequest) and isinstance(response, MailboxError):
        reply = Reconciler([]).respond(decode_message(request.reconcile))
        return Synced(reconcile=encode_message(reply), generation=0, held=0)
    return response


def test_each_sync_also_reconciles_the_watched_tags_in_sessions_of_at_most_max_sync_tags() -> None:
    h = Harness()
    box = h.add_mailbox()
    h.tamper = answer_foreign_syncs_empty
    bob = h.add_user("bob")
    calls: list[CallMailbox] = []
    watched = [tag_of(i) for i in range(2 * MAX_SYNC_TAGS + 5)]
    h.connect("bob")
    h.settle()
    before = bob.messenger.statistics().syncs
    assert before == 1
    actions = bob.messenger.watch_tags(watched, wall_now=h.now)
    calls = [a for a in actions if isinstance(a, CallMailbox)]
    assert [c.peer for c in calls] == [box]  # new tags: a sync at once
    seen: list[tuple[bytes, ...]] = []
    real = h._call

    def spy(user, peer, request):  # type: ignore[no-untyped-def]
        if isinstance(request, SyncRequest):
            seen.append(request.tags)
        return real(user, peer, request)

    h._call = spy  # type: ignore[method-assign]
    h.feed("bob", actions)
    h.settle()
    assert seen[0] == owned_tags(bob.identity.public, h.now)  # our own first
    assert seen[1:] == [
        tuple(sorted(watched))[i : i + MAX_SYNC_TAGS] for i in range(0, len(watched), MAX_SYNC_TAGS)
    ]
    assert all(len(tags) <= MAX_SYNC_TAGS for tags in seen)
    assert bob.messenger.statistics().syncs == before + 1  # one round, four sessions
    assert bob.messenger.statistics().penalties == 0
