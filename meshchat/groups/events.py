"""What the groups core tells its driver: actions to perform and events for the application.

Actions (``SendControl``, ``PublishGroup``, ``GroupSeen``, ``TopicsChanged``) are for the driver
(``meshchat.net.group_driver`` on the network, the simulator's group driver): it performs them in
list order. Events (``GroupMessage``, ``GroupChanged``, ``GroupStatus``, ``GroupInvited``,
``GroupProblem``) go to the application through ``Node.events()``. All are small frozen records
(STYLE.md section 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from meshchat.errors import StorageError
from meshchat.groups.ops import OpKind
from meshchat.store.storage import SeenEntry

__all__ = [
    "GroupAction",
    "GroupChanged",
    "GroupEvent",
    "GroupInvited",
    "GroupMessage",
    "GroupProblem",
    "GroupSeen",
    "GroupStatus",
    "GroupView",
    "MemberStatus",
    "PublishGroup",
    "SendControl",
    "TopicsChanged",
]


class MemberStatus(Enum):
    """Where the local user stands in a group."""

    #: Added by an admin; not accepted yet (``join``): no topics, no keys handed out.
    INVITED = "invited"
    #: A member taking part.
    JOINED = "joined"
    #: Left on its own.
    LEFT = "left"
    #: Removed by an admin.
    REMOVED = "removed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendControl:
    """Send ``body`` to ``recipient`` on the sealed 1:1 path as a control message (durable, retried)."""

    #: The recipient's Ed25519 public key.
    recipient: bytes
    #: The control payload (``meshchat.groups.payload``).
    body: bytes
    #: Seconds the message may wait for its recipient.
    ttl: int
    #: Its id in the groups store's unsent controls (set by the core when it commits it): the
    #: driver sends it with this as the messenger's idempotency ref, then calls ``controls_queued``.
    control_id: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishGroup:
    """Publish a group envelope on its gossip ``topic`` and store it on mailboxes under ``tag``."""

    #: The group's topic for the envelope's day.
    topic: str
    #: The group's tag for that day (the envelope's inbox tag).
    tag: bytes
    #: The envelope bytes.
    envelope: bytes
    #: Its message id.
    message_id: bytes
    #: True for a repeat of an envelope already published once.
    again: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSeen:
    """Group envelopes accepted: put them in the seen window so mailbox syncs stop fetching them."""

    #: One entry per envelope.
    entries: tuple[SeenEntry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicsChanged:
    """The groups the user takes part in changed: join/leave topics and watch tags anew."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupMessage:
    """A group message, verified (its sender's chain and signature) and in the history."""

    #: The group.
    group_id: bytes
    #: Place in this profile's group history (all groups): 1, 2, ... (``history(after=...)``).
    number: int
    #: The sender's Ed25519 public key (proven by the sender's chain signature).
    sender: bytes
    #: The application's bytes.
    body: bytes
    #: The sender's reference (idempotency key / reply id), "" if none.
    ref: str
    #: The sender's clock when sending, ms (a claim).
    sent_at_ms: int
    #: The envelope's id.
    message_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupChanged:
    """A membership operation took effect: who did what to whom."""

    #: The group.
    group_id: bytes
    #: What was done.
    kind: OpKind
    #: Who did it.
    author: bytes
    #: To whom (members added, removed, promoted or demoted).
    targets: tuple[bytes, ...]
    #: The group's name after it (a rename's new name).
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupStatus:
    """Where one of our group messages is: stored on mailboxes, delivered to and read by members."""

    #: The group.
    group_id: bytes
    #: Our message.
    message_id: bytes
    #: Mailboxes holding it.
    stored: int
    #: Members whose node accepted it.
    delivered: int
    #: Members whose application marked it read.
    read: int
    #: Members it was for (everyone but the sender when it was sent).
    members: int

    def describe(self) -> str:
        """``"delivered to 27 of 30, read by 12"``, or ``"stored"`` / ``"sent"`` before that."""
        if self.delivered:
            read = f", read by {self.read}" if self.read else ""
            return f"delivered to {self.delivered} of {self.members}{read}"
        return "stored" if self.stored else "sent"


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupInvited:
    """An admin added the local user to a group; ``join`` accepts."""

    #: The group.
    group_id: bytes
    #: Its name.
    name: str
    #: The admin who added us.
    by: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupProblem:
    """Local group storage failed; what it concerned was not accepted and comes again."""

    #: The error.
    error: StorageError


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupView:
    """A group as the application sees it."""

    group_id: bytes
    name: str
    status: MemberStatus
    members: frozenset[bytes]
    admins: frozenset[bytes]
    creator: bytes
    #: Only admins post (an announcements group).
    admins_only: bool = False


GroupEvent: TypeAlias = GroupMessage | GroupChanged | GroupStatus | GroupInvited | GroupProblem
GroupAction: TypeAlias = SendControl | PublishGroup | GroupSeen | TopicsChanged | GroupEvent
