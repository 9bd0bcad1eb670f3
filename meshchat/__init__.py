"""meshchat: decentralised peer-to-peer mesh messaging with no central operator.

Messages are signed by keys users hold, sealed so only the recipient learns who sent them, and carried
by a gossip mesh of equal peers. This package's layers, lowest first: ``errors``, ``identity``,
``wire``, ``crypto``; the gossip router, store-and-forward, simulator, network driver and ``Node`` API
build on them.
"""

from __future__ import annotations

from meshchat.crypto import OpenedMessage, open_envelope, seal
from meshchat.errors import MeshchatError
from meshchat.identity import Identity, PublicIdentity, load_identity, safety_number, save_identity
from meshchat.store import MailboxLimits, OutboxStatus, StoreConfig
from meshchat.wire import Envelope, EnvelopeKind, Invite, decode_envelope, encode_envelope, message_id

__all__ = [
    "Envelope",
    "EnvelopeKind",
    "Identity",
    "Invite",
    "MailboxLimits",
    "MeshchatError",
    "Node",
    "OpenedMessage",
    "OutboxStatus",
    "PublicIdentity",
    "StoreConfig",
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


def __getattr__(name: str) -> object:
    # ``Node`` pulls in py-libp2p (~0.6 s to import): load it on first use, so ``meshchat id`` and the
    # simulator start fast.
    if name == "Node":
        from meshchat.node import Node  # noqa: PLC0415

        return Node
    raise AttributeError(f"module 'meshchat' has no attribute {name!r}")
