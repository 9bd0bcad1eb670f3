"""node.credentials on real nodes on 127.0.0.1: request -> issue -> held -> present -> verify at a third
node; revocation reaching the verifier by gossip; forged status tokens refused and counted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from conftest import make_profile

from meshchat.credential_api import CredentialReceived, CredentialRequested, StatusReceived
from meshchat.credentials.credential import holder_key
from meshchat.credentials.messages import encode_issued, encode_request
from meshchat.credentials.status import StatusList, status_topic, status_uri
from meshchat.credentials.wallet import WALLET_FILE
from meshchat.errors import CredentialRevoked, NoPendingRequest, StorageError, UnknownCredential
from meshchat.gossip.events import DropReason
from meshchat.identity import Identity
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.wire import Invite
from meshchat.wire.jose import did_key

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 20.0
FAST_RETRY = StoreConfig(retry_initial=0.5)
NAMES = ["school", "ann", "employer"]


@asynccontextmanager
async def three_nodes(tmp_path: Path) -> AsyncIterator[list[Node]]:
    """A school, a graduate (Ann) and an employer; each has the others as contacts; all connected to
    the school."""
    profiles = [make_profile(tmp_path, name, i + 1) for i, name in enumerate(NAMES)]
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for folder, _ in profiles:
            nodes.append(
                await stack.enter_async_context(Node.open(folder, listen=LOCAL, store_config=FAST_RETRY))
            )
        for i, node in enumerate(nodes):
            for j, (_, identity) in enumerate(profiles):
                if i != j:
                    invite = Invite.create(identity, name=NAMES[j].title(), addrs=nodes[j].listen_addrs)
                    node.contacts.add(invite.to_text())
        for node in nodes[1:]:
            await node.connect(nodes[0].listen_addrs[0])
        yield nodes


async def next_event(node: Node, kind: type) -> object:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, kind):
                return event
    raise AssertionError("unreachable")


async def test_request_issue_present_verify_revoke(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as (school, ann, employer):
        school_did = school.credentials.did
        employer.credentials.trust(school_did, "Springfield School")
        ann.credentials.request("School", "diploma", note="class of 2026")
        requested = await next_event(school, CredentialRequested)
        assert isinstance(requested, CredentialRequested)
        assert requested.request.note == "class of 2026" and not requested.request.stranger
        assert [r.vct for r in school.credentials.requests()] == ["diploma"]
        with pytest.raises(NoPendingRequest):
            school.credentials.issue("Ann", vct="passport", claims={"name": "Ann"})
        credential, _ = school.credentials.issue(
            "Ann", vct="diploma", claims={"name": "Ann Lee", "degree": "MSc", "grade": "A"}, valid_days=365
        )
        assert school.credentials.requests() == []
        received = await next_event(ann, CredentialReceived)
        assert isinstance(received, CredentialReceived)
        assert received.credential_id == credential.credential_id
        [held] = ann.credentials.held()
        assert held.claims == {"name": "Ann Lee", "degree": "MSc", "grade": "A"}
        assert held.holder != ann.identity.public  # a key of its own, not the messenger identity
        # the employer gets the school's status list by gossip (published to new subscribers)
        with trio.fail_after(WAIT):
            await employer.wait_for(lambda: employer.credentials.status_age(school_did) is not None)
        nonce = employer.credentials.challenge()
        text = ann.credentials.present(
            credential.credential_id[:8], ["degree"], nonce=nonce, audience=employer.credentials.did
        )
        verified = employer.credentials.verify(text, nonce=nonce)
        assert verified.claims == {"degree": "MSc"}
        assert verified.issuer_name == "Springfield School" and verified.status == "valid"
        assert "Ann Lee" not in text
        # revocation: the school flips the bit and publishes; the employer's node takes the new list
        school.credentials.revoke(credential.credential_id)
        assert school.credentials.issued()[0].revoked
        with trio.fail_after(WAIT):
            while True:
                status = await next_event(employer, StatusReceived)
                nonce = employer.credentials.challenge()
                text = ann.credentials.present(
                    credential.credential_id, ["degree"], nonce=nonce, audience=employer.credentials.did
                )
                try:
                    employer.credentials.verify(text, nonce=nonce)
                except CredentialRevoked as exc:
                    assert exc.issuer == school_did and exc.list_age < WAIT
                    break
        assert isinstance(status, StatusReceived)
        with pytest.raises(UnknownCredential):
            school.credentials.revoke("nothing-like-it")
    # everything is in the wallets after the nodes stopped: verification stays offline
    for name in NAMES:
        assert (tmp_path / name / WALLET_FILE).exists()
    async with Node.open(tmp_path / "employer", listen=LOCAL) as again:
        assert again.credentials.status_age(school_did) is not None
        nonce = again.credentials.challenge()
        async with Node.open(tmp_path / "ann", listen=LOCAL) as ann_again:
            text = ann_again.credentials.present(
                credential.credential_id, ["degree"], nonce=nonce, audience=again.credentials.did
            )
        with pytest.raises(CredentialRevoked):
            again.credentials.verify(text, nonce=nonce)


async def test_forged_status_tokens_are_refused_and_counted(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as (school, ann, employer):
        school_did = school.credentials.did
        employer.credentials.trust(school_did, "School")
        forger = Identity(b"\x66" * 32)
        # a list in the school's name, signed by someone else
        forged_list = StatusList(status_uri(did_key(forger.public), "1"))
        token = forged_list.token(forger, now=time.time())
        topic = status_topic(school_did)
        assert employer.credentials.gossip(topic, b"\xff\xfe")  # consumed, refused
        assert employer.credentials.gossip(topic, token.encode()) is True
        assert employer.credentials.status_age(school_did) is None
        assert sum(employer.credentials.counts.values()) == 2
        # over the network: the employer's relay check rejects it before delivery, and counts it
        await employer.connect(ann.listen_addrs[0])
        with trio.fail_after(WAIT):
            await ann.wait_for(lambda: employer.peer_id in ann.driver.router.topic_peers(topic))
        before = employer.driver.router.statistics().drops[DropReason.INVALID]
        await ann.publish(topic, token.encode())
        with trio.fail_after(WAIT):
            await employer.wait_for(
                lambda: employer.driver.router.statistics().drops[DropReason.INVALID] > before
            )
        assert employer.credentials.status_age(school_did) is None


async def test_controls_that_do_not_fit_are_refused_and_counted(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as (school, ann, employer):
        ann_public = ann.identity.public
        stranger = Identity(b"\x77" * 32)
        key = holder_key(stranger.seed, b"k" * 16)
        nonce = "B" * 22
        # a request addressed to another issuer
        body = encode_request(key, issuer_did=employer.credentials.did, vct="d", nonce=nonce, now=0)
        school.credentials.control(ann_public, body, b"")
        # a credential nobody asked for
        school.credentials.control(ann_public, encode_issued("x.y.z~", nonce=nonce), b"")
        school.credentials.control(ann_public, b"\x84\x01\x42garbage", b"")
        counts = school.credentials.counts
        assert counts["request for another issuer"] == 1 and counts["credential not asked for"] == 1
        assert sum(counts.values()) == 3, counts
        assert school.credentials.requests() == []
        # a request from a stranger is kept, marked so
        body = encode_request(key, issuer_did=school.credentials.did, vct="d", nonce=nonce, now=0)
        school.credentials.control(stranger.public, body, b"")
        school.credentials.control(stranger.public, body, b"")  # a redelivery changes nothing
        [pending] = school.credentials.requests()
        assert pending.stranger and pending.requester == stranger.public.ed25519


def test_wallet_is_encrypted_with_the_identity_key(tmp_path: Path) -> None:
    from meshchat.credential_api import open_wallet  # noqa: PLC0415
    from meshchat.credentials.wallet import Wallet  # noqa: PLC0415

    folder, identity = make_profile(tmp_path, "ann", 2)
    with open_wallet(folder, identity) as wallet:
        wallet.trust("did:key:zX", "X", now=1)
    assert not (folder / WALLET_FILE).read_bytes().startswith(b"SQLite format 3")
    with pytest.raises(StorageError):
        Wallet(folder / WALLET_FILE).trusted()
    with open_wallet(folder, identity) as wallet:
        assert wallet.trusted() == {"did:key:zX": "X"}


def test_offline_credentials_import_status_and_refuse_network_work() -> None:
    from meshchat.credential_api import Credentials  # noqa: PLC0415
    from meshchat.credentials.wallet import Wallet  # noqa: PLC0415
    from meshchat.errors import DecodeError, ProfileError, UnknownIssuer  # noqa: PLC0415

    school = Identity(b"\x05" * 32)
    school_did = did_key(school.public)
    now = 1_800_000_000.0
    with Wallet(":memory:") as wallet:
        verifier = Credentials.offline(Identity(b"\x06" * 32), wallet, wall_clock=lambda: now)
        token = StatusList(status_uri(school_did, "1")).token(school, now=now - 5)
        with pytest.raises(UnknownIssuer):
            verifier.import_status(token)
        verifier.trust(school_did, "School")
        assert verifier.import_status(token)
        assert not verifier.import_status(token)  # not newer
        assert verifier.status_age(school_did) == 5
        with pytest.raises(DecodeError):
            verifier.import_status("not.a.token")
        with pytest.raises(ProfileError, match="needs a running node"):
            verifier.request(school.public, "diploma")
        with pytest.raises(ProfileError, match="needs a running node"):
            verifier.issue(school.public, vct="diploma", claims={"a": 1})
        # persisted: a new instance on the same wallet has it
        again = Credentials.offline(Identity(b"\x06" * 32), wallet, wall_clock=lambda: now + 10)
        assert again.status_age(school_did) == 15 and again.trusted() == {school_did: "School"}


def test_a_revocation_within_the_second_of_the_last_token_still_reaches_verifiers() -> None:
    """Tokens carry whole seconds and a verifier keeps only a newer one: a list changed in the same
    second as its last token is signed a second later, so the revocation is not dropped as old."""
    from meshchat.credential_api import Credentials  # noqa: PLC0415
    from meshchat.credentials.status import StatusCache, StatusRef, parse_status_token  # noqa: PLC0415
    from meshchat.credentials.wallet import IssuedRecord, Wallet  # noqa: PLC0415

    school = Identity(b"\x05" * 32)
    uri = status_uri(did_key(school.public), "1")
    now = 1_800_000_000.0
    with Wallet(":memory:") as wallet:
        status_list = StatusList(uri)
        ref: StatusRef = status_list.allocate()
        record = IssuedRecord(
            credential_id="c" * 22,
            request="r" * 22,
            requester=b"\x01" * 32,
            holder=b"\x02" * 32,
            vct="diploma",
            list_uri=uri,
            status_index=ref.index,
            revoked=False,
            issued_at=now,
            expires=None,
            compact="x~",
        )
        wallet.add_issued(record, bits=(uri, status_list.to_bytes(), now))
        issuer = Credentials.offline(school, wallet, wall_clock=lambda: now)
        cache = StatusCache()
        [first] = issuer.status_tokens()
        assert cache.put(first, now=now)
        [same] = issuer.status_tokens()  # nothing changed: no drift ahead of the clock
        assert parse_status_token(same).issued_at == now
        issuer.revoke("c" * 8)
        [revoked] = issuer.status_tokens()
        assert parse_status_token(revoked).issued_at == now + 1
        assert cache.put(revoked, now=now)
        assert cache.lookup(ref, did_key(school.public), now=now) == (True, 0.0)
