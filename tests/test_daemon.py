"""The daemon's Unix socket: a real trio server on a temporary socket over real nodes, and a real
``meshchat daemon`` process. Auth first, errors, several clients, clients that vanish or stop reading,
events to every subscriber, the socket's mode and clean-up."""

from __future__ import annotations

import functools
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from conftest import make_profile
from processes import JsonLinesProcess, stop_processes
from rpc_harness import WAIT, alice_and_bob

from meshchat.app import unix
from meshchat.app.auth import TOKEN_FILE, read_token
from meshchat.app.jsonrpc import MAX_MESSAGE
from meshchat.app.methods import Methods
from meshchat.app.unix import serve_unix

TOKEN = "secret-token-for-tests"
DAEMON = [sys.executable, "-m", "meshchat", "daemon"]


class LineClient:
    """A newline-delimited JSON client of the Unix socket."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.next_id = 0

    async def send_line(self, data: bytes) -> None:
        await self.stream.send_all(data + b"\n")

    async def line(self) -> dict[str, Any] | None:
        """The next JSON line, or None once the server closed the connection."""
        with trio.fail_after(WAIT):
            while b"\n" not in self.buffer:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    return None
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        value: dict[str, Any] = json.loads(line)
        return value

    async def request(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a request; return its response (events that come first are skipped)."""
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        await self.send_line(json.dumps(message).encode())
        while True:
            answer = await self.line()
            assert answer is not None, "connection closed"
            if answer.get("id") == self.next_id:
                return answer

    async def call(self, method: str, **params: Any) -> Any:
        answer = await self.request(method, **params)
        assert "error" not in answer, answer
        return answer["result"]

    async def event(self, kind: str) -> dict[str, Any]:
        while True:
            note = await self.line()
            assert note is not None, "connection closed"
            if note.get("method") == "event" and note["params"]["event"]["type"] == kind:
                return note["params"]["event"]  # type: ignore[no-any-return]


async def websocket_call(url: str, method: str) -> dict[str, Any]:
    """One JSON-RPC call over a WebSocket."""
    with trio.fail_after(WAIT):
        async with trio_websocket.open_websocket_url(url) as socket:
            await socket.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}))
            reply: dict[str, Any] = json.loads(await socket.get_message())
            return reply


@asynccontextmanager
async def connected(path: Path, *, token: str | None = TOKEN) -> AsyncIterator[LineClient]:
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        client = LineClient(stream)
        if token is not None:
            assert await client.call("auth", token=token) == {}
        yield client


@asynccontextmanager
async def served(methods: Methods, path: Path) -> AsyncIterator[Path]:
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_unix, methods, path, token=TOKEN))
        yield path
        nursery.cancel_scope.cancel()


async def test_the_first_request_must_be_auth_with_the_token(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path) as pair, served(pair.methods, tmp_path / "d.sock") as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        async with connected(path, token=None) as client:
            answer = await client.request("node.status")
            assert answer["error"]["code"] == -32001
            assert answer["id"] == 1
            assert await client.line() is None  # closed
        async with connected(path, token=None) as client:
            answer = await client.request("auth", token="not the token")
            assert answer["error"]["code"] == -32001
            assert await client.line() is None
        async with connected(path, token=None) as client:
            await client.send_line(b"not json")
            assert (await client.line() or {})["error"]["code"] == -32001
            assert await client.line() is None
        async with connected(path) as client:
            assert (await client.call("node.status"))["peer_id"] == pair.alice.peer_id
    assert not path.exists()  # removed when the server stopped


async def test_errors_come_back_as_error_objects_and_the_connection_goes_on(tmp_path: Path) -> None:
    async with (
        alice_and_bob(tmp_path) as pair,
        served(pair.methods, tmp_path / "d.sock") as path,
        connected(path) as client,
    ):
        unknown = await client.request("node.nothing")
        assert unknown["error"]["code"] == -32601
        wrong = await client.request("messages.send", to="Bob", text=5)
        assert wrong["error"]["code"] == -32602
        assert wrong["error"]["data"]["param"] == "text"
        assert "'text'" in wrong["error"]["message"]
        nobody = await client.request("messages.send", to="Nobody", text="hi")
        assert nobody["error"]["code"] == -32000
        assert nobody["error"]["data"]["type"] == "UnknownPeer"
        await client.send_line(b"{" + b" " * (MAX_MESSAGE + 10))
        too_long = await client.line()
        assert too_long is not None
        assert too_long["error"]["code"] == -32600
        assert too_long["error"]["data"]["limit"] == MAX_MESSAGE
        await client.send_line(b'{"jsonrpc":"2.0","method":"node.status"}')  # a notification: no answer
        await client.send_line(b"[1,2]")
        batch = await client.line()
        assert [a["error"]["code"] for a in batch or []] == [-32600, -32600]
        assert (await client.call("node.status"))["peer_id"] == pair.alice.peer_id


async def test_two_clients_at_once_both_get_events_and_a_vanished_one_costs_nothing(tmp_path: Path) -> None:
    async with (
        alice_and_bob(tmp_path) as pair,
        served(pair.methods, tmp_path / "d.sock") as path,
        connected(path) as first,
        connected(path) as second,
    ):
        await first.call("events.subscribe")
        await second.call("events.subscribe")
        # a third client subscribes and goes away mid-line: its subscription ends with it
        async with connected(path) as third:
            await third.call("events.subscribe")
            assert pair.methods.hub.subscribers == 3
            await third.stream.send_all(b'{"jsonrpc":"2.0","id":9,"meth')
        with trio.fail_after(WAIT):
            await pair.alice.wait_for(lambda: pair.methods.hub.subscribers == 2)
        await pair.bob.send("Alice", "to both of you")
        for client in (first, second):
            event = await client.event("message")
            assert event["message"]["text"] == "to both of you"
            assert event["message"]["peer"] == pair.bob.peer_id


async def test_a_client_that_stops_reading_overflows_alone(tmp_path: Path) -> None:
    async with (
        alice_and_bob(tmp_path) as pair,
        served(pair.methods, tmp_path / "d.sock") as path,
        connected(path) as reader,
        connected(path) as sleeper,
    ):
        await reader.call("events.subscribe")
        await sleeper.call("events.subscribe")  # ...and never reads again
        hub = pair.methods.hub
        filler = {"type": "test", "padding": "x" * 4096}
        sent = 0
        with trio.fail_after(WAIT):
            while hub.overflowed == 0:
                hub.publish({**filler, "n": sent})
                sent += 1
                if sent % 64 == 0:  # let the reader's task and the sockets move
                    for _ in range(64):
                        note = await reader.line()
                        assert note is not None
        assert hub.overflowed == 1
        assert hub.subscribers == 1  # the reader is still subscribed
        hub.publish({"type": "after"})
        assert (await reader.event("after"))["type"] == "after"


async def test_connections_over_the_limit_are_told_and_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unix, "MAX_CONNECTIONS", 2)
    async with (
        alice_and_bob(tmp_path) as pair,
        served(pair.methods, tmp_path / "d.sock") as path,
        connected(path),
        connected(path),
        connected(path, token=None) as third,
    ):
        refused = await third.line()
        assert refused is not None
        assert refused["error"]["data"]["type"] == "QuotaExceeded"
        assert await third.line() is None


async def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path) as pair:
        path = tmp_path / "d.sock"
        with trio.socket.socket(trio.socket.AF_UNIX) as stale:
            await stale.bind(str(path))  # bound, never listening: what a killed daemon leaves
        async with served(pair.methods, path), connected(path) as client:
            assert (await client.call("node.status"))["peer_id"] == pair.alice.peer_id
            from meshchat.errors import AddressInUse  # noqa: PLC0415

            with pytest.raises(AddressInUse):
                await serve_unix(pair.methods, path, token=TOKEN)


async def test_the_meshchat_daemon_process_serves_its_profile_and_cleans_up(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "carol", 3)
    process = await trio.lowlevel.open_process(
        [*DAEMON, "--profile", str(folder), "--json", "--listen", "/ip4/127.0.0.1/tcp/0", "--ws-port", "0"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    daemon = JsonLinesProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.read_events)
            listening = await daemon.first("listening")
            path = Path(listening["socket"])
            assert path == folder / "daemon.sock"
            assert listening["token_file"] == str(folder / TOKEN_FILE)
            assert stat.S_IMODE((folder / TOKEN_FILE).stat().st_mode) == 0o600
            token = read_token(folder)
            async with connected(path, token=token) as client:
                status = await client.call("node.status")
                assert status["peer_id"] == listening["peer_id"]
            # the same methods on the WebSocket, with the same token
            url = f"ws://127.0.0.1:{listening['ws_port']}/rpc?token={token}"
            reply = await websocket_call(url, "node.status")
            assert reply["result"]["peer_id"] == listening["peer_id"]
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(WAIT):
                await process.wait()
            nursery.cancel_scope.cancel()
        assert process.returncode == 0
        assert (await daemon.first("stopped"))["signal"] == "SIGTERM"
        left = {p.name for p in folder.iterdir()}
        assert path.name not in left
        assert TOKEN_FILE not in left
    finally:
        await stop_processes([process])


async def test_a_client_that_never_authenticates_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unix, "AUTH_TIMEOUT", 0.2)
    async with (
        alice_and_bob(tmp_path) as pair,
        served(pair.methods, tmp_path / "d.sock") as path,
        connected(path, token=None) as silent,
    ):
        assert await silent.line() is None  # closed without a word
        async with connected(path) as client:  # others are served as before
            assert (await client.call("node.status"))["peer_id"] == pair.alice.peer_id


async def test_a_client_that_takes_nothing_for_write_timeout_is_disconnected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its connection slot is freed: with one slot, a new client gets in once the sleeper is gone."""
    monkeypatch.setattr(unix, "MAX_CONNECTIONS", 1)
    monkeypatch.setattr(unix, "WRITE_TIMEOUT", 0.3)
    async with (
        alice_and_bob(tmp_path) as pair,
        served(pair.methods, tmp_path / "d.sock") as path,
        connected(path) as sleeper,
    ):
        await sleeper.call("events.subscribe")  # ...and never reads again
        hub = pair.methods.hub
        with trio.fail_after(WAIT):
            while hub.overflowed == 0:
                hub.publish({"type": "test", "padding": "x" * 65536})
                await trio.lowlevel.checkpoint()  # let its session write until the socket is full
            admitted = False  # without the write timeout the sleeper would hold the slot for ever
            while not admitted:  # refused (told, or reset) while the sleeper holds the only slot
                async with connected(path, token=None) as newcomer:
                    auth = {"jsonrpc": "2.0", "id": 1, "method": "auth", "params": {"token": TOKEN}}
                    try:
                        await newcomer.send_line(json.dumps(auth).encode())
                        answer = await newcomer.line()
                    except trio.BrokenResourceError:  # refused and closed before our line arrived
                        continue
                    assert answer is not None
                    admitted = "result" in answer
                    assert admitted or answer["error"]["data"]["type"] == "QuotaExceeded"
