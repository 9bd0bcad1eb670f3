"""The store-and-forward core of one user: outbox, inbox, receipts, mailbox stores and syncs. Sans-IO.

``Messenger`` is what ``meshchat.Node`` and the simulator drive. It takes inputs (the app sends a
message; envelopes arrive by gossip or from a mailbox; a mailbox answers; a timer fires), always with
the wall time passed in, and returns actions for its driver: publish an envelope on an inbox topic,
call a mailbox (``/meshchat/mailbox/1.0.0``), hand a message to the app, report a status change. It
writes to a ``Storage`` (sqlite on a profile, memory in the simulator) before it returns, so what it
reports has already survived a crash. Time is wall time throughout: outbox retries are persisted and
must mean the same after a restart.

**Sending.** ``send`` seals the body with its place in the conversation (``seq``) to the recipient,
writes the outbox record (``queued``), publishes it on the recipient's inbox shard and stores it on
``mailbox_copies`` mailboxes (ranked per inbox tag by rendezvous hashing, so a recipient that knows
the same mailboxes asks the same ones first). Each proven step moves the record forward
(``OUTBOX_TRANSITIONS``); late or repeated news never moves it back. Until a receipt comes back it is
retried with exponential backoff (published again while no mailbox holds it; stored on more mailboxes
while fewer than ``mailbox_copies`` do); at its expiry it becomes ``expired``; a mailbox's permanent
refusal (too large, malformed) makes it ``failed`` with the reason, a transient one (quota) is shown
in ``error`` and retried.

**Receiving.** Envelopes addressed to one of this identity's tags are opened and verified; the seen
window (every accepted id, kept until its expiry) and the inbox are written in one transaction, then
the app hears of them, in the sender's order within a batch. Each batch answers every sender with one
signed, sealed delivery receipt, published and stored on mailboxes for the sender. A duplicate is not
delivered again, but its sender gets a receipt again (at most once per ``RERECEIPT_INTERVAL``), in
case the first receipt was lost. Failures are counted by reason in ``statistics``.

**Syncing.** With each mailbox, every ``sync_interval`` and when it first becomes reachable: range-based
reconciliation of the ids it holds for our tags against our seen window; fetch what we lack in
batches (cut where the expiry changes, so same-TTL messages keep their order), accept; then delete
what the mailbox held when the sync began. A failed step abandons the sync without deleting anything.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import nacl.utils

from meshchat.crypto import (
    CLOCK_SKEW,
    MAX_TTL,
    epoch_of,
    inbox_tag,
    inbox_tags_around,
    inbox_topic,
    open_envelope,
    seal,
)
from meshchat.errors import DecodeError, MeshchatError, StorageError
from meshchat.identity import Identity, KeyCache, PublicIdentity, RandomBytes
from meshchat.store.mailbox import owned_tags
from meshchat.store.outbox import (
    OUTBOX_TRANSITIONS,
    RETRYING,
    Action,
    CallMailbox,
    MessageReceived,
    MessengerStatistics,
    OutboxInput,
    PublishEnvelope,
    StatusChanged,
    StoreConfig,
    StoreProblem,
)
from meshchat.store.payload import MAX_RECEIPT_IDS, Chat, Receipt, ReceiptKind, decode_payload, encode_payload
from meshchat.store.protocol import (
    MAX_FETCH_IDS,
    PERMANENT_STORE_CODES,
    Deleted,
    DeleteRequest,
    ErrorCode,
    Fetched,
    FetchRequest,
    MailboxError,
    MailboxRequest,
    MailboxResponse,
    StoreCode,
    Stored,
    StoreRequest,
    Synced,
    SyncRequest,
    WithdrawRequest,
    batches,
)
from meshchat.store.reasons import DiscardReason, RejectReason, reject_reason
from meshchat.store.storage import InboxRecord, OutboxRecord, OutboxStatus, SeenEntry, Storage
from meshchat.store.sync import SyncSession, SyncState, screen_fetched
from meshchat.wire import decode_envelope, message_id

__all__ = [
    "OUTBOX_TRANSITIONS",
    "Action",
    "CallMailbox",
    "MessageReceived",
    "Messenger",
    "MessengerStatistics",
    "OutboxInput",
    "PublishEnvelope",
    "StatusChanged",
    "StoreConfig",
    "StoreProblem",
]

_S = OutboxStatus

#: Seconds before a duplicate of a message earns its sender another receipt.
RERECEIPT_INTERVAL = 60.0
#: Duplicates remembered for ``RERECEIPT_INTERVAL`` (bounded: a replayer cannot grow it).
_RERECEIPT_MEMORY = 10_000
#: Receipts waiting for a mailbox's acknowledgement (bounded: each names up to 1,000 messages).
MAX_UNSTORED_RECEIPTS = 10_000
#: Seconds between sweeps of the seen window.
SEEN_PRUNE_INTERVAL = 3600.0
#: Seconds a mailbox caught lying (a fetched item that is not an envelope it was asked for, a garbage
#: or endless reconciliation, store results for what it was not sent) is not used: long enough that
#: a hostile mailbox costs us one call per ten minutes, short enough that one with a passing fault
#: (a corrupted disk it has since repaired) is used again the same hour.
MAILBOX_PENALTY = 600.0
#: Penalised mailboxes remembered (bounded: the oldest penalty is forgiven first).
MAX_PENALISED = 1024


@dataclass(slots=True)
class _Moves:
    """Outbox records an input changes, before they are persisted."""

    #: The new records, by id.
    changed: dict[bytes, OutboxRecord] = field(default_factory=dict)
    #: Each record's (status, error) before, to report only what the app has not heard.
    before: dict[bytes, tuple[OutboxStatus, str]] = field(default_factory=dict)


class Messenger:
    """See the module docstring."""

    def __init__(
        self,
        identity: Identity,
        storage: Storage,
        *,
        config: StoreConfig | None = None,
        rng: random.Random,
        random_bytes: RandomBytes = nacl.utils.random,
        wall_now: float,
    ) -> None:
        """Resume from ``storage``: pending outbox records are retried when their time comes."""
        self.identity = identity
        self.storage = storage
        self.config = config or StoreConfig()
        self._rng = rng
        self._random_bytes = random_bytes
        self._keys = KeyCache()
        self._pending: dict[bytes, OutboxRecord] = {}
        self._timers: list[tuple[float, bytes]] = []
        self._last_seq: dict[bytes, int] = {}
        self._mailboxes: list[str] = []
        self._to_store: dict[str, OrderedDict[bytes, bytes]] = {}
        self._to_withdraw: dict[str, dict[bytes, None]] = {}
        # Receipts no mailbox has acknowledged yet (tag, envelope, expiry, preferred mailboxes), retried
        # while they live; kept in memory: after a crash the sender's next retry earns a new receipt.
        self._unstored_receipts: OrderedDict[bytes, tuple[bytes, bytes, int, tuple[str, ...]]] = OrderedDict()
        # Each contact's own mailboxes (from their invite), by public key: stores for them go there.
        self._preferred: dict[bytes, tuple[str, ...]] = {}
        self._receipt_retry: float | None = None
        self._busy: dict[str, MailboxRequest] = {}
        self._syncs: dict[str, SyncSession] = {}
        self._next_sync: dict[str, float] = {}
        # Each usable mailbox's next wait while messages await receipts (doubling up to sync_interval).
        self._receipt_wait: dict[str, float] = {}
        self._rereceipted: OrderedDict[bytes, float] = OrderedDict()
        self._discarded: Counter[DiscardReason] = Counter()
        self._rejected: Counter[RejectReason] = Counter()
        self._mailbox_errors: Counter[ErrorCode] = Counter()
        # Mailboxes caught lying, until when they are not used (bounded: ``MAX_PENALISED``).
        self._penalised: OrderedDict[str, float] = OrderedDict()
        # The driver's view of reachable mailboxes; ``_mailboxes`` leaves out the penalised ones.
        self._reachable: list[str] = []
        self._counts: Counter[str] = Counter()
        self._tags_day = -1
        self._tags: frozenset[bytes] = frozenset()
        self._owned: tuple[bytes, ...] = ()
        self._next_seen_prune = 0.0
        for record in storage.outbox_pending():
            if record.status in RETRYING:
                self._track(record)

    # --- inputs from the application ------------------------------------------------------------

    def send(
        self,
        recipient: PublicIdentity,
        body: bytes,
        *,
        wall_now: float,
        ref: str = "",
        ttl: int | None = None,
    ) -> tuple[OutboxRecord, list[Action]]:
        """Queue ``body`` for ``recipient``; return its outbox record and the actions to start delivery.

        With ``ref`` (an idempotency key) a second send with the same ref returns the first one's record
        and does nothing, so an app that crashed mid-send can simply send everything again. The record is
        durable when this returns; ``StorageError`` means it was not queued.
        """
        if ref:
            known = self.storage.outbox_by_ref(ref)
            if known is not None:
                return known, []
        key = recipient.ed25519
        seq = self._last_seq.get(key)
        if seq is None:
            seq = self.storage.last_seq(key)
        envelope = seal(
            self.identity,
            recipient,
            encode_payload(Chat(seq=seq + 1, body=body)),
            wall_now=wall_now,
            ttl=self.config.ttl if ttl is None else ttl,
            random_bytes=self._random_bytes,
        )
        record = OutboxRecord(
            message_id=message_id(envelope),
            recipient=key,
            envelope=envelope,
            ref=ref,
            seq=seq + 1,
            created_at=wall_now,
            expiry=decode_envelope(envelope).expiry,
            status=OutboxStatus.QUEUED,
            next_attempt=wall_now + self.config.retry_initial,
            updated_at=wall_now,
        )
        self.storage.outbox_add([record])
        self._last_seq[key] = seq + 1
        self._track(record)
        self._hurry_syncs(wall_now)
        actions: list[Action] = [self._publish(record)]
        actions += self._plan_stores(record)
        return record, actions

    def mark_read(
        self, sender: PublicIdentity, message_ids: Sequence[bytes], *, wall_now: float
    ) -> list[Action]:
        """Tell ``sender`` that the app read ``message_ids`` (a signed, sealed read receipt)."""
        return self._receipts({sender: list(message_ids)}, ReceiptKind.READ, wall_now)

    def retry_now(self, message_id: bytes, *, wall_now: float) -> list[Action]:
        """Publish a pending message again now (the driver just reached its recipient)."""
        record = self._pending.get(message_id)
        if record is None:
            return []
        self._hurry_syncs(wall_now)  # its recipient is back: its receipt may wait on a mailbox soon
        return [self._publish(record, again=True), *self._plan_stores(record)]

    def prefer_mailboxes(self, recipient: PublicIdentity, peers: Sequence[str]) -> None:
        """``recipient`` syncs from mailboxes ``peers`` (PeerIds, from their invite): every message and
        receipt for them is stored on one of these whenever one is reachable, besides the usual
        rendezvous choice."""
        if peers:
            self._preferred[recipient.ed25519] = tuple(peers)
        else:
            self._preferred.pop(recipient.ed25519, None)

    def status(self, message_id: bytes) -> OutboxRecord | None:
        """The outbox record of a sent message, if it is ours."""
        return self._pending.get(message_id) or self.storage.outbox_get(message_id)

    def topics(self, wall_now: float) -> set[str]:
        """The inbox topics to join now (yesterday's, today's and tomorrow's tags)."""
        return {inbox_topic(tag) for tag in inbox_tags_around(self.identity.public, wall_now)}

    # --- inputs from the driver -----------------------------------------------------------------

    def published(self, message_id: bytes, *, peers: int, wall_now: float) -> list[Action]:
        """The driver published an outbox message to ``peers`` peers."""
        record = self._pending.get(message_id)
        if record is None or peers <= 0:
            return []
        return self._move([(record, OutboxInput.PUBLISHED, None)], wall_now)

    def receive(self, envelopes: Sequence[bytes], *, wall_now: float) -> list[Action]:
        """Envelopes arrived (by gossip, or fetched from a mailbox): accept what is ours and new."""
        fresh = self._screen(envelopes, wall_now)
        if not fresh:  # a relay's everyday case: envelopes for others, no storage touched
            return []
        seen = self.storage.seen(fresh)
        actions: list[Action] = []
        chats: list[tuple[InboxRecord, PublicIdentity, SeenEntry]] = []
        receipts: list[tuple[Receipt, PublicIdentity, SeenEntry]] = []
        rereceipts: dict[PublicIdentity, list[bytes]] = {}
        for mid, (data, expiry, tag) in fresh.items():
            try:
                opened = open_envelope(self.identity, data, wall_now=wall_now, key_cache=self._keys)
                payload = decode_payload(opened.body)
            except MeshchatError as exc:
                self._rejected[reject_reason(exc)] += 1
                continue
            if mid in seen:
                self._discarded[DiscardReason.DUPLICATE] += 1
                if isinstance(payload, Chat) and self._may_rereceipt(mid, wall_now):
                    rereceipts.setdefault(opened.sender, []).append(mid)
                continue
            entry = SeenEntry(message_id=mid, inbox_tag=tag, expiry=expiry)
            if isinstance(payload, Receipt):
                receipts.append((payload, opened.sender, entry))
                continue
            message = InboxRecord(
                number=0,
                message_id=mid,
                sender=opened.sender.ed25519,
                seq=payload.seq,
                body=payload.body,
                sent_at_ms=opened.sent_at_ms,
                received_at=wall_now,
            )
            chats.append((message, opened.sender, entry))
        chats.sort(key=lambda c: (c[0].sender, c[0].seq))
        # What the receipts prove is written in the same transaction as their seen entries: a crash
        # cannot leave a receipt seen (never processed again) with its message still ``stored``.
        proven = self._plan_moves(self._receipt_moves(receipts), wall_now)
        try:
            numbered = self.storage.accept(
                [c[2] for c in chats] + [r[2] for r in receipts],
                [c[0] for c in chats],
                list(proven.changed.values()),
            )
        except StorageError as exc:
            self._discarded[DiscardReason.STORAGE_FAILED] += len(chats) + len(receipts)
            return [StoreProblem(error=exc)]
        by_sender: dict[PublicIdentity, list[bytes]] = rereceipts
        for message, (_, sender, _) in zip(numbered, chats, strict=True):
            actions.append(MessageReceived(message=message, sender=sender))
            by_sender.setdefault(sender, []).append(message.message_id)
        self._counts["received"] += len(numbered)
        self._counts["receipts"] += len(receipts)
        actions += self._report_moves(proven)
        actions += self._receipts(by_sender, ReceiptKind.DELIVERED, wall_now)
        return actions

    def _screen(self, envelopes: Sequence[bytes], wall_now: float) -> dict[bytes, tuple[bytes, int, bytes]]:
        """The envelopes worth opening, by id: well-formed, ours, sane expiry, once each."""
        self._refresh_tags(wall_now)
        fresh: dict[bytes, tuple[bytes, int, bytes]] = {}
        for data in envelopes:
            try:
                envelope = decode_envelope(data)
            except DecodeError:
                self._discarded[DiscardReason.MALFORMED] += 1
                continue
            if envelope.inbox_tag not in self._tags:
                self._discarded[DiscardReason.NOT_OURS] += 1
                continue
            if envelope.expiry > wall_now + MAX_TTL + CLOCK_SKEW:
                # No honest sender seals one (the seen window keeps ids until their expiry: refuse
                # what would pin an entry for longer than the longest TTL).
                self._discarded[DiscardReason.EXPIRY_TOO_FAR] += 1
                continue
            mid = message_id(data)
            if mid in fresh:
                self._discarded[DiscardReason.DUPLICATE] += 1
                continue
            fresh[mid] = (data, envelope.expiry, envelope.inbox_tag)
        return fresh

    def mailboxes_changed(self, peers: Iterable[str], *, wall_now: float) -> list[Action]:
        """The mailboxes reachable now (the driver's view); new ones are synced with at once. A
        mailbox caught lying is left out until its ``MAILBOX_PENALTY`` is over."""
        self._reachable = list(dict.fromkeys(peers))
        return self._use_mailboxes(wall_now)

    def _use_mailboxes(self, wall_now: float, *, replan: bool = False) -> list[Action]:
        """Use the reachable mailboxes that are not penalised (``replan``: plan every pending message
        again, as when a mailbox that held queued stores is set aside)."""
        for peer, until in list(self._penalised.items()):
            if until <= wall_now:
                del self._penalised[peer]
        wanted = [p for p in self._reachable if p not in self._penalised]
        gone = set(self._mailboxes) - set(wanted)
        for peer in gone:
            self._to_store.pop(peer, None)
            self._to_withdraw.pop(peer, None)
            self._syncs.pop(peer, None)
            self._next_sync.pop(peer, None)
            self._receipt_wait.pop(peer, None)
        actions: list[Action] = []
        new = [p for p in wanted if p not in self._mailboxes]
        self._mailboxes = wanted
        for peer in new:
            self._next_sync[peer] = wall_now
            self._receipt_wait.pop(peer, None)  # starts again at receipt_sync_interval
        if new or (replan and gone):
            for record in list(self._pending.values()):
                actions += self._plan_stores(record)
            self._requeue_receipts(wall_now)
        actions += self._start_due_syncs(wall_now)
        for peer in self._mailboxes:
            actions += self._pump(peer)
        return actions

    def _penalise(self, peer: str, wall_now: float) -> list[Action]:
        """``peer`` lied: abandon its sync (nothing deleted) and do not use it for ``MAILBOX_PENALTY``."""
        self._counts["penalties"] += 1
        self._penalised[peer] = wall_now + MAILBOX_PENALTY
        self._penalised.move_to_end(peer)
        while len(self._penalised) > MAX_PENALISED:
            self._penalised.popitem(last=False)
        self._syncs.pop(peer, None)
        return self._use_mailboxes(wall_now, replan=True)

    def sync_now(self, *, wall_now: float) -> list[Action]:
        """Sync with every reachable mailbox now (a user pulled to refresh; a node came online)."""
        for peer in self._mailboxes:
            self._next_sync[peer] = wall_now
        return self._start_due_syncs(wall_now) + [a for p in self._mailboxes for a in self._pump(p)]

    def mailbox_replied(
        self, peer: str, request: MailboxRequest, response: MailboxResponse, *, wall_now: float
    ) -> list[Action]:
        """Mailbox ``peer`` answered ``request``. Nothing a mailbox answers raises: a lie is counted
        (``DiscardReason``), costs the mailbox a ``MAILBOX_PENALTY``, and the rest goes on."""
        if self._busy.get(peer) is request:
            del self._busy[peer]
        actions: list[Action] = []
        match response:
            case Stored() if isinstance(request, StoreRequest):
                actions += self._stored(peer, request, response, wall_now)
            case Synced() if isinstance(request, SyncRequest):
                actions += self._synced(peer, request, response, wall_now)
            case Fetched() if isinstance(request, FetchRequest):
                actions += self._fetched(peer, request, response, wall_now)
            case Deleted() if isinstance(request, DeleteRequest):
                sync = self._syncs.get(peer)
                if sync is None or sync.awaiting is not request:
                    self._discarded[DiscardReason.STALE_REPLY] += 1
                else:
                    sync.deleted()
                    self._end_sync(peer)
            case Deleted() if isinstance(request, WithdrawRequest):
                if response.count > len(request.message_ids):
                    self._discarded[DiscardReason.DELETED_TOO_MANY] += 1
                    actions += self._penalise(peer, wall_now)
                else:
                    self._counts["withdrawn"] += response.count
            case MailboxError():
                self._discarded[DiscardReason.MAILBOX_ERROR] += 1
                self._mailbox_errors[response.code] += 1
                self._syncs.pop(peer, None)
            case _:
                self._discarded[DiscardReason.WRONG_ANSWER] += 1
                actions += self._penalise(peer, wall_now)
        return actions + self._pump(peer)

    def mailbox_failed(
        self, peer: str, request: MailboxRequest, problem: str, *, wall_now: float
    ) -> list[Action]:
        """The call to ``peer`` failed (unreachable, timed out, garbage answer): abandon its sync; the
        messages waiting for it are planned again at their next retry."""
        if self._busy.get(peer) is request:
            del self._busy[peer]
        self._discarded[DiscardReason.CALL_FAILED] += 1
        self._syncs.pop(peer, None)
        self._to_store.pop(peer, None)
        if peer in self._mailboxes:  # (one that left has no next sync)
            self._next_sync[peer] = wall_now + self.config.sync_interval
        if self._unstored_receipts and self._receipt_retry is None:
            self._receipt_retry = wall_now + self.config.retry_initial
        return []

    def on_timer(self, *, wall_now: float) -> list[Action]:
        """Retry, expire and sync what is due at ``wall_now``."""
        actions: list[Action] = []
        due_by_id: dict[bytes, OutboxRecord] = {}  # a record can sit in the heap twice at one time
        while self._timers and self._timers[0][0] <= wall_now:
            when, mid = heapq.heappop(self._timers)
            record = self._pending.get(mid)
            if record is not None and record.next_attempt == when:
                due_by_id[mid] = record
        due = list(due_by_id.values())
        moves: list[tuple[OutboxRecord, OutboxInput, str | None]] = []
        retried: list[OutboxRecord] = []
        for record in due:
            if wall_now > record.expiry:
                moves.append((record, OutboxInput.EXPIRY_PASSED, None))
                continue
            attempts = record.attempts + 1
            cap = self.config.stored_retry_max if record.stored_on else self.config.retry_max
            wait = min(cap, self.config.retry_initial * 2**attempts)
            retry = record.replace(
                attempts=attempts,
                next_attempt=min(wall_now + wait * (1 + 0.1 * self._rng.random()), record.expiry + 1.0),
                updated_at=wall_now,
            )
            retried.append(retry)
        if retried:
            try:
                self.storage.outbox_update(retried)
            except StorageError as exc:
                actions.append(StoreProblem(error=exc))
                retried = [r.replace(next_attempt=wall_now + self.config.retry_initial) for r in due]
            for record in retried:
                self._track(record)
                actions.append(self._publish(record, again=True))
                actions += self._plan_stores(record)
        actions += self._move(moves, wall_now)
        if self._receipt_retry is not None and wall_now >= self._receipt_retry:
            self._receipt_retry = None
            self._requeue_receipts(wall_now)
        if wall_now >= self._next_seen_prune:
            self._next_seen_prune = wall_now + SEEN_PRUNE_INTERVAL
            self.storage.prune_seen(int(wall_now) - CLOCK_SKEW)
        if any(until <= wall_now for until in self._penalised.values()):
            actions += self._use_mailboxes(wall_now)
        actions += self._start_due_syncs(wall_now)
        for peer in self._mailboxes:
            actions += self._pump(peer)
        return actions

    def next_deadline(self) -> float | None:
        """The wall time ``on_timer`` should next be called at (None: nothing scheduled)."""
        candidates = [t for p, t in self._next_sync.items() if p not in self._syncs]
        if self._timers:
            candidates.append(self._timers[0][0])
        if self._receipt_retry is not None:
            candidates.append(self._receipt_retry)
        candidates += [until for peer, until in self._penalised.items() if peer in self._reachable]
        return min(candidates) if candidates else None

    def statistics(self) -> MessengerStatistics:
        """Counters since start."""
        pending = Counter(r.status.value for r in self._pending.values())
        return MessengerStatistics(
            received=self._counts["received"],
            receipts=self._counts["receipts"],
            syncs=self._counts["syncs"],
            # Keyed by the enum members themselves (a StrEnum is a str).
            discarded={reason: n for reason, n in self._discarded.items()},
            rejected={reason: n for reason, n in self._rejected.items()},
            pending=dict(pending),
            mailbox_errors=dict(self._mailbox_errors),
            penalties=self._counts["penalties"],
        )

    @property
    def mailboxes(self) -> list[str]:
        """The reachable mailboxes, as last told by the driver (penalised ones included)."""
        return list(self._reachable)

    # --- internals: outbox ----------------------------------------------------------------------

    def _track(self, record: OutboxRecord) -> None:
        if record.status not in RETRYING:
            self._pending.pop(record.message_id, None)
            return
        self._pending[record.message_id] = record
        heapq.heappush(self._timers, (record.next_attempt, record.message_id))

    def _publish(self, record: OutboxRecord, *, again: bool = False) -> PublishEnvelope:
        tag = decode_envelope(record.envelope).inbox_tag
        return PublishEnvelope(
            topic=inbox_topic(tag), envelope=record.envelope, message_id=record.message_id, again=again
        )

    def _move(
        self, moves: Sequence[tuple[OutboxRecord, OutboxInput, str | None]], wall_now: float
    ) -> list[Action]:
        """Apply outbox inputs per ``OUTBOX_TRANSITIONS``; persist and report what changed."""
        planned = self._plan_moves(moves, wall_now)
        if not planned.changed:
            return []
        try:
            self.storage.outbox_update(list(planned.changed.values()))
        except StorageError as exc:
            return [StoreProblem(error=exc)]  # nothing moved; the same news will come again
        return self._report_moves(planned)

    def _plan_moves(
        self, moves: Sequence[tuple[OutboxRecord, OutboxInput, str | None]], wall_now: float
    ) -> _Moves:
        """The records ``moves`` change (per ``OUTBOX_TRANSITIONS``), not yet persisted."""
        planned = _Moves()
        for record, event, error in moves:
            planned.before.setdefault(record.message_id, (record.status, record.error))
            current = planned.changed.get(record.message_id, record)
            status = OUTBOX_TRANSITIONS.get((current.status, event), current.status)
            if status is current.status and error is None:
                continue
            planned.changed[record.message_id] = current.replace(
                status=status, error=current.error if error is None else error, updated_at=wall_now
            )
        return planned

    def _report_moves(self, planned: _Moves) -> list[Action]:
        """Track the persisted ``planned`` records and tell the app what moved."""
        actions: list[Action] = []
        for record in planned.changed.values():
            self._track(record)
            if (record.status, record.error) == planned.before[record.message_id]:
                continue  # persisted (another mailbox holds it too), but nothing the app needs to hear
            actions.append(
                StatusChanged(message_id=record.message_id, status=record.status, error=record.error)
            )
            if record.status in (_S.DELIVERED, _S.READ):
                actions += self._withdraw(record)
        return actions

    def _withdraw(self, record: OutboxRecord) -> list[Action]:
        """The recipient has it: take back the copies stored on mailboxes (best effort, not persisted:
        a copy missed here goes at its expiry)."""
        actions: list[Action] = []
        for peer in record.stored_on:
            self._to_withdraw.setdefault(peer, {})[record.message_id] = None
            actions += self._pump(peer)
        return actions

    def _ranked_mailboxes(self, tag: bytes) -> list[str]:
        """Mailboxes in rendezvous order for ``tag``: every node that knows the same set ranks alike."""
        return sorted(
            self._mailboxes, key=lambda p: hashlib.blake2b(tag + p.encode(), digest_size=8).digest()
        )

    def _plan_stores(self, record: OutboxRecord) -> list[Action]:
        """Queue ``record`` for the mailboxes it still needs; start calls to idle ones."""
        if record.status not in RETRYING:
            return []
        tag = decode_envelope(record.envelope).inbox_tag
        preferred = self._preferred.get(record.recipient, ())
        peers = self._queue_store(tag, record.message_id, record.envelope, record.stored_on, preferred)
        return [a for peer in peers for a in self._pump(peer)]

    def _queue_store(
        self,
        tag: bytes,
        mid: bytes,
        envelope: bytes,
        stored_on: Sequence[str] = (),
        preferred: Sequence[str] = (),
    ) -> list[str]:
        """Queue an envelope for the mailboxes it still needs; return them. One of the recipient's own
        (``preferred``, from their invite) comes first while none holds it; the rest in rendezvous
        order up to ``mailbox_copies``."""
        chosen: list[str] = []
        reachable = [p for p in preferred if p in self._mailboxes]
        if reachable and not any(p in stored_on for p in preferred):
            chosen.append(reachable[0])
        missing = self.config.mailbox_copies - len(stored_on) - len(chosen)
        for peer in self._ranked_mailboxes(tag):
            if missing <= 0:
                break
            if peer in stored_on or peer in chosen:
                continue
            chosen.append(peer)
            missing -= 1
        for peer in chosen:
            self._to_store.setdefault(peer, OrderedDict())[mid] = envelope
        return chosen

    def _stored(self, peer: str, request: StoreRequest, response: Stored, wall_now: float) -> list[Action]:
        asked = {message_id(e) for e in request.envelopes}
        results = []
        for result in response.results:
            if result.message_id in asked:
                asked.discard(result.message_id)  # a second result for one envelope is unasked
                results.append(result)
            else:
                self._discarded[DiscardReason.STORED_UNASKED] += 1
        if asked:  # not stored, as far as we know: planned again at their next retry
            self._discarded[DiscardReason.STORED_MISSING] += len(asked)
        moves: list[tuple[OutboxRecord, OutboxInput, str | None]] = []
        for result in results:
            if result.code is StoreCode.STORED and result.message_id in self._unstored_receipts:
                del self._unstored_receipts[result.message_id]  # one mailbox holds it: enough
                continue
            record = self._pending.get(result.message_id)
            if record is None:
                # A receipt we stored for someone; or our message, whose receipt came back while this
                # store was in flight: then the copy just stored is not needed, take it back.
                done = self.storage.outbox_get(result.message_id) if result.code is StoreCode.STORED else None
                if done is not None and done.status in (_S.DELIVERED, _S.READ):
                    self._to_withdraw.setdefault(peer, {})[result.message_id] = None
                continue
            if result.code is StoreCode.STORED:
                if peer not in record.stored_on:
                    record = record.replace(stored_on=(*record.stored_on, peer))
                    self._pending[record.message_id] = record
                moves.append((record, OutboxInput.MAILBOX_STORED, ""))
                continue
            problem = f"mailbox {peer}: {result.code.name.lower().replace('_', ' ')}: {result.detail}"
            permanent = result.code in PERMANENT_STORE_CODES
            event = OutboxInput.REFUSED_FOR_GOOD if permanent else OutboxInput.REFUSED_FOR_NOW
            moves.append((record, event, problem))
        actions = self._move(moves, wall_now)
        if len(results) != len(response.results) or asked:
            actions += self._penalise(peer, wall_now)
        return actions

    # --- internals: receipts --------------------------------------------------------------------

    def _receipt_moves(
        self, receipts: Sequence[tuple[Receipt, PublicIdentity, SeenEntry]]
    ) -> list[tuple[OutboxRecord, OutboxInput, str | None]]:
        """The outbox inputs ``receipts`` prove (a receipt counts only from the message's recipient)."""
        moves: list[tuple[OutboxRecord, OutboxInput, str | None]] = []
        for receipt, signer, _ in receipts:
            event = (
                OutboxInput.READ_RECEIPT if receipt.kind is ReceiptKind.READ else OutboxInput.DELIVERY_RECEIPT
            )
            for mid in receipt.message_ids:
                record = self._pending.get(mid) or self.storage.outbox_get(mid)
                if record is None:
                    self._discarded[DiscardReason.RECEIPT_UNKNOWN] += 1
                elif record.recipient != signer.ed25519:
                    self._discarded[DiscardReason.RECEIPT_WRONG_SIGNER] += 1
                else:
                    moves.append((record, event, None))
        return moves

    def _receipts(
        self, by_sender: dict[PublicIdentity, list[bytes]], kind: ReceiptKind, wall_now: float
    ) -> list[Action]:
        """Seal one receipt per sender (per ``MAX_RECEIPT_IDS`` ids); publish and store each."""
        actions: list[Action] = []
        for sender, ids in by_sender.items():
            for start in range(0, len(ids), MAX_RECEIPT_IDS):
                chunk = tuple(ids[start : start + MAX_RECEIPT_IDS])
                envelope = seal(
                    self.identity,
                    sender,
                    encode_payload(Receipt(kind=kind, message_ids=chunk)),
                    wall_now=wall_now,
                    ttl=self.config.ttl,
                    random_bytes=self._random_bytes,
                )
                tag = inbox_tag(sender, epoch_of(wall_now))
                actions.append(PublishEnvelope(topic=inbox_topic(tag), envelope=envelope, message_id=None))
                mid = message_id(envelope)
                preferred = self._preferred.get(sender.ed25519, ())
                self._queue_store(tag, mid, envelope, (), preferred)
                self._unstored_receipts[mid] = (tag, envelope, decode_envelope(envelope).expiry, preferred)
                while len(self._unstored_receipts) > MAX_UNSTORED_RECEIPTS:
                    self._unstored_receipts.popitem(last=False)
                    self._discarded[DiscardReason.RECEIPT_TOO_MANY] += 1
        for peer in self._mailboxes:
            actions += self._pump(peer)
        return actions

    def _requeue_receipts(self, wall_now: float) -> None:
        """Queue every receipt no mailbox acknowledged (dropping the expired ones) again."""
        for mid, (tag, envelope, expiry, preferred) in list(self._unstored_receipts.items()):
            if expiry < wall_now:
                del self._unstored_receipts[mid]
                self._discarded[DiscardReason.RECEIPT_EXPIRED] += 1
            elif not any(mid in queue for queue in self._to_store.values()):
                self._queue_store(tag, mid, envelope, (), preferred)

    def _may_rereceipt(self, mid: bytes, wall_now: float) -> bool:
        last = self._rereceipted.get(mid)
        if last is not None and wall_now - last < RERECEIPT_INTERVAL:
            return False
        self._rereceipted[mid] = wall_now
        self._rereceipted.move_to_end(mid)
        while len(self._rereceipted) > _RERECEIPT_MEMORY:
            self._rereceipted.popitem(last=False)
        return True

    def _refresh_tags(self, wall_now: float) -> None:
        day = epoch_of(wall_now)
        if day != self._tags_day:
            self._tags_day = day
            self._owned = owned_tags(self.identity.public, wall_now)
            self._tags = frozenset(self._owned)

    # --- internals: mailbox calls ---------------------------------------------------------------

    def _pump(self, peer: str) -> list[Action]:
        """Start the next call to ``peer`` if none is in flight: sync steps first, then stores."""
        if peer in self._busy or peer not in self._mailboxes:
            return []
        sync = self._syncs.get(peer)
        request = sync.take_request() if sync is not None else None
        if request is None and self._to_store.get(peer):
            queue = self._to_store[peer]
            batch = batches(list(queue.values()))[0]
            for _ in batch:
                queue.popitem(last=False)
            request = StoreRequest(envelopes=batch)
        if request is None and self._to_withdraw.get(peer):
            ids = list(self._to_withdraw[peer])[:MAX_FETCH_IDS]
            for mid in ids:
                del self._to_withdraw[peer][mid]
            request = WithdrawRequest(message_ids=tuple(ids))
        if request is None:
            return []
        self._busy[peer] = request
        return [CallMailbox(peer=peer, request=request)]

    def _start_due_syncs(self, wall_now: float) -> list[Action]:
        for peer in self._mailboxes:
            if peer in self._syncs or self._next_sync.get(peer, wall_now) > wall_now:
                continue
            self._next_sync[peer] = wall_now + self._sync_wait(peer)
            self._refresh_tags(wall_now)
            tags = self._owned
            self._syncs[peer] = SyncSession(
                tags, self.storage.seen_items(tags), fetch_batch=self.config.fetch_batch
            )
        return []

    def _sync_wait(self, peer: str) -> float:
        """Seconds until the next sync with ``peer``: short while messages await receipts."""
        if not self._pending:
            self._receipt_wait.pop(peer, None)
            return self.config.sync_interval
        wait = min(self._receipt_wait.get(peer, self.config.receipt_sync_interval), self.config.sync_interval)
        self._receipt_wait[peer] = min(2 * wait, self.config.sync_interval)
        return wait

    def _hurry_syncs(self, wall_now: float) -> None:
        """A receipt may come soon: sync every mailbox within ``receipt_sync_interval``, then back off."""
        soon = min(self.config.receipt_sync_interval, self.config.sync_interval)
        for peer in self._mailboxes:
            self._receipt_wait.pop(peer, None)
            if self._next_sync.get(peer, math.inf) > wall_now + soon:
                self._next_sync[peer] = wall_now + soon

    def _synced(self, peer: str, request: SyncRequest, response: Synced, wall_now: float) -> list[Action]:
        sync = self._syncs.get(peer)
        if sync is None or sync.awaiting is not request:
            self._discarded[DiscardReason.STALE_REPLY] += 1
            return []
        problem = sync.synced(response)
        if problem is not None:
            self._discarded[problem] += 1
            return self._penalise(peer, wall_now)
        if sync.state is SyncState.DONE:
            self._end_sync(peer)
        return []

    def _fetched(self, peer: str, request: FetchRequest, response: Fetched, wall_now: float) -> list[Action]:
        sync = self._syncs.get(peer)
        if sync is not None and sync.awaiting is request:
            envelopes, problems = sync.fetched(request, response)
        else:  # abandoned meanwhile: what is good is still ours to accept
            sync = None
            self._refresh_tags(wall_now)
            good, problems = screen_fetched(self._owned, request, response)
            envelopes = [e for _, e in sorted(good, key=lambda d: d[0])]
        self._discarded.update(problems)
        actions = self.receive(envelopes, wall_now=wall_now)
        if problems:
            return actions + self._penalise(peer, wall_now)  # the good ones are in; the sync is not
        if any(isinstance(a, StoreProblem) for a in actions):
            self._syncs.pop(peer, None)  # nothing deleted: the next sync fetches them again
        elif sync is not None:
            sync.accepted()
            if sync.state is SyncState.DONE:
                self._end_sync(peer)
        return actions

    def _end_sync(self, peer: str) -> None:
        if self._syncs.pop(peer, None) is not None:
            self._counts["syncs"] += 1
