"""Messages sent to a contact whose node is not up yet arrive in the order they were sent, on the real
network: Alice sends 20 lines to Bob while nothing listens at his address; Bob comes up; her retries
reach him and his ``DirectMessage`` events come 1, 2, ..., 20 (before, each publish and each reach was
its own task and Bob got them shuffled)."""

from __future__ import annotations

import socket
from pathlib import Path

import trio
from conftest import make_profile

from meshchat.inbox import DirectMessage
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxStatus
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
#: Retry after half a second (the default is 10 s), so Alice's retries find Bob soon after he is up.
FAST_RETRY = StoreConfig(retry_initial=0.5)
COUNT = 20
WAIT = 60.0


def free_port() -> int:
    """A TCP port nothing listens on now (Bob's, before his node is up)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_lines_sent_before_the_contact_is_up_arrive_in_seq_order(tmp_path: Path) -> None:
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    port = free_port()
    async with Node.open(alice_dir, listen=LOCAL, store_config=FAST_RETRY) as alice:
        alice.contacts.add(Invite.create(bob_id, name="Bob", addrs=[f"/ip4/127.0.0.1/tcp/{port}"]).to_text())
        handles = [await alice.send("Bob", f"line {i}") for i in range(1, COUNT + 1)]
        assert [h.seq for h in handles] == list(range(1, COUNT + 1))
        with trio.fail_after(WAIT):  # the first sends and retries found nobody: still queued
            await alice.wait_for(lambda: all(h.record.attempts >= 1 for h in handles))
        assert all(h.status is OutboxStatus.QUEUED for h in handles)
        async with Node.open(bob_dir, listen=[f"/ip4/127.0.0.1/tcp/{port}"], store_config=FAST_RETRY) as bob:
            got: list[DirectMessage] = []
            with trio.fail_after(WAIT):
                async for event in bob.events():
                    if isinstance(event, DirectMessage):
                        got.append(event)
                        if len(got) == COUNT:
                            break
            assert [m.seq for m in got] == list(range(1, COUNT + 1))
            assert [m.body for m in got] == [f"line {i}".encode() for i in range(1, COUNT + 1)]
            assert [m.number for m in got] == list(range(1, COUNT + 1))
