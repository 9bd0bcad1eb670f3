"""One end of ``bench_files.py``, run as its own process: a raw TCP copy end or a meshchat node.

Run by the benchmark, not by hand: ``python benchmarks/files_peer.py ROLE [options]``. It prints one
JSON object per line on stdout (``{"event": ..., ...}``) and reads commands from stdin, one a line
(``send``, ``quit``); anything else goes to stderr. Times are ``time.monotonic()`` (CLOCK_MONOTONIC,
one clock for every process on Linux), so the parent can subtract one process's time from another's.

Roles:

* ``tcp-recv``: listen on 127.0.0.1, take one connection, write what arrives to ``--out`` and
  ``fsync`` it at the end (as a meshchat download does), or with no ``--out`` drop it (memory to
  memory); prints ``listening`` (port) and ``done`` (bytes, the time the fsync returned).
* ``tcp-send``: connect to ``--port``, send ``--file`` read in 1 MiB blocks (or ``--bytes`` zeros
  from memory); prints ``sent`` (the time just before connecting).
* ``mailbox``: a meshchat node with ``mailbox=True`` and a chunk hold big enough for 1 GiB.
* ``sender``: sends ``--file`` to ``--to`` (a PeerId); with ``--mailbox`` it uploads to that mailbox,
  prints ``uploaded`` once every chunk and the manifest message are stored there, and exits; without
  it, it waits for ``send`` on stdin first (the recipient connects to it) and serves the chunks.
* ``recipient``: connects to ``--connect`` and/or syncs with ``--mailbox``, waits for the first
  ``Attachment``, fetches it and prints ``fetched`` (seconds from the event to ``fetch`` returning,
  bytes, SHA-256).

Every node role prints ``listening`` once started, ``rss`` samples every ``RSS_EVERY`` seconds, and
``final`` (peak RSS: ``ru_maxrss``, KiB) before it exits on ``quit`` or end of stdin. With
``MESHCHAT_BENCH_PROFILE=<folder>`` in the environment a node role runs under cProfile (a diagnosis).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

import trio

from meshchat.files.events import Attachment, AttachmentFetched
from meshchat.files.hold import HoldLimits
from meshchat.identity import PublicIdentity
from meshchat.net.file_driver import FileConfig
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxStatus

LOCAL = "/ip4/127.0.0.1/tcp/0"
#: Bytes per read and write of the raw copy (the chunk size of meshchat is 256 KiB; 1 MiB is kinder
#: to the raw copy, which is the bar to beat).
BLOCK = 1 << 20
#: Seconds between two RSS samples (a timer: memory growth is watched, nothing waits on it).
RSS_EVERY = 2.0
#: The longest any one step of a node role may take (1 GiB at 5 MB/s fits; a hang fails).
STEP_LIMIT = 900.0
#: Quick retries: the benchmark measures files, not the store's backoff.
STORE = StoreConfig(retry_initial=0.5, sync_interval=1.0)
#: The mailbox's chunk hold: a 1 GiB file and its overhead, twice over.
HOLD = HoldLimits(per_peer_bytes=4 * 1024**3, total_bytes=8 * 1024**3)
#: Set to a folder, node roles write a cProfile of their main thread there (``<role>-<pid>.prof``).
PROFILE_VARIABLE = "MESHCHAT_BENCH_PROFILE"


def emit(event: str, **fields: Any) -> None:
    """Print one JSON line for the parent."""
    print(json.dumps({"event": event, **fields}), flush=True)


def peak_rss_kib() -> int:
    """This process's peak resident set so far (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds() -> float:
    """CPU time this process used so far, every thread, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kib() -> int:
    """This process's resident set now (KiB)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


# --- the raw TCP copy -------------------------------------------------------------------------------


def tcp_recv(out: str | None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(STEP_LIMIT)
        emit("listening", port=server.getsockname()[1])
        conn, _ = server.accept()
    cpu = cpu_seconds()
    conn.settimeout(STEP_LIMIT)
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    got = 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if out else -1
    try:
        with conn:
            while n := conn.recv_into(buffer):
                got += n
                if fd >= 0:
                    part = view[:n]
                    while part:
                        part = part[os.write(fd, part) :]
        if fd >= 0:
            os.fsync(fd)
        done = time.monotonic()
    finally:
        if fd >= 0:
            os.close(fd)
    emit("done", bytes=got, at=done, cpu_s=cpu_seconds() - cpu, peak_rss_kib=peak_rss_kib())


def tcp_send(port: int, path: str | None, size: int) -> None:
    start, cpu = time.monotonic(), cpu_seconds()
    with socket.create_connection(("127.0.0.1", port), timeout=STEP_LIMIT) as conn:
        sent = 0
        if path:
            with open(path, "rb", buffering=0) as source:
                buffer = bytearray(BLOCK)
                while n := source.readinto(buffer):
                    conn.sendall(memoryview(buffer)[:n])
                    sent += n
        else:
            block = bytes(BLOCK)
            while sent < size:
                part = block[: min(BLOCK, size - sent)]
                conn.sendall(part)
                sent += len(part)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # the receiver closes once it has everything
    emit("sent", at=start, bytes=sent, cpu_s=cpu_seconds() - cpu)


# --- meshchat nodes ---------------------------------------------------------------------------------


async def watch_rss() -> None:
    while True:
        emit("rss", now_kib=rss_kib(), peak_kib=peak_rss_kib(), at=time.monotonic())
        await trio.sleep(RSS_EVERY)


async def wait_for_quit(cancel: trio.CancelScope, stdin: trio.lowlevel.FdStream) -> None:
    """Read stdin until ``quit`` or its end, then cancel ``cancel``."""
    async for line in lines(stdin):
        if line == "quit":
            break
    cancel.cancel()


async def lines(stream: trio.lowlevel.FdStream) -> Any:
    buffer = b""
    while data := await stream.receive_some(4096):
        buffer += data
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.decode().strip()


async def wait_line(stdin: trio.lowlevel.FdStream, wanted: str) -> None:
    async for line in lines(stdin):
        if line == wanted:
            return
    raise EOFError(f"stdin ended before {wanted!r}")


async def run_node(args: argparse.Namespace) -> None:
    config = FileConfig(auto_fetch=0, downloads=Path(args.downloads) if args.downloads else None)
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with Node.open(
        args.profile,
        listen=[LOCAL],
        dht=False,
        mailbox=args.role == "mailbox",
        hold_limits=HOLD if args.role == "mailbox" else None,
        mailboxes=[args.mailbox] if args.mailbox else [],
        store_config=STORE,
        file_config=config,
    ) as node:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_rss)
            if args.connect:
                with trio.fail_after(60):
                    await node.connect(args.connect)
            if args.mailbox:
                mailbox = args.mailbox.rsplit("/p2p/", 1)[1]
                with trio.fail_after(60):
                    await node.wait_for(lambda: mailbox in node.mailboxes)
            emit("listening", addr=node.listen_addrs[0], peer_id=node.peer_id)
            if args.role == "sender":
                if not args.mailbox:
                    await wait_line(stdin, "send")
                await send(node, args)
                if args.mailbox:  # uploaded: go offline
                    nursery.cancel_scope.cancel()
            elif args.role == "recipient":
                if args.mailbox:
                    node.sync_mailboxes()
                await receive(node)
            nursery.start_soon(wait_for_quit, nursery.cancel_scope, stdin)
        emit(
            "final",
            peak_rss_kib=peak_rss_kib(),
            files=repr(node.files.statistics()),
            mailbox=repr(node.mailbox_statistics()),
        )


async def send(node: Node, args: argparse.Namespace) -> None:
    to = PublicIdentity.from_peer_id(args.to)
    start = time.monotonic()
    handle = await node.send_file(to, args.file, caption="benchmark")
    prepared = time.monotonic()
    emit("sending", prepare_s=prepared - start, mailboxes=list(node.mailboxes))
    if not args.mailbox:
        return
    with trio.fail_after(STEP_LIMIT):
        await handle.wait_until(OutboxStatus.STORED)
        await node.files.driver.wait_for(lambda: handle.progress is not None and handle.progress.complete)
    emit(
        "uploaded",
        prepare_s=prepared - start,
        upload_s=time.monotonic() - start,
        status=handle.status.value,
        progress=repr(handle.progress),
    )


async def receive(node: Node) -> None:
    attachment: Attachment | None = None
    with trio.fail_after(STEP_LIMIT):
        async for event in node.events():
            if isinstance(event, Attachment):
                attachment = event
                break
    if attachment is None:
        raise EOFError("the node's events ended before an attachment came")
    start = time.monotonic()
    emit("attachment", size=attachment.manifest.size, mailboxes=list(attachment.manifest.mailboxes), at=start)
    complete: list[float] = []

    async def watch_complete() -> None:
        """When the driver says every byte is in (``AttachmentFetched``): ``fetch`` may return later."""
        async for event in node.events():
            if isinstance(event, AttachmentFetched) and event.number == attachment.number:
                complete.append(time.monotonic() - start)
                return

    with trio.fail_after(STEP_LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_complete)
            path = await node.fetch(attachment)
            seconds = time.monotonic() - start
            # the event was queued before ``fetch`` could return: the watcher took it by now, or it
            # came in the same pass (then the two times are one)
            nursery.cancel_scope.cancel()
    digest = await trio.to_thread.run_sync(sha256_of, path)
    emit(
        "fetched",
        seconds=seconds,
        complete_s=complete[0] if complete else seconds,
        bytes=path.stat().st_size,
        sha256=digest,
        path=str(path),
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as source:
        buffer = bytearray(BLOCK)
        while n := source.readinto(buffer):
            digest.update(memoryview(buffer)[:n])
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["tcp-recv", "tcp-send", "mailbox", "sender", "recipient"])
    parser.add_argument("--out", help="tcp-recv: the file to write (none: drop the bytes)")
    parser.add_argument("--port", type=int, default=0, help="tcp-send: the receiver's port")
    parser.add_argument("--file", help="tcp-send, sender: the file to send")
    parser.add_argument("--bytes", type=int, default=0, help="tcp-send without --file: zeros to send")
    parser.add_argument("--profile", help="node roles: the profile folder")
    parser.add_argument("--downloads", help="recipient: where fetched files land")
    parser.add_argument("--to", help="sender: the recipient's PeerId")
    parser.add_argument("--mailbox", help="sender, recipient: the mailbox's address (…/p2p/<PeerId>)")
    parser.add_argument("--connect", help="recipient: an address to dial (the sender's)")
    args = parser.parse_args()
    if args.role == "tcp-recv":
        tcp_recv(args.out)
    elif args.role == "tcp-send":
        tcp_send(args.port, args.file, args.bytes)
    else:
        profile_to = os.environ.get(PROFILE_VARIABLE)
        with contextlib.suppress(KeyboardInterrupt):
            if profile_to:  # a diagnosis: where the event loop's thread spends its time
                cProfile.runctx(
                    "trio.run(run_node, args)",
                    globals(),
                    {"args": args, "run_node": run_node, "trio": trio},
                    f"{profile_to}/{args.role}-{os.getpid()}.prof",
                )
            else:
                trio.run(run_node, args)


if __name__ == "__main__":
    main()
