"""``node.documents`` between real nodes on 127.0.0.1 with real sqlite profiles: a three-party round
(propose, two sign, complete at all three, one revokes -> open again everywhere, the exported bundle
verifies offline), a document too large to travel inline (sent as a file, checked before signing),
an offline signer reached through a mailbox, and a control from a stranger or garbage counted, not
crashing the node."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from conftest import make_profile

from meshchat.document_api import CAPTION_PREFIX
from meshchat.documents.bundle import verify_bundle
from meshchat.documents.events import DocumentState
from meshchat.documents.payload import MAX_INLINE
from meshchat.documents.signature import digest_bytes
from meshchat.errors import DocumentError, DocumentMismatch, UnknownDocument
from meshchat.files.events import AttachmentFetched
from meshchat.identity import Identity
from meshchat.net.file_driver import FileConfig
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxStatus
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 60.0
FAST = StoreConfig(retry_initial=0.5, sync_interval=1.0)
CONTRACT = b"Alice, Bob and Carol found a bicycle repair shop. Profits are shared equally.\n"


async def until(node: Node, condition: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        await node.wait_for(condition)


def state(node: Node, doc_id: str) -> DocumentState | None:
    try:
        return node.documents.view(doc_id).state
    except UnknownDocument:
        return None


def signed_by(node: Node, doc_id: str) -> set[str]:
    try:
        return {s.signer.peer_id for s in node.documents.view(doc_id).signatures}
    except UnknownDocument:
        return set()


@asynccontextmanager
async def trio_of_nodes(tmp_path: Path, **options: object) -> AsyncIterator[list[Node]]:
    """Alice, Bob and Carol, each a contact of the others (their invites carry their addresses)."""
    profiles = [make_profile(tmp_path, name, seed) for name, seed in (("alice", 1), ("bob", 2), ("carol", 3))]
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                Node.open(folder, listen=LOCAL, dht=False, store_config=FAST, **options)  # type: ignore[arg-type]
            )
            for folder, _ in profiles
        ]
        names = ("Alice", "Bob", "Carol")
        for node in nodes:
            for other, name in zip(nodes, names, strict=True):
                if other is not node:
                    node.contacts.add(
                        Invite.create(other.identity, name=name, addrs=other.listen_addrs).to_text()
                    )
        await nodes[1].connect(nodes[0].listen_addrs[0])
        await nodes[2].connect(nodes[0].listen_addrs[0])
        await nodes[2].connect(nodes[1].listen_addrs[0])
        yield nodes


async def test_three_partners_two_sign_one_revokes_and_the_bundle_verifies_offline(tmp_path: Path) -> None:
    async with trio_of_nodes(tmp_path) as (alice, bob, carol):
        proposed = await alice.documents.propose(
            CONTRACT, name="shop.txt", signers=["Bob", "Carol"], threshold=2
        )
        doc_id = proposed.doc_id
        view = proposed.view
        assert view.state is DocumentState.OPEN and view.proposal.threshold == 2
        assert {p.peer_id for p in view.proposal.signers} == {alice.peer_id, bob.peer_id, carol.peer_id}
        assert view.proposal.digest == digest_bytes(CONTRACT)
        # The proposal reaches both signers (inline: the text itself travels with it).
        for node in (bob, carol):
            await until(node, lambda n=node: state(n, doc_id) is DocumentState.OPEN)  # type: ignore[misc]
            assert node.documents.content(doc_id) == CONTRACT
            assert node.documents.view(doc_id).proposal.proposer.peer_id == alice.peer_id

        await bob.documents.sign(doc_id)
        await carol.documents.sign(doc_id)
        for node in (alice, bob, carol):
            await until(node, lambda n=node: state(n, doc_id) is DocumentState.COMPLETE)  # type: ignore[misc]
            assert signed_by(node, doc_id) == {bob.peer_id, carol.peer_id}
            assert [p.peer_id for p in node.documents.view(doc_id).pending] == [alice.peer_id]

        bundle = bob.documents.bundle(doc_id)
        report = verify_bundle(bundle, digest=digest_bytes(CONTRACT), now=time.time())
        assert report.complete and {s.signer.peer_id for s in report.signatures} == {
            bob.peer_id,
            carol.peer_id,
        }
        with pytest.raises(DocumentMismatch):
            verify_bundle(bundle, digest=digest_bytes(CONTRACT + b"!"), now=time.time())

        # Carol takes her signature back: one valid signature of two needed, at all three.
        await carol.documents.revoke(doc_id, reason="changed my mind")
        for node in (alice, bob, carol):
            await until(node, lambda n=node: state(n, doc_id) is DocumentState.OPEN)  # type: ignore[misc]
            assert signed_by(node, doc_id) == {bob.peer_id}
            assert [p.peer_id for p, _ in node.documents.view(doc_id).revoked] == [carol.peer_id]
        after = verify_bundle(alice.documents.bundle(doc_id), digest=digest_bytes(CONTRACT), now=time.time())
        assert not after.complete and [s.signer.peer_id for s in after.signatures] == [bob.peer_id]
        # The bundle exported before the revocation still says "complete": only a newer one knows.
        assert verify_bundle(bundle, digest=digest_bytes(CONTRACT), now=time.time()).complete

        # Alice signs: two valid of two needed again.
        await alice.documents.sign(doc_id)
        for node in (alice, bob, carol):
            await until(node, lambda n=node: state(n, doc_id) is DocumentState.COMPLETE)  # type: ignore[misc]

    # Everything was durable: the profiles remember the round after the nodes stopped.
    async with trio_of_nodes(tmp_path) as (alice, _bob, carol):
        assert state(alice, doc_id) is DocumentState.COMPLETE
        assert signed_by(carol, doc_id) == {alice.peer_id, bob.peer_id}


async def test_a_large_document_travels_as_a_file_and_is_checked_before_signing(tmp_path: Path) -> None:
    big = tmp_path / "annex.bin"
    big.write_bytes(os.urandom(MAX_INLINE + 1000))
    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(os.urandom(MAX_INLINE + 1000))
    config = FileConfig(downloads=tmp_path / "downloads", retry_initial=0.2, retry_max=1.0)
    async with trio_of_nodes(tmp_path, file_config=config) as (alice, bob, _carol):
        proposed = await alice.documents.propose(big, signers=["Bob"], threshold=2)
        doc_id = proposed.doc_id
        assert len(proposed.attachments) == 1
        await until(bob, lambda: state(bob, doc_id) is DocumentState.OPEN)
        assert not bob.documents.view(doc_id).has_content
        # Before the file is in, there is nothing to sign; a different file is refused.
        with pytest.raises(DocumentError):
            await bob.documents.sign(doc_id)
        with pytest.raises(DocumentMismatch):
            await bob.documents.sign(doc_id, path=wrong)
        # The attachment arrives with its caption and is fetched (under the automatic size).
        with trio.fail_after(WAIT):
            async for event in bob.events():
                if isinstance(event, AttachmentFetched):
                    break
        attachment = bob.files.attachment(event.number)
        assert bob.files.manifest(attachment).caption == CAPTION_PREFIX + doc_id
        await bob.documents.sign(doc_id)  # found the fetched attachment by its caption
        await until(alice, lambda: signed_by(alice, doc_id) == {bob.peer_id})
        # Alice signs her own round: her node finds the file it sent (checked against the proposal).
        await alice.documents.sign(doc_id)
        for node in (alice, bob):
            await until(node, lambda n=node: state(n, doc_id) is DocumentState.COMPLETE)  # type: ignore[misc]


async def test_an_offline_signer_gets_the_proposal_from_a_mailbox(tmp_path: Path) -> None:
    box_dir, _ = make_profile(tmp_path, "box", 9)
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    async with Node.open(box_dir, listen=LOCAL, dht=False, mailbox=True) as box:
        mailboxes = [box.listen_addrs[0]]
        async with Node.open(
            alice_dir, listen=LOCAL, dht=False, mailboxes=mailboxes, store_config=FAST
        ) as alice:
            alice.contacts.add(Invite.create(bob_id, name="Bob", mailboxes=mailboxes).to_text())
            proposed = await alice.documents.propose(CONTRACT, name="shop.txt", signers=["Bob"], threshold=2)
            doc_id = proposed.doc_id
            with trio.fail_after(WAIT):
                for handle in proposed.controls:
                    await handle.wait_until(OutboxStatus.STORED)
            signed = await alice.documents.sign(doc_id)
            with trio.fail_after(WAIT):
                for handle in signed:
                    await handle.wait_until(OutboxStatus.STORED)
        # Alice is gone; Bob comes online for the first time and reaches only the mailbox.
        async with Node.open(bob_dir, listen=LOCAL, dht=False, mailboxes=mailboxes, store_config=FAST) as bob:
            bob.contacts.add(Invite.create(alice_id, name="Alice", mailboxes=mailboxes).to_text())
            await until(bob, lambda: state(bob, doc_id) is not None and len(signed_by(bob, doc_id)) == 1)
            assert bob.documents.content(doc_id) == CONTRACT
            sent = await bob.documents.sign(doc_id)
            assert state(bob, doc_id) is DocumentState.COMPLETE
            with trio.fail_after(WAIT):
                for handle in sent:
                    await handle.wait_until(OutboxStatus.STORED)
        # Alice comes back and learns from the mailbox that Bob signed.
        async with Node.open(
            alice_dir, listen=LOCAL, dht=False, mailboxes=mailboxes, store_config=FAST
        ) as alice:
            await until(alice, lambda: state(alice, doc_id) is DocumentState.COMPLETE)


async def test_garbage_and_strangers_controls_are_counted_not_fatal(tmp_path: Path) -> None:
    async with trio_of_nodes(tmp_path) as (alice, bob, _carol):
        stranger = Identity.generate()
        before = dict(alice.documents.core.counts)
        alice.documents.control(stranger.public, b"\x84\x01\x41\x02\x09", b"\x00" * 32)
        alice.documents.control(bob.identity.public, b"\x84\x01\x41" + b"\xff" * 40, b"\x00" * 32)
        assert sum(alice.documents.core.counts.values()) >= sum(before.values()) + 2
        assert alice.documents.documents() == []


async def test_a_witness_bounds_the_signing_time_at_every_participant(tmp_path: Path) -> None:
    """Carol witnesses (quorum 1): Bob's signature is stamped "seen at" by her node, and Alice and
    Bob both learn that Bob signed no later than that stamp; the bundle carries it offline."""
    async with trio_of_nodes(tmp_path) as (alice, bob, carol):
        before = time.time()
        proposed = await alice.documents.propose(
            CONTRACT, name="shop.txt", signers=["Bob"], threshold=1, me=False, witnesses=["Carol"], quorum=1
        )
        doc_id = proposed.doc_id
        await until(bob, lambda: state(bob, doc_id) is DocumentState.OPEN)
        await bob.documents.sign(doc_id)
        bob_did = bob.documents.view(doc_id).signatures[0].signer_did
        for node in (alice, bob):
            await until(node, lambda n=node: bob_did in n.documents.view(doc_id).signed_by)  # type: ignore[misc]
            bound = node.documents.view(doc_id).signed_by[bob_did]
            assert before - 1 <= bound <= time.time() + 1
        report = verify_bundle(alice.documents.bundle(doc_id), digest=digest_bytes(CONTRACT), now=time.time())
        assert report.complete and bob_did in report.signed_no_later_than
        for node in (alice, bob, carol):  # nothing of this honest round was refused anywhere
            assert set(node.documents.core.counts) <= {"duplicate", "waiting"}, node.documents.core.counts
