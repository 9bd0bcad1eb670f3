"""``meshchat group ...`` and ``meshchat chat --group`` run as a user runs them: real ``meshchat``
processes on 127.0.0.1, a passphrase in ``$MESHCHAT_PASSPHRASE``, profiles in a temporary folder.

Alice creates a group with Bob while Bob's node runs: his node prints the invitation; he stops it,
accepts (``group join``), and chats in the group (``chat --group``); Alice's one-shot ``group send``
arrives there and is reported delivered; both histories hold it; a non-admin's removal and an
unknown group fail with an ``error:`` line; Alice's removal of Bob reaches his running node. Every
process is stopped by its PID and reaped; every wait is bounded.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from processes import JsonLinesProcess, stop_processes

from meshchat.cli.common import LIBP2P_LOG_ENV, PASSPHRASE_ENV, PROFILE_ENV
from meshchat.cli.group_events import describe_group_event
from meshchat.cli.runner import SEND_TIMEOUT, _ChatPrinter, _Printer
from meshchat.groups.core import GroupsCore
from meshchat.groups.events import GroupChanged, GroupInvited, GroupMessage, GroupStatus
from meshchat.groups.ops import OpKind
from meshchat.groups.sqlite import GROUPS_FILE, SqliteGroupStorage
from meshchat.identity import Identity, PublicIdentity, load_identity, read_public_key
from meshchat.store.encrypted import store_key

MESHCHAT = [sys.executable, "-m", "meshchat"]
PASSPHRASE = "correct horse battery staple"
LOCAL = "/ip4/127.0.0.1/tcp/0"
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


async def json_of(*args: str | Path) -> Any:
    """The one JSON object a ``--json`` command printed."""
    return json.loads((await meshchat(*args, "--json")).stdout)


class Running(JsonLinesProcess):
    """A long-running ``meshchat`` process (``node``, ``chat``) whose stderr goes to a file."""

    def __init__(self, process: trio.Process, stderr: Path) -> None:
        super().__init__(process)
        self.stderr = stderr

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    async def next(self, kind: str) -> dict[str, Any]:
        """The first event of ``kind`` (waiting, bounded)."""
        await self.wait_for(lambda: bool(self.of(kind)))
        return self.of(kind)[0]

    async def stop(self) -> None:
        """Ctrl-C by PID; wait (bounded) for it to exit 0."""
        self.process.send_signal(signal.SIGINT)
        with trio.fail_after(WAIT):
            await self.process.wait()
        assert self.process.returncode == 0, self.stderr.read_text()


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


def _port(listening: dict[str, Any]) -> str:
    match = re.match(r"/ip4/127\.0\.0\.1/tcp/(\d+)/p2p/", listening["addrs"][0])
    assert match is not None, listening
    return match.group(1)


def _peer(profile: Path) -> str:
    return PublicIdentity.from_bytes(read_public_key(profile / "identity.key")).peer_id


async def test_create_invite_join_chat_send_history_remove(tmp_path: Path) -> None:
    alice, bob = tmp_path / ".alice", tmp_path / ".bob"
    await meshchat("init", "--profile", alice, "--name", "Alice")
    await meshchat("init", "--profile", bob, "--name", "Bob")
    # (a running node reads its contacts when it starts: Bob adds Alice first)
    await meshchat("add", "--profile", bob, (await meshchat("invite", "--profile", alice)).stdout.decode())
    async with processes(tmp_path) as start:
        bob_node = await start("node", "--profile", bob, "--listen", LOCAL, "--json")
        listening = await bob_node.first("listening")
        address = f"/ip4/127.0.0.1/tcp/{_port(listening)}"
        bob_invite = (await meshchat("invite", "--profile", bob)).stdout.decode()
        await meshchat("add", "--profile", alice, bob_invite)

        # Alice creates the group with Bob: the invitation reaches his running node.
        created = await json_of("group", "create", "Family", "--member", "Bob", "--profile", alice)
        assert created["event"] == "create"
        group = created["group"]
        group_id = group["group_id"]
        assert group["name"] == "Family" and group["status"] == "joined"
        assert [(m["contact"], m["admin"], m["me"]) for m in group["members"]] == [
            (None, True, True),
            ("Bob", False, False),
        ]
        # (his receipt normally comes back within RECEIPT_WAIT: "delivered"; "relayed" if slower)
        assert [(c["contact"], c["status"] in ("relayed", "delivered")) for c in created["controls"]] == [
            ("Bob", True)
        ]
        invited = await bob_node.next("group_invited")
        assert (invited["group_id"], invited["name"], invited["by_contact"]) == (group_id, "Family", "Alice")

        # Reads work while the node runs, without the network: Bob is invited, not joined yet.
        listed = await json_of("group", "list", "--profile", bob)
        assert [(g["group_id"], g["status"], g["members"]) for g in listed["groups"]] == [
            (group_id, "invited", 2)
        ]
        # An unknown group: exit 1 and one error line.
        unknown = await meshchat("group", "history", "Nope", "--profile", bob, check=False)
        assert unknown.returncode == 1 and unknown.stdout == b""
        assert unknown.stderr.decode().strip() == "error: unknown group: Nope"

        # Bob stops his node and accepts by id prefix (local), then fails to remove the admin.
        await bob_node.stop()
        joined = await json_of("group", "join", group_id[:12], "--profile", bob)
        assert (joined["group_id"], joined["status"]) == (group_id, "joined")
        refused = await meshchat("group", "remove", "Family", "Alice", "--profile", bob, check=False)
        error = refused.stderr.decode()
        assert refused.returncode == 1 and refused.stdout == b"", error
        assert re.fullmatch(r"error: REMOVE by [0-9a-f]{16}… refused: the author is not an admin\n", error)

        # Bob chats in the group on his old address (Alice's contact has it); Alice's send arrives.
        bob_chat = await start("chat", "--profile", bob, "--group", "Family", "--listen", address, "--json")
        sent = await json_of("group", "send", "Family", "dinner at 8", "--profile", alice)
        assert (sent["status"], sent["delivered"]) == ("delivered to 1 of 1", 1), sent
        message = await bob_chat.next("group_message")
        assert (message["contact"], message["group"]) == ("Alice", "Family")
        assert (message["message_id"], message["group_id"]) == (sent["message_id"], group_id)
        assert base64.b64decode(message["data"]) == b"dinner at 8"
        await bob_chat.write_line(b"I'll bring bread")
        mine = await bob_chat.next("group_sent")
        await bob_chat.stop()

        bob_history = await json_of("group", "history", "Family", "--profile", bob)
        assert [(m["text"], m["contact"], m["message_id"]) for m in bob_history["history"]] == [
            ("dinner at 8", "Alice", sent["message_id"]),
            ("I'll bring bread", None, mine["message_id"]),
        ]
        alice_history = await json_of("group", "history", group_id, "--profile", alice)
        assert [(m["text"], m["sender"]) for m in alice_history["history"]] == [("dinner at 8", _peer(alice))]
        after = await json_of("group", "history", "Family", "--profile", bob, "--after", "1")
        assert [m["text"] for m in after["history"]] == ["I'll bring bread"]

        # Bob's chat again, replaying what came after #1; Alice removes him: his chat prints it.
        bob_chat = await start(
            "chat",
            "--profile",
            bob,
            "--group",
            group_id[:8],
            "--listen",
            address,
            "--events-after",
            "1",
            "--json",
        )
        replayed = await bob_chat.next("group_message")
        assert (replayed["number"], replayed["message_id"]) == (2, mine["message_id"])
        removed = await json_of("group", "remove", "Family", "Bob", "--profile", alice)
        assert [(m["contact"], m["admin"]) for m in removed["group"]["members"]] == [(None, True)]
        change = await bob_chat.next("group_changed")
        assert (change["change"], change["author_contact"], change["targets"]) == (
            "remove",
            "Alice",
            [_peer(bob)],
        )
        await bob_chat.stop()
        assert [e["number"] for e in bob_chat.of("group_message")] == [2]
    members = await json_of("group", "members", "Family", "--profile", bob)
    assert members["status"] == "removed"
    text = (await meshchat("group", "members", "Family", "--profile", alice)).stdout.decode()
    assert "admin" in text and "you" in text and "Bob" not in text


async def test_a_create_nobody_can_carry_fails_at_once_and_stays_queued(tmp_path: Path) -> None:
    """Bob's invite has no address and no mailbox, and no --bootstrap or --mailbox is given: the
    group is made, its invitation waits in the outbox, and the command says so at once (exit 1)."""
    alice, bob = tmp_path / ".alice", tmp_path / ".bob"
    await meshchat("init", "--profile", alice, "--name", "Alice")
    await meshchat("init", "--profile", bob, "--name", "Bob")
    await meshchat("add", "--profile", alice, (await meshchat("invite", "--profile", bob)).stdout.decode())
    started = trio.current_time()
    failed = await meshchat(
        "group", "create", "Book club", "-m", "Bob", "--profile", alice, "--json", check=False
    )
    error = " ".join(failed.stderr.decode().split())
    assert failed.returncode == 1 and failed.stdout == b"", error
    assert (
        error.startswith("error: create Book club (")
        and "1 control message(s) to Bob wait in the outbox" in error
    )
    assert "`meshchat node` on this profile sends what waits" in error
    assert trio.current_time() - started < SEND_TIMEOUT
    listed = await json_of("group", "list", "--profile", alice)
    assert [(g["name"], g["status"], g["members"]) for g in listed["groups"]] == [("Book club", "joined", 2)]
    outbox = (await json_of("outbox", "--profile", alice))["outbox"]
    assert [(r["to_name"], r["status"]) for r in outbox] == [("Bob", "queued")]


async def test_bad_command_lines_fail_before_any_work(tmp_path: Path) -> None:
    alice = tmp_path / ".alice"
    await meshchat("init", "--profile", alice, "--name", "Alice")
    for args, expected in [
        (("group", "create", ""), "error: group name must be 1 to 64 utf-8 bytes, not 0"),
        (("group", "create", "a\x1bb"), "error: group name contains the control character U+001B"),
        (("chat", "--to", "Bob", "--group", "Family"), "error: give one of --to CONTACT or --group GROUP"),
        (("chat",), "error: give one of --to CONTACT or --group GROUP"),
    ]:
        result = await meshchat(*args, "--profile", alice, check=False)
        assert (result.returncode, result.stderr.decode().strip()) == (2, expected), args
    # Reads of a profile that never had a group: empty, and no groups.db made for it.
    assert await json_of("group", "list", "--profile", alice) == {"groups": []}
    assert not (alice / "groups.db").exists()


# --- printing (no processes) ----------------------------------------------------------------------


class _Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, object]]] = []

    def event(self, kind: str, text: str, **fields: object) -> None:
        self.lines.append((kind, text, fields))


def test_group_events_print_names_and_peer_ids_and_ignore_other_events() -> None:
    alice, bob = Identity.generate().public, Identity.generate().public
    names = {bob.peer_id: "Bob"}
    gid = bytes(range(32))
    printer = _Lines()
    events = [
        GroupMessage(
            group_id=gid,
            number=7,
            sender=bob.ed25519,
            body=b"hi",
            ref="r",
            sent_at_ms=5,
            message_id=b"\x01" * 32,
        ),
        GroupChanged(
            group_id=gid, kind=OpKind.REMOVE, author=alice.ed25519, targets=(bob.ed25519,), name="Fam"
        ),
        GroupChanged(group_id=gid, kind=OpKind.RENAME, author=bob.ed25519, targets=(), name="Family"),
        GroupInvited(group_id=gid, name="Fam", by=bob.ed25519),
        GroupStatus(group_id=gid, message_id=b"\x02" * 32, stored=1, delivered=2, read=1, members=3),
    ]
    for event in events:
        assert describe_group_event(event, printer, names=names, group_name=lambda g: "Fam")
    assert not describe_group_event(object(), printer, names=names, group_name=lambda g: "Fam")
    (k1, t1, f1), (k2, t2, f2), (k3, t3, _), (k4, t4, f4), (k5, t5, f5) = printer.lines
    assert (k1, t1) == ("group_message", "[Fam] Bob: hi")
    assert f1 == {
        "group_id": gid.hex(),
        "group": "Fam",
        "number": 7,
        "message_id": "01" * 32,
        "sender": bob.peer_id,
        "contact": "Bob",
        "ref": "r",
        "sent_at_ms": 5,
        "data": "aGk=",
    }
    assert (k2, t2) == ("group_changed", f"[Fam] …{alice.peer_id[-12:]} removed Bob")
    assert (f2["change"], f2["author"], f2["author_contact"], f2["targets"]) == (
        "remove",
        alice.peer_id,
        None,
        [bob.peer_id],
    )
    assert (k3, t3) == ("group_changed", "[Fam] Bob renamed the group to Family")
    assert k4 == "group_invited" and t4.endswith(f"accept with: meshchat group join {gid.hex()[:16]}")
    assert (f4["by"], f4["by_contact"], f4["name"]) == (bob.peer_id, "Bob", "Fam")
    assert (k5, t5, f5["status"], f5["delivered"]) == (
        "group_status",
        f"[Fam] {'02' * 8} delivered to 2 of 3, read by 1",
        "delivered to 2 of 3, read by 1",
        2,
    )


def test_a_hostile_group_name_or_message_cannot_drive_the_terminal() -> None:
    bob = Identity.generate().public
    event = GroupMessage(
        group_id=b"\x00" * 32,
        number=1,
        sender=bob.ed25519,
        body=b"\x1b]0;pwned\x07x\n[bold]y",
        ref="",
        sent_at_ms=0,
        message_id=b"\x00" * 32,
    )
    for make in (lambda out: _Printer(out, json_lines=False), _ChatPrinter):
        out = io.StringIO()
        describe_group_event(
            event, make(out), names={bob.peer_id: "[red]B\u202eob"}, group_name=lambda g: "\x1b[2J"
        )
        text = out.getvalue()
        assert text.count("\n") == 1 and "\x1b" not in text and "\u202e" not in text, text
        assert "[bold]y" in text and "[red]B\\u202eob" in text, text
    out = io.StringIO()
    describe_group_event(event, _Printer(out, json_lines=True), names={}, group_name=lambda g: "\x1b[2J")
    line = json.loads(out.getvalue())
    assert (line["group"], base64.b64decode(line["data"])) == ("\x1b[2J", event.body)


async def test_a_group_message_waits_on_a_mailbox_for_a_member_who_is_offline(tmp_path: Path) -> None:
    """With --mailbox, `group send` returns once the mailbox stored the envelope ("stored"), Bob's
    node being down; his next node fetches it (and Alice's chain handout) from the mailbox."""
    alice, bob, box = tmp_path / ".alice", tmp_path / ".bob", tmp_path / ".box"
    for profile, name in ((alice, "Alice"), (bob, "Bob"), (box, "Box")):
        await meshchat("init", "--profile", profile, "--name", name)
    await meshchat("add", "--profile", bob, (await meshchat("invite", "--profile", alice)).stdout.decode())
    async with processes(tmp_path) as start:
        mailbox = await start("mailbox", "--profile", box, "--listen", LOCAL, "--json")
        box_addr = (await mailbox.first("listening"))["addrs"][0]
        bob_node = await start("node", "--profile", bob, "--listen", LOCAL, "--mailbox", box_addr, "--json")
        invite = (await meshchat("invite", "--profile", bob, "--mailbox", box_addr)).stdout.decode()
        await meshchat("add", "--profile", alice, invite)
        created = await json_of(
            "group", "create", "Family", "-m", "Bob", "--mailbox", box_addr, "--profile", alice
        )
        assert [c["status"] in ("stored", "delivered") for c in created["controls"]] == [True], created
        await bob_node.next("group_invited")
        await bob_node.stop()
        await json_of("group", "join", "Family", "--profile", bob)

        sent = await json_of(
            "group", "send", "Family", "while you were out", "--mailbox", box_addr, "--profile", alice
        )
        assert (sent["status"], sent["stored"], sent["delivered"]) == ("stored", 1, 0), sent
        bob_node = await start("node", "--profile", bob, "--listen", LOCAL, "--mailbox", box_addr, "--json")
        message = await bob_node.next("group_message")
        assert (message["message_id"], message["contact"]) == (sent["message_id"], "Alice")
        assert base64.b64decode(message["data"]).decode() == "while you were out"
        await bob_node.stop()


def test_the_reads_load_no_network_stack(tmp_path: Path) -> None:
    """`group history | members | list` read groups.db without trio or py-libp2p (fast start-up)."""
    profile = tmp_path / ".alice"
    subprocess.run(
        [*MESHCHAT, "init", "--profile", str(profile), "--insecure-no-passphrase"],
        env=_env(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    identity = load_identity(profile / "identity.key", None)
    with SqliteGroupStorage(profile / GROUPS_FILE, key=store_key(identity)) as storage:
        core = GroupsCore(identity, storage, wall_now=time.time())
        group_id, _ = core.create("Fam", [], wall_now=time.time())
        core.send(group_id, "Привет".encode(), wall_now=time.time())
    heavy = ("trio", "libp2p", "meshchat.node", "meshchat.net")
    for command in (["history", "Fam"], ["members", group_id.hex()[:10]], ["list"]):
        code = (
            "import json, sys\n"
            "from meshchat.cli import main\n"
            f"sys.argv = ['meshchat', 'group', *{command!r}, '--profile', {str(profile)!r}, '--json']\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            encoding="utf-8",
            env=_env(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        printed, loaded = result.stdout.splitlines()
        assert json.loads(loaded) == [], command
        if command[0] == "history":
            assert [m["text"] for m in json.loads(printed)["history"]] == ["Привет"]
        if command[0] == "members":
            assert json.loads(printed)["members"] == [
                {"peer_id": identity.public.peer_id, "contact": None, "admin": True, "me": True}
            ]
