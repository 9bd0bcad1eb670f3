"""The example programs run as a user would run them, and say what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=300,  # each example bounds its own steps; this bounds the whole run
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_sealed_hello_runs_and_bob_reads_alices_message() -> None:
    result = run_example("sealed_hello.py")
    assert "Bob reads from Alice: Сәлам, Bob! 👋" in result.stdout
    assert "no sender" in result.stdout
    digits = result.stdout.splitlines()[0].removeprefix("safety number: ").split()
    assert len(digits) == 12 and all(len(group) == 5 and group.isdigit() for group in digits)


def test_two_nodes_example_delivers_a_sealed_message_over_tcp() -> None:
    result = run_example("two_nodes.py")
    assert "Bob got 'Привет, Боб!', signed by Alice: True" in result.stdout


def test_resume_events_example_replays_what_the_app_had_not_handled() -> None:
    result = run_example("resume_events.py")
    lines = [line for line in result.stdout.splitlines() if line.startswith(("handled", "replayed"))]
    assert [line.split(":")[0] for line in lines] == ["handled #1", "replayed #2", "replayed #3"]
    assert sorted(line.split(": ")[1] for line in lines) == ["one", "three", "two"]


def test_family_group_example_the_removed_member_cannot_read_what_follows() -> None:
    out = run_example("family_group.py").stdout
    for name in ("Dad", "Anna", "Ben", "Joe"):
        assert f"{name} was invited by Mum and joined: joined" in out
    assert "Mum: Sunday lunch at ours, 1 pm -> read by all 4 others" in out
    assert "Anna: I'll bake a cake 🎂 -> read by all 4 others" in out
    assert "Mum removed Joe; Joe's status: removed; members now: Anna, Ben, Dad, Mum" in out
    for name in ("Dad", "Anna", "Ben"):
        assert f"{name} read: Joe's surprise party is on Friday 🤫" in out
    assert "Joe's history: Sunday lunch at ours, 1 pm | I'll bake a cake 🎂\n" in out
    assert "Joe could not read the message after his removal: True" in out
    assert "status of Mum's message: delivered to 3 of 3" in out


@pytest.mark.xfail(
    strict=False,
    reason=(
        "known bug, open: about every second run a student's first message in the class group never "
        "reaches a few students (their chain handout from that student stays 'relayed', never delivered; "
        "retries do not get through), also on 1d284a8, before issue 16; see the issue 16 closing note"
    ),
)
def test_classroom_example_announcements_reach_all_30_and_only_the_teacher_posts_there() -> None:
    out = run_example("classroom.py").stdout
    assert "all 30 students joined 'Class 7B' and '7B announcements' (admins only: True)" in out
    assert "-> received by 30 of 30 students" in out
    refused = next(line for line in out.splitlines() if line.startswith("student 07 tried to post"))
    assert "NotAuthorized: " in refused and "not an admin" in refused
    assert "received by the teacher: True, and 29 of 29 other students" in out
    assert "status of the announcement: delivered to 30 of 30" in out


def test_send_photo_example_shows_the_thumbnail_and_caption_then_fetches_the_same_bytes() -> None:
    out = run_example("send_photo.py").stdout
    assert "Bob got an attachment from Alice: True" in out
    assert "name: lake.jpg, type: image/jpeg, size: " in out
    assert "1600x1200 px" in out
    thumbnail = next(line for line in out.splitlines() if line.startswith("thumbnail: "))
    assert thumbnail.endswith("320x240 px")
    assert int(thumbnail.split()[1].replace(",", "")) <= 24 * 1024
    assert "caption: The lake this morning 🌅" in out
    assert "identical to Alice's photo: True" in out
    assert "saved as lake.jpg in Bob's downloads folder: True" in out


def test_voice_note_example_shows_the_duration_and_the_note_arrives_on_its_own() -> None:
    out = run_example("voice_note.py").stdout
    assert "Bob got a voice note from Alice: True" in out
    assert "name: voice note.ogg, type: audio/ogg, size: " in out
    assert "duration: 4.0 s, caption: call me back?" in out
    assert "fetching on its own (under the automatic size): True" in out
    assert "identical to Alice's recording: True" in out
    assert "saved as voice note.ogg in Bob's downloads folder: True" in out
