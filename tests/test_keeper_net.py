"""Real nodes on 127.0.0.1 keep themselves connected: a node whose peers go away redials peers it knows,
and a connection a censor silently stalls after 16 KB is noticed by the keepalive's libp2p ping,
closed, and dialled again (a new connection through the censor), so every message still arrives.

Every wait is bounded by ``trio.fail_after``; the keepalive's timers are real time, kept small here.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from libp2p.peer.id import ID

from meshchat.gossip.keeper import KeepaliveConfig, KeeperConfig
from meshchat.identity import Identity
from meshchat.net import MessageDelivered
from meshchat.net.keeper_driver import KeeperOptions
from meshchat.node import Node

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
TOPIC = "lobby"
WAIT = 45.0
#: A censor's per-connection budget, as in ``meshchat sim --scenario cut-16k``.
CUT_BYTES = 16 * 1024
#: Test timers: ping after 0.5 s of silence, give up 1.5 s later (generous for a loaded machine).
FAST_KEEPALIVE = KeepaliveConfig(idle=0.5, timeout=1.5)


def identity(n: int) -> Identity:
    return Identity(bytes([n]) * 32)


async def receive(node: Node, data: bytes) -> None:
    """Wait for ``data`` on TOPIC at ``node``."""
    async for event in node.events():
        if isinstance(event, MessageDelivered) and event.data == data:
            return


async def test_a_node_below_the_floor_redials_peers_it_knows_and_messages_flow() -> None:
    """A is connected to a hub and two others and knows two more (it was connected to them before);
    the hub and one peer stop, leaving A one connection under a floor of three: A's keeper dials the
    peers it knows (the dead ones fail, counted), is back at three, and gossip flows again."""
    keep = KeeperOptions(
        keeper=KeeperConfig(floor=3, target=3, retry_after=60.0), keepalive=None, interval=0.2
    )
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            Node.open(identity=identity(9), listen=LOCAL, dht=False, keeper=keep)
        )
        p2, p3, p4 = [
            await stack.enter_async_context(
                Node.open(identity=identity(i), listen=LOCAL, dht=False, keeper=None)
            )
            for i in (3, 4, 5)
        ]
        async with AsyncExitStack() as doomed:  # the hub and p1: stopped half-way
            hub, p1 = [
                await doomed.enter_async_context(
                    Node.open(identity=identity(i), listen=LOCAL, dht=False, keeper=None)
                )
                for i in (1, 2)
            ]
            for node in (a, hub, p1, p2, p3, p4):
                await node.subscribe(TOPIC)
            with trio.fail_after(WAIT):
                for peer in (p1, p2, p3, p4):
                    await peer.connect(hub.listen_addrs[0])
                for peer in (hub, p1, p2, p3, p4):
                    await a.connect(peer.listen_addrs[0])
                for peer in (p3, p4):  # A knows them (its peerstore keeps their addresses); not connected
                    await a.host.disconnect(ID.from_base58(peer.peer_id))
                await a.wait_for(lambda: len(a.host.get_connected_peers()) == 3)
            stats = a.statistics().keeper
            assert stats is not None and stats.redials == 0  # at the floor: nothing to do
        # the hub and p1 are stopped: A has p2 only
        with trio.fail_after(WAIT):
            await a.wait_for(lambda: len(a.host.get_connected_peers()) >= 3)
        connected = {p.to_base58() for p in a.host.get_connected_peers()}
        assert {p2.peer_id, p3.peer_id, p4.peer_id} <= connected
        stats = a.statistics().keeper
        assert stats is not None and stats.redials >= 2
        assert stats.redials - stats.redial_failures >= 2  # p3 and p4 (the hub and p1 fail, if tried)
        # gossip flows both ways over the new connections
        with trio.fail_after(WAIT):
            await a.wait_for(lambda: len(a.driver.router.mesh.get(TOPIC, ())) >= 2)
            await p4.wait_for(lambda: a.peer_id in p4.driver.router.mesh.get(TOPIC, ()))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, a, b"from p4")
                await p4.publish(TOPIC, b"from p4")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, p3, b"from a")
                await a.publish(TOPIC, b"from a")
