"""``meshchat node``, ``chat``, ``send`` and ``invite`` run as a user runs them (processes on 127.0.0.1):
lines go out in the order typed, an over-long line is refused once and nothing of it is sent, and an
invite says when it carries no address, as ``send`` does when nothing can carry a message now.

The line splitter under ``--stdin`` and ``chat`` is tested alone first (sans-IO, no process).
"""

from __future__ import annotations

import base64
import json
import os
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

from meshchat.cli.common import (
    ADDRESSES_FILE,
    MAX_RECORDED_ADDRESS_LENGTH,
    MAX_RECORDED_ADDRESSES,
    PASSPHRASE_ENV,
    PROFILE_ENV,
    ProfileHolder,
    profile_holder,
    read_recorded_addresses,
)
from meshchat.cli.runner import MAX_STDIN_LINE, Line, LineSplitter, LineTooLong
from meshchat.identity import Identity
from meshchat.wire import Invite, message_id
from meshchat.wire.invite import MAX_ADDR_LENGTH, MAX_ADDRS

MESHCHAT = [sys.executable, "-m", "meshchat"]
LOCAL = "/ip4/127.0.0.1/tcp/0"
#: Seconds any one wait on a process may take.
WAIT = 30.0
#: The over-long line piped in: the size the issue reported.
HUGE = 1_000_000


# --- the line splitter ------------------------------------------------------------------------------


def test_lines_split_across_chunks_and_crlf_is_one_ending() -> None:
    splitter = LineSplitter(10)
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\r\nde\nf") == [Line(data=b"abc"), Line(data=b"de")]
    assert splitter.finish() == [Line(data=b"f")]
    assert splitter.finish() == []


def test_an_over_long_line_is_refused_once_whole_and_the_next_line_is_intact() -> None:
    splitter = LineSplitter(10)
    out: list[Line | LineTooLong] = []
    for _ in range(100):  # the line arrives in many chunks, each under the limit
        out += splitter.feed(b"x" * 7)
    out += splitter.feed(b"tail\nnext\n")
    assert out == [LineTooLong(size=704), Line(data=b"next")]


def test_a_line_of_exactly_the_limit_passes_and_one_more_byte_is_refused() -> None:
    splitter = LineSplitter(10)
    assert splitter.feed(b"x" * 10 + b"\r\n" + b"y" * 11 + b"\n") == [
        Line(data=b"x" * 10),
        LineTooLong(size=11),
    ]
    assert splitter.feed(b"z" * 50) == []
    assert splitter.finish() == [LineTooLong(size=50)]


# --- processes ------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, PROFILE_ENV)}
    return {**env, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}


async def meshchat(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run one ``meshchat`` command to its end."""
    with trio.fail_after(WAIT + 10):
        result = await trio.run_process(
            [*MESHCHAT, *map(str, args)], capture_stdout=True, capture_stderr=True, check=False, env=_env()
        )
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


async def init(profile: Path, name: str) -> None:
    await meshchat("init", "--profile", profile, "--name", name, "--insecure-no-passphrase")


async def add(profile: Path, token: bytes) -> None:
    await meshchat("add", "--profile", profile, token.decode().strip())


@asynccontextmanager
async def processes() -> AsyncIterator[Callable[..., Any]]:
    """A ``start(*args)`` that launches ``meshchat`` processes reading stdin and printing JSON events;
    every one is killed and reaped at the end, whatever happens."""
    started: list[trio.Process] = []
    async with trio.open_nursery() as nursery:

        async def start(
            *args: str | Path, stderr: Path | None = None, env: dict[str, str] | None = None
        ) -> JsonLinesProcess:
            with open(os.devnull if stderr is None else stderr, "wb") as err:  # noqa: ASYNC230 (a local file)
                process = await trio.lowlevel.open_process(
                    [*MESHCHAT, *map(str, args)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=_env() if env is None else env,
                )
            started.append(process)
            events = JsonLinesProcess(process)
            nursery.start_soon(events.read_events)
            await events.first("listening")
            return events

        try:
            yield start
        finally:
            await stop_processes(started)
            nursery.cancel_scope.cancel()


def of(events: JsonLinesProcess, kind: str) -> list[dict[str, Any]]:
    return [e for e in events.events if e["event"] == kind]


async def pipe_huge_line_then(events: JsonLinesProcess, line: bytes) -> None:
    """Write a ``HUGE``-byte line, then ``line``, then close standard input; wait until it was read."""
    assert events.process.stdin is not None
    await events.process.stdin.send_all(b"A" * (HUGE - 16_960) + b"B" * 16_960 + b"\n" + line + b"\n")
    await events.process.stdin.aclose()
    await events.first("stdin_closed")


async def test_node_stdin_refuses_a_1_mb_line_once_and_publishes_none_of_it(tmp_path: Path) -> None:
    await init(tmp_path / "p", "P")
    async with processes() as start:
        node = await start(
            "node", "--profile", tmp_path / "p", "--json", "--listen", LOCAL, "--topic", "t", "--stdin"
        )
        await pipe_huge_line_then(node, b"short")
        refused = of(node, "refused")
        assert len(refused) == 1 and refused[0]["size"] == HUGE and refused[0]["limit"] == MAX_STDIN_LINE
        assert [e["message_id"] for e in of(node, "published")] == [message_id(b"short").hex()]


async def test_chat_refuses_a_1_mb_line_once_and_sends_none_of_it(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    await init(alice, "Alice")
    await init(bob, "Bob")
    await add(alice, (await meshchat("invite", "--profile", bob)).stdout)
    async with processes() as start:
        errors = tmp_path / "stderr"
        chat = await start(
            "chat", "--profile", alice, "--to", "Bob", "--json", "--listen", LOCAL, stderr=errors
        )
        await pipe_huge_line_then(chat, "Сәлам".encode())
        # Bob's invite has no address: chat says so at the start (stderr: stdout stays JSON).
        assert "warning: Bob's invite has no address and no mailbox" in errors.read_text()
        assert len(of(chat, "refused")) == 1 and of(chat, "refused")[0]["size"] == HUGE
        sent = [base64.b64decode(e["data"]).decode() for e in of(chat, "sent")]
        assert sent == ["Сәлам"]  # on the old code: 15 refusals, then the line's last 16,960 bytes
    outbox = json.loads((await meshchat("outbox", "--profile", alice, "--json")).stdout)["outbox"]
    assert len(outbox) == 1


async def test_chat_lines_typed_before_the_connection_arrive_in_order(tmp_path: Path) -> None:
    """Six lines piped into Alice's chat at once, before she is connected to Bob: Bob gets them in the
    order typed (the old code delivered them in the order its dial tasks woke: often newest first)."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    await init(alice, "Alice")
    await init(bob, "Bob")
    await add(bob, (await meshchat("invite", "--profile", alice)).stdout)
    lines = [f"line {i}" for i in range(6)]
    async with processes() as start:
        bob_chat = await start("chat", "--profile", bob, "--to", "Alice", "--json", "--listen", LOCAL)
        address = (await bob_chat.first("listening"))["addrs"][0].split("/p2p/")[0]
        await add(alice, (await meshchat("invite", "--profile", bob, "--addr", address)).stdout)
        alice_chat = await start("chat", "--profile", alice, "--to", "Bob", "--json", "--listen", LOCAL)
        assert alice_chat.process.stdin is not None
        await alice_chat.process.stdin.send_all("".join(f"{line}\n" for line in lines).encode())
        await bob_chat.wait_for(lambda: len(of(bob_chat, "direct")) >= len(lines))
        got = [base64.b64decode(e["data"]).decode() for e in of(bob_chat, "direct")]
        assert got == lines
        assert [e["seq"] for e in of(bob_chat, "direct")] == [1, 2, 3, 4, 5, 6]


# --- invites and addresses ------------------------------------------------------------------------


def test_recorded_addresses_tolerate_a_missing_or_malformed_file(tmp_path: Path) -> None:
    assert read_recorded_addresses(tmp_path) == []
    path = tmp_path / ADDRESSES_FILE
    for bad in (b"", b"{", b"[]", b'{"addrs": "x"}', b"\xff\xfe", b'{"addrs": [1, null]}'):
        path.write_bytes(bad)
        assert read_recorded_addresses(tmp_path) == []
    good = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWAbc"
    junk = [7, "not an address", "/ip4/1.2.3.4/tcp/1 x", "/\x1b[31m", "/" + "a" * 300, "/ip4/é"]
    path.write_text(json.dumps({"addrs": [good, *junk], "written_at": 1}))
    assert read_recorded_addresses(tmp_path) == [good]
    many = [f"/ip4/127.0.0.{i}/tcp/4001" for i in range(20)]
    path.write_text(json.dumps({"addrs": many, "written_at": 1}))
    assert read_recorded_addresses(tmp_path) == many[:MAX_ADDRS]  # what one invite carries
    Invite.create(Identity.generate(), addrs=tuple(read_recorded_addresses(tmp_path)))  # and it does
    assert (MAX_RECORDED_ADDRESSES, MAX_RECORDED_ADDRESS_LENGTH) == (MAX_ADDRS, MAX_ADDR_LENGTH)


async def test_an_invite_without_address_warns_and_send_to_it_says_why_at_once(tmp_path: Path) -> None:
    """The README's flow taken literally: Bob runs `invite` with no node running and no --addr."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    await init(alice, "Alice")
    await init(bob, "Bob")
    invited = await meshchat("invite", "--profile", bob)
    warning = invited.stderr.decode()
    assert "warning: this invite has no address" in warning
    assert "meshchat node" in warning and "--addr" in warning and "--mailbox" in warning
    assert invited.stdout.decode().startswith("MESHCHAT:")  # the token is still printed, alone
    await add(alice, invited.stdout)
    sent = await meshchat("send", "--profile", alice, "--to", "Bob", "hello", check=False)
    error = sent.stderr.decode()
    assert sent.returncode == 1, error
    # with no route, send waits for nothing (after a wait the error would name SEND_TIMEOUT instead)
    assert error.startswith("error: send to Bob: Bob's invite has no address and no mailbox")
    assert "queued in the outbox" in error and "`meshchat node` retries it" in error
    outbox = json.loads((await meshchat("outbox", "--profile", alice, "--json")).stdout)["outbox"]
    assert [r["status"] for r in outbox] == ["queued"]


async def test_invite_carries_the_addresses_a_running_node_recorded_and_send_delivers(
    tmp_path: Path,
) -> None:
    """Bob's chat is running and its node recorded its addresses in ``addresses.json``: a plain
    `meshchat invite` carries them, and Alice's one-shot `send` reaches Bob's chat with no --addr
    anywhere."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    await init(alice, "Alice")
    await init(bob, "Bob")
    await add(bob, (await meshchat("invite", "--profile", alice)).stdout)
    async with processes() as start:
        bob_chat = await start("chat", "--profile", bob, "--to", "Alice", "--json", "--listen", LOCAL)
        addrs = (await bob_chat.first("listening"))["addrs"]
        recorded = json.loads((bob / ADDRESSES_FILE).read_text())["addrs"]  # the node's own file
        assert recorded == addrs  # listening on 127.0.0.1: nothing to expand
        invited = await meshchat("invite", "--profile", bob, "--json")
        assert "warning" not in invited.stderr.decode()
        assert "With the addresses this profile's node recorded" in invited.stderr.decode()
        assert json.loads(invited.stdout)["addrs"] == read_recorded_addresses(bob)
        await add(alice, json.loads(invited.stdout)["token"].encode())
        sent = json.loads((await meshchat("send", "--profile", alice, "--to", "Bob", "--json", "hi")).stdout)
        direct = await bob_chat.first("direct")
        assert direct["message_id"] == sent["message_id"]
        assert base64.b64decode(direct["data"]) == b"hi"


@pytest.mark.parametrize("flag", ["--addr", "--mailbox"])
async def test_an_invite_given_an_address_or_mailbox_does_not_warn(tmp_path: Path, flag: str) -> None:
    await init(tmp_path / "p", "P")
    address = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
    invited = await meshchat("invite", "--profile", tmp_path / "p", flag, address)
    assert "warning" not in invited.stderr.decode()


# --- the profile lock and resuming the event stream -------------------------------------------------


@pytest.mark.parametrize("command", ["node", "chat", "send", "mailbox"])
async def test_a_busy_profile_is_refused_before_the_passphrase_naming_the_holder(
    tmp_path: Path, command: str
) -> None:
    """A node holds Bob's (passphrase-protected) profile; a second command on it is refused at once,
    naming the holder's PID, without asking for the passphrase (none is given here and there is no
    terminal: the old code failed with "a passphrase is needed" instead)."""
    bob = tmp_path / "bob"
    env = {**_env(), PASSPHRASE_ENV: "pw"}
    await trio.run_process(
        [*MESHCHAT, "init", "--profile", str(bob), "--name", "Bob"], env=env, capture_stdout=True
    )
    async with processes() as start:
        holder = await start("node", "--profile", bob, "--json", "--listen", LOCAL, env=env)
        assert profile_holder(bob) == ProfileHolder(pid=holder.process.pid)
        args = {"node": [], "chat": ["--to", "Alice"], "send": ["--to", "Alice", "hi"], "mailbox": []}
        refused = await meshchat(command, "--profile", bob, "--listen", LOCAL, *args[command], check=False)
        error = refused.stderr.decode()
        assert refused.returncode == 1, error
        assert error.strip() == (
            f"error: profile {bob} is in use by process {holder.process.pid}; "
            "stop it first or use another profile"
        )
    assert profile_holder(bob) is None  # the holder is gone: the lock with it


async def test_node_events_after_replays_the_messages_a_script_had_not_handled(tmp_path: Path) -> None:
    """Bob's node prints two messages (numbers 1 and 2); a script handled only number 1 when it stopped.
    `meshchat node --events-after 1` prints number 2 again, once, before live events; without the
    option nothing old is printed."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    await init(alice, "Alice")
    await init(bob, "Bob")
    async with processes() as start:
        bob_node = await start("node", "--profile", bob, "--json", "--listen", LOCAL)
        await add(alice, (await meshchat("invite", "--profile", bob)).stdout)
        for text in ("one", "two"):
            await meshchat("send", "--profile", alice, "--to", "Bob", text)
        await bob_node.wait_for(lambda: len(of(bob_node, "direct")) == 2)
        assert [(e["number"], base64.b64decode(e["data"])) for e in of(bob_node, "direct")] == [
            (1, b"one"),
            (2, b"two"),
        ]
        await stop(bob_node)
        resumed = await start("node", "--profile", bob, "--json", "--listen", LOCAL, "--events-after", "1")
        await resumed.first("direct")
        await stop(resumed)
        assert [(e["number"], base64.b64decode(e["data"])) for e in of(resumed, "direct")] == [(2, b"two")]
        fresh = await start("node", "--profile", bob, "--json", "--listen", LOCAL)
        await stop(fresh)
        assert of(fresh, "direct") == []


async def stop(events: JsonLinesProcess) -> None:
    """Ctrl-C by PID; wait (bounded) until it printed ``stopped`` and exited 0."""
    events.process.send_signal(signal.SIGINT)
    with trio.fail_after(WAIT):
        await events.process.wait()
    assert events.process.returncode == 0
    assert of(events, "stopped")


async def test_a_node_stopped_as_soon_as_it_printed_listening_stops_cleanly(tmp_path: Path) -> None:
    """A script that sends SIGINT the moment it reads ``listening`` gets ``stopped`` and exit 0 (the old
    code installed its signal handler after joining topics: exit 130 and a KeyboardInterrupt)."""
    await init(tmp_path / "p", "P")
    async with processes() as start:
        for _ in range(3):
            topics = [arg for i in range(8) for arg in ("--topic", f"t{i}")]
            node = await start("node", "--profile", tmp_path / "p", "--json", "--listen", LOCAL, *topics)
            await stop(node)
