"""The ``history`` table of ``store.db`` (schema version 5, laid out in ``meshchat.store.schema``): rows
written and read inside ``SqliteStorage``'s transactions. Split out of ``sqlite.py`` to keep it short.

A page of one conversation is one range scan of the ``history_page`` index (peer, cursor), backwards
from ``before``, however long the history; each outgoing entry's status is looked up in the outbox by
id (its unique index).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from meshchat.errors import StorageError
from meshchat.store.schema import _HISTORY_COLUMNS
from meshchat.store.storage import ConversationEntry, HistoryRecord, OutboxStatus, conversation_entry

__all__ = ["first_by_id", "page", "write"]

#: Larger than any cursor (sqlite's largest rowid): ``before=None`` pages from the newest.
_NO_CURSOR = 2**63 - 1
_SELECT_JOINED = ", ".join("h." + column for column in _HISTORY_COLUMNS.split(", "))


def write(db: sqlite3.Connection, records: Sequence[HistoryRecord]) -> None:
    """Append ``records`` (their ``cursor`` is the new rowid), in the caller's transaction."""
    db.executemany(
        "INSERT INTO history (peer, message_id, outgoing, body, sent_at_ms, number, device) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(r.peer, r.message_id, int(r.outgoing), r.body, r.sent_at_ms, r.number, r.device) for r in records],
    )


def _record(row: Sequence[Any]) -> HistoryRecord:
    return HistoryRecord(
        cursor=row[0],
        peer=bytes(row[1]),
        message_id=bytes(row[2]),
        outgoing=bool(row[3]),
        body=bytes(row[4]),
        sent_at_ms=row[5],
        number=row[6],
        device=bytes(row[7]),
    )


def page(db: sqlite3.Connection, peer: bytes, *, before: int | None, limit: int) -> list[ConversationEntry]:
    """The ``limit`` newest entries with ``peer`` below cursor ``before``, oldest first (checked by the
    caller: ``storage.check_page``)."""
    rows = db.execute(
        f"SELECT {_SELECT_JOINED}, o.status "
        "FROM history AS h LEFT JOIN outbox AS o ON h.outgoing AND o.message_id = h.message_id "
        "WHERE h.peer = ? AND h.cursor < ? ORDER BY h.cursor DESC LIMIT ?",
        (peer, _NO_CURSOR if before is None else min(before, _NO_CURSOR), limit),
    ).fetchall()
    entries = []
    for row in reversed(rows):
        try:
            status = None if row[8] is None else OutboxStatus(row[8])
        except ValueError as exc:
            raise StorageError(f"outbox row of {bytes(row[2]).hex()} is corrupt: {exc}") from exc
        entries.append(conversation_entry(_record(row), status))
    return entries


def first_by_id(db: sqlite3.Connection, message_id: bytes) -> HistoryRecord | None:
    """The first entry with ``message_id``, if any."""
    row = db.execute(
        f"SELECT {_HISTORY_COLUMNS} FROM history WHERE message_id = ? ORDER BY cursor LIMIT 1", (message_id,)
    ).fetchone()
    return None if row is None else _record(row)
