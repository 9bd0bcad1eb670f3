"""What a simulation run is made of: every knob in one frozen ``Scenario``, checked on construction.

A scenario names the network (size, topology, link latency, jitter, loss, bandwidth), the workload
(how many messages, how fast, after what warm-up), the protocol settings (``GossipConfig``, peer
scoring on or off, envelope validation or the counted fast path) and the trouble (a partition, churn,
Sybils, an eclipse attempt, flooders of invalid messages, spammers of valid junk). Times are virtual
seconds from the start of the run. The same scenario and seed always give the same results.

This module only describes a run; ``meshchat.sim.engine`` performs it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum

from meshchat.gossip import GossipConfig, ScoreParams
from meshchat.sim.errors import ScenarioError
from meshchat.sim.latency import FixedLatency, LatencyModel, LogNormalLatency, UniformLatency
from meshchat.wire import MAX_ENVELOPE_SIZE

__all__ = [
    "DEFAULT_TOPIC",
    "MAX_NODES",
    "MAX_WORKERS",
    "Partition",
    "PartitionSplit",
    "Reconnect",
    "Removal",
    "RemovalTarget",
    "Scenario",
    "TopologyKind",
    "parse_partition",
]

#: The topic every subscribed node joins (one inbox shard: the broadcast benchmark).
DEFAULT_TOPIC = "meshchat/inbox/0"
#: Largest network a scenario may ask for: 100,000 nodes is ~10x the 10 min / 8 GiB benchmark.
MAX_NODES = 100_000
#: Most worker processes one run may use.
MAX_WORKERS = 64
#: Default one-way link delay: 50-150 ms, terrestrial paths within a continent and across one ocean.
DEFAULT_LATENCY = UniformLatency(0.050, 0.150)
#: Default one-way delay inside a geographic cluster: 5-20 ms, a metro or national network.
DEFAULT_CLUSTER_LATENCY = UniformLatency(0.005, 0.020)
#: Largest message body, bytes: what still fits one sealed envelope.
MAX_BODY = MAX_ENVELOPE_SIZE // 2


class TopologyKind(Enum):
    """How nodes are wired together at the start."""

    #: Every node has ``degree`` random neighbours (one node has one fewer if nodes x degree is odd).
    RANDOM_REGULAR = "random-regular"
    #: Watts-Strogatz: a ring of ``degree / 2`` neighbours each side, each link rewired with ``rewire``.
    SMALL_WORLD = "small-world"
    #: ``clusters`` geographic clusters, random-regular inside, ``bridges`` links between each pair.
    CLUSTERS = "clusters"
    #: How real nodes form a network: the first ``bootstraps`` nodes are bootstrap nodes (linked to
    #: each other); every other node, in index order, dials ``bootstrap_dials`` of them and ``degree``
    #: random nodes that joined before it, whose addresses it learned through them (the DHT and peer
    #: exchange), and keeps ``address_book`` further addresses it learned.
    BOOTSTRAP = "bootstrap"
    #: Preferential attachment (Barabasi-Albert): every node, in index order, dials ``degree // 2``
    #: earlier nodes chosen in proportion to their connections, and keeps ``address_book`` addresses
    #: of further random earlier nodes. A few hubs hold many of the links.
    SCALE_FREE = "scale-free"


class PartitionSplit(Enum):
    """How a partition divides the nodes in two."""

    #: Lower half of the node indices against the upper half (with clusters: along cluster lines).
    INDEX = "index"
    #: A random half.
    RANDOM = "random"


class Reconnect(Enum):
    """Whom a churned node dials when it comes back."""

    #: The neighbours it had at the start.
    ORIGINAL = "original"
    #: As many random online nodes as it had neighbours.
    RANDOM = "random"


class RemovalTarget(Enum):
    """Which nodes a ``Removal`` takes away."""

    #: Every bootstrap node (the ``bootstrap`` topology's first ``bootstraps`` nodes).
    BOOTSTRAPS = "bootstraps"
    #: The ``fraction`` of honest nodes with the most connections at formation (ties: lower index).
    HUBS = "hubs"


@dataclass(frozen=True, slots=True, kw_only=True)
class Removal:
    """At ``at`` the chosen nodes leave for good (their links close). They are not expected to deliver
    messages published after they left. (With churn, a removed node that churn has due back would
    return: the experiments run removal without churn.)"""

    #: When they go, seconds from the start of the run.
    at: float
    #: Who goes.
    target: RemovalTarget
    #: With ``HUBS``: the fraction of honest nodes removed.
    fraction: float = 0.1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.at) and self.at >= 0):
            raise ScenarioError("removal", f"time {self.at} must be >= 0")
        if not 0.0 <= self.fraction < 1.0:
            raise ScenarioError("removal", f"fraction {self.fraction} must be in [0, 1)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """From ``at`` to ``heal`` every packet between the two halves is lost. Nobody is disconnected."""

    #: When the network splits, seconds from the start of the run.
    at: float
    #: When it heals (None: never).
    heal: float | None = None
    #: How the halves are chosen.
    split: PartitionSplit = PartitionSplit.INDEX

    def __post_init__(self) -> None:
        if not (math.isfinite(self.at) and self.at >= 0):
            raise ScenarioError("partition", f"start {self.at} must be a time >= 0")
        if self.heal is not None and not (math.isfinite(self.heal) and self.heal > self.at):
            raise ScenarioError("partition", f"heal time {self.heal} must come after the start {self.at}")


def parse_partition(text: str) -> Partition:
    """Read ``AT:HEAL`` or ``AT:`` (never heals), seconds from the start of the run."""
    at_text, sep, heal_text = text.partition(":")
    try:
        at = float(at_text)
        heal = float(heal_text) if heal_text.strip() else None
    except ValueError:
        raise ScenarioError("partition", f"expected AT:HEAL in seconds, not {text!r}") from None
    if not sep:
        raise ScenarioError("partition", f"expected AT:HEAL in seconds, not {text!r}")
    return Partition(at=at, heal=heal)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """Every knob of one simulation run, with defaults for a small broadcast benchmark."""

    # --- run ---
    #: Seeds every random choice; the same seed and scenario give the same results.
    seed: int = 0
    #: Processes that share the nodes (``meshchat.sim.parallel``). Results depend on it: the same seed
    #: and worker count give the same results; another count is another (equally valid) run.
    workers: int = 1
    # --- network ---
    #: Honest nodes.
    nodes: int = 100
    #: Connections per honest node at the start.
    degree: int = 6
    #: How they are wired.
    topology: TopologyKind = TopologyKind.RANDOM_REGULAR
    #: Small world: probability that a ring link is rewired to a random node.
    rewire: float = 0.1
    #: Clusters: how many.
    clusters: int = 4
    #: Clusters: links between each pair of clusters.
    bridges: int = 2
    #: One-way delay of each link (between clusters, with the cluster topology).
    latency: LatencyModel = DEFAULT_LATENCY
    #: Bootstrap topology: how many bootstrap nodes (the lowest indices).
    bootstraps: int = 3
    #: Bootstrap topology: bootstrap nodes each node dials.
    bootstrap_dials: int = 2
    #: Bootstrap and scale-free topologies: addresses each node keeps beyond those it dialled.
    address_book: int = 20
    #: Clusters: one-way delay inside a cluster.
    cluster_latency: LatencyModel = DEFAULT_CLUSTER_LATENCY
    #: Extra per-packet delay, uniform in ``[0, jitter]`` seconds (packets of one link stay in order).
    jitter: float = 0.0
    #: Probability that one RPC is lost on a link.
    loss: float = 0.0
    #: Uplink of each node, bytes per second (None: unlimited). A busy uplink queues (FIFO).
    bandwidth: float | None = None
    #: Seconds over which nodes start and dial their neighbours (real networks do not boot in step).
    boot_spread: float = 1.0
    # --- workload ---
    #: Honest messages published, each by a random online honest node.
    messages: int = 100
    #: Messages per second, evenly spaced.
    rate: float = 10.0
    #: Body size of each message, bytes (it is sealed and padded into an envelope).
    body_size: int = 100
    #: Seconds before the first publish, so meshes form.
    warmup: float = 5.0
    #: Seconds a message is followed after its publish; the run ends this long after the last one.
    drain: float = 10.0
    #: Fraction of honest nodes that join the topic (the others connect and relay nothing).
    subscribe_fraction: float = 1.0
    #: The topic.
    topic: str = DEFAULT_TOPIC
    # --- protocol ---
    #: Router parameters of every node.
    gossip: GossipConfig = field(default_factory=GossipConfig)
    #: Peer scoring parameters (None: scoring off).
    score_params: ScoreParams | None = field(default_factory=ScoreParams)
    #: Validate by size only and count the calls, instead of decoding envelopes and checking expiry.
    fast_path: bool = False
    # --- trouble ---
    #: A scheduled network split.
    partition: Partition | None = None
    #: Nodes that leave for good once the network formed.
    removal: Removal | None = None
    #: A censor cuts every connection once it carried this many bytes (both directions together;
    #: None: no censor). The RPC that crosses the limit is lost and both ends see the connection close.
    cut_after: int | None = None
    #: Seconds after a cut before both ends notice it: 0 models a reset; more models a censor that
    #: silently drops everything further, noticed only when a keepalive times out.
    cut_notice: float = 0.0
    #: Fraction of honest nodes that leave once and come back later.
    churn: float = 0.0
    #: Shortest and longest time a churned node stays away, seconds.
    churn_away: tuple[float, float] = (5.0, 20.0)
    #: Whom a churned node reconnects to.
    reconnect: Reconnect = Reconnect.ORIGINAL
    #: Sybils: subscribe and accept grafts, never forward a message.
    sybils: int = 0
    #: Honest nodes each Sybil dials (all of them, if there are fewer).
    sybil_degree: int = 20
    #: Distinct IP addresses the Sybils share (None: one each), for the colocation penalty (P6).
    sybil_ips: int | None = None
    #: Extra Sybils that all dial one victim (an eclipse attempt).
    eclipse: int = 0
    #: Attackers sending invalid messages (garbage on the topic).
    flooders: int = 0
    #: Invalid messages per second per flooder, to all its peers.
    flood_rate: float = 20.0
    #: Attackers publishing valid envelopes to random recipients.
    spammers: int = 0
    #: Valid junk messages per second per spammer.
    spam_rate: float = 5.0

    def __post_init__(self) -> None:
        _check_int("nodes", self.nodes, 2, MAX_NODES)
        _check_int("workers", self.workers, 1, min(MAX_WORKERS, self.nodes))
        if self.workers > 1 and self.min_latency <= 0:
            raise ScenarioError(
                "workers", "several workers need links with a positive shortest delay (not log-normal)"
            )
        _check_int("degree", self.degree, 1, self.nodes - 1)
        _check_int("messages", self.messages, 0, 10_000_000)
        _check_int("body_size", self.body_size, 0, MAX_BODY)
        _check_int("clusters", self.clusters, 1, MAX_NODES)
        _check_int("bridges", self.bridges, 0, 1000)
        for name in ("sybils", "eclipse", "flooders", "spammers"):
            _check_int(name, getattr(self, name), 0, MAX_NODES)
        _check_int("sybil_degree", self.sybil_degree, 1, MAX_NODES)
        if self.sybil_ips is not None:
            _check_int("sybil_ips", self.sybil_ips, 1, MAX_NODES)
        for name in ("rewire", "loss", "subscribe_fraction", "churn"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        if self.loss >= 1.0:
            raise ScenarioError("loss", "a link that loses every packet is not a link")
        for name in ("jitter", "boot_spread", "warmup", "drain"):
            _check_range(name, getattr(self, name), 0.0, 1e6)
        for name in ("rate", "flood_rate", "spam_rate"):
            _check_range(name, getattr(self, name), 1e-6, 1e6)
        if self.bandwidth is not None:
            _check_range("bandwidth", self.bandwidth, 1.0, 1e15)
        low, high = self.churn_away
        if not (0 < low <= high < 1e6):
            raise ScenarioError("churn_away", f"need 0 < shortest <= longest, not {self.churn_away}")
        if self.topology is TopologyKind.SMALL_WORLD and (self.degree % 2 or self.degree >= self.nodes):
            raise ScenarioError("degree", "a small world needs an even degree below the node count")
        if self.topology is TopologyKind.CLUSTERS and self.degree >= self.nodes // self.clusters:
            raise ScenarioError(
                "degree", f"{self.degree} does not fit clusters of {self.nodes // self.clusters}"
            )
        if not self.topic:
            raise ScenarioError("topic", "must not be empty")
        self._check_formation()
        if self.cut_after is not None:
            _check_int("cut_after", self.cut_after, 1, 1 << 40)
            if self.workers > 1:
                raise ScenarioError("cut_after", "a censor that cuts connections needs one worker")
        _check_range("cut_notice", self.cut_notice, 0.0, 1e6)

    def _check_formation(self) -> None:
        _check_int("address_book", self.address_book, 0, MAX_NODES)
        if self.topology is TopologyKind.BOOTSTRAP:
            _check_int("bootstraps", self.bootstraps, 1, self.nodes - 1)
            _check_int("bootstrap_dials", self.bootstrap_dials, 1, self.bootstraps)
        removal = self.removal
        if (
            removal is not None
            and removal.target is RemovalTarget.BOOTSTRAPS
            and self.topology is not TopologyKind.BOOTSTRAP
        ):
            raise ScenarioError("removal", "removing bootstraps needs the bootstrap topology")

    @property
    def first_publish(self) -> float:
        """When the first honest message is published, seconds from the start."""
        return self.warmup

    @property
    def last_publish(self) -> float:
        """When the last honest message is published."""
        return self.warmup + max(self.messages - 1, 0) / self.rate

    @property
    def duration(self) -> float:
        """Virtual seconds the whole run lasts: warm-up, publishing, then the drain period."""
        return self.last_publish + self.drain

    @property
    def min_latency(self) -> float:
        """The shortest one-way delay any link of this scenario can have, seconds."""
        models = [self.latency]
        if self.topology is TopologyKind.CLUSTERS:
            models.append(self.cluster_latency)
        return min(model.minimum for model in models)

    @property
    def attackers(self) -> int:
        """Nodes that are not honest."""
        return self.sybils + self.eclipse + self.flooders + self.spammers

    def to_dict(self) -> dict[str, object]:
        """The knobs as JSON-ready values (enums by value, latency models in their text form)."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        out["scoring"] = self.score_params is not None
        out["idontwant"] = self.gossip.idontwant
        return out


def _jsonable(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, FixedLatency | UniformLatency | LogNormalLatency):
        return value.describe()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(_jsonable(v) for v in value)  # type: ignore[type-var]  # sorted: same bytes every run
    return value


def _check_int(knob: str, value: int, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ScenarioError(knob, f"{value!r} is not a whole number between {low} and {high}")


def _check_range(knob: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise ScenarioError(knob, f"{value!r} is not between {low:g} and {high:g}")
