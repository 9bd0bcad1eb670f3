"""One sync of a recipient with one mailbox, as a small state machine: reconcile, fetch, delete.

``SyncSession`` holds what the recipient learns from a mailbox about its own inbox tags and decides the
next request; ``meshchat.store.messenger`` runs one per mailbox, sends the requests, accepts the
envelopes this hands back, and tells it when they are safely stored. Its states, as a table:

==============  =====================================  ==========================================
state           on                                     next
==============  =====================================  ==========================================
RECONCILING     ``synced`` with more to compare        RECONCILING (another ``SyncRequest``)
RECONCILING     ``synced``, done comparing             FETCHING, or DELETING / DONE (nothing new)
FETCHING        ``fetched`` then ``accepted``          FETCHING while ids remain, then DELETING
DELETING        the mailbox's ``Deleted``              DONE (the messenger ends the session)
==============  =====================================  ==========================================

Anything else (a bad answer, a failed call, a storage failure) abandons the session without a delete,
so the next sync fetches again what was not stored. ``DONE`` without a delete when the mailbox held
nothing for us.

Order: ids to fetch come in ``(expiry, id)`` order; a fetched batch's envelopes that share its last
expiry wait for the next batch (which may hold more of them), so messages one sender sent with the
same TTL reach the application in the sender's order.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from meshchat.store.protocol import (
    DeleteRequest,
    Fetched,
    FetchRequest,
    MailboxRequest,
    Synced,
    SyncRequest,
)
from meshchat.store.reconcile import Reconciler, decode_message, encode_message
from meshchat.wire import decode_envelope, message_id

__all__ = ["SyncSession", "SyncState"]


class SyncState(Enum):
    """Where a sync is."""

    #: Comparing ids with the mailbox.
    RECONCILING = "reconciling"
    #: Fetching what the mailbox has and we lack.
    FETCHING = "fetching"
    #: Asking the mailbox to drop what it held when the sync began.
    DELETING = "deleting"
    #: Finished.
    DONE = "done"


class SyncSession:
    """See the module docstring."""

    def __init__(
        self, tags: tuple[bytes, ...], seen: Iterable[tuple[int, bytes]], *, fetch_batch: int
    ) -> None:
        """Sync ``tags`` against our ``seen`` items ``(expiry, id)``, fetching ``fetch_batch`` at a time."""
        self.tags = tags
        self.state = SyncState.RECONCILING
        self._fetch_batch = fetch_batch
        self._reconciler = Reconciler(seen)
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
        return request

    def synced(self, response: Synced) -> None:
        """The mailbox's reconciliation reply; ``DecodeError`` if it is garbage."""
        if self.state is not SyncState.RECONCILING:
            return
        if self._generation is None:
            self._generation, self._held = response.generation, response.held
        next_message, _have, need = self._reconciler.reconcile(decode_message(response.reconcile))
        self._need += need
        if next_message is not None:
            self._next = SyncRequest(tags=self.tags, reconcile=encode_message(next_message))
        else:
            self._advance()

    def fetched(self, request: FetchRequest, response: Fetched) -> tuple[list[bytes], int]:
        """The envelopes to accept now, in order, and how many the mailbox sent without being asked."""
        asked = set(request.message_ids)
        envelopes = [e for e in response.envelopes if message_id(e) in asked]
        unasked = len(response.envelopes) - len(envelopes)
        dated = self._carry + [(decode_envelope(e).expiry, e) for e in envelopes]
        self._carry = []
        if self._need and dated:
            last = max(expiry for expiry, _ in dated)
            self._carry = [d for d in dated if d[0] == last]
            dated = [d for d in dated if d[0] != last]
        return [e for _, e in dated], unasked

    def accepted(self) -> None:
        """What ``fetched`` returned is stored: go on."""
        self._advance()

    def _advance(self) -> None:
        if self._need:
            self.state = SyncState.FETCHING
            batch, self._need = self._need[: self._fetch_batch], self._need[self._fetch_batch :]
            self._next = FetchRequest(message_ids=tuple(batch))
        elif self._held:
            assert self._generation is not None
            self.state = SyncState.DELETING
            self._next = DeleteRequest(tags=self.tags, generation=self._generation)
        else:  # the mailbox held nothing for us: no delete to ask for
            self.state = SyncState.DONE
