"""``meshchat outbox | status | inbox``: what the profile's store says, without the network.

These read ``store.db`` in the profile folder (``meshchat.store.sqlite``, encrypted at rest with a key
derived from the identity, so they ask for the passphrase as ``send`` does) and print tables (rich) or
JSON. They never import py-libp2p or trio: asking "where is my message?" takes a fraction of a
second. Names and bodies in tables pass through ``terminal_markup`` (a received body can carry
terminal escape sequences or rich markup); JSON carries them exactly.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshchat.cli.common import (
    JsonOption,
    ProfileOption,
    emit_json,
    load_profile_identity,
    profile_dir,
    stdout_console,
    terminal_markup,
)
from meshchat.errors import ProfileError
from meshchat.i18n import _

if TYPE_CHECKING:
    from rich.table import Table

    from meshchat.store.sqlite import SqliteStorage
    from meshchat.store.storage import InboxRecord, OutboxRecord

__all__ = [
    "find_outbox_record",
    "inbox_command",
    "inbox_json",
    "inbox_table",
    "names_of",
    "open_store",
    "outbox_command",
    "outbox_json",
    "outbox_table",
    "status_command",
]


def outbox_command(
    *,
    profile: ProfileOption = None,
    limit: Annotated[int, typer.Option(min=1, help=_("Show this many, newest first."))] = 20,
    json_output: JsonOption = False,
) -> None:
    """Where your sent messages are: queued, relayed, stored, delivered, read, expired or failed."""
    folder = profile_dir(profile)
    names = names_of(folder)
    with open_store(folder) as store:
        records = store.outbox_recent(limit)
    if json_output:
        emit_json({"outbox": [outbox_json(r, names) for r in records]})
    else:
        stdout_console().print(outbox_table(records, names))


def status_command(
    message: Annotated[
        str, typer.Argument(metavar="MSG_ID", help=_("A sent message's id (hex, or 8+ digits)."))
    ],
    *,
    profile: ProfileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Where one sent message is, and the last problem reported for it."""
    folder = profile_dir(profile)
    with open_store(folder) as store:
        record = outbox_json(find_outbox_record(store, message), names_of(folder))
    if json_output:
        emit_json(record)
        return
    out = stdout_console()
    to = terminal_markup(str(record["to_name"] or record["to"]))
    out.print(
        _("{message_id} to {to}: [bold]{status}[/]").format(
            message_id=record["message_id"], to=to, status=record["status"]
        )
    )
    stored_on = record["stored_on"]
    if isinstance(stored_on, list) and stored_on:
        out.print(_("  stored on {count} mailbox(es)").format(count=len(stored_on)))
    if record["error"]:
        out.print(_("  last problem: {problem}").format(problem=terminal_markup(str(record["error"]))))


def inbox_command(
    *,
    profile: ProfileOption = None,
    after: Annotated[int, typer.Option(min=0, help=_("Only messages numbered after this one."))] = 0,
    limit: Annotated[int, typer.Option(min=1, help=_("Show at most this many."))] = 100,
    json_output: JsonOption = False,
) -> None:
    """Messages this profile received (kept in its store, in arrival order, each exactly once)."""
    folder = profile_dir(profile)
    names = names_of(folder)
    with open_store(folder) as store:
        messages = store.inbox_after(after, limit)
    if json_output:
        emit_json({"inbox": [inbox_json(m, names) for m in messages]})
    else:
        stdout_console().print(inbox_table(messages, names))


def open_store(profile: Path) -> SqliteStorage:
    """The profile's store, decrypted with its identity's key (asking for the passphrase if the key
    file has one); ``ProfileError`` if the profile has never run a node."""
    from meshchat.store.encrypted import store_key  # noqa: PLC0415
    from meshchat.store.sqlite import STORE_FILE, SqliteStorage  # noqa: PLC0415

    path = profile / STORE_FILE
    if not path.exists():
        raise ProfileError(f"{profile} has no {STORE_FILE} yet: nothing was sent or received with it")
    return SqliteStorage(path, key=store_key(load_profile_identity(profile)))


def names_of(profile: Path) -> dict[str, str]:
    """Contact names by PeerId (empty if the profile has no contacts file)."""
    from meshchat.contacts import Contacts  # noqa: PLC0415

    try:
        return {c.peer_id: c.name for c in Contacts(profile)}
    except ProfileError:
        return {}


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


def _peer_id(public_key: bytes) -> str:
    from meshchat.identity.peerid import peer_id_from_public_key  # noqa: PLC0415

    return peer_id_from_public_key(public_key)


def outbox_json(record: OutboxRecord, names: dict[str, str]) -> dict[str, object]:
    """One outbox record as JSON (ids in hex)."""
    peer = _peer_id(record.recipient)
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
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=_("outbox (newest first)"))
    for column in (_("message"), _("to"), _("seq"), _("status"), _("sent"), _("mailboxes"), _("problem")):
        table.add_column(column)
    for record in records:
        peer = _peer_id(record.recipient)
        table.add_row(
            record.message_id.hex()[:16],
            terminal_markup(names.get(peer, peer[-12:])),
            str(record.seq),
            record.status.value,
            _when(record.created_at),
            str(len(record.stored_on)),
            terminal_markup(record.error),
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
    peer = _peer_id(message.sender)
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
    """Received messages as a table, in arrival order (a body's own line breaks kept, nothing else)."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=_("inbox"))
    for column in ("#", _("from"), _("seq"), _("received"), _("message")):
        table.add_column(column)
    for message in messages:
        peer = _peer_id(message.sender)
        table.add_row(
            str(message.number),
            terminal_markup(names.get(peer, peer[-12:])),
            str(message.seq),
            _when(message.received_at),
            terminal_markup(message.body.decode("utf-8", errors="replace"), multiline=True),
        )
    return table
