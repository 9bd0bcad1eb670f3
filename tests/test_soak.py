"""The soak (``benchmarks/soak.py``) for one minute: a real node process on 127.0.0.1 under honest plus
abusive load keeps delivering honest traffic, leaks nothing of Bob's mailbox to a stranger, counts its
refusals, and its RSS stays flat after warm-up. The ten-minute run is ``python benchmarks/soak.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow

#: Seconds of load (the benchmark's default is 600).
SOAK_SECONDS = 60.0
#: Seconds between RSS samples.
SAMPLE = 3.0


def _load() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("soak_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak_benchmark"] = module
    spec.loader.exec_module(module)
    return module


soak = _load()


async def test_a_node_under_abuse_delivers_honest_traffic_counts_refusals_and_stays_flat(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    figures = await soak.soak(SOAK_SECONDS, SAMPLE, tmp_path, lines.append)
    explain = "\n".join(lines + [f"{k}: {v}" for k, v in figures.items()])

    # Honest traffic: every gossip line both ways, and (near) every mailbox round trip.
    assert figures["gossip_delivered"] == figures["gossip_sent"] > 0, explain
    assert figures["honest_delivery"] >= 0.99, explain
    assert figures["mailbox_delivered"] > 0, explain

    # The stranger never got Bob's envelopes, his held count, or deleted them.
    assert figures["leaks"] == 0, explain
    # Each kind of abuse reached the node and was refused, by a counted reason.
    assert figures["refused_mailbox"].get("not_your_tag", 0) > 0, explain
    assert figures["refused_mailbox"].get("bad request", 0) > 0, explain
    assert figures["refused_mailbox"].get("no_stamp", 0) > 0, explain  # strangers without a stamp
    assert figures["driver_drops"].get("malformed rpc", 0) > 0, explain
    assert sum(figures["router_drops"].values()) > 0, explain  # churn and floods (reasons may grow)
    assert figures["refusals"] > 0, explain

    # Memory: flat after warm-up (the bound and its reasons: the benchmark's docstring).
    assert figures["soak_rss_growth_mib"] < soak.RSS_GROWTH_LIMIT_MIB, explain
