"""What the one-process loop (``meshchat.sim.engine``) and the worker processes
(``meshchat.sim.parallel``) both need: the progress steps, the paused collector, the router figures a
worker hands back, and the shape of a simulation a worker runs.

It sits below both, so ``engine`` imports ``parallel`` and ``parallel`` never imports ``engine``
(they used to import each other). It runs nothing itself.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from meshchat.gossip import DropReason

if TYPE_CHECKING:
    from meshchat.sim.clock import EventQueue, VirtualClock
    from meshchat.sim.metrics import Metrics
    from meshchat.sim.network import Network
    from meshchat.sim.results import Results
    from meshchat.sim.scenario import Scenario
    from meshchat.sim.world import World

__all__ = ["PROGRESS_STEPS", "RouterFigures", "SharedSimulation", "collector_paused"]

#: How often ``progress`` is called over a run.
PROGRESS_STEPS = 100


@dataclass(slots=True, kw_only=True)
class RouterFigures:
    """The figures of ``Results`` that come from routers rather than from the metrics."""

    #: Drops by reason, over honest routers (retired ones included).
    drops: dict[DropReason, int]
    #: ``ROUTER_COUNTERS`` summed over honest routers.
    counters: dict[str, int]
    #: Mesh size of each online subscribed honest node at the end.
    meshes: list[int]
    #: Messages Sybils did not forward.
    withheld: int

    def add(self, other: RouterFigures) -> None:
        """Add ``other``'s figures (another worker's) to these."""
        for reason, count in other.drops.items():
            self.drops[reason] += count
        for name, count in other.counters.items():
            self.counters[name] += count
        self.meshes.extend(other.meshes)
        self.withheld += other.withheld


class SharedSimulation(Protocol):
    """What ``meshchat.sim.parallel`` uses of a ``meshchat.sim.engine.Simulation``."""

    scenario: Scenario
    world: World
    clock: VirtualClock
    queue: EventQueue
    network: Network
    metrics: Metrics
    events: int
    disconnects_of_attackers: int
    merged_figures: RouterFigures | None

    def run_to(self, limit: float) -> None:
        """Process every event due at or before ``limit``."""

    def router_figures(self) -> RouterFigures:
        """This process's routers' figures."""

    def results(self, *, wall_seconds: float) -> Results:
        """The run's results from what this process holds."""


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block; restore its previous state after.

    A run allocates millions of short-lived tuples and records but creates no reference cycles (a test
    checks: ``gc.collect()`` finds nothing after a run with every feature on), so the collector's
    passes over a heap of thousands of routers find nothing and cost 12-15 % of the run time.
    Reference counting still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
