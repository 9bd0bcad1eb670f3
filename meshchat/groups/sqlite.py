"""``SqliteGroupStorage``: ``GroupStorage`` in ``groups.db`` beside a profile's ``store.db``.

The same choices as ``meshchat.store.sqlite`` (read its docstring): the standard library's
``sqlite3`` (or SQLCipher with the identity's store key: encrypted at rest), one transaction per call
(``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any failure), a write-ahead log with
``synchronous=FULL``, every ``sqlite3.Error`` turned into ``StorageError``. Tables (schema version 1 in
``PRAGMA user_version``): ``groups``, ``group_ops``, ``group_chains``, ``group_messages`` (``number``
is the history order; ``message_id`` UNIQUE: a message is stored once, which is what makes delivery
exactly-once across restarts) and ``group_outbox``.

A separate file rather than more tables in ``store.db``: the groups core commits its own batches,
and nothing needs one transaction across the two (a control message is acknowledged only after the
groups core committed it; a group envelope's seen entry in ``store.db`` only saves a refetch).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meshchat.errors import StorageError
from meshchat.groups.events import MemberStatus
from meshchat.groups.storage import (
    ChainRecord,
    ControlRecord,
    GroupMessageRecord,
    GroupOutRecord,
    GroupRecord,
    GroupWrite,
    StoredGroups,
)
from meshchat.store.encrypted import PLAIN_ERRORS, check_store_key, connect_encrypted

__all__ = ["GROUPS_FILE", "SqliteGroupStorage"]

#: The groups store's file name inside a profile folder.
GROUPS_FILE = "groups.db"
_SCHEMA_VERSION = 1
_BUSY_TIMEOUT = 5.0
_CHUNK = 500

_CONTROLS = """CREATE TABLE IF NOT EXISTS group_controls (
        control_id BLOB PRIMARY KEY,
        recipient  BLOB NOT NULL,
        body       BLOB NOT NULL,
        ttl        INTEGER NOT NULL) WITHOUT ROWID"""
_SCHEMA = (
    """CREATE TABLE groups (
        group_id      BLOB PRIMARY KEY,
        status        TEXT NOT NULL,
        invited_by    BLOB NOT NULL,
        chain         BLOB NOT NULL,
        generation    INTEGER NOT NULL,
        chain_members BLOB NOT NULL,
        updated_at    REAL NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE group_ops (
        position INTEGER PRIMARY KEY,
        group_id BLOB NOT NULL,
        op_id    BLOB NOT NULL UNIQUE,
        data     BLOB NOT NULL)""",
    "CREATE INDEX group_ops_group ON group_ops (group_id, position)",
    """CREATE TABLE group_chains (
        chain_id   BLOB PRIMARY KEY,
        group_id   BLOB NOT NULL,
        sender     BLOB NOT NULL,
        generation INTEGER NOT NULL,
        state      BLOB NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE group_messages (
        number      INTEGER PRIMARY KEY,
        group_id    BLOB NOT NULL,
        message_id  BLOB NOT NULL UNIQUE,
        sender      BLOB NOT NULL,
        body        BLOB NOT NULL,
        ref         TEXT NOT NULL,
        sent_at_ms  INTEGER NOT NULL,
        received_at REAL NOT NULL)""",
    "CREATE INDEX group_messages_group ON group_messages (group_id, number)",
    """CREATE TABLE group_outbox (
        message_id   BLOB PRIMARY KEY,
        group_id     BLOB NOT NULL,
        envelope     BLOB NOT NULL,
        tag          BLOB NOT NULL,
        ref          TEXT NOT NULL,
        created_at   REAL NOT NULL,
        expiry       INTEGER NOT NULL,
        members      INTEGER NOT NULL,
        stored_on    TEXT NOT NULL,
        delivered    BLOB NOT NULL,
        read         BLOB NOT NULL,
        next_attempt REAL NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX group_outbox_ref ON group_outbox (group_id, ref) WHERE ref != ''",
    _CONTROLS,
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)
_OUT_COLUMNS = (
    "message_id, group_id, envelope, tag, ref, created_at, expiry, members, stored_on, delivered, read, "
    "next_attempt"
)
_MESSAGE_COLUMNS = "number, group_id, message_id, sender, body, ref, sent_at_ms, received_at"


class SqliteGroupStorage:
    """See the module docstring. One connection, one call at a time (a lock)."""

    def __init__(self, path: str | Path, *, key: bytes | None = None) -> None:
        """Open (or create, mode 0600) the groups store at ``path``; ``key`` as ``SqliteStorage``'s.
        ``StorageError`` if it cannot be opened, decrypted, or was written by a newer meshchat."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._closed = False
        if key is not None:
            check_store_key(key)
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StorageError(f"cannot open groups store {self.path}: {exc}") from exc
        self._errors = PLAIN_ERRORS
        if key is None:
            self._db = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        else:
            self._db, self._errors = connect_encrypted(
                self.path, key, timeout=_BUSY_TIMEOUT, schema_version=_SCHEMA_VERSION
            )
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except self._errors.error as exc:
            raise StorageError(f"cannot open groups store {self.path}: {exc}") from exc
        if version > _SCHEMA_VERSION:
            raise StorageError(f"groups store {self.path} was written by a newer meshchat (schema {version})")
        if version == 0:
            with self._transaction("create the schema") as db:
                for statement in _SCHEMA:
                    db.execute(statement)
        else:  # a file from before the table
            with self._transaction("add the controls table") as db:
                db.execute(_CONTROLS)

    def close(self) -> None:
        """Close the file (later calls raise ``StorageError``)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> SqliteGroupStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, what: str, *, write: bool = True) -> Iterator[Any]:
        with self._lock:
            if self._closed:
                raise StorageError(f"groups store {self.path}: {what}: the store is closed")
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except self._errors.error as exc:
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except self._errors.error as again:
                        exc.add_note(f"rollback failed too: {again}")
                raise StorageError(f"groups store {self.path}: {what}: {exc}") from exc

    # --- GroupStorage ---------------------------------------------------------------------------------

    def commit(self, write: GroupWrite) -> list[GroupMessageRecord]:
        """See ``GroupStorage.commit``."""
        numbered: list[GroupMessageRecord] = []
        with self._transaction("commit") as db:
            db.executemany(
                "INSERT OR REPLACE INTO groups VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        g.group_id,
                        g.status.value,
                        g.invited_by,
                        g.chain,
                        g.generation,
                        g.chain_members,
                        g.updated_at,
                    )
                    for g in write.groups
                ],
            )
            db.executemany(
                "INSERT OR IGNORE INTO group_ops (group_id, op_id, data) VALUES (?, ?, ?)", write.ops
            )
            db.executemany("DELETE FROM group_chains WHERE chain_id = ?", [(c,) for c in write.drop_chains])
            db.executemany(
                "INSERT OR REPLACE INTO group_chains VALUES (?, ?, ?, ?, ?)",
                [(c.chain_id, c.group_id, c.sender, c.generation, c.state) for c in write.chains],
            )
            for m in write.messages:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO group_messages (group_id, message_id, sender, body, ref, "
                    "sent_at_ms, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (m.group_id, m.message_id, m.sender, m.body, m.ref, m.sent_at_ms, m.received_at),
                )
                if cursor.rowcount == 1:
                    numbered.append(
                        GroupMessageRecord(
                            number=int(cursor.lastrowid or 0),
                            group_id=m.group_id,
                            message_id=m.message_id,
                            sender=m.sender,
                            body=m.body,
                            ref=m.ref,
                            sent_at_ms=m.sent_at_ms,
                            received_at=m.received_at,
                        )
                    )
            db.executemany(
                f"INSERT OR REPLACE INTO group_outbox ({_OUT_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                [_out_row(o) for o in write.outbox],
            )
            db.executemany(
                "INSERT OR REPLACE INTO group_controls VALUES (?, ?, ?, ?)",
                [(c.control_id, c.recipient, c.body, c.ttl) for c in write.controls],
            )
            db.executemany(
                "DELETE FROM group_controls WHERE control_id = ?", [(c,) for c in write.drop_controls]
            )
        return numbered

    def load(self, wall_now: float) -> StoredGroups:
        """See ``GroupStorage.load``."""
        with self._transaction("load", write=False) as db:
            groups = tuple(
                GroupRecord(
                    group_id=r[0],
                    status=MemberStatus(r[1]),
                    invited_by=r[2],
                    chain=r[3],
                    generation=r[4],
                    chain_members=r[5],
                    updated_at=r[6],
                )
                for r in db.execute("SELECT * FROM groups")
            )
            ops: dict[bytes, list[bytes]] = {}
            for group_id, data in db.execute("SELECT group_id, data FROM group_ops ORDER BY position"):
                ops.setdefault(bytes(group_id), []).append(bytes(data))
            chains = tuple(
                ChainRecord(chain_id=r[0], group_id=r[1], sender=r[2], generation=r[3], state=r[4])
                for r in db.execute("SELECT * FROM group_chains")
            )
            outbox = tuple(
                _out_record(r)
                for r in db.execute(
                    f"SELECT {_OUT_COLUMNS} FROM group_outbox WHERE expiry >= ?", (int(wall_now),)
                )
            )
            controls = tuple(
                ControlRecord(control_id=r[0], recipient=r[1], body=r[2], ttl=r[3])
                for r in db.execute("SELECT control_id, recipient, body, ttl FROM group_controls")
            )
        return StoredGroups(groups=groups, ops=ops, chains=chains, outbox=outbox, controls=controls)

    def history(self, group_id: bytes, after: int, limit: int) -> list[GroupMessageRecord]:
        """See ``GroupStorage.history``."""
        with self._transaction("history", write=False) as db:
            rows = db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM group_messages WHERE group_id = ? AND number > ? "
                "ORDER BY number LIMIT ?",
                (group_id, after, limit),
            ).fetchall()
        return [
            GroupMessageRecord(
                number=r[0],
                group_id=r[1],
                message_id=r[2],
                sender=r[3],
                body=r[4],
                ref=r[5],
                sent_at_ms=r[6],
                received_at=r[7],
            )
            for r in rows
        ]

    def has_messages(self, message_ids: Iterable[bytes]) -> set[bytes]:
        """See ``GroupStorage.has_messages``."""
        ids = list(message_ids)
        found: set[bytes] = set()
        with self._transaction("has_messages", write=False) as db:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                found |= {
                    bytes(r[0])
                    for r in db.execute(
                        "SELECT message_id FROM group_messages WHERE message_id IN "
                        f"({', '.join('?' * len(chunk))})",
                        chunk,
                    )
                }
        return found

    def outbox_get(self, message_id: bytes) -> GroupOutRecord | None:
        """See ``GroupStorage.outbox_get``."""
        with self._transaction("outbox_get", write=False) as db:
            row = db.execute(
                f"SELECT {_OUT_COLUMNS} FROM group_outbox WHERE message_id = ?", (message_id,)
            ).fetchone()
        return None if row is None else _out_record(row)

    def outbox_by_ref(self, group_id: bytes, ref: str) -> GroupOutRecord | None:
        """See ``GroupStorage.outbox_by_ref``."""
        if not ref:
            return None
        with self._transaction("outbox_by_ref", write=False) as db:
            row = db.execute(
                f"SELECT {_OUT_COLUMNS} FROM group_outbox WHERE group_id = ? AND ref = ?", (group_id, ref)
            ).fetchone()
        return None if row is None else _out_record(row)


def _out_row(o: GroupOutRecord) -> tuple[object, ...]:
    return (
        o.message_id,
        o.group_id,
        o.envelope,
        o.tag,
        o.ref,
        o.created_at,
        o.expiry,
        o.members,
        json.dumps(list(o.stored_on)),
        o.delivered,
        o.read,
        o.next_attempt,
    )


def _out_record(r: Any) -> GroupOutRecord:
    try:
        stored_on = tuple(json.loads(r[8]))
    except ValueError as exc:
        raise StorageError(f"group outbox row {bytes(r[0]).hex()[:16]} is corrupt: {exc}") from exc
    return GroupOutRecord(
        message_id=r[0],
        group_id=r[1],
        envelope=r[2],
        tag=r[3],
        ref=r[4],
        created_at=r[5],
        expiry=r[6],
        members=r[7],
        stored_on=stored_on,
        delivered=r[9],
        read=r[10],
        next_attempt=r[11],
    )
