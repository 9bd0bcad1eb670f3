"""The store encrypted at rest (``SqliteStorage(path, key=...)``, SQLCipher): what only encryption promises.

The ``Storage`` contract itself runs on the encrypted store in ``test_storage.py`` (its ``store``
fixture's ``sqlcipher`` backend). Here: nothing stored can be found as plaintext in the files on disk
(the database and its write-ahead log, open or closed, after a killed writer); the right key reads
everything back; the wrong key, no key, or a damaged file give ``StorageError``, never a sqlcipher
exception; a plaintext store from before encryption is encrypted once on its first open with a key,
keeping every record, crash-safely and only when nobody else has it open; the store key belongs to
the identity.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshchat.errors import StorageError
from meshchat.identity import Identity
from meshchat.store.encrypted import (
    CIPHER_COMPATIBILITY,
    MIGRATION_SUFFIX,
    STORE_KEY_SIZE,
    is_plaintext_store,
    store_key,
)
from meshchat.store.sqlite import SCHEMA_VERSION, SqliteStorage
from meshchat.store.storage import InboxRecord, MailboxItem, OutboxRecord, OutboxStatus, SeenEntry, Storage

KEY = store_key(Identity(b"\x11" * 32))
OTHER_KEY = store_key(Identity(b"\x22" * 32))
SENDER = b"\x5e" * 32
RECIPIENT = b"\x7e" * 32
TAG = b"\x7a" * 16
#: Bytes that mark each kind of record's secret part, searched for in the raw files.
INBOX_MARK = b"INBOX-BODY-attack-at-dawn"
OUTBOX_MARK = b"OUTBOX-ENVELOPE-sealed-bytes"
MAILBOX_MARK = b"MAILBOX-ENVELOPE-held-bytes"
MARKS = (INBOX_MARK, OUTBOX_MARK, MAILBOX_MARK, SENDER, RECIPIENT, TAG)
ALL = 1_000_000


def mid(n: int) -> bytes:
    return n.to_bytes(32, "big")


def fill(store: Storage, count: int = 30) -> None:
    """``count`` records of every kind, each carrying its mark, in several transactions."""
    for n in range(1, count + 1):
        status = OutboxStatus.DELIVERED if n % 3 == 0 else OutboxStatus.QUEUED
        store.outbox_add(
            [
                OutboxRecord(
                    message_id=mid(n),
                    recipient=RECIPIENT,
                    envelope=OUTBOX_MARK + bytes([n]) * 40,
                    ref=f"ref-{n}",
                    seq=n,
                    created_at=1_700_000_000.0 + n,
                    expiry=1_700_086_400 + n,
                    status=status,
                )
            ]
        )
        store.accept(
            [SeenEntry(message_id=mid(1000 + n), inbox_tag=TAG, expiry=2_000_000_000)],
            [
                InboxRecord(
                    number=0,
                    message_id=mid(1000 + n),
                    sender=SENDER,
                    seq=n,
                    body=INBOX_MARK + f" {n} сообщение".encode(),
                    sent_at_ms=1_700_000_000_000 + n,
                    received_at=1_700_000_001.5 + n,
                )
            ],
        )
        envelope = MAILBOX_MARK + bytes([n]) * 20
        store.mailbox_put(
            [
                MailboxItem(
                    message_id=mid(2000 + n),
                    inbox_tag=TAG,
                    expiry=2_000_000_000,
                    envelope=envelope,
                    from_peer="12D3KooWsender",
                    size=len(envelope),
                )
            ]
        )


def snapshot(store: Storage) -> tuple[object, ...]:
    """Every record a store shows through its methods."""
    return (
        store.outbox_recent(ALL),
        store.outbox_pending(),
        store.last_seq(RECIPIENT),
        store.seen_items([TAG]),
        store.seen([mid(1000 + n) for n in range(ALL // 1000)]),
        store.inbox_after(0, ALL),
        store.mailbox_all(),
        store.mailbox_get(i.message_id for i in store.mailbox_all()),
        store.mailbox_last_number(),
    )


def marks_on_disk(folder: Path) -> dict[str, list[bytes]]:
    """For each file in ``folder`` (store.db, -wal, -shm, anything else), the marks found in its bytes."""
    found: dict[str, list[bytes]] = {}
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        hits = [mark for mark in MARKS if mark in data]
        if hits:
            found[path.name] = hits
    return found


# --- the key -------------------------------------------------------------------------------------------


def test_store_key_is_the_identitys_own_and_not_its_seed() -> None:
    alice = Identity(b"\x11" * 32)
    assert store_key(alice) == store_key(Identity(alice.seed)) == KEY  # the same after a reload
    assert len(KEY) == STORE_KEY_SIZE == 32
    assert alice.seed != KEY
    assert store_key(Identity(b"\x22" * 32)) != KEY


@pytest.mark.parametrize("key", [b"", b"k" * 31, b"k" * 33, "k" * 32])
def test_a_key_of_the_wrong_size_is_a_caller_mistake(tmp_path: Path, key: object) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SqliteStorage(tmp_path / "store.db", key=key)  # type: ignore[arg-type]  # the mistake tested
    assert not (tmp_path / "store.db").exists()


# --- nothing readable on disk ----------------------------------------------------------------------------


def test_the_marks_are_found_in_a_plain_store(tmp_path: Path) -> None:
    """The control for the next test: the search does find plaintext records."""
    with SqliteStorage(tmp_path / "store.db") as store:
        fill(store)
        found = marks_on_disk(tmp_path)
    assert {mark for hits in found.values() for mark in hits} == set(MARKS)


def test_nothing_stored_is_readable_in_the_encrypted_files(tmp_path: Path) -> None:
    with SqliteStorage(tmp_path / "store.db", key=KEY) as store:
        fill(store)
        assert (tmp_path / "store.db-wal").stat().st_size > 0  # the records are in the log now
        assert marks_on_disk(tmp_path) == {}
        assert store.encrypted
    assert marks_on_disk(tmp_path) == {}  # and after the close's checkpoint, in the database file
    assert not is_plaintext_store(tmp_path / "store.db")


def test_the_right_key_reads_everything_back(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path, key=KEY) as store:
        fill(store)
        before = snapshot(store)
    with SqliteStorage(path, key=store_key(Identity(b"\x11" * 32))) as store:
        assert snapshot(store) == before
        assert len(store.inbox_after(0, ALL)) == 30
        assert store.inbox_after(29, 1)[0].body == INBOX_MARK + " 30 сообщение".encode()


def test_the_encrypted_store_uses_wal_and_full_sync_and_is_private(tmp_path: Path) -> None:
    with SqliteStorage(tmp_path / "store.db", key=KEY) as store:
        store.outbox_add([])
        fill(store, 2)
        assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert store._db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        for name in ("store.db", "store.db-wal", "store.db-shm"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from meshchat.store.sqlite import SqliteStorage
    from meshchat.store.storage import OutboxRecord, OutboxStatus

    key = bytes.fromhex(sys.argv[2]) if len(sys.argv) > 2 else None
    store = SqliteStorage(sys.argv[1], key=key)
    for n in range(50):
        store.outbox_add([OutboxRecord(
            message_id=n.to_bytes(32, "big"), recipient=b"r" * 32, envelope=b"OUTBOX-ENVELOPE-sealed-bytes",
            ref=f"ref-{n}", seq=n + 1, created_at=1.0, expiry=2, status=OutboxStatus.QUEUED,
        )])
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint, no atexit
    """
)


def kill_a_writer(path: Path, key: bytes | None) -> None:
    """Run a process that adds 50 outbox records to ``path`` and is killed before closing it."""
    args = [sys.executable, "-c", KILLED_WRITER, str(path)] + ([key.hex()] if key else [])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(args, capture_output=True, check=False, env=env, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert (path.parent / (path.name + "-wal")).stat().st_size > 0  # the records are only in the log


def test_an_encrypted_log_left_by_a_killed_writer_is_unreadable_but_replayed(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    kill_a_writer(path, KEY)
    assert marks_on_disk(tmp_path) == {}
    with SqliteStorage(path, key=KEY) as store:
        assert [r.seq for r in store.outbox_recent(ALL)] == list(range(50, 0, -1))
        assert store.last_seq(b"r" * 32) == 50


def test_a_full_disk_under_encryption_is_a_storage_error_and_loses_nothing(tmp_path: Path) -> None:
    """SQLCipher's errors map as sqlite's do: a full disk is ``StorageError``, the batch rolled back."""
    path = tmp_path / "store.db"
    with SqliteStorage(path, key=KEY, max_pages=60) as store:
        fill(store, 2)
        before = snapshot(store)
        big = [
            MailboxItem(
                message_id=mid(5000 + n),
                inbox_tag=TAG,
                expiry=2_000_000_000,
                envelope=b"y" * 5000,
                from_peer="12D3KooWsender",
                size=5000,
            )
            for n in range(100)
        ]
        with pytest.raises(StorageError, match="full"):
            store.mailbox_put(big)
        assert snapshot(store) == before
    with SqliteStorage(path, key=KEY) as store:
        assert snapshot(store) == before


# --- the wrong key, no key, a damaged file -------------------------------------------------------------


def test_the_wrong_key_is_a_storage_error_and_changes_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path, key=KEY) as store:
        fill(store, 3)
    before = path.read_bytes()
    with pytest.raises(StorageError, match=r"store\.db cannot be decrypted with this identity's key"):
        SqliteStorage(path, key=OTHER_KEY)
    assert path.read_bytes() == before
    assert capfd.readouterr().err == ""  # SQLCipher's own log lines do not reach the user
    with SqliteStorage(path, key=KEY) as store:  # still whole
        assert len(store.inbox_after(0, ALL)) == 3


def test_an_encrypted_store_opened_without_a_key_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    SqliteStorage(path, key=KEY).close()
    with pytest.raises(StorageError, match="encrypted: open it with its identity's key"):
        SqliteStorage(path)


def _page_size(store: SqliteStorage) -> int:
    return int(store._db.execute("PRAGMA page_size").fetchone()[0])


def test_a_damaged_page_in_an_encrypted_store_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path, key=KEY) as store:
        fill(store, 60)
        page = _page_size(store)
    data = bytearray(path.read_bytes())
    assert len(data) >= 10 * page
    data[5 * page + 100 : 5 * page + 116] = bytes(16)  # 16 bytes of one page, deep in the file
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="corrupt"):
        SqliteStorage(path, key=KEY)


def test_a_damaged_first_page_reads_as_undecryptable(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path, key=KEY) as store:
        fill(store, 3)
    data = bytearray(path.read_bytes())
    data[200:232] = random.Random(3).randbytes(32)
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="cannot be decrypted with this identity's key"):
        SqliteStorage(path, key=KEY)


def test_a_file_that_is_not_a_database_is_refused_with_a_key(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not a sqlite database\n" * 200)
    with pytest.raises(StorageError, match="cannot be decrypted"):
        SqliteStorage(path, key=KEY)
    assert path.read_bytes() == b"this is not a sqlite database\n" * 200


# --- migration of a plaintext store ---------------------------------------------------------------------


def test_a_plaintext_store_is_encrypted_once_keeping_every_record(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path) as store:
        fill(store)
        before = snapshot(store)
    assert is_plaintext_store(path)
    with SqliteStorage(path, key=KEY) as store:
        assert snapshot(store) == before
        # Numbering and idempotency go on from where the plaintext store was.
        assert store.outbox_by_ref("ref-7") is not None
        with pytest.raises(ValueError):
            store.accept([SeenEntry(message_id=mid(1001), inbox_tag=TAG, expiry=1)], [])
        assert store.mailbox_last_number() == 30
    assert not is_plaintext_store(path)
    assert marks_on_disk(tmp_path) == {}  # the plaintext file and its log are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]
    assert path.stat().st_mode & 0o777 == 0o600
    encrypted = path.read_bytes()
    with SqliteStorage(path, key=KEY) as store:  # the second open does not migrate again
        assert snapshot(store) == before
    assert path.read_bytes()[:16] == encrypted[:16]  # same salt: the same file
    with pytest.raises(StorageError, match="cannot be decrypted"):
        SqliteStorage(path, key=OTHER_KEY)


def test_a_plaintext_log_left_by_a_killed_writer_is_kept_by_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    kill_a_writer(path, None)
    assert OUTBOX_MARK in (tmp_path / "store.db-wal").read_bytes()
    with SqliteStorage(path, key=KEY) as store:
        assert [r.seq for r in store.outbox_recent(ALL)] == list(range(50, 0, -1))
        assert store.last_seq(b"r" * 32) == 50
    assert marks_on_disk(tmp_path) == {}


def test_an_unfinished_copy_from_a_crashed_migration_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path) as store:
        fill(store, 5)
        before = snapshot(store)
    leftover = tmp_path / ("store.db" + MIGRATION_SUFFIX)
    leftover.write_bytes(b"half a copy")  # a crash before the rename: the plaintext store is whole
    with SqliteStorage(path, key=KEY) as store:
        assert snapshot(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]


def test_a_foreign_database_is_not_encrypted(tmp_path: Path) -> None:
    import sqlite3  # noqa: PLC0415  # the only test that writes a database by hand

    path = tmp_path / "store.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE notes (text TEXT)")
    raw.execute("INSERT INTO notes VALUES ('OUTBOX-ENVELOPE-sealed-bytes')")
    raw.commit()
    raw.close()
    before = path.read_bytes()
    with pytest.raises(StorageError, match="not a meshchat store"):
        SqliteStorage(path, key=KEY)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]


HOLDER = textwrap.dedent(
    """
    import sys
    from meshchat.store.sqlite import SqliteStorage

    store = SqliteStorage(sys.argv[1])
    print("open", flush=True)
    sys.stdin.read()  # holds the store open until the test closes our stdin
    store.close()
    """
)


def test_a_plaintext_store_another_process_has_open_is_not_migrated(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStorage(path) as store:
        fill(store, 3)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        try:
            assert holder.stdout.readline() == b"open\n"
            # The migration waits BUSY_TIMEOUT (5 s) for the other connection, then gives up.
            with pytest.raises(StorageError, match="another process has it open"):
                SqliteStorage(path, key=KEY)
            assert is_plaintext_store(path)
            assert not (tmp_path / ("store.db" + MIGRATION_SUFFIX)).exists()
        finally:
            holder.stdin.close()  # the holder closes its store and exits
            assert holder.wait(timeout=30) == 0
    with SqliteStorage(path, key=KEY) as store:  # once it is closed, the migration goes through
        assert len(store.inbox_after(0, ALL)) == 3


@pytest.fixture
def other_cipher_defaults() -> Iterator[None]:
    """SQLCipher's process-wide defaults set to version 3's, as a later library might change them."""
    import sqlcipher3.dbapi2 as sqlcipher  # noqa: PLC0415  # the library's global state, for this test

    db = sqlcipher.connect(":memory:")
    try:
        db.execute("PRAGMA cipher_default_compatibility = 3")
        yield
    finally:
        db.execute(f"PRAGMA cipher_default_compatibility = {CIPHER_COMPATIBILITY}")
        db.close()


@pytest.mark.usefixtures("other_cipher_defaults")
def test_the_cipher_settings_are_pinned_not_the_librarys_defaults(tmp_path: Path) -> None:
    import sqlcipher3.dbapi2 as sqlcipher  # noqa: PLC0415  # reads the file as another program would

    new, migrated = tmp_path / "new.db", tmp_path / "migrated.db"
    SqliteStorage(migrated).close()
    for path in (new, migrated):
        with SqliteStorage(path, key=KEY) as store:
            fill(store, 2)
        raw = sqlcipher.connect(str(path))
        try:
            raw.execute(f"PRAGMA key = \"x'{KEY.hex()}'\"")
            raw.execute("PRAGMA cipher_compatibility = 4")
            assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,), path.name
            assert raw.execute("PRAGMA cipher_hmac_algorithm").fetchone() == ("HMAC_SHA512",)
        finally:
            raw.close()
