"""Deterministic discrete-event network simulator: real gossip routers on a virtual clock.

``run(Scenario(nodes=1000, messages=1000, seed=7))`` builds a network of real ``GossipRouter``s over
simulated links (latency, jitter, loss, bandwidth), publishes real sealed envelopes from random honest
nodes, optionally splits the network, churns nodes and lets attackers in, and returns ``Results``:
delivery ratio, latency percentiles, duplicates, bytes per node, drops by reason. The same scenario
and seed give byte-identical results JSON (``wall_seconds`` apart). ``meshchat sim`` is its command.

Modules: ``scenario`` (knobs), ``latency`` (delay models), ``topology`` (graphs), ``clock`` (virtual
clock, event heap), ``network`` (nodes, links, the send path), ``payloads`` (identities, envelopes,
validators), ``adversary`` (Sybil wrapper, flood RPCs), ``world`` (building a run), ``engine`` (the
driver loop), ``parallel`` (a run shared by several processes: ``Scenario(workers=2)``), ``metrics``
and ``results`` (figures), ``plot`` (PNG output). Store-and-forward at scale: ``store_sim``
(``run_store``). Groups with real keys: ``group_sim`` and ``group_runs``
(``run_group(GroupScenario(run=GroupRun.FANOUT, members=1000))``: fan-out, removal, churn, partition).
"""

from __future__ import annotations

from meshchat.sim.clock import SIM_EPOCH, VirtualClock
from meshchat.sim.engine import Simulation, run
from meshchat.sim.errors import PlottingUnavailable, ScenarioError
from meshchat.sim.group_runs import run_group
from meshchat.sim.group_scenario import GroupResults, GroupRun, GroupScenario
from meshchat.sim.group_sim import GroupSimulation
from meshchat.sim.latency import FixedLatency, LatencyModel, LogNormalLatency, UniformLatency, parse_latency
from meshchat.sim.network import LinkDrop, Role
from meshchat.sim.results import Results
from meshchat.sim.scenario import (
    Partition,
    PartitionSplit,
    Reconnect,
    Scenario,
    TopologyKind,
    parse_partition,
)

__all__ = [
    "SIM_EPOCH",
    "FixedLatency",
    "GroupResults",
    "GroupRun",
    "GroupScenario",
    "GroupSimulation",
    "LatencyModel",
    "LinkDrop",
    "LogNormalLatency",
    "Partition",
    "PartitionSplit",
    "PlottingUnavailable",
    "Reconnect",
    "Results",
    "Role",
    "Scenario",
    "ScenarioError",
    "Simulation",
    "TopologyKind",
    "UniformLatency",
    "VirtualClock",
    "parse_latency",
    "parse_partition",
    "run",
    "run_group",
]
