"""The layout of a profile's ``store.db`` (``SqliteStorage``): tables, indexes, schema version and the
in-place migrations from older versions. Kept apart from ``sqlite.py`` so that module holds only the
mapping of records onto these tables.

Version 3 adds ``state``: small named blobs (1:1 session records, this device's prekey secrets,
control messages not yet handed on, device lists) written in the same transaction as the outbox or
inbox rows they belong with (``Storage.outbox_add``/``accept`` take ``state`` writes). Version 4 adds
the inbox's ``device`` (which of the sender's devices sent a message) and ``recipient`` (set for a
message one of our other devices sent). Version 5 adds ``history``: every chat of every conversation,
both directions, with the text this device sent (the outbox keeps only the sealed envelope), written
in the transaction of the outbox or inbox rows it goes with; the migration from 4 fills it from the
inbox (what this device sent before version 5 is only in sealed envelopes: it cannot be recovered).
"""

from __future__ import annotations

import sqlite3

from meshchat.store.storage import TERMINAL_STATUSES, OutboxStatus
from meshchat.wire import EnvelopeKind

__all__ = ["SCHEMA_VERSION"]

#: The layout this module writes and reads (``PRAGMA user_version``). A file with a higher number was
#: written by a newer meshchat and is refused rather than misread.
SCHEMA_VERSION = 5

#: The terminal statuses as an SQL list, shared by the partial index and the query that must match it
#: for sqlite to use the index.
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES, key=lambda s: s.value))
_PENDING_WHERE = f"status NOT IN ({_TERMINAL_SQL})"
_STATUS_SQL = ", ".join(f"'{s.value}'" for s in OutboxStatus)

_STATE_TABLE = "CREATE TABLE state (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"

#: ``cursor`` is the rowid: ascending across both directions, never reused (rows are never deleted).
#: ``history_page`` (peer, cursor) makes a page of one conversation a range scan, however long the
#: history; ``history_id`` finds a message by id (``mark_read_id``). Not unique: ids are unique in
#: practice (outbox ids, seen ids), but the inbox does not enforce it, and the history follows it.
_HISTORY_SCHEMA = (
    """CREATE TABLE history (
        cursor     INTEGER PRIMARY KEY,
        peer       BLOB NOT NULL,
        message_id BLOB NOT NULL,
        outgoing   INTEGER NOT NULL,
        body       BLOB NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        number     INTEGER NOT NULL,
        device     BLOB NOT NULL)""",
    "CREATE INDEX history_page ON history (peer, cursor)",
    "CREATE INDEX history_id ON history (message_id)",
)

_SCHEMA = (
    f"""CREATE TABLE outbox (
        position     INTEGER PRIMARY KEY,
        message_id   BLOB NOT NULL UNIQUE,
        recipient    BLOB NOT NULL,
        envelope     BLOB NOT NULL,
        ref          TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        created_at   REAL NOT NULL,
        expiry       INTEGER NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ({_STATUS_SQL})),
        attempts     INTEGER NOT NULL,
        next_attempt REAL NOT NULL,
        stored_on    TEXT NOT NULL,
        error        TEXT NOT NULL,
        updated_at   REAL NOT NULL)""",
    "CREATE UNIQUE INDEX outbox_ref ON outbox (ref) WHERE ref != ''",
    f"CREATE INDEX outbox_pending ON outbox (position) WHERE {_PENDING_WHERE}",
    "CREATE TABLE last_seq (recipient BLOB PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
    # max(..., 0): as MemoryStorage, a recipient's last seq is never below 0, the value for "none yet".
    """CREATE TRIGGER outbox_last_seq AFTER INSERT ON outbox BEGIN
        INSERT OR IGNORE INTO last_seq (recipient, seq) VALUES (NEW.recipient, 0);
        UPDATE last_seq SET seq = max(seq, NEW.seq) WHERE recipient = NEW.recipient;
    END""",
    """CREATE TABLE seen (
        message_id BLOB PRIMARY KEY,
        inbox_tag  BLOB NOT NULL,
        expiry     INTEGER NOT NULL)""",
    "CREATE INDEX seen_tag ON seen (inbox_tag)",
    "CREATE INDEX seen_expiry ON seen (expiry)",
    """CREATE TABLE inbox (
        number      INTEGER PRIMARY KEY,
        message_id  BLOB NOT NULL,
        sender      BLOB NOT NULL,
        seq         INTEGER NOT NULL,
        body        BLOB NOT NULL,
        sent_at_ms  INTEGER NOT NULL,
        received_at REAL NOT NULL,
        device      BLOB NOT NULL DEFAULT x'',
        recipient   BLOB NOT NULL DEFAULT x'')""",
    """CREATE TABLE mailbox (
        number     INTEGER PRIMARY KEY,
        message_id BLOB NOT NULL UNIQUE,
        inbox_tag  BLOB NOT NULL,
        expiry     INTEGER NOT NULL,
        envelope   BLOB NOT NULL,
        from_peer  TEXT NOT NULL,
        size       INTEGER NOT NULL,
        kind       INTEGER NOT NULL DEFAULT 1)""",
    "CREATE INDEX mailbox_tag ON mailbox (inbox_tag, number)",
    "CREATE INDEX mailbox_expiry ON mailbox (expiry)",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO counters (name, value) VALUES ('inbox', 0), ('mailbox', 0)",
    _STATE_TABLE,
    *_HISTORY_SCHEMA,
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

#: How a file of an older schema version becomes the next one, in place, inside the open's
#: transaction (a crash leaves the old version whole): ``version -> statements``.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: mailbox items remember their envelope's kind; everything held so far was sealed.
    1: (
        f"ALTER TABLE mailbox ADD COLUMN kind INTEGER NOT NULL DEFAULT {int(EnvelopeKind.SEALED)}",
        "PRAGMA user_version = 2",
    ),
    # 2 -> 3: session records and prekeys (forward secrecy) arrive.
    2: (_STATE_TABLE, "PRAGMA user_version = 3"),
    # 3 -> 4: several devices per person: which device sent a message, and our own sent from another.
    3: (
        "ALTER TABLE inbox ADD COLUMN device BLOB NOT NULL DEFAULT x''",
        "ALTER TABLE inbox ADD COLUMN recipient BLOB NOT NULL DEFAULT x''",
        "PRAGMA user_version = 4",
    ),
    # 4 -> 5: conversation history; what the inbox holds enters it in arrival order (a copy one of our
    # other devices sent is an outgoing entry of the conversation with its recipient).
    4: (
        *_HISTORY_SCHEMA,
        "INSERT INTO history (peer, message_id, outgoing, body, sent_at_ms, number, device) "
        "SELECT CASE WHEN recipient != x'' THEN recipient ELSE sender END, message_id, "
        "recipient != x'', body, sent_at_ms, number, device FROM inbox ORDER BY number",
        "PRAGMA user_version = 5",
    ),
}

_OUTBOX_COLUMNS = (
    "message_id, recipient, envelope, ref, seq, created_at, expiry, status, attempts, next_attempt, "
    "stored_on, error, updated_at"
)
_INBOX_COLUMNS = "number, message_id, sender, seq, body, sent_at_ms, received_at, device, recipient"
_HISTORY_COLUMNS = "cursor, peer, message_id, outgoing, body, sent_at_ms, number, device"
_MAILBOX_COLUMNS = "number, message_id, inbox_tag, expiry, envelope, from_peer, size, kind"
#: ``mailbox_all`` leaves the envelopes on disk: an empty blob stands in for each.
_MAILBOX_COLUMNS_NO_ENVELOPE = "number, message_id, inbox_tag, expiry, x'', from_peer, size, kind"

#: sqlite's result codes for a file that is damaged or is not a database at all.
_CORRUPT_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def _migrate(db: sqlite3.Connection) -> int:
    """Apply ``_MIGRATIONS`` from the file's version on (inside the caller's transaction); the version now."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    while version in _MIGRATIONS:
        for statement in _MIGRATIONS[version]:
            db.execute(statement)
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    return version
