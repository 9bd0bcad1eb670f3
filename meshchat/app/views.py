"""The JSON forms of the library's records, as the JSON-RPC methods and events give them.

Conventions (docs/daemon.md): ids and keys are lowercase hex, people are PeerIds (``12D3KooW...``),
times are ms since the unix epoch (``..._ms``) or unix seconds (``..._at``), enums their values. A
message body is ``text`` (UTF-8, invalid bytes replaced) plus ``body_b64`` (the exact bytes) when it
is not valid UTF-8. ``to_json`` turns any other record (a frozen dataclass) into an object by its
fields, so every event and result has a JSON form without a hand-written one for each.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import re
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from meshchat.app.params import Json
from meshchat.contacts import Contact
from meshchat.errors import DecodeError
from meshchat.identity import PublicIdentity
from meshchat.inbox import DirectMessage
from meshchat.store.storage import ConversationEntry, InboxRecord, OutboxRecord, OutboxStatus

if TYPE_CHECKING:
    from meshchat.node import Node

__all__ = [
    "MAX_DEPTH",
    "UNSHOWN_FIELDS",
    "body_fields",
    "contact_json",
    "direct_message",
    "entry_message",
    "inbox_message",
    "message_json",
    "outbox_entry",
    "snake_case",
    "to_json",
]

#: Deepest nesting ``to_json`` follows (records hold records a few levels deep; a cycle or a
#: surprise gets its ``repr`` instead of a crash).
MAX_DEPTH = 8
#: Fields ``to_json`` leaves out of any record: keys, sealed bytes and signed blobs that stay in the
#: profile (a file's key, an envelope, a credential's disclosures) or are large and of no use to a client.
#: Fields of records that hold people's keys as raw Ed25519 bytes: ``to_json`` shows them as PeerIds.
PEOPLE_FIELDS = frozenset(
    {
        "sender",
        "author",
        "by",
        "targets",
        "requester",
        "holder",
        "root",
        "creator",
        "members",
        "admins",
        "peer",
    }
)
#: Bytes of an Ed25519 public key.
KEY_SIZE = 32
UNSHOWN_FIELDS = frozenset({"key", "envelope", "compact", "disclosures", "tokens", "manifest", "thumbnail"})


def body_fields(body: bytes) -> dict[str, Json]:
    """``{"text": ...}``, plus ``"body_b64"`` when ``body`` is not valid UTF-8."""
    try:
        return {"text": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            "text": body.decode("utf-8", errors="replace"),
            "body_b64": base64.b64encode(body).decode("ascii"),
        }


def message_json(
    *,
    message_id: bytes,
    outgoing: bool,
    peer: str,
    body: bytes,
    sent_at_ms: int,
    status: OutboxStatus | None,
    cursor: int | None = None,
    number: int = 0,
) -> dict[str, Json]:
    """A Message: ``{id, cursor, outgoing, peer, text, sent_at_ms, status, number}`` (docs/daemon.md)."""
    return {
        "id": message_id.hex(),
        "cursor": cursor,
        "outgoing": outgoing,
        "peer": peer,
        **body_fields(body),
        "sent_at_ms": sent_at_ms,
        "status": None if status is None else status.value,
        "number": number,
    }


def direct_message(event: DirectMessage, cursor: int | None = None) -> dict[str, Json]:
    """A received message (or a copy of one another of our devices sent) as a Message."""
    to = event.to
    peer = event.sender.peer_id if to is None else to.peer_id
    return message_json(
        message_id=event.message_id,
        outgoing=to is not None,
        peer=peer,
        body=event.body,
        sent_at_ms=event.sent_at_ms,
        status=None,
        number=event.number,
        cursor=cursor,
    )


def inbox_message(record: InboxRecord, cursor: int | None = None) -> dict[str, Json]:
    """An inbox record as a Message."""
    other = record.to or record.sender
    return message_json(
        message_id=record.message_id,
        outgoing=bool(record.to),
        peer=PublicIdentity.from_bytes(other).peer_id,
        body=record.body,
        sent_at_ms=record.sent_at_ms,
        status=None,
        number=record.number,
        cursor=cursor,
    )


def entry_message(entry: ConversationEntry, peer: str) -> dict[str, Json]:
    """A conversation entry with ``peer`` as a Message."""
    return message_json(
        message_id=entry.message_id,
        outgoing=entry.outgoing,
        peer=peer,
        body=entry.body,
        sent_at_ms=entry.sent_at_ms,
        status=entry.status,
        cursor=entry.cursor,
        number=entry.number,
    )


def outbox_entry(record: OutboxRecord) -> dict[str, Json]:
    """An outbox record: ``{id, peer, status, error, created_at, attempts, stored_on, ref}`` (the
    outbox keeps the sealed envelope, not the text: ``messages.conversation`` has that)."""
    return {
        "id": record.message_id.hex(),
        "peer": PublicIdentity.from_bytes(record.recipient).peer_id,
        "status": record.status.value,
        "error": record.error,
        "created_at": record.created_at,
        "attempts": record.attempts,
        "stored_on": list(record.stored_on),
        "ref": record.ref,
    }


def contact_json(contact: Contact, node: Node) -> dict[str, Json]:
    """A Contact: ``{peer_id, name, claimed_name, petname, verification, blocked, fingerprint}``."""
    return {
        "peer_id": contact.peer_id,
        "name": contact.name,
        "claimed_name": contact.claimed_name,
        "petname": contact.petname,
        "verification": contact.verification.value,
        "blocked": node.contacts.is_blocked(contact.public),
        "fingerprint": contact.public.fingerprint,
    }


def _person(key: object) -> Json:
    if isinstance(key, bytes) and len(key) == KEY_SIZE:
        try:
            return PublicIdentity.from_bytes(key).peer_id
        except DecodeError:  # not a point on the curve: shown as it is
            return key.hex()
    return to_json(key)


def _people(value: object) -> Json:
    """A key, or keys, of people (raw Ed25519 bytes) as PeerIds."""
    if isinstance(value, tuple | list):
        return [_person(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(str(_person(v)) for v in value)
    return _person(value)


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake_case(name: str) -> str:
    """``GroupMessage`` -> ``group_message``."""
    return _CAMEL.sub("_", name).lower()


def to_json(value: object, depth: int = 0) -> Json:
    """Any record as JSON: dataclasses by field, bytes as hex, keys as PeerIds, contacts as their
    PeerId, enums by value, paths and exceptions as text, collections as arrays or objects."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, PublicIdentity):
        return value.peer_id
    if isinstance(value, Contact):
        return value.peer_id
    if isinstance(value, Enum):
        return to_json(value.value, depth + 1)
    if isinstance(value, Path | BaseException):
        return str(value)
    if depth >= MAX_DEPTH:
        return repr(value)[:200]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _people(getattr(value, f.name))
            if f.name in PEOPLE_FIELDS
            else to_json(getattr(value, f.name), depth + 1)
            for f in dataclasses.fields(value)
            if f.name not in UNSHOWN_FIELDS
        }
    if isinstance(value, dict):
        return {str(to_json(k, depth + 1)): to_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v, depth + 1) for v in value]
    if isinstance(value, frozenset | set):
        return sorted((to_json(v, depth + 1) for v in value), key=str)
    return repr(value)[:200]
