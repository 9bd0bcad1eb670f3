"""What groups need from store-and-forward: control messages on the 1:1 sealed path, watched (group)
tags, shared envelopes stored on mailboxes, mailboxes holding GROUP envelopes for every member."""

from __future__ import annotations

from meshchat.store.messenger import ControlReceived, PublishEnvelope
from meshchat.store.storage import OutboxStatus
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
