"""The network half of ``meshchat demo`` (``meshchat.cli.demo``): four nodes on 127.0.0.1, sealed
messages over real TCP.

Alice and Bob each run a node; two relays between them join every inbox shard and carry envelopes they
cannot read. Alice's node dials only the first relay, Bob's only the second, so every message crosses
three hops of TCP + Noise + yamux (Alice -> relay 1 -> relay 2 -> Bob). The demo prints the path, the
time from ``send`` to Bob's verified ``DirectMessage`` for each message, and what each relay delivered
to its own application (nothing readable).

Then store-and-forward: Bob goes offline, Alice sends again; relay 1, which is also a mailbox, keeps
the envelopes (unread). Bob comes back, syncs from it and gets them in order, and his signed receipts
turn Alice's outbox entries to "delivered".
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import trio

from meshchat.crypto import inbox_topic_at
from meshchat.errors import MeshchatError
from meshchat.i18n import _
from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.node import Node
from meshchat.store.storage import MemoryStorage, OutboxStatus

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
            bob_storage = MemoryStorage()  # Bob's store outlives his node: he goes offline and back
            bob_online = await stack.enter_async_context(trio.open_nursery())
            bob_node, bob_scope = await _start(
                bob_online, Node.open(identity=bob, listen=LOCAL, storage=bob_storage)
            )
            relays = [
                await stack.enter_async_context(
                    Node.open(
                        identity=Identity.generate(),
                        listen=LOCAL,
                        relay_inbox_shards=True,
                        mailbox=index == 0,
                    )
                )
                for index in range(2)
            ]
            alice_node = await stack.enter_async_context(Node.open(identity=alice, listen=LOCAL))
            await relays[1].connect(bob_node.listen_addrs[0])
            await relays[0].connect(relays[1].listen_addrs[0])
            await alice_node.connect(relays[0].listen_addrs[0])
            path = [alice_node, *relays, bob_node]
            topic = inbox_topic_at(bob.public, time.time())
            # Each hop forwards to its mesh for Bob's shard: wait until the line is meshed.
            for left, right in itertools.pairwise(path[1:]):
                await left.wait_for(functools.partial(_meshed, left, right, topic))
            await alice_node.wait_for(
                lambda: relays[0].peer_id in alice_node.driver.router.topic_peers(topic)
            )
            names = ["Alice", "relay 1", "relay 2", "Bob"]
            hops = " → ".join(f"{name} ({_short(n)})" for name, n in zip(names, path, strict=True))
            say(
                _("\n[bold]7. over the network[/] (TCP + Noise + yamux on 127.0.0.1): {hops}").format(
                    hops=hops
                )
            )
            timings = []
            live = []
            for text in texts:
                started = time.perf_counter()
                handle = await alice_node.send(bob.public, text)
                live.append(handle)
                got = await _direct(bob_node, handle.message_id)
                elapsed = (time.perf_counter() - started) * 1000
                if got.body.decode() != text or got.sender != alice.public:
                    raise NetworkDemoFailed(
                        f"Bob got {got.body!r} from {got.sender}, not {text!r} from Alice"
                    )
                timings.append(round(elapsed, 2))
                say(
                    _("  {elapsed:6.2f} ms  Bob got, verified from Alice: {text}").format(
                        elapsed=elapsed, text=text
                    )
                )
            readable = [_readable(relay) for relay in relays]
            carried = [r.driver.router.statistics().delivered for r in relays]
            say(
                _("  relays handled {carried} envelopes each; readable messages for them: {readable}").format(
                    carried=carried, readable=sum(readable)
                )
            )
            await alice_node.wait_for(lambda: relays[0].peer_id in alice_node.mailboxes)
            for handle in live:  # Bob's signed receipts came back
                await handle.wait_until(OutboxStatus.DELIVERED)
            say(
                _("  Alice's outbox: {statuses} (Bob's signed receipts)").format(
                    statuses=[h.status.value for h in live]
                )
            )
            bob_scope.cancel()  # Bob goes offline
            await alice_node.wait_for(lambda: bob_node.peer_id not in alice_node.driver.router.peers)
            offline = await _store_and_forward(alice_node, relays[0], bob, bob_storage, texts[:2], say)
            return {
                "offline": offline,
                "path": [n.peer_id for n in path],
                "hops": len(path) - 1,
                "latency_ms": timings,
                "relay_envelopes": carried,
                "relay_readable": sum(readable),
            }
    raise AssertionError("unreachable")


async def _start(
    nursery: trio.Nursery, opening: AbstractAsyncContextManager[Node]
) -> tuple[Node, trio.CancelScope]:
    """Enter ``opening`` in a task of ``nursery``; cancelling the returned scope closes the node."""

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            async with opening as node:
                task_status.started((node, scope))
                await trio.sleep_forever()

    started: tuple[Node, trio.CancelScope] = await nursery.start(run)
    return started


async def _store_and_forward(  # noqa: PLR0917 (one call site, every argument a different thing)
    alice_node: Node,
    mailbox: Node,
    bob: Identity,
    bob_storage: MemoryStorage,
    texts: list[str],
    say: Callable[..., Any],
) -> dict[str, object]:
    """Bob is offline: Alice's messages wait on the mailbox; Bob comes back and syncs; receipts return."""
    say(_("\n[bold]8. store-and-forward[/]: Bob goes offline; relay 1 is also a mailbox"))
    handles = [await alice_node.send(bob.public, f"(while you were away) {text}") for text in texts]
    for handle in handles:
        await handle.wait_until(OutboxStatus.STORED)
    held = mailbox.mailbox_statistics()
    statuses = [h.status.value for h in handles]
    say(
        _("  Alice's outbox: {statuses}; the mailbox holds them sealed ({bytes:,} bytes)").format(
            statuses=statuses, bytes=held.bytes if held else 0
        )
    )
    started = time.perf_counter()
    async with Node.open(
        identity=bob, listen=LOCAL, storage=bob_storage, mailboxes=[mailbox.listen_addrs[0]]
    ) as bob_node:
        got = await _direct_all(bob_node, [h.message_id for h in handles])
        elapsed = (time.perf_counter() - started) * 1000
        for message in got:
            say(
                _("  Bob, back online, synced #{seq}: {body}").format(
                    seq=message.seq, body=message.body.decode()
                )
            )
        for handle in handles:
            await handle.wait_until(OutboxStatus.DELIVERED)
    statuses = [h.status.value for h in handles]
    say(
        _("  {elapsed:.0f} ms from Bob's start to his inbox; Alice's outbox: {statuses}").format(
            elapsed=elapsed, statuses=statuses
        )
    )
    if [m.body.decode() for m in got] != [f"(while you were away) {t}" for t in texts]:
        raise NetworkDemoFailed("Bob did not get the messages that waited for him, in order")
    return {"messages": len(got), "statuses": [h.status.value for h in handles], "sync_ms": round(elapsed, 1)}


def _meshed(node: Node, peer: Node, topic: str) -> bool:
    return peer.peer_id in node.driver.router.mesh.get(topic, ())


async def _direct(node: Node, mid: bytes) -> DirectMessage:
    async for event in node.events():
        if isinstance(event, DirectMessage) and event.message_id == mid:
            return event
    raise NetworkDemoFailed("the node closed before the message arrived")


async def _direct_all(node: Node, mids: list[bytes]) -> list[DirectMessage]:
    """The messages ``mids``, in that order, whatever order they arrive in (the mailbox's sync and the
    gossip a returning peer is offered race: waiting for one at a time would drop the other's event)."""
    got: dict[bytes, DirectMessage] = {}
    async for event in node.events():
        if isinstance(event, DirectMessage) and event.message_id in mids:
            got[event.message_id] = event
            if len(got) == len(set(mids)):
                return [got[mid] for mid in mids]
    raise NetworkDemoFailed("the node closed before the messages arrived")


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
