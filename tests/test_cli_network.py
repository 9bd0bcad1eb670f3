"""``meshchat node``, ``chat``, ``send`` and ``invite`` run as a user runs them (processes on 127.0.0.1):
lines go out in the order typed, an over-long line is refused once and nothing of it is sent, and an
invite says when it carries no address, as ``send`` does when nothing can carry a message now.

The line splitter under ``--stdin`` and ``chat`` is tested alone first (sans-IO, no process).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from processes import JsonLinesProcess

from meshchat.cli.common import (
    ADDRESSES_FILE,
    MAX_RECORDED_ADDRESS_LENGTH,
    MAX_RECORDED_ADDRESSES,
    PASSPHRASE_ENV,
    PROFILE_ENV,
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

        async def start(*args: str | Path, stderr: Path | None = None) -> JsonLinesProcess:
            with open(os.devnull if stderr is None else stderr, "wb") as err:  # noqa: ASYNC230 (a local file)
                process = await trio.lowlevel.open_process(
                    [*MESHCHAT, *map(str, args)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=_env(),
                )
            started.append(process)
            events = JsonLinesProcess(process)
            nursery.start_soon(events.read_events)
            await events.first("listening")
            return events

        try:
            yield start
        finally:
            for process in started:
                if process.returncode is None:
                    process.kill()
            with trio.move_on_after(WAIT) as scope:
                scope.shield = True
                for process in started:
                    await process.wait()
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
    started = time.monotonic()
    sent = await meshchat("send", "--profile", alice, "--to", "Bob", "hello", check=False)
    took = time.monotonic() - started
    error = sent.stderr.decode()
    assert sent.returncode == 1, error
    assert error.startswith("error: send to Bob: Bob's invite has no address and no mailbox")
    assert "queued in the outbox" in error and "`meshchat node` retries it" in error
    assert took < 15, took  # it did not wait out SEND_TIMEOUT (15 s) first
    outbox = json.loads((await meshchat("outbox", "--profile", alice, "--json")).stdout)["outbox"]
    assert [r["status"] for r in outbox] == ["queued"]


async def test_invite_carries_the_addresses_a_running_node_recorded_and_send_delivers(
    tmp_path: Path,
) -> None:
    """Bob's node is running and (as ``Node`` does) recorded its addresses: a plain `meshchat invite`
    carries them, and Alice's one-shot `send` reaches Bob's chat with no --addr anywhere."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    await init(alice, "Alice")
    await init(bob, "Bob")
    await add(bob, (await meshchat("invite", "--profile", alice)).stdout)
    async with processes() as start:
        bob_chat = await start("chat", "--profile", bob, "--to", "Alice", "--json", "--listen", LOCAL)
        addrs = (await bob_chat.first("listening"))["addrs"]
        if not (bob / ADDRESSES_FILE).exists():  # written by Node itself once that lands
            (bob / ADDRESSES_FILE).write_text(json.dumps({"addrs": addrs, "written_at": time.time()}))
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
