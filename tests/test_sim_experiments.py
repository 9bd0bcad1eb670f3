"""Removal and censorship experiments (``meshchat.sim.experiments``) at a small scale, and their command.

Each runs real routers on the virtual clock twice (defence on and off) and checks the defence's
concrete effect besides the figures: the bootstraps are gone, cut connections were counted and
redialled, the eclipse victim keeps an honest peer.
"""

from __future__ import annotations

import json
import random
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshchat import cli
from meshchat.sim import Role, Scenario, TopologyKind
from meshchat.sim.defence import ConnectionKeeper, Defence, DefendedSimulation, KeeperConfig
from meshchat.sim.experiments import EXPERIMENTS, GOSSIP_EXPERIMENTS, _store_experiments, cut_16k, eclipse
from meshchat.sim.experiments_base import Experiment, ExperimentReport
from meshchat.sim.network import LinkDrop
from meshchat.sim.scenario import Removal, RemovalTarget
from meshchat.sim.topology import build_graph

SCALE = 0.1
runner = CliRunner()


def _on_off(report: ExperimentReport) -> tuple[float, float]:
    on, off = report.arms[0], report.arms[1]
    assert on.label.startswith("defence on") and off.label.startswith("defence off")
    assert on.expected > 0 and on.expected == off.expected
    return on.delivery, off.delivery


def test_registry_names_the_four_gossip_experiments() -> None:
    assert set(GOSSIP_EXPERIMENTS) == {"remove-bootstraps", "remove-hubs", "eclipse", "cut-16k"}
    assert set(GOSSIP_EXPERIMENTS) <= set(EXPERIMENTS)
    for name, experiment in GOSSIP_EXPERIMENTS.items():
        assert experiment.name == name and experiment.description


def test_store_experiments_join_the_registry_when_their_module_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = types.ModuleType("meshchat.sim.store_experiments")
    store = Experiment(name="remove-mailboxes", description="d", run=GOSSIP_EXPERIMENTS["eclipse"].run)
    fake.STORE_EXPERIMENTS = {"remove-mailboxes": store}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "meshchat.sim.store_experiments", fake)
    assert _store_experiments() == {"remove-mailboxes": store}


def test_bootstrap_formation_dials_bootstraps_then_learned_peers() -> None:
    scenario = Scenario(nodes=60, topology=TopologyKind.BOOTSTRAP, bootstraps=3, bootstrap_dials=2, degree=5)
    graph = build_graph(scenario, random.Random(1))
    assert graph.bootstraps == (0, 1, 2)
    dialled: dict[int, list[int]] = {}
    for dialler, listener in graph.edges:
        assert listener < dialler  # a joining node dials nodes that joined before it
        dialled.setdefault(dialler, []).append(listener)
    for node in range(10, 60):
        targets = dialled[node]
        assert sum(1 for t in targets if t < 3) == 2 and len(targets) == 7
        assert not set(graph.learned[node]) & set(targets)
        assert len(graph.learned[node]) == min(scenario.address_book, node - 3 - 5)


def test_remove_bootstraps_removes_every_bootstrap_and_delivers() -> None:
    report = EXPERIMENTS["remove-bootstraps"].run(1, SCALE)
    on, off = _on_off(report)
    assert on >= off and on >= 0.99
    assert report.notes[0].startswith("3 of 100 nodes removed")


def test_removed_nodes_are_gone_and_not_expected_to_deliver() -> None:
    scenario = Scenario(
        nodes=40,
        messages=10,
        rate=5.0,
        warmup=3.0,
        drain=10.0,
        topology=TopologyKind.BOOTSTRAP,
        removal=Removal(at=3.0, target=RemovalTarget.BOOTSTRAPS),
    )
    sim = DefendedSimulation(scenario, Defence(keeper=KeeperConfig(), keep_from=3.0))
    results = sim.run()
    assert sim.world.removed == (0, 1, 2)
    for index in sim.world.removed:
        node = sim.world.honest[index]
        assert node.router is None and not node.links
    for node in sim.world.honest[3:]:
        assert not set(node.links) & {0, 1, 2}
    assert results.expected_deliveries == 10 * (40 - 3 - 1)


def test_remove_hubs_redials_and_beats_no_defence() -> None:
    report = EXPERIMENTS["remove-hubs"].run(2, SCALE)
    on, off = _on_off(report)
    assert on >= off
    assert on >= 0.99, report.notes
    assert "10 of 100 nodes removed" in report.notes[0]
    assert " 0 redials" in report.notes[2]  # the off arm never redials
    assert " 0 redials" not in report.notes[1]


def test_keepers_with_empty_address_books_find_peers_through_the_dht() -> None:
    scenario = Scenario(
        nodes=80,
        messages=20,
        rate=2.0,
        warmup=5.0,
        drain=20.0,
        topology=TopologyKind.SCALE_FREE,
        address_book=0,
        removal=Removal(at=5.0, target=RemovalTarget.HUBS, fraction=0.1),
    )
    on = DefendedSimulation(scenario, Defence(keeper=KeeperConfig(), keep_from=5.0))
    off = DefendedSimulation(scenario, Defence())
    on_results, off_results = on.run(), off.run()
    assert on.lookups > 0 and on.redials > 0
    assert on_results.deliveries >= off_results.deliveries
    assert min(len(n.links) for n in on.world.honest if n.router is not None) > 0


def test_cut_16k_cuts_connections_and_reconnecting_restores_delivery() -> None:
    report = cut_16k(3, SCALE)
    on, off = _on_off(report)
    assert on > off and on >= 0.99, report.notes
    # "defence on: N connections cut, N reconnected, ..."
    cut_on = int(report.notes[0].split(": ")[1].split(" ")[0].replace(",", ""))
    cut_off = int(report.notes[1].split(": ")[1].split(" ")[0].replace(",", ""))
    assert cut_on > 0 and cut_off > 0
    assert f"{cut_on:,} reconnected" in report.notes[0]
    assert " 0 reconnected" in report.notes[1]
    stalled = report.arms[2]  # a silent stall noticed late: reported, not flattered
    assert (
        stalled.label.startswith("defence on, silent stall") and stalled.expected == report.arms[0].expected
    )
    assert stalled.delivery <= report.arms[0].delivery


def test_a_cut_link_closes_both_ends_after_its_budget() -> None:
    lost_per_cut = []
    for notice in (0.0, 5.0):
        scenario = Scenario(
            nodes=20,
            degree=4,
            messages=40,
            rate=10.0,
            warmup=3.0,
            drain=5.0,
            cut_after=4096,
            cut_notice=notice,
        )
        sim = DefendedSimulation(scenario, Defence())
        sim.run()
        assert sim.network.cuts > 0 and sim.network.drops[LinkDrop.CUT] > 0
        for node in sim.world.honest:
            for link in node.links.values():
                assert link.carried <= 4096 or link.cut
        lost_per_cut.append(sim.network.drops[LinkDrop.CUT] / sim.network.cuts)
    reset, stall = lost_per_cut
    assert stall > 2 * reset  # a stalled connection swallows what its ends keep sending into it


@pytest.mark.slow
def test_eclipse_victim_keeps_an_honest_peer_and_delivers() -> None:
    report = eclipse(4, SCALE)
    victim_on, victim_off = report.arms[0], report.arms[1]
    assert victim_on.label == "defence on: victim" and victim_off.label == "defence off: victim"
    assert victim_on.delivery >= victim_off.delivery and victim_on.delivery >= 0.99
    assert report.arms[2].delivery >= report.arms[3].delivery
    # "defence on: at the end the victim is connected to H honest peers ...; its mesh holds M honest"
    words = report.notes[0].split()
    assert int(words[words.index("connected") + 2]) >= 1
    assert int(words[words.index("holds") + 1]) >= 1


def test_eclipse_defence_keeps_honest_outbound_peers_in_the_victims_mesh() -> None:
    """The quick form of the eclipse run: the outbound quota holds honest peers in the mesh."""
    scenario = Scenario(nodes=40, messages=30, rate=2.0, warmup=5.0, drain=10.0, eclipse=50)
    sim = DefendedSimulation(scenario, Defence())
    results = sim.run()
    victim = sim.world.victim
    assert victim is not None and victim.router is not None
    mesh = victim.router.mesh[scenario.topic]
    honest = [p for p in mesh if sim.network.by_peer_id[p].role is Role.HONEST]
    assert len(honest) >= scenario.gossip.d_out
    assert results.attack["eclipse_victim_delivery_ratio"] == 1.0


def test_keeper_dials_below_its_floor_and_asks_for_a_lookup_when_dry() -> None:
    keeper = ConnectionKeeper(
        KeeperConfig(floor=2, target=3, retry_after=10.0), rng=random.Random(0), addresses=["a", "b"]
    )
    assert keeper.tick(now=0.0, connected=["x", "a"]).dial == ()  # at the floor: nothing to do
    step = keeper.tick(now=1.0, connected=["x"])
    assert sorted(step.dial) == ["a", "b"] and not step.lookup
    step = keeper.tick(now=2.0, connected=["x"])  # a and b still pending
    assert step.dial == ()
    step = keeper.tick(now=6.0, connected=["x"])  # they failed; retry_after not over: nothing to dial
    assert step.dial == () and step.lookup
    keeper.learn(["c"])
    step = keeper.tick(now=7.0, connected=["x"])
    assert step.dial == ("c",) and step.lookup  # one of the two wanted: ask the DHT for more
    redial = keeper.tick(now=20.0, connected=[]).dial  # retry_after over for all four
    assert len(redial) == 3 and set(redial) <= {"a", "b", "c", "x"}


def test_keeper_book_is_bounded() -> None:
    keeper = ConnectionKeeper(KeeperConfig(book_size=8), rng=random.Random(0))
    keeper.learn(f"p{i}" for i in range(100))
    assert keeper.known() == 8


def test_cli_lists_and_runs_an_experiment(tmp_path: Path) -> None:
    listed = runner.invoke(cli.app, ["sim", "--scenario", "list"])
    assert listed.exit_code == 0, listed.output
    for name in GOSSIP_EXPERIMENTS:
        assert name in listed.stdout
    out = tmp_path / "hubs.json"
    args = ["sim", "--scenario", "remove-hubs", "--scale", "0.05", "--seed", "5", "--json", str(out)]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "defence on" in result.stdout and "defence off" in result.stdout
    data = json.loads(out.read_text())
    assert data["name"] == "remove-hubs" and [a["label"] for a in data["arms"]] == [
        "defence on",
        "defence off",
    ]
    unknown = runner.invoke(cli.app, ["sim", "--scenario", "nope"])
    assert unknown.exit_code != 0 and "nope" in unknown.output
