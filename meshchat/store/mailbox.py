"""A mailbox: envelopes held for recipients who are offline, with quotas, until they come for them.

``MailboxCore`` answers ``/meshchat/mailbox/1.0.0`` requests (``meshchat.store.protocol``) from a
``Storage``; it does no I/O of its own and takes the wall time from its caller. What it guarantees:

* **It cannot read, alter or forge what it holds.** Envelopes are sealed to their recipients; it
  checks only their public header (structure, size, expiry) and hands back the bytes unchanged, and a
  recipient verifies each one's signature inside.
* **Nothing is dropped silently.** Every envelope in a store request gets a ``StoreResult``: stored, or
  why not (too large, tag or peer over quota, disk budget used up, bad expiry, malformed, disk
  failure). Every refusal is counted in ``statistics``.
* **Only the owner of an inbox tag lists, fetches or deletes its envelopes.** The requester's PeerId
  (authenticated by the secure channel; it *is* the recipient's public key) must derive every tag it
  deletes, for any day within the longest TTL; a sync naming other tags lists only the *group*
  envelopes (``EnvelopeKind.GROUP``) held for them, and a fetch returns a sealed envelope only to its
  tag's owner. A group's tag is derived from its secret id: knowing it is the capability, and what is
  under it is encrypted for the members, who each fetch it (none deletes it: it goes at its expiry).
* Items go when they expire, when their recipient, after a sync, deletes what it has received, or
  when their sender, holding the recipient's receipt, withdraws them (only what that peer stored).

* **Many identities cannot crowd out the people a mailbox is for.** PeerIds cost nothing, so a
  per-peer quota alone lets eight fresh identities fill the whole budget. A mailbox that knows its
  ``owner`` (and, through ``set_friends``, the owner's contacts) counts every envelope addressed to
  one of their inbox tags, or stored by one of them, as *theirs*; all other envelopes (strangers')
  together may fill only ``STRANGER_SHARE`` of the budget, each stranger still within its per-peer
  quota; and strangers (as senders) fill only ``STRANGER_SHARE`` of any one inbox's quota, so a flood
  addressed to the owner leaves room for its contacts' messages. A mailbox with no owner (a public
  volunteer) has no such reserve.

* **Strangers may be asked to pay, and nobody may store too fast.** With ``MailboxLimits.stamp_cost``
  a sealed envelope that is a stranger's (neither for nor from the owner or a contact; with no owner,
  one not stored by a person who registered here, i.e. put their prekeys here) is stored only with a
  stamp worth that many bits (``meshchat.crypto.stamps``; one hash to check); group envelopes need
  none (their members store them for each other). Every store is also rate-limited per sending peer
  and per inbox tag (token buckets, ``TokenBuckets``, at most ``MAX_RATE_KEYS`` of each); refusals are
  answered ``PEER_QUOTA`` / ``TAG_QUOTA`` (the sender tries again later or elsewhere) and counted
  (``NO_STAMP``, ``PEER_RATE``, ``TAG_RATE``).

Quotas are counted in memory (rebuilt from storage at start) so a store request costs no scans.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from meshchat.crypto import CLOCK_SKEW, MAX_TTL, epoch_of, inbox_tag
from meshchat.crypto.stamps import MAX_STAMP_COST, envelope_stamp_bits
from meshchat.errors import DecodeError, StorageError
from meshchat.identity import PublicIdentity
from meshchat.store.mailbox_prekeys import PrekeyShelf
from meshchat.store.protocol import (
    Deleted,
    DeleteRequest,
    ErrorCode,
    Fetched,
    FetchRequest,
    MailboxError,
    MailboxRequest,
    MailboxResponse,
    PrekeysPut,
    PrekeyTake,
    StoreCode,
    Stored,
    StoreRequest,
    StoreResult,
    Synced,
    SyncRequest,
    WithdrawRequest,
    batches,
)
from meshchat.store.rate import TokenBuckets
from meshchat.store.reconcile import Reconciler, decode_message, encode_message
from meshchat.store.storage import MailboxItem, Storage
from meshchat.wire import MAX_ENVELOPE_SIZE, Envelope, EnvelopeKind, decode_envelope, message_id

__all__ = [
    "CLOCK_SKEW",
    "MAX_FRIENDS",
    "MAX_RATE_KEYS",
    "STRANGER_SHARE",
    "MailboxCore",
    "MailboxLimits",
    "MailboxRefusal",
    "MailboxStatistics",
    "owned_tags",
]

#: Seconds between sweeps of expired items.
PRUNE_INTERVAL = 300.0
#: The share of ``MailboxLimits.total_bytes`` that strangers (neither the owner nor one of its
#: contacts, as sender or recipient) may fill together, when the mailbox has an owner. Half: strangers
#: keep a useful mailbox (a contact's contact, a message for someone not yet added) while the owner
#: and contacts, the people a volunteer runs it for, always find the other half free, however many
#: identities the strangers make up.
STRANGER_SHARE = 0.5
#: How a held item counts (``MailboxCore._flags``): neither for nor from the owner or a contact ...
_STRANGER = 1
#: ... stored by a peer who is neither the owner nor a contact (whatever its tag).
_FROM_STRANGER = 2
#: Contacts ``set_friends`` takes (bounded: each costs one tag per day of the TTL window). Far more
#: than anyone's address book; past it the rest count as strangers.
MAX_FRIENDS = 10_000
#: Peers whose owned tags are cached for a day (bounded: the cache is cleared when full).
_TAGS_CACHE = 10_000
#: Peers, and inbox tags, whose store rates are tracked at once (each map; past it the ones that have
#: refilled are forgotten, then the oldest: ``meshchat.store.rate``). ~100 bytes each.
MAX_RATE_KEYS = 10_000


class MailboxRefusal(StrEnum):
    """Why a mailbox refused an envelope or a request (``MailboxStatistics.refused``)."""

    #: Larger than ``max_envelope``.
    TOO_LARGE = "too_large"
    #: The recipient's tag is at ``per_tag_bytes``.
    TAG_QUOTA = "tag_quota"
    #: The sending peer is at ``per_peer_bytes``.
    PEER_QUOTA = "peer_quota"
    #: ``total_bytes`` is used up.
    MAILBOX_FULL = "mailbox_full"
    #: Strangers together fill their ``STRANGER_SHARE`` (answered ``MAILBOX_FULL``).
    STRANGERS_FULL = "strangers_full"
    #: Strangers fill their ``STRANGER_SHARE`` of one inbox's quota (answered ``TAG_QUOTA``).
    STRANGERS_TAG_FULL = "strangers_tag_full"
    #: Expired, or expiring past the longest TTL.
    BAD_EXPIRY = "bad_expiry"
    #: Not an envelope.
    MALFORMED = "malformed"
    #: The mailbox's storage failed.
    STORAGE_FAILED = "storage_failed"
    #: A request that did not decode.
    BAD_REQUEST = "bad_request"
    #: A tag in an owner's request that is not the requester's.
    NOT_YOUR_TAG = "not_your_tag"
    #: A prekey bundle put whose signatures do not verify (or too old).
    BAD_BUNDLE = "bad_bundle"
    #: A prekey bundle put of another key than the requester's.
    NOT_YOUR_BUNDLE = "not_your_bundle"
    #: A prekey take for an owner whose bundle is not held.
    NO_BUNDLE = "no_bundle"
    #: A prekey take over the requester's rate (``MAX_TAKES_PER_PEER``).
    TOO_MANY_TAKES = "too_many_takes"
    #: A prekey bundle put from a new owner when ``MAX_PREKEY_OWNERS`` (or strangers' share) are held.
    BUNDLES_FULL = "bundles_full"
    # --- stamps and store rates (issue 18) --------------------------------------------------------
    #: A stranger's sealed envelope without a stamp worth ``stamp_cost`` (answered ``PEER_QUOTA``).
    NO_STAMP = "no_stamp"
    #: The sending peer stores faster than ``peer_store_rate`` (answered ``PEER_QUOTA``).
    PEER_RATE = "peer_rate"
    #: Stores for one inbox tag come faster than ``tag_store_rate`` (answered ``TAG_QUOTA``).
    TAG_RATE = "tag_rate"


_STORE_REFUSALS: dict[StoreCode, MailboxRefusal] = {
    StoreCode.TOO_LARGE: MailboxRefusal.TOO_LARGE,
    StoreCode.TAG_QUOTA: MailboxRefusal.TAG_QUOTA,
    StoreCode.PEER_QUOTA: MailboxRefusal.PEER_QUOTA,
    StoreCode.MAILBOX_FULL: MailboxRefusal.MAILBOX_FULL,
    StoreCode.BAD_EXPIRY: MailboxRefusal.BAD_EXPIRY,
    StoreCode.MALFORMED: MailboxRefusal.MALFORMED,
    StoreCode.STORAGE_FAILED: MailboxRefusal.STORAGE_FAILED,
}
_ERROR_REFUSALS: dict[ErrorCode, MailboxRefusal] = {
    ErrorCode.BAD_REQUEST: MailboxRefusal.BAD_REQUEST,
    ErrorCode.NOT_YOUR_TAG: MailboxRefusal.NOT_YOUR_TAG,
    ErrorCode.STORAGE_FAILED: MailboxRefusal.STORAGE_FAILED,
    ErrorCode.BAD_BUNDLE: MailboxRefusal.BAD_BUNDLE,
    ErrorCode.NOT_YOUR_BUNDLE: MailboxRefusal.NOT_YOUR_BUNDLE,
    ErrorCode.NO_BUNDLE: MailboxRefusal.NO_BUNDLE,
    ErrorCode.TOO_MANY_TAKES: MailboxRefusal.TOO_MANY_TAKES,
    ErrorCode.BUNDLES_FULL: MailboxRefusal.BUNDLES_FULL,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxLimits:
    """How much a mailbox holds. Defaults suit a volunteer's laptop or a small server."""

    #: Largest envelope accepted, bytes (the protocol's maximum by default).
    max_envelope: int = MAX_ENVELOPE_SIZE
    #: Bytes held for one inbox tag (one recipient-day): ~10,000 chat messages.
    per_tag_bytes: int = 8 * 1024 * 1024
    #: Bytes held from one sending peer: a sender cannot fill the mailbox alone.
    per_peer_bytes: int = 64 * 1024 * 1024
    #: Bytes held in total: the disk budget.
    total_bytes: int = 1024 * 1024 * 1024
    #: Stamp (bits) a stranger's sealed envelope must carry to be stored (None: none asked).
    stamp_cost: int | None = None
    #: Envelopes one peer may store per second, sustained, and in a burst: a busy sender's retries
    #: after a day offline (hundreds at once) pass; a flood of small stores from one identity does not.
    peer_store_rate: float = 50.0
    peer_store_burst: float = 1000.0
    #: Envelopes stored for one inbox tag per second, sustained, and in a burst (as per peer: one
    #: recipient's whole day of messages from many senders passes; a flood at one inbox does not).
    tag_store_rate: float = 50.0
    tag_store_burst: float = 1000.0

    def __post_init__(self) -> None:
        if self.stamp_cost is not None and not 0 < self.stamp_cost <= MAX_STAMP_COST:
            raise ValueError(f"stamp_cost is 1 to {MAX_STAMP_COST} bits, or None")
        if min(self.peer_store_rate, self.tag_store_rate) <= 0:
            raise ValueError("store rates must be positive")
        if min(self.peer_store_burst, self.tag_store_burst) < 1:
            raise ValueError("store bursts must be at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxStatistics:
    """What a mailbox holds and what it refused."""

    #: Envelopes held.
    items: int
    #: Bytes held.
    bytes: int
    #: Envelopes stored since start.
    stored: int
    #: Envelopes handed to their recipients since start.
    fetched: int
    #: Envelopes deleted by their recipients since start.
    deleted: int
    #: Envelopes withdrawn by their senders (receipt in hand) since start.
    withdrawn: int
    #: Envelopes dropped at expiry since start.
    expired: int
    #: Refused envelopes and requests, by ``MailboxRefusal`` (a ``StrEnum``, so typed ``str`` here:
    #: the node adds its server's own string-keyed refusals to these).
    refused: dict[str, int]
    #: Bytes held for strangers (counted against ``STRANGER_SHARE`` when the mailbox has an owner).
    stranger_bytes: int = 0
    #: Owners whose prekey bundles are held (``prekeys put``).
    prekey_owners: int = 0
    #: One-time prekeys handed out since start (each once).
    one_time_given: int = 0
    #: Prekey takes answered without a one-time key because the owner's were going out too fast.
    one_time_withheld: int = 0


class _Usage:
    """Bytes held per tag, per sending peer, for strangers, and in total."""

    def __init__(self) -> None:
        self.by_tag: Counter[bytes] = Counter()
        self.by_peer: Counter[str] = Counter()
        #: Per tag, the bytes stored by peers who are neither the owner nor a contact.
        self.by_tag_from_strangers: Counter[bytes] = Counter()
        self.total = 0
        self.items = 0
        #: Bytes neither for nor from the owner or a contact.
        self.strangers = 0

    def add(
        self, item: MailboxItem, sign: int = 1, *, stranger: bool = False, from_stranger: bool = False
    ) -> None:
        size, tag = sign * item.size, item.inbox_tag
        self.by_tag[tag] += size
        self.by_peer[item.from_peer] += size
        self.total += size
        self.items += sign
        if stranger:
            self.strangers += size
        if from_stranger:
            self.by_tag_from_strangers[tag] += size
            if self.by_tag_from_strangers[tag] <= 0:
                del self.by_tag_from_strangers[tag]
        if self.by_tag[tag] <= 0:
            del self.by_tag[tag]
        if self.by_peer[item.from_peer] <= 0:
            del self.by_peer[item.from_peer]


class MailboxCore:
    """Answers mailbox requests from a ``Storage``; see the module docstring."""

    def __init__(
        self, storage: Storage, limits: MailboxLimits | None = None, *, owner: PublicIdentity | None = None
    ) -> None:
        """Serve from ``storage`` (its held items count against the quotas at once). With ``owner``
        (the identity running it), strangers share only ``STRANGER_SHARE`` of the budget."""
        self._storage = storage
        self.limits = limits or MailboxLimits()
        self.owner = owner
        self._friends: tuple[PublicIdentity, ...] = ()
        self._trusted_peers: frozenset[str] = frozenset()
        self._trusted_tags: frozenset[bytes] = frozenset()
        self._trusted_day: int | None = None
        self._tags_of: dict[tuple[str, int], frozenset[bytes]] = {}
        self._next_prune = 0.0
        self._counts: Counter[str] = Counter()
        self._refused: Counter[MailboxRefusal] = Counter()
        self._usage = _Usage()
        limits = self.limits
        self._peer_rates = TokenBuckets(
            rate=limits.peer_store_rate, burst=limits.peer_store_burst, max_keys=MAX_RATE_KEYS
        )
        self._tag_rates = TokenBuckets(
            rate=limits.tag_store_rate, burst=limits.tag_store_burst, max_keys=MAX_RATE_KEYS
        )
        # How each held item was counted, by id (only those with a flag: ``_STRANGER``,
        # ``_FROM_STRANGER``), so a removal subtracts what its store added.
        self._flags: dict[bytes, int] = {}
        self._recount()
        #: The owners' prekey bundles this mailbox hands out (``mailbox_prekeys``).
        self.prekeys = PrekeyShelf(storage)
        # Counted before the trusted set was known (or after it changed): count again at the next request.
        self._stale_counts = owner is not None

    def set_friends(self, friends: Iterable[PublicIdentity]) -> None:
        """The owner's contacts (the node calls this when they change): what they store, and what is
        addressed to them, counts against the owner's reserve, not the strangers' share. At most
        ``MAX_FRIENDS``; the held items are counted again under the new set at the next request."""
        self._friends = tuple(dict.fromkeys(friends))[:MAX_FRIENDS]
        self._trusted_day = None
        self._stale_counts = self.owner is not None

    def _recount(self) -> None:
        """Rebuild the usage counters from storage (at start, and when the trusted set changes)."""
        items = self._storage.mailbox_all()  # read first: a failing disk leaves the old counts whole
        self._usage = _Usage()
        self._flags.clear()
        for item in items:
            self._add(item)

    def _add(self, item: MailboxItem, sign: int = 1) -> None:
        if sign > 0:
            flags = self._flags_of(item.inbox_tag, item.from_peer)
            if flags:
                self._flags[item.message_id] = flags
        else:
            flags = self._flags.pop(item.message_id, 0)
        self._usage.add(
            item, sign, stranger=bool(flags & _STRANGER), from_stranger=bool(flags & _FROM_STRANGER)
        )

    def _flags_of(self, tag: bytes, peer: str) -> int:
        """How an envelope for ``tag`` stored by ``peer`` counts (no flags: the owner's or a contact's)."""
        if self.owner is None or peer in self._trusted_peers:
            return 0  # no owner, no reserve to keep: nobody is a stranger
        return _FROM_STRANGER | (0 if tag in self._trusted_tags else _STRANGER)

    def _refresh_trusted(self, wall_now: float) -> None:
        """The owner's and friends' tags for every day an envelope stored today can be addressed to."""
        day = epoch_of(wall_now)
        if self.owner is None or day == self._trusted_day:
            return
        people = (self.owner, *self._friends)
        self._trusted_peers = frozenset(p.peer_id for p in people)
        self._trusted_tags = frozenset(t for p in people for t in owned_tags(p, wall_now))
        # A new day only adds tomorrow's tags (and drops one whose envelopes have expired): items keep
        # the flags they were stored with, so only a new trusted set needs a full count.
        if self._stale_counts:
            self._recount()  # StorageError: counted again at the next request
            self._stale_counts = False
        self._trusted_day = day

    def handle(self, peer: str, request: MailboxRequest, *, wall_now: float) -> MailboxResponse:
        """Answer ``request`` from ``peer`` (its authenticated PeerId) at unix time ``wall_now``."""
        try:
            # Both read or write the disk: a failing disk is the answer's STORAGE_FAILED, never an
            # exception out of the server's stream handler.
            self._refresh_trusted(wall_now)
            if wall_now >= self._next_prune:
                self.prune(wall_now=wall_now)
            match request:
                case StoreRequest():
                    return self._store(peer, request, wall_now)
                case SyncRequest() | FetchRequest() | DeleteRequest():
                    return self._owner_request(peer, request, wall_now)
                case WithdrawRequest():
                    gone = self._storage.mailbox_withdraw(request.message_ids, peer)
                    for item in gone:
                        self._add(item, -1)
                    self._counts["withdrawn"] += len(gone)
                    return Deleted(count=len(gone))
                case PrekeysPut():
                    trusted = self.owner is None or peer in self._trusted_peers
                    return self.prekeys.put(
                        peer, request, trusted=trusted, wall_now=wall_now, refuse=self._refuse
                    )
                case PrekeyTake():
                    return self.prekeys.take(peer, request, wall_now=wall_now, refuse=self._refuse)
        except StorageError as exc:
            return self._refuse(ErrorCode.STORAGE_FAILED, str(exc))

    def prune(self, *, wall_now: float) -> int:
        """Drop items that have expired; return how many (also done by ``handle`` every few minutes)."""
        self._next_prune = wall_now + PRUNE_INTERVAL
        gone = self._storage.mailbox_prune(int(wall_now) - CLOCK_SKEW)
        for item in gone:
            self._add(item, -1)
        self._counts["expired"] += len(gone)
        self.prekeys.prune(wall_now)
        return len(gone)

    def statistics(self) -> MailboxStatistics:
        """Counters since start and what is held now."""
        counts = self._counts
        refused: dict[str, int] = {reason: n for reason, n in self._refused.items()}
        return MailboxStatistics(
            items=self._usage.items,
            bytes=self._usage.total,
            stored=counts["stored"],
            fetched=counts["fetched"],
            deleted=counts["deleted"],
            withdrawn=counts["withdrawn"],
            expired=counts["expired"],
            refused=refused,
            stranger_bytes=self._usage.strangers,
            prekey_owners=self.prekeys.owners,
            one_time_given=self.prekeys.counts["one_time_given"],
            one_time_withheld=self.prekeys.counts["one_time_withheld"],
        )

    # --- store -----------------------------------------------------------------------------------

    def _store(self, peer: str, request: StoreRequest, wall_now: float) -> Stored:
        results: list[StoreResult] = []
        accepted: list[MailboxItem] = []
        pending = _Usage()  # this request's own items count against the quotas too
        for data in request.envelopes:
            mid = message_id(data)
            code, detail, item = self._check(peer, data, mid, wall_now, pending)
            if item is not None:
                accepted.append(item)
                flags = self._flags_of(item.inbox_tag, peer)
                pending.add(
                    item, stranger=bool(flags & _STRANGER), from_stranger=bool(flags & _FROM_STRANGER)
                )
            results.append(StoreResult(message_id=mid, code=code, detail=detail))
        try:
            stored = self._storage.mailbox_put(accepted)
        except StorageError as exc:
            failed = {i.message_id for i in accepted}
            self._refused[MailboxRefusal.STORAGE_FAILED] += len(failed)
            return Stored(
                results=tuple(
                    StoreResult(message_id=r.message_id, code=StoreCode.STORAGE_FAILED, detail=str(exc))
                    if r.message_id in failed
                    else r
                    for r in results
                )
            )
        for item in stored:
            self._add(item)
        self._counts["stored"] += len(stored)
        return Stored(results=tuple(results))

    def _check(
        self, peer: str, data: bytes, mid: bytes, wall_now: float, pending: _Usage
    ) -> tuple[StoreCode, str, MailboxItem | None]:
        limits, usage = self.limits, self._usage
        code, detail = StoreCode.STORED, ""
        size = len(data)
        if size > limits.max_envelope:
            code, detail = StoreCode.TOO_LARGE, f"{size:,} bytes; this mailbox takes {limits.max_envelope:,}"
        else:
            try:
                envelope = decode_envelope(data)
            except DecodeError as exc:
                code, detail = StoreCode.MALFORMED, str(exc)
            else:
                tag = envelope.inbox_tag
                if not wall_now <= envelope.expiry <= wall_now + MAX_TTL + CLOCK_SKEW:
                    code, detail = StoreCode.BAD_EXPIRY, f"expiry {envelope.expiry} at {int(wall_now)}"
                elif (refused := self._unwelcome(peer, envelope, wall_now)) is not None:
                    return refused
                elif self._storage.mailbox_get((mid,)):
                    return StoreCode.STORED, "", None  # already held: idempotent
                elif usage.by_tag[tag] + pending.by_tag[tag] + size > limits.per_tag_bytes:
                    code, detail = (
                        StoreCode.TAG_QUOTA,
                        f"this inbox is at its {limits.per_tag_bytes:,}-byte quota",
                    )
                elif usage.by_peer[peer] + pending.by_peer[peer] + size > limits.per_peer_bytes:
                    code, detail = (
                        StoreCode.PEER_QUOTA,
                        f"you are at your {limits.per_peer_bytes:,}-byte quota",
                    )
                elif usage.total + pending.total + size > limits.total_bytes:
                    code, detail = (
                        StoreCode.MAILBOX_FULL,
                        f"the mailbox holds its {limits.total_bytes:,} bytes",
                    )
                elif (flags := self._flags_of(tag, peer)) & _STRANGER and (
                    usage.strangers + pending.strangers + size > self._stranger_budget()
                ):
                    self._refused[MailboxRefusal.STRANGERS_FULL] += 1
                    detail = f"strangers fill their {self._stranger_budget():,} bytes of this mailbox"
                    return StoreCode.MAILBOX_FULL, detail, None
                elif flags & _FROM_STRANGER and (
                    usage.by_tag_from_strangers[tag] + pending.by_tag_from_strangers[tag] + size
                    > limits.per_tag_bytes * STRANGER_SHARE
                ):
                    self._refused[MailboxRefusal.STRANGERS_TAG_FULL] += 1
                    detail = f"strangers fill their share of this inbox's {limits.per_tag_bytes:,}-byte quota"
                    return StoreCode.TAG_QUOTA, detail, None
                else:
                    item = MailboxItem(
                        message_id=mid,
                        inbox_tag=tag,
                        expiry=envelope.expiry,
                        envelope=data,
                        from_peer=peer,
                        size=size,
                        kind=envelope.kind,
                    )
                    return code, detail, item
        self._refused[_STORE_REFUSALS[code]] += 1
        return code, detail, None

    def _unwelcome(
        self, peer: str, envelope: Envelope, wall_now: float
    ) -> tuple[StoreCode, str, None] | None:
        """A refusal, counted, when ``peer`` stores too fast, too much comes for the tag, or a
        stranger's envelope lacks the stamp asked (checked in that order: cheapest first)."""
        limits = self.limits
        if not self._peer_rates.take(peer, wall_now):
            self._refused[MailboxRefusal.PEER_RATE] += 1
            return StoreCode.PEER_QUOTA, f"more than {limits.peer_store_rate:g} stores a second", None
        if not self._tag_rates.take(envelope.inbox_tag, wall_now):
            self._refused[MailboxRefusal.TAG_RATE] += 1
            return StoreCode.TAG_QUOTA, f"more than {limits.tag_store_rate:g} stores a second for it", None
        cost = limits.stamp_cost
        if (
            cost is not None
            and envelope.kind is EnvelopeKind.SEALED
            and self._stranger_for_stamps(envelope.inbox_tag, peer)
            and envelope_stamp_bits(envelope) < cost
        ):
            self._refused[MailboxRefusal.NO_STAMP] += 1
            return StoreCode.PEER_QUOTA, f"this mailbox asks strangers for a stamp of {cost} bits", None
        return None

    def _stranger_for_stamps(self, tag: bytes, peer: str) -> bool:
        """Whether an envelope for ``tag`` stored by ``peer`` is a stranger's, as stamps see it: with an
        owner, neither for nor from it or a contact; without one, not stored by a registered owner (the
        tags of 4,096 registered owners for every day of the TTL would cost more to keep than this)."""
        if self.owner is not None:
            return bool(self._flags_of(tag, peer) & _STRANGER)
        try:
            key = PublicIdentity.from_peer_id(peer).ed25519
        except (DecodeError, ValueError):
            return True
        return not self.prekeys.holds(key)

    def _stranger_budget(self) -> int:
        return int(self.limits.total_bytes * STRANGER_SHARE)

    # --- the owner's requests --------------------------------------------------------------------

    def _owner_request(
        self, peer: str, request: SyncRequest | FetchRequest | DeleteRequest, wall_now: float
    ) -> MailboxResponse:
        owned = self._tags_owned_by(peer, wall_now)
        if isinstance(request, FetchRequest):
            items = [
                i
                for i in self._storage.mailbox_get(request.message_ids)
                if i.inbox_tag in owned or i.kind is EnvelopeKind.GROUP
            ]
            # Up to 512 envelopes of up to 64 KiB do not fit one frame: answer the first ones that do
            # (the recipient asks again for the rest; before, the answer raised TooLarge and a
            # recipient with a few dozen large messages waiting could never fetch them).
            envelopes = batches([i.envelope for i in items])[:1]
            fetched = envelopes[0] if envelopes else ()
            self._counts["fetched"] += len(fetched)
            return Fetched(envelopes=fetched)
        if isinstance(request, DeleteRequest):
            if not owned.issuperset(request.tags):
                return self._refuse(
                    ErrorCode.NOT_YOUR_TAG, "a tag in the request is not derived from your key"
                )
            gone = self._storage.mailbox_delete(request.tags, request.generation)
            for item in gone:
                self._add(item, -1)
            self._counts["deleted"] += len(gone)
            return Deleted(count=len(gone))
        try:
            message = decode_message(request.reconcile)
        except DecodeError as exc:
            return self._refuse(ErrorCode.BAD_REQUEST, str(exc))
        generation = self._storage.mailbox_last_number()
        # Our own tags: everything held for them; any other (a group's): its group envelopes only.
        held = self._storage.mailbox_items([t for t in request.tags if t in owned])
        foreign = [t for t in request.tags if t not in owned]
        if foreign:
            held += self._storage.mailbox_items(foreign, kind=EnvelopeKind.GROUP)
        reply = Reconciler(held).respond(message)
        return Synced(reconcile=encode_message(reply), generation=generation, held=len(held))

    def _tags_owned_by(self, peer: str, wall_now: float) -> frozenset[bytes]:
        """Every inbox tag ``peer``'s key has had within the longest TTL, and tomorrow's."""
        today = epoch_of(wall_now)
        cached = self._tags_of.get((peer, today))
        if cached is not None:
            return cached
        try:
            public = PublicIdentity.from_peer_id(peer)
        except (DecodeError, ValueError):
            tags: frozenset[bytes] = frozenset()
        else:
            tags = frozenset(owned_tags(public, wall_now))
        if len(self._tags_of) > _TAGS_CACHE:  # bounded: one entry per peer and day
            self._tags_of.clear()
        self._tags_of[(peer, today)] = tags
        return tags

    def _refuse(self, code: ErrorCode, detail: str) -> MailboxError:
        self._refused[_ERROR_REFUSALS[code]] += 1
        return MailboxError(code=code, detail=detail)


def owned_tags(public: PublicIdentity, wall_now: float) -> tuple[bytes, ...]:
    """The tags a recipient syncs: one per day within the longest TTL, up to tomorrow (newest last)."""
    today = epoch_of(wall_now)
    first = epoch_of(wall_now - MAX_TTL - CLOCK_SKEW)
    return tuple(inbox_tag(public, e) for e in range(first, today + 2))
