"""Text a peer chose (message bodies, invite names, errors) cannot drive the terminal: every
human-readable output passes it through ``terminal_text`` (and rich's escape), JSON carries it exactly.

Each hostile string holds a colour (``ESC[31m``), a window-title OSC, cursor moves, an 8-bit CSI, a
bell, a bidi override and rich markup; the tests assert that none of the escape bytes reaches the
output and that the markup is shown as text, in each command that prints such text.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshchat.cli import app
from meshchat.cli.common import print_error, terminal_markup, terminal_text
from meshchat.cli.runner import _ChatPrinter, _describe, _Printer
from meshchat.contacts import CONTACTS_FILE, Contacts
from meshchat.identity import Identity, save_identity
from meshchat.net import MessageDelivered
from meshchat.store.sqlite import STORE_FILE, SqliteStorage
from meshchat.store.storage import InboxRecord, OutboxRecord, OutboxStatus, SeenEntry
from meshchat.wire import Invite

#: A body that would turn the terminal red, retitle its window, move the cursor home and clear the
#: screen, ring the bell, reverse the text after it, and (through rich) print in bold.
HOSTILE = (
    "\x1b[31mred\x1b[0m \x1b]0;owned\x07 \x1b[H\x1b[2J\x9b1m\x07 \u202eesrever [bold]loud[/bold] "
    "\x1b]8;;http://evil\x1b\\link"
)
#: Bytes no output may contain once ``HOSTILE`` went through it.
FORBIDDEN = ("\x1b", "\x07", "\x9b", "\u202e")

#: A terminal wide enough that no table cell wraps.
WIDE = {"COLUMNS": "400"}

runner = CliRunner()


def assert_tamed(output: str) -> None:
    for char in FORBIDDEN:
        assert char not in output, (char, output)
    assert "[bold]loud[/bold]" in output  # rich markup shown as text, not obeyed
    assert "red" in output and "esrever" in output  # the readable text stays


def test_terminal_text_removes_sequences_and_shows_other_controls() -> None:
    assert terminal_text("\x1b[31mred\x1b[0m") == "red"
    assert terminal_text("a\x1b]0;title\x07b") == "ab"
    assert terminal_text("a\x1b]0;title\x1b\\b") == "ab"
    assert terminal_text("up\x1b[3Aleft\x1b[10D") == "upleft"
    assert terminal_text("bell\x07 nul\x00 del\x7f c1\x85") == "bell\\x07 nul\\x00 del\\x7f c1\\x85"
    assert terminal_text("\u202eabc\u2066") == "\\u202eabc\\u2066"
    assert terminal_text("two\nlines\ttab") == "two\\x0alines\ttab"
    assert terminal_text("two\nlines", multiline=True) == "two\nlines"
    assert terminal_text("Привет 🎉 [x]") == "Привет 🎉 [x]"  # ordinary text untouched
    assert terminal_markup("[bold]x[/bold]") == "\\[bold]x\\[/bold]"


def test_chat_shows_a_hostile_body_and_name_as_text() -> None:
    out = io.StringIO()
    printer = _ChatPrinter(out)
    data = base64.b64encode(HOSTILE.encode()).decode()
    printer.event("direct", "ignored", contact="\x1b[2JEve [blink]", sender="12D3KooWxyz", data=data)
    printer.event("sent", "to \x1b]0;x\x07Eve", data=data)
    printer.event("status", f"0123 failed ({HOSTILE})")
    text = out.getvalue()
    assert_tamed(text)
    assert "Eve [blink]" in text
    assert len(text.splitlines()) == 3  # no message could print a line of its own


def test_node_text_events_show_a_hostile_message_as_one_line_of_text() -> None:
    out = io.StringIO()
    event = MessageDelivered(
        topic="line", message_id=b"\x01" * 32, data=(HOSTILE + "\nforged line").encode(), source="peer"
    )
    _describe(event, _Printer(out, json_lines=False))
    text = out.getvalue()
    for char in FORBIDDEN:
        assert char not in text
    assert "[bold]loud[/bold]" in text and "\\x0aforged line" in text
    assert len(text.splitlines()) == 1


def test_node_json_events_carry_the_text_exactly() -> None:
    out = io.StringIO()
    event = MessageDelivered(topic="line", message_id=b"\x01" * 32, data=HOSTILE.encode(), source="peer")
    _describe(event, _Printer(out, json_lines=True))
    assert base64.b64decode(json.loads(out.getvalue())["data"]).decode() == HOSTILE


@pytest.fixture
def profile_with_hostile_store(tmp_path: Path) -> Path:
    """A profile whose contact has a hostile local name, who sent a hostile message and to whom a
    message failed with a hostile error."""
    profile = tmp_path / "me"
    profile.mkdir()
    save_identity(profile / "identity.key", Identity.generate(), None)
    eve = Identity.generate()
    # Contacts.add refuses such a petname now (BadPetname); a contacts.json from an older meshchat, or
    # edited by hand, can still hold one, and the CLI must show it as text.
    invite = Invite.create(eve, name="Eve").to_text()
    hostile_name = "\x1b[31mEve\u202e [i]x[/i]"
    (profile / CONTACTS_FILE).write_text(json.dumps({"contacts": [{"name": hostile_name, "invite": invite}]}))
    assert Contacts(profile).find(hostile_name).name == hostile_name
    now = time.time()
    with SqliteStorage(profile / STORE_FILE) as store:
        inbox = InboxRecord(
            number=0,
            message_id=b"\x02" * 32,
            sender=eve.public.ed25519,
            seq=1,
            body=HOSTILE.encode(),
            sent_at_ms=int(now * 1000),
            received_at=now,
        )
        store.accept(
            [SeenEntry(message_id=b"\x02" * 32, inbox_tag=b"\x03" * 16, expiry=int(now) + 60)], [inbox]
        )
        outbox = OutboxRecord(
            message_id=b"\x04" * 32,
            recipient=eve.public.ed25519,
            envelope=b"x",
            ref="",
            seq=1,
            created_at=now,
            expiry=int(now) + 60,
            status=OutboxStatus.FAILED,
            error=HOSTILE,
        )
        store.outbox_add([outbox])
    return profile


def test_inbox_table_shows_hostile_bodies_and_names_as_text(profile_with_hostile_store: Path) -> None:
    result = runner.invoke(app, ["inbox", "--profile", str(profile_with_hostile_store)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert_tamed(result.stdout)
    assert "[i]x[/i]" in result.stdout


def test_inbox_json_carries_the_body_exactly(profile_with_hostile_store: Path) -> None:
    result = runner.invoke(app, ["inbox", "--profile", str(profile_with_hostile_store), "--json"])
    assert result.exit_code == 0, result.output
    (message,) = json.loads(result.stdout)["inbox"]
    assert message["text"] == HOSTILE
    assert message["from_name"] == "\x1b[31mEve\u202e [i]x[/i]"


def test_outbox_and_status_show_a_hostile_error_and_name_as_text(profile_with_hostile_store: Path) -> None:
    table = runner.invoke(
        app, ["outbox", "--profile", str(profile_with_hostile_store)], env={"COLUMNS": "400"}
    )
    assert table.exit_code == 0, table.output
    assert_tamed(table.stdout)
    status = runner.invoke(app, ["status", "04" * 32, "--profile", str(profile_with_hostile_store)])
    assert status.exit_code == 0, status.output
    assert_tamed(status.stdout)
    assert "[i]x[/i]" in status.stdout


def test_names_from_invites_are_shown_as_text(tmp_path: Path) -> None:
    """Invite names cannot hold control characters (the invite refuses them) but can hold markup."""
    me = tmp_path / "me"
    assert runner.invoke(app, ["init", "--profile", str(me), "--insecure-no-passphrase"]).exit_code == 0
    token = Invite.create(Identity.generate(), name="[bold red]Mallory[/bold red]").to_text()
    added = runner.invoke(app, ["add", "--profile", str(me), token])
    assert added.exit_code == 0, added.output
    assert "[bold red]Mallory[/bold red]" in added.stdout
    number = runner.invoke(app, ["safety-number", "--profile", str(me), token])
    assert number.exit_code == 0, number.output
    assert "[bold red]Mallory[/bold red]" in number.stdout
    renamed = runner.invoke(app, ["add", "--profile", str(me), token, "--name", "\x1b]0;t\x07M\x1b[2J"])
    # A petname with control characters is refused (BadPetname), in one clean error line.
    assert renamed.exit_code == 1
    assert "not a usable name for a contact" in renamed.output
    assert "\x1b" not in renamed.output and "\x07" not in renamed.output


def test_an_error_line_quoting_a_peer_cannot_drive_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    print_error(f"bad invite from {HOSTILE}\nsecond line")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: bad invite from red")
    for char in FORBIDDEN:
        assert char not in err


def test_send_to_an_unknown_hostile_name_is_one_clean_error_line(tmp_path: Path) -> None:
    me = tmp_path / "me"
    assert runner.invoke(app, ["init", "--profile", str(me), "--insecure-no-passphrase"]).exit_code == 0
    result = runner.invoke(app, ["send", "--profile", str(me), "--to", "\x1b]0;pwned\x07Eve", "hi"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    for char in FORBIDDEN:
        assert char not in result.stderr
