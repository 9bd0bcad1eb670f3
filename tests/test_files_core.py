"""The sans-IO files core end to end, with no network: a file is cut, indexed and described by a
manifest, then fetched by a ``Download`` from two sources that answer out of order, lack chunks, lie,
go away or are struck off; the bytes written must be the file's, byte for byte.

The sources are a dict ``address -> ciphertext`` (what a sender or a mailbox serves). A ``Got`` is
written into a bytearray at ``index * CHUNK_SIZE`` and acknowledged with ``written`` as a driver would.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshchat.errors import BadManifest, ChunkMismatch, DecryptionFailed, TooLarge
from meshchat.files.chunks import (
    ADDRESS_SIZE,
    ADDRESSES_PER_INDEX_CHUNK,
    CHUNK_SIZE,
    KEY_SIZE,
    MAX_CHUNK_WIRE,
    MAX_FILE_SIZE,
    MIN_PADDED,
    TOKEN_SIZE,
    ChunkKind,
    address_of,
    build_index,
    chunk_count,
    cut,
    decrypt_chunk,
    encrypt_chunk,
    fetch_token,
    file_id_of,
    index_chunk_count,
    padded_length,
    plain_length,
    token_hash,
)
from meshchat.files.download import MAX_SOURCES, MAX_STRIKES, Download, Got, Want
from meshchat.files.manifest import Manifest

#: Answers a round may leave pending before they are all delivered (bounds every driving loop).
_MAX_ROUNDS = 10_000


@dataclass
class Sent:
    """A file as its sender made it: the bytes, the manifest and every chunk by address."""

    data: bytes
    key: bytes
    manifest: Manifest
    chunks: dict[bytes, bytes]
    data_addresses: list[bytes]
    index_chunks: tuple[bytes, ...]


def _send(path: Path, data: bytes, *, key: bytes | None = None) -> Sent:
    """Write ``data`` to ``path`` and run the sender's pipeline over the file on disk."""
    key = os.urandom(KEY_SIZE) if key is None else key
    path.write_bytes(data)
    with path.open("rb") as f:
        pieces = list(cut(f, key, len(data)))
    addresses = [p.address for p in pieces]
    index = build_index(key, b"".join(addresses))
    manifest = Manifest(
        name=path.name, mime="application/octet-stream", size=len(data), key=key, index=index.addresses
    )
    chunks = {p.address: p.ciphertext for p in pieces}
    chunks.update(zip(index.addresses, index.chunks, strict=True))
    return Sent(
        data=data,
        key=key,
        manifest=manifest,
        chunks=chunks,
        data_addresses=addresses,
        index_chunks=index.chunks,
    )


@dataclass
class Driver:
    """What a file driver does with a ``Download``, with answers delivered in a chosen order."""

    download: Download
    serve: dict[str, dict[bytes, bytes]]
    rng: random.Random
    out: bytearray = field(default_factory=bytearray)
    pending: list[tuple[str, Want]] = field(default_factory=list)
    mismatches: list[ChunkMismatch] = field(default_factory=list)
    #: Probability that a source claims to lack a chunk it holds (a mailbox still being filled).
    lack_rate: float = 0.0

    def __post_init__(self) -> None:
        self.out = bytearray(self.download.manifest.size)

    def ask(self, source: str, limit: int) -> list[Want]:
        wants = self.download.want(source, limit)
        self.pending.extend((source, w) for w in wants)
        return wants

    def answer(self, source: str, want: Want) -> list[Got]:
        held = self.serve[source]
        if want.address not in held or self.rng.random() < self.lack_rate:
            self.download.missing(source, want.address)
            return []
        try:
            gots = self.download.arrived(source, want.address, held[want.address])
        except ChunkMismatch as exc:
            self.mismatches.append(exc)
            return []
        for got in gots:
            start = got.index * CHUNK_SIZE
            assert len(got.plaintext) == plain_length(self.download.manifest.size, got.index)
            self.out[start : start + len(got.plaintext)] = got.plaintext
            self.download.written(got.index)
        return gots

    def run(self, *, max_ask: int = 4) -> bytes:
        """Ask every source, answer the pending requests in random order, until complete."""
        for _ in range(_MAX_ROUNDS):
            if self.download.complete:
                return bytes(self.out)
            for source in self.rng.sample(list(self.serve), len(self.serve)):
                self.ask(source, self.rng.randint(1, max_ask))
            self.rng.shuffle(self.pending)
            # Deliver a random part of what is pending: the rest stays in flight to the next round.
            deliver = self.rng.randint(1, len(self.pending)) if self.pending else 0
            batch, self.pending = self.pending[:deliver], self.pending[deliver:]
            for source, want in batch:
                self.answer(source, want)
            if not self.pending and self.download.stalled():
                self.download.retry_missing()
        raise AssertionError("the download did not complete")


def _fetch(sent: Sent, *, seed: int = 0, lack_rate: float = 0.0) -> bytes:
    download = Download(sent.manifest, sources=["A", "B"])
    driver = Driver(download, {"A": sent.chunks, "B": sent.chunks}, random.Random(seed), lack_rate=lack_rate)
    return driver.run()


# --- round trips -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE], ids=lambda s: f"{s}B"
)
def test_round_trip_byte_identical(tmp_path: Path, size: int) -> None:
    sent = _send(tmp_path / "f.bin", random.Random(size).randbytes(size))
    assert len(sent.data_addresses) == chunk_count(size)
    assert len(sent.manifest.index) == index_chunk_count(size) == 1
    got = _fetch(sent, seed=size, lack_rate=0.2)
    assert got == sent.data


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.one_of(
        st.integers(0, 5 * CHUNK_SIZE),
        st.sampled_from([k * CHUNK_SIZE + d for k in range(1, 5) for d in (-1, 0, 1)]),
    ),
    seed=st.integers(0, 2**32),
    lack_rate=st.sampled_from([0.0, 0.3, 0.7]),
)
def test_round_trip_any_size_any_interleaving(tmp_path: Path, size: int, seed: int, lack_rate: float) -> None:
    sent = _send(tmp_path / "f.bin", random.Random(seed).randbytes(size))
    assert _fetch(sent, seed=seed, lack_rate=lack_rate) == sent.data


def test_empty_file_is_complete_without_a_fetch(tmp_path: Path) -> None:
    sent = _send(tmp_path / "empty", b"")
    assert sent.data_addresses == []
    assert len(sent.index_chunks) == 1
    assert len(sent.index_chunks[0]) == MIN_PADDED + 16  # an empty index still travels padded
    download = Download(sent.manifest, sources=["A"])
    assert download.complete
    assert download.bytes_done == 0
    assert not download.stalled()


def test_each_source_is_asked_for_different_chunks(tmp_path: Path) -> None:
    sent = _send(tmp_path / "f", os.urandom(4 * CHUNK_SIZE))
    download = Download(sent.manifest, sources=["A", "B"])
    (index,) = download.want("A", 8)
    assert index.kind is ChunkKind.INDEX
    assert download.want("B", 8) == []  # the only index chunk is already asked of A
    assert download.arrived("A", index.address, sent.chunks[index.address]) == []
    assert download.addresses == sent.data_addresses
    a = download.want("A", 2)
    b = download.want("B", 8)
    assert [w.index for w in a] == [0, 1]  # lowest position first
    assert [w.index for w in b] == [2, 3]
    assert all(w.kind is ChunkKind.DATA for w in a + b)
    assert {w.address for w in a + b} == set(sent.data_addresses)
    assert download.want("A", 8) == []  # everything is in flight


def test_bytes_done_counts_the_short_last_chunk(tmp_path: Path) -> None:
    size = 2 * CHUNK_SIZE + 5
    sent = _send(tmp_path / "f", os.urandom(size))
    download = Download(sent.manifest, done={2})
    assert download.bytes_done == 5
    download.written(0)
    assert download.bytes_done == CHUNK_SIZE + 5
    download.written(1)
    assert download.complete
    assert download.bytes_done == size
    download.written(99)  # out of range: ignored
    assert download.done == frozenset({0, 1, 2})


# --- chunks ------------------------------------------------------------------------------------------


def test_padding_buckets() -> None:
    assert padded_length(0) == MIN_PADDED == 1024
    assert padded_length(1) == 1024
    assert padded_length(1024) == 1024
    assert padded_length(1025) == 2048
    assert padded_length(CHUNK_SIZE // 2 + 1) == CHUNK_SIZE
    assert padded_length(CHUNK_SIZE) == CHUNK_SIZE
    with pytest.raises(ValueError, match="chunk holds"):
        padded_length(CHUNK_SIZE + 1)
    with pytest.raises(ValueError, match="chunk holds"):
        padded_length(-1)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, CHUNK_SIZE))
def test_padded_length_is_the_next_power_of_two(length: int) -> None:
    padded = padded_length(length)
    assert padded >= max(length, MIN_PADDED)
    assert padded & (padded - 1) == 0
    assert padded == MIN_PADDED or padded // 2 < length  # the smallest such power


@pytest.mark.parametrize("size", [1, 1000, 1025, CHUNK_SIZE + 3000, 2 * CHUNK_SIZE])
def test_ciphertexts_are_padded_to_power_of_two_buckets(size: int) -> None:
    key = os.urandom(KEY_SIZE)
    pieces = list(cut(io.BytesIO(os.urandom(size)), key, size))
    for piece in pieces:
        length = plain_length(size, piece.index)
        assert len(piece.ciphertext) == padded_length(length) + 16 <= MAX_CHUNK_WIRE
        padded = len(piece.ciphertext) - 16
        assert padded >= MIN_PADDED
        assert padded & (padded - 1) == 0
        assert piece.address == hashlib.sha256(piece.ciphertext).digest() == address_of(piece.ciphertext)
    assert [len(p.ciphertext) for p in pieces[:-1]] == [MAX_CHUNK_WIRE] * (len(pieces) - 1)


def test_chunk_encryption_is_deterministic_and_bound_to_its_place() -> None:
    key = os.urandom(KEY_SIZE)
    plain = os.urandom(3000)
    ct = encrypt_chunk(key, ChunkKind.DATA, 7, plain)
    assert encrypt_chunk(key, ChunkKind.DATA, 7, plain) == ct  # the sender re-encrypts to serve
    assert decrypt_chunk(key, ChunkKind.DATA, 7, ct, 3000) == plain
    with pytest.raises(DecryptionFailed):
        decrypt_chunk(key, ChunkKind.DATA, 8, ct, 3000)  # moved
    with pytest.raises(DecryptionFailed):
        decrypt_chunk(key, ChunkKind.INDEX, 7, ct, 3000)  # passed off as an index chunk
    with pytest.raises(DecryptionFailed):
        decrypt_chunk(os.urandom(KEY_SIZE), ChunkKind.DATA, 7, ct, 3000)  # another file's
    with pytest.raises(DecryptionFailed):
        decrypt_chunk(key, ChunkKind.DATA, 7, ct, 5000)  # another bucket: refused before decrypting
    flipped = bytearray(ct)
    flipped[100] ^= 1
    with pytest.raises(DecryptionFailed):
        decrypt_chunk(key, ChunkKind.DATA, 7, bytes(flipped), 3000)


def test_cut_reads_from_the_current_position_and_resumes() -> None:
    key = os.urandom(KEY_SIZE)
    data = os.urandom(3 * CHUNK_SIZE + 10)
    whole = list(cut(io.BytesIO(data), key, len(data)))
    source = io.BytesIO(data)
    source.seek(2 * CHUNK_SIZE)
    tail = list(cut(source, key, len(data), first=2))
    assert [p.index for p in tail] == [2, 3]
    assert tail == whole[2:]


def test_cut_refuses_a_file_that_shrank_and_absurd_sizes() -> None:
    key = os.urandom(KEY_SIZE)
    with pytest.raises(ValueError, match="changed"):
        list(cut(io.BytesIO(b"x" * (CHUNK_SIZE + 1)), key, CHUNK_SIZE + 2))
    with pytest.raises(TooLarge):
        next(cut(io.BytesIO(b""), key, MAX_FILE_SIZE + 1))
    with pytest.raises(TooLarge):
        next(cut(io.BytesIO(b""), key, -1))


def test_index_and_file_id(tmp_path: Path) -> None:
    sent = _send(tmp_path / "f", os.urandom(CHUNK_SIZE + 1))
    plain_index = decrypt_chunk(sent.key, ChunkKind.INDEX, 0, sent.index_chunks[0], 2 * ADDRESS_SIZE)
    assert plain_index == b"".join(sent.data_addresses)
    expected = hashlib.sha256(b"meshchat file" + b"".join(sent.manifest.index)).digest()
    assert sent.manifest.file_id == file_id_of(sent.manifest.index) == expected
    assert build_index(sent.key, plain_index).file_id == expected
    with pytest.raises(ValueError, match="whole 32-byte"):
        build_index(sent.key, b"x" * 33)


def test_index_chunk_counts() -> None:
    assert index_chunk_count(0) == 1
    assert index_chunk_count(ADDRESSES_PER_INDEX_CHUNK * CHUNK_SIZE) == 1
    assert index_chunk_count(ADDRESSES_PER_INDEX_CHUNK * CHUNK_SIZE + 1) == 2
    assert index_chunk_count(MAX_FILE_SIZE) == 2
    addresses = os.urandom(ADDRESS_SIZE * (ADDRESSES_PER_INDEX_CHUNK + 1))
    index = build_index(os.urandom(KEY_SIZE), addresses)
    assert [len(c) for c in index.chunks] == [MAX_CHUNK_WIRE, MIN_PADDED + 16]


# --- fetch tokens ------------------------------------------------------------------------------------


def test_fetch_tokens() -> None:
    key, other_key = os.urandom(KEY_SIZE), os.urandom(KEY_SIZE)
    alice, bob = os.urandom(32), os.urandom(32)
    token = fetch_token(key, alice)
    assert len(token) == TOKEN_SIZE == 16
    assert token == hashlib.blake2b(alice, key=key, person=b"meshchat-fetch", digest_size=16).digest()
    assert fetch_token(key, alice) == token
    assert fetch_token(key, bob) != token  # per recipient
    assert fetch_token(other_key, alice) != token  # per file
    assert token_hash(token) == hashlib.sha256(token).digest()
    assert len(token_hash(token)) == 32


# --- a lying source ----------------------------------------------------------------------------------


def test_a_lying_source_is_struck_off_and_the_file_still_arrives(tmp_path: Path) -> None:
    sent = _send(tmp_path / "f", os.urandom(6 * CHUNK_SIZE + 77))
    lies = {a: hashlib.sha256(c).digest() + c[32:] for a, c in sent.chunks.items()}  # same size, wrong
    download = Download(sent.manifest, sources=["A", "B"])
    driver = Driver(download, {"A": sent.chunks, "B": lies}, random.Random(3))
    for _ in range(_MAX_ROUNDS):
        if download.complete:
            break
        for source in ("B", "A"):
            for want in download.want(source, 1):
                driver.answer(source, want)
    assert bytes(driver.out) == sent.data
    assert download.struck("B") and not download.struck("A")
    assert download.strikes == {"B": MAX_STRIKES}  # asked no more once struck
    assert len(driver.mismatches) == MAX_STRIKES
    assert all(m.source == "B" for m in driver.mismatches)
    assert download.want("B", 10) == []
    download.add_source("B")  # a struck source is not taken back
    assert download.sources == ["A", "B"]


def test_a_mismatch_puts_the_chunk_back_for_other_sources(tmp_path: Path) -> None:
    sent = _send(tmp_path / "f", os.urandom(2 * CHUNK_SIZE))
    download = Download(sent.manifest, sources=["A", "B"])
    (index,) = download.want("B", 1)
    with pytest.raises(ChunkMismatch) as caught:
        download.arrived("B", index.address, b"\0" * len(sent.index_chunks[0]))
    assert caught.value.source == "B"
    assert caught.value.address == index.address
    assert download.strikes == {"B": 1}
    assert download.addresses is None  # nothing was taken from it
    assert download.want("A", 1) == [index]  # wanted again, from someone else


def test_a_chunk_moved_to_another_position_is_refused(tmp_path: Path) -> None:
    sent = _send(tmp_path / "f", os.urandom(3 * CHUNK_SIZE))
    download = Download(sent.manifest, sources=["A"])
    (index,) = download.want("A", 1)
    download.arrived("A", index.address, sent.chunks[index.address])
    wants = download.want("A", 3)
    assert [w.index for w in wants] == [0, 1, 2]
    # Chunk 1's right bytes sent as the answer for chunk 0: its hash is not chunk 0's address.
    with pytest.raises(ChunkMismatch):
        download.arrived("A", wants[0].address, sent.chunks[wants[1].address])
    assert download.done == frozenset()
    # The index chunk sent for a data chunk fails the same way.
    with pytest.raises(ChunkMismatch):
        download.arrived("A", wants[2].address, sent.index_chunks[0])
    assert download.strikes == {"A": 2}


def test_an_index_listing_chunks_out_of_order_is_a_bad_manifest(tmp_path: Path) -> None:
    """Every chunk hashes right but sits at the wrong position: no source can do better."""
    key = os.urandom(KEY_SIZE)
    sent = _send(tmp_path / "f", os.urandom(2 * CHUNK_SIZE), key=key)
    swapped = build_index(key, sent.data_addresses[1] + sent.data_addresses[0])
    manifest = Manifest(name="f", mime="a/b", size=2 * CHUNK_SIZE, key=key, index=swapped.addresses)
    download = Download(manifest, sources=["A"])
    (index,) = download.want("A", 1)
    download.arrived("A", index.address, swapped.chunks[0])
    first = download.want("A", 1)[0]
    with pytest.raises(BadManifest, match="data chunk 0"):
        download.arrived("A", first.address, sent.chunks[first.address])
    assert download.strikes == {}  # the source served what was asked: not its fault


def test_data_chunks_under_another_key_are_a_bad_manifest(tmp_path: Path) -> None:
    other = _send(tmp_path / "other", os.urandom(CHUNK_SIZE + 9))
    key = os.urandom(KEY_SIZE)
    index = build_index(key, b"".join(other.data_addresses))  # the index is right, the chunks are not
    manifest = Manifest(name="f", mime="a/b", size=CHUNK_SIZE + 9, key=key, index=index.addresses)
    download = Download(manifest, sources=["A"])
    (want,) = download.want("A", 1)
    download.arrived("A", want.address, index.chunks[0])
    assert download.addresses == other.data_addresses
    want = download.want("A", 1)[0]
    with pytest.raises(BadManifest, match="does not decrypt"):
        download.arrived("A", want.address, other.chunks[want.address])
    assert download.strikes == {}
    assert download.done == frozenset()


def test_an_index_under_another_key_is_a_bad_manifest(tmp_path: Path) -> None:
    other = _send(tmp_path / "other", os.urandom(100))
    manifest = Manifest(name="f", mime="a/b", size=100, key=os.urandom(KEY_SIZE), index=other.manifest.index)
    download = Download(manifest, sources=["A"])
    (want,) = download.want("A", 1)
    with pytest.raises(BadManifest, match="index chunk 0"):
        download.arrived("A", want.address, other.chunks[want.address])
    assert download.strikes == {}
    assert download.addresses is None


def test_an_index_shorter_than_the_size_needs_is_a_bad_manifest() -> None:
    key = os.urandom(KEY_SIZE)
    # 3 addresses (96 bytes) and 5 (160 bytes) pad to the same 1 KiB bucket.
    index = build_index(key, os.urandom(3 * ADDRESS_SIZE))
    manifest = Manifest(name="f", mime="a/b", size=5 * CHUNK_SIZE, key=key, index=index.addresses)
    download = Download(manifest, sources=["A"])
    (want,) = download.want("A", 1)
    with pytest.raises(BadManifest):
        download.arrived("A", want.address, index.chunks[0])


# --- resuming, failing sources, stalling -------------------------------------------------------------


def test_a_resumed_download_wants_only_the_rest(tmp_path: Path) -> None:
    sent = _send(tmp_path / "f", os.urandom(5 * CHUNK_SIZE + 1))
    download = Download(sent.manifest, done={0, 2, 5, 17, -1}, sources=["A"])
    assert download.done == frozenset({0, 2, 5})  # positions that do not exist are dropped
    assert download.bytes_done == 2 * CHUNK_SIZE + 1
    (index,) = download.want("A", 10)
    assert index.kind is ChunkKind.INDEX  # the index is always fetched again
    download.arrived("A", index.address, sent.chunks[index.address])
    wants = download.want("A", 10)
    assert [w.index for w in wants] == [1, 3, 4]
    # Resume to the end: the written part is taken as it is on disk.
    out = bytearray(sent.data)
    for i in (1, 3, 4):
        out[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE] = bytes(CHUNK_SIZE)
    for want in wants:
        for got in download.arrived("A", want.address, sent.chunks[want.address]):
            out[got.index * CHUNK_SIZE : got.index * CHUNK_SIZE + len(got.plaintext)] = got.plaintext
            download.written(got.index)
    assert download.complete
    assert bytes(out) == sent.data


def test_source_failed_puts_its_chunks_back(tmp_path: Path) -> None:
    sent = _send(tmp_path / "f", os.urandom(6 * CHUNK_SIZE))
    download = Download(sent.manifest, sources=["A", "B"])
    (index,) = download.want("A", 1)
    download.arrived("A", index.address, sent.chunks[index.address])
    a = download.want("A", 3)
    b = download.want("B", 2)
    assert [w.index for w in a] == [0, 1, 2]
    assert [w.index for w in b] == [3, 4]
    download.source_failed("A")
    assert [w.index for w in download.want("B", 10)] == [0, 1, 2, 5]
    # B's own chunks stay in flight: nobody else is asked for them.
    assert download.want("A", 10) == []
    # A late answer from A for a chunk now asked of B is still taken (it is checked).
    gots = download.arrived("A", a[0].address, sent.chunks[a[0].address])
    assert [g.index for g in gots] == [0]


def test_stalled_when_every_source_lacks_the_rest(tmp_path: Path) -> None:
    sent = _send(tmp_path / "f", os.urandom(3 * CHUNK_SIZE))
    download = Download(sent.manifest, sources=["A", "B"])
    assert not download.stalled()
    (index,) = download.want("A", 1)
    assert not download.stalled()  # in flight
    download.missing("A", index.address)
    assert not download.stalled()  # B may have it
    assert download.want("B", 1) == [index]
    download.missing("B", index.address)
    assert download.stalled()
    assert download.want("A", 1) == []
    download.retry_missing()
    assert not download.stalled()
    assert download.want("B", 1) == [index]
    download.arrived("B", index.address, sent.chunks[index.address])
    # The index arrived: what the sources lacked is forgotten, data chunks are wanted from both.
    wants = download.want("A", 10)
    assert [w.index for w in wants] == [0, 1, 2]
    for want in wants:
        download.missing("A", want.address)
    assert not download.stalled()  # B may hold them
    assert download.want("A", 10) == []
    for want in download.want("B", 10):
        download.missing("B", want.address)
    assert download.stalled()
    download.add_source("C")
    assert not download.stalled()  # a new source may hold everything


def test_missing_from_a_source_not_asked_keeps_the_chunk_in_flight(tmp_path: Path) -> None:
    sent = _send(tmp_path / "f", os.urandom(CHUNK_SIZE))
    download = Download(sent.manifest, sources=["A", "B"])
    (index,) = download.want("A", 1)
    download.missing("B", index.address)  # B was not asked: A's request is still out
    assert download.want("A", 1) == []
    assert download.want("B", 1) == []


def test_sources_are_bounded() -> None:
    key = os.urandom(KEY_SIZE)
    index = build_index(key, b"")
    manifest = Manifest(name="f", mime="a/b", size=0, key=key, index=index.addresses)
    download = Download(manifest, sources=[f"peer{i}" for i in range(MAX_SOURCES + 5)])
    assert len(download.sources) == MAX_SOURCES
    download.add_source("peer0")
    assert len(download.sources) == MAX_SOURCES
    assert download.want("peer999", 1) == []  # not a source


def _two_index_chunk_file() -> tuple[Manifest, tuple[bytes, ...]]:
    """A manifest for a file just over 2 GiB (8,193 data chunks: two index chunks), and its index
    chunks; the data chunks are never needed."""
    key = os.urandom(KEY_SIZE)
    count = ADDRESSES_PER_INDEX_CHUNK + 1
    index = build_index(key, os.urandom(ADDRESS_SIZE * count))
    manifest = Manifest(name="big", mime="a/b", size=count * CHUNK_SIZE, key=key, index=index.addresses)
    assert len(manifest.index) == 2
    return manifest, index.chunks


def test_two_index_chunks_are_fetched_before_any_data() -> None:
    manifest, chunks = _two_index_chunk_file()
    download = Download(manifest, sources=["A"])
    wants = download.want("A", 10)
    assert [(w.kind, w.index) for w in wants] == [(ChunkKind.INDEX, 0), (ChunkKind.INDEX, 1)]
    assert download.arrived("A", wants[1].address, chunks[1]) == []
    assert download.addresses is None
    download.arrived("A", wants[0].address, chunks[0])
    assert download.addresses is not None
    assert len(download.addresses) == ADDRESSES_PER_INDEX_CHUNK + 1
    assert [w.index for w in download.want("A", 2)] == [0, 1]


def test_an_index_chunk_that_arrived_is_not_wanted_again() -> None:
    manifest, chunks = _two_index_chunk_file()
    download = Download(manifest, sources=["A"])
    first, second = download.want("A", 2)
    download.arrived("A", first.address, chunks[0])
    download.missing("A", second.address)
    assert download.want("A", 10) == []
    assert download.stalled()


def test_a_struck_source_gives_back_the_chunks_it_was_asked_for(tmp_path: Path) -> None:
    sent = _send(tmp_path / "f", os.urandom(8 * CHUNK_SIZE))
    download = Download(sent.manifest, sources=["A", "L"])
    (index,) = download.want("A", 1)
    download.arrived("A", index.address, sent.chunks[index.address])
    asked = download.want("L", 6)  # a pipelined request: six chunks at once
    for want in asked[:MAX_STRIKES]:
        with pytest.raises(ChunkMismatch):
            download.arrived("L", want.address, b"lie")
    assert download.struck("L")
    # L is no longer asked anything; what it still holds in flight is A's to fetch.
    assert [w.index for w in download.want("A", 10)] == [0, 1, 2, 3, 4, 5, 6, 7]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(1, 4 * CHUNK_SIZE),
    seed=st.integers(0, 2**32),
    fail_rate=st.sampled_from([0.0, 0.1, 0.4]),
)
def test_round_trip_with_a_liar_and_a_flaky_source(
    tmp_path: Path, size: int, seed: int, fail_rate: float
) -> None:
    """A honest, B drops its connection now and then (its pending answers are lost), L lies on every
    answer: the file arrives whole, only L is struck, and nothing L sent was written."""
    sent = _send(tmp_path / "f.bin", random.Random(seed).randbytes(size))
    lies = {a: c[:-1] + bytes([c[-1] ^ 1]) for a, c in sent.chunks.items()}
    download = Download(sent.manifest, sources=["L", "B", "A"])
    rng = random.Random(seed)
    driver = Driver(download, {"A": sent.chunks, "B": sent.chunks, "L": lies}, rng, lack_rate=0.2)
    for _ in range(_MAX_ROUNDS):
        if download.complete:
            break
        for source in rng.sample(["A", "B", "L"], 3):
            driver.ask(source, rng.randint(1, 3))
        rng.shuffle(driver.pending)
        if rng.random() < fail_rate:
            driver.pending = [(s, w) for s, w in driver.pending if s != "B"]
            download.source_failed("B")
        batch, driver.pending = driver.pending[:4], driver.pending[4:]
        for source, want in batch:
            driver.answer(source, want)
        if not driver.pending and download.stalled():
            download.retry_missing()
    assert download.complete
    assert bytes(driver.out) == sent.data
    assert set(download.strikes) <= {"L"}
    assert all(m.source == "L" for m in driver.mismatches)
    assert not download.struck("A")
    assert not download.struck("B")
