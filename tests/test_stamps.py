"""Stamps for strangers (issue 18): a proof of work bound to one envelope (and so to its recipient's
tag), minted by whoever writes to someone who never answered, checked in microseconds by the
recipient and by mailboxes; contacts and group members need none. Plus the mailboxes' per-peer and
per-tag store rate limits. Costs here are low (8-12 bits) so the tests stay fast."""

from __future__ import annotations

import random
from pathlib import Path

import msgpack
import nacl.utils
import pytest
import trio
from conftest import make_profile
from store_harness import Harness

from meshchat.contacts import Contacts
from meshchat.crypto import epoch_of, inbox_tag
from meshchat.crypto.stamps import (
    DEFAULT_STAMP_COST,
    MAX_STAMP_COST,
    envelope_stamp_bits,
    mint_stamp,
    stamp_bits,
    stamp_envelope,
    verify_stamp,
)
from meshchat.errors import BadInvite, DecodeError
from meshchat.identity import Identity, PublicIdentity
from meshchat.inbox import DirectMessage
from meshchat.node import Node
from meshchat.sessions.prekeys import Prekeys
from meshchat.store.dropped import DROPPED_PREFIX
from meshchat.store.mailbox import MAX_RATE_KEYS, MailboxCore, MailboxLimits, MailboxRefusal
from meshchat.store.messenger import Messenger, StoreConfig
from meshchat.store.protocol import PrekeysHeld, PrekeysPut, StoreCode, Stored, StoreRequest
from meshchat.store.rate import TokenBuckets
from meshchat.store.reasons import DiscardReason
from meshchat.store.storage import MemoryStorage, OutboxStatus
from meshchat.wire import Envelope, EnvelopeKind, Invite, decode_envelope, encode_envelope
from meshchat.wire.envelope import MAX_STAMP_SIZE, encode_fields, unstamped, with_stamp

COST = 10
NOW = 1_800_000_000.0
LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 60.0


def envelope(
    tag: bytes = b"t" * 16, ciphertext: bytes = b"c" * 300, kind: EnvelopeKind = EnvelopeKind.SEALED
) -> bytes:
    return encode_fields(
        kind=kind,
        inbox_tag=tag,
        expiry=int(NOW) + 3600,
        ephemeral_key=b"k" * 32,
        nonce=b"n" * 24,
        ciphertext=ciphertext,
    )


# --- the stamp itself -------------------------------------------------------------------------------


def test_a_stamp_verifies_for_its_envelope_and_cost_only() -> None:
    data = envelope()
    stamp = mint_stamp(data, COST)
    bits = stamp_bits(data, stamp)
    assert bits >= COST and verify_stamp(data, stamp, COST)
    assert not verify_stamp(data, stamp, bits + 1)  # the cost asked is what counts
    assert not verify_stamp(envelope(tag=b"u" * 16), stamp, COST)  # another recipient's tag
    assert not verify_stamp(envelope(ciphertext=b"d" * 300), stamp, COST)  # another message
    assert not verify_stamp(data, stamp[:-1], COST)  # a stamp of the wrong size is worth nothing
    assert verify_stamp(data, b"", 0)  # cost 0 asks for nothing
    with pytest.raises(ValueError):
        mint_stamp(data, MAX_STAMP_COST + 1)


def test_a_stamp_travels_in_the_envelope_and_moving_it_breaks_it() -> None:
    data = envelope()
    stamped = stamp_envelope(data, COST)
    decoded = decode_envelope(stamped)
    assert envelope_stamp_bits(decoded) >= COST and unstamped(decoded) == data
    assert encode_envelope(decoded) == stamped  # one envelope, one byte form
    other = decode_envelope(envelope(tag=b"v" * 16))
    assert envelope_stamp_bits(decode_envelope(with_stamp(other, decoded.stamp))) < COST


def test_an_unstamped_envelope_is_byte_identical_to_the_format_before_stamps() -> None:
    data = envelope()
    before = b"\x01" + msgpack.packb(
        {1: 1, 2: b"t" * 16, 3: int(NOW) + 3600, 4: b"k" * 32, 5: b"n" * 24, 6: b"c" * 300}, use_bin_type=True
    )
    assert data == before
    decoded = decode_envelope(data)
    assert decoded.stamp == b"" and encode_envelope(decoded) == data


@pytest.mark.parametrize(
    "stamp",
    [b"", "text", 7, b"s" * (MAX_STAMP_SIZE + 1)],
    ids=["empty", "text", "int", "too-long"],
)
def test_the_decoder_refuses_a_bad_stamp_field_with_a_typed_error(stamp: object) -> None:
    fields = {1: 1, 2: b"t" * 16, 3: int(NOW), 4: b"k" * 32, 5: b"n" * 24, 6: b"c" * 300, 7: stamp}
    with pytest.raises(DecodeError):
        decode_envelope(b"\x01" + msgpack.packb(fields, use_bin_type=True))
    with pytest.raises(DecodeError):
        decode_envelope(b"\x01" + msgpack.packb({**fields, 8: b"x"}, use_bin_type=True))


def test_an_envelope_refuses_a_stamp_out_of_bounds() -> None:
    good = decode_envelope(envelope())
    with pytest.raises(DecodeError):
        Envelope(
            kind=good.kind,
            inbox_tag=good.inbox_tag,
            expiry=good.expiry,
            ephemeral_key=good.ephemeral_key,
            nonce=good.nonce,
            ciphertext=good.ciphertext,
            stamp=b"s" * (MAX_STAMP_SIZE + 1),
        )


def test_the_invite_publishes_the_stamp_cost_and_leaves_it_out_by_default() -> None:
    alice = Identity(b"\x41" * 32)
    plain = Invite.create(alice, name="Alice")
    assert plain.stamp_cost is None and Invite.from_text(plain.to_text()).stamp_cost is None
    asked = Invite.create(alice, name="Alice", stamp_cost=22)
    assert Invite.from_text(asked.to_text()).stamp_cost == 22
    assert len(asked.to_text()) > len(plain.to_text())
    for bad in (-1, MAX_STAMP_COST + 1):
        with pytest.raises(BadInvite):
            Invite.create(alice, name="Alice", stamp_cost=bad)


# --- the store core: recipients and senders -------------------------------------------------------------


def stamping_user(h: Harness, name: str, known: set[bytes], cost: int = COST) -> None:
    """``name``'s messenger with stamps on: ``known`` as the node's contacts and group members."""
    user = h.add_user(name)
    user.messenger = Messenger(
        user.identity,
        user.storage,
        config=StoreConfig(retry_initial=10.0, sync_interval=60.0, stamp_cost=cost),
        rng=random.Random(3),
        random_bytes=h._random_bytes,
        wall_now=h.now,
        known=known.__contains__,
    )


def test_a_strangers_chat_without_a_stamp_is_dropped_counted_and_never_receipted() -> None:
    h = Harness()
    h.add_user("mallory")  # stamps off: mints nothing
    stamping_user(h, "bob", set())
    spam = h.send("mallory", "bob", b"buy now")
    h.settle()
    bob = h.users["bob"]
    assert bob.received == []
    stats = bob.messenger.statistics()
    assert stats.unstamped == 1 and stats.discarded[DiscardReason.UNSTAMPED] == 1
    assert bob.storage.seen([spam]) == {spam}  # not opened again
    assert bob.storage.state_get(DROPPED_PREFIX + spam) is not None  # never receipted, even later
    h.advance(60)  # mallory retries: a duplicate, still nothing
    assert bob.received == [] and bob.messenger.statistics().unstamped == 1
    assert h.users["mallory"].messenger.status(spam).status is OutboxStatus.RELAYED  # type: ignore[union-attr]


def test_a_contact_needs_no_stamp() -> None:
    h = Harness()
    carol = h.add_user("carol")  # stamps off: mints nothing
    stamping_user(h, "bob", {carol.identity.public.ed25519})
    hello = h.send("carol", "bob", b"hi, it's carol")
    h.settle()
    assert [r.message.body for r in h.users["bob"].received] == [b"hi, it's carol"]
    assert carol.messenger.status(hello).status is OutboxStatus.DELIVERED  # type: ignore[union-attr]
    assert h.users["bob"].messenger.statistics().unstamped == 0


def test_a_stranger_stamps_until_answered_and_is_let_in() -> None:
    h = Harness()
    stamping_user(h, "alice", set())
    stamping_user(h, "bob", set())
    alice, bob = h.users["alice"], h.users["bob"]
    alice.messenger.set_stamp_cost(bob.identity.public, COST + 1)  # what bob's invite asks
    first = h.send("alice", "bob", b"hello, we met at the market")
    record = alice.messenger.status(first)
    assert record is not None and envelope_stamp_bits(decode_envelope(record.envelope)) >= COST + 1
    h.settle()
    assert [r.message.body for r in bob.received] == [b"hello, we met at the market"]
    assert alice.messenger.status(first).status is OutboxStatus.DELIVERED  # type: ignore[union-attr]
    assert alice.messenger.statistics().stamps_minted == 1
    # Delivered: she need not stamp again; and bob, who accepted her chat, takes unstamped ones.
    second = h.send("alice", "bob", b"and again")
    assert decode_envelope(alice.messenger.status(second).envelope).stamp == b""  # type: ignore[union-attr]
    h.settle()
    assert [r.message.body for r in bob.received][-1] == b"and again"
    assert alice.messenger.statistics().stamps_minted == 1
    assert bob.messenger.statistics().unstamped == 0
    # Bob answers without a stamp (he heard from her), and she takes it (she wrote to him first).
    h.send("bob", "alice", b"hello alice")
    h.settle()
    assert [r.message.body for r in alice.received] == [b"hello alice"]
    assert bob.messenger.statistics().stamps_minted == 0  # he had heard from her


def test_a_stamp_below_the_recipients_cost_does_not_let_a_stranger_in() -> None:
    h = Harness()
    stamping_user(h, "alice", set(), cost=4)
    stamping_user(h, "bob", set(), cost=16)
    h.users["alice"].messenger.set_stamp_cost(h.users["bob"].identity.public, 4)  # an old invite
    h.send("alice", "bob", b"cheap")
    h.settle()
    assert h.users["bob"].received == [] and h.users["bob"].messenger.statistics().unstamped == 1


# --- mailboxes ------------------------------------------------------------------------------------------


OWNER = Identity(b"\x01" * 32).public
FRIEND = Identity(b"\x02" * 32).public
STRANGER = Identity(b"\x03" * 32).public


def tag_of(who: PublicIdentity) -> bytes:
    return inbox_tag(who, epoch_of(NOW))


def store(core: MailboxCore, peer: str, data: bytes, now: float = NOW) -> StoreCode:
    answer = core.handle(peer, StoreRequest(envelopes=(data,)), wall_now=now)
    assert isinstance(answer, Stored)
    return answer.results[0].code


def test_a_mailbox_may_ask_strangers_for_a_stamp() -> None:
    core = MailboxCore(MemoryStorage(), MailboxLimits(stamp_cost=COST), owner=OWNER)
    core.set_friends([FRIEND])
    someone = tag_of(Identity(b"\x04" * 32).public)
    bare = envelope(tag=someone)
    assert store(core, STRANGER.peer_id, bare) is StoreCode.PEER_QUOTA  # transient: not "failed"
    assert core.statistics().refused == {MailboxRefusal.NO_STAMP: 1}
    assert store(core, STRANGER.peer_id, stamp_envelope(bare, COST)) is StoreCode.STORED
    # For the owner or a friend, or from a friend, or a group's envelope: no stamp asked.
    assert store(core, STRANGER.peer_id, envelope(tag=tag_of(FRIEND))) is StoreCode.STORED
    assert store(core, FRIEND.peer_id, envelope(tag=someone, ciphertext=b"e" * 300)) is StoreCode.STORED
    group = envelope(tag=b"g" * 16, kind=EnvelopeKind.GROUP)
    assert store(core, STRANGER.peer_id, group) is StoreCode.STORED
    assert core.statistics().refused == {MailboxRefusal.NO_STAMP: 1}
    assert core.statistics().stored == 4


def test_a_mailbox_without_a_stamp_cost_asks_for_none() -> None:
    core = MailboxCore(MemoryStorage(), owner=OWNER)
    assert (
        store(core, STRANGER.peer_id, envelope(tag=tag_of(Identity(b"\x05" * 32).public))) is StoreCode.STORED
    )


def test_a_mailbox_limits_the_store_rate_per_peer_and_per_tag() -> None:
    limits = MailboxLimits(peer_store_rate=1.0, peer_store_burst=3, tag_store_rate=0.5, tag_store_burst=5)
    core = MailboxCore(MemoryStorage(), limits)
    rng = random.Random(5)
    peer = STRANGER.peer_id
    codes = [store(core, peer, envelope(ciphertext=rng.randbytes(300))) for _ in range(4)]
    assert codes == [StoreCode.STORED] * 3 + [StoreCode.PEER_QUOTA]
    assert core.statistics().refused == {MailboxRefusal.PEER_RATE: 1}
    assert store(core, peer, envelope(ciphertext=rng.randbytes(300)), now=NOW + 1.0) is StoreCode.STORED
    # Other peers, one tag: its bucket (5 - 3 + 0.5 refilled - 1 = 1.5 left) runs out.
    others = [Identity(bytes([10 + i]) * 32).public.peer_id for i in range(3)]
    codes = [store(core, p, envelope(ciphertext=rng.randbytes(300)), now=NOW + 1.0) for p in others]
    assert codes == [StoreCode.STORED, StoreCode.TAG_QUOTA, StoreCode.TAG_QUOTA]
    assert core.statistics().refused == {MailboxRefusal.PEER_RATE: 1, MailboxRefusal.TAG_RATE: 2}
    assert core.statistics().stored == 5


def test_token_buckets_stay_bounded_and_forget_only_what_changes_nothing() -> None:
    buckets = TokenBuckets(rate=1.0, burst=2, max_keys=3)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [True, True, False]
    for key in ("b", "c", "d", "e"):
        buckets.take(key, 0.0)
        assert len(buckets) <= 3
    assert MAX_RATE_KEYS > 0
    # "a" refilled by now: forgetting it gives it the full bucket it had anyway.
    assert buckets.take("a", 10.0) and buckets.take("a", 10.0) and not buckets.take("a", 10.0)


def test_the_default_cost_is_a_fraction_of_a_second_and_bounded() -> None:
    assert 16 <= DEFAULT_STAMP_COST <= 22 < MAX_STAMP_COST


# --- two real nodes ------------------------------------------------------------------------------------

FAST = StoreConfig(retry_initial=0.5, retry_max=2.0, stamp_cost=COST)


async def next_direct(node: Node) -> DirectMessage:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, DirectMessage):
                return event
    raise AssertionError("unreachable")


async def test_two_nodes_a_stranger_without_a_stamp_is_dropped_one_with_a_stamp_and_a_contact_get_in(
    tmp_path: Path,
) -> None:
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    carol = Identity(b"\x63" * 32)
    Contacts(bob_dir).add(Invite.create(carol, name="Carol").to_text())  # bob's contact
    bob_invite = Invite.create(bob_id, name="Bob", stamp_cost=COST).to_text()
    async with (
        Node.open(bob_dir, listen=LOCAL, store_config=FAST, dht=False) as bob,
        Node.open(alice_dir, listen=LOCAL, store_config=FAST, dht=False) as alice,
        Node.open(identity=Identity(b"\x6d" * 32), listen=LOCAL, store_config=FAST, dht=False) as mallory,
        Node.open(identity=carol, listen=LOCAL, store_config=FAST, dht=False) as carol_node,
    ):
        for node in (alice, mallory, carol_node):
            await node.connect(bob.listen_addrs[0])
        # Mallory (a bare identity: stamps off, so she mints none) is a stranger to Bob: dropped.
        spam = await mallory.send(bob_id.public, "unstamped spam")
        with trio.fail_after(WAIT):
            await bob.wait_for(lambda: bob.store_statistics().unstamped >= 1)
        assert bob.inbox() == [] and spam.status is not OutboxStatus.DELIVERED
        # Alice, a stranger too, has Bob's invite: she stamps at the cost it asks and gets in.
        alice.contacts.add(bob_invite)
        hello = await alice.send("Bob", "hello Bob, Alice here")
        got = await next_direct(bob)
        assert got.body == b"hello Bob, Alice here"
        with trio.fail_after(WAIT):
            await hello.wait_until(OutboxStatus.DELIVERED)
        assert alice.store_statistics().stamps_minted == 1
        # Carol is Bob's contact: her unstamped chat goes straight in.
        await carol_node.send(bob_id.public, "carol, no stamp")
        got = await next_direct(bob)
        assert got.body == b"carol, no stamp"
        assert carol_node.store_statistics().stamps_minted == 0
        assert bob.store_statistics().unstamped == 1  # still only Mallory's


def test_a_chat_sealed_first_and_stamped_later_keeps_its_place_and_lets_others_pass() -> None:
    """``seal_chat`` / ``queue_sealed``: the node mints between them, off its loop; a send meanwhile
    takes the next seq, and an envelope that is not the sealed one is refused."""
    h = Harness()
    stamping_user(h, "alice", set())
    stamping_user(h, "bob", set())
    alice, bob = h.users["alice"], h.users["bob"]
    alice.messenger.set_stamp_cost(bob.identity.public, COST)  # bob's invite
    sealed = alice.messenger.seal_chat(bob.identity.public, b"first, stamped later", wall_now=h.now)
    assert alice.storage.outbox_recent(10) == []  # nothing queued yet
    (data, cost), *_ = sealed.to_mint
    assert cost == COST
    other = h.send("alice", "bob", b"second, sealed and stamped at once")
    with pytest.raises(ValueError):
        alice.messenger.queue_sealed(sealed, [stamp_envelope(envelope(), COST)], wall_now=h.now)
    record, actions = alice.messenger.queue_sealed(sealed, [stamp_envelope(data, cost)], wall_now=h.now)
    h.feed("alice", actions)
    h.settle()
    assert record.seq != alice.messenger.status(other).seq  # type: ignore[union-attr]
    assert sorted(r.message.body for r in bob.received) == [
        b"first, stamped later",
        b"second, sealed and stamped at once",
    ]
    assert alice.messenger.statistics().stamps_minted == 2
    assert [
        e.body for e in alice.storage.conversation(bob.identity.public.ed25519, before=None, limit=5)
    ] == [
        b"second, sealed and stamped at once",
        b"first, stamped later",
    ]


def test_a_mailbox_with_no_owner_asks_a_stamp_of_all_but_its_registered_owners() -> None:
    core = MailboxCore(MemoryStorage(), MailboxLimits(stamp_cost=COST))
    someone = tag_of(Identity(b"\x06" * 32).public)
    assert store(core, STRANGER.peer_id, envelope(tag=someone)) is StoreCode.PEER_QUOTA
    assert store(core, STRANGER.peer_id, stamp_envelope(envelope(tag=someone), COST)) is StoreCode.STORED
    # One who put their prekeys here (registered) stores without a stamp.
    registered = Identity(b"\x07" * 32)
    bundle = Prekeys.create(registered, wall_now=NOW, random_bytes=nacl.utils.random).bundle(
        registered, one_time=1
    )
    assert isinstance(
        core.handle(registered.public.peer_id, PrekeysPut(bundle=bundle), wall_now=NOW), PrekeysHeld
    )
    assert (
        store(core, registered.public.peer_id, envelope(tag=someone, ciphertext=b"f" * 300))
        is StoreCode.STORED
    )
    assert core.statistics().refused == {MailboxRefusal.NO_STAMP: 1}
