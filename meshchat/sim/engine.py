"""The simulation driver: real ``GossipRouter``s on a virtual clock, fed from one event queue.

This is the simulator's equivalent of the network driver (STYLE.md section 1): for each node it
calls ``handle`` / ``on_timer`` and performs the returned actions. ``SendRpc`` goes through
``Network.send`` (delay, loss, partition, bandwidth) and comes back as ``RpcReceived`` at the peer;
``Deliver`` is recorded by ``Metrics``; ``Disconnect`` and ``Dial`` close and open simulated
connections, with ``PeerDisconnected``/``PeerConnected`` to both ends (a close takes effect at both
ends one shortest link delay after the router asked; a dial after two round trips). Each node has at
most one live timer event, set from ``next_deadline()`` after every router call (stale ones are
skipped). With ``Scenario.workers > 1`` the run is shared by processes (``meshchat.sim.parallel``);
this loop then runs in each of them, for the nodes that process owns (``Node.local``).

Everything random comes from ``random.Random`` instances derived from the seed and a component name;
nothing reads the wall clock except the one measurement reported as ``wall_seconds``. Setting the
run up (nodes, schedules) is ``meshchat.sim.world``; this module runs it.

It is not a protocol implementation: routers are the real ones, adversaries wrap them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import assert_never

from meshchat.gossip import (
    Deliver,
    Dial,
    Disconnect,
    Join,
    PeerConnected,
    PeerDisconnected,
    Publish,
    RouterAction,
    RouterInput,
    RpcReceived,
    SendFailed,
    SendRpc,
)
from meshchat.sim.adversary import SybilRouter, flood_rpc
from meshchat.sim.clock import Event, EventKind
from meshchat.sim.network import Link, LinkDrop, Node, Role, RouterLike
from meshchat.sim.parallel import run_parallel
from meshchat.sim.results import Results, summarize
from meshchat.sim.running import PROGRESS_STEPS, RouterFigures, collector_paused
from meshchat.sim.scenario import Reconnect, Scenario
from meshchat.sim.world import World

__all__ = [
    "CONNECT_ROUND_TRIPS",
    "PROGRESS_STEPS",
    "RouterFigures",
    "Simulation",
    "collector_paused",
    "run",
]

#: Round trips a dial takes before pubsub can talk: TCP (1), then Noise XX and multistream-select
#: negotiation pipelined into about one more.
CONNECT_ROUND_TRIPS = 2
#: Random draws tried to find an online honest publisher before scanning the whole list.
PUBLISHER_DRAWS = 64


class Simulation:
    """One run of a scenario. ``run()`` it, or step it with ``run_until`` and look inside (tests)."""

    def __init__(self, scenario: Scenario) -> None:
        """Build the network and schedule the whole run; nothing happens until it runs."""
        #: Everything the run is made of.
        self.world = world = World(scenario)
        self.scenario = scenario
        self.clock = world.clock
        self.queue = world.queue
        self.network = world.network
        self.metrics = world.metrics
        #: Events processed so far.
        self.events = 0
        #: Seconds from a router's ``Disconnect`` until both ends are closed: the shortest link delay,
        #: so a second worker process (``meshchat.sim.parallel``) hears of it in time.
        self.close_delay = scenario.min_latency
        #: Honest routers' disconnects of attackers.
        self.disconnects_of_attackers = 0
        #: Set by ``meshchat.sim.parallel``: the workers' ``router_figures`` added up.
        self.merged_figures: RouterFigures | None = None

    # --- running ----------------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> Results:
        """Run to the end of the scenario; call ``progress(fraction)`` along the way."""
        if self.scenario.workers > 1:
            return run_parallel(self, progress)
        started = time.perf_counter()  # wall time, only for the report: the simulation never sees it
        duration = self.scenario.duration
        with collector_paused():
            for step in range(1, PROGRESS_STEPS + 1):
                self.run_until(duration * step / PROGRESS_STEPS)
                if progress is not None:
                    progress(step / PROGRESS_STEPS)
        return self.results(wall_seconds=time.perf_counter() - started)

    def run_until(self, elapsed: float) -> None:
        """Process every event due up to ``elapsed`` seconds from the start; leave the clock there."""
        self.run_to(self.clock.at(elapsed))

    def run_to(self, limit: float) -> None:
        """Process every event due at or before ``limit`` (virtual monotonic time); leave the clock there."""
        clock = self.clock
        pop_until = self.queue.pop_until
        push = self.queue.push
        received = self.metrics.received
        perform = self._perform
        arrive, timer, honest = EventKind.ARRIVE, EventKind.TIMER, Role.HONEST
        closed = 0
        count = 0
        while (event := pop_until(limit)) is not None:
            now = clock.now = event[0]
            count += 1
            kind = event[2]
            if kind is arrive:
                # The hot path (nearly every event): ``_input`` inlined.
                dst: Node = event[3]
                src: Node = event[4]
                if dst.links.get(src.index) is not event[6]:
                    closed += 1  # the connection closed, or the receiver left, while it was in flight
                    continue
                arrived: RpcReceived = event[5]
                publish = arrived.rpc.publish
                if publish and dst.role is honest:
                    received(dst.index, publish)
                router = dst.router
                assert router is not None  # it has a live link, so it is online
                actions = router.handle(arrived, now=now)
                if actions:
                    perform(dst, actions)
                deadline = router.next_deadline()
                if deadline is not None and deadline < dst.timer_at:
                    dst.timer_at = deadline
                    push(deadline, timer, dst, dst.incarnation)
            elif kind is timer:
                self._on_timer(event)
            else:
                self._on_rare(event)
        clock.now = max(clock.now, limit)
        self.events += count
        self.network.drops[LinkDrop.CLOSED] += closed

    # --- driving routers --------------------------------------------------------------------------

    def _input(self, node: Node, event: RouterInput) -> None:
        if not node.local:
            return  # another worker process runs this node (events every worker replays call here)
        router = node.router
        assert router is not None, "inputs go to online nodes only"
        self._perform_and_rearm(node, router, router.handle(event, now=self.clock.now))

    def _on_timer(self, event: Event) -> None:
        node: Node = event[3]
        router = node.router
        if router is None or event[4] != node.incarnation or event[0] != node.timer_at:
            return  # stale: the node left, or a later timer replaced this one
        node.timer_at = float("inf")
        self._perform_and_rearm(node, router, router.on_timer(now=self.clock.now))

    def _perform_and_rearm(self, node: Node, router: RouterLike, actions: list[RouterAction]) -> None:
        """Carry out a router call's actions, then arm the node's timer if its deadline moved earlier."""
        if actions:
            self._perform(node, actions)
        deadline = router.next_deadline()
        if deadline is not None and deadline < node.timer_at:
            node.timer_at = deadline
            self.queue.push(deadline, EventKind.TIMER, node, node.incarnation)

    def _perform(self, node: Node, actions: list[RouterAction]) -> None:
        network = self.network
        send = network.send
        for action in actions:
            if type(action) is SendRpc:  # nearly every action: skip the pattern match
                if not send(node, action.peer, action.rpc):
                    self.queue.push(
                        self.clock.now, EventKind.SEND_FAILED, node, action.peer, node.incarnation
                    )
                continue
            match action:
                case SendRpc():
                    raise AssertionError("SendRpc is performed above, without the pattern match")
                case Deliver(data=data):
                    if node.role is Role.HONEST:
                        self.metrics.delivered(node.index, data, self.clock.elapsed)
                case Disconnect(peer=peer):
                    other = network.by_peer_id.get(peer)
                    if other is not None:
                        if node.role is Role.HONEST and other.role is not Role.HONEST:
                            self.disconnects_of_attackers += 1
                        self._close(node, other)
                case Dial(peer=peer):
                    other = network.by_peer_id.get(peer)
                    if other is None or other.router is None or other.index in node.links:
                        network.drops[LinkDrop.DIAL_FAILED] += 1
                    else:
                        self._dial(node, other)
                case _:
                    assert_never(action)

    def _dial(self, node: Node, other: Node) -> None:
        link = self.network.new_link(node, other)
        done = self.clock.now + CONNECT_ROUND_TRIPS * 2 * link.latency
        self.queue.push(done, EventKind.OPEN, node, other, link)
        self.network.tell(EventKind.OPEN, done, node, other, link)

    def _close(self, node: Node, other: Node) -> None:
        """Close the link between ``node`` and ``other`` at both ends, ``close_delay`` from now."""
        link = node.links.get(other.index)
        if link is None:
            return
        at = self.clock.now + self.close_delay
        self.queue.push(at, EventKind.CLOSE, node, other, link.id)
        self.network.tell(EventKind.CLOSE, at, node, other, link)

    # --- rare events ------------------------------------------------------------------------------

    def _on_rare(self, event: Event) -> None:
        kind: EventKind = event[2]
        match kind:
            case EventKind.PUBLISH:
                self._on_publish(event)
            case EventKind.BOOT:
                self._on_boot(event)
            case EventKind.OPEN:
                self._on_open(event)
            case EventKind.CLOSE:
                self._on_close(event)
            case EventKind.SEND_FAILED:
                self._on_send_failed(event)
            case EventKind.LEAVE:
                self._on_leave(event)
            case EventKind.REJOIN:
                self._on_rejoin(event)
            case EventKind.SPLIT:
                self.network.partitioned = True
            case EventKind.HEAL:
                self.network.partitioned = False
            case EventKind.ATTACK:
                self._on_attack(event)
            case EventKind.ARRIVE | EventKind.TIMER:
                raise AssertionError(f"{kind.name} events are handled in run_until")
            case _:
                assert_never(kind)

    def _on_boot(self, event: Event) -> None:
        node: Node = event[3]
        if node.router is None:
            return  # churned out before it even started
        if node.subscribed:
            self._input(node, Join(topic=self.scenario.topic))
        if node.local:
            for other in self.world.dial_targets[node.index]:
                self._dial(node, other)

    def _on_open(self, event: Event) -> None:
        node: Node = event[3]
        other: Node = event[4]
        link: Link = event[5]
        if self.network.install(node, other, link):
            self._input(node, PeerConnected(peer=other.peer_id, outbound=True, ip=other.ip))
            self._input(other, PeerConnected(peer=node.peer_id, outbound=False, ip=node.ip))
        elif node.local:
            self.network.drops[LinkDrop.DIAL_FAILED] += 1

    def _on_close(self, event: Event) -> None:
        node: Node = event[3]
        other: Node = event[4]
        link = node.links.get(other.index)
        if link is None or link.id != event[5]:
            return  # already closed (by the other end, or a leave), maybe reopened since
        self.network.remove(node, other)
        self._input(node, PeerDisconnected(peer=other.peer_id))
        self._input(other, PeerDisconnected(peer=node.peer_id))

    def _on_send_failed(self, event: Event) -> None:
        node: Node = event[3]
        if node.router is not None and event[5] == node.incarnation:
            self._input(node, SendFailed(peer=event[4]))

    def _on_leave(self, event: Event) -> None:
        node: Node = event[3]
        if node.router is None:
            return
        if node.local:
            self.world.retire(node.router)
        node.router = None
        node.incarnation += 1
        node.timer_at = float("inf")
        for index in list(node.links):
            other = self.network.nodes[index]
            self.network.remove(node, other)
            self._input(other, PeerDisconnected(peer=node.peer_id))

    def _on_rejoin(self, event: Event) -> None:
        node: Node = event[3]
        if node.router is not None:
            return
        world = self.world
        node.router = world.new_router(node)
        node.uplink_free = max(node.uplink_free, self.clock.now)
        if node.subscribed:
            self._input(node, Join(topic=self.scenario.topic))
        if self.scenario.reconnect is Reconnect.ORIGINAL:
            targets = [other for other in world.neighbours[node.index] if other.router is not None]
        else:
            online = [n for n in world.honest if n.router is not None and n is not node]
            targets = world.churn_rng.sample(online, min(len(world.neighbours[node.index]), len(online)))
        if node.local:
            for other in targets:
                self._dial(node, other)

    def _on_publish(self, _event: Event) -> None:
        world = self.world
        publisher = self._pick_publisher()
        if publisher is None:
            world.unpublished += 1
            return
        recipient = world.honest[world.workload_rng.randrange(len(world.honest))]
        data = world.envelopes.sealed(world.identities[publisher.index], world.identities[recipient.index])
        self.metrics.published(data, publisher=publisher.index, at=self.clock.elapsed)
        self._input(publisher, Publish(topic=self.scenario.topic, data=data))

    def _pick_publisher(self) -> Node | None:
        rng, honest = self.world.workload_rng, self.world.honest
        for _ in range(PUBLISHER_DRAWS):
            node = honest[rng.randrange(len(honest))]
            if node.router is not None:
                return node
        online = [n for n in honest if n.router is not None]
        return rng.choice(online) if online else None

    def _on_attack(self, event: Event) -> None:
        node: Node = event[3]
        scenario, world = self.scenario, self.world
        if node.role is Role.FLOODER:
            rate = scenario.flood_rate
            if node.router is not None:
                garbage = world.envelopes.garbage()
                self.metrics.junk(garbage, "invalid")
                rpc = flood_rpc(scenario.topic, garbage)
                for index in list(node.links) if node.local else ():
                    self.network.send(node, self.network.nodes[index].peer_id, rpc)
        else:
            rate = scenario.spam_rate
            if node.router is not None:
                victim = world.honest[world.attack_rng.randrange(len(world.honest))]
                data = world.envelopes.sealed(world.identities[node.index], world.identities[victim.index])
                self.metrics.junk(data, "spam")
                self._input(node, Publish(topic=scenario.topic, data=data))
        next_at = self.clock.elapsed + 1.0 / rate
        if next_at <= scenario.last_publish:
            self.queue.push(self.clock.at(next_at), EventKind.ATTACK, node)

    # --- results ----------------------------------------------------------------------------------

    def router_figures(self) -> RouterFigures:
        """What the routers this process ran report (with several workers, each reports its own)."""
        world, topic = self.world, self.scenario.topic
        drops, counters = world.router_totals()
        return RouterFigures(
            drops=drops,
            counters=counters,
            meshes=[
                len(node.router.mesh.get(topic, ()))
                for node in world.honest
                if node.router is not None and node.subscribed and node.local
            ],
            withheld=sum(
                n.router.withheld for n in world.attackers if isinstance(n.router, SybilRouter) and n.local
            ),
        )

    def results(self, *, wall_seconds: float) -> Results:
        """The figures of the run so far."""
        scenario, metrics, world = self.scenario, self.metrics, self.world
        counted, expected = metrics.delivery()
        latencies = sorted(metrics.latencies)  # once: a large run has millions
        figures = self.router_figures() if self.merged_figures is None else self.merged_figures
        router_drops, router_counters = figures.drops, figures.counters
        meshes, withheld = figures.meshes, figures.withheld
        return Results(
            seed=scenario.seed,
            nodes=scenario.nodes,
            messages=len(metrics.records),
            validation="fast-path" if scenario.fast_path else "envelope",
            validations={"accepted": world.validator.accepted, "rejected": world.validator.rejected},
            delivery_ratio=round(counted / expected, 6) if expected else None,
            deliveries=counted,
            expected_deliveries=expected,
            latency_ms=summarize(latencies, scale=1000.0, ordered=True),
            latency_cdf_ms=metrics.latency_cdf_ms(latencies),
            duplicates_per_message=metrics.duplicates_per_message(),
            bytes_per_node=summarize([n.bytes_sent for n in world.honest]),
            mesh_degree={
                "mean": round(sum(meshes) / len(meshes), 6) if meshes else None,
                "min": min(meshes, default=None),
                "max": max(meshes, default=None),
            },
            drops={
                "network": {reason.value: count for reason, count in self.network.drops.items()},
                "router": {reason.value: count for reason, count in router_drops.items()},
            },
            router=router_counters,
            delivery_over_time=tuple(
                metrics.delivery_over_time(scenario.first_publish, scenario.last_publish)
            ),
            attack={
                "invalid_delivered": metrics.other_deliveries["invalid"],
                "spam_delivered": metrics.other_deliveries["spam"],
                "sybil_withheld": withheld,
                "attackers_disconnected": self.disconnects_of_attackers,
                "eclipse_victim_delivery_ratio": (
                    None if world.victim is None else metrics.node_delivery_ratio(world.victim.index)
                ),
                "attacker_bytes": sum(n.bytes_sent for n in world.attackers),
                "unpublished": world.unpublished,
            },
            events=self.events,
            virtual_seconds=round(self.clock.elapsed, 6),
            wall_seconds=round(wall_seconds, 3),
            parameters=scenario.to_dict(),
        )


def run(scenario: Scenario, *, progress: Callable[[float], None] | None = None) -> Results:
    """Run ``scenario`` to the end and return its results."""
    return Simulation(scenario).run(progress)
