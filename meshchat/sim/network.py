"""Simulated hosts and links: who is connected, and when (if ever) an RPC arrives.

A ``Node`` is one host: its PeerId, its role, its router while it is online, its open links and its
uplink. A ``Link`` is one open connection with a base one-way delay sampled when it opened.
``Network.send`` is the path every RPC takes: uplink queueing (size / bandwidth behind whatever the
uplink is still sending, FIFO), then a censor's byte budget per connection (``Scenario.cut_after``:
past it the connection is cut: a reset both ends hear one link delay later, or a stall they notice
``Scenario.cut_notice`` later still), then loss and
partition (decided at send time, counted by ``LinkDrop``), then the link's delay plus jitter, which
never reorders one link's packets (a connection is an ordered stream). The arriving RPC is the very
object the sender's router produced: nothing is encoded, only its size is computed.

What it is not: a model of the receiver's downlink, of TCP retransmission (a lost RPC is gone, the
pessimistic case), or of transport overhead (yamux frames, Noise tags, TCP/IP headers: the same for
every router). It drives no router: ``meshchat.sim.engine`` feeds routers and performs their actions.
"""

from __future__ import annotations

import random
import typing
from array import array
from collections.abc import Mapping, Set
from enum import Enum

from meshchat.gossip import RouterAction, RouterInput, RouterStatistics, RpcReceived
from meshchat.gossip.messages import RPC, PeerId, PubMessage, Topic
from meshchat.gossip.rpc import rpc_size
from meshchat.sim.clock import EventKind, EventQueue, VirtualClock
from meshchat.sim.scenario import Scenario, TopologyKind

__all__ = ["Link", "LinkDrop", "Network", "Node", "Outgoing", "Role", "RouterLike", "framed_size"]


def framed_size(rpc: RPC) -> int:
    """Bytes ``rpc`` takes on a pubsub stream: its protobuf encoding behind a uvarint length prefix."""
    size = rpc_size(rpc)
    return size + (1 if size < 0x80 else (size.bit_length() + 6) // 7)


class Role(Enum):
    """What a node is in the scenario."""

    #: Runs the real router and publishes the measured messages.
    HONEST = "honest"
    #: Runs the real router but never forwards a message (``meshchat.sim.adversary.SybilRouter``).
    SYBIL = "sybil"
    #: Runs the real router and sends invalid messages to all its peers.
    FLOODER = "flooder"
    #: Runs the real router and publishes valid envelopes nobody wants.
    SPAMMER = "spammer"


class LinkDrop(Enum):
    """Why the network (not a router) lost an RPC. Each is counted."""

    #: Random loss on the link.
    LOSS = "loss"
    #: Sender and receiver were on different sides of a partition.
    PARTITION = "partition"
    #: The connection closed (or the receiver left) while the RPC was in flight.
    CLOSED = "closed"
    #: A router sent to a peer it has no connection to (reported back as ``SendFailed``).
    NOT_CONNECTED = "not connected"
    #: A dial reached a node that was offline, or the two were already connected.
    DIAL_FAILED = "dial failed"
    #: A censor cut the connection after ``Scenario.cut_after`` bytes (the RPC that crossed the limit,
    #: and any sent before both ends saw the connection close).
    CUT = "cut"


class RouterLike(typing.Protocol):
    """What the engine needs of a router: ``GossipRouter`` or an adversary wrapping one."""

    def handle(self, event: RouterInput, *, now: float) -> list[RouterAction]:
        """Process one input."""

    def on_timer(self, *, now: float) -> list[RouterAction]:
        """Run the timer if due."""

    def next_deadline(self) -> float | None:
        """When ``on_timer`` is due."""

    def statistics(self) -> RouterStatistics:
        """Counters."""

    @property
    def mesh(self) -> Mapping[Topic, Set[PeerId]]:
        """Mesh peers per topic."""


class Link:
    """One open connection, shared by both ends; a reconnection makes a new one."""

    __slots__ = ("carried", "cut", "dialler", "id", "latency", "tail_down", "tail_up")

    def __init__(self, latency: float, link_id: int = 0, dialler: int = -1) -> None:
        #: Base one-way delay, seconds.
        self.latency = latency
        #: Index of the node that dialled it (-1: unknown, as in a worker's replayed copy).
        self.dialler = dialler
        #: Bytes sent over it, both directions (counted only under a censor: ``Scenario.cut_after``).
        self.carried = 0
        #: True once a censor cut it (the close is on its way to both ends).
        self.cut = False
        #: Unique in the run: names the link to the other worker process (each has its own copy).
        self.id = link_id
        #: Latest arrival scheduled from the lower-indexed end to the higher (jitter keeps FIFO).
        self.tail_up = 0.0
        #: Latest arrival scheduled the other way.
        self.tail_down = 0.0


#: ``Outgoing.columns()``: times, destinations, sources, entry refs, link ids, entries.
OutgoingColumns: typing.TypeAlias = tuple[
    "array[float]", "array[int]", "array[int]", "array[int]", "array[int]", list[PubMessage | RpcReceived]
]


class Outgoing:
    """RPCs sent to another worker's nodes during one window, column by column (cheap to pickle).

    Arrival ``i`` is at ``times[i]`` from node ``srcs[i]`` to node ``dsts[i]`` over link ``links[i]``,
    carrying ``entries[refs[i]]``: the ``RpcReceived`` itself, or, for the common RPC that forwards one
    message and nothing else, just the ``PubMessage`` (the receiving worker rebuilds the RPC once).
    """

    __slots__ = ("dsts", "entries", "last", "links", "refs", "srcs", "times")

    def __init__(self) -> None:
        """Start empty."""
        self.times = array("d")
        self.dsts = array("l")
        self.srcs = array("l")
        self.refs = array("l")
        self.links = array("q")
        self.entries: list[PubMessage | RpcReceived] = []
        #: The input the latest entry was made from (consecutive sends of one RPC share an entry).
        self.last: RpcReceived | None = None

    def columns(self) -> OutgoingColumns:
        """What to ship: everything but ``last``."""
        return self.times, self.dsts, self.srcs, self.refs, self.links, self.entries


class Node:
    """One simulated host."""

    __slots__ = (
        "bytes_sent",
        "cluster",
        "incarnation",
        "index",
        "ip",
        "links",
        "local",
        "peer_id",
        "role",
        "router",
        "rpcs_sent",
        "side",
        "subscribed",
        "timer_at",
        "uplink_free",
    )

    def __init__(self, *, index: int, peer_id: PeerId, role: Role, ip: str, cluster: int) -> None:
        #: Position in ``Network.nodes``.
        self.index = index
        #: Its PeerId text, what routers call it.
        self.peer_id = peer_id
        #: Its role.
        self.role = role
        #: Its IP address (routers use it for the colocation penalty).
        self.ip = ip
        #: Its geographic cluster (0 without clusters).
        self.cluster = cluster
        #: Its side of a partition (0 or 1).
        self.side = 0
        #: True if it joins the topic.
        self.subscribed = False
        #: Its router while online; None while away (churn).
        self.router: RouterLike | None = None
        #: How many routers it has had (a fresh one per rejoin); stale timers carry an old number.
        self.incarnation = 0
        #: Open connections by the other node's index.
        self.links: dict[int, Link] = {}
        #: True if this process runs its router (always, with one worker; see ``meshchat.sim.parallel``).
        self.local = True
        #: When the uplink finishes what it is sending (virtual monotonic time).
        self.uplink_free = 0.0
        #: Bytes sent (pubsub framing included), over the whole run.
        self.bytes_sent = 0
        #: RPCs sent.
        self.rpcs_sent = 0
        #: When its single live timer event fires (infinity: none pending).
        self.timer_at = float("inf")


class Network:
    """All nodes and links, and the send path."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        clock: VirtualClock,
        queue: EventQueue,
        latency_rng: random.Random,
        loss_rng: random.Random,
        jitter_rng: random.Random,
    ) -> None:
        """An empty network for ``scenario``; add nodes with ``add``."""
        self._scenario = scenario
        self._clock = clock
        self._queue = queue
        self._latency_rng = latency_rng
        self._loss_rng = loss_rng
        self._jitter_rng = jitter_rng
        self._clustered = scenario.topology is TopologyKind.CLUSTERS
        self._loss = scenario.loss
        self._jitter = scenario.jitter
        self._seconds_per_byte = 0.0 if scenario.bandwidth is None else 1.0 / scenario.bandwidth
        self._cut_after = scenario.cut_after
        self._cut_notice = scenario.cut_notice
        self._last_rpc: RPC | None = None
        self._last_size = 0
        self._last_input: RpcReceived | None = None
        self._next_link_id = 0
        self._link_id_step = 1
        #: With several workers: what goes to each worker's nodes, by worker index
        #: (``meshchat.sim.parallel`` ships and replaces these).
        self.outgoing: list[Outgoing] = []
        #: With several workers: connections opened and closed that another worker must replay,
        #: ``(OPEN or CLOSE, time, node, other, latency, link id)`` by worker index.
        self.notes: list[list[tuple[EventKind, float, int, int, float, int]]] = []
        #: Worker index of each node (all 0 with one worker).
        self.owner: list[int] = []
        #: Every node, honest ones first.
        self.nodes: list[Node] = []
        #: Nodes by PeerId.
        self.by_peer_id: dict[PeerId, Node] = {}
        #: True while the partition is in force.
        self.partitioned = False
        #: RPCs the network lost, by reason.
        self.drops: dict[LinkDrop, int] = dict.fromkeys(LinkDrop, 0)
        #: Connections a censor cut (``Scenario.cut_after``).
        self.cuts = 0

    def add(self, node: Node) -> None:
        """Add ``node`` (its index must be the next one)."""
        if node.index != len(self.nodes) or node.peer_id in self.by_peer_id:
            raise ValueError(f"node {node.index} ({node.peer_id}) added out of order or twice")
        node.uplink_free = self._clock.now
        self.nodes.append(node)
        self.owner.append(0)
        self.by_peer_id[node.peer_id] = node

    # --- connections ------------------------------------------------------------------------------

    def new_link(self, a: Node, b: Node) -> Link:
        """A link between ``a`` and ``b`` with a delay drawn from the model that fits them."""
        honest_pair = a.role is Role.HONEST and b.role is Role.HONEST
        if self._clustered and honest_pair and a.cluster == b.cluster:
            model = self._scenario.cluster_latency
        else:
            model = self._scenario.latency
        self._next_link_id += self._link_id_step
        return Link(model.sample(self._latency_rng), self._next_link_id, a.index)

    def share(self, *, worker: int, workers: int, owner: list[int], rngs: tuple[random.Random, ...]) -> None:
        """Make this the network of worker ``worker`` of ``workers``: it runs the nodes it ``owner``s.

        Sends to other workers' nodes go to ``outgoing``; link ids stay unique across workers. ``rngs``
        (latency, loss, jitter) replace the inherited ones, so workers do not draw the same numbers.
        """
        self._latency_rng, self._loss_rng, self._jitter_rng = rngs
        self.owner = owner
        for node in self.nodes:
            node.local = owner[node.index] == worker
        self.outgoing = [Outgoing() for _ in range(workers)]
        self.notes = [[] for _ in range(workers)]
        self._next_link_id = worker + 1 - workers  # the first new_link gives worker + 1
        self._link_id_step = workers

    def tell(self, kind: EventKind, at: float, node: Node, other: Node, link: Link) -> None:
        """If ``other`` is another worker's, note that ``link`` to it opens or closes (``kind``) at ``at``."""
        if not other.local:
            note = (kind, at, node.index, other.index, link.latency, link.id)
            self.notes[self.owner[other.index]].append(note)

    def install(self, a: Node, b: Node, link: Link) -> bool:
        """Open ``link`` between two online nodes; False if either is away or they are already linked.

        The caller counts a failure (each worker installs both ends; the dialler's counts it).
        """
        if a.router is None or b.router is None or b.index in a.links or a is b:
            return False
        a.links[b.index] = link
        b.links[a.index] = link
        return True

    def remove(self, a: Node, b: Node) -> bool:
        """Close the link between ``a`` and ``b``; False if there was none."""
        if a.links.pop(b.index, None) is None:
            return False
        del b.links[a.index]
        return True

    # --- sending ----------------------------------------------------------------------------------

    def send(self, src: Node, peer: PeerId, rpc: RPC) -> bool:
        """Put ``rpc`` from ``src`` to ``peer`` on the wire; False if they are not connected.

        The RPC is counted as sent (bytes, uplink time) even if the link then loses it.
        """
        dst = self.by_peer_id.get(peer)
        link = None if dst is None else src.links.get(dst.index)
        if link is None or dst is None:
            self.drops[LinkDrop.NOT_CONNECTED] += 1
            return False
        # Routers send one shared RPC object to several peers in a row: size it once, and wrap it in
        # one (immutable) RpcReceived that every recipient's router gets.
        received = self._last_input
        if rpc is self._last_rpc and received is not None and received.peer == src.peer_id:
            size = self._last_size
        else:
            size = self._last_size = framed_size(rpc)
            self._last_rpc = rpc
            received = self._last_input = RpcReceived(peer=src.peer_id, rpc=rpc)
        src.bytes_sent += size
        src.rpcs_sent += 1
        departure = self._clock.now
        if self._seconds_per_byte:
            departure = max(departure, src.uplink_free) + size * self._seconds_per_byte
            src.uplink_free = departure
        if self._cut_after is not None and self._censor(src, dst, link, size, departure):
            return True
        if self._loss and self._loss_rng.random() < self._loss:
            self.drops[LinkDrop.LOSS] += 1
            return True
        if self.partitioned and src.side != dst.side:
            self.drops[LinkDrop.PARTITION] += 1
            return True
        arrival = departure + link.latency
        if self._jitter:
            arrival += self._jitter_rng.random() * self._jitter
            if src.index < dst.index:
                arrival = link.tail_up = max(arrival, link.tail_up)
            else:
                arrival = link.tail_down = max(arrival, link.tail_down)
        if dst.local:
            self._queue.push(arrival, EventKind.ARRIVE, dst, src, received, link)
            return True
        out = self.outgoing[self.owner[dst.index]]
        if received is not out.last:
            out.last = received
            publish = rpc.publish
            single = len(publish) == 1 and rpc.control is None and not rpc.subscriptions
            out.entries.append(publish[0] if single else received)
        out.times.append(arrival)
        out.dsts.append(dst.index)
        out.srcs.append(src.index)
        out.refs.append(len(out.entries) - 1)
        out.links.append(link.id)
        return True

    def _censor(self, src: Node, dst: Node, link: Link, size: int, departure: float) -> bool:
        """Count ``size`` bytes on ``link``; True if the censor drops them (and cuts the link once)."""
        assert self._cut_after is not None
        link.carried += size
        if link.carried <= self._cut_after:
            return False
        self.drops[LinkDrop.CUT] += 1
        if not link.cut:
            # A reset reaches both ends about one link delay after the packet that crossed the limit; a
            # silent stall only when their keepalive gives up, ``cut_notice`` later.
            link.cut = True
            self.cuts += 1
            notice = departure + link.latency + self._cut_notice
            self._queue.push(notice, EventKind.CLOSE, src, dst, link.id)
        return True
