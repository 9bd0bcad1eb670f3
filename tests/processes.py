"""A child process that prints one JSON object per line (``meshchat node --json``, the js interop peer),
read as it runs: tests wait on what it printed, never on the clock."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio

#: Seconds any one wait on a child process's output may take.
WAIT = 30.0


async def stop_processes(processes: list[trio.Process], *, timeout: float = WAIT) -> None:  # noqa: ASYNC109
    """Kill every process of ``processes`` still running (by PID) and reap them all, within
    ``timeout`` seconds, even while the caller is being cancelled."""
    for process in processes:
        if process.returncode is None:
            process.kill()
    with trio.move_on_after(timeout) as scope:
        scope.shield = True
        for process in processes:
            await process.wait()


class JsonLinesProcess:
    """A running process and the JSON events it has printed so far (non-JSON lines are skipped)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._changed = trio.Event()

    async def read_events(self) -> None:
        """Read the process's output until it ends (start this in a nursery)."""
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.events.extend(json.loads(line) for line in lines if line.startswith(b"{"))
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, condition: Callable[[], bool], *, timeout: float = WAIT) -> None:  # noqa: ASYNC109
        """Wait (at most ``timeout`` seconds) until ``condition()`` holds, checked on each new output."""
        with trio.fail_after(timeout):
            while not condition():
                await self._changed.wait()

    async def first(self, kind: str) -> dict[str, Any]:
        """The first event of ``kind`` (waiting for it if need be)."""
        await self.wait_for(lambda: any(e["event"] == kind for e in self.events))
        return next(e for e in self.events if e["event"] == kind)

    async def write_line(self, line: bytes) -> None:
        """Write ``line`` and a newline to the process's stdin."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line + b"\n")
