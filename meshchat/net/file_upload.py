"""Uploads of sent files to mailboxes: the chunks cut again from the disk, PUT with a window in flight,
resumed where they stopped.

What it is: the sending half of ``meshchat.net.file_driver``. An upload opens a channel to the mailbox
(``chunk_server.open_source``: a bulk channel where offered), states the file's size, expiry and the
recipients' token hashes (HOLD: the mailbox reserves room or refuses), PUTs the index chunks, then the
data chunks, encrypting each from the file as it goes (memory holds a window of chunks, whatever the
file's size). The next chunk to send is recorded every ``_RECORD_EVERY`` acknowledgements and at the
end, so an upload stopped at any point starts again close to where it was. A failed attempt is a
``FileProblem`` for the sender (number 0) and is tried again after ``FileConfig.retry_initial``
seconds, doubling to ``retry_max``, until the mailbox has everything or the file is gone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import BinaryIO, Final, Protocol

import trio
from libp2p.abc import IHost

from meshchat.errors import NetworkError, StorageError
from meshchat.files.chunks import CHUNK_SIZE, chunk_count, cut
from meshchat.files.manifest import decode_manifest
from meshchat.files.protocol import Failed, Hold, Ok, Put, decode_reply, encode
from meshchat.files.sqlite import FileStore, SentRecord
from meshchat.net.chunk_server import SOURCE_ERRORS, Channel, open_source

__all__ = ["MAX_UPLOADS", "Uploads"]

#: Uploads running at once (more wait their turn: each keeps a window of chunks in flight).
MAX_UPLOADS: Final = 8
#: Acknowledged chunks between two records of an upload's progress (16 MiB).
_RECORD_EVERY: Final = 64


class _Settings(Protocol):
    """What an upload needs of ``FileConfig``."""

    @property
    def window(self) -> int: ...
    @property
    def bulk(self) -> bool: ...
    @property
    def retry_initial(self) -> float: ...
    @property
    def retry_max(self) -> float: ...


class Uploads:
    """A node's uploads to mailboxes (see the module docstring)."""

    def __init__(
        self,
        host: IHost,
        store: FileStore,
        *,
        config: _Settings,
        reach: Callable[[str], Awaitable[bool]],
        problem: Callable[[bytes, str], None],
        changed: Callable[[], None],
    ) -> None:
        """Upload ``store``'s sent files from ``host``; ``reach(peer)`` dials a mailbox, ``problem``
        reports a failed attempt, ``changed`` is called as an upload moves on."""
        self._host = host
        self._store = store
        self._config = config
        self._reach = reach
        self._problem = problem
        self._changed = changed
        #: Where uploads run (set by the driver once it runs).
        self.nursery: trio.Nursery | None = None
        self._slots = trio.Semaphore(MAX_UPLOADS)
        self._running: set[tuple[bytes, str]] = set()
        self._acked: dict[tuple[bytes, str], int] = {}
        #: Chunks mailboxes acknowledged.
        self.chunks_uploaded = 0

    def start(self, file_id: bytes, mailbox: str) -> None:
        """Upload a sent file to ``mailbox`` in the background (once at a time)."""
        if (file_id, mailbox) in self._running or self.nursery is None:
            return
        self._running.add((file_id, mailbox))
        self.nursery.start_soon(self._until_done, file_id, mailbox)

    def acked(self, file_id: bytes, mailbox: str, recorded: int) -> int:
        """Data chunks ``mailbox`` acknowledged (this run's count, else what was ``recorded``)."""
        return self._acked.get((file_id, mailbox), recorded)

    async def _until_done(self, file_id: bytes, mailbox: str) -> None:
        delay = self._config.retry_initial
        try:
            while True:
                async with self._slots:
                    try:
                        problem = await self._attempt(file_id, mailbox)
                    except StorageError as exc:  # files.db failed: reported, tried again later
                        problem = f"the file store failed: {exc}"
                if not problem:
                    return
                self._problem(file_id, f"upload to {mailbox[-12:]}: {problem}")
                await trio.sleep(delay)  # a timer: the mailbox may come back
                delay = min(delay * 2, self._config.retry_max)
        finally:
            self._running.discard((file_id, mailbox))

    async def _attempt(self, file_id: bytes, mailbox: str) -> str:
        """One attempt; "" when the mailbox has everything (or the file is gone), else the problem."""
        record = self._store.sent(file_id)
        if record is None:
            return ""
        start = self._store.uploaded(file_id).get(mailbox, (0, False))[0]
        if not await self._reach(mailbox):
            return "cannot reach the mailbox"
        try:
            channel = await open_source(self._host, mailbox, bulk=self._config.bulk)
        except NetworkError as exc:
            return str(exc)
        try:
            manifest = decode_manifest(record.manifest)
            tokens = tuple(record.tokens[i : i + 32] for i in range(0, len(record.tokens), 32))
            index = self._store.index_chunks(file_id)
            wire = sum(len(d) for _, d in index) + chunk_count(record.size) * (CHUNK_SIZE + 16)
            hold = Hold(file_id=file_id, expiry=manifest.expiry, token_hashes=tokens, total_bytes=wire)
            await channel.send(encode(hold))
            answer = decode_reply(await channel.receive())
            if not isinstance(answer, Ok):
                return answer.text if isinstance(answer, Failed) else "unexpected answer to HOLD"
            for address, data in index:
                await channel.send(encode(Put(file_id=file_id, address=address, data=data)))
                answer = decode_reply(await channel.receive())
                if not isinstance(answer, Ok):
                    return answer.text if isinstance(answer, Failed) else "unexpected answer to PUT"
            return await self._put_chunks(channel, record, mailbox, start)
        except SOURCE_ERRORS as exc:
            return f"{type(exc).__name__}: {exc}"
        except OSError as exc:
            return f"cannot read {record.path}: {exc.strerror}"
        finally:
            await channel.aclose()

    async def _put_chunks(self, channel: Channel, record: SentRecord, mailbox: str, start: int) -> str:
        acked, window = start, self._config.window
        pending: deque[int] = deque()
        file_id = record.file_id
        source = await trio.to_thread.run_sync(_open_binary, record.path)
        with source:
            source.seek(start * CHUNK_SIZE)
            chunks = cut(source, record.key, record.size, first=start)
            done = False
            while not done or pending:
                while not done and len(pending) < window:
                    chunk = await trio.to_thread.run_sync(next, chunks, None)
                    if chunk is None:
                        done = True
                        break
                    put = Put(file_id=file_id, address=chunk.address, data=chunk.ciphertext)
                    await channel.send(encode(put))
                    pending.append(chunk.index)
                if not pending:
                    break
                answer = decode_reply(await channel.receive())
                if not isinstance(answer, Ok):
                    self._store.upload_progress(file_id, mailbox, acked)
                    return answer.text if isinstance(answer, Failed) else "unexpected answer to PUT"
                acked = pending.popleft() + 1
                self.chunks_uploaded += 1
                self._acked[(file_id, mailbox)] = acked
                if acked % _RECORD_EVERY == 0:
                    self._store.upload_progress(file_id, mailbox, acked)
                self._changed()
        self._store.upload_progress(file_id, mailbox, acked, finished=True)
        self._changed()
        return ""


def _open_binary(path: str) -> BinaryIO:
    return open(path, "rb")  # closed by the caller's with
