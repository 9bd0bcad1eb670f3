"""The ``Storage`` contract, checked on every backend; then what only the sqlite file promises.

The conformance tests run on ``MemoryStorage``, ``SqliteStorage`` and ``SqliteStorage`` with a key
(SQLCipher; what only encryption promises is in ``test_storage_encrypted.py``): each method's
results and orders, and that a refused call (``ValueError``) changes nothing. The sqlite tests check
durability (close and reopen, a killed writer), refusal of damaged or foreign files, a full disk (a
tiny ``max_page_count``) losing nothing already accepted, and the file's permissions. A Hypothesis
state machine runs random operation sequences on both backends side by side and compares every answer.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meshchat.errors import StorageError
from meshchat.store.sqlite import SCHEMA_VERSION, SqliteStorage
from meshchat.store.storage import (
    TERMINAL_STATUSES,
    HistoryRecord,
    InboxRecord,
    MailboxItem,
    MemoryStorage,
    OutboxRecord,
    OutboxStatus,
    SeenEntry,
    Storage,
)
from meshchat.wire import EnvelopeKind

ALICE = b"\xa1" * 32
BOB = b"\xb0" * 32
TAG_A = b"\x0a" * 16
TAG_B = b"\x0b" * 16
TAG_C = b"\x0c" * 16
#: More than anything any test here stores: "everything" for limits.
ALL = 1_000_000


def mid(n: int) -> bytes:
    """A 32-byte message id made from ``n``."""
    return n.to_bytes(32, "big")


def outbox_record(
    n: int,
    *,
    recipient: bytes = ALICE,
    ref: str = "",
    seq: int | None = None,
    status: OutboxStatus = OutboxStatus.QUEUED,
    envelope_size: int = 64,
) -> OutboxRecord:
    """A sent message numbered ``n`` (its seq is ``n`` unless given)."""
    return OutboxRecord(
        message_id=mid(n),
        recipient=recipient,
        envelope=random.Random(n).randbytes(envelope_size),
        ref=ref,
        seq=n if seq is None else seq,
        created_at=1_700_000_000.0 + n,
        expiry=1_700_086_400 + n,
        status=status,
    )


def entry(n: int, *, tag: bytes = TAG_A, expiry: int = 1000) -> SeenEntry:
    """A seen-window entry for message ``n``."""
    return SeenEntry(message_id=mid(n), inbox_tag=tag, expiry=expiry)


def message(n: int) -> InboxRecord:
    """An inbox message for message ``n`` (``number`` left for the storage to assign)."""
    return InboxRecord(
        number=0,
        message_id=mid(n),
        sender=BOB,
        seq=n,
        body=f"сообщение {n} 👋".encode(),
        sent_at_ms=1_700_000_000_000 + n,
        received_at=1_700_000_001.5 + n,
    )


def item(n: int, *, tag: bytes = TAG_A, expiry: int = 1000, from_peer: str = "12D3KooWpeer") -> MailboxItem:
    """A mailbox item for message ``n``."""
    envelope = random.Random(-n).randbytes(40 + n % 7)
    return MailboxItem(
        message_id=mid(n),
        inbox_tag=tag,
        expiry=expiry,
        envelope=envelope,
        from_peer=from_peer,
        size=len(envelope),
    )


def snapshot(store: Storage) -> tuple[object, ...]:
    """Everything a store shows through its methods, to check that a refused call changed nothing."""
    return (
        store.outbox_recent(ALL),
        store.outbox_pending(),
        [store.last_seq(r) for r in (ALICE, BOB)],
        store.seen_items([TAG_A, TAG_B, TAG_C]),
        store.inbox_after(0, ALL),
        store.mailbox_all(),
        store.mailbox_get(i.message_id for i in store.mailbox_all()),
        store.mailbox_last_number(),
    )


@pytest.fixture(params=["memory", "sqlite", "sqlcipher"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Each backend in turn, empty (sqlcipher: the sqlite store encrypted at rest with a key)."""
    if request.param == "memory":
        yield MemoryStorage()
    else:
        key = b"\x6b" * 32 if request.param == "sqlcipher" else None
        with SqliteStorage(tmp_path / "store.db", key=key) as sqlite_store:
            yield sqlite_store


# --- outbox ----------------------------------------------------------------------------------------


def test_outbox_with_prefix_finds_records_by_the_start_of_their_id(store: Storage) -> None:
    top = dataclasses.replace(outbox_record(9), message_id=b"\xff" * 32)
    store.outbox_add([outbox_record(2), outbox_record(256), outbox_record(1), outbox_record(255), top])
    zeros = bytes(31)  # mid(n) is n in 32 big-endian bytes: 1, 2 and 255 share 31 zero bytes
    assert [r.message_id for r in store.outbox_with_prefix(zeros, ALL)] == [mid(1), mid(2), mid(255)]
    assert [r.message_id for r in store.outbox_with_prefix(zeros, 2)] == [mid(1), mid(2)]
    assert store.outbox_with_prefix(mid(256), ALL) == [outbox_record(256)]
    assert store.outbox_with_prefix(b"\xff\xff", ALL) == [top]
    assert store.outbox_with_prefix(b"\x01", ALL) == []
    assert store.outbox_with_prefix(b"", ALL) == []  # an empty prefix finds nothing, not everything


def test_outbox_get_returns_the_record_as_added(store: Storage) -> None:
    record = outbox_record(1, ref="Grüße-1").replace(
        attempts=3,
        next_attempt=1_700_000_123.25,
        stored_on=("12D3KooWa", "12D3KooWb"),
        error="mailbox refused: quota",
        updated_at=1_700_000_100.5,
        status=OutboxStatus.STORED,
    )
    store.outbox_add([record])
    assert store.outbox_get(record.message_id) == record
    assert store.outbox_by_ref("Grüße-1") == record
    assert store.outbox_get(mid(2)) is None
    assert store.outbox_by_ref("other") is None


def test_outbox_by_ref_empty_ref_finds_nothing(store: Storage) -> None:
    store.outbox_add([outbox_record(1), outbox_record(2)])  # both without a ref: allowed
    assert store.outbox_by_ref("") is None
    assert len(store.outbox_recent(ALL)) == 2


def test_outbox_add_known_id_raises_and_changes_nothing(store: Storage) -> None:
    store.outbox_add([outbox_record(1, ref="one")])
    before = snapshot(store)
    with pytest.raises(ValueError):
        store.outbox_add([outbox_record(2), outbox_record(1, ref="fresh")])
    assert snapshot(store) == before
    assert store.outbox_get(mid(2)) is None


def test_outbox_add_id_repeated_in_batch_raises_and_changes_nothing(store: Storage) -> None:
    with pytest.raises(ValueError):
        store.outbox_add([outbox_record(1), outbox_record(2), outbox_record(1)])
    assert store.outbox_recent(ALL) == []
    assert store.last_seq(ALICE) == 0


def test_outbox_add_known_ref_raises_and_changes_nothing(store: Storage) -> None:
    store.outbox_add([outbox_record(1, ref="once")])
    before = snapshot(store)
    with pytest.raises(ValueError):
        store.outbox_add([outbox_record(2, ref="new"), outbox_record(3, ref="once")])
    assert snapshot(store) == before
    assert store.outbox_by_ref("new") is None


def test_outbox_add_ref_repeated_in_batch_raises_and_changes_nothing(store: Storage) -> None:
    with pytest.raises(ValueError):
        store.outbox_add([outbox_record(1, ref="twice"), outbox_record(2, ref="twice")])
    assert store.outbox_recent(ALL) == []
    assert store.outbox_by_ref("twice") is None


def test_outbox_update_replaces_known_records_and_ignores_unknown_ids(store: Storage) -> None:
    store.outbox_add([outbox_record(1, ref="r1"), outbox_record(2)])
    relayed = store.outbox_get(mid(1))
    assert relayed is not None
    relayed = relayed.replace(
        status=OutboxStatus.STORED, attempts=2, stored_on=("12D3KooWm",), updated_at=9.0
    )
    store.outbox_update([relayed, outbox_record(99, status=OutboxStatus.READ)])
    assert store.outbox_get(mid(1)) == relayed
    assert store.outbox_by_ref("r1") == relayed
    assert store.outbox_get(mid(99)) is None
    assert [r.message_id for r in store.outbox_recent(ALL)] == [mid(2), mid(1)]


def test_outbox_pending_excludes_terminal_statuses_oldest_first(store: Storage) -> None:
    statuses = list(OutboxStatus)
    store.outbox_add([outbox_record(n, status=s) for n, s in enumerate(statuses)])
    pending = store.outbox_pending()
    assert [r.status for r in pending] == [s for s in statuses if s not in TERMINAL_STATUSES]
    assert OutboxStatus.DELIVERED in {r.status for r in pending}  # READ can still follow
    assert [r.message_id for r in pending] == sorted(r.message_id for r in pending)  # oldest first

    delivered = next(r for r in pending if r.status is OutboxStatus.DELIVERED)
    store.outbox_update([delivered.replace(status=OutboxStatus.READ)])
    assert delivered.message_id not in {r.message_id for r in store.outbox_pending()}
    store.outbox_add([outbox_record(50)])
    assert store.outbox_pending()[-1].message_id == mid(50)


def test_outbox_recent_is_newest_first_and_limited(store: Storage) -> None:
    for n in range(1, 6):
        store.outbox_add([outbox_record(n)])
    assert [r.seq for r in store.outbox_recent(3)] == [5, 4, 3]
    assert [r.seq for r in store.outbox_recent(ALL)] == [5, 4, 3, 2, 1]
    assert store.outbox_recent(0) == []


def test_last_seq_is_the_highest_seq_per_recipient(store: Storage) -> None:
    assert store.last_seq(ALICE) == 0
    store.outbox_add(
        [outbox_record(1, seq=1), outbox_record(2, seq=7), outbox_record(3, recipient=BOB, seq=2)]
    )
    store.outbox_add([outbox_record(4, seq=3)])  # a lower seq does not lower it
    assert store.last_seq(ALICE) == 7
    assert store.last_seq(BOB) == 2
    assert store.last_seq(b"\x00" * 32) == 0


# --- seen window and inbox --------------------------------------------------------------------------


def test_accept_numbers_messages_in_arrival_order(store: Storage) -> None:
    first = store.accept([entry(1), entry(2)], [message(1), message(2)])
    assert [m.number for m in first] == [1, 2]
    assert first[0] == dataclasses.replace(message(1), number=1)
    second = store.accept([entry(3), entry(4), entry(5)], [message(3), message(4), message(5)])
    assert [m.number for m in second] == [3, 4, 5]
    assert store.inbox_after(0, ALL) == first + second


def test_accept_receipts_only_adds_to_the_seen_window(store: Storage) -> None:
    assert store.accept([entry(1)], []) == []
    assert store.seen([mid(1)]) == {mid(1)}
    assert store.inbox_after(0, ALL) == []


def test_seen_reports_exactly_the_accepted_ids(store: Storage) -> None:
    # More ids than one sqlite IN (...) chunk, half of them seen.
    accepted = [entry(n) for n in range(0, 1300, 2)]
    store.accept(accepted, [])
    asked = [mid(n) for n in range(1300)]
    assert store.seen(asked) == {e.message_id for e in accepted}
    assert store.seen(iter([mid(1), mid(2)])) == {mid(2)}
    assert store.seen([]) == set()


def test_accept_of_an_already_seen_entry_raises_and_adds_nothing(store: Storage) -> None:
    store.accept([entry(1)], [message(1)])
    before = snapshot(store)
    with pytest.raises(ValueError):
        store.accept([entry(2), entry(1), entry(3)], [message(2), message(3)])
    assert snapshot(store) == before
    assert store.seen([mid(2), mid(3)]) == set()
    assert [m.number for m in store.accept([entry(2)], [message(2)])] == [2]  # numbering unharmed


def test_accept_of_an_entry_repeated_in_the_batch_raises_and_adds_nothing(store: Storage) -> None:
    with pytest.raises(ValueError):
        store.accept([entry(1), entry(1)], [message(1)])
    assert store.seen([mid(1)]) == set()
    assert store.inbox_after(0, ALL) == []


def test_seen_items_lists_only_the_given_tags(store: Storage) -> None:
    store.accept([entry(1, tag=TAG_A, expiry=10), entry(2, tag=TAG_B, expiry=20)], [])
    store.accept([entry(3, tag=TAG_A, expiry=30)], [])
    assert store.seen_items([TAG_A]) == [(10, mid(1)), (30, mid(3))]
    assert store.seen_items([TAG_B, TAG_C]) == [(20, mid(2))]
    assert store.seen_items([]) == []


def test_seen_items_with_many_tags(store: Storage) -> None:
    tags = [n.to_bytes(16, "big") for n in range(1200)]
    store.accept([entry(n, tag=tags[n], expiry=n) for n in range(0, 1200, 3)], [])
    assert store.seen_items(tags) == [(n, mid(n)) for n in range(0, 1200, 3)]


def test_prune_seen_forgets_entries_that_expired_before(store: Storage) -> None:
    store.accept([entry(1, expiry=100), entry(2, expiry=200), entry(3, expiry=300)], [])
    assert store.prune_seen(200) == 1  # strictly before: 200 stays
    assert store.seen([mid(1), mid(2), mid(3)]) == {mid(2), mid(3)}
    assert store.prune_seen(200) == 0
    assert store.accept([entry(1, expiry=400)], []) == []  # forgotten, so accepted again
    assert store.seen_items([TAG_A]) == [(200, mid(2)), (300, mid(3)), (400, mid(1))]


def test_inbox_after_resumes_from_a_cursor(store: Storage) -> None:
    store.accept([entry(n) for n in range(1, 6)], [message(n) for n in range(1, 6)])
    assert [m.number for m in store.inbox_after(0, 2)] == [1, 2]
    assert [m.number for m in store.inbox_after(2, 2)] == [3, 4]
    assert [m.number for m in store.inbox_after(4, 10)] == [5]
    assert store.inbox_after(5, 10) == []
    assert store.inbox_after(0, 0) == []
    assert [m.message_id for m in store.inbox_after(-3, 2)] == [mid(1), mid(2)]


# --- mailbox ---------------------------------------------------------------------------------------


def test_mailbox_put_numbers_items_and_skips_known_ids(store: Storage) -> None:
    stored = store.mailbox_put([item(1), item(2)])
    assert [i.number for i in stored] == [1, 2]
    assert stored[0] == dataclasses.replace(item(1), number=1)
    again = store.mailbox_put([item(2), item(3), item(3), item(1)])
    assert [(i.message_id, i.number) for i in again] == [(mid(3), 3)]
    assert store.mailbox_put([item(1)]) == []
    assert store.mailbox_last_number() == 3
    assert store.mailbox_get([mid(1), mid(2), mid(3)]) == stored + again


def test_mailbox_items_lists_only_the_given_tags(store: Storage) -> None:
    store.mailbox_put(
        [item(1, tag=TAG_A, expiry=11), item(2, tag=TAG_B, expiry=22), item(3, tag=TAG_A, expiry=33)]
    )
    assert store.mailbox_items([TAG_A]) == [(11, mid(1)), (33, mid(3))]
    assert store.mailbox_items([TAG_B, TAG_C]) == [(22, mid(2))]
    assert store.mailbox_items([TAG_C]) == []


def test_mailbox_get_leaves_out_unknown_ids_in_the_order_asked(store: Storage) -> None:
    stored = store.mailbox_put([item(n) for n in range(1, 4)])
    assert store.mailbox_get([mid(3), mid(9), mid(1)]) == [stored[2], stored[0]]
    assert store.mailbox_get([]) == []
    many = store.mailbox_put([item(n) for n in range(10, 1110)])
    assert store.mailbox_get(i.message_id for i in many) == many  # more than one IN (...) chunk


def test_mailbox_delete_only_listed_tags_up_to_a_number(store: Storage) -> None:
    store.mailbox_put([item(1, tag=TAG_A), item(2, tag=TAG_B), item(3, tag=TAG_A), item(4, tag=TAG_C)])
    store.mailbox_put([item(5, tag=TAG_A)])
    gone = store.mailbox_delete([TAG_A, TAG_B], 3)
    assert [(i.message_id, i.number) for i in gone] == [(mid(1), 1), (mid(2), 2), (mid(3), 3)]
    assert gone[0].envelope == item(1).envelope
    assert [i.message_id for i in store.mailbox_all()] == [mid(4), mid(5)]
    assert store.mailbox_delete([TAG_A], 3) == []
    assert store.mailbox_delete([], ALL) == []
    assert [i.number for i in store.mailbox_delete([TAG_A, TAG_C], ALL)] == [4, 5]


def test_mailbox_withdraw_only_what_that_peer_stored(store: Storage) -> None:
    store.mailbox_put([item(1, from_peer="alice"), item(2, from_peer="mallory"), item(3, from_peer="alice")])
    gone = store.mailbox_withdraw([mid(3), mid(2), mid(1), mid(9)], "alice")
    assert [i.message_id for i in gone] == [mid(1), mid(3)]  # arrival order; mallory's stays
    assert [i.message_id for i in store.mailbox_all()] == [mid(2)]
    assert store.mailbox_withdraw([mid(2)], "alice") == []


def test_mailbox_delete_with_many_tags(store: Storage) -> None:
    tags = [n.to_bytes(16, "big") for n in range(1200)]
    store.mailbox_put([item(n, tag=tags[n]) for n in range(1200)])
    gone = store.mailbox_delete(tags[:1100], ALL)
    assert [i.message_id for i in gone] == [mid(n) for n in range(1100)]
    assert len(store.mailbox_all()) == 100


def test_mailbox_prune_deletes_items_that_expired_before(store: Storage) -> None:
    store.mailbox_put([item(1, expiry=300), item(2, expiry=100), item(3, expiry=200)])
    gone = store.mailbox_prune(300)
    assert [(i.message_id, i.number) for i in gone] == [(mid(2), 2), (mid(3), 3)]  # arrival order
    assert gone[0].envelope == item(2).envelope
    assert [i.message_id for i in store.mailbox_all()] == [mid(1)]
    assert store.mailbox_prune(300) == []


def test_lists_by_tag_follow_every_write_and_keep_the_order_of_arrival(store: Storage) -> None:
    """Regression for MemoryStorage's per-tag indexes (the simulator's mailboxes scanned everything
    they held at each sync): every way out empties a tag, which then takes new items again."""
    store.mailbox_put([item(1, tag=TAG_B), item(2, tag=TAG_A), item(3, tag=TAG_B, expiry=5)])
    store.mailbox_put([item(4, tag=TAG_A, from_peer="alice")])
    assert store.mailbox_items([TAG_A, TAG_B]) == [(1000, mid(n)) for n in (1, 2)] + [
        (5, mid(3)),
        (1000, mid(4)),
    ]
    assert [i.message_id for i in store.mailbox_prune(10)] == [mid(3)]
    assert [i.message_id for i in store.mailbox_withdraw([mid(4)], "alice")] == [mid(4)]
    assert [i.message_id for i in store.mailbox_delete([TAG_A, TAG_B], ALL)] == [mid(1), mid(2)]
    assert store.mailbox_items([TAG_A, TAG_B]) == [] and store.mailbox_all() == []
    store.mailbox_put([item(5, tag=TAG_A)])
    assert store.mailbox_items([TAG_A]) == [(1000, mid(5))]
    store.accept([entry(1, tag=TAG_B), entry(2, tag=TAG_A, expiry=5), entry(3, tag=TAG_B)], [])
    assert store.seen_items([TAG_A, TAG_B]) == [(1000, mid(1)), (5, mid(2)), (1000, mid(3))]
    assert store.prune_seen(10) == 1 and store.seen_items([TAG_A]) == []
    store.accept([entry(4, tag=TAG_A)], [])
    assert store.seen_items([TAG_B, TAG_A]) == [(1000, mid(1)), (1000, mid(3)), (1000, mid(4))]


def test_mailbox_all_leaves_out_envelopes_but_keeps_sizes(store: Storage) -> None:
    stored = store.mailbox_put([item(1), item(2, from_peer="12D3KooWother")])
    everything = store.mailbox_all()
    assert everything == [dataclasses.replace(i, envelope=b"") for i in stored]
    assert [i.size for i in everything] == [len(item(1).envelope), len(item(2).envelope)]


def test_mailbox_numbers_are_never_reused(store: Storage) -> None:
    assert store.mailbox_last_number() == 0
    store.mailbox_put([item(1), item(2), item(3)])
    store.mailbox_delete([TAG_A], ALL)
    assert store.mailbox_last_number() == 3
    assert [i.number for i in store.mailbox_put([item(4)])] == [4]
    store.mailbox_prune(ALL)
    assert [i.number for i in store.mailbox_put([item(1)])] == [5]  # a deleted id may come back


# --- sqlite only: durability -----------------------------------------------------------------------


def fill(store: Storage) -> None:
    """Put something in every table."""
    store.outbox_add([outbox_record(1, ref="a"), outbox_record(2, recipient=BOB, status=OutboxStatus.READ)])
    store.accept([entry(1), entry(2, tag=TAG_B)], [message(1)])
    store.mailbox_put([item(1), item(2), item(3)])
    store.mailbox_delete([TAG_A], 2)


def test_sqlite_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path) as store:
        fill(store)
        before = snapshot(store)
    with SqliteStorage(path) as store:
        assert snapshot(store) == before
        assert store.outbox_by_ref("a") == outbox_record(1, ref="a")
        assert [m.number for m in store.accept([entry(3)], [message(3)])] == [2]
        assert [i.number for i in store.mailbox_put([item(4)])] == [4]
        with pytest.raises(ValueError):
            store.accept([entry(1)], [])


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from meshchat.store.sqlite import SqliteStorage
    from meshchat.store.storage import OutboxRecord, OutboxStatus

    store = SqliteStorage(sys.argv[1])
    for n in range(50):
        store.outbox_add([OutboxRecord(
            message_id=n.to_bytes(32, "big"), recipient=b"r" * 32, envelope=b"e" * 500, ref=f"ref-{n}",
            seq=n + 1, created_at=1.0, expiry=2, status=OutboxStatus.QUEUED,
        )])
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint, no atexit
    """
)


def test_sqlite_data_survives_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], capture_output=True, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert (tmp_path / "store.db-wal").stat().st_size > 0  # the records are only in the log
    with SqliteStorage(path) as store:
        assert [r.seq for r in store.outbox_recent(ALL)] == list(range(50, 0, -1))
        assert store.outbox_by_ref("ref-49") is not None
        assert store.last_seq(b"r" * 32) == 50


def test_sqlite_uses_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path) as store:
        # synchronous is per connection, so only the store's own connection can show it.
        assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # kept in the file
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        raw.close()


def test_sqlite_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path) as store:
        store.outbox_add([outbox_record(1)])
        for name in ("store.db", "store.db-wal", "store.db-shm"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


def test_sqlite_closed_store_raises_storage_error(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "store.db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        store.outbox_get(mid(1))
    with pytest.raises(StorageError, match="closed"):
        store.outbox_add([outbox_record(1)])


# --- sqlite only: damaged, foreign and newer files -------------------------------------------------


def test_sqlite_refuses_a_file_with_a_garbage_page_at_open(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path) as store:
        store.outbox_add([outbox_record(n, envelope_size=200) for n in range(200)])
    raw = sqlite3.connect(path)
    page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    raw.close()
    data = bytearray(path.read_bytes())
    assert len(data) >= 10 * page_size
    data[2 * page_size : 3 * page_size] = random.Random(7).randbytes(page_size)
    path.write_bytes(bytes(data))
    # quick_check at open finds it: the store is refused before any read, not half-way through one.
    with pytest.raises(StorageError, match="is corrupt"):
        SqliteStorage(path)


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not a sqlite database\n" * 200)
    with pytest.raises(StorageError, match="not a database"):
        SqliteStorage(path)
    assert path.read_bytes() == b"this is not a sqlite database\n" * 200  # left as it was


def test_sqlite_refuses_a_database_that_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE notes (text TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(StorageError, match="not a meshchat store"):
        SqliteStorage(path)


def test_sqlite_refuses_a_newer_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    SqliteStorage(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StorageError, match=f"version {SCHEMA_VERSION + 1}.*version {SCHEMA_VERSION}"):
        SqliteStorage(path)


def test_sqlite_needs_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open store"):
        SqliteStorage(tmp_path / "missing" / "store.db")
    assert not (tmp_path / "missing").exists()


# --- sqlite only: a full disk ----------------------------------------------------------------------

#: Pages allowed in the full-disk tests: the empty schema takes about 20, so a few dozen records fit.
TINY_PAGES = 60


def test_sqlite_full_disk_loses_nothing_already_accepted(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    added: list[OutboxRecord] = []
    with SqliteStorage(path, max_pages=TINY_PAGES) as store:
        with pytest.raises(StorageError, match="full"):
            for n in range(1000):
                record = outbox_record(n, ref=f"ref-{n}", envelope_size=3000)
                store.outbox_add([record])
                added.append(record)
        refused = n
        assert 5 < len(added) < 1000
        assert store.outbox_get(mid(refused)) is None
        assert store.outbox_recent(ALL) == added[::-1]  # the same connection still reads
    with SqliteStorage(path) as store:
        assert store.outbox_recent(ALL) == added[::-1]
        assert store.outbox_get(mid(refused)) is None
        assert store.outbox_by_ref(f"ref-{refused}") is None
        store.outbox_add([outbox_record(refused, ref=f"ref-{refused}")])  # room again: it goes in


def test_sqlite_full_disk_refuses_a_whole_accept_batch(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path, max_pages=TINY_PAGES) as store:
        store.accept([entry(1)], [message(1)])
        before = snapshot(store)
        batch = range(2, 502)
        big = [dataclasses.replace(message(n), body=b"x" * 2000) for n in batch]
        with pytest.raises(StorageError, match="full"):
            store.accept([entry(n) for n in batch], big)
        assert snapshot(store) == before
        assert store.seen([mid(n) for n in batch]) == set()
    with SqliteStorage(path) as store:
        assert snapshot(store) == before
        numbered = store.accept([entry(n) for n in batch], big)
        assert [m.number for m in numbered] == list(range(2, 502))  # the counter was rolled back too


def test_sqlite_full_disk_refuses_a_whole_mailbox_batch(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path, max_pages=TINY_PAGES) as store:
        store.mailbox_put([item(1)])
        before = snapshot(store)
        big = [dataclasses.replace(item(n), envelope=b"y" * 5000, size=5000) for n in range(2, 100)]
        with pytest.raises(StorageError, match="full"):
            store.mailbox_put(big)
        assert snapshot(store) == before
        assert store.mailbox_last_number() == 1


# --- both backends side by side --------------------------------------------------------------------

ids = st.integers(0, 7).map(mid)
tags = st.sampled_from([TAG_A, TAG_B, TAG_C])
recipients = st.sampled_from([ALICE, BOB])
times = st.integers(0, 40)
finite = st.floats(allow_nan=False, allow_infinity=False)
outbox_records = st.builds(
    OutboxRecord,
    message_id=ids,
    recipient=recipients,
    envelope=st.binary(max_size=40),
    ref=st.sampled_from(["", "", "a", "b", "c", "Привет"]),
    seq=st.integers(-2, 20),
    created_at=finite,
    expiry=st.integers(-(2**63), 2**63 - 1),
    status=st.sampled_from(OutboxStatus),
    attempts=st.integers(0, 9),
    next_attempt=finite,
    stored_on=st.lists(st.text(max_size=8), max_size=3).map(tuple),
    error=st.text(max_size=20),
    updated_at=finite,
)
seen_entries = st.builds(SeenEntry, message_id=ids, inbox_tag=tags, expiry=times)
inbox_records = st.builds(
    InboxRecord,
    number=st.integers(0, 3),
    message_id=ids,
    sender=st.one_of(st.sampled_from([ALICE, BOB, b""]), st.binary(max_size=4)),
    seq=st.integers(0, 9),
    body=st.binary(max_size=30),
    sent_at_ms=st.integers(0, 2**62),
    received_at=finite,
)
mailbox_items = st.builds(
    MailboxItem,
    message_id=ids,
    inbox_tag=tags,
    expiry=times,
    envelope=st.binary(max_size=30),
    from_peer=st.sampled_from(["12D3KooWa", "12D3KooWb"]),
    size=st.integers(0, 30),
    kind=st.sampled_from(EnvelopeKind),
    number=st.integers(0, 3),
)


def same(call: Callable[[Storage], object], model: Storage, real: Storage) -> object:
    """Run ``call`` on both stores: they must return equal values or raise the same exception type."""
    outcomes: list[tuple[str, object]] = []
    for store in (model, real):
        try:
            outcomes.append(("returned", call(store)))
        except ValueError as exc:
            outcomes.append(("raised", type(exc)))
    assert outcomes[0] == outcomes[1]
    return outcomes[0][1]


class StorageComparison(RuleBasedStateMachine):
    """``SqliteStorage`` against ``MemoryStorage`` (the model), on random sequences of calls."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="meshchat-storage-")
        self.model = MemoryStorage()
        self.real = SqliteStorage(Path(self.folder) / "store.db")

    def teardown(self) -> None:
        self.real.close()
        shutil.rmtree(self.folder)

    @rule(records=st.lists(outbox_records, max_size=3))
    def outbox_add(self, records: list[OutboxRecord]) -> None:
        same(lambda s: s.outbox_add(records), self.model, self.real)

    @rule(
        message_id=ids,
        status=st.sampled_from(OutboxStatus),
        attempts=st.integers(0, 9),
        stored_on=st.lists(st.text(max_size=8), max_size=3).map(tuple),
        error=st.text(max_size=20),
        fallback=outbox_records,
    )
    def outbox_update(
        self,
        message_id: bytes,
        status: OutboxStatus,
        attempts: int,
        stored_on: tuple[str, ...],
        error: str,
        fallback: OutboxRecord,
    ) -> None:
        # What callers do: change a record's progress. Its ref and seq stay as they were (see the report
        # on outbox_update: the backends differ if those change).
        current = self.model.outbox_get(message_id) or fallback.replace(message_id=message_id)
        changed = current.replace(status=status, attempts=attempts, stored_on=stored_on, error=error)
        same(lambda s: s.outbox_update([changed]), self.model, self.real)

    @rule(message_id=ids, ref=st.sampled_from(["", "a", "b", "c", "Привет", "zzz"]), recipient=recipients)
    def outbox_reads(self, message_id: bytes, ref: str, recipient: bytes) -> None:
        same(lambda s: s.outbox_get(message_id), self.model, self.real)
        same(lambda s: s.outbox_by_ref(ref), self.model, self.real)
        same(lambda s: s.last_seq(recipient), self.model, self.real)

    @rule(
        records=st.lists(outbox_records, min_size=1, max_size=2),
        peer=st.sampled_from([ALICE, BOB]),
        body=st.binary(max_size=20),
    )
    def outbox_add_with_history(self, records: list[OutboxRecord], peer: bytes, body: bytes) -> None:
        # What a chat's send writes: its records and its history entry, in one transaction or not at all.
        said = HistoryRecord(
            peer=peer, message_id=records[0].message_id, outgoing=True, body=body, sent_at_ms=5
        )
        same(lambda s: s.outbox_add(records, (), [said]), self.model, self.real)

    @rule(
        peer=st.sampled_from([ALICE, BOB, b"", b"\x00"]),
        before=st.one_of(st.none(), st.integers(0, 14)),
        limit=st.integers(0, 6),
        message_id=ids,
    )
    def conversation(self, peer: bytes, before: int | None, limit: int, message_id: bytes) -> None:
        same(lambda s: s.conversation(peer, before=before, limit=limit), self.model, self.real)
        same(lambda s: s.history_get(message_id), self.model, self.real)

    @rule(limit=st.integers(0, 15))
    def outbox_recent(self, limit: int) -> None:
        same(lambda s: s.outbox_recent(limit), self.model, self.real)

    @rule(
        entries=st.lists(seen_entries, max_size=4),
        messages=st.lists(inbox_records, max_size=3),
        proven=st.lists(ids, max_size=2),
        status=st.sampled_from([OutboxStatus.DELIVERED, OutboxStatus.READ]),
    )
    def accept(
        self, entries: list[SeenEntry], messages: list[InboxRecord], proven: list[bytes], status: OutboxStatus
    ) -> None:
        # With the outbox moves receipts proved: all in one transaction, or nothing (a seen id refused).
        moved = [r.replace(status=status) for i in proven if (r := self.model.outbox_get(i)) is not None]
        same(lambda s: s.accept(entries, messages, moved), self.model, self.real)

    @rule(message_ids=st.lists(ids, max_size=6))
    def seen(self, message_ids: list[bytes]) -> None:
        same(lambda s: s.seen(message_ids), self.model, self.real)
        same(lambda s: s.mailbox_get(message_ids), self.model, self.real)

    @rule(wanted=st.lists(tags, max_size=3))
    def by_tags(self, wanted: list[bytes]) -> None:
        same(lambda s: s.seen_items(wanted), self.model, self.real)
        same(lambda s: s.mailbox_items(wanted), self.model, self.real)
        same(lambda s: s.mailbox_items(wanted, kind=EnvelopeKind.GROUP), self.model, self.real)

    @rule(before=times)
    def prune_seen(self, before: int) -> None:
        same(lambda s: s.prune_seen(before), self.model, self.real)

    @rule(number=st.integers(-1, 12), limit=st.integers(0, 5))
    def inbox_after(self, number: int, limit: int) -> None:
        same(lambda s: s.inbox_after(number, limit), self.model, self.real)

    @rule(items=st.lists(mailbox_items, max_size=4))
    def mailbox_put(self, items: list[MailboxItem]) -> None:
        same(lambda s: s.mailbox_put(items), self.model, self.real)

    @rule(wanted=st.lists(tags, max_size=3), up_to=st.integers(0, 30))
    def mailbox_delete(self, wanted: list[bytes], up_to: int) -> None:
        same(lambda s: s.mailbox_delete(wanted, up_to), self.model, self.real)

    @rule(before=times)
    def mailbox_prune(self, before: int) -> None:
        same(lambda s: s.mailbox_prune(before), self.model, self.real)

    @invariant()
    def same_contents(self) -> None:
        assert snapshot(self.real) == snapshot(self.model)


StorageComparison.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,  # every write is an fsync: its time depends on the disk, not on the code
    suppress_health_check=[HealthCheck.too_slow],
)
test_sqlite_behaves_as_memory = StorageComparison.TestCase


def test_accept_writes_what_receipts_proved_in_the_same_transaction(store: Storage) -> None:
    store.outbox_add([outbox_record(1), outbox_record(2)])
    delivered = store.outbox_get(mid(1)).replace(status=OutboxStatus.DELIVERED)  # type: ignore[union-attr]
    store.accept([entry(50)], [], [delivered])
    assert store.outbox_get(mid(1)) == delivered
    assert store.seen([mid(50)]) == {mid(50)}
    # A refused accept (the receipt was already seen) moves no outbox record either.
    before = snapshot(store)
    read = delivered.replace(status=OutboxStatus.READ)
    with pytest.raises(ValueError):
        store.accept([entry(50)], [], [read])
    assert snapshot(store) == before


def test_sqlite_accept_whose_outbox_update_fails_keeps_no_seen_entry(tmp_path: Path) -> None:
    with SqliteStorage(tmp_path / "store.db") as store:
        store.outbox_add([outbox_record(1, ref="a"), outbox_record(2, ref="b")])
        clash = store.outbox_get(mid(2)).replace(ref="a", status=OutboxStatus.DELIVERED)  # type: ignore[union-attr]
        with pytest.raises(ValueError):
            store.accept([entry(50)], [message(50)], [clash])
        assert store.seen([mid(50)]) == set()  # rolled back with the outbox update
        assert store.inbox_after(0, ALL) == []
        assert store.outbox_get(mid(2)).status is OutboxStatus.QUEUED  # type: ignore[union-attr]
