"""What a node does when its connections are taken away: redial peers it knows, reconnect cut links.

``ConnectionKeeper`` is a sans-IO policy for one node: it keeps a bounded address book (the addresses
the node learned while joining, through bootstraps, the DHT and peer exchange, plus every peer it was
connected to) and, whenever the node's connections fall below a floor, names peers to dial. When the
book has nothing left to try it asks for a DHT lookup: the driver finds random nodes through a
connection the node still has (a Kademlia random walk returns ``LOOKUP_RESULTS`` of them).

``DefendedSimulation`` is the simulator's driver of these defences: every ``KEEPER_INTERVAL`` virtual
seconds it runs each online honest node's keeper and performs the dials; with ``reconnect_cuts`` a
connection a censor cut (``Scenario.cut_after``) is redialled at once by the node that dialled it
(a new connection, with a new byte budget). The gossip routers are the real ones: they hear
``PeerDisconnected``/``PeerConnected`` and graft again on their own.

What it is not: part of meshchat's network driver. ``meshchat.net`` today dials bootstrap peers,
mailboxes and peer-exchange offers, but does not redial when its connections drop; this module is the
model of that missing piece, written sans-IO so the driver can run the same class.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from meshchat.gossip.messages import PeerId
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

#: Seconds between two checks of a node's connection count: a heartbeat's worth, so a node that lost
#: its peers is dialling again before its router's next mesh maintenance but one.
KEEPER_INTERVAL = 1.0
#: Peers a DHT random walk returns: Kademlia's bucket size k = 20.
LOOKUP_RESULTS = 20
#: Seconds a dial may take before the keeper stops counting it as pending: several times the two
#: round trips of a dial over the slowest default link (4 x 150 ms).
DIAL_PENDING = 3.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeeperConfig:
    """When and how far a node redials."""

    #: Below this many connections the node dials more: the mesh's ``d_lo`` (fewer connections
    #: cannot hold a healthy mesh).
    floor: int = 4
    #: It dials up to this many connections: the mesh degree ``d``.
    target: int = 6
    #: Seconds before an address is dialled again (after a failed dial or a dropped connection).
    retry_after: float = 30.0
    #: Most addresses kept: a peer store holds a few dozen per node; the oldest go first.
    book_size: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.target:
            raise ValueError(f"need 0 < floor <= target, not {self.floor}, {self.target}")
        if self.book_size < self.target or self.retry_after <= 0:
            raise ValueError("book_size must hold at least target addresses; retry_after must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeeperStep:
    """What a keeper wants done now."""

    #: Peers to dial.
    dial: tuple[PeerId, ...] = ()
    #: True: look up random nodes in the DHT (through a remaining connection) and ``learn`` them.
    lookup: bool = False


class ConnectionKeeper:
    """One node's redial policy. ``tick`` it with its current connections; dial what it names."""

    __slots__ = ("_book", "_config", "_pending", "_rng")

    def __init__(self, config: KeeperConfig, *, rng: random.Random, addresses: Iterable[PeerId] = ()) -> None:
        """A keeper that starts out knowing ``addresses``."""
        self._config = config
        self._rng = rng
        #: Address -> earliest time it may be dialled again; insertion order is age (oldest first).
        self._book: dict[PeerId, float] = {}
        #: Dials made and not yet connected: peer -> when the keeper stops waiting for it.
        self._pending: dict[PeerId, float] = {}
        self.learn(addresses)

    def learn(self, peers: Iterable[PeerId]) -> None:
        """Remember ``peers`` (already known ones keep their retry time); evict the oldest past the bound."""
        book = self._book
        for peer in peers:
            if peer not in book:
                book[peer] = 0.0
                if len(book) > self._config.book_size:
                    del book[next(iter(book))]

    def known(self) -> int:
        """Addresses in the book."""
        return len(self._book)

    def tick(self, *, now: float, connected: Collection[PeerId]) -> KeeperStep:
        """The dials (and whether a lookup) needed now, given the peers the node is connected to."""
        config = self._config
        self.learn(connected)
        pending = self._pending
        for peer in [p for p, until in pending.items() if until <= now or p in connected]:
            del pending[peer]
        have = len(connected) + len(pending)
        if len(connected) >= config.floor or have >= config.target:
            return KeeperStep()
        want = config.target - have
        candidates = [
            p for p, ready in self._book.items() if ready <= now and p not in connected and p not in pending
        ]
        chosen = tuple(self._rng.sample(candidates, min(want, len(candidates))))
        for peer in chosen:
            self._book[peer] = now + config.retry_after
            pending[peer] = now + DIAL_PENDING
        return KeeperStep(dial=chosen, lookup=len(chosen) < want)


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
