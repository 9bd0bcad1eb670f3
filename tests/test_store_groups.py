"""What groups need from store-and-forward: control messages on the 1:1 sealed path, watched (group)
tags, shared envelopes stored on mailboxes, mailboxes holding GROUP envelopes for every member."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest

from meshchat.errors import StorageError
from meshchat.identity import Identity
from meshchat.store.encrypted import encrypt_plaintext_store, is_plaintext_store
from meshchat.store.mailbox import MailboxLimits, owned_tags
from meshchat.store.messenger import (
    CallMailbox,
    ControlReceived,
    EnvelopeRefused,
    EnvelopeStored,
    GroupEnvelopes,
    MessageReceived,
    PublishEnvelope,
    StoreProblem,
)
from meshchat.store.protocol import (
    MAX_SYNC_TAGS,
    DeleteRequest,
    ErrorCode,
    Fetched,
    FetchRequest,
    MailboxError,
    MailboxRequest,
    MailboxResponse,
    StoreCode,
    Stored,
    StoreRequest,
    Synced,
    SyncRequest,
)
from meshchat.store.reconcile import Reconciler, decode_message, encode_message
from meshchat.store.shared import MAX_SHARED_PENDING, MAX_WATCHED_TAGS
from meshchat.store.sqlite import SCHEMA_VERSION, SqliteStorage
from meshchat.store.storage import MailboxItem, MemoryStorage, OutboxStatus, SeenEntry, Storage
from meshchat.wire import EnvelopeKind, decode_envelope, message_id
from meshchat.wire.envelope import encode_fields
from tests.store_harness import Harness

# --- A. control messages ------------------------------------------------------------------------


def test_a_control_message_is_announced_kept_until_handled_and_receipted_like_a_chat() -> None:
    h = Harness()
    h.add_mailbox()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    h.connect("alice")
    h.connect("bob")
    record, actions = alice.messenger.send(
        bob.identity.public, b"invite: op set", wall_now=h.now, control=True, ref="invite-1"
    )
    h.feed("alice", actions)
    h.settle()
    assert [(c.body, c.message_id, c.sender) for c in bob.controls] == [
        (b"invite: op set", record.message_id, alice.identity.public)
    ]
    assert 0 < bob.controls[0].sent_at_ms <= int(h.now * 1000)
    assert bob.received == []  # not a chat: nothing for the app's inbox
    assert bob.storage.inbox_after(0, 10) == []
    # In the seen window (its ratchet key is used: another copy could not be opened anyway), and kept
    # until the driver says it handed it on (the harness does not: a crash would hand it on again).
    assert bob.storage.seen([record.message_id]) == {record.message_id}
    assert [c.message_id for c in bob.messenger.pending_controls()] == [record.message_id]
    assert bob.messenger.controls_handled([record.message_id]) == []
    assert bob.messenger.pending_controls() == []
    assert bob.messenger.statistics().controls == 1
    assert alice.messenger.status(record.message_id).status is OutboxStatus.DELIVERED  # type: ignore[union-attr]


def test_a_control_message_waits_on_a_mailbox_for_an_offline_recipient() -> None:
    h = Harness()
    h.add_mailbox()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    h.connect("alice")
    h.disconnect("bob")
    record, actions = alice.messenger.send(bob.identity.public, b"handout", wall_now=h.now, control=True)
    h.feed("alice", actions)
    h.settle()
    assert alice.messenger.status(record.message_id).status is OutboxStatus.STORED  # type: ignore[union-attr]
    h.connect("bob")
    h.settle()
    assert [c.body for c in bob.controls] == [b"handout"]
    h.advance(30)  # alice's quick syncs fetch the receipt bob stored for her
    assert alice.messenger.status(record.message_id).status is OutboxStatus.DELIVERED  # type: ignore[union-attr]


def test_a_control_is_announced_once_and_its_copies_re_receipted_per_interval() -> None:
    h = Harness()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    record, _ = alice.messenger.send(bob.identity.public, b"handout", wall_now=h.now, control=True)
    first = bob.messenger.receive([record.envelope], wall_now=h.now)
    kinds = [type(a).__name__ for a in first]
    assert kinds[0] == "ControlReceived"
    # The announcement precedes the receipt: a driver hands it on (and commits) before any receipt leaves.
    receipt_at = kinds.index("PublishEnvelope")
    assert kinds.index("ControlReceived") < receipt_at
    # Another copy is a duplicate (its session key is used once): not announced again, but its sender
    # gets a receipt again (the first may have been lost), at most once per RERECEIPT_INTERVAL.
    again = bob.messenger.receive([record.envelope], wall_now=h.now + 1)
    assert not any(isinstance(a, ControlReceived) for a in again)
    assert sum(isinstance(a, PublishEnvelope) for a in again) == 1
    sooner = bob.messenger.receive([record.envelope], wall_now=h.now + 2)
    assert not any(isinstance(a, PublishEnvelope) for a in sooner)  # within RERECEIPT_INTERVAL
    later = bob.messenger.receive([record.envelope], wall_now=h.now + 62)
    assert not any(isinstance(a, ControlReceived) for a in later)
    assert sum(isinstance(a, PublishEnvelope) for a in later) == 1  # re-receipted after the interval
    assert bob.messenger.statistics().controls == 1
    assert bob.messenger.statistics().discarded["duplicate"] == 3


def test_the_receipt_for_a_control_moves_the_senders_outbox_to_delivered() -> None:
    h = Harness()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    record, _ = alice.messenger.send(bob.identity.public, b"handout", wall_now=h.now, control=True)
    receipts = [
        a.envelope
        for a in bob.messenger.receive([record.envelope], wall_now=h.now)
        if isinstance(a, PublishEnvelope)
    ]
    assert len(receipts) == 1
    alice.messenger.receive(receipts, wall_now=h.now)
    assert alice.messenger.status(record.message_id).status is OutboxStatus.DELIVERED  # type: ignore[union-attr]


def test_a_forged_or_altered_control_is_rejected_and_counted_like_a_chat() -> None:
    h = Harness()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    record, _ = alice.messenger.send(bob.identity.public, b"handout", wall_now=h.now, control=True)
    altered = bytearray(record.envelope)
    altered[-20] ^= 1  # inside the ciphertext
    actions = bob.messenger.receive([bytes(altered)], wall_now=h.now)
    assert actions == []
    assert bob.messenger.statistics().rejected == {"DecryptionFailed": 1}
    assert bob.messenger.statistics().controls == 0


# --- B. watched (group) tags --------------------------------------------------------------------


def group_envelope(tag: bytes, now: float, n: int, *, ttl: int = 3600, pad: int = 16) -> bytes:
    """A GROUP envelope as the groups core seals one (the store never opens it: random bytes inside)."""
    return encode_fields(
        kind=EnvelopeKind.GROUP,
        inbox_tag=tag,
        expiry=int(now) + ttl,
        ephemeral_key=bytes([n % 256]) * 32,
        nonce=n.to_bytes(24, "big"),
        ciphertext=b"group message %d" % n + bytes(pad),
    )


def tag_of(n: int) -> bytes:
    return hashlib.blake2b(b"group tag %d" % n, digest_size=16).digest()


def test_a_gossiped_group_envelope_comes_out_unopened_and_duplicates_go_after_group_accepted() -> None:
    h = Harness()
    bob = h.add_user("bob")
    assert bob.messenger.watch_tags([tag_of(1), tag_of(2)], wall_now=h.now) == []  # no mailbox to sync
    one, two, other = (
        group_envelope(tag_of(1), h.now, 1),
        group_envelope(tag_of(2), h.now, 2),
        group_envelope(tag_of(3), h.now, 3),
    )
    actions = bob.messenger.receive([one, two, one, other], wall_now=h.now)
    assert actions == [GroupEnvelopes(envelopes=(one, two))]
    stats = bob.messenger.statistics()
    assert stats.rejected == {}  # not opened
    assert stats.discarded == {"duplicate": 1, "not ours": 1}  # only the unwatched one is not ours
    # Not accepted yet: another copy comes out again (the groups core is its judge until it accepts).
    assert bob.messenger.receive([one], wall_now=h.now) == [GroupEnvelopes(envelopes=(one,))]
    entry = SeenEntry(message_id=message_id(one), inbox_tag=tag_of(1), expiry=int(h.now) + 3600)
    assert bob.messenger.group_accepted([entry, entry], wall_now=h.now) == []
    assert bob.messenger.group_accepted([entry], wall_now=h.now) == []  # idempotent
    assert bob.messenger.receive([one, two], wall_now=h.now) == [GroupEnvelopes(envelopes=(two,))]
    assert bob.storage.seen_items([tag_of(1)]) == [(int(h.now) + 3600, message_id(one))]
    assert bob.messenger.statistics().discarded["duplicate"] == 2
    # Unwatched again: its envelopes are someone else's.
    bob.messenger.watch_tags([], wall_now=h.now)
    assert bob.messenger.receive([two], wall_now=h.now) == []


def test_group_accepted_reports_a_storage_failure_instead_of_raising() -> None:
    h = Harness()
    bob = h.add_user("bob", storage=MemoryStorage())
    entry = SeenEntry(message_id=bytes(32), inbox_tag=tag_of(1), expiry=int(h.now) + 60)
    bob.storage.fail_next = 1  # type: ignore[attr-defined]
    [problem] = bob.messenger.group_accepted([entry], wall_now=h.now)
    assert isinstance(problem, StoreProblem)
    assert bob.storage.seen([entry.message_id]) == set()


def test_watched_tags_are_bounded_and_checked() -> None:
    h = Harness()
    bob = h.add_user("bob")
    with pytest.raises(ValueError, match="2400"):
        bob.messenger.watch_tags([tag_of(i) for i in range(MAX_WATCHED_TAGS + 1)], wall_now=h.now)
    with pytest.raises(ValueError, match="16 bytes"):
        bob.messenger.watch_tags([b"short"], wall_now=h.now)
    bob.messenger.watch_tags([tag_of(i) for i in range(MAX_WATCHED_TAGS)], wall_now=h.now)


def answer_foreign_syncs_empty(
    peer: str, request: MailboxRequest, response: MailboxResponse
) -> MailboxResponse:
    """Until mailboxes serve group tags: an honest empty answer for a sync of tags not the requester's."""
    if isinstance(request, SyncRequest) and isinstance(response, MailboxError):
        reply = Reconciler([]).respond(decode_message(request.reconcile))
        return Synced(reconcile=encode_message(reply), generation=0, held=0)
    return response


def test_each_sync_also_reconciles_the_watched_tags_in_sessions_of_at_most_max_sync_tags() -> None:
    h = Harness()
    box = h.add_mailbox()
    h.tamper = answer_foreign_syncs_empty
    bob = h.add_user("bob")
    calls: list[CallMailbox] = []
    watched = [tag_of(i) for i in range(2 * MAX_SYNC_TAGS + 5)]
    h.connect("bob")
    h.settle()
    before = bob.messenger.statistics().syncs
    assert before == 1
    actions = bob.messenger.watch_tags(watched, wall_now=h.now)
    calls = [a for a in actions if isinstance(a, CallMailbox)]
    assert [c.peer for c in calls] == [box]  # new tags: a sync at once
    seen: list[tuple[bytes, ...]] = []
    real = h._call

    def spy(user, peer, request):  # type: ignore[no-untyped-def]
        if isinstance(request, SyncRequest):
            seen.append(request.tags)
        return real(user, peer, request)

    h._call = spy  # type: ignore[method-assign]
    h.feed("bob", actions)
    h.settle()
    assert seen[0] == owned_tags(bob.identity.public, h.now)  # our own first
    assert seen[1:] == [
        tuple(sorted(watched))[i : i + MAX_SYNC_TAGS] for i in range(0, len(watched), MAX_SYNC_TAGS)
    ]
    assert all(len(tags) <= MAX_SYNC_TAGS for tags in seen)
    assert bob.messenger.statistics().syncs == before + 1  # one round, four sessions
    assert bob.messenger.statistics().penalties == 0


# --- D. mailboxes hold GROUP envelopes as shared items --------------------------------------------


def entries_of(envelopes: Iterable[bytes]) -> list[SeenEntry]:
    """The seen entries the groups core hands back once it accepted ``envelopes``."""
    return [
        SeenEntry(
            message_id=message_id(e), inbox_tag=decode_envelope(e).inbox_tag, expiry=decode_envelope(e).expiry
        )
        for e in envelopes
    ]


def store_on(h: Harness, box: str, storer: str, envelopes: Sequence[bytes]) -> None:
    peer = h.users[storer].identity.public.peer_id
    answer = h.mailboxes[box].handle(peer, StoreRequest(envelopes=tuple(envelopes)), wall_now=h.now)
    assert isinstance(answer, Stored) and {r.code for r in answer.results} == {StoreCode.STORED}


def test_every_member_fetches_a_group_envelope_from_a_mailbox_and_none_deletes_it() -> None:
    h = Harness()
    box = h.add_mailbox()
    tag = tag_of(7)
    alice, bob, carol = h.add_user("alice"), h.add_user("bob"), h.add_user("carol")
    for user in (bob, carol):
        user.messenger.watch_tags([tag], wall_now=h.now)
    sent = [group_envelope(tag, h.now, n) for n in range(3)]
    store_on(h, box, "alice", sent)
    h.connect("bob")
    h.settle()
    assert sorted(e for g in bob.groups for e in g.envelopes) == sorted(sent)
    assert h.mailboxes[box].statistics().items == 3  # bob's sync deleted nothing
    h.connect("carol")
    h.settle()
    assert sorted(e for g in carol.groups for e in g.envelopes) == sorted(sent)
    assert h.mailboxes[box].statistics().items == 3
    assert h.mailboxes[box].statistics().deleted == 0
    # Once bob's groups core accepted them, his next syncs compare and fetch nothing again.
    assert bob.messenger.group_accepted(entries_of(sent), wall_now=h.now) == []
    fetched = h.mailboxes[box].statistics().fetched
    more = group_envelope(tag, h.now, 9)
    store_on(h, box, "alice", [more])
    bob.groups.clear()
    h.feed("bob", bob.messenger.sync_now(wall_now=h.now))
    h.settle()
    assert [e for g in bob.groups for e in g.envelopes] == [more]
    assert h.mailboxes[box].statistics().fetched == fetched + 1
    h.feed("bob", bob.messenger.sync_now(wall_now=h.now))  # not accepted yet: fetched again
    h.settle()
    assert [e for g in bob.groups for e in g.envelopes] == [more, more]
    bob.messenger.group_accepted(entries_of([more]), wall_now=h.now)
    h.feed("bob", bob.messenger.sync_now(wall_now=h.now))
    h.settle()
    assert len(bob.groups) == 2 and h.mailboxes[box].statistics().fetched == fetched + 2
    # A restart (a "first" sync of our own tags) still compares the group tags: nothing fetched again.
    bob = h.restart("bob")
    bob.messenger.watch_tags([tag], wall_now=h.now)
    h.connect("bob")
    h.settle()
    assert bob.groups == []
    assert alice.messenger.statistics().rejected == {}


def test_a_stranger_lists_and_fetches_group_items_under_a_group_tag_but_never_sealed_ones() -> None:
    h = Harness()
    box = h.add_mailbox()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    mallory = Identity(b"\x66" * 32).public.peer_id
    core = h.mailboxes[box]
    group = group_envelope(tag_of(1), h.now, 1)
    store_on(h, box, "alice", [group])
    # A sealed envelope for bob, and one a liar addressed to the group's tag.
    h.disconnect("bob")
    h.connect("alice")
    for_bob = h.send("alice", "bob", b"for bob only")
    h.settle()
    sealed_on_group_tag = encode_fields(
        kind=EnvelopeKind.SEALED,
        inbox_tag=tag_of(1),
        expiry=int(h.now) + 60,
        ephemeral_key=bytes(32),
        nonce=bytes(24),
        ciphertext=bytes(40),
    )
    store_on(h, box, "alice", [sealed_on_group_tag])
    assert core.statistics().items == 3

    def sync(peer: str, tags: tuple[bytes, ...]) -> list[bytes]:
        answer = core.handle(
            peer, SyncRequest(tags=tags, reconcile=encode_message(Reconciler([]).initiate())), wall_now=h.now
        )
        assert isinstance(answer, Synced)
        _, _, need = Reconciler([]).reconcile(decode_message(answer.reconcile))
        return need

    assert sync(mallory, (tag_of(1),)) == [message_id(group)]  # the group item only
    assert sync(mallory, owned_tags(bob.identity.public, h.now)) == []  # bob's sealed one: not listed
    assert sync(bob.identity.public.peer_id, owned_tags(bob.identity.public, h.now)) == [for_bob]
    asked = FetchRequest(message_ids=(message_id(group), for_bob, message_id(sealed_on_group_tag)))
    assert core.handle(mallory, asked, wall_now=h.now) == Fetched(envelopes=(group,))
    for tags in ((tag_of(1),), owned_tags(bob.identity.public, h.now)):
        refused = core.handle(mallory, DeleteRequest(tags=tags, generation=100), wall_now=h.now)
        assert isinstance(refused, MailboxError) and refused.code is ErrorCode.NOT_YOUR_TAG
    assert core.statistics().items == 3
    assert alice.messenger.statistics().penalties == 0


@pytest.fixture(params=["memory", "sqlite", "sqlcipher"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage()
    else:
        key = b"\x6b" * 32 if request.param == "sqlcipher" else None
        with SqliteStorage(tmp_path / "store.db", key=key) as sqlite_store:
            yield sqlite_store


def mailbox_item(n: int, kind: EnvelopeKind, tag: bytes = b"\x0a" * 16) -> MailboxItem:
    return MailboxItem(
        message_id=bytes([n]) * 32,
        inbox_tag=tag,
        expiry=1000 + n,
        envelope=b"envelope %d" % n,
        from_peer="12D3KooWpeer",
        size=10,
        kind=kind,
    )


def test_every_backend_remembers_an_items_kind_and_lists_by_kind(store: Storage) -> None:
    store.mailbox_put([mailbox_item(1, EnvelopeKind.SEALED), mailbox_item(2, EnvelopeKind.GROUP)])
    assert [i.kind for i in store.mailbox_get([bytes([1]) * 32, bytes([2]) * 32])] == [
        EnvelopeKind.SEALED,
        EnvelopeKind.GROUP,
    ]
    assert [i.kind for i in store.mailbox_all()] == [EnvelopeKind.SEALED, EnvelopeKind.GROUP]
    tag = [b"\x0a" * 16]
    assert store.mailbox_items(tag) == [(1001, bytes([1]) * 32), (1002, bytes([2]) * 32)]
    assert store.mailbox_items(tag, kind=EnvelopeKind.GROUP) == [(1002, bytes([2]) * 32)]
    assert store.mailbox_items(tag, kind=EnvelopeKind.SEALED) == [(1001, bytes([1]) * 32)]


#: The mailbox table and version as meshchat wrote them before group envelopes (schema version 1).
V1_SCHEMA = (
    """CREATE TABLE mailbox (
        number     INTEGER PRIMARY KEY,
        message_id BLOB NOT NULL UNIQUE,
        inbox_tag  BLOB NOT NULL,
        expiry     INTEGER NOT NULL,
        envelope   BLOB NOT NULL,
        from_peer  TEXT NOT NULL,
        size       INTEGER NOT NULL)""",
    "CREATE INDEX mailbox_tag ON mailbox (inbox_tag, number)",
    "CREATE INDEX mailbox_expiry ON mailbox (expiry)",
    "INSERT INTO mailbox VALUES (1, x'" + "01" * 32 + "', x'" + "0a" * 16 + "', 1001, x'aa', 'peer', 1)",
    "PRAGMA user_version = 1",
)


def v1_store(path: Path) -> None:
    """A version 1 store: today's schema for the other tables (unchanged since), v1's mailbox table,
    and no ``state`` table nor inbox ``device``/``recipient`` columns (versions 3 and 4 added them)."""
    with SqliteStorage(path):
        pass
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("DROP TABLE mailbox")
        db.execute("DROP TABLE state")
        db.execute("DROP TABLE history")  # version 5 added it
        db.execute("ALTER TABLE inbox DROP COLUMN device")  # version 4 added them
        db.execute("ALTER TABLE inbox DROP COLUMN recipient")
        for statement in V1_SCHEMA:
            db.execute(statement)
        db.execute("UPDATE counters SET value = 1 WHERE name = 'mailbox'")
        assert db.execute("PRAGMA table_info(mailbox)").fetchall()[-1][1] == "size"
    finally:
        db.close()


@pytest.mark.parametrize("key", [None, b"\x6b" * 32], ids=["plain", "encrypted-on-open"])
def test_a_version_1_store_is_migrated_in_place_and_keeps_its_items(
    tmp_path: Path, key: bytes | None
) -> None:
    path = tmp_path / "store.db"
    v1_store(path)
    with SqliteStorage(path, key=key) as store:
        [old] = store.mailbox_get([b"\x01" * 32])
        assert (old.kind, old.envelope, old.number) == (EnvelopeKind.SEALED, b"\xaa", 1)
        assert store.mailbox_items([b"\x0a" * 16], kind=EnvelopeKind.GROUP) == []
        store.mailbox_put([mailbox_item(2, EnvelopeKind.GROUP)])
        assert store.mailbox_last_number() == 2
        store.state_put([(b"s:peer", b"session record")])  # the table version 3 added
    with SqliteStorage(path, key=key) as store:  # reopened: version 5 now, nothing migrated again
        assert [i.kind for i in store.mailbox_all()] == [EnvelopeKind.SEALED, EnvelopeKind.GROUP]
        assert store.state_get(b"s:peer") == b"session record"
    if key is None:
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        finally:
            db.close()


def test_an_encrypted_version_1_store_opens_after_the_migration(tmp_path: Path) -> None:
    path, key = tmp_path / "store.db", b"\x6b" * 32
    v1_store(path)
    encrypt_plaintext_store(path, key, timeout=5.0, schema_version=1)  # as meshchat v1 did
    assert not is_plaintext_store(path)
    with SqliteStorage(path, key=key) as store:
        [old] = store.mailbox_get([b"\x01" * 32])
        assert old.kind is EnvelopeKind.SEALED
        store.mailbox_put([mailbox_item(2, EnvelopeKind.GROUP)])
    with SqliteStorage(path, key=key) as store:
        assert [i.kind for i in store.mailbox_all()] == [EnvelopeKind.SEALED, EnvelopeKind.GROUP]


def test_a_store_of_a_newer_version_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path):
        pass
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}"):
        SqliteStorage(path)


# --- C. storing shared envelopes ----------------------------------------------------------------


def test_a_shared_envelope_is_stored_on_mailbox_copies_mailboxes_and_each_store_is_reported() -> None:
    h = Harness()
    boxes = [h.add_mailbox() for _ in range(4)]
    alice, bob = h.add_user("alice"), h.add_user("bob")
    h.connect("alice")
    h.settle()
    tag = tag_of(3)
    envelope = group_envelope(tag, h.now, 1)
    mid = message_id(envelope)
    h.feed("alice", alice.messenger.store_shared(tag, mid, envelope, wall_now=h.now))
    h.settle()
    ranked = sorted(boxes, key=lambda p: hashlib.blake2b(tag + p.encode(), digest_size=8).digest())
    assert alice.shared == [EnvelopeStored(message_id=mid, peer=p) for p in ranked[:3]]
    for box in boxes:
        held = h.mailboxes[box].statistics().items
        assert held == (1 if box in ranked[:3] else 0)
    [item] = h.mailboxes[ranked[0]]._storage.mailbox_get([mid])
    assert item.kind is EnvelopeKind.GROUP
    assert alice.messenger.statistics().discarded.get("mailbox acknowledged what it was not sent") is None
    # Stored: not queued again when the mailboxes change.
    alice.shared.clear()
    h.feed("alice", alice.messenger.mailboxes_changed(boxes[:2], wall_now=h.now))
    h.feed("alice", alice.messenger.mailboxes_changed(boxes, wall_now=h.now))
    h.settle()
    assert alice.shared == []
    # A member syncing later finds it there.
    bob.messenger.watch_tags([tag], wall_now=h.now)
    h.connect("bob")
    h.settle()
    # From each of the three (the groups core drops the copies it already accepted).
    assert [g.envelopes for g in bob.groups] == [(envelope,)] * 3


def test_a_shared_envelope_waits_for_a_mailbox_and_is_stored_when_one_appears() -> None:
    h = Harness()
    alice = h.add_user("alice")
    h.connect("alice")
    envelope = group_envelope(tag_of(1), h.now, 1)
    mid = message_id(envelope)
    assert alice.messenger.store_shared(tag_of(1), mid, envelope, wall_now=h.now) == []  # no mailbox
    box = h.add_mailbox()
    h.connect("alice")
    h.settle()
    assert alice.shared == [EnvelopeStored(message_id=mid, peer=box)]
    with pytest.raises(ValueError, match="id"):
        alice.messenger.store_shared(tag_of(1), bytes(32), envelope, wall_now=h.now)


def test_a_refused_shared_envelope_is_retried_when_mailboxes_change_unless_refused_for_good() -> None:
    h = Harness()
    small = h.add_mailbox(limits=MailboxLimits(per_tag_bytes=100, max_envelope=400))
    alice = h.add_user("alice")
    h.connect("alice")
    fits_later = group_envelope(tag_of(1), h.now, 1)  # over the tag's 100-byte quota here
    too_large = group_envelope(tag_of(2), h.now, 2, pad=500)
    for envelope, tag in ((fits_later, tag_of(1)), (too_large, tag_of(2))):
        h.feed("alice", alice.messenger.store_shared(tag, message_id(envelope), envelope, wall_now=h.now))
    h.settle()
    assert sorted((a.code, a.message_id) for a in alice.shared if isinstance(a, EnvelopeRefused)) == sorted(
        [(StoreCode.TAG_QUOTA, message_id(fits_later)), (StoreCode.TOO_LARGE, message_id(too_large))]
    )
    assert all(isinstance(a, EnvelopeRefused) and a.peer == small and a.detail for a in alice.shared)
    alice.shared.clear()
    roomy = h.add_mailbox()
    h.connect("alice")
    h.settle()
    # The quota refusal is tried again (on the new mailbox, and the small one once more); the
    # permanent one never.
    assert EnvelopeStored(message_id=message_id(fits_later), peer=roomy) in alice.shared
    assert all(a.message_id == message_id(fits_later) for a in alice.shared)


def test_shared_envelopes_waiting_for_a_mailbox_are_bounded() -> None:
    h = Harness()
    alice = h.add_user("alice")
    h.connect("alice")
    sent = [group_envelope(tag_of(1), h.now, n) for n in range(MAX_SHARED_PENDING + 5)]
    for envelope in sent:
        assert alice.messenger.store_shared(tag_of(1), message_id(envelope), envelope, wall_now=h.now) == []
    assert alice.messenger.statistics().shared_given_up == 5
    box = h.add_mailbox(limits=MailboxLimits(per_tag_bytes=10**9))
    h.connect("alice")
    h.settle()
    stored = {a.message_id for a in alice.shared if isinstance(a, EnvelopeStored)}
    assert stored == {message_id(e) for e in sent[5:]}  # the oldest five were given up
    assert h.mailboxes[box].statistics().items == MAX_SHARED_PENDING


def test_an_expired_shared_envelope_is_not_retried() -> None:
    h = Harness()
    alice = h.add_user("alice")
    h.connect("alice")
    envelope = group_envelope(tag_of(1), h.now, 1, ttl=60)
    alice.messenger.store_shared(tag_of(1), message_id(envelope), envelope, wall_now=h.now)
    h.now += 120
    h.add_mailbox()
    h.connect("alice")
    h.settle()
    assert alice.shared == []


def test_a_watched_tag_equal_to_one_of_our_own_does_not_hide_our_messages() -> None:
    h = Harness()
    alice, bob = h.add_user("alice"), h.add_user("bob")
    bob.messenger.watch_tags(owned_tags(bob.identity.public, h.now), wall_now=h.now)
    record, _ = alice.messenger.send(bob.identity.public, b"still mine", wall_now=h.now)
    actions = bob.messenger.receive([record.envelope], wall_now=h.now)
    assert [a.message.body for a in actions if isinstance(a, MessageReceived)] == [b"still mine"]
    assert not any(isinstance(a, GroupEnvelopes) for a in actions)
