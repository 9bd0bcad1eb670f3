"""The store at rest: SQLCipher under ``SqliteStorage`` when it is given a key.

What it is: the store key (``store_key``, derived from the identity's secret seed), opening a
SQLCipher connection with that key, and the one-time migration of a plaintext ``store.db`` (profiles
made before stores were encrypted) into an encrypted one. ``SqliteStorage(path, key=...)`` calls it;
nothing else needs to.

What it is not: a second secret. The store is unlocked exactly when the identity is: the key file's
passphrase (argon2id) protects the seed, and the store key is a keyed BLAKE2b of that seed, so no
second passphrase, no second KDF at every open, and nothing extra to back up. A profile made with
``--insecure-no-passphrase`` keeps its seed in plaintext, so its store is only as private as that file.

SQLCipher (4.x, through the ``sqlcipher3`` module of ``sqlcipher3-binary``; settings pinned by
``CIPHER_COMPATIBILITY``) encrypts every page of the database and of its write-ahead log with
AES-256-CBC and authenticates it with HMAC-SHA512: a page changed on disk, or the wrong key, fails
the HMAC and is refused. The key is given as a raw 32-byte key (``PRAGMA key = "x'..'"``), so
SQLCipher skips its PBKDF2 (256,000 iterations by default: 117 ms per open here, in
``benchmarks/bench_store.py``); each database file still gets its own random salt (its first 16
bytes), from which the HMAC key is derived with 2 iterations. Page size stays 4,096 bytes, as plain
sqlite's default. Costs measured by ``benchmarks/bench_store.py`` (plain and encrypted in one run):
outbox writes 0.81x, mailbox resync 0.92x, opening a 1.2 MB store 2.7 -> 7.2 ms (``quick_check``
decrypts every page).

The wrong key and a damaged first page look the same to SQLCipher (the HMAC of page 1 fails), so both
raise ``StorageError`` saying the store cannot be decrypted with this identity's key.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from meshchat.errors import StorageError
from meshchat.localdb import BUSY_TIMEOUT, Connect, plain_connect

if TYPE_CHECKING:
    from types import ModuleType

    from meshchat.identity import Identity

__all__ = [
    "CIPHER_COMPATIBILITY",
    "MIGRATION_SUFFIX",
    "PLAIN_ERRORS",
    "STORE_KEY_SIZE",
    "DriverErrors",
    "check_store_key",
    "connect_encrypted",
    "damaged_pages",
    "encrypt_plaintext_store",
    "encrypted_connect",
    "is_plaintext_store",
    "store_key",
]

#: Bytes in a store key: SQLCipher's raw AES-256 key.
STORE_KEY_SIZE = 32

#: BLAKE2b personalisation (at most 16 bytes) of the store key: no other key meshchat derives from the
#: seed (inbox tags, sealing) can equal it. The "1" names this derivation; a new one gets a new string.
_KEY_PERSON = b"meshchat-store-1"

#: The first 16 bytes of every plaintext sqlite database file. An encrypted file starts with its salt.
_PLAIN_HEADER = b"SQLite format 3\x00"

#: SQLCipher's settings, named by major version: 4 is AES-256-CBC, HMAC-SHA512, 4,096-byte pages (and
#: PBKDF2-HMAC-SHA512 with 256,000 iterations, unused with a raw key). Set on every connection, not
#: left to the library's defaults, so a later SQLCipher with new defaults still reads the stores
#: written now; changing it means migrating every store.
CIPHER_COMPATIBILITY = 4

#: The encrypted copy is written to ``store.db`` + this suffix, then renamed over ``store.db``. A file by
#: that name left by a crash during a migration is an unfinished copy and is deleted.
MIGRATION_SUFFIX = ".encrypting"


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverErrors:
    """The exception classes of the DB-API module behind a connection (``sqlite3`` or ``sqlcipher3``).

    The two modules have the same classes under the same names but neither derives from the other's.
    """

    #: Base class of every database error (``sqlite3.Error`` or ``sqlcipher3.dbapi2.Error``).
    error: type[sqlite3.Error]
    #: A broken constraint (a unique key): the caller's mistake, ``ValueError`` to the caller.
    integrity: type[sqlite3.IntegrityError]


#: The standard library's classes, for a store opened without a key.
PLAIN_ERRORS = DriverErrors(error=sqlite3.Error, integrity=sqlite3.IntegrityError)


def store_key(identity: Identity) -> bytes:
    """The 32-byte key that encrypts ``identity``'s store at rest (``SqliteStorage(path, key=...)``).

    Keyed BLAKE2b of nothing, keyed by the identity's secret seed, with its own personalisation: it is
    unlocked exactly when the key file's passphrase unlocks the identity, and it reveals nothing about
    the seed. A profile made with ``--insecure-no-passphrase`` has its seed in a plaintext key file:
    whoever can read that file can derive this key, so such a store is only as protected as the file
    (against a copied ``store.db`` alone it still is; against a copied profile folder it is not).
    """
    return hashlib.blake2b(b"", key=identity.seed, digest_size=STORE_KEY_SIZE, person=_KEY_PERSON).digest()


def _sqlcipher() -> ModuleType:
    """The ``sqlcipher3`` DB-API module, imported on first use (plain stores never load it)."""
    try:
        import sqlcipher3.dbapi2 as dbapi  # noqa: PLC0415  # loads libsqlcipher: only when a key is given
    except ImportError as exc:
        raise StorageError(
            f"an encrypted store needs the sqlcipher3 module (pip install sqlcipher3-binary): {exc}"
        ) from exc
    return cast("ModuleType", dbapi)


def _key_pragma(key: bytes) -> str:
    # The key is 64 hex digits: nothing in it can end the string early.
    return f"PRAGMA key = \"x'{key.hex()}'\""


def check_store_key(key: bytes) -> None:
    """Raise ``ValueError`` unless ``key`` is a store key (``STORE_KEY_SIZE`` bytes)."""
    if not isinstance(key, bytes) or len(key) != STORE_KEY_SIZE:
        raise ValueError(f"a store key is {STORE_KEY_SIZE} bytes (use store_key(identity))")


def is_plaintext_store(path: Path) -> bool:
    """Whether ``path`` is a plaintext sqlite database (begins with sqlite's header).

    An empty or missing file is not (a new store); an encrypted one begins with its random salt.
    """
    try:
        with open(path, "rb") as f:
            return f.read(len(_PLAIN_HEADER)) == _PLAIN_HEADER
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot read store {path}: {exc}") from exc


def encrypted_connect(key: bytes | None, *, schema_version: int) -> Connect:
    """How a ``meshchat.localdb.LocalDb`` opens its file: under SQLCipher with ``key`` (checked now), or
    plain sqlite without one."""
    if key is None:
        return plain_connect
    check_store_key(key)

    def connect(path: Path) -> tuple[sqlite3.Connection, type[Exception]]:
        db, errors = connect_encrypted(path, key, timeout=BUSY_TIMEOUT, schema_version=schema_version)
        return db, errors.error

    return connect


def connect_encrypted(
    path: Path, key: bytes, *, timeout: float, schema_version: int
) -> tuple[sqlite3.Connection, DriverErrors]:
    """A SQLCipher connection to the store at ``path``, unlocked with ``key``, and its error classes.

    A plaintext store at ``path`` is first encrypted in place (``encrypt_plaintext_store``). The
    connection is in autocommit mode (``isolation_level=None``), shared across threads (the caller
    serialises calls), and has read page 1, so the key is known to be right. Raises ``ValueError`` for
    a key of the wrong size, ``StorageError`` if the file cannot be decrypted with ``key`` (another
    identity's store, or a damaged first page) or cannot be opened.
    """
    check_store_key(key)
    dbapi = _sqlcipher()
    if is_plaintext_store(path):
        encrypt_plaintext_store(path, key, timeout=timeout, schema_version=schema_version)
    try:
        db = dbapi.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    except dbapi.Error as exc:
        raise StorageError(f"cannot open store {path}: {exc}") from exc
    try:
        # SQLCipher logs a failed HMAC to stderr before the error reaches us; the StorageError says it.
        db.execute("PRAGMA cipher_log_level = NONE")
        db.execute(_key_pragma(key))
        db.execute(f"PRAGMA cipher_compatibility = {CIPHER_COMPATIBILITY}")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads page 1: checks the key
    except dbapi.Error as exc:
        db.close()
        if exc.sqlite_errorname == "SQLITE_NOTADB":
            raise StorageError(
                f"{path.name} cannot be decrypted with this identity's key ({path}: the store of "
                "another identity, or a damaged file)"
            ) from exc
        raise StorageError(f"cannot open store {path}: {exc}") from exc
    errors = DriverErrors(error=dbapi.Error, integrity=dbapi.IntegrityError)
    return cast("sqlite3.Connection", db), errors


#: Damaged pages named in an error message, at most: the first few say enough.
_DAMAGED_SHOWN = 5


def damaged_pages(db: sqlite3.Connection) -> list[str]:
    """What ``PRAGMA cipher_integrity_check`` finds wrong on an encrypted connection (``[]``: nothing).

    Reads every page and checks its HMAC: for a store whose open failed, to say why. At most the first
    ``_DAMAGED_SHOWN`` problems. Database errors propagate.
    """
    rows = db.execute("PRAGMA cipher_integrity_check").fetchmany(_DAMAGED_SHOWN)
    return [str(row[0]) for row in rows]


def encrypt_plaintext_store(path: Path, key: bytes, *, timeout: float, schema_version: int) -> None:
    """Replace the plaintext store at ``path`` by an encrypted copy under ``key``, keeping every record.

    Crash-safe: the plaintext log is checkpointed into the file, the copy is written beside it
    (``sqlcipher_export`` into ``path`` + ``MIGRATION_SUFFIX``, mode 0600), fsync'd, and only then the
    plaintext ``-wal``/``-shm`` are removed (empty after the checkpoint) and the copy renamed over
    ``path`` (then the folder fsync'd). A crash before the rename leaves the plaintext store as it was
    (the next open migrates again); after it, the encrypted one.

    Refuses (``StorageError``, nothing changed) a database that is not a meshchat store of
    ``schema_version``, and one that another connection holds open (after waiting ``timeout``
    seconds for it to close: "database is locked").
    """
    check_store_key(key)
    dbapi = _sqlcipher()
    tmp = path.with_name(path.name + MIGRATION_SUFFIX)
    wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
    try:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)  # an unfinished copy from a crash: the plaintext is whole
        os.close(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))  # private from the start
    except OSError as exc:
        raise StorageError(f"cannot encrypt store {path}: {exc}") from exc
    try:
        plain = dbapi.connect(str(path), timeout=timeout, isolation_level=None)
        try:
            _export(plain, path, tmp, key, schema_version)
        finally:
            plain.close()  # the last connection: sqlite checkpoints and deletes the -wal
        if wal.exists() and wal.stat().st_size > 0:
            raise StorageError(f"cannot encrypt store {path}: another process has it open")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        wal.unlink(missing_ok=True)
        shm.unlink(missing_ok=True)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except dbapi.Error as exc:
        tmp.unlink(missing_ok=True)
        hint = " (another process has it open)" if exc.sqlite_errorname == "SQLITE_BUSY" else ""
        raise StorageError(f"cannot encrypt store {path}: {exc}{hint}") from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot encrypt store {path}: {exc}") from exc
    except StorageError:
        tmp.unlink(missing_ok=True)
        raise


def _export(plain: sqlite3.Connection, path: Path, tmp: Path, key: bytes, schema_version: int) -> None:
    """Copy the plaintext database on ``plain`` into the encrypted file ``tmp`` (schema, rows, version)."""
    # Exclusive locking mode keeps the lock taken here until the connection closes: no other process
    # (an old meshchat still running on this profile) writes to the plaintext file while it is copied.
    # In WAL mode every open connection holds a shared lock on the file, so this fails with "database
    # is locked" while another one is open. (Between the close and the rename only the profile's
    # lock keeps others out.)
    plain.execute("PRAGMA locking_mode = EXCLUSIVE")
    plain.execute("BEGIN EXCLUSIVE")
    plain.execute("COMMIT")
    busy = plain.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy is not None and busy[0]:
        raise StorageError(f"cannot encrypt store {path}: another process has it open")
    version = int(plain.execute("PRAGMA user_version").fetchone()[0])
    tables = int(plain.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    if version != schema_version and (version != 0 or tables):
        raise StorageError(
            f"{path} is not a meshchat store of schema version {schema_version} "
            f"(user_version {version}, {tables} schema entries); not encrypting it"
        )
    plain.execute("ATTACH DATABASE ? AS encrypted KEY ?", (str(tmp), f"x'{key.hex()}'"))
    try:
        plain.execute(f"PRAGMA encrypted.cipher_compatibility = {CIPHER_COMPATIBILITY}")
        plain.execute("SELECT sqlcipher_export('encrypted')")
        plain.execute(f"PRAGMA encrypted.user_version = {version}")  # not copied by sqlcipher_export
    finally:
        plain.execute("DETACH DATABASE encrypted")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; elsewhere the rename is as durable as it gets)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
