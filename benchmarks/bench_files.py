"""Files (issue 14) against a raw TCP copy of the same bytes, in one run, every end its own process.

Run: python benchmarks/bench_files.py [--quick] [--dir FOLDER] [--verbose]

Everything lives in one temporary folder (``--dir``, default the system's temp folder), on one disk:
the random source files, the profiles, the mailbox's chunk hold and the downloads. Each end is a
process running ``benchmarks/files_peer.py`` (a role per end) on 127.0.0.1; the processes print JSON
lines and time themselves on CLOCK_MONOTONIC, one clock for every process.

1. Raw TCP (the bar): a receiver process writes what arrives to a file in the folder and fsyncs it at
   the end, as a meshchat download does; a sender process reads the source file in 1 MiB blocks and
   sends it (blocking sockets, nothing on top). Time: the sender's connect to the receiver's fsync
   returning; best of ``TCP_ROUNDS`` rounds. Also shown, as context only: memory to memory (zeros
   sent, bytes dropped).
2. meshchat, one hop: a sender and a recipient node (profiles, ``dht=False``); the recipient dials
   the sender; the sender ``send_file``\\ s the 100 MiB file; time from the recipient's ``Attachment``
   event to ``fetch`` returning (every chunk fetched, checked, decrypted, written, fsynced); the bytes'
   SHA-256 is checked. ``file_ratio_vs_tcp`` = its MB/s over raw TCP's.
3. meshchat through a mailbox, the sender offline: a mailbox node; a sender node with that mailbox
   sends the file to the recipient's key, waits until the manifest message and every chunk are
   stored on the mailbox (``handle.progress.complete``) and exits (gone before the next step); then
   the recipient starts, knowing only the mailbox, syncs, gets the ``Attachment`` and fetches from
   the mailbox. ``mailbox_ratio_vs_tcp`` = that MB/s over raw TCP's. The upload time is shown too.
4. 1 GiB through a mailbox as in 3: every process reports its peak RSS (``ru_maxrss``) as it ends;
   ``peak_rss_mib`` is the largest of sender, mailbox and recipient (target < 200 MiB each). Every
   process also samples its RSS every two seconds; the growth is printed when the peak is over target.

Nodes use ``FileConfig(auto_fetch=0)`` and fetch explicitly, so the timed window is the fetch alone.
Beside each transfer: the CPU seconds each process used meanwhile (from ``/proc``; on a shared machine
wall time far above CPU time means the processes waited, for each other or for a core), and when the
driver announced every byte in (``AttachmentFetched``) if ``fetch`` returned noticeably later.
``--verbose`` prints each node's file counters as it stops.
``--quick`` uses 8 MiB and 32 MiB instead of 100 MiB and 1 GiB. MB = 10**6 bytes. The last line reads
``file_ratio_vs_tcp=… mailbox_ratio_vs_tcp=… peak_rss_mib=…``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from meshchat.identity import Identity, save_identity
from meshchat.node import KEY_FILE

PEER = Path(__file__).with_name("files_peer.py")
MIB = 1024 * 1024
#: Rounds of the raw copy (the best counts: the machine is shared, and a high bar is the honest one).
TCP_ROUNDS = 3
#: Seconds a node may take to start and report.
START_LIMIT = 60.0
#: Peak RSS each process should stay under (the issue's target).
RSS_TARGET_MIB = 200
SENDER_SEED, RECIPIENT_SEED, MAILBOX_SEED = 1, 2, 3
#: ``--verbose``: print each node's counters as it stops.
VERBOSE = False


def transfer_limit(size: int) -> float:
    """Seconds a transfer of ``size`` bytes may take before it counts as hung (5 MB/s, plus a minute)."""
    return 60.0 + size / 5e6


@dataclass
class Peer:
    """A ``files_peer.py`` process and the JSON events it printed."""

    name: str
    process: trio.Process
    log: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    ended: bool = False

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for data in self.process.stdout:
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                self.events.extend(json.loads(line) for line in complete if line.startswith(b"{"))
                self._wake()
        finally:
            self.ended = True
            self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def found(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == kind), None)

    async def wait(self, kind: str, limit: float) -> dict[str, Any]:
        """The first ``kind`` event, waiting at most ``limit`` seconds; a clear error if it ends first."""
        with trio.fail_after(limit):
            while (event := self.found(kind)) is None:
                if self.ended:
                    raise RuntimeError(f"{self.name} ended without {kind!r}; its log:\n{self.tail()}")
                await self.changed.wait()
        return event

    async def say(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def stop(self, limit: float = 30.0) -> dict[str, Any] | None:
        """Ask it to quit, wait (bounded) for its ``final`` report and its exit; kill it by PID if
        it does not go."""
        if self.process.returncode is None and not self.ended:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.say("quit")
        with trio.move_on_after(limit):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            with trio.move_on_after(limit):
                await self.process.wait()
        final = self.found("final")
        if VERBOSE and final:
            print(f"  {self.name}: files {final['files']}; mailbox {final['mailbox']}")
        return final

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def first_rss_mib(self) -> float:
        """Its resident set at its first sample (a started node, nothing transferred yet)."""
        first = self.found("rss")
        return first["now_kib"] / 1024 if first else 0.0

    def rss_growth(self) -> str:
        samples = [e for e in self.events if e["event"] == "rss"]
        if not samples:
            return "no samples"
        step = max(1, len(samples) // 8)
        picked = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
        start = samples[0]["at"]
        return ", ".join(f"{s['at'] - start:.0f}s {s['now_kib'] / 1024:.0f}" for s in picked) + " MiB"


class Bench:
    """Starts peers in one nursery and makes sure each is stopped (by PID) and reaped."""

    def __init__(self, nursery: trio.Nursery, folder: Path) -> None:
        self.nursery = nursery
        self.folder = folder
        self.peers: list[Peer] = []

    async def start(self, name: str, *args: str) -> Peer:
        log = self.folder / f"{name}.log"
        with log.open("ab") as err:
            process = await trio.lowlevel.open_process(
                [sys.executable, str(PEER), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
        peer = Peer(name, process, log)
        self.peers.append(peer)
        self.nursery.start_soon(peer.read)
        return peer

    async def stop_all(self) -> None:
        for peer in self.peers:
            if peer.process.returncode is None:
                peer.process.kill()
        with trio.move_on_after(30) as scope:
            scope.shield = True
            for peer in self.peers:
                await peer.process.wait()

    def profile(self, name: str, seed: int) -> tuple[Path, str]:
        """A fresh profile folder with an unlocked identity; (folder, PeerId)."""
        folder = self.folder / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        identity = Identity(bytes([seed]) * 32)
        save_identity(folder / KEY_FILE, identity, None)
        return folder, identity.public.peer_id


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


@dataclass
class Copy:
    """One raw copy: seconds, and the CPU seconds each end used meanwhile."""

    seconds: float
    cpu: dict[str, float]


async def raw_tcp(bench: Bench, source: Path | None, size: int) -> Copy:
    """One raw copy (file to file with an fsync, or memory to memory if no ``source``)."""
    out = bench.folder / "tcp.out"
    args = ["--out", str(out)] if source else []
    receiver = await bench.start("tcp-recv", "tcp-recv", *args)
    port = (await receiver.wait("listening", START_LIMIT))["port"]
    send = ["--file", str(source)] if source else ["--bytes", str(size)]
    sender = await bench.start("tcp-send", "tcp-send", "--port", str(port), *send)
    done = await receiver.wait("done", transfer_limit(size))
    sent = await sender.wait("sent", transfer_limit(size))
    await receiver.stop()
    await sender.stop()
    if done["bytes"] != size or (source and out.stat().st_size != size):
        raise RuntimeError(f"raw copy moved {done['bytes']} bytes of {size}")
    out.unlink(missing_ok=True)
    return Copy(float(done["at"] - sent["at"]), {"sender": sent["cpu_s"], "receiver": done["cpu_s"]})


@dataclass
class Fetch:
    """One meshchat transfer's figures."""

    seconds: float
    #: When the driver announced every byte in (``AttachmentFetched``); ``fetch`` may return later.
    complete_s: float
    upload_s: float = 0.0
    prepare_s: float = 0.0
    rss_mib: dict[str, float] = field(default_factory=dict)
    growth: dict[str, str] = field(default_factory=dict)
    #: Each process's RSS at its first sample (MiB).
    start_rss_mib: dict[str, float] = field(default_factory=dict)
    #: CPU seconds each process used between the attachment event and the fetch returning.
    cpu: dict[str, float] = field(default_factory=dict)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) process ``pid`` used so far (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fetch_window(
    recipient: Peer, sources: dict[str, Peer], size: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """Wait for the recipient's ``fetched`` report; the CPU each process used from its attachment
    event on (read from ``/proc`` as the events come in: within milliseconds)."""
    peers = {"recipient": recipient, **sources}
    await recipient.wait("attachment", START_LIMIT + transfer_limit(size))
    before = {name: cpu_seconds(p.process.pid) for name, p in peers.items()}
    fetched = await recipient.wait("fetched", transfer_limit(size))
    after = {name: cpu_seconds(p.process.pid) for name, p in peers.items()}
    return fetched, {name: after[name] - before[name] for name in peers}


def check(fetched: dict[str, Any], size: int, digest: str) -> None:
    if fetched["bytes"] != size or fetched["sha256"] != digest:
        raise RuntimeError(
            f"fetched {fetched['bytes']} bytes, sha256 {fetched['sha256'][:16]}…: not the file"
        )


async def one_hop(bench: Bench, source: Path, size: int, digest: str) -> Fetch:
    """The recipient dials the sender and fetches from it."""
    sender_dir, _ = bench.profile("hop-sender", SENDER_SEED)
    recipient_dir, recipient_id = bench.profile("hop-recipient", RECIPIENT_SEED)
    downloads = bench.folder / "downloads"
    sender = await bench.start(
        "hop-sender", "sender", "--profile", str(sender_dir), "--file", str(source), "--to", recipient_id
    )
    address = (await sender.wait("listening", START_LIMIT))["addr"]
    recipient = await bench.start(
        "hop-recipient",
        "recipient",
        "--profile",
        str(recipient_dir),
        "--connect",
        address,
        "--downloads",
        str(downloads),
    )
    await recipient.wait("listening", START_LIMIT)
    await sender.say("send")
    fetched, cpu = await fetch_window(recipient, {"sender": sender}, size)
    check(fetched, size, digest)
    await trio.Path(fetched["path"]).unlink()
    prepared = await sender.wait("sending", START_LIMIT)
    finals = {"sender": await sender.stop(), "recipient": await recipient.stop()}
    return Fetch(
        seconds=fetched["seconds"],
        complete_s=fetched["complete_s"],
        prepare_s=prepared["prepare_s"],
        cpu=cpu,
        rss_mib={k: v["peak_rss_kib"] / 1024 for k, v in finals.items() if v},
    )


async def through_mailbox(bench: Bench, source: Path, size: int, digest: str, tag: str) -> Fetch:
    """Upload to a mailbox, the sender gone; then the recipient fetches from the mailbox alone."""
    mailbox_dir, _ = bench.profile(f"{tag}-mailbox", MAILBOX_SEED)
    sender_dir, _ = bench.profile(f"{tag}-sender", SENDER_SEED)
    recipient_dir, recipient_id = bench.profile(f"{tag}-recipient", RECIPIENT_SEED)
    downloads = bench.folder / "downloads"
    mailbox = await bench.start(f"{tag}-mailbox", "mailbox", "--profile", str(mailbox_dir))
    address = (await mailbox.wait("listening", START_LIMIT))["addr"]
    sender = await bench.start(
        f"{tag}-sender",
        "sender",
        "--profile",
        str(sender_dir),
        "--file",
        str(source),
        "--to",
        recipient_id,
        "--mailbox",
        address,
    )
    uploaded = await sender.wait("uploaded", START_LIMIT + transfer_limit(size))
    sender_final = await sender.wait("final", START_LIMIT)
    if VERBOSE:
        print(f"  {sender.name}: files {sender_final['files']}")
    with trio.fail_after(START_LIMIT):  # offline: the process is gone before the recipient starts
        await sender.process.wait()
    recipient = await bench.start(
        f"{tag}-recipient",
        "recipient",
        "--profile",
        str(recipient_dir),
        "--mailbox",
        address,
        "--downloads",
        str(downloads),
    )
    fetched, cpu = await fetch_window(recipient, {"mailbox": mailbox}, size)
    check(fetched, size, digest)
    await trio.Path(fetched["path"]).unlink()
    finals = {"sender": sender_final, "mailbox": await mailbox.stop(), "recipient": await recipient.stop()}
    peers = {"sender": sender, "mailbox": mailbox, "recipient": recipient}
    return Fetch(
        seconds=fetched["seconds"],
        complete_s=fetched["complete_s"],
        upload_s=uploaded["upload_s"],
        prepare_s=uploaded["prepare_s"],
        rss_mib={k: v["peak_rss_kib"] / 1024 for k, v in finals.items() if v},
        growth={k: p.rss_growth() for k, p in peers.items()},
        start_rss_mib={k: p.first_rss_mib() for k, p in peers.items()},
        cpu=cpu,
    )


def row(what: str, size: int, seconds: float, note: str = "") -> None:
    print(f"{what:<38} {size / MIB:>7,.0f} MiB {seconds:>8.2f} s {size / seconds / 1e6:>9,.0f} MB/s  {note}")


async def main(quick: bool, where: str | None) -> None:
    small, big = (8 * MIB, 32 * MIB) if quick else (100 * MIB, 1024 * MIB)
    folder = Path(tempfile.mkdtemp(prefix="meshchat-bench-files-", dir=where))
    print(f"folder {folder} (free {shutil.disk_usage(folder).free / 2**30:.1f} GiB)")
    try:
        async with trio.open_nursery() as nursery:
            bench = Bench(nursery, folder)
            try:
                await run(bench, small, big)
            finally:
                await bench.stop_all()
                nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def run(bench: Bench, small: int, big: int) -> None:
    source = bench.folder / "source.bin"
    digest = await trio.to_thread.run_sync(random_file, source, small)
    print(f"{'step':<38} {'size':>11} {'time':>10} {'rate':>14}")
    copies = [await raw_tcp(bench, source, small) for _ in range(TCP_ROUNDS)]
    best = min(copies, key=lambda c: c.seconds)
    tcp = small / best.seconds / 1e6
    row("raw TCP, file to file + fsync (best)", small, best.seconds, f"rounds {_rates(small, copies)}")
    print(f"{'':<4}{_cpu(best.cpu, best.seconds)}")
    memory = min([await raw_tcp(bench, None, small) for _ in range(TCP_ROUNDS)], key=lambda c: c.seconds)
    row("raw TCP, memory to memory (context)", small, memory.seconds)

    hop = await one_hop(bench, source, small, digest)
    row(
        "meshchat one hop: fetch",
        small,
        hop.seconds,
        f"(send_file prepared in {hop.prepare_s:.2f} s) {_complete(hop)}",
    )
    print(f"{'':<4}{_cpu(hop.cpu, hop.seconds)}")
    boxed = await through_mailbox(bench, source, small, digest, "mailbox")
    row(
        "mailbox, sender offline: upload",
        small,
        boxed.upload_s,
        f"(of which prepare {boxed.prepare_s:.2f} s)",
    )
    row("mailbox, sender offline: fetch", small, boxed.seconds, _complete(boxed))
    print(f"{'':<4}{_cpu(boxed.cpu, boxed.seconds)}")
    source.unlink()

    big_source = bench.folder / "big.bin"
    big_digest = await trio.to_thread.run_sync(random_file, big_source, big)
    large = await through_mailbox(bench, big_source, big, big_digest, "big")
    big_source.unlink()
    row("big file via mailbox: upload", big, large.upload_s, f"(of which prepare {large.prepare_s:.2f} s)")
    row("big file via mailbox: fetch", big, large.seconds, _complete(large))
    print(f"{'':<4}{_cpu(large.cpu, large.seconds)}")
    print(
        "peak RSS: "
        + ", ".join(
            f"{k} {v:,.0f} MiB (started at {large.start_rss_mib.get(k, 0):,.0f})"
            for k, v in large.rss_mib.items()
        )
        + f"; target < {RSS_TARGET_MIB} each"
    )
    peak = max(large.rss_mib.values())
    if peak >= RSS_TARGET_MIB:
        for name, growth in large.growth.items():
            print(f"  RSS of {name} over time: {growth}")

    file_ratio = small / hop.seconds / 1e6 / tcp
    mailbox_ratio = small / boxed.seconds / 1e6 / tcp
    print(
        f"file_ratio_vs_tcp={file_ratio:.3f} mailbox_ratio_vs_tcp={mailbox_ratio:.3f} peak_rss_mib={peak:.0f}"
    )


def _rates(size: int, copies: list[Copy]) -> str:
    return " ".join(f"{size / c.seconds / 1e6:,.0f}" for c in copies)


def _complete(fetch: Fetch) -> str:
    if fetch.seconds - fetch.complete_s < 0.01:
        return ""
    late = fetch.seconds - fetch.complete_s
    return f"every byte in after {fetch.complete_s:.2f} s; fetch returned {late:.2f} s later"


def _cpu(cpu: dict[str, float], seconds: float) -> str:
    used = ", ".join(f"{name} {value:.2f} s" for name, value in cpu.items())
    return f"CPU meanwhile: {used} (wall {seconds:.2f} s; {os.cpu_count()} cores shared)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 MiB and 32 MiB instead of 100 MiB and 1 GiB")
    parser.add_argument("--dir", help="where the temporary folder goes (default: the system's temp folder)")
    parser.add_argument("--verbose", action="store_true", help="print each node's counters as it stops")
    args = parser.parse_args()
    VERBOSE = args.verbose
    trio.run(main, args.quick, args.dir)
