"""What the file machinery tells the application: an attachment arrived, a file is complete, a
transfer hit a problem; and a transfer's progress."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from meshchat.files.manifest import Manifest
from meshchat.identity import PublicIdentity

__all__ = ["Attachment", "AttachmentFetched", "FileEvent", "FileProblem", "FileProgress"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """Someone sent this profile a file: its manifest (name, type, size, thumbnail, caption). Fetch it
    with ``node.fetch(attachment)`` (done automatically up to ``FileConfig.auto_fetch`` bytes)."""

    #: Its number in this profile's attachments (``meshchat files --fetch NUMBER``).
    number: int
    #: Who sent it (proven by the message's signature).
    sender: PublicIdentity
    #: The message that carried the manifest.
    message_id: bytes
    #: Name, type, size, thumbnail, duration, caption (the name is not yet safe: see ``names``).
    manifest: Manifest
    #: Whether it is being fetched without being asked (within the automatic size).
    fetching: bool
    #: The group it was sent to (a group message), or empty for a file sent to this profile alone.
    group_id: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachmentFetched:
    """Every byte of attachment ``number`` is checked and in ``path`` (in the downloads folder)."""

    number: int
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FileProblem:
    """A transfer could not go on for now (a full disk, no source holding a chunk, a bad file from the
    sender); it is retried unless ``final``."""

    #: The attachment's number (received), or 0 for a file this profile sent.
    number: int
    #: The file's id.
    file_id: bytes
    #: What went wrong.
    error: str
    #: True if it will not be retried (the sender's file is broken).
    final: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class FileProgress:
    """How far a file got. For a sent file: bytes on the best mailbox, bytes served to fetchers; for
    a received one: bytes written."""

    #: The file's size.
    total: int
    #: Sent: bytes stored on a mailbox (the one furthest along). Received: 0.
    stored: int
    #: Sent: chunk bytes this node served (as they go on the wire: padding, tags and index chunks
    #: included, to every fetcher together; capped at ``total``, so it is a sign of activity, not proof
    #: that a recipient has everything). Received: file bytes fetched, checked and written.
    fetched: int
    #: Sent: a mailbox holds every chunk. Received: the file is complete.
    complete: bool


FileEvent: TypeAlias = Attachment | AttachmentFetched | FileProblem
