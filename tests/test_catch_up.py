"""Catching up after a peer was away, on real nodes over 127.0.0.1: a restarted mailbox is redialled
within seconds, outbox retries dial the recipient, a node that starts publishes what is pending at
once, and the event stream replays what the application had not handled."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from conftest import make_profile
from libp2p.network.swarm import Swarm
from processes import JsonLinesProcess

from meshchat.errors import NetworkError
from meshchat.inbox import DirectMessage
from meshchat.net.dialer import MAILBOX_REDIAL
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxStatus
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 20.0
#: Seconds after which "within a few seconds" has failed.
FEW_SECONDS = 10.0


def free_port() -> int:
    """A TCP port nothing listens on now (the system picks it; we close it again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def next_direct(node: Node) -> DirectMessage:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, DirectMessage):
                return event
    raise AssertionError("unreachable")


async def start_mailbox(nursery: trio.Nursery, folder: Path, port: int) -> JsonLinesProcess:
    """``meshchat mailbox`` on ``folder`` at 127.0.0.1:``port``, once it listens."""
    listen = ["--listen", f"/ip4/127.0.0.1/tcp/{port}"]
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "meshchat", "mailbox", "--profile", str(folder), "--json", *listen],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    box = JsonLinesProcess(process)
    nursery.start_soon(box.read_events)
    try:
        await box.first("listening")
    except BaseException:
        process.kill()
        raise
    return box


async def test_a_mailbox_killed_and_restarted_is_redialled_within_seconds(tmp_path: Path) -> None:
    """The mailbox process is killed; while it is down a dial fails and py-libp2p's swarm refuses to
    dial it again for 60 s ("recently failed all addresses"); it comes back on the same port and
    identity: the sender's next redial round (every ``MAILBOX_REDIAL`` s) reconnects and syncs."""
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    box_dir, box_id = make_profile(tmp_path, "mailbox", 9)
    box = box_id.public.peer_id
    port = free_port()
    address = f"/ip4/127.0.0.1/tcp/{port}/p2p/{box}"
    processes: list[trio.Process] = []
    try:
        async with trio.open_nursery() as nursery:
            processes.append((await start_mailbox(nursery, box_dir, port)).process)
            async with Node.open(alice_dir, listen=LOCAL, mailboxes=[address], dht=False) as alice:
                with trio.fail_after(WAIT):
                    await alice.wait_for(lambda: box in alice.mailboxes)
                processes[0].kill()  # SIGKILL: a crash
                with trio.fail_after(WAIT):
                    await processes[0].wait()
                    await alice.wait_for(lambda: box not in alice.mailboxes)
                network = alice.host.get_network()
                assert isinstance(network, Swarm)
                with pytest.raises(NetworkError):
                    await alice.connect(address)
                assert network._negative_peer_cache.is_blocked(box)  # for the next 60 s
                syncs = alice.store_statistics().syncs
                processes.append((await start_mailbox(nursery, box_dir, port)).process)
                with trio.fail_after(MAILBOX_REDIAL + FEW_SECONDS):  # the next redial round
                    await alice.wait_for(lambda: box in alice.mailboxes)
                with trio.fail_after(FEW_SECONDS):  # synced at once, not at the next interval
                    await alice.wait_for(lambda: alice.store_statistics().syncs > syncs)
                await alice.connect(address)  # and a dial of our own is not refused either
            nursery.cancel_scope.cancel()
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_outbox_retries_dial_the_recipient_at_its_invite_address(tmp_path: Path) -> None:
    """Alice queued a message while Bob was offline (``meshchat send`` gave up); her next node (no
    bootstrap, no mailbox) starts before Bob is back; Bob comes up at the address in his invite; one
    of the node's retries dials him and the message is delivered."""
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    port = free_port()
    retry = StoreConfig(retry_initial=0.5, retry_max=2.0)
    invite = Invite.create(bob_id, name="Bob", addrs=[f"/ip4/127.0.0.1/tcp/{port}"]).to_text()
    async with Node.open(alice_dir, listen=LOCAL, store_config=retry, dht=False) as alice:
        alice.contacts.add(invite)
        mid = (await alice.send("Bob", "while you were away")).message_id
    async with Node.open(alice_dir, listen=LOCAL, store_config=retry, dht=False) as alice:
        with trio.fail_after(WAIT):  # this node retried (and failed: Bob is not there yet)
            await alice.wait_for(lambda: alice.outbox(1)[0].attempts >= 2)
        assert alice.outbox(1)[0].status is OutboxStatus.QUEUED
        async with Node.open(bob_dir, listen=[f"/ip4/127.0.0.1/tcp/{port}"], dht=False) as bob:
            bob.contacts.add(Invite.create(alice_id, name="Alice").to_text())  # no address: Alice dials
            message = await next_direct(bob)
            assert message.body == b"while you were away" and message.message_id == mid
            with trio.fail_after(WAIT):
                await alice.wait_for(lambda: alice.outbox(1)[0].status is OutboxStatus.DELIVERED)


async def test_a_node_that_starts_publishes_what_is_pending_at_once(tmp_path: Path) -> None:
    """A one-shot sender queued a message and exited; its retry is persisted far in the future. The
    next node on that profile reaches the recipient and publishes it at once: delivered in seconds."""
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    port = free_port()
    slow = StoreConfig(retry_initial=600.0)  # the next retry would come ten minutes later
    invite = Invite.create(bob_id, name="Bob", addrs=[f"/ip4/127.0.0.1/tcp/{port}"]).to_text()
    async with Node.open(alice_dir, listen=LOCAL, store_config=slow, dht=False) as alice:
        alice.contacts.add(invite)
        mid = (await alice.send("Bob", "sent and gone")).message_id
    async with Node.open(bob_dir, listen=[f"/ip4/127.0.0.1/tcp/{port}"], dht=False) as bob:
        bob.contacts.add(Invite.create(alice_id, name="Alice").to_text())
        async with Node.open(alice_dir, listen=LOCAL, store_config=slow, dht=False) as alice:
            started = trio.current_time()
            message = await next_direct(bob)
            assert message.message_id == mid
            with trio.fail_after(FEW_SECONDS):
                await alice.wait_for(lambda: alice.outbox(1)[0].status is OutboxStatus.DELIVERED)
            assert trio.current_time() - started < FEW_SECONDS


async def test_events_after_replays_what_the_application_had_not_handled(tmp_path: Path) -> None:
    """Bob's node commits messages that his app never reads (it stops first: they are lost to a
    stream of live events); opened again with ``events_after=`` the last number the app handled, the
    stream replays the rest in inbox order, then goes on with live messages."""
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    port = free_port()
    bob_listen = [f"/ip4/127.0.0.1/tcp/{port}"]
    invite = Invite.create(bob_id, name="Bob", addrs=bob_listen).to_text()
    async with Node.open(
        alice_dir, listen=LOCAL, store_config=StoreConfig(retry_initial=0.5), dht=False
    ) as alice:
        alice.contacts.add(invite)
        async with Node.open(bob_dir, listen=bob_listen, dht=False) as bob:
            await alice.send("Bob", "m0")
            handled = await next_direct(bob)  # the app handles the first one only, then stops
            assert handled.number == 1 and handled.body == b"m0"
            for i in range(1, 4):
                await alice.send("Bob", f"m{i}")
            with trio.fail_after(WAIT):
                await bob.wait_for(lambda: len(bob.inbox(limit=10)) == 4)
        async with Node.open(bob_dir, listen=bob_listen, dht=False, events_after=handled.number) as bob:
            replayed = [await next_direct(bob) for _ in range(3)]
            assert [m.number for m in replayed] == [2, 3, 4]
            assert sorted(m.body for m in replayed) == [b"m1", b"m2", b"m3"]
            assert all(m.contact is None and m.sender == alice.identity.public for m in replayed)
            await alice.send("Bob", "live")
            live = await next_direct(bob)
            assert live.number == 5 and live.body == b"live"
