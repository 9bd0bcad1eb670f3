"""examples/rpc_client.js against a real ``meshchat daemon`` process: the Node.js client reads the
token, authenticates on the Unix socket, subscribes, sends Bob a message and prints an event; Bob, a
second node in this process, receives the message. Skipped only where ``node`` is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from conftest import make_profile
from processes import JsonLinesProcess, stop_processes

from meshchat.contacts import Contacts
from meshchat.inbox import DirectMessage
from meshchat.node import Node
from meshchat.wire import Invite

WAIT = 30.0
DAEMON = [sys.executable, "-m", "meshchat", "daemon"]
CLIENT = Path(__file__).parent.parent / "examples" / "rpc_client.js"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed")


async def test_the_node_js_client_sends_through_the_daemon_and_prints_an_event(tmp_path: Path) -> None:
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    async with Node.open(bob_dir, listen=["/ip4/127.0.0.1/tcp/0"], dht=False) as bob:
        Contacts(alice_dir).add(Invite.create(bob_id, name="Bob", addrs=bob.listen_addrs).to_text())
        daemon = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "meshchat",
                "daemon",
                "--profile",
                str(alice_dir),
                "--json",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
            ],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        events = JsonLinesProcess(daemon)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(events.read_events)
                await events.first("listening")
                with trio.fail_after(WAIT):
                    run = await trio.run_process(
                        ["node", str(CLIENT), str(alice_dir), "Bob", "Привет from JavaScript"],
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                    )
                assert run.returncode == 0, run.stderr.decode()
                lines = [json.loads(line) for line in run.stdout.decode().splitlines()]
                sent, event = lines[0]["sent"], lines[1]["event"]
                assert sent["text"] == "Привет from JavaScript"
                assert sent["peer"] == bob.peer_id
                assert event["type"] in {"status", "peer", "message"}
                with trio.fail_after(WAIT):
                    async for got in bob.events():
                        if isinstance(got, DirectMessage):
                            assert got.body.decode() == "Привет from JavaScript"
                            assert got.message_id.hex() == sent["id"]
                            break
                daemon.terminate()  # SIGTERM, by PID
                with trio.fail_after(WAIT):
                    await daemon.wait()
                nursery.cancel_scope.cancel()
            assert daemon.returncode == 0
        finally:
            await stop_processes([daemon])
