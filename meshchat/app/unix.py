"""The daemon's Unix-socket transport: newline-delimited JSON-RPC 2.0, authenticated by a token.

One JSON-RPC message per line (UTF-8, ``\\n``-terminated; a JSON text has no raw newline in it), both
ways: requests and batches in, responses and ``event`` notifications out. The first line must be
``{"jsonrpc":"2.0","id":1,"method":"auth","params":{"token":"..."}}`` with the token from the
profile's ``daemon.token`` (``meshchat.app.auth``); anything else first is answered with error
-32001 and the connection closes. The socket file is made mode 0600 before it listens, so only the
profile's owner can connect at all; the token keeps out whoever else runs as that user but cannot
read the profile.

Bounds: ``MAX_CONNECTIONS`` clients at once (one more is told so and closed), a line of at most
``meshchat.app.jsonrpc.MAX_MESSAGE`` bytes (a longer one is answered with -32600 and skipped, its
bytes dropped as they come), ``AUTH_TIMEOUT`` to authenticate, ``WRITE_TIMEOUT`` for a client to take
what is sent to it (else it is disconnected). Each connection runs in its own task and writes only to
its own socket, so a client that stops reading holds up nobody else: its event subscriptions
overflow (``meshchat.app.events``) and its writes time out.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path
from typing import Any

import trio

from meshchat.app.jsonrpc import (
    INVALID_REQUEST,
    LIBRARY_ERROR,
    MAX_MESSAGE,
    check_auth,
    dumps,
    error_response,
    open_session,
)
from meshchat.app.methods import Methods
from meshchat.errors import AddressInUse, ProfileError

__all__ = [
    "AUTH_TIMEOUT",
    "MAX_CONNECTIONS",
    "READ_CHUNK",
    "SOCKET_FILE",
    "WRITE_TIMEOUT",
    "LineBuffer",
    "serve_unix",
]

#: The socket's file name in the profile folder (``meshchat daemon`` without ``--socket``).
SOCKET_FILE = "daemon.sock"
#: Clients connected at once: local programs driving one person's node (an app, a bot, a script or
#: two); the bound keeps a runaway script from exhausting the daemon's file descriptors.
MAX_CONNECTIONS = 64
#: Seconds a new connection has to send its ``auth`` line: a client that connects and says nothing
#: holds a connection slot only this long.
AUTH_TIMEOUT = 10.0
#: Seconds one write to a client may take (its socket buffer full because it does not read): after
#: that it is disconnected, so its slot and its session's memory are freed.
WRITE_TIMEOUT = 30.0
#: Bytes read from a socket at a time.
READ_CHUNK = 64 * 1024
#: Seconds spent telling a client over ``MAX_CONNECTIONS`` that it is one too many.
REFUSE_TIMEOUT = 1.0
#: Listen backlog (connections the kernel queues before we accept them).
BACKLOG = 64


class LineBuffer:
    """Splits a byte stream into lines of at most ``limit`` bytes, sans-IO. A longer line is given
    once as its length (an ``int``) when its end arrives; its bytes are dropped as they come."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._dropped: int | None = None

    def feed(self, chunk: bytes) -> list[bytes | int]:
        """Take the next bytes; return the lines they complete (over-long ones as their length)."""
        out: list[bytes | int] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if self._dropped is not None:
                self._dropped += len(piece)
            else:
                self._buffer += piece
                if len(self._buffer) > self.limit:
                    self._dropped = len(self._buffer)
                    self._buffer.clear()
            if end < 0:
                return out
            dropped, self._dropped = self._dropped, None
            out.append(dropped if dropped is not None else bytes(self._buffer))
            self._buffer.clear()
            start = end + 1


class _Connection:
    """One client: reads its lines, writes answers and events, one write at a time."""

    def __init__(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        self._stream = stream
        self._scope = scope
        self._lock = trio.Lock()
        self._lines = LineBuffer(MAX_MESSAGE)
        self._ready: list[bytes | int] = []

    async def send(self, text: str) -> None:
        """Send ``text`` as one line; a client that does not take it in time, or is gone, is closed."""
        with trio.move_on_after(WRITE_TIMEOUT) as timer:
            async with self._lock:
                try:
                    await self._stream.send_all(text.encode("utf-8") + b"\n")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._scope.cancel()
        if timer.cancelled_caught:
            self._scope.cancel()

    async def next_line(self) -> bytes | int | None:
        """The next line (an ``int``: the length of one over the limit), or None at the end."""
        while not self._ready:
            try:
                chunk = await self._stream.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not chunk:
                return None
            self._ready = [line for line in self._lines.feed(chunk) if line not in {b"", b"\r"}]
        return self._ready.pop(0)


def _too_long(size: int) -> str:
    return dumps(
        error_response(
            None,
            INVALID_REQUEST,
            f"message is {size:,} bytes; the limit is {MAX_MESSAGE:,}",
            {"size": size, "limit": MAX_MESSAGE},
        )
    )


async def _serve_connection(methods: Methods, token: str, stream: trio.SocketStream) -> None:
    with trio.CancelScope() as scope:
        connection = _Connection(stream, scope)
        line: bytes | int | None = None
        with trio.move_on_after(AUTH_TIMEOUT):
            line = await connection.next_line()
        if line is None:
            return
        answer, ok = check_auth(line if isinstance(line, bytes) else b"", token)
        await connection.send(answer)
        if not ok:
            return
        async with open_session(methods, connection.send) as session:
            while (line := await connection.next_line()) is not None:
                reply = _too_long(line) if isinstance(line, int) else await session.handle(line)
                if reply is not None:
                    await connection.send(reply)


def _refuse_busy(path: Path) -> None:
    """Remove a stale socket file at ``path``; ``AddressInUse`` if a process still listens there."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ProfileError(f"{path} exists and is not a socket: not replacing it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:  # nobody listens: a daemon that ended without cleaning up
            path.unlink(missing_ok=True)
            return
    raise AddressInUse(str(path))


async def serve_unix(
    methods: Methods,
    path: Path,
    *,
    token: str,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``methods`` on a Unix socket at ``path`` (mode 0600) until cancelled; the socket file is
    removed on the way out. ``task_status.started(path)`` once it listens."""
    _refuse_busy(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            await sock.bind(str(path))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(str(path)) from exc
            raise ProfileError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
        try:
            os.chmod(path, 0o600)  # before listen(): nobody can connect in between
            sock.listen(BACKLOG)
            listener = trio.SocketListener(sock)
            active = 0
            async with trio.open_nursery() as nursery:
                task_status.started(path)
                while True:
                    stream = await listener.accept()
                    if active >= MAX_CONNECTIONS:
                        nursery.start_soon(_refuse, stream)
                        continue
                    active += 1

                    async def serve(stream: trio.SocketStream = stream) -> None:
                        nonlocal active
                        try:
                            async with stream:
                                await _serve_connection(methods, token, stream)
                        finally:
                            active -= 1

                    nursery.start_soon(serve)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        sock.close()


async def _refuse(stream: trio.SocketStream) -> None:
    """Tell a client over ``MAX_CONNECTIONS`` why, and close."""
    why = f"the daemon serves {MAX_CONNECTIONS} connections at once; try again later"
    data = {"type": "QuotaExceeded", "message": why}
    async with stream:
        with trio.move_on_after(REFUSE_TIMEOUT), contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all((dumps(error_response(None, LIBRARY_ERROR, why, data)) + "\n").encode())
