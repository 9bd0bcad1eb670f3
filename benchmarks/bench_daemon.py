"""What the JSON-RPC daemon costs: ``messages.send`` over the Unix socket against ``Node.send`` direct.

Run: python benchmarks/bench_daemon.py [--messages 300] [--no-page]

In one process and one trio run: Bob's node on 127.0.0.1, and Alice's (a fresh profile with Bob as a
contact, connected to him, warmed up by one message: the first sets up the session) served by the
daemon's Unix-socket transport (``meshchat.app.unix``, the methods with their event hub, the token).
``--messages`` sends of each kind, in ``--rounds`` alternating blocks on that same node (so both
kinds see the same profile, the same store size and the same background work), each block followed
by a wait for Bob's receipts:

1. direct: ``await node.send("Bob", text)``, one after the other;
2. rpc: a Python client in the same run, authenticated, sending ``messages.send`` requests
   **sequentially** (each waits for its answer before the next: the slowest honest client);
3. the same client **pipelined** (``PIPELINE`` requests in flight), a second figure;
4. a sequential client in **another process** (``CHILD_CLIENT``: blocking standard-library sockets,
   as an app in another language would be; it times its own calls, so its start-up is not counted),
   which does not share the node's thread as the in-process client does.

Both are sends per second of the whole work: each block is timed until every message of it has left the
outbox queue (relayed to Bob). ``Node.send`` returns once the message is sealed and durable and leaves
the publishing to the node's tasks; timing only the calls flattered the direct loop, which yields less
often and so leaves that work for later, while the socket's every read and write lets those tasks run
inside the timed RPC calls. The ratio is what the JSON, the socket and the session add. Both ratios are
printed (calls alone, whole work), for the sequential and a pipelined client; ``rpc_ratio`` is the
sequential client's whole-work ratio. Target: ``rpc_ratio >= 0.5``. Then ``measure_page_ms()`` of
``benchmarks/page_load.py`` (the web app showing a 10,000-message conversation in headless Chromium);
``--no-page`` skips it (``page_ms=nan``).

The last line reads ``rpc_ratio=… page_ms=…`` (the rates and both ratios above it).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshchat.app.methods import open_methods
from meshchat.app.unix import serve_unix
from meshchat.identity import KEY_FILE_NAME, Identity, save_identity
from meshchat.node import Node
from meshchat.store.storage import OutboxStatus
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 60.0
TOKEN = "bench-token"
#: Requests the pipelined client keeps in flight (a bulk sender; the answers still come in order).
PIPELINE = 16
TEXT = "Привет, Боб! A message of a typical length, about sixty bytes."


def profile(root: Path, name: str, identity: Identity) -> Path:
    folder = root / name
    folder.mkdir()
    save_identity(folder / KEY_FILE_NAME, identity, None)
    return folder


@asynccontextmanager
async def alice_for(root: Path, name: str, bob: Node, bob_id: Identity) -> AsyncIterator[Node]:
    """A fresh profile of Alice's knowing Bob, connected to him, one message already sent."""
    folder = profile(root, name, Identity.generate())
    async with Node.open(folder, listen=LOCAL, dht=False) as alice:
        alice.contacts.add(Invite.create(bob_id, name="Bob", addrs=bob.listen_addrs).to_text())
        await alice.connect(bob.listen_addrs[0])
        with trio.fail_after(WAIT):
            await alice.wait_for(lambda: bob.peer_id in alice.driver.router.topic_peers(bob.inbox_topic()))
        await alice.send("Bob", "warm-up")
        await settled(alice, 1)
        yield alice


async def published(alice: Node, count: int) -> None:
    """Wait until Alice's last ``count`` messages have all left the outbox queue (relayed or later):
    ``Node.send`` returns before the publishing its message needs, which the node's tasks do next."""
    with trio.fail_after(WAIT):
        await alice.wait_for(lambda: all(r.status is not OutboxStatus.QUEUED for r in alice.outbox(count)))


async def settled(alice: Node, count: int) -> None:
    """Wait until Bob's receipts for Alice's last ``count`` messages are back: the next measurement
    starts on a quiet pair, not while Bob still works through this one's messages."""
    done = {OutboxStatus.DELIVERED, OutboxStatus.READ}
    with trio.fail_after(WAIT):
        await alice.wait_for(lambda: all(r.status in done for r in alice.outbox(count)))


class LineClient:
    """A sequential JSON-RPC client of the Unix socket: each call waits for its answer."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.next_id = 0

    async def call(self, method: str, params: dict[str, object]) -> dict[str, object]:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        await self.stream.send_all(json.dumps(message).encode() + b"\n")
        while b"\n" not in self.buffer:
            self.buffer += await self.stream.receive_some(65536)
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer: dict[str, object] = json.loads(line)
        assert "error" not in answer, answer
        return answer

    async def pipelined(self, calls: list[tuple[str, dict[str, object]]], window: int) -> None:
        """Make ``calls`` keeping up to ``window`` requests in flight (answers come in order)."""
        waiting = 0
        for method, params in calls:
            self.next_id += 1
            message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
            await self.stream.send_all(json.dumps(message).encode() + b"\n")
            waiting += 1
            if waiting == window:
                waiting -= await self._answers(1)
        await self._answers(waiting)

    async def _answers(self, wanted: int) -> int:
        got = 0
        while got < wanted:
            while b"\n" not in self.buffer:
                self.buffer += await self.stream.receive_some(65536)
            line, self.buffer = self.buffer.split(b"\n", 1)
            assert b'"error"' not in line, line
            got += 1
        return got


async def direct(alice: Node, count: int, first: int) -> tuple[float, float]:
    """Seconds for ``count`` sends with ``Node.send``."""
    start = time.perf_counter()
    for i in range(first, first + count):
        await alice.send("Bob", f"{TEXT} {i}")
    calls = time.perf_counter() - start
    await published(alice, count)
    return calls, time.perf_counter() - start


async def over_rpc(client: LineClient, alice: Node, count: int, first: int) -> tuple[float, float]:
    """Seconds for ``count`` sequential ``messages.send`` calls."""
    start = time.perf_counter()
    for i in range(first, first + count):
        await client.call("messages.send", {"to": "Bob", "text": f"{TEXT} {i}"})
    calls = time.perf_counter() - start
    await published(alice, count)
    return calls, time.perf_counter() - start


async def over_rpc_pipelined(client: LineClient, alice: Node, count: int, first: int) -> tuple[float, float]:
    """Seconds for ``count`` ``messages.send`` calls, ``PIPELINE`` in flight at a time."""
    calls: list[tuple[str, dict[str, object]]] = [
        ("messages.send", {"to": "Bob", "text": f"{TEXT} {i}"}) for i in range(first, first + count)
    ]
    start = time.perf_counter()
    await client.pipelined(calls, PIPELINE)
    calls = time.perf_counter() - start
    await published(alice, count)
    return calls, time.perf_counter() - start


#: A sequential client in another process (blocking sockets, the standard library only): what an app
#: in another language sees, without sharing the node's thread as the in-process client does.
CHILD_CLIENT = r"""
import json, socket, sys, time
path, token, first, count, text = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
sock = socket.socket(socket.AF_UNIX)
sock.connect(path)
f = sock.makefile("rwb")
def call(i, method, params):
    f.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}).encode() + b"\n")
    f.flush()
    answer = json.loads(f.readline())
    assert "error" not in answer, answer
call(0, "auth", {"token": token})
start = time.perf_counter()
for i in range(first, first + count):
    call(i + 1, "messages.send", {"to": "Bob", "text": f"{text} {i}"})
print(time.perf_counter() - start)
"""


async def other_process(socket_path: Path, alice: Node, count: int, first: int) -> tuple[float, float]:
    """Seconds for ``count`` sequential ``messages.send`` calls from a client in another process (its
    start-up is not counted: it times its own calls; the whole work adds the wait until relayed)."""
    argv = [sys.executable, "-c", CHILD_CLIENT, str(socket_path), TOKEN, str(first), str(count), TEXT]
    done = await trio.run_process(argv, capture_stdout=True)
    calls = float(done.stdout.decode().strip())
    after = time.perf_counter()
    await published(alice, count)
    return calls, calls + time.perf_counter() - after


async def measure(count: int, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Sends per second direct and over the socket, in alternating blocks on the same node: of the
    calls alone, and of the whole work (until every message was relayed)."""
    block = max(1, count // rounds)
    calls = {"direct": 0.0, "sequential": 0.0, "pipelined": 0.0, "process": 0.0}
    totals = dict(calls)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bob_id = Identity.generate()
        socket_path = root / "daemon.sock"
        async with (
            Node.open(profile(root, "bob", bob_id), listen=LOCAL, dht=False) as bob,
            alice_for(root, "alice", bob, bob_id) as alice,
            open_methods(alice) as methods,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(functools.partial(serve_unix, methods, socket_path, token=TOKEN))
            stream = await trio.open_unix_socket(str(socket_path))
            async with stream:
                client = LineClient(stream)
                await client.call("auth", {"token": TOKEN})
                sent = 0
                for _ in range(rounds):
                    add(calls, totals, "direct", await direct(alice, block, sent))
                    sent += block
                    await settled(alice, block)
                    add(calls, totals, "sequential", await over_rpc(client, alice, block, sent))
                    sent += block
                    await settled(alice, block)
                    add(calls, totals, "pipelined", await over_rpc_pipelined(client, alice, block, sent))
                    sent += block
                    await settled(alice, block)
                    add(calls, totals, "process", await other_process(socket_path, alice, block, sent))
                    sent += block
                    await settled(alice, block)
            nursery.cancel_scope.cancel()
    total = block * rounds
    return {kind: total / seconds for kind, seconds in calls.items()}, {
        kind: total / seconds for kind, seconds in totals.items()
    }


def add(calls: dict[str, float], totals: dict[str, float], kind: str, seconds: tuple[float, float]) -> None:
    calls[kind] += seconds[0]
    totals[kind] += seconds[1]


def page_ms(enabled: bool) -> float:
    if not enabled:
        print("page_ms: skipped (--no-page)")
        return math.nan
    try:
        from benchmarks.page_load import measure_page_ms  # noqa: PLC0415
    except ImportError as exc:  # the web app's benchmark is not in this checkout
        print(f"page_ms: benchmarks/page_load.py not available ({exc})")
        return math.nan
    return measure_page_ms()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300, help="sends per measurement")
    parser.add_argument("--rounds", type=int, default=6, help="alternating blocks of each kind")
    parser.add_argument("--no-page", action="store_true", help="skip measure_page_ms()")
    args = parser.parse_args()
    call_rates, rates = trio.run(measure, args.messages, args.rounds)
    for title, table in (("calls alone", call_rates), ("whole work, until relayed", rates)):
        direct_rate = table["direct"]
        print(f"{title}: direct (Node.send) {direct_rate:.1f}/s")
        hows = {
            "sequential": "each call waits for its answer",
            "pipelined": f"{PIPELINE} in flight",
            "process": "sequential, the client in another process",
        }
        for kind, how in hows.items():
            print(f"  {kind} ({how}) {table[kind]:.1f}/s, ratio {table[kind] / direct_rate:.2f}")
    ratio = rates["sequential"] / rates["direct"]
    print(f"rpc_ratio: sequential, whole work; target >= 0.5: {'met' if ratio >= 0.5 else 'MISSED'}")
    page = page_ms(not args.no_page)
    print(f"rpc_ratio={ratio:.2f} page_ms={page:.0f}")


if __name__ == "__main__":
    main()
