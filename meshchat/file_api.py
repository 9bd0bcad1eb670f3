"""``node.files``: send a photo, a voice note, a video or any document; fetch what others sent.

```python
handle = await node.send_file(bob, "holiday.jpg", caption="the lake")   # node.files.send
print(handle.status, handle.progress)      # delivered?  FileProgress(total, stored, fetched, complete)
async for event in node.events():
    if isinstance(event, Attachment):       # name, type, size, thumbnail, caption in event.manifest
        path = await node.fetch(event)      # checked chunk by chunk; lands in the downloads folder
```

Sending cuts the file once to learn its chunks' addresses (nothing is copied: chunks are encrypted
again from the file whenever someone asks for them), seals the manifest to the recipient inside an
ordinary message (its delivery and read receipts are the message's), and uploads the chunks to up to
``FileConfig.mailbox_copies`` of the node's mailboxes in the background, so the recipient can fetch
them while the sender is offline. The file must stay where it is until the recipient has it (a
changed file is refused chunk by chunk, not served wrong). Design: ``meshchat.files``,
``meshchat.net.file_driver``, README "Files".
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import trio

from meshchat.contacts import Contact, Contacts
from meshchat.errors import BadManifest, ProfileError, TooLarge, UnknownFile
from meshchat.files.chunks import MAX_FILE_SIZE, build_index, cut, fetch_token, token_hash
from meshchat.files.events import Attachment, FileProgress
from meshchat.files.hold import ChunkHold, HoldLimits
from meshchat.files.manifest import (
    MAX_CAPTION_BYTES,
    Manifest,
    decode_manifest,
    encode_manifest,
    encode_offer,
)
from meshchat.files.names import claim_path, safe_name
from meshchat.files.protocol import MAX_TOKENS
from meshchat.files.sqlite import FILES_FILE, FileStore, ReceivedRecord, ReceivedState, SentRecord
from meshchat.groups.events import GroupView
from meshchat.groups.storage import GroupOutRecord
from meshchat.identity import Identity, PublicIdentity
from meshchat.media import describe
from meshchat.net.file_driver import FileConfig, FileDriver, FileStatistics
from meshchat.net.store_driver import MessageHandle, StoreDriver
from meshchat.store.encrypted import store_key
from meshchat.store.messenger import Messenger
from meshchat.store.storage import OutboxRecord

__all__ = [
    "DOWNLOADS_FOLDER",
    "HOLD_FOLDER",
    "FileParts",
    "Files",
    "GroupFileHandle",
    "GroupSender",
    "open_file_parts",
]

#: Where received files land inside a profile folder (unless ``FileConfig.downloads`` says otherwise).
DOWNLOADS_FOLDER = "downloads"
#: Where a mailbox keeps other people's chunks inside its profile folder.
HOLD_FOLDER = "hold"


class GroupSender(Protocol):
    """What sending a file to a group needs of ``node.groups`` (``meshchat.group_api.Groups``)."""

    def send(self, group: bytes | str, body: bytes | str, *, ref: str = "") -> GroupOutRecord: ...
    def members(self, group: bytes | str) -> GroupView: ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GroupFileHandle:
    """A file sent to a group: its group message (``node.groups.status(message_id)``) and progress."""

    group_id: bytes
    message_id: bytes
    file_id: bytes
    _progress: Callable[[], FileProgress] = dataclasses.field(repr=False)

    @property
    def progress(self) -> FileProgress:
        """Bytes stored on mailboxes and served to members."""
        return self._progress()


class Files:
    """A node's files (see the module docstring); ``node.files``."""

    def __init__(
        self,
        driver: FileDriver,
        *,
        identity: Identity,
        messenger: Messenger,
        store: StoreDriver,
        contacts: Contacts | None,
        wall_clock: Callable[[], float],
        reach: Callable[[PublicIdentity, bytes], None],
        wait_for: Callable[[Callable[[], bool]], Awaitable[None]],
        groups: GroupSender | None = None,
    ) -> None:
        """Use the node's; this only wires the parts (``groups`` is ``node.groups``)."""
        self._groups = groups
        self.driver = driver
        self._identity = identity
        self._messenger = messenger
        self._store = store
        self._contacts = contacts
        self._wall_clock = wall_clock
        self._reach = reach
        self._wait_for = wait_for

    def _recipient(self, to: Contact | PublicIdentity | str) -> PublicIdentity:
        if isinstance(to, str):
            if self._contacts is None:
                raise ProfileError("this node has no contacts: pass a PublicIdentity")
            to = self._contacts.find(to)
        return to.public if isinstance(to, Contact) else to

    async def send(
        self, to: Contact | PublicIdentity | str, path: str | Path, *, caption: str = "", ref: str = ""
    ) -> MessageHandle:
        """Send the file at ``path`` to ``to`` (a contact, a public key, or a contact's name or PeerId).

        Returns the manifest message's handle: ``status`` as for a message, ``progress`` for the bytes
        stored on mailboxes and served to the recipient. ``TooLarge`` beyond ``MAX_FILE_SIZE``,
        ``OSError`` if the file cannot be read, ``ValueError`` for a caption over 4,096 bytes.
        """
        recipient = self._recipient(to)
        known = self._messenger.storage.outbox_by_ref(ref) if ref else None
        if known is not None:  # sent before (a restarted app): that file, not a second copy
            for sent in self.driver.store.sent_files(1000):
                if sent.message_id == known.message_id:
                    return self._handle(known, sent.file_id)
        manifest, file_id = await self._prepare(path, caption, [recipient.ed25519])
        now = self._wall_clock()
        out, actions = self._messenger.send(
            recipient, encode_offer(manifest), wall_now=now, ref=ref, ttl=None, control=True
        )
        self._store.perform(actions)
        if actions:
            self._reach(recipient, out.message_id)
        self._sent(file_id, out.message_id, manifest)
        return self._handle(out, file_id)

    def _handle(self, record: OutboxRecord, file_id: bytes) -> MessageHandle:
        return MessageHandle(
            record,
            messenger=self._messenger,
            wait_for=self._wait_for,
            progress=lambda: self.driver.sent_progress(file_id),
        )

    async def send_to_group(
        self, group: bytes | str, path: str | Path, *, caption: str = "", ref: str = ""
    ) -> GroupFileHandle:
        """Send the file at ``path`` to every member of ``group`` (its id, or its name): one manifest
        in one group message (``node.groups.status`` follows it), one upload to the mailboxes, each
        member fetches on its own (mailboxes keep the chunks until every member has them)."""
        if self._groups is None:
            raise ProfileError("this node has no groups")
        view = self._groups.members(group)
        members = sorted(m for m in view.members if m != self._identity.public.ed25519)
        manifest, file_id = await self._prepare(path, caption, members)
        out = self._groups.send(view.group_id, encode_offer(manifest), ref=ref)
        self._sent(file_id, out.message_id, manifest)
        return GroupFileHandle(
            group_id=view.group_id,
            message_id=out.message_id,
            file_id=file_id,
            _progress=lambda: self.driver.sent_progress(file_id),
        )

    async def _prepare(
        self, path: str | Path, caption: str, recipients: Sequence[bytes]
    ) -> tuple[Manifest, bytes]:
        """Describe and cut the file, record it as sent (with a fetch token per recipient); its
        manifest and id. The chunks are not copied: they are encrypted again whenever asked for."""
        source = Path(path)
        if len(caption.encode("utf-8")) > MAX_CAPTION_BYTES:
            raise ValueError(f"a caption is at most {MAX_CAPTION_BYTES} bytes")
        if len(recipients) > MAX_TOKENS:
            raise ValueError(f"a file goes to at most {MAX_TOKENS} recipients at once")
        info_stat = await trio.to_thread.run_sync(os.stat, source)
        if not stat.S_ISREG(info_stat.st_mode):
            raise IsADirectoryError(f"{source} is not a regular file")
        if info_stat.st_size > MAX_FILE_SIZE:
            raise TooLarge(what="file", size=info_stat.st_size, limit=MAX_FILE_SIZE)
        media = await trio.to_thread.run_sync(describe, source)
        key = os.urandom(32)
        addresses = await trio.to_thread.run_sync(_addresses, source, key, info_stat.st_size)
        index = build_index(key, addresses)
        now = self._wall_clock()
        config = self.driver.config
        mailboxes = tuple(self._messenger.mailboxes[: config.mailbox_copies])
        # a name that is not UTF-8 (bytes from another system) keeps its readable part
        name = source.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        name = name.encode("utf-8")[:255].decode("utf-8", "ignore") or safe_name("")
        manifest = Manifest(
            name=name,
            mime=media.mime,
            size=info_stat.st_size,
            key=key,
            index=index.addresses,
            thumbnail=media.thumbnail or b"",
            width=media.width or 0,
            height=media.height or 0,
            duration_ms=media.duration_ms or 0,
            caption=caption,
            mailboxes=mailboxes,
            expiry=int(now + config.ttl),
        )
        record = SentRecord(
            file_id=index.file_id,
            path=await trio.to_thread.run_sync(os.path.realpath, source),
            size=info_stat.st_size,
            mtime_ns=info_stat.st_mtime_ns,
            key=key,
            manifest=encode_manifest(manifest),
            message_id=None,
            created_at=now,
            tokens=b"".join(token_hash(fetch_token(key, r)) for r in recipients),
        )
        split = [addresses[i : i + 32] for i in range(0, len(addresses), 32)]
        self.driver.store.add_sent(
            record,
            index=list(zip(index.addresses, index.chunks, strict=True)),
            addresses=split,
            mailboxes=mailboxes,
        )
        return manifest, index.file_id

    def _sent(self, file_id: bytes, message_id: bytes, manifest: Manifest) -> None:
        """The manifest is on its way: note its message and start the uploads."""
        self.driver.store.set_sent_message(file_id, message_id)
        for mailbox in manifest.mailboxes:
            self.driver.start_upload(file_id, mailbox)

    async def fetch(self, attachment: Attachment | int, dest: str | Path | None = None) -> Path:
        """Fetch an attachment (or its number) and return where it is: in the downloads folder, or
        moved to ``dest`` (a folder: under the file's safe name; else that path). Waits until every
        byte is in; resumes what an earlier run started. ``UnknownFile``; ``BadManifest`` if the
        sender's file is broken."""
        number = attachment.number if isinstance(attachment, Attachment) else attachment
        self.driver.fetch(number)
        record = await self.driver.wait_fetched(number)
        if record.state is ReceivedState.FAILED:
            raise BadManifest(record.error)
        path = Path(record.path)
        if dest is None:
            return path
        target = Path(dest)
        if await trio.to_thread.run_sync(target.is_dir):
            target = claim_path(target, decode_manifest(record.manifest).name)
        await trio.to_thread.run_sync(shutil.move, path, target)
        self.driver.store.set_received(number, ReceivedState.DONE, path=str(target))
        self.driver.store.moved(record.file_id, str(target))
        return target

    def start_fetch(self, number: int) -> None:
        """Fetch attachment ``number`` in the background (``UnknownFile`` if none)."""
        self.driver.fetch(number)

    def received(self, *, after: int = 0, limit: int = 100) -> list[ReceivedRecord]:
        """Attachments received, numbered after ``after``, oldest first (``manifest(record)`` reads one)."""
        return self.driver.store.received_list(after=after, limit=limit)

    def attachment(self, number: int) -> ReceivedRecord:
        """One received attachment (``UnknownFile`` if none)."""
        record = self.driver.store.received(number)
        if record is None:
            raise UnknownFile(str(number))
        return record

    @staticmethod
    def manifest(record: ReceivedRecord | SentRecord) -> Manifest:
        """The manifest of a received or sent file."""
        return decode_manifest(record.manifest)

    def sent(self, limit: int = 100) -> list[SentRecord]:
        """Files sent, newest first."""
        return self.driver.store.sent_files(limit)

    def progress(self, number: int) -> FileProgress:
        """How much of received attachment ``number`` is written."""
        return self.driver.received_progress(number)

    def sent_progress(self, file_id: bytes) -> FileProgress:
        """How far a sent file got (stored on mailboxes, served)."""
        return self.driver.sent_progress(file_id)

    def statistics(self) -> FileStatistics:
        """Counters: chunks fetched and uploaded, bytes served, mismatches by source, refusals."""
        return self.driver.statistics()


def _addresses(path: Path, key: bytes, size: int) -> bytes:
    """Every data chunk's address, concatenated (one pass over the file; runs on a worker thread)."""
    with path.open("rb") as source:
        return b"".join(chunk.address for chunk in cut(source, key, size))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FileParts:
    """What ``open_file_parts`` opened for a node: its file store, its chunk hold (a mailbox's) and
    its downloads folder."""

    store: FileStore
    hold: ChunkHold | None
    downloads: Path


def open_file_parts(
    profile: Path | None,
    identity: Identity,
    *,
    config: FileConfig,
    mailbox: bool,
    hold_limits: HoldLimits | None,
    closing: contextlib.ExitStack,
) -> FileParts:
    """Open ``<profile>/files.db`` (encrypted with the store key), on a mailbox ``<profile>/hold/``,
    and pick the downloads folder (``config.downloads`` or ``<profile>/downloads``); a node without a
    profile keeps them in a temporary folder removed when it stops. Everything is closed by ``closing``."""
    if profile is None:
        scratch = Path(tempfile.mkdtemp(prefix="meshchat-files-"))
        closing.callback(shutil.rmtree, scratch, ignore_errors=True)
        base, key = scratch, None
    else:
        base, key = profile, store_key(identity)
    store = FileStore(base / FILES_FILE, key=key)
    closing.callback(store.close)
    hold = None
    if mailbox:
        hold = ChunkHold(base / HOLD_FOLDER, hold_limits or HoldLimits())
        closing.callback(hold.close)
    return FileParts(store=store, hold=hold, downloads=config.downloads or base / DOWNLOADS_FOLDER)
