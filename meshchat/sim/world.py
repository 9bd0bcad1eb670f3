"""Everything a run is built from, before the first event: nodes, links to dial, schedules, RNGs.

``World`` turns a ``Scenario`` into honest nodes (indices ``0..nodes-1``) and attackers after them,
each with a real identity, an IP address and a router; picks who subscribes, which partition side
each node is on, whom each node dials at boot, when churned nodes leave and return, and schedules the
boot, publish, partition, churn and attack events on the queue. Each component draws from its own
``random.Random``, derived from the seed and the component's name, so adding draws to one component
does not shift another's.

It does not run anything (``meshchat.sim.engine`` does) and keeps only the counters of routers that
churn has retired.
"""

from __future__ import annotations

import random

from meshchat.gossip import DropReason, GossipRouter, RouterStatistics
from meshchat.sim.adversary import SybilRouter
from meshchat.sim.clock import EventKind, EventQueue, VirtualClock
from meshchat.sim.metrics import Metrics
from meshchat.sim.network import Network, Node, Role, RouterLike
from meshchat.sim.payloads import (
    EnvelopeFactory,
    EnvelopeValidator,
    FastPathValidator,
    MessageIds,
    make_identities,
)
from meshchat.sim.scenario import PartitionSplit, RemovalTarget, Scenario
from meshchat.sim.topology import Graph, build_graph

__all__ = ["ROUTER_COUNTERS", "World", "component_rng"]

#: The ``RouterStatistics`` counters summed over honest routers into ``Results.router``.
ROUTER_COUNTERS = (
    "delivered",
    "published",
    "messages_sent",
    "suppressed_by_idontwant",
    "iwant_served",
    "rpcs_sent",
)


def component_rng(seed: int, component: str) -> random.Random:
    """The RNG of one component of one run (string seeds hash with SHA-512: stable across processes)."""
    return random.Random(f"meshchat-sim/{seed}/{component}")


def _ip(block: int, index: int) -> str:
    """A distinct private IPv4 address per ``index`` within a /16 ``block`` (spilling into the next)."""
    return f"10.{block + (index >> 16)}.{(index >> 8) & 0xFF}.{index & 0xFF}"


class World:
    """The nodes, network, metrics and schedules of one run."""

    def __init__(self, scenario: Scenario) -> None:
        """Build everything ``scenario`` describes and schedule its events."""
        seed = scenario.seed
        self.scenario = scenario
        self.clock = VirtualClock(component_rng(seed, "clock"))
        self.queue = EventQueue()
        self.graph: Graph = build_graph(scenario, component_rng(seed, "topology"))
        self.network = Network(
            scenario,
            clock=self.clock,
            queue=self.queue,
            latency_rng=component_rng(seed, "latency"),
            loss_rng=component_rng(seed, "loss"),
            jitter_rng=component_rng(seed, "jitter"),
        )
        self.workload_rng = component_rng(seed, "workload")
        self.churn_rng = component_rng(seed, "churn")
        self.attack_rng = component_rng(seed, "attack")
        self.identities = make_identities(
            scenario.nodes + scenario.attackers, component_rng(seed, "identities")
        )
        self.envelopes = EnvelopeFactory(
            clock=self.clock, rng=component_rng(seed, "envelopes"), body_size=scenario.body_size
        )
        self.validator: EnvelopeValidator | FastPathValidator = (
            FastPathValidator() if scenario.fast_path else EnvelopeValidator(self.clock)
        )
        self.message_ids = MessageIds()
        #: Honest messages that found no online publisher.
        self.unpublished = 0
        self.router_drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)
        self.router_counters: dict[str, int] = dict.fromkeys(ROUTER_COUNTERS, 0)
        self._add_nodes()
        #: Each honest node's starting neighbours.
        self.neighbours: list[list[Node]] = [
            [self.honest[i] for i in adjacent] for adjacent in self.graph.neighbours()
        ]
        #: Whom each node dials at boot, by node index.
        self.dial_targets: list[list[Node]] = [[] for _ in self.network.nodes]
        for dialler, listener in self.graph.edges:
            self.dial_targets[dialler].append(self.honest[listener])
        #: The node the eclipse Sybils all dial (None without an eclipse attempt).
        self.victim: Node | None = None
        self._plan_attackers()
        self._plan_partition()
        away = self._plan_churn()
        #: Honest nodes the scenario's removal takes away, by index (empty without one).
        self.removed: tuple[int, ...] = self._plan_removal(away)
        self.metrics = Metrics(
            subscribed=[n.subscribed for n in self.honest], away=away, drain=scenario.drain
        )
        self._schedule_boot_and_publishing()

    # --- nodes ------------------------------------------------------------------------------------

    def _add_nodes(self) -> None:
        scenario = self.scenario
        roles = (
            [Role.HONEST] * scenario.nodes
            + [Role.SYBIL] * (scenario.sybils + scenario.eclipse)
            + [Role.FLOODER] * scenario.flooders
            + [Role.SPAMMER] * scenario.spammers
        )
        sybil_ips = scenario.sybil_ips
        for index, role in enumerate(roles):
            if role is Role.HONEST:
                ip = _ip(0, index)
            elif role is Role.SYBIL and sybil_ips is not None:
                ip = _ip(200, (index - scenario.nodes) % sybil_ips)
            else:
                ip = _ip(100, index - scenario.nodes)
            cluster = self.graph.cluster[index] if role is Role.HONEST else -1
            node = Node(
                index=index, peer_id=self.identities[index].public.peer_id, role=role, ip=ip, cluster=cluster
            )
            self.network.add(node)
            node.router = self.new_router(node)
        self.honest = self.network.nodes[: scenario.nodes]
        self.attackers = self.network.nodes[scenario.nodes :]
        order = list(range(scenario.nodes))
        self.workload_rng.shuffle(order)
        for index in order[: round(scenario.subscribe_fraction * scenario.nodes)]:
            self.honest[index].subscribed = True
        for attacker in self.attackers:
            attacker.subscribed = True

    def new_router(self, node: Node) -> RouterLike:
        """A fresh router for ``node`` (its RNG depends on the node and how often it restarted)."""
        scenario = self.scenario
        router = GossipRouter(
            scenario.gossip,
            local_peer=node.peer_id,
            rng=component_rng(scenario.seed, f"router/{node.index}/{node.incarnation}"),
            validator=self.validator,
            score_params=scenario.score_params,
            message_id_fn=self.message_ids,
        )
        return SybilRouter(router) if node.role is Role.SYBIL else router

    def adjacency(self) -> list[list[int]]:
        """Each node's neighbours at boot (whom it dials and who dials it), by index."""
        adjacency: list[list[int]] = [[] for _ in self.network.nodes]
        for dialler, targets in enumerate(self.dial_targets):
            for target in targets:
                adjacency[dialler].append(target.index)
                adjacency[target.index].append(dialler)
        return adjacency

    def retire(self, router: RouterLike) -> None:
        """Keep the counters of an honest router that churn is about to discard."""
        self._add_statistics(self.router_drops, self.router_counters, router.statistics())

    def router_totals(self) -> tuple[dict[DropReason, int], dict[str, int]]:
        """Drops and counters over every honest router so far, retired and current."""
        drops, counters = dict(self.router_drops), dict(self.router_counters)
        for node in self.honest:
            if node.router is not None:
                self._add_statistics(drops, counters, node.router.statistics())
        return drops, counters

    @staticmethod
    def _add_statistics(
        drops: dict[DropReason, int], counters: dict[str, int], stats: RouterStatistics
    ) -> None:
        for reason, count in stats.drops.items():
            drops[reason] += count
        for name in ROUTER_COUNTERS:
            counters[name] += getattr(stats, name)

    # --- plans ------------------------------------------------------------------------------------

    def _plan_attackers(self) -> None:
        scenario, rng, honest = self.scenario, self.attack_rng, self.honest
        if scenario.eclipse:
            self.victim = honest[rng.randrange(len(honest))]
        eclipse_from = scenario.nodes + scenario.sybils
        for attacker in self.attackers:
            if attacker.role is Role.SYBIL and attacker.index >= eclipse_from:
                assert self.victim is not None
                targets = [self.victim]
            elif attacker.role is Role.SYBIL:
                targets = rng.sample(honest, min(scenario.sybil_degree, len(honest)))
            else:
                targets = rng.sample(honest, min(scenario.degree, len(honest)))
            self.dial_targets[attacker.index] = targets
            attacker.side = rng.randrange(2)

    def _plan_partition(self) -> None:
        partition = self.scenario.partition
        if partition is None:
            return
        order = list(range(len(self.honest)))
        if partition.split is PartitionSplit.RANDOM:
            component_rng(self.scenario.seed, "partition").shuffle(order)
        for position, index in enumerate(order):
            self.honest[index].side = 0 if position < len(order) // 2 else 1
        self.queue.push(self.clock.at(partition.at), EventKind.SPLIT)
        if partition.heal is not None:
            self.queue.push(self.clock.at(partition.heal), EventKind.HEAL)

    def _plan_churn(self) -> list[list[tuple[float, float]]]:
        """Pick the churned nodes and schedule their leave and return; return each node's away times."""
        scenario, rng = self.scenario, self.churn_rng
        away: list[list[tuple[float, float]]] = [[] for _ in self.honest]
        count = round(scenario.churn * scenario.nodes)
        low, high = scenario.churn_away
        for index in sorted(rng.sample(range(scenario.nodes), count)):
            leave = rng.uniform(scenario.first_publish, scenario.last_publish)
            back = leave + rng.uniform(low, high)
            away[index].append((leave, back))
            node = self.honest[index]
            self.queue.push(self.clock.at(leave), EventKind.LEAVE, node)
            self.queue.push(self.clock.at(back), EventKind.REJOIN, node)
        return away

    def _plan_removal(self, away: list[list[tuple[float, float]]]) -> tuple[int, ...]:
        """Pick the nodes the removal takes, schedule their leave (no return), note them as away."""
        removal = self.scenario.removal
        if removal is None:
            return ()
        if removal.target is RemovalTarget.BOOTSTRAPS:
            chosen = sorted(self.graph.bootstraps)
        else:
            degrees = self.graph.degrees()
            ranked = sorted(range(len(degrees)), key=lambda i: (-degrees[i], i))
            chosen = sorted(ranked[: round(removal.fraction * len(degrees))])
        for index in chosen:
            away[index].append((removal.at, float("inf")))
            self.queue.push(self.clock.at(removal.at), EventKind.LEAVE, self.honest[index])
        return tuple(chosen)

    def _schedule_boot_and_publishing(self) -> None:
        scenario, clock, queue = self.scenario, self.clock, self.queue
        boot_rng = component_rng(scenario.seed, "boot")
        for node in self.network.nodes:
            queue.push(clock.at(boot_rng.uniform(0.0, scenario.boot_spread)), EventKind.BOOT, node)
        for index in range(scenario.messages):
            queue.push(
                clock.at(scenario.first_publish + index / scenario.rate), EventKind.PUBLISH, None, index
            )
        for attacker in self.attackers:
            if attacker.role is Role.FLOODER:
                first = scenario.first_publish + self.attack_rng.uniform(0.0, 1.0 / scenario.flood_rate)
            elif attacker.role is Role.SPAMMER:
                first = scenario.first_publish + self.attack_rng.uniform(0.0, 1.0 / scenario.spam_rate)
            else:
                continue
            queue.push(clock.at(first), EventKind.ATTACK, attacker)
