"""The local stores a ``meshchat.Node`` runs on, opened together and closed together.

A profile folder holds ``store.db`` (outbox, inbox, seen window, mailbox items), ``groups.db``,
``files.db`` with the downloads and (for a mailbox) the chunk hold, ``credentials.db`` (the wallet) and
``documents.db`` (co-signing rounds), each encrypted with the identity's store key. A node opened with
an identity and no profile keeps them in memory. ``open_local_parts`` opens them all inside the caller's
``ExitStack``, so whatever was opened is closed when the node stops, or when opening the next one or
starting the network fails. Split out of ``meshchat.node`` so the facade stays thin.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import trio

from meshchat.contacts import Contacts
from meshchat.credential_api import open_wallet
from meshchat.credentials.wallet import Wallet
from meshchat.crypto.stamps import stamp_envelope
from meshchat.document_api import open_documents_store
from meshchat.documents.sqlite import DocumentStore
from meshchat.errors import DecodeError
from meshchat.file_api import FileParts, open_file_parts
from meshchat.files.hold import HoldLimits
from meshchat.group_api import Groups
from meshchat.groups.sqlite import GROUPS_FILE, SqliteGroupStorage
from meshchat.groups.storage import GroupStorage
from meshchat.identity import Identity, PublicIdentity
from meshchat.net.file_driver import FileConfig
from meshchat.store.encrypted import store_key
from meshchat.store.messenger import Action, Messenger
from meshchat.store.sqlite import STORE_FILE, SqliteStorage
from meshchat.store.storage import MemoryStorage, OutboxRecord, Storage

__all__ = ["LocalParts", "knows", "open_local_parts", "queue_chat"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalParts:
    """What a node keeps on disk (or in memory), opened by ``open_local_parts``."""

    #: The store-and-forward state (``store.db``).
    storage: Storage
    #: Groups (``groups.db``; None without a profile: groups then live in memory).
    groups: GroupStorage | None
    #: Files sent and received, downloads, the chunk hold (``files.db``).
    files: FileParts
    #: Credentials held, issued, requested; status lists (``credentials.db``).
    wallet: Wallet
    #: Co-signing rounds (``documents.db``).
    documents: DocumentStore


def open_local_parts(
    profile: Path | None,
    identity: Identity,
    *,
    storage: Storage | None,
    file_config: FileConfig,
    mailbox: bool,
    hold_limits: HoldLimits | None,
    closing: contextlib.ExitStack,
) -> LocalParts:
    """Open every local store of ``profile`` (in memory without one) for ``identity``, each closed by
    ``closing``. A ``storage`` given by the caller is used as it is and left open."""
    key = store_key(identity)
    if storage is None:
        if profile is None:
            storage = MemoryStorage()
        else:  # encrypted at rest with a key derived from the identity the passphrase unlocked
            storage = closing.enter_context(contextlib.closing(SqliteStorage(profile / STORE_FILE, key=key)))
    groups = None
    if profile is not None:
        groups = closing.enter_context(contextlib.closing(SqliteGroupStorage(profile / GROUPS_FILE, key=key)))
    wallet = closing.enter_context(open_wallet(profile, identity))
    documents = closing.enter_context(contextlib.closing(open_documents_store(profile, identity)))
    files = open_file_parts(
        profile, identity, config=file_config, mailbox=mailbox, hold_limits=hold_limits, closing=closing
    )
    return LocalParts(storage=storage, groups=groups, files=files, wallet=wallet, documents=documents)


def knows(contacts: Contacts | None, groups: Groups, person: bytes) -> bool:
    """Whether ``person`` (a root key) may write to us without a stamp: one of ``contacts``, or a
    member of one of our ``groups`` (asked only of chats from people we never talked with)."""
    if contacts is not None:
        try:
            if contacts.by_key(PublicIdentity.from_bytes(person)) is not None:
                return True
        except DecodeError:
            return False
    return any(person in view.members for view in groups.all())


def _mint(to_mint: list[tuple[bytes, int]]) -> list[bytes]:
    return [stamp_envelope(data, cost) if cost else data for data, cost in to_mint]


async def queue_chat(
    messenger: Messenger,
    recipient: PublicIdentity,
    body: bytes,
    *,
    wall_now: float,
    ref: str,
    ttl: int | None,
) -> tuple[OutboxRecord, list[Action]]:
    """``messenger.send`` for a chat, with its stamps (if it needs any) minted in a worker thread: the
    node's trio loop keeps running through the ~0.2 s each takes (``meshchat.store.send_ops``)."""
    owner = messenger.devices.owner_of(recipient.ed25519)
    known_ref = bool(ref) and messenger.storage.outbox_by_ref(ref) is not None
    if known_ref or not messenger.stamp_cost_for(owner):
        return messenger.send(recipient, body, wall_now=wall_now, ref=ref, ttl=ttl)
    sealed = messenger.seal_chat(recipient, body, wall_now=wall_now, ref=ref, ttl=ttl)
    envelopes = await trio.to_thread.run_sync(_mint, sealed.to_mint)
    return messenger.queue_sealed(sealed, envelopes, wall_now=wall_now)
