"""Group events and group records as the ``meshchat`` commands print them: the ``group_*`` lines of
``meshchat node`` / ``chat`` and the JSON of ``meshchat group members | history | list``.

Members are Ed25519 keys in the library; the command line shows them as PeerIds, with the contact's
name where the profile has one (``names``: PeerId -> name). Peer-chosen text (a group's name, a
message) reaches a terminal only through the printer, which makes it safe (``terminal_text``); JSON
carries it exactly, bodies in base64 (``data``) and, when they are UTF-8, as ``text``.

This module imports no trio and no py-libp2p: the read-only commands use it too.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from meshchat.groups.events import GroupChanged, GroupInvited, GroupMessage, GroupProblem, GroupStatus
from meshchat.groups.ops import OpKind
from meshchat.i18n import N_, _
from meshchat.identity.peerid import peer_id_from_public_key

if TYPE_CHECKING:
    from meshchat.groups.core import GroupView
    from meshchat.groups.storage import GroupMessageRecord

__all__ = [
    "GROUP_EVENTS",
    "EventPrinter",
    "describe_group_event",
    "history_json",
    "label",
    "message_json",
    "peer_of",
    "short_id",
    "view_json",
]

#: The ``event`` values of group lines (``meshchat node --json`` / ``chat --json``).
GROUP_EVENTS = frozenset({"group_message", "group_changed", "group_invited", "group_status", "group_problem"})

#: How each membership change reads in a text line: "<author> <verb> <targets>".
_VERBS = {
    OpKind.CREATE: N_("created the group with"),
    OpKind.ADD: N_("added"),
    OpKind.REMOVE: N_("removed"),
    OpKind.LEAVE: N_("left"),
    OpKind.PROMOTE: N_("made admin"),
    OpKind.DEMOTE: N_("took admin from"),
    OpKind.RENAME: N_("renamed the group to"),
}


class EventPrinter(Protocol):
    """What prints one event (``meshchat.cli.runner``'s printers)."""

    def event(self, kind: str, text: str, **fields: object) -> None:
        """Print ``kind`` as text or as a JSON object with ``fields``."""


def peer_of(key: bytes) -> str:
    """The PeerId of a member's Ed25519 key."""
    return peer_id_from_public_key(key)


def label(key: bytes, names: Mapping[str, str]) -> str:
    """A member for a text line: the contact's name, else the end of its PeerId."""
    peer = peer_of(key)
    return names.get(peer) or f"…{peer[-12:]}"


def short_id(group_id: bytes) -> str:
    """A group id as the commands accept it back (16 hex digits: unique among a user's groups)."""
    return group_id.hex()[:16]


def _text(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def message_json(
    *,
    number: int,
    message_id: bytes,
    sender: bytes,
    body: bytes,
    ref: str,
    sent_at_ms: int,
    names: Mapping[str, str],
) -> dict[str, object]:
    """The fields of one group message (history rows and ``group_message`` events share them)."""
    peer = peer_of(sender)
    return {
        "number": number,
        "message_id": message_id.hex(),
        "sender": peer,
        "contact": names.get(peer),
        "ref": ref,
        "sent_at_ms": sent_at_ms,
        "text": _text(body),
        "data": base64.b64encode(body).decode("ascii"),
    }


def history_json(record: GroupMessageRecord, names: Mapping[str, str]) -> dict[str, object]:
    """One history row as JSON."""
    fields = message_json(
        number=record.number,
        message_id=record.message_id,
        sender=record.sender,
        body=record.body,
        ref=record.ref,
        sent_at_ms=record.sent_at_ms,
        names=names,
    )
    return {**fields, "received_at": record.received_at}


def view_json(view: GroupView, names: Mapping[str, str], me: bytes) -> dict[str, object]:
    """A group (``members``, and the result of a change) as JSON: members sorted admins first."""
    ordered = sorted(view.members, key=lambda k: (k not in view.admins, label(k, names)))
    return {
        "group_id": view.group_id.hex(),
        "name": view.name,
        "status": view.status.value,
        "creator": peer_of(view.creator),
        "members": [
            {
                "peer_id": peer_of(key),
                "contact": names.get(peer_of(key)),
                "admin": key in view.admins,
                "me": key == me,
            }
            for key in ordered
        ],
    }


def describe_group_event(
    event: object, printer: EventPrinter, *, names: Mapping[str, str], group_name: Callable[[bytes], str]
) -> bool:
    """Print ``event`` if it is a group event (True), else leave it to the caller (False)."""
    match event:
        case GroupMessage(group_id=gid, sender=sender, body=body):
            group = group_name(gid)
            shown = body.decode("utf-8", errors="replace")
            fields = message_json(
                number=event.number,
                message_id=event.message_id,
                sender=sender,
                body=body,
                ref=event.ref,
                sent_at_ms=event.sent_at_ms,
                names=names,
            )
            del fields["text"]  # events carry the body as ``data`` only, as ``direct`` does
            printer.event(
                "group_message",
                f"[{group}] {label(sender, names)}: {shown}",
                group_id=gid.hex(),
                group=group,
                **fields,
            )
        case GroupChanged(group_id=gid, kind=kind, author=author, targets=targets, name=name):
            group = group_name(gid)
            if kind is OpKind.RENAME:
                whom = name
            elif kind is OpKind.LEAVE:
                whom = ""
            else:
                whom = ", ".join(label(t, names) for t in targets if t != author or kind is not OpKind.CREATE)
            printer.event(
                "group_changed",
                _("[{group}] {author} {verb} {whom}")
                .format(group=group, author=label(author, names), verb=_(_VERBS[kind]), whom=whom)
                .rstrip(),
                group_id=gid.hex(),
                group=group,
                change=kind.name.lower(),
                author=peer_of(author),
                author_contact=names.get(peer_of(author)),
                targets=[peer_of(t) for t in targets],
                name=name,
            )
        case GroupInvited(group_id=gid, name=name, by=by):
            printer.event(
                "group_invited",
                _("{by} added you to {name} ({gid}); accept with: meshchat group join {gid}").format(
                    by=label(by, names), name=name, gid=short_id(gid)
                ),
                group_id=gid.hex(),
                name=name,
                by=peer_of(by),
                by_contact=names.get(peer_of(by)),
            )
        case GroupStatus(group_id=gid, message_id=mid):
            printer.event(
                "group_status",
                f"[{group_name(gid)}] {mid.hex()[:16]} {event.describe()}",
                group_id=gid.hex(),
                message_id=mid.hex(),
                status=event.describe(),
                stored=event.stored,
                delivered=event.delivered,
                read=event.read,
                members=event.members,
            )
        case GroupProblem(error=error):
            printer.event("group_problem", str(error), error=str(error))
        case _:
            return False
    return True
