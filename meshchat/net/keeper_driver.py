"""The keeper's and the keepalive's I/O half: redial below a floor, ping quiet gossip peers, close stalls.

What it is: the driver (STYLE §1) of ``meshchat.gossip.keeper``'s two sans-IO cores on a real node,
the very classes the simulator runs (``meshchat.sim.defence``):

- every ``KeeperOptions.interval`` seconds the ``ConnectionKeeper`` is told which peers the host is
  connected to and which peers the peerstore has addresses for (learned through identify, peer
  exchange, the bootstrap list, the DHT); the peers it names are dialled (``Dialer.dial``: within
  ``BOOTSTRAP_TIMEOUT``, py-libp2p's negative dial cache lifted). When it asks for a lookup, the node
  does what it has: a DHT random walk (a lookup of a random key through the connections it still
  has; every peer met lands in the peerstore) if it runs the DHT, and a redial of its configured
  bootstrap peers it is not connected to.
- the ``Keepalive`` is told when each gossip peer last sent us anything (``GossipDriver.last_heard``);
  a peer it names is pinged with libp2p's ping protocol (``/ipfs/ping/1.0.0``, which py-libp2p's host
  serves; ``perform_ping_roundtrip`` on a fresh stream); a peer that neither answered nor sent
  anything within the timeout has its connections closed, and, when this node had dialled it, is
  dialled again at once (a new connection: a censor with a per-connection byte budget lets it
  through again), as the simulator's ``reconnect_cuts`` does: by the stalled connection's own path
  first (put first in the peerstore, whose order py-libp2p's swarm dials in), then the others. The
  keeper is told of that dial (``ConnectionKeeper.dialling``), so its tick does not race it.
- a connection this node dialled that the network closed (a reset: a censor that cuts connections
  after 16 KB with a RST; the peer gone) is dialled again at once by the same path first, like a
  stalled one (``cuts_redialled``), within a per-peer budget
  (``meshchat.gossip.keeper.Reconnects``; beyond it ``cuts_deferred``, left to the keeper's floor and
  the outbox's retries). It runs with the keepalive and ``KeeperOptions.reconnect_cuts`` (on in
  ``DEFAULT_KEEPER``), not when the node itself closed the connection (a stall, ``Node`` stopping),
  and not for circuit connections (the relay code decides about those).
- a peer that dials us while an older connection it dialled to us is still open has given that one
  up (it noticed a stall first, or restarted): the older one is closed (``superseded_closed``), or our
  gossip writer, bound to the peer's first connection, would go on writing into the dead one.

With the default options (``DEFAULT_KEEPER``) the floor keeper runs only on a node given bootstrap
peers (``Node.open(bootstrap=...)``): a node wired by hand keeps the links it was given (tests rely on
exact topologies); the keepalive runs on every node.

Everything it does is counted (``KeeperStatistics``, in ``Node.statistics().keeper``). Bounded: one
ping task per pinged peer (each within the timeout), dials in flight at most the keeper's ``target``,
one lookup at a time; the cores' state is bounded by their book and the node's connections.

What it is not: it decides nothing (the cores do), and does not dial for contacts, mailboxes or
relays (``meshchat.net.dialer``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import perform_ping_roundtrip
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError
from libp2p.rcmgr import Direction
from multiaddr import Multiaddr

from meshchat.errors import NetworkError
from meshchat.gossip.keeper import (
    KEEPER_INTERVAL,
    LOOKUP_RESULTS,
    ConnectionKeeper,
    Keepalive,
    KeepaliveConfig,
    KeeperConfig,
    Reconnects,
)
from meshchat.gossip.messages import PeerId
from meshchat.net.dialer import CLOSE_TIMEOUT, DHT_LOOKUP_TIMEOUT, DIAL_ERRORS, Dialer
from meshchat.net.driver import GossipDriver
from meshchat.net.events import KeeperStatistics
from meshchat.net.host import close_connections

__all__ = ["DEFAULT_KEEPER", "MIN_TICK", "KeeperDriver", "KeeperOptions", "KeeperStatistics"]

#: Seconds the driver sleeps at least between two wake-ups, so deadlines that keep coming due at once
#: (clock granularity) cannot spin it.
MIN_TICK = 0.05
#: Seconds past a deadline the driver may wake before it takes itself to have been held up (its event
#: loop blocked: a long computation, a suspended laptop) and gives pings in flight a fresh timeout
#: (``Keepalive.resume``) rather than blame peers whose answers wait unread.
LATE_WAKE = 0.5
#: Seconds the path of a stalled connection stays in the peerstore for its redial (py-libp2p's
#: ``connect`` keeps the addresses it dials as long).
PATH_TTL = 120
#: Seconds closing a ping stream may take.
PING_CLOSE_TIMEOUT = 1.0

#: A ping's failures: the network's (``DIAL_ERRORS``), our own ``NetworkError``, or a pong that does
#: not echo the ping (py-libp2p raises ``ValueError``).
_PING_FAILED: tuple[type[Exception], ...] = (*DIAL_ERRORS, NetworkError, ValueError)
#: A dial's failures: the network's, or ``NetworkError`` (no address, or no connection made).
_DIAL_FAILED: tuple[type[Exception], ...] = (*DIAL_ERRORS, NetworkError)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeeperOptions:
    """Which of the two a node runs (``Node.open(keeper=...)``), and their settings."""

    #: Redial below a floor (None: never).
    keeper: KeeperConfig | None = field(default_factory=KeeperConfig)
    #: Ping quiet gossip peers and close stalled connections (None: never).
    keepalive: KeepaliveConfig | None = field(default_factory=KeepaliveConfig)
    #: Seconds between two keeper ticks.
    interval: float = KEEPER_INTERVAL
    #: Dial a connection we dialled again at once when the network closes it (a reset; issue 17,
    #: censor). Off unless asked for (``DEFAULT_KEEPER`` asks): with the floor keeper and a keepalive
    #: on a node that is also dialled back, both ends redialling at once slowed a stalled link's
    #: recovery (test_keeper_net's stall test went from ~45 s to over 90 s).
    reconnect_cuts: bool = False

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"interval must be > 0, not {self.interval}")


#: What a node runs unless told otherwise: both, with the cores' default settings, and cut connections
#: dialled again at once.
DEFAULT_KEEPER = KeeperOptions(reconnect_cuts=True)


class KeeperDriver:
    """Runs a node's keeper and keepalive until cancelled (see the module docstring)."""

    def __init__(
        self,
        host: IHost,
        gossip: GossipDriver,
        dialer: Dialer,
        options: KeeperOptions,
        *,
        bootstrap: Sequence[PeerInfo] = (),
        rng: random.Random,
    ) -> None:
        """Keep ``host`` connected with ``options``; ``bootstrap`` peers are redialled on lookups."""
        self._host = host
        self._gossip = gossip
        self._dialer = dialer
        self._options = options
        self._bootstrap = list(bootstrap)
        self._rng = rng
        self._self = host.get_id()
        self.keeper = None if options.keeper is None else ConnectionKeeper(options.keeper, rng=rng)
        self.keepalive = None if options.keepalive is None else Keepalive(options.keepalive)
        self.reconnects = Reconnects()
        #: Peers whose connections this driver is closing itself (a stall): their drop is no cut.
        self._closing: set[PeerId] = set()
        self._counts: dict[str, int] = dict.fromkeys(KeeperStatistics.__slots__, 0)
        self._dialling = 0
        self._looking = False

    def statistics(self) -> KeeperStatistics:
        """What the keeper and keepalive did so far."""
        return KeeperStatistics(**self._counts)

    def _count(self, what: str) -> None:
        self._counts[what] += 1
        self._gossip.notify_changed()  # tests and callers wait on these with ``wait_for``

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Tick the cores at their deadlines and perform what they ask until cancelled."""
        network = self._host.get_network()
        async with trio.open_nursery() as nursery:
            notifee = _Superseded(self, nursery)
            if self.keepalive is not None:
                network.register_notifee(notifee)
            task_status.started()
            try:
                await self._loop(nursery)
            finally:
                if self.keepalive is not None:
                    network.remove_notifee(notifee)

    async def _loop(self, nursery: trio.Nursery) -> None:
        next_keep = trio.current_time() + self._options.interval
        while True:
            # at least every interval: peers that joined since have no deadline in the core yet
            deadline = next_keep
            if self.keepalive is not None:
                due = self.keepalive.next_deadline(self._gossip.last_heard())
                if due is not None:
                    deadline = min(deadline, due)
            deadline = max(deadline, trio.current_time() + MIN_TICK)
            await trio.sleep_until(deadline)  # a core's deadline
            now = trio.current_time()
            if self.keepalive is not None:
                if now > deadline + LATE_WAKE:
                    self._counts["late_wakes"] += 1
                    self.keepalive.resume(now=now)
                self._keep_alive(nursery, now)
            if now >= next_keep:
                next_keep = now + self._options.interval
                if self.keeper is not None:
                    self._keep(nursery, now)

    # --- keepalive ----------------------------------------------------------------------------------

    def _keep_alive(self, nursery: trio.Nursery, now: float) -> None:
        assert self.keepalive is not None
        step = self.keepalive.tick(now=now, heard=self._gossip.last_heard())
        for peer in step.ping:
            self._counts["pings"] += 1
            nursery.start_soon(self._ping, peer)
        for peer in step.close:
            self._count("stalls_closed")
            nursery.start_soon(self._close_stalled, peer, self._gossip.dialled(peer))

    async def _ping(self, peer: PeerId) -> None:
        """One ping round trip to ``peer`` within the keepalive's timeout; an answer is reported."""
        assert self.keepalive is not None
        stream: INetStream | None = None
        peer_id = ID.from_base58(peer)
        if not self._host.get_network().connections.get(peer_id):
            return  # gone already: ``new_stream`` would dial it (and a cancelled dial leaks its socket)
        try:
            with trio.fail_after(self.keepalive.config.timeout):
                stream = await self._host.new_stream(peer_id, [PING_PROTOCOL])
                await perform_ping_roundtrip(stream)
        except _PING_FAILED:  # no answer in time, or the stream broke: the core's timeout decides
            self._counts["pings_failed"] += 1
            return
        finally:
            if stream is not None:
                with trio.move_on_after(PING_CLOSE_TIMEOUT) as scope, contextlib.suppress(*DIAL_ERRORS):
                    scope.shield = True
                    await stream.close()
        self.keepalive.answered(peer, now=trio.current_time())

    async def _close_stalled(self, peer: PeerId, dialled: bool) -> None:
        """Close every connection to stalled ``peer``; if this node dialled it, dial it again at once,
        first by the way the stalled connection went (the sim's ``reconnect_cuts``: the same path, a
        new connection), then at the addresses the peerstore has."""
        peer_id = ID.from_base58(peer)
        network = self._host.get_network()
        paths = [a for c in network.connections.get(peer_id, []) for a in c.get_transport_addresses()]
        self._closing.add(peer)
        try:
            with trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(*DIAL_ERRORS):
                await close_connections(self._host, peer_id)
        finally:
            self._closing.discard(peer)
        if dialled:
            await self._dial_again(peer, paths)

    async def _dial_again(self, peer: PeerId, paths: list[Multiaddr]) -> None:
        """Dial ``peer`` again at once, by ``paths`` (the lost connection's) first."""
        peer_id = ID.from_base58(peer)
        if self.keeper is not None:  # its tick must not race this dial with one of its own
            self.keeper.dialling(peer, now=trio.current_time())
        with trio.move_on_after(CLOSE_TIMEOUT):  # the gossip link gone first: a fresh one for the new
            await self._gossip.wait_for(lambda: peer not in self._gossip.last_heard())
        store = self._host.get_peerstore()
        store.add_addrs(peer_id, paths, PATH_TTL)
        try:
            addresses = store.addrs(peer_id)
        except PeerStoreError:  # its addresses expired meanwhile
            addresses = []
        # The swarm dials the first address of each transport in peerstore order (py-libp2p 0.8.1
        # returns the peerstore's own list): the stalled connection's path goes first.
        addresses.sort(key=lambda a: a not in paths)
        await self._dial(PeerInfo(peer_id, list(addresses)))

    def _dropped(self, nursery: trio.Nursery, conn: INetConn) -> None:
        """A connection closed: if we dialled it, did not close it ourselves, and have no other to its
        peer, dial again at once (within the peer's budget)."""
        if (
            not self._options.reconnect_cuts
            or self._dialer.closing
            or getattr(conn, "direction", None) != Direction.OUTBOUND
        ):
            return
        paths = list(conn.get_transport_addresses())
        if any("/p2p-circuit" in str(a) for a in paths):
            return
        peer_id = conn.muxed_conn.peer_id
        peer = peer_id.to_base58()
        if peer in self._closing or any(
            not c.is_closed for c in self._host.get_network().connections.get(peer_id, [])
        ):
            return
        if not self.reconnects.dropped(peer, now=trio.current_time()):
            self._count("cuts_deferred")
            return
        self._count("cuts_redialled")
        if self.keepalive is not None:
            self.keepalive.forget(peer)
        nursery.start_soon(self._dial_again, peer, paths)

    def _superseded(self, nursery: trio.Nursery, conn: INetConn) -> None:
        """A peer dialled us while an older connection it had dialled was open: it gave that one up
        (a stall it noticed first, or a restart), so do we, or our side would go on writing into it."""
        if getattr(conn, "direction", None) != Direction.INBOUND:
            return
        peer_id = conn.muxed_conn.peer_id
        older = [
            c
            for c in self._host.get_network().connections.get(peer_id, [])
            if c is not conn and not c.is_closed and getattr(c, "direction", None) == Direction.INBOUND
        ]
        for stale in older:
            self._count("superseded_closed")
            nursery.start_soon(self._close_one, stale)

    async def _close_one(self, conn: INetConn) -> None:
        with trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(*DIAL_ERRORS):
            await conn.close()

    # --- keeper -------------------------------------------------------------------------------------

    def _keep(self, nursery: trio.Nursery, now: float) -> None:
        keeper = self.keeper
        assert keeper is not None
        if self._dialling >= keeper.config.target:
            return  # dials still in flight (each bounded by BOOTSTRAP_TIMEOUT): wait for them
        store = self._host.get_peerstore()
        known = [p for p in store.peers_with_addrs() if p != self._self]
        self._rng.shuffle(known)  # the book keeps the oldest-learned first: do not favour an order
        keeper.learn(p.to_base58() for p in known[: keeper.config.book_size])
        connected = [p.to_base58() for p in self._host.get_connected_peers()]
        step = keeper.tick(now=now, connected=connected)
        for peer in step.dial:
            nursery.start_soon(self._redial, peer)
        if step.lookup and not self._looking:
            self._looking = True
            nursery.start_soon(self._lookup)

    async def _redial(self, peer: PeerId) -> None:
        """Dial ``peer`` at the addresses the peerstore has for it (counted)."""
        peer_id = ID.from_base58(peer)
        try:
            addresses = self._host.get_peerstore().addrs(peer_id)
        except PeerStoreError:  # its addresses expired meanwhile
            addresses = []
        await self._dial(PeerInfo(peer_id, addresses))

    async def _dial(self, info: PeerInfo) -> None:
        """Dial ``info`` (counted as a redial, and as a failure if it fails)."""
        self._count("redials")
        self._dialling += 1
        try:
            if not info.addrs:
                raise NetworkError(f"dial {info.peer_id}", "no address known")
            await self._dialer.dial(info)
        except _DIAL_FAILED:
            self._count("redial_failures")
        finally:
            self._dialling -= 1

    async def _lookup(self) -> None:
        """Find more peers: a DHT random walk if the node runs the DHT, and its bootstrap peers."""
        try:
            self._count("lookups")
            connected = self._host.get_network().connections
            for info in self._bootstrap:
                if not connected.get(info.peer_id):
                    await self._dial(info)
            dht = self._dialer.dht
            if dht is not None and self._host.get_connected_peers():
                found: list[ID] = []
                with trio.move_on_after(DHT_LOOKUP_TIMEOUT), contextlib.suppress(*DIAL_ERRORS):
                    key = self._rng.randbytes(32)
                    found = await dht.peer_routing.find_closest_peers_network(key, LOOKUP_RESULTS)
                if self.keeper is not None:
                    self.keeper.learn(p.to_base58() for p in found if p != self._self)
        finally:
            self._looking = False


class _Superseded(INotifee):
    """Tells the driver of every new connection (``KeeperDriver._superseded``) and every closed one
    (``KeeperDriver._dropped``), never blocking."""

    def __init__(self, driver: KeeperDriver, nursery: trio.Nursery) -> None:
        self._driver = driver
        self._nursery = nursery

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        """A new connection: older inbound ones of the same peer are given up."""
        self._driver._superseded(self._nursery, conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        """A connection closed: a cut one we dialled is dialled again."""
        self._driver._dropped(self._nursery, conn)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        """Not needed."""

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        """Not needed."""
