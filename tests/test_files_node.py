"""Files between real nodes on 127.0.0.1: round trips, a mailbox holding the chunks while the sender
is offline, a lying source, a download interrupted and resumed, a full disk, bad offers."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from conftest import make_profile
from libp2p.custom_types import TProtocol

from meshchat.crypto import epoch_of
from meshchat.errors import StorageError
from meshchat.files.chunks import CHUNK_SIZE
from meshchat.files.events import Attachment, AttachmentFetched, FileProblem
from meshchat.files.hold import HoldLimits
from meshchat.files.protocol import (
    CHUNK_PROTOCOL,
    ChunkData,
    Get,
    Ok,
    decode_request,
    encode,
)
from meshchat.files.sqlite import ReceivedState
from meshchat.groups.events import GroupInvited
from meshchat.groups.seal import group_tag, group_topic
from meshchat.identity import Identity
from meshchat.net import file_driver
from meshchat.net.chunk_server import StreamChannel
from meshchat.net.file_driver import FileConfig
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxStatus
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 60.0
FAST = StoreConfig(retry_initial=0.5, sync_interval=1.0)


def quick(downloads: Path, **changes: object) -> FileConfig:
    settings: dict[str, object] = {"downloads": downloads, "retry_initial": 0.2, "retry_max": 1.0}
    settings.update(changes)
    return FileConfig(**settings)  # type: ignore[arg-type]


def contents(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def next_event(node: Node, kind: type, *, wait: float = WAIT) -> object:
    with trio.fail_after(wait):
        async for event in node.events():
            if isinstance(event, kind):
                return event
    raise AssertionError("the event stream ended")


@asynccontextmanager
async def pair(tmp_path: Path, **bob_files: object) -> AsyncIterator[tuple[Node, Node, Identity]]:
    """Alice and Bob, connected; Bob downloads into tmp_path/downloads."""
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob = make_profile(tmp_path, "bob", 2)
    async with (
        Node.open(alice_dir, listen=LOCAL, dht=False, store_config=FAST) as alice,
        Node.open(
            bob_dir,
            listen=LOCAL,
            dht=False,
            store_config=FAST,
            file_config=quick(tmp_path / "downloads", **bob_files),
        ) as b,
    ):
        alice.contacts.add(Invite.create(bob, name="Bob", addrs=b.listen_addrs).to_text())
        await b.connect(alice.listen_addrs[0])
        yield alice, b, bob


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * CHUNK_SIZE + 17])
async def test_a_file_arrives_byte_identical(tmp_path: Path, size: int) -> None:
    source = tmp_path / "report.pdf"
    source.write_bytes(os.urandom(size))
    async with pair(tmp_path) as (alice, bob, _):
        handle = await alice.send_file("Bob", source, caption="the report")
        attachment = await next_event(bob, Attachment)
        assert isinstance(attachment, Attachment)
        assert attachment.manifest.name == "report.pdf"
        assert attachment.manifest.size == size
        assert attachment.manifest.caption == "the report"
        assert attachment.sender == alice.identity.public
        path = await bob.fetch(attachment)
        assert path.parent == tmp_path / "downloads"
        assert path.read_bytes() == source.read_bytes()
        with trio.fail_after(WAIT):
            await handle.wait_until(OutboxStatus.DELIVERED)
        progress = handle.progress
        assert progress is not None and progress.total == size
        assert bob.files.progress(attachment.number).fetched == size
        assert bob.files.attachment(attachment.number).state is ReceivedState.DONE
        # nothing of the partial file is left behind
        assert list((tmp_path / "downloads" / ".partial").iterdir()) == []


async def test_small_files_are_fetched_without_asking_and_large_ones_wait(tmp_path: Path) -> None:
    small, large = tmp_path / "small.txt", tmp_path / "large.bin"
    small.write_bytes(b"hello")
    large.write_bytes(os.urandom(3 * CHUNK_SIZE))
    async with pair(tmp_path, auto_fetch=CHUNK_SIZE) as (alice, bob, _):
        await alice.send_file("Bob", small)
        fetched = await next_event(bob, AttachmentFetched)
        assert isinstance(fetched, AttachmentFetched)
        assert contents(fetched.path) == b"hello"
        await alice.send_file("Bob", large)
        offered = await next_event(bob, Attachment)
        assert isinstance(offered, Attachment) and not offered.fetching
        assert bob.files.attachment(offered.number).state is ReceivedState.OFFERED
        path = await bob.fetch(offered.number, dest=tmp_path)
        assert path.parent == tmp_path and path.name == "large (1).bin"  # large.bin is taken there
        assert path.read_bytes() == large.read_bytes()


async def test_the_same_name_twice_lands_as_two_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "photo.jpg", tmp_path / "b" / "photo.jpg"
    for path, data in ((first, b"one"), (second, b"two")):
        path.parent.mkdir()
        path.write_bytes(data)
    async with pair(tmp_path) as (alice, bob, _):
        await alice.send_file("Bob", first)
        one = await bob.fetch(await next_event(bob, Attachment))  # type: ignore[arg-type]
        await alice.send_file("Bob", second)
        two = await bob.fetch(await next_event(bob, Attachment))  # type: ignore[arg-type]
    assert (one.name, two.name) == ("photo.jpg", "photo (1).jpg")
    assert (one.read_bytes(), two.read_bytes()) == (b"one", b"two")


async def test_a_mailbox_holds_the_chunks_while_the_sender_is_offline(tmp_path: Path) -> None:
    source = tmp_path / "video.mp4"
    source.write_bytes(os.urandom(7 * CHUNK_SIZE + 5))
    box_dir, _ = make_profile(tmp_path, "box", 9)
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob = make_profile(tmp_path, "bob", 2)
    async with Node.open(box_dir, listen=LOCAL, dht=False, mailbox=True) as box:
        mailboxes = [box.listen_addrs[0]]
        async with Node.open(
            alice_dir, listen=LOCAL, dht=False, mailboxes=mailboxes, store_config=FAST
        ) as alice:
            alice.contacts.add(Invite.create(bob, name="Bob").to_text())
            handle = await alice.send_file("Bob", source)
            with trio.fail_after(WAIT):
                await alice.wait_for(lambda: handle.progress is not None and handle.progress.complete)
                await handle.wait_until(OutboxStatus.STORED)
        # Alice is gone; Bob comes online for the first time and reaches only the mailbox.
        config = quick(tmp_path / "downloads")
        async with Node.open(
            bob_dir, listen=LOCAL, dht=False, mailboxes=mailboxes, store_config=FAST, file_config=config
        ) as b:
            fetched = await next_event(b, AttachmentFetched)
            assert isinstance(fetched, AttachmentFetched)
            assert digest(Path(fetched.path)) == digest(source)
            assert b.files.statistics().mismatches == {}
            # Bob shows the mailbox his token (in the background, after the event: he stays online
            # for it; a node closed at once may not): the only recipient has it, the chunks go.
            hold = box.files.driver.server.hold
            assert hold is not None
            with trio.fail_after(WAIT):
                await box.wait_for(lambda: hold.statistics().chunks == 0)
        assert hold.statistics().deleted_done == 1


async def test_a_full_mailbox_costs_the_upload_not_the_transfer(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(4 * CHUNK_SIZE))
    box_dir, _ = make_profile(tmp_path, "box", 9)
    limits = HoldLimits(per_peer_bytes=CHUNK_SIZE, total_bytes=CHUNK_SIZE * 2)
    async with Node.open(box_dir, listen=LOCAL, dht=False, mailbox=True, hold_limits=limits) as box:
        alice_dir, _ = make_profile(tmp_path, "alice", 1)
        bob_dir, bob = make_profile(tmp_path, "bob", 2)
        async with (
            Node.open(
                alice_dir,
                listen=LOCAL,
                dht=False,
                mailboxes=[box.listen_addrs[0]],
                store_config=FAST,
                file_config=FileConfig(retry_initial=0.2, retry_max=1.0),
            ) as alice,
            Node.open(bob_dir, listen=LOCAL, dht=False, file_config=quick(tmp_path / "downloads")) as b,
        ):
            alice.contacts.add(Invite.create(bob, name="Bob").to_text())
            await b.connect(alice.listen_addrs[0])
            await alice.send_file("Bob", source)
            problem = await next_event(alice, FileProblem)
            assert isinstance(problem, FileProblem) and "the limit is 262,144" in problem.error
            path = await b.fetch(await next_event(b, Attachment))  # type: ignore[arg-type]
            assert path.read_bytes() == source.read_bytes()  # from Alice herself
        assert box.files.driver.server.refused["bad_request"] >= 1


async def test_a_lying_source_is_struck_off_and_the_file_comes_from_another(tmp_path: Path) -> None:
    """Two mailboxes hold Alice's messages and file; one of them answers every chunk with garbage.
    Bob first reaches only the liar: three wrong chunks and it is struck off (counted), the download
    waits; once Bob reaches the honest mailbox the file arrives intact."""
    source = tmp_path / "notes.txt"
    source.write_bytes(os.urandom(6 * CHUNK_SIZE))
    box_dir, _ = make_profile(tmp_path, "box", 9)
    async with (
        Node.open(box_dir, listen=LOCAL, dht=False, mailbox=True) as box,
        Node.open(identity=Identity.generate(), listen=LOCAL, dht=False, mailbox=True) as liar,
    ):

        async def lie(stream: object) -> None:
            channel = StreamChannel(stream)  # type: ignore[arg-type]
            with trio.move_on_after(WAIT):
                while True:
                    try:
                        request = decode_request(await channel.receive())
                    except EOFError:
                        return
                    if isinstance(request, Get):
                        for address in request.addresses:
                            await channel.send(
                                encode(ChunkData(address=address, data=os.urandom(CHUNK_SIZE + 16)))
                            )
                    else:
                        await channel.send(encode(Ok()))

        liar.host.set_stream_handler(TProtocol(CHUNK_PROTOCOL), lie)  # type: ignore[arg-type]
        alice_dir, _ = make_profile(tmp_path, "alice", 1)
        bob_dir, bob = make_profile(tmp_path, "bob", 2)
        both = [box.listen_addrs[0], liar.listen_addrs[0]]
        async with Node.open(alice_dir, listen=LOCAL, dht=False, mailboxes=both, store_config=FAST) as alice:
            alice.contacts.add(Invite.create(bob, name="Bob").to_text())
            handle = await alice.send_file("Bob", source)
            with trio.fail_after(WAIT):
                await alice.wait_for(lambda: handle.progress is not None and handle.progress.complete)
                await alice.wait_for(lambda: len(handle.record.stored_on) == 2)
        async with Node.open(
            bob_dir,
            listen=LOCAL,
            dht=False,
            mailboxes=[liar.listen_addrs[0]],
            store_config=FAST,
            file_config=quick(tmp_path / "downloads"),
        ) as b:
            attachment = await next_event(b, Attachment)
            assert isinstance(attachment, Attachment)
            assert set(attachment.manifest.mailboxes) == {box.peer_id, liar.peer_id}
            problem = await next_event(b, FileProblem)
            assert isinstance(problem, FileProblem) and not problem.final
            assert b.files.statistics().mismatches[liar.peer_id] >= 3
            assert b.files.driver._running[attachment.number].plan.struck(liar.peer_id)
            await b.connect(box.listen_addrs[0])
            path = await b.fetch(attachment)
            assert path.read_bytes() == source.read_bytes()
            assert set(b.files.statistics().mismatches) == {liar.peer_id}


async def test_an_interrupted_download_resumes_where_it_stopped(tmp_path: Path) -> None:
    source = tmp_path / "movie.mkv"
    source.write_bytes(os.urandom(40 * CHUNK_SIZE + 3))
    alice_dir, _ = make_profile(tmp_path, "alice", 1)
    bob_dir, bob = make_profile(tmp_path, "bob", 2)
    config = quick(tmp_path / "downloads", window=2)
    async with Node.open(alice_dir, listen=LOCAL, dht=False, store_config=FAST) as alice:
        alice.contacts.add(Invite.create(bob, name="Bob").to_text())
        async with Node.open(bob_dir, listen=LOCAL, dht=False, store_config=FAST, file_config=config) as b:
            await b.connect(alice.listen_addrs[0])
            await alice.send_file("Bob", source)
            attachment = await next_event(b, Attachment)
            assert isinstance(attachment, Attachment)
            b.files.start_fetch(attachment.number)
            with trio.fail_after(WAIT):
                await b.wait_for(lambda: b.files.statistics().chunks_fetched >= 10)
            first_run = b.files.statistics().chunks_fetched
            assert first_run < 41
        # Bob's node stopped mid-download; it starts again and carries on by itself.
        async with Node.open(bob_dir, listen=LOCAL, dht=False, store_config=FAST, file_config=config) as b:
            await b.connect(alice.listen_addrs[0])
            record = await b.files.driver.wait_fetched(attachment.number)
            assert record.state is ReceivedState.DONE
            assert contents(record.path) == source.read_bytes()
            assert b.files.statistics().chunks_fetched <= 41 - first_run  # what was on disk was kept


async def test_a_full_disk_keeps_the_partial_file_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "photos.zip"
    source.write_bytes(os.urandom(12 * CHUNK_SIZE))
    real_pwrite = os.pwrite
    full = {"on": True, "writes": 0}

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        full["writes"] += 1
        if full["on"] and full["writes"] > 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(file_driver.os, "pwrite", pwrite)
    async with pair(tmp_path, window=2) as (alice, bob, _):
        await alice.send_file("Bob", source)
        attachment = await next_event(bob, Attachment)
        assert isinstance(attachment, Attachment)
        bob.files.start_fetch(attachment.number)
        problem = await next_event(bob, FileProblem)
        assert isinstance(problem, FileProblem) and "no space left" in problem.error and not problem.final
        assert 0 < bob.files.progress(attachment.number).fetched < source.stat().st_size
        full["on"] = False  # space was freed
        path = await bob.fetch(attachment)
        assert path.read_bytes() == source.read_bytes()


async def test_a_bad_offer_is_counted_and_nothing_else_happens(tmp_path: Path) -> None:
    async with pair(tmp_path) as (alice, bob, bob_id):
        bad = b"\x82\x01\x40\x02\xc4\x03abc"  # an offer's head, then no manifest
        _record, actions = alice._messenger.send(
            bob_id.public, bad, wall_now=alice._wall_clock(), control=True
        )
        alice._store.perform(actions)
        with trio.fail_after(WAIT):
            await bob.wait_for(lambda: bob.files.statistics().bad_offers == 1)
        assert bob.files.received() == []


async def test_a_file_sent_to_a_group_reaches_every_member(tmp_path: Path) -> None:
    names = ["alice", "bob", "carol"]
    profiles = [make_profile(tmp_path, name, i + 1) for i, name in enumerate(names)]
    source = tmp_path / "class photo.jpg"
    source.write_bytes(os.urandom(3 * CHUNK_SIZE + 99))
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for (folder, _), name in zip(profiles, names, strict=True):
            config = quick(tmp_path / f"downloads-{name}")
            nodes.append(
                await stack.enter_async_context(
                    Node.open(folder, listen=LOCAL, store_config=FAST, file_config=config)
                )
            )
        for i, node in enumerate(nodes):
            for j, (_, identity) in enumerate(profiles):
                if i != j:
                    node.contacts.add(
                        Invite.create(identity, name=names[j].title(), addrs=nodes[j].listen_addrs).to_text()
                    )
        alice, bob, carol = nodes
        for node in (bob, carol):
            await node.connect(alice.listen_addrs[0])
        family = alice.groups.create("Family", ["Bob", "Carol"])
        for node in (bob, carol):
            await next_event(node, GroupInvited)
            node.groups.join("Family")
        today = group_topic(group_tag(family.group_id, epoch_of(alice.groups.driver.now())))
        with trio.fail_after(WAIT):
            await alice.wait_for(
                lambda: {bob.peer_id, carol.peer_id} <= alice.driver.router.topic_peers(today)
            )
        handle = await alice.files.send_to_group("Family", source, caption="all of us")
        for node in (bob, carol):
            fetched = await next_event(node, AttachmentFetched)
            assert isinstance(fetched, AttachmentFetched)
            record = node.files.attachment(fetched.number)
            assert record.group_id == family.group_id
            assert node.files.manifest(record).caption == "all of us"
            assert contents(fetched.path) == source.read_bytes()
        # the group message is the offer, once, in the history of each member
        assert [m.message_id for m in bob.groups.history("Family")] == [handle.message_id]
        assert handle.progress.total == source.stat().st_size


async def test_a_member_fetches_a_group_file_from_another_member_when_the_sender_is_gone(
    tmp_path: Path,
) -> None:
    names = ["alice", "bob", "carol"]
    profiles = [make_profile(tmp_path, name, i + 1) for i, name in enumerate(names)]
    source = tmp_path / "minutes.pdf"
    source.write_bytes(os.urandom(5 * CHUNK_SIZE + 1))
    configs = [
        quick(tmp_path / "dl-alice"),
        quick(tmp_path / "dl-bob"),
        quick(tmp_path / "dl-carol", auto_fetch=0),
    ]
    async with AsyncExitStack() as stack:
        bob, carol = [
            await stack.enter_async_context(
                Node.open(profiles[i][0], listen=LOCAL, store_config=FAST, file_config=configs[i])
            )
            for i in (1, 2)
        ]
        await carol.connect(bob.listen_addrs[0])
        async with Node.open(
            profiles[0][0], listen=LOCAL, store_config=FAST, file_config=configs[0]
        ) as alice:
            for i, node in enumerate((alice, bob, carol)):
                for j, (_, identity) in enumerate(profiles):
                    if i != j:
                        node.contacts.add(Invite.create(identity, name=names[j].title()).to_text())
            for node in (bob, carol):
                await node.connect(alice.listen_addrs[0])
            family = alice.groups.create("Family", ["Bob", "Carol"])
            for node in (bob, carol):
                await next_event(node, GroupInvited)
                node.groups.join("Family")
            today = group_topic(group_tag(family.group_id, epoch_of(alice.groups.driver.now())))
            with trio.fail_after(WAIT):
                await alice.wait_for(
                    lambda: {bob.peer_id, carol.peer_id} <= alice.driver.router.topic_peers(today)
                )
            await alice.files.send_to_group("Family", source)
            fetched = await next_event(bob, AttachmentFetched)  # Bob fetches at once (auto)
            offered = await next_event(carol, Attachment)  # Carol does not: over her automatic size
            assert isinstance(offered, Attachment) and not offered.fetching
        # Alice is gone, the group has no mailbox: Carol gets the file from Bob.
        path = await carol.fetch(offered)
        assert path.read_bytes() == source.read_bytes()
        assert isinstance(fetched, AttachmentFetched)
        assert bob.files.statistics().bytes_served >= source.stat().st_size


async def test_a_failing_file_store_is_reported_and_the_node_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """files.db fails as an offer arrives (counted, a FileProblem), and as the sender serves chunks
    (that stream ends, counted); neither stops a node, and once the store works the file arrives."""
    source = tmp_path / "scan.pdf"
    source.write_bytes(os.urandom(2 * CHUNK_SIZE + 5))
    async with pair(tmp_path) as (alice, bob, _):
        real_add = bob.files.driver.store.add_received

        def broken(**fields: object) -> None:
            raise StorageError("disk I/O error")

        monkeypatch.setattr(bob.files.driver.store, "add_received", broken)
        await alice.send_file("Bob", source)
        problem = await next_event(bob, FileProblem)
        assert isinstance(problem, FileProblem) and "disk I/O error" in problem.error
        assert bob.files.statistics().store_failures == 1
        monkeypatch.setattr(bob.files.driver.store, "add_received", real_add)
        real_chunk = alice.files.driver.store.chunk
        failing = {"left": 1}

        def chunk(address: bytes) -> object:
            if failing["left"]:
                failing["left"] -= 1
                raise StorageError("disk I/O error")
            return real_chunk(address)

        monkeypatch.setattr(alice.files.driver.store, "chunk", chunk)
        await alice.send_file("Bob", source)
        path = await bob.fetch(await next_event(bob, Attachment))  # type: ignore[arg-type]
        assert contents(path) == source.read_bytes()
        assert alice.files.statistics().refused["storage"] == 1
