"""File transfers survive SIGKILL: a sender, a recipient or a mailbox killed at random points (seeded)
while a 24 MiB file moves, started again on the same profile, and in the end the recipient's file is
byte-identical to the source, lands once under its name, and what was done before a kill is not done
again (beyond the designed checkpoint: written chunks and upload progress are recorded every
``_SYNC_EVERY`` chunks = 16 MiB).

Processes on 127.0.0.1 (``tests/file_crash_peer.py``, an app on the ``Node`` API) print JSON lines;
the tests wait on what they printed, every wait is bounded, every process is killed and reaped.
"""

from __future__ import annotations

import hashlib
import itertools
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

from meshchat.files.chunks import CHUNK_SIZE, MAX_CHUNK_WIRE
from meshchat.net import file_driver

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
#: The file: 96 chunks, so a transfer with a window of 2 takes long enough to be cut at random.
SIZE = 24 * MIB
#: Chunks between two records of progress (a kill loses at most this much work).
CHECKPOINT = file_driver._SYNC_EVERY * CHUNK_SIZE
#: Seconds one run may take to reach what a test waits for.
RUN_WAIT = 90.0
PEER = str(Path(__file__).with_name("file_crash_peer.py"))
NAME = "movie.mkv"
Start = Callable[..., Awaitable[JsonLinesProcess]]


@asynccontextmanager
async def processes() -> AsyncIterator[Start]:
    """``start(*args)`` runs ``file_crash_peer.py`` with ``args``; all are killed and reaped at exit."""
    running: list[trio.Process] = []
    async with trio.open_nursery() as nursery:

        async def start(*args: str | Path) -> JsonLinesProcess:
            process = await trio.lowlevel.open_process(
                [sys.executable, PEER, *map(str, args)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
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


def events(peer: JsonLinesProcess, kind: str) -> list[dict[str, Any]]:
    return [e for e in peer.events if e["event"] == kind]


def last(peer: JsonLinesProcess, kind: str, field: str) -> int:
    """The largest ``field`` of ``peer``'s ``kind`` lines (0 before any)."""
    return max((int(e[field]) for e in events(peer, kind)), default=0)


def done(peer: JsonLinesProcess) -> bool:
    return bool(events(peer, "done"))


def stored_all(peer: JsonLinesProcess) -> bool:
    return any(
        e["stored"] == SIZE and e["status"] in {"stored", "delivered"} for e in events(peer, "progress")
    )


async def kill(peer: JsonLinesProcess) -> None:
    peer.process.kill()
    await peer.process.wait()


async def kill_when(
    peer: JsonLinesProcess, condition: Callable[[], bool], finished: Callable[[], bool]
) -> bool:
    """SIGKILL ``peer`` as soon as ``condition()`` holds on its output (or once ``finished()``);
    True if it was killed before it finished."""
    await peer.wait_for(lambda: condition() or finished(), timeout=RUN_WAIT)
    await kill(peer)
    return not finished()


def source_file(tmp_path: Path, seed: int) -> Path:
    source = tmp_path / NAME
    source.write_bytes(random.Random(seed).randbytes(SIZE))
    return source


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_landed_once(tmp_path: Path, source: Path, peer: JsonLinesProcess) -> None:
    """The recipient's downloads folder holds the file once, byte-identical, and nothing partial."""
    downloads = tmp_path / "recipient" / "downloads"
    path = Path(events(peer, "done")[-1]["path"])
    assert path == downloads / NAME
    assert sha256(path) == sha256(source)
    assert sorted(p.name for p in downloads.iterdir()) == sorted([NAME, ".partial"])
    assert list((downloads / ".partial").iterdir()) == []


def profiles(tmp_path: Path) -> tuple[Path, Path, Path, str]:
    """The sender's, the recipient's and the mailbox's profile folders, and the recipient's PeerId."""
    sender, _ = make_profile(tmp_path, "sender", 61)
    recipient, identity = make_profile(tmp_path, "recipient", 62)
    box, _ = make_profile(tmp_path, "mailbox", 60)
    return sender, recipient, box, identity.public.peer_id


async def start_mailbox(start: Start, folder: Path, port: int = 0) -> tuple[JsonLinesProcess, str]:
    box = await start("mailbox", folder, "--port", str(port))
    return box, str((await box.first("ready"))["addr"])


async def report(sender: JsonLinesProcess) -> dict[str, Any]:
    """What the sender says now (asked on its stdin)."""
    before = len(events(sender, "report"))
    await sender.write_line(b"report")
    await sender.wait_for(lambda: len(events(sender, "report")) > before)
    return events(sender, "report")[-1]


def resumed(peer: JsonLinesProcess) -> int:
    """The bytes of the file a recipient run found recorded in files.db when it started."""
    state, written = events(peer, "recorded")[0]["attachments"].get("1", ("", 0))
    assert state in {"", "fetching"}
    return int(written)


def recorded_after(resumed: int, written: int) -> int:
    """The bytes a run that started with ``resumed`` recorded once it had written up to ``written``:
    a single source fills the file in order, and every ``CHECKPOINT`` bytes are recorded."""
    return resumed + (written - resumed) // CHECKPOINT * CHECKPOINT


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_recipient_killed_while_downloading_resumes_to_an_identical_file(
    tmp_path: Path, seed: int
) -> None:
    """The recipient is killed three times at random points of a direct download; each run resumes
    from what the one before recorded; the sender serves the file less than twice over in all."""
    rng = random.Random(seed)
    source = source_file(tmp_path, seed)
    sender_dir, recipient_dir, _, recipient_id = profiles(tmp_path)
    async with processes() as start:
        sender = await start("sender", sender_dir, "--to", recipient_id, "--file", source)
        address = str((await sender.first("ready"))["addr"])
        points = sorted(rng.sample(range(CHUNK_SIZE, SIZE - CHUNK_SIZE), 3))
        runs: list[JsonLinesProcess] = []
        killed_mid = 0
        for point in points:
            run = await start("recipient", recipient_dir, "--connect", address)
            runs.append(run)
            killed_mid += await kill_when(
                run, lambda r=run, p=point: last(r, "written", "bytes") >= p, lambda r=run: done(r)
            )
        final = await start("recipient", recipient_dir, "--connect", address)
        runs.append(final)
        await final.wait_for(lambda: done(final), timeout=RUN_WAIT)
        served = int((await report(sender))["served"])
    assert killed_mid == 3, "every kill came before the download finished"
    assert_landed_once(tmp_path, source, final)
    # Each run started from what the ones before had recorded, never from less.
    for before, after in itertools.pairwise(runs):
        assert resumed(after) >= recorded_after(resumed(before), last(before, "written", "bytes"))
    # A kill costs at most one checkpoint of work (and the chunks in flight, and the small index).
    chunks = SIZE // CHUNK_SIZE
    lost_per_kill = (file_driver._SYNC_EVERY + 2 + 1) * MAX_CHUNK_WIRE
    assert chunks * MAX_CHUNK_WIRE <= served <= chunks * MAX_CHUNK_WIRE + 3 * lost_per_kill
    assert served < 2 * SIZE, f"{served / MIB:.1f} MiB served for a {SIZE // MIB} MiB file"
