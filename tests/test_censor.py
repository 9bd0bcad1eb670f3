"""The censor of issue 17 (``tests/censor_proxy.py``) and what still delivers through it.

First the proxy's three rules on raw sockets (a fingerprint match is dropped, a budget cut stalls or
resets, a blocked address is refused, each counted); then real nodes on 127.0.0.1 behind it.
"""

from __future__ import annotations

import trio
from censor_proxy import MULTISTREAM_HEADER, censor_proxy

WAIT = 30.0
CUT_BYTES = 16 * 1024


class Sink:
    """A TCP server on 127.0.0.1 that keeps what each connection sends and can send first."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.received: list[bytearray] = []
        self.port = 0
        self.changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._serve, listeners, task_status=task_status)

    async def _serve(self, stream: trio.SocketStream) -> None:
        got = bytearray()
        self.received.append(got)
        async with stream:
            try:
                if self.greeting:
                    await stream.send_all(self.greeting)
                while data := await stream.receive_some(65536):
                    got += data
                    self.changed.set()
                    self.changed = trio.Event()
            except trio.BrokenResourceError:
                pass

    async def wait_for(self, n: int) -> None:
        """Until ``n`` bytes arrived in all."""
        while sum(map(len, self.received)) < n:
            await self.changed.wait()


async def _read_until_closed(stream: trio.SocketStream) -> tuple[bytes, bool]:
    """What ``stream`` receives until it ends; True if it ended with a reset."""
    got = bytearray()
    try:
        while data := await stream.receive_some(65536):
            got += data
    except trio.BrokenResourceError:
        return bytes(got), True
    return bytes(got), False


async def _receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        data = await stream.receive_some(n - len(got))
        assert data, "closed early"
        got += data
    return bytes(got)


async def test_a_plain_proxy_forwards_both_ways() -> None:
    sink = Sink(greeting=b"hello")
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        async with censor_proxy(sink.port, None) as proxy:
            with trio.fail_after(WAIT):
                async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as client:
                    await client.send_all(b"x" * 100_000)
                    assert await client.receive_some(5) == b"hello"
                    await sink.wait_for(100_000)
            assert (proxy.connections, proxy.cuts, proxy.fingerprinted, proxy.refused) == (1, 0, 0, 0)
            assert proxy.forwarded == 100_005
        nursery.cancel_scope.cancel()


async def test_the_fingerprint_rule_drops_multistream_select_from_either_side_and_nothing_else() -> None:
    async with trio.open_nursery() as nursery:
        plain, greeter = Sink(), Sink(greeting=MULTISTREAM_HEADER + b"/noise\n")
        await nursery.start(plain.run)
        await nursery.start(greeter.run)
        async with censor_proxy(plain.port, None, fingerprint=True) as proxy:
            with trio.fail_after(WAIT):
                # the dialler speaks first, in pieces: held until it matches, then dropped
                async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as client:
                    await client.send_all(MULTISTREAM_HEADER[:5])
                    await proxy.wait_for(lambda: proxy.connections == 1)
                    await client.send_all(MULTISTREAM_HEADER[5:] + b"/noise\n")
                    assert await _read_until_closed(client) == (b"", False)
                assert proxy.fingerprinted == 1
                # anything else passes: a TLS ClientHello's first bytes, a prefix of the header
                async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as client:
                    await client.send_all(b"\x16\x03\x01\x02\x00" + b"y" * 1000)
                    await plain.wait_for(1005)
                async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as client:
                    await client.send_all(b"\x13/multistream/2.0")
                    await plain.wait_for(1005 + 17)
        assert proxy.fingerprinted == 1
        assert all(MULTISTREAM_HEADER not in bytes(r) for r in plain.received)
        assert any(h.startswith(MULTISTREAM_HEADER) for h in proxy.heads)  # what the filter saw
        # the listener speaks first: dropped with a reset, the dialler never sees the header
        async with censor_proxy(greeter.port, None, fingerprint=True, reset=True) as proxy:
            with trio.fail_after(WAIT):
                async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as client:
                    assert await _read_until_closed(client) == (b"", True)
            assert proxy.fingerprinted == 1
        nursery.cancel_scope.cancel()


async def test_the_budget_stalls_or_resets_a_connection_after_that_many_bytes() -> None:
    async with trio.open_nursery() as nursery:
        sink = Sink(greeting=b"g" * 1000)
        await nursery.start(sink.run)
        async with censor_proxy(sink.port, CUT_BYTES) as proxy:
            with trio.fail_after(WAIT):
                async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as client:
                    await _receive_exactly(client, 1000)  # the greeting first: the budget's use is known
                    await client.send_all(b"x" * 40_000)  # more than the budget: not an error, silence
                    await proxy.wait_for(lambda: proxy.stalled == 1)
                    await sink.wait_for(CUT_BYTES - 1000)
                    await client.send_all(b"x" * 1000)
            assert sum(map(len, sink.received)) == CUT_BYTES - 1000  # the greeting counted too
            assert (proxy.stalled, proxy.resets, proxy.forwarded) == (1, 0, CUT_BYTES)
        async with censor_proxy(sink.port, CUT_BYTES, reset=True) as proxy:
            with trio.fail_after(WAIT):
                async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as client:
                    await _receive_exactly(client, 1000)
                    await client.send_all(b"x" * 40_000)
                    got, was_reset = await _read_until_closed(client)
            assert was_reset and got == b""
            assert (proxy.stalled, proxy.resets, proxy.forwarded) == (0, 1, CUT_BYTES)
        nursery.cancel_scope.cancel()


async def test_a_blocked_address_refuses_every_connection() -> None:
    async with trio.open_nursery() as nursery:
        sink = Sink(greeting=b"hello")
        await nursery.start(sink.run)
        async with censor_proxy(sink.port, None, blocked=True) as proxy:
            with trio.fail_after(WAIT):
                for _ in range(3):
                    async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as client:
                        assert await _read_until_closed(client) == (b"", True)
            assert (proxy.connections, proxy.refused, proxy.forwarded) == (3, 3, 0)
        assert sink.received == []  # the target never saw a connection
        nursery.cancel_scope.cancel()
