"""Removal and censorship experiments at the gossip level: ``meshchat sim --scenario NAME``.

Each experiment runs one network twice on the same seed, with meshchat's defence on and off, and
returns an ``ExperimentReport`` (``meshchat.sim.experiments_base``):

- ``remove-bootstraps``: nodes join through 3 bootstrap nodes and peers learned from them; once the
  network formed, every bootstrap node goes. Defence: redial below a floor (``meshchat.sim.defence``).
- ``remove-hubs``: a preferential-attachment network loses its 10 % best-connected nodes. Same defence.
- ``eclipse``: 50 Sybils (they accept grafts and never forward) all dial one victim. Defence: peer
  scoring, the outbound quota ``d_out`` and opportunistic grafting (the defaults); off: none of them.
- ``cut-16k``: a censor cuts every connection once it carried 16 KB. Defence: the dialler reconnects
  at once (a new connection with a new budget).

``EXPERIMENTS`` also holds the store-and-forward experiments of ``meshchat.sim.store_experiments``
when that module is present. ``scale`` shrinks the network and the workload (1.0: 1,000 nodes, the
published figures). Each message is followed for ``DRAIN`` seconds, its lifetime here: gossip alone
cannot deliver it later (mailboxes can; that is the store-level experiments' part).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace

from meshchat.gossip import GossipConfig
from meshchat.gossip.keeper import KEEPALIVE_IDLE, KEEPALIVE_TIMEOUT
from meshchat.sim.defence import Defence, DefendedSimulation, KeeperConfig
from meshchat.sim.experiments_base import Experiment, ExperimentArm, ExperimentReport
from meshchat.sim.network import LinkDrop, Role
from meshchat.sim.results import percentile
from meshchat.sim.scenario import Removal, RemovalTarget, Scenario, TopologyKind
from meshchat.sim.topology import Graph

__all__ = ["DRAIN", "EXPERIMENTS", "FULL_NODES", "GOSSIP_EXPERIMENTS", "run_arms"]

#: Honest nodes at scale 1.0.
FULL_NODES = 1000
#: Honest messages at scale 1.0.
FULL_MESSAGES = 200
#: Smallest network a scaled-down run builds: below it a 10 % removal or a mesh of 6 means little.
MIN_NODES = 50
#: Fewest messages a scaled-down run publishes.
MIN_MESSAGES = 20
#: Seconds after its publish a message must arrive to count (its lifetime in these experiments): the
#: message cache gossips it for 3 s, and a node that reconnected asks for it then or never.
DRAIN = 30.0
#: When nodes are removed: boot spread 1 s, then a few heartbeats for the meshes to form.
FORMED_AT = 5.0
#: Seconds after the removal whose messages are reported apart (the network is repairing itself).
REPAIR_WINDOW = 5.0
#: Seconds the removal and censor runs publish for, whatever the scale: long enough that most
#: messages come after the repair window.
PUBLISH_SPAN = 30.0
#: Sybils in the eclipse attempt (not scaled: the attack is on one victim).
ECLIPSE_SYBILS = 50
#: Messages per second in the eclipse run, slower and longer than the others so that opportunistic
#: grafting (every 60 heartbeats) runs several times during it.
ECLIPSE_RATE = 1.0
#: Messages in the eclipse run at any scale (240 s of publishing: four opportunistic grafting rounds).
ECLIPSE_MESSAGES = 240
#: Bytes a connection carries before the censor cuts it.
CUT_BYTES = 16 * 1024
#: Seconds before the ends of a silently stalled connection notice (the third arm of ``cut-16k``):
#: a real node's keepalive, ``KEEPALIVE_IDLE`` of silence then ``KEEPALIVE_TIMEOUT`` for the pong.
STALL_NOTICE = KEEPALIVE_IDLE + KEEPALIVE_TIMEOUT


def _count(full: int, scale: float, low: int) -> int:
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], not {scale}")
    return max(low, round(full * scale))


def _latency(latencies: list[float]) -> tuple[float | None, float | None]:
    ordered = sorted(latencies)
    if not ordered:
        return None, None
    return round(percentile(ordered, 50), 6), round(percentile(ordered, 99), 6)


def _arm(
    label: str, sim: DefendedSimulation, *, node: int | None = None, since: float = 0.0
) -> ExperimentArm:
    """The figures of one finished run: every honest node (or only ``node``), messages published at
    or after ``since`` seconds."""
    metrics = sim.metrics
    delivered = expected = 0
    latencies: list[float] = []
    for record in metrics.records:
        if record.published_at < since:
            continue
        nodes = range(len(record.delivered_at)) if node is None else (node,)
        for index in nodes:
            if not metrics.eligible(index, record):
                continue
            expected += 1
            at = record.delivered_at[index]
            if at <= record.window_end:  # False for NaN: never delivered
                delivered += 1
                latencies.append(at - record.published_at)
    p50, p99 = _latency(latencies)
    return ExperimentArm(label=label, delivered=delivered, expected=expected, p50_s=p50, p99_s=p99)


def run_arms(scenario: Scenario, on: Defence, off: Defence) -> tuple[DefendedSimulation, DefendedSimulation]:
    """Run ``scenario`` with defence ``on``, then with ``off``; return both finished simulations."""
    sims = (DefendedSimulation(scenario, on), DefendedSimulation(scenario, off))
    for sim in sims:
        sim.run()
    return sims


def _percent(arm: ExperimentArm) -> str:
    return f"{100 * arm.delivery:.2f} % ({arm.delivered:,}/{arm.expected:,})"


# --- removal -------------------------------------------------------------------------------------


def _survivors(graph: Graph, removed: tuple[int, ...]) -> tuple[int, int]:
    """(nodes left with no connection, size of the largest connected group) once ``removed`` go."""
    gone = set(removed)
    adjacency = graph.neighbours()
    seen = set(gone)
    isolated = largest = 0
    for start in range(graph.nodes):
        if start in seen:
            continue
        seen.add(start)
        stack, size = [start], 0
        while stack:
            here = stack.pop()
            size += 1
            for other in adjacency[here]:
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        largest = max(largest, size)
        isolated += size == 1
    return isolated, largest


def _removal(name: str, summary: str, scenario: Scenario) -> ExperimentReport:
    on, off = run_arms(scenario, Defence(keeper=KeeperConfig(), keep_from=FORMED_AT), Defence())
    removed = on.world.removed
    isolated, largest = _survivors(on.world.graph, removed)
    left = scenario.nodes - len(removed)
    repair_end = FORMED_AT + REPAIR_WINDOW
    notes = [
        f"{len(removed)} of {scenario.nodes} nodes removed at {FORMED_AT:g} s; of the {left} left, "
        f"{isolated} had no connection left and the largest connected group held {largest}",
    ]
    for label, sim in (("defence on", on), ("defence off", off)):
        late = _arm(label, sim, since=repair_end)
        links = [len(n.links) for n in sim.world.honest if n.router is not None]
        notes.append(
            f"{label}: {_percent(late)} of the deliveries of messages published from {repair_end:g} s "
            f"on; connections at the end mean {sum(links) / max(len(links), 1):.1f}, "
            f"{links.count(0)} nodes with none; {sim.redials:,} redials, {sim.lookups:,} DHT lookups"
        )
    if on.redials == 0:
        notes.append(
            f"no node fell below the floor of {KeeperConfig().floor} connections: each kept the "
            "peers it had dialled itself, so the defence had nothing to do"
        )
    return ExperimentReport(
        name=name,
        summary=summary,
        arms=(_arm("defence on", on), _arm("defence off", off)),
        notes=(*notes, _REDIAL_NOTE),
    )


_REDIAL_NOTE = (
    f"defence on: a node below {KeeperConfig().floor} connections redials addresses it learned "
    "while joining or was connected to, and asks the DHT through a remaining connection when those run out "
    "(meshchat.gossip.keeper.ConnectionKeeper, which real nodes run too: meshchat.net.keeper_driver)"
)


def _removal_scenario(seed: int, scale: float, **knobs: object) -> Scenario:
    messages = _count(FULL_MESSAGES, scale, MIN_MESSAGES)
    base = Scenario(
        seed=seed,
        nodes=_count(FULL_NODES, scale, MIN_NODES),
        messages=messages,
        rate=messages / PUBLISH_SPAN,
        warmup=FORMED_AT,
        drain=DRAIN,
    )
    return replace(base, **knobs)  # type: ignore[arg-type]  # knobs are Scenario fields


def remove_bootstraps(seed: int, scale: float) -> ExperimentReport:
    """Every bootstrap node removed once the network formed."""
    scenario = _removal_scenario(
        seed,
        scale,
        topology=TopologyKind.BOOTSTRAP,
        removal=Removal(at=FORMED_AT, target=RemovalTarget.BOOTSTRAPS),
    )
    summary = (
        f"{scenario.nodes} nodes joined through {scenario.bootstraps} bootstrap nodes (each dialled "
        f"{scenario.bootstrap_dials} of them and {scenario.degree} peers learned through them); at "
        f"{FORMED_AT:g} s every bootstrap node is removed and {scenario.messages} messages follow over "
        f"{PUBLISH_SPAN:g} s, each counted if it arrives within {DRAIN:g} s."
    )
    return _removal("remove-bootstraps", summary, scenario)


def remove_hubs(seed: int, scale: float) -> ExperimentReport:
    """The 10 % best-connected nodes of a scale-free network removed once it formed."""
    scenario = _removal_scenario(
        seed,
        scale,
        topology=TopologyKind.SCALE_FREE,
        removal=Removal(at=FORMED_AT, target=RemovalTarget.HUBS, fraction=0.1),
    )
    summary = (
        f"{scenario.nodes} nodes joined by preferential attachment (each dialled {scenario.degree // 2} "
        f"peers, the well-connected likelier); at {FORMED_AT:g} s the 10 % with the most connections "
        f"are removed and {scenario.messages} messages follow over {PUBLISH_SPAN:g} s, each counted if "
        f"it arrives within {DRAIN:g} s."
    )
    return _removal("remove-hubs", summary, scenario)


# --- eclipse -------------------------------------------------------------------------------------


def eclipse(seed: int, scale: float) -> ExperimentReport:
    """50 Sybils dial one victim; scoring, outbound quota and opportunistic grafting on and off."""
    messages = ECLIPSE_MESSAGES  # not scaled: the attack needs time, whatever the network's size
    scenario = Scenario(
        seed=seed,
        nodes=_count(FULL_NODES, scale, MIN_NODES),
        messages=messages,
        rate=ECLIPSE_RATE,
        warmup=FORMED_AT,
        drain=DRAIN,
        eclipse=ECLIPSE_SYBILS,
    )
    undefended = replace(scenario, score_params=None, gossip=GossipConfig(d_out=0))
    on = DefendedSimulation(scenario, Defence())
    off = DefendedSimulation(undefended, Defence())
    for sim in (on, off):
        sim.run()
    assert on.world.victim is not None and off.world.victim is not None  # eclipse > 0
    victim = on.world.victim.index
    notes = []
    for label, sim in (("defence on", on), ("defence off", off)):
        honest, sybil = _victim_peers(sim)
        notes.append(
            f"{label}: at the end the victim is connected to {honest[0]} honest peers and "
            f"{sybil[0]} Sybils; its mesh holds {honest[1]} honest peers and {sybil[1]} Sybils; "
            f"honest nodes disconnected {sim.disconnects_of_attackers} attackers"
        )
    notes.append(
        "defence off: peer scoring off, d_out=0 (so no outbound quota), and no opportunistic "
        "grafting (it needs scores)"
    )
    notes.append(
        "the Sybils graft the victim until its mesh is full (d_hi) and keep positive scores (time "
        "in mesh; P3, the mesh delivery deficit that would catch silent droppers, is off in "
        "ScoreParams' defaults), so with the defence on it is the outbound quota that keeps "
        "honest peers in the victim's mesh"
    )
    notes.append(
        "not modelled: a connection limit the Sybils could fill to push the victim's honest "
        "connections out; here they can only take over its mesh, and honest gossip still reaches it"
    )
    summary = (
        f"{scenario.nodes} honest nodes (random, {scenario.degree} connections each); "
        f"{ECLIPSE_SYBILS} Sybils that accept grafts and never forward all dial one victim; "
        f"{messages} messages at {ECLIPSE_RATE:g}/s from {FORMED_AT:g} s. The victim's figures first."
    )
    arms = (
        _arm("defence on: victim", on, node=victim),
        _arm("defence off: victim", off, node=victim),
        _arm("defence on: everyone", on),
        _arm("defence off: everyone", off),
    )
    return ExperimentReport(name="eclipse", summary=summary, arms=arms, notes=tuple(notes))


def _victim_peers(sim: DefendedSimulation) -> tuple[tuple[int, int], tuple[int, int]]:
    """((honest connections, honest mesh peers), (Sybil connections, Sybil mesh peers)) of the victim."""
    victim = sim.world.victim
    assert victim is not None and victim.router is not None
    nodes = sim.network.nodes
    honest_links = sum(1 for i in victim.links if nodes[i].role is Role.HONEST)
    mesh = victim.router.mesh.get(sim.scenario.topic, set())
    honest_mesh = sum(1 for p in mesh if sim.network.by_peer_id[p].role is Role.HONEST)
    return (honest_links, honest_mesh), (len(victim.links) - honest_links, len(mesh) - honest_mesh)


# --- censor --------------------------------------------------------------------------------------


def cut_16k(seed: int, scale: float) -> ExperimentReport:
    """Every connection cut by a censor after 16 KB; reconnecting at once on and off."""
    scenario = Scenario(
        seed=seed,
        nodes=_count(FULL_NODES, scale, MIN_NODES),
        messages=FULL_MESSAGES,  # not scaled: a connection must carry enough to be cut several times
        rate=10.0,
        warmup=FORMED_AT,
        drain=DRAIN,
        cut_after=CUT_BYTES,
    )
    on, off = run_arms(scenario, Defence(reconnect_cuts=True), Defence())
    stalled = DefendedSimulation(replace(scenario, cut_notice=STALL_NOTICE), Defence(reconnect_cuts=True))
    stalled.run()
    notes = []
    stall_label = f"defence on, silent stall noticed after {STALL_NOTICE:g} s"
    arms = (_arm("defence on", on), _arm("defence off", off), _arm(stall_label, stalled))
    for arm, sim in zip(arms, (on, off, stalled), strict=True):
        sent = sum(n.bytes_sent for n in sim.world.honest)
        links = [len(n.links) for n in sim.world.honest]
        per_delivery = f"{sent / arm.delivered:,.0f}" if arm.delivered else "n/a"
        notes.append(
            f"{arm.label}: {sim.network.cuts:,} connections cut, {sim.reconnects:,} reconnected, "
            f"{sim.network.drops[LinkDrop.CUT]:,} RPCs lost to cuts; goodput: {per_delivery} bytes sent "
            f"per delivery; connections at the end mean {sum(links) / len(links):.1f}"
        )
    summary = (
        f"{scenario.nodes} nodes (random, {scenario.degree} connections each); a censor cuts every "
        f"connection once it carried {CUT_BYTES // 1024} KB (both directions); {scenario.messages} "
        f"messages at {scenario.rate:g}/s from {FORMED_AT:g} s, each counted if it arrives within "
        f"{DRAIN:g} s. Defence: the dialler reconnects at once, and the routers graft again."
    )
    notes.append(
        "defence on and off: the cut is a reset both ends hear at once; the third arm's censor "
        "silently drops everything past the budget, and the ends notice only when a keepalive "
        f"gives up {STALL_NOTICE:g} s later (then reconnect at once): a real node's default keepalive "
        "(meshchat.gossip.keeper: ping after 5 s of silence, 3 s for the pong); gossip only, the "
        "store-and-forward retries that follow are not modelled here"
    )
    return ExperimentReport(name="cut-16k", summary=summary, arms=arms, notes=tuple(notes))


# --- registry ------------------------------------------------------------------------------------

_RUNS: tuple[tuple[str, str, Callable[[int, float], ExperimentReport]], ...] = (
    (
        "remove-bootstraps",
        "every bootstrap node removed after the network formed; redialling learned peers on/off",
        remove_bootstraps,
    ),
    (
        "remove-hubs",
        "the 10 % best-connected nodes of a scale-free network removed; redialling on/off",
        remove_hubs,
    ),
    (
        "eclipse",
        "50 Sybils dial one victim; scoring, outbound quota and opportunistic grafting on/off",
        eclipse,
    ),
    ("cut-16k", "a censor cuts every connection after 16 KB; reconnecting at once on/off", cut_16k),
)

#: The gossip-level experiments, by name.
GOSSIP_EXPERIMENTS: dict[str, Experiment] = {
    name: Experiment(name=name, description=description, run=run) for name, description, run in _RUNS
}

_STORE_MODULE = "meshchat.sim.store_experiments"


def _store_experiments() -> dict[str, Experiment]:
    """The store-level experiments, if their module is present (it is another part's, and optional)."""
    try:
        module = importlib.import_module(_STORE_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == _STORE_MODULE:
            return {}
        raise
    found: dict[str, Experiment] = dict(module.STORE_EXPERIMENTS)
    return found


#: Every experiment ``meshchat sim --scenario NAME`` can run: the gossip-level ones, then the store ones.
EXPERIMENTS: dict[str, Experiment] = {**GOSSIP_EXPERIMENTS, **_store_experiments()}
