"""Several devices per person on real nodes (``node.devices``, 127.0.0.1): Alice links a laptop to her
primary over the network; Bob's messages reach both of her devices, hers from either reach Bob as
Alice (the device named) and show on her other device; after she removes the laptop nothing sent
afterwards is sealed to it; Bob follows her device list mid-conversation."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from conftest import make_profile

from meshchat.device_api import ROOT_INVITE_FILE, decode_snapshot, encode_snapshot
from meshchat.errors import DeviceError, LinkCodeMismatch, NotPrimary, UnknownDevice
from meshchat.inbox import DirectMessage
from meshchat.node import Node, NodeEvent
from meshchat.store.messenger import DeviceListChanged, Linked, StoreConfig
from meshchat.store.payload import MAX_SNAPSHOT
from meshchat.store.storage import OutboxStatus
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 20.0
FAST_RETRY = StoreConfig(retry_initial=0.5)


class Events:
    """Every event of one node, collected in the background; ``wait`` for one that matches."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.seen: list[NodeEvent] = []
        self._changed = trio.Event()

    async def run(self) -> None:
        async for event in self.node.events():
            self.seen.append(event)
            self._changed.set()
            self._changed = trio.Event()

    async def wait(self, match: Callable[[NodeEvent], bool]) -> NodeEvent:
        with trio.fail_after(WAIT):
            while True:
                for event in self.seen:
                    if match(event):
                        return event
                await self._changed.wait()

    async def message(self, body: bytes) -> DirectMessage:
        found = await self.wait(lambda e: isinstance(e, DirectMessage) and e.body == body)
        assert isinstance(found, DirectMessage)
        return found

    def bodies(self) -> list[bytes]:
        return [e.body for e in self.seen if isinstance(e, DirectMessage)]


async def test_link_send_from_either_device_remove(tmp_path: Path) -> None:
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    laptop_dir, laptop_id = make_profile(tmp_path, "laptop", 5)
    (alice_dir / "profile.json").write_text(json.dumps({"name": "Alice"}))
    async with AsyncExitStack() as stack:
        bob = await stack.enter_async_context(Node.open(bob_dir, listen=LOCAL, store_config=FAST_RETRY))
        alice = await stack.enter_async_context(Node.open(alice_dir, listen=LOCAL, store_config=FAST_RETRY))
        laptop = await stack.enter_async_context(Node.open(laptop_dir, listen=LOCAL, store_config=FAST_RETRY))
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        at = {name: Events(node) for name, node in (("alice", alice), ("bob", bob), ("laptop", laptop))}
        for events in at.values():
            nursery.start_soon(events.run)
        alice.contacts.add(Invite.create(bob_id, name="Bob", addrs=bob.listen_addrs).to_text())
        bob.contacts.add(Invite.create(alice_id, name="Alice", addrs=alice.listen_addrs).to_text())
        # A conversation is going on before the link.
        await alice.send("Bob", "before the laptop")
        await at["bob"].message(b"before the laptop")

        # The laptop (a new profile) shows its request; Alice's primary approves it with the code.
        assert [d.primary for d in laptop.devices.list()] == [True]
        request = laptop.devices.link(name="laptop")
        assert request.addrs and all(a.endswith(laptop.peer_id) for a in request.addrs)
        with pytest.raises(LinkCodeMismatch):
            wrong = "000000" if request.code() != "000000" else "111111"
            await alice.devices.approve(request.to_text(), code=wrong)
        approved = await alice.devices.approve(request.to_text(), code=request.code())
        assert approved.device.name == "laptop" and approved.contacts == 1 and approved.left_out == 0
        assert len(approved.lists) == 1 and approved.lists[0].record.recipient == bob_id.public.ed25519
        linked = await laptop.devices.wait_linked(WAIT)
        assert linked.root == alice.identity.public
        with trio.fail_after(WAIT):
            await approved.grant.wait_until(OutboxStatus.DELIVERED)
        # The laptop took the snapshot: Alice's name, her root invite, her contacts.
        assert not laptop.devices.is_primary and laptop.devices.root == alice.identity.public
        assert [c.name for c in laptop.contacts] == ["Bob"]
        assert json.loads((laptop_dir / "profile.json").read_text())["name"] == "Alice"
        root_invite = Invite.from_text((laptop_dir / ROOT_INVITE_FILE).read_text())
        assert root_invite.public == alice.identity.public and root_invite.bundle
        assert [(d.name, d.this) for d in laptop.devices.list()] == [("primary", False), ("laptop", True)]
        assert [(d.name, d.this) for d in alice.devices.list()] == [("primary", True), ("laptop", False)]
        with pytest.raises(NotPrimary):
            laptop.devices.remove("laptop")
        with pytest.raises(NotPrimary):
            await laptop.devices.approve(request.to_text())
        with pytest.raises(DeviceError):
            alice.devices.link(name="again")  # not a new profile
        [seen] = [e for e in at["laptop"].seen if isinstance(e, Linked)]
        assert seen.root == alice.identity.public

        # Bob hears that Alice added a device, mid-conversation.
        added = await at["bob"].wait(lambda e: isinstance(e, DeviceListChanged) and bool(e.added))
        assert isinstance(added, DeviceListChanged) and not added.own
        assert added.root == alice.identity.public.ed25519
        assert "laptop" in [d.name for d in added.added]
        assert bob.devices.list_of(bob.contacts.find("Alice")) is not None
        # Bob never dials the laptop himself: it is no contact of his, but one of Alice's devices, so
        # his node looks it up (by the DHT, through Alice's node) when it sends to it
        # (``Devices.whereabouts``: without it this test times out below).

        # Bob's message reaches both of Alice's devices.
        handle = await bob.send("Alice", "to both of you")
        for name in ("alice", "laptop"):
            got = await at[name].message(b"to both of you")
            assert got.sender == bob.identity.public and got.device is None and got.to is None
        # From the laptop: Bob sees Alice, the laptop named; Alice's phone sees it as sent to Bob.
        from_laptop = await laptop.send("Bob", "from the laptop")
        got = await at["bob"].message(b"from the laptop")
        assert got.sender == alice.identity.public and got.device == laptop_id.public
        assert got.contact is not None and got.contact.name == "Alice"
        copy = await at["alice"].message(b"from the laptop")
        assert copy.sender == alice.identity.public and copy.device == laptop_id.public
        assert copy.to is not None and copy.to.public == bob.identity.public
        # Bob's read receipt goes to the device that sent (the laptop), and moves its record.
        bob.mark_read(got)
        with trio.fail_after(WAIT):
            await from_laptop.wait_until(OutboxStatus.READ)
        # From the phone: Bob gets it, and the laptop shows it as Alice's message to Bob.
        await alice.send("Bob", "from the phone")
        got = await at["bob"].message(b"from the phone")
        assert got.sender == alice.identity.public and got.device is None
        copy = await at["laptop"].message(b"from the phone")
        assert copy.to is not None and copy.to.public == bob.identity.public and copy.device is None
        with trio.fail_after(WAIT):
            await handle.wait_until(OutboxStatus.DELIVERED)

        # Alice removes the laptop: Bob hears of it; nothing sent afterwards is sealed to it.
        removed = alice.devices.remove("laptop")
        assert removed.device.key == laptop_id.public.ed25519 and len(removed.lists) == 1
        change = await at["bob"].wait(lambda e: isinstance(e, DeviceListChanged) and bool(e.removed))
        assert isinstance(change, DeviceListChanged)
        assert [d.key for d in change.removed] == [laptop_id.public.ed25519]
        with pytest.raises(UnknownDevice):
            alice.devices.remove("laptop")
        with pytest.raises(DeviceError, match="approved already"):  # the same request cannot bring it back
            await alice.devices.approve(request.to_text(), code=request.code())
        assert [d.name for d in alice.devices.list()] == ["primary"]
        after = await bob.send("Alice", "after the removal")
        assert [r.recipient for r in bob._messenger.siblings(after.message_id)] == [alice_id.public.ed25519]
        mine = await alice.send("Bob", "alice after the removal")
        assert [r.recipient for r in alice._messenger.siblings(mine.message_id)] == [bob_id.public.ed25519]
        await at["alice"].message(b"after the removal")
        await at["bob"].message(b"alice after the removal")
        assert b"after the removal" not in at["laptop"].bodies()
        assert b"alice after the removal" not in at["laptop"].bodies()


def test_the_snapshot_is_trimmed_to_fit_and_round_trips() -> None:
    invite = "MESHCHAT:" + "A" * 3000
    contacts = [(f"friend {i}", "MESHCHAT:" + "B" * 3000) for i in range(40)]
    data, left_out = encode_snapshot("Alice", invite, contacts)
    assert len(data) <= MAX_SNAPSHOT and 0 < left_out < 40
    name, root, kept = decode_snapshot(data)
    assert (name, root) == ("Alice", invite) and kept == contacts[: 40 - left_out]
    assert encode_snapshot("Alice", invite, contacts[:3])[1] == 0
    with pytest.raises(DeviceError):
        decode_snapshot(b"[]")


@pytest.mark.xfail(
    strict=False,
    reason="open bug (pre-existing, on 08921f8~1 too): under CPU load (4 copies at once beside a busy "
    "loop: 2 of 4 fail; alone 0 of 3) the restarted laptop's copy to Alice never reaches her within 20 s "
    "(bimodal: 4 s or never), while its message to Bob does; not yet found",
)
async def test_a_linked_device_keeps_its_person_across_a_restart(tmp_path: Path) -> None:
    """The laptop's node starts again: it is still Alice's device (root, list, her invite from
    ``root_invite.txt``), and what it sends reaches Bob as Alice and shows on her phone."""
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    laptop_dir, laptop_id = make_profile(tmp_path, "laptop", 5)
    async with AsyncExitStack() as stack:
        bob = await stack.enter_async_context(Node.open(bob_dir, listen=LOCAL, store_config=FAST_RETRY))
        alice = await stack.enter_async_context(Node.open(alice_dir, listen=LOCAL, store_config=FAST_RETRY))
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        at_alice, at_bob = Events(alice), Events(bob)
        nursery.start_soon(at_alice.run)
        nursery.start_soon(at_bob.run)
        alice.contacts.add(Invite.create(bob_id, name="Bob", addrs=bob.listen_addrs).to_text())
        bob.contacts.add(Invite.create(alice_id, name="Alice", addrs=alice.listen_addrs).to_text())
        async with Node.open(laptop_dir, listen=LOCAL, store_config=FAST_RETRY) as laptop:
            approved = await alice.devices.approve(laptop.devices.link(name="laptop").to_text())
            await laptop.devices.wait_linked(WAIT)
            with trio.fail_after(WAIT):
                await approved.grant.wait_until(OutboxStatus.DELIVERED)
        async with Node.open(laptop_dir, listen=LOCAL, store_config=FAST_RETRY) as laptop:
            assert laptop.devices.root == alice_id.public and not laptop.devices.is_primary
            assert laptop.devices.root_invite is not None
            assert laptop.devices.root_invite.public == alice_id.public
            assert [d.name for d in laptop.devices.list()] == ["primary", "laptop"]
            sent = await laptop.send("Bob", "after a restart")
            got = await at_bob.message(b"after a restart")
            assert got.sender == alice_id.public and got.device == laptop_id.public
            copy = await at_alice.message(b"after a restart")
            assert copy.to is not None and copy.to.public == bob_id.public
            with trio.fail_after(WAIT):
                await sent.wait_until(OutboxStatus.DELIVERED)
