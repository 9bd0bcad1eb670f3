"""The simulator's parts on their own: latency models, scenario checks, the event queue, the clock,
the send path (delay, loss, partition, bandwidth, jitter), RPC sizes, the Sybil wrapper and metrics.

Whole runs are in test_sim.py, graphs in test_sim_topology.py.
"""

from __future__ import annotations

import heapq
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.gossip import (
    GossipConfig,
    GossipRouter,
    Join,
    PeerConnected,
    Publish,
    RpcReceived,
    SendRpc,
    ValidationResult,
)
from meshchat.gossip.messages import RPC, ControlMessage, Graft, IHave, PubMessage, SubOpts
from meshchat.gossip.rpc import encode_rpc, frame
from meshchat.sim import (
    SIM_EPOCH,
    FixedLatency,
    LinkDrop,
    LogNormalLatency,
    Partition,
    Role,
    Scenario,
    ScenarioError,
    Simulation,
    TopologyKind,
    UniformLatency,
    parse_latency,
    parse_partition,
    payloads,
)
from meshchat.sim.adversary import SybilRouter, flood_rpc
from meshchat.sim.clock import CLOCK_OFFSET_RANGE, EventKind, EventQueue, VirtualClock
from meshchat.sim.metrics import Metrics
from meshchat.sim.network import Link, Network, Node, framed_size
from meshchat.wire import decode_envelope, message_id

TOPIC = "t"

# --- latency models and scenario knobs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "model"),
    [
        ("80ms", FixedLatency(0.08)),
        ("80", FixedLatency(0.08)),
        ("0.25s", FixedLatency(0.25)),
        ("50-150ms", UniformLatency(0.05, 0.15)),
        ("50ms-150ms", UniformLatency(0.05, 0.15)),
        ("0.05-0.15s", UniformLatency(0.05, 0.15)),
        ("lognormal:80ms", LogNormalLatency(0.08, 0.5)),
        ("lognormal:80ms:0.7", LogNormalLatency(0.08, 0.7)),
    ],
)
def test_latency_text_forms(text: str, model: object) -> None:
    parsed = parse_latency(text)
    assert parsed == model
    assert parse_latency(parsed.describe()) == parsed


@pytest.mark.parametrize(
    "text", ["", "fast", "150-50ms", "-5ms", "20s", "lognormal:", "lognormal:80ms:x", "1-2-3"]
)
def test_bad_latency_text_is_a_scenario_error(text: str) -> None:
    with pytest.raises(ScenarioError):
        parse_latency(text)


@given(low=st.integers(0, 500), span=st.integers(0, 500), seed=st.integers(0, 2**32))
def test_uniform_samples_stay_in_range_and_round_trip(low: int, span: int, seed: int) -> None:
    model = parse_latency(f"{low}-{low + span}ms")
    sample = model.sample(random.Random(seed))
    assert model.minimum <= sample <= (low + span) / 1000 + 1e-12
    assert parse_latency(model.describe()) == model


def test_log_normal_samples_are_positive_and_capped() -> None:
    model = LogNormalLatency(0.08, 3.0)
    rng = random.Random(1)
    samples = [model.sample(rng) for _ in range(10_000)]
    assert min(samples) > 0
    assert max(samples) <= 0.08 * 20 + 1e-12


@pytest.mark.parametrize(
    "knobs",
    [
        {"nodes": 1},
        {"nodes": 5, "degree": 5},
        {"loss": 1.0},
        {"loss": -0.1},
        {"rate": 0},
        {"churn": 1.5},
        {"churn_away": (5.0, 1.0)},
        {"topology": TopologyKind.SMALL_WORLD, "degree": 5},
        {"topology": TopologyKind.CLUSTERS, "nodes": 20, "clusters": 4, "degree": 6},
        {"bandwidth": 0.0},
        {"jitter": math.nan},
        {"nodes": 10, "sybil_degree": 0},
    ],
)
def test_impossible_scenarios_are_refused_with_the_knob_named(knobs: dict[str, object]) -> None:
    with pytest.raises(ScenarioError) as caught:
        Scenario(**knobs)  # type: ignore[arg-type]
    assert caught.value.knob in {*knobs, "degree"}
    assert str(caught.value).startswith("scenario: ")


def test_partition_text_form() -> None:
    assert parse_partition("30:60") == Partition(at=30, heal=60)
    assert parse_partition("30:") == Partition(at=30, heal=None)
    for bad in ("30", "60:30", "a:b", "-1:5"):
        with pytest.raises(ScenarioError):
            parse_partition(bad)


def test_scenario_duration_covers_warmup_publishing_and_drain() -> None:
    scenario = Scenario(messages=101, rate=10, warmup=5, drain=10)
    assert scenario.first_publish == 5
    assert scenario.last_publish == pytest.approx(15)
    assert scenario.duration == pytest.approx(25)


# --- clock and event queue ----------------------------------------------------------------------------


def test_the_virtual_clock_starts_at_a_large_random_offset() -> None:
    starts = {VirtualClock(random.Random(seed)).start for seed in range(20)}
    assert len(starts) == 20
    assert all(CLOCK_OFFSET_RANGE[0] <= s <= CLOCK_OFFSET_RANGE[1] for s in starts)
    clock = VirtualClock(random.Random(1))
    assert clock.wall == SIM_EPOCH
    clock.now += 12.5
    assert clock.elapsed == 12.5
    assert clock.wall == SIM_EPOCH + 12.5


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.sampled_from(["push", "pop"]), st.integers(0, 3000), st.integers(0, 3)),
        max_size=300,
    )
)
def test_event_queue_order_is_the_heap_order(ops: list[tuple[str, int, int]]) -> None:
    """The calendar queue gives exactly what a (time, sequence) heap gives, pushes mid-bucket included."""
    queue = EventQueue()
    model: list[tuple[float, int]] = []
    now = 1_000_000.0
    pushed = 0
    for op, micros, extra in ops:
        if op == "push":
            # Times at and just after `now` land in the bucket being drained; some repeat exactly.
            at = now + micros / 1e6 * (10**extra)
            queue.push(at, EventKind.TIMER, None, pushed)
            heapq.heappush(model, (at, pushed))
            pushed += 1
        else:
            limit = now + micros / 1e6
            event = queue.pop_until(limit)
            if model and model[0][0] <= limit:
                expected = heapq.heappop(model)
                assert event is not None
                assert (event[0], event[4]) == expected
                now = event[0]
            else:
                assert event is None
                now = max(now, limit)
    assert len(queue) == len(model)
    rest = []
    while (event := queue.pop_until(math.inf)) is not None:
        rest.append((event[0], event[4]))
    assert rest == sorted(model)


# --- the send path ------------------------------------------------------------------------------------


class _Pair:
    """Two online nodes joined by one link, on a bare network (no engine)."""

    def __init__(self, *, latency: float = 0.1, **knobs: object) -> None:
        self.scenario = Scenario(nodes=2, degree=1, **knobs)  # type: ignore[arg-type]
        self.clock = VirtualClock(random.Random(1))
        self.queue = EventQueue()
        self.network = Network(
            self.scenario,
            clock=self.clock,
            queue=self.queue,
            latency_rng=random.Random(2),
            loss_rng=random.Random(3),
            jitter_rng=random.Random(4),
        )
        self.a, self.b = (
            Node(index=i, peer_id=f"peer-{i}", role=Role.HONEST, ip=f"10.0.0.{i}", cluster=0)
            for i in range(2)
        )
        for node in (self.a, self.b):
            self.network.add(node)
            node.router = GossipRouter(GossipConfig(), local_peer=node.peer_id, rng=random.Random(node.index))
        self.link = Link(latency)
        assert self.network.install(self.a, self.b, self.link)

    def arrivals(self) -> list[tuple[float, RPC]]:
        out = []
        while (event := self.queue.pop_until(math.inf)) is not None:
            assert event[2] is EventKind.ARRIVE and event[3] is self.b and event[6] is self.link
            assert event[5].peer == "peer-0"
            out.append((event[0] - self.clock.start, event[5].rpc))
        return out


def _message_rpc(size: int, tag: int = 0) -> RPC:
    return RPC(publish=(PubMessage(topic=TOPIC, data=bytes([tag]) * size),))


def test_an_rpc_arrives_after_the_link_delay() -> None:
    pair = _Pair(latency=0.123)
    pair.clock.now += 2.0
    assert pair.network.send(pair.a, "peer-1", _message_rpc(10))
    [(at, rpc)] = pair.arrivals()
    assert at == pytest.approx(2.123)
    assert rpc.publish[0].data == bytes(10)  # the very object, by reference


def test_a_busy_uplink_queues_a_burst_fifo() -> None:
    bandwidth = 10_000.0
    pair = _Pair(latency=0.05, bandwidth=bandwidth)
    rpcs = [_message_rpc(990, tag) for tag in range(5)]
    for rpc in rpcs:
        pair.network.send(pair.a, "peer-1", rpc)
    size = framed_size(rpcs[0])
    arrivals = pair.arrivals()
    assert [rpc for _, rpc in arrivals] == rpcs
    for k, (at, _) in enumerate(arrivals):
        assert at == pytest.approx((k + 1) * size / bandwidth + 0.05)
    assert pair.a.bytes_sent == 5 * size
    # Once the uplink has drained, a new send does not wait.
    pair.clock.now += 10.0
    pair.network.send(pair.a, "peer-1", rpcs[0])
    [(at, _)] = pair.arrivals()
    assert at == pytest.approx(10.0 + size / bandwidth + 0.05)


@given(jitter=st.floats(0.001, 0.5), seed=st.integers(0, 1000))
@settings(max_examples=30)
def test_jitter_never_reorders_one_link(jitter: float, seed: int) -> None:
    pair = _Pair(latency=0.05, jitter=jitter)
    pair.network._jitter_rng.seed(seed)
    rpcs = [_message_rpc(1, tag) for tag in range(50)]
    for rpc in rpcs:
        pair.network.send(pair.a, "peer-1", rpc)
        pair.clock.now += 0.001
    arrivals = pair.arrivals()
    assert [rpc for _, rpc in arrivals] == rpcs
    assert all(at >= 0.05 for at, _ in arrivals)


def test_loss_is_drawn_from_the_seeded_rng_and_counted() -> None:
    def lost(seed: int) -> list[int]:
        pair = _Pair(loss=0.3)
        pair.network._loss_rng.seed(seed)
        for tag in range(2000):
            pair.network.send(pair.a, "peer-1", _message_rpc(1, tag % 256))
        delivered = {id(rpc) for _, rpc in pair.arrivals()}
        assert pair.network.drops[LinkDrop.LOSS] == 2000 - len(delivered)
        return [pair.network.drops[LinkDrop.LOSS]]

    assert lost(1) == lost(1)
    assert 500 < lost(1)[0] < 700
    assert lost(1) != lost(2)


def test_a_partition_drops_across_sides_only() -> None:
    pair = _Pair()
    pair.network.partitioned = True
    pair.network.send(pair.a, "peer-1", _message_rpc(1))
    assert pair.arrivals()  # same side
    pair.b.side = 1
    pair.network.send(pair.a, "peer-1", _message_rpc(1))
    assert pair.arrivals() == []
    assert pair.network.drops[LinkDrop.PARTITION] == 1
    pair.network.partitioned = False
    pair.network.send(pair.a, "peer-1", _message_rpc(1))
    assert len(pair.arrivals()) == 1


def test_sending_without_a_connection_fails_and_is_counted() -> None:
    pair = _Pair()
    assert pair.network.remove(pair.a, pair.b)
    assert not pair.network.send(pair.a, "peer-1", _message_rpc(1))
    assert not pair.network.send(pair.a, "nobody", _message_rpc(1))
    assert pair.network.drops[LinkDrop.NOT_CONNECTED] == 2
    assert not pair.network.remove(pair.a, pair.b)


# --- RPC sizes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rpc",
    [
        RPC(),
        _message_rpc(10),
        _message_rpc(200),
        _message_rpc(70_000),
        RPC(subscriptions=(SubOpts(subscribe=True, topic="t"), SubOpts(subscribe=False, topic="ü" * 90))),
        RPC(control=ControlMessage(graft=(Graft(topic="t"),))),
        RPC(
            publish=(PubMessage(topic=TOPIC, data=b"\x01" * 300),),
            control=ControlMessage(
                ihave=(IHave(topic="t", message_ids=tuple(bytes([i]) * 32 for i in range(50))),)
            ),
        ),
    ],
)
def test_bytes_counted_are_the_framed_encoding(rpc: RPC) -> None:
    """What the simulator charges a link is exactly what the real codec would write on the stream."""
    assert framed_size(rpc) == len(frame(encode_rpc(rpc)))


# --- the Sybil wrapper --------------------------------------------------------------------------------


def test_the_sybil_wrapper_keeps_control_and_withholds_every_message() -> None:
    sybil = SybilRouter(GossipRouter(GossipConfig(), local_peer="sybil", rng=random.Random(1)))
    now = 1e6
    out = sybil.handle(Join(topic=TOPIC), now=now)
    for peer in ("a", "b", "c"):
        out += sybil.handle(PeerConnected(peer=peer, outbound=False), now=now)
        subscribe = RPC(subscriptions=(SubOpts(subscribe=True, topic=TOPIC),))
        out += sybil.handle(RpcReceived(peer=peer, rpc=subscribe), now=now)
        graft = RPC(control=ControlMessage(graft=(Graft(topic=TOPIC),)))
        out += sybil.handle(RpcReceived(peer=peer, rpc=graft), now=now)
    assert sybil.mesh[TOPIC] == {"a", "b", "c"}  # it accepts grafts
    message = RPC(publish=(PubMessage(topic=TOPIC, data=b"\x01 forward me"),))
    out += sybil.handle(RpcReceived(peer="a", rpc=message), now=now)
    out += sybil.handle(Publish(topic=TOPIC, data=b"\x01 mine"), now=now)
    for step in range(1, 4):
        out += sybil.on_timer(now=now + step)
    sends = [a for a in out if isinstance(a, SendRpc)]
    assert sends, "it still talks: subscriptions, control"
    assert all(not a.rpc.publish for a in sends)
    assert any(a.rpc.subscriptions for a in sends)
    assert sybil.withheld >= 4  # forwarding to b and c, publishing to a, b, c
    assert sybil.statistics().messages_sent >= sybil.withheld  # the real router meant to send them


def test_a_flood_rpc_is_one_message_on_the_topic() -> None:
    rpc = flood_rpc(TOPIC, b"\xffjunk")
    assert rpc.publish == (PubMessage(topic=TOPIC, data=b"\xffjunk"),)


# --- metrics ------------------------------------------------------------------------------------------


def test_metrics_count_copies_deliveries_and_eligibility() -> None:
    metrics = Metrics(subscribed=[True, True, True, False], away=[[], [], [(0.5, 3.0)], []], drain=10.0)
    record = metrics.published(b"m1", publisher=0, at=1.0)
    assert record.eligible == 1  # node 1 only: 2 was away during the lifetime, 3 is not subscribed
    message = PubMessage(topic=TOPIC, data=b"m1")
    metrics.received(1, [message, message])
    metrics.received(1, [message])
    metrics.received(0, [message])  # the publisher's own copies are not duplicates of a receipt
    metrics.delivered(1, b"m1", 1.25)
    metrics.delivered(1, b"m1", 2.0)  # a second delivery (fresh router after churn) does not count
    metrics.delivered(2, b"m1", 4.0)  # delivered, but not expected: not counted
    assert metrics.delivery() == (1, 1)
    assert list(metrics.latencies) == [0.25]
    assert metrics.duplicates_per_message() == 2.0
    late = metrics.published(b"m2", publisher=1, at=20.0)
    metrics.delivered(0, b"m2", 30.5)  # after its 10 s lifetime
    assert late.eligible == 2 and late.delivered == 0
    metrics.delivered(0, b"spam", 3.0)
    metrics.junk(b"junk", "invalid")
    metrics.delivered(0, b"junk", 3.0)
    assert metrics.other_deliveries == {"spam": 0, "invalid": 1, "unknown": 1}


def test_router_deadlines_live_on_the_offset_clock() -> None:
    sim = Simulation(Scenario(nodes=6, degree=3, messages=2, seed=5))
    sim.run_until(3.0)
    deadlines = [n.router.next_deadline() for n in sim.network.nodes if n.router is not None]
    assert all(d is not None and d > CLOCK_OFFSET_RANGE[0] for d in deadlines)
    assert sim.clock.elapsed == 3.0


# --- memoised message ids and envelope checks -------------------------------------------------------


def test_memoised_message_ids_equal_hashing_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payloads, "MEMO_ENTRIES", 8)  # so the memo fills up and starts over
    ids = payloads.MessageIds()
    rng = random.Random(5)
    blobs = [rng.randbytes(rng.randrange(0, 400)) for _ in range(40)]
    for blob in blobs * 3:
        assert ids(blob) == message_id(blob)
        assert ids(bytes(blob)) == message_id(blob)  # an equal copy, not the same object


def test_memoised_envelope_check_gives_the_verdicts_of_decoding_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(payloads, "MEMO_ENTRIES", 3)
    clock = VirtualClock(random.Random(1))
    factory = payloads.EnvelopeFactory(clock=clock, rng=random.Random(2), body_size=50)
    alice, bob = payloads.make_identities(2, random.Random(3))
    envelopes = [factory.sealed(alice, bob) for _ in range(4)]
    garbage = [factory.garbage(), b"", envelopes[0][:-1], envelopes[1] + b"\x00"]
    memoised = payloads.EnvelopeValidator(clock)

    def fresh(data: bytes) -> ValidationResult:
        return payloads.EnvelopeValidator(clock)("t", data, message_id(data))

    for _ in range(3):
        for data in envelopes + garbage:
            assert memoised("t", data, message_id(data)) == fresh(data)
    assert memoised.accepted == 12
    assert memoised.rejected == 12
    # Expiry is checked on every call, not memoised: once the clock passes it, the same bytes fail.
    expiry = decode_envelope(envelopes[0]).expiry
    clock.now += expiry - clock.wall + 1
    assert memoised("t", envelopes[0], message_id(envelopes[0])) is ValidationResult.REJECT
    assert fresh(envelopes[0]) is ValidationResult.REJECT
