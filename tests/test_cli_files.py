"""``meshchat send --file``, ``meshchat files [--fetch N]`` and the file lines of ``meshchat node``, run
as a user runs them: real ``meshchat`` processes on 127.0.0.1, a passphrase in
``$MESHCHAT_PASSPHRASE``, profiles in a temporary folder.

Alice sends Bob's running node a photo whose name carries an escape sequence and a right-to-left
override (Linux lets a file be called that): his node prints it and fetches it on its own into his
downloads folder, under ``safe_name``; ``files`` lists it exactly in JSON and harmlessly as text. A
file over the automatic size waits: Alice's send gives up after ``--timeout`` saying how far it got,
her ``meshchat node`` then serves it and Bob's ``files --fetch`` brings it in byte-identical. Every
process is stopped by its PID and reaped; every wait is bounded.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from test_cli_group import LOCAL, _env, _peer, json_of, meshchat, processes

from meshchat.cli.file_runner import wire_size
from meshchat.cli.files import describe_file_event, human_size
from meshchat.cli.runner import _ChatPrinter, _Printer
from meshchat.files.chunks import CHUNK_SIZE, build_index, cut
from meshchat.files.events import Attachment, AttachmentFetched, FileProblem
from meshchat.files.manifest import Manifest
from meshchat.files.names import safe_name
from meshchat.identity import Identity
from meshchat.media import sample_photo
from meshchat.net.file_driver import FileConfig

#: A name a hostile sender could pick: an escape sequence that turns text red and a right-to-left
#: override that would show "lake" + "gpj.exe" reversed, after a leading dot that would hide it.
HOSTILE_NAME = ".\x1b[31mlake\u202egpj.exe.jpg"


async def _two_profiles(tmp_path: Path) -> tuple[Path, Path]:
    alice, bob = tmp_path / ".alice", tmp_path / ".bob"
    await meshchat("init", "--profile", alice, "--name", "Alice")
    await meshchat("init", "--profile", bob, "--name", "Bob")
    # (a running node reads its contacts when it starts: Bob adds Alice first)
    await meshchat("add", "--profile", bob, (await meshchat("invite", "--profile", alice)).stdout.decode())
    return alice, bob


async def test_a_photo_reaches_a_running_node_which_fetches_it_under_a_safe_name(tmp_path: Path) -> None:
    alice, bob = await _two_profiles(tmp_path)
    photo = await trio.to_thread.run_sync(sample_photo, tmp_path / HOSTILE_NAME)
    async with processes(tmp_path) as start:
        bob_node = await start("node", "--profile", bob, "--listen", LOCAL, "--json")
        await meshchat(
            "add", "--profile", alice, (await meshchat("invite", "--profile", bob)).stdout.decode()
        )

        sent = await json_of(
            "send", "--to", "Bob", "--file", photo, "--caption", "the lake 🌅", "--profile", alice
        )
        size = photo.stat().st_size
        assert (sent["event"], sent["to_name"], sent["name"], sent["size"]) == (
            "sent_file",
            "Bob",
            HOSTILE_NAME,
            size,
        )
        # it returned because every chunk was served (no mailbox here), and the manifest went out
        assert sent["served"] >= sent["wire_size"] > size and not sent["on_mailbox"], sent
        assert sent["status"] in ("relayed", "delivered"), sent

        offered = await bob_node.next("attachment")
        assert (offered["number"], offered["contact"], offered["sender"]) == (1, "Alice", _peer(alice))
        assert (offered["name"], offered["safe_name"], offered["caption"]) == (
            HOSTILE_NAME,
            safe_name(HOSTILE_NAME),
            "the lake 🌅",
        )
        assert (offered["mime"], offered["width"], offered["height"], offered["fetching"]) == (
            "image/jpeg",
            1600,
            1200,
            True,
        )
        assert 0 < offered["thumbnail_bytes"] <= 24 * 1024
        fetched = await bob_node.next("attachment_fetched")
        landed = Path(fetched["path"])
        assert fetched["number"] == 1 and landed == bob / "downloads" / safe_name(HOSTILE_NAME)
        assert landed.name == "[31mlakegpj.exe.jpg"  # no escape, no override, no leading dot
        assert await trio.Path(landed).read_bytes() == await trio.Path(photo).read_bytes()

        # `files` reads files.db while the node runs: JSON exactly, text harmless
        listed = await json_of("files", "--profile", bob)
        assert listed["sent"] == []
        (received,) = listed["received"]
        assert (received["number"], received["from_name"], received["state"], received["path"]) == (
            1,
            "Alice",
            "done",
            str(landed),
        )
        assert (received["name"], received["size"], received["caption"]) == (
            HOSTILE_NAME,
            size,
            "the lake 🌅",
        )
        text = (await meshchat("files", "--profile", bob)).stdout.decode()
        assert "\x1b" not in text and "\u202e" not in text, text
        assert "\\u202e" in text and "the lake 🌅" in text and "done" in text

        # the text result line (it is printed after the node stopped: from what was read before)
        note = tmp_path / "notes.txt"
        await trio.Path(note).write_text("milk, eggs")
        plain = (await meshchat("send", "--to", "Bob", "--file", note, "--profile", alice)).stdout.decode()
        assert re.fullmatch(
            r"sent notes\.txt \(10 B, text/plain\) to Bob: (relayed|delivered); Bob fetched it\n", plain
        )
        await bob_node.wait_for(lambda: len(bob_node.of("attachment_fetched")) == 2)
        await bob_node.stop()
    mine = await json_of("files", "--profile", alice)
    assert mine["received"] == []
    assert [(f["name"], f["size"]) for f in mine["sent"]] == [("notes.txt", 10), (HOSTILE_NAME, size)]
    assert mine["sent"][1]["message_id"] == sent["message_id"]


async def test_a_large_file_waits_for_files_fetch_from_the_senders_node(tmp_path: Path) -> None:
    """Over the automatic size (16 MiB) Bob's node only announces it; Alice's send gives up after
    --timeout saying so; her `meshchat node` serves it; Bob's `files --fetch` gets every byte."""
    alice, bob = await _two_profiles(tmp_path)
    big = tmp_path / "archive.bin"
    big.write_bytes(os.urandom(FileConfig().auto_fetch + CHUNK_SIZE + 123))
    async with processes(tmp_path) as start:
        bob_node = await start("node", "--profile", bob, "--listen", LOCAL, "--json")
        await meshchat(
            "add", "--profile", alice, (await meshchat("invite", "--profile", bob)).stdout.decode()
        )
        gave_up = await meshchat(
            "send", "--to", "Bob", "--file", big, "--timeout", "2", "--profile", alice, "--json", check=False
        )
        error = gave_up.stderr.decode()
        assert gave_up.returncode == 1 and gave_up.stdout == b"", error
        assert error.startswith("error: send archive.bin to Bob: in 2 s the manifest is "), error
        assert "`meshchat node` on this profile serves it" in error
        offered = await bob_node.next("attachment")
        assert (offered["name"], offered["size"], offered["fetching"]) == (
            "archive.bin",
            big.stat().st_size,
            False,
        )
        await bob_node.stop()
        assert [
            (r["number"], r["state"]) for r in (await json_of("files", "--profile", bob))["received"]
        ] == [(1, "offered")]

        alice_node = await start("node", "--profile", alice, "--listen", LOCAL, "--json")
        alice_addr = (await alice_node.first("listening"))["addrs"][0]
        got = await json_of("files", "--fetch", "1", "--bootstrap", alice_addr, "--profile", bob)
        assert (got["event"], got["number"], got["name"], got["already"]) == (
            "fetched",
            1,
            "archive.bin",
            False,
        )
        assert got["path"] == str(bob / "downloads" / "archive.bin")
        assert await trio.Path(got["path"]).read_bytes() == await trio.Path(big).read_bytes()
        # asked again: it is there already (no source needed)
        again = await json_of("files", "--fetch", "1", "--profile", bob)
        assert (again["path"], again["already"]) == (got["path"], True)
        await alice_node.stop()
    listed = (await json_of("files", "--profile", bob))["received"]
    assert [(r["number"], r["state"], r["path"]) for r in listed] == [(1, "done", got["path"])]


async def test_with_a_mailbox_send_file_returns_once_it_holds_every_chunk(tmp_path: Path) -> None:
    """Bob is offline: Alice's send returns when the mailbox stored every chunk and the manifest
    (nothing served by her); Bob's node, started later, fetches the file from the mailbox alone."""
    alice, bob = await _two_profiles(tmp_path)
    box = tmp_path / ".box"
    await meshchat("init", "--profile", box, "--name", "Box")
    data = os.urandom(2 * CHUNK_SIZE + 77)
    memo = tmp_path / "memo.bin"
    await trio.Path(memo).write_bytes(data)
    async with processes(tmp_path) as start:
        mailbox = await start("mailbox", "--profile", box, "--listen", LOCAL, "--json")
        box_addr = (await mailbox.first("listening"))["addrs"][0]
        invite = (await meshchat("invite", "--profile", bob, "--mailbox", box_addr)).stdout.decode()
        await meshchat("add", "--profile", alice, invite)
        sent = await json_of("send", "--to", "Bob", "--file", memo, "--mailbox", box_addr, "--profile", alice)
        assert (sent["status"], sent["on_mailbox"], sent["stored"], sent["served"]) == (
            "stored",
            True,
            len(data),
            0,
        ), sent
        bob_node = await start("node", "--profile", bob, "--listen", LOCAL, "--mailbox", box_addr, "--json")
        offered = await bob_node.next("attachment")
        assert (offered["name"], offered["mailboxes"], offered["fetching"]) == (
            "memo.bin",
            [box_addr.rsplit("/", 1)[1]],
            True,
        )
        fetched = await bob_node.next("attachment_fetched")
        assert await trio.Path(fetched["path"]).read_bytes() == data
        await bob_node.stop()


async def test_command_lines_that_cannot_work_fail_with_one_error_line(tmp_path: Path) -> None:
    alice, _bob = await _two_profiles(tmp_path)
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"\xff\xd8 not much of a photo")
    for args, expected in [
        (
            ("send", "--to", "Bob", "--file", tmp_path / "nope.jpg"),
            f"error: --file {tmp_path / 'nope.jpg'}: no such file",
        ),
        (("send", "--to", "Bob", "--file", tmp_path), f"error: --file {tmp_path}: not a regular file"),
        (("send", "--to", "Bob", "hi", "--file", photo), "error: give TEXT or --file PATH, not both"),
        (
            ("send", "--to", "Bob"),
            "error: give the message TEXT (--caption and --timeout go with --file PATH)",
        ),
        (("send", "--to", "Bob", "--caption", "x", "hi"), "error: give the message TEXT"),
        (
            ("send", "--to", "Bob", "--file", photo, "--caption", "x" * 4097),
            "error: --caption is at most 4,096",
        ),
        (("files", "--bootstrap", LOCAL), "error: --listen, --bootstrap and --mailbox go with --fetch"),
    ]:
        result = await meshchat(*args, "--profile", alice, check=False)
        line = result.stderr.decode().strip()
        assert (result.returncode, result.stdout) == (2, b""), (args, line)
        assert line.startswith(expected) and "\n" not in line, (args, line)
    # a number nobody sent: exit 1, one error line; nothing was listed before files.db existed
    assert await json_of("files", "--profile", alice) == {"received": [], "sent": []}
    assert not (alice / "files.db").exists()
    unknown = await meshchat("files", "--fetch", "7", "--profile", alice, "--json", check=False)
    assert (unknown.returncode, unknown.stdout, unknown.stderr.decode()) == (1, b"", "error: no file 7\n")


def test_the_list_loads_no_network_stack(tmp_path: Path) -> None:
    """`meshchat files` reads files.db without trio or py-libp2p (fast start-up)."""
    profile = tmp_path / ".alice"
    subprocess.run(
        [sys.executable, "-m", "meshchat", "init", "--profile", str(profile), "--insecure-no-passphrase"],
        env=_env(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    code = (
        "import json, sys\n"
        "from meshchat.cli import main\n"
        f"sys.argv = ['meshchat', 'files', '--profile', {str(profile)!r}, '--json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "heavy = ('trio', 'libp2p', 'meshchat.node', 'meshchat.net')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
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
    assert json.loads(printed) == {"received": [], "sent": []}
    assert json.loads(loaded) == []


# --- no processes ---------------------------------------------------------------------------------


def test_wire_size_is_every_chunk_a_complete_fetch_serves() -> None:
    """`send --file` stops once the sender served `wire_size` bytes: it must be what the chunks of
    the file and its index really take (one byte less and the last chunk could be left unserved)."""
    key = bytes(32)
    for size in (0, 1, 1000, 1025, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5):
        chunks = list(cut(io.BytesIO(bytes(size)), key, size))
        index = build_index(key, b"".join(c.address for c in chunks))
        index_bytes = sum(len(c) for c in index.chunks)
        assert wire_size(size, index_bytes) == sum(len(c.ciphertext) for c in chunks) + index_bytes, size


def _manifest(name: str, caption: str) -> Manifest:
    key = bytes(32)
    index = build_index(key, b"".join(c.address for c in cut(io.BytesIO(b"x" * 10), key, 10)))
    return Manifest(name=name, mime="image/jpeg", size=10, key=key, index=index.addresses, caption=caption)


def test_file_events_print_one_harmless_line_each_and_exact_json() -> None:
    alice = Identity.generate().public
    manifest = _manifest("\x1b]0;pwned\x07a\u202egpj.exe", "[bold]hi\x1b[2J\nsecond line")
    events: list[Any] = [
        Attachment(number=3, sender=alice, message_id=b"\x01" * 32, manifest=manifest, fetching=False),
        AttachmentFetched(number=3, path="/downloads/a.jpg"),
        FileProblem(
            number=0, file_id=b"\x02" * 32, error="upload to …x: cannot reach the mailbox", final=False
        ),
    ]
    for make in (lambda out: _Printer(out, json_lines=False), _ChatPrinter):
        out = io.StringIO()
        for event in events:
            assert describe_file_event(event, make(out), names={alice.peer_id: "Alice"})
        text = out.getvalue()
        assert text.count("\n") == 3 and "\x1b" not in text and "\u202e" not in text, text
        assert "meshchat files --fetch 3" in text and "Alice" in text and "[bold]hi" in text, text
        assert "saved as /downloads/a.jpg" in text and f"sent file {'02' * 8}" in text, text
    assert not describe_file_event(object(), _Printer(io.StringIO(), json_lines=True), names={})
    out = io.StringIO()
    describe_file_event(events[0], _Printer(out, json_lines=True), names={})
    line = json.loads(out.getvalue())
    assert (line["event"], line["name"], line["caption"], line["contact"]) == (
        "attachment",
        manifest.name,
        manifest.caption,
        None,
    )
    assert (line["safe_name"], line["size"], line["fetching"]) == (safe_name(manifest.name), 10, False)


def test_human_sizes() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 48_902, 20_000_000, 3 * 1024**3)] == [
        "0 B",
        "1,023 B",
        "1.0 KiB",
        "47.8 KiB",
        "19.1 MiB",
        "3.0 GiB",
    ]


def test_the_progress_bar_shows_bytes_rate_and_eta_and_never_obeys_a_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rich.console import Console  # noqa: PLC0415

    from meshchat.cli import file_runner  # noqa: PLC0415

    screen = io.StringIO()
    monkeypatch.setattr(
        file_runner, "stderr_console", lambda: Console(file=screen, force_terminal=True, width=160)
    )
    now = [100.0]
    bar = file_runner._Bar("#1 \x1b]0;pwned\x07[bold]x\u202e.bin", 10 * 2**20, clock=lambda: now[0])
    with bar.progress:
        bar.show(2**20)
        now[0] += 1.0
        bar.show(5 * 2**20)  # 4 MiB in 1 s: 5 MiB to go, about 1.25 s
    last = screen.getvalue().rsplit("\r", 1)[-1]
    assert "5.0/10.0 MiB" in last and "4.2 MB/s" in last and "0:00:02" in last, last
    assert "[bold]x\\u202e.bin" in last and "pwned" not in last and "\u202e" not in last, last
    # not a terminal (a pipe, a log file): nothing drawn at all
    screen = io.StringIO()
    monkeypatch.setattr(file_runner, "stderr_console", lambda: Console(file=screen, force_terminal=False))
    bar = file_runner._Bar("#1 a.bin", 10)
    with bar.progress:
        bar.show(5)
    assert screen.getvalue() == ""
