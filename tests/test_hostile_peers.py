"""Faults found by attacking the merged code from outside (issue 12, "these are samples"): each test
failed before its fix."""

from __future__ import annotations

from meshchat.crypto import MAX_BODY_SIZE
from meshchat.store.protocol import MAX_FRAME, Fetched, FetchRequest, encode_response
from tests.store_harness import Harness

#: A body that fills an envelope (the payload's own header takes the rest).
LARGE_BODY = MAX_BODY_SIZE - 200


def test_many_large_messages_waiting_in_a_mailbox_are_all_fetched() -> None:
    """30 near-limit messages (2 MB) wait for Bob. A fetch of 256 ids used to be answered with one
    2 MB frame: ``encode_response`` raised ``TooLarge`` inside the mailbox (a stream handler's
    traceback) and Bob could never fetch them. Now the mailbox answers what fits one frame and Bob asks
    again for the rest."""
    h = Harness()
    box = h.add_mailbox()
    _alice, bob = h.add_user("alice"), h.add_user("bob")
    h.connect("alice")
    h.disconnect("bob")
    for i in range(30):
        h.send("alice", "bob", bytes([i]) * LARGE_BODY)
    h.settle()
    assert h.mailboxes[box].statistics().items == 30
    h.disconnect("alice")
    h.connect("bob")
    h.settle()
    assert sorted(m.message.body[0] for m in bob.received) == list(range(30))
    assert h.mailboxes[box].statistics().deleted == 30  # the sync finished: nothing left behind
    assert bob.messenger.statistics().penalties == 0


def test_a_fetch_answer_always_fits_a_frame() -> None:
    h = Harness()
    box = h.add_mailbox()
    h.add_user("alice")
    bob = h.add_user("bob")
    h.connect("alice")
    h.disconnect("bob")
    ids = [h.send("alice", "bob", bytes([i]) * LARGE_BODY) for i in range(20)]
    h.settle()
    answer = h.mailboxes[box].handle(
        bob.identity.public.peer_id, FetchRequest(message_ids=tuple(ids)), wall_now=h.now
    )
    assert isinstance(answer, Fetched) and 0 < len(answer.envelopes) < 20
    assert len(encode_response(answer)) <= MAX_FRAME
