"""What the groups core keeps: records, one write batch per input, and the ``GroupStorage`` protocol.

The core (``meshchat.groups.core``) changes state only through ``commit(GroupWrite)``: one batch per
input, applied in one transaction (sqlite: ``meshchat.groups.sqlite``), so what a member reports has
survived a crash, and a batch that fails changes nothing. What is kept:

* groups: per group the local user's standing (``MemberStatus``), its own sending chain (serialised
  ``SenderChain``) with its generation and the members it was handed to;
* ops: every accepted membership operation, by group (the group's state is recomputed from them);
* chains: other members' receiving chains (serialised ``ReceiverChain``), by chain id;
* messages: the group history, numbered in arrival order across all groups; a message id is stored
  once (a second copy is not numbered again: the exactly-once guarantee across restarts);
* outbox: our own group messages, with who has stored, received and read each.

``MemoryGroupStorage`` is the same in memory (the simulator, tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from meshchat.groups.events import MemberStatus

__all__ = [
    "ChainRecord",
    "ControlRecord",
    "GroupMessageRecord",
    "GroupOutRecord",
    "GroupRecord",
    "GroupStorage",
    "GroupWrite",
    "MemoryGroupStorage",
    "StoredGroups",
    "flat",
    "unflat",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRecord:
    """The local user's side of one group."""

    #: The group id (the op id of its CREATE).
    group_id: bytes
    #: Where the user stands.
    status: MemberStatus
    #: Who added the user (their key); the creator's own key for a group it made.
    invited_by: bytes
    #: The user's sending chain (``SenderChain.to_bytes``), or b"" for none (a new one at next send).
    chain: bytes
    #: Number of the user's chains in this group so far (the current one's generation).
    generation: int
    #: Members the current chain was handed to (flat 32-byte keys).
    chain_members: bytes
    #: Unix time of the last change.
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainRecord:
    """Another member's receiving chain."""

    #: The chain id (16 bytes).
    chain_id: bytes
    #: The group.
    group_id: bytes
    #: The member who sends on it.
    sender: bytes
    #: Its generation (the member's chain number in this group).
    generation: int
    #: ``ReceiverChain.to_bytes``.
    state: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupMessageRecord:
    """One message of a group's history (ours or a member's)."""

    #: Place in the history (all groups), 1, 2, ...; 0 before it is stored.
    number: int
    #: The group.
    group_id: bytes
    #: The envelope's id.
    message_id: bytes
    #: Who sent it.
    sender: bytes
    #: The application's bytes.
    body: bytes
    #: The sender's reference, "" if none.
    ref: str
    #: The sender's clock, ms (a claim).
    sent_at_ms: int
    #: Our clock when it was accepted (or sent), unix seconds.
    received_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupOutRecord:
    """One of our group messages: where it is."""

    #: The envelope's id.
    message_id: bytes
    #: The group.
    group_id: bytes
    #: The envelope (published again while nobody has it).
    envelope: bytes
    #: The envelope's tag (its day's group tag).
    tag: bytes
    #: Our idempotency key, "" if none.
    ref: str
    #: When it was sent, unix seconds.
    created_at: float
    #: The envelope's expiry, unix seconds.
    expiry: int
    #: Members it was for, when sent.
    members: int
    #: Mailboxes (PeerIds) that stored it.
    stored_on: tuple[str, ...] = ()
    #: Members who received it (flat 32-byte keys, sorted).
    delivered: bytes = b""
    #: Members who read it (flat 32-byte keys, sorted).
    read: bytes = b""
    #: When to publish it again if still nobody has it (0: never again).
    next_attempt: float = 0.0

    def replace(self, **changes: object) -> GroupOutRecord:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]  # (checked by the dataclass)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlRecord:
    """A control message committed by the core and not yet handed to the messenger (whose outbox
    keeps it from then on): sent again after a restart, so a crash in between loses nothing."""

    #: Random id (16 bytes); the messenger's ref is derived from it, so sending again is a no-op.
    control_id: bytes
    #: The recipient's Ed25519 key.
    recipient: bytes
    #: The control payload.
    body: bytes
    #: Its lifetime, seconds.
    ttl: int


@dataclass(slots=True, kw_only=True)
class GroupWrite:
    """Everything one input changes, committed together."""

    groups: list[GroupRecord] = field(default_factory=list)
    #: ``(group id, op id, encoded op)`` of newly accepted ops.
    ops: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)
    chains: list[ChainRecord] = field(default_factory=list)
    #: Chain ids to forget (their member left, or a newer chain replaced them).
    drop_chains: list[bytes] = field(default_factory=list)
    #: Messages to add to the history (``number`` 0); one whose id is stored already is skipped.
    messages: list[GroupMessageRecord] = field(default_factory=list)
    outbox: list[GroupOutRecord] = field(default_factory=list)
    #: Control messages to send (kept until the messenger has them) and the ids it has now.
    controls: list[ControlRecord] = field(default_factory=list)
    drop_controls: list[bytes] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.groups
            or self.ops
            or self.chains
            or self.drop_chains
            or self.messages
            or self.outbox
            or self.controls
            or self.drop_controls
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredGroups:
    """Everything the core loads at start."""

    groups: tuple[GroupRecord, ...]
    #: Encoded ops by group id, in the order they were accepted.
    ops: dict[bytes, list[bytes]]
    chains: tuple[ChainRecord, ...]
    #: Outbox records still waiting for someone to hold them (not expired).
    outbox: tuple[GroupOutRecord, ...]
    #: Control messages committed but not yet handed to the messenger.
    controls: tuple[ControlRecord, ...] = ()


class GroupStorage(Protocol):
    """Where the groups core keeps its state (see the module docstring)."""

    def commit(self, write: GroupWrite) -> list[GroupMessageRecord]:
        """Apply ``write`` in one transaction; return its new messages, numbered (known ids left out).
        ``StorageError`` if it failed: then nothing changed."""
        ...

    def load(self, wall_now: float) -> StoredGroups:
        """Everything the core needs at start."""
        ...

    def history(self, group_id: bytes, after: int, limit: int) -> list[GroupMessageRecord]:
        """The group's messages numbered after ``after``, oldest first."""
        ...

    def has_messages(self, message_ids: Iterable[bytes]) -> set[bytes]:
        """Which of ``message_ids`` are in the history."""
        ...

    def outbox_get(self, message_id: bytes) -> GroupOutRecord | None:
        """Our sent group message ``message_id``, if any."""
        ...

    def outbox_by_ref(self, group_id: bytes, ref: str) -> GroupOutRecord | None:
        """Our sent group message with idempotency key ``ref``, if any."""
        ...


class MemoryGroupStorage:
    """``GroupStorage`` in memory."""

    def __init__(self) -> None:
        """Empty."""
        self._groups: dict[bytes, GroupRecord] = {}
        self._ops: dict[bytes, dict[bytes, bytes]] = {}
        self._chains: dict[bytes, ChainRecord] = {}
        self._messages: list[GroupMessageRecord] = []
        self._ids: set[bytes] = set()
        self._outbox: dict[bytes, GroupOutRecord] = {}
        self._controls: dict[bytes, ControlRecord] = {}
        self._last = 0

    def commit(self, write: GroupWrite) -> list[GroupMessageRecord]:
        """See ``GroupStorage.commit``."""
        for record in write.groups:
            self._groups[record.group_id] = record
        for group_id, op_id, data in write.ops:
            self._ops.setdefault(group_id, {}).setdefault(op_id, data)
        for chain_id in write.drop_chains:
            self._chains.pop(chain_id, None)
        for chain in write.chains:
            self._chains[chain.chain_id] = chain
        numbered: list[GroupMessageRecord] = []
        for message in write.messages:
            if message.message_id in self._ids:
                continue
            self._last += 1
            stored = dataclasses.replace(message, number=self._last)
            self._ids.add(message.message_id)
            self._messages.append(stored)
            numbered.append(stored)
        for out in write.outbox:
            self._outbox[out.message_id] = out
        for control in write.controls:
            self._controls[control.control_id] = control
        for control_id in write.drop_controls:
            self._controls.pop(control_id, None)
        return numbered

    def load(self, wall_now: float) -> StoredGroups:
        """See ``GroupStorage.load``."""
        return StoredGroups(
            groups=tuple(self._groups.values()),
            ops={g: list(ops.values()) for g, ops in self._ops.items()},
            chains=tuple(self._chains.values()),
            outbox=tuple(o for o in self._outbox.values() if o.expiry >= wall_now),
            controls=tuple(self._controls.values()),
        )

    def history(self, group_id: bytes, after: int, limit: int) -> list[GroupMessageRecord]:
        """See ``GroupStorage.history``."""
        found = [m for m in self._messages if m.group_id == group_id and m.number > after]
        return found[:limit]

    def has_messages(self, message_ids: Iterable[bytes]) -> set[bytes]:
        """See ``GroupStorage.has_messages``."""
        return {mid for mid in message_ids if mid in self._ids}

    def outbox_get(self, message_id: bytes) -> GroupOutRecord | None:
        """See ``GroupStorage.outbox_get``."""
        return self._outbox.get(message_id)

    def outbox_by_ref(self, group_id: bytes, ref: str) -> GroupOutRecord | None:
        """See ``GroupStorage.outbox_by_ref``."""
        for out in self._outbox.values():
            if out.group_id == group_id and out.ref == ref and ref:
                return out
        return None


def flat(keys: Iterable[bytes]) -> bytes:
    """Keys as one sorted flat string (how records keep sets of 32-byte keys)."""
    return b"".join(sorted(set(keys)))


def unflat(data: bytes) -> frozenset[bytes]:
    """The keys of a flat string."""
    return frozenset(data[i : i + 32] for i in range(0, len(data), 32))
