"""A recipient killed after committing a mailbox batch, before its receipt reached the mailbox, still
gets its sender to ``delivered`` once it is back (found by ``benchmarks/bench_catch_up.py``'s
recipient-restarted-last scenario: the kill can land in that window)."""

from __future__ import annotations

from store_harness import Harness

from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxStatus


def test_a_receipt_lost_in_a_crash_is_sent_again_after_the_restart() -> None:
    """Receipts live in memory until a mailbox holds one; Bob's process dies between committing the
    fetched messages and storing their receipt. The mailbox still holds them (his sync never got
    to its delete), but his seen window has them, so a sync that compares against it neither
    fetches them nor receipts them: with no gossip path between the two (the mailbox relays no
    inbox shard) Alice's messages stayed ``stored`` for good (still after an hour here). The first
    sync after a start compares against nothing: they come again as duplicates and are receipted."""
    h = Harness(config=StoreConfig(mailbox_copies=1))
    h.add_mailbox()
    alice, _ = h.add_user("alice"), h.add_user("bob")
    h.connect("alice")
    h.disconnect("bob")
    ids = [h.send("alice", "bob", f"m{i}".encode()) for i in range(3)]
    h.settle()
    h.gossip_lost = lambda _sender, _receiver, _action: True  # only the mailbox carries anything
    h.advance(90)
    h.connect("bob")
    for _ in range(1000):  # run Bob's sync until his first message is committed ...
        name, action = h.queue.popleft()
        h._perform(name, action)
        if h.users["bob"].received:
            break
    assert h.users["bob"].received
    bob = h.restart("bob")  # ... and kill him there: the receipt's publish and store are lost
    assert bob.storage.inbox_after(0, 10)  # committed before the crash
    h.connect("bob")
    h.settle()
    assert not bob.received  # nothing delivered to the app twice
    h.advance(10)
    assert [alice.messenger.status(m).status for m in ids] == [OutboxStatus.DELIVERED] * 3  # type: ignore[union-attr]
    assert len(bob.storage.inbox_after(0, 10)) == 3
