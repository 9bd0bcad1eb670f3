"""Every table a remote peer can grow in the gossip router stays bounded, and a peer that leaves
leaves nothing behind but what is deliberately retained (its score, its backoffs), itself bounded.

Each test reproduces one way a peer could grow the router's state (issue 12, item 2 and the audit
after it) and fails on the code before the fix.
"""

from __future__ import annotations

import random

import pytest

from meshchat.gossip import (
    DropReason,
    GossipConfig,
    GossipRouter,
    Join,
    PeerConnected,
    PeerDisconnected,
    Publish,
    RpcReceived,
    ScoreParams,
)
from meshchat.gossip import score as score_module
from meshchat.gossip import tables as tables_module
from meshchat.gossip.messages import (
    RPC,
    ControlMessage,
    Graft,
    IDontWant,
    IHave,
    IWant,
    Prune,
    PubMessage,
    SubOpts,
)
from meshchat.wire import message_id
from tests.router_probe import backoff_entries, peer_footprint, topic_entries

TOPIC = "inbox/0"


def make_router(*, config: GossipConfig | None = None, scoring: bool = True, **score: float) -> GossipRouter:
    router = GossipRouter(
        config or GossipConfig(),
        local_peer="me",
        rng=random.Random(1),
        score_params=ScoreParams(**score) if scoring else None,  # type: ignore[arg-type]
    )
    router.handle(Join(topic=TOPIC), now=0.0)
    return router


def rpc(**fields: object) -> RPC:
    return RPC(**fields)  # type: ignore[arg-type]


def control(**fields: object) -> RPC:
    return RPC(control=ControlMessage(**fields))  # type: ignore[arg-type]


def heartbeats(router: GossipRouter, now: float, count: int) -> float:
    for _ in range(count):
        now += router.config.heartbeat_interval
        router.on_timer(now=now)
    return now


# --- topics per peer (issue 12, item 2) -------------------------------------------------------------


def test_subscribe_unsubscribe_churn_leaves_nothing_after_the_peer_disconnects() -> None:
    """Regression: 50 such RPCs left 51,200 per-topic entries (empty sets) behind."""
    router = make_router()
    router.handle(PeerConnected(peer="churner", outbound=False), now=0.0)
    for batch in range(50):
        topics = [f"t{batch}-{i}" for i in range(512)]
        subs = tuple(SubOpts(subscribe=True, topic=t) for t in topics)
        unsubs = tuple(SubOpts(subscribe=False, topic=t) for t in topics)
        router.handle(RpcReceived(peer="churner", rpc=rpc(subscriptions=subs + unsubs)), now=0.0)
        assert topic_entries(router) <= router.config.max_topics_per_peer
    router.handle(PeerDisconnected(peer="churner"), now=0.0)
    assert topic_entries(router) == 0
    assert peer_footprint(router, "churner") == set()


def test_unsubscribing_from_a_topic_never_subscribed_makes_no_entry() -> None:
    router = make_router()
    router.handle(PeerConnected(peer="p", outbound=False), now=0.0)
    unsubs = tuple(SubOpts(subscribe=False, topic=f"never{i}") for i in range(100))
    router.handle(RpcReceived(peer="p", rpc=rpc(subscriptions=unsubs)), now=0.0)
    assert topic_entries(router) == 0


def test_topics_per_peer_are_bounded_and_the_excess_counted() -> None:
    config = GossipConfig(max_topics_per_peer=8)
    router = make_router(config=config)
    router.handle(PeerConnected(peer="p", outbound=False), now=0.0)
    subs = tuple(SubOpts(subscribe=True, topic=f"t{i}") for i in range(20))
    router.handle(RpcReceived(peer="p", rpc=rpc(subscriptions=subs)), now=0.0)
    assert router.statistics().drops[DropReason.TOPIC_LIMIT] == 12
    assert [t for t in (f"t{i}" for i in range(20)) if "p" in router.topic_peers(t)] == [
        f"t{i}" for i in range(8)
    ]
    again = (SubOpts(subscribe=True, topic="t0"),)  # already subscribed: neither a drop nor a new entry
    router.handle(RpcReceived(peer="p", rpc=rpc(subscriptions=again)), now=0.0)
    assert router.statistics().drops[DropReason.TOPIC_LIMIT] == 12
    swap = (SubOpts(subscribe=False, topic="t0"), SubOpts(subscribe=True, topic="t19"))
    router.handle(RpcReceived(peer="p", rpc=rpc(subscriptions=swap)), now=0.0)
    assert router.topic_peers("t19") == {"p"}
    assert router.topic_peers("t0") == set()
    assert topic_entries(router) == 8


def test_config_refuses_a_topic_limit_below_one() -> None:
    with pytest.raises(ValueError, match="max_topics_per_peer"):
        GossipConfig(max_topics_per_peer=0)


# --- PRUNE backoffs ---------------------------------------------------------------------------------


def test_prune_for_a_topic_not_joined_records_no_backoff() -> None:
    """Regression: a PRUNE for any made-up topic added a backoff entry (2**63 s long if asked)."""
    router = make_router()
    router.handle(PeerConnected(peer="p", outbound=False), now=0.0)
    prunes = tuple(Prune(topic=f"made-up{i}", backoff=2**63) for i in range(200))
    router.handle(RpcReceived(peer="p", rpc=control(prune=prunes)), now=0.0)
    assert backoff_entries(router) == 0
    assert router.statistics().drops[DropReason.UNKNOWN_TOPIC] == 200


def test_a_huge_prune_backoff_is_capped() -> None:
    router = make_router()
    router.handle(PeerConnected(peer="p", outbound=False), now=0.0)
    router.handle(RpcReceived(peer="p", rpc=control(prune=(Prune(topic=TOPIC, backoff=2**63),))), now=5.0)
    assert router.backoff_until(TOPIC, "p") == 5.0 + router.config.max_prune_backoff
    heartbeats(router, 5.0, int(router.config.max_prune_backoff) + 2)
    assert router.backoff_until(TOPIC, "p") is None


def test_backoffs_of_departed_identities_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables_module, "MAX_BACKOFFS_PER_TOPIC", 10)
    router = make_router()
    router.handle(PeerConnected(peer="stays", outbound=False), now=0.0)
    router.handle(RpcReceived(peer="stays", rpc=control(prune=(Prune(topic=TOPIC, backoff=60),))), now=0.0)
    for i in range(100):  # fresh identities: connect, PRUNE (a backoff is kept for them), leave
        sybil = f"sybil{i}"
        router.handle(PeerConnected(peer=sybil, outbound=False), now=1.0)
        router.handle(RpcReceived(peer=sybil, rpc=control(prune=(Prune(topic=TOPIC, backoff=60),))), now=1.0)
        router.handle(PeerDisconnected(peer=sybil), now=1.0)
        assert backoff_entries(router) <= 10 + 1
    assert router.backoff_until(TOPIC, "stays") == 60.0  # a connected peer's entry is never evicted
    assert router.backoff_until(TOPIC, "sybil99") is not None  # the newest departed ones are kept


# --- IDONTWANT --------------------------------------------------------------------------------------


def test_an_idontwant_id_repeated_every_heartbeat_does_not_pin_the_table() -> None:
    """Regression: the repeated id kept its place at the front, so nothing behind it ever expired."""
    router = make_router()
    router.handle(PeerConnected(peer="p", outbound=False), now=0.0)
    sticky = b"\x00" * 32
    now = 0.0
    for beat in range(30):
        fresh = tuple(bytes([beat, i]) * 16 for i in range(100))
        router.handle(
            RpcReceived(peer="p", rpc=control(idontwant=(IDontWant(message_ids=(sticky, *fresh)),))), now=now
        )
        now = heartbeats(router, now, 1)
    window = router.config.mcache_len + 1
    assert len(router._dont_send.by_peer["p"]) <= window * 101


# --- promises and scores ----------------------------------------------------------------------------


def test_a_promise_broken_after_the_score_expired_creates_no_record() -> None:
    """Regression: the penalty re-created the peer's score as connected, so it never expired."""
    router = make_router(retain_score=1.0)
    router.handle(PeerConnected(peer="liar", outbound=False), now=0.0)
    fake = IHave(topic=TOPIC, message_ids=(b"\x01" * 32,))
    router.handle(RpcReceived(peer="liar", rpc=control(ihave=(fake,))), now=0.0)
    router.handle(PeerDisconnected(peer="liar"), now=0.0)
    heartbeats(router, 0.0, int(router.config.iwant_followup_time) + 5)
    assert router._score is not None
    assert "liar" not in router._score._peers
    assert peer_footprint(router, "liar") == set()


def test_a_promise_broken_by_a_departed_peer_still_costs_its_retained_score() -> None:
    router = make_router()
    router.handle(PeerConnected(peer="liar", outbound=False), now=0.0)
    fake = IHave(topic=TOPIC, message_ids=(b"\x01" * 32,))
    router.handle(RpcReceived(peer="liar", rpc=control(ihave=(fake,))), now=0.0)
    router.handle(PeerDisconnected(peer="liar"), now=0.0)
    now = heartbeats(router, 0.0, int(router.config.iwant_followup_time) + 1)
    assert router.score("liar", now=now) < 0


def test_retained_scores_of_departed_identities_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(score_module, "MAX_RETAINED_PEERS", 5)
    router = make_router()
    for i in range(50):
        router.handle(PeerConnected(peer=f"s{i}", outbound=False), now=float(i))
        router.handle(PeerDisconnected(peer=f"s{i}"), now=float(i))
    assert router._score is not None
    assert sorted(router._score._peers) == [f"s{i}" for i in range(45, 50)]
    router.handle(PeerConnected(peer="s47", outbound=False), now=60.0)  # back: no longer retained
    assert "s47" not in router._score._retained
    heartbeats(router, 60.0, 1)
    assert router._score._peers["s47"].connected


def test_retained_scores_expire_after_retain_score() -> None:
    router = make_router(retain_score=10.0)
    router.handle(PeerConnected(peer="p", outbound=False), now=0.0)
    router.handle(PeerDisconnected(peer="p"), now=0.0)
    heartbeats(router, 0.0, 5)
    assert router._score is not None and "p" in router._score._peers
    heartbeats(router, 5.0, 10)
    assert "p" not in router._score._peers and not router._score._retained


# --- all together -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scoring", [True, False])
def test_a_peer_that_did_everything_leaves_nothing_behind(scoring: bool) -> None:
    router = make_router(scoring=scoring)
    for peer in ("busy", "other"):
        router.handle(PeerConnected(peer=peer, outbound=False), now=0.0)
        subs = tuple(SubOpts(subscribe=True, topic=t) for t in (TOPIC, "elsewhere", "third"))
        router.handle(RpcReceived(peer=peer, rpc=rpc(subscriptions=subs)), now=0.0)
    router.handle(Publish(topic="elsewhere", data=b"fanout"), now=0.0)  # "busy" may enter the fanout
    big = bytes(2048)
    mid = message_id(big)
    router.handle(RpcReceived(peer="other", rpc=rpc(publish=(PubMessage(topic=TOPIC, data=big),))), now=0.1)
    everything = ControlMessage(
        graft=(Graft(topic=TOPIC),),
        ihave=(IHave(topic=TOPIC, message_ids=(b"\x02" * 32,)),),
        iwant=(IWant(message_ids=(mid,)),),
        idontwant=(IDontWant(message_ids=(b"\x03" * 32,)),),
    )
    router.handle(RpcReceived(peer="busy", rpc=RPC(control=everything)), now=0.2)
    assert {"peers", "topic_peers", "mesh", "dont_send", "promises", "iwant_counts"} <= peer_footprint(
        router, "busy"
    )
    router.handle(PeerDisconnected(peer="busy"), now=0.3)
    now = heartbeats(router, 0.3, router.config.mcache_len + int(router.config.iwant_followup_time) + 1)
    assert peer_footprint(router, "busy") == set()
    assert router.topic_peers(TOPIC) == {"other"}
    assert router.backoff_until(TOPIC, "busy") is None or router.backoff_until(TOPIC, "busy") > now - 1
