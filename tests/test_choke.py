"""The choke extension: the ranking core, the wire format, the router's two sides, and a small simulation.

The core (``meshchat.gossip.choke.ChokeTable``) is fed delay samples by hand; the codec is checked
against the reference ``protobuf`` decoder built from the pubsub schema (a peer without the extension
skips the new fields); the router flows use ``tests.test_router.Net`` (real routers, instant links);
the simulation is the broadcast scenario at 150 nodes, choking on and off, same seed.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from meshchat.gossip import DropReason, GossipConfig, Publish, RpcReceived, SendRpc
from meshchat.gossip.choke import MAX_DELAY_SAMPLE, ChokeTable
from meshchat.gossip.messages import RPC, Choke, ControlMessage, IHave, PubMessage, Unchoke
from meshchat.gossip.rpc import CHOKE_FIELD, UNCHOKE_FIELD, decode_rpc, encode_rpc, rpc_size
from meshchat.sim import Scenario, UniformLatency, run
from tests.pubsub_schema import protobuf_classes
from tests.test_router import TOPIC, Net, full_mesh

MESH = {"fast1", "fast2", "fast3", "slow1", "slow2", "slow3"}


def table(**overrides: int | float) -> ChokeTable:
    params: dict[str, int | float] = {"keep": 3, "window": 8, "min_samples": 4, "churn": 3, "margin": 0.0}
    params.update(overrides)
    return ChokeTable(**params)  # type: ignore[arg-type]


def feed(chokes: ChokeTable, delays: dict[str, float], rounds: int, topic: str = TOPIC) -> None:
    for _ in range(rounds):
        for peer, delay in delays.items():
            chokes.observe(topic, peer, delay)


SPEEDS = {"fast1": 0.0, "fast2": 0.01, "fast3": 0.02, "slow1": 0.2, "slow2": 0.3, "slow3": 0.4}


# --- the core --------------------------------------------------------------------------------------


def test_the_slowest_mesh_peers_are_choked_and_the_fastest_kept() -> None:
    chokes = table()
    feed(chokes, SPEEDS, rounds=4)
    decision = chokes.decide(TOPIC, MESH)
    assert decision.choke == ("slow1", "slow2", "slow3")
    assert decision.unchoke == ()
    assert chokes.choked(TOPIC) == {"slow1", "slow2", "slow3"}
    assert chokes.is_choked(TOPIC, "slow1") and not chokes.is_choked(TOPIC, "fast1")
    assert chokes.decide(TOPIC, MESH).choke == ()  # stable: nothing more to do


def test_nobody_is_choked_before_enough_samples_and_new_peers_stay_unchoked() -> None:
    chokes = table()
    feed(chokes, SPEEDS, rounds=3)  # min_samples is 4
    assert chokes.decide(TOPIC, MESH).choke == ()
    feed(chokes, SPEEDS, rounds=1)
    feed(chokes, {"newcomer": 0.9}, rounds=2)  # slow but barely known: not ranked yet
    decision = chokes.decide(TOPIC, MESH | {"newcomer"})
    assert "newcomer" not in decision.choke
    assert set(decision.choke) == {"slow1", "slow2", "slow3"}


def test_churn_limits_chokes_per_round_slowest_first() -> None:
    chokes = table(churn=1)
    feed(chokes, SPEEDS, rounds=4)
    assert chokes.decide(TOPIC, MESH).choke == ("slow3",)
    assert chokes.decide(TOPIC, MESH).choke == ("slow2",)
    assert chokes.decide(TOPIC, MESH).choke == ("slow1",)
    assert chokes.decide(TOPIC, MESH).choke == ()


def test_a_choked_peer_whose_announcements_come_first_is_unchoked() -> None:
    chokes = table(window=4)
    feed(chokes, SPEEDS, rounds=4)
    chokes.decide(TOPIC, MESH)
    # The paths change: slow1's announcements now come first, fast3's copies late.
    feed(chokes, {"slow1": 0.0, "fast3": 0.5}, rounds=4)
    decision = chokes.decide(TOPIC, MESH)
    assert decision.unchoke == ("slow1",)
    assert decision.choke == ("fast3",)
    assert chokes.choked(TOPIC) == {"fast3", "slow2", "slow3"}


def test_losing_unchoked_peers_unchokes_the_best_choked_ones() -> None:
    chokes = table()
    feed(chokes, SPEEDS, rounds=4)
    chokes.decide(TOPIC, MESH)
    smaller = MESH - {"fast1", "fast2"}
    chokes.remove_peer(TOPIC, "fast1")
    chokes.remove_peer(TOPIC, "fast2")
    assert chokes.decide(TOPIC, smaller).unchoke == ("slow1", "slow2")
    assert chokes.decide(TOPIC, {"slow3", "fast3"}).unchoke == ("slow3",)  # mesh <= keep: all unchoked
    assert chokes.choked(TOPIC) == set()


def test_margin_keeps_a_nearly_as_fast_unchoked_peer() -> None:
    chokes = table(keep=1, margin=0.05)
    feed(chokes, {"a": 0.0, "b": 0.2}, rounds=4)
    assert chokes.decide(TOPIC, {"a", "b"}).choke == ("b",)
    feed(chokes, {"a": 0.03, "b": 0.0}, rounds=8)  # b now slightly faster, within the margin
    assert chokes.decide(TOPIC, {"a", "b"}).unchoke == ()
    feed(chokes, {"a": 0.2, "b": 0.0}, rounds=8)  # clearly faster: swap
    decision = chokes.decide(TOPIC, {"a", "b"})
    assert decision.unchoke == ("b",) and decision.choke == ("a",)


def test_peers_under_the_late_threshold_are_never_choked() -> None:
    chokes = table(keep=2, late=0.1)
    feed(chokes, SPEEDS | {"fast3": 0.05}, rounds=4)
    decision = chokes.decide(TOPIC, MESH)
    assert decision.choke == ("slow1", "slow2", "slow3")  # fast3 is third but often nearly first: kept
    with pytest.raises(ValueError, match="late"):
        table(late=-1.0)


def test_samples_are_capped_and_the_table_is_bounded_by_the_mesh() -> None:
    chokes = table(window=4)
    feed(chokes, {"a": 100.0, "b": MAX_DELAY_SAMPLE}, rounds=4)
    feed(chokes, {f"stranger{i}": 0.0 for i in range(100)}, rounds=1)
    assert len(chokes) == 102
    chokes.decide(TOPIC, {"a", "b"})
    assert len(chokes) == 2  # records of peers outside the mesh are dropped at the next decision
    chokes.forget_topic(TOPIC)
    assert len(chokes) == 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="keep"):
        table(keep=0)
    with pytest.raises(ValueError, match="min_samples"):
        table(min_samples=9)
    with pytest.raises(ValueError, match="choke_keep"):
        GossipConfig(choke_keep=0)


# --- the wire --------------------------------------------------------------------------------------


def test_choke_and_unchoke_round_trip_with_their_exact_size() -> None:
    rpc = RPC(
        control=ControlMessage(
            ihave=(IHave(topic=TOPIC, message_ids=(b"\x01" * 32,)),),
            choke=(Choke(topic=TOPIC), Choke(topic="other")),
            unchoke=(Unchoke(topic="third"),),
        )
    )
    data = encode_rpc(rpc)
    assert decode_rpc(data) == rpc
    assert rpc_size(rpc) == len(data)
    assert CHOKE_FIELD > 0x200000 and UNCHOKE_FIELD > 0x200000  # gossipsub v1.3's experimental range


def test_a_peer_without_the_extension_skips_choke_fields() -> None:
    """The reference protobuf decoder (what go/js/rust peers run) reads the rest and keeps the unknown."""
    classes = protobuf_classes("choke_skip_test")
    message = PubMessage(topic=TOPIC, data=b"payload")
    rpc = RPC(
        publish=(message,),
        control=ControlMessage(
            ihave=(IHave(topic=TOPIC, message_ids=(b"\x02" * 32,)),), choke=(Choke(topic=TOPIC),)
        ),
    )
    parsed = classes["RPC"]()
    parsed.ParseFromString(encode_rpc(rpc))
    assert parsed.publish[0].data == b"payload"
    assert list(parsed.control.ihave[0].messageIDs) == [b"\x02" * 32]
    # Re-encoded by the reference library (unknown fields preserved), meshchat reads the same RPC.
    assert decode_rpc(parsed.SerializeToString()) == rpc
    without = RPC(publish=(message,), control=ControlMessage(ihave=rpc.control.ihave))  # type: ignore[union-attr]
    assert decode_rpc(encode_rpc(without)).control == without.control


def test_meshchat_skips_control_fields_it_does_not_know() -> None:
    """A newer peer's extension (here field 0x200001 and v1.3's field 6) is skipped, the rest kept."""
    known = ControlMessage(choke=(Choke(topic=TOPIC),))
    inner = encode_rpc(RPC(control=known))[2:]  # the ControlMessage bytes behind RPC field 3's header
    unknown = bytes([0x8A, 0x80, 0x80, 0x08, 0x02]) + b"hi" + bytes([0x32, 0x01, 0x00])  # 0x200001, 6
    body = inner + unknown
    data = bytes([0x1A, len(body)]) + body
    assert decode_rpc(data).control == known


# --- the router ------------------------------------------------------------------------------------


def choke_rpc(topic: str = TOPIC) -> RPC:
    return RPC(control=ControlMessage(choke=(Choke(topic=topic),)))


def test_a_choked_peer_gets_ihave_instead_of_the_message_and_recovers_it_with_iwant() -> None:
    net = Net(["a", "b", "c"])  # a line: a - b - c, choking off everywhere (CHOKE is still honoured)
    net.connect("a", "b")
    net.connect("b", "c")
    net.settle()
    net.join_all()
    assert net.routers["b"].mesh[TOPIC] == {"a", "c"}
    net.queue.append(("c", "b", choke_rpc()))
    net.settle()
    assert net.routers["b"].choked_by(TOPIC) == {"c"}
    sent_before = len(net.sent)
    net.input("a", Publish(topic=TOPIC, data=b"lazy please"))
    net.settle()
    to_c = [action.rpc for name, action in net.sent[sent_before:] if name == "b" and action.peer == "c"]
    assert to_c[0].publish == ()  # no full message pushed to the peer that choked b
    assert to_c[0].control is not None and to_c[0].control.ihave[0].topic == TOPIC
    assert [d.data for d in net.delivered["c"]] == [b"lazy please"]  # fetched with IWANT at once
    stats = net.routers["b"].statistics()
    assert stats.announced_to_choked == 1 and stats.iwant_served == 1
    # UNCHOKE: b pushes again.
    net.queue.append(("c", "b", RPC(control=ControlMessage(unchoke=(Unchoke(topic=TOPIC),)))))
    net.settle()
    assert net.routers["b"].choked_by(TOPIC) == frozenset()
    sent_before = len(net.sent)
    net.input("a", Publish(topic=TOPIC, data=b"push again"))
    net.settle()
    to_c = [action.rpc for name, action in net.sent[sent_before:] if name == "b" and action.peer == "c"]
    assert [m.data for m in to_c[0].publish] == [b"push again"]


def test_choke_from_a_peer_outside_the_mesh_or_topic_is_ignored_and_a_prune_ends_it() -> None:
    net = full_mesh(["a", "b"])
    net.input("a", RpcReceived(peer="b", rpc=choke_rpc("not-joined")))
    assert net.routers["a"].statistics().drops[DropReason.UNKNOWN_TOPIC] == 1
    net.input("a", RpcReceived(peer="b", rpc=choke_rpc()))
    assert net.routers["a"].choked_by(TOPIC) == {"b"}
    net.disconnect("a", "b")
    assert net.routers["a"].choked_by(TOPIC) == frozenset()


def test_a_router_that_never_receives_choke_behaves_as_plain_gossipsub() -> None:
    """A js-libp2p or plain peer never sends CHOKE: every mesh peer gets the full message, no IHAVE."""
    for config in (GossipConfig(), GossipConfig(choke=True)):
        net = full_mesh(["a", "b", "c", "d"], config=config)
        sent_before = len(net.sent)
        net.input("a", Publish(topic=TOPIC, data=b"as before"))
        net.settle()
        for name in ("b", "c", "d"):
            assert [d.data for d in net.delivered[name]] == [b"as before"]
        sends = [action for _, action in net.sent[sent_before:] if isinstance(action, SendRpc)]
        assert all(rpc.rpc.control is None or not rpc.rpc.control.ihave for rpc in sends)
        assert net.routers["a"].statistics().announced_to_choked == 0


# --- the simulation --------------------------------------------------------------------------------


def test_choking_in_a_small_simulation_delivers_everything_with_fewer_duplicates() -> None:
    base = Scenario(
        seed=3,
        nodes=150,
        degree=6,
        messages=100,
        latency=UniformLatency(0.050, 0.150),
        gossip=GossipConfig(idontwant_min_size=0),
    )
    plain = run(base)
    choked = run(replace(base, gossip=GossipConfig(idontwant_min_size=0, choke=True)))
    assert plain.delivery_ratio == 1.0
    assert choked.delivery_ratio == 1.0
    assert plain.duplicates_per_message is not None and choked.duplicates_per_message is not None
    assert choked.duplicates_per_message < 0.85 * plain.duplicates_per_message  # 2.70 vs 3.83 here
    assert choked.bytes_per_node["mean"] < plain.bytes_per_node["mean"]  # type: ignore[operator]
    for result in (plain, choked):  # the default per-peer rate limits never touch honest traffic
        assert result.drops["router"][DropReason.MESSAGE_RATE_LIMIT.value] == 0
        assert result.drops["router"][DropReason.CONTROL_RATE_LIMIT.value] == 0
