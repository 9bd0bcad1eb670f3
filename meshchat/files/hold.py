"""``ChunkHold``: the mailbox side of file transfers (issue 14, FILES.md "Fetch tokens").

A mailbox node keeps other people's encrypted file chunks for a while, under quotas, and deletes
them once every recipient has fetched the file or at its expiry. It cannot read them: a chunk is
AES-256-GCM ciphertext under a key only the sender and recipients know, and all the hold checks is
that ``SHA-256(data) == address`` (so it never serves bytes under an address they do not have).

Flow. The uploading peer (authenticated by the caller: the PeerId of the stream) announces a file
with ``register`` (its id, an expiry, ``SHA-256(token)`` for each recipient, the bytes it will put),
then sends its chunks with ``put``. Anyone fetches a chunk by address with ``get``. A recipient
holding the whole file sends its 16-byte ``token`` to ``done``; once every token came back the
file's chunks are deleted; ``expire`` deletes what outlived its expiry. ``now`` (unix seconds) is
always passed in, never read from a clock.

Storage. Rows in one sqlite file ``<root>/hold.db`` (stdlib ``sqlite3``, WAL, one connection); chunk
bytes in one file per chunk, ``<root>/chunks/<first 2 hex>/<64 hex address>``, written to
``<address>.tmp`` and moved into place with ``os.replace``, so a crash never leaves half a chunk
under its address. The file is written before its row is committed, rows are deleted before their
files; at open, temp files, chunk files without a row and rows whose file is missing or of the wrong
size are removed: whatever a crash interrupts, the rows and the files agree again after ``open``.
``durable=True`` (the default) fsyncs each chunk file, its folder and the sqlite log before ``put``
returns: three fsyncs per chunk bound the rate (256 KiB puts: 13-18 MiB/s on this machine's shared
virtual disk under load; the two file fsyncs alone ran at ~340 MiB/s when it was quiet).
``durable=False`` skips them (130-200 MiB/s under the same load, most of it SHA-256 and file
creation) and may lose the last chunks on a power loss, never on a process crash: the uploader finds
them missing with ``has`` and puts them again, if it is still online. ``get`` reads ~2 GB/s either
way (one indexed query and one file read per chunk; the fetcher verifies the hash, not the hold).
Opening reads the size of every chunk file (``stat``), ~0.05-0.1 ms per chunk held.

Sharing. A chunk may belong to several files (``members`` holds (file_id, address) pairs); its bytes
go only when no file names it. A file id registered by several peers is one file (byte-identical
ciphertext means the same key, so the same upload): each uploader is charged for what it puts.

Bounds (``HoldLimits``), and why every table a peer can grow is bounded by them:

* ``per_peer_bytes`` (2 GiB: a 1 GiB file, the issue's largest, twice) and ``total_bytes`` (8 GiB:
  a volunteer's disk budget) bound *reservations*: ``register`` reserves the file's bytes plus
  ``REGISTRATION_CHARGE`` for its rows and ``TOKEN_CHARGE`` per new token, so the ``files``,
  ``uploads`` and ``tokens`` tables are paid for in the same bytes as chunks and together stay
  below ``total_bytes``. ``put`` charges each chunk at least ``MIN_CHUNK_CHARGE`` against what the
  uploader reserved for that file, which bounds ``chunks`` and ``members`` the same way. Every real
  chunk is at least 1,040 bytes (FILES.md: padded to >= 1 KiB, plus the GCM tag), so the floor never
  touches an honest upload. On disk a small chunk still takes a filesystem block (4 KiB), so the disk used can
  reach ~4x ``total_bytes`` only if every file is tiny.
* ``max_files_per_peer`` (256) bounds one peer's registrations; ``max_tokens`` (1,024: a group of
  1,000 members fits) bounds the tokens of one file; ``max_ttl`` (14 days) bounds how long anything
  is held (a later expiry is clamped). Re-registering may extend a file's expiry, to at most
  ``now + max_ttl`` each time, and keeps the registering peer's reservation taken as long: only a
  peer that reserved room (the uploader, or a recipient who could upload it again anyway) can.

An expired file is gone for every call (``get``, ``put``, ``done``) even before ``expire`` deletes it;
``register`` and ``put`` delete expired files first, so their reservations never block new ones.

What it is not: not a cache of files this node reads (it never decrypts), not a network protocol
(the chunk protocol in ``meshchat.net.chunk_protocol`` calls it), not a scheduler (the caller runs
``expire`` at ``next_expiry()``), not trio code (synchronous, as sqlite is; a driver runs it in a
thread). Errors: a caller's bad sizes raise ``DecodeError``/``TooLarge``; over quota
``QuotaExceeded``; a lying uploader ``ChunkMismatch``; an unregistered file ``UnknownFile``; a full
disk ``DiskFull`` (nothing half-written stays); any other sqlite or OS failure ``StorageError``.
Every refusal is counted by ``HoldRefusal`` in ``statistics()``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

from meshchat.errors import (
    ChunkMismatch,
    DecodeError,
    DiskFull,
    QuotaExceeded,
    StorageError,
    TooLarge,
    UnknownFile,
)
from meshchat.files.hold_sqlite import HoldDatabase

__all__ = [
    "CHUNK_ADDRESS_SIZE",
    "FILE_ID_SIZE",
    "MAX_CHUNK_WIRE",
    "MIN_CHUNK_CHARGE",
    "REGISTRATION_CHARGE",
    "TOKEN_CHARGE",
    "TOKEN_HASH_SIZE",
    "TOKEN_SIZE",
    "ChunkHold",
    "HoldLimits",
    "HoldRefusal",
    "HoldStatistics",
]

#: A chunk's address: SHA-256 of its ciphertext (FILES.md "Chunks").
CHUNK_ADDRESS_SIZE = 32
#: A file id: SHA-256 over the index chunk addresses (FILES.md "Chunks").
FILE_ID_SIZE = 32
#: A fetch token: BLAKE2b-128 of the recipient's key under the file key (FILES.md "Fetch tokens").
TOKEN_SIZE = 16
#: What the uploader registers per recipient: SHA-256 of the token.
TOKEN_HASH_SIZE = 32
#: No chunk is larger: 256 KiB of padded plaintext plus the 16-byte GCM tag (FILES.md).
MAX_CHUNK_WIRE = 256 * 1024 + 16
#: Least bytes a chunk is charged (real chunks are >= 1,040 bytes): bounds the chunk and membership
#: rows one reservation can create to ``reserved / 1 KiB``.
MIN_CHUNK_CHARGE = 1024
#: Bytes a new registration reserves on top of the file's size: its ``files`` and ``uploads`` rows
#: (~200 bytes with the indexes), so a flood of 1-byte registrations is paid for.
REGISTRATION_CHARGE = 1024
#: Bytes reserved per new token hash: its row (~100 bytes with the B-tree's overhead). 1,024 tokens
#: cost 128 KiB.
TOKEN_CHARGE = 128

#: Name of the database file inside the hold's root folder.
DATABASE_FILE = "hold.db"
#: Folder of the chunk files inside the root.
CHUNKS_FOLDER = "chunks"
_TEMP_SUFFIX = ".tmp"


class HoldRefusal(StrEnum):
    """Why the hold refused a request (the keys of ``HoldStatistics.refused``)."""

    #: A file id, address, token hash or size of the wrong length or value.
    MALFORMED = "malformed"
    #: A chunk larger than ``MAX_CHUNK_WIRE`` or a file larger than ``per_peer_bytes``, or too many tokens.
    TOO_LARGE = "too large"
    #: A chunk whose bytes do not hash to its address (the uploader lied or the bytes were damaged).
    CHUNK_MISMATCH = "chunk mismatch"
    #: A chunk put for a file nobody registered (or that expired).
    UNKNOWN_FILE = "unknown file"
    #: A registration or chunk over a quota.
    QUOTA = "quota"
    #: The disk filled while writing a chunk.
    DISK_FULL = "disk full"
    #: A ``done`` whose token matches no live file's token hash (a guess, or a file already gone).
    UNKNOWN_TOKEN = "unknown token"
    #: A held chunk whose file vanished from the disk (found at open or by ``get``): its rows went.
    CHUNK_LOST = "chunk lost"


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldLimits:
    """How much a hold keeps; the module docstring says why each default is what it is."""

    #: Bytes one uploading peer may have reserved at once (its files' sizes and the row charges).
    per_peer_bytes: int = 2 * 1024**3
    #: Bytes reserved by everyone together: the disk budget.
    total_bytes: int = 8 * 1024**3
    #: Seconds ahead a file may expire; a later expiry is clamped to this.
    max_ttl: float = 14 * 86400.0
    #: Files one peer may have registered at once.
    max_files_per_peer: int = 256
    #: Recipients (token hashes) one file may name: a group of 1,000 members fits.
    max_tokens: int = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldStatistics:
    """What a hold keeps now, and what it did since it was opened."""

    #: Files registered and not yet deleted.
    files: int
    #: Distinct chunks held.
    chunks: int
    #: Bytes of the chunks held.
    bytes: int
    #: Chunks newly stored since open.
    stored: int
    #: Chunks handed out by ``get`` since open.
    served: int
    #: Files deleted because every recipient fetched them, since open.
    deleted_done: int
    #: Files deleted at expiry, since open.
    deleted_expired: int
    #: Refusals since open, by ``HoldRefusal`` (a ``StrEnum``, typed ``str`` so callers may add theirs).
    refused: dict[str, int]
    #: Bytes reserved by registrations (>= ``bytes`` while the limits stay the same).
    reserved: int = 0


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChunkHold:
    """Encrypted chunks kept for other peers; see the module docstring.

    One sqlite connection, used by one call at a time (a lock serialises calls from several threads).
    """

    def __init__(self, root: Path, limits: HoldLimits = HoldLimits(), *, durable: bool = True) -> None:
        """Open the hold in folder ``root`` (created if missing, with ``hold.db`` inside), then make the
        chunk files and the rows agree (see "Storage" in the module docstring).

        Raises ``StorageError`` if the folder or the database cannot be opened, or the database was
        written by a newer meshchat.
        """
        #: The hold's folder.
        self.root = Path(root)
        #: The limits it enforces.
        self.limits = limits
        #: Whether each put is on disk (fsynced) before it returns.
        self.durable = durable
        self._lock = threading.Lock()
        self._chunks = self.root / CHUNKS_FOLDER
        try:
            self._chunks.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(f"chunk hold {self.root}: cannot create its folder: {exc}") from exc
        self._db = HoldDatabase(self.root / DATABASE_FILE, durable=durable)
        self._stored = 0
        self._served = 0
        self._deleted_done = 0
        self._deleted_expired = 0
        self._refused: dict[str, int] = {}
        self._sweep()

    # -- life cycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; the hold cannot be used afterwards. Closing twice is harmless."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the API ---------------------------------------------------------------------------------

    def register(
        self,
        peer: str,
        *,
        file_id: bytes,
        expiry: float,
        token_hashes: Sequence[bytes],
        total_bytes: int,
        now: float,
    ) -> None:
        """Reserve room for ``peer`` to upload ``total_bytes`` of file ``file_id`` until ``expiry``
        (clamped to ``now + max_ttl``), deleted once every token of ``token_hashes`` came back.

        Again by the same peer: idempotent; the expiry may move later, new tokens are added and the
        reservation grows to a larger ``total_bytes`` (never shrinks). By another peer: the same file,
        that peer reserves (and is charged) on its own. Raises ``DecodeError`` for a file id or token
        hash that is not 32 bytes, a size <= 0 or an expiry not after ``now``; ``TooLarge`` for more
        than ``max_tokens`` tokens or a size over ``per_peer_bytes``; ``QuotaExceeded`` when the
        peer's reservations, its file count or everyone's reservations would pass their limit.
        """
        with self._lock:
            self._check_register(file_id, expiry, token_hashes, total_bytes, now)
            self._expire_due(now)  # an expired file is gone: registering it again starts afresh
            expiry = min(expiry, now + self.limits.max_ttl)
            db = self._db
            upload = db.upload(file_id, peer)
            known = db.token_hashes(file_id)
            new_tokens = sorted(set(token_hashes) - known)
            if len(known) + len(new_tokens) > self.limits.max_tokens:
                self._refuse(HoldRefusal.TOO_LARGE)
                raise TooLarge(
                    what="token list (entries, not bytes)",
                    size=len(known) + len(new_tokens),
                    limit=self.limits.max_tokens,
                )
            old_declared, old_reserved = (0, 0) if upload is None else (upload.declared, upload.reserved)
            declared = max(old_declared, total_bytes)
            growth = declared - old_declared + TOKEN_CHARGE * len(new_tokens)
            if upload is None:
                growth += REGISTRATION_CHARGE
                files = db.peer_files(peer)
                if files + 1 > self.limits.max_files_per_peer:
                    self._quota("files per peer", files + 1, self.limits.max_files_per_peer)
            peer_reserved = db.peer_reserved(peer)
            if growth and peer_reserved + growth > self.limits.per_peer_bytes:
                self._quota("per-peer hold", peer_reserved + growth, self.limits.per_peer_bytes)
            reserved_total = db.totals().reserved
            if growth and reserved_total + growth > self.limits.total_bytes:
                self._quota("total hold", reserved_total + growth, self.limits.total_bytes)
            db.register(
                file_id=file_id,
                peer=peer,
                expiry=expiry,
                declared=declared,
                reserved=old_reserved + growth,
                new_tokens=new_tokens,
            )

    def put(self, peer: str, *, file_id: bytes, address: bytes, data: bytes, now: float) -> bool:
        """Keep chunk ``data`` at ``address`` as part of file ``file_id``, charged to ``peer``.

        Returns True if its bytes were newly stored, False if they were already held (for this file or
        another: the chunk then joins this file too). Raises ``DecodeError`` for a file id or address
        that is not 32 bytes; ``TooLarge`` for data over ``MAX_CHUNK_WIRE``; ``ChunkMismatch`` if
        ``SHA-256(data) != address`` (nothing stored); ``UnknownFile`` if nobody registered the file or
        it expired; ``QuotaExceeded`` past what ``peer`` reserved for the file, the per-peer or the
        total limit; ``DiskFull`` if the disk filled (the chunk is not stored, nothing else changes).
        """
        with self._lock:
            if len(file_id) != FILE_ID_SIZE or len(address) != CHUNK_ADDRESS_SIZE:
                self._refuse(HoldRefusal.MALFORMED)
                raise DecodeError(
                    "chunk", f"file id {len(file_id)} and address {len(address)} bytes; expected 32"
                )
            if len(data) > MAX_CHUNK_WIRE:
                self._refuse(HoldRefusal.TOO_LARGE)
                raise TooLarge(what="chunk", size=len(data), limit=MAX_CHUNK_WIRE)
            if hashlib.sha256(data).digest() != address:
                self._refuse(HoldRefusal.CHUNK_MISMATCH)
                raise ChunkMismatch(source=peer, address=address)
            self._expire_due(now)
            db = self._db
            if not db.has_file(file_id):
                self._refuse(HoldRefusal.UNKNOWN_FILE)
                raise UnknownFile(file_id.hex())
            if db.is_member(file_id, address):
                return False
            charge = max(len(data), MIN_CHUNK_CHARGE)
            upload = db.upload(file_id, peer)
            if upload is None:
                self._quota("file reservation (this peer registered none)", charge, 0)
            if upload.charged + charge > upload.declared:
                self._quota("file reservation", upload.charged + charge, upload.declared)
            peer_charged = db.peer_charged(peer)
            if peer_charged + charge > self.limits.per_peer_bytes:
                self._quota("per-peer hold", peer_charged + charge, self.limits.per_peer_bytes)
            held = db.chunk_size(address) is not None
            if not held:
                total = db.totals().bytes
                if total + len(data) > self.limits.total_bytes:
                    self._quota("total hold", total + len(data), self.limits.total_bytes)
                self._write_chunk(address, data)
            try:
                db.add_member(
                    file_id=file_id,
                    address=address,
                    peer=peer,
                    charge=charge,
                    size=None if held else len(data),
                )
            except BaseException as exc:
                if isinstance(exc, DiskFull):  # the database could not grow
                    self._refuse(HoldRefusal.DISK_FULL)
                if not held:  # a file without its row: remove it now (or the next open does)
                    with contextlib.suppress(OSError):
                        self._path(address).unlink(missing_ok=True)
                raise
            if not held:
                self._stored += 1
            return not held

    def get(self, address: bytes, *, now: float) -> bytes | None:
        """The chunk at ``address``, or None if it is not held or every file naming it expired."""
        with self._lock:
            if len(address) != CHUNK_ADDRESS_SIZE or not self._db.is_live(address, now):
                return None
            try:
                data = self._path(address).read_bytes()
            except FileNotFoundError:
                # Someone removed the file behind our back: forget the rows, so that `has` tells the
                # uploader to put it again.
                self._refuse(HoldRefusal.CHUNK_LOST)
                self._db.forget_chunks([address])
                return None
            except OSError as exc:
                raise StorageError(
                    f"chunk hold {self.root}: cannot read chunk {address.hex()}: {exc}"
                ) from exc
            self._served += 1
            return data

    def has(self, addresses: Sequence[bytes], *, file_id: bytes | None = None) -> list[bytes]:
        """Which of ``addresses`` are held (in the order given), so an upload resumes where it stopped.

        With ``file_id``: which are held *as part of that file*. An uploader should pass it: a chunk
        held only for another file would go with that file, so it must still be ``put`` for this one
        (which costs no bytes on the disk).
        """
        with self._lock:
            wanted = [a for a in addresses if len(a) == CHUNK_ADDRESS_SIZE]
            held = self._db.held(wanted, file_id)
            return [a for a in wanted if a in held]

    def done(self, *, file_id: bytes, token: bytes, now: float) -> bool:
        """A recipient fetched the whole file and proves it with its ``token`` (16 bytes).

        Marks the token whose ``SHA-256`` the uploader registered. Returns True when it was the last
        one: the file is deleted, and its chunks with it unless another file names them. An unknown
        file or token, a token of the wrong size, or an expired file returns False and is counted
        (``UNKNOWN_TOKEN``), never raised: a peer's guess costs it nothing but us nothing either.
        """
        with self._lock:
            if len(token) != TOKEN_SIZE or len(file_id) != FILE_ID_SIZE:
                self._refuse(HoldRefusal.UNKNOWN_TOKEN)
                return False
            expiry = self._db.file_expiry(file_id)
            if expiry is None or expiry <= now:
                self._refuse(HoldRefusal.UNKNOWN_TOKEN)
                return False
            marked = self._db.mark_token(file_id, hashlib.sha256(token).digest())
            if marked is None:
                self._refuse(HoldRefusal.UNKNOWN_TOKEN)
                return False
            if marked > 0:  # tokens still outstanding (or this one had come back before)
                return False
            self._delete_files([file_id])
            self._deleted_done += 1
            return True

    def expire(self, *, now: float) -> int:
        """Delete every file whose expiry is at or before ``now``, and its unshared chunks; how many files."""
        with self._lock:
            return self._expire_due(now)

    def next_expiry(self) -> float | None:
        """When the next file expires (unix seconds), or None if nothing is held: call ``expire`` then."""
        with self._lock:
            return self._db.next_expiry()

    def statistics(self) -> HoldStatistics:
        """What is held now and what happened since open."""
        with self._lock:
            totals = self._db.totals()
            return HoldStatistics(
                files=totals.files,
                chunks=totals.chunks,
                bytes=totals.bytes,
                reserved=totals.reserved,
                stored=self._stored,
                served=self._served,
                deleted_done=self._deleted_done,
                deleted_expired=self._deleted_expired,
                refused=dict(self._refused),
            )

    # -- helpers (called with the lock held) -----------------------------------------------------

    def _check_register(
        self, file_id: bytes, expiry: float, token_hashes: Sequence[bytes], total_bytes: int, now: float
    ) -> None:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time (unix seconds), not {now}")  # the caller's bug
        problem = None
        if len(file_id) != FILE_ID_SIZE:
            problem = f"file id is {len(file_id)} bytes; expected {FILE_ID_SIZE}"
        elif any(len(h) != TOKEN_HASH_SIZE for h in token_hashes):
            problem = f"a token hash is not {TOKEN_HASH_SIZE} bytes"
        elif total_bytes <= 0:
            problem = f"file size {total_bytes} is not positive"
        elif not math.isfinite(expiry) or expiry <= now:
            problem = f"expiry {expiry} is not after now ({now})"
        if problem is not None:
            self._refuse(HoldRefusal.MALFORMED)
            raise DecodeError("hold registration", problem)
        if len(token_hashes) > self.limits.max_tokens:
            self._refuse(HoldRefusal.TOO_LARGE)
            raise TooLarge(
                what="token list (entries, not bytes)", size=len(token_hashes), limit=self.limits.max_tokens
            )
        if total_bytes > self.limits.per_peer_bytes:
            self._refuse(HoldRefusal.TOO_LARGE)
            raise TooLarge(what="file", size=total_bytes, limit=self.limits.per_peer_bytes)

    def _refuse(self, reason: HoldRefusal) -> None:
        self._refused[reason] = self._refused.get(reason, 0) + 1

    def _quota(self, what: str, used: int, limit: int) -> NoReturn:
        self._refuse(HoldRefusal.QUOTA)
        raise QuotaExceeded(what=what, used=used, limit=limit)

    def _path(self, address: bytes) -> Path:
        name = address.hex()
        return self._chunks / name[:2] / name

    def _write_chunk(self, address: bytes, data: bytes) -> None:
        """Put ``data`` in place under ``address``'s file name, whole or not at all."""
        final = self._path(address)
        temp = final.with_name(final.name + _TEMP_SUFFIX)
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except FileNotFoundError:  # the first chunk in this folder: make it (not a mkdir per put)
                final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if self.durable:
                    _fsync_folder(self._chunks)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, data)
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
            if self.durable:
                _fsync_folder(final.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):  # if it stays, the sweep at the next open removes it
                temp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._refuse(HoldRefusal.DISK_FULL)
                raise DiskFull(path=str(final), needed=len(data)) from exc
            raise StorageError(f"chunk hold {self.root}: cannot write chunk {address.hex()}: {exc}") from exc

    def _expire_due(self, now: float) -> int:
        count = 0
        while True:
            batch = self._db.expired(now)
            if not batch:
                return count
            self._delete_files(batch)
            self._deleted_expired += len(batch)
            count += len(batch)

    def _delete_files(self, file_ids: Sequence[bytes]) -> None:
        """Delete the rows of these files, then the chunk files no file names any more."""
        for address in self._db.delete_files(file_ids):
            self._unlink(address)

    def _unlink(self, address: bytes) -> None:
        try:
            self._path(address).unlink(missing_ok=True)
        except OSError as exc:
            # The row is gone already; the file is an orphan the next open removes.
            raise StorageError(f"chunk hold {self.root}: cannot delete chunk {address.hex()}: {exc}") from exc

    def _sweep(self) -> None:
        """Make the files under ``chunks/`` and the rows agree after whatever a crash interrupted."""
        lost: list[bytes] = []
        for prefix in range(256):
            folder = self._chunks / f"{prefix:02x}"
            rows = self._db.chunk_sizes_with_prefix(prefix)
            seen: set[bytes] = set()
            for entry in _entries(folder):
                address = _address_of(entry.name, prefix)
                size = rows.get(address) if address is not None else None
                if address is not None and size is not None and entry.stat().st_size == size:
                    seen.add(address)
                    continue
                try:
                    os.unlink(entry.path)
                except OSError as exc:
                    raise StorageError(f"chunk hold {self.root}: cannot remove {entry.path}: {exc}") from exc
            lost.extend(address for address in rows if address not in seen)
        if lost:
            for _ in lost:
                self._refuse(HoldRefusal.CHUNK_LOST)
            self._db.forget_chunks(lost)


def _entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            yield from entries
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"chunk hold: cannot list {folder}: {exc}") from exc


def _address_of(name: str, prefix: int) -> bytes | None:
    """The address a chunk file name stands for, or None for anything else (temp files, strays)."""
    if len(name) != 2 * CHUNK_ADDRESS_SIZE:
        return None
    try:
        address = bytes.fromhex(name)
    except ValueError:
        return None
    return address if address[0] == prefix and name == address.hex() else None
