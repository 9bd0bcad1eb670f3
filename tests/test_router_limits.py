"""Per-peer rate limits in the gossip router: a token bucket for messages and one for control entries.

The bucket alone, then real routers (``tests.test_router.Net``): a peer over its rate loses what is
over, counted by ``DropReason``; the others and the next second are unaffected; the defaults leave
honest traffic alone (the small simulation in ``tests/test_choke.py`` checks the counts stay at zero).
"""

from __future__ import annotations

import pytest

from meshchat.gossip import DropReason, GossipConfig, RpcReceived
from meshchat.gossip.messages import RPC, ControlMessage, IHave, IWant, PubMessage
from meshchat.gossip.ratelimit import TokenBucket
from tests.test_router import TOPIC, full_mesh


def test_bucket_starts_full_refills_at_its_rate_and_never_exceeds_its_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=5, now=0.0)
    assert bucket.take(3, 0.0) == 3
    assert bucket.take(3, 0.0) == 2  # only two left: a partial grant
    assert bucket.take(1, 0.0) == 0
    assert bucket.take(1, 0.05) == 0  # half a token
    assert bucket.take(1, 0.1) == 1
    assert bucket.tokens(100.0) == 5  # capped at the burst however long it rests
    assert bucket.take(5, 100.0) == 5
    assert bucket.take(1, 99.0) == 0  # time going backwards adds nothing


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0.0, burst=5, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1.0, burst=0, now=0.0)
    with pytest.raises(ValueError, match="rate"):
        GossipConfig(max_messages_per_second=0)
    with pytest.raises(ValueError, match="burst"):
        GossipConfig(control_burst=0)


def messages(count: int, tag: bytes) -> tuple[PubMessage, ...]:
    return tuple(PubMessage(topic=TOPIC, data=tag + i.to_bytes(4, "big")) for i in range(count))


def test_messages_over_a_peers_rate_are_dropped_and_counted_and_it_recovers() -> None:
    config = GossipConfig(max_messages_per_second=10.0, message_burst=20)
    net = full_mesh(["a", "flooder", "honest"], config=config)
    net.input("a", RpcReceived(peer="flooder", rpc=RPC(publish=messages(50, b"f"))))
    stats = net.routers["a"].statistics()
    assert stats.drops[DropReason.MESSAGE_RATE_LIMIT] == 30
    assert stats.delivered == 20  # the first 20 (the burst) went through
    net.input("a", RpcReceived(peer="honest", rpc=RPC(publish=messages(5, b"h"))))  # its own bucket
    assert net.routers["a"].statistics().delivered == 25
    net.now += 1.0  # ten more tokens
    net.input("a", RpcReceived(peer="flooder", rpc=RPC(publish=messages(12, b"g"))))
    stats = net.routers["a"].statistics()
    assert stats.delivered == 35
    assert stats.drops[DropReason.MESSAGE_RATE_LIMIT] == 32


def test_control_over_a_peers_rate_is_dropped_whole_and_counted() -> None:
    config = GossipConfig(max_control_per_second=5.0, control_burst=10)
    net = full_mesh(["a", "b"], config=config)
    iwants = tuple(IWant(message_ids=(bytes([i]) * 32,)) for i in range(8))
    net.input("a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(iwant=iwants))))
    assert net.routers["a"].statistics().drops[DropReason.CONTROL_RATE_LIMIT] == 0
    ihaves = tuple(IHave(topic=TOPIC, message_ids=(bytes([i]) * 32,)) for i in range(4))
    before = net.routers["a"].statistics().drops[DropReason.IHAVE_LIMIT]
    net.input("a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(ihave=ihaves))))
    stats = net.routers["a"].statistics()
    assert stats.drops[DropReason.CONTROL_RATE_LIMIT] == 4  # 8 + 4 > 10: the whole control part
    assert stats.drops[DropReason.IHAVE_LIMIT] == before  # never reached the IHAVE handling
    net.now += 2.0
    net.input("a", RpcReceived(peer="b", rpc=RPC(control=ControlMessage(ihave=ihaves))))
    assert net.routers["a"].statistics().drops[DropReason.CONTROL_RATE_LIMIT] == 4


def test_defaults_are_far_above_honest_rates() -> None:
    config = GossipConfig()
    # The 10 messages/s broadcast benchmark, a full IWANT answer in one RPC, one RPC of control.
    assert config.max_messages_per_second >= 100 * 10
    assert config.message_burst >= config.max_ihave_length
    assert config.control_burst >= 5000
