"""The store-and-forward core's vocabulary: its configuration, the outbox state table, the actions
it asks its driver to perform, and its statistics (``meshchat.store.messenger`` is the core itself).

Read ``OUTBOX_TRANSITIONS`` as the outbox's whole state machine (STYLE.md section 3): a message moves
only on proven news, and never backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias

from meshchat.crypto import DEFAULT_TTL
from meshchat.crypto.stamps import DEFAULT_STAMP_COST, MAX_STAMP_COST
from meshchat.errors import StorageError
from meshchat.identity import PublicIdentity
from meshchat.identity.devices import Device, DeviceList
from meshchat.store.protocol import MAX_FETCH_IDS, ErrorCode, MailboxRequest, StoreCode
from meshchat.store.storage import InboxRecord, OutboxStatus

__all__ = [
    "OUTBOX_TRANSITIONS",
    "RETRYING",
    "Action",
    "CallMailbox",
    "ControlReceived",
    "DeviceListChanged",
    "EnvelopeRefused",
    "EnvelopeStored",
    "GroupEnvelopes",
    "Linked",
    "MessageReceived",
    "MessengerStatistics",
    "OutboxInput",
    "PublishEnvelope",
    "StatusChanged",
    "StoreConfig",
    "StoreProblem",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    """Store-and-forward parameters."""

    #: Mailboxes each message is stored on (redundancy against a mailbox going away).
    mailbox_copies: int = 3
    #: Seconds before the first retry; each later one waits twice as long.
    retry_initial: float = 10.0
    #: Longest wait between retries, seconds.
    retry_max: float = 30 * 60.0
    #: Seconds between syncs with each mailbox.
    sync_interval: float = 60.0
    #: Seconds a message lives unless the sender says otherwise.
    ttl: int = DEFAULT_TTL
    #: Envelopes fetched per mailbox request.
    fetch_batch: int = 256
    #: Longest wait between retries once a mailbox holds the message, seconds. Each retry publishes
    #: it again, so a recipient whose receipt was lost sends another (it may also be long offline:
    #: hence longer than ``retry_max``).
    stored_retry_max: float = 4 * 3600.0
    #: Seconds between syncs while sent messages await their receipt (a receipt stored on a mailbox
    #: waits there until the sender syncs): the first sync comes this soon after a send, a mailbox
    #: becoming reachable or ``retry_now``; each next one twice as late, up to ``receipt_sync_max``.
    receipt_sync_interval: float = 5.0
    #: Longest wait between those syncs for ``receipt_sync_window`` seconds after a send, a mailbox
    #: (re)appearing or a recipient coming back, seconds. 5 s: when every process is up again, the
    #: last receipt is in within the 10 s the hardening issue asks for whichever process restarted
    #: last (with 10 s, ``bench_catch_up.py`` measured 7.4 s and a worst case of ~10.5 s for the
    #: recipient restarting last). After the window the waits double up to ``sync_interval``, so a
    #: recipient away for days costs each mailbox one sync a minute, not twelve (a sync is one
    #: reconcile exchange of a few hundred bytes).
    receipt_sync_max: float = 5.0
    #: Seconds the ``receipt_sync_max`` pace lasts (an hour: a crashed process is back well within it).
    receipt_sync_window: float = 3600.0
    #: Stamp cost (leading zero bits, ``meshchat.crypto.stamps``) a chat from a stranger must carry,
    #: when the messenger checks stamps (``Messenger(known=...)``); publish it in the invite.
    stamp_cost: int = DEFAULT_STAMP_COST

    def __post_init__(self) -> None:
        if self.mailbox_copies < 1 or self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            raise ValueError("mailbox_copies >= 1 and 0 < retry_initial <= retry_max are required")
        if not 0 < self.receipt_sync_interval <= self.receipt_sync_max or self.receipt_sync_window < 0:
            raise ValueError("0 < receipt_sync_interval <= receipt_sync_max, receipt_sync_window >= 0")
        if not 0 < self.fetch_batch <= MAX_FETCH_IDS or self.sync_interval <= 0:
            raise ValueError(f"0 < fetch_batch <= {MAX_FETCH_IDS} and sync_interval > 0 are required")
        if not 0 <= self.stamp_cost <= MAX_STAMP_COST:
            raise ValueError(f"stamp_cost is 0 to {MAX_STAMP_COST} bits")


# --- the outbox state machine, as a table ---------------------------------------------------------


class OutboxInput(Enum):
    """What can happen to a sent message."""

    #: The driver handed it to at least one peer on the inbox topic.
    PUBLISHED = "published"
    #: A mailbox acknowledged storing it.
    MAILBOX_STORED = "mailbox stored"
    #: The recipient's delivery receipt arrived.
    DELIVERY_RECEIPT = "delivery receipt"
    #: The recipient's read receipt arrived.
    READ_RECEIPT = "read receipt"
    #: Its expiry passed.
    EXPIRY_PASSED = "expiry passed"
    #: A mailbox refused it for good (too large, malformed).
    REFUSED_FOR_GOOD = "refused for good"
    #: A mailbox refused it for now (over quota, full): shown as the error, retried later.
    REFUSED_FOR_NOW = "refused for now"


_S, _I = OutboxStatus, OutboxInput
#: ``(status, input) -> new status``. Pairs not listed leave the status as it is: network news comes
#: late and out of order (a mailbox's ack after the receipt), and never moves a message backwards.
OUTBOX_TRANSITIONS: dict[tuple[OutboxStatus, OutboxInput], OutboxStatus] = {
    (_S.QUEUED, _I.PUBLISHED): _S.RELAYED,
    (_S.QUEUED, _I.MAILBOX_STORED): _S.STORED,
    (_S.RELAYED, _I.MAILBOX_STORED): _S.STORED,
    **{(s, _I.DELIVERY_RECEIPT): _S.DELIVERED for s in (_S.QUEUED, _S.RELAYED, _S.STORED, _S.EXPIRED)},
    **{(s, _I.READ_RECEIPT): _S.READ for s in (_S.QUEUED, _S.RELAYED, _S.STORED, _S.DELIVERED, _S.EXPIRED)},
    **{(s, _I.EXPIRY_PASSED): _S.EXPIRED for s in (_S.QUEUED, _S.RELAYED, _S.STORED)},
    **{(s, _I.REFUSED_FOR_GOOD): _S.FAILED for s in (_S.QUEUED, _S.RELAYED)},
}
#: Statuses in which a message is still being retried.
RETRYING = frozenset({_S.QUEUED, _S.RELAYED, _S.STORED})


# --- actions ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishEnvelope:
    """Publish ``envelope`` on gossip ``topic``; for an outbox message, report ``published``."""

    #: The inbox shard topic.
    topic: str
    #: The envelope bytes.
    envelope: bytes
    #: The outbox message's id, or None for a receipt (nobody needs to hear back).
    message_id: bytes | None
    #: A retry: the gossip router publishes it again although it has seen it.
    again: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CallMailbox:
    """Send ``request`` to mailbox ``peer``; report ``mailbox_replied`` or ``mailbox_failed``."""

    #: The mailbox's PeerId.
    peer: str
    #: The request.
    request: MailboxRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    """A message for the application, already in the inbox and the seen window."""

    #: The stored message (``number`` is its place in the inbox).
    message: InboxRecord
    #: Who sent it (proven).
    sender: PublicIdentity


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlReceived:
    """A verified control message (``send(..., control=True)``) for the node's machinery (groups).

    Not in the inbox nor the seen window: every copy that arrives is announced (the machinery's own
    state is its dedup; its contents are idempotent). It comes before the delivery receipt's actions
    in the same list: a driver that hands it on (and commits) first sends no receipt for what it lost.
    """

    #: Who sent it (proven by the seal's signature).
    sender: PublicIdentity
    #: The machinery's bytes.
    body: bytes
    #: The envelope's id.
    message_id: bytes
    #: The sender's clock when sealing, ms since the unix epoch (the sender's claim).
    sent_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupEnvelopes:
    """Envelopes for watched (group) tags, unopened, in arrival order: for the groups core.

    Ids in the seen window (``Messenger.group_accepted``) are left out; the rest may come again
    (another copy by gossip, another mailbox) until the groups core has accepted them.
    """

    #: The envelope bytes.
    envelopes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeStored:
    """A mailbox acknowledged storing a shared envelope (``Messenger.store_shared``)."""

    #: The envelope's id.
    message_id: bytes
    #: The mailbox's PeerId.
    peer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeRefused:
    """A mailbox refused a shared envelope (``Messenger.store_shared``). A permanent refusal
    (``PERMANENT_STORE_CODES``) is final; after another it is queued again when the mailboxes change."""

    #: The envelope's id.
    message_id: bytes
    #: The mailbox's PeerId.
    peer: str
    #: Why.
    code: StoreCode
    #: The mailbox's explanation.
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChanged:
    """A sent message moved on (or a mailbox reported a problem with it)."""

    #: The message's id.
    message_id: bytes
    #: Its status now.
    status: OutboxStatus
    #: The last problem reported for it ("" if none).
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreProblem:
    """Local storage failed; what it concerned was not accepted and will be fetched or sent again."""

    #: The error.
    error: StorageError


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceListChanged:
    """A person's device list changed (a contact's, or our own: ``own``): devices added or removed."""

    #: The person's root key.
    root: bytes
    #: The new list.
    devices: DeviceList
    added: tuple[Device, ...]
    removed: tuple[Device, ...]
    #: Whether it is our own person's list (the primary linked or removed one of our devices).
    own: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Linked:
    """This new device was admitted by its person's primary device: ``devices`` names it, and
    ``snapshot`` is what the primary's node sent to start from (its name, invite, contacts)."""

    root: PublicIdentity
    devices: DeviceList
    snapshot: bytes


Action: TypeAlias = (
    PublishEnvelope
    | CallMailbox
    | MessageReceived
    | StatusChanged
    | StoreProblem
    | ControlReceived
    | GroupEnvelopes
    | EnvelopeStored
    | EnvelopeRefused
    | DeviceListChanged
    | Linked
)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessengerStatistics:
    """What the messenger did, and what it discarded and why."""

    #: Messages handed to the application.
    received: int
    #: Receipts accepted.
    receipts: int
    #: Mailbox syncs completed.
    syncs: int
    #: Envelopes discarded, by reason (duplicate, not ours, a mailbox's mistakes ...). The keys are
    #: ``DiscardReason`` members (a ``StrEnum``: typed ``str`` so callers' string-keyed counters add them).
    discarded: dict[str, int]
    #: Envelopes with our tag that failed to open or verify, by ``RejectReason`` (forged, altered, expired).
    rejected: dict[str, int]
    #: Outbox records in each status that is still retrying.
    pending: dict[str, int]
    #: Mailbox error answers, by code.
    mailbox_errors: dict[ErrorCode, int] = field(default_factory=dict)
    #: Times a mailbox was caught lying and set aside for ``MAILBOX_PENALTY``.
    penalties: int = 0
    #: Control messages handed on (``ControlReceived``), every copy counted.
    controls: int = 0
    #: Shared envelopes given up unstored (``MAX_SHARED_PENDING`` newer ones were waiting).
    shared_given_up: int = 0
    #: Chats from blocked people, opened, marked seen and dropped (``Messenger(blocked=...)``).
    blocked: int = 0
    #: Chats from strangers without a valid stamp, opened, marked seen and dropped (``known=``).
    unstamped: int = 0
    #: Stamps minted for chats sent to people who had not answered yet.
    stamps_minted: int = 0
