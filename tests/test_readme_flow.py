"""The README's "Command line" section, followed literally as a new user would: real ``meshchat``
processes, a passphrase in ``$MESHCHAT_PASSPHRASE``, profiles in a temporary folder.

Only these substitutions are made: ``127.0.0.1`` for ``0.0.0.0`` (tests send traffic only to the
loopback interface), a port the system picks for ``4001`` (the chat then reuses the port Bob's node
got, as the README reuses 4001), ``--json`` on the long-running commands so the test can wait on their
events, and concrete values for the "…" placeholders. Every process is stopped by its PID (SIGINT,
as Ctrl-C) and reaped; every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from processes import JsonLinesProcess, stop_processes

from meshchat.cli.common import LIBP2P_LOG_ENV, PASSPHRASE_ENV, PROFILE_ENV
from meshchat.cli.runner import SEND_TIMEOUT
from meshchat.identity import PublicIdentity, read_public_key, safety_number
from meshchat.wire import Invite

MESHCHAT = [sys.executable, "-m", "meshchat"]
#: The passphrase every profile of the walk-through gets (as a user would export it).
PASSPHRASE = "correct horse battery staple"
#: Seconds any one command or wait may take.
WAIT = 30.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PROFILE_ENV, LIBP2P_LOG_ENV)}
    return {**env, PASSPHRASE_ENV: PASSPHRASE, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}


async def meshchat(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run one ``meshchat`` command to its end (bounded)."""
    with trio.fail_after(WAIT + 10):
        result = await trio.run_process(
            [*MESHCHAT, *map(str, args)], capture_stdout=True, capture_stderr=True, check=False, env=_env()
        )
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


class Running(JsonLinesProcess):
    """A long-running ``meshchat`` process (``node``, ``chat``) whose stderr goes to a file."""

    def __init__(self, process: trio.Process, stderr: Path) -> None:
        super().__init__(process)
        self.stderr = stderr

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    async def stop(self) -> None:
        """Ctrl-C by PID; wait (bounded) for it to print ``stopped`` and exit 0."""
        self.process.send_signal(signal.SIGINT)
        with trio.fail_after(WAIT):
            await self.process.wait()
        assert self.process.returncode == 0, self.stderr.read_text()
        assert self.of("stopped"), self.events


@asynccontextmanager
async def processes(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """A ``start(*args)`` that launches a ``meshchat`` process and waits for its ``listening`` event;
    whatever is still running at the end is killed by PID and reaped."""
    started: list[trio.Process] = []
    async with trio.open_nursery() as nursery:

        async def start(*args: str | Path) -> Running:
            stderr = tmp_path / f"stderr-{len(started)}"
            with open(stderr, "wb") as err:  # noqa: ASYNC230 (a local file)
                process = await trio.lowlevel.open_process(
                    [*MESHCHAT, *map(str, args)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=_env(),
                )
            started.append(process)
            running = Running(process, stderr)
            nursery.start_soon(running.read_events)
            try:
                await running.first("listening")
            except trio.TooSlowError:
                raise AssertionError(stderr.read_text()) from None
            return running

        try:
            yield start
        finally:
            await stop_processes(started)
            nursery.cancel_scope.cancel()


def _text(event: dict[str, Any]) -> str:
    return base64.b64decode(event["data"]).decode()


def _port(listening: dict[str, Any]) -> str:
    match = re.match(r"/ip4/127\.0\.0\.1/tcp/(\d+)/p2p/", listening["addrs"][0])
    assert match is not None, listening
    return match.group(1)


async def test_the_readme_walk_through_delivers_then_chats_both_ways(tmp_path: Path) -> None:
    bob, alice = tmp_path / ".bob", tmp_path / ".alice"
    # meshchat init --profile ~/.bob --name Bob
    await meshchat("init", "--profile", bob, "--name", "Bob")
    async with processes(tmp_path) as start:
        # meshchat node --profile ~/.bob --listen /ip4/0.0.0.0/tcp/4001   (stays up; prints what arrives)
        bob_node = await start("node", "--profile", bob, "--listen", "/ip4/127.0.0.1/tcp/0", "--json")
        listening = await bob_node.first("listening")
        # meshchat invite --profile ~/.bob --qr bob.png   (second terminal)
        invited = await meshchat("invite", "--profile", bob, "--qr", tmp_path / "bob.png")
        assert "warning" not in invited.stderr.decode(), invited.stderr.decode()
        bob_invite = invited.stdout.decode().strip()
        assert Invite.from_text(bob_invite).addrs == tuple(listening["addrs"])  # Bob's node's address
        assert (tmp_path / "bob.png").read_bytes().startswith(b"\x89PNG")

        # meshchat init --profile ~/.alice --name Alice; add; safety-number
        await meshchat("init", "--profile", alice, "--name", "Alice")
        await meshchat("add", "--profile", alice, bob_invite)
        shown = (await meshchat("safety-number", "--profile", alice, bob_invite)).stdout.decode()
        keys = [PublicIdentity.from_bytes(read_public_key(p / "identity.key")) for p in (alice, bob)]
        groups = safety_number(*keys).split()
        assert all(group in shown for group in groups)  # the 60 digits Bob sees too

        # meshchat send --profile ~/.alice --to Bob "Привет!"   (dials the address in Bob's invite)
        sent = await meshchat("send", "--profile", alice, "--to", "Bob", "Привет!")
        assert "delivered" in sent.stdout.decode(), sent.stdout.decode()
        # Bob's node prints the message ...
        direct = await bob_node.first("direct")
        assert _text(direct) == "Привет!" and direct["number"] == 1
        # ... and Alice's outbox shows his signed receipt: the one-shot send waited for it
        outbox = json.loads((await meshchat("outbox", "--profile", alice, "--json")).stdout)["outbox"]
        assert [(r["message_id"], r["status"]) for r in outbox] == [(direct["message_id"], "delivered")]
        assert "delivered" in (await meshchat("outbox", "--profile", alice)).stdout.decode()
        # meshchat inbox --profile ~/.bob --json   (what arrived, each exactly once)
        inbox = json.loads((await meshchat("inbox", "--profile", bob, "--json")).stdout)["inbox"]
        assert [(m["message_id"], m["text"]) for m in inbox] == [(direct["message_id"], "Привет!")]

        # Both ways: Bob adds Alice's invite, stops his node and chats on the same port.
        invited = await meshchat("invite", "--profile", alice)
        alice_invite = invited.stdout.decode().strip()
        # Alice's one-shot send listened nowhere, so it recorded no address for her invite to carry
        assert Invite.from_text(alice_invite).addrs == ()
        assert "warning: this invite has no address" in invited.stderr.decode()
        await meshchat("add", "--profile", bob, alice_invite)
        await bob_node.stop()
        address = f"/ip4/127.0.0.1/tcp/{_port(listening)}"
        bob_chat = await start("chat", "--profile", bob, "--to", "Alice", "--listen", address, "--json")
        assert (await bob_chat.first("listening"))["addrs"] == listening["addrs"]
        # meshchat chat --profile ~/.alice --to Bob   (dials him there)
        alice_chat = await start("chat", "--profile", alice, "--to", "Bob", "--json")
        await alice_chat.write_line("Как дела?".encode())
        await bob_chat.wait_for(lambda: bool(bob_chat.of("direct")))
        assert [(_text(e), e["contact"]) for e in bob_chat.of("direct")] == [("Как дела?", "Alice")]
        await bob_chat.write_line("Хорошо!".encode())
        await alice_chat.wait_for(lambda: bool(alice_chat.of("direct")))
        assert [(_text(e), e["contact"]) for e in alice_chat.of("direct")] == [("Хорошо!", "Bob")]
        await alice_chat.stop()
        await bob_chat.stop()
    inbox = json.loads((await meshchat("inbox", "--profile", bob, "--json")).stdout)["inbox"]
    assert [m["text"] for m in inbox] == ["Привет!", "Как дела?"]


async def test_a_send_while_bob_is_offline_is_delivered_by_alices_later_node(tmp_path: Path) -> None:
    """Alice sends while Bob's node is down: the message is queued; a later `meshchat node` of Alice
    (no --bootstrap) dials Bob at his invite's address once his node is back, and delivers it."""
    bob, alice = tmp_path / ".bob", tmp_path / ".alice"
    await meshchat("init", "--profile", bob, "--name", "Bob")
    await meshchat("init", "--profile", alice, "--name", "Alice")
    async with processes(tmp_path) as start:
        bob_node = await start("node", "--profile", bob, "--listen", "/ip4/127.0.0.1/tcp/0", "--json")
        listening = await bob_node.first("listening")
        await meshchat(
            "add", "--profile", alice, (await meshchat("invite", "--profile", bob)).stdout.decode()
        )
        await bob_node.stop()

        # An invite made now still carries the address, with a warning that no node listens there.
        stale = await meshchat("invite", "--profile", bob)
        assert "warning: no `meshchat node` or `meshchat chat` of this profile runs now" in " ".join(
            stale.stderr.decode().split()
        )
        assert Invite.from_text(stale.stdout.decode()).addrs == tuple(listening["addrs"])

        started = trio.current_time()
        offline = await meshchat("send", "--profile", alice, "--to", "Bob", "пока тебя не было", check=False)
        error = offline.stderr.decode()
        assert offline.returncode == 1, error
        assert "Bob could not be reached at the address in their invite" in error, error
        assert "queued in the outbox" in error and "`meshchat node` retries it" in error, error
        assert trio.current_time() - started < SEND_TIMEOUT  # said at once, not after the timeout
        outbox = json.loads((await meshchat("outbox", "--profile", alice, "--json")).stdout)["outbox"]
        assert [r["status"] for r in outbox] == ["queued"]

        address = f"/ip4/127.0.0.1/tcp/{_port(listening)}"
        bob_node = await start("node", "--profile", bob, "--listen", address, "--json")
        alice_node = await start("node", "--profile", alice, "--listen", "/ip4/127.0.0.1/tcp/0", "--json")
        await alice_node.wait_for(lambda: any(e["status"] == "delivered" for e in alice_node.of("status")))
        direct = bob_node.of("direct")
        assert [(_text(e), e["message_id"]) for e in direct] == [
            ("пока тебя не было", outbox[0]["message_id"])
        ]
        await alice_node.stop()
        await bob_node.stop()
    outbox = json.loads((await meshchat("outbox", "--profile", alice, "--json")).stdout)["outbox"]
    assert [r["status"] for r in outbox] == ["delivered"]


async def test_the_readme_relay_lobby_and_mailbox_commands(tmp_path: Path) -> None:
    """The README's second block: a relay node, a node on the lobby topic through it publishing stdin,
    a mailbox, Bob's invite naming it, Alice's send storing there while Bob is offline, `status` by
    12 hex digits; then Bob's node syncs from the mailbox and Alice's outbox turns `delivered`."""
    relay, x, box = tmp_path / ".relay", tmp_path / ".x", tmp_path / ".box"
    bob, alice = tmp_path / ".bob", tmp_path / ".alice"
    for profile in (relay, x, box, bob, alice):
        await meshchat("init", "--profile", profile, "--name", profile.name.removeprefix(".").capitalize())
    local = "/ip4/127.0.0.1/tcp/0"
    async with processes(tmp_path) as start:
        # meshchat node --profile ~/.relay --listen /ip4/0.0.0.0/tcp/4003 --relay --json
        relay_node = await start("node", "--profile", relay, "--listen", local, "--relay", "--json")
        relay_addr = (await relay_node.first("listening"))["addrs"][0]
        # meshchat node --profile ~/.x --bootstrap /ip4/…/tcp/4003/p2p/12D3KooW… --topic lobby --stdin --json
        x_node = await start(
            "node", "--profile", x, "--bootstrap", relay_addr, "--topic", "lobby", "--stdin", "--json"
        )
        assert (await x_node.first("peer_connected"))["peer"] == relay_addr.split("/p2p/")[1]
        await x_node.write_line(b"hello, lobby")
        assert (await x_node.first("published"))["topic"] == "lobby"

        # meshchat mailbox --profile ~/.box --listen /ip4/0.0.0.0/tcp/4002
        mailbox = await start("mailbox", "--profile", box, "--listen", local, "--json")
        box_addr = (await mailbox.first("listening"))["addrs"][0]
        # meshchat invite --profile ~/.bob --mailbox /ip4/…/tcp/4002/p2p/12D3KooW…
        invited = await meshchat("invite", "--profile", bob, "--mailbox", box_addr)
        assert "warning" not in invited.stderr.decode(), invited.stderr.decode()
        await meshchat("add", "--profile", alice, invited.stdout.decode().strip())
        # meshchat send --profile ~/.alice --to Bob --mailbox /ip4/…/tcp/4002/p2p/12D3KooW… "see you"
        sent = await meshchat(
            "send", "--profile", alice, "--to", "Bob", "--mailbox", box_addr, "--json", "see you"
        )
        message = json.loads(sent.stdout)
        assert message["status"] == "stored", message
        # meshchat status --profile ~/.alice 3fa2c1d0e9b8
        status = await meshchat("status", "--profile", alice, message["message_id"][:12])
        assert f"{message['message_id']} to Bob: stored" in status.stdout.decode()

        # Bob's node syncs from the mailbox (--mailbox ADDR: stores on, and syncs from, it)
        bob_node = await start("node", "--profile", bob, "--listen", local, "--mailbox", box_addr, "--json")
        direct = await bob_node.first("direct")
        assert (direct["message_id"], _text(direct)) == (message["message_id"], "see you")
        # Alice's node picks Bob's receipt up from the mailbox
        alice_node = await start(
            "node", "--profile", alice, "--listen", local, "--mailbox", box_addr, "--json"
        )
        await alice_node.wait_for(lambda: any(e["status"] == "delivered" for e in alice_node.of("status")))
        for running in (alice_node, bob_node, mailbox, x_node, relay_node):
            await running.stop()
    status = await meshchat("status", "--profile", alice, "--json", message["message_id"][:12])
    assert json.loads(status.stdout)["status"] == "delivered"
