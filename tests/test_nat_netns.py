"""Two people, each behind their own NAT gateway, chat through a circuit relay on the "public" switch,
then hole-punch to a direct connection (DCUtR: ``meshchat.net.punch``); behind NATs that map every
connection to a random port the punch fails within ``PUNCH_TIMEOUT`` and the relay keeps delivering.

Real ``meshchat`` processes in network namespaces the test makes (``tests/nat_harness.py``); needs
root, iproute2 and nftables (skipped off CI without them, failed under ``CI=true``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import make_profile
from libp2p.peer.id import ID
from nat_harness import nat_chat, of, texts
from processes import stop_processes

from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.net.punch import PUNCH_TIMEOUT, DirectConnection, PunchStatistics, relayed
from meshchat.node import Node
from meshchat.wire import Invite

#: Seconds any one wait may take (generous: two cores shared with other tests).
WAIT = 60.0
LOCAL = ["/ip4/127.0.0.1/tcp/0"]


@pytest.mark.slow
async def test_behind_two_port_preserving_nats_the_chat_goes_through_the_relay_then_direct(
    tmp_path: Path,
) -> None:
    async with nat_chat(tmp_path, tag="p") as chat:
        await chat.say("через реле")
        await chat.bob_has(1, timeout=WAIT)
        # Both ends report the direct connection, each at the other's gateway (its NAT mapping).
        await chat.bob.wait_for(lambda: bool(of(chat.bob, "direct_connection")), timeout=WAIT)
        await chat.alice.wait_for(lambda: bool(of(chat.alice, "direct_connection")), timeout=WAIT)
        assert of(chat.bob, "direct_connection")[0]["address"].startswith("/ip4/203.0.113.2/tcp/")
        assert of(chat.alice, "direct_connection")[0]["address"].startswith("/ip4/203.0.113.3/tcp/")
        assert of(chat.bob, "punch_failed") == []
        # The relay goes away: what Alice types now can only travel on the punched connection.
        await stop_processes([chat.relay.process])
        await chat.say("напрямую 1", "напрямую 2")
        await chat.bob_has(3, timeout=WAIT)
        assert texts(chat.bob) == ["через реле", "напрямую 1", "напрямую 2"]


@pytest.mark.slow
async def test_behind_two_random_port_nats_the_punch_fails_in_bounded_time_and_the_relay_delivers(
    tmp_path: Path,
) -> None:
    async with nat_chat(tmp_path, fully_random=True, tag="r") as chat:
        await chat.say("раз")
        await chat.bob_has(1, timeout=WAIT)
        await chat.bob.wait_for(lambda: bool(of(chat.bob, "punch_failed")), timeout=PUNCH_TIMEOUT + WAIT)
        failed = of(chat.bob, "punch_failed")[0]
        assert failed["after_s"] <= PUNCH_TIMEOUT + 5  # the punch's own bound (plus a loaded machine)
        assert of(chat.bob, "direct_connection") == of(chat.alice, "direct_connection") == []
        await chat.say("два", "три")  # still through the relay
        await chat.bob_has(3, timeout=WAIT)
        assert texts(chat.bob) == ["раз", "два", "три"]


# --- on one machine (no namespaces): the relayed connection replaced, the chat moving with it -------


async def test_a_relayed_connection_is_replaced_by_a_direct_one_and_the_chat_moves_to_it(
    tmp_path: Path,
) -> None:
    """On 127.0.0.1 Dave can dial Alice's own address: the punch is DCUtR's direct dial (no NAT), the
    relayed connections are closed on both sides and the chat goes on over the direct one (the
    gossip stream moved: the driver counts it)."""
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    dave_dir, dave_id = make_profile(tmp_path, "dave", 11)
    async with (
        Node.open(identity=Identity(b"\x0d" * 32), listen=LOCAL, circuit_relay=True, dht=False) as relay,
        Node.open(dave_dir, listen=LOCAL, dht=False, hole_punch=True) as dave,
        Node.open(alice_dir, listen=LOCAL, dht=False, hole_punch=True) as alice,
    ):
        with trio.fail_after(WAIT):
            relayed = await dave.reserve(relay.listen_addrs[0])
        alice.contacts.add(Invite.create(dave_id, name="Dave", addrs=[relayed]).to_text())
        dave.contacts.add(Invite.create(alice_id, name="Alice").to_text())
        await alice.send("Dave", "один")
        got: list[str] = []
        punched: list[DirectConnection] = []
        with trio.fail_after(WAIT):
            async for event in dave.events():
                if isinstance(event, DirectMessage):
                    got.append(event.body.decode())
                elif isinstance(event, DirectConnection):
                    punched.append(event)
                    await alice.send("Dave", "два")
                if len(got) == 2 and punched:
                    break
        assert got == ["один", "два"]
        assert punched[0].peer == alice.peer_id and punched[0].address.startswith("/ip4/127.0.0.1/tcp/")
        assert dave.punch_statistics() == PunchStatistics(attempted=1, direct=1, failed=0, timed_out=0)
        with trio.fail_after(WAIT):  # both sides closed their relayed connections to each other
            await alice.wait_for(lambda: not _relayed_to(alice, dave) and not _relayed_to(dave, alice))
        assert alice.punch_statistics() == PunchStatistics(attempted=0, direct=1, failed=0, timed_out=0)
        assert relay.punch_statistics() is None  # off by default
        # The closed relayed connections set off py-libp2p's AutoConnector; a dial of its cancelled
        # by the nodes closing would leave its socket open (py-libp2p 0.8.1): let it finish first.
        await trio.testing.wait_all_tasks_blocked(cushion=0.5)


def _relayed_to(node: Node, other: Node) -> bool:
    conns = node.host.get_network().connections.get(ID.from_base58(other.peer_id), [])
    return any(relayed(c) and not c.is_closed for c in conns)
