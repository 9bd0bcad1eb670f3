"""meshchat: decentralised peer-to-peer mesh messaging with no central operator.

Messages are signed by keys users hold, sealed so only the recipient learns who sent them, and carried
by a gossip mesh of equal peers. This package's layers, lowest first: ``errors``, ``identity``,
``wire``, ``crypto``; the gossip router, store-and-forward, simulator, network driver and ``Node`` API
build on them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshchat.contacts import Contact, Contacts, Verification
    from meshchat.crypto import OpenedMessage, open_envelope, seal
    from meshchat.errors import MeshchatError
    from meshchat.files.events import Attachment, AttachmentFetched, FileProblem, FileProgress
    from meshchat.files.hold import HoldLimits
    from meshchat.identity import Identity, PublicIdentity, load_identity, safety_number, save_identity
    from meshchat.net.file_driver import FileConfig
    from meshchat.node import Node
    from meshchat.store import MailboxLimits, OutboxStatus, StoreConfig
    from meshchat.store.storage import ConversationEntry
    from meshchat.wire import Envelope, EnvelopeKind, Invite, decode_envelope, encode_envelope, message_id

__all__ = [
    "Attachment",
    "AttachmentFetched",
    "Contact",
    "Contacts",
    "ConversationEntry",
    "Envelope",
    "EnvelopeKind",
    "FileConfig",
    "FileProblem",
    "FileProgress",
    "HoldLimits",
    "Identity",
    "Invite",
    "MailboxLimits",
    "MeshchatError",
    "Node",
    "OpenedMessage",
    "OutboxStatus",
    "PublicIdentity",
    "StoreConfig",
    "Verification",
    "decode_envelope",
    "encode_envelope",
    "load_identity",
    "message_id",
    "open_envelope",
    "safety_number",
    "save_identity",
    "seal",
]

__version__ = "0.1.0"


#: Where each public name lives. Loaded on first use (PEP 562), so ``import meshchat`` and
#: ``meshchat --help`` cost what the caller uses: ``Node`` alone pulls in py-libp2p (~0.6 s).
_HOMES = {
    "Attachment": "meshchat.files.events",
    "AttachmentFetched": "meshchat.files.events",
    "Contact": "meshchat.contacts",
    "Contacts": "meshchat.contacts",
    "ConversationEntry": "meshchat.store.storage",
    "Envelope": "meshchat.wire",
    "EnvelopeKind": "meshchat.wire",
    "FileConfig": "meshchat.net.file_driver",
    "FileProblem": "meshchat.files.events",
    "FileProgress": "meshchat.files.events",
    "HoldLimits": "meshchat.files.hold",
    "Identity": "meshchat.identity",
    "Invite": "meshchat.wire",
    "MailboxLimits": "meshchat.store",
    "MeshchatError": "meshchat.errors",
    "Node": "meshchat.node",
    "OpenedMessage": "meshchat.crypto",
    "OutboxStatus": "meshchat.store",
    "PublicIdentity": "meshchat.identity",
    "StoreConfig": "meshchat.store",
    "Verification": "meshchat.contacts",
    "decode_envelope": "meshchat.wire",
    "encode_envelope": "meshchat.wire",
    "load_identity": "meshchat.identity",
    "message_id": "meshchat.wire",
    "open_envelope": "meshchat.crypto",
    "safety_number": "meshchat.identity",
    "save_identity": "meshchat.identity",
    "seal": "meshchat.crypto",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'meshchat' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
