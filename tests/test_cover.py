"""Cover traffic (``meshchat.store.cover``): dummies at a constant mean rate, shaped exactly like a real
short chat (length, kind, field sizes, expiry, a tag on its own inbox shard), discarded unread and
counted by whoever receives them; and a real node with ``cover_interval`` publishing them to a relay."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
import trio
from store_harness import Harness
from test_metadata import View, tap_gossip
from typer.testing import CliRunner

from meshchat.cli import app
from meshchat.crypto import INBOX_SHARDS, inbox_topic
from meshchat.identity import Identity
from meshchat.node import Node
from meshchat.store.cover import (
    COVER_BUCKET,
    MAX_CATCH_UP,
    CoverConfig,
    CoverTraffic,
    PublishCover,
)
from meshchat.store.reasons import DiscardReason
from meshchat.wire import PAD_BUCKETS, EnvelopeKind, decode_envelope

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 60.0
START = 1_800_000_000.0


def core(interval: float, seed: int = 1, now: float = 0.0) -> CoverTraffic:
    rng = random.Random(seed)
    return CoverTraffic(CoverConfig(interval=interval), now=now, rng=rng, random_bytes=rng.randbytes)


def run_for(cover: CoverTraffic, seconds: float) -> list[tuple[float, PublishCover]]:
    """Fire the core's timer at each of its deadlines up to ``seconds`` (a punctual driver)."""
    made: list[tuple[float, PublishCover]] = []
    for _ in range(1_000_000):
        due = cover.next_deadline()
        if due > seconds:
            return made
        made.extend((due, action) for action in cover.on_timer(now=due, wall_now=START + due))
    raise AssertionError("the schedule did not move on")


def test_dummies_come_at_the_configured_mean_rate_with_exponential_gaps() -> None:
    cover = core(interval=10.0)
    made = run_for(cover, 20_000.0)
    # Poisson with mean 2,000: sd 45, so +-10 % is 4.5 sd (and the seed is fixed: no flakiness).
    assert 1_800 <= len(made) <= 2_200
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(made)]
    assert statistics.mean(gaps) == pytest.approx(10.0, rel=0.1)
    # Exponential gaps: the standard deviation equals the mean (a fixed period would give 0).
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.15)
    stats = cover.statistics()
    assert stats.sent == len(made) and stats.skipped == 0
    assert stats.bytes_sent == sum(len(a.envelope) for _, a in made)


def test_dummy_tags_spread_over_every_inbox_shard() -> None:
    made = run_for(core(interval=1.0, seed=2), 3_000.0)
    shards = {a.topic for _, a in made}
    assert len(shards) == INBOX_SHARDS  # 3,000 draws over 64 shards: all hit
    for _, action in made[:200]:
        assert action.topic == inbox_topic(decode_envelope(action.envelope).inbox_tag)


def test_a_late_timer_publishes_at_most_a_few_and_counts_the_rest_skipped() -> None:
    cover = core(interval=1.0)
    actions = cover.on_timer(now=3_600.0, wall_now=START + 3_600)  # an hour asleep
    assert len(actions) == MAX_CATCH_UP
    stats = cover.statistics()
    assert stats.sent == MAX_CATCH_UP and stats.skipped > 3_000
    assert cover.next_deadline() > 3_600.0  # the schedule starts again from now


def test_nothing_is_due_before_the_deadline_and_bad_configs_are_refused() -> None:
    cover = core(interval=5.0, now=100.0)
    assert cover.next_deadline() > 100.0
    assert cover.on_timer(now=cover.next_deadline() - 1e-6, wall_now=START) == []
    with pytest.raises(ValueError, match="interval"):
        CoverConfig(interval=0.0)
    with pytest.raises(ValueError, match="ttl"):
        CoverConfig(interval=1.0, ttl=0)


def real_chats(bodies: list[bytes]) -> list[bytes]:
    """Envelopes of real chats (in a session, as ``Node.send`` makes them) from Alice to Bob."""
    h = Harness()
    h.add_user("alice")
    h.add_user("bob")
    h.connect("alice")
    h.connect("bob")
    envelopes = []
    for body in bodies:
        mid = h.send("alice", "bob", body)
        h.settle()
        record = h.users["alice"].messenger.status(mid)
        assert record is not None
        envelopes.append(record.envelope)
    assert [r.message.body for r in h.users["bob"].received] == bodies
    return envelopes


def test_a_dummy_is_shaped_exactly_like_a_real_short_chat() -> None:
    """Everything a relay can read: length, kind, tag, expiry, key and nonce sizes, topic."""
    chats = real_chats([b"hi", "Привет, как дела?".encode(), b"x" * 300])
    cover = core(interval=1.0)
    dummies = [cover.dummy(wall_now=START) for _ in range(20)]
    assert COVER_BUCKET in PAD_BUCKETS
    assert {len(d.envelope) for d in dummies} == {len(c) for c in chats}  # one length for all
    real = decode_envelope(chats[0])
    for dummy in dummies:
        fake = decode_envelope(dummy.envelope)
        assert fake.kind is real.kind is EnvelopeKind.SEALED
        assert len(fake.inbox_tag) == len(real.inbox_tag)
        assert len(fake.ephemeral_key) == len(real.ephemeral_key)
        assert len(fake.nonce) == len(real.nonce)
        assert len(fake.ciphertext) == len(real.ciphertext)
        assert fake.expiry - START == real.expiry - START == CoverConfig(interval=1.0).ttl
        assert dummy.topic == inbox_topic(fake.inbox_tag)
    # Fresh randomness everywhere: no two dummies share a tag, key or nonce.
    assert len({decode_envelope(d.envelope).inbox_tag for d in dummies}) == len(dummies)
    assert len({decode_envelope(d.envelope).ephemeral_key for d in dummies}) == len(dummies)


def test_a_peer_discards_dummies_unread_and_counts_them_as_not_its_own() -> None:
    h = Harness()
    bob = h.add_user("bob")
    dummies = [core(interval=1.0, seed=s).dummy(wall_now=h.now).envelope for s in range(10)]
    actions = bob.messenger.receive(dummies, wall_now=h.now)
    assert actions == []
    stats = bob.messenger.statistics()
    assert stats.discarded.get(DiscardReason.NOT_OURS) == 10
    assert stats.rejected == {} and stats.received == 0


async def test_a_node_with_cover_on_publishes_dummies_and_a_relay_discards_them_counted() -> None:
    interval = 0.2
    async with (
        Node.open(identity=Identity(b"\x31" * 32), listen=LOCAL, dht=False, relay_inbox_shards=True) as relay,
        Node.open(identity=Identity(b"\x32" * 32), listen=LOCAL, dht=False, cover_interval=interval) as node,
    ):
        assert relay.cover_statistics() is None
        carried = tap_gossip(relay, View())  # every inbox envelope the relay receives
        await node.connect(relay.listen_addrs[0])
        # The relay listens on every shard; wait until the node's router knows it, then for dummies.
        with trio.fail_after(WAIT):
            await node.wait_for(
                lambda: relay.peer_id in node.driver.router.topic_peers(inbox_topic(bytes(16)))
            )
        started = trio.current_time()
        with trio.fail_after(WAIT):
            await relay.wait_for(
                lambda: relay.store_statistics().discarded.get(DiscardReason.NOT_OURS, 0) >= 15
            )
        elapsed = trio.current_time() - started
        stats = node.cover_statistics()
        assert stats is not None and stats.sent >= 15
        # Not a burst: no more than a generous multiple of the rate (a loaded machine runs late, not early).
        assert stats.sent <= 3 * (elapsed + 1.0) / interval + MAX_CATCH_UP
        received = relay.store_statistics()
        assert received.received == 0 and received.rejected == {}
        assert relay.inbox() == []
        # What the relay got: each one a well-formed sealed envelope of a real short chat's length.
        chat = decode_envelope(real_chats([b"hello"])[0])
        assert len(carried) >= 15
        for envelope in carried:
            fake = decode_envelope(envelope)
            assert fake.kind is chat.kind and len(fake.ciphertext) == len(chat.ciphertext)
        assert {len(e) for e in carried} == {len(real_chats([b"hello"])[0])}


def test_the_node_command_takes_a_cover_interval() -> None:
    result = CliRunner().invoke(app, ["node", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and "--cover-interval" in result.output
    result = CliRunner().invoke(app, ["node", "--cover-interval", "0.01"])
    assert result.exit_code != 0  # below MIN_COVER_INTERVAL: refused before anything starts
