"""Faults found by attacking the merged code from outside (issue 12, "these are samples"): each test
failed before its fix."""

from __future__ import annotations

import os
import time

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from test_net import LOCAL, WAIT, identity, raw_peer

from meshchat.crypto import MAX_BODY_SIZE, seal
from meshchat.errors import StorageError
from meshchat.identity import Identity
from meshchat.net.mailbox import call_mailbox
from meshchat.node import Node
from meshchat.store.mailbox import PRUNE_INTERVAL, MailboxCore, MailboxRefusal
from meshchat.store.protocol import (
    MAX_FRAME,
    ErrorCode,
    Fetched,
    FetchRequest,
    MailboxError,
    StoreCode,
    Stored,
    StoreRequest,
    encode_response,
)
from meshchat.store.storage import MailboxItem, MemoryStorage
from meshchat.wire import message_id
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


class FailingDisk(MemoryStorage):
    """A mailbox's storage whose disk fails (full, or the folder turned read-only) while it runs."""

    broken = False

    def mailbox_prune(self, before: int) -> list[MailboxItem]:
        if self.broken:
            raise StorageError("disk I/O error")
        return super().mailbox_prune(before)

    def mailbox_all(self) -> list[MailboxItem]:
        if self.broken:
            raise StorageError("disk I/O error")
        return super().mailbox_all()


def test_a_failing_disk_during_a_mailbox_sweep_is_an_answer_not_an_exception() -> None:
    """The sweep of expired items and the recount after a new contact ran outside ``handle``'s
    ``StorageError`` guard: a read-only or failing disk raised out of the server's stream handler.
    Now the request is answered ``STORAGE_FAILED`` (counted), the quotas keep what they counted, and
    the mailbox serves again once the disk is back."""
    h = Harness()
    h.add_mailbox()
    _alice, bob = h.add_user("alice"), h.add_user("bob")
    h.connect("alice")
    h.disconnect("bob")
    envelope = h.users["alice"].messenger.send(bob.identity.public, b"hi", wall_now=h.now)[0].envelope
    disk = FailingDisk()
    core = MailboxCore(disk, owner=Identity(b"\x05" * 32).public)
    stored = core.handle("someone", StoreRequest(envelopes=(envelope,)), wall_now=h.now)
    assert isinstance(stored, Stored) and stored.results[0].code is StoreCode.STORED
    held = core.statistics().bytes
    disk.broken = True
    core.set_friends([bob.identity.public])  # the owner added a contact: counted again at the next request
    later = h.now + PRUNE_INTERVAL + 1
    answer = core.handle("someone", StoreRequest(envelopes=()), wall_now=later)  # raised before the fix
    assert isinstance(answer, MailboxError) and answer.code is ErrorCode.STORAGE_FAILED
    assert core.statistics().refused[MailboxRefusal.STORAGE_FAILED] == 1
    assert core.statistics().bytes == held  # not reset by a recount that failed halfway
    disk.broken = False
    again = core.handle(bob.identity.public.peer_id, StoreRequest(envelopes=()), wall_now=later + 1)
    assert isinstance(again, Stored)
    assert core.statistics().bytes == held and core.statistics().stranger_bytes == 0  # now Bob's


async def test_a_peer_fetching_its_own_large_envelopes_at_once_does_not_stop_a_mailbox_node() -> None:
    """Any peer could stop ``meshchat mailbox`` (exit code 1, "mailbox message is 1,572,151 bytes"):
    store 24 near-limit envelopes addressed to its own key, then fetch them in one call. Now it gets
    what fits one frame, and the node serves on."""
    async with (
        Node.open(identity=identity(100), listen=LOCAL, mailbox=True, dht=False) as box,
        raw_peer(101) as evil,
    ):
        me = identity(101).public
        assert me.peer_id == evil.get_id().to_base58()
        await evil.connect(info_from_p2p_addr(multiaddr.Multiaddr(box.listen_addrs[0])))
        sender, now = identity(102), time.time()
        envelopes = [
            seal(sender, me, bytes([i]) * (MAX_BODY_SIZE - 10), wall_now=now, random_bytes=os.urandom)
            for i in range(24)
        ]
        with trio.fail_after(WAIT):
            for batch in (envelopes[:12], envelopes[12:]):  # each request within one frame
                stored = await call_mailbox(evil, box.peer_id, StoreRequest(envelopes=tuple(batch)))
                assert isinstance(stored, Stored) and {r.code for r in stored.results} == {StoreCode.STORED}
            ids = tuple(message_id(e) for e in envelopes)
            fetched = await call_mailbox(evil, box.peer_id, FetchRequest(message_ids=ids))
            assert isinstance(fetched, Fetched) and 0 < len(fetched.envelopes) < 24
            rest = tuple(i for i in ids if i not in {message_id(e) for e in fetched.envelopes})
            fetched_rest = await call_mailbox(evil, box.peer_id, FetchRequest(message_ids=rest))
        assert isinstance(fetched_rest, Fetched)
        assert len(fetched.envelopes) + len(fetched_rest.envelopes) == 24
