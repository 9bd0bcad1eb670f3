"""What a simulation run reports: one frozen ``Results`` record, written as sorted-key JSON.

Every figure except ``wall_seconds`` is a function of the scenario and seed alone (and the worker
count: another count is another run), so ``to_json()`` leaves the wall time out by default: two runs
of the same scenario give byte-identical JSON, which is what ``meshchat sim --json`` writes. The wall
time stays on the record (``Results.wall_seconds``, in the command's table) and joins the JSON only
when asked for with ``include_wall=True``. Definitions (also in the README of
the command, ``meshchat sim --help``):

- ``delivery_ratio``: deliveries counted / deliveries expected. A delivery is expected for every pair
  (message, honest subscribed node other than its publisher that was online for the whole message
  lifetime, from its publish to ``drain`` seconds later); it is counted if that node's router
  delivered the message within the lifetime. Nodes that churned during a lifetime are left out of
  that message's pairs (they are neither expected nor counted).
- ``latency_ms``: over the counted deliveries, publish to delivery, virtual milliseconds.
- ``duplicates_per_message``: over every (message, honest node other than the publisher) that received
  at least one copy, the mean of copies received minus one. Every copy counts, including those the
  router then drops as duplicates.
- ``bytes_per_node``: pubsub bytes sent by each honest node over the whole run (control included).
- ``drops``: ``network`` (``meshchat.sim.network.LinkDrop``) and ``router`` (``DropReason``, summed
  over every honest router, including the ones churn replaced).

It is not a trace: per-node, per-message detail stays in ``meshchat.sim.metrics`` for tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["CDF_POINTS", "Results", "percentile", "summarize"]

#: Points of the latency CDF kept in the results (every percentile, 0 to 100): enough to plot.
CDF_POINTS = 101
#: Decimal places kept for times and ratios: far below anything the simulation resolves, and it keeps
#: the JSON readable.
DIGITS = 6


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0-100) of ``ordered`` (sorted, non-empty)."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(
    values: Sequence[float], *, scale: float = 1.0, ordered: bool = False
) -> dict[str, float | None]:
    """``mean``, ``p50``, ``p90``, ``p99`` and ``max`` of ``values`` times ``scale`` (None if empty).

    Pass ``ordered=True`` if ``values`` is already sorted (a run's latencies: millions of them).
    """
    if not values:
        return dict.fromkeys(("mean", "p50", "p90", "p99", "max"))
    ordered_values = values if ordered else sorted(values)
    return {
        "mean": round(math.fsum(ordered_values) / len(ordered_values) * scale, DIGITS),
        "p50": round(percentile(ordered_values, 50) * scale, DIGITS),
        "p90": round(percentile(ordered_values, 90) * scale, DIGITS),
        "p99": round(percentile(ordered_values, 99) * scale, DIGITS),
        "max": round(ordered_values[-1] * scale, DIGITS),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Results:
    """The figures of one run (see the module docstring for each definition)."""

    #: The seed.
    seed: int
    #: Honest nodes.
    nodes: int
    #: Honest messages published.
    messages: int
    #: ``"envelope"`` (decode + expiry) or ``"fast-path"`` (size and version byte).
    validation: str
    #: Validator verdicts over all nodes: ``accepted``, ``rejected``.
    validations: Mapping[str, int]
    #: Deliveries counted / expected; None if none were expected.
    delivery_ratio: float | None
    #: Deliveries counted.
    deliveries: int
    #: Deliveries expected.
    expected_deliveries: int
    #: ``mean``, ``p50``, ``p90``, ``p99``, ``max`` of the counted deliveries' latency, ms.
    latency_ms: Mapping[str, float | None]
    #: The latency at every percentile 0..100, ms (empty if nothing was delivered).
    latency_cdf_ms: tuple[float, ...]
    #: Mean extra copies per node per message; None if no copy was received.
    duplicates_per_message: float | None
    #: ``mean``, ``p50``, ``p90``, ``p99``, ``max`` bytes sent per honest node.
    bytes_per_node: Mapping[str, float | None]
    #: Final mesh degree of online subscribed honest nodes: ``mean``, ``min``, ``max``.
    mesh_degree: Mapping[str, float | None]
    #: Lost RPCs: ``network`` by ``LinkDrop``, ``router`` by ``DropReason``.
    drops: Mapping[str, Mapping[str, int]]
    #: Summed honest router counters (messages sent, IWANT served, IDONTWANT suppressions, RPCs).
    router: Mapping[str, int]
    #: Delivery ratio of the messages published in each time bucket: ``t`` (s from the first
    #: publish), ``messages``, ``delivery_ratio``.
    delivery_over_time: tuple[Mapping[str, float | int | None], ...]
    #: Attack figures: invalid and junk messages delivered to honest nodes, messages Sybils withheld,
    #: the eclipse victim's delivery ratio.
    attack: Mapping[str, float | int | None]
    #: Events processed.
    events: int
    #: Virtual seconds simulated.
    virtual_seconds: float
    #: Wall-clock seconds the run took (the only figure that differs between identical runs, so it is
    #: left out of ``to_dict``/``to_json`` unless ``include_wall=True``).
    wall_seconds: float
    #: The scenario's knobs.
    parameters: Mapping[str, object]

    def to_dict(self, *, include_wall: bool = False) -> dict[str, object]:
        """The results as JSON-ready values; ``wall_seconds`` only with ``include_wall=True``."""
        out: dict[str, object] = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["latency_cdf_ms"] = list(self.latency_cdf_ms)
        out["delivery_over_time"] = [dict(b) for b in self.delivery_over_time]
        if not include_wall:
            del out["wall_seconds"]
        return out

    def to_json(self, *, include_wall: bool = False, indent: int | None = None) -> str:
        """Sorted-key JSON, byte-identical for the same scenario unless ``include_wall=True``."""
        return json.dumps(self.to_dict(include_wall=include_wall), sort_keys=True, indent=indent)
