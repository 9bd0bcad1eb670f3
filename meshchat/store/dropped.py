"""What the store remembers of chats dropped because their sender was blocked: their ids, so that a copy
that comes again is never receipted, not even after the sender is unblocked (the app never showed it).

Each id is a ``state`` key ``DROPPED_PREFIX + id`` whose value is the envelope's expiry (8 bytes,
big-endian, signed), written in the ``accept`` transaction that puts the id in the seen window, and
pruned with the seen window once it expired: the marks are bounded as the seen window is. The
``Messenger`` asks about duplicates only; a store that never dropped anything is asked once.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshchat.store.storage import SeenEntry, StateWrite, Storage

__all__ = ["DROPPED_PREFIX", "DroppedIds", "dropped_writes"]

#: State key prefix of a chat dropped because its sender was blocked.
DROPPED_PREFIX = b"dropped:"


def dropped_writes(entries: Sequence[SeenEntry]) -> list[StateWrite]:
    """The state writes remembering that ``entries`` were dropped (their senders were blocked)."""
    return [(DROPPED_PREFIX + e.message_id, e.expiry.to_bytes(8, "big", signed=True)) for e in entries]


class DroppedIds:
    """Looks up and prunes the dropped ids in ``storage`` (``StorageError`` passes through)."""

    def __init__(self, storage: Storage) -> None:
        """Over ``storage``; nothing is read until asked."""
        self._storage = storage
        # Whether the store may hold marks (None: not looked yet): a profile that never blocked
        # anyone does not look each duplicate up.
        self._may_hold: bool | None = None

    def among(self, duplicates: Sequence[bytes]) -> set[bytes]:
        """Which of ``duplicates`` (ids already seen) were dropped so."""
        if not duplicates:
            return set()
        if self._may_hold is None:
            self._may_hold = bool(self._storage.state_prefix(DROPPED_PREFIX))
        if not self._may_hold:
            return set()
        return {m for m in duplicates if self._storage.state_get(DROPPED_PREFIX + m) is not None}

    def added(self) -> None:
        """Marks were just committed."""
        self._may_hold = True

    def prune(self, before: int) -> None:
        """Forget the marks of envelopes that expired before ``before`` (as their seen entries)."""
        gone: list[StateWrite] = [
            (key, None)
            for key, expiry in self._storage.state_prefix(DROPPED_PREFIX)
            if int.from_bytes(expiry, "big", signed=True) < before
        ]
        if gone:
            self._storage.state_put(gone)
