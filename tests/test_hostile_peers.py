"""Faults found by attacking the merged code from outside (issue 12, "these are samples"): each test
failed before its fix."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import multiaddr
import pytest
import trio
import trio.testing
from conftest import make_profile
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from test_direct import FAST_RETRY
from test_net import LOCAL, WAIT, honest_traffic_still_flows, identity, line, raw_peer, wait_for

from meshchat.crypto import MAX_BODY_SIZE, seal
from meshchat.errors import StorageError
from meshchat.identity import Identity
from meshchat.inbox import DirectMessage, InboxFeed
from meshchat.net import NetDrop
from meshchat.net import dialer as dialer_module
from meshchat.net import mailbox as mailbox_module
from meshchat.net.dialer import BOOTSTRAP_TIMEOUT
from meshchat.net.host import IO_ERRORS, MAX_IDENTIFY_PUSHES_PER_PEER, MAX_INBOUND_STREAMS_PER_PEER
from meshchat.net.mailbox import MAX_CALLS_PER_PEER, call_mailbox
from meshchat.node import Node
from meshchat.store.mailbox import PRUNE_INTERVAL, MailboxCore, MailboxRefusal
from meshchat.store.messenger import StoreProblem
from meshchat.store.protocol import (
    MAILBOX_PROTOCOL,
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
from meshchat.store.reasons import DiscardReason
from meshchat.store.storage import MailboxItem, MemoryStorage
from meshchat.wire import Invite, message_id
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


@asynccontextmanager
async def hanging_peers(count: int) -> AsyncIterator[list[str]]:
    """``count`` addresses on 127.0.0.1 that accept a connection and never answer (peer addresses of
    made-up identities)."""
    listeners = [trio.socket.socket() for _ in range(count)]
    held: list[trio.socket.SocketType] = []

    async def hold(sock: trio.socket.SocketType) -> None:
        while True:
            conn, _ = await sock.accept()
            held.append(conn)

    try:
        async with trio.open_nursery() as nursery:
            addresses = []
            for i, sock in enumerate(listeners):
                await sock.bind(("127.0.0.1", 0))
                sock.listen()
                nursery.start_soon(hold, sock)
                peer = Identity(bytes([200 + i]) * 32).public.peer_id
                addresses.append(f"/ip4/127.0.0.1/tcp/{sock.getsockname()[1]}/p2p/{peer}")
            yield addresses
            nursery.cancel_scope.cancel()
    finally:
        for sock in listeners + held:
            sock.close()


async def test_mailboxes_that_hang_in_an_invite_do_not_delay_a_message_to_an_online_contact(
    tmp_path: Path,
) -> None:
    """Bob is online at the address in his invite, which also names three mailboxes that accept
    connections and never answer. The dialer tried them one after the other before Bob: 30 s
    (``BOOTSTRAP_TIMEOUT`` each) until Bob had the message, at every retry."""
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    async with (
        hanging_peers(3) as mailboxes,
        Node.open(bob_dir, listen=LOCAL, store_config=FAST_RETRY, dht=False) as bob,
        Node.open(alice_dir, listen=LOCAL, store_config=FAST_RETRY, dht=False) as alice,
    ):
        invite = Invite.create(bob_id, name="Bob", addrs=bob.listen_addrs, mailboxes=mailboxes)
        alice.contacts.add(invite.to_text())
        await alice.send("Bob", "hi")
        with trio.fail_after(BOOTSTRAP_TIMEOUT - 2):  # one hanging dial's time, less a margin
            async for event in bob.events():
                if isinstance(event, DirectMessage):
                    assert event.body == b"hi"
                    break


async def test_configured_mailboxes_are_dialled_at_once_not_one_after_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node configured with three mailboxes that hang and one that works: it started (and each
    redial round took) ``BOOTSTRAP_TIMEOUT`` per hanging mailbox before reaching the working one."""
    monkeypatch.setattr(dialer_module, "BOOTSTRAP_TIMEOUT", 3.0)
    async with (
        hanging_peers(3) as hanging,
        Node.open(identity=identity(103), listen=LOCAL, mailbox=True, dht=False) as box,
    ):
        started = trio.current_time()
        configured = [*hanging, box.listen_addrs[0]]
        async with Node.open(identity=identity(104), listen=LOCAL, mailboxes=configured, dht=False) as node:
            assert trio.current_time() - started < 2 * 3.0  # one timeout, not three
            assert node.host.get_network().connections.get(
                info_from_p2p_addr(multiaddr.Multiaddr(box.listen_addrs[0])).peer_id
            )
            assert len(node.unreachable_mailboxes) == 3


async def test_stalled_calls_from_many_identities_cannot_lock_other_clients_out_of_a_mailbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PeerIds cost nothing: identities stalling ``MAX_CALLS_PER_PEER`` calls each filled ``MAX_CALLS``
    and every other client's call was reset ("too many calls") until they timed out, again and again.
    Now a new call ends the oldest, counted."""
    monkeypatch.setattr(mailbox_module, "MAX_CALLS", 2 * MAX_CALLS_PER_PEER)
    async with (
        Node.open(identity=identity(105), listen=LOCAL, mailbox=True, dht=False) as box,
        Node.open(identity=identity(106), listen=LOCAL, dht=False) as honest,
        raw_peer(107) as evil_a,
        raw_peer(108) as evil_b,
    ):
        server = box._mailbox_server
        assert server is not None
        info = info_from_p2p_addr(multiaddr.Multiaddr(box.listen_addrs[0]))
        stalled = []
        with trio.fail_after(WAIT):
            for evil in (evil_a, evil_b):
                await evil.connect(info)
                for _ in range(MAX_CALLS_PER_PEER):
                    stream = await evil.new_stream(info.peer_id, [TProtocol(MAILBOX_PROTOCOL)])
                    await stream.write(b"\x40")  # a frame of 64 bytes announced, never sent
                    stalled.append(stream)
            await server.wait_for(lambda: server.open_calls == 2 * MAX_CALLS_PER_PEER)
            await honest.connect(box.listen_addrs[0])
            answer = await call_mailbox(honest.host, box.peer_id, FetchRequest(message_ids=(b"\x00" * 32,)))
        assert isinstance(answer, Fetched)  # was NetworkError: the stream reset, "too many calls"
        assert server.refused[mailbox_module.EVICTED] == 1 and server.refused["too many calls"] == 0
        assert server.open_calls == 2 * MAX_CALLS_PER_PEER - 1


class DeadDisk(MemoryStorage):
    """A profile's storage whose every call fails while ``broken`` (a disk that returns I/O errors)."""

    broken = False

    def __getattribute__(self, name: str) -> object:
        attribute = super().__getattribute__(name)
        if not name.startswith("_") and callable(attribute) and super().__getattribute__("broken"):

            def fail(*args: object, **kwargs: object) -> None:
                raise StorageError(f"{name}: disk I/O error")

            return fail
        return attribute


def test_a_failing_disk_never_raises_out_of_the_messenger_inputs_a_driver_feeds() -> None:
    """A read in ``receive`` (the seen check), the hourly sweep of seen entries in ``on_timer`` and the
    read that starts a sync raised ``StorageError`` out of the messenger, so out of the node's event
    and timer tasks: ``meshchat node`` stopped on a disk hiccup. Now each is a ``StoreProblem`` the app
    hears, counted, and what was not accepted comes again once the disk is back."""
    h = Harness()
    h.add_mailbox()
    h.add_user("alice")
    bob = h.add_user("bob", storage=DeadDisk())
    h.connect("alice")
    h.connect("bob")
    h.send("alice", "bob", b"one")
    h.settle()
    storage = bob.storage
    assert isinstance(storage, DeadDisk)
    storage.broken = True
    h.send("alice", "bob", b"two")  # by gossip: the seen check fails
    h.settle()
    h.advance(2 * 3600)  # the sweep of seen entries, retries and syncs: all on the dead disk
    h.feed("bob", bob.messenger.sync_now(wall_now=h.now))
    h.settle()
    assert bob.problems and all(isinstance(p.error, StorageError) for p in bob.problems)
    assert bob.messenger.statistics().discarded[DiscardReason.STORAGE_FAILED] >= 1
    assert [m.message.body for m in bob.received] == [b"one"]
    storage.broken = False
    h.advance(3 * 3600)  # Alice's retry, or Bob's next sync: "two" is not lost
    assert [m.message.body for m in bob.received] == [b"one", b"two"]


async def test_the_inbox_feed_reports_a_failing_read_and_feeds_on_once_the_disk_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The feed's read of the inbox raised ``StorageError`` out of the node's task (the node stopped)."""
    h = Harness()
    bob = h.add_user("bob", storage=DeadDisk())
    h.add_user("alice")
    h.send("alice", "bob", b"one")
    h.settle()
    storage = bob.storage
    assert isinstance(storage, DeadDisk)
    storage.broken = True
    send, receive = trio.open_memory_channel[object](10)
    feed = InboxFeed(storage, None, send, after=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed.run)
        problem = await receive.receive()
        assert isinstance(problem, StoreProblem) and isinstance(problem.error, StorageError)
        storage.broken = False
        message = await receive.receive()  # FEED_RETRY later (virtual time)
        assert isinstance(message, DirectMessage) and message.body == b"one"
        nursery.cancel_scope.cancel()


async def open_stalled(evil: object, node: Node, protocol: str, count: int) -> list[INetStream]:
    """Open ``count`` streams of ``protocol`` to ``node``, each stalled 32 KiB into a 60,000-byte
    message (within what py-libp2p's handlers accept); return those the node did not reset."""
    info = info_from_p2p_addr(multiaddr.Multiaddr(node.listen_addrs[0]))
    await evil.connect(info)  # type: ignore[attr-defined]
    held = []
    with trio.fail_after(WAIT):
        for _ in range(count):
            try:
                stream = await evil.new_stream(info.peer_id, [TProtocol(protocol)])  # type: ignore[attr-defined]
                await stream.write(b"\xe0\xd4\x03" + b"x" * (32 * 1024))
                held.append(stream)
            except IO_ERRORS:
                pass  # reset as it opened
    return held


async def test_streams_one_peer_opens_at_once_are_bounded_whatever_their_protocol() -> None:
    """py-libp2p's own handlers (the circuit relay's stop, identify push) read up to 1 MiB per stream,
    and a peer could open any number of them: 200 streams stalled 256 KiB into their message held
    58 MiB. Now a peer has at most ``MAX_INBOUND_STREAMS_PER_PEER`` inbound streams open; the rest
    are reset, counted, and the node still serves others."""
    extra = 8
    async with line(2) as (a, b), raw_peer(109) as evil:
        held = await open_stalled(
            evil, b, "/libp2p/circuit/relay/0.2.0/stop", MAX_INBOUND_STREAMS_PER_PEER + extra
        )
        await wait_for(b, lambda: b.statistics().drops[NetDrop.TOO_MANY_STREAMS] == extra, "refused, counted")
        assert len(held) == MAX_INBOUND_STREAMS_PER_PEER
        await honest_traffic_still_flows(a, b)


async def test_a_peer_has_one_identify_push_in_progress_at_a_time() -> None:
    async with line(2) as (a, b), raw_peer(110) as evil:
        held = await open_stalled(evil, b, "/ipfs/id/push/1.0.0", 10)
        await wait_for(b, lambda: b.statistics().drops[NetDrop.TOO_MANY_STREAMS] == 9, "refused, counted")
        assert len(held) <= MAX_IDENTIFY_PUSHES_PER_PEER + 1  # a reset may reach the writer after its write
        await honest_traffic_still_flows(a, b)
