"""Whole simulation runs: determinism, delivery, latency bounds, partitions, churn and attackers.

Each test runs a small seeded network of real routers on the virtual clock (well under a second);
the 1,000-node benchmark is marked slow.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshchat.gossip import GossipConfig
from meshchat.gossip.messages import RPC, PeerId
from meshchat.sim import (
    FixedLatency,
    Partition,
    PlottingUnavailable,
    Reconnect,
    Results,
    Role,
    Scenario,
    Simulation,
    TopologyKind,
    run,
)
from meshchat.sim.clock import CLOCK_OFFSET_RANGE
from meshchat.sim.network import Node
from meshchat.sim.plot import plot_results
from meshchat.sim.topology import MIN_DEGREE_FOR_CONNECTIVITY

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Times live on a clock offset by up to 1e8 s, where a double resolves ~15 ns: compare to 1 us.
TIME_TOLERANCE = 1e-6
#: A scenario that exercises every source of randomness: loss, jitter, bandwidth, churn, attackers.
BUSY = Scenario(
    nodes=40,
    degree=5,
    messages=30,
    seed=11,
    loss=0.02,
    jitter=0.01,
    bandwidth=200_000,
    churn=0.1,
    sybils=3,
    sybil_degree=5,
    flooders=1,
    spammers=1,
    spam_rate=2.0,
    partition=Partition(at=6, heal=7),
)


def shortest_delays(sim: Simulation, source: Node) -> list[float]:
    """Dijkstra over the open links' base delays: no message can beat these."""
    best = [math.inf] * len(sim.network.nodes)
    best[source.index] = 0.0
    heap = [(0.0, source.index)]
    while heap:
        delay, index = heapq.heappop(heap)
        if delay > best[index]:
            continue
        for other, link in sim.network.nodes[index].links.items():
            if delay + link.latency < best[other]:
                best[other] = delay + link.latency
                heapq.heappush(heap, (best[other], other))
    return best


# --- determinism --------------------------------------------------------------------------------------


def test_the_same_seed_gives_byte_identical_results() -> None:
    first, second = run(BUSY), run(BUSY)
    assert first.to_json() == second.to_json()  # the default leaves the wall time out
    assert "wall_seconds" not in first.to_json()
    assert json.loads(first.to_json(include_wall=True))["wall_seconds"] == first.wall_seconds
    assert first.events > 3_000  # it did something
    assert first.drops["network"]["loss"] > 0 and first.attack["sybil_withheld"] > 0


def test_a_different_seed_gives_different_results() -> None:
    other = dataclasses.replace(BUSY, seed=12)
    assert run(BUSY).to_json(include_wall=False) != run(other).to_json(include_wall=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_results_do_not_depend_on_string_hashing(workers: int) -> None:
    """Two processes with different PYTHONHASHSEED (set iteration order) agree byte for byte."""
    code = (
        "from meshchat.sim import run, Scenario;"
        "scenario = Scenario(nodes=30, degree=4, messages=15, seed=3, churn=0.1, sybils=2,"
        f" workers={workers});"
        "print(run(scenario).to_json(include_wall=False))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_a_run_makes_no_reference_cycles_so_pausing_the_collector_is_safe() -> None:
    sim = Simulation(dataclasses.replace(BUSY, messages=60))
    gc.collect()
    assert gc.isenabled()
    sim.run()
    assert gc.isenabled()  # restored
    assert gc.collect() == 0  # nothing cyclic was left for the paused collector
    assert sim.events > 3_000


# --- delivery and latency -----------------------------------------------------------------------------


def test_a_small_lossless_network_delivers_everything() -> None:
    results = run(Scenario(nodes=30, degree=4, messages=40, seed=2))
    assert results.delivery_ratio == 1.0
    assert results.deliveries == results.expected_deliveries == 40 * 29
    assert results.validation == "envelope"
    assert results.validations["accepted"] == results.router["delivered"] == 40 * 29
    assert results.validations["rejected"] == 0
    assert results.duplicates_per_message is not None and results.duplicates_per_message > 0
    assert results.drops["router"]["duplicate"] > 0
    assert results.latency_ms["p50"] is not None and 50 <= results.latency_ms["p50"] <= 1000
    assert len(results.latency_cdf_ms) == 101 and list(results.latency_cdf_ms) == sorted(
        results.latency_cdf_ms
    )
    assert results.bytes_per_node["mean"] is not None and results.bytes_per_node["mean"] > 40 * 300


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    nodes=st.integers(4, 25),
    degree=st.integers(3, 6),
    topology=st.sampled_from(list(TopologyKind)),
)
def test_without_loss_every_subscriber_delivers_every_message(
    seed: int, nodes: int, degree: int, topology: TopologyKind
) -> None:
    degree = min(degree, nodes - 1)
    if topology is TopologyKind.SMALL_WORLD and degree % 2:  # a ring lattice wants an even degree
        degree = degree + 1 if degree + 1 <= nodes - 1 else degree - 1
    knobs: dict[str, object] = {"clusters": 2, "bridges": 1} if topology is TopologyKind.CLUSTERS else {}
    if topology is TopologyKind.CLUSTERS:
        degree = min(degree, nodes // 2 - 1)
    if degree < MIN_DEGREE_FOR_CONNECTIVITY:
        return  # below it a graph may be disconnected by nature (seed 139, 16 nodes, degree 2 was)
    results = run(Scenario(nodes=nodes, degree=degree, topology=topology, messages=10, seed=seed, **knobs))  # type: ignore[arg-type]
    assert results.delivery_ratio == 1.0, results.to_json()


def test_no_delivery_beats_the_shortest_path() -> None:
    scenario = Scenario(nodes=40, degree=4, messages=30, seed=8, latency=FixedLatency(0.1))
    sim = Simulation(scenario)
    results = sim.run()
    assert results.latency_ms["p50"] is not None and results.latency_ms["p50"] >= 100
    for record in sim.metrics.records:
        floor = shortest_delays(sim, sim.network.nodes[record.publisher])
        for node, at in enumerate(record.delivered_at):
            if not math.isnan(at):
                assert at - record.published_at >= floor[node] - TIME_TOLERANCE
    # ...and with uniform delays, each link's sampled delay is the floor.
    sim = Simulation(Scenario(nodes=40, degree=4, messages=30, seed=8))
    sim.run()
    for record in sim.metrics.records:
        floor = shortest_delays(sim, sim.network.nodes[record.publisher])
        assert all(
            at - record.published_at >= floor[node] - TIME_TOLERANCE
            for node, at in enumerate(record.delivered_at)
            if not math.isnan(at)
        )


def test_a_narrow_uplink_delays_every_delivery() -> None:
    fast = run(Scenario(nodes=30, degree=5, messages=30, rate=20, seed=4))
    slow = run(Scenario(nodes=30, degree=5, messages=30, rate=20, seed=4, bandwidth=20_000))
    assert fast.latency_ms["p50"] is not None and slow.latency_ms["p50"] is not None
    # ~400-byte RPCs to ~5 peers at 20 kB/s: every hop waits 0.1 s or more behind its own uplink.
    assert slow.latency_ms["p50"] > fast.latency_ms["p50"] + 100
    assert slow.delivery_ratio == fast.delivery_ratio == 1.0


def test_fast_path_validation_is_reported_and_counted() -> None:
    results = run(Scenario(nodes=20, degree=4, messages=10, seed=1, fast_path=True))
    assert results.validation == "fast-path"
    assert results.validations["accepted"] == 10 * 19
    assert results.delivery_ratio == 1.0


def test_progress_reaches_one() -> None:
    seen: list[float] = []
    run(Scenario(nodes=10, degree=3, messages=5, seed=1), progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 10


def test_the_clock_runs_at_an_offset_and_the_run_is_bounded() -> None:
    scenario = Scenario(nodes=10, degree=3, messages=20, seed=1)
    sim = Simulation(scenario)
    results = sim.run()
    assert CLOCK_OFFSET_RANGE[0] <= sim.clock.start <= CLOCK_OFFSET_RANGE[1]
    assert results.virtual_seconds == pytest.approx(scenario.duration)
    assert results.messages == 20
    assert Simulation(Scenario(nodes=10, degree=3, seed=2)).clock.start != sim.clock.start


# --- partitions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_a_partition_without_a_bridge_delivers_nothing_across_and_healing_restores_delivery(
    workers: int,
) -> None:
    at, heal = 8.0, 28.0
    scenario = Scenario(
        nodes=60,
        degree=6,
        messages=200,
        rate=5,
        seed=6,
        partition=Partition(at=at, heal=heal),
        workers=workers,
    )
    sim = Simulation(scenario)
    results = sim.run()
    side = [node.side for node in sim.world.honest]
    assert sorted(side) == [0] * 30 + [1] * 30
    # Messages stay retrievable for mcache_len heartbeats: published earlier than that before the
    # heal, they can never cross, not even by gossip after it.
    retrievable = scenario.gossip.mcache_len * scenario.gossip.heartbeat_interval + 1.0
    crossed_during = never_crossed = after_heal = 0
    for record in sim.metrics.records:
        home = side[record.publisher]
        across = [
            at_ for node, at_ in enumerate(record.delivered_at) if side[node] != home and not math.isnan(at_)
        ]
        if record.published_at >= at:  # older ones were in flight when the network split
            crossed_during += sum(1 for t in across if t < heal)
        if at <= record.published_at < heal - retrievable:
            assert across == [], f"message {record.index} crossed the partition"
            never_crossed += 1
        if record.published_at >= heal + 3.0:
            after_heal += 1
            assert record.delivered == record.eligible, f"message {record.index} after the heal"
    assert crossed_during == 0
    assert never_crossed > 30 and after_heal > 30
    assert results.drops["network"]["partition"] > 0
    assert 0.5 < results.delivery_ratio < 1.0  # type: ignore[operator]


# --- churn --------------------------------------------------------------------------------------------


def test_churned_nodes_receive_nothing_while_away_and_deliver_after_they_return() -> None:
    scenario = Scenario(nodes=40, degree=5, messages=200, rate=5, seed=9, churn=0.25, churn_away=(5.0, 10.0))
    sim = Simulation(scenario)
    copies: list[tuple[int, float]] = []
    received = sim.metrics.received

    def spy(node: int, messages: object) -> None:
        copies.append((node, sim.clock.elapsed))
        received(node, messages)  # type: ignore[arg-type]

    sim.metrics.received = spy  # type: ignore[method-assign]
    results = sim.run()
    away = {i: sim.metrics._away[i] for i in range(scenario.nodes) if sim.metrics._away[i]}
    assert len(away) == 10
    for node, at in copies:
        for left, back in away.get(node, ()):
            assert not left < at < back, f"node {node} received a copy while away"
    for record in sim.metrics.records:
        for node, intervals in away.items():
            at = record.delivered_at[node]
            assert not any(left < at < back for left, back in intervals)
    returned_and_delivered = {
        node
        for node, intervals in away.items()
        for record in sim.metrics.records
        if record.delivered_at[node] > intervals[0][1]
    }
    assert len(returned_and_delivered) >= 8  # those back before the end deliver again
    assert results.delivery_ratio is not None and results.delivery_ratio > 0.99
    assert results.expected_deliveries < 200 * 39  # churned nodes are left out while away


def test_churn_can_reconnect_to_random_nodes() -> None:
    results = run(Scenario(nodes=40, degree=5, messages=60, seed=3, churn=0.2, reconnect=Reconnect.RANDOM))
    assert results.delivery_ratio is not None and results.delivery_ratio > 0.99


# --- adversaries --------------------------------------------------------------------------------------


def test_sybils_never_forward_a_message() -> None:
    sim = Simulation(Scenario(nodes=30, degree=4, messages=40, seed=5, sybils=10, sybil_degree=10))
    send = sim.network.send
    sybil_messages = 0

    def spy(src: Node, peer: PeerId, rpc: RPC) -> bool:
        nonlocal sybil_messages
        if src.role is Role.SYBIL:
            sybil_messages += len(rpc.publish)
        return send(src, peer, rpc)

    sim.network.send = spy  # type: ignore[method-assign]
    results = sim.run()
    assert sybil_messages == 0
    assert results.attack["sybil_withheld"] > 0
    assert results.attack["attacker_bytes"] > 0  # they talk: subscriptions, GRAFT, IHAVE
    sybil_meshes = [n.router.mesh.get(sim.scenario.topic, set()) for n in sim.world.attackers if n.router]
    assert any(sybil_meshes), "Sybils were grafted"
    assert results.delivery_ratio == 1.0  # D=4 honest links each, flood publishing and gossip


@pytest.mark.parametrize("fast_path", [False, True])
def test_flooded_garbage_is_never_delivered_and_flooders_are_cut_off(fast_path: bool) -> None:
    results = run(Scenario(nodes=30, degree=4, messages=30, seed=7, flooders=2, fast_path=fast_path))
    assert results.attack["invalid_delivered"] == 0
    assert results.drops["router"]["invalid"] > 0
    assert results.attack["attackers_disconnected"] > 0  # P4 took them below the graylist threshold
    assert results.delivery_ratio == 1.0


def test_flooders_keep_their_links_without_scoring() -> None:
    results = run(Scenario(nodes=30, degree=4, messages=30, seed=7, flooders=2, score_params=None))
    assert results.attack["invalid_delivered"] == 0
    assert results.attack["attackers_disconnected"] == 0


def test_valid_junk_is_delivered_and_costs_bandwidth() -> None:
    clean = run(Scenario(nodes=30, degree=4, messages=30, seed=7))
    spammed = run(Scenario(nodes=30, degree=4, messages=30, seed=7, spammers=2, spam_rate=10))
    assert spammed.attack["spam_delivered"] > 0
    assert spammed.bytes_per_node["mean"] > 2 * clean.bytes_per_node["mean"]  # type: ignore[operator]
    assert spammed.delivery_ratio == 1.0


def test_an_eclipse_attempt_reports_the_victims_delivery() -> None:
    results = run(Scenario(nodes=30, degree=4, messages=30, seed=2, eclipse=40))
    ratio = results.attack["eclipse_victim_delivery_ratio"]
    assert ratio is not None and 0 <= ratio <= 1
    assert results.parameters["eclipse"] == 40


# --- output -------------------------------------------------------------------------------------------


def test_results_json_has_every_figure_and_sorted_keys() -> None:
    results = run(Scenario(nodes=12, degree=3, messages=10, seed=1, gossip=GossipConfig(idontwant=False)))
    text = results.to_json(include_wall=True)
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True)
    for key in (
        "delivery_ratio",
        "latency_ms",
        "duplicates_per_message",
        "bytes_per_node",
        "virtual_seconds",
        "wall_seconds",
        "seed",
        "nodes",
        "messages",
        "drops",
        "delivery_over_time",
        "parameters",
        "validation",
    ):
        assert key in data, key
    assert set(data["latency_ms"]) == {"mean", "p50", "p90", "p99", "max"}
    assert data["parameters"]["idontwant"] is False and data["parameters"]["scoring"] is True
    assert data["parameters"]["latency"] == "50-150ms"
    assert data["delivery_over_time"][0]["t"] == 0.0
    assert isinstance(results, Results)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    results = run(Scenario(nodes=12, degree=3, messages=20, seed=1, partition=Partition(at=6, heal=6.5)))
    path = tmp_path / "run.png"
    plot_results(results, path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_without_matplotlib_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = run(Scenario(nodes=6, degree=2, messages=2, seed=1))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlottingUnavailable, match="pip install"):
        plot_results(results, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --- scale --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_thousand_nodes_deliver_everything(workers: int) -> None:
    results = run(Scenario(nodes=1000, degree=6, messages=100, seed=1, workers=workers))
    assert results.delivery_ratio == 1.0
    assert results.latency_ms["p99"] is not None and results.latency_ms["p99"] < 1500
    assert results.mesh_degree["min"] is not None and results.mesh_degree["min"] >= 3
