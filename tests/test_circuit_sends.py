"""Sends to a contact reachable only through a circuit relay v2 address: each one arrives."""

from __future__ import annotations

from pathlib import Path

import trio
from conftest import make_profile

from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxStatus
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 30.0


async def test_three_quick_sends_through_a_circuit_relay_all_arrive(tmp_path: Path) -> None:
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    dave_dir, dave_id = make_profile(tmp_path, "dave", 11)
    fast = StoreConfig(retry_initial=1.0, retry_max=4.0)
    async with (
        Node.open(identity=Identity(b"\x0d" * 32), listen=LOCAL, circuit_relay=True, dht=False) as relay,
        Node.open(dave_dir, listen=LOCAL, dht=False) as dave,
        Node.open(alice_dir, listen=LOCAL, store_config=fast, dht=False) as alice,
    ):
        with trio.fail_after(WAIT):
            relayed = await dave.reserve(relay.listen_addrs[0])
        alice.contacts.add(Invite.create(dave_id, name="Dave", addrs=[relayed]).to_text())
        dave.contacts.add(Invite.create(alice_id, name="Alice").to_text())
        handles = [await alice.send("Dave", f"через реле {i}") for i in range(3)]
        got: dict[bytes, DirectMessage] = {}
        with trio.fail_after(WAIT):
            async for event in dave.events():
                if isinstance(event, DirectMessage):
                    got[event.message_id] = event
                    if len(got) == 3:
                        break
        assert sorted(m.body.decode() for m in got.values()) == [f"через реле {i}" for i in range(3)]
        with trio.fail_after(WAIT):
            for handle in handles:
                await handle.wait_until(OutboxStatus.DELIVERED)


async def test_one_shot_sends_through_a_circuit_relay_each_arrive(tmp_path: Path) -> None:
    """Like ``meshchat send`` three times, then ``meshchat node``: each run opens a node, sends,
    returns once the message is relayed, and closes (leaving a dead relayed connection on Dave's side:
    py-libp2p's relay does not close it). Each later run still reaches Dave, and the node that runs
    afterwards retries what a run's early exit lost on the way: every message arrives, and is
    delivered."""
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    dave_dir, dave_id = make_profile(tmp_path, "dave", 11)
    async with (
        Node.open(identity=Identity(b"\x0d" * 32), listen=LOCAL, circuit_relay=True, dht=False) as relay,
        Node.open(dave_dir, listen=LOCAL, dht=False) as dave,
    ):
        with trio.fail_after(WAIT):
            relayed = await dave.reserve(relay.listen_addrs[0])
        dave.contacts.add(Invite.create(alice_id, name="Alice").to_text())
        sent = []
        for i in range(3):
            async with Node.open(alice_dir, listen=LOCAL, dht=False) as alice:
                if i == 0:
                    alice.contacts.add(Invite.create(dave_id, name="Dave", addrs=[relayed]).to_text())
                handle = await alice.send("Dave", f"через реле {i}")
                with trio.fail_after(WAIT):  # (the old code: only the first run's got this far)
                    await handle.wait_until(OutboxStatus.RELAYED)
                sent.append(handle.message_id)
        async with Node.open(alice_dir, listen=LOCAL, dht=False) as alice:
            restarted = trio.current_time()
            got: dict[bytes, DirectMessage] = {}
            with trio.fail_after(WAIT):
                async for event in dave.events():
                    if isinstance(event, DirectMessage):
                        got[event.message_id] = event
                        if len(got) == 3:
                            break
            assert set(got) == set(sent)
            assert sorted(m.seq for m in got.values()) == [1, 2, 3]
            with trio.fail_after(WAIT):
                await alice.wait_for(lambda: all(r.status is OutboxStatus.DELIVERED for r in alice.outbox(3)))
            assert trio.current_time() - restarted < 10  # every message delivered within 10 s
