"""The rows of ``meshchat.files.hold.ChunkHold`` in one sqlite file (``<root>/hold.db``).

Only SQL lives here: ``hold.py`` decides (quotas, expiry, what a peer may do) and moves chunk bytes
on the disk; this module reads and writes rows, each writing method one transaction (``BEGIN
IMMEDIATE`` ... ``COMMIT``, ``ROLLBACK`` on any failure, so a failed call changes nothing).

Tables (schema version 1, in ``PRAGMA user_version``):

* ``files``: one row per registered file id, its expiry (indexed: ``expire``, ``next_expiry``).
* ``uploads``: one row per (file, uploading peer): ``declared`` (the file size it announced),
  ``reserved`` (declared plus the row charges, what quotas count) and ``charged`` (what its puts for
  this file cost so far, at most ``declared``). Indexed by peer for the per-peer sums.
* ``tokens``: (file, SHA-256 of a fetch token) and whether that token came back.
* ``chunks``: one row per chunk held on the disk: address and size.
* ``members``: which files name which chunk, who put it there and what it was charged.
* ``totals``: one row kept by triggers: files, chunks, bytes held and bytes reserved, so quota checks
  and ``statistics()`` never sum a table.

WAL journal; ``synchronous=FULL`` when the hold is durable (each commit fsynced), ``NORMAL`` when not
(a process crash loses nothing, a power loss may lose the last commits). Any ``sqlite3.Error``
becomes ``StorageError`` (``DiskFull`` for "database or disk is full"), naming the file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from meshchat.errors import DiskFull, StorageError

__all__ = ["SCHEMA_VERSION", "HoldDatabase", "Totals", "Upload"]

#: The layout this module writes (``PRAGMA user_version``); a file with a higher one is refused.
SCHEMA_VERSION = 1
#: Seconds a write waits for another connection (a command reading the hold) before failing.
BUSY_TIMEOUT = 5.0
#: Host parameters per ``IN (...)`` list (sqlite before 3.32 allows 999 per statement).
IN_CHUNK = 500
#: Files deleted per ``expire`` transaction: a long backlog does not hold one huge transaction.
EXPIRE_BATCH = 256

_SCHEMA = (
    "CREATE TABLE files (file_id BLOB PRIMARY KEY, expiry REAL NOT NULL) WITHOUT ROWID",
    "CREATE INDEX files_expiry ON files (expiry)",
    """CREATE TABLE uploads (
        file_id  BLOB NOT NULL,
        peer     TEXT NOT NULL,
        declared INTEGER NOT NULL,
        reserved INTEGER NOT NULL,
        charged  INTEGER NOT NULL,
        PRIMARY KEY (file_id, peer)) WITHOUT ROWID""",
    "CREATE INDEX uploads_peer ON uploads (peer)",
    """CREATE TABLE tokens (
        file_id    BLOB NOT NULL,
        token_hash BLOB NOT NULL,
        done       INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (file_id, token_hash)) WITHOUT ROWID""",
    "CREATE TABLE chunks (address BLOB PRIMARY KEY, size INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TABLE members (
        file_id BLOB NOT NULL,
        address BLOB NOT NULL,
        peer    TEXT NOT NULL,
        charge  INTEGER NOT NULL,
        PRIMARY KEY (file_id, address)) WITHOUT ROWID""",
    "CREATE INDEX members_address ON members (address)",
    """CREATE TABLE totals (
        id       INTEGER PRIMARY KEY CHECK (id = 0),
        files    INTEGER NOT NULL,
        chunks   INTEGER NOT NULL,
        bytes    INTEGER NOT NULL,
        reserved INTEGER NOT NULL)""",
    "INSERT INTO totals VALUES (0, 0, 0, 0, 0)",
    "CREATE TRIGGER files_in AFTER INSERT ON files BEGIN UPDATE totals SET files = files + 1; END",
    "CREATE TRIGGER files_out AFTER DELETE ON files BEGIN UPDATE totals SET files = files - 1; END",
    """CREATE TRIGGER chunks_in AFTER INSERT ON chunks BEGIN
        UPDATE totals SET chunks = chunks + 1, bytes = bytes + NEW.size; END""",
    """CREATE TRIGGER chunks_out AFTER DELETE ON chunks BEGIN
        UPDATE totals SET chunks = chunks - 1, bytes = bytes - OLD.size; END""",
    """CREATE TRIGGER uploads_in AFTER INSERT ON uploads BEGIN
        UPDATE totals SET reserved = reserved + NEW.reserved; END""",
    """CREATE TRIGGER uploads_change AFTER UPDATE OF reserved ON uploads BEGIN
        UPDATE totals SET reserved = reserved + NEW.reserved - OLD.reserved; END""",
    """CREATE TRIGGER uploads_out AFTER DELETE ON uploads BEGIN
        UPDATE totals SET reserved = reserved - OLD.reserved; END""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Upload:
    """One peer's registration of one file."""

    #: The file size it announced (the most it may put for this file).
    declared: int
    #: What its quotas count: ``declared`` plus the row charges.
    reserved: int
    #: What its puts for this file have cost so far.
    charged: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    """The whole hold at a glance."""

    files: int
    chunks: int
    bytes: int
    reserved: int


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _slices(values: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


class HoldDatabase:
    """The hold's rows; see the module docstring. Not thread-safe: ``ChunkHold`` holds a lock."""

    def __init__(self, path: Path, *, durable: bool) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # private, whatever the umask says
            os.close(fd)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"chunk hold database {path}: cannot open: {exc}") from exc
        try:
            with self._errors():
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            with self._write() as db:
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                if version == 0:
                    for statement in _SCHEMA:
                        db.execute(statement)
                elif version != SCHEMA_VERSION:
                    raise StorageError(
                        f"chunk hold database {path} has schema version {version}; this meshchat "
                        f"reads version {SCHEMA_VERSION}"
                    )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError(f"chunk hold database {self.path} is closed")
        return self._db

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
                raise DiskFull(path=str(self.path), needed=0) from exc
            raise StorageError(f"chunk hold database {self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._conn
        with self._errors():
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _one(self, sql: str, params: Sequence[object] = ()) -> tuple[object, ...] | None:
        with self._errors():
            row: tuple[object, ...] | None = self._conn.execute(sql, params).fetchone()
            return row

    def _int(self, sql: str, params: Sequence[object] = ()) -> int:
        row = self._one(sql, params)
        return 0 if row is None or row[0] is None else int(row[0])  # type: ignore[call-overload]  # sqlite gives int

    # -- reads ------------------------------------------------------------------------------------

    def totals(self) -> Totals:
        row = self._one("SELECT files, chunks, bytes, reserved FROM totals")
        if row is None:
            raise StorageError(f"chunk hold database {self.path} lost its totals row")
        files, chunks, size, reserved = (int(v) for v in row)  # type: ignore[call-overload]  # sqlite ints
        return Totals(files=files, chunks=chunks, bytes=size, reserved=reserved)

    def upload(self, file_id: bytes, peer: str) -> Upload | None:
        row = self._one(
            "SELECT declared, reserved, charged FROM uploads WHERE file_id = ? AND peer = ?", (file_id, peer)
        )
        if row is None:
            return None
        declared, reserved, charged = (int(v) for v in row)  # type: ignore[call-overload]  # sqlite ints
        return Upload(declared=declared, reserved=reserved, charged=charged)

    def token_hashes(self, file_id: bytes) -> set[bytes]:
        with self._errors():
            return {
                bytes(r[0])
                for r in self._conn.execute("SELECT token_hash FROM tokens WHERE file_id = ?", (file_id,))
            }

    def peer_files(self, peer: str) -> int:
        return self._int("SELECT COUNT(*) FROM uploads WHERE peer = ?", (peer,))

    def peer_reserved(self, peer: str) -> int:
        return self._int("SELECT SUM(reserved) FROM uploads WHERE peer = ?", (peer,))

    def peer_charged(self, peer: str) -> int:
        return self._int("SELECT SUM(charged) FROM uploads WHERE peer = ?", (peer,))

    def has_file(self, file_id: bytes) -> bool:
        return self._one("SELECT 1 FROM files WHERE file_id = ?", (file_id,)) is not None

    def file_expiry(self, file_id: bytes) -> float | None:
        row = self._one("SELECT expiry FROM files WHERE file_id = ?", (file_id,))
        return None if row is None else float(row[0])  # type: ignore[arg-type]  # a REAL column

    def is_member(self, file_id: bytes, address: bytes) -> bool:
        return (
            self._one("SELECT 1 FROM members WHERE file_id = ? AND address = ?", (file_id, address))
            is not None
        )

    def chunk_size(self, address: bytes) -> int | None:
        row = self._one("SELECT size FROM chunks WHERE address = ?", (address,))
        return None if row is None else int(row[0])  # type: ignore[call-overload]  # an INTEGER column

    def is_live(self, address: bytes, now: float) -> bool:
        """Whether some file that has not expired names the chunk (which is then held)."""
        return (
            self._one(
                "SELECT 1 FROM members JOIN files USING (file_id) WHERE address = ? AND expiry > ? LIMIT 1",
                (address, now),
            )
            is not None
        )

    def held(self, addresses: Sequence[bytes], file_id: bytes | None) -> set[bytes]:
        found: set[bytes] = set()
        with self._errors():
            for part in _slices(addresses):
                if file_id is None:
                    sql, params = (
                        f"SELECT address FROM chunks WHERE address IN ({_marks(len(part))})",
                        [*part],
                    )
                else:
                    sql = (
                        f"SELECT address FROM members WHERE file_id = ? AND address IN ({_marks(len(part))})"
                    )
                    params = [file_id, *part]
                found.update(bytes(r[0]) for r in self._conn.execute(sql, params))
        return found

    def next_expiry(self) -> float | None:
        row = self._one("SELECT MIN(expiry) FROM files")
        return None if row is None or row[0] is None else float(row[0])  # type: ignore[arg-type]  # REAL

    def expired(self, now: float) -> list[bytes]:
        """Up to ``EXPIRE_BATCH`` file ids whose expiry is at or before ``now``, soonest first."""
        with self._errors():
            rows = self._conn.execute(
                "SELECT file_id FROM files WHERE expiry <= ? ORDER BY expiry LIMIT ?", (now, EXPIRE_BATCH)
            )
            return [bytes(r[0]) for r in rows]

    def chunk_sizes_with_prefix(self, prefix: int) -> dict[bytes, int]:
        """The chunks whose address starts with byte ``prefix`` (one chunk folder's worth) and sizes."""
        low = bytes([prefix])
        with self._errors():
            if prefix == 0xFF:
                rows = self._conn.execute("SELECT address, size FROM chunks WHERE address >= ?", (low,))
            else:
                high = bytes([prefix + 1])
                rows = self._conn.execute(
                    "SELECT address, size FROM chunks WHERE address >= ? AND address < ?", (low, high)
                )
            return {bytes(a): int(s) for a, s in rows}

    # -- writes -----------------------------------------------------------------------------------

    def register(
        self,
        *,
        file_id: bytes,
        peer: str,
        expiry: float,
        declared: int,
        reserved: int,
        new_tokens: Sequence[bytes],
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO files (file_id, expiry) VALUES (?, ?) "
                "ON CONFLICT (file_id) DO UPDATE SET expiry = max(expiry, excluded.expiry)",
                (file_id, expiry),
            )
            db.execute(
                "INSERT INTO uploads (file_id, peer, declared, reserved, charged) VALUES (?, ?, ?, ?, 0) "
                "ON CONFLICT (file_id, peer) DO UPDATE SET declared = excluded.declared, "
                "reserved = excluded.reserved",
                (file_id, peer, declared, reserved),
            )
            db.executemany(
                "INSERT OR IGNORE INTO tokens (file_id, token_hash) VALUES (?, ?)",
                [(file_id, t) for t in new_tokens],
            )

    def add_member(self, *, file_id: bytes, address: bytes, peer: str, charge: int, size: int | None) -> None:
        """Name the chunk in the file, charged to ``peer``; with ``size``, the chunk's row is new too."""
        with self._write() as db:
            if size is not None:
                db.execute("INSERT INTO chunks (address, size) VALUES (?, ?)", (address, size))
            db.execute(
                "INSERT INTO members (file_id, address, peer, charge) VALUES (?, ?, ?, ?)",
                (file_id, address, peer, charge),
            )
            db.execute(
                "UPDATE uploads SET charged = charged + ? WHERE file_id = ? AND peer = ?",
                (charge, file_id, peer),
            )

    def mark_token(self, file_id: bytes, token_hash: bytes) -> int | None:
        """Mark the token as come back; None if the file has no such token, else how many are still out."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE tokens SET done = 1 WHERE file_id = ? AND token_hash = ?", (file_id, token_hash)
            )
            if cursor.rowcount == 0:
                return None
            row = db.execute(
                "SELECT COUNT(*) FROM tokens WHERE file_id = ? AND done = 0", (file_id,)
            ).fetchone()
            return int(row[0])

    def delete_files(self, file_ids: Sequence[bytes]) -> list[bytes]:
        """Delete these files' rows; the addresses of the chunks no file names any more (rows gone too),
        whose files the caller removes."""
        orphans: list[bytes] = []
        with self._write() as db:
            for file_id in file_ids:
                addresses = [
                    bytes(r[0])
                    for r in db.execute("SELECT address FROM members WHERE file_id = ?", (file_id,))
                ]
                db.execute("DELETE FROM members WHERE file_id = ?", (file_id,))
                db.execute("DELETE FROM tokens WHERE file_id = ?", (file_id,))
                db.execute("DELETE FROM uploads WHERE file_id = ?", (file_id,))
                db.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
                for part in _slices(addresses):
                    named = {
                        bytes(r[0])
                        for r in db.execute(
                            f"SELECT DISTINCT address FROM members WHERE address IN ({_marks(len(part))})",
                            [*part],
                        )
                    }
                    gone = [a for a in part if a not in named]
                    db.executemany("DELETE FROM chunks WHERE address = ?", [(a,) for a in gone])
                    orphans.extend(gone)
        return orphans

    def forget_chunks(self, addresses: Sequence[bytes]) -> None:
        """Drop chunks whose bytes are lost: their rows, their memberships, and the charges for them."""
        with self._write() as db:
            for address in addresses:
                members = db.execute(
                    "SELECT file_id, peer, charge FROM members WHERE address = ?", (address,)
                )
                db.executemany(
                    "UPDATE uploads SET charged = charged - ? WHERE file_id = ? AND peer = ?",
                    [(charge, file_id, peer) for file_id, peer, charge in members.fetchall()],
                )
                db.execute("DELETE FROM members WHERE address = ?", (address,))
                db.execute("DELETE FROM chunks WHERE address = ?", (address,))
