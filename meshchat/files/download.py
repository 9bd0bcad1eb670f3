"""Which chunk to fetch from which source next, and what to make of what comes back (sans-IO).

A ``Download`` knows one file's manifest, the chunks already written (after a restart: from the
store), and its sources (the sender, the mailboxes the manifest names, any other peer that holds the
file). Its driver asks ``want(source, n)`` for the next chunks to request from a source, hands back
each answer (``arrived``, ``missing``, ``source_failed``), writes the plaintext it is given and tells
the store. It does no I/O and keeps no clock.

First the index chunks are fetched (they list the data chunks' addresses), then the data chunks,
lowest position first; several sources share the work, each taking chunks no other source is being
asked for. A chunk is checked twice before it is handed to the driver: its SHA-256 must be the address
asked for (else ``ChunkMismatch``: the source is counted and struck off after ``MAX_STRIKES``; the chunk
goes back to be asked elsewhere), and it must decrypt under the file's key at its position (a chunk
that hashes right but does not decrypt means the *sender* built a bad file: ``BadManifest``, the
download cannot succeed from anyone).

Bounds: everything it holds is proportional to the manifest's chunk count, which the manifest's
checked size bounds (``MAX_FILE_SIZE``: 16,384 data chunks), and to the sources, at most
``MAX_SOURCES``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshchat.errors import BadManifest, ChunkMismatch, DecryptionFailed
from meshchat.files.chunks import (
    ADDRESS_SIZE,
    CHUNK_SIZE,
    ChunkKind,
    address_of,
    chunk_count,
    decrypt_chunk,
    plain_length,
)
from meshchat.files.manifest import Manifest

__all__ = ["MAX_SOURCES", "MAX_STRIKES", "Download", "Got", "Want"]

#: Wrong chunks a source may send before this download stops asking it (a damaged disk or link is
#: forgiven twice; a liar is not kept for long).
MAX_STRIKES: Final = 3
#: Sources one download asks (the sender, up to eight mailboxes, a few peers).
MAX_SOURCES: Final = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Want:
    """A chunk to request."""

    #: Index or data.
    kind: ChunkKind
    #: Its position among chunks of that kind.
    index: int
    #: Its address.
    address: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Got:
    """A checked, decrypted data chunk to write at ``index * CHUNK_SIZE``."""

    #: Its position.
    index: int
    #: The file's bytes in it.
    plaintext: bytes


class Download:
    """One file's fetch plan (see the module docstring)."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        done: Iterable[int] = (),
        sources: Sequence[str] = (),
        addresses: bytes = b"",
    ) -> None:
        """Plan ``manifest``'s download; ``done`` are data chunks already written; ``addresses`` the
        data chunks' addresses if the index was fetched before (``BadManifest`` if they do not fit)."""
        self.manifest = manifest
        self._aead = AESGCM(manifest.key)
        self._count = chunk_count(manifest.size)
        self._index_parts: dict[int, bytes] = {}
        self._index_wanted = {a: i for i, a in enumerate(manifest.index)}
        #: Data chunk addresses, once the index is in.
        self.addresses: list[bytes] | None = None
        self._by_address: dict[bytes, list[int]] = {}
        self._done: set[int] = {i for i in done if 0 <= i < self._count}
        self._in_flight: dict[bytes, str] = {}
        self._lacks: dict[str, set[bytes]] = {}
        self._next = 0  # lowest data position that may still be wanted
        #: Wrong chunks by source.
        self.strikes: dict[str, int] = {}
        self.sources: list[str] = []
        for source in sources:
            self.add_source(source)
        if addresses or not self._count:  # an empty file has nothing to fetch, its index included
            self._take_index(addresses)

    # --- sources ----------------------------------------------------------------------------------------

    def add_source(self, source: str) -> None:
        """Ask ``source`` too (ignored past ``MAX_SOURCES`` or once struck off)."""
        if source not in self.sources and len(self.sources) < MAX_SOURCES and not self.struck(source):
            self.sources.append(source)
            self._lacks.setdefault(source, set())

    def struck(self, source: str) -> bool:
        """Whether ``source`` sent ``MAX_STRIKES`` wrong chunks."""
        return self.strikes.get(source, 0) >= MAX_STRIKES

    def source_failed(self, source: str) -> None:
        """``source`` went away: what it was asked for is wanted again."""
        for address in [a for a, s in self._in_flight.items() if s == source]:
            del self._in_flight[address]

    def release(self) -> None:
        """Nothing is being fetched any more (the driver's round ended, or was cancelled half-way):
        every chunk not written is wanted again."""
        self._in_flight.clear()

    def retry_missing(self) -> None:
        """Forget which sources said they lack which chunks (a mailbox may have them by now)."""
        for lacks in self._lacks.values():
            lacks.clear()

    # --- progress ------------------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Every data chunk is written."""
        return len(self._done) == self._count

    @property
    def bytes_done(self) -> int:
        """File bytes written so far."""
        last = self._count - 1
        full = len(self._done) - (last in self._done)
        return full * CHUNK_SIZE + (plain_length(self.manifest.size, last) if last in self._done else 0)

    @property
    def done(self) -> frozenset[int]:
        """Data chunks written."""
        return frozenset(self._done)

    def stalled(self) -> bool:
        """Nothing is being fetched and every usable source lacks every chunk still wanted."""
        return (
            not self.complete
            and not self._in_flight
            and not any(self.want(s, 1, peek=True) for s in self.sources)
        )

    # --- the plan -------------------------------------------------------------------------------------

    def want(self, source: str, limit: int, *, peek: bool = False) -> list[Want]:
        """Up to ``limit`` chunks to ask ``source`` for now (marked in flight unless ``peek``)."""
        if source not in self.sources or self.struck(source):
            return []
        lacks = self._lacks[source]
        wants: list[Want] = []
        if self.addresses is None:
            for address, index in self._index_wanted.items():
                if index in self._index_parts:
                    continue
                if len(wants) < limit and address not in self._in_flight and address not in lacks:
                    wants.append(Want(kind=ChunkKind.INDEX, index=index, address=address))
        else:
            while self._next < self._count and self._next in self._done:
                self._next += 1
            for index in range(self._next, self._count):
                if len(wants) >= limit:
                    break
                address = self.addresses[index]
                free = address not in self._in_flight and address not in lacks
                if index not in self._done and free and all(w.address != address for w in wants):
                    wants.append(Want(kind=ChunkKind.DATA, index=index, address=address))
        if not peek:
            for w in wants:
                self._in_flight[w.address] = source
        return wants

    def missing(self, source: str, address: bytes) -> None:
        """``source`` does not hold ``address``."""
        if self._in_flight.get(address) == source:
            del self._in_flight[address]
        if source in self._lacks:
            self._lacks[source].add(address)

    def arrived(self, source: str, address: bytes, data: bytes) -> list[Got]:
        """``source`` sent ``data`` for ``address``: check it and return what to write (none for an
        index chunk or a chunk not wanted). ``ChunkMismatch`` if it is not that chunk (the source is
        counted)."""
        self.received(source, address)
        try:
            if self.addresses is None:
                self._index_arrived(address, data)
                return []
            return self.open_data(source, address, data)
        except ChunkMismatch:
            self.strike(source)
            raise ChunkMismatch(source=source, address=address) from None

    def received(self, source: str, address: bytes) -> None:
        """``source`` answered for ``address`` (it is no longer in flight)."""
        if self._in_flight.get(address) == source:
            del self._in_flight[address]

    def strike(self, source: str) -> None:
        """``source`` sent a wrong chunk (struck off at ``MAX_STRIKES``: its chunks go elsewhere)."""
        self.strikes[source] = self.strikes.get(source, 0) + 1
        if self.struck(source):
            self.source_failed(source)

    def open_data(self, source: str, address: bytes, data: bytes) -> list[Got]:
        """Check and decrypt a data chunk without changing the plan (a driver may run this on a worker
        thread, then call ``received``/``strike``/``written`` on its own): ``ChunkMismatch`` if the
        bytes do not hash to ``address``, ``BadManifest`` if they do but do not decrypt."""
        if address_of(data) != address:
            raise ChunkMismatch(source=source, address=address)
        return [
            Got(index=i, plaintext=self._open(ChunkKind.DATA, i, data))
            for i in self._by_address.get(address, ())
            if i not in self._done
        ]

    def _index_arrived(self, address: bytes, data: bytes) -> None:
        if address_of(data) != address:
            raise ChunkMismatch(source="", address=address)
        index = self._index_wanted.get(address)
        if index is not None and index not in self._index_parts:
            self._index_parts[index] = self._open(ChunkKind.INDEX, index, data)
            if len(self._index_parts) == len(self.manifest.index):
                self._take_index()

    def unwritten(self, index: int) -> None:
        """Data chunk ``index`` turned out not to be in the partial file after all: want it again."""
        self._done.discard(index)
        self._next = min(self._next, index)

    def written(self, index: int) -> None:
        """The driver wrote data chunk ``index``."""
        if 0 <= index < self._count:
            self._done.add(index)

    def _open(self, kind: ChunkKind, index: int, data: bytes) -> bytes:
        if kind is ChunkKind.DATA:
            length = plain_length(self.manifest.size, index)
        else:
            total = self._count * ADDRESS_SIZE
            length = max(0, min(CHUNK_SIZE, total - index * CHUNK_SIZE))
        try:
            return decrypt_chunk(self._aead, kind, index, data, length)
        except DecryptionFailed as exc:  # it hashed right, so the sender made it so: nobody has better
            raise BadManifest(
                f"{kind.name.lower()} chunk {index} does not decrypt under the file's key"
            ) from exc

    def _take_index(self, joined: bytes | None = None) -> None:
        if joined is None:
            joined = b"".join(self._index_parts[i] for i in range(len(self.manifest.index)))
        if len(joined) != self._count * ADDRESS_SIZE:
            raise BadManifest(
                f"the index lists {len(joined) // ADDRESS_SIZE} chunks, the size needs {self._count}"
            )
        self.addresses = [joined[i : i + ADDRESS_SIZE] for i in range(0, len(joined), ADDRESS_SIZE)]
        for index, address in enumerate(self.addresses):
            self._by_address.setdefault(address, []).append(index)
        self._index_parts.clear()
        self.retry_missing()
