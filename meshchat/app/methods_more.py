"""The JSON-RPC methods over ``node.groups``, ``node.files``, ``node.credentials``, ``node.documents``.

Each is one row of ``MORE_METHODS`` (``meshchat.app.params.Method``), a few lines over the library's
public call of the same name. Results are small explicit views (never a file's or a manifest's key,
an envelope, or a credential's disclosures: those stay in the profile). Files are read from, and
fetched into, the daemon's file system: a client of the socket runs as the same user.
"""

from __future__ import annotations

from pathlib import Path

from meshchat.app.params import Call, Example, Json, Kind, Method, Param
from meshchat.app.views import body_fields
from meshchat.documents.events import DocumentView
from meshchat.errors import FileError
from meshchat.file_api import Files
from meshchat.files.events import Attachment
from meshchat.files.sqlite import ReceivedRecord, SentRecord
from meshchat.groups.core import GroupView
from meshchat.groups.storage import GroupMessageRecord
from meshchat.identity import PublicIdentity

__all__ = ["MORE_METHODS", "attachment_json", "document_json", "group_json"]

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
_DOCUMENT = {
    "doc_id": "sha256-...",
    "name": "contract.pdf",
    "digest": "...",
    "size": 1024,
    "proposer": _PEER,
    "signers": [_PEER],
    "threshold": 1,
    "state": "open",
    "signed_by": {},
    "pending": [_PEER],
    "revoked": [],
    "signed_by_me": False,
    "has_content": True,
    "expires": None,
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
_DOC_ID = Param(name="doc_id", kind=Kind.STRING, doc="The round's id (or a prefix of it).", max_length=256)


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


def document_json(view: DocumentView) -> dict[str, Json]:
    """A co-signing round and where it is."""
    proposal = view.proposal
    return {
        "doc_id": proposal.doc_id,
        "name": proposal.name,
        "digest": proposal.digest,
        "size": proposal.size,
        "proposer": proposal.proposer.peer_id,
        "signers": [s.peer_id for s in proposal.signers],
        "threshold": proposal.threshold,
        "state": view.state.value,
        "signed_by": dict(view.signed_by),
        "pending": [p.peer_id for p in view.pending],
        "revoked": [p.peer_id for p, _ in view.revoked],
        "signed_by_me": view.signed_by_me,
        "has_content": view.has_content,
        "expires": proposal.expires,
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


# --- credentials -------------------------------------------------------------------------------------


async def _credentials_held(call: Call) -> Json:
    return [
        {
            "credential_id": c.credential_id,
            "issuer_did": c.issuer_did,
            "vct": c.vct,
            "claims": sorted(c.disclosures) or sorted(c.claims),
            "issued_at": c.issued_at,
            "expires": c.expires,
        }
        for c in call.node.credentials.held()
    ]


async def _credentials_request(call: Call) -> Json:
    args = call.args
    handle = call.node.credentials.request(args["issuer"], args["vct"], note=args["note"])
    return {"id": handle.message_id.hex(), "status": handle.status.value}


async def _credentials_requests(call: Call) -> Json:
    return [
        {"requester": _peer(r.requester), "vct": r.vct, "note": r.note, "stranger": r.stranger}
        for r in call.node.credentials.requests()
    ]


async def _credentials_issue(call: Call) -> Json:
    args = call.args
    credential, handle = call.node.credentials.issue(
        args["to"], vct=args["vct"], claims=args["claims"], valid_days=args["valid_days"]
    )
    return {"credential_id": credential.credential_id, "id": handle.message_id.hex()}


async def _credentials_revoke(call: Call) -> Json:
    record = call.node.credentials.revoke(call.args["credential_id"])
    return {"credential_id": record.credential_id, "revoked": record.revoked}


async def _credentials_challenge(call: Call) -> Json:
    return {"nonce": call.node.credentials.challenge(), "audience": call.node.credentials.did}


async def _credentials_present(call: Call) -> Json:
    args = call.args
    text = call.node.credentials.present(
        args["credential_id"], args["disclose"], nonce=args["nonce"], audience=args["audience"]
    )
    return {"presentation": text}


async def _credentials_verify(call: Call) -> Json:
    args = call.args
    verified = call.node.credentials.verify(
        args["presentation"], nonce=args["nonce"], audience=args["audience"], require=args["require"]
    )
    return {
        "credential_id": verified.credential_id,
        "issuer_did": verified.issuer_did,
        "issuer_name": verified.issuer_name,
        "vct": verified.vct,
        "claims": {k: v for k, v in verified.claims.items() if isinstance(v, str | int | float | bool)},
        "holder": verified.holder.peer_id,
        "status": verified.status,
    }


async def _credentials_trust(call: Call) -> Json:
    call.node.credentials.trust(call.args["did"], call.args["name"])
    return {}


async def _credentials_trusted(call: Call) -> Json:
    return call.node.credentials.trusted()


# --- documents ---------------------------------------------------------------------------------------


async def _documents_list(call: Call) -> Json:
    return [document_json(v) for v in call.node.documents.documents()]


async def _documents_view(call: Call) -> Json:
    return document_json(call.node.documents.view(call.args["doc_id"]))


async def _documents_propose(call: Call) -> Json:
    args = call.args
    path = Path(args["path"])
    try:
        proposed = await call.node.documents.propose(
            path, signers=args["signers"], threshold=args["threshold"], me=args["me"]
        )
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return {"doc_id": proposed.doc_id}


async def _documents_sign(call: Call) -> Json:
    handles = await call.node.documents.sign(call.args["doc_id"])
    return {"sent": [h.message_id.hex() for h in handles]}


async def _documents_revoke(call: Call) -> Json:
    handles = await call.node.documents.revoke(call.args["doc_id"], reason=call.args["reason"])
    return {"sent": [h.message_id.hex() for h in handles]}


async def _documents_bundle(call: Call) -> Json:
    return {"bundle": call.node.documents.bundle(call.args["doc_id"])}


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
    Method(
        name="credentials.held",
        doc="The credentials in this profile's wallet (the names of their claims, not their values).",
        returns="[{credential_id, issuer_did, vct, claims, issued_at, expires}]",
        params=(),
        example=Example(
            params={},
            result=[
                {
                    "credential_id": "abc",
                    "issuer_did": "did:key:z6Mk...",
                    "vct": "student",
                    "claims": ["name", "age_over_18"],
                    "issued_at": 1764921600.0,
                    "expires": None,
                }
            ],
        ),
        handler=_credentials_held,
    ),
    Method(
        name="credentials.request",
        doc="Ask an issuer (a contact) for a credential of type `vct`.",
        returns="{id, status}",
        params=(
            Param(name="issuer", kind=Kind.STRING, doc="A contact's name or PeerId."),
            Param(name="vct", kind=Kind.STRING, doc="The credential type.", max_length=256),
            Param(
                name="note",
                kind=Kind.STRING,
                doc="A note for the issuer.",
                required=False,
                default="",
                max_length=1024,
            ),
        ),
        example=Example(
            params={"issuer": "University", "vct": "student"}, result={"id": _MID, "status": "queued"}
        ),
        handler=_credentials_request,
    ),
    Method(
        name="credentials.requests",
        doc="Requests waiting for you to issue.",
        returns="[{requester, vct, note, stranger}]",
        params=(),
        example=Example(
            params={}, result=[{"requester": _PEER, "vct": "student", "note": "", "stranger": False}]
        ),
        handler=_credentials_requests,
    ),
    Method(
        name="credentials.issue",
        doc="Issue a credential to someone who asked for one of that type, and send it.",
        returns="{credential_id, id}",
        params=(
            Param(name="to", kind=Kind.STRING, doc="The requester's name or PeerId."),
            Param(name="vct", kind=Kind.STRING, doc="The credential type.", max_length=256),
            Param(name="claims", kind=Kind.OBJECT, doc="The claims, name -> value."),
            Param(
                name="valid_days",
                kind=Kind.INTEGER,
                doc="Days it is valid.",
                required=False,
                nullable=True,
                minimum=1,
            ),
        ),
        example=Example(
            params={"to": "Bob", "vct": "student", "claims": {"name": "Bob"}},
            result={"credential_id": "abc", "id": _MID},
        ),
        handler=_credentials_issue,
    ),
    Method(
        name="credentials.revoke",
        doc="Revoke a credential you issued (its status list says so from the next publication).",
        returns="{credential_id, revoked}",
        params=(Param(name="credential_id", kind=Kind.STRING, doc="Its id.", max_length=256),),
        example=Example(params={"credential_id": "abc"}, result={"credential_id": "abc", "revoked": True}),
        handler=_credentials_revoke,
    ),
    Method(
        name="credentials.trust",
        doc="Trust an issuer (by did) under a name: its credentials verify, its status lists are followed.",
        returns="{}",
        params=(
            Param(name="did", kind=Kind.STRING, doc="The issuer's did:key.", max_length=256),
            Param(name="name", kind=Kind.STRING, doc="Your name for it.", max_length=256),
        ),
        example=Example(params={"did": "did:key:z6Mk...", "name": "University"}, result={}),
        handler=_credentials_trust,
    ),
    Method(
        name="credentials.trusted",
        doc="The issuers you trust: did -> name.",
        returns="{did: name}",
        params=(),
        example=Example(params={}, result={"did:key:z6Mk...": "University"}),
        handler=_credentials_trusted,
    ),
    Method(
        name="credentials.challenge",
        doc="A fresh challenge for a holder to present a credential to you (nonce and audience).",
        returns="{nonce, audience}",
        params=(),
        example=Example(params={}, result={"nonce": "q2v...", "audience": "did:key:z6Mk..."}),
        handler=_credentials_challenge,
    ),
    Method(
        name="credentials.present",
        doc="Present chosen claims of a held credential, bound to a verifier's challenge.",
        returns="{presentation}",
        params=(
            Param(name="credential_id", kind=Kind.STRING, doc="The held credential's id.", max_length=256),
            Param(name="disclose", kind=Kind.STRINGS, doc="The claims to show.", max_length=64),
            Param(name="nonce", kind=Kind.STRING, doc="The verifier's nonce.", max_length=256),
            Param(name="audience", kind=Kind.STRING, doc="The verifier's did.", max_length=256),
        ),
        example=Example(
            params={
                "credential_id": "abc",
                "disclose": ["name"],
                "nonce": "q2v...",
                "audience": "did:key:z6Mk...",
            },
            result={"presentation": "eyJ...~...~"},
        ),
        handler=_credentials_present,
    ),
    Method(
        name="credentials.verify",
        doc="Check a presentation offline (trusted issuer, signatures, holder binding, challenge, "
        "dates, revocation); a CredentialError says what failed.",
        returns="{credential_id, issuer_did, issuer_name, vct, claims, holder, status}",
        params=(
            Param(name="presentation", kind=Kind.STRING, doc="The presentation text."),
            Param(
                name="nonce",
                kind=Kind.STRING,
                doc="Your challenge's nonce (none: one-way).",
                required=False,
                nullable=True,
                max_length=256,
            ),
            Param(
                name="audience",
                kind=Kind.STRING,
                doc="Your did (default).",
                required=False,
                nullable=True,
                max_length=256,
            ),
            Param(
                name="require",
                kind=Kind.STRINGS,
                doc="Claims it must show.",
                required=False,
                default=[],
                max_length=64,
            ),
        ),
        example=Example(
            params={"presentation": "eyJ...~...~", "nonce": "q2v..."},
            result={
                "credential_id": "abc",
                "issuer_did": "did:key:z6Mk...",
                "issuer_name": "University",
                "vct": "student",
                "claims": {"name": "Bob"},
                "holder": _PEER,
                "status": "valid",
            },
        ),
        handler=_credentials_verify,
    ),
    Method(
        name="documents.list",
        doc="Every co-signing round known.",
        returns="[Document]",
        params=(),
        example=Example(params={}, result=[_DOCUMENT]),
        handler=_documents_list,
    ),
    Method(
        name="documents.propose",
        doc="Start a co-signing round for a file (a path on the daemon's machine): the signers are sent "
        "the proposal; `threshold` of them complete it.",
        returns="{doc_id}",
        params=(
            Param(name="path", kind=Kind.STRING, doc="The document.", max_length=4096),
            Param(name="signers", kind=Kind.STRINGS, doc="Contacts' names or PeerIds.", max_length=32),
            Param(name="threshold", kind=Kind.INTEGER, doc="Signatures needed.", minimum=1, maximum=33),
            Param(name="me", kind=Kind.BOOLEAN, doc="You sign too.", required=False, default=True),
        ),
        example=Example(
            params={"path": "/home/alice/contract.pdf", "signers": ["Bob"], "threshold": 2},
            result={"doc_id": "sha256-..."},
        ),
        handler=_documents_propose,
    ),
    Method(
        name="documents.view",
        doc="One co-signing round and where it is.",
        returns="Document",
        params=(_DOC_ID,),
        example=Example(params={"doc_id": "sha256-..."}, result=_DOCUMENT),
        handler=_documents_view,
    ),
    Method(
        name="documents.sign",
        doc="Sign a round's document; the others are sent the signature.",
        returns="{sent: [id]}",
        params=(_DOC_ID,),
        example=Example(params={"doc_id": "sha256-..."}, result={"sent": [_MID]}),
        handler=_documents_sign,
    ),
    Method(
        name="documents.revoke",
        doc="Revoke your signature of a round's document.",
        returns="{sent: [id]}",
        params=(
            _DOC_ID,
            Param(name="reason", kind=Kind.STRING, doc="Why.", required=False, default="", max_length=1024),
        ),
        example=Example(params={"doc_id": "sha256-...", "reason": "mistake"}, result={"sent": [_MID]}),
        handler=_documents_revoke,
    ),
    Method(
        name="documents.bundle",
        doc="A round's exported bundle (proposal and signatures) that anyone verifies offline.",
        returns="{bundle}",
        params=(_DOC_ID,),
        example=Example(params={"doc_id": "sha256-..."}, result={"bundle": "{...}"}),
        handler=_documents_bundle,
    ),
)
