"""An app process for the file crash tests (``tests/test_files_crash.py``): a mailbox, a sender or a
recipient of one file, on the ``Node`` API, printing one JSON object per line (``{"event": ...}``).

    python tests/file_crash_peer.py mailbox PROFILE [--port N] [--no-bulk]
    python tests/file_crash_peer.py sender PROFILE --to PEER_ID --file PATH [--mailbox ADDR] [--reuse]
        [--port N] [--no-bulk]
    python tests/file_crash_peer.py recipient PROFILE [--connect ADDR]... [--contact INVITE]...
        [--mailbox ADDR] [--die-finishing]

``mailbox`` prints ``ready`` (its address) and ``hold`` (chunks and bytes it holds) as they change;
with ``--no-bulk`` it offers no bulk channel (its chunks travel on libp2p streams).

``sender`` sends PATH to PEER_ID once (``ref="crash-file"``: started again on the same profile it must
not send it twice), then prints ``progress`` (bytes ``stored`` on the mailbox, bytes ``fetched`` by
the recipient, ``served``: chunk bytes this node served in this run, the manifest message's
``status``) whenever it changes, and keeps serving. With ``--reuse`` a sender that finds the file
already sent in its profile follows that one instead of calling ``send_file`` again (what an app does
today: ``send_file`` with a known ref still cuts the file again under a new key, see the test).
A line ``report`` on stdin prints ``report`` with the same figures. ``--port`` fixes its TCP port (so a
restarted sender is where its invite says), ``--no-bulk`` offers no bulk channel.

``--throttle SECONDS`` (sender, recipient): every answer on a chunk channel this process opened
arrives that much late, a slow link (the tests' kills, from outside, then land mid-transfer).

``recipient`` first prints ``recorded``: what files.db says before its node starts (each attachment's
state and the bytes its partial file is recorded to hold: what this run resumes from). Then it adds
each ``--contact`` invite (so it can dial that peer again by itself), dials each ``--connect``
address, fetches every attachment automatically (window 2, quick retries) into ``PROFILE/downloads``
and prints ``attachment`` (number, size), ``written`` (bytes of the file in place, ``fetched``: bytes
this run fetched) as they change, and ``done`` (its path) once complete, also when it was complete
before this run. Both roles print each ``FileProblem`` as ``problem``. ``--die-finishing`` kills
the process with SIGKILL at the moment the complete file has been moved to its name and files.db
does not say so yet (a crash at that point).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
import sys
from pathlib import Path

import trio
from libp2p.abc import IHost

from meshchat.errors import DecodeError
from meshchat.files.chunks import MAX_FILE_SIZE
from meshchat.files.download import Download
from meshchat.files.events import FileProblem
from meshchat.files.manifest import decode_manifest
from meshchat.files.sqlite import FILES_FILE, FileStore, ReceivedState
from meshchat.identity import KEY_FILE_NAME, PublicIdentity, load_identity
from meshchat.net import file_driver
from meshchat.net.chunk_server import Channel
from meshchat.net.file_driver import FileConfig
from meshchat.node import Node
from meshchat.store.encrypted import store_key
from meshchat.store.messenger import StoreConfig

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
FAST = StoreConfig(retry_initial=0.5, sync_interval=0.5, mailbox_copies=1)
#: Chunks in flight per source: small, so a transfer takes long enough to be killed in the middle.
WINDOW = 2
REF = "crash-file"


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def quick(**changes: object) -> FileConfig:
    settings: dict[str, object] = {
        "window": WINDOW,
        "retry_initial": 0.2,
        "retry_max": 1.0,
        "mailbox_copies": 1,
    }
    settings.update(changes)
    return FileConfig(**settings)  # type: ignore[arg-type]


async def mailbox(profile: Path, port: int, bulk: bool) -> None:
    async with Node.open(
        profile,
        listen=[f"/ip4/127.0.0.1/tcp/{port}"],
        dht=False,
        mailbox=True,
        file_config=FileConfig(bulk=bulk),
    ) as node:
        say("ready", addr=node.listen_addrs[0])
        hold = node.files.driver.server.hold
        assert hold is not None

        def state() -> tuple[int, int]:
            stats = hold.statistics()
            return stats.chunks, stats.bytes

        while True:
            now = state()
            say("hold", chunks=now[0], bytes=now[1])
            await node.wait_for(lambda before=now: state() != before)


async def sender(
    profile: Path, to: str, path: Path, mailbox_addr: str | None, reuse: bool, port: int, bulk: bool
) -> None:
    async with Node.open(
        profile,
        listen=[f"/ip4/127.0.0.1/tcp/{port}"],
        dht=False,
        mailboxes=[mailbox_addr] if mailbox_addr else [],
        store_config=FAST,
        file_config=quick(bulk=bulk),
    ) as node:
        known = node.files.sent()
        say("ready", addr=node.listen_addrs[0], sent_before=len(known))
        try:
            recipient = PublicIdentity.from_peer_id(to)
        except DecodeError:  # an invite's text
            recipient = node.contacts.add(to).public
        if reuse and known:
            file_id, message_id = known[0].file_id, known[0].message_id
            progress = functools.partial(node.files.sent_progress, file_id)
        else:
            handle = await node.send_file(recipient, path, ref=REF)
            file_id, message_id = node.files.sent(1)[0].file_id, handle.message_id  # the newest
            progress = functools.partial(getattr, handle, "progress")
        say("sent", sent_files=len(node.files.sent()), file_id=file_id.hex())

        def state() -> tuple[int, int, int, str]:
            now = progress()
            assert now is not None
            status = next((r.status.value for r in node.outbox(10) if r.message_id == message_id), "")
            return now.stored, now.fetched, node.files.statistics().bytes_served, status

        async def answer_reports() -> None:
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            buffer = b""
            async for data in stdin:
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip() == b"report":
                        stored, fetched, served, status = state()
                        say("report", stored=stored, fetched=fetched, served=served, status=status)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_reports)
            nursery.start_soon(tell_problems, node)
            while True:
                now = state()
                say("progress", stored=now[0], fetched=now[1], served=now[2], status=now[3])
                await node.wait_for(lambda before=now: state() != before)


async def tell_problems(node: Node) -> None:
    """Print each ``FileProblem`` (a transfer waiting to be tried again, and why)."""
    async for event in node.events():
        if isinstance(event, FileProblem):
            say("problem", number=event.number, error=event.error, final=event.final)


class _SlowChannel:
    """A chunk channel whose every answer arrives ``delay`` seconds late (a slow link)."""

    def __init__(self, inner: Channel, delay: float) -> None:
        self._inner = inner
        self._delay = delay

    async def send(self, frame: bytes) -> None:
        await self._inner.send(frame)

    async def receive(self) -> bytes:
        await trio.sleep(self._delay)  # the link's latency, not a wait for something
        return await self._inner.receive()

    async def aclose(self) -> None:
        await self._inner.aclose()


def _throttle(delay: float) -> None:
    """Make every chunk channel this process opens (downloads, uploads) a slow link: a whole
    transfer then takes seconds, so a kill from outside lands in its middle even on a busy machine."""
    opened = file_driver.open_source

    async def open_slow(host: IHost, peer: str, *, bulk: bool = True) -> Channel:
        return _SlowChannel(await opened(host, peer, bulk=bulk), delay)

    file_driver.open_source = open_slow  # type: ignore[assignment]


def _die_when_finishing() -> None:
    """SIGKILL this process as a finished download is recorded (after its rename)."""

    def finished(self: FileStore, number: int, path: str) -> None:
        say("dying", path=path)
        os.kill(os.getpid(), signal.SIGKILL)

    FileStore.finished = finished  # type: ignore[method-assign]


def recorded(profile: Path) -> dict[str, tuple[str, int]]:
    """What ``files.db`` says before the node starts: each attachment's state and the bytes its
    partial file is recorded to hold (what this run resumes from)."""
    store = FileStore(profile / FILES_FILE, key=store_key(load_identity(profile / KEY_FILE_NAME, None)))
    try:
        return {
            str(r.number): (
                r.state.value,
                Download(decode_manifest(r.manifest), done=store.written(r.number)).bytes_done,
            )
            for r in store.received_list()
        }
    finally:
        store.close()


async def recipient(profile: Path, connect: list[str], mailbox_addr: str | None, contacts: list[str]) -> None:
    say("recorded", attachments=recorded(profile))
    config = quick(auto_fetch=MAX_FILE_SIZE, downloads=profile / "downloads")
    async with (
        Node.open(
            profile,
            listen=LOCAL,
            dht=False,
            mailboxes=[mailbox_addr] if mailbox_addr else [],
            store_config=FAST,
            file_config=config,
        ) as node,
        contextlib.AsyncExitStack() as stack,
    ):
        say("ready", addr=node.listen_addrs[0])
        for invite in contacts:
            node.contacts.add(invite)
        for address in connect:
            await node.connect(address)

        def state() -> tuple[tuple[int, ReceivedState, int], ...]:
            return tuple(
                (r.number, r.state, node.files.progress(r.number).fetched) for r in node.files.received()
            )

        printed: dict[int, tuple[ReceivedState, int]] = {}
        nursery = await stack.enter_async_context(trio.open_nursery())
        nursery.start_soon(tell_problems, node)
        while True:
            now = state()
            for number, received_state, written in now:
                if number not in printed:
                    say(
                        "attachment",
                        number=number,
                        size=node.files.manifest(node.files.attachment(number)).size,
                    )
                if printed.get(number) != (received_state, written):
                    fetched = node.files.statistics().bytes_fetched
                    say("written", number=number, bytes=written, fetched=fetched)
                    if received_state is ReceivedState.DONE:
                        say("done", number=number, path=node.files.attachment(number).path, fetched=fetched)
                    printed[number] = (received_state, written)
            await node.wait_for(lambda before=now: state() != before)


def main() -> None:
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["mailbox", "sender", "recipient"])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--to")
    parser.add_argument("--file", type=Path)
    parser.add_argument("--mailbox")
    parser.add_argument("--connect", action="append", default=[])
    parser.add_argument("--contact", action="append", default=[])
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--no-bulk", action="store_true")
    parser.add_argument("--die-finishing", action="store_true")
    parser.add_argument("--throttle", type=float, default=0.0)
    args = parser.parse_args()
    if args.throttle:
        _throttle(args.throttle)
    if args.role == "mailbox":
        trio.run(mailbox, args.profile, args.port, not args.no_bulk)
    elif args.role == "sender":
        trio.run(
            sender, args.profile, args.to, args.file, args.mailbox, args.reuse, args.port, not args.no_bulk
        )
    else:
        if args.die_finishing:
            _die_when_finishing()
        trio.run(recipient, args.profile, args.connect, args.mailbox, args.contact)


if __name__ == "__main__":
    main()
