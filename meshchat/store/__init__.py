"""Sans-IO store-and-forward: outbox, receipts, mailboxes, seen window, sync; storage backends.

``Messenger`` (one user's outbox, inbox and syncs) and ``MailboxCore`` (a mailbox) are the protocol
cores that ``meshchat.Node`` and the simulator drive; ``SqliteStorage`` and ``MemoryStorage`` keep
their state.
"""

from __future__ import annotations

from meshchat.store.mailbox import MailboxCore, MailboxLimits, MailboxStatistics
from meshchat.store.messenger import Messenger, MessengerStatistics, StatusChanged, StoreConfig, StoreProblem
from meshchat.store.sqlite import SqliteStorage
from meshchat.store.storage import InboxRecord, MemoryStorage, OutboxRecord, OutboxStatus, Storage

__all__ = [
    "InboxRecord",
    "MailboxCore",
    "MailboxLimits",
    "MailboxStatistics",
    "MemoryStorage",
    "Messenger",
    "MessengerStatistics",
    "OutboxRecord",
    "OutboxStatus",
    "SqliteStorage",
    "StatusChanged",
    "Storage",
    "StoreConfig",
    "StoreProblem",
]
