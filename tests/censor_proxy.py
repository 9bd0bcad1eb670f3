"""A censoring TCP proxy on 127.0.0.1 for tests and benchmarks: it forwards each connection until the
connection has carried ``budget`` bytes (both directions together), then silently stops forwarding:
it goes on reading both ends and discards what it reads, sends nothing, resets nothing, and keeps
both sockets open until the proxy stops (the censor of ``meshchat sim --scenario cut-16k``'s stall
arm). ``budget=None``: a plain proxy.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

#: Bytes asked of a socket per read.
CHUNK = 16 * 1024


@dataclass
class CensorProxy:
    """What the proxy saw; ``port`` is where it listens."""

    budget: int | None
    port: int = 0
    #: Connections accepted so far.
    connections: int = 0
    #: Connections that hit the budget and were stalled.
    stalled: int = 0
    #: Bytes forwarded, all connections together.
    forwarded: int = 0
    #: trio time of each stall.
    stalled_at: list[float] = field(default_factory=list)
    #: Set on every change (connection, stall) and replaced: wait on it for a condition.
    changed: trio.Event = field(default_factory=trio.Event)

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, condition: object) -> None:
        """Return once ``condition()`` holds (checked on each change)."""
        assert callable(condition)
        while not condition():
            await self.changed.wait()


@contextlib.asynccontextmanager
async def censor_proxy(target_port: int, budget: int | None) -> AsyncIterator[CensorProxy]:
    """Run a proxy to 127.0.0.1:``target_port`` until the block ends."""
    proxy = CensorProxy(budget=budget)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy.port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def serve(client: trio.SocketStream) -> None:
            proxy.connections += 1
            proxy._changed()
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
            except OSError:
                await client.aclose()
                return
            state = {"carried": 0, "stalled": False}
            async with client, upstream, trio.open_nursery() as pair:
                pair.start_soon(pump, client, upstream, state)
                pair.start_soon(pump, upstream, client, state)

        async def pump(source: trio.SocketStream, sink: trio.SocketStream, state: dict[str, int]) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await source.receive_some(CHUNK):
                    if state["stalled"]:
                        continue  # read and discarded: silence, no reset
                    if budget is not None and state["carried"] + len(data) > budget:
                        data = data[: budget - state["carried"]]
                        state["stalled"] = True
                        proxy.stalled += 1
                        proxy.stalled_at.append(trio.current_time())
                        proxy._changed()
                    state["carried"] += len(data)
                    proxy.forwarded += len(data)
                    if data:
                        await sink.send_all(data)
                if not state["stalled"]:  # an honest end closed: pass the close on
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await sink.send_eof()
                else:
                    await trio.sleep_forever()  # a stalled connection stays open until the proxy stops

        nursery.start_soon(trio.serve_listeners, serve, listeners)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
