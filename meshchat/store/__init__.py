"""Sans-IO store-and-forward: outbox, receipts, mailboxes, seen window, sync; storage backends.

``Messenger`` (one user's outbox, inbox and syncs) and ``MailboxCore`` (a mailbox) are the protocol
cores that ``meshchat.Node`` and the simulator drive; ``SqliteStorage`` and ``MemoryStorage`` keep
their state.
"""

from __future__ import annotations

from meshchat.store.mailbox import MailboxCore, MailboxLimits, MailboxRefusal, MailboxStatistics
from meshchat.store.messenger import Messenger, MessengerStatistics, StatusChanged, StoreConfig, StoreProblem
from meshchat.store.reasons import DiscardReason, RejectReason
from meshchat.store.sqlite import SqliteStorage
from meshchat.store.storage import InboxRecord, MemoryStorage, OutboxRecord, OutboxStatus, Storage

__all__ = [
    "DiscardReason",
    "InboxRecord",
    "MailboxCore",
    "MailboxLimits",
    "MailboxRefusal",
    "MailboxStatistics",
    "MemoryStorage",
    "Messenger",
    "MessengerStatistics",
    "OutboxRecord",
    "OutboxStatus",
    "RejectReason",
    "SqliteStorage",
    "StatusChanged",
    "Storage",
    "StoreConfig",
    "StoreProblem",
]
