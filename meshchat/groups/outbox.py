"""Where our group messages are, and the receipts we owe other members: the groups core's outbox.

``GroupOutbox`` keeps our sent group messages (``GroupOutRecord``) that have not expired: which
mailboxes stored each, which members received and read it. Receipts travel batched: a member does not
answer each group message with an envelope; it collects the ids it accepted (or read) per sender for
``receipt_delay`` seconds and then sends each sender one ``ReceiptControl`` on the sealed 1:1 path
naming them all (cut at ``MAX_RECEIPT_IDS``). A message not yet received by every member is published
again on the group's topic, after ``REPUBLISH_FIRST`` seconds, doubling up to ``REPUBLISH_MAX``, for
``REPUBLISH_FOR`` seconds after it was sent (gossip reaches a member only over links that existed
when the message passed; members who get it again drop it as a duplicate); members offline longer
get it from the mailboxes that stored it.

A receipt counts only from a current member of the message's group, once per member (a set of keys
per message, not a counter a member could inflate); receipts for unknown messages are counted and
dropped. Bounded: the records are our own messages (the application sends them, no peer can grow
this), and the receipts we owe are at most what we accepted within one ``receipt_delay``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TypeVar

from meshchat.groups.events import GroupStatus, PublishGroup, SendControl
from meshchat.groups.payload import ReceiptControl, encode_control
from meshchat.groups.seal import group_topic
from meshchat.groups.storage import ControlRecord, GroupOutRecord, GroupStorage, GroupWrite, flat, unflat
from meshchat.identity import RandomBytes
from meshchat.store.payload import MAX_RECEIPT_IDS, ReceiptKind

__all__ = ["REPUBLISH_FIRST", "REPUBLISH_FOR", "REPUBLISH_MAX", "GroupOutbox", "status_of"]

A = TypeVar("A")

#: Seconds before a group message some member has not acknowledged is published again (receipts
#: come batched within ``RECEIPT_DELAY`` of delivery, so the first repeat goes only to real misses).
REPUBLISH_FIRST = 10.0
#: Longest wait between two such publishes.
REPUBLISH_MAX = 600.0
#: Seconds after sending during which it is published again (about 10 repeats at most); later, the
#: mailboxes carry it to whoever still lacks it.
REPUBLISH_FOR = 3600.0


def status_of(out: GroupOutRecord) -> GroupStatus:
    """The application's view of ``out``."""
    return GroupStatus(
        group_id=out.group_id,
        message_id=out.message_id,
        stored=len(out.stored_on),
        delivered=len(out.delivered) // 32,
        read=len(out.read) // 32,
        members=out.members,
    )


class GroupOutbox:
    """See the module docstring."""

    def __init__(
        self, storage: GroupStorage, *, receipt_delay: float, control_ttl: int, counts: Counter[str]
    ) -> None:
        """Empty; ``load`` the stored records. ``counts`` is the core's counter (shared)."""
        self._storage = storage
        self._receipt_delay = receipt_delay
        self._control_ttl = control_ttl
        self._counts = counts
        self.records: dict[bytes, GroupOutRecord] = {}
        self._owed: dict[tuple[bytes, bytes, ReceiptKind], list[bytes]] = {}
        self._owed_due: float | None = None
        #: Control messages committed but not handed to the messenger before the last stop.
        self.unsent: list[ControlRecord] = []

    def load(self, records: Iterable[GroupOutRecord]) -> None:
        """Take the stored records (at start)."""
        self.records = {o.message_id: o for o in records}

    def get(self, message_id: bytes) -> GroupOutRecord | None:
        """Our message ``message_id`` (from memory, or storage once it expired there)."""
        return self.records.get(message_id) or self._storage.outbox_get(message_id)

    def set(self, out: GroupOutRecord) -> None:
        """Remember ``out`` as committed."""
        self.records[out.message_id] = out

    # --- news about our messages -----------------------------------------------------------------------

    def stored(self, message_id: bytes, peer: str) -> GroupOutRecord | None:
        """Mailbox ``peer`` stored ``message_id``: the record to commit, or None if nothing changed."""
        out = self.records.get(message_id)
        if out is None or peer in out.stored_on:
            return None
        return out.replace(stored_on=(*out.stored_on, peer))

    def receipt(self, control: ReceiptControl, sender: bytes) -> list[GroupOutRecord]:
        """``sender`` (a member, checked by the caller) received or read messages: the records that
        changed, to commit."""
        changed: list[GroupOutRecord] = []
        for mid in control.message_ids:
            out = self.get(mid)
            if out is None or out.group_id != control.group_id:
                self._counts["receipt_unknown"] += 1
                continue
            delivered, read = unflat(out.delivered), unflat(out.read)
            new_delivered = delivered | {sender}
            new_read = read | {sender} if control.kind is ReceiptKind.READ else read
            if new_delivered != delivered or new_read != read:
                changed.append(out.replace(delivered=flat(new_delivered), read=flat(new_read)))
        self._counts["receipts_received"] += 1
        return changed

    def due(self, wall_now: float) -> tuple[list[PublishGroup], list[GroupOutRecord]]:
        """Publishes again of what nobody has (and the records whose next time moved); forget what
        expired."""
        publishes: list[PublishGroup] = []
        changed: list[GroupOutRecord] = []
        for mid, out in list(self.records.items()):
            if out.expiry < wall_now:
                del self.records[mid]
                continue
            if not out.next_attempt or out.next_attempt > wall_now:
                continue
            if len(out.delivered) // 32 >= out.members or wall_now - out.created_at > REPUBLISH_FOR:
                changed.append(out.replace(next_attempt=0.0))
                continue
            wait = min(REPUBLISH_MAX, 2 * max(REPUBLISH_FIRST, out.next_attempt - out.created_at))
            changed.append(out.replace(next_attempt=wall_now + wait))
            publishes.append(
                PublishGroup(
                    topic=group_topic(out.tag), tag=out.tag, envelope=out.envelope, message_id=mid, again=True
                )
            )
        return publishes, changed

    # --- receipts we owe -------------------------------------------------------------------------------

    def owe(
        self, group_id: bytes, sender: bytes, kind: ReceiptKind, ids: Sequence[bytes], wall_now: float
    ) -> None:
        """We accepted (or read) ``ids`` of ``sender``'s: tell it with the next batch."""
        self._owed.setdefault((group_id, sender, kind), []).extend(ids)
        if self._owed_due is None:
            self._owed_due = wall_now + self._receipt_delay

    def receipts_due(self, wall_now: float) -> list[SendControl]:
        """The batched receipts, if their time has come."""
        if self._owed_due is None or wall_now < self._owed_due:
            return []
        sends: list[SendControl] = []
        for (group_id, sender, kind), ids in self._owed.items():
            unique = list(dict.fromkeys(ids))
            for start in range(0, len(unique), MAX_RECEIPT_IDS):
                part = tuple(unique[start : start + MAX_RECEIPT_IDS])
                body = encode_control(ReceiptControl(group_id=group_id, kind=kind, message_ids=part))
                sends.append(SendControl(recipient=sender, body=body, ttl=self._control_ttl))
        self._counts["receipts_sent"] += len(sends)
        self._owed.clear()
        self._owed_due = None
        return sends

    # --- control messages not handed to the messenger yet ----------------------------------------------

    def keep_controls(self, write: GroupWrite, actions: list[A], random_bytes: RandomBytes) -> list[A]:
        """Give each new ``SendControl`` in ``actions`` an id and put it in ``write``: it is kept in the
        groups store until the driver says the messenger has it (``controls_queued``), so a crash
        between the two stores loses none. Returns the actions with the ids set."""
        kept: list[A] = []
        for action in actions:
            if isinstance(action, SendControl) and not action.control_id:
                stamped = dataclasses.replace(action, control_id=random_bytes(16))
                write.controls.append(
                    ControlRecord(
                        control_id=stamped.control_id,
                        recipient=stamped.recipient,
                        body=stamped.body,
                        ttl=stamped.ttl,
                    )
                )
                kept.append(stamped)
            else:
                kept.append(action)
        return kept

    def unsent_controls(self) -> list[SendControl]:
        """The controls a crash kept from the messenger (loaded at start), once."""
        sends = [
            SendControl(recipient=c.recipient, body=c.body, ttl=c.ttl, control_id=c.control_id)
            for c in self.unsent
        ]
        self.unsent = []
        return sends

    def next_deadline(self) -> float | None:
        """The next batch of receipts or publish again (at once while controls wait to be sent)."""
        if self.unsent:
            return 0.0
        times = [o.next_attempt for o in self.records.values() if o.next_attempt]
        if self._owed_due is not None:
            times.append(self._owed_due)
        return min(times) if times else None
