"""What streams stalled mid-frame cost a node: resident memory before, during and after the attack.

Run: python benchmarks/bench_net_stalled.py [--streams 100 500] [--partial-kib 960]

For each count N: a fresh meshchat node and a bare py-libp2p host (the attacker) in this process on
127.0.0.1. The attacker opens N ``/meshsub/1.1.0`` streams on one connection and on each writes a
length prefix announcing a 1 MiB frame and then ``--partial-kib`` of it, and stalls. Printed: the
process's RSS before (node up, attacker connected), with the N streams stalled, and after the
attacker disconnected; the node's counted drops; and, where the node reports it, the bytes of
unfinished frames it holds (``statistics().buffer``). The attacker's own memory is one shared payload
object, so the growth is the node's. Figures depend on the allocator: read them against each other,
in one run. The last line reads ``streams=… rss_added_mib=… rss_left_mib=…`` for the largest N.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
from pathlib import Path

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as NoiseTransport

from meshchat.identity import Identity
from meshchat.node import Node

LOCAL = "/ip4/127.0.0.1/tcp/0"
#: A varint announcing a 1 MiB frame (the RPC limit).
MEGA_FRAME_PREFIX = bytes.fromhex("808040")
#: Seconds the whole attack may take before it is cut short.
LIMIT = 120.0


def rss_mib() -> float:
    """This process's resident set size, MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def attack(streams: int, partial: int) -> tuple[float, float, float]:
    """RSS before, with ``streams`` stalled streams, and after the attacker left."""
    key_pair = create_new_key_pair(b"\x66" * 32)
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519().private_key)
    evil = new_host(key_pair=key_pair, sec_opt={TProtocol(NOISE): noise})
    payload = MEGA_FRAME_PREFIX + b"x" * partial
    async with (
        Node.open(identity=Identity(b"\x65" * 32), listen=[LOCAL]) as node,
        evil.run([multiaddr.Multiaddr(LOCAL)]),
    ):
        info = info_from_p2p_addr(multiaddr.Multiaddr(node.listen_addrs[0]))
        await evil.connect(info)
        gc.collect()
        before = rss_mib()
        opened = []
        with trio.move_on_after(LIMIT):
            for _ in range(streams):
                stream = await evil.new_stream(info.peer_id, [TProtocol("/meshsub/1.1.0")])
                with contextlib.suppress(BaseLibp2pError):  # the node may reset it: that is measured
                    await stream.write(payload)
                opened.append(stream)
        gc.collect()
        during = rss_mib()
        stats = node.statistics()
        held = getattr(stats, "buffer", None)
        drops = {reason.value: n for reason, n in stats.drops.items() if n}
        holds = "(not reported)"
        if held is not None:
            holds = f"{held.buffered / 2**20:.1f} MiB (peak {held.peak / 2**20:.1f})"
        print(f"  {streams} streams stalled: node holds {holds}, drops {drops or 'none'}", flush=True)
        with trio.move_on_after(10):
            await evil.disconnect(info.peer_id)
        with trio.move_on_after(2):
            await node.wait_for(lambda: node.statistics().peers == 0)
        opened.clear()
        gc.collect()
        after = rss_mib()
    return before, during, after


async def main(counts: list[int], partial: int) -> None:
    last = (0.0, 0.0, 0.0)
    for streams in counts:
        before, during, after = await attack(streams, partial)
        print(
            f"{streams:4d} streams x {partial // 1024} KiB: RSS {before:7.1f} MiB before, {during:7.1f} "
            f"stalled (+{during - before:.1f}), {after:7.1f} after the attacker left (+{after - before:.1f})",
            flush=True,
        )
        last = (before, during, after)
    before, during, after = last
    print(f"streams={counts[-1]} rss_added_mib={during - before:.1f} rss_left_mib={after - before:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 500], help="stalled stream counts")
    parser.add_argument("--partial-kib", type=int, default=960, help="KiB of each 1 MiB frame sent")
    arguments = parser.parse_args()
    trio.run(main, arguments.streams, arguments.partial_kib * 1024)
