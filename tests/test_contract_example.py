"""``examples/contract.py`` runs as a user would run it: three partners' nodes on 127.0.0.1, a contract
co-signed by two of three (2-of-3), the status at every partner after each step, and the bundle
verified offline (an altered contract refused)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "contract.py"


def test_two_of_three_partners_co_sign_and_the_bundle_verifies_offline() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=300,  # the example bounds each step (60 s); this bounds the whole run
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Anna proposed contract.txt (") and "rule: 2 of 3" in lines[0]
    # After the proposal, after Ben, after Chloe: each partner's status, the same at all three.
    steps = [
        ("open, 0 of 2 signatures", 1),
        ("open, 1 of 2 signatures", lines.index("Ben signed") + 1),
        ("complete, 2 of 2 signatures", lines.index("Chloe signed") + 1),
    ]
    for expected, first in steps:
        shown = lines[first : first + 3]
        assert [line.split()[0] for line in shown] == ["Anna", "Ben", "Chloe"]
        assert all(line.endswith(f"sees: {expected}") for line in shown), shown
    verified = next(line for line in lines if line.startswith("bundle ("))
    assert "verified offline: complete=True, signed by Ben and Chloe" in verified
    assert lines[-1].startswith("an altered contract is refused: the document was altered")
