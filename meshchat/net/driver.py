"""The real-network driver: meshchat's sans-IO gossip router on a py-libp2p host.

What it is: the I/O half of the router, as aioquic's ``asyncio/protocol.py`` is of its connection. It
turns libp2p events into router inputs (a connection opened or closed, an RPC read off a pubsub stream,
the application's publish/join/leave) and performs the router's actions (write an RPC to a peer's
stream, hand a message to the application, close a connection, dial a peer). The router is the very
``GossipRouter`` the simulator runs; time is ``trio.current_time()``.

Streams follow the pubsub spec: each side opens one outbound stream per peer, negotiating
``/meshsub/1.2.0``, ``/meshsub/1.1.0`` or ``/meshsub/1.0.0``, writes unsigned-varint length-prefixed
protobuf RPCs on it, and reads the peer's RPCs from the peer's stream. The router learns of a peer
once either stream has negotiated a protocol (that tells it which gossipsub version the peer speaks).
A peer has one inbound stream at a time: a newer one resets the older, as go-libp2p-pubsub does.
A peer with two connections keeps one link: when the connection our stream runs on closes while
another is open, our stream moves to the other and carries our subscriptions again first (as
go-libp2p-pubsub respawns its writer with its hello): the peer may have given that connection up and
started afresh on the other (a redial after a stall, which reaches us before the old connection's
close does), and would otherwise never hear what we subscribe to.

What it is not: it does not use py-libp2p's own pubsub (DESIGN.md: too slow, drops silently), does
not know what an envelope is (the validator passed in does), and does not dial on its own beyond the
peers the router's peer exchange names (the node does).

Bounded, and nothing dropped silently: what a peer can make the driver hold is one unfinished frame
per peer, charged to a ``BufferBudget`` (per peer and in total) and finished within
``FRAME_STALL_TIMEOUT`` of its first byte; ``SEND_QUEUE_FRAMES`` and ``SEND_QUEUE_BYTES`` per peer
queued for sending; ``EVENT_QUEUE`` events for the application. Bad, oversized or stalled frames,
streams over the budget, duplicate streams, full queues, failed writes and dials, and failed or
evicted inbound handshakes are counted by ``NetDrop`` in ``statistics()``; the router counts its own
drops by ``DropReason``. A bad frame resets the offender's stream only (the router is not told of it);
invalid messages in well-formed frames lower the sender's score (P4), which graylists it and then
gets it disconnected.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable
from typing import Any, assert_never

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo as Libp2pPeerInfo
from libp2p.peer.peerstore import PeerStoreError
from libp2p.rcmgr import Direction
from multiaddr import Multiaddr
from multiaddr.exceptions import ProtocolLookupError

from meshchat.errors import DecodeError, QuotaExceeded, TooLarge
from meshchat.gossip import (
    Deliver,
    Dial,
    Disconnect,
    GossipRouter,
    Join,
    Leave,
    PeerConnected,
    PeerDisconnected,
    Protocol,
    Publish,
    RouterAction,
    RouterInput,
    RpcReceived,
    SendFailed,
    SendRpc,
)
from meshchat.gossip.messages import RPC, PeerId, SubOpts, Topic
from meshchat.gossip.rpc import RpcLimits, decode_rpc, encode_rpc, frame
from meshchat.net.budget import BufferBudget, FrameReader
from meshchat.net.events import (
    DriverStatistics,
    MessageDelivered,
    NetDrop,
    NetEvent,
    PeerJoined,
    PeerLeft,
)
from meshchat.net.host import CLOSE_ERRORS, IO_ERRORS, InboundCounter, close_connections
from meshchat.net.px_records import consume_record, with_records

__all__ = [
    "PUBSUB_PROTOCOLS",
    "DriverStatistics",
    "GossipDriver",
    "MessageDelivered",
    "NetDrop",
    "NetEvent",
    "PeerJoined",
    "PeerLeft",
]

#: The pubsub protocols offered and accepted, newest first.
PUBSUB_PROTOCOLS: tuple[TProtocol, ...] = tuple(TProtocol(p.value) for p in reversed(Protocol))
#: RPC frames queued for one peer before further ones are refused (counted): ~1,000 messages is a few
#: seconds of a busy topic; a peer that cannot take that is too slow to keep up anyway.
SEND_QUEUE_FRAMES = 1024
#: Bytes queued for one peer before further frames are refused (counted): a peer that reads nothing
#: would otherwise make the node hold ``SEND_QUEUE_FRAMES`` frames of up to 1 MiB each. 8 MiB is 128
#: maximum-size envelopes, or the whole frame queue at 8 KiB a frame (chat messages are far smaller).
SEND_QUEUE_BYTES = 8 * 1024 * 1024
#: Frames written to a stream in one write, at most: fewer system calls under load.
WRITE_BATCH_FRAMES = 64
#: Router inputs waiting to be handled; stream readers wait (TCP backpressure) when it is full.
INPUT_QUEUE = 4096
#: Events waiting for the application; beyond this they are counted and discarded, so a stalled
#: application cannot stall the router (and through it every peer).
EVENT_QUEUE = 8192
#: Bytes asked of a stream per read.
READ_CHUNK = 64 * 1024
#: Seconds to open and negotiate a pubsub stream to a connected peer.
STREAM_OPEN_TIMEOUT = 10.0
#: Times one write may move its stream to another connection because the stream's closed (a hole
#: punch closes the relayed connection the stream ran on; a peer redials a stalled connection; one
#: move is the usual case, a second covers a new connection that closed at once too).
MAX_STREAM_MOVES = 2
#: Seconds a peer may take to finish a frame once it has started it, before its stream is reset
#: (slowloris defence; h11 and nginx use similar header timeouts). It runs from the frame's first byte,
#: not from the last read, so trickling a byte at a time does not extend it; 30 s is 1 MiB at 35 KB/s.
#: What a peer can make the node hold meanwhile is bounded by the ``BufferBudget`` (per peer and in
#: total) and by one inbound pubsub stream per peer.
FRAME_STALL_TIMEOUT = 30.0
#: Seconds to dial a peer.
DIAL_TIMEOUT = 10.0


class _Ticket:
    """A tracked publish: which peers' queues its frames went into, at which position."""

    __slots__ = ("marks", "routed")

    def __init__(self) -> None:
        self.routed = trio.Event()  # the router has handled the publish
        self.marks: dict[PeerId, tuple[_Link, int]] = {}

    def written(self) -> int:
        return sum(1 for link, mark in self.marks.values() if link.written >= mark)

    def settled(self) -> bool:
        """Written to a peer, or no peer left that could still write it."""
        return self.written() > 0 or not any(link.writable for link, _ in self.marks.values())


class _Link:
    """One connected peer: its send queue, writer task and what the router was told."""

    __slots__ = (
        "announced",
        "enqueued",
        "ip",
        "outbound",
        "queue",
        "queued_bytes",
        "receive",
        "scope",
        "writable",
        "written",
    )

    def __init__(self, *, outbound: bool, ip: str | None) -> None:
        self.outbound = outbound
        self.ip = ip
        self.announced = False  # the router has had PeerConnected
        self.writable = True  # False once our pubsub stream failed to open or to write
        self.enqueued = 0  # frames put in the queue so far
        self.written = 0  # frames written to the stream so far (the queue is FIFO)
        self.queued_bytes = 0  # bytes in the queue now (bounded by SEND_QUEUE_BYTES)
        self.queue: trio.MemorySendChannel[bytes]
        self.receive: trio.MemoryReceiveChannel[bytes]
        self.queue, self.receive = trio.open_memory_channel[bytes](SEND_QUEUE_FRAMES)
        self.scope = trio.CancelScope()


def _ip_of(conn: INetConn) -> str | None:
    """The remote IP address of ``conn`` (for the IP colocation penalty), if it tells."""
    addresses: list[Multiaddr] = conn.get_transport_addresses()
    for address in addresses:
        for proto in ("ip4", "ip6"):
            try:
                return str(address.value_for_protocol(proto))
            except ProtocolLookupError:  # not this protocol: try the next
                continue
    return None


#: A network call's failures (``IO_ERRORS``) or its deadline passing (``trio.fail_after``).
_IO_OR_TIMEOUT: tuple[type[Exception], ...] = (*IO_ERRORS, trio.TooSlowError)

#: Seconds a stream reset may take while a task is being torn down.
RESET_TIMEOUT = 1.0


async def _reset_quietly(stream: INetStream) -> None:
    """Reset ``stream`` even while being cancelled; it may be broken already, which is fine."""
    with trio.move_on_after(RESET_TIMEOUT) as scope:
        scope.shield = True
        with contextlib.suppress(*CLOSE_ERRORS):  # NetStream.reset swallows its own; this is a guard
            await stream.reset()


class _Notifee(INotifee):
    """Forwards connection events to the driver, never blocking the swarm."""

    def __init__(self, driver: GossipDriver) -> None:
        self._driver = driver

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed: pubsub streams arrive through the protocol handler."""

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        """A connection is up: start this peer's writer."""
        self._driver._on_connected(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        """A connection closed: the peer leaves when its last one does."""
        await self._driver._on_disconnected(conn)

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        """Not needed."""

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        """Not needed."""


class GossipDriver:
    """Runs ``router`` on ``host`` until cancelled. Start it with ``nursery.start(driver.run)``."""

    def __init__(
        self,
        host: IHost,
        router: GossipRouter,
        *,
        limits: RpcLimits | None = None,
        event_capacity: int = EVENT_QUEUE,
        budget: BufferBudget | None = None,
    ) -> None:
        """Drive ``router`` over ``host``; RPCs beyond ``limits`` are refused; unfinished frames are
        charged to ``budget`` (share one with the mailbox server to bound both together)."""
        self._host = host
        self._budget = budget or BufferBudget()
        # Each peer's inbound pubsub stream reader (one per peer; a newer stream replaces the older).
        self._readers: dict[PeerId, trio.CancelScope] = {}
        # When each gossip peer last sent us anything (for the keepalive); one entry per link.
        self._heard: dict[PeerId, float] = {}
        self._router = router
        self._limits = limits or RpcLimits()
        self._links: dict[PeerId, _Link] = {}
        self._inputs_send, self._inputs = trio.open_memory_channel[RouterInput](INPUT_QUEUE)
        self._events_send, self._events = trio.open_memory_channel[NetEvent](event_capacity)
        self._later: deque[RouterInput] = deque()  # inputs the driver itself produced while performing
        self._drops: dict[NetDrop, int] = dict.fromkeys(NetDrop, 0)
        self._frames_sent = 0
        #: Pubsub streams reopened on another connection after theirs closed.
        self.streams_moved = 0
        self._frames_received = 0
        self._nursery: trio.Nursery | None = None
        self._changed_event = trio.Event()
        self._inbound: InboundCounter | None = None
        # Tracked publishes (``publish_and_flush``): keyed by the Publish input's id, the input kept.
        self._tickets: dict[int, tuple[Publish, _Ticket]] = {}
        self._marks: dict[PeerId, tuple[_Link, int]] | None = None  # set while routing a tracked one
        self._flush_waiters = 0

    # --- the application's side -------------------------------------------------------------------

    @property
    def router(self) -> GossipRouter:
        """The router (read its mesh and scores; feed it only through this driver)."""
        return self._router

    @property
    def events(self) -> trio.MemoryReceiveChannel[NetEvent]:
        """Messages delivered and peers joining and leaving, in order."""
        return self._events

    async def publish(self, topic: Topic, data: bytes) -> None:
        """Publish ``data`` on ``topic``."""
        await self._inputs_send.send(Publish(topic=topic, data=data))

    async def publish_and_flush(self, topic: Topic, data: bytes, *, again: bool = False) -> int:
        """Publish ``data`` on ``topic`` (``again``: once more, see ``Publish``) and return once our
        stream to a peer took it: the number of peers it has been written to (0: none could)."""
        publish = Publish(topic=topic, data=data, again=again)
        ticket = _Ticket()
        self._tickets[id(publish)] = (publish, ticket)
        await self._inputs_send.send(publish)
        await ticket.routed.wait()
        self._flush_waiters += 1
        try:
            await self.wait_for(ticket.settled)
        finally:
            self._flush_waiters -= 1
        return ticket.written()

    async def join(self, topic: Topic) -> None:
        """Subscribe to ``topic``."""
        await self._inputs_send.send(Join(topic=topic))

    async def leave(self, topic: Topic) -> None:
        """Unsubscribe from ``topic``."""
        await self._inputs_send.send(Leave(topic=topic))

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; it is checked after every change of the driver's state
        (each router step, each counted drop, each peer leaving), so nothing polls."""
        while not condition():
            await self._changed_event.wait()

    def notify_changed(self) -> None:
        """Wake ``wait_for`` waiters: state they may test changed outside the driver (the outbox)."""
        self._changed()

    def _changed(self) -> None:
        self._changed_event.set()
        self._changed_event = trio.Event()

    def count_inbound(self, counter: InboundCounter) -> None:
        """Report ``counter``'s failed and evicted inbound connections as ``HANDSHAKE_FAILED`` and
        ``HANDSHAKE_EVICTED``, its refused streams as ``TOO_MANY_STREAMS`` (and wake waiters)."""
        self._inbound = counter
        counter.on_change = self._changed

    def last_heard(self) -> dict[PeerId, float]:
        """Each gossip peer now, with the ``trio.current_time()`` we last read anything from it (or it
        joined): what ``meshchat.net.keeper_driver``'s keepalive watches."""
        return {p: self._heard.get(p, 0.0) for p, link in self._links.items() if link.announced}

    def dialled(self, peer: PeerId) -> bool:
        """Whether this node dialled its connection to gossip peer ``peer``."""
        link = self._links.get(peer)
        return link is not None and link.outbound

    @property
    def inbound(self) -> InboundCounter | None:
        """The inbound connection counter given to ``count_inbound``, if any."""
        return self._inbound

    @property
    def budget(self) -> BufferBudget:
        """What the pubsub stream readers hold for peers."""
        return self._budget

    def statistics(self) -> DriverStatistics:
        """A snapshot of the counters."""
        drops = dict(self._drops)
        if self._inbound is not None:
            drops[NetDrop.HANDSHAKE_FAILED] = self._inbound.failed
            drops[NetDrop.HANDSHAKE_EVICTED] = self._inbound.evicted
            drops[NetDrop.TOO_MANY_STREAMS] = self._inbound.streams_refused
        return DriverStatistics(
            drops=drops,
            frames_sent=self._frames_sent,
            frames_received=self._frames_received,
            peers=sum(1 for link in self._links.values() if link.announced),
            router=self._router.statistics(),
            buffer=self._budget.statistics(),
            queued_bytes=sum(link.queued_bytes for link in self._links.values()),
        )

    # --- running ----------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve pubsub streams and run the router until cancelled."""
        for protocol in PUBSUB_PROTOCOLS:
            self._host.set_stream_handler(protocol, self._on_stream)
        network = self._host.get_network()
        notifee = _Notifee(self)
        network.register_notifee(notifee)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for peer_id in network.connections:
                    conns = network.connections[peer_id]
                    if conns:
                        self._on_connected(conns[0])
                task_status.started()
                await self._route()
        finally:
            network.remove_notifee(notifee)
            for protocol in PUBSUB_PROTOCOLS:
                self._host.remove_stream_handler(protocol)

    async def _route(self) -> None:
        router, inputs = self._router, self._inputs
        while True:
            while self._later:
                self._perform(router.handle(self._later.popleft(), now=trio.current_time()))
            deadline = router.next_deadline()
            event: RouterInput | None = None
            with trio.move_on_at(math.inf if deadline is None else deadline):
                event = await inputs.receive()
            now = trio.current_time()
            if event is None:
                self._perform(router.on_timer(now=now))
                continue
            self._handle(event, now)
            # Take whatever else is waiting before sleeping again: one wake-up, many inputs.
            for _ in range(INPUT_QUEUE):
                try:
                    event = inputs.receive_nowait()
                except trio.WouldBlock:
                    break
                self._handle(event, trio.current_time())

    def _handle(self, event: RouterInput, now: float) -> None:
        entry = self._tickets.pop(id(event), None) if self._tickets else None
        if entry is None or entry[0] is not event:
            self._perform(self._router.handle(event, now=now))
            return
        ticket = entry[1]
        self._marks = ticket.marks
        try:
            self._perform(self._router.handle(event, now=now))
        finally:
            self._marks = None
        ticket.routed.set()

    def _perform(self, actions: list[RouterAction]) -> None:
        self._changed()
        last_rpc: object = None
        last_frame = b""
        for action in actions:
            match action:
                case SendRpc(peer=peer, rpc=rpc):
                    if rpc is not last_rpc:  # a forward shares one RPC object among mesh peers
                        # peer exchange carries the offered peers' signed records
                        sent = with_records(rpc, self._host.get_peerstore())
                        last_rpc, last_frame = rpc, frame(encode_rpc(sent))
                    self._enqueue(peer, last_frame)
                case Deliver(topic=topic, message_id=mid, data=data, source=source):
                    self._emit(MessageDelivered(topic=topic, message_id=mid, data=data, source=source))
                case Disconnect(peer=peer):
                    self._spawn(self._disconnect, peer)
                case Dial(peer=peer, signed_peer_record=record):
                    consume_record(self._host.get_peerstore(), peer, record)  # issue 17: its addresses
                    self._spawn(self._dial, peer)
                case _:
                    assert_never(action)

    def _enqueue(self, peer: PeerId, data: bytes) -> None:
        link = self._links.get(peer)
        if link is None or not link.writable:
            self._drops[NetDrop.SEND_FAILED] += 1
            self._later.append(SendFailed(peer=peer))
            return
        try:
            if link.queued_bytes + len(data) > SEND_QUEUE_BYTES:
                raise trio.WouldBlock
            link.queue.send_nowait(data)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._drops[NetDrop.SEND_QUEUE_FULL] += 1
            self._later.append(SendFailed(peer=peer))
            return
        link.queued_bytes += len(data)
        link.enqueued += 1
        if self._marks is not None:
            self._marks[peer] = (link, link.enqueued)

    def _emit(self, event: NetEvent) -> None:
        try:
            self._events_send.send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError):
            self._drops[NetDrop.EVENT_QUEUE_FULL] += 1

    def _spawn(self, fn: Any, *args: Any) -> None:
        assert self._nursery is not None, "the driver is running"
        self._nursery.start_soon(fn, *args)

    # --- connections ------------------------------------------------------------------------------

    def _on_connected(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id.to_base58()
        link = self._links.get(peer)
        if link is None:
            outbound = getattr(conn, "direction", Direction.UNKNOWN) == Direction.OUTBOUND
            link = self._links[peer] = _Link(outbound=outbound, ip=_ip_of(conn))
            if self._nursery is not None:
                self._nursery.start_soon(self._write, peer, link)

    async def _on_disconnected(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id.to_base58()
        link = self._links.get(peer)
        if link is None:
            return
        still_open = self._host.get_network().connections.get(conn.muxed_conn.peer_id) or []
        if any(c.muxed_conn is not conn.muxed_conn and not c.is_closed for c in still_open):
            if link.announced:  # our stream moves to another connection, our subscriptions first
                self._enqueue(peer, self._hello())
            return
        del self._links[peer]
        self._heard.pop(peer, None)
        link.writable = False
        link.scope.cancel()
        link.queue.close()
        if link.announced:
            await self._inputs_send.send(PeerDisconnected(peer=peer))
            self._emit(PeerLeft(peer=peer))
        self._changed()

    def _hello(self) -> bytes:
        """The frame a new stream opens with: the topics we are subscribed to (the router's first
        RPC to a peer that connects)."""
        subscriptions = tuple(SubOpts(subscribe=True, topic=t) for t in sorted(self._router.mesh))
        return frame(encode_rpc(RPC(subscriptions=subscriptions)))

    async def _announce(self, peer: PeerId, link: _Link, protocol: TProtocol | None) -> None:
        """Tell the router about ``peer`` once one of its pubsub streams has a protocol."""
        if link.announced or self._links.get(peer) is not link:
            return
        link.announced = True
        self._heard[peer] = trio.current_time()
        version = Protocol(protocol) if protocol in PUBSUB_PROTOCOLS else Protocol.MESHSUB_V10
        joined = PeerConnected(peer=peer, outbound=link.outbound, protocol=version, ip=link.ip)
        await self._inputs_send.send(joined)
        self._emit(PeerJoined(peer=peer, protocol=version, outbound=link.outbound))

    # --- writing ----------------------------------------------------------------------------------

    async def _write(self, peer: PeerId, link: _Link) -> None:
        """Open our pubsub stream to ``peer`` and write its queued frames until it goes away."""
        stream: INetStream | None = None
        with link.scope:
            try:
                with trio.fail_after(STREAM_OPEN_TIMEOUT):
                    stream = await self._host.new_stream(ID.from_base58(peer), list(PUBSUB_PROTOCOLS))
            except _IO_OR_TIMEOUT:  # no pubsub there (a DHT or relay peer), or no answer
                link.writable = False
                self._count_unsent(link)
                return
            try:
                await self._announce(peer, link, stream.get_protocol())
                receive = link.receive
                async for first in receive:
                    batch = [first]
                    while len(batch) < WRITE_BATCH_FRAMES:
                        try:
                            batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    data = b"".join(batch)
                    try:
                        stream = await self._write_or_move(peer, stream, data)
                    finally:  # counted until written: the queue and the batch in flight share the bound
                        link.queued_bytes -= len(data)
                    self._frames_sent += len(batch)
                    link.written += len(batch)
                    if self._flush_waiters:
                        self._changed()
            except IO_ERRORS:  # any failure of this peer's stream ends its writer
                await self._fail_link(peer, link)
        if stream is not None:
            await _reset_quietly(stream)

    async def _write_or_move(self, peer: PeerId, stream: INetStream, data: bytes) -> INetStream:
        """Write ``data`` on ``stream``; return the stream to write on next. If its connection closed
        while another connection to ``peer`` is open (a hole punch replaced the relayed connection:
        ``meshchat.net.punch``; the peer redialled a stalled one), open the stream again on another
        (py-libp2p prefers a direct one) and write ``data`` there (at most ``MAX_STREAM_MOVES`` times
        per write). A write that fails on an open connection, or with no other left, fails the link
        and the peer is hung up on."""
        for _move in range(MAX_STREAM_MOVES):
            if not stream.muxed_conn.is_closed:
                try:
                    await stream.write(data)
                    return stream
                except IO_ERRORS:
                    if not (stream.muxed_conn.is_closed and self._other_connection(peer, stream)):
                        raise
            elif not self._other_connection(peer, stream):
                break
            await _reset_quietly(stream)
            self.streams_moved += 1
            with trio.fail_after(STREAM_OPEN_TIMEOUT):
                stream = await self._host.new_stream(ID.from_base58(peer), list(PUBSUB_PROTOCOLS))
        await stream.write(data)
        return stream

    def _other_connection(self, peer: PeerId, stream: INetStream) -> bool:
        """Whether ``peer`` has an open connection other than ``stream``'s."""
        conns = self._host.get_network().connections.get(ID.from_base58(peer)) or []
        return any(c.muxed_conn is not stream.muxed_conn and not c.is_closed for c in conns)

    def _count_unsent(self, link: _Link) -> int:
        """Count (as SEND_FAILED) and discard the frames still queued for a link that cannot write."""
        lost = 0
        while True:
            try:
                data = link.receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            link.queued_bytes -= len(data)
            lost += 1
        self._drops[NetDrop.SEND_FAILED] += lost
        self._changed()
        return lost

    async def _fail_link(self, peer: PeerId, link: _Link) -> None:
        """The writer failed mid-stream: count what it held and drop the connection."""
        link.writable = False
        self._count_unsent(link)
        self._drops[NetDrop.SEND_FAILED] += 1  # the write that failed
        if self._links.get(peer) is link:
            await self._inputs_send.send(SendFailed(peer=peer))
            self._spawn(self._disconnect, peer)

    # --- reading ----------------------------------------------------------------------------------

    async def _on_stream(self, stream: INetStream) -> None:
        """A peer opened its pubsub stream to us: read its RPCs until it ends or misbehaves.

        One inbound stream per peer: a newer one resets the older (as go-libp2p-pubsub does), so a
        peer cannot make the node read, and buffer a frame for, many streams at once.
        """
        peer = stream.muxed_conn.peer_id.to_base58()
        older = self._readers.get(peer)
        if older is not None:
            self._drops[NetDrop.DUPLICATE_STREAM] += 1
            older.cancel()
        scope = self._readers[peer] = trio.CancelScope()
        reader = FrameReader(self._budget, peer, max_frame_size=self._limits.max_rpc_size)
        try:
            with scope:
                link = self._links.get(peer)
                if link is None:
                    # The stream can come before the connection notice; the notice will find this link.
                    link = self._links[peer] = _Link(outbound=False, ip=None)
                    self._spawn(self._write, peer, link)
                await self._announce(peer, link, stream.get_protocol())
                await self._read(peer, stream, reader)
        except IO_ERRORS:  # the stream broke: the connection notice does the rest
            pass
        finally:
            reader.release()
            if self._readers.get(peer) is scope:
                del self._readers[peer]
            self._changed()
            await _reset_quietly(stream)

    async def _read(self, peer: PeerId, stream: INetStream, reader: FrameReader) -> None:
        """Read RPCs off ``stream`` until it ends, misbehaves (counted) or stalls mid-frame (counted)."""
        deadline = math.inf  # when the frame begun must be complete
        while True:
            data = b""
            with trio.move_on_at(deadline):
                data = await stream.read(READ_CHUNK)
                if not data:
                    return
            if not data:
                self._drops[NetDrop.STALLED_STREAM] += 1
                return
            if peer in self._heard:
                self._heard[peer] = trio.current_time()
            try:
                frames = reader.feed(data)
                rpcs = [decode_rpc(f, limits=self._limits) for f in frames]
            except QuotaExceeded:
                self._drops[NetDrop.BUFFER_FULL] += 1
                return
            except DecodeError as exc:
                oversized = isinstance(exc, TooLarge)
                self._drops[NetDrop.OVERSIZED_FRAME if oversized else NetDrop.MALFORMED_RPC] += 1
                return
            if not reader.pending:
                deadline = math.inf
            elif frames or deadline == math.inf:  # a new frame began in this chunk
                deadline = trio.current_time() + FRAME_STALL_TIMEOUT
            self._frames_received += len(rpcs)
            for rpc in rpcs:
                await self._inputs_send.send(RpcReceived(peer=peer, rpc=rpc))

    # --- connection management --------------------------------------------------------------------

    async def _disconnect(self, peer: PeerId) -> None:
        with trio.move_on_after(DIAL_TIMEOUT), contextlib.suppress(*IO_ERRORS):  # already gone
            await close_connections(self._host, ID.from_base58(peer))

    async def _dial(self, peer: PeerId) -> None:
        """Peer exchange offered ``peer``: dial it if the peerstore knows an address."""
        peer_id = ID.from_base58(peer)
        try:
            addresses = self._host.get_peerstore().addrs(peer_id)
        except PeerStoreError:  # never heard of it (or its addresses expired)
            addresses = []
        if not addresses:
            self._drops[NetDrop.DIAL_FAILED] += 1
            self._changed()
            return
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                await self._host.connect(Libp2pPeerInfo(peer_id, addresses))
        except _IO_OR_TIMEOUT:  # unreachable, refused, timed out: all the same here
            self._drops[NetDrop.DIAL_FAILED] += 1
            self._changed()
