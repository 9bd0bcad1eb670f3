"""The owner's side of one-time prekeys on mailboxes: what to upload where (``prekeys put``). Sans-IO.

A device's mailboxes hand its one-time prekeys (OPKs) out, one per sender (``mailbox_prekeys``). Two
mailboxes must never hold the same OPK, or two senders could get it and the second one's first
messages would not open. So all OPKs go to one mailbox, the *holder*; every other mailbox gets the
bundle without OPKs (senders still find the signed and post-quantum prekeys there).

* Only the device's own mailboxes (``prefer``: the ones its invites name, where senders ask) are
  uploaded to; a node with none configured uploads nothing (a mailbox it merely met is not where
  senders look, and an upload there would only cost it a call and a slot).
* The holder is the first reachable mailbox by PeerId order, recorded (``UPLOAD_STATE_KEY``) before any
  OPK is uploaded to it, so a restart never picks another one and uploads the same keys there too.
* It changes only when the first reachable mailbox by that order is another one **and** the holder is
  reachable too: the holder's upload is first replaced by an OPK-less bundle, and its answer's
  ``taken_through`` (the highest id it ever handed out: ``PrekeysHeld``) becomes the ``floor``, also
  recorded: ids up to the floor are never uploaded again anywhere (they may be in a sender's set-up).
  An unreachable holder stays the holder (no way to stop it handing out what it has); the others get
  OPK-less bundles meanwhile, and senders who reach none of it fall back to the invite's bundle. Only
  a holder that is unreachable and no longer one of the device's mailboxes is given up at once: every
  key in the pool then is treated as handed out (the floor), and replaced as below.
* A mailbox is uploaded to when it becomes reachable, whenever the device's pool changed (an OPK
  used by a set-up that opened, ``maintain`` topping up or rotating the signed prekey), and every
  ``PREKEY_REFRESH`` besides. The holder gets every OPK in the pool above the floor; the holder's own
  ``taken_through`` keeps it from handing out a key again that the pool still holds because its
  message has not arrived yet.
* **Replenished.** A key handed out whose message never comes (a sender that gave up, or a stranger
  draining the pool) would sit in the pool for ever, and the pool is topped up only when it runs low:
  after a drain no new OPK would ever be handed out. So each watermark learned (the holder's
  ``taken_through``) is recorded with the time it was learned, and a key at or below it still in the
  pool ``HANDED_OUT_KEEP`` later (the longest envelope TTL and two days: a first message sealed when
  the key was taken has reached us or expired by then) is forgotten; ``maintain`` then tops the pool
  up with new ids, which go to the holder. The cost: a sender whose first messages were all lost and
  who writes again on that unanswered session after so long cannot be read (``UnknownPrekey``).

Why a driver-side task rather than the ``Messenger``'s ``CallMailbox`` actions: those queues carry
stores and sync steps, one call in flight per mailbox, and ``mailbox_replied`` treats an answer it did
not expect as a lie; an upload is rare, independent of the sync and store order, and at most one per
mailbox is in flight here (the mailbox server takes several calls per peer at once). So
``StoreDriver`` asks ``plan`` after each batch of actions and performs the calls itself through the
same ``StoreIO.call_mailbox``, and reports back with ``replied`` / ``failed``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence

from meshchat.crypto import MAX_TTL
from meshchat.errors import DecodeError, StorageError
from meshchat.sessions.prekeys import MAX_BUNDLE_ONE_TIME, MAX_PREKEY_ID, PrekeyBundle
from meshchat.store.messenger import Messenger
from meshchat.store.protocol import MailboxError, MailboxResponse, PrekeysHeld, PrekeysPut
from meshchat.wire.codec import pack, unpack_canonical

__all__ = ["HANDED_OUT_KEEP", "PREKEY_REFRESH", "UPLOAD_RETRY", "UPLOAD_STATE_KEY", "PrekeyUploads"]

#: State key of the holder's PeerId and the floor.
UPLOAD_STATE_KEY = b"opk-upload"
#: Seconds before a mailbox that refused an upload (or could not be called) is asked again.
UPLOAD_RETRY = 300.0
#: Seconds after which every mailbox is given the bundle again though nothing changed: the holder's
#: answer tells which keys went out meanwhile (``HANDED_OUT_KEEP`` counts from then), and a mailbox
#: that lost what it held gets it back.
PREKEY_REFRESH = 6 * 3600.0
#: Seconds a one-time key known to be handed out is kept for its message (see the module docstring).
HANDED_OUT_KEEP = MAX_TTL + 2 * 86400
#: Seconds between two looks for handed-out keys to forget (``plan`` runs after every batch of actions).
_FORGET_CHECK = 600.0
#: Watermarks remembered (each still covers a key in the pool, so at most the pool's 100, and the last).
_MAX_HANDED = 128
_K_HOLDER, _K_FLOOR, _K_HANDED = 1, 2, 3
#: What a mailbox was last given: (signed prekey id, one-time ids uploaded).
_Fingerprint = tuple[int, tuple[int, ...]]


class PrekeyUploads:
    """See the module docstring."""

    def __init__(self, messenger: Messenger) -> None:
        """Read the holder and the floor (``StorageError`` if they cannot be read)."""
        self._messenger = messenger
        self._storage = messenger.storage
        self.holder: str | None = None
        self.floor = 0
        # Watermarks learned, ascending, each with the unix time it was learned.
        self._handed: list[tuple[int, int]] = []
        self._burn_pool = False
        stored = self._storage.state_get(UPLOAD_STATE_KEY)
        if stored is not None:
            try:
                self.holder, self.floor, self._handed = _decode_state(stored)
            except DecodeError:
                # Damaged: no key in the pool is safe to upload again (the first plan burns them).
                self._burn_pool = True
        # What each mailbox acknowledged, and when (in memory: after a restart each gets one again).
        self._acked: dict[str, tuple[_Fingerprint, float]] = {}
        self._busy: dict[str, PrekeysPut] = {}
        # After a refusal or a failure, when a mailbox is tried again (bounded: reachable mailboxes).
        self._retry_at: dict[str, float] = {}
        # The holder being replaced: its OPK-less upload must be acknowledged before the switch.
        self._leaving: str | None = None
        self._own: frozenset[str] | None = None
        self._next_forget = 0.0
        #: Uploads made, refused, failed (by outcome), and holder switches.
        self.counts: Counter[str] = Counter()

    def prefer(self, peers: Iterable[str]) -> None:
        """This device's own mailboxes (PeerIds: those its invites name, where senders ask): only they
        are uploaded to and hold the OPKs (none: nothing is uploaded). Until this is called, every
        reachable mailbox is."""
        self._own = frozenset(peers)

    def _usable(self, reachable: Iterable[str]) -> list[str]:
        """The reachable mailboxes to upload to, in the order that picks the holder."""
        return sorted(p for p in set(reachable) if self._own is None or p in self._own)

    def plan(self, reachable: Sequence[str], *, wall_now: float) -> list[tuple[str, PrekeysPut]]:
        """The uploads to start now (one in flight per mailbox at most; cheap when nothing changed)."""
        usable = self._usable(reachable)
        for peer in [p for p in self._acked if p not in reachable]:
            del self._acked[peer]  # gone: when it is back, it is uploaded to again
        if not usable:
            return []
        sessions = self._messenger.sessions
        try:
            if sessions.maintain(wall_now):  # made or rotated, not written yet: write it first
                self._messenger.bundle(wall_now=wall_now)
                if sessions.maintain(wall_now):
                    return []  # the write failed: upload nothing that is not on disk
            if self._burn_pool:  # every key in the pool is treated as handed out now
                burnt = max(sessions.prekeys(wall_now).one_time_ids, default=0)
                self._learned(burnt, wall_now)
                self._record(self.holder or usable[0], max(self.floor, burnt))
                self._burn_pool = False
            if self.holder is None:
                self._record(usable[0], self.floor)
            if wall_now >= self._next_forget:
                self._next_forget = wall_now + _FORGET_CHECK
                self._forget_handed_out(wall_now)
            self._choose_holder(usable, reachable, wall_now)
        except StorageError:
            self.counts["storage_failed"] += 1
            return []
        prekeys = sessions.prekeys(wall_now)
        spk_id = prekeys.current_spk_id
        pool = tuple(i for i in prekeys.one_time_ids if i > self.floor)
        leaving = [self._leaving] if self._leaving is not None and self._leaving not in usable else []
        wanted: list[tuple[str, bool]] = []
        for peer in usable + leaving:
            if peer in self._busy or self._retry_at.get(peer, wall_now) > wall_now:
                continue
            with_keys = peer == self.holder and self._leaving is None
            acked, at = self._acked.get(peer, (None, -PREKEY_REFRESH))
            if acked != (spk_id, pool if with_keys else ()) or at + PREKEY_REFRESH <= wall_now:
                wanted.append((peer, with_keys))
        if not wanted:
            return []
        full = sessions.bundle(wall_now, one_time=MAX_BUNDLE_ONE_TIME)
        calls = []
        for peer, with_keys in wanted:
            request = PrekeysPut(bundle=self._cut(full, with_keys))
            self._busy[peer] = request
            calls.append((peer, request))
        return calls

    def _choose_holder(self, usable: list[str], reachable: Sequence[str], wall_now: float) -> None:
        """Start a switch to ``usable[0]`` if it is not the holder (see the module docstring)."""
        target = usable[0]
        if self._leaving is not None:
            if target == self._leaving and self._leaving not in self._busy:
                self._leaving = None  # it is the first again: no switch after all
            return
        if target == self.holder:
            return
        if self.holder in reachable:
            self._leaving = self.holder  # replaced first by an OPK-less upload, then the switch
            self.counts["switching"] += 1
        elif self._own is not None and self.holder not in self._own:
            # No longer ours and gone: it may still hand out what it holds, so every key in the pool
            # now is never uploaded again (and forgotten ``HANDED_OUT_KEEP`` later, then replaced).
            burnt = max(self._messenger.sessions.prekeys(wall_now).one_time_ids, default=0)
            self._learned(burnt, wall_now)
            self._record(target, max(self.floor, burnt))
            self.counts["switched"] += 1

    def _cut(self, full: PrekeyBundle, with_keys: bool) -> PrekeyBundle:
        keys = tuple(k for k in full.one_time if k.key_id > self.floor) if with_keys else ()
        return dataclasses.replace(full, one_time=keys)

    def _record(self, holder: str, floor: int) -> None:
        state = {_K_HOLDER: holder, _K_FLOOR: floor, _K_HANDED: [list(h) for h in self._handed]}
        self._storage.state_put([(UPLOAD_STATE_KEY, pack(state))])
        self.holder, self.floor = holder, floor

    def _handed_at(self, key_id: int) -> int | None:
        """When ``key_id`` was first known to be handed out (None: it was not)."""
        return next((at for mark, at in self._handed if key_id <= mark), None)

    def _forget_handed_out(self, wall_now: float) -> None:
        """Forget the keys handed out ``HANDED_OUT_KEEP`` ago whose messages never came; drop the
        watermarks that cover no key of the pool any more. ``StorageError`` if that cannot be written."""
        now = int(wall_now)
        sessions = self._messenger.sessions
        ids = sessions.prekeys(wall_now).one_time_ids
        old = [i for i in ids if (at := self._handed_at(i)) is not None and at + HANDED_OUT_KEEP <= now]
        if old:
            sessions.forget_one_time(old, wall_now)
            self._messenger.bundle(wall_now=wall_now)  # written, and the pool topped up
            if sessions.maintain(wall_now):
                raise StorageError("forgetting one-time prekeys: the write failed")
            self.counts["forgotten"] += len(old)
            ids = sessions.prekeys(wall_now).one_time_ids
        kept, previous = [], 0
        for index, (mark, at) in enumerate(self._handed):
            if index == len(self._handed) - 1 or any(previous < i <= mark for i in ids):
                kept.append((mark, at))
            previous = mark
        if kept != self._handed and self.holder is not None:
            self._handed = kept
            self._record(self.holder, self.floor)

    def _learned(self, mark: int, wall_now: float) -> bool:
        """A holder handed out every key up to ``mark``; True if that is news (to be recorded)."""
        if mark <= (self._handed[-1][0] if self._handed else 0):
            return False
        self._handed.append((mark, int(wall_now)))
        del self._handed[:-_MAX_HANDED]
        return True

    def replied(
        self,
        peer: str,
        request: PrekeysPut,
        response: MailboxResponse,
        *,
        reachable: Sequence[str],
        wall_now: float,
    ) -> None:
        """``peer`` answered the upload ``request`` (``reachable``: the mailboxes reachable now)."""
        if self._busy.get(peer) is request:
            del self._busy[peer]
        self._forget_retries(reachable)
        if not isinstance(response, PrekeysHeld):
            self.counts["refused" if isinstance(response, MailboxError) else "wrong_answer"] += 1
            self._retry_at[peer] = wall_now + UPLOAD_RETRY
            return
        self._retry_at.pop(peer, None)
        self.counts["uploaded"] += 1
        self._acked[peer] = (_fingerprint(request.bundle), wall_now)
        mark = min(response.taken_through, MAX_PREKEY_ID)
        if peer in (self.holder, self._leaving) and self._learned(mark, wall_now) and self.holder is not None:
            try:
                self._record(self.holder, self.floor)
            except StorageError:  # in memory it counts; written with the next record
                self.counts["storage_failed"] += 1
        if peer == self._leaving and not request.bundle.one_time:
            usable = self._usable(reachable)
            target = usable[0] if usable else None
            # It hands out nothing more; what it did hand out is at most its watermark.
            floor = max(self.floor, min(response.taken_through, MAX_PREKEY_ID))
            try:
                self._record(target if target is not None else peer, floor)
            except StorageError:
                self.counts["storage_failed"] += 1
                self.floor = max(self.floor, floor)  # in memory at least: never upload those again
            else:
                self.counts["switched"] += 1
            self._leaving = None

    def failed(self, peer: str, request: PrekeysPut, *, reachable: Sequence[str], wall_now: float) -> None:
        """The upload to ``peer`` failed (unreachable, timed out, garbage answer): tried again after
        ``UPLOAD_RETRY``."""
        if self._busy.get(peer) is request:
            del self._busy[peer]
        self._forget_retries(reachable)
        self._acked.pop(peer, None)
        self._retry_at[peer] = wall_now + UPLOAD_RETRY
        self.counts["failed"] += 1

    def _forget_retries(self, reachable: Sequence[str]) -> None:
        for peer in [p for p in self._retry_at if p not in reachable]:
            del self._retry_at[peer]


def _fingerprint(bundle: PrekeyBundle) -> _Fingerprint:
    return bundle.spk_id, tuple(k.key_id for k in bundle.one_time)


def _decode_state(value: bytes) -> tuple[str | None, int, list[tuple[int, int]]]:
    what = "prekey upload state"
    fields = unpack_canonical(value, what=what, limit=4096)
    if type(fields) is not dict or fields.keys() != {_K_HOLDER, _K_FLOOR, _K_HANDED}:
        raise DecodeError(what, "not a map of fields 1 to 3")
    holder, floor, handed = fields[_K_HOLDER], fields[_K_FLOOR], fields[_K_HANDED]
    if type(holder) is not str or type(floor) is not int or not 0 <= floor <= MAX_PREKEY_ID:
        raise DecodeError(what, "fields have the wrong types")
    if type(handed) is not tuple or len(handed) > _MAX_HANDED:
        raise DecodeError(what, f"at most {_MAX_HANDED} watermarks")
    marks: list[tuple[int, int]] = []
    for entry in handed:
        if type(entry) is not tuple or len(entry) != 2 or not all(type(x) is int for x in entry):
            raise DecodeError(what, "a watermark is [id, unix time]")
        mark, at = entry
        if not 0 < mark <= MAX_PREKEY_ID or (marks and mark <= marks[-1][0]) or at < 0:
            raise DecodeError(what, "watermarks must be ascending ids with times")
        marks.append((mark, at))
    return holder, floor, marks
