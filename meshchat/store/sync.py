"""One sync of a recipient with one mailbox, as a small state machine: reconcile, fetch, delete.

``SyncSession`` holds what the recipient learns from a mailbox about its own inbox tags and decides the
next request; ``meshchat.store.messenger`` runs one per mailbox, sends the requests, accepts the
envelopes this hands back, and tells it when they are safely stored. Its states, as a table:

==============  =====================================  ==========================================
state           on                                     next
==============  =====================================  ==========================================
RECONCILING     ``synced`` with more to compare        RECONCILING (another ``SyncRequest``)
RECONCILING     ``synced``, done comparing             FETCHING, or DELETING / DONE (nothing new)
RECONCILING     ``synced``: garbage, or too many       FAILED (the mailbox lied)
                rounds
FETCHING        ``fetched``                            ACCEPTING, or FAILED (the mailbox lied)
ACCEPTING       ``accepted``                           FETCHING while ids remain, then DELETING
DELETING        ``deleted`` (the mailbox's answer)     DONE
==============  =====================================  ==========================================

``SYNC_TRANSITIONS`` is that table as ``(state, input)`` pairs; any other input raises
``InvalidTransition`` naming both (the caller's mistake: the messenger only feeds a session the answer
to the request it took from it). A fault of the mailbox is not an exception but the FAILED state and
a ``DiscardReason`` per bad item, so a lying mailbox costs only itself; FAILED, a failed call or a
storage failure abandons the session without a delete, so the next sync fetches again what was not
stored. ``DONE`` without a delete when the mailbox held nothing for us, and always for a session made with
``delete=False`` (watched group tags: what a group's member fetched stays for the other members).

Order: ids to fetch come in ``(expiry, id)`` order; a fetched batch's envelopes that share its last
expiry wait for the next batch (which may hold more of them), so messages one sender sent with the
same TTL reach the application in the sender's order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import Enum

from meshchat.errors import DecodeError, InvalidTransition
from meshchat.store.protocol import (
    DeleteRequest,
    Fetched,
    FetchRequest,
    MailboxRequest,
    Synced,
    SyncRequest,
)
from meshchat.store.reasons import DiscardReason
from meshchat.store.reconcile import MAX_IDS, Reconciler, decode_message, encode_message
from meshchat.wire import decode_envelope, message_id

__all__ = [
    "MAX_RECONCILE_ROUNDS",
    "SYNC_TRANSITIONS",
    "SyncInput",
    "SyncSession",
    "SyncState",
    "screen_fetched",
]

#: Reconciliation rounds one sync may take. An honest mailbox needs a handful (each round splits a
#: differing range 16 ways; a full frame carries ~8,000 ids, so even 250,000 new ids fit); a mailbox
#: that keeps answering with new ranges is cut off here. Also bounds what it can make us remember:
#: at most ``MAX_RECONCILE_ROUNDS * MAX_IDS`` ids to fetch.
MAX_RECONCILE_ROUNDS = 64
#: Ids one sync may be told to fetch (see ``MAX_RECONCILE_ROUNDS``).
MAX_NEED = MAX_RECONCILE_ROUNDS * MAX_IDS


class SyncState(Enum):
    """Where a sync is."""

    #: Comparing ids with the mailbox.
    RECONCILING = "reconciling"
    #: Fetching what the mailbox has and we lack.
    FETCHING = "fetching"
    #: Fetched envelopes handed out; waiting until they are stored.
    ACCEPTING = "accepting"
    #: Asking the mailbox to drop what it held when the sync began.
    DELETING = "deleting"
    #: Finished.
    DONE = "done"
    #: The mailbox lied: abandon the session (nothing deleted).
    FAILED = "failed"


class SyncInput(Enum):
    """What a session is told."""

    #: The mailbox's reconciliation reply.
    SYNCED = "synced"
    #: The mailbox's fetched envelopes.
    FETCHED = "fetched"
    #: What ``fetched`` returned is stored.
    ACCEPTED = "accepted"
    #: The mailbox deleted what it held when the sync began.
    DELETED = "deleted"


_St, _In = SyncState, SyncInput
#: ``(state, input) -> states it may lead to``; any other pair raises ``InvalidTransition``.
SYNC_TRANSITIONS: dict[tuple[SyncState, SyncInput], frozenset[SyncState]] = {
    (_St.RECONCILING, _In.SYNCED): frozenset(
        {_St.RECONCILING, _St.FETCHING, _St.DELETING, _St.DONE, _St.FAILED}
    ),
    (_St.FETCHING, _In.FETCHED): frozenset({_St.ACCEPTING, _St.FAILED}),
    (_St.ACCEPTING, _In.ACCEPTED): frozenset({_St.FETCHING, _St.DELETING, _St.DONE}),
    (_St.DELETING, _In.DELETED): frozenset({_St.DONE}),
}


def screen_fetched(
    tags: Iterable[bytes], request: FetchRequest, response: Fetched
) -> tuple[list[tuple[int, bytes]], Counter[DiscardReason]]:
    """The good envelopes of a fetch answer as ``(expiry, envelope)``, and the bad items by reason.

    Good: asked for (once), an envelope, addressed to one of ``tags``. Anything else is the mailbox's
    lie (it chose the ids during reconciliation, and an id is the hash of the bytes).
    """
    wanted = set(tags)
    asked = set(request.message_ids)
    good: list[tuple[int, bytes]] = []
    problems: Counter[DiscardReason] = Counter()
    for data in response.envelopes:
        mid = message_id(data)
        if mid not in asked:
            problems[DiscardReason.UNASKED] += 1
            continue
        asked.discard(mid)  # a second copy is unasked
        try:
            envelope = decode_envelope(data)
        except DecodeError:
            problems[DiscardReason.FETCHED_MALFORMED] += 1
            continue
        if envelope.inbox_tag not in wanted:
            problems[DiscardReason.FETCHED_WRONG_TAG] += 1
            continue
        good.append((envelope.expiry, data))
    return good, problems


class SyncSession:
    """See the module docstring."""

    def __init__(
        self,
        tags: tuple[bytes, ...],
        seen: Iterable[tuple[int, bytes]],
        *,
        fetch_batch: int,
        delete: bool = True,
    ) -> None:
        """Sync ``tags`` against our ``seen`` items ``(expiry, id)``, fetching ``fetch_batch`` at a time;
        then (``delete``) ask the mailbox to drop what it held for them."""
        self.tags = tags
        self.delete = delete
        self.state = SyncState.RECONCILING
        #: The request taken and not answered yet (the messenger matches answers against it).
        self.awaiting: MailboxRequest | None = None
        self._fetch_batch = fetch_batch
        self._reconciler = Reconciler(seen)
        self._rounds = 0
        self._need: list[bytes] = []
        self._generation: int | None = None
        self._held = 0
        self._carry: list[tuple[int, bytes]] = []
        self._next: MailboxRequest | None = SyncRequest(
            tags=tags, reconcile=encode_message(self._reconciler.initiate())
        )

    def take_request(self) -> MailboxRequest | None:
        """The next request to send, once (None: waiting for an answer, or done)."""
        request, self._next = self._next, None
        if request is not None:
            self.awaiting = request
        return request

    def synced(self, response: Synced) -> DiscardReason | None:
        """The mailbox's reconciliation reply; the mailbox's fault if it is garbage (then FAILED)."""
        self._enter(SyncInput.SYNCED)
        self.awaiting = None
        self._rounds += 1
        try:
            next_message, _have, need = self._reconciler.reconcile(decode_message(response.reconcile))
        except DecodeError:
            self.state = SyncState.FAILED
            return DiscardReason.BAD_RECONCILE
        if self._generation is None:
            self._generation, self._held = response.generation, response.held
        self._need += need
        if next_message is not None:
            if self._rounds >= MAX_RECONCILE_ROUNDS or len(self._need) > MAX_NEED:
                self.state = SyncState.FAILED
                return DiscardReason.ENDLESS_RECONCILE
            self._next = SyncRequest(tags=self.tags, reconcile=encode_message(next_message))
        else:
            self._advance()
        return None

    def fetched(self, request: FetchRequest, response: Fetched) -> tuple[list[bytes], Counter[DiscardReason]]:
        """The envelopes to accept now, in order, and the mailbox's bad items by reason.

        With bad items the session FAILED: every good envelope is returned (none held back for order),
        and the messenger abandons the session after storing them.
        """
        self._enter(SyncInput.FETCHED)
        if request is not self.awaiting:
            raise InvalidTransition(
                machine="SyncSession", state=self.state.name, event="fetched (for another request)"
            )
        self.awaiting = None
        good, problems = screen_fetched(self.tags, request, response)
        dated = self._carry + good
        self._carry = []
        if problems:
            self.state = SyncState.FAILED
            return [e for _, e in sorted(dated, key=lambda d: d[0])], problems
        self.state = SyncState.ACCEPTING
        # A mailbox answers a fetch with what fits one frame: ask again for the rest, as long as each
        # answer brings something (an id it no longer holds, expired meanwhile, is not asked forever).
        if response.envelopes:
            returned = {message_id(data) for data in response.envelopes}
            self._need[:0] = [mid for mid in request.message_ids if mid not in returned]
        if self._need and dated:
            last = max(expiry for expiry, _ in dated)
            self._carry = [d for d in dated if d[0] == last]
            dated = [d for d in dated if d[0] != last]
        return [e for _, e in dated], problems

    def accepted(self) -> None:
        """What ``fetched`` returned is stored: go on."""
        self._enter(SyncInput.ACCEPTED)
        self._advance()

    def deleted(self) -> None:
        """The mailbox answered the delete: done."""
        self._enter(SyncInput.DELETED)
        self.awaiting = None
        self.state = SyncState.DONE

    def _enter(self, event: SyncInput) -> None:
        if (self.state, event) not in SYNC_TRANSITIONS:
            raise InvalidTransition(machine="SyncSession", state=self.state.name, event=event.value)

    def _advance(self) -> None:
        if self._need:
            self.state = SyncState.FETCHING
            batch, self._need = self._need[: self._fetch_batch], self._need[self._fetch_batch :]
            self._next = FetchRequest(message_ids=tuple(batch))
        elif self._held and self.delete:
            assert self._generation is not None
            self.state = SyncState.DELETING
            self._next = DeleteRequest(tags=self.tags, generation=self._generation)
        else:  # the mailbox held nothing for us (or what it holds is shared): no delete to ask for
            self.state = SyncState.DONE
