"""What store-and-forward keeps on disk, as records, and the small interface every backend implements.

Four things are stored, each in its own table (sqlite) or map (memory):

* the **outbox**: every message this node sent, its envelope, and where it is (``OutboxStatus``);
* the **seen window** and **inbox**: ids of every envelope this node accepted, kept until the envelope
  expires (so no message reaches the application twice, after any restart), and the messages the
  application received, in arrival order (``InboxRecord.number`` is a cursor an app resumes from);
* the **mailbox**: envelopes this node holds for others, until they expire or are acknowledged;
* the **history**: every chat of each conversation, both directions, with the text this node sent
  (the outbox keeps only sealed envelopes): ``HistoryRecord`` rows written in the transaction of the
  outbox rows (``outbox_add(history=...)``) or inbox rows (``accept``: one per inbox message) they go
  with, read back a page at a time as ``ConversationEntry`` (``conversation``).

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
    "MAX_CONVERSATION_PAGE",
    "TERMINAL_STATUSES",
    "ConversationEntry",
    "HistoryRecord",
    "InboxRecord",
    "MailboxItem",
    "MemoryStorage",
    "OutboxRecord",
    "OutboxStatus",
    "SeenEntry",
    "StateWrite",
    "Storage",
]

#: Most history entries one ``conversation`` call returns: a page is read into memory at once, and
#: bodies reach 64 KiB (``MAX_ENVELOPE_SIZE``), so 1,000 is at most ~64 MB; apps page with ``before``.
MAX_CONVERSATION_PAGE = 1_000

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
class HistoryRecord:
    """One chat of a conversation as the history stores it (``cursor`` is assigned by the storage)."""

    #: The other person's Ed25519 root key: whose conversation it belongs to.
    peer: bytes
    #: The message's id (ours: the id of its first outbox record, the one ``send`` returned).
    message_id: bytes
    #: True for what this person sent (from this device, or a copy from another of their devices).
    outgoing: bool
    #: The body exactly as sent.
    body: bytes
    #: The sender's clock when sealing, ms since the unix epoch (ours, or their claim).
    sent_at_ms: int
    #: Incoming and copies from our other devices: the message's inbox ``number``; 0 for ours.
    number: int = 0
    #: Which device sent it (b"": the person's root key itself), as ``InboxRecord.device``.
    device: bytes = b""
    #: Order across every conversation and both directions, 1, 2, ...: assigned by the storage.
    cursor: int = 0


def incoming_history(messages: Sequence[InboxRecord]) -> list[HistoryRecord]:
    """The history rows of numbered inbox ``messages`` (``accept`` writes them): a copy one of our
    other devices sent (``to``) is an outgoing entry of the conversation with ``to``."""
    return [
        HistoryRecord(
            peer=m.to or m.sender,
            message_id=m.message_id,
            outgoing=bool(m.to),
            body=m.body,
            sent_at_ms=m.sent_at_ms,
            number=m.number,
            device=m.device,
        )
        for m in messages
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationEntry:
    """One message of a conversation, as the application shows it (``Node.conversation``)."""

    #: Ascending order across both directions: pass as ``before=`` to page back.
    cursor: int
    #: The message's id.
    message_id: bytes
    #: True for what this person sent.
    outgoing: bool
    #: The body exactly as sent.
    body: bytes
    #: Ours: our clock; theirs: their claim (ms since the unix epoch).
    sent_at_ms: int
    #: Outgoing from this device: the outbox's current status; incoming, and copies from our other
    #: devices (this device holds no outbox record of them): None.
    status: OutboxStatus | None
    #: Incoming: the inbox number (``Node.mark_read_id`` takes the ``message_id``); outgoing: 0.
    number: int
    #: Which device sent it (b"": the root key), as ``InboxRecord.device``.
    device: bytes = b""


def conversation_entry(record: HistoryRecord, status: OutboxStatus | None) -> ConversationEntry:
    """``record`` as the application sees it, with its outbox ``status`` (None if it has no record)."""
    return ConversationEntry(
        cursor=record.cursor,
        message_id=record.message_id,
        outgoing=record.outgoing,
        body=record.body,
        sent_at_ms=record.sent_at_ms,
        status=status if record.outgoing else None,
        number=0 if record.outgoing else record.number,
        device=record.device,
    )


def check_page(before: int | None, limit: int) -> None:
    """``ValueError`` for a ``conversation`` page that cannot be asked for."""
    if not 0 <= limit <= MAX_CONVERSATION_PAGE:
        raise ValueError(f"conversation: limit must be 0 to {MAX_CONVERSATION_PAGE:,}, not {limit}")
    if before is not None and before < 0:
        raise ValueError(f"conversation: before must be a cursor (0 or more), not {before}")


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
    def outbox_add(
        self,
        records: Sequence[OutboxRecord],
        state: Sequence[StateWrite] = (),
        history: Sequence[HistoryRecord] = (),
    ) -> None:
        """Insert new records, apply the ``state`` writes (the session records that sealed them) and
        append ``history`` (the chat's text, ``cursor`` assigned here), in one durable transaction.
        ``ValueError`` for a known id or ref."""
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
        ``number`` assigned. ``ValueError`` if an entry is already seen. Each message also enters the
        history (``incoming_history``), in the same transaction.

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

    # --- history ---------------------------------------------------------------------------------
    def conversation(self, peer: bytes, *, before: int | None, limit: int) -> list[ConversationEntry]:
        """The ``limit`` newest history entries with ``peer`` whose cursor is below ``before`` (None: the
        newest), oldest first, outgoing ones with their outbox status. ``ValueError`` for a ``limit``
        outside 0..``MAX_CONVERSATION_PAGE`` or a negative ``before``."""
        ...

    def history_get(self, message_id: bytes) -> HistoryRecord | None:
        """The history entry of ``message_id``, if any."""
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
        #: ``_seen`` by inbox tag (message id -> (order of acceptance, entry)): a sync lists one
        #: user's few tags without a scan of the whole window.
        self._seen_by_tag: dict[bytes, dict[bytes, tuple[int, SeenEntry]]] = {}
        self._seen_number = 0
        self._inbox: list[InboxRecord] = []
        self._mailbox: dict[bytes, MailboxItem] = {}
        #: ``_mailbox`` by inbox tag (message id -> item, in order of arrival): a mailbox answers a
        #: sync or a delete for a few tags without a scan of everything it holds (the scan made the
        #: simulator's runs quadratic in users). Kept in step by ``_mailbox_drop``.
        self._mailbox_by_tag: dict[bytes, dict[bytes, MailboxItem]] = {}
        self._mailbox_number = 0
        self._state: dict[bytes, bytes] = {}
        self._history: list[HistoryRecord] = []
        self._history_ids: dict[bytes, int] = {}  # message id -> index in _history
        #: Writes still to fail with ``StorageError`` (decremented by each failed write).
        self.fail_next = 0

    def _write(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise StorageError("memory storage: simulated write failure (disk full)")

    def outbox_add(
        self,
        records: Sequence[OutboxRecord],
        state: Sequence[StateWrite] = (),
        history: Sequence[HistoryRecord] = (),
    ) -> None:
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
        self._append_history(history)

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
            self._seen_number += 1
            self._seen_by_tag.setdefault(entry.inbox_tag, {})[entry.message_id] = (self._seen_number, entry)
        numbered = [dataclasses.replace(m, number=len(self._inbox) + n) for n, m in enumerate(messages, 1)]
        self._inbox.extend(numbered)
        self._apply(state)
        self._append_history(incoming_history(numbered))
        return numbered

    def _append_history(self, records: Sequence[HistoryRecord]) -> None:
        for record in records:
            self._history_ids.setdefault(record.message_id, len(self._history))
            self._history.append(dataclasses.replace(record, cursor=len(self._history) + 1))

    def conversation(self, peer: bytes, *, before: int | None, limit: int) -> list[ConversationEntry]:
        """See ``Storage``: a scan of every entry (the simulator's and tests' sizes)."""
        check_page(before, limit)
        end = len(self._history) if before is None else min(before - 1, len(self._history))
        page: list[ConversationEntry] = []
        for record in reversed(self._history[: max(end, 0)]):
            if len(page) >= limit:
                break
            if record.peer == peer:
                outbox = self._outbox.get(record.message_id)
                page.append(conversation_entry(record, None if outbox is None else outbox.status))
        return page[::-1]

    def history_get(self, message_id: bytes) -> HistoryRecord | None:
        """See ``Storage``."""
        index = self._history_ids.get(message_id)
        return None if index is None else self._history[index]

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
        by_tag = self._seen_by_tag
        found = [n_e for tag in dict.fromkeys(tags) for n_e in by_tag.get(tag, {}).values()]
        found.sort(key=_first)  # the order of acceptance, as a scan of the whole window gives it
        return [(e.expiry, e.message_id) for _, e in found]

    def prune_seen(self, before: int) -> int:
        """See ``Storage``."""
        gone = [e for e in self._seen.values() if e.expiry < before]
        for entry in gone:
            del self._seen[entry.message_id]
            by_tag = self._seen_by_tag[entry.inbox_tag]
            del by_tag[entry.message_id]
            if not by_tag:
                del self._seen_by_tag[entry.inbox_tag]
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
            self._mailbox_by_tag.setdefault(item.inbox_tag, {})[item.message_id] = numbered
            stored.append(numbered)
        return stored

    def mailbox_items(
        self, tags: Iterable[bytes], *, kind: EnvelopeKind | None = None
    ) -> list[tuple[int, bytes]]:
        """See ``Storage``."""
        by_tag = self._mailbox_by_tag
        found = [
            i
            for tag in dict.fromkeys(tags)
            for i in by_tag.get(tag, {}).values()
            if kind is None or i.kind is kind
        ]
        found.sort(key=_number)  # the order of arrival, as a scan of everything held gives it
        return [(i.expiry, i.message_id) for i in found]

    def mailbox_get(self, message_ids: Iterable[bytes]) -> list[MailboxItem]:
        """See ``Storage``."""
        return [self._mailbox[i] for i in message_ids if i in self._mailbox]

    def mailbox_delete(self, tags: Iterable[bytes], up_to: int) -> list[MailboxItem]:
        """See ``Storage``."""
        self._write()
        by_tag = self._mailbox_by_tag
        gone = [i for tag in dict.fromkeys(tags) for i in by_tag.get(tag, {}).values() if i.number <= up_to]
        gone.sort(key=_number)  # the order of arrival, as a scan of everything held gives it
        self._mailbox_drop(gone)
        return gone

    def mailbox_withdraw(self, message_ids: Iterable[bytes], from_peer: str) -> list[MailboxItem]:
        """See ``Storage``."""
        self._write()
        gone = [
            self._mailbox[i]
            for i in dict.fromkeys(message_ids)
            if i in self._mailbox and self._mailbox[i].from_peer == from_peer
        ]
        self._mailbox_drop(gone)
        return sorted(gone, key=lambda item: item.number)

    def mailbox_prune(self, before: int) -> list[MailboxItem]:
        """See ``Storage``."""
        gone = [i for i in self._mailbox.values() if i.expiry < before]
        self._mailbox_drop(gone)
        return gone

    def _mailbox_drop(self, items: Iterable[MailboxItem]) -> None:
        for item in items:
            del self._mailbox[item.message_id]
            by_tag = self._mailbox_by_tag[item.inbox_tag]
            del by_tag[item.message_id]
            if not by_tag:
                del self._mailbox_by_tag[item.inbox_tag]

    def mailbox_all(self) -> list[MailboxItem]:
        """See ``Storage``."""
        return [dataclasses.replace(i, envelope=b"") for i in self._mailbox.values()]

    def mailbox_last_number(self) -> int:
        """See ``Storage``."""
        return self._mailbox_number


def _first(pair: tuple[int, SeenEntry]) -> int:
    return pair[0]


def _number(item: MailboxItem) -> int:
    return item.number
