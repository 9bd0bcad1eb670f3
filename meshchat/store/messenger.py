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
case the first receipt was lost. Failures are counted by reason in ``statistics``. A chat from
someone the ``blocked`` predicate names is opened (to learn who sent it), marked seen in the same
transaction as the rest of its batch, counted (``blocked_dropped``) and dropped: no inbox row, no
history, no event, no receipt (see ``inbound.py``). With a ``known`` predicate (contacts and group
members; the node passes it) stamps are on: a stranger's chat (not known, no conversation with us
either way) without a valid stamp at ``StoreConfig.stamp_cost`` is dropped so too (``unstamped``), and
chats we send to someone who never answered (no chat from them, none of ours delivered) carry a
stamp at the cost their invite asks (``set_stamp_cost``; ``send_ops.py``). A control message
(``send(..., control=True)``, for the groups machinery) is receipted like a chat but handed on as
``ControlReceived``, never written to the inbox or the seen window. Envelopes for the watched (group)
tags (``watch_tags``) are not opened: they come out as ``GroupEnvelopes`` for the groups core, whose
``group_accepted`` puts them in the seen window; ``store_shared`` puts the groups core's envelopes on
mailboxes for every member (see ``shared.py``).

**Syncing.** With each mailbox, every ``sync_interval`` and when it first becomes reachable: range-based
reconciliation of the ids it holds for our tags against our seen window; fetch what we lack in
batches (cut where the expiry changes, so same-TTL messages keep their order), accept; then delete
what the mailbox held when the sync began. A failed step abandons the sync without deleting anything.
While sent messages await receipts, syncs come every ``receipt_sync_interval``, doubling up to
``receipt_sync_max`` (5 s) for an hour after a send, a mailbox appearing or a recipient coming back,
then up to ``sync_interval``: a receipt that missed gossip is in within seconds. Nothing a mailbox answers
raises: a lie (not an envelope, another tag, unasked ids, garbage reconciliation ...) is counted by
``DiscardReason``, the good envelopes of the same fetch are accepted, and the mailbox is set aside for
``MAILBOX_PENALTY``.

**Shape.** ``Messenger`` is the facade; the work is done by ``OutboxTracker`` (``tracker.py``: retrying
records, timers, moves), ``ReceiptMaker`` (``receipts.py``: sealing receipts, keeping them until
stored) and ``MailboxCalls`` (``calls.py``: which mailboxes, queues, one call in flight each, sync
scheduling, penalties), ``inbound.py`` (screening and opening what arrives) and ``SharedTags``
(``shared.py``: watched tags, shared envelopes). This module keeps the inbox (accepting) and the glue.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence

import nacl.utils

from meshchat.crypto import CLOCK_SKEW, epoch_of, inbox_tags_around, inbox_topic
from meshchat.errors import StorageError
from meshchat.identity import Identity, KeyCache, PublicIdentity, RandomBytes
from meshchat.store.calls import MAILBOX_PENALTY, MAX_PENALISED, MailboxCalls
from meshchat.store.devices import DeviceBook
from meshchat.store.dropped import DroppedIds, dropped_writes
from meshchat.store.inbound import open_inbound, receipt_moves, screen
from meshchat.store.mailbox import owned_tags
from meshchat.store.outbox import (
    OUTBOX_TRANSITIONS,
    Action,
    CallMailbox,
    ControlReceived,
    DeviceListChanged,
    EnvelopeRefused,
    EnvelopeStored,
    GroupEnvelopes,
    Linked,
    MessageReceived,
    MessengerStatistics,
    OutboxInput,
    PublishEnvelope,
    StatusChanged,
    StoreConfig,
    StoreProblem,
)
from meshchat.store.payload import ReceiptKind
from meshchat.store.protocol import (
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
)
from meshchat.store.reasons import DiscardReason, RejectReason
from meshchat.store.receipts import MAX_UNSTORED_RECEIPTS, RERECEIPT_INTERVAL, ReceiptMaker
from meshchat.store.send_ops import Sending
from meshchat.store.session_ops import SessionOps
from meshchat.store.sessions import SessionKeeper
from meshchat.store.shared import SharedTags
from meshchat.store.storage import InboxRecord, OutboxRecord, OutboxStatus, SeenEntry, Storage
from meshchat.store.sync import SyncSession, SyncState, screen_fetched
from meshchat.store.tracker import Move, Moves, OutboxTracker
from meshchat.wire import message_id

__all__ = [
    "MAILBOX_PENALTY",
    "MAX_PENALISED",
    "MAX_UNSTORED_RECEIPTS",
    "OUTBOX_TRANSITIONS",
    "RERECEIPT_INTERVAL",
    "Action",
    "CallMailbox",
    "ControlReceived",
    "DeviceListChanged",
    "EnvelopeRefused",
    "EnvelopeStored",
    "GroupEnvelopes",
    "Linked",
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

#: Seconds between sweeps of the seen window.
SEEN_PRUNE_INTERVAL = 3600.0


class Messenger(Sending, SessionOps):
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
        blocked: Callable[[bytes], bool] | None = None,
        known: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Resume from ``storage``: pending outbox records are retried when their time comes. ``blocked``
        says whether a person (root Ed25519 key) is blocked: their chats are dropped unread by the app.
        ``known`` (a person's root key: a contact or a group member?) turns stamps on (module docstring)."""
        self.identity = identity
        self.storage = storage
        self.config = config or StoreConfig()
        self._blocked = blocked
        self._known = known
        # What each recipient's invite asks of our stamps (set by the user's contacts: not peer-grown).
        self._stamp_costs: dict[bytes, int] = {}
        self._dropped = DroppedIds(storage)
        self._random_bytes = random_bytes
        self._keys = KeyCache()
        self._discarded: Counter[DiscardReason] = Counter()
        self._rejected: Counter[RejectReason] = Counter()
        self._mailbox_errors: Counter[ErrorCode] = Counter()
        self._counts: Counter[str] = Counter()
        self._outbox = OutboxTracker(storage, self.config, rng=rng)
        #: The 1:1 sessions (Double Ratchet per peer device) that chats and controls travel in.
        self.sessions = SessionKeeper(identity, storage, random_bytes=random_bytes)
        #: Whose devices are whose: where a message to a person goes, whose a sender's device is.
        self.devices = DeviceBook(identity, storage)
        self._receipts = ReceiptMaker(
            identity, self.config, random_bytes=random_bytes, discarded=self._discarded
        )
        self._calls = MailboxCalls(self.config)
        # Each contact's own mailboxes (from their invite), by public key: stores for them go there.
        self._preferred: dict[bytes, tuple[str, ...]] = {}
        self._tags_day = -1
        self._tags: frozenset[bytes] = frozenset()
        self._owned: tuple[bytes, ...] = ()
        self._next_seen_prune = wall_now + SEEN_PRUNE_INTERVAL
        self._shared = SharedTags()

    # --- inputs from the application ------------------------------------------------------------

    def mark_read(
        self, sender: PublicIdentity, message_ids: Sequence[bytes], *, wall_now: float
    ) -> list[Action]:
        """Tell ``sender`` that the app read ``message_ids`` (a signed, sealed read receipt)."""
        return self._send_receipts({sender: list(message_ids)}, ReceiptKind.READ, wall_now)

    def retry_now(self, message_id: bytes, *, wall_now: float) -> list[Action]:
        """Publish a pending message again now (the driver just reached its recipient)."""
        record = self._outbox.get(message_id)
        if record is None:
            return []
        self._calls.hurry(wall_now)  # its recipient is back: its receipt may wait on a mailbox soon
        return [self._publish(record, again=True), *self._plan_stores(record)]

    def prefer_mailboxes(self, recipient: PublicIdentity, peers: Sequence[str]) -> None:
        """``recipient`` syncs from mailboxes ``peers`` (PeerIds, from their invite): every message and
        receipt for them is stored on one of these whenever one is reachable, besides the usual
        rendezvous choice."""
        if peers:
            self._preferred[recipient.ed25519] = tuple(peers)
        else:
            self._preferred.pop(recipient.ed25519, None)

    def watch_tags(self, tags: Collection[bytes], *, wall_now: float) -> list[Action]:
        """Follow ``tags`` (the groups' tags) besides our own, replacing the set: their envelopes come
        out unopened as ``GroupEnvelopes``, and each sync fetches them without deleting them.
        ``ValueError`` beyond ``MAX_WATCHED_TAGS``. New tags are synced with every mailbox now."""
        new = frozenset(tags) - self._shared.watched
        self._shared.watch(tags)
        if not new:
            return []
        self._calls.due_now(wall_now)
        return self._start_due_syncs(wall_now) + self._calls.pump_all()

    def group_accepted(self, entries: Sequence[SeenEntry], *, wall_now: float) -> list[Action]:
        """The groups core accepted these group envelopes: into the seen window, so reconciliation
        stops fetching them and another copy is dropped as a duplicate. A ``StoreProblem`` if that
        cannot be written (they are fetched again: the groups core drops them as replays)."""
        unique = {e.message_id: e for e in entries}
        try:
            seen = self.storage.seen(unique)
            if len(seen) < len(unique):
                self.storage.accept([e for mid, e in unique.items() if mid not in seen], [], [])
        except StorageError as exc:
            return [StoreProblem(error=exc)]
        return []

    def store_shared(
        self, tag: bytes, message_id: bytes, envelope: bytes, *, wall_now: float
    ) -> list[Action]:
        """Store a shared (group) ``envelope`` for ``tag`` on ``mailbox_copies`` mailboxes. Each one that
        stores it answers ``EnvelopeStored``, a refusal ``EnvelopeRefused``; until one stores it, it is
        queued again when the mailboxes change (in memory, at most ``MAX_SHARED_PENDING``, until its
        expiry). ``ValueError`` if ``message_id`` is not the envelope's id."""
        item = self._shared.add(tag, message_id, envelope)
        self._shared.unstored(wall_now)  # forget the expired ones
        return self._shared.plan(item, self._calls)

    def status(self, message_id: bytes) -> OutboxRecord | None:
        """The outbox record of a sent message, if it is ours."""
        return self._outbox.lookup(message_id)

    def topics(self, wall_now: float) -> set[str]:
        """The inbox topics to join now (yesterday's, today's and tomorrow's tags)."""
        return {inbox_topic(tag) for tag in inbox_tags_around(self.identity.public, wall_now)}

    # --- inputs from the driver -----------------------------------------------------------------

    def published(self, message_id: bytes, *, peers: int, wall_now: float) -> list[Action]:
        """The driver published an outbox message to ``peers`` peers."""
        record = self._outbox.get(message_id)
        if record is None or peers <= 0:
            return []
        return self._move([(record, OutboxInput.PUBLISHED, None)], wall_now)

    def receive(self, envelopes: Sequence[bytes], *, wall_now: float) -> list[Action]:
        """Envelopes arrived (by gossip, or fetched from a mailbox): accept what is ours and new; hand
        on those for watched tags (``GroupEnvelopes``, unopened) and the control messages."""
        self._refresh_tags(wall_now)
        stamped: set[bytes] = set()
        fresh, watched = screen(
            envelopes,
            self._tags,
            self._shared.watched,
            wall_now=wall_now,
            discarded=self._discarded,
            stamp_cost=None if self._known is None else self.config.stamp_cost,
            stamped=stamped,
        )
        if not fresh and not watched:  # a relay's everyday case: envelopes for others, no storage touched
            return []
        try:
            seen = self.storage.seen([*fresh, *watched])
            dropped = self._dropped.among([m for m in fresh if m in seen])
        except StorageError as exc:  # nothing accepted: they come again (sender retries, mailbox sync)
            self._discarded[DiscardReason.STORAGE_FAILED] += len(fresh) + len(watched)
            return [StoreProblem(error=exc)]
        actions: list[Action] = []
        unseen = tuple(data for mid, data in watched.items() if mid not in seen)
        if len(unseen) < len(watched):
            self._discarded[DiscardReason.DUPLICATE] += len(watched) - len(unseen)
        if unseen:
            actions.append(GroupEnvelopes(envelopes=unseen))
        inbound = open_inbound(
            self.identity,
            fresh,
            seen,
            wall_now=wall_now,
            keys=self._keys,
            sessions=self.sessions,
            devices=self.devices,
            receipts=self._receipts,
            rejected=self._rejected,
            discarded=self._discarded,
            blocked=self._blocked,
            dropped=dropped,
            known=None if self._known is None else self._is_known,
            stamped=stamped,
        )
        apart = inbound.blocked + inbound.unstamped  # seen, remembered as dropped, never receipted
        chats, receipts = inbound.chats, inbound.receipts
        chats.sort(key=lambda c: (c[0].sender, c[0].seq))
        # What the receipts prove is written in the same transaction as their seen entries: a crash
        # cannot leave a receipt seen (never processed again) with its message still ``stored``.
        proven = self._outbox.plan(receipt_moves(receipts, self._outbox, self._discarded), wall_now)
        numbered: list[InboxRecord] = []
        state = (
            self.sessions.writes() + self.devices.writes() + inbound.control_writes + dropped_writes(apart)
        )
        if chats or receipts or inbound.controls or apart or state:
            try:
                numbered = self.storage.accept(
                    [c[2] for c in chats] + [r[2] for r in receipts] + inbound.control_entries + apart,
                    [c[0] for c in chats],
                    list(proven.changed.values()),
                    state,
                )
            except StorageError as exc:
                self.sessions.rolled_back()
                self.devices.rolled_back()
                self._discarded[DiscardReason.STORAGE_FAILED] += (
                    len(chats) + len(receipts) + len(inbound.controls) + len(apart)
                )
                return [*actions, StoreProblem(error=exc)]
            self.sessions.committed()
            self.devices.committed()
        by_sender = inbound.rereceipts
        for message, (_, sender, _) in zip(numbered, chats, strict=True):
            actions.append(MessageReceived(message=message, sender=sender))
            by_sender.setdefault(sender, []).append(message.message_id)
        actions += inbound.controls  # before the receipts: see ``ControlReceived``
        actions += inbound.changes
        self._counts["received"] += len(numbered)
        self._counts["receipts"] += len(receipts)
        self._counts["controls"] += len(inbound.controls)
        self._counts["blocked"] += len(inbound.blocked)
        if inbound.unstamped:
            self._discarded[DiscardReason.UNSTAMPED] += len(inbound.unstamped)
        if apart:
            self._dropped.added()
        actions += self._report(proven)
        actions += self._send_receipts(by_sender, ReceiptKind.DELIVERED, wall_now)
        return actions

    def mailboxes_changed(self, peers: Iterable[str], *, wall_now: float) -> list[Action]:
        """The mailboxes reachable now (the driver's view); new ones are synced with at once. A
        mailbox caught lying is left out until its ``MAILBOX_PENALTY`` is over."""
        self._calls.set_reachable(peers)
        return self._use_mailboxes(wall_now)

    def sync_now(self, *, wall_now: float) -> list[Action]:
        """Sync with every reachable mailbox now (a user pulled to refresh; a node came online)."""
        self._calls.sync_all_now(wall_now)
        actions = self._start_due_syncs(wall_now)
        return actions + list(self._calls.pump_all())

    def mailbox_replied(
        self, peer: str, request: MailboxRequest, response: MailboxResponse, *, wall_now: float
    ) -> list[Action]:
        """Mailbox ``peer`` answered ``request``. Nothing a mailbox answers raises: a lie is counted
        (``DiscardReason``), costs the mailbox a ``MAILBOX_PENALTY``, and the rest goes on."""
        self._calls.answered(peer, request)
        actions: list[Action] = []
        match response:
            case Stored() if isinstance(request, StoreRequest):
                actions += self._stored(peer, request, response, wall_now)
            case Synced() if isinstance(request, SyncRequest):
                actions += self._synced(peer, request, response, wall_now)
            case Fetched() if isinstance(request, FetchRequest):
                actions += self._fetched(peer, request, response, wall_now)
            case Deleted() if isinstance(request, DeleteRequest):
                sync = self._calls.session(peer, request)
                if sync is None:
                    self._discarded[DiscardReason.STALE_REPLY] += 1
                else:
                    sync.deleted()
                    actions += self._end_sync(peer)
            case Deleted() if isinstance(request, WithdrawRequest):
                if response.count > len(request.message_ids):
                    self._discarded[DiscardReason.DELETED_TOO_MANY] += 1
                    actions += self._penalise(peer, wall_now)
                else:
                    self._counts["withdrawn"] += response.count
            case MailboxError():
                self._discarded[DiscardReason.MAILBOX_ERROR] += 1
                self._mailbox_errors[response.code] += 1
                self._calls.drop_sync(peer)
            case _:
                self._discarded[DiscardReason.WRONG_ANSWER] += 1
                actions += self._penalise(peer, wall_now)
        return actions + self._calls.pump(peer)

    def mailbox_failed(
        self, peer: str, request: MailboxRequest, problem: str, *, wall_now: float
    ) -> list[Action]:
        """The call to ``peer`` failed (unreachable, timed out, garbage answer): abandon its sync; the
        messages waiting for it are planned again at their next retry."""
        self._discarded[DiscardReason.CALL_FAILED] += 1
        self._calls.failed(peer, request, wall_now)
        self._receipts.call_failed(wall_now)
        return []

    def on_timer(self, *, wall_now: float) -> list[Action]:
        """Retry, expire and sync what is due at ``wall_now``."""
        actions: list[Action] = []
        retried, expired, problem = self._outbox.due(wall_now)
        if problem is not None:
            actions.append(problem)
        for record in retried:
            actions.append(self._publish(record, again=True))
            actions += self._plan_stores(record)
        actions += self._move(expired, wall_now)
        if self._receipts.retry_due(wall_now):
            self._requeue_receipts(wall_now)
        if wall_now >= self._next_seen_prune:
            self._next_seen_prune = wall_now + SEEN_PRUNE_INTERVAL
            try:
                self.storage.prune_seen(int(wall_now) - CLOCK_SKEW)
                self._dropped.prune(int(wall_now) - CLOCK_SKEW)
            except StorageError as exc:  # the old entries stay an hour longer: harmless
                actions.append(StoreProblem(error=exc))
            actions += self._write_prekeys(wall_now)  # rotation, one-time keys topped up
        if self._calls.penalty_over(wall_now):
            actions += self._use_mailboxes(wall_now)
        actions += self._start_due_syncs(wall_now)
        actions += self._calls.pump_all()
        return actions

    def next_deadline(self) -> float | None:
        """The wall time ``on_timer`` should next be called at (None: nothing scheduled)."""
        candidates = [
            t
            for t in (
                self._calls.next_deadline(),
                self._outbox.next_deadline(),
                self._receipts.next_deadline(),
                self._next_seen_prune,  # hourly upkeep: seen window, prekey rotation
            )
            if t is not None
        ]
        return min(candidates) if candidates else None

    def statistics(self) -> MessengerStatistics:
        """Counters since start."""
        return MessengerStatistics(
            received=self._counts["received"],
            receipts=self._counts["receipts"],
            syncs=self._counts["syncs"],
            # Keyed by the enum members themselves (a StrEnum is a str).
            discarded={reason: n for reason, n in self._discarded.items()},
            rejected={reason: n for reason, n in self._rejected.items()},
            pending=self._outbox.counts(),
            mailbox_errors=dict(self._mailbox_errors),
            penalties=self._counts["penalties"],
            controls=self._counts["controls"],
            shared_given_up=self._shared.given_up,
            blocked=self._counts["blocked"],
            unstamped=self._discarded[DiscardReason.UNSTAMPED],
            stamps_minted=self._counts["stamps_minted"],
        )

    @property
    def blocked_dropped(self) -> int:
        """Chats from blocked people dropped since start (opened, marked seen, never delivered)."""
        return self._counts["blocked"]

    @property
    def mailboxes(self) -> list[str]:
        """The reachable mailboxes, as last told by the driver (penalised ones included)."""
        return self._calls.reachable

    # --- internals: inbox -------------------------------------------------------------------------

    def _is_known(self, person: bytes) -> bool:
        """Whether ``person`` (a root key) needs no stamp: the node's ``known`` says so (a contact, a
        group member), or we have a conversation with them (we wrote to them, or accepted a chat)."""
        if self._known is not None and self._known(person):
            return True
        try:
            return bool(self.storage.conversation(person, before=None, limit=1))
        except StorageError:  # cannot tell: let it in rather than drop a friend's message unreceipted
            return True

    def _refresh_tags(self, wall_now: float) -> None:
        day = epoch_of(wall_now)
        if day != self._tags_day:
            self._tags_day = day
            self._owned = owned_tags(self.identity.public, wall_now)
            self._tags = frozenset(self._owned)

    # --- internals: outbox ------------------------------------------------------------------------

    def _move(self, moves: Sequence[Move], wall_now: float) -> list[Action]:
        """Apply outbox inputs per ``OUTBOX_TRANSITIONS``; persist and report what changed."""
        planned = self._outbox.plan(moves, wall_now)
        if not planned.changed:
            return []
        try:
            self.storage.outbox_update(list(planned.changed.values()))
        except StorageError as exc:
            return [StoreProblem(error=exc)]  # nothing moved; the same news will come again
        return self._report(planned)

    def _report(self, planned: Moves) -> list[Action]:
        """Tell the app what the persisted ``planned`` moves changed; take back delivered copies."""
        actions: list[Action] = []
        for record in self._outbox.settle(planned):
            actions.append(
                StatusChanged(message_id=record.message_id, status=record.status, error=record.error)
            )
            if record.status in (_S.DELIVERED, _S.READ):
                # The recipient has it: take back the copies stored on mailboxes (best effort, not
                # persisted: a copy missed here goes at its expiry).
                for peer in record.stored_on:
                    self._calls.queue_withdraw(peer, record.message_id)
                    actions += self._calls.pump(peer)
        return actions

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
        moves: list[Move] = []
        shared: list[Action] = []
        for result in results:
            if (told := self._shared.result(peer, result)) is not None:
                shared.append(told)
                continue
            if result.code is StoreCode.STORED and self._receipts.acknowledged(result.message_id):
                continue  # one of our receipts: one mailbox holding it is enough
            record = self._outbox.get(result.message_id)
            if record is None:
                # A receipt we stored for someone; or our message, whose receipt came back while this
                # store was in flight: then the copy just stored is not needed, take it back.
                try:
                    done = (
                        self.storage.outbox_get(result.message_id)
                        if result.code is StoreCode.STORED
                        else None
                    )
                except StorageError:  # the withdraw is only a clean-up: the copy expires anyway
                    done = None
                if done is not None and done.status in (_S.DELIVERED, _S.READ):
                    self._calls.queue_withdraw(peer, result.message_id)
                continue
            if result.code is StoreCode.STORED:
                moves.append((self._outbox.stored_on(record, peer), OutboxInput.MAILBOX_STORED, ""))
                continue
            problem = f"mailbox {peer}: {result.code.name.lower().replace('_', ' ')}: {result.detail}"
            permanent = result.code in PERMANENT_STORE_CODES
            event = OutboxInput.REFUSED_FOR_GOOD if permanent else OutboxInput.REFUSED_FOR_NOW
            moves.append((record, event, problem))
        actions = shared + self._move(moves, wall_now)
        if len(results) != len(response.results) or asked:
            actions += self._penalise(peer, wall_now)
        return actions

    # --- internals: receipts ------------------------------------------------------------------------

    def _send_receipts(
        self, by_sender: dict[PublicIdentity, list[bytes]], kind: ReceiptKind, wall_now: float
    ) -> list[Action]:
        """Seal one receipt per sender (per ``MAX_RECEIPT_IDS`` ids); publish and store each."""
        actions: list[Action] = []
        for sender, ids in by_sender.items():
            preferred = self._preferred_of(sender.ed25519)
            for receipt in self._receipts.seal(sender, kind, ids, preferred=preferred, wall_now=wall_now):
                actions.append(
                    PublishEnvelope(topic=receipt.topic, envelope=receipt.envelope, message_id=None)
                )
                self._calls.queue_store(receipt.tag, receipt.message_id, receipt.envelope, (), preferred)
        actions += self._calls.pump_all()
        return actions

    def _requeue_receipts(self, wall_now: float) -> None:
        """Queue every receipt no mailbox acknowledged (dropping the expired ones) again."""
        for receipt in self._receipts.waiting(wall_now):
            if not self._calls.is_queued(receipt.message_id):
                self._calls.queue_store(
                    receipt.tag, receipt.message_id, receipt.envelope, (), receipt.preferred
                )

    # --- internals: mailboxes -----------------------------------------------------------------------

    def _use_mailboxes(self, wall_now: float, *, replan: bool = False) -> list[Action]:
        """Use the reachable mailboxes that are not penalised (``replan``: plan every pending message
        again, as when a mailbox that held queued stores is set aside)."""
        new, gone = self._calls.refresh(wall_now)
        actions: list[Action] = []
        if new or (replan and gone):
            for record in self._outbox.records():
                actions += self._plan_stores(record, new)
            self._requeue_receipts(wall_now)
            for item in self._shared.unstored(wall_now):
                actions += self._shared.plan(item, self._calls)
        actions += self._start_due_syncs(wall_now)
        actions += self._calls.pump_all()
        return actions

    def _penalise(self, peer: str, wall_now: float) -> list[Action]:
        """``peer`` lied: abandon its sync (nothing deleted) and do not use it for ``MAILBOX_PENALTY``."""
        self._counts["penalties"] += 1
        self._calls.penalise(peer, wall_now)
        return self._use_mailboxes(wall_now, replan=True)

    def _start_due_syncs(self, wall_now: float) -> list[Action]:
        """Start the syncs that are due; a ``StoreProblem`` if what we have cannot be read (the syncs
        not started are tried again at their next time)."""

        def new_session(first: bool) -> SyncSession:
            self._refresh_tags(wall_now)
            tags = self._owned
            # The first sync with a mailbox since we started (or it came back) compares against
            # nothing we have seen: ids it still holds that we accepted come from a sync cut short,
            # maybe by a crash that took their receipt with it (receipts live in memory until a
            # mailbox holds one), and the sender, reaching us only through mailboxes, would wait
            # for it forever. Fetched again they are duplicates, which earn their senders a new
            # receipt. The cost: a mailbox holds nothing of ours after a completed sync, but copies
            # a sender stored on several mailboxes are fetched once more from each after a
            # (re)connection (their senders get one receipt again, per ``RERECEIPT_INTERVAL``).
            have = [] if first else self.storage.seen_items(tags)
            return SyncSession(tags, have, fetch_batch=self.config.fetch_batch)

        try:
            self._calls.start_due_syncs(
                wall_now,
                new_session,
                awaiting=self._outbox.awaiting_receipts(),
                later=self._shared.sessions,
            )
        except StorageError as exc:
            return [StoreProblem(error=exc)]
        return []

    def _synced(self, peer: str, request: SyncRequest, response: Synced, wall_now: float) -> list[Action]:
        sync = self._calls.session(peer, request)
        if sync is None:
            self._discarded[DiscardReason.STALE_REPLY] += 1
            return []
        problem = sync.synced(response)
        if problem is not None:
            self._discarded[problem] += 1
            return self._penalise(peer, wall_now)
        if sync.state is SyncState.DONE:
            return self._end_sync(peer)
        return []

    def _fetched(self, peer: str, request: FetchRequest, response: Fetched, wall_now: float) -> list[Action]:
        sync = self._calls.session(peer, request)
        if sync is not None:
            envelopes, problems = sync.fetched(request, response)
        else:  # abandoned meanwhile: what is good is still ours to accept
            self._refresh_tags(wall_now)
            good, problems = screen_fetched((*self._owned, *self._shared.watched), request, response)
            envelopes = [e for _, e in sorted(good, key=lambda d: d[0])]
        self._discarded.update(problems)
        actions = self.receive(envelopes, wall_now=wall_now)
        if problems:
            return actions + self._penalise(peer, wall_now)  # the good ones are in; the sync is not
        if any(isinstance(a, StoreProblem) for a in actions):
            self._calls.drop_sync(peer)  # nothing deleted: the next sync fetches them again
        elif sync is not None:
            sync.accepted()
            if sync.state is SyncState.DONE:
                actions += self._end_sync(peer)
        return actions

    def _end_sync(self, peer: str) -> list[Action]:
        """``peer``'s session is done: start the round's next (watched tags), or count the round."""

        def watched_session(tags: tuple[bytes, ...]) -> SyncSession:
            # Never deleted, so compared against what we have even on a first sync (fetching a
            # group's whole backlog again at each reconnection would be all waste).
            have = self.storage.seen_items(tags)
            return SyncSession(tags, have, fetch_batch=self.config.fetch_batch, delete=False)

        try:
            if self._calls.end_sync(peer, watched_session):
                self._counts["syncs"] += 1
        except StorageError as exc:
            self._calls.drop_sync(peer)
            return [StoreProblem(error=exc)]
        return []
