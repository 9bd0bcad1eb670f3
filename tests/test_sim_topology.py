"""Starting topologies: degrees, simplicity, connectivity, dial directions and cluster latencies."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.sim import FixedLatency, Scenario, Simulation, TopologyKind, UniformLatency
from meshchat.sim.topology import (
    Graph,
    build_graph,
    cluster_bounds,
    clustered,
    orient,
    random_regular,
    small_world,
)


def assert_simple(pairs: list[tuple[int, int]], nodes: int) -> None:
    keys = [(min(a, b), max(a, b)) for a, b in pairs]
    assert all(a != b for a, b in keys), "self loop"
    assert len(set(keys)) == len(keys), "double link"
    assert all(0 <= a < nodes and 0 <= b < nodes for a, b in keys)


def degrees(pairs: list[tuple[int, int]], nodes: int) -> list[int]:
    count = Counter(x for pair in pairs for x in pair)
    return [count[n] for n in range(nodes)]


@settings(max_examples=60)
@given(nodes=st.integers(2, 300), degree=st.integers(0, 12), seed=st.integers(0, 2**32))
def test_random_regular_graphs_are_simple_and_regular(nodes: int, degree: int, seed: int) -> None:
    degree = min(degree, nodes - 1)
    pairs = random_regular(nodes, degree, random.Random(seed))
    assert_simple(pairs, nodes)
    got = degrees(pairs, nodes)
    if nodes * degree % 2 == 0:
        assert got == [degree] * nodes
    else:
        # No such graph exists: exactly one node is one short.
        assert sorted(got) == [degree - 1] + [degree] * (nodes - 1)


def test_dense_and_tiny_graphs_are_possible() -> None:
    assert len(random_regular(8, 7, random.Random(1))) == 28
    for nodes in range(2, 16):
        for degree in range(nodes):
            for seed in range(3):
                pairs = random_regular(nodes, degree, random.Random(seed))
                assert_simple(pairs, nodes)
                assert sum(degrees(pairs, nodes)) == nodes * degree - (nodes * degree % 2)


@settings(max_examples=40)
@given(nodes=st.integers(10, 300), half=st.integers(1, 4), seed=st.integers(0, 2**32))
def test_small_worlds_keep_the_link_count_and_stay_simple(nodes: int, half: int, seed: int) -> None:
    pairs = small_world(nodes, 2 * half, 0.2, random.Random(seed))
    assert_simple(pairs, nodes)
    assert len(pairs) == nodes * half


def test_a_small_world_without_rewiring_is_the_ring_lattice() -> None:
    pairs = small_world(20, 4, 0.0, random.Random(1))
    assert {(min(a, b), max(a, b)) for a, b in pairs} == {
        (min(i, (i + s) % 20), max(i, (i + s) % 20)) for i in range(20) for s in (1, 2)
    }


def test_clusters_are_regular_inside_with_few_bridges() -> None:
    nodes, k, degree, bridges = 120, 4, 6, 3
    pairs = clustered(nodes, k, degree, bridges, random.Random(2))
    assert_simple(pairs, nodes)
    cluster = {n: c for c, block in enumerate(cluster_bounds(nodes, k)) for n in block}
    inside = [p for p in pairs if cluster[p[0]] == cluster[p[1]]]
    across = [p for p in pairs if cluster[p[0]] != cluster[p[1]]]
    assert degrees(inside, nodes) == [degree] * nodes
    assert len(across) == bridges * k * (k - 1) // 2
    assert Counter(frozenset((cluster[a], cluster[b])) for a, b in across) == {
        frozenset((i, j)): bridges for i in range(k) for j in range(i + 1, k)
    }


@settings(max_examples=30)
@given(nodes=st.integers(4, 200), degree=st.integers(2, 10), seed=st.integers(0, 2**32))
def test_each_node_dials_about_half_its_neighbours(nodes: int, degree: int, seed: int) -> None:
    degree = min(degree, nodes - 1)
    rng = random.Random(seed)
    directed = orient(random_regular(nodes, degree, rng), rng)
    out = Counter(a for a, _ in directed)
    inbound = Counter(b for _, b in directed)
    assert sorted((min(a, b), max(a, b)) for a, b in directed) == sorted(
        (min(a, b), max(a, b)) for a, b in random_regular(nodes, degree, random.Random(seed))
    )
    for node in range(nodes):
        assert abs(out[node] - inbound[node]) <= 1, (node, out[node], inbound[node])


@pytest.mark.parametrize("topology", list(TopologyKind))
def test_built_graphs_are_connected(topology: TopologyKind) -> None:
    for seed in range(5):
        graph = build_graph(Scenario(nodes=200, degree=4, topology=topology, seed=seed), random.Random(seed))
        assert isinstance(graph, Graph)
        assert graph.is_connected()
        assert len(graph.edges) >= 200 * 4 // 2


def test_clusters_without_bridges_are_islands() -> None:
    scenario = Scenario(nodes=40, degree=3, topology=TopologyKind.CLUSTERS, clusters=2, bridges=0)
    graph = build_graph(scenario, random.Random(1))
    assert not graph.is_connected()
    assert all(graph.cluster[a] == graph.cluster[b] for a, b in graph.edges)


def test_cluster_links_are_fast_and_bridges_slow() -> None:
    scenario = Scenario(
        nodes=60,
        degree=4,
        topology=TopologyKind.CLUSTERS,
        clusters=3,
        bridges=4,
        latency=UniformLatency(0.1, 0.3),
        cluster_latency=FixedLatency(0.01),
        messages=1,
    )
    sim = Simulation(scenario)
    sim.run_until(2.0)  # every dial has completed
    cluster = sim.world.graph.cluster
    seen_inside = seen_across = 0
    for node in sim.world.honest:
        for other, link in node.links.items():
            if cluster[node.index] == cluster[other]:
                assert link.latency == 0.01
                seen_inside += 1
            else:
                assert 0.1 <= link.latency <= 0.3
                seen_across += 1
    assert seen_inside == 2 * len([e for e in sim.world.graph.edges if cluster[e[0]] == cluster[e[1]]])
    assert seen_across == 2 * 3 * 4
