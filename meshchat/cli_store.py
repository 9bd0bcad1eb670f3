"""``meshchat outbox``, ``status`` and ``inbox``: what the profile's store says, without the network.

These read ``store.db`` in the profile folder (``meshchat.store.sqlite``) and print tables (rich) or
JSON. Kept apart from ``cli.py`` so that file stays about commands, and so these never import
py-libp2p: asking "where is my message?" takes a fraction of a second.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from meshchat.contacts import Contacts
from meshchat.errors import ProfileError
from meshchat.identity.peerid import peer_id_from_public_key
from meshchat.store.sqlite import STORE_FILE, SqliteStorage
from meshchat.store.storage import InboxRecord, OutboxRecord

__all__ = [
    "STORE_FILE",
    "find_outbox_record",
    "inbox_json",
    "inbox_table",
    "names_of",
    "open_store",
    "outbox_json",
    "outbox_table",
]


def open_store(profile: Path) -> SqliteStorage:
    """The profile's store; ``ProfileError`` if the profile has never run a node."""
    path = profile / STORE_FILE
    if not path.exists():
        raise ProfileError(f"{profile} has no {STORE_FILE} yet: nothing was sent or received with it")
    return SqliteStorage(path)


def names_of(profile: Path) -> dict[str, str]:
    """Contact names by PeerId (empty if the profile has no contacts file)."""
    try:
        return {c.peer_id: c.name for c in Contacts(profile)}
    except ProfileError:
        return {}


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


def outbox_json(record: OutboxRecord, names: dict[str, str]) -> dict[str, object]:
    """One outbox record as JSON (ids in hex)."""
    peer = peer_id_from_public_key(record.recipient)
    return {
        "message_id": record.message_id.hex(),
        "to": peer,
        "to_name": names.get(peer),
        "seq": record.seq,
        "status": record.status.value,
        "error": record.error,
        "created_at": record.created_at,
        "expiry": record.expiry,
        "attempts": record.attempts,
        "stored_on": list(record.stored_on),
        "ref": record.ref,
    }


def outbox_table(records: list[OutboxRecord], names: dict[str, str]) -> Table:
    """The outbox as a table, newest first."""
    table = Table(title="outbox (newest first)")
    for column in ("message", "to", "seq", "status", "sent", "mailboxes", "problem"):
        table.add_column(column)
    for record in records:
        peer = peer_id_from_public_key(record.recipient)
        table.add_row(
            record.message_id.hex()[:16],
            escape(names.get(peer, peer[-12:])),
            str(record.seq),
            record.status.value,
            _when(record.created_at),
            str(len(record.stored_on)),
            escape(record.error),
        )
    return table


def find_outbox_record(store: SqliteStorage, message_id: str) -> OutboxRecord:
    """The record whose id is ``message_id`` (hex; a unique prefix of 8+ digits will do)."""
    text = message_id.strip().lower()
    try:
        raw = bytes.fromhex(text) if len(text) % 2 == 0 else bytes.fromhex(text[:-1])
    except ValueError:
        raise ProfileError(f"{message_id!r} is not a message id (hex digits)") from None
    if len(raw) == 32:
        record = store.outbox_get(raw)
        if record is not None:
            return record
    elif len(text) >= 8:
        # Two tell "unique" from "ambiguous"; an odd digit count searches the byte prefix before it, so
        # take more (records sharing 4+ bytes of a random id are rare) and filter on the last digit.
        limit = 2 if len(text) % 2 == 0 else 64
        found = store.outbox_with_prefix(raw, limit)
        matches = [r for r in found if r.message_id.hex().startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ProfileError(f"{len(matches)} messages start with {message_id}: give more digits")
    raise ProfileError(f"no sent message {message_id} in this profile's outbox")


def inbox_json(message: InboxRecord, names: dict[str, str]) -> dict[str, object]:
    """One received message as JSON (the body in base64, and as text when it is UTF-8)."""
    peer = peer_id_from_public_key(message.sender)
    try:
        text: str | None = message.body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "number": message.number,
        "message_id": message.message_id.hex(),
        "from": peer,
        "from_name": names.get(peer),
        "seq": message.seq,
        "sent_at_ms": message.sent_at_ms,
        "received_at": message.received_at,
        "text": text,
        "data": base64.b64encode(message.body).decode("ascii"),
    }


def inbox_table(messages: list[InboxRecord], names: dict[str, str]) -> Table:
    """Received messages as a table, in arrival order."""
    table = Table(title="inbox")
    for column in ("#", "from", "seq", "received", "message"):
        table.add_column(column)
    for message in messages:
        peer = peer_id_from_public_key(message.sender)
        table.add_row(
            str(message.number),
            escape(names.get(peer, peer[-12:])),
            str(message.seq),
            _when(message.received_at),
            escape(message.body.decode("utf-8", errors="replace")),
        )
    return table
