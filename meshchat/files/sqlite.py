"""``FileStore``: what a profile knows about files, in ``files.db`` beside ``store.db``.

Files this profile sent (its path, key, manifest and index, so it can serve the chunks without a copy:
a chunk is encrypted again from the file when asked for, which gives the same bytes), the uploads of
them to mailboxes (resumed where they stopped), and attachments it received (manifest, state, which
chunks are already written to the partial file: a download resumes after a crash or a disconnect).

The same choices as ``meshchat.groups.sqlite``: SQLCipher with the identity's store key (the file
keys and names are here), one transaction per call, WAL with ``synchronous=FULL``, ``sqlite3.Error``
turned into ``StorageError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from meshchat.localdb import LocalDb
from meshchat.store.encrypted import encrypted_connect

__all__ = ["FILES_FILE", "FileStore", "ReceivedRecord", "ReceivedState", "SentRecord", "ServedChunk"]

#: The file store's name inside a profile folder.
FILES_FILE = "files.db"
_SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE sent (
        file_id    BLOB PRIMARY KEY,
        path       TEXT NOT NULL,
        size       INTEGER NOT NULL,
        mtime_ns   INTEGER NOT NULL,
        key        BLOB NOT NULL,
        manifest   BLOB NOT NULL,
        message_id BLOB,
        created_at REAL NOT NULL,
        tokens     BLOB NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE holdings (
        file_id  BLOB PRIMARY KEY,
        path     TEXT NOT NULL,
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        key      BLOB NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE index_chunks (
        address  BLOB PRIMARY KEY,
        file_id  BLOB NOT NULL,
        data     BLOB NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE serve (
        address  BLOB PRIMARY KEY,
        file_id  BLOB NOT NULL,
        position INTEGER NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX serve_file ON serve (file_id)",
    """CREATE TABLE uploads (
        file_id    BLOB NOT NULL,
        mailbox    TEXT NOT NULL,
        next_index INTEGER NOT NULL,
        finished   INTEGER NOT NULL,
        PRIMARY KEY (file_id, mailbox)) WITHOUT ROWID""",
    """CREATE TABLE received (
        number      INTEGER PRIMARY KEY,
        message_id  BLOB NOT NULL UNIQUE,
        file_id     BLOB NOT NULL,
        sender      BLOB NOT NULL,
        manifest    BLOB NOT NULL,
        received_at REAL NOT NULL,
        state       TEXT NOT NULL,
        path        TEXT NOT NULL,
        error       TEXT NOT NULL,
        addresses   BLOB NOT NULL DEFAULT x'',
        group_id    BLOB NOT NULL DEFAULT x'')""",
    """CREATE TABLE received_chunks (
        number   INTEGER NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (number, position)) WITHOUT ROWID""",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)


class ReceivedState(Enum):
    """Where a received attachment is."""

    #: Announced; not fetched (over the automatic size, or not asked for yet).
    OFFERED = "offered"
    #: Being fetched (or to be resumed).
    FETCHING = "fetching"
    #: Every byte is in ``path``.
    DONE = "done"
    #: It cannot be fetched (a bad index from the sender); ``error`` says why.
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SentRecord:
    """A file this profile sent."""

    file_id: bytes
    path: str
    size: int
    mtime_ns: int
    key: bytes
    manifest: bytes
    message_id: bytes | None
    created_at: float
    #: Token hashes, one per recipient, 32 bytes each, concatenated.
    tokens: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedRecord:
    """An attachment this profile received."""

    number: int
    message_id: bytes
    file_id: bytes
    sender: bytes
    manifest: bytes
    received_at: float
    state: ReceivedState
    #: Where the bytes go (the partial file while fetching, the final name once done); "" before.
    path: str
    error: str
    #: The group it was sent to, or empty.
    group_id: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedChunk:
    """Where to find a chunk this profile can serve."""

    #: The file (sent, or received and complete) and its path, size, mtime and key.
    file_id: bytes
    path: str
    size: int
    mtime_ns: int
    key: bytes
    #: The data chunk's position, or -1 for an index chunk (``data`` holds it).
    position: int
    data: bytes


_RECEIVED = "number, message_id, file_id, sender, manifest, received_at, state, path, error, group_id"
_SENT = "file_id, path, size, mtime_ns, key, manifest, message_id, created_at, tokens"


class FileStore(LocalDb):
    """See the module docstring. One connection, one call at a time (a lock)."""

    WHAT = "file store"
    SCHEMA = _SCHEMA
    VERSION = _SCHEMA_VERSION

    def __init__(self, path: str | Path, *, key: bytes | None = None) -> None:
        """Open (or create, mode 0600) ``path`` (``":memory:"`` for a node without a profile), encrypted
        with ``key`` (the identity's store key) when one is given."""
        super().__init__(path, connect=encrypted_connect(key, schema_version=_SCHEMA_VERSION))

    # --- sent files --------------------------------------------------------------------------------

    def add_sent(
        self,
        record: SentRecord,
        *,
        index: Sequence[tuple[bytes, bytes]],
        addresses: Sequence[bytes],
        mailboxes: Sequence[str],
    ) -> None:
        """Remember a file about to be sent: its index chunks (address, ciphertext), its data chunks'
        addresses (to serve them), and the mailboxes to upload it to."""
        with self._transaction("add a sent file") as db:
            db.execute(
                f"INSERT OR REPLACE INTO sent ({_SENT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.file_id,
                    record.path,
                    record.size,
                    record.mtime_ns,
                    record.key,
                    record.manifest,
                    record.message_id,
                    record.created_at,
                    record.tokens,
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO holdings VALUES (?, ?, ?, ?, ?)",
                (record.file_id, record.path, record.size, record.mtime_ns, record.key),
            )
            db.executemany(
                "INSERT OR REPLACE INTO index_chunks VALUES (?, ?, ?)",
                [(a, record.file_id, d) for a, d in index],
            )
            db.executemany(
                "INSERT OR IGNORE INTO serve VALUES (?, ?, ?)",
                [(a, record.file_id, i) for i, a in enumerate(addresses)],
            )
            db.executemany(
                "INSERT OR IGNORE INTO uploads VALUES (?, ?, 0, 0)", [(record.file_id, m) for m in mailboxes]
            )

    def set_sent_message(self, file_id: bytes, message_id: bytes) -> None:
        """The message that carried the manifest (for ``MessageHandle`` and the CLI)."""
        with self._transaction("note the message") as db:
            db.execute("UPDATE sent SET message_id = ? WHERE file_id = ?", (message_id, file_id))

    def sent(self, file_id: bytes) -> SentRecord | None:
        """A sent file by id."""
        with self._transaction("read a sent file") as db:
            row = db.execute(f"SELECT {_SENT} FROM sent WHERE file_id = ?", (file_id,)).fetchone()
        return None if row is None else _sent(row)

    def sent_files(self, limit: int = 100) -> list[SentRecord]:
        """The most recently sent files, newest first."""
        with self._transaction("list sent files") as db:
            rows = db.execute(
                f"SELECT {_SENT} FROM sent ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_sent(r) for r in rows]

    def chunk(self, address: bytes) -> ServedChunk | None:
        """Where to find the chunk at ``address``, if this profile can serve it."""
        with self._transaction("find a chunk") as db:
            row = db.execute(
                "SELECT i.file_id, s.path, s.size, s.mtime_ns, s.key, i.data FROM index_chunks i "
                "JOIN holdings s ON s.file_id = i.file_id WHERE i.address = ?",
                (address,),
            ).fetchone()
            if row is not None:
                return ServedChunk(
                    file_id=row[0],
                    path=row[1],
                    size=row[2],
                    mtime_ns=row[3],
                    key=row[4],
                    position=-1,
                    data=row[5],
                )
            row = db.execute(
                "SELECT v.file_id, s.path, s.size, s.mtime_ns, s.key, v.position FROM serve v "
                "JOIN holdings s ON s.file_id = v.file_id WHERE v.address = ?",
                (address,),
            ).fetchone()
        if row is None:
            return None
        return ServedChunk(
            file_id=row[0], path=row[1], size=row[2], mtime_ns=row[3], key=row[4], position=row[5], data=b""
        )

    def index_chunks(self, file_id: bytes) -> list[tuple[bytes, bytes]]:
        """A sent file's index chunks (address, ciphertext)."""
        with self._transaction("read an index") as db:
            return [
                (a, d)
                for a, d in db.execute("SELECT address, data FROM index_chunks WHERE file_id = ?", (file_id,))
            ]

    # --- uploads -------------------------------------------------------------------------------------

    def pending_uploads(self) -> list[tuple[bytes, str, int]]:
        """Uploads not finished: (file id, mailbox PeerId, next data chunk)."""
        with self._transaction("list uploads") as db:
            return [
                tuple(r)
                for r in db.execute("SELECT file_id, mailbox, next_index FROM uploads WHERE finished = 0")
            ]

    def upload_progress(
        self, file_id: bytes, mailbox: str, next_index: int, *, finished: bool = False
    ) -> None:
        """Chunks before ``next_index`` are on ``mailbox``."""
        with self._transaction("note upload progress") as db:
            db.execute(
                "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?)",
                (file_id, mailbox, next_index, int(finished)),
            )

    def uploaded(self, file_id: bytes) -> dict[str, tuple[int, bool]]:
        """Each mailbox's upload of ``file_id``: (next chunk, finished)."""
        with self._transaction("read uploads") as db:
            rows = db.execute(
                "SELECT mailbox, next_index, finished FROM uploads WHERE file_id = ?", (file_id,)
            )
            return {m: (n, bool(f)) for m, n, f in rows}

    # --- received attachments ------------------------------------------------------------------------

    def add_received(
        self,
        *,
        message_id: bytes,
        file_id: bytes,
        sender: bytes,
        manifest: bytes,
        received_at: float,
        group_id: bytes = b"",
    ) -> ReceivedRecord | None:
        """Record an attachment; None if this message was recorded before (a redelivery)."""
        with self._transaction("add an attachment") as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO received (message_id, file_id, sender, manifest, received_at, state, "
                "path, error, group_id) VALUES (?, ?, ?, ?, ?, ?, '', '', ?)",
                (message_id, file_id, sender, manifest, received_at, ReceivedState.OFFERED.value, group_id),
            )
            if cursor.rowcount == 0:
                return None
            row = db.execute(
                f"SELECT {_RECEIVED} FROM received WHERE number = ?", (cursor.lastrowid,)
            ).fetchone()
        return _received(row)

    def received(self, number: int) -> ReceivedRecord | None:
        """An attachment by number."""
        with self._transaction("read an attachment") as db:
            row = db.execute(f"SELECT {_RECEIVED} FROM received WHERE number = ?", (number,)).fetchone()
        return None if row is None else _received(row)

    def received_list(self, *, after: int = 0, limit: int = 100) -> list[ReceivedRecord]:
        """Attachments numbered after ``after``, oldest first."""
        with self._transaction("list attachments") as db:
            rows = db.execute(
                f"SELECT {_RECEIVED} FROM received WHERE number > ? ORDER BY number LIMIT ?", (after, limit)
            ).fetchall()
        return [_received(r) for r in rows]

    def unfinished(self) -> list[ReceivedRecord]:
        """Attachments being fetched (to resume at start)."""
        with self._transaction("list downloads") as db:
            rows = db.execute(
                f"SELECT {_RECEIVED} FROM received WHERE state = ? ORDER BY number",
                (ReceivedState.FETCHING.value,),
            ).fetchall()
        return [_received(r) for r in rows]

    def set_received(
        self, number: int, state: ReceivedState, *, path: str | None = None, error: str = ""
    ) -> None:
        """Move an attachment on."""
        with self._transaction("update an attachment") as db:
            if path is None:
                db.execute(
                    "UPDATE received SET state = ?, error = ? WHERE number = ?", (state.value, error, number)
                )
            else:
                db.execute(
                    "UPDATE received SET state = ?, path = ?, error = ? WHERE number = ?",
                    (state.value, path, error, number),
                )

    def set_addresses(self, number: int, addresses: bytes) -> None:
        """The data chunks' addresses (from the index), kept so a resumed download can check what its
        partial file holds without fetching the index again."""
        with self._transaction("note the index") as db:
            db.execute("UPDATE received SET addresses = ? WHERE number = ?", (addresses, number))

    def addresses(self, number: int) -> bytes:
        """What ``set_addresses`` kept (empty before the index was fetched)."""
        with self._transaction("read the index") as db:
            row = db.execute("SELECT addresses FROM received WHERE number = ?", (number,)).fetchone()
        return b"" if row is None else bytes(row[0])

    def chunks_written(self, number: int, positions: Sequence[int]) -> None:
        """These data chunks were written to the partial file (not necessarily flushed: a resumed
        download checks each against its address before trusting it)."""
        with self._transaction("note written chunks") as db:
            db.executemany(
                "INSERT OR IGNORE INTO received_chunks VALUES (?, ?)", [(number, p) for p in positions]
            )

    def written(self, number: int) -> set[int]:
        """Data chunks already in an attachment's partial file."""
        with self._transaction("read written chunks") as db:
            return {
                p for (p,) in db.execute("SELECT position FROM received_chunks WHERE number = ?", (number,))
            }

    def hold(
        self,
        *,
        file_id: bytes,
        path: str,
        size: int,
        mtime_ns: int,
        key: bytes,
        index: Sequence[tuple[bytes, bytes]],
        addresses: Sequence[bytes],
    ) -> None:
        """Serve a received, complete file to others too (group members fetching it): its path and
        key, its index chunks (address, ciphertext) and its data chunks' addresses."""
        with self._transaction("hold a file") as db:
            db.execute(
                "INSERT OR REPLACE INTO holdings VALUES (?, ?, ?, ?, ?)", (file_id, path, size, mtime_ns, key)
            )
            db.executemany(
                "INSERT OR REPLACE INTO index_chunks VALUES (?, ?, ?)", [(a, file_id, d) for a, d in index]
            )
            db.executemany(
                "INSERT OR IGNORE INTO serve VALUES (?, ?, ?)",
                [(a, file_id, i) for i, a in enumerate(addresses)],
            )

    def moved(self, file_id: bytes, path: str) -> None:
        """A held file is now at ``path`` (the user moved a download)."""
        with self._transaction("note a move") as db:
            db.execute("UPDATE holdings SET path = ? WHERE file_id = ?", (path, file_id))

    def finished(self, number: int, path: str) -> None:
        """The attachment is complete at ``path``: forget its chunk rows."""
        with self._transaction("finish an attachment") as db:
            db.execute(
                "UPDATE received SET state = ?, path = ?, error = '' WHERE number = ?",
                (ReceivedState.DONE.value, path, number),
            )
            db.execute("DELETE FROM received_chunks WHERE number = ?", (number,))
            db.execute("UPDATE received SET addresses = x'' WHERE number = ?", (number,))


def _sent(row: Sequence[Any]) -> SentRecord:
    return SentRecord(
        file_id=row[0],
        path=row[1],
        size=row[2],
        mtime_ns=row[3],
        key=row[4],
        manifest=row[5],
        message_id=row[6],
        created_at=row[7],
        tokens=row[8],
    )


def _received(row: Sequence[Any]) -> ReceivedRecord:
    return ReceivedRecord(
        number=row[0],
        message_id=row[1],
        file_id=row[2],
        sender=row[3],
        manifest=row[4],
        received_at=row[5],
        state=ReceivedState(row[6]),
        path=row[7],
        error=row[8],
        group_id=row[9],
    )
