"""Blocking: a blocked person's direct messages are opened (to learn who sent them), marked seen and
dropped: never an event, never in ``node.inbox()`` or ``node.conversation()``, counted in
``node.blocked_dropped``, never receipted (not even after an unblock), and the block survives a
restart. Unblocking lets new messages in. Group messages, invitations and files from them are not
shown as events."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from conftest import make_profile
from store_harness import Harness

from meshchat.contacts import Contacts
from meshchat.files.events import Attachment
from meshchat.groups.events import GroupInvited, GroupMessage
from meshchat.history import from_blocked
from meshchat.identity import Identity, PublicIdentity
from meshchat.inbox import DirectMessage
from meshchat.node import Node
from meshchat.store.dropped import DROPPED_PREFIX
from meshchat.store.messenger import Messenger, StoreConfig
from meshchat.store.storage import OutboxStatus
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 30.0
FAST_RETRY = StoreConfig(retry_initial=0.5, retry_max=2.0)


def blocking_user(h: Harness, name: str, blocked: set[bytes]) -> None:
    """``name``'s messenger, asking ``blocked`` who is blocked (as ``Node`` asks its contacts)."""
    user = h.add_user(name)
    user.messenger = Messenger(
        user.identity,
        user.storage,
        config=h.config,
        rng=random.Random(7),
        random_bytes=h._random_bytes,
        wall_now=h.now,
        blocked=blocked.__contains__,
    )


def test_a_blocked_chat_is_seen_dropped_counted_and_never_receipted_even_after_unblock() -> None:
    h = Harness()
    blocked: set[bytes] = set()
    alice = h.add_user("alice")
    blocking_user(h, "bob", blocked)
    bob = h.users["bob"]
    blocked.add(alice.identity.public.ed25519)
    spam = h.send("alice", "bob", b"spam")
    h.settle()
    assert bob.received == [] and bob.messenger.blocked_dropped == bob.messenger.statistics().blocked == 1
    assert bob.storage.seen([spam]) == {spam}  # seen: not opened and counted again
    assert bob.storage.state_get(DROPPED_PREFIX + spam) is not None  # in the same transaction
    assert bob.storage.inbox_after(0, 10) == []
    assert bob.storage.conversation(alice.identity.public.ed25519, before=None, limit=10) == []
    assert alice.messenger.status(spam).status is OutboxStatus.RELAYED  # type: ignore[union-attr]
    h.advance(30)  # Alice retries: a duplicate, still no receipt
    assert bob.messenger.blocked_dropped == 1 and bob.received == []
    assert alice.messenger.status(spam).status is OutboxStatus.RELAYED  # type: ignore[union-attr]
    blocked.clear()  # unblocked: the dropped message stays dropped, and unreceipted
    h.advance(60)
    assert alice.messenger.status(spam).status is OutboxStatus.RELAYED  # type: ignore[union-attr]
    h.restart("bob")  # and after a restart (the mark is in bob's store)
    h.advance(120)
    assert alice.messenger.status(spam).status is OutboxStatus.RELAYED  # type: ignore[union-attr]
    hello = h.send("alice", "bob", b"hello again")
    h.settle()
    assert [r.message.body for r in h.users["bob"].received] == [b"hello again"]
    assert alice.messenger.status(hello).status is OutboxStatus.DELIVERED  # type: ignore[union-attr]
    # The mark goes with the seen entry, once the message expired.
    h.advance(h.config.ttl + 7200)
    assert h.users["bob"].storage.state_get(DROPPED_PREFIX + spam) is None


def test_events_from_a_blocked_person_are_not_shown(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "bob", 2)
    contacts = Contacts(folder)
    mallory, friend = Identity(b"\x66" * 32), Identity(b"\x67" * 32)
    contacts.block(mallory.public)
    group = bytes(32)

    def message(sender: bytes) -> GroupMessage:
        return GroupMessage(
            group_id=group, number=1, sender=sender, body=b"x", ref="", sent_at_ms=0, message_id=bytes(32)
        )

    assert from_blocked(contacts, message(mallory.public.ed25519))
    assert not from_blocked(contacts, message(friend.public.ed25519))
    assert from_blocked(contacts, GroupInvited(group_id=group, name="g", by=mallory.public.ed25519))
    assert not from_blocked(contacts, GroupInvited(group_id=group, name="g", by=friend.public.ed25519))
    offer = Attachment.__new__(Attachment)  # only its sender matters here
    object.__setattr__(offer, "sender", mallory.public)
    assert from_blocked(contacts, offer)
    assert not from_blocked(None, message(mallory.public.ed25519))


async def next_direct(node: Node) -> DirectMessage:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, DirectMessage):
                return event
    raise AssertionError("unreachable")


@asynccontextmanager
async def bob_node(folder: Path, alice: Node) -> AsyncIterator[Node]:
    """Bob's node on his profile folder, connected to Alice (a new port each time it opens)."""
    async with Node.open(folder, listen=LOCAL, store_config=FAST_RETRY, dht=False) as bob:
        await bob.connect(alice.listen_addrs[0])
        yield bob


async def test_a_blocked_sender_never_surfaces_across_a_restart_and_unblock_lets_new_messages_in(
    tmp_path: Path,
) -> None:
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    bob_contacts = Contacts(bob_dir)  # before any node runs on the profile
    bob_contacts.add(Invite.create(alice_id, name="Alice").to_text())
    bob_contacts.block("Alice")
    async with Node.open(alice_dir, listen=LOCAL, store_config=FAST_RETRY, dht=False) as alice:
        alice.contacts.add(Invite.create(bob_id, name="Bob").to_text())
        async with bob_node(bob_dir, alice) as bob:
            first = await alice.send("Bob", "first, while blocked")
            with trio.fail_after(WAIT):
                await bob.wait_for(lambda: bob.blocked_dropped >= 1)
            assert bob.inbox() == [] and bob.conversation("Alice") == []
            # Bob's own message to Alice goes out after the drop: had a receipt gone, it went first.
            await bob.send("Alice", "I hear nothing from you")
            await next_direct(alice)
            assert first.status in (OutboxStatus.RELAYED, OutboxStatus.STORED)
        # Restarted on the same folder: the block holds (it is in contacts.json).
        async with bob_node(bob_dir, alice) as bob:
            assert bob.contacts.is_blocked(alice.identity.public)
            assert bob.blocked_dropped == 0  # counted since start
            second = await alice.send("Bob", "second, after the restart")
            with trio.fail_after(WAIT):
                await bob.wait_for(lambda: bob.blocked_dropped >= 1)
            assert bob.inbox() == []
            assert [e.outgoing for e in bob.conversation(alice.peer_id)] == [True]  # his own only
            bob.contacts.unblock("Alice")
            third = await alice.send("Bob", "third, unblocked")
            got = await next_direct(bob)  # the first direct message event Bob's app ever saw
            assert (got.body, got.message_id) == (b"third, unblocked", third.message_id)
            assert [r.body for r in bob.inbox()] == [b"third, unblocked"]
            assert [e.body for e in bob.conversation("Alice")] == [
                b"I hear nothing from you",
                b"third, unblocked",
            ]
            with trio.fail_after(WAIT):
                await third.wait_until(OutboxStatus.DELIVERED)
            assert second.status is not OutboxStatus.DELIVERED and first.status is not OutboxStatus.DELIVERED
            assert not bob.contacts.is_blocked(PublicIdentity.from_bytes(alice.identity.public.ed25519))
        assert Contacts(bob_dir).blocked() == []  # the unblock was saved
