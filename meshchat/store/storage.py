"""What store-and-forward keeps on disk, as records, and the small interface every backend implements.

Three things are stored, each in its own table (sqlite) or map (memory):

* the **outbox**: every message this node sent, its envelope, and where it is (``OutboxStatus``);
* the **seen window** and **inbox**: ids of every envelope this node accepted, kept until the envelope
  expires (so no message reaches the application twice, after any restart), and the messages the
  application received, in arrival order (``InboxRecord.number`` is a cursor an app resumes from);
* the **mailbox**: envelopes this node holds for others, until they expire or are acknowledged.

``Storage`` is a ``typing.Protocol``: ``meshchat.store.sqlite.SqliteStorage`` keeps a profile's data in
sqlite (WAL, fsync on commit), ``MemoryStorage`` keeps it in dicts for the simulator and tests. Both
raise ``StorageError`` when they cannot do what was asked, and a failed call changes nothing.

This module does no I/O; it defines records and the in-memory backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from meshchat.errors import StorageError
from meshchat.wire import EnvelopeKind

__all__ = [
    "TERMINAL_STATUSES",
    "InboxRecord",
    "MailboxItem",
    "MemoryStorage",
    "OutboxRecord",
    "OutboxStatus",
    "SeenEntry",
    "StateWrite",
    "Storage",
]

#: A write to the ``state`` blobs: ``(key, value)``, or ``(key, None)`` to delete the key.
StateWrite = tuple[bytes, bytes | None]


class OutboxStatus(Enum):
    """Where a sent message is. Each step is proven by the node that took it (see ``outbox.py``)."""

    #: Written to the outbox; no peer has it yet.
    QUEUED = "queued"
    #: Published to at least one peer on the recipient's inbox shard.
    RELAYED = "relayed"
    #: At least one mailbox acknowledged storing it.
    STORED = "stored"
    #: The recipient's signed delivery receipt came back.
    DELIVERED = "delivered"
    #: The recipient's signed read receipt came back.
    READ = "read"
    #: Its expiry passed before any receipt came back.
    EXPIRED = "expired"
    #: It can never be delivered (the reason is in ``OutboxRecord.error``).
    FAILED = "failed"


#: Statuses a message never leaves (READ can still follow DELIVERED, so DELIVERED is not terminal).
TERMINAL_STATUSES = frozenset({OutboxStatus.READ, OutboxStatus.EXPIRED, OutboxStatus.FAILED})


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRecord:
    """One sent message in the outbox."""

    #: The envelope's id (BLAKE2b-256 of ``envelope``).
    message_id: bytes
    #: The recipient's Ed25519 public key.
    recipient: bytes
    #: The sealed envelope, exactly as published and stored on mailboxes.
    envelope: bytes
    #: The application's idempotency key (``send(..., ref=...)``), unique per profile; "" if none.
    #: ``ref``, ``seq``, ``recipient`` and ``envelope`` never change after ``outbox_add``.
    ref: str
    #: Position in the conversation with ``recipient`` (1, 2, ...), sealed inside the message.
    seq: int
    #: Unix time the message was queued.
    created_at: float
    #: The envelope's expiry, unix seconds.
    expiry: int
    #: Where it is.
    status: OutboxStatus
    #: Delivery attempts made (publishes and mailbox rounds).
    attempts: int = 0
    #: Unix time of the next attempt.
    next_attempt: float = 0.0
    #: PeerIds of the mailboxes that acknowledged storing it.
    stored_on: tuple[str, ...] = ()
    #: The last problem reported for it (a mailbox's refusal, a failure reason); "" if none.
    error: str = ""
    #: Unix time of the last change.
    updated_at: float = 0.0

    def replace(self, **changes: object) -> OutboxRecord:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class SeenEntry:
    """An envelope this node accepted (a message or a receipt); kept until it expires."""

    #: The envelope's id.
    message_id: bytes
    #: The inbox tag it was addressed to.
    inbox_tag: bytes
    #: Its expiry, unix seconds: after that it is rejected as expired, so the entry can go.
    expiry: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxRecord:
    """A message the application received, as stored (``number`` is assigned by the storage)."""

    #: Arrival order, 1, 2, ...: an application resumes with ``inbox_after(number)``.
    number: int
    #: The envelope's id.
    message_id: bytes
    #: The sender's Ed25519 public key (proven by its signature).
    sender: bytes
    #: The sender's sequence number in this conversation.
    seq: int
    #: The body exactly as sent.
    body: bytes
    #: The sender's clock when sealing, ms since the unix epoch (the sender's claim).
    sent_at_ms: int
    #: Unix time it was accepted here.
    received_at: float
    #: The device of ``sender``'s that sent it (b"": the sender's root key itself).
    device: bytes = b""
    #: b"" for a message received; else one of our own other devices sent it to this person (root key).
    to: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxItem:
    """An envelope a mailbox holds for someone else."""

    #: The envelope's id.
    message_id: bytes
    #: The inbox tag it is addressed to.
    inbox_tag: bytes
    #: Its expiry, unix seconds: the item goes then.
    expiry: int
    #: The envelope bytes, unread (the mailbox cannot open them).
    envelope: bytes
    #: PeerId of the peer that stored it (for the per-peer quota).
    from_peer: str
    #: Size of the envelope, bytes (kept when ``envelope`` is left out, for the quotas).
    size: int
    #: The envelope's kind: ``SEALED`` items are for their tag's owner only; ``GROUP`` items are
    #: shared, listed and fetched by whoever names their (group) tag.
    kind: EnvelopeKind = EnvelopeKind.SEALED
    #: Order of arrival at this mailbox, assigned by the storage (1, 2, ...).
    number: int = 0


class Storage(Protocol):
    """The store-and-forward tables. Every method is one transaction; a failure raises ``StorageError``
    and changes nothing."""

    # --- outbox ----------------------------------------------------------------------------------
    def outbox_add(self, records: Sequence[OutboxRecord], state: Sequence[StateWrite] = ()) -> None:
        """Insert new records and apply the ``state`` writes (the session records that sealed them), in
        one durable transaction. ``ValueError`` for a known id or ref."""
        ...

    def outbox_update(self, records: Sequence[OutboxRecord]) -> None:
        """Replace records with the same ids (durably)."""
        ...

    def outbox_get(self, message_id: bytes) -> OutboxRecord | None:
        """The record of ``message_id``, if any."""
        ...

    def outbox_by_ref(self, ref: str) -> OutboxRecord | None:
        """The record sent with idempotency key ``ref``, if any."""
        ...

    def outbox_with_prefix(self, prefix: bytes, limit: int) -> list[OutboxRecord]:
        """Up to ``limit`` records whose id starts with ``prefix`` (non-empty), in id order."""
        ...

    def outbox_pending(self) -> list[OutboxRecord]:
        """Records not in a terminal status, in the order they were added."""
        ...

    def outbox_recent(self, limit: int) -> list[OutboxRecord]:
        """The ``limit`` most recent records, newest first."""
        ...

    def last_seq(self, recipient: bytes) -> int:
        """The highest ``seq`` sent to ``recipient`` (0 if none)."""
        ...

    # --- seen window and inbox -------------------------------------------------------------------
    def seen(self, message_ids: Iterable[bytes]) -> set[bytes]:
        """Which of ``message_ids`` are in the seen window."""
        ...

    def accept(
        self,
        entries: Sequence[SeenEntry],
        messages: Sequence[InboxRecord],
        outbox: Sequence[OutboxRecord] = (),
        state: Sequence[StateWrite] = (),
    ) -> list[InboxRecord]:
        """Add ``entries`` to the seen window and ``messages`` to the inbox, replace the ``outbox``
        records with the same ids (what accepted receipts proved) and apply the ``state`` writes (the
        session records that opened them), in one durable transaction; return the messages with their
        ``number`` assigned. ``ValueError`` if an entry is already seen.

        One transaction, so a crash cannot leave a receipt seen (never processed again) while the
        outbox still says ``stored``, nor a ratchet moved past a message the inbox does not hold."""
        ...

    # --- state blobs -----------------------------------------------------------------------------
    def state_get(self, key: bytes) -> bytes | None:
        """The blob stored under ``key``, if any."""
        ...

    def state_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every ``(key, blob)`` whose key starts with ``prefix``, in key order."""
        ...

    def state_put(self, writes: Sequence[StateWrite]) -> None:
        """Apply ``writes`` (durably, in one transaction)."""
        ...

    def seen_items(self, tags: Iterable[bytes]) -> list[tuple[int, bytes]]:
        """``(expiry, message_id)`` of seen entries addressed to ``tags`` (for set reconciliation)."""
        ...

    def prune_seen(self, before: int) -> int:
        """Forget seen entries that expired before unix time ``before``; return how many."""
        ...

    def inbox_after(self, number: int, limit: int) -> list[InboxRecord]:
        """Up to ``limit`` inbox messages with ``number`` greater than ``number``, in order."""
        ...

    # --- mailbox ---------------------------------------------------------------------------------
    def mailbox_put(self, items: Sequence[MailboxItem]) -> list[MailboxItem]:
        """Store ``items`` (durably); return them with ``number`` assigned. Known ids are skipped."""
        ...

    def mailbox_items(
        self, tags: Iterable[bytes], *, kind: EnvelopeKind | None = None
    ) -> list[tuple[int, bytes]]:
        """``(expiry, message_id)`` of held items addressed to ``tags`` (only those of ``kind``, if given)."""
        ...

    def mailbox_get(self, message_ids: Iterable[bytes]) -> list[MailboxItem]:
        """The held items among ``message_ids`` (unknown ids are left out)."""
        ...

    def mailbox_delete(self, tags: Iterable[bytes], up_to: int) -> list[MailboxItem]:
        """Delete items addressed to ``tags`` numbered ``up_to`` or lower; return what was deleted."""
        ...

    def mailbox_withdraw(self, message_ids: Iterable[bytes], from_peer: str) -> list[MailboxItem]:
        """Delete the items among ``message_ids`` that ``from_peer`` stored; return what was deleted."""
        ...

    def mailbox_prune(self, before: int) -> list[MailboxItem]:
        """Delete items that expired before unix time ``before``; return what was deleted."""
        ...

    def mailbox_all(self) -> list[MailboxItem]:
        """Every held item without its envelope bytes (``envelope`` is b""), to rebuild quota counters."""
        ...

    def mailbox_last_number(self) -> int:
        """The highest ``number`` assigned so far (0 if none)."""
        ...


class MemoryStorage:
    """``Storage`` in dicts: the simulator's backend, and the tests'. Nothing survives the process.

    ``fail_next`` makes the next writes raise ``StorageError`` (a full disk, for tests) without
    changing anything.
    """

    def __init__(self) -> None:
        """An empty store."""
        self._outbox: dict[bytes, OutboxRecord] = {}
        self._refs: dict[str, bytes] = {}
        self._last_seq: dict[bytes, int] = {}
        self._seen: dict[bytes, SeenEntry] = {}
        self._inbox: list[InboxRecord] = []
        self._mailbox: dict[bytes, MailboxItem] = {}
        self._mailbox_number = 0
        self._state: dict[bytes, bytes] = {}
        #: Writes still to fail with ``StorageError`` (decremented by each failed write).
        self.fail_next = 0

    def _write(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise StorageError("memory storage: simulated write failure (disk full)")

    def outbox_add(self, records: Sequence[OutboxRecord], state: Sequence[StateWrite] = ()) -> None:
        """See ``Storage``."""
        self._write()
        ids = {r.message_id for r in records}
        refs = [r.ref for r in records if r.ref]
        if len(ids) != len(records) or any(i in self._outbox for i in ids):
            raise ValueError("outbox already holds a message with that id")
        if len(set(refs)) != len(refs) or any(ref in self._refs for ref in refs):
            raise ValueError("outbox already holds a message with that ref")
        for record in records:
            self._outbox[record.message_id] = record
            if record.ref:
                self._refs[record.ref] = record.message_id
            self._last_seq[record.recipient] = max(self._last_seq.get(record.recipient, 0), record.seq)
        self._apply(state)

    def outbox_update(self, records: Sequence[OutboxRecord]) -> None:
        """See ``Storage``."""
        self._write()
        for record in records:
            if record.message_id in self._outbox:
                self._outbox[record.message_id] = record

    def outbox_get(self, message_id: bytes) -> OutboxRecord | None:
        """See ``Storage``."""
        return self._outbox.get(message_id)

    def outbox_by_ref(self, ref: str) -> OutboxRecord | None:
        """See ``Storage``."""
        message_id = self._refs.get(ref)
        return None if message_id is None else self._outbox[message_id]

    def outbox_with_prefix(self, prefix: bytes, limit: int) -> list[OutboxRecord]:
        """See ``Storage``."""
        if not prefix:
            return []
        return sorted(
            (r for i, r in self._outbox.items() if i.startswith(prefix)), key=lambda r: r.message_id
        )[:limit]

    def outbox_pending(self) -> list[OutboxRecord]:
        """See ``Storage``."""
        return [r for r in self._outbox.values() if r.status not in TERMINAL_STATUSES]

    def outbox_recent(self, limit: int) -> list[OutboxRecord]:
        """See ``Storage``."""
        return list(reversed(self._outbox.values()))[:limit]

    def last_seq(self, recipient: bytes) -> int:
        """See ``Storage``."""
        return self._last_seq.get(recipient, 0)

    def seen(self, message_ids: Iterable[bytes]) -> set[bytes]:
        """See ``Storage``."""
        return {i for i in message_ids if i in self._seen}

    def accept(
        self,
        entries: Sequence[SeenEntry],
        messages: Sequence[InboxRecord],
        outbox: Sequence[OutboxRecord] = (),
        state: Sequence[StateWrite] = (),
    ) -> list[InboxRecord]:
        """See ``Storage``."""
        self._write()
        ids = {e.message_id for e in entries}
        if len(ids) != len(entries) or any(i in self._seen for i in ids):
            raise ValueError("the seen window already holds one of these ids")
        for record in outbox:
            if record.message_id in self._outbox:
                self._outbox[record.message_id] = record
        for entry in entries:
            self._seen[entry.message_id] = entry
        numbered = [dataclasses.replace(m, number=len(self._inbox) + n) for n, m in enumerate(messages, 1)]
        self._inbox.extend(numbered)
        self._apply(state)
        return numbered

    def _apply(self, writes: Sequence[StateWrite]) -> None:
        for key, value in writes:
            if value is None:
                self._state.pop(key, None)
            else:
                self._state[key] = value

    def state_get(self, key: bytes) -> bytes | None:
        """See ``Storage``."""
        return self._state.get(key)

    def state_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """See ``Storage``."""
        return sorted((k, v) for k, v in self._state.items() if k.startswith(prefix))

    def state_put(self, writes: Sequence[StateWrite]) -> None:
        """See ``Storage``."""
        self._write()
        self._apply(writes)

    def seen_items(self, tags: Iterable[bytes]) -> list[tuple[int, bytes]]:
        """See ``Storage``."""
        wanted = set(tags)
        return [(e.expiry, e.message_id) for e in self._seen.values() if e.inbox_tag in wanted]

    def prune_seen(self, before: int) -> int:
        """See ``Storage``."""
        gone = [i for i, e in self._seen.items() if e.expiry < before]
        for message_id in gone:
            del self._seen[message_id]
        return len(gone)

    def inbox_after(self, number: int, limit: int) -> list[InboxRecord]:
        """See ``Storage``."""
        return self._inbox[max(number, 0) : max(number, 0) + limit]

    def mailbox_put(self, items: Sequence[MailboxItem]) -> list[MailboxItem]:
        """See ``Storage``."""
        self._write()
        stored = []
        for item in items:
            if item.message_id in self._mailbox:
                continue
            self._mailbox_number += 1
            numbered = dataclasses.replace(item, number=self._mailbox_number)
            self._mailbox[item.message_id] = numbered
            stored.append(numbered)
        return stored

    def mailbox_items(
        self, tags: Iterable[bytes], *, kind: EnvelopeKind | None = None
    ) -> list[tuple[int, bytes]]:
        """See ``Storage``."""
        wanted = set(tags)
        return [
            (i.expiry, i.message_id)
            for i in self._mailbox.values()
            if i.inbox_tag in wanted and (kind is None or i.kind is kind)
        ]

    def mailbox_get(self, message_ids: Iterable[bytes]) -> list[MailboxItem]:
        """See ``Storage``."""
        return [self._mailbox[i] for i in message_ids if i in self._mailbox]

    def mailbox_delete(self, tags: Iterable[bytes], up_to: int) -> list[MailboxItem]:
        """See ``Storage``."""
        self._write()
        wanted = set(tags)
        gone = [i for i in self._mailbox.values() if i.inbox_tag in wanted and i.number <= up_to]
        for item in gone:
            del self._mailbox[item.message_id]
        return gone

    def mailbox_withdraw(self, message_ids: Iterable[bytes], from_peer: str) -> list[MailboxItem]:
        """See ``Storage``."""
        self._write()
        gone = [
            self._mailbox[i]
            for i in dict.fromkeys(message_ids)
            if i in self._mailbox and self._mailbox[i].from_peer == from_peer
        ]
        for item in gone:
            del self._mailbox[item.message_id]
        return sorted(gone, key=lambda item: item.number)

    def mailbox_prune(self, before: int) -> list[MailboxItem]:
        """See ``Storage``."""
        gone = [i for i in self._mailbox.values() if i.expiry < before]
        for item in gone:
            del self._mailbox[item.message_id]
        return gone

    def mailbox_all(self) -> list[MailboxItem]:
        """See ``Storage``."""
        return [dataclasses.replace(i, envelope=b"") for i in self._mailbox.values()]

    def mailbox_last_number(self) -> int:
        """See ``Storage``."""
        return self._mailbox_number
