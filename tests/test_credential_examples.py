"""examples/age_check.py and examples/hotel_checkin.py run as a user runs them and keep their promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshchat.credentials.sdjwt import digest_of
from meshchat.wire.jose import b64url_decode

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


#: The snippet the README shows (issue an "age" credential, present age_over_18 to a till), run as is.
def _readme_snippet() -> str:
    """The Python block after ``<!-- credential-example -->`` in README.md, verbatim."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text.split("<!-- credential-example -->\n```python\n", 1)[1]
    return after.split("\n```", 1)[0] + "\n"


README_SNIPPET = _readme_snippet()
#: What it prints: the issued credential, the presentation, the claims the till learns.
README_CREDENTIAL = (
    "eyJhbGciOiJFZERTQSIsInR5cCI6ImRjK3NkLWp3dCJ9.eyJpc3MiOiJkaWQ6a2V5Ono2TWtrRlFISkJheFpIWHA5MjNRSDF"
    "vVHlMN011SHFmSDhMVlp5VWlDOWh5eXFydyIsImlhdCI6MTc4MDAwMDAwMCwidmN0IjoiYWdlIiwiY25mIjp7Imp3ayI6eyJ"
    "rdHkiOiJPS1AiLCJjcnYiOiJFZDI1NTE5IiwieCI6IjlvWmwtNEdBMkFEcmczelNxSWxidEFPSnNSMzM1b3pka0g2NmVrY3Y"
    "tWjgifX0sIl9zZF9hbGciOiJzaGEtMjU2IiwiX3NkIjpbIk93SG5WYnItdE9odXVyU2pqUHhvMC1GVGdCaFVqcDVmQnNtSjV"
    "GSWZpVnMiLCJoT1NuMEpZQmhJcmRfbnYwLW9pUVEwOTh3cG93UC1lVUdhVUlJTk9lWHd3IiwidnVLYW5SNU82VUV1UGZUV1V"
    "oVlh1cEJBa3hoM3RTbGxOVl9ZTDJ3VnQyYyIsInlJLXZMN3ZWamVnalVLLWZTSkg4ZHZNQ3RhUnAzaTdxczhCckxGMUhiVk0"
    "iXX0.7jo9XUiaL838L0ECeK-vz7VWMM7vWwNmyBeTgnFvbZobVRh86cMoa0I-yi2iXJlS5UTGPRzgcxdWTDHRhLv8BQ~WyJn"
    "Vy1CMm9jOHNGSG94cFJsRW5lSkp3IiwiYWdlX292ZXJfMTgiLHRydWVd~WyI3RFJGSUd0bVJNZDAzSXNXdmgyOWNBIiwiYWd"
    "lX292ZXJfMjEiLGZhbHNlXQ~"
)
README_PRESENTATION = (
    "eyJhbGciOiJFZERTQSIsInR5cCI6ImRjK3NkLWp3dCJ9.eyJpc3MiOiJkaWQ6a2V5Ono2TWtrRlFISkJheFpIWHA5MjNRSDF"
    "vVHlMN011SHFmSDhMVlp5VWlDOWh5eXFydyIsImlhdCI6MTc4MDAwMDAwMCwidmN0IjoiYWdlIiwiY25mIjp7Imp3ayI6eyJ"
    "rdHkiOiJPS1AiLCJjcnYiOiJFZDI1NTE5IiwieCI6IjlvWmwtNEdBMkFEcmczelNxSWxidEFPSnNSMzM1b3pka0g2NmVrY3Y"
    "tWjgifX0sIl9zZF9hbGciOiJzaGEtMjU2IiwiX3NkIjpbIk93SG5WYnItdE9odXVyU2pqUHhvMC1GVGdCaFVqcDVmQnNtSjV"
    "GSWZpVnMiLCJoT1NuMEpZQmhJcmRfbnYwLW9pUVEwOTh3cG93UC1lVUdhVUlJTk9lWHd3IiwidnVLYW5SNU82VUV1UGZUV1V"
    "oVlh1cEJBa3hoM3RTbGxOVl9ZTDJ3VnQyYyIsInlJLXZMN3ZWamVnalVLLWZTSkg4ZHZNQ3RhUnAzaTdxczhCckxGMUhiVk0"
    "iXX0.7jo9XUiaL838L0ECeK-vz7VWMM7vWwNmyBeTgnFvbZobVRh86cMoa0I-yi2iXJlS5UTGPRzgcxdWTDHRhLv8BQ~WyJn"
    "Vy1CMm9jOHNGSG94cFJsRW5lSkp3IiwiYWdlX292ZXJfMTgiLHRydWVd~eyJhbGciOiJFZERTQSIsInR5cCI6ImtiK2p3dCJ"
    "9.eyJpYXQiOjE3ODAwMDAwMzAsImF1ZCI6InRpbGwtNyIsIm5vbmNlIjoicEszeEowYjhRMm1ZdDlSayIsInNkX2hhc2giOi"
    "JOcnpyejdldkFDSXAzaXFHdldKVkY0UGR1VE1xUWM4TkI5ck1PWUtxamF3In0.y0KX8U670hZP8mqm0oZzf6nNJpVQjTTgNb"
    "jXinsxnUa0NEfdj8gr_0q7zBqz6J8id9iFyHf0Wc9BC7xU8_xNDQ"
)


def test_readme_example_is_reproducible(capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(README_SNIPPET, "README", "exec"), {})  # the README's own code, verbatim
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_CREDENTIAL in readme and README_PRESENTATION in readme  # and its printed output
    assert capsys.readouterr().out.splitlines() == [
        README_CREDENTIAL,
        README_PRESENTATION,
        "{'age_over_18': True}",
    ]
    # Decoded by hand, as the README explains: the one disclosure shown is one of the four digests.
    disclosure = README_PRESENTATION.split("~")[1]
    assert b64url_decode(disclosure, what="t") == b'["gW-B2oc8sFHoxpRlEneJJw","age_over_18",true]'
    payload = json.loads(b64url_decode(README_CREDENTIAL.split(".")[1], what="t"))
    assert digest_of(disclosure) in payload["_sd"] and len(payload["_sd"]) == 4
    assert "age_over_21" not in README_PRESENTATION and README_PRESENTATION.startswith(
        README_CREDENTIAL.split("~", maxsplit=1)[0]
    )
