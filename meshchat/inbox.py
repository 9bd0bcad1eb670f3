"""Sealed direct messages over gossip: the relay check, and the message the application receives.

A message to a contact is a sealed envelope (``meshchat.crypto.seal``) published on the contact's inbox
shard topic (``meshchat.crypto.inbox_topic`` of today's blinded tag). Every node on that shard relays
it after the cheap relay check (structure, size, expiry within the TTL window); only the recipient,
whose tag it carries, opens it (``meshchat.store.messenger``), and only a verified sender's message
reaches the application, as a ``DirectMessage``: ``InboxFeed`` reads each one back from the inbox
once it is committed and hands it to ``Node.events()``, in inbox order, none skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from meshchat.contacts import Contact, Contacts
from meshchat.crypto import CLOCK_SKEW, INBOX_TOPIC_PREFIX, MAX_TTL
from meshchat.errors import DecodeError, StorageError
from meshchat.gossip import ValidationResult, Validator
from meshchat.identity import PublicIdentity
from meshchat.store.outbox import StoreProblem
from meshchat.store.storage import InboxRecord, Storage
from meshchat.wire import decode_envelope

__all__ = ["CLOCK_SKEW", "FEED_BATCH", "FEED_RETRY", "DirectMessage", "InboxFeed", "envelope_relay_check"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectMessage:
    """A sealed message to this node that opened and verified.

    Order: messages one sync brings from a mailbox reach the application in each sender's order
    (for messages sent with the same TTL); messages that arrive live by gossip come as the network
    delivers them. ``seq`` is the sender's order in every case: sort by it where order matters.
    """

    #: Who signed it (proven).
    sender: PublicIdentity
    #: The contact with that key, if it is one.
    contact: Contact | None
    #: The body, exactly as sent.
    body: bytes
    #: The sender's clock when it sealed the message, ms since the unix epoch (the sender's claim).
    sent_at_ms: int
    #: The envelope's id.
    message_id: bytes
    #: Its place in the sender's conversation with us (1, 2, ...): sort by it to read in order.
    seq: int
    #: Its place in this profile's inbox: ``Node.inbox(after=number)`` resumes after it.
    number: int
    #: The device of the sender's that sent it (another key than ``sender``: the person's root), or
    #: None when the sender's root device itself sent it.
    device: PublicIdentity | None = None
    #: None for a message to us; for one that another of OUR devices sent (a copy, so every device
    #: shows the whole conversation): who it was sent to (a contact if known). ``sender`` is then us.
    to: Contact | PublicIdentity | None = None


def envelope_relay_check(wall_clock: Callable[[], float], inner: Validator | None = None) -> Validator:
    """The relay's validator: envelopes on inbox topics must decode and be unexpired, with an expiry no
    further ahead than the longest TTL (plus clock skew); other topics go to ``inner`` (or pass)."""

    def check(topic: str, data: bytes, mid: bytes) -> ValidationResult:
        if not topic.startswith(INBOX_TOPIC_PREFIX):
            return inner(topic, data, mid) if inner is not None else ValidationResult.ACCEPT
        try:
            expiry = decode_envelope(data).expiry
        except DecodeError:
            return ValidationResult.REJECT
        now = wall_clock()
        if not now <= expiry <= now + MAX_TTL + CLOCK_SKEW:
            return ValidationResult.REJECT
        return ValidationResult.ACCEPT

    return check


#: Inbox records read from storage per step when feeding the event stream.
FEED_BATCH = 256
#: Seconds the feed waits before reading the inbox again after the read failed (a backoff: nothing
#: signals a disk coming back; a new commit wakes it sooner).
FEED_RETRY = 5.0


class InboxFeed:
    """Feeds committed inbox messages, in inbox order, into the node's event stream as ``DirectMessage``.

    It reads them back from storage rather than keeping them: when the application does not take its
    events, the feed waits (nothing is dropped and nothing piles up in memory), and resuming after a
    restart is the same loop started at the application's last acknowledged number. A read that fails
    (``StorageError``) is a ``StoreProblem`` in the stream, and the feed reads again from the same place
    ``FEED_RETRY`` seconds later (it stopped the node before). A message from someone blocked after it
    was committed is skipped (what arrives once they are blocked never reaches the inbox).
    """

    def __init__(
        self,
        storage: Storage,
        contacts: Contacts | None,
        events: trio.MemorySendChannel[Any],
        *,
        after: int | None,
    ) -> None:
        """Feed messages numbered after ``after`` (None: only those committed from now on)."""
        self._storage = storage
        self._contacts = contacts
        self._events = events
        self._cursor = after
        self._committed = trio.Event()

    def committed(self, numbers: Sequence[int]) -> None:
        """Messages with ``numbers`` were committed to the inbox (wake the feed)."""
        if self._cursor is None and numbers:
            self._cursor = min(numbers) - 1
        self._committed.set()

    async def run(self) -> None:
        """Feed until cancelled."""
        while True:
            self._committed = trio.Event()
            try:
                records = (
                    self._storage.inbox_after(self._cursor, FEED_BATCH) if self._cursor is not None else []
                )
            except StorageError as exc:
                await self._events.send(StoreProblem(error=exc))
                with trio.move_on_after(FEED_RETRY):
                    await self._committed.wait()
                continue
            if not records:
                await self._committed.wait()
                continue
            for record in records:
                # Blocked since it was committed (the messenger drops what arrives after): not shown.
                if self._contacts is None or record.to or not self._contacts.is_blocked_key(record.sender):
                    await self._events.send(self.message(record))
                self._cursor = record.number

    def message(self, record: InboxRecord) -> DirectMessage:
        """``record`` as the application sees it."""
        sender = PublicIdentity.from_bytes(record.sender)
        to: Contact | PublicIdentity | None = None
        if record.to:
            to = PublicIdentity.from_bytes(record.to)
            to = (self._contacts.by_key(to) if self._contacts is not None else None) or to
        return DirectMessage(
            sender=sender,
            contact=self._contacts.by_key(sender) if self._contacts is not None else None,
            body=record.body,
            sent_at_ms=record.sent_at_ms,
            message_id=record.message_id,
            seq=record.seq,
            number=record.number,
            device=PublicIdentity.from_bytes(record.device) if record.device else None,
            to=to,
        )
