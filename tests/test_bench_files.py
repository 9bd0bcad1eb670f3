"""``benchmarks/bench_files.py --quick`` runs end to end (raw TCP, one hop, a mailbox with the sender
offline, the "big" file in bounded memory) and ends with its three figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: Seconds the quick run may take (~30 s alone on this machine; others share it).
LIMIT = 300


def test_quick_benchmark_prints_its_three_figures(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_files.py"), "--quick", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    figures = dict(part.split("=", 1) for part in last.split())
    assert set(figures) == {"file_ratio_vs_tcp", "mailbox_ratio_vs_tcp", "peak_rss_mib"}
    assert all(float(value) > 0 for value in figures.values()), last
    assert list(tmp_path.iterdir()) == []  # the temporary folder, big files and all, is gone
