"""Store-and-forward over the real network (127.0.0.1): a mailbox holds what an offline recipient
misses; the recipient syncs it when it comes online; receipts come back to the sender, signed."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from conftest import make_profile
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from typer.testing import CliRunner

from meshchat.cli import app
from meshchat.contacts import Contacts
from meshchat.errors import NetworkError, StorageError
from meshchat.gossip.rpc import FrameDecoder, frame
from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.net.mailbox import call_mailbox
from meshchat.node import Node
from meshchat.store.mailbox import MailboxLimits
from meshchat.store.messenger import StatusChanged, StoreConfig
from meshchat.store.protocol import (
    MAILBOX_PROTOCOL,
    MAX_FRAME,
    ErrorCode,
    MailboxError,
    StoreCode,
    Stored,
    StoreRequest,
    decode_response,
)
from meshchat.store.sqlite import STORE_FILE, SqliteStorage
from meshchat.store.storage import OutboxStatus
from meshchat.wire import INBOX_TAG_SIZE, EnvelopeKind, Invite
from meshchat.wire.envelope import encode_fields

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 30.0
FAST = StoreConfig(retry_initial=0.5, sync_interval=1.0)


@asynccontextmanager
async def mailbox_node(tmp_path: Path, limits: MailboxLimits | None = None) -> AsyncIterator[Node]:
    folder, _ = make_profile(tmp_path, "mailbox", 9)
    async with Node.open(folder, listen=LOCAL, mailbox=True, mailbox_limits=limits, dht=False) as node:
        yield node


async def direct_messages(node: Node, count: int) -> list[DirectMessage]:
    got: list[DirectMessage] = []
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, DirectMessage):
                got.append(event)
                if len(got) == count:
                    return got
    raise AssertionError("unreachable")


async def test_offline_recipient_gets_everything_from_the_mailbox_and_receipts_come_back(
    tmp_path: Path,
) -> None:
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    async with mailbox_node(tmp_path) as box:
        address = box.listen_addrs[0]
        async with Node.open(
            alice_dir, listen=LOCAL, mailboxes=[address], store_config=FAST, dht=False
        ) as alice:
            alice.contacts.add(Invite.create(bob_id, name="Bob").to_text())
            handles = [await alice.send("Bob", f"message {i}") for i in range(40)]
            with trio.fail_after(WAIT):
                for handle in handles:
                    await handle.wait_until(OutboxStatus.STORED)
            assert all(h.record.stored_on == (box.peer_id,) for h in handles)
        held = box.mailbox_statistics()
        assert held is not None and held.items == 40
        # Bob comes online for the first time: everything is waiting, in Alice's order.
        async with Node.open(bob_dir, listen=LOCAL, mailboxes=[address], store_config=FAST, dht=False) as bob:
            got = await direct_messages(bob, 40)
            assert [m.body.decode() for m in got] == [f"message {i}" for i in range(40)]
            assert [m.seq for m in got] == list(range(1, 41))
            assert [m.number for m in got] == list(range(1, 41))
            with trio.fail_after(WAIT):  # Bob deleted what he took; his receipts wait for Alice
                await bob.wait_for(lambda: bob.store_statistics().syncs >= 1)
        # Alice comes back: she syncs her receipts from the mailbox; every message is delivered.
        async with Node.open(
            alice_dir, listen=LOCAL, mailboxes=[address], store_config=FAST, dht=False
        ) as alice:
            with trio.fail_after(WAIT):
                await alice.wait_for(
                    lambda: all(r.status is OutboxStatus.DELIVERED for r in alice.outbox(100))
                )
            assert len(alice.outbox(100)) == 40
        # Bob again: nothing new, nothing twice (the seen window and the inbox are in his profile).
        async with Node.open(bob_dir, listen=LOCAL, mailboxes=[address], store_config=FAST, dht=False) as bob:
            with trio.fail_after(WAIT):
                await bob.wait_for(lambda: bob.store_statistics().syncs >= 1)
            assert bob.store_statistics().received == 0
            assert len(bob.inbox(limit=1000)) == 40
        with trio.fail_after(WAIT):  # the mailbox dropped what was delivered, receipts included
            await box.wait_for(lambda: box.mailbox_statistics().items == 0)  # type: ignore[union-attr]

    runner = CliRunner()
    outbox = runner.invoke(app, ["outbox", "--profile", str(alice_dir), "--json", "--limit", "100"])
    assert outbox.exit_code == 0, outbox.output
    assert outbox.output.count('"status": "delivered"') == 40
    first = handles[0].message_id.hex()
    status = runner.invoke(app, ["status", first[:12], "--profile", str(alice_dir)])
    assert status.exit_code == 0 and "delivered" in status.output
    inbox = runner.invoke(app, ["inbox", "--profile", str(bob_dir), "--json"])
    assert inbox.exit_code == 0 and inbox.output.count('"from_name": null') == 40


async def test_an_over_quota_mailbox_answers_and_the_outbox_shows_it(tmp_path: Path) -> None:
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    _, bob_id = make_profile(tmp_path, "bob", 2)
    async with mailbox_node(tmp_path, MailboxLimits(per_tag_bytes=3_000)) as box:
        async with Node.open(
            alice_dir, listen=LOCAL, mailboxes=[box.listen_addrs[0]], store_config=FAST, dht=False
        ) as alice:
            alice.contacts.add(Invite.create(bob_id, name="Bob").to_text())
            handles = [await alice.send("Bob", "x" * 200) for _ in range(8)]
            with trio.fail_after(WAIT):
                await alice.wait_for(lambda: all(h.status is OutboxStatus.STORED or h.error for h in handles))
            refused = [h for h in handles if h.status is OutboxStatus.QUEUED]
            assert refused and all("tag quota" in h.error for h in refused)
            statuses = []
            while True:
                try:
                    event = alice.events().receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(event, StatusChanged) and event.error:
                    statuses.append(event)
            assert statuses  # the refusal reached the app as an event too
        held = box.mailbox_statistics()
        # Alice is neither the mailbox's owner nor its contact: a stranger, held to the strangers' share
        assert held is not None and held.refused.get("strangers_tag_full", 0) >= len(refused)


def test_status_of_an_unknown_message_is_a_clear_error(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "carol", 3)
    runner = CliRunner()
    result = runner.invoke(app, ["status", "deadbeefdeadbeef", "--profile", str(folder)])
    assert result.exit_code != 0
    assert "has no store.db yet" in result.output


async def test_a_mailbox_answering_garbage_costs_nothing_already_accepted(tmp_path: Path) -> None:
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    _, bob_id = make_profile(tmp_path, "bob", 2)
    async with Node.open(identity=Identity(b"\x0b" * 32), listen=LOCAL, dht=False) as liar:

        async def garbage(stream: INetStream) -> None:
            # (py-libp2p 0.8.1 stops serving a connection's new streams after a handler raises: catch)
            with contextlib.suppress(Exception):
                if await stream.read(1):  # the start of a request is enough to answer it with garbage
                    await stream.write(frame(b"\xc1 not msgpack"))
                await stream.close()

        liar.host.set_stream_handler(TProtocol(MAILBOX_PROTOCOL), garbage)
        async with Node.open(
            alice_dir, listen=LOCAL, mailboxes=[liar.listen_addrs[0]], store_config=FAST, dht=False
        ) as alice:
            handle = await alice.send(bob_id.public, "still mine")
            with trio.fail_after(WAIT):
                await alice.wait_for(
                    lambda: alice.store_statistics().discarded.get("mailbox call failed", 0) >= 2
                )
            assert handle.status is OutboxStatus.QUEUED  # not "stored": the liar proved nothing
            assert [r.message_id for r in alice.outbox()] == [handle.message_id]


async def test_a_full_disk_refuses_the_send_and_keeps_what_was_queued(tmp_path: Path) -> None:
    _, bob_id = make_profile(tmp_path, "bob", 2)
    storage = SqliteStorage(tmp_path / "tiny.db", max_pages=40)
    async with Node.open(identity=Identity(b"\x0c" * 32), listen=LOCAL, storage=storage, dht=False) as alice:
        queued = []
        with pytest.raises(StorageError):
            for i in range(1000):
                queued.append(await alice.send(bob_id.public, f"{i}".encode() * 3000))
        assert queued  # some fitted before the disk filled
        kept = {r.message_id for r in alice.outbox(1000)}
        assert kept == {h.message_id for h in queued}
        assert all(h.status is OutboxStatus.QUEUED for h in queued)
    # The caller's store is the caller's: the node leaves it open, with everything it accepted.
    assert len(storage.outbox_recent(1000)) == len(queued)
    storage.close()


async def test_a_profile_store_is_closed_even_when_opening_the_node_fails(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    nobody = Identity(b"\x0d" * 32).public.peer_id
    with pytest.raises(NetworkError):  # the store was open by then: bootstrap comes after it
        async with Node.open(folder, listen=LOCAL, bootstrap=[f"/ip4/127.0.0.1/tcp/1/p2p/{nobody}"]):
            pass
    # sqlite removes the WAL file when the last connection closes: the node closed its own.
    assert (folder / STORE_FILE).exists() and not (folder / f"{STORE_FILE}-wal").exists()


async def test_a_mailbox_counts_requests_it_cannot_read(tmp_path: Path) -> None:
    async with (
        mailbox_node(tmp_path) as box,
        Node.open(identity=Identity(b"\x0e" * 32), listen=LOCAL, dht=False) as peer,
    ):
        await peer.connect(box.listen_addrs[0])
        stream = await peer.host.new_stream(ID.from_base58(box.peer_id), [TProtocol(MAILBOX_PROTOCOL)])
        await stream.write(frame(b"\xc1 not msgpack"))
        frames = FrameDecoder(max_frame_size=MAX_FRAME).feed(await stream.read(4096))
        answer = decode_response(frames[0])
        assert isinstance(answer, MailboxError) and answer.code is ErrorCode.BAD_REQUEST
        await stream.close()
        held = box.mailbox_statistics()
        assert held is not None and held.refused.get("bad request") == 1


async def test_a_sender_stores_on_the_mailboxes_named_in_the_recipients_invite(tmp_path: Path) -> None:
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    async with mailbox_node(tmp_path) as box:
        # Alice knows no mailbox of her own: Bob's invite names the one he syncs from.
        bob_invite = Invite.create(bob_id, name="Bob", mailboxes=[box.listen_addrs[0]])
        async with Node.open(alice_dir, listen=LOCAL, store_config=FAST, dht=False) as alice:
            alice.contacts.add(bob_invite.to_text())
            handle = await alice.send("Bob", "found your mailbox in your invite")
            with trio.fail_after(WAIT):
                await handle.wait_until(OutboxStatus.STORED)
            assert handle.record.stored_on == (box.peer_id,)
        async with Node.open(
            bob_dir, listen=LOCAL, mailboxes=[box.listen_addrs[0]], store_config=FAST, dht=False
        ) as bob:
            got = await direct_messages(bob, 1)
            assert got[0].body == b"found your mailbox in your invite"


async def test_an_unusable_mailbox_address_in_an_invite_is_skipped(tmp_path: Path) -> None:
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    _, bob_id = make_profile(tmp_path, "bob", 2)
    nobody = Identity(b"\x0f" * 32).public.peer_id
    odd = Invite.create(bob_id, name="Bob", mailboxes=[f"/not-a-protocol/1/p2p/{nobody}"])
    Contacts(alice_dir).add(odd.to_text())
    async with Node.open(alice_dir, listen=LOCAL, store_config=FAST, dht=False) as alice:  # opens
        handle = await alice.send("Bob", "still queued")
        assert handle.status is OutboxStatus.QUEUED


async def test_fresh_identities_cannot_crowd_the_mailbox_owners_contacts_out(tmp_path: Path) -> None:
    """Issue 12, item 5, on the real network: eight throwaway identities fill what strangers may hold
    of a mailbox node; Alice's message to Bob, the mailbox owner's contact, is still stored."""
    limits = MailboxLimits(per_tag_bytes=16 * 1024, per_peer_bytes=8 * 1024, total_bytes=64 * 1024)
    box_dir, _ = make_profile(tmp_path, "mailbox", 9)
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    _, bob_id = make_profile(tmp_path, "bob", 2)
    bob_invite = Invite.create(bob_id, name="Bob").to_text()
    Contacts(box_dir).add(bob_invite)  # the mailbox's owner knows Bob
    rng = random.Random(12)
    refused: list[StoreCode] = []
    async with Node.open(box_dir, listen=LOCAL, mailbox=True, mailbox_limits=limits, dht=False) as box:
        for _ in range(8):
            async with Node.open(identity=Identity.generate(), listen=LOCAL, dht=False, inbox=False) as sybil:
                await sybil.connect(box.listen_addrs[0])
                for _ in range(20):  # bounded: each identity stores until it is refused
                    data = encode_fields(
                        kind=EnvelopeKind.SEALED,
                        inbox_tag=rng.randbytes(INBOX_TAG_SIZE),
                        expiry=int(time.time()) + 3600,
                        ephemeral_key=rng.randbytes(32),
                        nonce=rng.randbytes(24),
                        ciphertext=rng.randbytes(900),
                    )
                    answer = await call_mailbox(sybil.host, box.peer_id, StoreRequest(envelopes=(data,)))
                    assert isinstance(answer, Stored)
                    if answer.results[0].code is not StoreCode.STORED:
                        refused.append(answer.results[0].code)
                        break
        held = box.mailbox_statistics()
        assert held is not None and held.stranger_bytes <= limits.total_bytes // 2
        assert StoreCode.MAILBOX_FULL in refused  # the strangers' share was full
        async with Node.open(
            alice_dir, listen=LOCAL, mailboxes=[box.listen_addrs[0]], store_config=FAST, dht=False
        ) as alice:
            alice.contacts.add(bob_invite)
            handle = await alice.send("Bob", "still room for Bob")
            with trio.fail_after(WAIT):
                assert await handle.wait_until(OutboxStatus.STORED) is OutboxStatus.STORED
