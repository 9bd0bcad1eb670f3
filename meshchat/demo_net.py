"""The network half of ``meshchat demo``: four nodes on 127.0.0.1, sealed messages over real TCP.

Alice and Bob each run a node; two relays between them join every inbox shard and carry envelopes they
cannot read. Alice's node dials only the first relay, Bob's only the second, so every message crosses
three hops of TCP + Noise + yamux (Alice -> relay 1 -> relay 2 -> Bob). The demo prints the path, the
time from ``send`` to Bob's verified ``DirectMessage`` for each message, and what each relay delivered
to its own application (nothing readable).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import trio

from meshchat.crypto import epoch_of, inbox_tag, inbox_topic
from meshchat.errors import MeshchatError
from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.node import Node

__all__ = ["NETWORK_DEMO_TIMEOUT", "run_network_demo"]

#: Seconds the whole network demo may take before it gives up (it needs ~2 s: meshes form in a heartbeat).
NETWORK_DEMO_TIMEOUT = 30.0
LOCAL = ["/ip4/127.0.0.1/tcp/0"]


class NetworkDemoFailed(MeshchatError):
    """A promise the network demo shows did not hold."""


async def run_network_demo(
    alice: Identity, bob: Identity, texts: list[str], say: Callable[..., Any]
) -> dict[str, object]:
    """Send ``texts`` from Alice to Bob across two relays; return the path, timings and relay views."""
    with trio.fail_after(NETWORK_DEMO_TIMEOUT):
        async with AsyncExitStack() as stack:
            bob_node = await stack.enter_async_context(Node.open(identity=bob, listen=LOCAL))
            relays = [
                await stack.enter_async_context(
                    Node.open(identity=Identity.generate(), listen=LOCAL, relay_inbox_shards=True)
                )
                for _ in range(2)
            ]
            alice_node = await stack.enter_async_context(Node.open(identity=alice, listen=LOCAL))
            await relays[1].connect(bob_node.listen_addrs[0])
            await relays[0].connect(relays[1].listen_addrs[0])
            await alice_node.connect(relays[0].listen_addrs[0])
            path = [alice_node, *relays, bob_node]
            topic = inbox_topic(inbox_tag(bob.public, epoch_of(time.time())))
            # Each hop forwards to its mesh for Bob's shard: wait until the line is meshed.
            for left, right in itertools.pairwise(path[1:]):
                await left.wait_for(functools.partial(_meshed, left, right, topic))
            await alice_node.wait_for(
                lambda: relays[0].peer_id in alice_node.driver.router.topic_peers(topic)
            )
            names = ["Alice", "relay 1", "relay 2", "Bob"]
            hops = " → ".join(f"{name} ({_short(n)})" for name, n in zip(names, path, strict=True))
            say(f"\n[bold]7. over the network[/] (TCP + Noise + yamux on 127.0.0.1): {hops}")
            timings = []
            for text in texts:
                started = time.perf_counter()
                handle = await alice_node.send(bob.public, text)
                got = await _direct(bob_node, handle.message_id)
                elapsed = (time.perf_counter() - started) * 1000
                if got.body.decode() != text or got.sender != alice.public:
                    raise NetworkDemoFailed(
                        f"Bob got {got.body!r} from {got.sender}, not {text!r} from Alice"
                    )
                timings.append(round(elapsed, 2))
                say(f"  {elapsed:6.2f} ms  Bob got, verified from Alice: {text}")
            readable = [_readable(relay) for relay in relays]
            say(
                f"  relays handled {[r.driver.router.statistics().delivered for r in relays]} envelopes each;"
                f" readable messages for them: {sum(readable)}"
            )
            return {
                "path": [n.peer_id for n in path],
                "hops": len(path) - 1,
                "latency_ms": timings,
                "relay_envelopes": [r.driver.router.statistics().delivered for r in relays],
                "relay_readable": sum(readable),
            }
    raise AssertionError("unreachable")


def _meshed(node: Node, peer: Node, topic: str) -> bool:
    return peer.peer_id in node.driver.router.mesh.get(topic, ())


async def _direct(node: Node, mid: bytes) -> DirectMessage:
    async for event in node.events():
        if isinstance(event, DirectMessage) and event.message_id == mid:
            return event
    raise NetworkDemoFailed("the node closed before the message arrived")


def _readable(relay: Node) -> int:
    """Direct messages a relay's application received (it joined every shard: it should read none)."""
    count = 0
    while True:
        try:
            event = relay.events().receive_nowait()
        except trio.WouldBlock:
            return count
        count += isinstance(event, DirectMessage)


def _short(node: Node) -> str:
    return f"{node.peer_id[:6]}…{node.peer_id[-4:]}"
