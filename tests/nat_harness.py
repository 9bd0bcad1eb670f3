"""Two people behind their own NAT gateways and a circuit relay on the "public" switch, as real
``meshchat`` processes in network namespaces (``tests/netns.py``): the relay runs ``meshchat node
--circuit-relay``, Bob ``meshchat node --reserve RELAY`` behind gateway B, Alice ``meshchat chat --to
Bob`` behind gateway A with Bob's relayed address in his invite. Used by ``tests/test_nat_netns.py``
and ``benchmarks/bench_reach.py``.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from netns import Netns, netns_made, two_nats
from processes import WAIT, JsonLinesProcess, stop_processes

from meshchat.cli.common import PASSPHRASE_ENV, PROFILE_ENV

MESHCHAT = [sys.executable, "-m", "meshchat"]
#: The port every node listens on inside its own namespace (each namespace has its own ports).
PORT = 4001


def env() -> dict[str, str]:
    """The environment of every ``meshchat`` process: this checkout's package first."""
    root = str(Path(__file__).resolve().parents[1])
    kept = {k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, PROFILE_ENV)}
    path = root + os.pathsep + kept["PYTHONPATH"] if kept.get("PYTHONPATH") else root
    return {**kept, "PYTHONPATH": path, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}


async def meshchat(*args: str | Path) -> bytes:
    """Run one ``meshchat`` command (in the root namespace: profile work only); its standard output."""
    with trio.fail_after(WAIT + 10):
        done = await trio.run_process(
            [*MESHCHAT, *map(str, args)], capture_stdout=True, capture_stderr=True, check=False, env=env()
        )
    assert done.returncode == 0, done.stderr.decode()
    return bytes(done.stdout)


async def make_profiles(root: Path) -> tuple[Path, Path, Path]:
    """Profiles relay, alice, bob under ``root``; Bob knows Alice (her chats need no stamp)."""
    relay, alice, bob = root / "relay", root / "alice", root / "bob"
    for folder, name in ((relay, "Relay"), (alice, "Alice"), (bob, "Bob")):
        await meshchat("init", "--profile", folder, "--name", name, "--insecure-no-passphrase")
    await meshchat("add", "--profile", bob, (await meshchat("invite", "--profile", alice)).decode().strip())
    return relay, alice, bob


def of(events: JsonLinesProcess, kind: str) -> list[dict[str, Any]]:
    """The events of ``kind`` a process printed so far."""
    return [e for e in events.events if e["event"] == kind]


def texts(events: JsonLinesProcess) -> list[str]:
    """The bodies of the chats a process received so far."""
    return [base64.b64decode(e["data"]).decode() for e in of(events, "direct")]


@dataclass
class NatChat:
    """The running processes of ``nat_chat``; ``started`` is the trio time the relay was launched."""

    net: Netns
    relay: JsonLinesProcess
    bob: JsonLinesProcess
    alice: JsonLinesProcess
    started: float

    async def say(self, *lines: str) -> None:
        """Alice types ``lines`` into her chat."""
        for line in lines:
            await self.alice.write_line(line.encode())

    async def bob_has(self, count: int, *, timeout: float = WAIT) -> float:  # noqa: ASYNC109
        """Wait until Bob received ``count`` chats; the trio time then."""
        await self.bob.wait_for(lambda: len(of(self.bob, "direct")) >= count, timeout=timeout)
        return trio.current_time()


@asynccontextmanager
async def nat_chat(
    root: Path,
    *,
    fully_random: bool = False,
    direct: bool = False,
    tag: str = "n",
    logs: Path | None = None,
) -> AsyncIterator[NatChat]:
    """Namespaces (``two_nats``), profiles under ``root`` and the three processes; all stopped and
    deleted at the end. ``direct``: Alice and Bob run in the relay's public namespace instead and
    Alice dials Bob's own address (the baseline: no NAT, no relay). ``logs``: a folder for the
    processes' standard error."""
    relay_dir, alice_dir, bob_dir = await make_profiles(root)
    started_processes: list[trio.Process] = []
    with netns_made(tag) as net:
        pair = two_nats(net, fully_random=fully_random)
        async with trio.open_nursery() as nursery:

            async def start(namespace: str, name: str, *args: str | Path) -> JsonLinesProcess:
                error_path = os.devnull if logs is None else logs / f"{name}.stderr"
                with open(error_path, "wb") as err:  # noqa: ASYNC230 (a local file, opened once)
                    process = await trio.lowlevel.open_process(
                        net.argv(namespace, [*MESHCHAT, *map(str, args)]),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        env=env(),
                    )
                started_processes.append(process)
                events = JsonLinesProcess(process)
                nursery.start_soon(events.read_events)
                await events.first("listening")
                return events

            try:
                started = trio.current_time()
                listen = "/ip4/{ip}/tcp/" + str(PORT)
                relay = await start(
                    pair.relay, "relay", "node", "--profile", relay_dir, "--json", "--circuit-relay",
                    "--listen", listen.format(ip=pair.relay_ip),
                )  # fmt: skip
                relay_address = (await relay.first("listening"))["addrs"][0]
                if direct:
                    public = f"/ip4/{pair.relay_ip}/tcp/"
                    bob = await start(
                        pair.relay, "bob", "node", "--profile", bob_dir, "--json",
                        "--listen", f"{public}{PORT + 1}",
                    )  # fmt: skip
                    bob_address = (await bob.first("listening"))["addrs"][0]
                    alice_namespace, alice_listen = pair.relay, f"{public}{PORT + 2}"
                else:
                    bob = await start(
                        pair.b, "bob", "node", "--profile", bob_dir, "--json",
                        "--listen", listen.format(ip=pair.b_ip), "--reserve", relay_address,
                    )  # fmt: skip
                    bob_address = (await bob.first("reserved"))["addr"]
                    alice_namespace, alice_listen = pair.a, listen.format(ip=pair.a_ip)
                invite = await meshchat("invite", "--profile", bob_dir, "--addr", bob_address)
                await meshchat("add", "--profile", alice_dir, invite.decode().strip())
                alice = await start(
                    alice_namespace, "alice", "chat", "--profile", alice_dir, "--to", "Bob", "--json",
                    "--listen", alice_listen,
                )  # fmt: skip
                yield NatChat(net, relay, bob, alice, started)
            finally:
                await stop_processes(started_processes)
                nursery.cancel_scope.cancel()
