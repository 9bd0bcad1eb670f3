"""The ``Messenger``'s 1:1 sessions: which session records are loaded, what changed, and the state writes
that go into the same transaction as the outbox or inbox rows they sealed or opened. Sans-IO.

``SessionKeeper`` loads a peer's ``PeerSessions`` record (``meshchat.sessions``) from ``Storage`` on
first use and keeps it in memory (at most ``MAX_CACHED`` records; one not written yet is never
evicted). ``seal_body`` and ``open_body`` move the ratchets forward in memory and mark the record
dirty; the messenger then passes ``writes()`` to the storage call that records the message
(``outbox_add``, ``accept``) and calls ``committed()`` after it, or ``rolled_back()`` when it failed: the
dirty records are dropped and read again from storage, so memory never runs ahead of the disk. This
device's prekeys (``Prekeys``) are one more record, made on first use and kept by ``maintain``
(signed prekey rotation, one-time prekeys topped up).

Control messages (``Messenger.send(control=True)``) ride the same sessions, so their keys are used
once: a control opened is kept as a state record (``pending_control``) in the transaction that moved
the ratchet, until its driver says it handed it on (``Messenger.controls_handled``); after a crash in
between, ``Messenger.pending_controls`` hands it on again.

State keys: ``b"s:" + peer Ed25519 key`` (session record), ``b"prekeys"``, ``b"c:" + message id``
(pending control).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from meshchat.errors import DecodeError
from meshchat.identity import Identity, PublicIdentity, RandomBytes
from meshchat.sessions.prekeys import BUNDLE_MAX_AGE, PrekeyBundle, Prekeys
from meshchat.sessions.session import PeerSessions
from meshchat.store.storage import StateWrite, Storage
from meshchat.wire.codec import pack, unpack_canonical

__all__ = [
    "CONTROL_PREFIX",
    "MAX_BUNDLES",
    "MAX_CACHED",
    "PREKEYS_KEY",
    "SessionKeeper",
    "control_writes",
    "decode_pending",
    "own_bundle",
    "pending_control",
]

#: Session records kept in memory (a record is a few hundred bytes without skipped keys).
MAX_CACHED = 1024
#: Peers' prekey bundles kept (from contacts' invites; one per contact, ~1.5 KB each).
MAX_BUNDLES = 100_000
#: State key of this device's prekey secrets.
PREKEYS_KEY = b"prekeys"
#: State key prefix of the control messages opened but not yet handed on.
CONTROL_PREFIX = b"c:"
_SESSION_PREFIX = b"s:"
_K_SENDER, _K_SENT_AT, _K_BODY, _K_EXPIRY = 1, 2, 3, 4


class SessionKeeper:
    """See the module docstring."""

    def __init__(self, identity: Identity, storage: Storage, *, random_bytes: RandomBytes) -> None:
        """Nothing is read until first use."""
        self._identity = identity
        self._storage = storage
        self._random_bytes = random_bytes
        self._cache: OrderedDict[bytes, PeerSessions] = OrderedDict()
        self._dirty: set[bytes] = set()
        self._prekeys: Prekeys | None = None
        self._prekeys_dirty = False
        self._bundles: dict[bytes, PrekeyBundle] = {}

    # --- prekeys and bundles ------------------------------------------------------------------------

    def prekeys(self, wall_now: float) -> Prekeys:
        """This device's prekeys (made, and marked to be written, on first use)."""
        if self._prekeys is None:
            stored = self._storage.state_get(PREKEYS_KEY)
            if stored is None:
                self._prekeys = Prekeys.create(
                    self._identity, wall_now=wall_now, random_bytes=self._random_bytes
                )
                self._prekeys_dirty = True
            else:
                self._prekeys = Prekeys.decode(stored)
        return self._prekeys

    def bundle(self, wall_now: float, *, one_time: int = 0) -> PrekeyBundle:
        """This device's current prekey bundle (signed prekey, post-quantum prekey, ``one_time`` keys)."""
        return self.prekeys(wall_now).bundle(self._identity, one_time=one_time)

    def maintain(self, wall_now: float) -> bool:
        """Rotate the signed prekey when due, top up one-time prekeys; True if a write is pending."""
        if self.prekeys(wall_now).maintain(
            self._identity, wall_now=wall_now, random_bytes=self._random_bytes
        ):
            self._prekeys_dirty = True
        return self._prekeys_dirty

    def set_bundle(self, peer: bytes, bundle: PrekeyBundle | None) -> None:
        """Start sessions with ``peer`` from ``bundle`` (checked when first used), or forget its bundle."""
        if bundle is None:
            self._bundles.pop(peer, None)
        elif peer in self._bundles or len(self._bundles) < MAX_BUNDLES:
            self._bundles[peer] = bundle

    # --- sessions -----------------------------------------------------------------------------------

    def _record(self, peer: bytes) -> PeerSessions:
        record = self._cache.get(peer)
        if record is not None:
            self._cache.move_to_end(peer)
            return record
        stored = self._storage.state_get(_SESSION_PREFIX + peer)
        record = PeerSessions() if stored is None else PeerSessions.decode(stored)
        self._cache[peer] = record
        while len(self._cache) > MAX_CACHED:
            oldest = next((k for k in self._cache if k not in self._dirty), None)
            if oldest is None:
                break
            del self._cache[oldest]
        return record

    def seal_body(self, recipient: PublicIdentity, plaintext: bytes, *, wall_now: float) -> bytes:
        """The session message carrying ``plaintext`` to ``recipient`` (its record now dirty)."""
        record = self._record(recipient.ed25519)
        body = record.encrypt(
            self._identity,
            recipient,
            plaintext,
            bundle=self._bundles.get(recipient.ed25519),
            wall_now=wall_now,
            random_bytes=self._random_bytes,
        )
        self._dirty.add(recipient.ed25519)
        return body

    def open_body(self, sender: PublicIdentity, body: bytes, *, wall_now: float) -> bytes:
        """The plaintext of session message ``body`` from ``sender``; the typed errors of
        ``PeerSessions.decrypt`` (nothing changed then)."""
        record = self._record(sender.ed25519)
        plaintext, prekeys = record.decrypt(
            self._identity,
            self.prekeys(wall_now),
            sender,
            body,
            wall_now=wall_now,
            random_bytes=self._random_bytes,
        )
        self._dirty.add(sender.ed25519)
        if prekeys is not None:
            self._prekeys = prekeys
            self._prekeys_dirty = True
        return plaintext

    def needs_bundle(self, peer: bytes, *, wall_now: float) -> bool:
        """Whether a first message to ``peer`` would start a session without a usable bundle (none
        known, or one older than ``BUNDLE_MAX_AGE``, which ``initiate`` would not use)."""
        known = self._bundles.get(peer)
        if known is not None and wall_now - known.created <= BUNDLE_MAX_AGE:
            return False
        return not self.has_session(peer)

    def awaiting_reply(self, peer: bytes) -> bool:
        """Whether a message to ``peer`` now would carry a set-up (no session, or not answered yet)."""
        record = self._record(peer)
        return len(record) == 0 or record.awaiting_reply

    def has_session(self, peer: bytes) -> bool:
        """Whether a session with ``peer`` exists (loads its record)."""
        return len(self._record(peer)) > 0

    # --- transactions -------------------------------------------------------------------------------

    def writes(self) -> list[StateWrite]:
        """The state writes of everything changed since the last commit."""
        writes: list[StateWrite] = [
            (_SESSION_PREFIX + p, self._cache[p].encode()) for p in sorted(self._dirty)
        ]
        if self._prekeys_dirty and self._prekeys is not None:
            writes.append((PREKEYS_KEY, self._prekeys.encode()))
        return writes

    def committed(self) -> None:
        """The writes are on disk."""
        self._dirty.clear()
        self._prekeys_dirty = False

    def rolled_back(self) -> None:
        """The writes failed: forget what changed (read again from storage when next needed)."""
        for peer in self._dirty:
            self._cache.pop(peer, None)
        self._dirty.clear()
        if self._prekeys_dirty:
            self._prekeys = None
            self._prekeys_dirty = False


def own_bundle(
    identity: Identity, storage: Storage, *, wall_now: float, random_bytes: RandomBytes
) -> PrekeyBundle:
    """``identity``'s current prekey bundle from ``storage`` (for an invite made while no node runs):
    the prekeys are made, or rotated when due, and written first. ``StorageError`` if they cannot be."""
    keeper = SessionKeeper(identity, storage, random_bytes=random_bytes)
    if keeper.maintain(wall_now):
        storage.state_put(keeper.writes())
    return keeper.bundle(wall_now)


def pending_control(
    message_id: bytes, sender: bytes, sent_at_ms: int, body: bytes, expiry: int
) -> StateWrite:
    """The state write that keeps an opened control message until it was handed on."""
    return (
        CONTROL_PREFIX + message_id,
        pack({_K_SENDER: sender, _K_SENT_AT: sent_at_ms, _K_BODY: body, _K_EXPIRY: expiry}),
    )


def decode_pending(value: bytes) -> tuple[bytes, int, bytes, int]:
    """``(sender, sent_at_ms, body, expiry)`` of a kept control; ``DecodeError`` if damaged."""
    fields = unpack_canonical(value, what="pending control", limit=128 * 1024)
    if not isinstance(fields, dict) or fields.keys() != {_K_SENDER, _K_SENT_AT, _K_BODY, _K_EXPIRY}:
        raise DecodeError("pending control", "not a pending control")
    sender, sent_at, body, expiry = fields[_K_SENDER], fields[_K_SENT_AT], fields[_K_BODY], fields[_K_EXPIRY]
    if (
        type(sender) is not bytes
        or type(body) is not bytes
        or type(sent_at) is not int
        or type(expiry) is not int
    ):
        raise DecodeError("pending control", "fields have the wrong types")
    return sender, sent_at, body, expiry


def control_writes(done: Sequence[bytes]) -> list[StateWrite]:
    """The state writes that forget the kept controls ``done`` (message ids)."""
    return [(CONTROL_PREFIX + mid, None) for mid in done]
