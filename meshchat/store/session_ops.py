"""The ``Messenger``'s session upkeep: prekey bundles (ours for invites, peers' from theirs), prekey
rotation, and the control messages kept until their driver handed them on (their session keys are
used once). A mixin of ``Messenger``; see ``sessions.py`` for the ``SessionKeeper`` it drives.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshchat.errors import StorageError
from meshchat.identity import KeyCache, PublicIdentity
from meshchat.sessions.prekeys import PrekeyBundle
from meshchat.store.outbox import Action, ControlReceived, StoreProblem
from meshchat.store.sessions import CONTROL_PREFIX, SessionKeeper, control_writes, decode_pending
from meshchat.store.storage import Storage

__all__ = ["SessionOps"]


class SessionOps:
    """Bundles, prekey upkeep and kept control messages (see the module docstring)."""

    storage: Storage
    sessions: SessionKeeper
    _keys: KeyCache

    def set_bundle(self, recipient: PublicIdentity, bundle: PrekeyBundle | None) -> None:
        """Start the session with ``recipient`` (if none exists yet) from ``bundle`` (from its invite)."""
        self.sessions.set_bundle(recipient.ed25519, bundle)

    def bundle(self, *, wall_now: float) -> PrekeyBundle:
        """This device's prekey bundle, for its invites (made, or rotated when due, and written first)."""
        self._write_prekeys(wall_now)
        return self.sessions.bundle(wall_now)

    def pending_controls(self) -> list[ControlReceived]:
        """The control messages opened but not yet handed on (a crash came between): hand them on, then
        call ``controls_handled``. ``StorageError`` if they cannot be read."""
        pending = []
        for key, value in self.storage.state_prefix(CONTROL_PREFIX):
            sender, sent_at_ms, body, _ = decode_pending(value)
            pending.append(
                ControlReceived(
                    sender=self._keys.public_identity(sender),
                    body=body,
                    message_id=key[len(CONTROL_PREFIX) :],
                    sent_at_ms=sent_at_ms,
                )
            )
        return pending

    def controls_handled(self, message_ids: Sequence[bytes]) -> list[Action]:
        """The driver handed these ``ControlReceived`` on (and its machinery committed what they did):
        forget them. A ``StoreProblem`` if that cannot be written (they are handed on again after a
        restart; the machinery is idempotent)."""
        if not message_ids:
            return []
        try:
            self.storage.state_put(control_writes(message_ids))
        except StorageError as exc:
            return [StoreProblem(error=exc)]
        return []

    def _write_prekeys(self, wall_now: float) -> list[Action]:
        if not self.sessions.maintain(wall_now):
            return []
        try:
            self.storage.state_put(self.sessions.writes())
        except StorageError as exc:
            self.sessions.rolled_back()
            return [StoreProblem(error=exc)]
        self.sessions.committed()
        return []
