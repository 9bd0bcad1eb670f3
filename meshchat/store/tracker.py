"""The outbox half of the ``Messenger``: which sent messages are still retried, when, and how each moves.

``OutboxTracker`` keeps the records in a retrying status (``RETRYING``) in memory with a timer heap of
their next attempts, assigns each conversation's next ``seq``, and turns proven news into new records
per ``OUTBOX_TRANSITIONS`` (``plan``), which the messenger persists (alone, or in the same transaction
as the receipts that proved them) before it ``settle``s them here. It does no I/O beyond reading its
``Storage`` and writing retry times; it sends nothing (the messenger publishes and stores).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from meshchat.errors import StorageError
from meshchat.store.outbox import OUTBOX_TRANSITIONS, RETRYING, OutboxInput, StoreConfig, StoreProblem
from meshchat.store.storage import OutboxRecord, OutboxStatus, Storage

__all__ = ["Move", "Moves", "OutboxTracker"]

#: One piece of news about a sent message: the record, what happened, and the error to show (None:
#: keep the record's error; "": clear it).
Move = tuple[OutboxRecord, OutboxInput, str | None]


@dataclass(slots=True)
class Moves:
    """Outbox records some news changes, before they are persisted."""

    #: The new records, by id.
    changed: dict[bytes, OutboxRecord] = field(default_factory=dict)
    #: Each record's (status, error) before, to report only what the app has not heard.
    before: dict[bytes, tuple[OutboxStatus, str]] = field(default_factory=dict)


class OutboxTracker:
    """See the module docstring."""

    def __init__(self, storage: Storage, config: StoreConfig, *, rng: random.Random) -> None:
        """Resume the retrying records of ``storage``."""
        self._storage = storage
        self._config = config
        self._rng = rng
        self._pending: dict[bytes, OutboxRecord] = {}
        self._timers: list[tuple[float, bytes]] = []
        self._last_seq: dict[bytes, int] = {}
        for record in storage.outbox_pending():
            if record.status in RETRYING:
                self.track(record)

    # --- records ----------------------------------------------------------------------------------

    def next_seq(self, recipient: bytes) -> int:
        """The ``seq`` the next message to ``recipient`` (an Ed25519 key) carries."""
        seq = self._last_seq.get(recipient)
        if seq is None:
            seq = self._storage.last_seq(recipient)
        return seq + 1

    def added(self, record: OutboxRecord) -> None:
        """``record`` was just written to the outbox."""
        self.reserve_seq(record.recipient, record.seq)
        self.track(record)

    def reserve_seq(self, recipient: bytes, seq: int) -> None:
        """``seq`` to ``recipient`` is taken (sealed, its record written now or soon: ``seal_chat``);
        never lowered, so a record written late does not hand its seq out again."""
        self._last_seq[recipient] = max(seq, self._last_seq.get(recipient, seq))

    def get(self, message_id: bytes) -> OutboxRecord | None:
        """The record of a message still being retried."""
        return self._pending.get(message_id)

    def lookup(self, message_id: bytes) -> OutboxRecord | None:
        """The record of any message we sent (retrying or not)."""
        return self._pending.get(message_id) or self._storage.outbox_get(message_id)

    def records(self) -> list[OutboxRecord]:
        """Every record still being retried."""
        return list(self._pending.values())

    def awaiting_receipts(self) -> bool:
        """True while a sent message still waits for its receipt."""
        return bool(self._pending)

    def track(self, record: OutboxRecord) -> None:
        """Keep ``record`` (its latest version) while it retries; forget it once it does not."""
        if record.status not in RETRYING:
            self._pending.pop(record.message_id, None)
            return
        self._pending[record.message_id] = record
        heapq.heappush(self._timers, (record.next_attempt, record.message_id))

    def stored_on(self, record: OutboxRecord, peer: str) -> OutboxRecord:
        """``record`` with ``peer`` among the mailboxes holding it (in memory; persisted by its move)."""
        if peer in record.stored_on:
            return record
        record = record.replace(stored_on=(*record.stored_on, peer))
        self._pending[record.message_id] = record
        return record

    def counts(self) -> dict[str, int]:
        """Records still retrying, by status."""
        return dict(Counter(r.status.value for r in self._pending.values()))

    # --- moves --------------------------------------------------------------------------------------

    def plan(self, moves: Sequence[Move], wall_now: float) -> Moves:
        """The records ``moves`` change (per ``OUTBOX_TRANSITIONS``), not yet persisted."""
        planned = Moves()
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

    def settle(self, planned: Moves) -> list[OutboxRecord]:
        """Track the persisted ``planned`` records; return those whose change the app has not heard."""
        news: list[OutboxRecord] = []
        for record in planned.changed.values():
            self.track(record)
            if (record.status, record.error) != planned.before[record.message_id]:
                news.append(record)
        return news

    # --- retries ------------------------------------------------------------------------------------

    def due(self, wall_now: float) -> tuple[list[OutboxRecord], list[Move], StoreProblem | None]:
        """Records to try again now (their next attempt persisted), the expired ones as moves, and a
        storage failure if the retry times could not be written (then retried soon anyway)."""
        due_by_id: dict[bytes, OutboxRecord] = {}  # a record can sit in the heap twice at one time
        while self._timers and self._timers[0][0] <= wall_now:
            when, mid = heapq.heappop(self._timers)
            record = self._pending.get(mid)
            if record is not None and record.next_attempt == when:
                due_by_id[mid] = record
        due = list(due_by_id.values())
        expired: list[Move] = []
        retried: list[OutboxRecord] = []
        config = self._config
        for record in due:
            if wall_now > record.expiry:
                expired.append((record, OutboxInput.EXPIRY_PASSED, None))
                continue
            attempts = record.attempts + 1
            cap = config.stored_retry_max if record.stored_on else config.retry_max
            wait = min(cap, config.retry_initial * 2**attempts)
            retry = record.replace(
                attempts=attempts,
                next_attempt=min(wall_now + wait * (1 + 0.1 * self._rng.random()), record.expiry + 1.0),
                updated_at=wall_now,
            )
            retried.append(retry)
        problem = None
        if retried:
            try:
                self._storage.outbox_update(retried)
            except StorageError as exc:
                problem = StoreProblem(error=exc)
                retried = [r.replace(next_attempt=wall_now + config.retry_initial) for r in due]
            for record in retried:
                self.track(record)
        return retried, expired, problem

    def next_deadline(self) -> float | None:
        """The next retry's time."""
        return self._timers[0][0] if self._timers else None
