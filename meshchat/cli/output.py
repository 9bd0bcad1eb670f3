"""Standard output for the long-running commands (``node``, ``chat``, ``mailbox``) that a slow reader
cannot turn into a stalled node.

Writing a line to a pipe blocks when the reader lags; inside trio that would block the whole event
loop: gossip for everyone, mailbox calls, timers (an attacker flooding a topic froze a ``meshchat
node --json`` whose log reader lagged). ``OutputQueue`` takes lines without ever blocking, keeps at
most ``OUTPUT_BUFFER`` bytes, and writes from a worker thread. Live notices beyond the bound are
dropped and counted; ``KEPT_EVENTS`` (``direct`` messages above all) are never dropped: their
producer waits for room instead.
"""

from __future__ import annotations

import functools
import os
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TextIO

import trio

from meshchat.i18n import _

__all__ = ["KEPT_EVENTS", "OUTPUT_BUFFER", "OUTPUT_DRAIN", "OutputQueue", "opened_output"]

#: Bytes of output held for a slow reader of standard output (lines queued plus the batch being
#: written): a burst of about 3,000 ordinary event lines, or a dozen of the largest (a 60 KiB message
#: is ~82 KiB of base64 JSON), at most 1 MiB of memory however far the reader lags. The kernel's pipe
#: buffer (64 KiB on Linux) comes on top. Live notices that do not fit are dropped and counted.
OUTPUT_BUFFER = 1024 * 1024

#: Seconds the command waits at exit for the reader to take what is still queued: a reader that is
#: reading takes ``OUTPUT_BUFFER`` in well under a second; one that has not read for this long may
#: never read, and must not hold the exit (a service manager's stop, a script's SIGTERM) for ever.
OUTPUT_DRAIN = 5.0

#: Events never dropped for a slow reader: ``direct`` messages and attachments (the event loop waits
#: for room before taking the next event instead) and the lines a run prints once or once per option,
#: which cannot grow the buffer. Every other line is a live notice.
KEPT_EVENTS = frozenset(
    {
        "direct",
        "group_message",
        "attachment",
        "attachment_fetched",
        "listening",
        "reserved",
        "stopped",
        "stdin_closed",
        "mailbox",
        "statistics",
    }
)


class OutputQueue:
    """Standard output for a node: ``put`` queues a whole line and returns at once; ``run`` (a task)
    writes the queued lines in batches from a worker thread, so a reader that is slow or stopped slows
    the output, never the event loop.

    Within ``OUTPUT_BUFFER`` bytes every line is kept. Beyond it a live notice is dropped and counted
    (``dropped``); a kept line is queued anyway, and the task that printed a ``direct`` message waits
    in ``wait_for_room`` before it takes the next one, so held bytes stay within the bound plus one
    line. ``drain`` waits (bounded) for everything queued to be written.
    """

    def __init__(self, out: TextIO, *, limit: int = OUTPUT_BUFFER) -> None:
        self._out = out
        self._limit = limit
        self._encoding = getattr(out, "encoding", None) or "utf-8"
        self._errors = getattr(out, "errors", None) or "strict"
        self._lines: deque[str] = deque()
        #: Bytes queued or being written.
        self._held = 0
        #: Lines handed to the worker thread and not yet written.
        self._writing = 0
        self._changed = trio.Event()
        #: True once ``run`` has ended: nothing more will be written.
        self._stopped = False
        #: Live notices dropped because the buffer was full; after ``drain``, also lines never written.
        self.dropped = 0

    def isatty(self) -> bool:  # for _ChatPrinter's colours
        return self._out.isatty()

    def put(self, text: str, *, keep: bool = False) -> None:
        """Queue ``text`` (whole lines); without ``keep``, drop and count it if it does not fit."""
        size = len(text.encode(self._encoding, self._errors))  # an unencodable line fails here, at once
        if not keep and self._held + size > self._limit:
            self.dropped += 1
            return
        self._lines.append(text)
        self._held += size
        self._notify()

    async def wait_for_room(self) -> None:
        """Return once the held bytes are within the bound again."""
        while self._held > self._limit:
            await self._changed.wait()

    async def run(self) -> None:
        """Write what is queued, batch by batch, until cancelled (or the write fails: a closed pipe)."""
        fd = self._own_fd()
        try:
            while True:
                while not self._lines:
                    await self._changed.wait()
                batch = "".join(self._lines)
                self._writing = len(self._lines)
                self._lines.clear()
                data = batch.encode(self._encoding, self._errors)
                write = functools.partial(self._write, fd, data, batch)
                try:
                    # abandon_on_cancel: a write to a reader that never reads cannot hold the exit; the
                    # (daemon) worker thread stays blocked in it until the process ends. trio-typing's
                    # stubs (py-libp2p's) shadow trio's own and predate this name (trio 0.23).
                    await trio.to_thread.run_sync(write, abandon_on_cancel=True)  # type: ignore[call-arg]
                except trio.Cancelled:
                    fd = None  # not closed: the abandoned thread may still write to it
                    raise
                self._writing = 0
                self._held -= len(data)
                self._notify()
        finally:
            self._stopped = True
            self._notify()
            if fd is not None:
                os.close(fd)

    async def drain(self, seconds: float = OUTPUT_DRAIN) -> None:
        """Wait at most ``seconds`` for everything queued to be written; count what was not as dropped
        and say so on standard error."""
        with trio.move_on_after(seconds):
            while self._held and not self._stopped:
                await self._changed.wait()
        unwritten = len(self._lines) + self._writing
        if unwritten:
            self.dropped += unwritten
            sys.stderr.write(
                _(
                    "meshchat: {unwritten} lines of output were not written: standard output was not "
                    "read for {seconds:g} s, or closed\n"
                ).format(unwritten=unwritten, seconds=seconds)
            )

    def _own_fd(self) -> int | None:
        """A duplicate of ``out``'s file descriptor, written with ``os.write`` so that a thread left
        blocked at exit holds no lock of ``out`` (Python's exit would wait on it); None if ``out`` has
        no descriptor (a StringIO, a test runner's capture), then it is written with ``out.write``."""
        try:
            fd = self._out.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation is both
            return None
        self._out.flush()  # what was written to ``out`` before comes first
        return os.dup(fd)

    def _write(self, fd: int | None, data: bytes, text: str) -> None:
        if fd is None:
            self._out.write(text)
            self._out.flush()
            return
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@asynccontextmanager
async def opened_output(out: TextIO) -> AsyncIterator[OutputQueue]:
    """An ``OutputQueue`` on ``out`` with its writer running; on exit, drained (bounded). An error of
    the body leaves as itself, not wrapped in the writer's nursery's ``ExceptionGroup``."""
    output = OutputQueue(out)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.run)
            try:
                yield output
            finally:
                with trio.CancelScope(shield=True):
                    await output.drain()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
