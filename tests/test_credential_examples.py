"""examples/age_check.py and examples/hotel_checkin.py run as a user runs them and keep their promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_age_check_till_sees_age_over_18_only() -> None:
    out = run_example("age_check.py")
    issued, till_side = out.split("phone shows a QR code:", 1)
    assert "['age_over_18', 'age_over_21']" in issued
    assert "disclosures in the QR: [('age_over_18', True)]" in till_side
    assert "till learnt: {'age_over_18': True}\n" in till_side
    # Nothing else reaches the till: no other predicate, no birth date, no name.
    for absent in ("age_over_21", "birth", "2001", "Alisa", "name"):
        assert absent not in till_side
    assert "revocation status: valid" in till_side
    assert "same QR again at this till: refused" in till_side
    version = int(till_side.split("version ", 1)[1].split()[0])
    assert version <= 25


def test_hotel_checkin_name_and_document_number_only() -> None:
    out = run_example("hotel_checkin.py")
    learnt = next(line for line in out.splitlines() if line.startswith("hotel learnt:"))
    assert learnt == (
        "hotel learnt: {'given_name': 'Timur', 'family_name': 'Galiev', 'document_number': '9214 556677'}"
    )
    for absent in ("1990", "Kazan", "RU", "birth_date", "address", "nationality"):
        assert absent not in learnt
    assert "replayed answer: refused" in out
    assert "shown to another hotel: refused" in out
