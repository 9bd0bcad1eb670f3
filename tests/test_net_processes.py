"""Five ``meshchat node`` processes on 127.0.0.1 in a line: a message crosses four hops; killing the middle
process and starting it again restores delivery. Every wait is bounded; every process is killed and
reaped at the end, whatever happens.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from processes import JsonLinesProcess, stop_processes

from meshchat.identity import Identity, save_identity
from meshchat.net import MessageDelivered, NetDrop
from meshchat.net.host import HANDSHAKE_TIMEOUT, MAX_CONNECTIONS, MAX_PENDING_HANDSHAKES
from meshchat.node import KEY_FILE, Node

pytestmark = pytest.mark.slow

TOPIC = "line"
LOCAL = "/ip4/127.0.0.1/tcp/0"
#: Seconds any one wait may take (a node starts in ~1 s; a hop takes milliseconds).
WAIT = 30.0
#: Probes node 0 publishes, at most, while waiting for the line to carry messages end to end.
MAX_PROBES = 60


class NodeProcess(JsonLinesProcess):
    """One ``meshchat node --json`` process and the events it printed."""

    def messages(self) -> list[bytes]:
        return [base64.b64decode(e["data"]) for e in self.events if e["event"] == "message"]

    async def publish(self, line: bytes) -> None:
        await self.write_line(line)


@asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[trio.Nursery, Callable[..., Any]]]:
    """A nursery and a ``start(index, listen, bootstrap)`` that launches node processes; all die at exit."""
    processes: list[trio.Process] = []
    async with trio.open_nursery() as nursery:

        async def start(index: int, listen: str, bootstrap: list[str], *, stdin: bool = False) -> NodeProcess:
            profile = tmp_path / f"node{index}"
            if not (profile / KEY_FILE).exists():
                profile.mkdir()
                save_identity(profile / KEY_FILE, Identity(bytes([index + 1]) * 32), None)
            args = [sys.executable, "-m", "meshchat", "node", "--profile", str(profile), "--json"]
            args += ["--listen", listen, "--topic", TOPIC] + [
                x for b in bootstrap for x in ("--bootstrap", b)
            ]
            if stdin:
                args.append("--stdin")
            process = await trio.lowlevel.open_process(
                args,
                stdin=subprocess.PIPE if stdin else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            processes.append(process)
            node = NodeProcess(process)
            nursery.start_soon(node.read_events)
            await node.first("listening")
            return node

        try:
            yield nursery, start
        finally:
            await stop_processes(processes)
            nursery.cancel_scope.cancel()


async def carries(sender: NodeProcess, receiver: NodeProcess, tag: str) -> None:
    """Publish probes from ``sender`` until one reaches ``receiver`` (meshes form within a heartbeat)."""
    for probe in range(MAX_PROBES):
        text = f"{tag} probe {probe}".encode()
        await sender.publish(text)
        with trio.move_on_after(0.5):
            await receiver.wait_for(lambda t=text: t in receiver.messages())
        if any(m.startswith(tag.encode()) for m in receiver.messages()):
            return
    pytest.fail(f"no {tag} probe crossed the line in {MAX_PROBES} tries")


async def test_a_message_crosses_four_hops_and_survives_a_restart_of_the_middle(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (_, start):
        nodes = [await start(0, "/ip4/127.0.0.1/tcp/0", [], stdin=True)]
        addresses = [nodes[0].events[0]["addrs"][0]]
        for index in range(1, 5):
            node = await start(index, "/ip4/127.0.0.1/tcp/0", [addresses[-1]])
            nodes.append(node)
            addresses.append(node.events[0]["addrs"][0])
        await carries(nodes[0], nodes[4], "first")
        for k in range(10):
            await nodes[0].publish(b"hop %d" % k)
        await nodes[4].wait_for(lambda: all(b"hop %d" % k in nodes[4].messages() for k in range(10)))
        # Each relay delivered every message exactly once to its application (its output is read
        # separately from the last node's, so wait for its lines too).
        for node in nodes[1:]:
            await node.wait_for(lambda n=node: sum(m.startswith(b"hop ") for m in n.messages()) >= 10)
            hops = [m for m in node.messages() if m.startswith(b"hop ")]
            assert sorted(hops) == sorted(b"hop %d" % k for k in range(10))

        # Kill the middle one outright; nothing gets across any more.
        nodes[2].process.send_signal(signal.SIGKILL)
        await nodes[2].process.wait()
        await nodes[1].wait_for(lambda: any(e["event"] == "peer_disconnected" for e in nodes[1].events))
        await nodes[0].publish(b"while the middle is down")
        with trio.move_on_after(1.0):
            await nodes[4].wait_for(lambda: b"while the middle is down" in nodes[4].messages())
        assert b"while the middle is down" not in nodes[4].messages()

        # Start it again on the same port with the same key, dialling both neighbours: delivery returns.
        port = addresses[2].split("/tcp/")[1].split("/")[0]
        nodes[2] = await start(2, f"/ip4/127.0.0.1/tcp/{port}", [addresses[1], addresses[3]])
        assert nodes[2].events[0]["addrs"][0] == addresses[2]
        await carries(nodes[0], nodes[4], "after restart")
        await nodes[0].publish(b"back again")
        await nodes[4].wait_for(lambda: b"back again" in nodes[4].messages())

        # A clean stop prints statistics with no driver drops.
        nodes[4].process.send_signal(signal.SIGTERM)
        stats = await nodes[4].first("statistics")
        assert stats["drops"] == {}


async def test_meshchat_send_reaches_a_contact_running_meshchat_chat(tmp_path: Path) -> None:
    """The CLI end to end: two profiles, invites exchanged with ``meshchat add``, Bob in ``meshchat chat``
    and Alice's one-shot ``meshchat send``, which dials the address in Bob's invite."""
    meshchat = [sys.executable, "-m", "meshchat"]
    alice, bob = tmp_path / "alice", tmp_path / "bob"

    async def run(*args: str) -> str:
        result = await trio.run_process([*meshchat, *args], capture_stdout=True, stderr=subprocess.DEVNULL)
        return result.stdout.decode().strip()

    for folder, name in ((alice, "Alice"), (bob, "Bob")):
        await run("init", "--profile", str(folder), "--name", name, "--insecure-no-passphrase")
    await run("add", "--profile", str(bob), await run("invite", "--profile", str(alice)))
    local = "/ip4/127.0.0.1/tcp/0"
    chat = await trio.lowlevel.open_process(
        [*meshchat, "chat", "--profile", str(bob), "--to", "Alice", "--listen", local, "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with trio.open_nursery() as nursery:
            bob_node = NodeProcess(chat)
            nursery.start_soon(bob_node.read_events)
            address = (await bob_node.first("listening"))["addrs"][0].split("/p2p/")[0]
            await run(
                "add", "--profile", str(alice), await run("invite", "--profile", str(bob), "--addr", address)
            )
            with trio.fail_after(WAIT):
                sent = json.loads(
                    await run("send", "--profile", str(alice), "--to", "Bob", "--json", "Сәлам!")
                )
            assert sent["event"] == "sent"
            direct = await bob_node.first("direct")
            assert base64.b64decode(direct["data"]).decode() == "Сәлам!"
            assert direct["contact"] == "Alice" and direct["message_id"] == sent["message_id"]
            await bob_node.publish(b"got it")  # Bob's line goes to Alice, sealed (she is gone: no peer)
            assert base64.b64decode((await bob_node.first("sent"))["data"]) == b"got it"
            nursery.cancel_scope.cancel()
    finally:
        chat.kill()
        with trio.move_on_after(WAIT) as scope:
            scope.shield = True
            await chat.wait()


#: Idle sockets in the flood: more than the connection cap (``MAX_CONNECTIONS``), which they used to fill
#: until they timed out, locking every new peer out.
FLOOD = MAX_CONNECTIONS + 76


async def test_an_idle_flood_larger_than_the_connection_cap_does_not_lock_out_new_peers() -> None:
    """1,100 TCP connections that never start a handshake (in this process, beside the two nodes).

    What holds: the node stays up, the peer it already has keeps delivering, it can still dial out, a
    new peer still gets in (no more than ``MAX_PENDING_HANDSHAKES`` handshakes stay pending: for each
    newer one the oldest is closed at once), and it closes every idle connection, the rest once the
    handshake timeout passes, each counted as evicted or failed.
    """
    async with (
        Node.open(identity=Identity(b"\x31" * 32), listen=[LOCAL]) as a,
        Node.open(identity=Identity(b"\x32" * 32), listen=[LOCAL]) as b,
    ):
        await a.subscribe(TOPIC)
        await b.subscribe(TOPIC)
        await a.connect(b.listen_addrs[0])
        with trio.fail_after(WAIT):
            await b.wait_for(lambda: a.peer_id in b.driver.router.mesh.get(TOPIC, ()))
        port = int(b.listen_addrs[0].split("/tcp/")[1].split("/")[0])
        idle: list[trio.SocketStream] = []
        try:
            with trio.fail_after(WAIT):
                for _ in range(FLOOD):
                    idle.append(await trio.open_tcp_stream("127.0.0.1", port))
            await a.publish(TOPIC, b"through the crowd")
            await _delivered(b, b"through the crowd")
            async with Node.open(identity=Identity(b"\x33" * 32), listen=[LOCAL]) as c:
                await b.connect(c.listen_addrs[0])  # dialling out still works
            async with Node.open(identity=Identity(b"\x35" * 32), listen=[LOCAL]) as e:
                await e.connect(b.listen_addrs[0])  # and a new peer still gets in

            closed = 0
            with trio.fail_after(HANDSHAKE_TIMEOUT + WAIT):
                for stream in idle:
                    while await stream.receive_some(4096):
                        pass  # multistream-select's greeting, if any; then the node's close
                    closed += 1
            assert closed == FLOOD

            def refused() -> int:
                drops = b.statistics().drops
                return drops[NetDrop.HANDSHAKE_FAILED] + drops[NetDrop.HANDSHAKE_EVICTED]

            with trio.fail_after(WAIT):  # each one counted, by reason, once the node has let it go
                await b.wait_for(lambda: refused() == FLOOD)
            assert b.statistics().drops[NetDrop.HANDSHAKE_EVICTED] >= FLOOD - MAX_PENDING_HANDSHAKES
            assert a.statistics().drops[NetDrop.HANDSHAKE_FAILED] == 0
            async with Node.open(identity=Identity(b"\x34" * 32), listen=[LOCAL]) as d:
                await d.connect(b.listen_addrs[0])  # inbound works again
        finally:
            for stream in idle:
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    await stream.aclose()


async def _delivered(node: Node, data: bytes) -> None:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, MessageDelivered) and event.data == data:
                return
