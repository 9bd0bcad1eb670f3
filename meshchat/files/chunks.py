"""File chunks: cut, pad, encrypt, address; the index of chunk addresses; fetch tokens.

A file sent as an attachment is cut into ``CHUNK_SIZE`` plaintext pieces. Each is padded (only the
last can be short: it is padded with zeros to the next power of two of at least ``MIN_PADDED``, so a
small file's size shows only to that bucket) and encrypted with AES-256-GCM under a random per-file
key, with a nonce made of the chunk's kind and position: a chunk moved to another position, or a data
chunk passed off as an index chunk, fails to decrypt. A chunk's address is the SHA-256 of its
ciphertext, so anyone holding it (the sender, a mailbox, another recipient) can serve it and a
recipient checks every chunk before a byte is written (a CIDv1 raw block with a sha2-256 multihash
names the same bytes, should chunks ever travel over IPFS).

The addresses of the data chunks, concatenated, form the *index*; it is cut and encrypted the same
way (kind ``INDEX``), and the manifest carries only the index chunks' addresses: a 1 GiB file has
4,096 data chunks and one index chunk, so the manifest stays small enough for one envelope.

AES-GCM and SHA-256 rather than the XChaCha20-Poly1305 and BLAKE2b of the envelopes: measured here
(1 MiB buffers) AES-GCM runs at ~9 GB/s and SHA-256 at ~1.6 GB/s (both in hardware), XChaCha20 at
0.75 GB/s and BLAKE2b at 0.86 GB/s, and chunks are where the bytes are. A per-file key with a
position nonce never repeats a (key, nonce) pair: every position is encrypted once, and encrypting it
again gives the same bytes (which is what makes the address stable: the sender keeps no copy).

This module does no I/O beyond reading from a file object it is handed (``cut``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshchat.errors import DecryptionFailed, TooLarge

__all__ = [
    "ADDRESSES_PER_INDEX_CHUNK",
    "ADDRESS_SIZE",
    "CHUNK_SIZE",
    "KEY_SIZE",
    "MAX_CHUNK_WIRE",
    "MAX_FILE_SIZE",
    "MIN_PADDED",
    "TOKEN_SIZE",
    "ChunkKind",
    "CutChunk",
    "FileIndex",
    "address_of",
    "build_index",
    "chunk_count",
    "cut",
    "decrypt_chunk",
    "encrypt_chunk",
    "fetch_token",
    "file_id_of",
    "index_chunk_count",
    "padded_length",
    "plain_length",
    "token_hash",
]

#: Plaintext bytes per chunk. 256 KiB: big enough that per-chunk work (a request, a hash call, a row)
#: is a few percent of moving the bytes, small enough that a lost chunk costs little to fetch again
#: and a small photo wastes at most its padding bucket.
CHUNK_SIZE: Final = 256 * 1024
#: The smallest padded chunk: a 3-byte file still travels as 1 KiB.
MIN_PADDED: Final = 1024
#: AES-GCM's tag.
_TAG = 16
#: The largest chunk on the wire or on disk.
MAX_CHUNK_WIRE: Final = CHUNK_SIZE + _TAG
#: SHA-256.
ADDRESS_SIZE: Final = 32
#: Addresses in one index chunk.
ADDRESSES_PER_INDEX_CHUNK: Final = CHUNK_SIZE // ADDRESS_SIZE
#: The largest file meshchat sends: 4 GiB (16,384 chunks, two index chunks). Far above the 1 GiB the
#: issue asks for; a bound so that a manifest's size claim cannot make anyone plan absurd work.
MAX_FILE_SIZE: Final = 4 * 1024**3
#: AES-256.
KEY_SIZE: Final = 32
#: A recipient's fetch token (FILES.md): 16 bytes.
TOKEN_SIZE: Final = 16
_ASSOCIATED = b"meshchat file chunk v1"


class ChunkKind(IntEnum):
    """What a chunk holds: part of the file, or part of its index."""

    #: File bytes.
    DATA = 0
    #: Addresses of data chunks.
    INDEX = 1


def chunk_count(size: int) -> int:
    """Data chunks of a ``size``-byte file (0 for an empty file)."""
    return -(-size // CHUNK_SIZE)


def index_chunk_count(size: int) -> int:
    """Index chunks of a ``size``-byte file (at least one: an empty file has an empty index)."""
    return max(1, -(-chunk_count(size) * ADDRESS_SIZE // CHUNK_SIZE))


def plain_length(size: int, index: int) -> int:
    """Bytes of the file in data chunk ``index``."""
    return min(CHUNK_SIZE, size - index * CHUNK_SIZE)


def padded_length(length: int) -> int:
    """What a chunk of ``length`` plaintext bytes is padded to: the next power of two, at least
    ``MIN_PADDED``, at most ``CHUNK_SIZE``."""
    if not 0 <= length <= CHUNK_SIZE:
        raise ValueError(f"a chunk holds 0 to {CHUNK_SIZE} bytes, not {length}")
    return max(MIN_PADDED, 1 << (length - 1).bit_length()) if length else MIN_PADDED


def _nonce(kind: ChunkKind, index: int) -> bytes:
    return struct.pack(">B3xQ", kind, index)


def _associated(length: int) -> bytes:
    """The chunk's authenticated data: the format and the plaintext length, so a chunk cannot claim to
    be shorter or longer than it was (padding alone would hide a difference within its bucket)."""
    return _ASSOCIATED + struct.pack(">I", length)


def encrypt_chunk(key: bytes | AESGCM, kind: ChunkKind, index: int, plaintext: bytes) -> bytes:
    """The ciphertext of chunk ``index`` (padded, then sealed); pass an ``AESGCM`` to reuse its key
    schedule across chunks."""
    aead = key if isinstance(key, AESGCM) else AESGCM(key)
    padding = padded_length(len(plaintext)) - len(plaintext)
    data = plaintext + bytes(padding) if padding else plaintext
    return aead.encrypt(_nonce(kind, index), data, _associated(len(plaintext)))


def decrypt_chunk(key: bytes | AESGCM, kind: ChunkKind, index: int, ciphertext: bytes, length: int) -> bytes:
    """The first ``length`` plaintext bytes of chunk ``index``; ``DecryptionFailed`` if the ciphertext
    is not that chunk under that key (altered, moved or of another file) or is not padded as it should."""
    if len(ciphertext) != padded_length(length) + _TAG:
        raise DecryptionFailed
    aead = key if isinstance(key, AESGCM) else AESGCM(key)
    try:
        plain = aead.decrypt(_nonce(kind, index), ciphertext, _associated(length))
    except InvalidTag as exc:
        raise DecryptionFailed from exc
    return plain[:length] if len(plain) != length else plain


def address_of(ciphertext: bytes | memoryview) -> bytes:
    """A chunk's address: SHA-256 of its ciphertext."""
    return hashlib.sha256(ciphertext).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class CutChunk:
    """One data chunk as ``cut`` produced it."""

    #: Its position in the file.
    index: int
    #: The encrypted, padded bytes.
    ciphertext: bytes
    #: SHA-256 of ``ciphertext``.
    address: bytes


def cut(source: BinaryIO, key: bytes, size: int, *, first: int = 0) -> Iterator[CutChunk]:
    """Encrypt the data chunks of ``source`` (``size`` bytes, read from its current position, which is
    chunk ``first``), one at a time: memory holds one chunk whatever the file's size. ``ValueError``
    if the file ends early (it changed since ``size`` was read)."""
    if not 0 <= size <= MAX_FILE_SIZE:
        raise TooLarge(what="file", size=size, limit=MAX_FILE_SIZE)
    aead = AESGCM(key)
    for index in range(first, chunk_count(size)):
        want = plain_length(size, index)
        plain = source.read(want)
        if len(plain) != want:
            raise ValueError(f"the file ended at chunk {index}: it changed while being read")
        ciphertext = encrypt_chunk(aead, ChunkKind.DATA, index, plain)
        yield CutChunk(index=index, ciphertext=ciphertext, address=address_of(ciphertext))


@dataclass(frozen=True, slots=True, kw_only=True)
class FileIndex:
    """A file's index chunks (ciphertext) and their addresses, as the manifest names them."""

    #: Encrypted index chunks, in order.
    chunks: tuple[bytes, ...]
    #: Their addresses (what the manifest carries).
    addresses: tuple[bytes, ...]

    @property
    def file_id(self) -> bytes:
        """The file's id (``file_id_of`` its index addresses)."""
        return file_id_of(self.addresses)


def build_index(key: bytes, addresses: bytes) -> FileIndex:
    """Cut and encrypt ``addresses`` (data chunk addresses, concatenated) into index chunks."""
    if len(addresses) % ADDRESS_SIZE:
        raise ValueError("addresses must be whole 32-byte addresses")
    aead = AESGCM(key)
    chunks = []
    for index, start in enumerate(range(0, max(1, len(addresses)), CHUNK_SIZE)):
        chunks.append(encrypt_chunk(aead, ChunkKind.INDEX, index, addresses[start : start + CHUNK_SIZE]))
    return FileIndex(chunks=tuple(chunks), addresses=tuple(address_of(c) for c in chunks))


def file_id_of(index_addresses: tuple[bytes, ...] | list[bytes]) -> bytes:
    """The id mailboxes and both ends know a file by: SHA-256 over its index chunks' addresses."""
    return hashlib.sha256(b"meshchat file" + b"".join(index_addresses)).digest()


def fetch_token(key: bytes, recipient: bytes) -> bytes:
    """The token ``recipient`` (its 32-byte Ed25519 public key) shows a mailbox once it has the whole
    file: only the sender and that recipient can compute it (it needs the file key)."""
    return hashlib.blake2b(recipient, key=key, person=b"meshchat-fetch", digest_size=TOKEN_SIZE).digest()


def token_hash(token: bytes) -> bytes:
    """What the sender gives a mailbox for a token (so the mailbox cannot present it anywhere)."""
    return hashlib.sha256(token).digest()
