"""What a removal or censorship experiment reports: the same run with meshchat's defence on and off.

``meshchat sim --scenario NAME`` runs one named experiment (``meshchat.sim.experiments`` for the
gossip-level ones, ``meshchat.sim.store_experiments`` for store-and-forward ones) and prints one row
per arm. An arm is one full simulation; "defence on" uses the means meshchat has (peer exchange, DHT
re-discovery, outbound quotas and scoring, mailboxes, carriers, reconnecting), "defence off" the same
network and trouble without them. Both arms share the seed, so the difference is the defence alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Experiment", "ExperimentArm", "ExperimentReport"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentArm:
    """One simulation of an experiment: what arrived and how fast."""

    #: "defence on" or "defence off" (or another short label the experiment explains).
    label: str
    #: Deliveries that happened within the deadline (message x eligible recipient pairs).
    delivered: int
    #: Deliveries expected.
    expected: int
    #: Median latency of the deliveries, seconds (None: nothing delivered).
    p50_s: float | None
    #: 99th percentile latency of the deliveries, seconds (None: nothing delivered).
    p99_s: float | None

    @property
    def delivery(self) -> float:
        """Fraction of expected deliveries that happened (1.0 when nothing was expected)."""
        return self.delivered / self.expected if self.expected else 1.0

    def to_dict(self) -> dict[str, object]:
        """The arm as JSON-ready values."""
        return {
            "label": self.label,
            "delivered": self.delivered,
            "expected": self.expected,
            "delivery": self.delivery,
            "p50_s": self.p50_s,
            "p99_s": self.p99_s,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentReport:
    """An experiment's result: what was done to the network, and each arm's figures."""

    #: The scenario name (``meshchat sim --scenario NAME``).
    name: str
    #: One or two sentences: the network, what was removed or censored, and when.
    summary: str
    #: The arms, "defence on" first.
    arms: tuple[ExperimentArm, ...]
    #: Further observations worth printing (counts of reconnections, cut connections, ...).
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """The report as JSON-ready values."""
        return {
            "name": self.name,
            "summary": self.summary,
            "arms": [arm.to_dict() for arm in self.arms],
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Experiment:
    """A named experiment: ``run(seed, scale)`` performs every arm. ``scale`` in ``(0, 1]`` shrinks
    the network and the workload for quick runs (tests use ~0.1; 1.0 is the published figure)."""

    #: The scenario name.
    name: str
    #: One line for ``meshchat sim --help`` and the docs.
    description: str
    #: Runs the experiment.
    run: Callable[[int, float], ExperimentReport]
