"""Gossipsub parameters: the overlay (v1.0/v1.1/v1.2 spec defaults) and peer scoring (v1.1).

Overlay defaults are the spec's "reasonable defaults" (gossipsub-v1.0.md "Parameters", v1.1 "Overview
of New Parameters"), with go-libp2p-pubsub's values where the spec gives none (gossip limits, IWANT
follow-up, graft flood threshold). Scoring has no spec defaults; ``ScoreParams`` carries values tuned for
meshchat's inbox topics in the simulator, and every number says what it is for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GossipConfig", "ScoreParams", "ScoreThresholds", "TopicScoreParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipConfig:
    """Overlay parameters of one router. Checked on construction."""

    #: Desired mesh degree.
    d: int = 6
    #: Graft more peers below this mesh degree.
    d_lo: int = 4
    #: Prune peers above this mesh degree.
    d_hi: int = 12
    #: Peers kept by score when pruning an oversubscribed mesh.
    d_score: int = 4
    #: Outbound connections kept in each mesh (counters inbound Sybil floods).
    d_out: int = 2
    #: Minimum number of peers gossip (IHAVE) is emitted to per topic.
    d_lazy: int = 6
    #: Fraction of eligible peers gossip is emitted to, when that is more than ``d_lazy``.
    gossip_factor: float = 0.25
    #: Seconds between heartbeats.
    heartbeat_interval: float = 1.0
    #: Seconds fanout state for a topic we publish to but did not join is kept.
    fanout_ttl: float = 60.0
    #: History windows (heartbeats) the message cache keeps.
    mcache_len: int = 5
    #: History windows gossip is emitted about.
    mcache_gossip: int = 3
    #: Seconds a message id stays in the seen cache (duplicates are dropped meanwhile).
    seen_ttl: float = 120.0
    #: Publish own messages to every peer in the topic above the publish threshold.
    flood_publish: bool = True
    #: Seconds a pruned peer must wait before grafting again.
    prune_backoff: float = 60.0
    #: Backoff announced to the mesh when leaving a topic.
    unsubscribe_backoff: float = 10.0
    #: A GRAFT this many seconds before the backoff ends is penalised extra (go-libp2p: 10 s).
    graft_flood_threshold: float = 10.0
    #: Peers offered by peer exchange in a PRUNE.
    prune_peers: int = 16
    #: Most message ids advertised to one peer per heartbeat, and accepted from one (go-libp2p: 5000).
    max_ihave_length: int = 5000
    #: Most IHAVE messages accepted from one peer per heartbeat (go-libp2p: 10).
    max_ihave_messages: int = 10
    #: Times one message is sent to one peer in answer to IWANT (go-libp2p: 3).
    gossip_retransmission: int = 3
    #: Seconds an IWANT promise may stay unfulfilled before the advertiser is penalised (go-libp2p: 3).
    iwant_followup_time: float = 3.0
    #: Heartbeats between opportunistic grafting rounds (v1.1 recommends 1 minute).
    opportunistic_graft_ticks: int = 60
    #: Peers grafted per opportunistic grafting round.
    opportunistic_graft_peers: int = 2
    #: Send IDONTWANT for messages at least this large (bytes); v1.2 leaves the policy to us.
    idontwant_min_size: int = 1024
    #: Topics run with the StrictSign policy (author, sequence number and signature on every message;
    #: id = author + seqno), for sharing topics with other libp2p applications. Every other topic is
    #: StrictNoSign with content-addressed ids, as meshchat's own topics are.
    signed_topics: frozenset[str] = frozenset()
    #: Most IDONTWANT message ids accepted from one peer per heartbeat (go-libp2p: 1000 msgs of ids).
    max_idontwant_ids: int = 5000
    #: Send IDONTWANT at all (turn off to measure what it saves).
    idontwant: bool = True
    #: Topics one peer may be subscribed to at once; further SUBSCRIBEs are dropped and counted
    #: (``DropReason.TOPIC_LIMIT``). A meshchat node joins its inbox shard and one topic per group, so
    #: 256 leaves room for a member of many groups, while 1,024 connections x 256 bounds the router's
    #: per-topic peer sets at 262,144 entries (subscribe/unsubscribe churn from one peer grew them
    #: without limit before).
    max_topics_per_peer: int = 256
    #: Longest PRUNE backoff honoured, seconds: a peer asking for more gets this much. The spec's
    #: default is 60 s; without a cap a PRUNE with a backoff of 2**64 s would pin an entry for ever.
    max_prune_backoff: float = 3600.0
    #: Choke the slower mesh peers to lazy announcements (``meshchat.gossip.choke``): each topic keeps
    #: its fastest mesh peers pushing full messages, the others send an IHAVE per new message at once.
    #: Off by default. In the 1,000-node simulation (``benchmarks/bench_choke.py``, 10 chat-sized
    #: messages/s, seed 1) the defaults below cut duplicates per node per message from 3.76 to 1.95 and
    #: bytes sent by 29 %, with delivery 100 %, at a price in latency: p99 521 -> 620 ms (+19 %), p50
    #: +13 % (every message a choked peer announces first waits one IWANT round trip). Choking harder
    #: (keep 3, late 0) reaches 1.65 duplicates at +33 % p99. For a messenger the latency is the dearer
    #: of the two at chat sizes, and real nodes have a handful of peers (often no more than
    #: ``choke_keep`` in a mesh, where it does nothing) and relayed links, where that round trip is
    #: longer still. Large inbox shards can turn it on. CHOKE from other peers is always honoured.
    choke: bool = False
    #: Mesh peers per topic always kept unchoked (the fastest by mean delay).
    choke_keep: int = 2
    #: Delay samples per mesh peer the ranking looks at (a sliding window).
    choke_window: int = 32
    #: Samples a peer needs before it is ranked (and can be choked).
    choke_min_samples: int = 8
    #: Most peers choked per topic per heartbeat (unchokes are never delayed).
    choke_churn: int = 1
    #: Seconds taken off an unchoked peer's mean delay when ranking (hysteresis against flapping).
    choke_margin: float = 0.010
    #: Mesh peers whose copies come less than this many seconds after the first (on average) are
    #: never choked, even beyond ``choke_keep``: 0 chokes every peer but the fastest ``choke_keep``.
    #: About one link delay of the simulated 50-150 ms links; tuned at 1,000 nodes, where both targets
    #: (<= 2 duplicates, p99 <= +20 %) hold only in a narrow band: 0.105 s gave 1.89 and +20.3 %,
    #: 0.1075 s 1.95 and +19.0 %, 0.11 s 2.0008 and +17.3 %. Another network needs its own value.
    choke_late: float = 0.1075
    #: Published messages accepted from one peer per second (token bucket). A chat node forwards a few
    #: per second; 1,000 is two orders of magnitude above the 10 messages/s broadcast benchmark.
    max_messages_per_second: float = 1000.0
    #: Messages one peer may send at once above that rate: one full IWANT answer (``max_ihave_length``).
    message_burst: int = 5000
    #: Control entries (IHAVE, IWANT, GRAFT, PRUNE, IDONTWANT, CHOKE, UNCHOKE) accepted from one peer per
    #: second. Honest peers send one IHAVE per topic per heartbeat, one IDONTWANT per large message, and
    #: with choking one IHAVE per message: a few dozen per second.
    max_control_per_second: float = 2000.0
    #: Control entries one peer may send at once: one RPC's worth (``rpc.DEFAULT_MAX_CONTROL_ENTRIES``).
    control_burst: int = 5000

    def __post_init__(self) -> None:
        if not (0 <= self.d_lo <= self.d <= self.d_hi):
            raise ValueError(f"need 0 <= d_lo <= d <= d_hi, not {self.d_lo}, {self.d}, {self.d_hi}")
        if not (self.d_out <= self.d // 2 and (self.d_out < self.d_lo or self.d_lo == 0)):
            raise ValueError(f"d_out must be below d_lo and at most d/2, not {self.d_out}")
        if not 0 <= self.d_score <= self.d:
            raise ValueError(f"d_score must be between 0 and d, not {self.d_score}")
        if not 0 < self.mcache_gossip <= self.mcache_len:
            raise ValueError("need 0 < mcache_gossip <= mcache_len")
        if self.heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        if self.max_topics_per_peer < 1:
            raise ValueError("max_topics_per_peer must be at least 1")
        if self.max_prune_backoff < max(self.prune_backoff, self.unsubscribe_backoff):
            raise ValueError("max_prune_backoff must be at least prune_backoff and unsubscribe_backoff")
        if not (self.choke_keep >= 1 and 1 <= self.choke_min_samples <= self.choke_window):
            raise ValueError("need choke_keep >= 1 and 1 <= choke_min_samples <= choke_window")
        if self.choke_churn < 1 or self.choke_margin < 0 or self.choke_late < 0:
            raise ValueError("need choke_churn >= 1, choke_margin >= 0 and choke_late >= 0")
        if min(self.max_messages_per_second, self.max_control_per_second) <= 0:
            raise ValueError("rate limits must be positive")
        if min(self.message_burst, self.control_burst) < 1:
            raise ValueError("bursts must be at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicScoreParams:
    """Per-topic score parameters (P1-P4) of gossipsub v1.1."""

    #: How much this topic counts in the total score.
    topic_weight: float = 1.0
    #: P1 weight (time in mesh), small and positive.
    time_in_mesh_weight: float = 0.01
    #: Seconds in mesh per P1 point.
    time_in_mesh_quantum: float = 1.0
    #: P1 cap.
    time_in_mesh_cap: float = 300.0
    #: P2 weight (first deliveries), positive.
    first_message_deliveries_weight: float = 1.0
    #: P2 decay factor per decay interval.
    first_message_deliveries_decay: float = 0.9
    #: P2 cap.
    first_message_deliveries_cap: float = 100.0
    #: P3 weight (mesh delivery deficit squared), negative when on. Off by default: inbox topics are
    #: sparse, and in the simulator a fixed threshold pruned honest mesh peers of quiet topics until
    #: meshes emptied. Turn it on per topic with a threshold matched to that topic's message rate.
    mesh_message_deliveries_weight: float = 0.0
    #: P3 decay factor per decay interval.
    mesh_message_deliveries_decay: float = 0.9
    #: Deliveries expected from a mesh peer (decayed count) below which P3 applies.
    mesh_message_deliveries_threshold: float = 1.0
    #: P3 counter cap.
    mesh_message_deliveries_cap: float = 20.0
    #: Seconds in the mesh before P3 applies.
    mesh_message_deliveries_activation: float = 10.0
    #: Seconds after the first delivery that still count as a near-first delivery for P3.
    mesh_message_deliveries_window: float = 0.01
    #: P3b weight (sticky mesh failure penalty), negative.
    mesh_failure_penalty_weight: float = -1.0
    #: P3b decay factor.
    mesh_failure_penalty_decay: float = 0.95
    #: P4 weight (invalid messages squared), negative: one invalid message costs 10 (gossip threshold),
    #: three graylist the sender (-90), so a single corrupted message does not cut a peer off.
    invalid_message_deliveries_weight: float = -10.0
    #: P4 decay factor.
    invalid_message_deliveries_decay: float = 0.99


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoreThresholds:
    """The score thresholds of gossipsub v1.1 ("Score Thresholds")."""

    #: No gossip to or from peers below this.
    gossip_threshold: float = -10.0
    #: Own messages are not flood-published to peers below this.
    publish_threshold: float = -50.0
    #: RPCs from peers below this are ignored entirely.
    graylist_threshold: float = -80.0
    #: Peer exchange is accepted only from peers above this.
    accept_px_threshold: float = 10.0
    #: Opportunistic grafting starts when the median mesh score is below this.
    opportunistic_graft_threshold: float = 1.0

    def __post_init__(self) -> None:
        if not (self.graylist_threshold < self.publish_threshold <= self.gossip_threshold < 0):
            raise ValueError("need graylist < publish <= gossip < 0")
        if self.accept_px_threshold < 0 or self.opportunistic_graft_threshold < 0:
            raise ValueError("accept_px and opportunistic_graft thresholds must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoreParams:
    """Global score parameters (P5-P7, decay, retention) and the per-topic ones."""

    #: Per-topic parameters; topics not listed do not contribute to the score.
    topics: dict[str, TopicScoreParams] = field(default_factory=dict)
    #: Parameters for topics not in ``topics`` (None: such topics do not count).
    default_topic: TopicScoreParams | None = field(default_factory=TopicScoreParams)
    #: Cap on the positive contribution of all topics together (0: no cap).
    topic_score_cap: float = 100.0
    #: P5 weight (application-specific score).
    app_specific_weight: float = 1.0
    #: P6 weight (IP colocation surplus squared), negative.
    ip_colocation_factor_weight: float = -10.0
    #: Peers per IP address before P6 applies.
    ip_colocation_factor_threshold: int = 10
    #: P7 weight (behaviour penalty squared), negative.
    behaviour_penalty_weight: float = -10.0
    #: P7 decay factor.
    behaviour_penalty_decay: float = 0.99
    #: Seconds between decay rounds.
    decay_interval: float = 1.0
    #: Decayed counters below this become zero.
    decay_to_zero: float = 0.01
    #: Seconds a disconnected peer's score is remembered.
    retain_score: float = 3600.0
    #: The thresholds.
    thresholds: ScoreThresholds = field(default_factory=ScoreThresholds)

    def topic(self, topic: str) -> TopicScoreParams | None:
        """The parameters that apply to ``topic``, or None if it does not count."""
        return self.topics.get(topic, self.default_topic)
