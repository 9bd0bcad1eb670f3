"""Who is connected to whom at the start: random regular graphs, small worlds and geographic clusters.

Each generator returns undirected pairs; ``orient`` then picks the dialler of each connection, because
the router treats outbound and inbound peers differently (the D_out quota keeps outbound peers, which
an attacker cannot choose, in every mesh). Every node dials half of its neighbours (rounded either
way), as a node that dials until it has enough peers and accepts the rest would.

The ``bootstrap`` and ``scale-free`` generators grow the network node by node, as real nodes join
one after another: each joining node is the dialler of its connections, and keeps the further addresses
it learned (``Graph.learned``) for redialling later (``meshchat.sim.defence``).

Generators are plain functions of an RNG; nothing here knows about latency or time (the network asks
``Graph.cluster`` to choose a link's latency model).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import assert_never

from meshchat.sim.errors import ScenarioError
from meshchat.sim.scenario import Scenario, TopologyKind

__all__ = [
    "Graph",
    "bootstrapped",
    "build_graph",
    "clustered",
    "orient",
    "preferential",
    "random_regular",
    "small_world",
]

#: Fresh draws tried before giving up on a connected graph. A random regular graph of degree >= 3 is
#: connected with probability -> 1, so a second draw is already rare.
MAX_GRAPH_ATTEMPTS = 20
#: Random edges tried per edge switch that repairs a self loop or a double link; in a sparse graph
#: the repair succeeds within a few tries, in a nearly complete one it may not succeed at all.
MAX_SWITCH_TRIES = 200
#: Fresh pairings tried when switches get stuck (only nearly complete graphs need more than one).
MAX_PAIRING_ATTEMPTS = 200
#: Below this degree a random graph is a matching or a union of cycles: usually disconnected, by nature.
MIN_DEGREE_FOR_CONNECTIVITY = 3

Pair = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Graph:
    """The starting connections of a network."""

    #: Number of nodes, indexed ``0..nodes-1``.
    nodes: int
    #: Connections as ``(dialler, listener)``.
    edges: tuple[Pair, ...]
    #: The geographic cluster of each node (all 0 without clusters).
    cluster: tuple[int, ...]
    #: The bootstrap nodes (bootstrap topology only).
    bootstraps: tuple[int, ...] = ()
    #: Per node, addresses it learned while joining but did not dial (empty without discovery).
    learned: tuple[tuple[int, ...], ...] = ()

    def neighbours(self) -> list[list[int]]:
        """Each node's neighbours, in edge order."""
        adjacency: list[list[int]] = [[] for _ in range(self.nodes)]
        for a, b in self.edges:
            adjacency[a].append(b)
            adjacency[b].append(a)
        return adjacency

    def degrees(self) -> list[int]:
        """Each node's number of connections."""
        return [len(n) for n in self.neighbours()]

    def is_connected(self) -> bool:
        """True if every node can reach every other."""
        return _connected(self.nodes, self.neighbours())


def _key(a: int, b: int) -> Pair:
    return (a, b) if a < b else (b, a)


def _connected(nodes: int, adjacency: list[list[int]]) -> bool:
    if nodes == 0:
        return True
    seen = bytearray(nodes)
    seen[0] = 1
    queue = deque([0])
    count = 1
    while queue:
        for other in adjacency[queue.popleft()]:
            if not seen[other]:
                seen[other] = 1
                count += 1
                queue.append(other)
    return count == nodes


class _EdgeSet:
    """Undirected edges with O(1) add, remove, membership and uniform random choice."""

    __slots__ = ("_index", "_list")

    def __init__(self) -> None:
        self._list: list[Pair] = []
        self._index: dict[Pair, int] = {}

    def __contains__(self, pair: Pair) -> bool:
        return _key(*pair) in self._index

    def add(self, a: int, b: int) -> None:
        key = _key(a, b)
        self._index[key] = len(self._list)
        self._list.append(key)

    def remove(self, pair: Pair) -> None:
        key = _key(*pair)
        position = self._index.pop(key)
        last = self._list.pop()
        if last != key:
            self._list[position] = last
            self._index[last] = position

    def __len__(self) -> int:
        return len(self._list)

    def choice(self, rng: random.Random) -> Pair:
        return self._list[rng.randrange(len(self._list))]

    def pairs(self) -> list[Pair]:
        return list(self._list)


def _switch_in(edges: _EdgeSet, u: int, v: int, rng: random.Random) -> bool:
    """Add the unusable pair (u, v) by rewiring a random edge (x, y) into (u, x) and (v, y)."""
    if not edges:
        return False
    for _ in range(MAX_SWITCH_TRIES):
        x, y = edges.choice(rng)
        if rng.random() < 0.5:
            x, y = y, x
        if x in (u, v) or y in (u, v) or (u, x) in edges or (v, y) in edges:
            continue
        edges.remove((x, y))
        edges.add(u, x)
        edges.add(v, y)
        return True
    return False


def random_regular(nodes: int, degree: int, rng: random.Random) -> list[Pair]:
    """A random ``degree``-regular simple graph: the configuration model, its self loops and double
    links repaired by edge switches (a fresh pairing if a dense graph gets stuck).

    If ``nodes * degree`` is odd, the last node has ``degree - 1`` neighbours: no such graph exists.
    """
    if not 0 <= degree < nodes:
        raise ScenarioError("degree", f"{degree} is not below the node count {nodes}")
    if degree == nodes - 1 and nodes * degree % 2 == 0:
        return [(a, b) for a in range(nodes) for b in range(a + 1, nodes)]  # the only one there is
    for _ in range(MAX_PAIRING_ATTEMPTS):
        stubs = [node for node in range(nodes) for _ in range(degree)]
        if len(stubs) % 2:
            stubs.pop()
        rng.shuffle(stubs)
        edges = _EdgeSet()
        unusable: list[Pair] = []
        for i in range(0, len(stubs), 2):
            u, v = stubs[i], stubs[i + 1]
            if u == v or (u, v) in edges:
                unusable.append((u, v))
            else:
                edges.add(u, v)
        if all(_switch_in(edges, u, v, rng) for u, v in unusable):
            return edges.pairs()
    raise ScenarioError("degree", f"cannot build a {degree}-regular graph on {nodes} nodes; lower the degree")


def small_world(nodes: int, degree: int, rewire: float, rng: random.Random) -> list[Pair]:
    """Watts-Strogatz: a ring where each node links ``degree / 2`` neighbours on each side, then each
    link's far end moves to a random node with probability ``rewire`` (no self loops, no double links)."""
    if degree % 2 or degree >= nodes:
        raise ScenarioError("degree", "a small world needs an even degree below the node count")
    edges = _EdgeSet()
    for node in range(nodes):
        for step in range(1, degree // 2 + 1):
            edges.add(node, (node + step) % nodes)
    for node in range(nodes):
        for step in range(1, degree // 2 + 1):
            if rng.random() >= rewire:
                continue
            old = (node + step) % nodes
            if (node, old) not in edges:
                continue  # already rewired away by the other end
            target = rng.randrange(nodes)
            if target == node or (node, target) in edges:
                continue  # keep the link rather than retry: rewiring stays a coin flip per link
            edges.remove((node, old))
            edges.add(node, target)
    return edges.pairs()


def cluster_bounds(nodes: int, clusters: int) -> list[range]:
    """The node indices of each cluster: contiguous, sizes differing by at most one."""
    return [range(c * nodes // clusters, (c + 1) * nodes // clusters) for c in range(clusters)]


def clustered(nodes: int, clusters: int, degree: int, bridges: int, rng: random.Random) -> list[Pair]:
    """Random regular graphs inside each cluster, plus ``bridges`` random links per pair of clusters."""
    bounds = cluster_bounds(nodes, clusters)
    pairs: list[Pair] = []
    for block in bounds:
        pairs.extend((block[a], block[b]) for a, b in random_regular(len(block), degree, rng))
    seen = {_key(a, b) for a, b in pairs}
    for i, first in enumerate(bounds):
        for second in bounds[i + 1 :]:
            wanted = min(bridges, len(first) * len(second))
            added = 0
            while added < wanted:
                key = _key(rng.choice(first), rng.choice(second))
                if key not in seen:
                    seen.add(key)
                    pairs.append(key)
                    added += 1
    return pairs


def bootstrapped(
    nodes: int, bootstraps: int, bootstrap_dials: int, degree: int, *, book: int, rng: random.Random
) -> tuple[list[Pair], list[tuple[int, ...]]]:
    """Nodes joining one by one through bootstrap nodes: ``(dialler, listener)`` pairs and each node's
    learned addresses.

    Bootstrap nodes ``0..bootstraps-1`` dial each other. Every later node dials ``bootstrap_dials``
    random bootstraps, learns through them the addresses of ``degree + book`` random nodes that joined
    before it (a bootstrap knows everyone who connected to it; a DHT walk from it finds as much),
    dials ``degree`` of them and keeps the rest. Early nodes collect more inbound connections.
    """
    pairs: list[Pair] = [(b, a) for b in range(bootstraps) for a in range(b)]
    learned: list[tuple[int, ...]] = [() for _ in range(nodes)]
    for node in range(bootstraps, nodes):
        pairs.extend((node, b) for b in rng.sample(range(bootstraps), bootstrap_dials))
        offered = rng.sample(range(bootstraps, node), min(degree + book, node - bootstraps))
        pairs.extend((node, other) for other in offered[:degree])
        learned[node] = tuple(offered[degree:])
    return pairs, learned


def preferential(
    nodes: int, links: int, book: int, rng: random.Random
) -> tuple[list[Pair], list[tuple[int, ...]]]:
    """Barabasi-Albert preferential attachment: ``(dialler, listener)`` pairs and learned addresses.

    The first ``2 * links + 1`` nodes form a clique, so the network has ``links`` connections per node
    (a mean degree of ``2 * links``); every later node dials ``links`` distinct earlier
    nodes, each drawn with probability proportional to its connections, and keeps the addresses of
    ``book`` further random earlier nodes.
    """
    seed = min(2 * links + 1, nodes)
    pairs: list[Pair] = [(b, a) for b in range(seed) for a in range(b)]
    ends = [node for pair in pairs for node in pair]  # each node once per connection
    learned: list[tuple[int, ...]] = [() for _ in range(nodes)]
    for node in range(seed, nodes):
        chosen: dict[int, None] = {}
        for _ in range(links * MAX_SWITCH_TRIES):  # distinct draws; hubs repeat, so allow many
            if len(chosen) == links:
                break
            chosen[ends[rng.randrange(len(ends))]] = None
        for other in rng.sample(range(node), node):  # rare: fill up uniformly
            if len(chosen) == links:
                break
            chosen.setdefault(other)
        for other in chosen:
            pairs.append((node, other))
            ends += (node, other)
        rest = [n for n in rng.sample(range(node), min(book + links, node)) if n not in chosen]
        learned[node] = tuple(rest[:book])
    return pairs, learned


def orient(pairs: list[Pair], rng: random.Random) -> list[Pair]:
    """Choose a dialler for each pair so that every node dials half its neighbours (+-1/2).

    An Eulerian orientation: odd-degree nodes are joined to a virtual node, which makes every degree
    even; walking closed trails (Hierholzer) and orienting each edge the way it is walked balances
    every node; dropping the virtual edges leaves odd nodes one off. Trails start at random nodes and
    leave along random edges, so which half a node dials is random.
    """
    nodes = 1 + max((max(pair) for pair in pairs), default=-1)
    virtual = nodes
    ends: list[Pair] = list(pairs)
    degree = [0] * nodes
    for a, b in pairs:
        degree[a] += 1
        degree[b] += 1
    ends += [(node, virtual) for node in range(nodes) if degree[node] % 2]
    incident: list[list[int]] = [[] for _ in range(nodes + 1)]
    for edge, (a, b) in enumerate(ends):
        incident[a].append(edge)
        incident[b].append(edge)
    for edges in incident:
        rng.shuffle(edges)
    used = bytearray(len(ends))
    directed: list[Pair | None] = [None] * len(pairs)
    starts = list(range(nodes))
    rng.shuffle(starts)
    for start in starts:
        stack = [start]
        while stack:
            here = stack[-1]
            edges = incident[here]
            while edges and used[edges[-1]]:
                edges.pop()
            if not edges:
                stack.pop()
                continue
            edge = edges.pop()
            used[edge] = 1
            a, b = ends[edge]
            there = b if a == here else a
            if edge < len(pairs):
                directed[edge] = (here, there)
            stack.append(there)
    return [pair for pair in directed if pair is not None]


def build_graph(scenario: Scenario, rng: random.Random) -> Graph:
    """The starting topology of ``scenario``'s honest nodes, connected whenever the knobs allow."""
    nodes, degree = scenario.nodes, scenario.degree
    cluster = [0] * nodes
    must_connect = degree >= MIN_DEGREE_FOR_CONNECTIVITY
    if scenario.topology is TopologyKind.CLUSTERS:
        for c, block in enumerate(cluster_bounds(nodes, scenario.clusters)):
            for node in block:
                cluster[node] = c
        must_connect = must_connect and (scenario.bridges > 0 or scenario.clusters == 1)
    if scenario.topology is TopologyKind.BOOTSTRAP:
        pairs, learned = bootstrapped(
            nodes, scenario.bootstraps, scenario.bootstrap_dials, degree, book=scenario.address_book, rng=rng
        )
        return Graph(
            nodes=nodes,
            edges=tuple(pairs),
            cluster=tuple(cluster),
            bootstraps=tuple(range(scenario.bootstraps)),
            learned=tuple(learned),
        )
    if scenario.topology is TopologyKind.SCALE_FREE:
        pairs, learned = preferential(nodes, max(1, degree // 2), scenario.address_book, rng)
        return Graph(nodes=nodes, edges=tuple(pairs), cluster=tuple(cluster), learned=tuple(learned))
    for _ in range(MAX_GRAPH_ATTEMPTS):
        match scenario.topology:
            case TopologyKind.RANDOM_REGULAR:
                pairs = random_regular(nodes, degree, rng)
            case TopologyKind.SMALL_WORLD:
                pairs = small_world(nodes, degree, scenario.rewire, rng)
            case TopologyKind.CLUSTERS:
                pairs = clustered(nodes, scenario.clusters, degree, scenario.bridges, rng)
            case TopologyKind.BOOTSTRAP | TopologyKind.SCALE_FREE:
                raise AssertionError("grown node by node above")
            case _:
                assert_never(scenario.topology)
        graph = Graph(nodes=nodes, edges=tuple(orient(pairs, rng)), cluster=tuple(cluster))
        if not must_connect or graph.is_connected():
            return graph
    raise ScenarioError("topology", f"no connected graph in {MAX_GRAPH_ATTEMPTS} draws; raise the degree")
