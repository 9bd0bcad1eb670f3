"""A censoring TCP proxy on 127.0.0.1 for tests and benchmarks: the three rules of issue 17's censor.

``censor_proxy(target_port, budget, *, fingerprint=False, reset=False, blocked=False)`` forwards each
connection it accepts to 127.0.0.1:``target_port`` and applies, per connection:

- ``blocked=True``: the address is on the block list: every connection is refused (accepted and reset
  at once, before a byte passes; a listening socket cannot refuse a SYN, a reset is the nearest). No
  connection to the target is made. Counted in ``refused``.
- ``fingerprint=True``: the first bytes of each direction are held until they either match
  multistream-select's header (``\\x13/multistream/1.0.0\\n``: libp2p's first message, sent in clear by
  both ends) or cannot any more; a match drops the connection (both sockets closed, or reset with
  ``reset=True``), a mismatch forwards what was held. The one rule a DPI box needs against libp2p.
  Counted in ``fingerprinted``.
- ``budget``: the connection is cut once it carried that many bytes (both directions together): by
  default it then silently stops forwarding (it goes on reading both ends and discards what it reads,
  sends nothing, resets nothing, and keeps both sockets open until the proxy stops: the censor of
  ``meshchat sim --scenario cut-16k``'s stall arm; counted in ``stalled``), with ``reset=True`` it
  forwards up to the budget and resets both sockets (counted in ``resets``). ``budget=None``: no cut.

With no rule it is a plain proxy. ``heads`` keeps the first ``HEAD_BYTES`` of each direction of the
first ``MAX_HEADS`` directions it saw (what a filter could match on), bounded.

``only_through(node, port)`` makes the proxy a node's only way out (its dials to any other port fail,
as behind a firewall), so that nothing it does goes around the censor.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import trio
from libp2p.abc import IRawConnection
from libp2p.transport.exceptions import OpenConnectionError
from multiaddr import Multiaddr

from meshchat.node import Node

#: Bytes asked of a socket per read.
CHUNK = 16 * 1024
#: libp2p's multistream-select header: a varint length (19) and "/multistream/1.0.0\n". Both ends of
#: a plain libp2p connection open with it; a DPI filter matches it in one rule.
MULTISTREAM_HEADER = b"\x13/multistream/1.0.0\n"
#: Bytes of each direction kept in ``CensorProxy.heads``: enough for a connection's negotiation.
HEAD_BYTES = 64 * 1024
#: Directions (two per connection) whose heads are kept; later ones are not recorded.
MAX_HEADS = 64
#: SO_LINGER on, 0 s: closing the socket sends a TCP reset instead of a FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass
class CensorProxy:
    """What the proxy saw; ``port`` is where it listens."""

    budget: int | None
    fingerprint: bool = False
    reset: bool = False
    blocked: bool = False
    port: int = 0
    #: Connections accepted so far (refused ones included).
    connections: int = 0
    #: Connections refused by the block rule.
    refused: int = 0
    #: Connections dropped by the fingerprint rule.
    fingerprinted: int = 0
    #: Connections that hit the budget and were stalled (``reset=False``).
    stalled: int = 0
    #: Connections that hit the budget and were reset (``reset=True``).
    resets: int = 0
    #: Bytes forwarded, all connections together.
    forwarded: int = 0
    #: trio time of each budget cut (stall or reset).
    stalled_at: list[float] = field(default_factory=list)
    #: The first ``HEAD_BYTES`` of each direction, for the first ``MAX_HEADS`` directions.
    heads: list[bytearray] = field(default_factory=list)
    #: Set on every change (connection, cut, drop) and replaced: wait on it for a condition.
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def cuts(self) -> int:
        """Connections the budget cut, stalled or reset."""
        return self.stalled + self.resets

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds (checked on each change)."""
        while not condition():
            await self.changed.wait()


@dataclass
class _Connection:
    """One proxied connection's state, shared by its two pumps."""

    cancel: trio.CancelScope
    carried: int = 0
    #: The budget is spent: what either end sends from now on is read and discarded.
    stalled: bool = False
    #: Close both sockets with a reset when the pumps end.
    abort: bool = False


def _reset(stream: trio.SocketStream) -> None:
    """Make ``stream``'s close a TCP reset."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


@contextlib.asynccontextmanager
async def censor_proxy(
    target_port: int,
    budget: int | None,
    *,
    fingerprint: bool = False,
    reset: bool = False,
    blocked: bool = False,
) -> AsyncIterator[CensorProxy]:
    """Run a censoring proxy to 127.0.0.1:``target_port`` until the block ends (rules: module doc)."""
    proxy = CensorProxy(budget=budget, fingerprint=fingerprint, reset=reset, blocked=blocked)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy.port = listeners[0].socket.getsockname()[1]

    async def serve(client: trio.SocketStream) -> None:
        proxy.connections += 1
        if blocked:
            proxy.refused += 1
            proxy._changed()
            _reset(client)
            await client.aclose()
            return
        proxy._changed()
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
        except OSError:
            await client.aclose()
            return
        async with client, upstream:
            with trio.CancelScope() as scope:
                state = _Connection(cancel=scope)
                async with trio.open_nursery() as pair:
                    pair.start_soon(pump, client, upstream, state)
                    pair.start_soon(pump, upstream, client, state)
            if state.abort:
                _reset(client)
                _reset(upstream)

    def record(head: bytearray | None, data: bytes) -> None:
        if head is not None and len(head) < HEAD_BYTES:
            head += data[: HEAD_BYTES - len(head)]

    async def pump(source: trio.SocketStream, sink: trio.SocketStream, state: _Connection) -> None:
        head: bytearray | None = None
        if len(proxy.heads) < MAX_HEADS:
            head = bytearray()
            proxy.heads.append(head)
        held = bytearray()  # bytes the fingerprint rule has not decided on yet
        deciding = fingerprint
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(CHUNK):
                record(head, data)
                if state.stalled:
                    continue  # read and discarded: silence, no reset
                if deciding:
                    held += data
                    if held[: len(MULTISTREAM_HEADER)] != MULTISTREAM_HEADER[: len(held)]:
                        deciding = False  # no match: forward what was held
                        data, held = bytes(held), bytearray()
                    elif len(held) >= len(MULTISTREAM_HEADER):
                        proxy.fingerprinted += 1
                        proxy._changed()
                        state.abort = reset
                        state.cancel.cancel()  # both sockets closed by ``serve``
                        return
                    else:
                        continue  # a prefix of the header so far: wait for more
                await forward(sink, data, state)
            if state.stalled:
                await trio.sleep_forever()  # a stalled connection stays open until the proxy stops
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                if held:  # the stream ended on a prefix of the header: not libp2p after all
                    await forward(sink, bytes(held), state)
                await sink.send_eof()  # an honest end closed: pass the close on

    async def forward(sink: trio.SocketStream, data: bytes, state: _Connection) -> None:
        cut = budget is not None and state.carried + len(data) > budget
        if cut:
            assert budget is not None
            data = data[: budget - state.carried]
            state.stalled = True  # decided before the send: the other direction discards from now
            proxy.stalled_at.append(trio.current_time())
            if reset:
                proxy.resets += 1
            else:
                proxy.stalled += 1
            proxy._changed()
        state.carried += len(data)
        proxy.forwarded += len(data)
        if data:
            await sink.send_all(data)
        if cut and reset:  # the last bytes within the budget went out: now the reset
            state.abort = True
            state.cancel.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


def only_through(node: Node, port: int) -> list[str]:
    """Make ``port`` (the censor) the only place ``node`` can dial: its TCP transport refuses every
    other address as a firewall would (the node's every route out crosses the censor; without this it
    would dial a peer at the address the peer's identify announced, around the censor, or keep a
    connection the peer or py-libp2p's auto-connector made that way). Give the node no listen address
    too, so nobody dials it around the censor. Returns the list the refused addresses are appended to."""
    refused: list[str] = []
    transport = node.host.get_network().transport_manager.get_transports()[0]
    dial = transport.dial

    async def firewalled(maddr: Multiaddr) -> IRawConnection:
        if maddr.value_for_protocol("tcp") != str(port):
            refused.append(str(maddr))
            raise OpenConnectionError(f"firewall: only the censor at port {port} is reachable")
        return await dial(maddr)

    transport.dial = firewalled  # type: ignore[method-assign]
    return refused
