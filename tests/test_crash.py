"""Crash safety: processes killed with SIGKILL at random points lose nothing and duplicate nothing.

Three processes on 127.0.0.1: a mailbox (``meshchat mailbox``), a sender and a recipient
(``tests/crash_peer.py``, an app on the ``Node`` API). Each test kills one of them at random moments
(seeded) while it works, starts it again on the same profile, and in the end reads the recipient's
store: every one of the N messages is in its inbox exactly once. Every wait is bounded; every process
is killed at exit.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from conftest import make_profile
from processes import JsonLinesProcess, stop_processes

from meshchat.identity import Identity
from meshchat.store.encrypted import store_key
from meshchat.store.sqlite import STORE_FILE, SqliteStorage

pytestmark = pytest.mark.slow

N = 1000
#: Seconds a whole send or sync may take (1,000 fsync'd messages and the process start).
RUN_WAIT = 120.0
PEER_SCRIPT = str(Path(__file__).with_name("crash_peer.py"))
Start = Callable[..., Awaitable[JsonLinesProcess]]


@asynccontextmanager
async def processes() -> AsyncIterator[Start]:
    """``start(*args)`` launches a JSON-lines process; all are killed and reaped at exit."""
    running: list[trio.Process] = []
    async with trio.open_nursery() as nursery:

        async def start(*args: str) -> JsonLinesProcess:
            process = await trio.lowlevel.open_process(
                [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            running.append(process)
            peer = JsonLinesProcess(process)
            nursery.start_soon(peer.read_events)
            return peer

        try:
            yield start
        finally:
            await stop_processes(running, timeout=30)
            nursery.cancel_scope.cancel()


async def start_mailbox(start: Start, tmp_path: Path, port: int = 0) -> tuple[JsonLinesProcess, str]:
    folder, _ = make_profile(tmp_path, "mailbox", 50)
    listen = f"/ip4/127.0.0.1/tcp/{port}"
    box = await start("-m", "meshchat", "mailbox", "--profile", str(folder), "--listen", listen, "--json")
    ready = await box.first("listening")
    return box, ready["addrs"][0]


def sender_args(tmp_path: Path, mailbox: str, recipient: Identity) -> list[str]:
    folder, _ = make_profile(tmp_path, "sender", 51)
    return [PEER_SCRIPT, "send", str(folder), mailbox, recipient.public.peer_id, str(N)]


def recipient_args(tmp_path: Path, mailbox: str, after: int = 0) -> list[str]:
    folder, _ = make_profile(tmp_path, "recipient", 52)
    return [PEER_SCRIPT, "receive", str(folder), mailbox, str(N), str(after)]


async def run_to(peer: JsonLinesProcess, kind: str) -> None:
    await peer.wait_for(lambda: any(e["event"] == kind for e in peer.events), timeout=RUN_WAIT)


def finished(peer: JsonLinesProcess) -> bool:
    return any(e["event"] in {"done", "all_stored"} for e in peer.events)


async def kill_after(peer: JsonLinesProcess, condition: Callable[[], bool]) -> bool:
    """SIGKILL ``peer`` as soon as ``condition()`` holds on its output (or when it finished first);
    return True if it was killed in the middle of its work."""
    await peer.wait_for(lambda: condition() or finished(peer), timeout=RUN_WAIT)
    peer.process.kill()
    await peer.process.wait()
    return not finished(peer)


def assert_inbox_exactly_once(tmp_path: Path, *, in_order: bool = False) -> None:
    _, recipient = make_profile(tmp_path, "recipient", 52)
    with SqliteStorage(tmp_path / "recipient" / STORE_FILE, key=store_key(recipient)) as store:
        inbox = store.inbox_after(0, N * 2)
    bodies = [m.body.decode() for m in inbox]
    assert len(bodies) == N, f"{len(bodies)} messages in the inbox"
    assert sorted(bodies) == sorted(f"m{i}" for i in range(N))  # each exactly once
    assert [m.number for m in inbox] == list(range(1, N + 1))
    if in_order:  # one sync brought them all: the app got them in the sender's order
        assert bodies == [f"m{i}" for i in range(N)]
        assert [m.seq for m in inbox] == list(range(1, N + 1))


def queued(peer: JsonLinesProcess) -> int:
    return sum(1 for e in peer.events if e["event"] == "queued")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sender_killed_while_sending_loses_and_duplicates_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    _, recipient = make_profile(tmp_path, "recipient", 52)
    async with processes() as start:
        _, mailbox = await start_mailbox(start, tmp_path)
        mid_work = 0
        for point in sorted(rng.sample(range(1, N), 3)):  # refs make the repeated sends no-ops
            sender = await start(*sender_args(tmp_path, mailbox, recipient))
            mid_work += await kill_after(sender, lambda s=sender, p=point: queued(s) >= p)
        assert mid_work == 3
        sender = await start(*sender_args(tmp_path, mailbox, recipient))
        await run_to(sender, "all_stored")
        receiver = await start(*recipient_args(tmp_path, mailbox))
        await run_to(receiver, "done")
    assert_inbox_exactly_once(tmp_path, in_order=True)
    printed = [e["body"] for e in receiver.events if e["event"] == "direct"]
    assert len(printed) == len(set(printed)) == N


@pytest.mark.parametrize("seed", [1, 2])
async def test_recipient_killed_during_sync_gets_everything_exactly_once(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    _, recipient = make_profile(tmp_path, "recipient", 52)
    async with processes() as start:
        _, mailbox = await start_mailbox(start, tmp_path)
        sender = await start(*sender_args(tmp_path, mailbox, recipient))
        await run_to(sender, "all_stored")
        printed: list[dict[str, object]] = []
        mid_work = 0
        for point in sorted(rng.sample(range(1, N), 2)):
            after = int(str(printed[-1]["number"])) if printed else 0
            receiver = await start(*recipient_args(tmp_path, mailbox, after))
            mid_work += await kill_after(
                receiver, lambda r=receiver, p=point: sum(e["event"] == "direct" for e in r.events) >= p // 2
            )
            printed += [e for e in receiver.events if e["event"] == "direct"]
        assert mid_work >= 1  # at least one kill came before the sync finished
        after = int(str(printed[-1]["number"])) if printed else 0
        receiver = await start(*recipient_args(tmp_path, mailbox, after))
        await run_to(receiver, "done")
        printed += [e for e in receiver.events if e["event"] == "direct"]
    assert_inbox_exactly_once(tmp_path)
    # The app heard of every message exactly once, in inbox order, across three processes: each run
    # resumed the event stream after the last number the one before printed (``events_after``).
    assert [e["number"] for e in printed] == list(range(1, N + 1))
    assert sorted(str(e["body"]) for e in printed) == sorted(f"m{i}" for i in range(N))


@pytest.mark.parametrize("seed", [1, 2])
async def test_mailbox_killed_while_storing_loses_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    _, recipient = make_profile(tmp_path, "recipient", 52)
    async with processes() as start:
        box, mailbox = await start_mailbox(start, tmp_path)
        port = int(mailbox.split("/tcp/")[1].split("/")[0])
        sender = await start(*sender_args(tmp_path, mailbox, recipient))
        mid_work = 0
        for point in sorted(rng.sample(range(1, N), 2)):
            await sender.wait_for(lambda s=sender, p=point: queued(s) >= p or finished(s), timeout=RUN_WAIT)
            box.process.kill()
            await box.process.wait()
            mid_work += not finished(sender)  # killed while the sender still had messages to store
            box, _ = await start_mailbox(start, tmp_path, port)
        assert mid_work >= 1
        await run_to(sender, "all_stored")
        receiver = await start(*recipient_args(tmp_path, mailbox))
        await run_to(receiver, "done")
    assert_inbox_exactly_once(tmp_path)
