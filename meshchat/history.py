"""Conversation history for the application: ``Node.conversation`` and ``Node.mark_read_id``, and what
the node hides from people the user blocked.

The history itself lives in the profile's store (``meshchat.store.storage``: ``HistoryRecord`` rows
written in the transaction of the outbox or inbox rows they go with, read as ``ConversationEntry``).
This module resolves who a conversation is with (a contact, a key, a contact's name or PeerId, or a
stranger's PeerId), pages through it, finds whom to send a read receipt for a message id, and says
which live events come from a blocked person. Split out of ``meshchat.node`` to keep the facade thin.

What the history holds: every chat sent from this device (with its text: the outbox keeps only the
sealed envelope) and every chat received, including the copies our other devices send us of what
they sent (outgoing entries of the conversation with their recipient, status None: this device holds
no outbox record of them). Not files, group messages or control messages (``node.files``,
``node.groups.history``), and not what blocked people sent while blocked (dropped unread). Messages
received before a person was blocked stay, as they stay in the inbox. The history is not pruned: it
is the user's record, bounded by what they send and accept; a page holds at most
``MAX_CONVERSATION_PAGE`` entries. What a store of schema version 4 sent before its upgrade is only in
sealed envelopes: the migration recovers the received side (from the inbox), not the sent.
"""

from __future__ import annotations

from meshchat.contacts import Contact, Contacts
from meshchat.errors import DecodeError, UnknownMessage, UnknownPeer
from meshchat.files.events import Attachment
from meshchat.groups.events import GroupInvited, GroupMessage
from meshchat.identity import PublicIdentity
from meshchat.store.storage import MAX_CONVERSATION_PAGE, ConversationEntry, Storage

__all__ = [
    "MAX_CONVERSATION_PAGE",
    "ConversationEntry",
    "conversation",
    "from_blocked",
    "key_of",
    "read_receipt_target",
]


def key_of(contacts: Contacts | None, who: Contact | PublicIdentity | str) -> PublicIdentity:
    """The key ``who`` names: a contact's, a key itself, a contact's name or PeerId, or a stranger's
    PeerId (``UnknownPeer`` for a name that is none of these)."""
    if isinstance(who, Contact):
        return who.public
    if isinstance(who, PublicIdentity):
        return who
    if contacts is not None:
        try:
            return contacts.find(who).public
        except UnknownPeer:
            pass
    try:
        return PublicIdentity.from_peer_id(who)
    except DecodeError:
        raise UnknownPeer(who) from None


def conversation(
    storage: Storage,
    contacts: Contacts | None,
    who: Contact | PublicIdentity | str,
    *,
    before: int | None = None,
    limit: int = 100,
) -> list[ConversationEntry]:
    """The ``limit`` newest messages with ``who`` before cursor ``before`` (None: the newest), oldest
    first. ``ValueError`` for a ``limit`` outside 0..``MAX_CONVERSATION_PAGE``."""
    return storage.conversation(key_of(contacts, who).ed25519, before=before, limit=limit)


def read_receipt_target(storage: Storage, message_id: bytes) -> PublicIdentity:
    """Whom a read receipt for received message ``message_id`` goes to: the device of the sender's
    that sent it. ``UnknownMessage`` if no received message has that id (ours have no one to tell)."""
    record = storage.history_get(message_id)
    if record is None or record.outgoing:
        raise UnknownMessage(message_id.hex())
    return PublicIdentity.from_bytes(record.device or record.peer)


def from_blocked(contacts: Contacts | None, event: object) -> bool:
    """Whether ``event`` shows something from a person the user blocked: a group message, an
    invitation to a group, a file offered. Such events are not emitted (the group's history and the
    files' list keep them: the groups machinery needs every member's messages to stay in step)."""
    if contacts is None:
        return False
    match event:
        case GroupMessage():
            return contacts.is_blocked_key(event.sender)
        case GroupInvited():
            return contacts.is_blocked_key(event.by)
        case Attachment():
            return contacts.is_blocked(event.sender)
    return False
