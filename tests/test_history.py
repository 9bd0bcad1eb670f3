"""Conversation history (``store.db`` schema 5, ``Node.conversation``, ``Node.mark_read_id``): both
directions with the sender's own text, paging back with ``before=``, outgoing statuses as they move,
the in-place migration of a version 4 store, and a page of a long conversation in milliseconds."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from conftest import make_profile

from meshchat.errors import UnknownMessage
from meshchat.inbox import DirectMessage
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.store.sqlite import SCHEMA_VERSION, SqliteStorage
from meshchat.store.storage import (
    MAX_CONVERSATION_PAGE,
    HistoryRecord,
    InboxRecord,
    MemoryStorage,
    OutboxRecord,
    OutboxStatus,
    SeenEntry,
    Storage,
)
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 30.0
FAST_RETRY = StoreConfig(retry_initial=0.5)
ALICE, BOB, CAROL = b"\xa1" * 32, b"\xb0" * 32, b"\xc0" * 32
TAG = b"\x0a" * 16


def mid(n: int) -> bytes:
    return n.to_bytes(4, "big") * 8


def sent(n: int, to: bytes) -> tuple[OutboxRecord, HistoryRecord]:
    record = OutboxRecord(
        message_id=mid(n),
        recipient=to,
        envelope=b"sealed",
        ref="",
        seq=n,
        created_at=1.0,
        expiry=10**9,
        status=OutboxStatus.QUEUED,
    )
    return record, HistoryRecord(peer=to, message_id=mid(n), outgoing=True, body=b"out %d" % n, sent_at_ms=n)


def received(n: int, sender: bytes, *, to: bytes = b"") -> tuple[SeenEntry, InboxRecord]:
    entry = SeenEntry(message_id=mid(n), inbox_tag=TAG, expiry=10**9)
    message = InboxRecord(
        number=0,
        message_id=mid(n),
        sender=sender,
        seq=n,
        body=b"in %d" % n,
        sent_at_ms=n,
        received_at=1.0,
        device=b"\xde" * 32 if to else b"",
        to=to,
    )
    return entry, message


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "memory":
        return MemoryStorage()
    sqlite = SqliteStorage(tmp_path / "store.db")
    request.addfinalizer(sqlite.close)
    return sqlite


def test_both_directions_page_back_with_before_and_show_the_outbox_status(store: Storage) -> None:
    for n in range(1, 13):  # Bob and Alice's conversation, interleaved with Carol's
        if n % 3 == 0:
            store.accept(*[[x] for x in received(n, CAROL)])
        elif n % 2:
            record, said = sent(n, BOB)
            store.outbox_add([record], (), [said])
        else:
            store.accept(*[[x] for x in received(n, BOB)])
    newest = store.conversation(BOB, before=None, limit=4)
    assert [e.body for e in newest] == [b"out 7", b"in 8", b"in 10", b"out 11"]
    assert [e.outgoing for e in newest] == [True, False, False, True]
    cursors = [e.cursor for e in newest]
    assert cursors == sorted(cursors)
    older = store.conversation(BOB, before=newest[0].cursor, limit=4)
    assert [e.body for e in older] == [b"out 1", b"in 2", b"in 4", b"out 5"]
    assert store.conversation(BOB, before=older[0].cursor, limit=4) == []
    assert store.conversation(BOB, before=2**80, limit=4) == newest  # past every cursor: the newest
    assert [e.status for e in older] == [OutboxStatus.QUEUED, None, None, OutboxStatus.QUEUED]
    assert [e.number for e in older] == [0, 1, 3, 0]  # inbox numbers (Carol's message was 2)
    # The outbox moves; the history shows where the message is now.
    record = store.outbox_get(mid(11))
    assert record is not None
    store.outbox_update([record.replace(status=OutboxStatus.READ)])
    assert store.conversation(BOB, before=None, limit=1)[0].status is OutboxStatus.READ
    assert [e.body for e in store.conversation(CAROL, before=None, limit=100)] == [
        b"in 3",
        b"in 6",
        b"in 9",
        b"in 12",
    ]
    found = store.history_get(mid(8))
    assert found is not None and (found.peer, found.outgoing, found.number) == (BOB, False, 5)
    assert store.history_get(mid(99)) is None
    for bad in (-1, MAX_CONVERSATION_PAGE + 1):
        with pytest.raises(ValueError, match="limit"):
            store.conversation(BOB, before=None, limit=bad)


def test_a_copy_from_another_of_our_devices_is_an_outgoing_entry_of_its_recipient(store: Storage) -> None:
    store.accept(*[[x] for x in received(1, ALICE, to=BOB)])  # our other device sent Bob "in 1"
    [entry] = store.conversation(BOB, before=None, limit=10)
    assert (entry.outgoing, entry.body, entry.status, entry.number, entry.device) == (
        True,
        b"in 1",
        None,
        0,
        b"\xde" * 32,
    )
    assert store.conversation(ALICE, before=None, limit=10) == []


def test_a_failed_send_writes_no_history(store: Storage) -> None:
    record, said = sent(1, BOB)
    store.outbox_add([record], (), [said])
    with pytest.raises(ValueError):  # the same id again: nothing of this call is written
        store.outbox_add([record], (), [said])
    assert len(store.conversation(BOB, before=None, limit=10)) == 1


def version_4_store(path: Path) -> None:
    """A store as meshchat wrote it before version 5: today's tables without ``history``."""
    with SqliteStorage(path) as store:
        store.accept(*[[x] for x in received(1, BOB)])
        store.accept(*[[x] for x in received(2, ALICE, to=CAROL)])
        store.accept(*[[x] for x in received(3, BOB)])
        record, _ = sent(4, BOB)
        store.outbox_add([record])  # sent under version 4: no text kept
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("DROP TABLE history")
        db.execute("PRAGMA user_version = 4")
    finally:
        db.close()


@pytest.mark.parametrize("key", [None, b"\x6b" * 32], ids=["plain", "encrypted-on-open"])
def test_a_version_4_store_is_migrated_in_place_with_its_inbox_in_the_history(
    tmp_path: Path, key: bytes | None
) -> None:
    path = tmp_path / "store.db"
    version_4_store(path)
    with SqliteStorage(path, key=key) as store:
        assert [(e.body, e.outgoing, e.number) for e in store.conversation(BOB, before=None, limit=10)] == [
            (b"in 1", False, 1),
            (b"in 3", False, 3),
        ]
        [copy] = store.conversation(CAROL, before=None, limit=10)
        assert (copy.body, copy.outgoing) == (b"in 2", True)
        store.accept(*[[x] for x in received(5, BOB)])  # new ones follow, in order
    with SqliteStorage(path, key=key) as store:  # reopened: nothing migrated twice
        assert [e.body for e in store.conversation(BOB, before=None, limit=10)] == [b"in 1", b"in 3", b"in 5"]
    if key is None:
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        finally:
            db.close()


def test_a_page_of_a_10000_message_conversation_takes_milliseconds(tmp_path: Path) -> None:
    with SqliteStorage(tmp_path / "store.db") as store:
        pairs = [received(n, BOB if n % 10 else CAROL) for n in range(1, 10_001)]
        store.accept([p[0] for p in pairs], [p[1] for p in pairs])
        records = [sent(n, BOB) for n in range(10_001, 12_001)]
        store.outbox_add([r for r, _ in records], (), [h for _, h in records])
        plan = " ".join(
            str(row)
            for row in store._db.execute(
                "EXPLAIN QUERY PLAN SELECT cursor FROM history WHERE peer = ? AND cursor < ? "
                "ORDER BY cursor DESC LIMIT 100",
                (BOB, 5000),
            )
        )
        assert "history_page" in plan and "TEMP B-TREE" not in plan  # a range scan, no sort
        timings = []
        before = None
        for _ in range(20):  # page back from the newest
            started = time.perf_counter()
            page = store.conversation(BOB, before=before, limit=100)
            timings.append(time.perf_counter() - started)
            assert len(page) == 100
            before = page[0].cursor
        timings.sort()
        # The median page: a few ms on an idle machine; generous for a loaded 2-core one.
        assert timings[len(timings) // 2] < 0.05, timings


async def next_direct(node: Node) -> DirectMessage:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, DirectMessage):
                return event
    raise AssertionError("unreachable")


@asynccontextmanager
async def alice_and_bob(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    async with AsyncExitStack() as stack:
        bob = await stack.enter_async_context(Node.open(bob_dir, listen=LOCAL, store_config=FAST_RETRY))
        alice = await stack.enter_async_context(Node.open(alice_dir, listen=LOCAL, store_config=FAST_RETRY))
        alice.contacts.add(Invite.create(bob_id, name="Bob", addrs=bob.listen_addrs).to_text())
        bob.contacts.add(Invite.create(alice_id, name="Alice", addrs=alice.listen_addrs).to_text())
        yield alice, bob


async def test_two_nodes_keep_both_directions_and_statuses_move_to_read(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path) as (alice, bob):
        first = await alice.send("Bob", "Привет, Боб")
        [entry] = alice.conversation("Bob")
        assert (entry.body, entry.outgoing, entry.message_id) == (
            "Привет, Боб".encode(),
            True,
            first.message_id,
        )
        assert entry.status in (OutboxStatus.QUEUED, OutboxStatus.RELAYED)
        got = await next_direct(bob)
        await bob.send("Alice", "hi Alice")
        reply = await next_direct(alice)
        with trio.fail_after(WAIT):
            await first.wait_until(OutboxStatus.DELIVERED)
        mine = alice.conversation(bob.identity.public)
        assert [(e.body, e.outgoing) for e in mine] == [("Привет, Боб".encode(), True), (b"hi Alice", False)]
        assert mine[0].status is OutboxStatus.DELIVERED and mine[1].status is None
        assert mine[1].number == reply.number and mine[1].message_id == reply.message_id
        theirs = bob.conversation(alice.peer_id)  # by PeerId
        assert [(e.body, e.outgoing) for e in theirs] == [
            ("Привет, Боб".encode(), False),
            (b"hi Alice", True),
        ]
        bob.mark_read_id(got.message_id)
        with trio.fail_after(WAIT):
            await first.wait_until(OutboxStatus.READ)
        assert alice.conversation("Bob")[0].status is OutboxStatus.READ
        with pytest.raises(UnknownMessage, match="no received message"):
            alice.mark_read_id(first.message_id)  # ours: nobody to tell
        with pytest.raises(UnknownMessage):
            alice.mark_read_id(bytes(32))
        [older] = alice.conversation("Bob", before=mine[1].cursor, limit=1)
        assert (older.cursor, older.message_id) == (mine[0].cursor, mine[0].message_id)
