"""What a running node does to its profile folder: it locks it against a second process, records the
addresses it can be dialled at, and refuses to run when it could listen nowhere."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from conftest import make_profile
from processes import JsonLinesProcess

from meshchat.errors import NetworkError, ProfileLocked
from meshchat.identity import Identity
from meshchat.node import ADDRESSES_FILE, LOCK_FILE, Node

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 15.0

#: A second process that opens a node on the profile in argv[1], says so, and runs until stdin closes.
HOLDER = """
import json, sys, trio
from meshchat.node import Node

async def main():
    async with Node.open(sys.argv[1], listen=["/ip4/127.0.0.1/tcp/0"], dht=False):
        print(json.dumps({"event": "open"}), flush=True)
        await trio.wrap_file(sys.stdin).readline()

trio.run(main)
"""


async def test_a_second_process_on_the_same_profile_is_refused_naming_the_first(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    holder = JsonLinesProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder.read_events)
            await holder.first("open")
            with pytest.raises(ProfileLocked) as refused:
                async with Node.open(folder, listen=LOCAL, dht=False):
                    pass
            assert refused.value.pid == process.pid
            assert str(process.pid) in str(refused.value)
            await holder.write_line(b"")  # the first one stops: the lock goes with it
            with trio.fail_after(WAIT):
                await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
    async with Node.open(folder, listen=LOCAL, dht=False) as node:
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
        assert node.peer_id


async def test_the_lock_is_held_within_one_process_too_and_released_on_exit(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    async with Node.open(folder, listen=LOCAL, dht=False):
        with pytest.raises(ProfileLocked) as refused:
            async with Node.open(folder, listen=LOCAL, dht=False):
                pass
        assert refused.value.pid == os.getpid()
    async with Node.open(folder, listen=LOCAL, dht=False):
        pass


async def test_listening_on_an_address_of_no_local_interface_is_a_network_error(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    # 192.0.2.0/24 is TEST-NET-1: no interface here has it, so binding fails locally (no traffic).
    with pytest.raises(NetworkError, match=r"listen.*192\.0\.2\.1"):
        async with Node.open(folder, listen=["/ip4/192.0.2.1/tcp/0"], dht=False):
            pass
    async with Node.open(folder, listen=LOCAL, dht=False):  # the failed open released the profile
        pass


async def test_a_running_node_records_its_dialable_addresses_in_the_profile(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "dave", 11)
    before = time.time()
    async with (
        Node.open(identity=Identity(b"\x0d" * 32), listen=LOCAL, circuit_relay=True, dht=False) as relay,
        Node.open(folder, listen=["/ip4/0.0.0.0/tcp/0"], dht=False) as dave,
    ):
        recorded = json.loads((folder / ADDRESSES_FILE).read_text())
        assert recorded["written_at"] >= int(before)
        port = dave.listen_addrs[0].split("/tcp/")[1].split("/")[0]
        # The wildcard is expanded to this machine's interfaces, loopback included: all dialable.
        assert f"/ip4/127.0.0.1/tcp/{port}/p2p/{dave.peer_id}" in recorded["addrs"]
        assert not [a for a in recorded["addrs"] if "0.0.0.0" in a or not a.endswith(f"/p2p/{dave.peer_id}")]
        with trio.fail_after(WAIT):
            relayed = await dave.reserve(relay.listen_addrs[0])
        again = json.loads((folder / ADDRESSES_FILE).read_text())
        assert again["addrs"] == [*recorded["addrs"], relayed]
        assert not list(folder.glob(f".{ADDRESSES_FILE}.*"))  # written atomically: no temporary left


async def test_a_closed_node_stops_listening_on_its_port() -> None:
    """py-libp2p's listeners outlive its host: a node closed inside a process went on accepting
    connections, and a node opened again on the same port was refused as AddressInUse."""
    async with Node.open(identity=Identity.generate(), listen=LOCAL, dht=False) as first:
        port = int(first.listen_addrs[0].split("/")[4])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # raises EADDRINUSE while anything still listens there
    again = [f"/ip4/127.0.0.1/tcp/{port}"]
    async with Node.open(identity=Identity.generate(), listen=again, dht=False) as second:
        assert f"/tcp/{port}/" in second.listen_addrs[0]
