"""Group crash safety: no group message reaches the application twice, or never, across SIGKILLs.

Three processes on 127.0.0.1, as in ``tests/test_crash.py``: a mailbox (``meshchat mailbox``), a
group's admin and a member (``tests/group_crash_peer.py``, apps on the ``Node`` API). The admin
creates a group with the member and sends N group messages; the member joins and prints each one
with its history number. Each test kills one of the two with SIGKILL at seeded random moments while
it works and starts it again on the same profile (the member resuming after the last number it
printed, as an application does). At the end the member's ``groups.db`` holds each of the N messages
exactly once, and the lines the app printed over all its runs name each message exactly once, with
the number it has in the history. Every wait is bounded; every process is killed by PID at exit.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import make_profile
from processes import JsonLinesProcess, stop_processes

from meshchat.groups.core import GroupsCore
from meshchat.groups.events import SendControl
from meshchat.groups.outbox import REPUBLISH_FIRST
from meshchat.groups.sqlite import GROUPS_FILE, SqliteGroupStorage
from meshchat.store.encrypted import store_key
from tests.group_harness import GroupNet

N = 200
#: Seconds a whole run may take: N sends, the syncs, and a republish of what a killed admin sealed
#: but never handed to a mailbox (``REPUBLISH_FIRST``, 30 s).
RUN_WAIT = 90.0
PEER_SCRIPT = str(Path(__file__).with_name("group_crash_peer.py"))
Start = Callable[..., Awaitable[JsonLinesProcess]]


@asynccontextmanager
async def processes(logs: Path) -> AsyncIterator[Start]:
    """``start(*args)`` launches a JSON-lines process (its stderr in ``logs``/processN.err); all are
    killed and reaped at exit."""
    running: list[trio.Process] = []
    async with trio.open_nursery() as nursery:

        async def start(*args: str) -> JsonLinesProcess:
            with (logs / f"process{len(running)}.err").open("wb") as stderr:
                process = await trio.lowlevel.open_process(
                    [sys.executable, *args], stdout=subprocess.PIPE, stderr=stderr
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


async def start_mailbox(start: Start, tmp_path: Path) -> str:
    folder, _ = make_profile(tmp_path, "mailbox", 60)
    box = await start(
        "-m", "meshchat", "mailbox", "--profile", str(folder), "--listen", "/ip4/127.0.0.1/tcp/0", "--json"
    )
    ready = await box.first("listening")
    return str(ready["addrs"][0])


def admin_args(tmp_path: Path, mailbox: str) -> list[str]:
    folder, _ = make_profile(tmp_path, "admin", 61)
    _, member = make_profile(tmp_path, "member", 62)
    return [PEER_SCRIPT, "admin", str(folder), mailbox, member.public.peer_id, str(N)]


def member_args(tmp_path: Path, mailbox: str, after: int) -> list[str]:
    folder, _ = make_profile(tmp_path, "member", 62)
    return [PEER_SCRIPT, "member", str(folder), mailbox, str(N), str(after)]


def finished(peer: JsonLinesProcess) -> bool:
    return any(e["event"] in {"done", "all_stored"} for e in peer.events)


def count(peer: JsonLinesProcess, kind: str) -> int:
    return sum(1 for e in peer.events if e["event"] == kind)


async def wait_for(peer: JsonLinesProcess, condition: Callable[[], bool]) -> None:
    """``peer.wait_for``, failing with what the peer said it still waits for."""
    try:
        await peer.wait_for(condition, timeout=RUN_WAIT)
    except trio.TooSlowError:
        waiting = [e for e in peer.events if e["event"] == "waiting"][-1:]
        raise AssertionError(f"stalled: {waiting}") from None


async def run_to(peer: JsonLinesProcess, kind: str) -> None:
    await wait_for(peer, lambda: any(e["event"] == kind for e in peer.events))


async def kill_after(peer: JsonLinesProcess, condition: Callable[[], bool]) -> bool:
    """SIGKILL ``peer`` once ``condition()`` holds on its output (or it finished first); True if it
    was killed in the middle of its work."""
    await wait_for(peer, lambda: condition() or finished(peer))
    peer.process.kill()
    await peer.process.wait()
    return not finished(peer)


def last_number(printed: list[dict[str, Any]]) -> int:
    return int(printed[-1]["number"]) if printed else 0


def assert_exactly_once(tmp_path: Path, printed: list[dict[str, Any]], seen: list[dict[str, Any]]) -> None:
    """The member's history holds each of the N messages once; the app printed each once, in history
    order, with its history number; no event named a message under another number."""
    _, member = make_profile(tmp_path, "member", 62)
    with SqliteGroupStorage(tmp_path / "member" / GROUPS_FILE, key=store_key(member)) as storage:
        groups = storage.load(0.0).groups
        assert len(groups) == 1
        history = storage.history(groups[0].group_id, 0, 2 * N)
    bodies = [m.body.decode() for m in history]
    assert sorted(bodies) == sorted(f"m{i}" for i in range(N))  # each exactly once
    assert len({m.message_id for m in history}) == N
    numbers = {m.message_id.hex(): m.number for m in history}
    assert [(e["number"], e["body"]) for e in printed] == [(m.number, m.body.decode()) for m in history]
    assert all(numbers[e["mid"]] == e["number"] for e in printed + seen)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
async def test_member_killed_while_receiving_prints_each_message_once(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    async with processes(tmp_path) as start:
        mailbox = await start_mailbox(start, tmp_path)
        admin = await start(*admin_args(tmp_path, mailbox))
        printed: list[dict[str, Any]] = []
        seen: list[dict[str, Any]] = []
        mid_work = 0
        # The first kill comes before the member printed anything (while it joins or syncs).
        for point in [0, *sorted(rng.sample(range(1, N), 3))]:
            member = await start(*member_args(tmp_path, mailbox, last_number(printed)))
            before = len(printed)
            mid_work += await kill_after(
                member,
                lambda m=member, p=point, b=before: count(m, "started") > 0 and b + count(m, "group") >= p,
            )
            printed += [e for e in member.events if e["event"] == "group"]
            seen += [e for e in member.events if e["event"] == "event"]
        # The first kill always comes mid-work; a later one may find the run done already (a sync
        # can bring every message in one batch, printed before the kill lands).
        assert mid_work >= 1
        member = await start(*member_args(tmp_path, mailbox, last_number(printed)))
        await run_to(member, "done")
        printed += [e for e in member.events if e["event"] == "group"]
        seen += [e for e in member.events if e["event"] == "event"]
        await run_to(admin, "all_stored")
    assert_exactly_once(tmp_path, printed, seen)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
async def test_admin_killed_while_sending_loses_and_duplicates_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    async with processes(tmp_path) as start:
        mailbox = await start_mailbox(start, tmp_path)
        member = await start(*member_args(tmp_path, mailbox, 0))
        mid_work = 0
        for point in sorted(rng.sample(range(1, N), 3)):  # refs make the repeated sends no-ops
            admin = await start(*admin_args(tmp_path, mailbox))
            mid_work += await kill_after(admin, lambda a=admin, p=point: count(a, "queued") >= p)
        # A run killed late may have sent (and a mailbox stored) everything: its successor finds all
        # stored at once. The first run is always killed mid-work, and nearly always the others.
        assert mid_work >= 2
        admin = await start(*admin_args(tmp_path, mailbox))
        await run_to(admin, "all_stored")
        await run_to(member, "done")
        printed = [e for e in member.events if e["event"] == "group"]
        seen = [e for e in member.events if e["event"] == "event"]
    assert_exactly_once(tmp_path, printed, seen)


# --- the race the member test found, on the sans-IO core -------------------------------------------------
# An invitation and a chain handout are two control messages on the 1:1 path: they arrive in any order
# (a mailbox hands them out by id), and each is acknowledged as soon as the groups core returns, so a
# handout the core drops is never sent again: every message on that chain stays unreadable.


def restart(net: GroupNet, who: int) -> None:
    """``who``'s process is killed and started again: a new core on the same storage."""
    member = net[who]
    member.core = GroupsCore(member.identity, member.storage, wall_now=net.now)


def test_a_chain_handout_that_overtakes_the_invitation_is_kept_across_a_restart() -> None:
    net = GroupNet(2)
    gid, actions = net[0].core.create("Pair", [net[1].identity.public], wall_now=net.now)
    net.perform(0, actions)  # the invitation, queued
    net.perform(0, net[0].core.send(gid, b"first", wall_now=net.now)[1])  # handout + envelope, queued
    invitation, handout, envelope = net.queue
    assert (invitation[2], handout[2], envelope[2]) == ("control", "control", "group")
    net.queue.clear()
    net.hand_over(*handout[:2], "control", handout[3])  # acknowledged: the admin never sends it again
    restart(net, 1)
    net.hand_over(*invitation[:2], "control", invitation[3])
    net.join(1, gid)
    net.hand_over(*envelope[:2], "group", envelope[3])
    assert net.texts(1, gid) == ["first"]


def test_a_chain_handout_from_a_member_we_do_not_know_yet_is_kept() -> None:
    net = GroupNet(3)
    gid = net.create("Trio", 0, [1])
    net.send(0, gid, "hello")
    net.offline.add(1)  # member 1 misses the news that 2 was added, for now
    net.op(0, "invite", gid, net[2].identity.public)
    net.join(2, gid)
    net.send(2, gid, "hi, I am new")
    held = list(net.held)
    net.held.clear()
    net.offline.clear()
    # 2's handout reaches 1 before the admin's envelope that says 2 was added
    handouts = [h for h in held if h[0] == 2 and h[2] == "control"]
    assert handouts
    net.queue.extend(handouts + [h for h in held if h not in handouts])
    first = net.queue.popleft()
    net.hand_over(*first)
    restart(net, 1)
    net.deliver()
    assert net.texts(1, gid) == ["hello", "hi, I am new"]


# --- a crash between the groups core's commit and the driver carrying out its actions ----------------
# The core commits first (groups.db), then the driver hands its control messages to the messenger
# (store.db). A SIGKILL in between loses them: the invitation, or the handout of a new chain (whose
# members the record already counts as served), is never sent, and nothing ever sends it again.


def test_an_invitation_lost_in_a_crash_after_the_commit_is_sent_after_the_restart() -> None:
    net = GroupNet(2)
    gid, lost = net[0].core.create("Pair", [net[1].identity.public], wall_now=net.now)
    assert any(isinstance(a, SendControl) for a in lost)  # committed, never performed: killed here
    restart(net, 0)
    net.tick(1.0)  # the restarted node's timer
    assert [i.group_id for i in net[1].invited] == [gid]


def test_a_chain_handout_lost_in_a_crash_after_the_commit_is_sent_after_the_restart() -> None:
    net = GroupNet(2)
    gid = net.create("Pair", 0, [1])
    _, lost = net[0].core.send(gid, b"first", wall_now=net.now)
    assert any(isinstance(a, SendControl) for a in lost)  # the handout, never performed
    restart(net, 0)
    net.tick(1.0)
    net.send(0, gid, "second")
    net.tick(REPUBLISH_FIRST)  # the first message is published again: nobody stored it
    assert net.texts(1, gid) == ["second", "first"]
