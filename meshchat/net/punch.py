"""Hole punching: turn a connection through a circuit relay into a direct one (DCUtR), bounded in time,
counted, and reported; a punch that fails keeps the relayed connection.

What it is: py-libp2p 0.8.1's ``libp2p.relay.circuit_v2.dcutr.DCUtRProtocol`` (the DCUtR exchange
over the relayed connection, then TCP simultaneous open from the listen port), driven by this module
instead of py-libp2p's own loop. Its reuseport dialing works with ``meshchat.net.host``'s transport:
``_GuardedTCPListener`` keeps py-libp2p's SO_REUSEPORT listeners (its probe bind happens before them
and is closed), and ``_CountingTCP.dial_with_source`` binds the dial to the listen port as
py-libp2p's does, but closes the socket when the dial is cancelled (py-libp2p's leaked it once per
cancelled dial, and DCUtR cancels its other dials as soon as one connects). Measured between two
namespaces behind nft masquerade NATs (``tests/test_nat_netns.py``): the punch connects in ~0.2 s
after the relayed connection opens; behind ``masquerade fully-random`` NATs it fails (py-libp2p
gives up after its 3 dial rounds, ~21 s) and the relayed connection stays. What this module adds:

- py-libp2p's service polls every connection every 2 s and initiates towards every relayed peer from
  both ends (two crossing sessions); here one side initiates, as the DCUtR spec says: the side the
  relayed connection came in to (the one that had reserved a slot), or, where py-libp2p does not say
  which side dialled, the smaller PeerId. A punch runs once per relayed connection, within
  ``PUNCH_TIMEOUT``; its end is an event (``DirectConnection`` or ``PunchFailed``) and a counter.
- When a direct connection opens to a peer we had only through a relay (punched by either side),
  both sides close the relayed connections to it (py-libp2p waits 60 s; our gossip stream then moves
  to the direct connection at once: ``meshchat.net.driver`` reopens a pubsub stream that ran on a
  relayed connection when that closed while another is open). Both sides close, because
  py-libp2p's relay does not pass a close on to the far end of a circuit (see
  ``Dialer.drop_stale_circuits``).

``Node.open(hole_punch=True)`` runs it (``meshchat node`` and ``chat`` do; off by default in the
library for now: see ``Node.open``). What it is not: it does not make reservations
(``Node.reserve``) nor learn our public address (identify's observed address, which the relay
reports, gives DCUtR the NAT's address).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeAlias

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.tools.anyio_service import background_trio_service

from meshchat.net.host import CLOSE_ERRORS

__all__ = [
    "MAX_TRACKED_PEERS",
    "PUNCH_TIMEOUT",
    "DirectConnection",
    "HolePuncher",
    "PunchEvent",
    "PunchFailed",
    "PunchStatistics",
    "relayed",
]

#: Seconds one punch may take, from the relayed connection opening to a verified direct one.
#: py-libp2p's DCUtR: the CONNECT/SYNC exchange over the relay (one round trip), then up to 3 dial
#: rounds of 5 s with 2 s between: 21 s at most on a network that answers; a peer that never answers
#: its stream would hold it for its 30 s read timeout. On a loaded machine a punch that works takes
#: a second or two; after this long it is given up and the relay stays.
PUNCH_TIMEOUT = 30.0
#: Peers whose relayed connection time (for ``after_s``) is remembered at once, oldest forgotten
#: first: one entry per peer connected through a relay, which the swarm's connection cap bounds too.
MAX_TRACKED_PEERS = 1024
#: Seconds closing a relayed connection may take once a direct one replaced it.
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectConnection:
    """A direct connection to ``peer`` replaced the relayed one (a hole punch, from either side)."""

    #: The peer's PeerId.
    peer: str
    #: Seconds since the relayed connection to it opened.
    after_s: float
    #: The direct connection's remote address.
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchFailed:
    """A hole punch to ``peer`` this node initiated did not give a direct connection; the relayed
    connection stays."""

    #: The peer's PeerId.
    peer: str
    #: Seconds since the relayed connection to it opened.
    after_s: float
    #: "timeout" (``PUNCH_TIMEOUT`` passed) or "failed" (DCUtR gave up).
    reason: str


#: What ``HolePuncher`` reports.
PunchEvent: TypeAlias = DirectConnection | PunchFailed


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchStatistics:
    """Hole punches so far."""

    #: Punches this node initiated.
    attempted: int
    #: Direct connections that replaced a relayed one (initiated by either side).
    direct: int
    #: Punches this node initiated that ended without a direct connection (``timed_out`` included).
    failed: int
    #: Of ``failed``: those that ran into ``PUNCH_TIMEOUT``.
    timed_out: int


def relayed(conn: INetConn) -> bool:
    """Whether ``conn`` goes through a circuit relay."""
    return any("/p2p-circuit" in str(a) for a in conn.get_transport_addresses())


class _DrivenDCUtR(DCUtRProtocol):
    """py-libp2p's DCUtR without its polling loop (``HolePuncher`` decides when to punch)."""

    async def _auto_drive_loop(self) -> None:
        return


class HolePuncher:
    """Punches through NAT for one host (see the module docstring). Use ``HolePuncher.running``."""

    def __init__(
        self,
        host: IHost,
        nursery: trio.Nursery,
        on_event: Callable[[PunchEvent], None],
        *,
        timeout: float = PUNCH_TIMEOUT,
    ) -> None:
        self._host = host
        self._nursery = nursery
        self._on_event = on_event
        self._timeout = timeout
        self._dcutr = _DrivenDCUtR(host)
        # When the relayed connection to each peer opened (trio clock), oldest first, bounded.
        self._relayed_since: OrderedDict[ID, float] = OrderedDict()
        self._punching: set[ID] = set()  # bounded by _relayed_since's peers
        self._attempted = self._direct = self._failed = self._timed_out = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        host: IHost,
        nursery: trio.Nursery,
        on_event: Callable[[PunchEvent], None],
        *,
        punch_timeout: float = PUNCH_TIMEOUT,
    ) -> AsyncIterator[HolePuncher]:
        """Serve DCUtR on ``host`` and punch relayed connections (each within ``punch_timeout``
        seconds, as tasks of ``nursery``) until the block ends."""
        puncher = cls(host, nursery, on_event, timeout=punch_timeout)
        async with background_trio_service(puncher._dcutr):
            await puncher._dcutr.event_started.wait()
            host.get_network().register_notifee(_PunchNotifee(puncher))
            yield puncher

    def statistics(self) -> PunchStatistics:
        """Counters of the punches so far."""
        return PunchStatistics(
            attempted=self._attempted, direct=self._direct, failed=self._failed, timed_out=self._timed_out
        )

    def _since(self, peer: ID) -> float:
        return trio.current_time() - self._relayed_since.get(peer, trio.current_time())

    def _connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if relayed(conn):
            if peer not in self._relayed_since:
                while len(self._relayed_since) >= MAX_TRACKED_PEERS:
                    self._relayed_since.popitem(last=False)
                self._relayed_since[peer] = trio.current_time()
            if self._we_initiate(conn) and peer not in self._punching:
                self._punching.add(peer)
                self._nursery.start_soon(self._punch, peer)
            return
        others = [c for c in network.connections.get(peer, []) if c is not conn and not c.is_closed]
        if any(relayed(c) for c in others):
            self._direct += 1
            addresses = conn.get_transport_addresses()
            self._on_event(
                DirectConnection(
                    peer=peer.to_base58(),
                    after_s=self._since(peer),
                    address=str(addresses[0]) if addresses else "",
                )
            )
            self._relayed_since.pop(peer, None)
            self._nursery.start_soon(self._close_relayed, peer)

    def _we_initiate(self, conn: INetConn) -> bool:
        """DCUtR: the side the relayed connection came in to initiates; where the connection does not
        say, the smaller PeerId."""
        direction = str(getattr(conn, "direction", "unknown"))
        if direction.endswith("inbound"):
            return True
        if direction.endswith("outbound"):
            return False
        return self._host.get_id().to_bytes() < conn.muxed_conn.peer_id.to_bytes()

    async def _punch(self, peer: ID) -> None:
        self._attempted += 1
        try:
            with trio.move_on_after(self._timeout) as deadline:
                punched = await self._dcutr.initiate_hole_punch(peer)
        finally:
            self._punching.discard(peer)
        if punched:
            return  # reported by _connected when the direct connection opened
        self._failed += 1
        reason = "timeout" if deadline.cancelled_caught else "failed"
        self._timed_out += reason == "timeout"
        self._on_event(PunchFailed(peer=peer.to_base58(), after_s=self._since(peer), reason=reason))

    async def _close_relayed(self, peer: ID) -> None:
        """Close ``peer``'s relayed connections while a direct one is open (the punch replaced them)."""
        conns = list(self._host.get_network().connections.get(peer, []))
        if not any(not relayed(c) and not c.is_closed for c in conns):
            return
        with trio.move_on_after(CLOSE_TIMEOUT):
            for conn in conns:
                if relayed(conn) and not conn.is_closed:
                    with contextlib.suppress(*CLOSE_ERRORS):
                        await conn.close()


class _PunchNotifee(INotifee):
    """Tells a ``HolePuncher`` about connections opening (never blocks the swarm)."""

    def __init__(self, puncher: HolePuncher) -> None:
        self._puncher = puncher

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        """A connection opened: punch it if relayed, or report a direct one that replaces a relay."""
        self._puncher._connected(network, conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        """Not needed."""

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        """Not needed."""

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        """Not needed."""
