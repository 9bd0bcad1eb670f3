"""Sealed direct messages over the real network: Alice sends to Bob's inbox shard, directly or through
a relay that joins every shard; only Bob can open it, and a forged or replayed envelope is not delivered."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from conftest import make_profile

from meshchat.contacts import CONTACTS_FILE, Contacts
from meshchat.crypto import epoch_of, inbox_tag, inbox_topic, seal
from meshchat.crypto.stamps import DEFAULT_STAMP_COST, stamp_envelope
from meshchat.errors import NetworkError, ProfileError, UnknownPeer
from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.net import MessageDelivered
from meshchat.node import Node
from meshchat.sessions.session import PeerSessions
from meshchat.store.messenger import StoreConfig
from meshchat.store.payload import Chat, encode_payload
from meshchat.store.storage import OutboxStatus
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 15.0
#: Retry after half a second (the default is 10 s): a message sent before the mesh formed comes soon.
FAST_RETRY = StoreConfig(retry_initial=0.5)


async def next_direct(node: Node) -> DirectMessage:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, DirectMessage):
                return event
    raise AssertionError("unreachable")


async def subscribed(node: Node, peer: str, topic: str) -> None:
    with trio.fail_after(WAIT):
        await node.wait_for(lambda: peer in node.driver.router.topic_peers(topic))


@asynccontextmanager
async def alice_and_bob(tmp_path: Path, *, relay: bool) -> AsyncIterator[tuple[Node, Node, Node | None]]:
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    async with AsyncExitStack() as stack:
        bob = await stack.enter_async_context(Node.open(bob_dir, listen=LOCAL, store_config=FAST_RETRY))
        middle = None
        if relay:
            middle = await stack.enter_async_context(
                Node.open(identity=Identity(b"\x03" * 32), listen=LOCAL, relay_inbox_shards=True)
            )
            await middle.connect(bob.listen_addrs[0])
        alice = await stack.enter_async_context(Node.open(alice_dir, listen=LOCAL, store_config=FAST_RETRY))
        invite = Invite.create(bob_id, name="Bob", addrs=[] if relay else bob.listen_addrs)
        alice.contacts.add(invite.to_text())
        bob.contacts.add(Invite.create(alice_id, name="Alice").to_text())
        if middle is not None:
            await alice.connect(middle.listen_addrs[0])
        yield alice, bob, middle


def bobs_topic(bob: Node) -> str:
    return inbox_topic(inbox_tag(bob.identity.public, epoch_of(time.time())))


async def test_alice_reaches_bob_directly_by_the_address_in_his_invite(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path, relay=False) as (alice, bob, _):
        assert not alice.host.get_network().connections
        # The first send dials the address in Bob's invite; until Alice has heard Bob's subscription
        # it reaches nobody, so the outbox keeps it and publishes it again a moment later.
        first = await alice.send("Bob", "hello?")
        await subscribed(alice, bob.peer_id, bobs_topic(bob))
        second = await alice.send("Bob", "Привет, Боб! 🔐")
        got = {}
        for _ in range(2):
            message = await next_direct(bob)
            got[message.message_id] = message
        assert got[first.message_id].body == b"hello?"
        message = got[second.message_id]
        assert message.body.decode() == "Привет, Боб! 🔐"
        assert message.sender == alice.identity.public
        assert message.contact is not None and message.contact.name == "Alice"
        assert message.seq == 2 and got[first.message_id].seq == 1
        with trio.fail_after(WAIT):  # Bob's signed receipts come back: both delivered
            await first.wait_until(OutboxStatus.DELIVERED)
            await second.wait_until(OutboxStatus.DELIVERED)


async def test_a_relay_carries_the_envelope_without_being_able_to_read_it(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path, relay=True) as (alice, bob, middle):
        assert middle is not None
        topic = bobs_topic(bob)
        with trio.fail_after(WAIT):  # the relay forwards to its mesh: Bob must be in it (a heartbeat)
            await middle.wait_for(lambda: bob.peer_id in middle.driver.router.mesh.get(topic, ()))
        await subscribed(alice, middle.peer_id, topic)
        mid = (await alice.send("Bob", "через ретранслятор")).message_id
        message = await next_direct(bob)
        assert message.body.decode() == "через ретранслятор"
        assert message.message_id == mid
        # The relay handled the envelope, but as bytes it cannot open: no DirectMessage for it.
        assert middle.driver.router.statistics().delivered >= 1
        seen: list[object] = []
        while True:
            try:
                seen.append(middle.events().receive_nowait())
            except trio.WouldBlock:
                break
        assert not [e for e in seen if isinstance(e, DirectMessage)]
        assert not [e for e in seen if isinstance(e, MessageDelivered) and e.topic == topic]


async def test_an_envelope_for_bob_sealed_by_a_stranger_is_delivered_with_no_contact(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path, relay=False) as (alice, bob, _):
        await alice.driver.join(bobs_topic(bob))
        await alice.connect(bob.listen_addrs[0])
        await subscribed(alice, bob.peer_id, bobs_topic(bob))
        stranger = Identity(b"\x09" * 32)
        payload = encode_payload(Chat(seq=1, body=b"who am I?"))
        # A session from the stranger's side (no bundle: from Bob's identity key alone), as its node would.
        body = PeerSessions().encrypt(
            stranger, bob.identity.public, payload, bundle=None, wall_now=time.time(), random_bytes=os.urandom
        )
        sealed = seal(stranger, bob.identity.public, body, wall_now=time.time())
        # A stranger's first chat carries a stamp (issue 18): without one Bob would drop it unread.
        await alice.publish(bobs_topic(bob), stamp_envelope(sealed, DEFAULT_STAMP_COST))
        message = await next_direct(bob)
        assert message.sender == stranger.public and message.contact is None
        # A flipped byte in the ciphertext: relayed (it still decodes) but Bob cannot open it.
        forged = sealed[:-1] + bytes([sealed[-1] ^ 1])
        await alice.publish(bobs_topic(bob), forged)
        with trio.fail_after(WAIT):
            await bob.wait_for(lambda: sum(bob.inbox_rejected.values()) == 1)
        assert bob.inbox_rejected == {"DecryptionFailed": 1}


async def test_contacts_persist_and_unknown_names_are_typed_errors(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "carol", 4)
    contacts = Contacts(folder)
    invite = Invite.create(Identity(b"\x05" * 32), name="Dave").to_text()
    contacts.add(invite)
    contacts.add(invite, name="Dave from work")  # same key: replaced, not duplicated
    again = Contacts(folder)
    assert [c.name for c in again] == ["Dave from work"]
    assert again.find("Dave from work").public == Identity(b"\x05" * 32).public
    with pytest.raises(UnknownPeer):
        again.find("Eve")
    (folder / CONTACTS_FILE).write_text('{"contacts": [{"invite": "MESHCHAT:AAAA"}]}')
    with pytest.raises(ProfileError, match="no longer verifies"):
        Contacts(folder)
    async with Node.open(identity=Identity(b"\x06" * 32), listen=LOCAL) as node:
        with pytest.raises(ProfileError):
            _ = node.contacts


async def test_a_contact_without_an_address_is_found_through_the_dht(tmp_path: Path) -> None:
    """Alice knows only Carol's key (her invite has no address) and one bootstrap peer; a DHT lookup
    through that peer finds Carol's address, Alice dials her and the message arrives."""
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    carol_dir, carol_id = make_profile(tmp_path, "carol", 7)
    async with (
        Node.open(identity=Identity(b"\x08" * 32), listen=LOCAL) as hub,
        Node.open(carol_dir, listen=LOCAL, bootstrap=[hub.listen_addrs[0]]) as carol,
        Node.open(alice_dir, listen=LOCAL, bootstrap=[hub.listen_addrs[0]]) as alice,
    ):
        alice.contacts.add(Invite.create(carol_id, name="Carol").to_text())  # no addrs
        with trio.fail_after(WAIT):
            found = await alice.find_peer(carol.peer_id)
        assert any("/ip4/127.0.0.1/tcp/" in a and a.endswith(carol.peer_id) for a in found)
        await alice.send("Carol", "hello?")  # dials Carol at the address the DHT gave
        assert carol.peer_id in {str(p) for p in alice.host.get_network().connections}
        await subscribed(alice, carol.peer_id, bobs_topic(carol))
        mid = (await alice.send("Carol", "нашла тебя через DHT")).message_id
        while (message := await next_direct(carol)).message_id != mid:
            assert message.body == b"hello?"
        assert message.body.decode() == "нашла тебя через DHT"


async def test_find_peer_without_the_dht_is_a_network_error() -> None:
    async with Node.open(identity=Identity(b"\x0c" * 32), listen=LOCAL, dht=False) as node:
        with pytest.raises(NetworkError, match="without the DHT"):
            await node.find_peer(node.peer_id)


async def test_a_peer_behind_a_circuit_relay_is_reached_through_its_reservation(tmp_path: Path) -> None:
    """Dave reserves a slot on a circuit relay v2 and hands out the relayed address; Alice dials that
    address (the connection runs through the relay) and her sealed message arrives."""
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    dave_dir, dave_id = make_profile(tmp_path, "dave", 11)
    async with (
        Node.open(identity=Identity(b"\x0d" * 32), listen=LOCAL, circuit_relay=True) as relay,
        Node.open(dave_dir, listen=LOCAL) as dave,
        Node.open(alice_dir, listen=LOCAL) as alice,
    ):
        with trio.fail_after(WAIT):
            relayed = await dave.reserve(relay.listen_addrs[0])
        assert relayed == f"{relay.listen_addrs[0]}/p2p-circuit/p2p/{dave.peer_id}"
        alice.contacts.add(Invite.create(dave_id, name="Dave", addrs=[relayed]).to_text())
        await alice.send("Dave", "hello?")  # dials the relayed address in Dave's invite (in the background)
        network = alice.host.get_network()
        with trio.fail_after(WAIT):
            await alice.wait_for(lambda: any(str(p) == dave.peer_id for p in network.connections))
        conns = {str(p): c for p, c in network.connections.items()}
        assert dave.peer_id in conns
        through = [str(a) for c in conns[dave.peer_id] for a in c.get_transport_addresses()]
        assert any("/p2p-circuit" in a for a in through), through  # not a direct connection
        await subscribed(alice, dave.peer_id, bobs_topic(dave))
        mid = (await alice.send("Dave", "через реле")).message_id
        while (message := await next_direct(dave)).message_id != mid:
            assert message.body == b"hello?"
        assert message.body.decode() == "через реле"


async def test_reserving_on_a_node_that_does_not_relay_is_a_network_error() -> None:
    async with (
        Node.open(identity=Identity(b"\x0e" * 32), listen=LOCAL) as plain,
        Node.open(identity=Identity(b"\x0f" * 32), listen=LOCAL) as other,
    ):
        with trio.fail_after(WAIT), pytest.raises(NetworkError):
            await other.reserve(plain.listen_addrs[0])
