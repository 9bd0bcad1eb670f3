"""The rest of ``scripts/fuzz.py``'s targets: credentials, documents, devices and JSON-RPC (the
decoders of the application layers; ``fuzz_targets.py`` has the wire, store, session, group and file
ones and the shared pieces)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from fuzz_targets import ALICE, BOB, NOW, Target, b64url_segment_layer, base32_layer, counter_bytes

from meshchat.app.jsonrpc import _Refused, loads
from meshchat.credentials import Credential, Verifier, holder_key, issue, present_one_way
from meshchat.credentials import messages as credential_messages
from meshchat.credentials.qr import from_qr_text, to_qr_text
from meshchat.credentials.status import StatusList, parse_status_token, status_uri
from meshchat.device_api import decode_snapshot, encode_snapshot
from meshchat.documents import payload as document_payload
from meshchat.documents.bundle import verify_bundle
from meshchat.documents.signature import digest_bytes, sign_digest, verify_document
from meshchat.errors import MeshchatError
from meshchat.identity.devices import Device, DeviceList, LinkRequest
from meshchat.wire import Invite
from meshchat.wire.jose import did_key, parse_jws, sign_jws, verify_jws

#: A credential request nonce: base64url of 16 bytes.
NONCE = base64.urlsafe_b64encode(bytes(range(16))).rstrip(b"=").decode()


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _claims(claims: dict[str, object]) -> set[tuple[str, str, str]]:
    return {("claim", name, json.dumps(value, sort_keys=True, default=str)) for name, value in claims.items()}


def _credential_targets() -> list[Target]:
    draw = counter_bytes(4000)
    holder = holder_key(bytes([9]) * 32, bytes(16))
    claims: dict[str, object] = {"given_name": "Alisa", "age_over_18": True, "address": {"city": "Kazan"}}
    credential = issue(ALICE, holder=holder.public, vct="id", claims=claims, now=NOW, random_bytes=draw)
    presentation = present_one_way(
        credential, holder, disclose={"given_name"}, audience="hotel", now=NOW, random_bytes=draw
    )

    def parsed(data: bytes) -> object:
        # Selective disclosure: anyone holding the credential may leave disclosures out, so a subset
        # of the seed's claims is honest; a claim (or issuer, holder, type) no seed has is a forgery.
        c = Credential.parse(_text(data))
        signed = {("issuer", c.issuer.ed25519), ("vct", c.vct), ("holder", c.holder.ed25519)}
        return frozenset(signed | {("expires", c.expires)} | _claims(c.claims))

    def presented(data: bytes) -> object:
        verified = Verifier(audience="hotel", require_status=False).verify(_text(data), now=NOW)
        return frozenset({("issuer", verified.issuer_did), ("vct", verified.vct)} | _claims(verified.claims))

    request = credential_messages.encode_request(
        holder, issuer_did="did:key:z6Mk", vct="id", nonce=NONCE, now=NOW, note="please"
    )
    issued = credential_messages.encode_issued(credential.compact, nonce=NONCE)
    return [
        Target(
            "sd_jwt_credential",
            "credentials.Credential.parse (issuer signature, disclosures)",
            (credential.compact.encode(),),
            parsed,
            signed=True,
            items=True,
            layers=(b64url_segment_layer,),
        ),
        Target(
            "sd_jwt_presentation",
            "credentials.Verifier.verify, one-way (issuer + holder key binding)",
            (presentation.encode(),),
            presented,
            signed=True,
            items=True,
            layers=(b64url_segment_layer,),
        ),
        Target(
            "qr_presentation",
            "credentials.qr.from_qr_text (base45, deflate, CBOR-like list of JWS parts)",
            (to_qr_text(presentation).encode(),),
            lambda data: from_qr_text(_text(data)),
        ),
        Target(
            "credential_control",
            "credentials.messages.decode_control",
            (request, issued),
            credential_messages.decode_control,
        ),
    ]


def _document_targets() -> list[Target]:
    digest = digest_bytes(b"the contract")
    signature = sign_digest(ALICE, digest, 12, now=NOW, name="contract.pdf", purpose="agree")
    proposal = document_payload.sign_proposal(
        ALICE,
        digest=digest,
        size=12,
        name="contract.pdf",
        signers=(ALICE.public, BOB.public),
        threshold=2,
        witnesses=(),
        quorum=0,
        expires=None,
        now=NOW,
    )
    jws = sign_jws({"typ": "test"}, {"iss": "me", "n": 1}, ALICE.sign)
    status_list = StatusList(status_uri(did_key(ALICE.public), "main"))
    status_list.revoke(status_list.allocate(counter_bytes(6000)).index)
    token = status_list.token(ALICE, now=NOW)

    def verified_signature(data: bytes) -> object:
        info = verify_document(digest, _text(data))
        return repr(info)

    def verified_proposal(data: bytes) -> object:
        return repr(document_payload.parse_proposal(_text(data)))

    def verified_jws(data: bytes) -> object:
        parsed = parse_jws(_text(data), what="fuzz")
        verify_jws(parsed, ALICE.public, what="fuzz")
        return json.dumps([parsed.header, parsed.payload], sort_keys=True)

    def status_token(data: bytes) -> object:
        parsed = parse_status_token(_text(data))
        return repr(parsed)

    doc_id = document_payload.doc_id_of(proposal)
    cosigned = [sign_digest(who, digest, 12, now=NOW, cosign=doc_id) for who in (ALICE, BOB)]
    bundle = json.dumps({"v": 1, "proposal": proposal, "signatures": cosigned}).encode()

    def verified_bundle(data: bytes) -> object:
        # A bundle is a set of separately signed items: any subset of the seed's is honest.
        report = verify_bundle(_text(data), digest=digest, now=NOW)
        return frozenset([repr(report.proposal), *map(repr, report.signatures), *map(repr, report.revoked)])

    controls = (
        document_payload.encode_control(document_payload.ControlKind(1), proposal, b"content"),
        document_payload.encode_control(document_payload.ControlKind(2), signature),
    )
    return [
        Target(
            "jws",
            "wire.jose.parse_jws + verify_jws",
            (jws.encode(),),
            verified_jws,
            signed=True,
            layers=(b64url_segment_layer,),
        ),
        Target(
            "document_signature",
            "documents.signature.verify_document (detached JWS over a digest)",
            (signature.encode(),),
            verified_signature,
            signed=True,
            layers=(b64url_segment_layer,),
        ),
        Target(
            "document_proposal",
            "documents.payload.parse_proposal (signed)",
            (proposal.encode(),),
            verified_proposal,
            signed=True,
            layers=(b64url_segment_layer,),
        ),
        Target(
            "cosign_bundle",
            "documents.bundle.verify_bundle (JSON of JWSs: proposal, signatures)",
            (bundle,),
            verified_bundle,
            signed=True,
            items=True,
        ),
        Target(
            "document_control", "documents.payload.decode_control", controls, document_payload.decode_control
        ),
        Target(
            "status_token",
            "credentials.status.parse_status_token (signed status list)",
            (token.encode(),),
            status_token,
            signed=True,
            layers=(b64url_segment_layer,),
        ),
    ]


def _device_targets() -> list[Target]:
    draw = counter_bytes(5000)
    first = DeviceList.first(ALICE, name="laptop", wall_now=NOW)
    second = first.with_device(ALICE, Device(key=BOB.public.ed25519, name="phone", added=int(NOW)))
    link = LinkRequest.create(
        BOB, name="phone", addrs=("/ip4/127.0.0.1/tcp/1",), wall_now=NOW, random_bytes=draw
    )
    snapshot, _ = encode_snapshot(
        "Alice", Invite.create(ALICE).to_text(), [("bob", Invite.create(BOB).to_text())]
    )

    def device_list(data: bytes) -> object:
        return DeviceList.decode(data).encode()

    def link_request(data: bytes) -> object:
        parsed = LinkRequest.from_text(_text(data), wall_now=NOW)
        return (parsed.device, parsed.name, parsed.addrs, parsed.nonce, parsed.created)

    return [
        Target(
            "device_list",
            "identity.DeviceList.decode (root signature)",
            (first.encode(), second.encode()),
            device_list,
            signed=True,
        ),
        Target(
            "link_request",
            "identity.LinkRequest.from_text (device signature)",
            (link.to_text().encode(),),
            link_request,
            signed=True,
            layers=(base32_layer(b"MESHCHAT-LINK:"),),
        ),
        Target("device_snapshot", "device_api.decode_snapshot (JSON)", (snapshot,), decode_snapshot),
    ]


def _jsonrpc_targets() -> list[Target]:
    seeds = (
        b'{"jsonrpc":"2.0","id":1,"method":"send","params":{"to":"bob","text":"hi"}}',
        b'[{"jsonrpc":"2.0","id":"a","method":"contacts"},{"jsonrpc":"2.0","method":"x","params":[1,2.5e3,null,true]}]',
        '{"jsonrpc":"2.0","id":2,"method":"send","params":{"text":"привет \\ud83d\\ude00"}}'.encode(),
    )
    return [
        Target(
            "jsonrpc",
            "app.jsonrpc.loads (strict JSON; refuses with _Refused, its typed JSON-RPC error)",
            seeds,
            loads,
            typed=(MeshchatError, _Refused),
        )
    ]


def app_parts() -> tuple[Callable[[], list[Target]], ...]:
    """The target makers of this module."""
    return (_credential_targets, _document_targets, _device_targets, _jsonrpc_targets)
