"""``FileStore`` (files.db): sent files and the chunks they serve, uploads to mailboxes, received
attachments and the chunks already written, in plaintext and under SQLCipher, across a reopen."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshchat.errors import StorageError
from meshchat.files.chunks import CHUNK_SIZE, KEY_SIZE, build_index, cut
from meshchat.files.sqlite import (
    FILES_FILE,
    FileStore,
    ReceivedRecord,
    ReceivedState,
    SentRecord,
    ServedChunk,
)

STORE_KEY = bytes(range(32))
#: A string that must never appear in an encrypted store's files.
SECRET_NAME = "secret-holiday-plans-2026.pdf"


@pytest.fixture(params=[None, STORE_KEY], ids=["plain", "sqlcipher"])
def key(request: pytest.FixtureRequest) -> bytes | None:
    value: bytes | None = request.param
    return value


@pytest.fixture
def store(tmp_path: Path, key: bytes | None) -> Iterator[FileStore]:
    s = FileStore(tmp_path / FILES_FILE, key=key)
    yield s
    s.close()


class SentFile:
    """A real file cut into chunks, as ``send_file`` would record it."""

    def __init__(
        self, folder: Path, size: int, *, created_at: float = 1000.0, name: str = SECRET_NAME
    ) -> None:
        self.path = folder / name
        self.path.write_bytes(os.urandom(size))
        self.key = os.urandom(KEY_SIZE)
        with self.path.open("rb") as f:
            self.addresses = [c.address for c in cut(f, self.key, size)]
        self.index = build_index(self.key, b"".join(self.addresses))
        self.record = SentRecord(
            file_id=self.index.file_id,
            path=str(self.path),
            size=size,
            mtime_ns=self.path.stat().st_mtime_ns,
            key=self.key,
            manifest=b"manifest of " + name.encode(),
            message_id=None,
            created_at=created_at,
            tokens=os.urandom(64),
        )

    def add(self, store: FileStore, mailboxes: tuple[str, ...] = ("M1", "M2")) -> None:
        store.add_sent(
            self.record,
            index=list(zip(self.index.addresses, self.index.chunks, strict=True)),
            addresses=self.addresses,
            mailboxes=mailboxes,
        )


def _received(store: FileStore, n: int, *, at: float = 0.0) -> ReceivedRecord:
    record = store.add_received(
        message_id=bytes([n]) * 16,
        file_id=bytes([n]) * 32,
        sender=b"S" * 32,
        manifest=b"manifest %d" % n,
        received_at=at or float(n),
    )
    assert record is not None
    return record


# --- sent files ----------------------------------------------------------------------------------


def test_a_sent_file_serves_its_index_and_data_chunks(store: FileStore, tmp_path: Path) -> None:
    sent = SentFile(tmp_path, 2 * CHUNK_SIZE + 10)
    sent.add(store)
    assert store.sent(sent.record.file_id) == sent.record
    (index_address,) = sent.index.addresses
    served = store.chunk(index_address)
    assert served == ServedChunk(
        file_id=sent.record.file_id,
        path=str(sent.path),
        size=sent.record.size,
        mtime_ns=sent.record.mtime_ns,
        key=sent.key,
        position=-1,
        data=sent.index.chunks[0],
    )
    for position, address in enumerate(sent.addresses):
        served = store.chunk(address)
        assert served is not None
        assert served.position == position
        assert served.data == b""  # encrypted again from the file when asked for
        assert served.key == sent.key
        assert served.path == str(sent.path)
    assert store.chunk(os.urandom(32)) is None
    assert store.index_chunks(sent.record.file_id) == [(index_address, sent.index.chunks[0])]
    assert store.index_chunks(os.urandom(32)) == []


def test_two_sent_files_are_kept_apart(store: FileStore, tmp_path: Path) -> None:
    first = SentFile(tmp_path, CHUNK_SIZE + 1, created_at=1.0, name="a.bin")
    second = SentFile(tmp_path, 3, created_at=2.0, name="b.bin")
    first.add(store)
    second.add(store)
    found = store.chunk(second.addresses[0])
    assert found is not None
    assert found.file_id == second.record.file_id
    assert found.position == 0
    found = store.chunk(first.addresses[1])
    assert found is not None
    assert found.file_id == first.record.file_id
    assert found.position == 1
    assert [r.file_id for r in store.sent_files()] == [second.record.file_id, first.record.file_id]
    assert [r.file_id for r in store.sent_files(limit=1)] == [second.record.file_id]
    assert store.sent(os.urandom(32)) is None


def test_set_sent_message(store: FileStore, tmp_path: Path) -> None:
    sent = SentFile(tmp_path, 100)
    sent.add(store)
    store.set_sent_message(sent.record.file_id, b"m" * 16)
    record = store.sent(sent.record.file_id)
    assert record is not None
    assert record.message_id == b"m" * 16


def test_upload_progress(store: FileStore, tmp_path: Path) -> None:
    sent = SentFile(tmp_path, 5 * CHUNK_SIZE)
    fid = sent.record.file_id
    sent.add(store)
    assert sorted(store.pending_uploads()) == [(fid, "M1", 0), (fid, "M2", 0)]
    assert store.uploaded(fid) == {"M1": (0, False), "M2": (0, False)}
    store.upload_progress(fid, "M1", 3)
    assert sorted(store.pending_uploads()) == [(fid, "M1", 3), (fid, "M2", 0)]
    store.upload_progress(fid, "M1", 5, finished=True)
    assert store.pending_uploads() == [(fid, "M2", 0)]
    assert store.uploaded(fid) == {"M1": (5, True), "M2": (0, False)}
    # Recording the file again (a retry of send_file) does not reset the uploads.
    sent.add(store, mailboxes=("M1", "M2", "M3"))
    assert store.uploaded(fid) == {"M1": (5, True), "M2": (0, False), "M3": (0, False)}
    assert store.uploaded(os.urandom(32)) == {}


# --- received attachments ---------------------------------------------------------------------------


def test_add_received_once_per_message(store: FileStore) -> None:
    record = store.add_received(
        message_id=b"m" * 16, file_id=b"f" * 32, sender=b"s" * 32, manifest=b"manifest", received_at=12.5
    )
    assert record is not None
    assert record.message_id == b"m" * 16
    assert record.file_id == b"f" * 32
    assert record.sender == b"s" * 32
    assert record.manifest == b"manifest"
    assert record.received_at == 12.5
    assert record.state is ReceivedState.OFFERED
    assert record.path == ""
    assert record.error == ""
    again = store.add_received(
        message_id=b"m" * 16, file_id=b"g" * 32, sender=b"t" * 32, manifest=b"other", received_at=99.0
    )
    assert again is None  # a redelivery: nothing recorded, nothing changed
    assert store.received_list() == [record]
    assert store.received(record.number) == record
    assert store.received(record.number + 1) is None
    # The same file in another message (forwarded, or sent twice) is another attachment.
    other = store.add_received(
        message_id=b"n" * 16, file_id=b"f" * 32, sender=b"s" * 32, manifest=b"manifest", received_at=13.0
    )
    assert other is not None
    assert other.number > record.number


def test_received_list_is_oldest_first_and_pages(store: FileStore) -> None:
    records = [_received(store, n, at=100.0 - n) for n in range(1, 8)]  # received_at decreasing
    numbers = [r.number for r in records]
    assert numbers == sorted(numbers)
    assert store.received_list() == records  # by number, not by time
    assert store.received_list(limit=3) == records[:3]
    assert store.received_list(after=numbers[2], limit=3) == records[3:6]
    assert store.received_list(after=numbers[-1]) == []


def test_set_received_moves_an_attachment_on(store: FileStore) -> None:
    record = _received(store, 1)
    store.set_received(record.number, ReceivedState.FETCHING, path="/dl/part")
    now = store.received(record.number)
    assert now is not None
    assert (now.state, now.path, now.error) == (ReceivedState.FETCHING, "/dl/part", "")
    store.set_received(record.number, ReceivedState.FAILED, error="bad index")
    now = store.received(record.number)
    assert now is not None
    assert (now.state, now.path, now.error) == (ReceivedState.FAILED, "/dl/part", "bad index")  # path kept
    store.set_received(record.number, ReceivedState.OFFERED, path="")
    now = store.received(record.number)
    assert now is not None
    assert (now.state, now.path, now.error) == (ReceivedState.OFFERED, "", "")


def test_written_chunks_and_finish(store: FileStore) -> None:
    one, two = _received(store, 1), _received(store, 2)
    assert store.written(one.number) == set()
    store.chunks_written(one.number, [0, 3])
    store.chunks_written(one.number, [3, 4])  # again: no error, no duplicate
    store.chunks_written(two.number, [7])
    assert store.written(one.number) == {0, 3, 4}
    assert store.written(two.number) == {7}
    store.finished(one.number, "/dl/photo.jpg")
    done = store.received(one.number)
    assert done is not None
    assert (done.state, done.path, done.error) == (ReceivedState.DONE, "/dl/photo.jpg", "")
    assert store.written(one.number) == set()  # chunk rows dropped
    assert store.written(two.number) == {7}  # the other attachment's kept


def test_unfinished_lists_fetching_ones_in_order(store: FileStore) -> None:
    records = [_received(store, n) for n in range(1, 6)]
    assert store.unfinished() == []
    store.set_received(records[3].number, ReceivedState.FETCHING, path="/d/3")
    store.set_received(records[1].number, ReceivedState.FETCHING, path="/d/1")
    store.set_received(records[0].number, ReceivedState.FAILED, error="x")
    store.finished(records[2].number, "/d/2")
    assert [r.number for r in store.unfinished()] == [records[1].number, records[3].number]
    assert all(r.state is ReceivedState.FETCHING for r in store.unfinished())
    store.finished(records[1].number, "/d/1 done")
    assert [r.number for r in store.unfinished()] == [records[3].number]


# --- the file -------------------------------------------------------------------------------------


def test_reopen_keeps_everything(tmp_path: Path, key: bytes | None) -> None:
    path = tmp_path / FILES_FILE
    store = FileStore(path, key=key)
    sent = SentFile(tmp_path, CHUNK_SIZE + 5)
    sent.add(store)
    store.set_sent_message(sent.record.file_id, b"m" * 16)
    store.upload_progress(sent.record.file_id, "M1", 1)
    fetching, done = _received(store, 1), _received(store, 2)
    store.set_received(fetching.number, ReceivedState.FETCHING, path="/dl/.part")
    store.chunks_written(fetching.number, [1])
    store.finished(done.number, "/dl/done.bin")
    before = (store.sent_files(), store.pending_uploads(), store.received_list(), store.unfinished())
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.received_list()

    store = FileStore(path, key=key)
    try:
        assert (
            store.sent_files(),
            store.pending_uploads(),
            store.received_list(),
            store.unfinished(),
        ) == before
        assert store.written(fetching.number) == {1}
        served = store.chunk(sent.addresses[1])
        assert served is not None
        assert served.position == 1
        assert (
            store.add_received(
                message_id=fetching.message_id, file_id=b"x" * 32, sender=b"", manifest=b"", received_at=0.0
            )
            is None
        )  # dedup survives the reopen
        assert _received(store, 3).number > done.number
    finally:
        store.close()


def test_the_file_is_private(tmp_path: Path, key: bytes | None) -> None:
    path = tmp_path / FILES_FILE
    FileStore(path, key=key).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_store_from_a_newer_meshchat_is_refused(tmp_path: Path) -> None:
    path = tmp_path / FILES_FILE
    FileStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with pytest.raises(StorageError, match="newer meshchat"):
        FileStore(path)


def test_an_in_memory_store(tmp_path: Path) -> None:
    store = FileStore(":memory:", key=STORE_KEY)  # a node without a profile: the key is not needed
    try:
        record = _received(store, 1)
        assert store.received_list() == [record]
    finally:
        store.close()
    assert list(tmp_path.iterdir()) == []


# --- encrypted at rest ------------------------------------------------------------------------------


def _on_disk(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith(FILES_FILE))


def test_an_encrypted_store_shows_nothing_on_disk(tmp_path: Path) -> None:
    folder = tmp_path / "profile"
    folder.mkdir()
    sent = SentFile(tmp_path, 100)
    store = FileStore(folder / FILES_FILE, key=STORE_KEY)
    sent.add(store)
    _received(store, 1)
    disk = _on_disk(folder)  # while open: the WAL too
    store.close()
    disk += _on_disk(folder)
    assert not disk.startswith(b"SQLite format 3")
    for secret in (SECRET_NAME.encode(), sent.key, sent.index.chunks[0][:32], b"manifest of"):
        assert secret not in disk
    # The same records in a plaintext store are there to read: the check above can fail.
    plain_folder = tmp_path / "plain"
    plain_folder.mkdir()
    plain = FileStore(plain_folder / FILES_FILE)
    sent.add(plain)
    plain.close()
    plain_disk = _on_disk(plain_folder)
    assert SECRET_NAME.encode() in plain_disk
    assert sent.key in plain_disk


def test_the_wrong_key_or_no_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / FILES_FILE
    store = FileStore(path, key=STORE_KEY)
    _received(store, 1)
    store.close()
    with pytest.raises(StorageError):
        FileStore(path, key=bytes(32))
    with pytest.raises(StorageError):
        FileStore(path)
    with pytest.raises(ValueError, match="32 bytes"):
        FileStore(path, key=b"short")
    store = FileStore(path, key=STORE_KEY)  # nothing was damaged by the attempts
    try:
        assert len(store.received_list()) == 1
    finally:
        store.close()


def test_a_plaintext_store_is_encrypted_in_place_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / FILES_FILE
    plain = FileStore(path)
    record = _received(plain, 1)
    plain.chunks_written(record.number, [0, 2])
    plain.close()
    assert path.read_bytes().startswith(b"SQLite format 3")
    store = FileStore(path, key=STORE_KEY)
    try:
        assert not path.read_bytes().startswith(b"SQLite format 3")
        assert store.received_list() == [record]
        assert store.written(record.number) == {0, 2}
    finally:
        store.close()
