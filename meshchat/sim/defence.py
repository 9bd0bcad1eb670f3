"""What a node does when its connections are taken away: redial peers it knows, reconnect cut links.

``ConnectionKeeper`` (``meshchat.gossip.keeper``, re-exported here) is a sans-IO policy for one node: it
keeps a bounded address book and, whenever the node's connections fall below a floor, names peers to
dial; when the book has nothing left to try it asks for a DHT lookup. Real nodes run the same class
(``meshchat.net.keeper_driver``).

``DefendedSimulation`` is the simulator's driver of these defences: every ``KEEPER_INTERVAL`` virtual
seconds it runs each online honest node's keeper and performs the dials; with ``reconnect_cuts`` a
connection a censor cut (``Scenario.cut_after``) is redialled at once by the node that dialled it
(a new connection, with a new byte budget). The gossip routers are the real ones: they hear
``PeerDisconnected``/``PeerConnected`` and graft again on their own.

What it is not: the keeper itself; this module is only the simulator's driver of it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from meshchat.gossip.keeper import KEEPER_INTERVAL, LOOKUP_RESULTS, ConnectionKeeper, KeeperConfig, KeeperStep
from meshchat.sim.clock import Event
from meshchat.sim.engine import PROGRESS_STEPS, Simulation, collector_paused
from meshchat.sim.network import Node, Role
from meshchat.sim.results import Results
from meshchat.sim.scenario import Scenario

__all__ = [
    "KEEPER_INTERVAL",
    "LOOKUP_RESULTS",
    "ConnectionKeeper",
    "Defence",
    "DefendedSimulation",
    "KeeperConfig",
    "KeeperStep",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Defence:
    """Which defences a ``DefendedSimulation`` runs."""

    #: Redial below a floor (None: never).
    keeper: KeeperConfig | None = None
    #: A connection a censor cut is redialled at once by its dialler.
    reconnect_cuts: bool = False
    #: Seconds from the start before keepers dial: the network forms by its topology's dials first
    #: (meanwhile keepers only note whom their node is connected to).
    keep_from: float = 0.0


class DefendedSimulation(Simulation):
    """A ``Simulation`` whose honest nodes also run the defences of ``defence``."""

    def __init__(self, scenario: Scenario, defence: Defence) -> None:
        """Build the run; keepers start with the addresses each node learned while joining."""
        super().__init__(scenario)
        self.defence = defence
        world = self.world
        learned = world.graph.learned
        self.keepers: list[ConnectionKeeper] = []
        if defence.keeper is not None:
            for node in world.honest:
                addresses = learned[node.index] if learned else ()
                self.keepers.append(
                    ConnectionKeeper(
                        defence.keeper,
                        rng=random.Random(f"meshchat-sim/{scenario.seed}/keeper/{node.index}"),
                        addresses=[world.honest[i].peer_id for i in addresses],
                    )
                )
        self._lookup_rng = random.Random(f"meshchat-sim/{scenario.seed}/lookup")
        #: Dials the keepers made.
        self.redials = 0
        #: DHT lookups the keepers asked for and could make (the node still had a connection).
        self.lookups = 0
        #: Cut connections redialled.
        self.reconnects = 0

    def run(self, progress: Callable[[float], None] | None = None) -> Results:
        """Run to the end, stopping every ``KEEPER_INTERVAL`` to let the keepers act."""
        if self.scenario.workers > 1:
            raise ValueError("the defences run with one worker")
        started = time.perf_counter()  # wall time, only for the report
        duration = self.scenario.duration
        steps = max(1, int(duration / KEEPER_INTERVAL))
        reported = 0
        with collector_paused():
            for step in range(1, steps + 1):
                self.run_until(duration * step / steps)
                if self.keepers:
                    self._keep(act=self.clock.elapsed >= self.defence.keep_from)
                if progress is not None and step * PROGRESS_STEPS // steps > reported:
                    reported = step * PROGRESS_STEPS // steps
                    progress(step / steps)
        return self.results(wall_seconds=time.perf_counter() - started)

    def _keep(self, *, act: bool) -> None:
        """Run every online honest node's keeper; before ``keep_from`` (not ``act``) they only learn
        whom their node is connected to, as a peer store does."""
        now = self.clock.now
        nodes = self.network.nodes
        online: list[Node] | None = None
        for node, keeper in zip(self.world.honest, self.keepers, strict=True):
            if node.router is None:
                continue
            connected = [nodes[i].peer_id for i in node.links]
            if not act:
                keeper.learn(connected)
                continue
            step = keeper.tick(now=now, connected=connected)
            for peer in step.dial:
                other = self.network.by_peer_id[peer]
                self.redials += 1
                self._dial(node, other)  # a dead address fails when it would open (counted there)
            if step.lookup and node.links:
                if online is None:
                    online = [n for n in nodes if n.router is not None and n.role is Role.HONEST]
                found = self._lookup_rng.sample(online, min(LOOKUP_RESULTS, len(online)))
                keeper.learn(n.peer_id for n in found if n is not node)
                self.lookups += 1

    def _on_close(self, event: Event) -> None:
        node: Node = event[3]
        other: Node = event[4]
        link = node.links.get(other.index)
        cut = link is not None and link.id == event[5] and link.cut
        super()._on_close(event)
        if not (cut and self.defence.reconnect_cuts and link is not None):
            return
        dialler, listener = (node, other) if link.dialler == node.index else (other, node)
        if dialler.router is not None and listener.router is not None:
            self.reconnects += 1
            self._dial(dialler, listener)
