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
from libp2p.abc import IHost
from processes import JsonLinesProcess, stop_processes

from meshchat.errors import NetworkError
from meshchat.files.chunks import CHUNK_SIZE, MAX_CHUNK_WIRE
from meshchat.net import file_driver
from meshchat.net.chunk_server import Channel
from meshchat.net.file_driver import FileConfig
from meshchat.node import Node
from meshchat.wire import Invite

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
#: The file: 256 chunks, four checkpoints; a kill loses at most one, so three kills cost less than
#: the file again wherever they fall.
SIZE = 64 * MIB
#: Chunks between two records of progress (a kill loses at most this much work).
CHECKPOINT = file_driver._SYNC_EVERY * CHUNK_SIZE
#: Seconds each chunk answer is delayed on the sender's and recipient's channels: ~25 MB/s, so a
#: 64 MiB transfer takes ~3 s and the kills (from the test process, on a busy machine) land where
#: they are aimed.
THROTTLE = "0.01"
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
            slow = ["--throttle", THROTTLE] if args[0] in {"sender", "recipient"} else []
            process = await trio.lowlevel.open_process(
                [sys.executable, PEER, *map(str, args), *slow],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            running.append(process)
            peer = Peer(process)
            nursery.start_soon(peer.read_events)
            return peer

        try:
            yield start
        finally:
            await stop_processes(running, timeout=30)
            nursery.cancel_scope.cancel()


class Peer(JsonLinesProcess):
    """A ``JsonLinesProcess`` that prints ``exited`` (its exit code) once its output ends, so a wait
    on a process that crashed ends at once (``until``) rather than at its timeout."""

    async def read_events(self) -> None:
        await super().read_events()
        await self.process.wait()
        self.events.append({"event": "exited", "code": self.process.returncode})
        self._changed.set()


async def until(peer: JsonLinesProcess, condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition()`` holds on ``peer``'s output; fail if ``peer`` exits first."""
    await peer.wait_for(lambda: condition() or bool(events(peer, "exited")), timeout=RUN_WAIT)
    assert condition(), f"the process exited first: {peer.events[-3:]}"


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
    peer: JsonLinesProcess,
    condition: Callable[[], bool],
    finished: Callable[[], bool],
    *,
    watch: JsonLinesProcess | None = None,
) -> bool:
    """SIGKILL ``peer`` as soon as ``condition()`` holds on the output of ``watch`` (``peer`` itself
    unless given), or once ``finished()``; True if it was killed before it finished."""
    await until(watch or peer, lambda: condition() or finished())
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


async def start_mailbox(
    start: Start, folder: Path, port: int | str = 0, *, bulk: bool = True
) -> tuple[JsonLinesProcess, str]:
    box = await start("mailbox", folder, "--port", str(port), *([] if bulk else ["--no-bulk"]))
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


def kill_points(rng: random.Random, count: int) -> list[int]:
    """``count`` byte thresholds, one at random in each ``count``-th of the file (so the later runs
    pass a checkpoint and the kills spread over the transfer)."""
    part = SIZE // count
    return [rng.randrange(k * part + CHUNK_SIZE, (k + 1) * part) for k in range(count)]


def recorded_after(resumed: int, written: int) -> int:
    """The bytes a run that started with ``resumed`` recorded once it had written up to ``written``:
    a single source fills the file in order, and every ``CHECKPOINT`` bytes are recorded."""
    return resumed + (written - resumed) // CHECKPOINT * CHECKPOINT


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_recipient_killed_while_downloading_resumes_to_an_identical_file(
    tmp_path: Path, seed: int
) -> None:
    """The recipient is killed three times at random points of a direct download; each run resumes
    from what the one before recorded; the sender serves
    the file less than twice over in all."""
    rng = random.Random(seed)
    source = source_file(tmp_path, seed)
    sender_dir, recipient_dir, _, recipient_id = profiles(tmp_path)
    async with processes() as start:
        sender = await start("sender", sender_dir, "--to", recipient_id, "--file", source)
        address = str((await sender.first("ready"))["addr"])
        points = kill_points(rng, 3)
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
        await until(final, lambda: done(final))
        served = int((await report(sender))["served"])
    assert killed_mid == 3, "every kill came before the download finished"
    assert_landed_once(tmp_path, source, final)
    # Each run started from what the ones before had recorded, never from less.
    for before, after in itertools.pairwise(runs):
        assert resumed(after) >= recorded_after(resumed(before), last(before, "written", "bytes"))
    assert resumed(final) >= CHECKPOINT  # the last kill came after a checkpoint: it was used
    # A kill costs at most one checkpoint of work (and the chunks in flight, and the small index).
    chunks = SIZE // CHUNK_SIZE
    lost_per_kill = (file_driver._SYNC_EVERY + 2 + 1) * MAX_CHUNK_WIRE
    assert chunks * MAX_CHUNK_WIRE <= served <= chunks * MAX_CHUNK_WIRE + 3 * lost_per_kill
    assert served < 2 * SIZE, f"{served / MIB:.1f} MiB served for a {SIZE // MIB} MiB file"


def first_stored(sender: JsonLinesProcess) -> int:
    return int(events(sender, "progress")[0]["stored"])


def recorded_upload(runs: list[JsonLinesProcess]) -> int:
    """The upload progress ``runs`` recorded: the last checkpoint any of them passed (a printed
    ``stored`` value is printed after its checkpoint is committed)."""
    stored = max(last(run, "progress", "stored") for run in runs)
    return stored // CHECKPOINT * CHECKPOINT


async def test_a_sender_killed_while_uploading_resumes_and_the_mailbox_delivers_the_file(
    tmp_path: Path,
) -> None:
    """The sender is killed three times at random points of its upload to a mailbox; each run goes on
    from the last checkpoint the ones before recorded, the message is not sent twice, and once the
    sender is gone for good the recipient (offline until then) gets the file from the mailbox alone,
    which then drops its chunks."""
    rng = random.Random(7)
    source = source_file(tmp_path, 7)
    sender_dir, recipient_dir, box_dir, recipient_id = profiles(tmp_path)
    async with processes() as start:
        box, box_addr = await start_mailbox(start, box_dir)
        send = (
            "sender",
            sender_dir,
            "--to",
            recipient_id,
            "--file",
            source,
            "--mailbox",
            box_addr,
            "--reuse",
        )
        runs: list[JsonLinesProcess] = []
        killed_mid = 0
        for point in kill_points(rng, 3):
            run = await start(*send)
            runs.append(run)
            killed_mid += await kill_when(
                run, lambda r=run, p=point: last(r, "progress", "stored") >= p, lambda r=run: stored_all(r)
            )
        final = await start(*send)
        runs.append(final)
        await until(final, lambda: stored_all(final))
        await kill(final)  # the sender is gone for good
        recipient = await start("recipient", recipient_dir, "--mailbox", box_addr)
        await until(recipient, lambda: done(recipient))
        # The only recipient showed its token: the mailbox deletes the file's chunks.
        await until(box, lambda: events(box, "hold")[-1]["chunks"] == 0)
    assert killed_mid == 3, "every kill came before the upload finished"
    assert_landed_once(tmp_path, source, recipient)
    assert [e["sent_files"] for r in runs for e in events(r, "sent")] == [1] * len(runs)
    for n in range(1, len(runs)):
        assert first_stored(runs[n]) >= recorded_upload(runs[:n])
    assert first_stored(final) >= CHECKPOINT  # the upload resumed; it did not start again
    assert max(e["chunks"] for e in events(box, "hold")) == SIZE // CHUNK_SIZE + 1  # data and index


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "streams"])
async def test_a_mailbox_killed_while_it_takes_and_serves_chunks_loses_nothing(
    tmp_path: Path, bulk: bool
) -> None:
    """The mailbox is killed once while the sender uploads to it and once while it serves the
    recipient (the sender offline by then), and started again on the same port: the upload resumes,
    and the recipient's download completes byte-identical from the restarted mailbox. Over bulk
    channels and over libp2p streams (a mailbox that offers no bulk channel)."""
    rng = random.Random(11)
    source = source_file(tmp_path, 11)
    sender_dir, recipient_dir, box_dir, recipient_id = profiles(tmp_path)
    upload_point, download_point = kill_points(rng, 2)
    async with processes() as start:
        box, box_addr = await start_mailbox(start, box_dir, bulk=bulk)
        port = box_addr.split("/tcp/")[1].split("/", maxsplit=1)[0]
        sender = await start(
            "sender", sender_dir, "--to", recipient_id, "--file", source, "--mailbox", box_addr, "--reuse"
        )
        killed_mid = await kill_when(
            box, lambda: last(box, "hold", "bytes") >= upload_point, lambda: stored_all(sender), watch=sender
        )
        box, _ = await start_mailbox(start, box_dir, port, bulk=bulk)
        await until(sender, lambda: stored_all(sender))
        await kill(sender)
        recipient = await start("recipient", recipient_dir, "--mailbox", box_addr)
        killed_mid += await kill_when(
            box,
            lambda: last(recipient, "written", "bytes") >= download_point,
            lambda: done(recipient),
            watch=recipient,
        )
        box, _ = await start_mailbox(start, box_dir, port, bulk=bulk)
        await until(recipient, lambda: done(recipient))
    assert killed_mid == 2, "both kills came in the middle of a transfer"
    assert_landed_once(tmp_path, source, recipient)


async def test_a_sender_started_again_with_the_same_ref_does_not_upload_a_second_copy(
    tmp_path: Path,
) -> None:
    """An app that crashed mid-send calls ``send_file`` again with the same ``ref`` (as it does for
    ``send``): it must follow the first file, not upload a second copy from its first byte."""
    source = source_file(tmp_path, 5)
    sender_dir, _, box_dir, recipient_id = profiles(tmp_path)
    async with processes() as start:
        _, box_addr = await start_mailbox(start, box_dir)
        send = ("sender", sender_dir, "--to", recipient_id, "--file", source, "--mailbox", box_addr)
        first = await start(*send)
        await kill_when(
            first, lambda: last(first, "progress", "stored") >= CHECKPOINT + CHUNK_SIZE, lambda: False
        )
        again = await start(*send)
        await again.first("progress")
    assert events(again, "sent")[0]["sent_files"] == 1
    assert first_stored(again) >= CHECKPOINT


async def test_a_recipient_killed_as_it_finishes_keeps_one_file(tmp_path: Path) -> None:
    """The recipient is killed right after the complete file got its name and before files.db says
    it is done: started again, it must find the file there, not fetch it again as ``movie (1).mkv``."""
    source = source_file(tmp_path, 3)
    sender_dir, recipient_dir, _, recipient_id = profiles(tmp_path)
    async with processes() as start:
        sender = await start("sender", sender_dir, "--to", recipient_id, "--file", source)
        address = str((await sender.first("ready"))["addr"])
        first = await start("recipient", recipient_dir, "--connect", address, "--die-finishing")
        await until(first, lambda: bool(events(first, "dying")))
        await first.process.wait()
        again = await start("recipient", recipient_dir, "--connect", address)
        await until(again, lambda: done(again))
        served = int((await report(sender))["served"])
    assert_landed_once(tmp_path, source, again)
    assert served < 2 * SIZE  # the file was not fetched twice


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "streams"])
async def test_a_sender_killed_while_serving_a_direct_download_is_resumed_from(
    tmp_path: Path, bulk: bool
) -> None:
    """The sender is killed twice at random points while the recipient downloads from it directly,
    and started again where the recipient's contact card says it is: the recipient (never restarted)
    dials it again and completes the file byte-identical."""
    rng = random.Random(17)
    source = source_file(tmp_path, 17)
    sender_dir, recipient_dir, _, recipient_id = profiles(tmp_path)
    _, sender_identity = make_profile(tmp_path, "sender", 61)
    no_bulk = [] if bulk else ["--no-bulk"]
    send = ("sender", sender_dir, "--to", recipient_id, "--file", source, "--reuse", *no_bulk)
    async with processes() as start:
        sender = await start(*send)
        address = str((await sender.first("ready"))["addr"])
        port = address.split("/tcp/")[1].split("/", maxsplit=1)[0]
        invite = Invite.create(sender_identity, name="sender", addrs=[address]).to_text()
        recipient = await start("recipient", recipient_dir, "--connect", address, "--contact", invite)
        killed_mid = 0
        for point in kill_points(rng, 2):
            killed_mid += await kill_when(
                sender,
                lambda p=point: last(recipient, "written", "bytes") >= p,
                lambda: done(recipient),
                watch=recipient,
            )
            sender = await start(*send, "--port", port)
        await until(recipient, lambda: done(recipient))
    assert killed_mid == 2, "both kills came before the download finished"
    assert_landed_once(tmp_path, source, recipient)
    assert [e["sent_files"] for e in events(sender, "sent")] == [1]


# --- a connection reset, in one process: deterministic ------------------------------------------------

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
RESET = NetworkError(
    "bulk channel with a peer", "connection broke while receiving: [Errno 104] Connection reset"
)


class _ResettingChannel:
    """A chunk channel that breaks, as a bulk channel does when its peer is killed with bytes unread
    (the kernel answers with a reset, ``BulkChannel.receive`` raises ``NetworkError``), at the
    ``resets[0]``-th answer of the first channel opened; later channels work."""

    def __init__(self, inner: Channel, resets: list[int]) -> None:
        self._inner = inner
        self._resets = resets

    async def send(self, frame: bytes) -> None:
        await self._inner.send(frame)

    async def receive(self) -> bytes:
        if self._resets and self._resets[0] > 0:
            self._resets[0] -= 1
            if self._resets[0] == 0:
                self._resets.clear()
                raise RESET
        return await self._inner.receive()

    async def aclose(self) -> None:
        await self._inner.aclose()


def reset_once_at(monkeypatch: pytest.MonkeyPatch, answer: int) -> None:
    """The first chunk channel this process opens breaks at its ``answer``-th answer."""
    opened, resets = file_driver.open_source, [answer]

    async def open_resetting(host: IHost, peer: str, *, bulk: bool = True) -> Channel:
        return _ResettingChannel(await opened(host, peer, bulk=bulk), resets)

    monkeypatch.setattr(file_driver, "open_source", open_resetting)


async def test_a_download_whose_source_connection_resets_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source's connection reset mid-download is a source failure like any other: the download
    asks again and completes; the node does not crash (as it did when the sender was SIGKILLed)."""
    source = tmp_path / NAME
    source.write_bytes(random.Random(23).randbytes(12 * CHUNK_SIZE))
    reset_once_at(monkeypatch, 5)
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob = make_profile(tmp_path, "bob", 2)
    config = FileConfig(downloads=tmp_path / "downloads", window=2, retry_initial=0.2, retry_max=1.0)
    with trio.fail_after(RUN_WAIT):
        async with (
            Node.open(alice_dir, listen=LOCAL, dht=False) as alice,
            Node.open(bob_dir, listen=LOCAL, dht=False, file_config=config) as b,
        ):
            await b.connect(alice.listen_addrs[0])
            await alice.send_file(bob.public, source)
            await b.wait_for(lambda: bool(b.files.received()))
            path = await b.fetch(b.files.received()[0].number)
    assert sha256(path) == sha256(source)


async def test_an_upload_whose_mailbox_connection_resets_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mailbox's connection reset mid-upload is retried; the node does not crash (as it did when
    the mailbox was SIGKILLed)."""
    source = tmp_path / NAME
    source.write_bytes(random.Random(29).randbytes(12 * CHUNK_SIZE))
    reset_once_at(monkeypatch, 6)  # HOLD, the index PUT, then data chunk acks
    box_dir, _ = make_profile(tmp_path, "box", 9)
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    _, bob = make_profile(tmp_path, "bob", 2)
    config = FileConfig(window=2, retry_initial=0.2, retry_max=1.0, mailbox_copies=1)
    with trio.fail_after(RUN_WAIT):
        async with Node.open(box_dir, listen=LOCAL, dht=False, mailbox=True) as box:
            async with Node.open(
                alice_dir, listen=LOCAL, dht=False, mailboxes=[box.listen_addrs[0]], file_config=config
            ) as alice:
                handle = await alice.send_file(bob.public, source)
                await alice.wait_for(lambda: handle.progress is not None and handle.progress.complete)
            hold = box.files.driver.server.hold
            assert hold is not None
            assert hold.statistics().chunks == 12 + 1
