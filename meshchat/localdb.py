"""The sqlite files a profile keeps beside ``store.db``: opened, versioned and written one way.

``files.db``, ``documents.db`` and ``credentials.db`` (the wallet) are each a ``LocalDb`` subclass that
adds its own tables and queries. What they share lives here: the file is created with mode 0600; the
connection (plain sqlite, or SQLCipher under the identity's store key: the subclass passes ``connect``)
runs in autocommit mode with WAL and ``synchronous=FULL``; ``PRAGMA user_version`` is the schema version,
a newer one is refused and a new file gets the schema in one transaction; one call at a time (a lock);
every write is one transaction (``_transaction``), or several calls share one (``batch``); database
errors become ``StorageError`` naming the file; a closed file refuses further calls.

This module imports nothing from meshchat but ``errors``, so every layer can build on it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Self

from meshchat.errors import StorageError

__all__ = ["BUSY_TIMEOUT", "Connect", "LocalDb", "plain_connect"]

#: Seconds a write waits for another connection's lock before it fails (``StorageError``).
BUSY_TIMEOUT = 5.0

#: Opens the file at a path: the connection, and the exception class its driver raises.
Connect = Callable[[Path], tuple[sqlite3.Connection, type[Exception]]]


def plain_connect(path: Path) -> tuple[sqlite3.Connection, type[Exception]]:
    """An unencrypted sqlite connection in autocommit mode, shared across threads (calls are serialised)."""
    db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    return db, sqlite3.Error


class LocalDb:
    """One sqlite file of a profile (see the module docstring); subclasses set the three class attributes."""

    #: How errors name the file ("wallet", "file store").
    WHAT: ClassVar[str]
    #: Statements that create the schema in a new file (the last sets ``PRAGMA user_version``).
    SCHEMA: ClassVar[Sequence[str]]
    #: The schema version this code writes.
    VERSION: ClassVar[int]

    def __init__(self, path: str | Path, *, connect: Connect = plain_connect) -> None:
        """Open (or create, mode 0600) ``path`` (``":memory:"`` for tests or a node without a profile).
        ``StorageError`` if it cannot be opened or decrypted, or a newer meshchat wrote it."""
        self.path = Path(path)
        self._lock = threading.RLock()
        self._depth = 0  # > 0 inside ``batch``: calls join its transaction
        self._closed = False
        memory = str(path) == ":memory:"
        try:
            if not memory:
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db, self._error = (plain_connect if memory else connect)(Path(str(path)))
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open {self.WHAT} {self.path}: {exc}") from exc
        try:
            self._prepare()
        except BaseException:
            self._db.close()
            raise

    def _prepare(self) -> None:
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except self._error as exc:
            raise StorageError(f"cannot open {self.WHAT} {self.path}: {exc}") from exc
        if version > self.VERSION:
            raise StorageError(f"{self.WHAT} {self.path} was written by a newer meshchat (schema {version})")
        if version == 0:
            with self._transaction("create the schema") as db:
                for statement in self.SCHEMA:
                    db.execute(statement)

    def close(self) -> None:
        """Close the file (later calls raise ``StorageError``)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def batch(self, what: str) -> Iterator[None]:
        """One transaction around several calls: all of them are written, or (on an exception) none."""
        with self._transaction(what):
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection inside one transaction (or inside the ``batch`` already open), under the lock."""
        with self._lock:
            if self._closed:
                raise StorageError(f"{self.WHAT} {self.path}: {what}: it is closed")
            db = self._db
            if self._depth:  # inside a batch: its transaction commits or rolls back
                try:
                    yield db
                except self._error as exc:
                    raise StorageError(f"{self.WHAT} {self.path}: {what}: {exc}") from exc
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except self._error as exc:
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except self._error as again:
                        exc.add_note(f"rollback failed too: {again}")
                raise StorageError(f"{self.WHAT} {self.path}: {what}: {exc}") from exc
