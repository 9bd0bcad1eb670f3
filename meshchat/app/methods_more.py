"""The JSON-RPC methods over ``node.groups`` and ``node.files`` (``node.credentials`` and
``node.documents``: ``meshchat.app.methods_signing``).

Each is one row of ``MORE_METHODS`` (``meshchat.app.params.Method``), a few lines over the library's
public call of the same name. Results are small explicit views (never a file's or a manifest's key,
an envelope, or a credential's disclosures: those stay in the profile). Files are read from, and
fetched into, the daemon's file system: a client of the socket runs as the same user.
"""

from __future__ import annotations

from meshchat.app.methods_signing import SIGNING_METHODS
from meshchat.app.params import Call, Example, Json, Kind, Method, Param
from meshchat.app.views import body_fields
from meshchat.errors import FileError
from meshchat.file_api import Files
from meshchat.files.events import Attachment
from meshchat.files.sqlite import ReceivedRecord, SentRecord
from meshchat.groups.core import GroupView
from meshchat.groups.storage import GroupMessageRecord
from meshchat.identity import PublicIdentity

__all__ = ["MORE_METHODS", "attachment_json", "group_json"]

_PEER = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
_GID = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
_MID = "5b0e1f3c9a7d2e4b6c8a0f1e3d5c7b9a2e4f6a8c0b2d4e6f8a1c3e5b7d9f0a2c"
_GROUP = {
    "id": _GID,
    "name": "Family",
    "status": "joined",
    "members": [_PEER],
    "admins": [_PEER],
    "creator": _PEER,
    "admins_only": False,
}
_GROUP_MESSAGE = {
    "number": 1,
    "group": _GID,
    "id": _MID,
    "sender": _PEER,
    "text": "dinner at 8",
    "sent_at_ms": 1764921600000,
    "ref": "",
}
_RECEIVED = {
    "number": 1,
    "id": _MID,
    "file_id": _MID,
    "sender": _PEER,
    "name": "photo.jpg",
    "mime": "image/jpeg",
    "size": 123456,
    "caption": "",
    "state": "offered",
    "path": "",
    "error": "",
    "group": "",
}

_GROUP_PARAM = Param(name="group", kind=Kind.STRING, doc="The group's hex id (or a prefix of it) or name.")
_MEMBER = Param(name="member", kind=Kind.STRING, doc="A contact's name or PeerId, or any PeerId.")
_AFTER = Param(
    name="after",
    kind=Kind.INTEGER,
    doc="Only those numbered after this.",
    required=False,
    default=0,
    minimum=0,
)
_LIMIT = Param(
    name="limit", kind=Kind.INTEGER, doc="Most returned.", required=False, default=100, minimum=1, maximum=500
)
_REF = Param(
    name="ref", kind=Kind.STRING, doc="An idempotency key.", required=False, default="", max_length=256
)


def _peer(key: bytes) -> str:
    return PublicIdentity.from_bytes(key).peer_id


# --- views -------------------------------------------------------------------------------------------


def group_json(view: GroupView) -> dict[str, Json]:
    """A group: ``{id, name, status, members, admins, creator, admins_only}`` (members as PeerIds)."""
    return {
        "id": view.group_id.hex(),
        "name": view.name,
        "status": view.status.value,
        "members": sorted(_peer(m) for m in view.members),
        "admins": sorted(_peer(m) for m in view.admins),
        "creator": _peer(view.creator),
        "admins_only": view.admins_only,
    }


def _group_message(record: GroupMessageRecord) -> dict[str, Json]:
    return {
        "number": record.number,
        "group": record.group_id.hex(),
        "id": record.message_id.hex(),
        "sender": _peer(record.sender),
        **body_fields(record.body),
        "sent_at_ms": record.sent_at_ms,
        "ref": record.ref,
    }


def _received(record: ReceivedRecord) -> dict[str, Json]:
    manifest = Files.manifest(record)
    return {
        "number": record.number,
        "id": record.message_id.hex(),
        "file_id": record.file_id.hex(),
        "sender": _peer(record.sender),
        "name": manifest.name,
        "mime": manifest.mime,
        "size": manifest.size,
        "caption": manifest.caption,
        "state": record.state.value,
        "path": record.path,
        "error": record.error,
        "group": record.group_id.hex(),
    }


def _sent(record: SentRecord) -> dict[str, Json]:
    manifest = Files.manifest(record)
    return {
        "file_id": record.file_id.hex(),
        "id": None if record.message_id is None else record.message_id.hex(),
        "path": record.path,
        "name": manifest.name,
        "mime": manifest.mime,
        "size": record.size,
        "created_at": record.created_at,
    }


def attachment_json(event: Attachment) -> dict[str, Json]:
    """An ``Attachment`` event: what the manifest says, never its key."""
    manifest = event.manifest
    return {
        "number": event.number,
        "sender": event.sender.peer_id,
        "id": event.message_id.hex(),
        "name": manifest.name,
        "mime": manifest.mime,
        "size": manifest.size,
        "caption": manifest.caption,
        "width": manifest.width,
        "height": manifest.height,
        "duration_ms": manifest.duration_ms,
        "fetching": event.fetching,
        "group": event.group_id.hex(),
    }


# --- groups ------------------------------------------------------------------------------------------


async def _groups_list(call: Call) -> Json:
    return [group_json(g) for g in call.node.groups.all()]


async def _groups_create(call: Call) -> Json:
    args = call.args
    view = call.node.groups.create(args["name"], args["members"], admins_only=args["admins_only"])
    return group_json(view)


async def _groups_members(call: Call) -> Json:
    return group_json(call.node.groups.members(call.args["group"]))


async def _groups_invite(call: Call) -> Json:
    call.node.groups.invite(call.args["group"], call.args["member"])
    return {}


async def _groups_join(call: Call) -> Json:
    return group_json(call.node.groups.join(call.args["group"]))


async def _groups_leave(call: Call) -> Json:
    call.node.groups.leave(call.args["group"])
    return {}


async def _groups_remove(call: Call) -> Json:
    call.node.groups.remove(call.args["group"], call.args["member"])
    return {}


async def _groups_rename(call: Call) -> Json:
    call.node.groups.rename(call.args["group"], call.args["name"])
    return {}


async def _groups_send(call: Call) -> Json:
    record = call.node.groups.send(call.args["group"], call.args["text"], ref=call.args["ref"])
    return {"id": record.message_id.hex(), "group": record.group_id.hex(), "members": record.members}


async def _groups_history(call: Call) -> Json:
    args = call.args
    records = call.node.groups.history(args["group"], after=args["after"], limit=args["limit"])
    return {"messages": [_group_message(r) for r in records]}


async def _groups_status(call: Call) -> Json:
    status = call.node.groups.status(call.args["id"])
    if status is None:
        return None
    return {
        "id": status.message_id.hex(),
        "group": status.group_id.hex(),
        "stored": status.stored,
        "delivered": status.delivered,
        "read": status.read,
        "members": status.members,
    }


# --- files -------------------------------------------------------------------------------------------


async def _files_send(call: Call) -> Json:
    args = call.args
    try:
        handle = await call.node.files.send(
            args["to"], args["path"], caption=args["caption"], ref=args["ref"]
        )
    except OSError as exc:
        raise FileError(f"cannot read {args['path']}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a caption over the limit
        raise FileError(str(exc)) from None
    return {"id": handle.message_id.hex(), "status": handle.status.value}


async def _files_received(call: Call) -> Json:
    records = call.node.files.received(after=call.args["after"], limit=call.args["limit"])
    return {"files": [_received(r) for r in records]}


async def _files_sent(call: Call) -> Json:
    return {"files": [_sent(r) for r in call.node.files.sent(call.args["limit"])]}


async def _files_fetch(call: Call) -> Json:
    number = call.args["number"]
    call.node.files.attachment(number)  # UnknownFile if there is none
    call.node.files.start_fetch(number)
    return {}


async def _files_progress(call: Call) -> Json:
    progress = call.node.files.progress(call.args["number"])
    return {
        "total": progress.total,
        "stored": progress.stored,
        "fetched": progress.fetched,
        "complete": progress.complete,
    }


#: The table rows of this module (``meshchat.app.methods.METHODS`` ends with them).
MORE_METHODS: tuple[Method, ...] = (
    Method(
        name="groups.list",
        doc="Every group known (joined, invited, left or removed), by name.",
        returns="[Group]",
        params=(),
        example=Example(params={}, result=[_GROUP]),
        handler=_groups_list,
    ),
    Method(
        name="groups.create",
        doc="Create a group with you as its admin; the members are invited (each joins on its node).",
        returns="Group",
        params=(
            Param(name="name", kind=Kind.STRING, doc="Its name.", max_length=256),
            Param(
                name="members",
                kind=Kind.STRINGS,
                doc="Contacts' names or PeerIds.",
                required=False,
                default=[],
                max_length=1000,
            ),
            Param(
                name="admins_only",
                kind=Kind.BOOLEAN,
                doc="An announcements group: only admins post.",
                required=False,
                default=False,
            ),
        ),
        example=Example(params={"name": "Family", "members": []}, result=_GROUP),
        handler=_groups_create,
    ),
    Method(
        name="groups.members",
        doc="A group's name, your status in it, its members and admins.",
        returns="Group",
        params=(_GROUP_PARAM,),
        example=Example(params={"group": "Family"}, result=_GROUP),
        handler=_groups_members,
    ),
    Method(
        name="groups.invite",
        doc="Invite someone to a group (admins only).",
        returns="{}",
        params=(_GROUP_PARAM, _MEMBER),
        example=Example(params={"group": "Family", "member": "Bob"}, result={}),
        handler=_groups_invite,
    ),
    Method(
        name="groups.rename",
        doc="Rename a group (admins only).",
        returns="{}",
        params=(_GROUP_PARAM, Param(name="name", kind=Kind.STRING, doc="The new name.", max_length=256)),
        example=Example(params={"group": "Family", "name": "Family 2"}, result={}),
        handler=_groups_rename,
    ),
    Method(
        name="groups.send",
        doc="Send a message to a group: one envelope for every member; `groups.status` follows it.",
        returns="{id, group, members}",
        params=(
            _GROUP_PARAM,
            Param(name="text", kind=Kind.STRING, doc="The message.", max_length=60_000),
            _REF,
        ),
        example=Example(
            params={"group": "Family", "text": "dinner at 8"},
            result={"id": _MID, "group": _GID, "members": 1},
        ),
        handler=_groups_send,
    ),
    Method(
        name="groups.history",
        doc="A group's messages (yours too) numbered after `after`, oldest first.",
        returns="{messages: [GroupMessage]}",
        params=(_GROUP_PARAM, _AFTER, _LIMIT),
        example=Example(params={"group": "Family"}, result={"messages": [_GROUP_MESSAGE]}),
        handler=_groups_history,
    ),
    Method(
        name="groups.status",
        doc="Where your group message is: stored, delivered to N of M, read by K (null: unknown id).",
        returns="{id, group, stored, delivered, read, members} | null",
        params=(Param(name="id", kind=Kind.HEX, doc="The message's id.", max_length=32),),
        example=Example(
            params={"id": _MID},
            result={"id": _MID, "group": _GID, "stored": 1, "delivered": 0, "read": 0, "members": 1},
        ),
        handler=_groups_status,
    ),
    Method(
        name="groups.remove",
        doc="Remove a member (admins only): they read nothing sent after.",
        returns="{}",
        params=(_GROUP_PARAM, _MEMBER),
        example=Example(params={"group": "Family", "member": "Bob"}, result={}),
        handler=_groups_remove,
    ),
    Method(
        name="groups.join",
        doc="Accept an invitation: the group's messages come from now on.",
        returns="Group",
        params=(_GROUP_PARAM,),
        example=Example(params={"group": _GID}, result=_GROUP),
        handler=_groups_join,
    ),
    Method(
        name="groups.leave",
        doc="Leave a group: the others are told; you read nothing sent after.",
        returns="{}",
        params=(_GROUP_PARAM,),
        example=Example(params={"group": "Family"}, result={}),
        handler=_groups_leave,
    ),
    Method(
        name="files.send",
        doc="Send a file (a path on the daemon's machine) to a contact: encrypted chunks, a sealed "
        "manifest; `status` events follow it.",
        returns="{id, status}",
        params=(
            Param(name="to", kind=Kind.STRING, doc="A contact's name or PeerId."),
            Param(name="path", kind=Kind.STRING, doc="The file.", max_length=4096),
            Param(
                name="caption",
                kind=Kind.STRING,
                doc="Its caption.",
                required=False,
                default="",
                max_length=4096,
            ),
            _REF,
        ),
        example=Example(
            params={"to": "Bob", "path": "/home/alice/photo.jpg"}, result={"id": _MID, "status": "queued"}
        ),
        handler=_files_send,
    ),
    Method(
        name="files.received",
        doc="Files received, numbered after `after`: what each manifest says and where the file is.",
        returns="{files: [ReceivedFile]}",
        params=(_AFTER, _LIMIT),
        example=Example(params={}, result={"files": [_RECEIVED]}),
        handler=_files_received,
    ),
    Method(
        name="files.sent",
        doc="Files sent, newest first.",
        returns="{files: [{file_id, id, path, name, mime, size, created_at}]}",
        params=(_LIMIT,),
        example=Example(
            params={"limit": 10},
            result={
                "files": [
                    {
                        "file_id": _MID,
                        "id": _MID,
                        "path": "/home/alice/photo.jpg",
                        "name": "photo.jpg",
                        "mime": "image/jpeg",
                        "size": 123456,
                        "created_at": 1764921600.5,
                    }
                ]
            },
        ),
        handler=_files_sent,
    ),
    Method(
        name="files.fetch",
        doc="Start fetching a received file; an `attachment_fetched` event says where it landed.",
        returns="{}",
        params=(Param(name="number", kind=Kind.INTEGER, doc="Its number in files.received.", minimum=1),),
        example=Example(params={"number": 1}, result={}),
        handler=_files_fetch,
    ),
    Method(
        name="files.progress",
        doc="How much of a received file is here.",
        returns="{total, stored, fetched, complete}",
        params=(Param(name="number", kind=Kind.INTEGER, doc="Its number in files.received.", minimum=1),),
        example=Example(
            params={"number": 1}, result={"total": 123456, "stored": 0, "fetched": 65536, "complete": False}
        ),
        handler=_files_progress,
    ),
    *SIGNING_METHODS,
)
