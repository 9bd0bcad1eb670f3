"""A mailbox's shelf of prekey bundles: it hands each owner's one-time prekeys out once. Sans-IO.

What: the ``prekeys put`` / ``prekey take`` half of ``MailboxCore`` (``meshchat.store.protocol``).
Signal's server hands each one-time prekey (OPK) to one sender only; with no server, the owner's
mailboxes do it. A bundle in an invite or the DHT carries no OPK, because a shared list would give one
key to two senders and the second one's first messages could not be opened.

* **Put** (owner only): the bundle's signatures must verify and its identity must be the key of the
  PeerId the secure channel authenticated (as a sync's tags must belong to the caller). It replaces
  what was held for that owner, except that one-time ids up to ``taken_through`` (the highest id this
  mailbox ever handed out for the owner) are dropped: they may be in a sender's set-up already, and a
  re-upload of the owner's pool (which still holds them until their messages arrive) must not hand
  them out a second time.
* **Take** (anyone): the owner's bundle with at most one OPK, the lowest id held; the record without
  it (and with ``taken_through`` raised to it) is written before the answer leaves, so a crash can
  never hand the same key out twice. Lowest id first makes ``taken_through`` a watermark: every id
  handed out is at most it, every id held is above it.
* **Not**: the owner's choice of which mailbox holds its OPKs (``meshchat.store.prekey_upload``).

Bounds and why:

* ``MAX_PREKEY_OWNERS`` bundles (at most ``MAX_BUNDLE_SIZE`` each, so 24 MiB at most, a few percent of
  a default mailbox's disk budget); when the mailbox has an owner, strangers (neither the owner nor a
  contact) fill at most ``STRANGER_SHARE`` of them, so fresh PeerIds cannot crowd out its people.
* A bundle whose signed prekey is older than ``BUNDLE_MAX_AGE`` (plus skew) is useless (initiators
  ignore it): refused on put, dropped on take and by ``prune``.
* A drain attack (a stranger emptying someone's OPKs, so new senders get none): one peer takes at
  most ``MAX_TAKES_PER_PEER`` per ``TAKE_WINDOW`` (refused beyond, ``TOO_MANY_TAKES``), and one
  owner's OPKs go out at most ``MAX_ONE_TIME_PER_OWNER`` per ``ONE_TIME_WINDOW`` whoever asks (beyond
  it the bundle is given without one: PeerIds cost nothing, so the per-peer limit alone would not bound
  a drain; a drained key is forgotten by its owner after a while and replaced,
  ``prekey_upload.HANDED_OUT_KEEP``).
  The per-peer counters are bounded by ``MAX_TAKERS`` (oldest window forgotten first).

State: ``b"mbpk:" + owner Ed25519 key`` -> ``{1: bundle bytes, 2: taken_through}`` in the ``Storage``
state table. The owners held (and each one's signed prekey time) are kept in memory, read at start.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict
from collections.abc import Callable

from meshchat.crypto import CLOCK_SKEW
from meshchat.errors import BadBundle, DecodeError
from meshchat.identity import PublicIdentity
from meshchat.sessions.prekeys import BUNDLE_MAX_AGE, MAX_BUNDLE_SIZE, MAX_PREKEY_ID, PrekeyBundle
from meshchat.store.protocol import ErrorCode, MailboxError, PrekeyGiven, PrekeysHeld, PrekeysPut, PrekeyTake
from meshchat.store.storage import Storage
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "MAX_ONE_TIME_PER_OWNER",
    "MAX_PREKEY_OWNERS",
    "MAX_TAKERS",
    "MAX_TAKES_PER_PEER",
    "ONE_TIME_WINDOW",
    "PREKEY_PREFIX",
    "TAKE_WINDOW",
    "PrekeyShelf",
]

#: State key prefix of the bundles held (followed by the owner's Ed25519 key).
PREKEY_PREFIX = b"mbpk:"
#: Owners whose bundles are held: 4,096 x 6 KiB = 24 MiB at most; far more people than a volunteer
#: mailbox serves (its owner, the owner's contacts, some of their contacts).
MAX_PREKEY_OWNERS = 4096
#: Seconds of one rate window for takes.
TAKE_WINDOW = 60.0
#: Takes one peer may make per ``TAKE_WINDOW``: a sender takes one per new conversation; ten a minute
#: is far above a person starting chats, far below draining a pool of 100.
MAX_TAKES_PER_PEER = 10
#: Seconds of one rate window for one owner's one-time keys.
ONE_TIME_WINDOW = 3600.0
#: One-time keys one owner's pool gives out per ``ONE_TIME_WINDOW``, all takers together (beyond: the
#: bundle without one, which still starts a forward-secret session). Twenty new people an hour writing
#: to one person is beyond everyday use; a drain by many fresh PeerIds needs five hours per pool.
MAX_ONE_TIME_PER_OWNER = 20
#: Peers whose take counts are remembered (bounded: the oldest window is forgotten first).
MAX_TAKERS = 10_000
#: A held bundle older than this is useless to initiators (``x3dh.initiate`` ignores it).
_STALE = BUNDLE_MAX_AGE + CLOCK_SKEW
_K_BUNDLE, _K_TAKEN = 1, 2


def _record(bundle: PrekeyBundle, taken_through: int) -> bytes:
    return pack({_K_BUNDLE: bundle.encode(), _K_TAKEN: taken_through})


def _read(value: bytes) -> tuple[PrekeyBundle, int]:
    """``(bundle, taken_through)`` of a stored record; ``DecodeError`` if it is damaged."""
    fields = unpack_canonical(value, what="held prekey bundle", limit=MAX_BUNDLE_SIZE + 64)
    if type(fields) is not dict or fields.keys() != {_K_BUNDLE, _K_TAKEN}:
        raise DecodeError("held prekey bundle", "not a map of fields 1 and 2")
    data, taken = fields[_K_BUNDLE], fields[_K_TAKEN]
    if type(data) is not bytes or type(taken) is not int or not 0 <= taken <= MAX_PREKEY_ID:
        raise DecodeError("held prekey bundle", "fields have the wrong types")
    return PrekeyBundle.decode(data), taken


class PrekeyShelf:
    """See the module docstring. ``StorageError`` passes through (``MailboxCore`` answers it)."""

    def __init__(self, storage: Storage) -> None:
        """Read which owners' bundles ``storage`` holds (a damaged record is dropped)."""
        self._storage = storage
        # owner key -> (signed prekey time, counted as a stranger's)
        self._owners: dict[bytes, tuple[int, bool]] = {}
        self._takers: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._given: dict[bytes, tuple[float, int]] = {}
        self.counts: Counter[str] = Counter()
        damaged = []
        for key, value in storage.state_prefix(PREKEY_PREFIX):
            try:
                bundle, _ = _read(value)
            except DecodeError:
                damaged.append((key, None))
                continue
            self._owners[key[len(PREKEY_PREFIX) :]] = (bundle.created, True)
        if damaged:
            storage.state_put(damaged)

    @property
    def owners(self) -> int:
        """Owners whose bundles are held."""
        return len(self._owners)

    def holds(self, owner: bytes) -> bool:
        """Whether ``owner``'s (an Ed25519 key) bundle is held: it registered with this mailbox."""
        return owner in self._owners

    def put(
        self,
        peer: str,
        request: PrekeysPut,
        *,
        trusted: bool,
        wall_now: float,
        refuse: Callable[[ErrorCode, str], MailboxError],
    ) -> PrekeysHeld | MailboxError:
        """Keep ``peer``'s bundle (``trusted``: the mailbox's owner or a contact)."""
        bundle = request.bundle
        try:
            owner = PublicIdentity.from_peer_id(peer).ed25519
        except (DecodeError, ValueError):
            owner = b""
        if bundle.identity != owner:
            return refuse(ErrorCode.NOT_YOUR_BUNDLE, "the bundle is not of the key you connected with")
        try:
            bundle.verify()
        except BadBundle as exc:
            return refuse(ErrorCode.BAD_BUNDLE, str(exc))
        if bundle.created + _STALE < wall_now:
            return refuse(
                ErrorCode.BAD_BUNDLE, f"its signed prekey is older than {BUNDLE_MAX_AGE // 86400} days"
            )
        if owner not in self._owners:
            if len(self._owners) >= MAX_PREKEY_OWNERS:
                return refuse(ErrorCode.BUNDLES_FULL, f"this mailbox holds {MAX_PREKEY_OWNERS:,} bundles")
            strangers = sum(1 for _, stranger in self._owners.values() if stranger)
            if not trusted and strangers >= MAX_PREKEY_OWNERS // 2:
                return refuse(ErrorCode.BUNDLES_FULL, "strangers fill their share of this mailbox's bundles")
            taken = 0
        else:
            held = self._storage.state_get(PREKEY_PREFIX + owner)
            taken = 0
            if held is not None:
                try:
                    taken = _read(held)[1]
                except DecodeError:
                    taken = MAX_PREKEY_ID  # damaged: hand out no one-time key it may have given
        kept = tuple(k for k in bundle.one_time if k.key_id > taken)
        self._storage.state_put(
            [(PREKEY_PREFIX + owner, _record(dataclasses.replace(bundle, one_time=kept), taken))]
        )
        self._owners[owner] = (bundle.created, not trusted)
        self.counts["prekeys_put"] += 1
        return PrekeysHeld(one_time=len(kept), taken_through=taken)

    def take(
        self,
        peer: str,
        request: PrekeyTake,
        *,
        wall_now: float,
        refuse: Callable[[ErrorCode, str], MailboxError],
    ) -> PrekeyGiven | MailboxError:
        """Give ``request.owner``'s bundle with its lowest one-time key (deleted first, durably)."""
        entry = self._takers.get(peer)
        if entry is None or entry[0] + TAKE_WINDOW <= wall_now:
            entry = (wall_now, 0)
            self._takers.pop(peer, None)  # set again at the end: the order is by window start
        if entry[1] >= MAX_TAKES_PER_PEER:
            return refuse(ErrorCode.TOO_MANY_TAKES, f"at most {MAX_TAKES_PER_PEER} prekey takes a minute")
        self._takers[peer] = (entry[0], entry[1] + 1)
        while len(self._takers) > MAX_TAKERS:
            self._takers.popitem(last=False)
        owner = request.owner
        key = PREKEY_PREFIX + owner
        held = self._storage.state_get(key) if owner in self._owners else None
        record = None
        if held is not None:
            try:
                record = _read(held)
            except DecodeError:
                record = None
        if record is None or record[0].created + _STALE < wall_now:
            if owner in self._owners:  # stale or damaged: drop it
                self._drop(owner)
            return refuse(ErrorCode.NO_BUNDLE, "this mailbox holds no prekey bundle for that key")
        bundle, taken = record
        if not bundle.one_time or not self._owner_may_give(owner, wall_now):
            if bundle.one_time:
                self.counts["one_time_withheld"] += 1
            return PrekeyGiven(bundle=dataclasses.replace(bundle, one_time=()))
        first, rest = bundle.one_time[0], bundle.one_time[1:]
        # Written before the answer leaves: a crash after this never hands ``first`` out again.
        self._storage.state_put(
            [(key, _record(dataclasses.replace(bundle, one_time=rest), max(taken, first.key_id)))]
        )
        start, count = self._given.get(owner, (wall_now, 0))
        self._given[owner] = (start, count + 1)
        self.counts["one_time_given"] += 1
        return PrekeyGiven(bundle=dataclasses.replace(bundle, one_time=(first,)))

    def _owner_may_give(self, owner: bytes, wall_now: float) -> bool:
        start, count = self._given.get(owner, (wall_now, 0))
        if start + ONE_TIME_WINDOW <= wall_now:
            self._given[owner] = (wall_now, 0)
            return True
        return count < MAX_ONE_TIME_PER_OWNER

    def _drop(self, owner: bytes) -> None:
        self._storage.state_put([(PREKEY_PREFIX + owner, None)])
        self._owners.pop(owner, None)
        self._given.pop(owner, None)
        self.counts["prekeys_expired"] += 1

    def prune(self, wall_now: float) -> int:
        """Drop the bundles whose signed prekey is too old to be used; return how many."""
        stale = [o for o, (created, _) in self._owners.items() if created + _STALE < wall_now]
        for owner in stale:
            self._drop(owner)
        return len(stale)
