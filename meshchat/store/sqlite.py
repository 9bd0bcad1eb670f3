"""``SqliteStorage``: the ``Storage`` protocol (``meshchat.store.storage``) in one sqlite file per profile.

It behaves exactly as ``MemoryStorage`` does (same results, same orders, same ``ValueError`` for a
caller's mistake), but what it accepted survives the process being killed and, as far as the disk
honours fsync, a power loss. It is a thin mapping of records onto tables through the standard
library's ``sqlite3``, not a database layer of its own: no ORM, no migrations framework, no cache.

Tables (schema version 5, laid out in ``meshchat.store.schema``, kept in ``PRAGMA user_version``; an
older file is migrated in place at open, see ``_MIGRATIONS``):

* ``outbox``: one row per ``OutboxRecord``; ``position`` (the rowid) is the insertion order, so
  ``outbox_pending`` is oldest first and ``outbox_recent`` newest first. ``status`` is
  ``OutboxStatus.value``, ``stored_on`` a JSON list of PeerIds. A unique partial index on ``ref``
  (where it is not "") makes a repeated idempotency key fail the insert; a partial index over the
  non-terminal rows makes ``outbox_pending`` read only what is pending.
* ``last_seq``: the highest ``seq`` ever sent to each recipient, kept by a trigger on insert into
  ``outbox``, so a sequence number never goes back even if a sent record changes or goes.
* ``seen``: the seen window (``SeenEntry``), indexed by inbox tag (reconciliation) and by expiry (pruning).
* ``inbox``: ``InboxRecord`` rows; ``number`` is the arrival order the application resumes from.
* ``mailbox``: ``MailboxItem`` rows; ``number`` is the arrival order, indexed with the inbox tag
  (``mailbox_delete``) and expiry (``mailbox_prune``); ``kind`` is the envelope's ``EnvelopeKind``
  (version 2: group envelopes are listed to whoever names their tag, sealed ones to its owner only).
* ``state``: named blobs (session records, prekeys, control messages not yet handed on), written in
  the transaction of the outbox or inbox rows they go with.
* ``history``: ``HistoryRecord`` rows (version 5), both directions of every conversation; ``cursor``
  (the rowid) is the order across all of them, indexed with the peer so a page of one conversation
  is a range scan (milliseconds for a page of 100 in a conversation of 10,000), and by message id.
* ``counters``: the last ``number`` handed out for ``inbox`` and ``mailbox``, so a number is never
  used twice, even after the rows that had it were deleted.

Durability. Every method is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on
any failure: a failed call changes nothing). The journal is a write-ahead log (``journal_mode=WAL``):
a commit appends to the log and never rewrites pages in place, so a crash mid-commit leaves the last
committed state readable, and readers (``meshchat`` commands looking at a running node's profile) do
not block the writer. ``synchronous=FULL`` fsyncs the log at every commit: ``synchronous=NORMAL``
(the usual WAL pairing) keeps the file consistent but may lose the last commits on a power loss, and
the outbox (a message the application was told is queued) and the seen window (a message must never
be delivered twice) must not go back in time. The cost is one fsync per write call, so callers batch
(``accept`` takes a whole batch of messages).

Failures. ``PRAGMA quick_check`` runs at open, so a damaged file is refused up front rather than
half-way through a session; it reads every page, so opening takes about 1-2 ms per MB of store. Any
``sqlite3.Error`` (a corrupt page, a full disk, a lock held too long) becomes ``StorageError``
naming the store and sqlite's reason; a constraint the caller broke (a known outbox id or ref, an
already-seen id, as ``MemoryStorage`` checks; or a NaN, which sqlite stores as NULL) becomes
``ValueError``.

At rest. Opened with a key (``SqliteStorage(path, key=store_key(identity))``), the file and its log are
encrypted by SQLCipher, and a plaintext store is encrypted in place on that first open; see
``meshchat.store.encrypted``. Without a key the standard library's ``sqlite3`` opens a plain file.

Needs sqlite 3.8.3 or later (partial indexes, ``WITHOUT ROWID``); uses no newer syntax (no
``RETURNING``, no ``STRICT`` tables), so older system sqlites shipped with Python 3.11 read the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from meshchat.errors import StorageError
from meshchat.store import history_sql
from meshchat.store.encrypted import (
    PLAIN_ERRORS,
    check_store_key,
    connect_encrypted,
    damaged_pages,
    is_plaintext_store,
)
from meshchat.store.schema import (
    _CORRUPT_CODES,
    _INBOX_COLUMNS,
    _MAILBOX_COLUMNS,
    _MAILBOX_COLUMNS_NO_ENVELOPE,
    _MIGRATIONS,
    _OUTBOX_COLUMNS,
    _PENDING_WHERE,
    _SCHEMA,
    SCHEMA_VERSION,
    _migrate,
)
from meshchat.store.storage import (
    ConversationEntry,
    HistoryRecord,
    InboxRecord,
    MailboxItem,
    OutboxRecord,
    OutboxStatus,
    SeenEntry,
    StateWrite,
    check_page,
    incoming_history,
)
from meshchat.wire import EnvelopeKind

if TYPE_CHECKING:
    from meshchat.store.storage import Storage

__all__ = ["BUSY_TIMEOUT", "CHUNK", "SCHEMA_VERSION", "STORE_FILE", "SqliteStorage"]

#: The store's file name inside a profile folder (``Node`` and the ``outbox``/``inbox`` commands).
STORE_FILE = "store.db"

#: Seconds a call waits for another connection's write transaction (a CLI command reading a running
#: node's profile) before failing with "database is locked". Transactions here last milliseconds.
BUSY_TIMEOUT = 5.0

#: Host parameters per ``IN (...)`` list. sqlite before 3.32 allows at most 999 per statement; 500
#: keeps well inside that, and each chunk is one indexed lookup, so larger chunks would gain nothing.
CHUNK = 500


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _outbox_row(record: OutboxRecord) -> tuple[object, ...]:
    return (
        record.message_id,
        record.recipient,
        record.envelope,
        record.ref,
        record.seq,
        record.created_at,
        record.expiry,
        record.status.value,
        record.attempts,
        record.next_attempt,
        json.dumps(list(record.stored_on)),
        record.error,
        record.updated_at,
    )


def _update_outbox(db: sqlite3.Connection, records: Sequence[OutboxRecord]) -> None:
    """Replace outbox rows with the same ids, inside the caller's transaction."""
    db.executemany(
        "UPDATE outbox SET recipient = ?, envelope = ?, ref = ?, seq = ?, created_at = ?, "
        "expiry = ?, status = ?, attempts = ?, next_attempt = ?, stored_on = ?, error = ?, "
        "updated_at = ? WHERE message_id = ?",
        [(*_outbox_row(r)[1:], r.message_id) for r in records],
    )


def _write_state(db: sqlite3.Connection, writes: Sequence[StateWrite]) -> None:
    db.executemany("DELETE FROM state WHERE key = ?", [(k,) for k, v in writes if v is None])
    rows = [(k, v) for k, v in writes if v is not None]
    db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", rows)


def _after_prefix(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\xff" * 33  # longer than any id: an upper bound for an all-0xff prefix
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _outbox_record(row: Sequence[Any]) -> OutboxRecord:
    try:
        status = OutboxStatus(row[7])
        stored_on = json.loads(row[10])
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise StorageError(f"outbox row of {bytes(row[0]).hex()} is corrupt: {exc}") from exc
    return OutboxRecord(
        message_id=row[0],
        recipient=row[1],
        envelope=row[2],
        ref=row[3],
        seq=row[4],
        created_at=row[5],
        expiry=row[6],
        status=status,
        attempts=row[8],
        next_attempt=row[9],
        stored_on=tuple(stored_on),
        error=row[11],
        updated_at=row[12],
    )


def _inbox_record(row: Sequence[Any]) -> InboxRecord:
    return InboxRecord(
        number=row[0],
        message_id=row[1],
        sender=row[2],
        seq=row[3],
        body=row[4],
        sent_at_ms=row[5],
        received_at=row[6],
        device=bytes(row[7]),
        to=bytes(row[8]),
    )


def _mailbox_row(i: MailboxItem) -> tuple[object, ...]:
    return (i.number, i.message_id, i.inbox_tag, i.expiry, i.envelope, i.from_peer, i.size, int(i.kind))


def _mailbox_item(row: Sequence[Any]) -> MailboxItem:
    try:
        kind = EnvelopeKind(row[7])
    except ValueError as exc:
        raise StorageError(f"mailbox row of {bytes(row[1]).hex()} is corrupt: {exc}") from exc
    return MailboxItem(
        kind=kind,
        number=row[0],
        message_id=row[1],
        inbox_tag=row[2],
        expiry=row[3],
        envelope=row[4],
        from_peer=row[5],
        size=row[6],
    )


class SqliteStorage:
    """``Storage`` in a sqlite file; see the module docstring.

    One connection, used by one call at a time (a lock serialises calls from several threads).
    Another process may open the same file: a writer waits up to ``BUSY_TIMEOUT`` seconds for the
    other's transaction, then fails with ``StorageError`` ("database is locked").
    """

    def __init__(self, path: str | Path, *, key: bytes | None = None, max_pages: int | None = None) -> None:
        """Open the store at ``path``, creating it (mode 0600) if missing; its folder must exist.

        ``key`` (32 bytes, ``meshchat.store.encrypted.store_key(identity)``) encrypts the file at rest
        with SQLCipher; a plaintext store found at ``path`` is then encrypted in place, once, keeping
        every record. Without a key the file is plain sqlite (the standard library's ``sqlite3``).
        ``max_pages`` caps the file at that many pages (``PRAGMA max_page_count``): past it every
        write fails with "database or disk is full", as on a full disk (for tests).
        Raises ``StorageError`` if the file cannot be opened, cannot be decrypted with ``key``, is not
        a meshchat store, is corrupt, or was written by a newer meshchat; ``ValueError`` for a key
        that is not 32 bytes.
        """
        #: Where the database is.
        self.path = Path(path)
        #: Whether the file is encrypted at rest (opened with a key).
        self.encrypted = key is not None
        self._lock = threading.Lock()
        self._closed = False
        if key is not None:
            check_store_key(key)  # a caller's mistake: ValueError before anything touches the disk
        try:
            # sqlite would create the file with the umask's mode (usually 0644); message metadata
            # and mailbox contents are private, so create it first, readable by its owner only.
            # sqlite gives the -wal and -shm files the mode of the database file.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
        except OSError as exc:
            raise StorageError(f"cannot open store {self.path}: {exc}") from exc
        self._errors = PLAIN_ERRORS
        if key is None:
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        else:
            self._migrate_plaintext()  # encrypting copies a store of this version only
            self._db, self._errors = connect_encrypted(
                self.path, key, timeout=BUSY_TIMEOUT, schema_version=SCHEMA_VERSION
            )
        try:
            self._open(max_pages)
        except BaseException:
            self._db.close()
            raise

    def _migrate_plaintext(self) -> None:
        """Bring a plaintext store of an older schema version (about to be encrypted) up to date."""
        if not is_plaintext_store(self.path):
            return
        plain = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            if int(plain.execute("PRAGMA user_version").fetchone()[0]) in _MIGRATIONS:
                plain.execute("BEGIN IMMEDIATE")
                _migrate(plain)
                plain.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot migrate store {self.path}: {exc}") from exc
        finally:
            plain.close()

    def _open(self, max_pages: int | None) -> None:
        db = self._db
        try:
            problems = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise StorageError(f"store {self.path} is corrupt: {'; '.join(problems)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            if max_pages is not None:
                db.execute(f"PRAGMA max_page_count = {int(max_pages)}")
        except self._errors.error as exc:
            # SQLCipher reports a page that fails its HMAC as a plain "SQL logic error"; ask it which.
            damaged: list[str] = []
            if self.encrypted:
                try:
                    damaged = damaged_pages(db)
                except self._errors.error as check_exc:  # the first error is the one to report
                    exc.add_note(f"cipher_integrity_check failed too: {check_exc}")
            if damaged:
                raise StorageError(f"store {self.path} is corrupt: {'; '.join(damaged)}") from exc
            if exc.sqlite_errorname in _CORRUPT_CODES:
                hint = "" if self.encrypted else " (or encrypted: open it with its identity's key)"
                raise StorageError(f"store {self.path} is corrupt or not a database{hint}: {exc}") from exc
            raise StorageError(f"cannot open store {self.path}: {exc}") from exc
        with self._transaction("open") as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version == 0:
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise StorageError(f"{self.path} is a sqlite database but not a meshchat store")
                for statement in _SCHEMA:
                    db.execute(statement)
                return
            version = _migrate(db)
            if version != SCHEMA_VERSION:
                raise StorageError(
                    f"store {self.path} has schema version {version}; "
                    f"this meshchat reads version {SCHEMA_VERSION}"
                )

    def close(self) -> None:
        """Close the database (idempotent). Later calls raise ``StorageError``."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self, what: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: committed if the body returns, rolled back if anything raises.

        ``sqlite3.IntegrityError`` (a unique constraint: a known id or ref) becomes ``ValueError``,
        any other ``sqlite3.Error`` ``StorageError``; other exceptions pass through, after rollback.
        """
        with self._lock:
            if self._closed:
                raise StorageError(f"store {self.path}: {what}: the store is closed")
            db = self._db
            try:
                # IMMEDIATE takes the write lock up front: a write transaction never fails half-way
                # because another connection wrote first. Reads take a snapshot (several chunks, one view).
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                try:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                except self._errors.error as rollback_exc:
                    exc.add_note(f"rolling back also failed: {rollback_exc}")
                if isinstance(exc, self._errors.integrity):
                    raise ValueError(f"{what}: {exc}") from exc
                if isinstance(exc, self._errors.error):
                    raise StorageError(f"store {self.path}: {what}: {exc}") from exc
                raise

    # --- outbox ----------------------------------------------------------------------------------
    def outbox_add(
        self,
        records: Sequence[OutboxRecord],
        state: Sequence[StateWrite] = (),
        history: Sequence[HistoryRecord] = (),
    ) -> None:
        """See ``Storage``. A known id or ref (or one repeated in ``records``) raises ``ValueError``."""
        rows = [_outbox_row(r) for r in records]
        with self._transaction("outbox_add") as db:
            db.executemany(f"INSERT INTO outbox ({_OUTBOX_COLUMNS}) VALUES ({_marks(13)})", rows)
            _write_state(db, state)
            history_sql.write(db, history)

    def outbox_update(self, records: Sequence[OutboxRecord]) -> None:
        """See ``Storage``. Ids not in the outbox are ignored; a ref another record holds raises
        ``ValueError``. ``last_seq`` keeps what was added (a changed ``seq`` does not lower it)."""
        with self._transaction("outbox_update") as db:
            _update_outbox(db, records)

    def outbox_get(self, message_id: bytes) -> OutboxRecord | None:
        """See ``Storage``."""
        with self._transaction("outbox_get", write=False) as db:
            row = db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE message_id = ?", (message_id,)
            ).fetchone()
        return None if row is None else _outbox_record(row)

    def outbox_by_ref(self, ref: str) -> OutboxRecord | None:
        """See ``Storage``. ``""`` (no ref) finds nothing."""
        if not ref:
            return None
        with self._transaction("outbox_by_ref", write=False) as db:
            # "ref != ''" lets sqlite use the partial unique index outbox_ref.
            row = db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE ref = ? AND ref != ''", (ref,)
            ).fetchone()
        return None if row is None else _outbox_record(row)

    def outbox_with_prefix(self, prefix: bytes, limit: int) -> list[OutboxRecord]:
        """See ``Storage``: a range scan of the primary key, in id order."""
        if not prefix:
            return []
        with self._transaction("outbox_with_prefix", write=False) as db:
            rows = db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE message_id >= ? AND message_id < ? "
                "ORDER BY message_id LIMIT ?",
                (prefix, _after_prefix(prefix), limit),
            ).fetchall()
        return [_outbox_record(row) for row in rows]

    def outbox_pending(self) -> list[OutboxRecord]:
        """See ``Storage``: oldest (first added) first."""
        with self._transaction("outbox_pending", write=False) as db:
            rows = db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE {_PENDING_WHERE} ORDER BY position"
            ).fetchall()
        return [_outbox_record(row) for row in rows]

    def outbox_recent(self, limit: int) -> list[OutboxRecord]:
        """See ``Storage``: newest (last added) first. A negative ``limit`` raises ``ValueError``."""
        if limit < 0:
            raise ValueError(f"outbox_recent: limit must be 0 or more, not {limit}")
        with self._transaction("outbox_recent", write=False) as db:
            rows = db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY position DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_outbox_record(row) for row in rows]

    def last_seq(self, recipient: bytes) -> int:
        """See ``Storage``."""
        with self._transaction("last_seq", write=False) as db:
            row = db.execute("SELECT seq FROM last_seq WHERE recipient = ?", (recipient,)).fetchone()
        return 0 if row is None else int(row[0])

    # --- seen window and inbox -------------------------------------------------------------------
    def seen(self, message_ids: Iterable[bytes]) -> set[bytes]:
        """See ``Storage``."""
        wanted = list(set(message_ids))
        found: set[bytes] = set()
        if not wanted:
            return found
        with self._transaction("seen", write=False) as db:
            for chunk in _chunks(wanted):
                rows = db.execute(
                    f"SELECT message_id FROM seen WHERE message_id IN ({_marks(len(chunk))})", chunk
                )
                found.update(row[0] for row in rows)
        return found

    def accept(
        self,
        entries: Sequence[SeenEntry],
        messages: Sequence[InboxRecord],
        outbox: Sequence[OutboxRecord] = (),
        state: Sequence[StateWrite] = (),
    ) -> list[InboxRecord]:
        """See ``Storage``. An id already seen (or repeated in ``entries``) raises ``ValueError``."""
        seen_rows = [(e.message_id, e.inbox_tag, e.expiry) for e in entries]
        with self._transaction("accept") as db:
            db.executemany("INSERT INTO seen (message_id, inbox_tag, expiry) VALUES (?, ?, ?)", seen_rows)
            _update_outbox(db, outbox)
            _write_state(db, state)
            if not messages:
                return []
            last = int(db.execute("SELECT value FROM counters WHERE name = 'inbox'").fetchone()[0])
            numbered = [dataclasses.replace(m, number=last + n) for n, m in enumerate(messages, 1)]
            db.executemany(
                f"INSERT INTO inbox ({_INBOX_COLUMNS}) VALUES ({_marks(9)})",
                [
                    (
                        m.number,
                        m.message_id,
                        m.sender,
                        m.seq,
                        m.body,
                        m.sent_at_ms,
                        m.received_at,
                        m.device,
                        m.to,
                    )
                    for m in numbered
                ],
            )
            db.execute("UPDATE counters SET value = ? WHERE name = 'inbox'", (numbered[-1].number,))
            history_sql.write(db, incoming_history(numbered))
        return numbered

    # --- history ---------------------------------------------------------------------------------
    def conversation(self, peer: bytes, *, before: int | None, limit: int) -> list[ConversationEntry]:
        """See ``Storage``: one range scan of the ``history_page`` index (``history_sql.page``)."""
        check_page(before, limit)
        with self._transaction("conversation", write=False) as db:
            return history_sql.page(db, peer, before=before, limit=limit)

    def history_get(self, message_id: bytes) -> HistoryRecord | None:
        """See ``Storage``: the first entry with that id."""
        with self._transaction("history_get", write=False) as db:
            return history_sql.first_by_id(db, message_id)

    def state_get(self, key: bytes) -> bytes | None:
        """See ``Storage``."""
        with self._transaction("state_get", write=False) as db:
            row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def state_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """See ``Storage``."""
        with self._transaction("state_prefix", write=False) as db:
            rows = db.execute(
                "SELECT key, value FROM state WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, _after_prefix(prefix)),
            ).fetchall()
        return [(bytes(k), bytes(v)) for k, v in rows]

    def state_put(self, writes: Sequence[StateWrite]) -> None:
        """See ``Storage``."""
        with self._transaction("state_put") as db:
            _write_state(db, writes)

    def seen_items(self, tags: Iterable[bytes]) -> list[tuple[int, bytes]]:
        """See ``Storage``: in the order the entries were accepted."""
        return self._items_of_tags("seen_items", "SELECT rowid, expiry, message_id FROM seen", tags)

    def _items_of_tags(
        self, operation: str, select: str, tags: Iterable[bytes], only: str = ""
    ) -> list[tuple[int, bytes]]:
        """``(expiry, message_id)`` of the rows ``select`` (order key, expiry, id) finds for ``tags``
        (and the condition ``only``, an ``AND ...`` clause of constants).

        In the order of the first selected column (the order rows were written).
        """
        wanted = list(set(tags))
        found: list[tuple[int, int, bytes]] = []
        with self._transaction(operation, write=False) as db:
            for chunk in _chunks(wanted):
                rows = db.execute(f"{select} WHERE inbox_tag IN ({_marks(len(chunk))}){only}", chunk)
                found.extend((int(r[0]), int(r[1]), bytes(r[2])) for r in rows)
        found.sort()
        return [(expiry, message_id) for _, expiry, message_id in found]

    def prune_seen(self, before: int) -> int:
        """See ``Storage``."""
        with self._transaction("prune_seen") as db:
            return db.execute("DELETE FROM seen WHERE expiry < ?", (before,)).rowcount

    def inbox_after(self, number: int, limit: int) -> list[InboxRecord]:
        """See ``Storage``. A negative ``limit`` raises ``ValueError``."""
        if limit < 0:
            raise ValueError(f"inbox_after: limit must be 0 or more, not {limit}")
        with self._transaction("inbox_after", write=False) as db:
            rows = db.execute(
                f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE number > ? ORDER BY number LIMIT ?",
                (number, limit),
            ).fetchall()
        return [_inbox_record(row) for row in rows]

    # --- mailbox ---------------------------------------------------------------------------------
    def mailbox_put(self, items: Sequence[MailboxItem]) -> list[MailboxItem]:
        """See ``Storage``. Ids already held, or repeated in ``items``, are skipped (the first is kept)."""
        with self._transaction("mailbox_put") as db:
            known: set[bytes] = set()
            for chunk in _chunks(list({i.message_id for i in items})):
                rows = db.execute(
                    f"SELECT message_id FROM mailbox WHERE message_id IN ({_marks(len(chunk))})", chunk
                )
                known.update(row[0] for row in rows)
            last = int(db.execute("SELECT value FROM counters WHERE name = 'mailbox'").fetchone()[0])
            stored: list[MailboxItem] = []
            for item in items:
                if item.message_id not in known:
                    known.add(item.message_id)
                    stored.append(dataclasses.replace(item, number=last + len(stored) + 1))
            if not stored:
                return []
            db.executemany(
                f"INSERT INTO mailbox ({_MAILBOX_COLUMNS}) VALUES ({_marks(8)})",
                [_mailbox_row(i) for i in stored],
            )
            db.execute("UPDATE counters SET value = ? WHERE name = 'mailbox'", (stored[-1].number,))
        return stored

    def mailbox_items(
        self, tags: Iterable[bytes], *, kind: EnvelopeKind | None = None
    ) -> list[tuple[int, bytes]]:
        """See ``Storage``: in arrival order."""
        only = "" if kind is None else f" AND kind = {int(kind)}"
        return self._items_of_tags(
            "mailbox_items", "SELECT number, expiry, message_id FROM mailbox", tags, only
        )

    def mailbox_get(self, message_ids: Iterable[bytes]) -> list[MailboxItem]:
        """See ``Storage``: in the order of ``message_ids``."""
        asked = list(message_ids)
        found: dict[bytes, MailboxItem] = {}
        with self._transaction("mailbox_get", write=False) as db:
            for chunk in _chunks(list(set(asked))):
                rows = db.execute(
                    f"SELECT {_MAILBOX_COLUMNS} FROM mailbox WHERE message_id IN ({_marks(len(chunk))})",
                    chunk,
                )
                found.update((item.message_id, item) for item in map(_mailbox_item, rows))
        return [found[i] for i in asked if i in found]

    def mailbox_delete(self, tags: Iterable[bytes], up_to: int) -> list[MailboxItem]:
        """See ``Storage``: the deleted items in arrival order."""
        wanted = list(set(tags))
        gone: list[MailboxItem] = []
        with self._transaction("mailbox_delete") as db:
            for chunk in _chunks(wanted):
                where = f"inbox_tag IN ({_marks(len(chunk))}) AND number <= ?"
                rows = db.execute(f"SELECT {_MAILBOX_COLUMNS} FROM mailbox WHERE {where}", (*chunk, up_to))
                gone.extend(map(_mailbox_item, rows))
                db.execute(f"DELETE FROM mailbox WHERE {where}", (*chunk, up_to))
        gone.sort(key=lambda item: item.number)
        return gone

    def mailbox_withdraw(self, message_ids: Iterable[bytes], from_peer: str) -> list[MailboxItem]:
        """See ``Storage``: the deleted items in arrival order."""
        wanted = list(set(message_ids))
        gone: list[MailboxItem] = []
        with self._transaction("mailbox_withdraw") as db:
            for chunk in _chunks(wanted):
                where = f"message_id IN ({_marks(len(chunk))}) AND from_peer = ?"
                rows = db.execute(
                    f"SELECT {_MAILBOX_COLUMNS} FROM mailbox WHERE {where}", (*chunk, from_peer)
                )
                gone.extend(map(_mailbox_item, rows))
                db.execute(f"DELETE FROM mailbox WHERE {where}", (*chunk, from_peer))
        gone.sort(key=lambda item: item.number)
        return gone

    def mailbox_prune(self, before: int) -> list[MailboxItem]:
        """See ``Storage``: the deleted items in arrival order."""
        sql = f"SELECT {_MAILBOX_COLUMNS} FROM mailbox WHERE expiry < ?"
        with self._transaction("mailbox_prune") as db:
            # Sorted here, not by ORDER BY: that would make sqlite scan the table in number order
            # instead of searching the expiry index for the few items that expired.
            gone = [_mailbox_item(row) for row in db.execute(sql, (before,))]
            db.execute("DELETE FROM mailbox WHERE expiry < ?", (before,))
        gone.sort(key=lambda item: item.number)
        return gone

    def mailbox_all(self) -> list[MailboxItem]:
        """See ``Storage``: in arrival order, ``envelope`` b"" (the envelopes are not read)."""
        with self._transaction("mailbox_all", write=False) as db:
            rows = db.execute(
                f"SELECT {_MAILBOX_COLUMNS_NO_ENVELOPE} FROM mailbox ORDER BY number"
            ).fetchall()
        return [_mailbox_item(row) for row in rows]

    def mailbox_last_number(self) -> int:
        """See ``Storage``."""
        with self._transaction("mailbox_last_number", write=False) as db:
            return int(db.execute("SELECT value FROM counters WHERE name = 'mailbox'").fetchone()[0])


if TYPE_CHECKING:

    def _is_storage(store: SqliteStorage) -> Storage:
        """mypy proves here that ``SqliteStorage`` implements every method of ``Storage``."""
        return store
