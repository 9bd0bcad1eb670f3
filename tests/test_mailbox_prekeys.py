"""One-time prekeys handed out by mailboxes: the ``prekeys put`` / ``prekey take`` protocol, the
mailbox's shelf (each key handed out once, bounds, rates, durability), the owner's uploads, and a
sender's first message starting from a one-time key over the real network (127.0.0.1)."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from pathlib import Path
from typing import cast

import msgpack
import nacl.utils
import pytest
import trio
from conftest import make_profile
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.crypto import open_envelope
from meshchat.errors import DecodeError
from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.net.mailbox import PREKEY_TAKE_TIMEOUT
from meshchat.node import Node
from meshchat.sessions.prekeys import OneTimeKey, PrekeyBundle, Prekeys
from meshchat.sessions.session import SESSION_SETUP
from meshchat.sessions.x3dh import InitHeader
from meshchat.store import mailbox_prekeys
from meshchat.store.encrypted import store_key
from meshchat.store.mailbox import MailboxCore, MailboxRefusal
from meshchat.store.mailbox_prekeys import (
    MAX_ONE_TIME_PER_OWNER,
    MAX_TAKES_PER_PEER,
    ONE_TIME_WINDOW,
    PREKEY_PREFIX,
    TAKE_WINDOW,
)
from meshchat.store.messenger import MessageReceived, Messenger, StoreConfig
from meshchat.store.prekey_upload import (
    HANDED_OUT_KEEP,
    PREKEY_REFRESH,
    UPLOAD_RETRY,
    UPLOAD_STATE_KEY,
    PrekeyUploads,
)
from meshchat.store.protocol import (
    ErrorCode,
    MailboxError,
    PrekeyGiven,
    PrekeysHeld,
    PrekeysPut,
    PrekeyTake,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from meshchat.store.sessions import own_bundle
from meshchat.store.sqlite import STORE_FILE, SqliteStorage
from meshchat.store.storage import MemoryStorage, OutboxStatus, Storage
from meshchat.wire import Invite

NOW = 1_800_000_000.0
BOB = Identity(b"\x02" * 32)
ALICE = Identity(b"\x01" * 32)


def _prekeys(identity: Identity = BOB) -> Prekeys:
    return Prekeys.create(identity, wall_now=NOW, random_bytes=nacl.utils.random)


def _full_bundle(identity: Identity = BOB) -> PrekeyBundle:
    return _prekeys(identity).bundle(identity, one_time=100)


def _core(storage: Storage | None = None, *, owner: Identity | None = None) -> MailboxCore:
    return MailboxCore(storage or MemoryStorage(), owner=None if owner is None else owner.public)


def _take(
    core: MailboxCore, owner: Identity, *, peer: str, wall_now: float = NOW
) -> PrekeyGiven | MailboxError:
    answer = core.handle(peer, PrekeyTake(owner=owner.public.ed25519), wall_now=wall_now)
    assert isinstance(answer, PrekeyGiven | MailboxError)
    return answer


def _spread(i: int) -> float:
    """The time of the ``i``-th take when each comes from a new peer, ten an hour: within both rates."""
    return NOW + (i // 10) * ONE_TIME_WINDOW


# --- protocol --------------------------------------------------------------------------------------


def test_prekey_requests_and_responses_round_trip() -> None:
    bundle = _full_bundle()
    one = dataclasses.replace(bundle, one_time=bundle.one_time[:1])
    for request in (PrekeysPut(bundle=bundle), PrekeyTake(owner=BOB.public.ed25519)):
        assert decode_request(encode_request(request)) == request
    for response in (
        PrekeysHeld(one_time=97, taken_through=3),
        PrekeyGiven(bundle=one),
        PrekeyGiven(bundle=dataclasses.replace(bundle, one_time=())),
        MailboxError(code=ErrorCode.TOO_MANY_TAKES, detail="slow down"),
    ):
        assert decode_response(encode_response(response)) == response


def test_malformed_prekey_messages_are_decode_errors() -> None:
    bundle = _full_bundle()

    def packed(fields: dict[int, object]) -> bytes:
        return bytes(msgpack.packb(fields, use_bin_type=True))

    bad_requests = [
        packed({0: 7, 10: b"not a bundle"}),
        packed({0: 7, 10: bundle.encode(), 11: b"x" * 32}),  # an extra key
        packed({0: 7}),
        packed({0: 8, 11: b"short"}),
        packed({0: 8, 11: "a string, not bytes"}),
        packed({0: 8, 11: b"k" * 32, 10: b""}),
    ]
    for data in bad_requests:
        with pytest.raises(DecodeError):
            decode_request(data)
    bad_responses = [
        packed({0: 8, 10: bundle.encode()}),  # a hundred one-time keys: a take gives at most one
        packed({0: 8, 10: b"\x00" * 40}),
        packed({0: 7, 7: -1, 12: 0}),
        packed({0: 7, 7: 1, 12: 2**32}),
        packed({0: 7, 7: 1}),
    ]
    for data in bad_responses:
        with pytest.raises(DecodeError):
            decode_response(data)
    with pytest.raises(ValueError, match="32 bytes"):
        PrekeyTake(owner=b"short")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), op=st.sampled_from([7, 8]))
def test_garbage_after_a_prekey_operation_never_crashes_the_decoders(data: bytes, op: int) -> None:
    for raw in (data, bytes(msgpack.packb({0: op, 10: data, 11: data}, use_bin_type=True))):
        for decode in (decode_request, decode_response):
            with contextlib.suppress(DecodeError):  # the only error allowed
                decode(raw)


# --- the mailbox's shelf -----------------------------------------------------------------------


def test_the_owner_puts_its_bundle_and_nobody_else_can() -> None:
    core = _core()
    bundle = _full_bundle()
    assert core.handle(ALICE.public.peer_id, PrekeysPut(bundle=bundle), wall_now=NOW) == MailboxError(
        code=ErrorCode.NOT_YOUR_BUNDLE, detail="the bundle is not of the key you connected with"
    )
    forged = dataclasses.replace(bundle, spk_signature=bytes(64))
    refused = core.handle(BOB.public.peer_id, PrekeysPut(bundle=forged), wall_now=NOW)
    assert isinstance(refused, MailboxError) and refused.code is ErrorCode.BAD_BUNDLE
    assert isinstance(_take(core, BOB, peer=ALICE.public.peer_id), MailboxError)
    held = core.handle(BOB.public.peer_id, PrekeysPut(bundle=bundle), wall_now=NOW)
    assert held == PrekeysHeld(one_time=100, taken_through=0)
    stats = core.statistics()
    assert stats.prekey_owners == 1
    assert stats.refused[MailboxRefusal.NOT_YOUR_BUNDLE] == 1
    assert stats.refused[MailboxRefusal.BAD_BUNDLE] == 1
    assert stats.refused[MailboxRefusal.NO_BUNDLE] == 1


def test_each_one_time_key_is_handed_out_once() -> None:
    core = _core()
    bundle = _full_bundle()
    core.handle(BOB.public.peer_id, PrekeysPut(bundle=bundle), wall_now=NOW)
    given: list[OneTimeKey] = []
    for i in range(101):
        answer = _take(core, BOB, peer=f"taker-{i}", wall_now=_spread(i))
        assert isinstance(answer, PrekeyGiven)
        answer.bundle.verify()
        assert answer.bundle.identity == BOB.public.ed25519
        given.extend(answer.bundle.one_time)
        if i == 100:
            assert answer.bundle.one_time == ()
    assert len(given) == 100
    assert {k.key_id for k in given} == {k.key_id for k in bundle.one_time}
    assert len({k.key for k in given}) == 100
    assert core.statistics().one_time_given == 100


def test_a_new_upload_never_brings_back_a_key_already_handed_out() -> None:
    core = _core()
    bundle = _full_bundle()
    core.handle(BOB.public.peer_id, PrekeysPut(bundle=bundle), wall_now=NOW)
    first = [_take(core, BOB, peer=f"t{i}") for i in range(3)]
    ids = [a.bundle.one_time[0].key_id for a in first if isinstance(a, PrekeyGiven)]
    assert ids == [k.key_id for k in bundle.one_time[:3]]
    # The owner's pool still holds them (their messages have not arrived): it uploads all 100 again.
    again = core.handle(BOB.public.peer_id, PrekeysPut(bundle=bundle), wall_now=NOW + 1)
    assert again == PrekeysHeld(one_time=97, taken_through=ids[-1])
    nxt = _take(core, BOB, peer="t-next", wall_now=NOW + 1)
    assert isinstance(nxt, PrekeyGiven)
    assert nxt.bundle.one_time[0].key_id == bundle.one_time[3].key_id


def test_takes_are_rate_limited_per_peer_and_per_owner() -> None:
    core = _core()
    core.handle(BOB.public.peer_id, PrekeysPut(bundle=_full_bundle()), wall_now=NOW)
    for _ in range(MAX_TAKES_PER_PEER):
        assert isinstance(_take(core, BOB, peer="drainer"), PrekeyGiven)
    refused = _take(core, BOB, peer="drainer", wall_now=NOW + TAKE_WINDOW - 1)
    assert isinstance(refused, MailboxError) and refused.code is ErrorCode.TOO_MANY_TAKES
    assert core.statistics().refused[MailboxRefusal.TOO_MANY_TAKES] == 1
    assert isinstance(_take(core, BOB, peer="drainer", wall_now=NOW + TAKE_WINDOW), PrekeyGiven)
    # Many fresh PeerIds: the owner's keys still go out at most MAX_ONE_TIME_PER_OWNER an hour.
    later = NOW + ONE_TIME_WINDOW
    with_key = 0
    for i in range(MAX_ONE_TIME_PER_OWNER + 5):
        answer = _take(core, BOB, peer=f"sybil-{i}", wall_now=later)
        assert isinstance(answer, PrekeyGiven)
        with_key += len(answer.bundle.one_time)
    assert with_key == MAX_ONE_TIME_PER_OWNER
    assert core.statistics().one_time_withheld == 5


def test_owners_held_are_bounded_and_strangers_fill_only_their_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailbox_prekeys, "MAX_PREKEY_OWNERS", 4)
    me = Identity(b"\x09" * 32)
    core = _core(owner=me)
    people = [Identity(bytes([20 + i]) * 32) for i in range(5)]
    answers = [
        core.handle(p.public.peer_id, PrekeysPut(bundle=_full_bundle(p)), wall_now=NOW) for p in people[:3]
    ]
    assert [type(a) for a in answers] == [PrekeysHeld, PrekeysHeld, MailboxError]  # strangers: 2 of 4
    # The owner (and contacts) still find room, up to the bound.
    assert isinstance(
        core.handle(me.public.peer_id, PrekeysPut(bundle=_full_bundle(me)), wall_now=NOW), PrekeysHeld
    )
    core.set_friends([people[3].public, people[4].public])
    assert isinstance(
        core.handle(people[3].public.peer_id, PrekeysPut(bundle=_full_bundle(people[3])), wall_now=NOW),
        PrekeysHeld,
    )
    full = core.handle(people[4].public.peer_id, PrekeysPut(bundle=_full_bundle(people[4])), wall_now=NOW)
    assert isinstance(full, MailboxError) and full.code is ErrorCode.BUNDLES_FULL
    # A known owner replaces its bundle even when full.
    assert isinstance(
        core.handle(people[0].public.peer_id, PrekeysPut(bundle=_full_bundle(people[0])), wall_now=NOW),
        PrekeysHeld,
    )
    assert core.statistics().refused[MailboxRefusal.BUNDLES_FULL] == 2


def test_stale_bundles_are_refused_and_pruned() -> None:
    core = _core()
    core.handle(BOB.public.peer_id, PrekeysPut(bundle=_full_bundle()), wall_now=NOW)
    much_later = NOW + 70 * 86400
    core.prune(wall_now=much_later)
    assert core.statistics().prekey_owners == 0
    answer = _take(core, BOB, peer="late", wall_now=much_later)
    assert isinstance(answer, MailboxError) and answer.code is ErrorCode.NO_BUNDLE
    old = core.handle(BOB.public.peer_id, PrekeysPut(bundle=_full_bundle()), wall_now=much_later)
    assert isinstance(old, MailboxError) and old.code is ErrorCode.BAD_BUNDLE


def test_what_was_handed_out_stays_handed_out_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "mailbox.db"
    bundle = _full_bundle()
    storage = SqliteStorage(path)
    core = _core(storage)
    core.handle(BOB.public.peer_id, PrekeysPut(bundle=bundle), wall_now=NOW)
    before = [_take(core, BOB, peer=f"t{i}") for i in range(2)]
    storage.close()
    storage = SqliteStorage(path)
    try:
        core = _core(storage)
        assert core.statistics().prekey_owners == 1
        after = _take(core, BOB, peer="t-after")
        assert isinstance(after, PrekeyGiven)
        given = [a.bundle.one_time[0].key_id for a in (*before, after) if isinstance(a, PrekeyGiven)]
        assert given == [k.key_id for k in bundle.one_time[:3]]
        # and the re-upload after the restart still knows what went out
        again = core.handle(BOB.public.peer_id, PrekeysPut(bundle=bundle), wall_now=NOW)
        assert again == PrekeysHeld(one_time=97, taken_through=given[-1])
    finally:
        storage.close()


# --- the owner's uploads -------------------------------------------------------------------------


def _messenger(identity: Identity, storage: Storage | None = None, seed: int = 1) -> Messenger:
    return Messenger(identity, storage or MemoryStorage(), rng=random.Random(seed), wall_now=NOW)


def _boxes() -> list[tuple[str, MailboxCore]]:
    """Two mailboxes, in PeerId order."""
    ids = sorted(Identity(bytes([40 + i]) * 32).public.peer_id for i in range(2))
    return [(peer, _core()) for peer in ids]


def _run_uploads(
    uploads: PrekeyUploads,
    owner: Identity,
    boxes: dict[str, MailboxCore],
    reachable: list[str],
    now: float = NOW,
) -> list[tuple[str, PrekeysPut]]:
    """Plan and deliver uploads until nothing more is planned; return every upload made."""
    made: list[tuple[str, PrekeysPut]] = []
    for _ in range(5):
        calls = uploads.plan(reachable, wall_now=now)
        if not calls:
            return made
        for peer, request in calls:
            answer = boxes[peer].handle(owner.public.peer_id, request, wall_now=now)
            uploads.replied(peer, request, answer, reachable=reachable, wall_now=now)
        made += calls
    raise AssertionError("uploads never settled")


def _setup_header(recipient: Identity, envelope: bytes) -> InitHeader:
    body = open_envelope(recipient, envelope, wall_now=NOW).body
    assert body[0] == SESSION_SETUP
    size = int.from_bytes(body[1:3], "big")
    return InitHeader.decode(body[3 : 3 + size])


def test_one_time_keys_go_to_one_mailbox_and_a_used_one_is_gone_everywhere() -> None:
    bob = _messenger(BOB)
    alice = _messenger(ALICE, seed=2)
    (first, box1), (second, box2) = _boxes()
    boxes = {first: box1, second: box2}
    uploads = PrekeyUploads(bob)
    made = _run_uploads(uploads, BOB, boxes, [second, first])
    assert uploads.holder == first
    assert sorted((p, len(r.bundle.one_time)) for p, r in made) == sorted([(first, 100), (second, 0)])
    assert _run_uploads(uploads, BOB, boxes, [first, second]) == []  # nothing changed: nothing sent
    # Alice takes one from each mailbox: only the holder gives a one-time key.
    assert _take(box2, BOB, peer=ALICE.public.peer_id) == PrekeyGiven(
        bundle=dataclasses.replace(made[0][1].bundle, one_time=())
    )
    given = _take(box1, BOB, peer=ALICE.public.peer_id)
    assert isinstance(given, PrekeyGiven) and len(given.bundle.one_time) == 1
    opk = given.bundle.one_time[0].key_id
    alice.set_bundle(BOB.public, given.bundle)
    envelope = alice.send(BOB.public, b"hello", wall_now=NOW)[0].envelope
    assert _setup_header(BOB, envelope).one_time_id == opk
    assert [
        a.message.body for a in bob.receive([envelope], wall_now=NOW) if isinstance(a, MessageReceived)
    ] == [b"hello"]
    assert opk not in bob.sessions.prekeys(NOW).one_time_ids
    # The pool changed: the holder gets it again (without the used key), the other needs nothing.
    again = _run_uploads(uploads, BOB, boxes, [first, second])
    assert [(p, len(r.bundle.one_time)) for p, r in again] == [(first, 99)]
    ids = set()
    for i in range(99):
        answer = _take(box1, BOB, peer=f"t{i}", wall_now=_spread(i))
        assert isinstance(answer, PrekeyGiven)
        ids |= {k.key_id for k in answer.bundle.one_time}
    assert opk not in ids and len(ids) == 99


def test_a_new_first_mailbox_takes_over_only_the_keys_never_handed_out(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "bob.db")
    try:
        bob = _messenger(BOB, storage)
        (first, box1), (second, box2) = _boxes()
        boxes = {first: box1, second: box2}
        uploads = PrekeyUploads(bob)
        _run_uploads(uploads, BOB, boxes, [second])  # only the second is reachable: it holds them
        assert uploads.holder == second
        taken = {
            k.key_id
            for i in range(5)
            for k in cast(PrekeyGiven, _take(box2, BOB, peer=f"t{i}")).bundle.one_time
        }
        # The first one comes: the second's upload is replaced first, then the first gets the rest.
        made = _run_uploads(uploads, BOB, boxes, [first, second])
        assert [(p, len(r.bundle.one_time)) for p, r in made] == [(first, 0), (second, 0), (first, 95)]
        assert uploads.holder == first and uploads.floor == max(taken)
        answer = _take(box2, BOB, peer="late")
        assert isinstance(answer, PrekeyGiven) and answer.bundle.one_time == ()
        later = set()
        for i in range(95):
            answer = _take(box1, BOB, peer=f"u{i}", wall_now=_spread(i))
            assert isinstance(answer, PrekeyGiven)
            later |= {k.key_id for k in answer.bundle.one_time}
        assert len(later) == 95 and not later & taken
        # The holder and the floor survive a restart.
        restarted = PrekeyUploads(_messenger(BOB, storage))
        assert (restarted.holder, restarted.floor) == (first, max(taken))
    finally:
        storage.close()


def test_a_refused_upload_waits_before_it_is_tried_again() -> None:
    bob = _messenger(BOB)
    (first, _), _ = _boxes()
    uploads = PrekeyUploads(bob)
    [(peer, request)] = uploads.plan([first], wall_now=NOW)
    refusal = MailboxError(code=ErrorCode.BUNDLES_FULL, detail="full")
    uploads.replied(peer, request, refusal, reachable=[first], wall_now=NOW)
    assert uploads.plan([first], wall_now=NOW + 1) == []
    assert [p for p, _ in uploads.plan([first], wall_now=NOW + UPLOAD_RETRY)] == [first]
    assert uploads.counts["refused"] == 1


# --- on the real network (127.0.0.1) ---------------------------------------------------------------

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
FAST = StoreConfig(retry_initial=0.5, sync_interval=1.0)
WAIT = 30.0


async def test_a_first_message_to_an_offline_contact_uses_a_one_time_key_from_its_mailbox(
    tmp_path: Path,
) -> None:
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    box_dir, _ = make_profile(tmp_path, "box", 9)
    with SqliteStorage(bob_dir / STORE_FILE, key=store_key(bob_id)) as storage:
        invite_bundle = own_bundle(bob_id, storage, wall_now=time.time(), random_bytes=nacl.utils.random)
    async with Node.open(box_dir, listen=LOCAL, mailbox=True, dht=False) as box:
        address = box.listen_addrs[0]
        invite = Invite.create(bob_id, name="Bob", mailboxes=[address], bundle=invite_bundle.encode())
        # Bob comes online once: his bundle with one-time keys goes to his mailbox.
        async with Node.open(bob_dir, listen=LOCAL, mailboxes=[address], store_config=FAST, dht=False) as bob:
            uploads = bob._store.prekey_uploads
            assert uploads is not None
            with trio.fail_after(WAIT):
                await bob.wait_for(lambda: uploads.counts["uploaded"] >= 1)
            assert uploads.holder == box.peer_id
            pool = set(bob._messenger.sessions.prekeys(time.time()).one_time_ids)
        assert len(pool) == 100
        stats = box.mailbox_statistics()
        assert stats is not None and stats.prekey_owners == 1
        # Bob is offline; Alice adds his invite and writes.
        async with Node.open(alice_dir, listen=LOCAL, store_config=FAST, dht=False) as alice:
            alice.contacts.add(invite.to_text())
            handle = await alice.send("Bob", "hello with a one-time key")
            with trio.fail_after(WAIT):
                await handle.wait_until(OutboxStatus.STORED)
            header = _setup_header_at(bob_id, handle.record.envelope)
        assert header.one_time_id in pool and header.spk_id == invite_bundle.spk_id
        stats = box.mailbox_statistics()
        assert stats is not None and stats.one_time_given == 1
        async with Node.open(bob_dir, listen=LOCAL, mailboxes=[address], store_config=FAST, dht=False) as bob:
            got = await _direct_messages(bob, 1)
            assert got[0].body == b"hello with a one-time key"
            assert header.one_time_id not in bob._messenger.sessions.prekeys(time.time()).one_time_ids
        held = box._messenger.storage.state_get(PREKEY_PREFIX + bob_id.public.ed25519)
        assert held is not None
        bundle, taken_through = mailbox_prekeys._read(held)
        assert header.one_time_id <= taken_through
        assert header.one_time_id not in {k.key_id for k in bundle.one_time}
        assert len(bundle.one_time) == 99


def _setup_header_at(recipient: Identity, envelope: bytes) -> InitHeader:
    body = open_envelope(recipient, envelope, wall_now=time.time()).body
    assert body[0] == SESSION_SETUP
    size = int.from_bytes(body[1:3], "big")
    return InitHeader.decode(body[3 : 3 + size])


async def _direct_messages(node: Node, count: int) -> list[DirectMessage]:
    got: list[DirectMessage] = []
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, DirectMessage):
                got.append(event)
                if len(got) == count:
                    return got
    raise AssertionError("unreachable")


def test_drained_keys_are_forgotten_after_a_while_and_the_pool_is_replenished() -> None:
    storage = MemoryStorage()
    bob = _messenger(BOB, storage)
    (first, box), _ = _boxes()
    boxes = {first: box}
    uploads = PrekeyUploads(bob)
    _run_uploads(uploads, BOB, boxes, [first])
    drained = set()
    for i in range(101):  # a stranger with many PeerIds takes them all, within the rates
        answer = _take(box, BOB, peer=f"sybil-{i}", wall_now=_spread(i))
        assert isinstance(answer, PrekeyGiven)
        drained |= {k.key_id for k in answer.bundle.one_time}
    assert len(drained) == 100
    # Nothing of Bob's changed, but the periodic upload tells him which keys went out.
    learned = _spread(100) + PREKEY_REFRESH
    [(peer, _)] = _run_uploads(uploads, BOB, boxes, [first], now=learned)
    assert peer == first
    assert set(bob.sessions.prekeys(learned).one_time_ids) == drained  # kept for their messages
    # A restart later (the watermark is on disk), just before the keep time: still kept.
    bob = _messenger(BOB, storage, seed=3)
    uploads = PrekeyUploads(bob)
    _run_uploads(uploads, BOB, boxes, [first], now=learned + HANDED_OUT_KEEP - 3600)
    assert set(bob.sessions.prekeys(learned).one_time_ids) == drained
    # Then forgotten, and the pool is topped up with new keys that go to the holder.
    later = learned + HANDED_OUT_KEEP
    made = _run_uploads(uploads, BOB, boxes, [first], now=later)
    fresh = set(bob.sessions.prekeys(later).one_time_ids)
    assert len(fresh) == 100 and not fresh & drained
    assert uploads.counts["forgotten"] == 100
    assert {k.key_id for k in made[-1][1].bundle.one_time} == fresh
    answer = _take(box, BOB, peer="newcomer", wall_now=later)
    assert isinstance(answer, PrekeyGiven) and answer.bundle.one_time[0].key_id in fresh
    # and the forgetting is on disk
    assert set(_messenger(BOB, storage, seed=4).sessions.prekeys(later).one_time_ids) == fresh


def test_only_the_devices_own_mailboxes_get_its_prekeys() -> None:
    bob = _messenger(BOB)
    (first, box1), (second, box2) = _boxes()
    uploads = PrekeyUploads(bob)
    uploads.prefer([second])
    made = _run_uploads(uploads, BOB, {first: box1, second: box2}, [first, second])
    assert [(p, len(r.bundle.one_time)) for p, r in made] == [(second, 100)]
    assert uploads.holder == second
    # A device with no mailboxes of its own uploads to none it merely meets.
    lone = PrekeyUploads(_messenger(ALICE, seed=2))
    lone.prefer([])
    assert lone.plan([first, second], wall_now=NOW) == []


def test_a_holder_gone_and_no_longer_ours_is_given_up_and_its_keys_never_uploaded_again() -> None:
    bob = _messenger(BOB)
    (first, box1), (second, box2) = _boxes()
    boxes = {first: box1, second: box2}
    uploads = PrekeyUploads(bob)
    _run_uploads(uploads, BOB, boxes, [second])
    assert uploads.holder == second
    pool = bob.sessions.prekeys(NOW).one_time_ids
    uploads.prefer([first])  # the user dropped the second mailbox; it is not reachable either
    made = _run_uploads(uploads, BOB, boxes, [first], now=NOW + 1)
    assert uploads.holder == first and uploads.floor == max(pool)
    assert [(p, len(r.bundle.one_time)) for p, r in made] == [(first, 0)]
    # Those keys are forgotten after the keep time, and new ones go to the new holder.
    later = NOW + 1 + HANDED_OUT_KEEP
    made = _run_uploads(uploads, BOB, boxes, [first], now=later)
    fresh = {k.key_id for k in made[-1][1].bundle.one_time}
    assert len(fresh) == 100 and not fresh & set(pool)


async def test_with_no_bundle_on_the_mailbox_the_first_message_starts_from_the_invites_bundle(
    tmp_path: Path,
) -> None:
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    box_dir, _ = make_profile(tmp_path, "box", 9)
    with SqliteStorage(bob_dir / STORE_FILE, key=store_key(bob_id)) as storage:
        invite_bundle = own_bundle(bob_id, storage, wall_now=time.time(), random_bytes=nacl.utils.random)
    async with Node.open(box_dir, listen=LOCAL, mailbox=True, dht=False) as box:
        # Bob never came online since he made the invite: his mailbox holds no bundle of his.
        invite = Invite.create(
            bob_id, name="Bob", mailboxes=[box.listen_addrs[0]], bundle=invite_bundle.encode()
        )
        async with Node.open(alice_dir, listen=LOCAL, store_config=FAST, dht=False) as alice:
            alice.contacts.add(invite.to_text())
            started = trio.current_time()
            handle = await alice.send("Bob", "no one-time key for this one")
            assert trio.current_time() - started < PREKEY_TAKE_TIMEOUT
            header = _setup_header_at(bob_id, handle.record.envelope)
        assert header.one_time_id == 0 and header.spk_id == invite_bundle.spk_id
        stats = box.mailbox_statistics()
        assert stats is not None and stats.refused.get(MailboxRefusal.NO_BUNDLE) == 1


def test_a_damaged_upload_record_never_lets_a_key_be_uploaded_twice() -> None:
    storage = MemoryStorage()
    bob = _messenger(BOB, storage)
    (first, box), _ = _boxes()
    uploads = PrekeyUploads(bob)
    _run_uploads(uploads, BOB, {first: box}, [first])
    pool = bob.sessions.prekeys(NOW).one_time_ids
    storage.state_put([(UPLOAD_STATE_KEY, b"\xc1 not a record")])
    uploads = PrekeyUploads(_messenger(BOB, storage, seed=5))
    other = _core()  # say the device now reaches another mailbox only
    made = _run_uploads(uploads, BOB, {first: box, "other": other}, ["other"], now=NOW + 1)
    assert uploads.floor == max(pool)
    assert [len(r.bundle.one_time) for _, r in made] == [0]
