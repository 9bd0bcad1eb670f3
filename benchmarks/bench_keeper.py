"""Stall detection on real nodes: goodput through a censor that silently stalls every connection after
16 KB, against a direct connection in the same run; and what the keepalive's pings cost.

Run: python benchmarks/bench_keeper.py [--messages N] [--size BYTES] [--idle-seconds S]

Two nodes on 127.0.0.1 (``Node.open(keeper=DEFAULT_KEEPER)``: ping after ``KEEPALIVE_IDLE`` s of silence,
close after ``KEEPALIVE_TIMEOUT`` s more). Alice sends Bob ``--messages`` direct messages of ``--size``
bytes one after the other, each awaited at Bob (store-and-forward retries what a stall lost):

- direct: Alice dials Bob's own address;
- cut16k: Alice reaches Bob only through a proxy (``tests/censor_proxy.py``) that stops forwarding a
  connection once it carried 16 KB, without a reset; the keepalive notices, Alice redials through it.

Goodput is body bytes delivered per second. ``ping_bytes``: two idle nodes through a plain proxy for
``--idle-seconds``; every byte the proxy forwarded divided by the pings both sent (an upper bound: any
other idle traffic is charged to the pings). Last line:
``direct_goodput_kbps=… cut16k_goodput_kbps=… stalls=… ping_bytes=… ping_bytes_per_peer_min=…
cut16k_ratio=…``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from censor_proxy import censor_proxy, only_through
from conftest import make_profile

from meshchat.gossip.keeper import KEEPALIVE_IDLE
from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.net.keeper_driver import DEFAULT_KEEPER
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
CUT_BYTES = 16 * 1024
#: Seconds any one run may take.
RUN_LIMIT = 300.0


async def send_all(
    root: Path, messages: int, size: int, *, budget: int | None, proxied: bool, reset: bool = False
) -> tuple[float, int]:
    """Seconds to deliver ``messages`` one after the other, and the connections the proxy cut (stalled,
    or reset with ``reset``; ``benchmarks/reach_censor.py`` uses it too)."""
    root.mkdir()  # noqa: ASYNC240 (a temporary folder, once, before any node runs)
    alice_dir, alice_id = make_profile(root, "alice", 31)
    bob_dir, bob_id = make_profile(root, "bob", 32)
    fast = StoreConfig(retry_initial=1.0, retry_max=2.0)
    async with Node.open(bob_dir, listen=LOCAL, dht=False, keeper=DEFAULT_KEEPER) as bob:
        port = int(bob.listen_addrs[0].split("/tcp/")[1].split("/")[0])
        async with censor_proxy(port, budget, reset=reset) as proxy:
            address = f"/ip4/127.0.0.1/tcp/{proxy.port}/p2p/{bob.peer_id}" if proxied else bob.listen_addrs[0]
            async with Node.open(
                alice_dir, listen=[], dht=False, store_config=fast, keeper=DEFAULT_KEEPER
            ) as alice:
                if proxied:  # her every route to Bob crosses the censor, none around it
                    only_through(alice, proxy.port)
                alice.contacts.add(Invite.create(bob_id, name="Bob", addrs=[address]).to_text())
                bob.contacts.add(Invite.create(alice_id, name="Alice").to_text())
                await alice.connect(address)
                started = trio.current_time()
                with trio.fail_after(RUN_LIMIT):
                    for i in range(messages):
                        body = f"{i:04d} " + "x" * (size - 5)
                        await alice.send("Bob", body)
                        async for event in bob.events():
                            if isinstance(event, DirectMessage) and event.body.decode() == body:
                                break
                return trio.current_time() - started, proxy.cuts


async def _ping_cost(seconds: float) -> tuple[float, int]:
    """Bytes per ping (both directions) between two idle nodes through a plain proxy, and pings sent."""
    async with Node.open(
        identity=Identity(b"\x41" * 32), listen=LOCAL, dht=False, inbox=False, keeper=DEFAULT_KEEPER
    ) as b:
        port = int(b.listen_addrs[0].split("/tcp/")[1].split("/")[0])
        async with (
            censor_proxy(port, None) as proxy,
            Node.open(
                identity=Identity(b"\x42" * 32), listen=LOCAL, dht=False, inbox=False, keeper=DEFAULT_KEEPER
            ) as a,
        ):
            await a.connect(f"/ip4/127.0.0.1/tcp/{proxy.port}/p2p/{b.peer_id}")
            await a.subscribe("idle")
            await b.subscribe("idle")
            await trio.sleep(3 * KEEPALIVE_IDLE)  # the measured window starts once the join is over
            before = proxy.forwarded
            pings_before = sum(_pings(n) for n in (a, b))
            await trio.sleep(seconds)  # the measured window: idle on purpose
            pings = sum(_pings(n) for n in (a, b)) - pings_before
            return (proxy.forwarded - before) / max(1, pings), pings


def _pings(node: Node) -> int:
    stats = node.statistics().keeper
    return 0 if stats is None else stats.pings


async def main(args: argparse.Namespace) -> None:
    payload = args.messages * args.size
    with tempfile.TemporaryDirectory() as tmp:
        direct_s, _ = await send_all(Path(tmp) / "d", args.messages, args.size, budget=None, proxied=False)
    with tempfile.TemporaryDirectory() as tmp:
        cut_s, stalls = await send_all(
            Path(tmp) / "c", args.messages, args.size, budget=CUT_BYTES, proxied=True
        )
    per_ping, pings = await _ping_cost(args.idle_seconds)
    direct = payload / direct_s / 1000
    cut = payload / cut_s / 1000
    per_minute = per_ping * 60 / KEEPALIVE_IDLE  # one end pinging one quiet peer once per idle
    print(f"{args.messages} messages of {args.size} B: direct {direct_s:.1f} s, censored {cut_s:.1f} s")
    print(f"  ({stalls} connections stalled; each noticed by the keepalive and redialled)")
    print(f"idle: {pings} pings in {args.idle_seconds:g} s, {per_ping:.0f} bytes each (both directions)")
    print(
        f"direct_goodput_kbps={direct:.2f} cut16k_goodput_kbps={cut:.2f} stalls={stalls} "
        f"ping_bytes={per_ping:.0f} ping_bytes_per_peer_min={per_minute:.0f} cut16k_ratio={cut / direct:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=8)
    parser.add_argument("--size", type=int, default=1500)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    trio.run(main, parser.parse_args())
