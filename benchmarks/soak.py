"""Soak: one real meshchat node process on 127.0.0.1 under honest plus abusive load for ``--seconds``.

Usage: ``python benchmarks/soak.py [--seconds 600] [--sample 5] [--workdir DIR]``.

The node under test is a ``meshchat`` CLI node (``meshchat.cli.network._run_node``, what ``meshchat
mailbox --json`` runs) that also joins topic ``soak`` and publishes its stdin lines there: a gossip
peer and a mailbox at once. Around it:

- an honest peer: a ``meshchat node --topic soak --stdin --json`` process; both publish numbered lines
  at ``HONEST_RATE`` per second each way, and each must receive every line of the other;
- an honest mailbox pair in this process (hosts built like a node's, ``build_host``): Alice stores a
  sealed envelope for Bob, Bob fetches it by id, Alice withdraws it, ``HONEST_RATE`` times a second;
- abusers, each its own libp2p host (own identity), at the rates below: junk RPCs (random and broken
  protobuf frames on ``/meshsub/1.1.0``), subscription churn (hundreds of topics subscribed and
  dropped), IHAVE floods (5,000 unknown ids per IHAVE, plus IWANTs for unknown ids), mailbox requests
  for Bob's tags and ids (sync, fetch, delete) and junk mailbox frames, and strangers storing sealed
  envelopes without a stamp, or with one too cheap or minted for another envelope: the node's mailbox
  asks strangers for a stamp of ``SOAK_STAMP_COST`` bits (``MailboxLimits.stamp_cost``), so each is
  refused and counted (``no_stamp``); honest Alice stamps hers.

The node's RSS (``/proc/PID/status`` VmRSS) is sampled every ``--sample`` seconds. Growth is the mean
of the last three samples minus the highest sample of the first minute (of the first third of a
shorter run): the warm-up (imports, sqlite caches, first connections) is the baseline, and what a
leak would add over the rest of the run is the figure. At the end the node is stopped with SIGTERM and
its own ``mailbox`` and ``statistics`` events give the refusals it counted (mailbox refusals by
reason, driver drops, router drops by reason); every process started is killed by PID.

Memory bound (from the code's stated bounds): under a constant load RSS must stop growing after the
warm-up. What the load can make the node hold is bounded per peer and in all: frames being received
<= ``MAX_BUFFERED_PER_PEER`` (4 MiB) per peer and ``MAX_BUFFERED_TOTAL`` (64 MiB) in all
(``meshchat/net/budget.py``); <= ``MAX_INBOUND_STREAMS_PER_PEER`` (32) streams per peer and
``MAX_CONNECTIONS`` connections; per peer in the router <= ``GossipConfig.max_topics_per_peer`` (256)
topics and ``max_ihave_length`` (5,000) ids asked per heartbeat; seen ids for ``seen_ttl`` (120 s) of
traffic; mailbox calls <= ``MAX_CALLS_PER_PEER`` (4) per peer and ``MAX_CALLS`` (256) in all, the
envelopes themselves on disk (sqlite) within ``MailboxLimits``. With this soak's six peers that is at
most 6 x 4 MiB = 24 MiB of buffers above the warm-up level, whatever the duration; the one-minute test
allows ``RSS_GROWTH_LIMIT_MIB`` (16 MiB). Measured (600 s, 2-core machine at load ~10): 113.8 MiB at
start, 117.4 MiB at most in the first minute, 119.0 MiB flat from 200 s to 600 s: growth 1.6 MiB.

Last line: ``soak_rss_growth_mib=… honest_delivery=… refusals=…``.
"""

from __future__ import annotations

import argparse
import base64
import gc
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from meshchat.crypto import seal
from meshchat.crypto.stamps import stamp_bits, stamp_envelope
from meshchat.errors import MeshchatError
from meshchat.gossip.messages import RPC, ControlMessage, IHave, IWant, PubMessage, SubOpts
from meshchat.gossip.rpc import encode_rpc, frame
from meshchat.identity import Identity, save_identity
from meshchat.net.host import IO_ERRORS, build_host
from meshchat.net.mailbox import call_mailbox
from meshchat.node import KEY_FILE
from meshchat.store.protocol import (
    MAILBOX_PROTOCOL,
    Deleted,
    DeleteRequest,
    Fetched,
    FetchRequest,
    MailboxError,
    StoreCode,
    Stored,
    StoreRequest,
    Synced,
    SyncRequest,
    WithdrawRequest,
)
from meshchat.store.reconcile import Reconciler, encode_message
from meshchat.wire import decode_envelope, message_id
from meshchat.wire.envelope import unstamped, with_stamp

TOPIC = "soak"
LOCAL = "/ip4/127.0.0.1/tcp/0"
PUBSUB = TProtocol("/meshsub/1.1.0")
#: Seconds any one wait on a process or a call may take (a node starts in ~1-3 s on a loaded machine).
WAIT = 60.0
#: Honest messages per second, each way, and honest mailbox round trips per second.
HONEST_RATE = 2.0
#: Seconds the honest lines sent last may take to arrive once the load stops.
DRAIN = 20.0
#: Abusive actions per second, per abuser (each action is one RPC or one mailbox call).
JUNK_RATE = 20.0
CHURN_RATE = 5.0
CHURN_TOPICS = 200
IHAVE_RATE = 2.0
IHAVE_IDS = 5000
SNOOP_RATE = 5.0
#: Seconds between two reconnections of an abuser the node cut off (a named backoff, not a wait).
RECONNECT_BACKOFF = 1.0
#: Most probes sent while waiting for the mesh between the two gossip peers to form.
MAX_PROBES = 120
#: Allowed RSS growth after warm-up in the one-minute test, MiB (allocator noise, not a table).
RSS_GROWTH_LIMIT_MIB = 16.0
#: The stamp the node's mailbox asks of strangers, bits: cheap (~4 ms) so honest Alice can pay it
#: twice a second on this machine beside the load; the default for people's inboxes is 19.
SOAK_STAMP_COST = 12

#: The node under test: the CLI's own ``_run_node`` (``meshchat mailbox`` plus a topic and stdin).
NODE_CODE = """
import sys
from pathlib import Path
from meshchat.cli.network import _run_node
from meshchat.store.mailbox import MailboxLimits
_run_node(Path(sys.argv[1]), [sys.argv[2]], [], True, topics=[sys.argv[3]], read_stdin=True,
          mailbox_limits=MailboxLimits(stamp_cost=int(sys.argv[4])))
"""

#: What an abuser's action may end in when the node cuts it off (counted, then it reconnects).
CUT_ERRORS: tuple[type[BaseException], ...] = (*IO_ERRORS, trio.TooSlowError, MeshchatError)
#: The honest peer: a plain ``meshchat node`` on the topic, publishing its stdin lines.
HONEST_NODE = (
    sys.executable,
    "-m",
    "meshchat",
    "node",
    "--json",
    "--listen",
    LOCAL,
    "--topic",
    TOPIC,
    "--stdin",
)

NUT_SEED, HONEST_SEED, ALICE_SEED, BOB_SEED = (bytes([n]) * 32 for n in (0x51, 0x52, 0x53, 0x54))


class JsonProcess:
    """A child printing one JSON object per line; waits are on its output, never on the clock."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self.received: set[bytes] = set()
        self._changed = trio.Event()

    async def read_events(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.startswith(b"{"):
                    continue
                event = json.loads(line)
                if event.get("event") == "message":
                    self.received.add(base64.b64decode(event["data"]))  # not kept: RAM of the harness
                else:
                    self.events.append(event)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:  # noqa: ASYNC109
        with trio.fail_after(timeout):
            while not condition():
                await self._changed.wait()

    async def first(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:  # noqa: ASYNC109
        await self.wait_for(lambda: any(e["event"] == kind for e in self.events), timeout)
        return next(e for e in self.events if e["event"] == kind)

    async def write_line(self, line: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line + b"\n")


@dataclass(slots=True)
class Counts:
    """What the load did and what came back (client side)."""

    honest_sent: int = 0
    mailbox_sent: int = 0
    mailbox_delivered: int = 0
    abuse: dict[str, int] = field(default_factory=dict)
    #: Answers abusers got that they should not have: Bob's envelopes or Bob's held count.
    leaks: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)

    def add(self, key: str, n: int = 1) -> None:
        self.abuse[key] = self.abuse.get(key, 0) + n


def rss_kib(pid: int) -> int:
    """The process's resident set size, KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return 0
    return 0


async def paced(rate: float, until: float, step: Callable[[], Awaitable[None]]) -> None:
    """Run ``step`` ``rate`` times a second until ``until`` (trio time): the load's pace."""
    interval = 1.0 / rate
    next_at = trio.current_time()
    while trio.current_time() < until:
        await step()
        next_at = max(next_at + interval, trio.current_time() - 1.0)
        await trio.sleep_until(next_at)


class Peer:
    """A libp2p host (built like a node's) with a (re)openable stream to the node under test."""

    def __init__(self, host: IHost, target: str) -> None:
        self.host = host
        self.info = info_from_p2p_addr(multiaddr.Multiaddr(target))
        self.peer_id = self.info.peer_id.to_base58()
        self.stream: INetStream | None = None

    async def connect(self) -> None:
        with trio.fail_after(WAIT):
            await self.host.connect(self.info)

    async def send_pubsub(self, data: bytes, counts: Counts, name: str) -> None:
        """Write ``data`` on a pubsub stream, reopening it (after a backoff) if the node cut it."""
        try:
            with trio.fail_after(WAIT):
                if self.stream is None:
                    await self.host.connect(self.info)
                    self.stream = await self.host.new_stream(self.info.peer_id, [PUBSUB])
                await self.stream.write(data)
            counts.add(name)
        except CUT_ERRORS as exc:
            counts.add(f"{name}_cut:{type(exc).__name__}")
            self.stream = None
            await trio.sleep(RECONNECT_BACKOFF)


async def drain(stream: INetStream) -> None:
    """Read and drop what the node writes back (so its send queue to us does not fill)."""
    try:
        while await stream.read(65536):
            pass
    except IO_ERRORS:
        return


async def soak(seconds: float, sample: float, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Run the soak; return its figures (see the module docstring)."""
    counts = Counts()
    processes: list[trio.Process] = []
    rng = random.Random(18)
    for name, seed in (("nut", NUT_SEED), ("honest", HONEST_SEED)):
        (workdir / name).mkdir(parents=True, exist_ok=True)
        if not (workdir / name / KEY_FILE).exists():
            save_identity(workdir / name / KEY_FILE, Identity(seed), None)
    async with trio.open_nursery() as nursery:
        try:
            nut_process = await trio.lowlevel.open_process(
                [sys.executable, "-c", NODE_CODE, str(workdir / "nut"), LOCAL, TOPIC, str(SOAK_STAMP_COST)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            processes.append(nut_process)
            nut = JsonProcess(nut_process)
            nursery.start_soon(nut.read_events)
            address = (await nut.first("listening"))["addrs"][0]
            honest_process = await trio.lowlevel.open_process(
                [*HONEST_NODE, "--profile", str(workdir / "honest"), "--bootstrap", address],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            processes.append(honest_process)
            honest = JsonProcess(honest_process)
            nursery.start_soon(honest.read_events)
            await honest.first("listening")
            await _mesh_formed(nut, honest)
            log(f"node pid {nut_process.pid} at {address}; honest peer pid {honest_process.pid}; mesh formed")

            start = trio.current_time()
            until = start + seconds
            pid = nut_process.pid

            async def sampler() -> None:
                while trio.current_time() < until:
                    counts.rss.append((trio.current_time() - start, rss_kib(pid)))
                    await trio.sleep(sample)
                counts.rss.append((trio.current_time() - start, rss_kib(pid)))

            async with trio.open_nursery() as load:
                load.start_soon(sampler)
                load.start_soon(_honest_gossip, nut, honest, until, counts)
                load.start_soon(_honest_mailbox, address, until, counts)
                for abuser in ABUSERS.values():
                    load.start_soon(abuser, address, until, counts, random.Random(rng.random()))
            # Honest lines still in flight: wait (bounded) for every one to arrive.
            expected_nut = {b"h %d" % k for k in range(counts.honest_sent)}
            expected_honest = {b"n %d" % k for k in range(counts.honest_sent)}
            with trio.move_on_after(DRAIN):
                await nut.wait_for(lambda: expected_nut <= nut.received, DRAIN)
                await honest.wait_for(lambda: expected_honest <= honest.received, DRAIN)
            got = len(expected_nut & nut.received) + len(expected_honest & honest.received)
            nut_process.send_signal(signal.SIGTERM)
            stats = await nut.first("statistics")
            mailbox_stats = await nut.first("mailbox")
        finally:
            for process in processes:  # by PID, whatever happened
                if process.returncode is None:
                    process.kill()
            with trio.move_on_after(WAIT) as scope:
                scope.shield = True
                for process in processes:
                    await process.wait()
            nursery.cancel_scope.cancel()
    # py-libp2p drops (unclosed) the socket of a connection the node cut, e.g. an abuser's after a
    # reset; collect them here, where their ResourceWarning says nothing about the node under test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return _figures(seconds, counts, got, stats, mailbox_stats)


def _figures(
    seconds: float, counts: Counts, got: int, stats: dict[str, Any], mailbox_stats: dict[str, Any]
) -> dict[str, Any]:
    window = min(60.0, seconds / 3)
    first = [kib for t, kib in counts.rss if t <= window and kib]
    last = [kib for _, kib in counts.rss if kib][-3:]
    baseline = max(first) if first else 0
    growth_mib = (sum(last) / len(last) - baseline) / 1024 if last and baseline else float("nan")
    sent = 2 * counts.honest_sent + counts.mailbox_sent
    delivered = got + counts.mailbox_delivered
    refused_mailbox = mailbox_stats.get("refused") or {}
    refusals = (
        sum(refused_mailbox.values())
        + sum(stats.get("drops", {}).values())
        + sum(stats.get("router_drops", {}).values())
    )
    return {
        "seconds": seconds,
        "rss_first_kib": baseline,
        "rss_last_kib": last[-1] if last else 0,
        "rss_max_kib": max((kib for _, kib in counts.rss), default=0),
        "rss_series_mib": " ".join(f"{t:.0f}s:{kib / 1024:.1f}" for t, kib in counts.rss),
        "soak_rss_growth_mib": round(growth_mib, 2),
        "honest_sent": sent,
        "honest_delivered": delivered,
        "honest_delivery": round(delivered / sent, 4) if sent else float("nan"),
        "gossip_sent": 2 * counts.honest_sent,
        "gossip_delivered": got,
        "mailbox_delivered": counts.mailbox_delivered,
        "leaks": counts.leaks,
        "abuse_sent": dict(sorted(counts.abuse.items())),
        "refused_mailbox": refused_mailbox,
        "driver_drops": stats.get("drops", {}),
        "router_drops": stats.get("router_drops", {}),
        "node_delivered": stats.get("delivered"),
        "mailbox": {k: mailbox_stats.get(k) for k in ("items", "bytes", "stored", "fetched", "deleted")},
        "refusals": refusals,
    }


async def _mesh_formed(nut: JsonProcess, honest: JsonProcess) -> None:
    """Probe both ways until a line crosses each way (a mesh forms within a heartbeat or two)."""

    def crossed() -> bool:
        return any(m.startswith(b"probe h") for m in nut.received) and any(
            m.startswith(b"probe n") for m in honest.received
        )

    for probe in range(MAX_PROBES):
        if crossed():
            return
        await nut.write_line(b"probe n %d" % probe)
        await honest.write_line(b"probe h %d" % probe)
        with trio.move_on_after(0.5):  # a probe's pace; both processes' output wakes the check
            await honest.wait_for(crossed)
    raise RuntimeError(f"no probe crossed between the node and the honest peer in {MAX_PROBES} tries")


async def _honest_gossip(nut: JsonProcess, honest: JsonProcess, until: float, counts: Counts) -> None:
    numbers = itertools.count()

    async def step() -> None:
        k = next(numbers)
        await honest.write_line(b"h %d" % k)
        await nut.write_line(b"n %d" % k)
        counts.honest_sent = k + 1

    await paced(HONEST_RATE, until, step)


async def _honest_mailbox(address: str, until: float, counts: Counts) -> None:
    """Alice stores a sealed envelope for Bob; Bob fetches it by id; Alice withdraws it."""
    alice, bob = Identity(ALICE_SEED), Identity(BOB_SEED)
    async with _host(alice, address) as alice_peer, _host(bob, address) as bob_peer:

        async def step() -> None:
            counts.mailbox_sent += 1
            envelope = seal(
                alice, bob.public, b"mailbox %d" % counts.mailbox_sent, wall_now=time.time(), ttl=3600
            )
            envelope = stamp_envelope(envelope, SOAK_STAMP_COST)  # a stranger to the mailbox: pays
            mid = message_id(envelope)
            try:
                stored = await call_mailbox(
                    alice_peer.host, alice_peer.peer_id, StoreRequest(envelopes=(envelope,))
                )
                if not isinstance(stored, Stored):
                    return
                fetched = await call_mailbox(
                    bob_peer.host, bob_peer.peer_id, FetchRequest(message_ids=(mid,))
                )
                if isinstance(fetched, Fetched) and envelope in fetched.envelopes:
                    counts.mailbox_delivered += 1
                await call_mailbox(alice_peer.host, alice_peer.peer_id, WithdrawRequest(message_ids=(mid,)))
            except MeshchatError as exc:
                counts.add(f"honest_mailbox_error:{type(exc).__name__}")

        await paced(HONEST_RATE, until, step)


@asynccontextmanager
async def _host(identity: Identity, address: str) -> AsyncIterator[Peer]:
    """A running host for ``identity`` (built like a node's) connected to the node at ``address``."""
    host = build_host(identity)
    async with host.run([multiaddr.Multiaddr(LOCAL)]):
        try:
            peer = Peer(host, address)
            await peer.connect()
            yield peer
        finally:
            for peer_id in list(host.get_network().connections):  # else py-libp2p leaks the sockets
                with trio.move_on_after(WAIT) as scope:
                    scope.shield = True
                    await host.disconnect(peer_id)


# --- abusers -------------------------------------------------------------------------------------


async def abuse_junk_rpcs(address: str, until: float, counts: Counts, rng: random.Random) -> None:
    """Random bytes, broken protobuf and absurd length prefixes on the pubsub stream."""
    async with _host(Identity(bytes([0x61]) * 32), address) as peer:

        async def step() -> None:
            kind = rng.randrange(4)
            if kind == 0:
                data = frame(rng.randbytes(rng.randint(1, 2000)))
            elif kind == 1:
                good = encode_rpc(RPC(publish=(PubMessage(topic=TOPIC, data=rng.randbytes(50)),)))
                data = frame(good[: rng.randint(1, len(good) - 1)])
            elif kind == 2:
                data = bytes.fromhex("8080800280") + rng.randbytes(100)  # announces a 4 MiB frame
            else:
                data = frame(b"\xff\xff\xff\xff")
            await peer.send_pubsub(data, counts, "junk_rpc")
            if kind >= 2:
                peer.stream = None  # the node resets a stream after a bad frame: next one on a new stream

        await paced(JUNK_RATE, until, step)


async def abuse_subscription_churn(address: str, until: float, counts: Counts, rng: random.Random) -> None:
    """Subscribe to hundreds of topics (the real one among them) and drop them, over and over."""
    async with _host(Identity(bytes([0x62]) * 32), address) as peer:
        subscribe = itertools.cycle((True, False))

        async def step() -> None:
            on = next(subscribe)
            topics = [f"churn/{rng.randrange(10_000)}" for _ in range(CHURN_TOPICS)] + [TOPIC]
            rpc = RPC(subscriptions=tuple(SubOpts(subscribe=on, topic=t) for t in topics))
            await peer.send_pubsub(frame(encode_rpc(rpc)), counts, "churn_rpc")

        await paced(CHURN_RATE, until, step)


async def abuse_ihave_flood(address: str, until: float, counts: Counts, rng: random.Random) -> None:
    """IHAVEs of 5,000 ids nobody published, and IWANTs for ids the node never had."""
    async with _host(Identity(bytes([0x63]) * 32), address) as peer:

        async def step() -> None:
            ids = tuple(rng.randbytes(20) for _ in range(IHAVE_IDS))
            control = ControlMessage(
                ihave=(IHave(topic=TOPIC, message_ids=ids),), iwant=(IWant(message_ids=ids[:500]),)
            )
            rpc = RPC(subscriptions=(SubOpts(subscribe=True, topic=TOPIC),), control=control)
            await peer.send_pubsub(frame(encode_rpc(rpc)), counts, "ihave_rpc")

        await paced(IHAVE_RATE, until, step)


async def abuse_mailbox_snoop(address: str, until: float, counts: Counts, rng: random.Random) -> None:
    """Sync, fetch and delete with Bob's tags and ids (from a stranger's key), and junk frames."""
    bob = Identity(BOB_SEED)
    async with _host(Identity(bytes([0x64]) * 32), address) as peer:

        async def step() -> None:
            envelope = seal(Identity(ALICE_SEED), bob.public, b"snooped?", wall_now=time.time(), ttl=600)
            tag = decode_envelope(envelope).inbox_tag
            kind = rng.randrange(4)
            try:
                if kind == 0:
                    request = SyncRequest(tags=(tag,), reconcile=encode_message(Reconciler([]).initiate()))
                    answer = await call_mailbox(peer.host, peer.peer_id, request)
                    counts.leaks += isinstance(answer, Synced) and answer.held > 0
                elif kind == 1:
                    ids = (message_id(envelope), rng.randbytes(32))
                    answer = await call_mailbox(peer.host, peer.peer_id, FetchRequest(message_ids=ids))
                    counts.leaks += isinstance(answer, Fetched) and bool(answer.envelopes)
                elif kind == 2:
                    answer = await call_mailbox(
                        peer.host, peer.peer_id, DeleteRequest(tags=(tag,), generation=1 << 40)
                    )
                    counts.leaks += isinstance(answer, Deleted) and answer.count > 0
                else:
                    with trio.fail_after(WAIT):
                        stream = await peer.host.new_stream(peer.info.peer_id, [TProtocol(MAILBOX_PROTOCOL)])
                        await stream.write(frame(rng.randbytes(rng.randint(1, 500))))
                        await drain(stream)
                    answer = None
                counts.add(f"snoop_answer:{type(answer).__name__}")
                if isinstance(answer, MailboxError):
                    counts.add(f"snoop_refused:{answer.code.name}")
            except CUT_ERRORS as exc:
                counts.add(f"snoop_cut:{type(exc).__name__}")

        await paced(SNOOP_RATE, until, step)


async def abuse_stampless_strangers(address: str, until: float, counts: Counts, rng: random.Random) -> None:
    """Strangers storing sealed envelopes for Bob without a stamp, with one below the mailbox's cost,
    or with a good stamp taken from another envelope: every one refused (``no_stamp``), counted."""
    bob = Identity(BOB_SEED)
    stranger = Identity(bytes([0x65]) * 32)
    donor = stamp_envelope(
        seal(stranger, bob.public, b"paid", wall_now=time.time(), ttl=3600), SOAK_STAMP_COST
    )
    async with _host(stranger, address) as peer:

        async def step() -> None:
            envelope = seal(
                stranger, bob.public, b"spam %d" % rng.randrange(1 << 30), wall_now=time.time(), ttl=600
            )
            kind = rng.randrange(3)
            if kind == 1:
                envelope = stamp_envelope(envelope, 1)  # below the cost (2^-12 of them would pass)
                if (
                    stamp_bits(unstamped(decode_envelope(envelope)), decode_envelope(envelope).stamp)
                    >= SOAK_STAMP_COST
                ):
                    return
            elif kind == 2:
                envelope = with_stamp(decode_envelope(envelope), decode_envelope(donor).stamp)  # not its own
                moved = decode_envelope(envelope)
                if stamp_bits(unstamped(moved), moved.stamp) >= SOAK_STAMP_COST:
                    return  # valid here by chance (2^-12 of them): an honest pass, not a leak
            try:
                answer = await call_mailbox(peer.host, peer.peer_id, StoreRequest(envelopes=(envelope,)))
                counts.leaks += isinstance(answer, Stored) and any(
                    result.code is StoreCode.STORED for result in answer.results
                )
                counts.add(f"stranger_answer:{type(answer).__name__}")
            except CUT_ERRORS as exc:
                counts.add(f"stranger_cut:{type(exc).__name__}")

        await paced(SNOOP_RATE, until, step)


ABUSERS: dict[str, Callable[[str, float, Counts, random.Random], Awaitable[None]]] = {
    "junk_rpcs": abuse_junk_rpcs,
    "subscription_churn": abuse_subscription_churn,
    "ihave_flood": abuse_ihave_flood,
    "mailbox_snoop": abuse_mailbox_snoop,
    "stampless_strangers": abuse_stampless_strangers,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        figures = trio.run(soak, args.seconds, args.sample, workdir, print)
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(
        f"soak_rss_growth_mib={figures['soak_rss_growth_mib']} honest_delivery={figures['honest_delivery']} "
        f"refusals={figures['refusals']}"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
