"""Bandwidth cost of cover traffic (``meshchat.store.cover``): bytes per node per hour, on and off.

Run: python benchmarks/bench_cover.py [--interval SECONDS] [--chats-per-hour N] [--hours H]

Everything is measured from real bytes in this run: real chats sealed by a ``Messenger`` in a session
(a mix of typical chat sizes) and the receipts their recipient seals back, through the store harness;
dummies made by ``CoverTraffic`` driven at its own deadlines for ``--hours`` simulated hours; each
envelope wrapped as the gossip router publishes it (one StrictNoSign ``PubMessage`` in an RPC frame).

The model of a node: it sends ``--chats-per-hour`` chats and receives as many (a two-way
conversation), so it publishes that many chats and that many receipts an hour; with cover on it also
publishes its dummies. Bytes are the frames it writes to one mesh peer; on the wire each publish goes
to ``GossipConfig.d`` peers (printed too; the ratio is the same). Relaying others' traffic is not
counted: every node's cover adds to what relays carry in the same ratio.

The figures for several intervals are printed as a table; the last line is for ``--interval``:
``cover_bytes_per_hour=… cover_overhead_ratio=… chat_bytes_per_hour=… dummies_per_hour=…
dummy_frame_bytes=… chat_frame_bytes=… dummy_seal_us=…``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from store_harness import Harness

from meshchat.gossip.config import GossipConfig
from meshchat.gossip.messages import RPC, PubMessage
from meshchat.gossip.rpc import encode_rpc, frame
from meshchat.store.cover import CoverConfig, CoverTraffic

#: Chat sizes (bytes of UTF-8) drawn for the "typical chat": most chats are a line, some a paragraph.
CHAT_SIZES = (8, 20, 40, 60, 80, 120, 200, 400, 900)
INTERVALS = (10.0, 30.0, 60.0, 300.0)


def publish_frame(topic: str, envelope: bytes) -> int:
    """Bytes the router writes to one peer to publish ``envelope`` on ``topic``."""
    return len(frame(encode_rpc(RPC(publish=(PubMessage(topic=topic, data=envelope),)))))


def chat_frames(count: int, seed: int) -> tuple[list[int], list[int]]:
    """Frame sizes of ``count`` real chats (typical sizes) and of the receipts that came back."""
    h = Harness(seed=seed)
    h.add_user("alice")
    h.add_user("bob")
    h.connect("alice")
    h.connect("bob")
    rng = random.Random(seed)
    for _ in range(count):
        h.send("alice", "bob", bytes(rng.choice(b"abcdefgh ") for _ in range(rng.choice(CHAT_SIZES))))
        h.settle()
    chats = [publish_frame(a.topic, a.envelope) for n, a in h.published if n == "alice" and a.message_id]
    receipts = [publish_frame(a.topic, a.envelope) for n, a in h.published if n == "bob" and not a.message_id]
    return chats, receipts


def cover_hour(interval: float, hours: float, seed: int) -> tuple[float, float, float]:
    """Dummies per hour, frame bytes per hour and mean seal time (µs), from the core run at its deadlines."""
    rng = random.Random(seed)
    core = CoverTraffic(CoverConfig(interval=interval), now=0.0, rng=rng, random_bytes=rng.randbytes)
    horizon, frames, spent = hours * 3600.0, 0, 0.0
    for _ in range(10_000_000):
        due = core.next_deadline()
        if due > horizon:
            break
        start = time.perf_counter()
        actions = core.on_timer(now=due, wall_now=1_800_000_000.0 + due)
        spent += time.perf_counter() - start
        frames += sum(publish_frame(a.topic, a.envelope) for a in actions)
    sent = core.statistics().sent
    return sent / hours, frames / hours, spent / max(sent, 1) * 1e6


def main() -> None:
    """Print the table and the last key=value line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=60.0, help="mean seconds between dummies")
    parser.add_argument("--chats-per-hour", type=float, default=30.0, help="chats a node sends an hour")
    parser.add_argument("--hours", type=float, default=4.0, help="simulated hours of cover per interval")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    chats, receipts = chat_frames(200, args.seed)
    chat_frame, receipt_frame = statistics.mean(chats), statistics.mean(receipts)
    chat_bytes = args.chats_per_hour * (chat_frame + receipt_frame)
    degree = GossipConfig().d
    sizes = sorted(set(chats))
    print(f"real chat frame {chat_frame:.0f} B (sizes {sizes}), receipt frame {receipt_frame:.0f} B")
    print(
        f"a node at {args.chats_per_hour:g} chats/h each way: {chat_bytes / 1e3:.1f} kB/h per peer, "
        f"{chat_bytes * degree / 1e3:.1f} kB/h to its {degree} mesh peers"
    )
    header = ("interval s", "dummies/h", "cover kB/h", "x D kB/h", "overhead", "seal us")
    print(" ".join(f"{h:>11}" for h in header))
    chosen: tuple[float, float, float] | None = None
    for interval in sorted({*INTERVALS, args.interval}):
        per_hour, cover_bytes, seal_us = cover_hour(interval, args.hours, args.seed)
        ratio = (chat_bytes + cover_bytes) / chat_bytes
        row: tuple[str, ...] = (f"{interval:g}", f"{per_hour:.1f}", f"{cover_bytes / 1e3:.1f}")
        row += (f"{cover_bytes * degree / 1e3:.1f}", f"{ratio:.2f}x", f"{seal_us:.0f}")
        print(" ".join(f"{cell:>11}" for cell in row))
        if interval == args.interval:
            chosen = (per_hour, cover_bytes, seal_us)
    assert chosen is not None
    per_hour, cover_bytes, seal_us = chosen
    dummy_frame = cover_bytes / per_hour if per_hour else 0.0
    overhead = (chat_bytes + cover_bytes) / chat_bytes
    print(
        f"cover_bytes_per_hour={cover_bytes:.0f} cover_overhead_ratio={overhead:.2f} "
        f"chat_bytes_per_hour={chat_bytes:.0f} dummies_per_hour={per_hour:.1f} "
        f"dummy_frame_bytes={dummy_frame:.0f} chat_frame_bytes={chat_frame:.0f} dummy_seal_us={seal_us:.0f}"
    )


if __name__ == "__main__":
    main()
