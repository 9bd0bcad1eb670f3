"""meshchat on the real network against py-libp2p's own GossipSub, measured in one run on 127.0.0.1.

Run: python benchmarks/bench_net.py [--quick]

For each system: one hop (2 nodes) and a line of 5 nodes (4 hops), all in this process over TCP +
Noise + yamux. The first node publishes 300-byte messages that carry their send time; the last one
receives them. The publisher keeps at most W messages in flight (sent, not yet received) for W = 1,
24 and 200, and the figures are messages per second, latency p50/p99 (send to receive, one clock),
and sent vs received. A message not received within the time limit counts as lost; for meshchat the
driver's and router's counted drops (by reason) are printed beside it, so a loss without a counted
reason shows.

The baseline is py-libp2p 0.8.1's GossipSub (``libp2p.pubsub``) set up to do the same work: D=6,
1 s heartbeat, unsigned messages (meshchat uses StrictNoSign too), and its per-topic rate limit
(10 messages/s by default, "spam protection") turned off so it is not measuring its own throttle.
The last line reads ``hop_msgs_per_s=… ratio_vs_pylibp2p=… lost=…`` (one hop, 24 in flight).
"""

from __future__ import annotations

import argparse
import itertools
import math
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from meshchat.identity import Identity
from meshchat.net import MessageDelivered
from meshchat.node import Node

TOPIC = "bench"
LOCAL = "/ip4/127.0.0.1/tcp/0"
PAYLOAD = 300
#: Seconds one measurement may take before what is still missing counts as lost.
LIMIT = 30.0
WINDOWS = (1, 24, 200)


@dataclass
class Figures:
    """One measurement."""

    sent: int
    received: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


Publish = Callable[[bytes], Awaitable[None]]
Receive = Callable[[], AsyncIterator[bytes]]


async def measure(publish: Publish, receive: Receive, *, window: int, count: int) -> Figures:
    """Publish ``count`` messages with at most ``window`` in flight; time each to its arrival."""
    latencies: list[float] = []
    sent = received = 0
    room = trio.Event()
    started = time.perf_counter()

    async def receiver() -> None:
        nonlocal received, room
        async for data in receive():
            (sent_at,) = struct.unpack_from("!d", data, 8)
            latencies.append(time.perf_counter() - sent_at)
            received += 1
            room.set()
            room = trio.Event()
            if received == count:
                return

    with trio.move_on_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            run = time.monotonic_ns()
            for index in range(count):
                while sent - received >= window:
                    await room.wait()
                header = struct.pack("!qd", run + index, time.perf_counter())
                await publish(header + bytes(PAYLOAD - len(header)))
                sent += 1
    return Figures(sent=sent, received=received, seconds=time.perf_counter() - started, latencies=latencies)


# --- meshchat -----------------------------------------------------------------------------------------


@asynccontextmanager
async def meshchat_line(size: int) -> AsyncIterator[tuple[Publish, Receive, Callable[[], str]]]:
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(Node.open(identity=Identity(bytes([i + 1]) * 32), listen=[LOCAL]))
            for i in range(size)
        ]
        for node in nodes:
            await node.subscribe(TOPIC)
        for left, right in itertools.pairwise(nodes):
            await right.connect(left.listen_addrs[0])
        for i, node in enumerate(nodes):
            want = (i > 0) + (i < size - 1)
            with trio.fail_after(LIMIT):
                await node.wait_for(lambda n=node, w=want: len(n.driver.router.mesh.get(TOPIC, ())) == w)
        first, last = nodes[0], nodes[-1]

        async def publish(data: bytes) -> None:
            await first.publish(TOPIC, data)

        async def receive() -> AsyncIterator[bytes]:
            async for event in last.events():
                if isinstance(event, MessageDelivered):
                    yield event.data

        def drops() -> str:
            counted: dict[str, int] = {}
            for node in nodes:
                stats = node.statistics()
                for reason, n in list(stats.drops.items()) + list(stats.router.drops.items()):
                    if n and reason.value != "duplicate":
                        counted[reason.value] = counted.get(reason.value, 0) + n
            return ", ".join(f"{k} {v}" for k, v in counted.items()) or "none"

        yield publish, receive, drops


# --- py-libp2p's GossipSub ----------------------------------------------------------------------------


@asynccontextmanager
async def pylibp2p_line(size: int) -> AsyncIterator[tuple[Publish, Receive, Callable[[], str]]]:
    async with AsyncExitStack() as stack:
        pubsubs = []
        hosts = []
        for i in range(size):
            key_pair = create_new_key_pair(bytes([i + 101]) * 32)
            noise = NoiseTransport(key_pair, noise_privkey=create_x25519().private_key)
            host = new_host(key_pair=key_pair, sec_opt={TProtocol(NOISE): noise})
            router = GossipSub(
                protocols=[TProtocol("/meshsub/1.1.0")],
                degree=6,
                degree_low=4,
                degree_high=12,
                heartbeat_interval=1,
                spam_protection_enabled=False,
            )
            pubsub = Pubsub(host, router, strict_signing=False)
            await stack.enter_async_context(host.run([multiaddr.Multiaddr(LOCAL)]))
            await stack.enter_async_context(background_trio_service(pubsub))
            await stack.enter_async_context(background_trio_service(router))
            await pubsub.wait_until_ready()
            hosts.append(host)
            pubsubs.append(pubsub)
        subscriptions = [await p.subscribe(TOPIC) for p in pubsubs]
        for left, right in itertools.pairwise(hosts):
            await right.connect(info_from_p2p_addr(left.get_addrs()[0]))
        with trio.move_on_after(3):  # no mesh view to wait on: give it three heartbeats
            await trio.sleep(3)
        first, last = pubsubs[0], subscriptions[-1]

        async def publish(data: bytes) -> None:
            await first.publish(TOPIC, data)

        async def receive() -> AsyncIterator[bytes]:
            while True:
                message = await last.get()
                yield message.data

        yield publish, receive, lambda: "not counted by py-libp2p"
        for host in hosts:  # py-libp2p 0.8.1 leaks dialled sockets unless connections are closed
            for peer_id in list(host.get_network().connections):
                with trio.move_on_after(2):
                    await host.disconnect(peer_id)


async def run_system(
    name: str, line: Callable[[int], Any], counts: dict[int, int]
) -> dict[tuple[int, int], Figures]:
    results: dict[tuple[int, int], Figures] = {}
    for size in (2, 5):
        async with line(size) as (publish, receive, drops):
            for window in WINDOWS:
                figures = await measure(publish, receive, window=window, count=counts[window])
                results[size, window] = figures
                print(
                    f"{name:10s} {size - 1} hop{'s' if size > 2 else ' '} {window:3d} in flight  "
                    f"{figures.rate:8,.0f} msgs/s  p50 {figures.percentile(0.5):7.2f} ms  "
                    f"p99 {figures.percentile(0.99):7.2f} ms  sent {figures.sent:5d} received "
                    f"{figures.received:5d}  drops: {drops()}",
                    flush=True,
                )
    return results


async def main(quick: bool) -> None:
    counts = {1: 300, 24: 3000, 200: 5000} if not quick else {1: 50, 24: 300, 200: 500}
    ours = await run_system("meshchat", meshchat_line, counts)
    theirs = await run_system("py-libp2p", pylibp2p_line, counts)
    hop, base = ours[2, 24], theirs[2, 24]
    lost = sum(f.sent - f.received for f in ours.values())
    ratio = hop.rate / base.rate if base.rate else math.inf
    print(f"one hop, 1 in flight: p50 {ours[2, 1].percentile(0.5):.2f} ms (target <= 2 ms)")
    print(f"hop_msgs_per_s={hop.rate:.0f} ratio_vs_pylibp2p={ratio:.1f} lost={lost}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, for a smoke run")
    trio.run(main, parser.parse_args().quick)
