"""The bulk channel (``meshchat.net.bulk``) on 127.0.0.1: frames round trip both ways whatever their size;
tickets are single-use, bound to their peer and expire; every refusal is counted by reason; a frame that
was altered, replayed, cut short or announced too long is a ``DecodeError`` at the receiver."""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshchat.errors import DecodeError, NetworkError, TooLarge
from meshchat.net import bulk
from meshchat.net.bulk import (
    MAX_BULK_FRAME,
    MAX_CONNECTIONS_PER_PEER,
    MAX_TICKETS_PER_PEER,
    TICKET_TTL,
    BulkChannel,
    BulkListener,
    BulkTicket,
    Refusal,
    derive_keys,
    open_bulk,
)

HOST = "127.0.0.1"
PEER = "12D3KooWPeerWhoAskedForTheTicket"
SERVER = "12D3KooWServerThatOfferedIt"
#: A bound on every wait for the other side, so a bug shows as a failure and never as a hung test.
GUARD = 30.0


async def echo(channel: BulkChannel) -> None:
    """Sends every frame back until the client closes (EOFError ends the handler)."""
    for _ in range(100_000):
        await channel.send(await channel.receive())


def seal(key: bytes, counter: int, plaintext: bytes) -> bytes:
    """One frame on the wire, built by hand from the spec in the module docstring."""
    header = (len(plaintext) + 16).to_bytes(4, "big")
    return header + AESGCM(key).encrypt(counter.to_bytes(12, "big"), plaintext, header)


async def wait_closed(stream: trio.SocketStream) -> None:
    """Reads until the server closes the connection (it counts a refusal before it closes)."""
    with trio.fail_after(GUARD):
        for _ in range(1000):
            try:
                if not await stream.receive_some(65536):
                    return
            except trio.BrokenResourceError:
                return
    raise AssertionError("the server kept the connection open")


class Recorder:
    """A handler that keeps what it received and the error that ended it (then re-raises it)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.errors: list[Exception] = []
        self.peers: list[str] = []
        self.done = trio.Event()

    async def __call__(self, channel: BulkChannel) -> None:
        self.peers.append(channel.peer)
        try:
            for _ in range(100_000):
                self.frames.append(await channel.receive())
        except (DecodeError, EOFError) as exc:
            self.errors.append(exc)
            raise
        finally:
            self.done.set()


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """A connected (client, server) pair of TCP streams on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream(HOST, port)
        server = await listeners[0].accept()
        async with client, server:
            yield client, server


def channel_pair(
    client: trio.SocketStream, server: trio.SocketStream, ticket: BulkTicket
) -> tuple[BulkChannel, BulkChannel]:
    c2s, s2c = derive_keys(ticket)
    return (
        BulkChannel(client, send_key=c2s, receive_key=s2c, peer=SERVER),
        BulkChannel(server, send_key=s2c, receive_key=c2s, peer=PEER),
    )


def a_ticket(port: int = 1) -> BulkTicket:
    return BulkTicket(port=port, ticket=bytes(range(16)), key=bytes(range(32, 64)))


async def test_frames_round_trip_both_ways_from_empty_to_the_largest() -> None:
    finished = trio.Event()
    peers: list[str] = []

    async def handler(channel: BulkChannel) -> None:
        peers.append(channel.peer)
        try:
            await echo(channel)
        finally:
            finished.set()

    rng = random.Random(14)
    async with BulkListener.open(HOST, handler) as listener:
        ticket = listener.issue(PEER, now=trio.current_time())
        assert ticket.port == listener.port
        channel = await open_bulk(HOST, listener.port, ticket, peer=SERVER)
        assert channel.peer == SERVER
        with trio.fail_after(GUARD):
            # one at a time, the edges first
            edges = (0, 1, 15, 16, 17, 4096, 256 * 1024 + 40, MAX_BULK_FRAME - 1, MAX_BULK_FRAME)
            for size in edges:
                frame = rng.randbytes(size)
                await channel.send(frame)
                assert await channel.receive() == frame
            # then many in flight at once, in both directions
            frames = [rng.randbytes(rng.choice((0, 1, rng.randrange(300_000)))) for _ in range(120)]
            got: list[bytes] = []

            async def collect() -> None:
                for _ in frames:
                    got.append(await channel.receive())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect)
                for frame in frames:
                    await channel.send(frame)
            assert got == frames
            total = sum(edges) + sum(len(f) for f in frames)
            assert channel.bytes_sent == channel.bytes_received == total
            await channel.aclose()
            await finished.wait()
    assert peers == [PEER]  # the server learnt the peer from the ticket
    stats = listener.statistics()
    assert (stats.tickets_issued, stats.connections_accepted, stats.open_connections) == (1, 1, 0)
    assert stats.refused == {} and stats.tickets_outstanding == 0


async def test_a_frame_over_the_limit_is_refused_before_anything_is_sent() -> None:
    async with tcp_pair() as (client, server):
        sender, receiver = channel_pair(client, server, a_ticket())
        with pytest.raises(TooLarge, match="1,048,577"):
            await sender.send(bytes(MAX_BULK_FRAME + 1))
        await sender.send(b"still usable")  # nothing went out, so the counters still agree
        assert await receiver.receive() == b"still usable"
        assert sender.bytes_sent == 12
        await receiver.aclose()
        with pytest.raises(trio.ClosedResourceError):  # our own mistake, not a broken connection
            await receiver.receive()
        with pytest.raises(trio.ClosedResourceError):
            await receiver.send(b"late")


async def test_an_unknown_ticket_is_refused_and_counted() -> None:
    recorder = Recorder()
    async with BulkListener.open(HOST, recorder) as listener:
        listener.issue(PEER, now=trio.current_time())
        stream = await trio.open_tcp_stream(HOST, listener.port)
        async with stream:
            await stream.send_all(bytes(16))
            await wait_closed(stream)
        assert listener.refused == {Refusal.UNKNOWN_TICKET: 1}
        assert listener.refused["unknown ticket"] == 1  # the reasons read as plain strings
        assert listener.statistics().connections_accepted == 0
    assert recorder.peers == []


async def test_a_ticket_works_once() -> None:
    recorder = Recorder()
    async with BulkListener.open(HOST, recorder) as listener:
        ticket = listener.issue(PEER, now=trio.current_time())
        first = await open_bulk(HOST, listener.port, ticket, peer=SERVER)
        async with first:
            await first.send(b"hello")
            second = await open_bulk(HOST, listener.port, ticket, peer=SERVER)
            async with second:
                with trio.fail_after(GUARD), pytest.raises(EOFError):
                    await second.receive()  # the server closed it without a word
        with trio.fail_after(GUARD):
            await recorder.done.wait()
        assert recorder.frames == [b"hello"] and recorder.peers == [PEER]
        assert listener.refused == {Refusal.UNKNOWN_TICKET: 1}
        assert listener.statistics().connections_accepted == 1


async def test_an_expired_ticket_is_refused_and_counted() -> None:
    recorder = Recorder()
    async with BulkListener.open(HOST, recorder) as listener:
        stale = listener.issue(PEER, now=trio.current_time() - TICKET_TTL - 1)
        channel = await open_bulk(HOST, listener.port, stale, peer=SERVER)
        async with channel:
            with trio.fail_after(GUARD), pytest.raises(EOFError):
                await channel.receive()
        assert listener.refused == {Refusal.EXPIRED_TICKET: 1}
    assert recorder.peers == []


async def test_expired_tickets_are_forgotten_when_the_next_is_issued() -> None:
    async with BulkListener.open(HOST, Recorder()) as listener:
        listener.issue(PEER, now=0.0)
        listener.issue("someone else", now=TICKET_TTL + 1)
        stats = listener.statistics()
        assert (stats.tickets_outstanding, stats.tickets_expired, stats.tickets_issued) == (1, 1, 2)


async def test_a_connection_that_never_presents_a_ticket_is_closed_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with BulkListener.open(HOST, Recorder()) as listener:
        stream = await trio.open_tcp_stream(HOST, listener.port)
        async with stream:
            await stream.send_all(b"short")  # 5 of the 16 bytes, then silence
            await wait_closed(stream)  # the clock jumps HELLO_TIMEOUT ahead
        assert listener.refused == {Refusal.HELLO_TIMEOUT: 1}


async def test_a_connection_closed_mid_hello_is_counted() -> None:
    async with BulkListener.open(HOST, Recorder()) as listener:
        stream = await trio.open_tcp_stream(HOST, listener.port)
        await stream.send_all(b"short")
        await stream.send_eof()
        await wait_closed(stream)
        await stream.aclose()
        assert listener.refused == {Refusal.BROKEN_HELLO: 1}


async def test_an_altered_frame_is_a_decode_error_at_the_server() -> None:
    recorder = Recorder()
    async with BulkListener.open(HOST, recorder) as listener:
        ticket = listener.issue(PEER, now=trio.current_time())
        c2s, _ = derive_keys(ticket)
        good, bad = seal(c2s, 0, b"first chunk"), bytearray(seal(c2s, 1, b"second chunk"))
        bad[10] ^= 0x01
        stream = await trio.open_tcp_stream(HOST, listener.port)
        async with stream:
            await stream.send_all(ticket.ticket + good + bad)
            await wait_closed(stream)
        assert recorder.frames == [b"first chunk"]  # the hand-built frame format is the real one
        assert isinstance(recorder.errors[0], DecodeError)
        assert "frame 1 does not authenticate" in str(recorder.errors[0])
        assert listener.refused == {Refusal.BAD_FRAME: 1}


@pytest.mark.parametrize("change", ["flip tag", "flip header", "replay", "swap", "wrong direction"])
async def test_any_change_to_the_frames_is_a_decode_error_at_the_client(change: str) -> None:
    ticket = a_ticket()
    c2s, s2c = derive_keys(ticket)
    first, second = seal(s2c, 0, b"one"), seal(s2c, 1, b"two")
    wire = {
        "flip tag": first[:-1] + bytes([first[-1] ^ 0x80]),
        "flip header": (21).to_bytes(4, "big") + first[4:] + bytes(2),  # length still within bounds
        "replay": first + first,
        "swap": second + first,
        "wrong direction": seal(c2s, 0, b"one"),
    }[change]
    async with tcp_pair() as (client, server):
        channel, _ = channel_pair(client, server, ticket)
        await server.send_all(wire)
        with trio.fail_after(GUARD):
            if change in ("replay",):
                assert await channel.receive() == b"one"
            with pytest.raises(DecodeError, match="does not authenticate"):
                await channel.receive()
            with pytest.raises(DecodeError, match="already failed"):  # nothing after it is trusted
                await channel.receive()


async def test_an_oversized_length_is_refused_before_the_body_is_read() -> None:
    recorder = Recorder()
    async with BulkListener.open(HOST, recorder) as listener:
        ticket = listener.issue(PEER, now=trio.current_time())
        stream = await trio.open_tcp_stream(HOST, listener.port)
        async with stream:
            # only the header: were the server to wait for the body, it would wait until the guard
            await stream.send_all(ticket.ticket + (MAX_BULK_FRAME + 17).to_bytes(4, "big"))
            await wait_closed(stream)
        assert isinstance(recorder.errors[0], TooLarge)
        assert recorder.errors[0].size == MAX_BULK_FRAME + 17
        assert listener.refused == {Refusal.BAD_FRAME: 1}


@pytest.mark.parametrize("cut", [1, 3, 4, 20, 50])
async def test_a_frame_cut_short_is_a_decode_error_not_a_clean_close(cut: int) -> None:
    ticket = a_ticket()
    async with tcp_pair() as (client, server):
        channel, _ = channel_pair(client, server, ticket)
        await server.send_all(seal(derive_keys(ticket)[1], 0, bytes(40))[:cut])
        await server.send_eof()
        with trio.fail_after(GUARD), pytest.raises(DecodeError, match="connection closed after"):
            await channel.receive()


async def test_a_length_shorter_than_the_tag_is_a_decode_error() -> None:
    async with tcp_pair() as (client, server):
        channel, _ = channel_pair(client, server, a_ticket())
        await server.send_all((15).to_bytes(4, "big"))
        with trio.fail_after(GUARD), pytest.raises(DecodeError, match="shorter than the 16-byte tag"):
            await channel.receive()


async def test_a_cancelled_receive_resumes_the_frame_where_it_stopped() -> None:
    ticket = a_ticket()
    frame = seal(derive_keys(ticket)[1], 0, random.Random(3).randbytes(100_000))
    async with tcp_pair() as (client, server):
        channel, _ = channel_pair(client, server, ticket)
        for part in (frame[:2], frame[2:50_000]):  # cancelled inside the header, then inside the body
            async with trio.open_nursery() as nursery:
                nursery.start_soon(channel.receive)
                await server.send_all(part)
                await trio.testing.wait_all_tasks_blocked()  # the receiver took the part and waits
                nursery.cancel_scope.cancel()
        await server.send_all(frame[50_000:])
        with trio.fail_after(GUARD):
            assert await channel.receive() == random.Random(3).randbytes(100_000)


async def test_a_peer_gets_at_most_its_share_of_connections() -> None:
    release = trio.Event()

    async def hold(channel: BulkChannel) -> None:
        await channel.send(b"ready")
        await release.wait()

    async with BulkListener.open(HOST, hold) as listener:
        tickets = [listener.issue(PEER, now=trio.current_time()) for _ in range(MAX_CONNECTIONS_PER_PEER + 1)]
        other = listener.issue("another peer", now=trio.current_time())
        with trio.fail_after(GUARD):
            held = [await open_bulk(HOST, listener.port, t, peer=SERVER) for t in tickets[:-1]]
            for channel in held:
                assert await channel.receive() == b"ready"  # its handler runs
            extra = await open_bulk(HOST, listener.port, tickets[-1], peer=SERVER)
            with pytest.raises(EOFError):
                await extra.receive()
            assert listener.refused == {Refusal.TOO_MANY_CONNECTIONS: 1}
            assert listener.statistics().open_connections == MAX_CONNECTIONS_PER_PEER
            fine = await open_bulk(HOST, listener.port, other, peer=SERVER)  # others are not affected
            assert await fine.receive() == b"ready"
        release.set()
        for channel in [*held, extra, fine]:
            await channel.aclose()


async def test_all_peers_together_get_at_most_max_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "MAX_CONNECTIONS", 1)
    release = trio.Event()

    async def hold(channel: BulkChannel) -> None:
        await channel.send(b"ready")
        await release.wait()

    async with BulkListener.open(HOST, hold) as listener:
        first, second = (listener.issue(peer, now=trio.current_time()) for peer in ("one", "two"))
        with trio.fail_after(GUARD):
            held = await open_bulk(HOST, listener.port, first, peer=SERVER)
            assert await held.receive() == b"ready"
            refused = await open_bulk(HOST, listener.port, second, peer=SERVER)
            with pytest.raises(EOFError):
                await refused.receive()
        assert listener.refused == {Refusal.TOO_MANY_CONNECTIONS: 1}
        release.set()
        await held.aclose()
        await refused.aclose()


async def test_connections_waiting_for_their_ticket_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "MAX_HELLOS", 1)
    async with BulkListener.open(HOST, Recorder()) as listener:
        silent = await trio.open_tcp_stream(HOST, listener.port)
        await silent.send_all(b"part")
        await trio.testing.wait_all_tasks_blocked()  # the listener waits for the rest of its ticket
        another = await trio.open_tcp_stream(HOST, listener.port)
        await wait_closed(another)
        assert listener.refused == {Refusal.TOO_MANY_HELLOS: 1}
        await another.aclose()
        await silent.aclose()


async def test_a_connection_reset_mid_transfer_is_counted_as_broken() -> None:
    recorder = Recorder()
    got_one = trio.Event()

    async def handler(channel: BulkChannel) -> None:
        await channel.receive()
        got_one.set()
        await recorder(channel)

    async with BulkListener.open(HOST, handler) as listener:
        ticket = listener.issue(PEER, now=trio.current_time())
        channel = await open_bulk(HOST, listener.port, ticket, peer=SERVER)
        await channel.send(b"one")
        with trio.fail_after(GUARD):
            await got_one.wait()
            # SO_LINGER 0: close sends a reset instead of a clean end
            channel._socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await channel.aclose()
            await recorder.done.wait()
        assert recorder.errors == []  # not a clean close, not a bad frame
        assert listener.refused == {Refusal.BROKEN_CONNECTION: 1}


async def test_outstanding_tickets_per_peer_are_bounded_and_the_oldest_goes() -> None:
    async with BulkListener.open(HOST, Recorder()) as listener:
        now = trio.current_time()
        tickets = [listener.issue(PEER, now=now) for _ in range(MAX_TICKETS_PER_PEER + 1)]
        stats = listener.statistics()
        assert (stats.tickets_outstanding, stats.tickets_dropped) == (MAX_TICKETS_PER_PEER, 1)
        oldest = await open_bulk(HOST, listener.port, tickets[0], peer=SERVER)
        async with oldest:
            with trio.fail_after(GUARD), pytest.raises(EOFError):
                await oldest.receive()
        assert listener.refused == {Refusal.UNKNOWN_TICKET: 1}


async def test_open_bulk_to_a_closed_port_is_a_network_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    with pytest.raises(NetworkError, match="bulk channel to"):
        await open_bulk(HOST, port, a_ticket(port), peer=SERVER)


async def test_errors_leave_the_listener_as_themselves() -> None:
    with pytest.raises(KeyError, match="from the body"):
        async with BulkListener.open(HOST, Recorder()):
            raise KeyError("from the body")

    async def buggy(channel: BulkChannel) -> None:
        raise ZeroDivisionError("a bug in the handler")

    with pytest.raises(ZeroDivisionError, match="a bug in the handler"):  # a bug is not swallowed
        async with BulkListener.open(HOST, buggy) as listener:
            ticket = listener.issue(PEER, now=trio.current_time())
            async with await open_bulk(HOST, listener.port, ticket, peer=SERVER):
                with trio.fail_after(GUARD):
                    await trio.sleep_forever()  # until the handler's error cancels the block


def test_a_ticket_with_wrong_sizes_cannot_exist() -> None:
    with pytest.raises(DecodeError, match="ticket id is 15 bytes"):
        BulkTicket(port=1, ticket=bytes(15), key=bytes(32))
    with pytest.raises(DecodeError, match="key is 31 bytes"):
        BulkTicket(port=1, ticket=bytes(16), key=bytes(31))
    with pytest.raises(DecodeError, match="port 0"):
        BulkTicket(port=0, ticket=bytes(16), key=bytes(32))
    assert "key" not in repr(a_ticket())  # the secret stays out of logs


def test_each_direction_has_its_own_key_and_each_ticket_its_own_keys() -> None:
    c2s, s2c = derive_keys(a_ticket())
    other = derive_keys(BulkTicket(port=1, ticket=bytes(16), key=bytes(range(32, 64))))
    assert len({c2s, s2c, *other}) == 4 and len(c2s) == 32
