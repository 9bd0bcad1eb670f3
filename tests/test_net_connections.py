"""Two connections to one peer at once: what a redial after a stall, a punch or a moved laptop makes.

Issue 17's 16 KB stall test (``tests/test_censor.py``) took 12 s in most runs and more than 300 s in
some: a peer that gave a stalled connection up and dialled again reached us before our side of the old
connection closed, and (1) py-libp2p 0.8.1's ``Swarm.close_peer`` (``host.disconnect``), closing the old
one, dropped the new one from its records without closing it, and (2) our gossip link stayed on the old
connection's stream, so the peer, which had started afresh, never heard our subscriptions again. Here
both, on 127.0.0.1, made to happen in that order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import trio
from libp2p.abc import INetConn
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from meshchat.identity import Identity
from meshchat.net import MessageDelivered, PeerLeft
from meshchat.net.host import close_connections
from meshchat.node import Node

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
TOPIC = "lobby"
WAIT = 15.0


async def wait_for(node: Node, condition: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        await node.wait_for(condition)


def connections(node: Node, other: Node) -> list[INetConn]:
    return list(node.host.get_network().connections.get(ID.from_base58(other.peer_id), []))


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    """Alice and Bob, both in TOPIC's mesh, Alice having dialled Bob once."""
    async with AsyncExitStack() as stack:
        alice, bob = [
            await stack.enter_async_context(Node.open(identity=Identity(bytes([n]) * 32), listen=LOCAL))
            for n in (1, 2)
        ]
        for node in (alice, bob):
            await node.subscribe(TOPIC)
        await alice.connect(bob.listen_addrs[0])
        for node in (alice, bob):
            await wait_for(node, lambda n=node: len(n.driver.router.mesh.get(TOPIC, ())) == 1)  # type: ignore[misc]
        yield alice, bob


async def dial_again(alice: Node, bob: Node) -> None:
    """A second connection from Alice to Bob (``connect`` would return the first), seen by both."""
    address = Multiaddr(bob.listen_addrs[0].split("/p2p/")[0])
    await alice.host.get_network().dial_addr(address, ID.from_base58(bob.peer_id))
    await wait_for(bob, lambda: len(connections(bob, alice)) == 2)


async def next_message(node: Node) -> bytes:
    with trio.fail_after(WAIT):
        async for event in node.events():
            assert not isinstance(event, PeerLeft), "hung up on"
            if isinstance(event, MessageDelivered):
                return event.data
    raise AssertionError("events ended")


async def test_closing_a_peers_connections_keeps_one_that_arrived_meanwhile() -> None:
    async with pair() as (alice, bob):
        (old,) = connections(bob, alice)
        close = old.close
        arrived: list[INetConn] = []

        async def close_late() -> None:  # Alice redials while Bob is closing the old connection
            await dial_again(alice, bob)
            arrived.extend(c for c in connections(bob, alice) if c is not old)
            await close()

        old.close = close_late  # type: ignore[method-assign]
        await close_connections(bob.host, ID.from_base58(alice.peer_id))

        # py-libp2p's close_peer dropped the new one from the swarm's records and left it open
        (new,) = arrived
        assert old.is_closed and old not in connections(bob, alice)
        assert not new.is_closed and new in connections(bob, alice)
        await alice.publish(TOPIC, b"on the new connection")
        assert await next_message(bob) == b"on the new connection"


async def test_a_link_whose_connection_closes_moves_to_the_other_and_says_its_subscriptions_again() -> None:
    async with pair() as (alice, bob):
        (old,) = connections(bob, alice)
        await dial_again(alice, bob)
        received = bob.statistics().frames_received
        await old.close()  # Bob gives the first connection up; both links ran on it

        # Bob's writer moves to the second connection at once (not at its next message) and opens
        # its new stream with his subscriptions; Alice's moves too; nobody is hung up on
        await wait_for(alice, lambda: alice.driver.streams_moved == 1 and bob.driver.streams_moved == 1)
        await wait_for(bob, lambda: bob.statistics().frames_received > received)  # Alice's hello
        assert alice.driver.router.topic_peers(TOPIC) == {bob.peer_id}
        await bob.publish(TOPIC, b"from Bob")
        assert await next_message(alice) == b"from Bob"
        await alice.publish(TOPIC, b"from Alice")
        assert await next_message(bob) == b"from Alice"
        assert [c.is_closed for c in connections(bob, alice)] == [False]
