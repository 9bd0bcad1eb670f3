"""The mailbox's chunk hold (issue 14, FILES.md "Fetch tokens"): quotas, deletion once every recipient
fetched or at expiry, crash safety of the chunk files, a full disk, and a model-checked state machine."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import meshchat.files.hold as hold_module
from meshchat.errors import ChunkMismatch, DecodeError, DiskFull, QuotaExceeded, TooLarge, UnknownFile
from meshchat.files.hold import (
    MAX_CHUNK_WIRE,
    MIN_CHUNK_CHARGE,
    REGISTRATION_CHARGE,
    TOKEN_CHARGE,
    ChunkHold,
    HoldLimits,
    HoldRefusal,
)

NOW = 1_800_000_000.0
DAY = 86400.0
ALICE = "12D3KooWAlice"
BOB = "12D3KooWBob"
CAROL = "12D3KooWCarol"


def chunk(seed: int, size: int = 2048) -> tuple[bytes, bytes]:
    """(address, data) of a pseudo-random chunk."""
    data = hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)
    return hashlib.sha256(data).digest(), data


def file_id(n: int) -> bytes:
    return hashlib.sha256(b"file %d" % n).digest()


def tokens(n: int, count: int) -> list[bytes]:
    return [hashlib.blake2b(b"%d/%d" % (n, i), digest_size=16).digest() for i in range(count)]


def hashes(toks: list[bytes]) -> list[bytes]:
    return [hashlib.sha256(t).digest() for t in toks]


def chunk_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "chunks").rglob("*") if p.is_file())


def register(
    hold: ChunkHold, peer: str, n: int, *, size: int = 64 * 1024, toks: int = 2, ttl: float = DAY
) -> None:
    hold.register(
        peer,
        file_id=file_id(n),
        expiry=NOW + ttl,
        token_hashes=hashes(tokens(n, toks)),
        total_bytes=size,
        now=NOW,
    )


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[ChunkHold]:
    h = ChunkHold(tmp_path / "hold", durable=False)
    yield h
    h.close()


def test_register_put_get_round_trip(hold: ChunkHold) -> None:
    register(hold, ALICE, 1)
    stored = [chunk(i) for i in range(3)]
    assert [hold.put(ALICE, file_id=file_id(1), address=a, data=d, now=NOW) for a, d in stored] == [True] * 3
    assert hold.put(ALICE, file_id=file_id(1), address=stored[0][0], data=stored[0][1], now=NOW) is False
    for address, data in stored:
        assert hold.get(address, now=NOW + 1) == data
    assert hold.get(chunk(99)[0], now=NOW) is None
    assert hold.has([chunk(99)[0], stored[2][0], stored[0][0]]) == [stored[2][0], stored[0][0]]
    stats = hold.statistics()
    assert (stats.files, stats.chunks, stats.bytes, stats.stored, stats.served) == (1, 3, 3 * 2048, 3, 3)
    assert stats.reserved == 64 * 1024 + REGISTRATION_CHARGE + 2 * TOKEN_CHARGE
    assert len(chunk_files(hold.root)) == 3
    address, data = stored[1]
    assert (hold.root / "chunks" / address.hex()[:2] / address.hex()).read_bytes() == data


def test_put_without_register_is_unknown_file(hold: ChunkHold) -> None:
    address, data = chunk(1)
    with pytest.raises(UnknownFile):
        hold.put(ALICE, file_id=file_id(1), address=address, data=data, now=NOW)
    assert hold.statistics().refused == {HoldRefusal.UNKNOWN_FILE: 1}
    assert chunk_files(hold.root) == []


def test_mismatching_hash_stores_nothing(hold: ChunkHold) -> None:
    register(hold, ALICE, 1)
    address, data = chunk(1)
    with pytest.raises(ChunkMismatch) as caught:
        hold.put(ALICE, file_id=file_id(1), address=address, data=data[:-1] + b"\x00", now=NOW)
    assert caught.value.source == ALICE and caught.value.address == address
    assert hold.get(address, now=NOW) is None and hold.has([address]) == []
    assert hold.statistics().chunks == 0 and chunk_files(hold.root) == []
    assert hold.statistics().refused == {HoldRefusal.CHUNK_MISMATCH: 1}


def test_bad_sizes_are_refused(hold: ChunkHold) -> None:
    with pytest.raises(DecodeError):
        hold.register(ALICE, file_id=b"short", expiry=NOW + 10, token_hashes=[], total_bytes=10, now=NOW)
    with pytest.raises(DecodeError):
        hold.register(
            ALICE, file_id=file_id(1), expiry=NOW + 10, token_hashes=[b"x" * 16], total_bytes=10, now=NOW
        )
    with pytest.raises(DecodeError):
        hold.register(ALICE, file_id=file_id(1), expiry=NOW, token_hashes=[], total_bytes=10, now=NOW)
    with pytest.raises(DecodeError):
        hold.register(
            ALICE, file_id=file_id(1), expiry=float("nan"), token_hashes=[], total_bytes=10, now=NOW
        )
    with pytest.raises(DecodeError):
        hold.register(ALICE, file_id=file_id(1), expiry=NOW + 10, token_hashes=[], total_bytes=0, now=NOW)
    with pytest.raises(TooLarge):
        hold.register(
            ALICE, file_id=file_id(1), expiry=NOW + 10, token_hashes=[], total_bytes=3 * 1024**3, now=NOW
        )
    with pytest.raises(ValueError, match="finite"):  # the caller's clock, not a peer's input
        hold.register(
            ALICE, file_id=file_id(1), expiry=NOW + 10, token_hashes=[], total_bytes=10, now=float("nan")
        )
    assert hold.statistics().files == 0
    register(hold, ALICE, 1)
    big = os.urandom(MAX_CHUNK_WIRE + 1)
    with pytest.raises(TooLarge):
        hold.put(ALICE, file_id=file_id(1), address=hashlib.sha256(big).digest(), data=big, now=NOW)
    assert hold.statistics().files == 1 and hold.statistics().chunks == 0


def test_too_many_tokens(tmp_path: Path) -> None:
    with ChunkHold(tmp_path, HoldLimits(max_tokens=4), durable=False) as hold:
        with pytest.raises(TooLarge):
            register(hold, ALICE, 1, toks=5)
        assert hold.statistics().files == 0
        register(hold, ALICE, 1, toks=3)
        # Tokens add up across registrations of the same file (by anyone): 3 known + 2 new > 4.
        with pytest.raises(TooLarge):
            hold.register(
                BOB,
                file_id=file_id(1),
                expiry=NOW + 10,
                token_hashes=hashes(tokens(7, 2)),
                total_bytes=1,
                now=NOW,
            )
        register(hold, ALICE, 1, toks=3)  # the same three again: idempotent
        assert hold.statistics().refused[HoldRefusal.TOO_LARGE] == 2


def test_quota_per_peer(tmp_path: Path) -> None:
    limits = HoldLimits(per_peer_bytes=20_000, total_bytes=1_000_000, max_files_per_peer=5)
    with ChunkHold(tmp_path, limits, durable=False) as hold:
        register(hold, ALICE, 1, size=10_000)
        with pytest.raises(QuotaExceeded) as caught:
            register(hold, ALICE, 2, size=10_000)
        assert caught.value.limit == 20_000
        register(hold, BOB, 2, size=10_000)  # another peer has its own quota
        # Puts are bounded by what was reserved for the file: 4 chunks of 2,048 fit in 10,000, 5 do not.
        for i in range(4):
            hold.put(ALICE, file_id=file_id(1), address=chunk(i)[0], data=chunk(i)[1], now=NOW)
        with pytest.raises(QuotaExceeded):
            hold.put(ALICE, file_id=file_id(1), address=chunk(4)[0], data=chunk(4)[1], now=NOW)
        # A peer that did not register the file reserved nothing for it.
        with pytest.raises(QuotaExceeded):
            hold.put(CAROL, file_id=file_id(1), address=chunk(5)[0], data=chunk(5)[1], now=NOW)
        # A tiny chunk is charged MIN_CHUNK_CHARGE: 10,000 bytes hold at most 9 of them.
        register(hold, CAROL, 3, size=10_000, toks=0)
        tiny = [hashlib.sha256(bytes([i])).digest() for i in range(12)]
        accepted = 0
        for i, address in enumerate(tiny):
            try:
                hold.put(CAROL, file_id=file_id(3), address=address, data=bytes([i]), now=NOW)
                accepted += 1
            except QuotaExceeded:
                break
        assert accepted == 10_000 // MIN_CHUNK_CHARGE
        assert hold.statistics().chunks == 4 + accepted
        assert len(chunk_files(tmp_path)) == 4 + accepted


def test_quota_files_per_peer(tmp_path: Path) -> None:
    with ChunkHold(tmp_path, HoldLimits(max_files_per_peer=2), durable=False) as hold:
        register(hold, ALICE, 1, size=100)
        register(hold, ALICE, 2, size=100)
        with pytest.raises(QuotaExceeded):
            register(hold, ALICE, 3, size=100)
        register(hold, ALICE, 2, size=100)  # again: not a new file
        assert hold.statistics().files == 2


def test_quota_total(tmp_path: Path) -> None:
    limits = HoldLimits(per_peer_bytes=30_000, total_bytes=50_000)
    with ChunkHold(tmp_path, limits, durable=False) as hold:
        register(hold, ALICE, 1, size=20_000)
        register(hold, BOB, 2, size=20_000)
        with pytest.raises(QuotaExceeded) as caught:
            register(hold, CAROL, 3, size=20_000)
        assert caught.value.limit == 50_000 and caught.value.used > 50_000
        assert hold.statistics().reserved <= 50_000
        # Once a file goes, its reservation is free again.
        assert hold.expire(now=NOW + 2 * DAY) == 2
        register(hold, CAROL, 3, size=20_000)
        assert hold.statistics().refused[HoldRefusal.QUOTA] == 1


def test_quota_total_bytes_when_the_limits_shrink(tmp_path: Path) -> None:
    with ChunkHold(tmp_path, HoldLimits(total_bytes=100_000), durable=False) as hold:
        register(hold, ALICE, 1, size=50_000)
        for i in range(3):
            hold.put(ALICE, file_id=file_id(1), address=chunk(i)[0], data=chunk(i)[1], now=NOW)
    with ChunkHold(tmp_path, HoldLimits(total_bytes=8000), durable=False) as hold:
        with pytest.raises(QuotaExceeded):
            hold.put(ALICE, file_id=file_id(1), address=chunk(3)[0], data=chunk(3)[1], now=NOW)
        assert hold.statistics().bytes == 3 * 2048


def test_expiry_deletes_files_and_chunks(hold: ChunkHold) -> None:
    register(hold, ALICE, 1, ttl=100)
    register(hold, BOB, 2, ttl=200)
    for i in range(3):
        hold.put(ALICE, file_id=file_id(1), address=chunk(i)[0], data=chunk(i)[1], now=NOW)
    hold.put(BOB, file_id=file_id(2), address=chunk(10)[0], data=chunk(10)[1], now=NOW)
    assert hold.next_expiry() == NOW + 100
    assert hold.get(chunk(0)[0], now=NOW + 100) is None  # expired: gone for get even before expire
    assert hold.expire(now=NOW + 99) == 0
    assert hold.expire(now=NOW + 100) == 1
    assert hold.next_expiry() == NOW + 200
    assert chunk_files(hold.root) == [hold.root / "chunks" / chunk(10)[0].hex()[:2] / chunk(10)[0].hex()]
    with pytest.raises(UnknownFile):
        hold.put(ALICE, file_id=file_id(1), address=chunk(5)[0], data=chunk(5)[1], now=NOW + 100)
    assert hold.expire(now=NOW + 1000) == 1
    assert hold.next_expiry() is None and chunk_files(hold.root) == []
    stats = hold.statistics()
    assert (stats.files, stats.chunks, stats.bytes, stats.reserved, stats.deleted_expired) == (0, 0, 0, 0, 2)


def test_expiry_is_clamped_to_max_ttl(tmp_path: Path) -> None:
    with ChunkHold(tmp_path, HoldLimits(max_ttl=1000.0), durable=False) as hold:
        register(hold, ALICE, 1, ttl=365 * DAY)
        assert hold.next_expiry() == NOW + 1000.0
        # Registering again later moves the expiry, never past now + max_ttl.
        hold.register(
            ALICE, file_id=file_id(1), expiry=NOW + 1e9, token_hashes=[], total_bytes=1, now=NOW + 500
        )
        assert hold.next_expiry() == NOW + 1500.0


def test_done_deletes_after_the_last_token_only(hold: ChunkHold) -> None:
    register(hold, ALICE, 1, toks=3)
    address, data = chunk(1)
    hold.put(ALICE, file_id=file_id(1), address=address, data=data, now=NOW)
    first, second, third = tokens(1, 3)
    assert hold.done(file_id=file_id(1), token=first, now=NOW) is False
    assert hold.done(file_id=file_id(1), token=first, now=NOW) is False  # again: still two out
    assert hold.done(file_id=file_id(1), token=second, now=NOW) is False
    assert hold.get(address, now=NOW) == data
    assert hold.done(file_id=file_id(1), token=third, now=NOW) is True
    assert hold.get(address, now=NOW) is None and chunk_files(hold.root) == []
    stats = hold.statistics()
    assert (stats.files, stats.deleted_done, stats.refused) == (0, 1, {})


def test_a_wrong_token_is_counted_not_raised(hold: ChunkHold) -> None:
    register(hold, ALICE, 1, toks=1)
    assert hold.done(file_id=file_id(1), token=b"\x00" * 16, now=NOW) is False
    assert hold.done(file_id=file_id(2), token=tokens(1, 1)[0], now=NOW) is False
    assert hold.done(file_id=file_id(1), token=b"short", now=NOW) is False
    assert hold.done(file_id=b"", token=tokens(1, 1)[0], now=NOW) is False
    assert hold.done(file_id=file_id(1), token=tokens(1, 1)[0], now=NOW + DAY) is False  # expired
    assert hold.statistics().refused == {HoldRefusal.UNKNOWN_TOKEN: 5}
    assert hold.statistics().files == 1


def test_restart_keeps_everything(tmp_path: Path) -> None:
    with ChunkHold(tmp_path, durable=True) as hold:
        register(hold, ALICE, 1, toks=2)
        for i in range(3):
            hold.put(ALICE, file_id=file_id(1), address=chunk(i)[0], data=chunk(i)[1], now=NOW)
        assert hold.done(file_id=file_id(1), token=tokens(1, 2)[0], now=NOW) is False
        before = hold.statistics()
    with ChunkHold(tmp_path) as hold:
        after = hold.statistics()
        assert (after.files, after.chunks, after.bytes, after.reserved) == (
            before.files,
            before.chunks,
            before.bytes,
            before.reserved,
        )
        for i in range(3):
            assert hold.get(chunk(i)[0], now=NOW) == chunk(i)[1]
        assert hold.next_expiry() == NOW + DAY
        # The first token's return survived the restart: the second is the last.
        assert hold.done(file_id=file_id(1), token=tokens(1, 2)[1], now=NOW) is True
        assert chunk_files(tmp_path) == []


def test_open_removes_orphans_and_forgets_lost_chunks(tmp_path: Path) -> None:
    with ChunkHold(tmp_path, durable=False) as hold:
        register(hold, ALICE, 1)
        for i in range(2):
            hold.put(ALICE, file_id=file_id(1), address=chunk(i)[0], data=chunk(i)[1], now=NOW)
    # A crash after the chunk file was written but before its row was committed; another mid-write.
    orphan, data = chunk(7)
    folder = tmp_path / "chunks" / orphan.hex()[:2]
    folder.mkdir(exist_ok=True)
    (folder / orphan.hex()).write_bytes(data)
    (folder / (chunk(8)[0].hex() + ".tmp")).write_bytes(b"half a chunk")
    # A chunk file that vanished (power loss before the rename reached the disk).
    lost = chunk(1)[0]
    (tmp_path / "chunks" / lost.hex()[:2] / lost.hex()).unlink()
    with ChunkHold(tmp_path, durable=False) as hold:
        assert chunk_files(tmp_path) == [tmp_path / "chunks" / chunk(0)[0].hex()[:2] / chunk(0)[0].hex()]
        assert hold.get(orphan, now=NOW) is None
        assert hold.has([chunk(0)[0], lost], file_id=file_id(1)) == [chunk(0)[0]]
        stats = hold.statistics()
        assert (stats.chunks, stats.bytes, stats.refused) == (1, 2048, {HoldRefusal.CHUNK_LOST: 1})
        # The uploader is not charged for the lost chunk: it puts it again within its reservation.
        assert hold.put(ALICE, file_id=file_id(1), address=lost, data=chunk(1)[1], now=NOW) is True


def test_a_chunk_file_removed_while_running_is_forgotten(hold: ChunkHold) -> None:
    register(hold, ALICE, 1)
    address, data = chunk(1)
    hold.put(ALICE, file_id=file_id(1), address=address, data=data, now=NOW)
    (hold.root / "chunks" / address.hex()[:2] / address.hex()).unlink()
    assert hold.get(address, now=NOW) is None
    assert hold.has([address]) == [] and hold.statistics().bytes == 0
    assert hold.put(ALICE, file_id=file_id(1), address=address, data=data, now=NOW) is True


def test_a_shared_chunk_survives_deleting_one_file(hold: ChunkHold) -> None:
    register(hold, ALICE, 1, toks=1)
    register(hold, BOB, 2, toks=1)
    shared, data = chunk(1)
    only_alice = chunk(2)
    assert hold.put(ALICE, file_id=file_id(1), address=shared, data=data, now=NOW) is True
    assert hold.put(ALICE, file_id=file_id(1), address=only_alice[0], data=only_alice[1], now=NOW) is True
    assert hold.has([shared], file_id=file_id(2)) == []  # held, but not as part of file 2
    assert hold.put(BOB, file_id=file_id(2), address=shared, data=data, now=NOW) is False
    assert hold.has([shared], file_id=file_id(2)) == [shared]
    assert hold.statistics().chunks == 2
    assert hold.done(file_id=file_id(1), token=tokens(1, 1)[0], now=NOW) is True
    assert hold.get(shared, now=NOW) == data
    assert hold.get(only_alice[0], now=NOW) is None
    assert len(chunk_files(hold.root)) == 1
    assert hold.done(file_id=file_id(2), token=tokens(2, 1)[0], now=NOW) is True
    assert chunk_files(hold.root) == [] and hold.statistics().bytes == 0


def test_the_same_file_registered_by_two_peers(hold: ChunkHold) -> None:
    register(hold, ALICE, 1, toks=1)
    hold.put(ALICE, file_id=file_id(1), address=chunk(1)[0], data=chunk(1)[1], now=NOW)
    register(hold, BOB, 1, toks=1)  # the same tokens: the same recipients
    assert hold.statistics().files == 1
    assert hold.put(BOB, file_id=file_id(1), address=chunk(1)[0], data=chunk(1)[1], now=NOW) is False
    assert hold.put(BOB, file_id=file_id(1), address=chunk(2)[0], data=chunk(2)[1], now=NOW) is True
    assert hold.done(file_id=file_id(1), token=tokens(1, 1)[0], now=NOW) is True
    assert hold.statistics().reserved == 0 and chunk_files(hold.root) == []


#: The child of the SIGKILL tests: puts chunks ``first, first+1, ...`` of file 1, printing each index
#: once ``put`` returned (acknowledged). With a stage other than "none" it kills itself with SIGKILL at
#: that stage of put number ``first + 5``: "write" (half the temp file written), "replace" (the chunk
#: file in place, its row not committed), "commit" (the row committed, put not yet returned), or
#: "delete" (``done`` deleted the file's rows, not yet its chunk files).
CRASH_CHILD = """
import hashlib, os, signal, sys
from pathlib import Path
import meshchat.files.hold as hold_module
from meshchat.files.hold_sqlite import HoldDatabase
folder, first, durable, stage = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
hold = hold_module.ChunkHold(folder, durable=durable)
fid = hashlib.sha256(b"file 1").digest()
crash_at = first + 5 if stage != "none" else -1
current = -1

def die():
    os.kill(os.getpid(), signal.SIGKILL)

real_write_all, real_replace, real_add = hold_module._write_all, os.replace, HoldDatabase.add_member
def write_all(fd, data):
    if current == crash_at and stage == "write":
        real_write_all(fd, data[: len(data) // 2])
        die()
    real_write_all(fd, data)
def replace(a, b):
    real_replace(a, b)
    if current == crash_at and stage == "replace":
        die()
def add_member(self, **kw):
    real_add(self, **kw)
    if current == crash_at and stage == "commit":
        die()
def unlink(self, address):
    die()
hold_module._write_all, os.replace, HoldDatabase.add_member = write_all, replace, add_member
if stage == "delete":
    hold_module.ChunkHold._unlink = unlink
for i in range(first, first + 2000):
    current = i
    data = hashlib.shake_256(i.to_bytes(8, "big")).digest(1024 + (i * 7919) % (64 * 1024))
    address = hashlib.sha256(data).digest()
    hold.put("12D3KooWAlice", file_id=fid, address=address, data=data, now=1_800_000_000.0)
    print(i, flush=True)
    if stage == "delete" and i == crash_at:
        hold.done(file_id=fid, token=hashlib.blake2b(b"1/0", digest_size=16).digest(), now=1_800_000_000.0)
"""


def crash_chunk(i: int) -> tuple[bytes, bytes]:
    data = hashlib.shake_256(i.to_bytes(8, "big")).digest(1024 + (i * 7919) % (64 * 1024))
    return hashlib.sha256(data).digest(), data


def run_crash_child(
    folder: Path, first: int, *, durable: bool, stage: str, kill_after: int | None
) -> list[int]:
    """Run ``CRASH_CHILD`` until it kills itself, or SIGKILL it once it acknowledged ``kill_after``
    puts; the indices it acknowledged."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-c", CRASH_CHILD, str(folder), str(first), "1" if durable else "0", stage]
    acknowledged: list[int] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, env=env) as child:
        try:
            assert child.stdout is not None
            for line in child.stdout:  # the child stops by itself after 2,000 puts
                acknowledged.append(int(line))
                if kill_after is not None and len(acknowledged) >= kill_after:
                    break
        finally:
            child.send_signal(signal.SIGKILL)  # a crash wherever its next put has reached
        assert child.wait(timeout=30) == -signal.SIGKILL
    return acknowledged


def assert_rows_and_files_agree(hold: ChunkHold, folder: Path) -> None:
    assert not list((folder / "chunks").rglob("*.tmp"))
    on_disk = chunk_files(folder)
    for path in on_disk:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    stats = hold.statistics()
    assert len(on_disk) == stats.chunks
    assert sum(p.stat().st_size for p in on_disk) == stats.bytes


@pytest.mark.parametrize("stage", ["write", "replace", "commit"])
def test_sigkill_inside_put(tmp_path: Path, stage: str) -> None:
    """A crash at each step of a put: after a restart the acknowledged chunks are there, the one cut
    short is either whole or absent (never half), and the files on disk are exactly the rows."""
    with ChunkHold(tmp_path) as hold:
        register(hold, ALICE, 1, size=1024**3)
    acknowledged = run_crash_child(tmp_path, 0, durable=False, stage=stage, kill_after=None)
    assert acknowledged == list(range(5))
    # What the crash left for the next open to clean: half a temp file, or a chunk file without a row.
    temps = list((tmp_path / "chunks").rglob("*.tmp"))
    assert len(temps) == (stage == "write") and len(chunk_files(tmp_path)) == 6
    with ChunkHold(tmp_path) as hold:
        for i in acknowledged:
            assert hold.get(crash_chunk(i)[0], now=NOW) == crash_chunk(i)[1]
        cut_short = hold.get(crash_chunk(5)[0], now=NOW)
        assert cut_short == (crash_chunk(5)[1] if stage == "commit" else None)
        assert_rows_and_files_agree(hold, tmp_path)
        assert hold.statistics().chunks == len(acknowledged) + (stage == "commit")


def test_sigkill_while_deleting_a_fetched_file(tmp_path: Path) -> None:
    with ChunkHold(tmp_path) as hold:
        register(hold, ALICE, 1, size=1024**3, toks=1)
    assert run_crash_child(tmp_path, 0, durable=False, stage="delete", kill_after=None) == list(range(6))
    assert len(chunk_files(tmp_path)) == 6  # the rows went, the files did not
    with ChunkHold(tmp_path) as hold:
        assert chunk_files(tmp_path) == []
        assert hold.statistics().files == hold.statistics().chunks == 0


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    with ChunkHold(tmp_path) as hold:
        register(hold, ALICE, 1, size=1024**3)
    rng = random.Random(14)
    acknowledged: list[int] = []
    for round_ in range(4):
        kill_after = rng.randrange(3, 40)
        got = run_crash_child(
            tmp_path, round_ * 10_000, durable=bool(round_ % 2), stage="none", kill_after=kill_after
        )
        assert len(got) >= kill_after
        acknowledged += got
    with ChunkHold(tmp_path) as hold:
        for i in acknowledged:
            assert hold.get(crash_chunk(i)[0], now=NOW) == crash_chunk(i)[1]
        assert_rows_and_files_agree(hold, tmp_path)
        assert hold.statistics().chunks >= len(acknowledged)


def test_disk_full_leaves_nothing_half_written(hold: ChunkHold, monkeypatch: pytest.MonkeyPatch) -> None:
    register(hold, ALICE, 1)
    for i in range(2):
        hold.put(ALICE, file_id=file_id(1), address=chunk(i)[0], data=chunk(i)[1], now=NOW)
    real_write = os.write

    def write_half_then_fill(fd: int, data: bytes) -> None:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(hold_module, "_write_all", write_half_then_fill)
    address, data = chunk(5)
    with pytest.raises(DiskFull) as caught:
        hold.put(ALICE, file_id=file_id(1), address=address, data=data, now=NOW)
    assert caught.value.needed == len(data)
    assert not [p for p in (hold.root / "chunks").rglob("*.tmp")]
    assert len(chunk_files(hold.root)) == 2
    assert hold.has([address]) == [] and hold.get(address, now=NOW) is None
    for i in range(2):
        assert hold.get(chunk(i)[0], now=NOW) == chunk(i)[1]
    stats = hold.statistics()
    assert (stats.chunks, stats.bytes, stats.refused) == (2, 4096, {HoldRefusal.DISK_FULL: 1})
    monkeypatch.undo()
    assert hold.put(ALICE, file_id=file_id(1), address=address, data=data, now=NOW) is True  # space again


# -- model-checked state machine ---------------------------------------------------------------------

LIMITS = HoldLimits(
    per_peer_bytes=16_000, total_bytes=40_000, max_ttl=500.0, max_files_per_peer=3, max_tokens=3
)
PEERS = (ALICE, BOB, CAROL)
FILES = 4
CHUNKS = [chunk(100 + i, size) for i, size in enumerate((1, 900, 1100, 2048, 3000, 4000, 5000))]


class HoldMachine(RuleBasedStateMachine):
    """``ChunkHold`` against a model of the files live now: what ``get`` returns, what ``done`` and
    ``put`` answer, and that what is held never passes the limits."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="hold-"))
        self.hold = ChunkHold(self.folder, LIMITS, durable=False)
        self.now = NOW
        #: per file number: expiry, registered and returned token indices, {address: putter}, uploaders
        self.expiry: dict[int, float] = {}
        self.tokens: dict[int, set[int]] = {}
        self.returned: dict[int, set[int]] = {}
        self.members: dict[int, dict[bytes, str]] = {}
        self.uploaders: dict[int, set[str]] = {}

    def teardown(self) -> None:
        self.hold.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _drop_expired(self) -> int:
        gone = [n for n, expiry in self.expiry.items() if expiry <= self.now]
        for n in gone:
            self._forget(n)
        return len(gone)

    def _forget(self, n: int) -> None:
        self.expiry.pop(n, None)
        self.tokens.pop(n, None)
        self.returned.pop(n, None)
        self.members.pop(n, None)
        self.uploaders.pop(n, None)

    @rule(
        peer=st.sampled_from(PEERS),
        n=st.integers(0, FILES - 1),
        picked=st.sets(st.integers(0, 4), max_size=4),
        size=st.integers(1, 17_000),
        ttl=st.floats(1.0, 1000.0),
    )
    def register(self, peer: str, n: int, picked: set[int], size: int, ttl: float) -> None:
        all_tokens = tokens(n, 5)
        try:
            self.hold.register(
                peer,
                file_id=file_id(n),
                expiry=self.now + ttl,
                token_hashes=hashes([all_tokens[i] for i in sorted(picked)]),
                total_bytes=size,
                now=self.now,
            )
        except (QuotaExceeded, TooLarge):
            if len(picked) <= LIMITS.max_tokens and size <= LIMITS.per_peer_bytes:
                self._drop_expired()  # refused after the hold expired what was due; before, not
            return
        self._drop_expired()
        expiry = self.now + min(ttl, LIMITS.max_ttl)
        self.expiry[n] = max(self.expiry.get(n, expiry), expiry)
        self.tokens.setdefault(n, set()).update(picked)
        self.returned.setdefault(n, set())
        self.members.setdefault(n, {})
        self.uploaders.setdefault(n, set()).add(peer)

    @precondition(lambda self: bool(self.expiry))
    @rule(data=st.data(), c=st.integers(0, len(CHUNKS) - 1))
    def put_as_uploader(self, data: st.DataObject, c: int) -> None:
        n = data.draw(st.sampled_from(sorted(self.expiry)))
        self.put(data.draw(st.sampled_from(sorted(self.uploaders[n]))), n, c)

    @rule(peer=st.sampled_from(PEERS), n=st.integers(0, FILES - 1), c=st.integers(0, len(CHUNKS) - 1))
    def put(self, peer: str, n: int, c: int) -> None:
        address, data = CHUNKS[c]
        self._drop_expired()
        held_before = any(address in m for m in self.members.values())
        try:
            new = self.hold.put(peer, file_id=file_id(n), address=address, data=data, now=self.now)
        except UnknownFile:
            assert n not in self.expiry
            return
        except QuotaExceeded:
            assert n in self.expiry and address not in self.members[n]
            return
        assert new is not held_before
        self.members[n].setdefault(address, peer)

    @precondition(lambda self: any(self.tokens.values()))
    @rule(data=st.data())
    def done_by_recipient(self, data: st.DataObject) -> None:
        n = data.draw(st.sampled_from(sorted(n for n, t in self.tokens.items() if t)))
        self.done(n, data.draw(st.sampled_from(sorted(self.tokens[n]))))

    @rule(n=st.integers(0, FILES - 1), t=st.integers(0, 4))
    def done(self, n: int, t: int) -> None:
        deleted = self.hold.done(file_id=file_id(n), token=tokens(n, 5)[t], now=self.now)
        live = n in self.expiry and self.expiry[n] > self.now
        expected = (
            live
            and t in self.tokens[n]
            and t not in self.returned[n]
            and self.tokens[n] <= self.returned[n] | {t}
        )
        assert deleted is expected
        if live and t in self.tokens[n]:
            self.returned[n].add(t)
        if deleted:
            self._forget(n)

    @rule(dt=st.floats(0.0, 200.0), collect=st.booleans())
    def wait(self, dt: float, collect: bool) -> None:
        self.now += dt
        if collect:
            assert self.hold.expire(now=self.now) == self._drop_expired()

    @rule()
    def restart(self) -> None:
        self.hold.close()
        self.hold = ChunkHold(self.folder, LIMITS, durable=False)

    @invariant()
    def get_returns_what_live_files_hold(self) -> None:
        for address, data in CHUNKS:
            live = any(address in self.members[n] for n, e in self.expiry.items() if e > self.now)
            assert self.hold.get(address, now=self.now) == (data if live else None)

    @invariant()
    def within_limits(self) -> None:
        stats = self.hold.statistics()
        assert stats.bytes <= stats.reserved <= LIMITS.total_bytes
        charged: dict[str, int] = {}
        for members in self.members.values():
            for address, peer in members.items():
                size = next(len(d) for a, d in CHUNKS if a == address)
                charged[peer] = charged.get(peer, 0) + max(size, MIN_CHUNK_CHARGE)
        assert all(total <= LIMITS.per_peer_bytes for total in charged.values())
        on_disk = chunk_files(self.folder)
        assert len(on_disk) == stats.chunks and sum(p.stat().st_size for p in on_disk) == stats.bytes
        assert stats.files == len(self.expiry)


HoldMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_hold_machine = HoldMachine.TestCase


def test_a_full_database_removes_the_chunk_file_it_wrote(hold: ChunkHold) -> None:
    register(hold, ALICE, 1, size=1_000_000)
    hold.put(ALICE, file_id=file_id(1), address=chunk(0)[0], data=chunk(0)[1], now=NOW)
    # The database may not grow by a page more: the row commit fails as on a full disk.
    db = hold._db._conn  # the only way to fill sqlite's disk without filling ours
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    refused = 0
    for i in range(1, 200):
        address, data = chunk(i, 1024)
        try:
            hold.put(ALICE, file_id=file_id(1), address=address, data=data, now=NOW)
        except DiskFull:
            refused += 1
            assert not (hold.root / "chunks" / address.hex()[:2] / address.hex()).exists()
            break
    assert refused == 1
    stats = hold.statistics()
    assert stats.refused == {HoldRefusal.DISK_FULL: 1}
    assert len(chunk_files(hold.root)) == stats.chunks == i
    assert hold.get(chunk(0)[0], now=NOW) == chunk(0)[1]
