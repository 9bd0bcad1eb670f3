"""Hostile peers against what a node holds for them: streams stalled mid-frame, too many calls, a port
already taken, idle handshakes, and py-libp2p's log lines on a user's stderr.

Each attacker is a bare py-libp2p host on 127.0.0.1 speaking the wire by hand (``raw_peer`` from
``test_net``). Every wait is bounded by ``trio.fail_after``; nothing sleeps to wait for a state.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.ping import PingService
from libp2p.peer.peerinfo import info_from_p2p_addr
from test_net import (
    LOCAL,
    TOPIC,
    WAIT,
    collect,
    honest_traffic_still_flows,
    identity,
    line,
    raw_peer,
    wait_for,
)

from meshchat.errors import AddressInUse, NetworkError
from meshchat.gossip.messages import RPC, SubOpts
from meshchat.gossip.rpc import encode_rpc, frame
from meshchat.net import NetDrop
from meshchat.net import driver as driver_module
from meshchat.net import mailbox as mailbox_module
from meshchat.net.budget import MAX_BUFFERED_PER_PEER
from meshchat.net.host import IO_ERRORS, MAX_STREAM_BUFFER, WindowedYamux
from meshchat.net.mailbox import MAX_CALLS_PER_PEER, call_mailbox
from meshchat.node import Node
from meshchat.store.protocol import MAILBOX_PROTOCOL, FetchRequest, MailboxError

ROOT = Path(__file__).resolve().parent.parent
MEGA_FRAME_PREFIX = bytes.fromhex("808040")  # a varint announcing a 1 MiB frame (the RPC limit)


async def open_stream(host: object, node: Node, protocol: str) -> INetStream:
    info = info_from_p2p_addr(multiaddr.Multiaddr(node.listen_addrs[0]))
    await host.connect(info)  # type: ignore[attr-defined]
    return await host.new_stream(info.peer_id, [TProtocol(protocol)])  # type: ignore[attr-defined,no-any-return]


async def is_reset(stream: INetStream) -> bool:
    """Whether the node reset ``stream``: a read fails or ends (it never writes on these)."""
    with trio.fail_after(WAIT):
        try:
            return await stream.read(1) == b""
        except IO_ERRORS:
            return True


# --- item 3: streams stalled in the middle of large frames ------------------------------------------


async def test_many_pubsub_streams_stalled_mid_frame_hold_one_frame_and_are_reset() -> None:
    """30 pubsub streams on one connection, each stalled 256 KiB into a 1 MiB frame. The node keeps one
    inbound pubsub stream per peer: each newer stream resets the older, so it holds one partial frame,
    not 30 (before: 30 x 256 KiB, until the stall timeout)."""
    partial = 256 * 1024
    async with line(2) as (a, b), raw_peer(60) as evil:
        streams = []
        for _ in range(30):
            stream = await open_stream(evil, b, "/meshsub/1.1.0")
            await stream.write(MEGA_FRAME_PREFIX + b"x" * partial)  # returns once b has read it
            streams.append(stream)
        await wait_for(b, lambda: b.statistics().drops[NetDrop.DUPLICATE_STREAM] == 29, "older streams reset")
        await wait_for(b, lambda: b.statistics().buffer.buffered == 3 + partial, "one partial frame held")  # type: ignore[union-attr]
        stats = b.statistics().buffer
        assert stats is not None and stats.peak <= 2 * (3 + partial) <= MAX_BUFFERED_PER_PEER
        assert all([await is_reset(s) for s in streams[:-1]])
        await honest_traffic_still_flows(a, b)
        evil_id = evil.get_id()
        with trio.fail_after(WAIT):
            await evil.disconnect(info_from_p2p_addr(multiaddr.Multiaddr(b.listen_addrs[0])).peer_id)
        await wait_for(b, lambda: b.statistics().buffer.buffered == 0, "released when the peer left")  # type: ignore[union-attr]
        await wait_for(b, lambda: evil_id.to_base58() not in b.driver.router.peers, "the peer left")


@pytest.mark.parametrize("bound", ["per_peer", "total"])
async def test_a_frame_beyond_the_buffer_budget_resets_its_stream_and_is_counted(bound: str) -> None:
    async with line(2) as (a, b), raw_peer(61) as evil:
        setattr(b.driver.budget, bound, 64 * 1024)
        stream = await open_stream(evil, b, "/meshsub/1.1.0")
        # b resets the stream partway: the write may fail or not
        with trio.move_on_after(WAIT), contextlib.suppress(*IO_ERRORS):
            await stream.write(MEGA_FRAME_PREFIX + b"x" * (200 * 1024))
        await wait_for(b, lambda: b.statistics().drops[NetDrop.BUFFER_FULL] == 1, "refused and counted")
        stats = b.statistics().buffer
        assert stats is not None and stats.buffered == 0 and stats.refused == 1 and stats.peak <= 64 * 1024
        assert await is_reset(stream)
        await honest_traffic_still_flows(a, b)


async def test_a_frame_trickled_a_byte_at_a_time_is_reset_at_the_frame_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stall timeout runs from the frame's first byte: a byte every 0.1 s does not extend it."""
    monkeypatch.setattr(driver_module, "FRAME_STALL_TIMEOUT", 0.5)
    async with line(2) as (a, b), raw_peer(62) as slow:
        stream = await open_stream(slow, b, "/meshsub/1.1.0")
        await stream.write(b"\x40")  # announces 64 bytes
        sent = 0
        with trio.move_on_after(WAIT):
            while b.statistics().drops[NetDrop.STALLED_STREAM] == 0 and sent < 60:
                await trio.sleep(0.1)  # the attacker's pace, not a wait for the node
                try:
                    await stream.write(b"y")
                except IO_ERRORS:
                    break
                sent += 1
        await wait_for(b, lambda: b.statistics().drops[NetDrop.STALLED_STREAM] == 1, "stall counted")
        assert sent < 60  # reset before the frame could be finished (the old timeout restarted each byte)
        await honest_traffic_still_flows(a, b)


async def test_a_peer_that_reads_nothing_fills_only_its_own_bounded_send_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A subscriber that stops reading its connection: once the socket's buffers are full, frames queue
    for it up to ``SEND_QUEUE_BYTES`` (before: up to 1,024 frames of any size) and the rest are
    refused, counted; the other peer still gets everything."""
    monkeypatch.setattr(driver_module, "SEND_QUEUE_BYTES", 256 * 1024)
    async with line(2) as (a, b), raw_peer(63) as deaf:
        stream = await open_stream(deaf, b, "/meshsub/1.1.0")
        await stream.write(frame(encode_rpc(RPC(subscriptions=(SubOpts(subscribe=True, topic=TOPIC),)))))
        deaf_id = deaf.get_id().to_base58()
        await wait_for(b, lambda: deaf_id in b.driver.router.topic_peers(TOPIC), "subscribed")

        async def read_nothing(n: int | None = None) -> bytes:
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        b_id = info_from_p2p_addr(multiaddr.Multiaddr(b.listen_addrs[0])).peer_id
        (conn,) = deaf.get_network().connections[b_id]
        conn.muxed_conn.secured_conn.read = read_nothing  # type: ignore[attr-defined,method-assign]
        count = 400  # 12 MB: more than loopback's socket buffers hold
        for i in range(count):  # each written to a before the next: a's queue never fills
            assert await b.driver.publish_and_flush(TOPIC, b"%03d" % i + b"m" * 30_000) >= 1
        await wait_for(b, lambda: b.statistics().drops[NetDrop.SEND_QUEUE_FULL] > 0, "refused, counted")
        got = await collect(a, count)
        assert sorted(e.data[:3] for e in got) == [b"%03d" % i for i in range(count)]
        # Each peer's queue (and batch in flight) within the bound: the deaf one's full, a's draining.
        assert 256 * 1024 - 30_100 < b.statistics().queued_bytes <= 2 * 256 * 1024
        assert b.statistics().drops[NetDrop.SEND_QUEUE_FULL] > count // 2  # all of them the deaf one's


async def test_a_peer_ignoring_yamux_flow_control_cannot_fill_a_stalled_stream() -> None:
    """py-libp2p's yamux buffered whatever a peer sent past the receive window (it only logged it):
    8 MiB into a stream whose reader is stalled stayed in memory. Now a stream holds at most its
    window, and never more than ``MAX_STREAM_BUFFER``; the rest is refused and counted."""

    async def stalled(stream: INetStream) -> None:
        await trio.sleep_forever()

    async with line(1) as (b,), raw_peer(64) as evil:
        b.host.set_stream_handler(TProtocol("/test/stalled"), stalled)  # any slow reader
        stream = await open_stream(evil, b, "/test/stalled")
        stream.muxed_stream.send_window = 1 << 40  # type: ignore[attr-defined]  # ignore flow control
        b_id = info_from_p2p_addr(multiaddr.Multiaddr(b.listen_addrs[0])).peer_id
        with trio.fail_after(WAIT):
            for _ in range(128):
                await stream.write(b"p" * 65536)
            # The node reads a connection's frames in order: once a ping's echo is back, it has
            # handled every frame written before it.
            await PingService(evil).ping(b_id, ping_amt=1)
        (conn,) = b.host.get_network().connections[evil.get_id()]
        muxer = conn.muxed_conn
        assert isinstance(muxer, WindowedYamux)
        assert muxer.refused_frames > 0
        assert 0 < sum(len(buffer) for buffer in muxer.stream_buffers.values()) <= MAX_STREAM_BUFFER
        assert b.host.get_network().connections.get(evil.get_id())  # the connection itself lives on


# --- item 7: the mailbox protocol server ------------------------------------------------------------


async def test_mailbox_calls_per_peer_are_bounded_stalled_ones_time_out_and_others_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mailbox_module, "CALL_TIMEOUT", 2.0)
    async with (
        Node.open(identity=identity(70), listen=LOCAL, mailbox=True, dht=False) as box,
        Node.open(identity=identity(71), listen=LOCAL, dht=False) as honest,
        raw_peer(72) as evil,
    ):
        server = box._mailbox_server
        assert server is not None
        for _ in range(10):
            try:  # the node resets streams beyond the bound as soon as they negotiate
                stream = await open_stream(evil, box, MAILBOX_PROTOCOL)
                await stream.write(MEGA_FRAME_PREFIX + b"z" * 100_000)
            except IO_ERRORS:
                pass
        with trio.fail_after(WAIT):
            await server.wait_for(lambda: server.refused["too many calls"] == 10 - MAX_CALLS_PER_PEER)
        assert server.open_calls == MAX_CALLS_PER_PEER
        assert server.budget.held(evil.get_id().to_base58()) <= MAX_CALLS_PER_PEER * (3 + 100_000)
        # Another peer is served meanwhile.
        await honest.connect(box.listen_addrs[0])
        with trio.fail_after(WAIT):
            answer = await call_mailbox(honest.host, box.peer_id, FetchRequest(message_ids=(b"\x00" * 32,)))
        assert not isinstance(answer, MailboxError), answer
        # The stalled calls end at the call deadline, counted, and give back what they held.
        with trio.fail_after(WAIT):  # (a call counts "timed out" before it resets its stream and ends)
            await server.wait_for(
                lambda: server.refused["timed out"] == MAX_CALLS_PER_PEER and server.open_calls == 0
            )
        assert server.budget.statistics().buffered == 0


# --- item 7: a port already in use -------------------------------------------------------------------


async def test_a_second_node_on_a_port_in_use_is_refused() -> None:
    """py-libp2p binds with SO_REUSEPORT, so without the check the second node would listen too and
    take part of the first one's connections."""
    async with Node.open(identity=identity(80), listen=LOCAL) as first:
        address = first.listen_addrs[0].split("/p2p/")[0]
        with pytest.raises(AddressInUse, match="already in use"):
            async with Node.open(identity=identity(81), listen=[address]):
                pass
        assert first.listen_addrs[0].startswith(address)


async def test_a_port_held_by_a_plain_listener_is_refused() -> None:
    """A listener without SO_REUSEPORT (another program's): py-libp2p's bind fails and it used to go on
    listening nowhere, silently; now the node says why."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(AddressInUse):
            async with Node.open(identity=identity(82), listen=[f"/ip4/127.0.0.1/tcp/{port}"]):
                pass


async def test_an_address_not_of_this_machine_is_a_network_error() -> None:
    with pytest.raises(NetworkError, match=re.escape("listen on /ip4/192.0.2.1/tcp/4001")):
        async with Node.open(identity=identity(83), listen=["/ip4/192.0.2.1/tcp/4001"]):
            pass


# --- item 4: inbound slots ----------------------------------------------------------------------------


async def test_closed_inbound_connections_give_back_their_slot() -> None:
    """py-libp2p keeps each authenticated inbound connection's handler (and one of its inbound slots)
    until the host stops; the counter ends it when the connection closes."""
    async with line(1) as (b,):
        counter = b.driver.inbound
        assert counter is not None
        b_id = info_from_p2p_addr(multiaddr.Multiaddr(b.listen_addrs[0])).peer_id
        for n in range(3):
            async with raw_peer(90 + n) as visitor:
                await visitor.connect(info_from_p2p_addr(multiaddr.Multiaddr(b.listen_addrs[0])))
                await wait_for(b, lambda: counter.pending == 0 and counter.handlers == 1, "authenticated")
                with trio.fail_after(WAIT):
                    await visitor.disconnect(b_id)
            await wait_for(b, lambda: counter.handlers == 0, "slot given back")
        assert counter.accepted == 3 and counter.failed == 0 and counter.evicted == 0
        assert b.statistics().drops[NetDrop.HANDSHAKE_FAILED] == 0


async def test_the_oldest_idle_handshakes_are_closed_to_make_room() -> None:
    async with line(1) as (b,), raw_peer(95) as late:
        counter = b.driver.inbound
        assert counter is not None
        counter.max_pending = 20
        port = int(b.listen_addrs[0].split("/tcp/")[1].split("/")[0])
        idle = []
        try:
            with trio.fail_after(WAIT):
                for _ in range(50):
                    idle.append(await trio.open_tcp_stream("127.0.0.1", port))
            await wait_for(b, lambda: counter.evicted == 30, "the 30 oldest closed")
            with trio.fail_after(WAIT):
                for stream in idle[:30]:  # the oldest ones, closed by the node
                    while await stream.receive_some(4096):
                        pass
            assert counter.pending == 20
            assert b.statistics().drops[NetDrop.HANDSHAKE_EVICTED] == 30
            # A new peer gets in (and evicts one more idle socket on its way).
            await late.connect(info_from_p2p_addr(multiaddr.Multiaddr(b.listen_addrs[0])))
            assert counter.evicted == 31
        finally:
            for stream in idle:
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    await stream.aclose()


# --- item 5: py-libp2p's log lines ----------------------------------------------------------------------


def _run_python(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    env.pop("LIBP2P_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=True
    )


def test_a_two_node_exchange_prints_no_libp2p_log_lines_on_stderr() -> None:
    """examples/two_nodes.py made py-libp2p print 14 ERROR lines (failed mailbox probes) through
    logging's last-resort handler."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "two_nodes.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert "Bob got" in result.stdout
    assert "Failed to open stream" not in result.stderr and "ERROR" not in result.stderr, result.stderr


def test_libp2p_records_are_dropped_by_default_and_reach_a_handler_the_user_adds() -> None:
    quiet = _run_python(
        "import logging, meshchat.net; logging.getLogger('libp2p.host.basic_host').error('boom')"
    )
    assert quiet.stderr == ""
    loud = _run_python(
        "import logging, sys, meshchat.net; h = logging.StreamHandler(sys.stderr); "
        "logging.getLogger('libp2p').addHandler(h); logging.getLogger('libp2p.host.basic_host').error('boom')"
    )
    assert loud.stderr == "boom\n"
