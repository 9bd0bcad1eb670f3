"""Hostile file names from a manifest: ``safe_name`` keeps a received file inside the downloads folder
under a name that shows what it is, and ``claim_path`` never reuses or escapes through a name."""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshchat.files.names import MAX_SAFE_BYTES, claim_path, safe_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("photo.jpg", "photo.jpg"),
        ("Отчёт за май.pdf", "Отчёт за май.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("dir/", "file"),
        ("..\\..\\Windows\\win.ini", "win.ini"),
        ("C:\\Users\\a\\Desktop\\notes.txt", "notes.txt"),
        ("a\x00b", "ab"),
        ("a\x00/../../b", "b"),
        ("bell\x07\x1b[31mred\x7f.txt", "bell[31mred.txt"),
        ("line\nbreak\r.txt", "linebreak.txt"),
        ("tab\there", "tabhere"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # RTL override: would show as "invoiceexe.pdf"
        ("\u2066iso\u2069late\u200b\u200d\ufeff.txt", "isolate.txt"),  # isolates, zero-widths, BOM
        ("soft\u00adhyphen", "softhyphen"),  # U+00AD is Cf too
        ("para\u2029sep\u2028line", "parasepline"),
        (".bashrc", "bashrc"),
        ("..bashrc", "bashrc"),
        (".", "file"),
        ("..", "file"),
        ("...", "file"),
        ("", "file"),
        ("   ", "file"),
        ("\u202e", "file"),
        ("a. . ", "a"),
        ("name.txt. ", "name.txt"),
        ("  padded.txt  ", "padded.txt"),
        ("CON", "_CON"),
        ("con", "_con"),
        ("con.txt", "_con.txt"),
        ("LPT1.log", "_LPT1.log"),
        ("nul.tar.gz", "_nul.tar.gz"),
        ("Aux", "_Aux"),
        ("COM9.bin", "_COM9.bin"),
        ("CONSOLE.txt", "CONSOLE.txt"),  # only the exact device names
        ("COM0", "COM0"),
        ("icon.png", "icon.png"),
        ("a\ud800b.txt", "a?b.txt"),  # a lone surrogate cannot be encoded: replaced
        ("e\u0301.txt", "\u00e9.txt"),  # NFC: one spelling per name
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected


def test_reserved_names_with_spaces_before_the_extension_are_prefixed() -> None:
    assert safe_name("CON .txt") == "_CON .txt"


def test_long_names_are_cut_keeping_a_short_extension() -> None:
    name = "x" * 300 + ".jpeg"
    safe = safe_name(name)
    assert safe.endswith(".jpeg")
    assert len(safe.encode()) == MAX_SAFE_BYTES
    assert safe == "x" * (MAX_SAFE_BYTES - 5) + ".jpeg"


def test_long_multibyte_names_are_cut_on_character_boundaries() -> None:
    safe = safe_name("é" * 300 + ".txt")  # 2 bytes each
    assert safe.endswith(".txt")
    assert len(safe.encode()) <= MAX_SAFE_BYTES
    assert safe == "é" * ((MAX_SAFE_BYTES - 4) // 2) + ".txt"
    foxes = safe_name("🦊" * 100 + ".png")  # 4 bytes each
    assert foxes == "🦊" * 49 + ".png"
    assert len(foxes.encode()) == MAX_SAFE_BYTES
    assert safe_name("🦊" * 100) == "🦊" * 50


def test_a_long_extension_is_not_kept() -> None:
    safe = safe_name("a" * 250 + "." + "b" * 40)
    assert len(safe.encode()) <= MAX_SAFE_BYTES
    assert safe == "a" * MAX_SAFE_BYTES


def test_a_cut_does_not_leave_trailing_dots_or_spaces() -> None:
    safe = safe_name("a" * 190 + " . . . . . . ." + "z" * 100 + ".pdf")
    assert safe.endswith(".pdf")
    assert not safe[: -len(".pdf")].endswith((" ", "."))
    assert len(safe.encode()) <= MAX_SAFE_BYTES


def test_names_at_the_limit_are_kept() -> None:
    name = "n" * (MAX_SAFE_BYTES - 4) + ".txt"
    assert safe_name(name) == name
    assert safe_name("n" * (MAX_SAFE_BYTES + 1)) == "n" * MAX_SAFE_BYTES


#: Characters hostile names are made of, weighted towards the dangerous ones.
_hostile = st.text(
    alphabet=st.sampled_from(
        [
            *"./\\ .\x00\x01\x1f\x7f\u202e\u202d\u2066\u200b\ufeff\u2028\u0301aZé🦊CONLPTcomx1:",
            "\ud800",
            "\udfff",
        ]
    ),
    max_size=300,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=400), _hostile))
def test_safe_name_is_always_safe(tmp_path: Path, name: str) -> None:
    safe = safe_name(name)
    assert safe
    assert "/" not in safe
    assert "\\" not in safe
    assert "\x00" not in safe
    assert not any(unicodedata.category(c) in {"Cc", "Cf", "Cs"} for c in safe)
    assert safe not in {".", ".."}
    assert not safe.startswith(".")  # never hidden
    assert not safe.endswith((".", " "))
    assert len(safe.encode("utf-8")) <= MAX_SAFE_BYTES
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()


#: Windows device names, as the module documents them.
_DEVICES = (
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}
)
_pieces = st.sampled_from(
    [
        "CON",
        "nul",
        "Lpt1",
        "com9",
        "aux",
        ".",
        " ",
        "..",
        "/",
        "\\",
        "\x00",
        "\u202e",
        "\u200b",
        "\n",
        "a",
        "x" * 150,
        "é" * 60,
        ".txt",
        ".tar.gz",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_pieces, max_size=8).map("".join))
def test_safe_name_never_leaves_a_device_name(name: str) -> None:
    safe = safe_name(name)
    assert safe.partition(".")[0].upper() not in _DEVICES
    assert len(safe.encode()) <= MAX_SAFE_BYTES


# --- claim_path --------------------------------------------------------------------------------------


def test_claim_path_creates_an_empty_private_file(tmp_path: Path) -> None:
    folder = tmp_path / "downloads" / "nested"
    path = claim_path(folder, "photo.jpg")
    assert path == folder / "photo.jpg"
    assert path.read_bytes() == b""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_taken_name_gets_a_number(tmp_path: Path) -> None:
    first = claim_path(tmp_path, "photo.jpg")
    second = claim_path(tmp_path, "photo.jpg")
    third = claim_path(tmp_path, "../photo.jpg")  # the same safe name
    assert [p.name for p in (first, second, third)] == ["photo.jpg", "photo (1).jpg", "photo (2).jpg"]
    assert claim_path(tmp_path, "archive.tar.gz").name == "archive.tar.gz"
    assert claim_path(tmp_path, "archive.tar.gz").name == "archive.tar (1).gz"
    assert claim_path(tmp_path, "README").name == "README"
    assert claim_path(tmp_path, "README").name == "README (1)"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "photo.jpg",
            "photo (1).jpg",
            "photo (2).jpg",
            "archive.tar.gz",
            "archive.tar (1).gz",
            "README",
            "README (1)",
        ]
    )


def test_claim_path_never_writes_through_an_existing_entry(tmp_path: Path) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    outside = tmp_path / "target"
    os.symlink(outside, folder / "photo.jpg")  # dangling: O_CREAT alone would create "target"
    (folder / "doc.pdf").mkdir()
    (folder / "notes.txt").write_bytes(b"mine")
    assert claim_path(folder, "photo.jpg") == folder / "photo (1).jpg"
    assert not outside.exists()
    assert claim_path(folder, "doc.pdf") == folder / "doc (1).pdf"
    assert claim_path(folder, "notes.txt") == folder / "notes (1).txt"
    assert (folder / "notes.txt").read_bytes() == b"mine"


@pytest.mark.parametrize(
    "name", ["../../escape.txt", "..", "/abs/path", "a\x00b", "\u202eexe.txt", "CON", ""]
)
def test_claimed_paths_stay_in_the_folder(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "dl"
    path = claim_path(folder, name)
    assert path.parent == folder
    assert path.resolve().parent == folder.resolve()
    assert path.name == safe_name(name)
    assert sorted(tmp_path.iterdir()) == [folder]
    assert list(folder.iterdir()) == [path]
