"""The mailbox half of the ``Messenger``: which mailboxes to use, what to ask each, and when to sync.

``MailboxCalls`` keeps, per mailbox, one call in flight at most, and the queues behind it: the running
``SyncSession`` first (a sync round: our own tags, then the watched tags' sessions, one after the
other), then envelopes to store (``queue_store``: a recipient's own mailboxes first,
then rendezvous order), then ids to withdraw. It schedules syncs: every ``sync_interval``, at once
with a mailbox that becomes reachable, and while sent messages await receipts every
``receipt_sync_interval``, doubling up to ``receipt_sync_max`` for ``receipt_sync_window`` after a
send, a mailbox appearing or a recipient coming back, up to ``sync_interval`` after that. A mailbox
caught lying is ``penalise``d: set aside for ``MAILBOX_PENALTY``.
It interprets no answer (the messenger does) and touches no storage.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from meshchat.store.outbox import CallMailbox, StoreConfig
from meshchat.store.protocol import MAX_FETCH_IDS, MailboxRequest, StoreRequest, WithdrawRequest, batches
from meshchat.store.sync import SyncSession

__all__ = ["MAILBOX_PENALTY", "MAX_PENALISED", "MailboxCalls"]

#: Seconds a mailbox caught lying (a fetched item that is not an envelope it was asked for, a garbage
#: or endless reconciliation, store results for what it was not sent) is not used: long enough that
#: a hostile mailbox costs us one call per ten minutes, short enough that one with a passing fault
#: (a corrupted disk it has since repaired) is used again the same hour.
MAILBOX_PENALTY = 600.0
#: Penalised mailboxes remembered (bounded: the oldest penalty is forgiven first).
MAX_PENALISED = 1024


class MailboxCalls:
    """See the module docstring."""

    def __init__(self, config: StoreConfig) -> None:
        """No mailbox known yet."""
        self._config = config
        # The driver's view of reachable mailboxes; ``usable`` leaves out the penalised ones.
        self._reachable: list[str] = []
        self._usable: list[str] = []
        # Mailboxes caught lying, until when they are not used (bounded: ``MAX_PENALISED``).
        self._penalised: OrderedDict[str, float] = OrderedDict()
        self._to_store: dict[str, OrderedDict[bytes, bytes]] = {}
        self._to_withdraw: dict[str, dict[bytes, None]] = {}
        self._busy: dict[str, MailboxRequest] = {}
        self._syncs: dict[str, SyncSession] = {}
        # The watched tags' sessions still to run in each mailbox's sync round, by tags (made when
        # their turn comes, so their "have" side includes what the sessions before accepted).
        self._later: dict[str, list[tuple[bytes, ...]]] = {}
        self._next_sync: dict[str, float] = {}
        # Each usable mailbox's next wait while messages await receipts (doubling up to sync_interval).
        self._receipt_wait: dict[str, float] = {}
        # Until when syncs stay at most ``receipt_sync_max`` apart while receipts are awaited: a send,
        # a mailbox (re)appearing or a recipient coming back opens ``receipt_sync_window`` of them.
        self._quick_until = -math.inf
        # Usable mailboxes a sync completed with since this core started or they (re)appeared; the
        # first sync with any other compares against nothing (``start_due_syncs``). Bounded by
        # ``_usable``: ``refresh`` forgets the gone ones.
        self._compared: set[str] = set()

    @property
    def reachable(self) -> list[str]:
        """The mailboxes the driver reaches (penalised ones included)."""
        return list(self._reachable)

    @property
    def usable(self) -> list[str]:
        """The reachable mailboxes not penalised."""
        return list(self._usable)

    # --- which mailboxes ----------------------------------------------------------------------------

    def set_reachable(self, peers: Iterable[str]) -> None:
        """The driver's view (``refresh`` applies it)."""
        self._reachable = list(dict.fromkeys(peers))

    def refresh(self, wall_now: float) -> tuple[list[str], set[str]]:
        """Use the reachable mailboxes whose penalty is over; return the new ones and the gone ones
        (whose queues and syncs are dropped; new ones are synced with at once)."""
        for peer, until in list(self._penalised.items()):
            if until <= wall_now:
                del self._penalised[peer]
        wanted = [p for p in self._reachable if p not in self._penalised]
        gone = set(self._usable) - set(wanted)
        for peer in gone:
            self._compared.discard(peer)
            self._to_store.pop(peer, None)
            self._to_withdraw.pop(peer, None)
            self.drop_sync(peer)
            self._next_sync.pop(peer, None)
            self._receipt_wait.pop(peer, None)
        new = [p for p in wanted if p not in self._usable]
        self._usable = wanted
        if new:
            self._quick_until = wall_now + self._config.receipt_sync_window
        for peer in new:
            self._next_sync[peer] = wall_now
            self._receipt_wait.pop(peer, None)  # starts again at receipt_sync_interval
        return new, gone

    def penalise(self, peer: str, wall_now: float) -> None:
        """``peer`` lied: abandon its sync (nothing deleted); ``refresh`` then sets it aside."""
        self._penalised[peer] = wall_now + MAILBOX_PENALTY
        self._penalised.move_to_end(peer)
        while len(self._penalised) > MAX_PENALISED:
            self._penalised.popitem(last=False)
        self.drop_sync(peer)

    def penalty_over(self, wall_now: float) -> bool:
        """True if some penalty has run out (``refresh`` takes the mailbox back)."""
        return any(until <= wall_now for until in self._penalised.values())

    def ranked(self, tag: bytes) -> list[str]:
        """Mailboxes in rendezvous order for ``tag``: every node that knows the same set ranks alike."""
        return sorted(self._usable, key=lambda p: hashlib.blake2b(tag + p.encode(), digest_size=8).digest())

    # --- what to ask ----------------------------------------------------------------------------------

    def queue_store(
        self,
        tag: bytes,
        mid: bytes,
        envelope: bytes,
        stored_on: Sequence[str] = (),
        preferred: Sequence[str] = (),
        *,
        also: Sequence[str] = (),
    ) -> list[str]:
        """Queue an envelope for the mailboxes it still needs; return them. One of the recipient's own
        (``preferred``, from their invite) comes first while none holds it; the rest in rendezvous
        order up to ``mailbox_copies``; and every mailbox in ``also`` that does not hold it yet.
        Only copies on mailboxes still in view count: a mailbox that went away (for good, or behind
        a partition) holds a copy nobody here can reach, so a retry stores on the ones left (the
        ``remove-mailboxes`` experiment: 99.80 % -> 100 %)."""
        chosen: list[str] = []
        reachable = [p for p in preferred if p in self._usable]
        if reachable and not any(p in stored_on for p in preferred):
            chosen.append(reachable[0])
        held = sum(1 for p in stored_on if p in self._usable)
        missing = self._config.mailbox_copies - held - len(chosen)
        for peer in self.ranked(tag):
            if missing <= 0:
                break
            if peer in stored_on or peer in chosen:
                continue
            chosen.append(peer)
            missing -= 1
        chosen += [p for p in also if p in self._usable and p not in stored_on and p not in chosen]
        for peer in chosen:
            self._to_store.setdefault(peer, OrderedDict())[mid] = envelope
        return chosen

    def is_queued(self, mid: bytes) -> bool:
        """True if ``mid`` waits to be stored on some mailbox."""
        return any(mid in queue for queue in self._to_store.values())

    def queue_withdraw(self, peer: str, mid: bytes) -> None:
        """Ask ``peer`` to drop the copy of ``mid`` we stored there."""
        self._to_withdraw.setdefault(peer, {})[mid] = None

    def pump(self, peer: str) -> list[CallMailbox]:
        """Start the next call to ``peer`` if none is in flight: sync steps first, then stores."""
        if peer in self._busy or peer not in self._usable:
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

    def pump_all(self) -> list[CallMailbox]:
        """``pump`` every usable mailbox."""
        return [call for peer in self._usable for call in self.pump(peer)]

    def answered(self, peer: str, request: MailboxRequest) -> None:
        """``peer`` answered (or failed) ``request``: the next call may start."""
        if self._busy.get(peer) is request:
            del self._busy[peer]

    def failed(self, peer: str, request: MailboxRequest, wall_now: float) -> None:
        """The call failed: abandon the sync and the queued stores (planned again at their retry)."""
        self.answered(peer, request)
        self.drop_sync(peer)
        self._to_store.pop(peer, None)
        if peer in self._usable:  # (one that left has no next sync)
            self._next_sync[peer] = wall_now + self._config.sync_interval

    # --- syncs ------------------------------------------------------------------------------------------

    def start_due_syncs(
        self,
        wall_now: float,
        new_session: Callable[[bool], SyncSession],
        *,
        awaiting: bool,
        later: Sequence[tuple[bytes, ...]] = (),
    ) -> None:
        """Start a sync round with each usable mailbox whose time has come (``awaiting``: sent
        messages wait for receipts, so the next one comes sooner). ``new_session(first)``: our own
        tags' session, ``first`` until a sync with that mailbox completed since this core started or
        the mailbox (re)appeared; ``later``: the tags of the sessions that follow it (``end_sync``)."""
        for peer in self._usable:
            if peer in self._syncs or self._next_sync.get(peer, wall_now) > wall_now:
                continue
            self._next_sync[peer] = wall_now + self._sync_wait(peer, awaiting, wall_now)
            self._syncs[peer] = new_session(peer not in self._compared)
            self._later[peer] = list(later)

    def _sync_wait(self, peer: str, awaiting: bool, wall_now: float) -> float:
        """Seconds until the next sync with ``peer``: short while messages await receipts (doubling up
        to ``receipt_sync_max`` within the quick window, up to ``sync_interval`` after it)."""
        config = self._config
        if not awaiting:
            self._receipt_wait.pop(peer, None)
            return config.sync_interval
        ceiling = config.receipt_sync_max if wall_now < self._quick_until else config.sync_interval
        ceiling = min(ceiling, config.sync_interval)
        wait = min(self._receipt_wait.get(peer, config.receipt_sync_interval), ceiling)
        self._receipt_wait[peer] = min(2 * wait, ceiling)
        return wait

    def hurry(self, wall_now: float) -> None:
        """A receipt may come soon: sync every mailbox within ``receipt_sync_interval``, then back off."""
        soon = min(self._config.receipt_sync_interval, self._config.sync_interval)
        self._quick_until = wall_now + self._config.receipt_sync_window
        for peer in self._usable:
            self._receipt_wait.pop(peer, None)
            if self._next_sync.get(peer, math.inf) > wall_now + soon:
                self._next_sync[peer] = wall_now + soon

    def due_now(self, wall_now: float) -> None:
        """Every usable mailbox not syncing is due now (no quicker pace afterwards)."""
        for peer in self._usable:
            self._next_sync[peer] = min(self._next_sync.get(peer, wall_now), wall_now)

    def sync_all_now(self, wall_now: float) -> None:
        """Every usable mailbox is due now."""
        self._quick_until = wall_now + self._config.receipt_sync_window
        for peer in self._usable:
            self._next_sync[peer] = wall_now

    def session(self, peer: str, request: MailboxRequest) -> SyncSession | None:
        """``peer``'s sync if ``request`` is the step it waits for (None: abandoned, or a late answer)."""
        sync = self._syncs.get(peer)
        return sync if sync is not None and sync.awaiting is request else None

    def drop_sync(self, peer: str) -> None:
        """Abandon ``peer``'s sync round (nothing deleted: the next sync fetches again)."""
        self._syncs.pop(peer, None)
        self._later.pop(peer, None)

    def end_sync(self, peer: str, next_session: Callable[[tuple[bytes, ...]], SyncSession]) -> bool:
        """``peer``'s current session is complete: start the round's next one (``next_session(tags)``;
        its ``StorageError`` abandons the round); True if that ended a round."""
        if self._syncs.pop(peer, None) is None:
            return False
        if peer in self._usable:
            self._compared.add(peer)  # our own tags' session, the first of the round, completed
        later = self._later.get(peer)
        if later:
            self._syncs[peer] = next_session(later.pop(0))
            return False
        self._later.pop(peer, None)
        return True

    def next_deadline(self) -> float | None:
        """The next sync due (not running) or penalty to end."""
        candidates = [t for p, t in self._next_sync.items() if p not in self._syncs]
        candidates += [until for peer, until in self._penalised.items() if peer in self._reachable]
        return min(candidates) if candidates else None
