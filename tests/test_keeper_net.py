"""Real nodes on 127.0.0.1 keep themselves connected: a node whose peers go away redials peers it knows,
and a connection a censor silently stalls after 16 KB is noticed by the keepalive's libp2p ping,
closed, and dialled again (a new connection through the censor), so every message still arrives.

Every wait is bounded by ``trio.fail_after``; the keepalive's timers are real time, kept small here.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from censor_proxy import censor_proxy, only_through
from conftest import make_profile
from libp2p.peer.id import ID

from meshchat.gossip.keeper import KeepaliveConfig, KeeperConfig
from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.net import MessageDelivered
from meshchat.net.keeper_driver import KeeperOptions
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.wire import Invite

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
            before = a.statistics().keeper
            assert before is not None
        # the hub and p1 are stopped: A has p2 only
        with trio.fail_after(WAIT):
            await a.wait_for(lambda: len(a.host.get_connected_peers()) >= 3)
        connected = {p.to_base58() for p in a.host.get_connected_peers()}
        assert {p2.peer_id, p3.peer_id, p4.peer_id} <= connected
        stats = a.statistics().keeper
        assert stats is not None and stats.redials - before.redials >= 2
        succeeded = (stats.redials - stats.redial_failures) - (before.redials - before.redial_failures)
        assert succeeded >= 2  # p3 and p4 (the hub and p1 fail, if tried)
        # gossip flows both ways over the new connections (flood publishing: to every topic peer, so
        # this does not wait on mesh grafts, which a PRUNE backoff from the hang-up above may delay)
        with trio.fail_after(WAIT):
            await a.wait_for(lambda: p3.peer_id in a.driver.router.topic_peers(TOPIC))
            await p4.wait_for(lambda: a.peer_id in p4.driver.router.topic_peers(TOPIC))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, a, b"from p4")
                await p4.publish(TOPIC, b"from p4")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, p3, b"from a")
                await a.publish(TOPIC, b"from a")


@pytest.mark.slow  # 20-60 s: every connection carries 16 KB, handshakes and syncs included, then stalls
async def test_a_connection_a_censor_stalls_after_16k_is_noticed_closed_and_dialled_again(
    tmp_path: Path,
) -> None:
    """Alice reaches Bob only through a proxy that silently stops forwarding a connection once it carried
    16 KB (no reset: both sockets stay open). Alice sends more than 16 KB of messages: the keepalive
    notices the silence (a libp2p ping unanswered), closes the connection and Alice dials Bob again
    through the proxy (a new connection with a new budget); every message arrives."""
    alice_dir, alice_id = make_profile(tmp_path, "alice", 21)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 22)
    fast = StoreConfig(retry_initial=1.0, retry_max=2.0)
    alice_keeps = KeeperOptions(
        keeper=KeeperConfig(floor=1, target=1), keepalive=FAST_KEEPALIVE, interval=0.2
    )
    # Bob notices stalls too, but never dials (his address book would take him around the proxy)
    bob_keeps = KeeperOptions(keeper=None, keepalive=FAST_KEEPALIVE)
    count, size = 12, 1500  # 18 KB of text, more in envelopes: one connection cannot carry it all
    async with Node.open(bob_dir, listen=LOCAL, dht=False, keeper=bob_keeps) as bob:
        port = int(bob.listen_addrs[0].split("/tcp/")[1].split("/")[0])
        async with censor_proxy(port, CUT_BYTES) as proxy:
            proxied = f"/ip4/127.0.0.1/tcp/{proxy.port}/p2p/{bob.peer_id}"
            # Alice's every route to Bob crosses the censor (no listen address for Bob to dial
            # around it, her dials elsewhere refused): her links to him go through it or nowhere
            async with Node.open(
                alice_dir, listen=[], dht=False, keeper=alice_keeps, store_config=fast
            ) as alice:
                only_through(alice, proxy.port)
                alice.contacts.add(Invite.create(bob_id, name="Bob", addrs=[proxied]).to_text())
                bob.contacts.add(Invite.create(alice_id, name="Alice").to_text())
                with trio.fail_after(WAIT):
                    await alice.connect(proxied)
                # one after the other, each awaited: what a chat is, and what keeps the test about the
                # stall (not about how fast a backlog squeezes through a 16 KB budget)
                received: set[str] = set()
                with trio.fail_after(WAIT * 2):
                    for i in range(count):
                        body = f"{i:03d} " + "ж" * (size // 2)
                        await alice.send("Bob", body)
                        async for event in bob.events():
                            if isinstance(event, DirectMessage):
                                received.add(event.body.decode())
                                if body in received:
                                    break
                assert len(received) == count
                assert proxy.stalled >= 1  # the censor did stall a connection
                assert proxy.connections >= 2  # and Alice came back through it
                stats = [n.statistics().keeper for n in (alice, bob)]
                assert all(s is not None for s in stats)
                assert sum(s.stalls_closed for s in stats if s is not None) >= 1
                alice_stats = stats[0]
                assert alice_stats is not None and alice_stats.redials >= 1
                assert alice_stats.pings >= 1
