"""Reachability behind NAT and through a censor: how long until two NATed people chat through a relay,
until a hole punch connects them directly, and what each path delivers, against a direct connection
in the same run.

Run (root: network namespaces): python benchmarks/bench_reach.py [--messages N]

Real ``meshchat`` processes in namespaces (``tests/nat_harness.py``): a relay on a "public" switch,
Bob behind NAT gateway B (``meshchat node --reserve RELAY``), Alice behind NAT gateway A (``meshchat
chat --to Bob`` with Bob's relayed address). Three runs, each from fresh profiles:

- relay: both gateways map every connection to a random port, so the hole punch fails and every
  chat goes through the relay. ``relay_first_msg_s``: from launching the relay process until Bob has
  Alice's first chat (the relay's, Bob's and Alice's start-up, Bob's reservation, Alice's dial
  through the relay, one sealed chat); the message rate is measured once the punch has failed.
- punched: port-preserving NATs. ``punch_s``: from launching the relay process until Bob reports
  the direct connection (``direct_connection``); the message rate is measured after it.
- direct: Alice and Bob on the public switch, Alice dialling Bob's own address (the baseline).

Each rate: Alice types ``--messages`` chat lines at once; chats per second until Bob printed them all
(sealing, the store and receipts included: what a user sees). ``relay_ratio`` and ``punched_ratio``
are those rates over the direct one. ``cut16k_ratio`` (the censor stalls each connection after 16 KB;
``cut16k_reset_ratio``: it resets them) comes from ``benchmarks/reach_cut16k.py`` and ``obfs_ratio``
(WSS through the fingerprint rule) from ``benchmarks/reach_censor.py``: goodput against plain TCP in
the same run. Last line:
``relay_first_msg_s=… punch_s=… cut16k_ratio=… obfs_ratio=…`` and the rates and ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nat_harness import NatChat, nat_chat, of
from reach_censor import obfs_ratio
from reach_cut16k import cut16k_ratio

from meshchat.net.punch import PUNCH_TIMEOUT

#: Seconds any one wait may take.
WAIT = 120.0


async def _rate(chat: NatChat, messages: int, label: str) -> float:
    """Chats per second: Alice types ``messages`` lines at once; until Bob printed them all."""
    have = len(of(chat.bob, "direct"))
    began = trio.current_time()
    await chat.say(*(f"{label} {i}" for i in range(messages)))
    done = await chat.bob_has(have + messages, timeout=WAIT)
    return messages / (done - began)


async def _relay_run(root: Path, messages: int) -> tuple[float, float, float]:
    """relay_first_msg_s, punch failure after_s, relay rate (random-port NATs)."""
    async with nat_chat(root, fully_random=True, tag="br") as chat:
        await chat.say("first")
        first = await chat.bob_has(1, timeout=WAIT) - chat.started
        await chat.bob.wait_for(lambda: bool(of(chat.bob, "punch_failed")), timeout=PUNCH_TIMEOUT + WAIT)
        failed_after = float(of(chat.bob, "punch_failed")[0]["after_s"])
        return first, failed_after, await _rate(chat, messages, "relay")


async def _punched_run(root: Path, messages: int) -> tuple[float, float, float]:
    """punch_s, the first chat's time, rate after the punch (port-preserving NATs)."""
    async with nat_chat(root, tag="bp") as chat:
        await chat.say("first")
        first = await chat.bob_has(1, timeout=WAIT) - chat.started
        await chat.bob.wait_for(lambda: bool(of(chat.bob, "direct_connection")), timeout=WAIT)
        punched = trio.current_time() - chat.started
        await chat.alice.wait_for(lambda: bool(of(chat.alice, "direct_connection")), timeout=WAIT)
        return punched, first, await _rate(chat, messages, "punched")


async def _direct_run(root: Path, messages: int) -> float:
    async with nat_chat(root, direct=True, tag="bd") as chat:
        await chat.say("first")
        await chat.bob_has(1, timeout=WAIT)
        return await _rate(chat, messages, "direct")


def _censor_figures() -> tuple[float, float, float]:
    """Goodput under the 16 KB cut (stalled, then reset) and through WSS, each over plain TCP in the
    same run (``reach_cut16k.py``, ``reach_censor.py``)."""
    stalled = cut16k_ratio()
    reset = cut16k_ratio(reset=True)
    obfs = trio.run(obfs_ratio).ratio
    return stalled, reset, obfs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100, help="chats typed per rate measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name in ("relay", "punched", "direct"):
            (root / name).mkdir()
        first_s, failed_after, relay_rate = trio.run(_relay_run, root / "relay", args.messages)
        punch_s, punched_first_s, punched_rate = trio.run(_punched_run, root / "punched", args.messages)
        direct_rate = trio.run(_direct_run, root / "direct", args.messages)
    print(f"relay (random-port NATs): first chat {first_s:.2f} s, punch given up after {failed_after:.1f} s")
    print(f"punched (port-preserving NATs): first chat {punched_first_s:.2f} s, direct {punch_s:.2f} s")
    print(f"chats/s: relay {relay_rate:.1f}, after the punch {punched_rate:.1f}, direct {direct_rate:.1f}")
    cut16k, cut16k_reset, obfs = _censor_figures()
    print(f"goodput over plain TCP: 16 KB cut stalled {cut16k:.3f}, reset {cut16k_reset:.3f}; WSS {obfs:.3f}")
    print(
        f"relay_first_msg_s={first_s:.2f} punch_s={punch_s:.2f} cut16k_ratio={cut16k:.3f} "
        f"obfs_ratio={obfs:.3f} cut16k_reset_ratio={cut16k_reset:.3f} "
        f"relay_rate={relay_rate:.1f} punched_rate={punched_rate:.1f} direct_rate={direct_rate:.1f} "
        f"relay_ratio={relay_rate / direct_rate:.2f} punched_ratio={punched_rate / direct_rate:.2f}"
    )


if __name__ == "__main__":
    main()
