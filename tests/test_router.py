"""The gossipsub router as a state machine: protocol flows between a few routers, and invariants.

A tiny instant-delivery harness (``Net``) wires real routers together: every ``SendRpc`` becomes the
recipient's ``RpcReceived`` in FIFO order, on a clock the test moves by hand. The simulator (with
latency, loss and thousands of nodes) is tested in test_sim.py.
"""

from __future__ import annotations

import math
import random
from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshchat.gossip import (
    Deliver,
    Dial,
    Disconnect,
    DropReason,
    GossipConfig,
    GossipRouter,
    Join,
    Leave,
    PeerConnected,
    PeerDisconnected,
    Protocol,
    Publish,
    RouterAction,
    RpcReceived,
    ScoreParams,
    SendFailed,
    SendRpc,
    ValidationResult,
)
from meshchat.gossip.messages import (
    RPC,
    ControlMessage,
    Graft,
    IDontWant,
    IHave,
    IWant,
    PeerInfo,
    Prune,
    PubMessage,
    SubOpts,
)
from meshchat.wire import message_id
from tests.router_probe import peer_footprint, topic_entries

TOPIC = "inbox/0"
#: Upper bound on RPC hops one ``Net.settle`` may process; a bug that ping-pongs forever fails fast.
MAX_SETTLE_STEPS = 100_000


class Net:
    """Real routers, instant links, FIFO delivery, a hand-moved clock."""

    def __init__(
        self, names: list[str], *, config: GossipConfig | None = None, scoring: bool = True, seed: int = 1
    ):
        self.config = config or GossipConfig()
        self.now = 1000.0
        self.routers = {
            name: GossipRouter(
                self.config,
                local_peer=name,
                rng=random.Random(f"{seed}-{name}"),
                validator=self._validate,
                score_params=ScoreParams() if scoring else None,
            )
            for name in names
        }
        self.delivered: dict[str, list[Deliver]] = {name: [] for name in names}
        self.sent: list[tuple[str, SendRpc]] = []
        self.other_actions: list[tuple[str, RouterAction]] = []
        self.queue: deque[tuple[str, str, RPC]] = deque()
        self.invalid: set[bytes] = set()
        self.links: set[frozenset[str]] = set()

    def _validate(self, _topic: str, data: bytes, _mid: bytes) -> ValidationResult:
        return ValidationResult.REJECT if data in self.invalid else ValidationResult.ACCEPT

    def perform(self, name: str, actions: list[RouterAction]) -> None:
        for action in actions:
            match action:
                case SendRpc(peer=peer, rpc=rpc):
                    self.sent.append((name, action))
                    if frozenset((name, peer)) in self.links:
                        self.queue.append((name, peer, rpc))
                case Deliver():
                    self.delivered[name].append(action)
                case _:
                    self.other_actions.append((name, action))

    def input(self, name: str, event: object) -> None:
        self.perform(name, self.routers[name].handle(event, now=self.now))  # type: ignore[arg-type]

    def connect(self, a: str, b: str) -> None:
        self.links.add(frozenset((a, b)))
        self.input(a, PeerConnected(peer=b, outbound=True))
        self.input(b, PeerConnected(peer=a, outbound=False))

    def disconnect(self, a: str, b: str) -> None:
        self.links.discard(frozenset((a, b)))
        self.input(a, PeerDisconnected(peer=b))
        self.input(b, PeerDisconnected(peer=a))

    def settle(self) -> None:
        for _ in range(MAX_SETTLE_STEPS):
            if not self.queue:
                return
            src, dst, rpc = self.queue.popleft()
            self.input(dst, RpcReceived(peer=src, rpc=rpc))
        raise AssertionError("RPCs kept flowing: a routing loop?")

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds
        for name, router in self.routers.items():
            self.perform(name, router.on_timer(now=self.now))
        self.settle()

    def join_all(self) -> None:
        for name in self.routers:
            self.input(name, Join(topic=TOPIC))
            self.settle()


def full_mesh(names: list[str], **kwargs: object) -> Net:
    net = Net(names, **kwargs)  # type: ignore[arg-type]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            net.connect(a, b)
    net.settle()
    net.join_all()
    return net


def names(n: int) -> list[str]:
    return [f"n{i:02d}" for i in range(n)]


# --- basic flows ----------------------------------------------------------------------------------


def test_two_routers_mesh_and_deliver_exactly_once() -> None:
    net = full_mesh(["a", "b"])
    assert net.routers["a"].mesh[TOPIC] == {"b"}
    assert net.routers["b"].mesh[TOPIC] == {"a"}
    net.input("a", Publish(topic=TOPIC, data=b"hello"))
    net.settle()
    assert [(d.data, d.source) for d in net.delivered["b"]] == [(b"hello", "a")]
    assert net.delivered["a"] == []  # the publisher's own message is not handed back to it
    assert net.delivered["b"][0].message_id == message_id(b"hello")


def test_a_line_forwards_across_hops_and_duplicates_are_dropped() -> None:
    net = Net(names(5))
    for a, b in zip(names(5), names(5)[1:], strict=False):
        net.connect(a, b)
    net.settle()
    net.join_all()
    net.input("n00", Publish(topic=TOPIC, data=b"across"))
    net.settle()
    for name in names(5)[1:]:
        assert [d.data for d in net.delivered[name]] == [b"across"], name
    net.input("n00", Publish(topic=TOPIC, data=b"across"))  # the same bytes again: same id
    net.settle()
    assert all(len(net.delivered[n]) == 1 for n in names(5)[1:])
    assert net.routers["n00"].statistics().drops[DropReason.DUPLICATE] == 1


def test_publishing_again_sends_a_seen_message_once_more_but_nobody_delivers_it_twice() -> None:
    net = full_mesh(["a", "b"])
    net.disconnect("a", "b")  # the first publish reaches nobody (the recipient is away)
    net.input("a", Publish(topic=TOPIC, data=b"retry me"))
    net.settle()
    net.connect("a", "b")
    net.settle()
    net.join_all()
    net.input("a", Publish(topic=TOPIC, data=b"retry me"))  # plain: a duplicate, dropped
    net.settle()
    assert net.delivered["b"] == []
    before = len(net.sent)
    net.input("a", Publish(topic=TOPIC, data=b"retry me", again=True))
    net.settle()
    assert [d.data for d in net.delivered["b"]] == [b"retry me"]
    assert len(net.sent) > before
    assert net.routers["a"].statistics().published == 1  # one message, sent twice
    net.input("a", Publish(topic=TOPIC, data=b"retry me", again=True))  # b has it: dropped there
    net.settle()
    assert len(net.delivered["b"]) == 1


def test_a_ring_delivers_once_per_node_despite_two_paths() -> None:
    ring = names(6)
    net = Net(ring)
    for i, a in enumerate(ring):
        net.connect(a, ring[(i + 1) % len(ring)])
    net.settle()
    net.join_all()
    net.input("n00", Publish(topic=TOPIC, data=b"round"))
    net.settle()
    assert all(len(net.delivered[n]) == 1 for n in ring[1:])
    duplicates = sum(net.routers[n].statistics().drops[DropReason.DUPLICATE] for n in ring)
    assert duplicates >= 1  # the two directions meet somewhere


def test_messages_for_topics_not_joined_are_dropped_and_counted() -> None:
    net = Net(["a", "b"])
    net.connect("a", "b")
    net.input("b", RpcReceived(peer="a", rpc=RPC(publish=(PubMessage(topic="other", data=b"x"),))))
    assert net.delivered["b"] == []
    assert net.routers["b"].statistics().drops[DropReason.UNKNOWN_TOPIC] == 1


def test_rpc_from_an_unknown_peer_is_dropped() -> None:
    net = Net(["a"])
    net.input("a", RpcReceived(peer="stranger", rpc=RPC(publish=(PubMessage(topic=TOPIC, data=b"x"),))))
    assert net.routers["a"].statistics().drops[DropReason.UNKNOWN_PEER] == 1


def test_fanout_publish_without_joining() -> None:
    config = GossipConfig(flood_publish=False)
    net = Net(["pub", "a", "b"], config=config)
    for peer in ("a", "b"):
        net.connect("pub", peer)
    net.connect("a", "b")
    for peer in ("a", "b"):
        net.input(peer, Join(topic=TOPIC))
    net.settle()
    net.input("pub", Publish(topic=TOPIC, data=b"from outside"))
    net.settle()
    assert net.routers["pub"].fanout[TOPIC] == {"a", "b"}
    assert [d.data for d in net.delivered["a"]] == [b"from outside"]
    assert [d.data for d in net.delivered["b"]] == [b"from outside"]
    net.tick(config.fanout_ttl + 2)
    assert TOPIC not in net.routers["pub"].fanout


# --- validation and scoring -----------------------------------------------------------------------


def test_invalid_messages_are_not_delivered_nor_forwarded_and_penalise_the_sender() -> None:
    net = full_mesh(["a", "b", "c"])
    net.invalid.add(b"junk")
    before = net.routers["b"].score("a", now=net.now)
    net.input("a", Publish(topic=TOPIC, data=b"junk"))
    net.settle()
    assert net.delivered["b"] == [] and net.delivered["c"] == []
    assert net.routers["b"].statistics().drops[DropReason.INVALID] == 1
    assert net.routers["b"].score("a", now=net.now) <= before - 10  # P4: weight -10 times the squared count


def test_graylisted_peers_are_ignored_and_disconnected() -> None:
    net = full_mesh(["a", "b"])
    for i in range(3):
        net.invalid.add(b"junk%d" % i)
        net.input("a", Publish(topic=TOPIC, data=b"junk%d" % i))
        net.settle()
    assert net.routers["b"].score("a", now=net.now) < ScoreParams().thresholds.graylist_threshold
    net.input("a", Publish(topic=TOPIC, data=b"fine"))
    net.settle()
    assert net.delivered["b"] == []
    assert net.routers["b"].statistics().drops[DropReason.GRAYLISTED] >= 1
    net.tick()
    assert ("b", Disconnect(peer="a", reason="score below the graylist threshold")) in net.other_actions


def test_scoring_off_never_graylists() -> None:
    net = full_mesh(["a", "b"], scoring=False)
    for i in range(5):
        net.invalid.add(b"junk%d" % i)
        net.input("a", Publish(topic=TOPIC, data=b"junk%d" % i))
    net.input("a", Publish(topic=TOPIC, data=b"fine"))
    net.settle()
    assert [d.data for d in net.delivered["b"]] == [b"fine"]
    assert net.routers["b"].score("a", now=net.now) == 0.0


# --- GRAFT / PRUNE / backoff ----------------------------------------------------------------------


def test_leave_prunes_with_the_unsubscribe_backoff() -> None:
    net = full_mesh(["a", "b"])
    net.sent.clear()
    net.input("a", Leave(topic=TOPIC))
    net.settle()
    prunes = [s.rpc.control.prune for n, s in net.sent if n == "a" and s.rpc.control and s.rpc.control.prune]
    assert prunes and prunes[0][0].backoff == int(net.config.unsubscribe_backoff)
    assert "a" not in net.routers["b"].mesh[TOPIC]
    assert net.routers["b"].backoff_until(TOPIC, "a") == pytest.approx(
        net.now + net.config.unsubscribe_backoff
    )


def test_graft_during_backoff_is_refused_and_penalised() -> None:
    net = full_mesh(["a", "b"])
    net.input(
        "b", RpcReceived(peer="a", rpc=RPC(control=ControlMessage(prune=(Prune(topic=TOPIC, backoff=60),))))
    )
    # b now has a's backoff only if b pruned; make a prune b, then b grafts too early.
    net.input(
        "a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(prune=(Prune(topic=TOPIC, backoff=60),))))
    )
    assert net.routers["a"].backoff_until(TOPIC, "b") is not None
    net.sent.clear()
    before = net.routers["a"].score("b", now=net.now)
    net.input("a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(graft=(Graft(topic=TOPIC),)))))
    assert "b" not in net.routers["a"].mesh[TOPIC]
    assert net.routers["a"].statistics().drops[DropReason.GRAFT_REFUSED] == 1
    replies = [s.rpc.control.prune for n, s in net.sent if n == "a" and s.rpc.control]
    assert replies and replies[0][0].topic == TOPIC
    assert net.routers["a"].score("b", now=net.now) < before  # P7 behaviour penalty


def test_graft_for_a_topic_not_joined_is_ignored_without_reply() -> None:
    net = Net(["a", "b"])
    net.connect("a", "b")
    net.sent.clear()
    net.input("a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(graft=(Graft(topic="nope"),)))))
    assert [s for n, s in net.sent if n == "a"] == []
    assert net.routers["a"].statistics().drops[DropReason.GRAFT_REFUSED] == 1


def test_heartbeat_keeps_mesh_within_bounds() -> None:
    net = full_mesh(names(20), seed=7)
    for _ in range(3):
        net.tick()
    for router in net.routers.values():
        assert net.config.d_lo <= len(router.mesh[TOPIC]) <= net.config.d_hi
    for a, router in net.routers.items():  # mesh links are symmetric once the grafts settled
        for b in router.mesh[TOPIC]:
            assert a in net.routers[b].mesh[TOPIC] or net.routers[b].backoff_until(TOPIC, a) is not None


def test_oversubscribed_mesh_is_pruned_with_peer_exchange() -> None:
    config = GossipConfig()
    net = Net(["hub", *names(16)], config=config)
    for name in names(16):
        net.connect("hub", name)  # the hub dialled them all: outbound GRAFTs are accepted even when full
    net.settle()
    net.input("hub", Join(topic=TOPIC))
    net.settle()
    for name in names(16):
        net.input(name, Join(topic=TOPIC))  # each knows the hub joined, so each grafts it
        net.settle()
    hub = net.routers["hub"]
    assert len(hub.mesh[TOPIC]) > config.d_hi
    net.sent.clear()
    net.now += config.heartbeat_interval
    net.perform("hub", hub.on_timer(now=net.now))
    assert len(hub.mesh[TOPIC]) == config.d
    prunes = [p for n, s in net.sent if n == "hub" and s.rpc.control for p in s.rpc.control.prune]
    assert len(prunes) == 16 - config.d
    assert any(p.peers for p in prunes)  # pruned peers are offered others to connect to
    assert all(p.backoff == int(config.prune_backoff) for p in prunes)


def test_peer_exchange_dials_offered_peers_only_from_well_scored_peers() -> None:
    net = full_mesh(["a", "b"])
    offer = Prune(topic=TOPIC, peers=(PeerInfo(peer_id="zed"), PeerInfo(peer_id="a")), backoff=60)
    net.input("a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(prune=(offer,)))))
    assert not [a for n, a in net.other_actions if isinstance(a, Dial)]  # b's score is below accept_px
    net2 = full_mesh(["a", "b"], scoring=False)
    net2.input("a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(prune=(offer,)))))
    dials = [a for n, a in net2.other_actions if isinstance(a, Dial)]
    assert [d.peer for d in dials] == ["zed"]  # never itself, never a peer it already has


# --- gossip: IHAVE / IWANT / promises ---------------------------------------------------------------


def test_ihave_iwant_recovers_a_message_outside_the_mesh() -> None:
    config = GossipConfig(d=1, d_lo=1, d_hi=1, d_score=1, d_out=0, d_lazy=1)
    net = Net(["a", "b", "c"], config=config)
    net.connect("a", "b")
    net.connect("a", "c")
    net.settle()
    net.join_all()
    for _ in range(2):
        net.tick()
    mesh_peer = next(iter(net.routers["a"].mesh[TOPIC]))
    other = ({"b", "c"} - {mesh_peer}).pop()
    net.links.discard(frozenset(("a", other)))  # the publish itself cannot reach the non-mesh peer
    net.routers["a"]
    net.input("a", Publish(topic=TOPIC, data=b"gossiped"))
    net.settle()
    assert net.delivered[other] == [] or net.delivered[other][0].source == "a"
    net.links.add(frozenset(("a", other)))
    net.tick()  # heartbeat: a emits IHAVE to its non-mesh peer, which asks with IWANT
    assert [d.data for d in net.delivered[other]] == [b"gossiped"]
    assert net.routers["a"].statistics().iwant_served == 1


def test_iwant_is_answered_only_for_cached_messages_and_only_a_few_times() -> None:
    net = full_mesh(["a", "b"])
    net.input("a", Publish(topic=TOPIC, data=b"kept"))
    net.settle()
    net.sent.clear()
    ask = RPC(control=ControlMessage(iwant=(IWant(message_ids=(message_id(b"kept"), b"x" * 32)),)))
    for _ in range(net.config.gossip_retransmission + 2):
        net.input("a", RpcReceived(peer="b", rpc=ask))
    answers = [m for n, s in net.sent if n == "a" for m in s.rpc.publish]
    assert [m.data for m in answers] == [b"kept"] * net.config.gossip_retransmission
    drops = net.routers["a"].statistics().drops[DropReason.IWANT_UNSERVED]
    assert drops == (net.config.gossip_retransmission + 2) + 2  # the unknown id each time, plus 2 over limit


def test_broken_iwant_promise_penalises_the_advertiser() -> None:
    net = full_mesh(["a", "b"])
    fake = IHave(topic=TOPIC, message_ids=(b"\x01" * 32,))
    net.input("a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(ihave=(fake,)))))
    before = net.routers["a"].score("b", now=net.now)
    net.tick(net.config.iwant_followup_time + 1)
    assert net.routers["a"].score("b", now=net.now) < before


def test_ihave_beyond_the_per_heartbeat_limit_is_dropped() -> None:
    net = full_mesh(["a", "b"])
    for i in range(net.config.max_ihave_messages + 3):
        ihave = IHave(topic=TOPIC, message_ids=(bytes([i]) * 32,))
        net.input("a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(ihave=(ihave,)))))
    assert net.routers["a"].statistics().drops[DropReason.IHAVE_LIMIT] == 3


# --- IDONTWANT (v1.2) -----------------------------------------------------------------------------


def test_idontwant_is_sent_for_large_messages_and_suppresses_copies() -> None:
    net = full_mesh(["a", "b", "c"])
    big = bytes(range(256)) * 8  # 2 KiB, above idontwant_min_size
    mid = message_id(big)
    net.sent.clear()
    # a already has it and says so; then b receives it from c: b forwards to nobody but says IDONTWANT.
    net.input(
        "b",
        RpcReceived(peer="a", rpc=RPC(control=ControlMessage(idontwant=(IDontWant(message_ids=(mid,)),)))),
    )
    net.input("b", RpcReceived(peer="c", rpc=RPC(publish=(PubMessage(topic=TOPIC, data=big),))))
    to_a = [s.rpc for n, s in net.sent if n == "b" and s.peer == "a"]
    assert to_a and all(not rpc.publish for rpc in to_a)
    assert [c.message_ids for rpc in to_a if rpc.control for c in rpc.control.idontwant] == [(mid,)]
    assert net.routers["b"].statistics().suppressed_by_idontwant == 1
    assert [d.data for d in net.delivered["b"]] == [big]


def test_iwant_after_idontwant_for_the_same_id_is_not_answered() -> None:
    net = full_mesh(["a", "b"])
    net.input("a", Publish(topic=TOPIC, data=b"kept"))
    net.settle()
    net.sent.clear()
    mid = message_id(b"kept")
    dont = RPC(control=ControlMessage(idontwant=(IDontWant(message_ids=(mid,)),)))
    net.input("a", RpcReceived(peer="b", rpc=dont))
    net.input("a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(iwant=(IWant(message_ids=(mid,)),)))))
    assert not [m for n, s in net.sent if n == "a" for m in s.rpc.publish]
    assert net.routers["a"].statistics().iwant_served == 0
    assert net.routers["a"].statistics().suppressed_by_idontwant == 1


def test_idontwant_entries_are_forgotten_after_the_cache_window() -> None:
    net = full_mesh(["a", "b", "c"])
    big = bytes(4096)
    mid = message_id(big)
    net.input(
        "b",
        RpcReceived(peer="a", rpc=RPC(control=ControlMessage(idontwant=(IDontWant(message_ids=(mid,)),)))),
    )
    for _ in range(net.config.mcache_len + 1):
        net.tick()
    net.sent.clear()
    net.input("b", RpcReceived(peer="c", rpc=RPC(publish=(PubMessage(topic=TOPIC, data=big),))))
    assert [m.data for n, s in net.sent if n == "b" and s.peer == "a" for m in s.rpc.publish] == [big]


def test_small_messages_send_no_idontwant_and_v11_peers_never_get_one() -> None:
    net = full_mesh(names(4))
    net.sent.clear()
    net.input("n00", Publish(topic=TOPIC, data=b"small"))
    net.settle()
    assert not [s for _, s in net.sent if s.rpc.control and s.rpc.control.idontwant]
    old = Net(["a", "b", "c"])
    old.links |= {frozenset(("a", "b")), frozenset(("b", "c"))}
    old.input("a", PeerConnected(peer="b", outbound=True, protocol=Protocol.MESHSUB_V11))
    old.input("b", PeerConnected(peer="a", outbound=False, protocol=Protocol.MESHSUB_V11))
    old.input("b", PeerConnected(peer="c", outbound=True, protocol=Protocol.MESHSUB_V11))
    old.input("c", PeerConnected(peer="b", outbound=False, protocol=Protocol.MESHSUB_V11))
    old.settle()
    old.join_all()
    old.sent.clear()
    old.input("a", Publish(topic=TOPIC, data=bytes(4096)))
    old.settle()
    assert not [s for _, s in old.sent if s.rpc.control and s.rpc.control.idontwant]
    assert len(old.delivered["c"]) == 1


def test_idontwant_flood_is_capped() -> None:
    config = GossipConfig(max_idontwant_ids=10)
    net = full_mesh(["a", "b"], config=config)
    ids = tuple(bytes([i]) * 32 for i in range(25))
    net.input(
        "a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(idontwant=(IDontWant(message_ids=ids),))))
    )
    assert net.routers["a"].statistics().drops[DropReason.IDONTWANT_LIMIT] == 15


def test_send_failed_is_counted() -> None:
    net = Net(["a"])
    net.input("a", SendFailed(peer="b"))
    assert net.routers["a"].statistics().drops[DropReason.SEND_FAILED] == 1


def test_subscriptions_are_announced_to_new_peers_and_unsubscribe_removes_from_mesh() -> None:
    net = full_mesh(["a", "b"])
    assert net.routers["a"].topic_peers(TOPIC) == {"b"}
    net.input("a", RpcReceived(peer="b", rpc=RPC(subscriptions=(SubOpts(subscribe=False, topic=TOPIC),))))
    assert "b" not in net.routers["a"].mesh[TOPIC]
    assert net.routers["a"].topic_peers(TOPIC) == set()


def test_same_seed_same_actions() -> None:
    def trace(seed: int) -> list[str]:
        net = full_mesh(names(12), seed=seed)
        for i in range(5):
            net.input(f"n{i:02d}", Publish(topic=TOPIC, data=b"m%d" % i))
            net.tick()
        return [f"{n}>{s.peer}:{s.rpc!r}" for n, s in net.sent]

    assert trace(5) == trace(5)
    assert trace(5) != trace(6)


# --- stateful: one router against a model of what it may do ---------------------------------------

PEERS = [f"p{i}" for i in range(14)]
#: Topics peers may subscribe to in the machine; more than its per-peer limit, so the limit is hit.
OTHER_TOPICS = [f"x{i}" for i in range(5)]
MACHINE_TOPIC_LIMIT = 3
#: Drop reasons the machine's model predicts exactly from what it sent (the rest it bounds per rule).
PREDICTED_DROPS = (
    DropReason.GRAYLISTED,
    DropReason.TOPIC_LIMIT,
    DropReason.UNKNOWN_PEER,
    DropReason.UNKNOWN_TOPIC,
    DropReason.SEND_FAILED,
)


class RouterMachine(RuleBasedStateMachine):
    """A router under arbitrary peer behaviour; invariants checked after every step.

    Besides what the router may do (its actions), the model keeps which topics each peer is subscribed
    to and, for every rule, what each input must be accounted as: a message is delivered or dropped for
    exactly one reason, a GRAFT ends in the mesh or is counted as refused, every IWANT id is served,
    suppressed or counted unserved, a SUBSCRIBE over the limit is counted, and nothing else moves.
    """

    @initialize(seed=st.integers(0, 2**32), scoring=st.booleans())
    def start(self, seed: int, scoring: bool) -> None:
        self.now = 0.0
        self.config = GossipConfig(max_topics_per_peer=MACHINE_TOPIC_LIMIT)
        self.router = GossipRouter(
            self.config,
            local_peer="me",
            rng=random.Random(seed),
            validator=lambda _t, data, _m: (
                ValidationResult.REJECT if data.startswith(b"bad") else ValidationResult.ACCEPT
            ),
            score_params=ScoreParams() if scoring else None,
        )
        self.connected: set[str] = set()
        self.subscribed: dict[str, set[str]] = {}  # the model: each connected peer's topics
        self.delivered: set[bytes] = set()
        self.known: dict[bytes, bytes] = {}  # id -> data of every valid message the router has seen
        self.heartbeat_just_ran = False
        #: Drops the model predicts on its own, by reason; ``every_drop_is_counted`` compares.
        self.expected = dict.fromkeys(PREDICTED_DROPS, 0)
        self._do(Join(topic=TOPIC))

    def _do(self, event: object) -> None:
        self._check(self.router.handle(event, now=self.now))  # type: ignore[arg-type]
        self.heartbeat_just_ran = False

    def _counted(self, event: object, allowed: set[DropReason]) -> dict[str, int]:
        """Handle ``event``; check only ``allowed`` drop reasons moved; return every counter's change."""
        before = self.router.statistics()
        self._do(event)
        after = self.router.statistics()
        moved = {r for r in DropReason if after.drops[r] != before.drops[r]}
        assert moved <= allowed, f"{event!r} moved drop counters {moved}, allowed {allowed}"
        changes = {r.name: after.drops[r] - before.drops[r] for r in DropReason}
        changes["delivered"] = after.delivered - before.delivered
        changes["published"] = after.published - before.published
        changes["served"] = after.iwant_served - before.iwant_served
        changes["suppressed"] = after.suppressed_by_idontwant - before.suppressed_by_idontwant
        assert all(v >= 0 for v in changes.values()), f"a counter went down: {changes}"
        return changes

    def _graylisted(self, peer: str) -> bool:
        """Whether the router will ignore ``peer``'s next RPC (and count it once as GRAYLISTED)."""
        graylisted = self.router.score(peer, now=self.now) < ScoreParams().thresholds.graylist_threshold
        self.expected[DropReason.GRAYLISTED] += graylisted
        return graylisted

    def _check(self, actions: list[RouterAction]) -> None:
        for action in actions:
            match action:
                case Deliver(message_id=mid, data=data):
                    assert mid not in self.delivered, "delivered twice"
                    assert not data.startswith(b"bad"), "delivered an invalid message"
                    self.delivered.add(mid)
                    self.known[mid] = data
                case SendRpc(peer=peer, rpc=rpc):
                    assert peer in self.connected, "sent to a peer that is not connected"
                    for message in rpc.publish:
                        assert message_id(message.data) in self.known, "sent a message it never had"
                    for graft in rpc.control.graft if rpc.control else ():
                        until = self.router.backoff_until(graft.topic, peer)
                        assert until is None or until <= self.now, "grafted during backoff"
                case Disconnect(peer=peer):
                    assert peer in self.connected
                case Dial():
                    pass

    def _subscribe(self, peer: str, subs: tuple[SubOpts, ...]) -> None:
        graylisted = self._graylisted(peer)
        allowed = {DropReason.GRAYLISTED} if graylisted else {DropReason.TOPIC_LIMIT}
        changes = self._counted(RpcReceived(peer=peer, rpc=RPC(subscriptions=subs)), allowed)
        if graylisted:
            assert changes["GRAYLISTED"] == 1
            return
        topics = self.subscribed.setdefault(peer, set())
        refused = 0
        for sub in subs:
            if not sub.subscribe:
                topics.discard(sub.topic)
            elif sub.topic not in topics and len(topics) >= MACHINE_TOPIC_LIMIT:
                refused += 1
            else:
                topics.add(sub.topic)
        assert changes["TOPIC_LIMIT"] == refused, "a refused subscription was not counted (or vice versa)"
        self.expected[DropReason.TOPIC_LIMIT] += refused

    @rule(peer=st.sampled_from(PEERS), outbound=st.booleans())
    def connect(self, peer: str, outbound: bool) -> None:
        self.connected.add(peer)
        self._counted(PeerConnected(peer=peer, outbound=outbound), set())
        self._subscribe(peer, (SubOpts(subscribe=True, topic=TOPIC),))

    @precondition(lambda self: self.connected)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        peer = data.draw(st.sampled_from(sorted(self.connected)))
        self.connected.discard(peer)
        self.subscribed.pop(peer, None)
        self._counted(PeerDisconnected(peer=peer), set())

    @precondition(lambda self: self.connected)
    @rule(
        data=st.data(),
        ops=st.lists(
            st.tuples(st.booleans(), st.sampled_from([TOPIC, *OTHER_TOPICS])), min_size=1, max_size=8
        ),
    )
    def churn_subscriptions(self, data: st.DataObject, ops: list[tuple[bool, str]]) -> None:
        peer = data.draw(st.sampled_from(sorted(self.connected)))
        self._subscribe(peer, tuple(SubOpts(subscribe=on, topic=topic) for on, topic in ops))

    @precondition(lambda self: self.connected)
    @rule(data=st.data(), payload=st.binary(min_size=1, max_size=40), bad=st.booleans(), joined=st.booleans())
    def receive_message(self, data: st.DataObject, payload: bytes, bad: bool, joined: bool) -> None:
        peer = data.draw(st.sampled_from(sorted(self.connected)))
        body = (b"bad" if bad else b"ok") + payload
        if not bad and joined:
            self.known[message_id(body)] = body
        topic = TOPIC if joined else OTHER_TOPICS[0]
        graylisted = self._graylisted(peer)
        allowed = {DropReason.DUPLICATE, DropReason.INVALID} if joined else {DropReason.UNKNOWN_TOPIC}
        changes = self._counted(
            RpcReceived(peer=peer, rpc=RPC(publish=(PubMessage(topic=topic, data=body),))),
            {DropReason.GRAYLISTED} if graylisted else allowed,
        )
        outcomes = changes["delivered"] + sum(changes[r.name] for r in DropReason)
        assert outcomes == 1, f"one message, {outcomes} outcomes: {changes}"
        if bad:
            assert changes["delivered"] == 0
        if not joined and not graylisted:
            self.expected[DropReason.UNKNOWN_TOPIC] += 1

    @rule(data=st.data())
    def receive_from_a_stranger(self, data: st.DataObject) -> None:
        stranger = data.draw(st.sampled_from([p for p in [*PEERS, "zz"] if p not in self.connected]))
        rpc = RPC(subscriptions=(SubOpts(subscribe=True, topic=TOPIC),))
        self.expected[DropReason.UNKNOWN_PEER] += 1
        assert (
            self._counted(RpcReceived(peer=stranger, rpc=rpc), {DropReason.UNKNOWN_PEER})["UNKNOWN_PEER"] == 1
        )
        assert stranger not in self.router.topic_peers(TOPIC)

    @rule(peer=st.sampled_from(PEERS))
    def send_failed(self, peer: str) -> None:
        self.expected[DropReason.SEND_FAILED] += 1
        assert self._counted(SendFailed(peer=peer), {DropReason.SEND_FAILED})["SEND_FAILED"] == 1

    @precondition(lambda self: self.connected)
    @rule(data=st.data(), kind=st.sampled_from(["graft", "prune", "ihave", "iwant", "idontwant"]))
    def receive_control(self, data: st.DataObject, kind: str) -> None:
        peer = data.draw(st.sampled_from(sorted(self.connected)))
        ids = tuple(data.draw(st.lists(st.sampled_from([*sorted(self.known), b"\x07" * 32]), max_size=4)))
        control = {
            "graft": ControlMessage(graft=(Graft(topic=TOPIC),)),
            "prune": ControlMessage(prune=(Prune(topic=TOPIC, backoff=data.draw(st.integers(0, 120))),)),
            "ihave": ControlMessage(ihave=(IHave(topic=TOPIC, message_ids=ids),)),
            "iwant": ControlMessage(iwant=(IWant(message_ids=ids),)),
            "idontwant": ControlMessage(idontwant=(IDontWant(message_ids=ids),)),
        }[kind]
        graylisted = self._graylisted(peer)
        was_in_mesh = peer in self.router.mesh.get(TOPIC, set())
        allowed = {
            "graft": {DropReason.GRAFT_REFUSED},
            "prune": set(),
            "ihave": {DropReason.IHAVE_LIMIT},
            "iwant": {DropReason.IWANT_UNSERVED},
            "idontwant": set(),  # at most 4 ids: far below the per-heartbeat limit
        }[kind]
        changes = self._counted(
            RpcReceived(peer=peer, rpc=RPC(control=control)),
            {DropReason.GRAYLISTED} if graylisted else allowed,
        )
        if graylisted:
            assert changes["GRAYLISTED"] == 1
        elif kind == "graft":
            in_mesh = peer in self.router.mesh[TOPIC]
            assert changes["GRAFT_REFUSED"] == (0 if in_mesh or was_in_mesh else 1), (
                "a refused GRAFT was not counted"
            )
        elif kind == "iwant":
            answered = changes["served"] + changes["suppressed"] + changes["IWANT_UNSERVED"]
            assert answered == len(ids), f"{len(ids)} ids asked, {answered} accounted for"
        elif kind == "ihave":
            assert changes["IHAVE_LIMIT"] <= 1

    @rule(payload=st.binary(min_size=1, max_size=40))
    def publish(self, payload: bytes) -> None:
        body = b"own" + payload
        self.known[message_id(body)] = body
        changes = self._counted(Publish(topic=TOPIC, data=body), {DropReason.DUPLICATE})
        assert changes["published"] + changes["DUPLICATE"] == 1

    @rule(dt=st.floats(min_value=0.0, max_value=5.0))
    def wait(self, dt: float) -> None:
        self.now += dt
        before = self.router.statistics().drops
        self._check(self.router.on_timer(now=self.now))
        assert self.router.statistics().drops == before, "the heartbeat dropped something"
        self.heartbeat_just_ran = True

    @invariant()
    def mesh_within_bounds(self) -> None:
        mesh = self.router.mesh.get(TOPIC, set())
        assert mesh <= self.connected, "mesh holds a peer that is not connected"
        assert "me" not in mesh
        if self.heartbeat_just_ran:
            assert len(mesh) <= self.config.d_hi

    @invariant()
    def topics_per_peer_bounded(self) -> None:
        for topic in [TOPIC, *OTHER_TOPICS]:
            expected = {p for p, topics in self.subscribed.items() if topic in topics}
            assert self.router.topic_peers(topic) == expected, topic
        assert all(len(topics) <= MACHINE_TOPIC_LIMIT for topics in self.subscribed.values())
        assert all(self.router._topic_peers.values()), "an empty per-topic set was left behind"
        assert topic_entries(self.router) <= MACHINE_TOPIC_LIMIT * len(self.connected)

    @invariant()
    def departed_peers_leave_nothing(self) -> None:
        for peer in set(PEERS) - self.connected:
            # Promises expire in iwant_followup_time, IWANT counts with their message: both time-bound.
            assert peer_footprint(self.router, peer) <= {"promises", "iwant_counts"}, peer

    @invariant()
    def scores_are_finite(self) -> None:
        for peer in self.connected:
            score = self.router.score(peer, now=self.now)
            assert math.isfinite(score)
            assert score <= ScoreParams().topic_score_cap + 1e-9  # no app score set: topics capped

    @invariant()
    def every_drop_is_counted(self) -> None:
        # Each rule checks its own accounting (``_counted``); across the run, the reasons the model
        # predicts must add up to exactly what it predicted, and deliveries to what it saw delivered.
        stats = self.router.statistics()
        assert {r: stats.drops[r] for r in PREDICTED_DROPS} == self.expected
        assert stats.delivered == len(self.delivered)


TestRouterMachine = RouterMachine.TestCase
TestRouterMachine.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
