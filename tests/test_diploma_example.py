"""examples/diploma.py runs as a user runs it: a school issues two diplomas, an employer checks them
offline, the school revokes one and the employer's next check fails once the list arrives by gossip."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "diploma.py"


def test_diploma_example_issue_verify_revoke() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=120,  # the example bounds each step (60 s); this bounds the whole run
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "School got a request from Ann: diploma (Ann, class of 2026)" in lines
    assert "School got a request from Ben: diploma (Ben, class of 2026)" in lines
    held = [
        line
        for line in lines
        if re.fullmatch(r"(Ann|Ben) holds diploma [\w-]{22}: name, degree, grade", line)
    ]
    assert len(held) == 2
    accepted = [line for line in lines if line.startswith("Employer accepts")]
    assert "{'degree': 'MSc Physics'}" in accepted[0] and "{'degree': 'BSc Biology'}" in accepted[1]
    assert all("not disclosed: grade, name" in line and "status valid" in line for line in accepted)
    assert [line.split(":")[0] for line in accepted] == [
        "Employer accepts Ann's diploma from Springfield School",
        "Employer accepts Ben's diploma from Springfield School",
        "Employer accepts Ann's diploma from Springfield School",
    ]
    revoked = lines.index(next(line for line in lines if line.startswith("School revoked Ben's diploma")))
    refused = lines.index(next(line for line in lines if line.startswith("Employer refuses Ben's diploma")))
    assert (
        revoked < refused
        and "CredentialRevoked" in lines[refused]
        and "revoked this credential" in lines[refused]
    )
    assert lines[refused - 1].startswith("Employer got the new status list by gossip")
    assert "Ann Lee" not in result.stdout and "Ben Okafor" not in result.stdout  # names never disclosed
