"""The sans-IO cores of ``meshchat.gossip.keeper``: redial below a floor, keepalive pings and stalls."""

from __future__ import annotations

import random

import pytest

from meshchat.gossip import keeper
from meshchat.gossip.keeper import (
    DIAL_PENDING,
    ConnectionKeeper,
    Keepalive,
    KeepaliveConfig,
    KeeperConfig,
)
from meshchat.sim import defence


def test_the_simulator_runs_the_very_same_classes() -> None:
    assert defence.ConnectionKeeper is keeper.ConnectionKeeper
    assert defence.KeeperConfig is keeper.KeeperConfig
    assert defence.KeeperStep is keeper.KeeperStep


def test_keeper_is_quiet_at_or_above_the_floor() -> None:
    keeper = ConnectionKeeper(
        KeeperConfig(floor=2, target=3), rng=random.Random(1), addresses=["a", "b", "c"]
    )
    assert keeper.tick(now=0.0, connected=["a", "b"]).dial == ()


def test_keeper_dials_up_to_the_target_then_asks_for_a_lookup() -> None:
    keeper = ConnectionKeeper(KeeperConfig(floor=2, target=4), rng=random.Random(1), addresses=["a", "b"])
    step = keeper.tick(now=0.0, connected=["x"])
    assert sorted(step.dial) == ["a", "b"]
    assert step.lookup  # it wanted three and knew two
    # the dials are pending: no second dial of them, no new dial while pending fills the target
    again = keeper.tick(now=1.0, connected=["x"])
    assert again.dial == ()
    # a failed dial is retried only after retry_after, not after the pending window
    later = keeper.tick(now=DIAL_PENDING + 1.0, connected=["x"])
    assert later.dial == () and later.lookup
    keeper.learn(["c", "d"])
    assert sorted(keeper.tick(now=DIAL_PENDING + 2.0, connected=["x"]).dial) == ["c", "d"]


def test_keeper_book_is_bounded() -> None:
    keeper = ConnectionKeeper(KeeperConfig(floor=1, target=2, book_size=8), rng=random.Random(1))
    keeper.learn(f"p{i}" for i in range(1000))
    assert keeper.known() == 8


@pytest.mark.parametrize(("floor", "target"), [(0, 1), (3, 2)])
def test_keeper_config_is_checked(floor: int, target: int) -> None:
    with pytest.raises(ValueError, match="floor"):
        KeeperConfig(floor=floor, target=target)


def test_keepalive_pings_a_quiet_peer_once_and_closes_it_after_the_timeout() -> None:
    alive = Keepalive(KeepaliveConfig(idle=1.0, timeout=2.0))
    heard = {"a": 0.0, "b": 0.0}
    assert alive.next_deadline(heard) == 1.0
    assert alive.tick(now=0.5, heard=heard).ping == ()
    heard["b"] = 0.9  # b keeps talking
    step = alive.tick(now=1.0, heard=heard)
    assert step.ping == ("a",) and step.close == ()
    assert alive.next_deadline(heard) == pytest.approx(1.9)  # b's idle time
    assert alive.tick(now=1.5, heard={"a": 0.0, "b": 1.4}).ping == ()  # a pinged already
    step = alive.tick(now=3.0, heard={"a": 0.0, "b": 2.9})
    assert step.close == ("a",)
    assert alive.notice_after() == 3.0


def test_keepalive_an_answer_or_any_bytes_keep_a_peer() -> None:
    alive = Keepalive(KeepaliveConfig(idle=1.0, timeout=2.0))
    assert alive.tick(now=1.0, heard={"a": 0.0, "b": 0.0}).ping == ("a", "b")
    alive.answered("a", now=1.2)
    step = alive.tick(now=2.1, heard={"a": 0.0, "b": 1.5})  # b sent something after the ping
    assert step == type(step)()  # nothing to do: a answered at 1.2, b spoke at 1.5
    assert alive.next_deadline({"a": 0.0, "b": 1.5}) == pytest.approx(2.2)
    assert alive.tick(now=2.2, heard={"a": 0.0, "b": 1.5}).ping == ("a",)  # quiet again since 1.2


def test_keepalive_forgets_peers_that_left() -> None:
    alive = Keepalive(KeepaliveConfig(idle=1.0, timeout=1.0))
    for i in range(100):
        alive.tick(now=float(i), heard={f"p{i}": float(i) - 1.0})  # each pinged, then gone
        alive.answered(f"p{i}", now=float(i))
    assert alive.tick(now=1000.0, heard={}).close == ()
    assert alive.next_deadline({}) is None
    assert len(alive._pinged) + len(alive._answered) <= 1


@pytest.mark.parametrize(("idle", "timeout"), [(0.0, 1.0), (1.0, -1.0)])
def test_keepalive_config_is_checked(idle: float, timeout: float) -> None:
    with pytest.raises(ValueError, match="idle"):
        KeepaliveConfig(idle=idle, timeout=timeout)
