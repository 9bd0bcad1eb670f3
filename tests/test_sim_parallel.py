"""Runs shared by several worker processes (``meshchat.sim.parallel``).

They must be as deterministic as one-process runs, measure the same network the same way (a
different worker count is a different run, so figures agree statistically, schedules exactly), carry
every kind of event across the workers' boundary, and fail loudly, leaving no process behind. (The
partition test and the 1,000-node test of ``test_sim.py`` run on one worker and on two.)
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import multiprocessing
import os

import pytest

from meshchat.gossip import GossipRouter
from meshchat.sim import LogNormalLatency, Scenario, ScenarioError, Simulation, parallel, run
from meshchat.sim.errors import WorkerFailed
from meshchat.sim.parallel import owners
from tests.test_sim import BUSY

#: A lossless broadcast big enough that two workers' figures agree closely with one's.
BROADCAST = Scenario(nodes=300, degree=6, messages=60, seed=4)


def close(a: float | None, b: float | None, tolerance: float) -> bool:
    assert a is not None and b is not None
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


def test_the_same_seed_and_workers_give_byte_identical_results() -> None:
    busy = dataclasses.replace(BUSY, workers=2)
    first, second = run(busy), run(busy)
    assert first.to_json(include_wall=False) == second.to_json(include_wall=False)
    assert first.parameters["workers"] == 2
    assert first.events > 3_000


def test_two_workers_measure_what_one_does() -> None:
    one, two = run(BROADCAST), run(dataclasses.replace(BROADCAST, workers=2))
    assert one.delivery_ratio == two.delivery_ratio == 1.0
    assert one.expected_deliveries == two.expected_deliveries == 60 * 299
    assert one.router["delivered"] == two.router["delivered"]
    assert close(one.duplicates_per_message, two.duplicates_per_message, 0.03)
    assert close(one.latency_ms["mean"], two.latency_ms["mean"], 0.05)
    assert close(one.bytes_per_node["mean"], two.bytes_per_node["mean"], 0.03)
    assert close(one.events, two.events, 0.02)
    assert close(one.mesh_degree["mean"], two.mesh_degree["mean"], 0.03)
    assert two.validations["accepted"] == one.validations["accepted"] == 60 * 299


def test_every_kind_of_event_crosses_between_workers() -> None:
    """Loss, jitter, bandwidth, churn, a partition, Sybils, a flooder and a spammer, on two workers."""
    one, two = run(BUSY), run(dataclasses.replace(BUSY, workers=2))
    # What is scheduled is the same run for run: who publishes, who is away, what is expected.
    assert two.messages == one.messages
    assert two.expected_deliveries == one.expected_deliveries
    assert two.attack["unpublished"] == one.attack["unpublished"]
    drops = two.drops["network"]
    assert drops["loss"] > 0 and drops["partition"] > 0
    assert two.attack["sybil_withheld"] > 0
    assert two.attack["invalid_delivered"] == 0 and two.drops["router"]["invalid"] > 0
    assert two.attack["attackers_disconnected"] > 0  # graylisted flooders, closed across workers too
    assert two.attack["spam_delivered"] > 0
    # A 40-node network split in two with churn loses 4-13 % by seed on one worker or two.
    assert two.delivery_ratio is not None and two.delivery_ratio > 0.8


def test_three_workers_swap_without_deadlock_and_deliver_everything() -> None:
    results = run(dataclasses.replace(BROADCAST, nodes=90, messages=20, workers=3))
    assert results.delivery_ratio == 1.0
    assert results.parameters["workers"] == 3


def test_owners_split_evenly_and_cut_few_links() -> None:
    world = Simulation(dataclasses.replace(BROADCAST, nodes=2000, sybils=200)).world
    adjacency = world.adjacency()
    links = sum(len(n) for n in adjacency) // 2
    for workers in (2, 3):
        owner = owners(adjacency, workers)
        counts = [owner.count(w) for w in range(workers)]
        assert max(counts) - min(counts) <= 1  # swaps keep the blocks' sizes
        between = sum(1 for a, near in enumerate(adjacency) for b in near if owner[a] != owner[b]) // 2
        blocks = [index * workers // len(adjacency) for index in range(len(adjacency))]
        contiguous = sum(1 for a, near in enumerate(adjacency) for b in near if blocks[a] != blocks[b]) // 2
        assert between < 0.75 * contiguous < links
    assert owners([[1], [0], [3], [2]], 2) in ([0, 0, 1, 1], [1, 1, 0, 0])
    assert owners([[3], [2], [1], [0]], 2) in ([0, 1, 1, 0], [1, 0, 0, 1])  # crossed pairs are swapped


def test_progress_comes_from_the_workers_and_reaches_one() -> None:
    seen: list[float] = []
    Simulation(dataclasses.replace(BROADCAST, nodes=60, messages=10, workers=2)).run(seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == pytest.approx(1.0, abs=0.02)


def test_a_failing_worker_raises_with_its_traceback_and_leaves_no_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: GossipRouter, *, now: float) -> list[object]:
        raise RuntimeError("heartbeat exploded")

    monkeypatch.setattr(GossipRouter, "on_timer", broken)  # inherited by the forked workers
    with pytest.raises(WorkerFailed, match="heartbeat exploded"):
        run(dataclasses.replace(BROADCAST, nodes=40, messages=5, workers=2))
    assert multiprocessing.active_children() == []


def test_a_worker_that_dies_is_reported_and_the_others_are_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    original = GossipRouter.on_timer

    def dying(self: GossipRouter, *, now: float) -> object:
        if multiprocessing.current_process().name == "meshchat-sim-worker-1":
            os._exit(3)  # as if killed: no report, no goodbye
        return original(self, now=now)

    monkeypatch.setattr(GossipRouter, "on_timer", dying)
    # Whichever the parent notices first: worker 1 gone, or worker 0 finding its pipe closed.
    with pytest.raises(WorkerFailed, match=r"(?s)worker 1 failed: it exited|worker 0 failed: .*EOFError"):
        run(dataclasses.replace(BROADCAST, nodes=40, messages=5, workers=2))
    assert multiprocessing.active_children() == []


def test_several_workers_need_a_positive_shortest_delay() -> None:
    with pytest.raises(ScenarioError, match="workers"):
        Scenario(workers=2, latency=LogNormalLatency(median=0.08))
    with pytest.raises(ScenarioError, match="workers"):
        Scenario(workers=0)


def test_parallel_does_not_import_the_engine() -> None:
    """The engine runs the workers; the workers' module must not import the engine back (it did)."""
    tree = ast.parse(inspect.getsource(parallel))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert "meshchat.sim.engine" not in imported
    assert "meshchat.sim.running" in imported
