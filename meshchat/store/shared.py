"""What the ``Messenger`` keeps for shared (group) tags: the tags it watches, and the shared envelopes
it stores on mailboxes for every member. Sans-IO, no storage.

**Watched tags.** A group's envelopes are addressed to a tag derived from the secret group id and the
day (``meshchat.groups``), not to one member. The messenger follows the tags the groups core gives it
(``watch``): an envelope for one of them is not opened but handed on whole (``GroupEnvelopes``), and
every sync with a mailbox reconciles and fetches them too, in sessions of at most ``MAX_SYNC_TAGS``
tags (``sessions``), never deleting them: the first member to sync must not take them from the others
(they go at their expiry).

**Shared envelopes.** ``store_shared`` puts one group envelope on ``mailbox_copies`` mailboxes; until a
mailbox has stored it, it is queued again whenever the mailboxes change (``unstored``). Kept until its
expiry, at most ``MAX_SHARED_PENDING`` (the oldest is given up first, counted in ``given_up``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field

from meshchat.store.calls import MailboxCalls
from meshchat.store.outbox import Action, EnvelopeRefused, EnvelopeStored
from meshchat.store.protocol import MAX_SYNC_TAGS, PERMANENT_STORE_CODES, StoreCode, StoreResult
from meshchat.wire import INBOX_TAG_SIZE, decode_envelope, message_id

__all__ = ["MAX_SHARED_PENDING", "MAX_WATCHED_TAGS", "SharedEnvelope", "SharedTags"]

#: Tags one messenger watches: 256 groups x 9 days (yesterday to a week ahead, as the groups core
#: follows them). Each costs a share of a sync session and a set lookup per envelope received.
MAX_WATCHED_TAGS = 2_400
#: Shared envelopes remembered until a mailbox stores them (or they expire): a member sending a
#: burst while no mailbox is reachable keeps its latest thousand, and gossip carries the rest.
MAX_SHARED_PENDING = 1_000


@dataclass(slots=True)
class SharedEnvelope:
    """One shared envelope the messenger stores on mailboxes."""

    #: The tag it is addressed to (rendezvous order of the mailboxes).
    tag: bytes
    #: Its id.
    message_id: bytes
    #: The envelope bytes.
    envelope: bytes
    #: Its expiry, unix seconds: given up then.
    expiry: int
    #: The mailboxes that acknowledged storing it.
    stored_on: list[str] = field(default_factory=list)
    #: True once a mailbox refused it for good (too large, malformed, bad expiry): never retried.
    refused_for_good: bool = False


class SharedTags:
    """See the module docstring."""

    def __init__(self) -> None:
        """Nothing watched, nothing to store."""
        #: The tags followed besides our own inbox tags.
        self.watched: frozenset[bytes] = frozenset()
        #: The watched tags in sync sessions of at most ``MAX_SYNC_TAGS``, in tag order.
        self.sessions: tuple[tuple[bytes, ...], ...] = ()
        #: Shared envelopes dropped unstored because ``MAX_SHARED_PENDING`` newer ones came.
        self.given_up = 0
        self._envelopes: OrderedDict[bytes, SharedEnvelope] = OrderedDict()

    def watch(self, tags: Collection[bytes]) -> None:
        """Follow ``tags`` (replacing the set): ``ValueError`` beyond ``MAX_WATCHED_TAGS`` or for a tag
        that is not ``INBOX_TAG_SIZE`` bytes."""
        wanted = frozenset(tags)
        if len(wanted) > MAX_WATCHED_TAGS:
            raise ValueError(f"at most {MAX_WATCHED_TAGS} watched tags, not {len(wanted)}")
        if any(type(tag) is not bytes or len(tag) != INBOX_TAG_SIZE for tag in wanted):
            raise ValueError(f"a watched tag is {INBOX_TAG_SIZE} bytes")
        self.watched = wanted
        ordered = sorted(wanted)
        self.sessions = tuple(
            tuple(ordered[i : i + MAX_SYNC_TAGS]) for i in range(0, len(ordered), MAX_SYNC_TAGS)
        )

    # --- shared envelopes ---------------------------------------------------------------------------

    def add(self, tag: bytes, mid: bytes, envelope: bytes) -> SharedEnvelope:
        """Remember a shared envelope (a known id keeps its first record, which is returned).
        ``ValueError`` if ``mid`` is not ``envelope``'s id; ``DecodeError`` if it is no envelope."""
        if message_id(envelope) != mid:
            raise ValueError("message_id is not the envelope's id")
        known = self._envelopes.get(mid)
        if known is not None:
            return known
        item = SharedEnvelope(
            tag=tag, message_id=mid, envelope=envelope, expiry=decode_envelope(envelope).expiry
        )
        self._envelopes[mid] = item
        while len(self._envelopes) > MAX_SHARED_PENDING:
            _, oldest = self._envelopes.popitem(last=False)
            if not oldest.stored_on:
                self.given_up += 1
        return item

    def plan(self, item: SharedEnvelope, calls: MailboxCalls) -> list[Action]:
        """Queue ``item`` for ``mailbox_copies`` mailboxes (rendezvous order for its tag) unless one
        holds it, it was refused for good, or it is queued already; start calls to idle ones."""
        if item.stored_on or item.refused_for_good or calls.is_queued(item.message_id):
            return []
        peers = calls.queue_store(item.tag, item.message_id, item.envelope)
        return [a for peer in peers for a in calls.pump(peer)]

    def result(self, peer: str, result: StoreResult) -> Action | None:
        """What mailbox ``peer``'s ``result`` says of a shared envelope (None: not one of ours)."""
        item = self._envelopes.get(result.message_id)
        if item is None:
            return None
        if result.code is StoreCode.STORED:
            if peer not in item.stored_on:
                item.stored_on.append(peer)
            return EnvelopeStored(message_id=item.message_id, peer=peer)
        if result.code in PERMANENT_STORE_CODES:
            item.refused_for_good = True
        return EnvelopeRefused(message_id=item.message_id, peer=peer, code=result.code, detail=result.detail)

    def unstored(self, wall_now: float) -> list[SharedEnvelope]:
        """The shared envelopes no mailbox holds yet and that may still be stored (expired ones go)."""
        for mid, item in list(self._envelopes.items()):
            if item.expiry < wall_now:
                del self._envelopes[mid]
        return [i for i in self._envelopes.values() if not i.stored_on and not i.refused_for_good]

    def __len__(self) -> int:
        """Shared envelopes remembered."""
        return len(self._envelopes)
