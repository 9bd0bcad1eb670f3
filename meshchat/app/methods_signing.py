"""The JSON-RPC methods over ``node.credentials`` and ``node.documents`` (signing: credentials and
co-signed documents), one ``meshchat.app.params.Method`` row each, a few lines over the library's
public call of the same name. Results are small explicit views (never a credential's disclosures).
"""

from __future__ import annotations

from pathlib import Path

from meshchat.app.params import Call, Example, Json, Kind, Method, Param
from meshchat.documents.events import DocumentView
from meshchat.errors import FileError
from meshchat.identity import PublicIdentity

__all__ = ["SIGNING_METHODS", "document_json"]

_PEER = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
_MID = "5b0e1f3c9a7d2e4b6c8a0f1e3d5c7b9a2e4f6a8c0b2d4e6f8a1c3e5b7d9f0a2c"
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
_DOC_ID = Param(name="doc_id", kind=Kind.STRING, doc="The round's id (or a prefix of it).", max_length=256)


def _peer(key: bytes) -> str:
    return PublicIdentity.from_bytes(key).peer_id


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


#: The rows of this module (``meshchat.app.methods_more.MORE_METHODS`` ends with them).
SIGNING_METHODS: tuple[Method, ...] = (
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
