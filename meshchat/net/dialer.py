"""Getting connected: dial an address, reach a contact, bootstrap, DHT lookups, mailbox redials.

What it is: the one place a node opens connections. ``Dialer`` wraps py-libp2p's host (and its DHT and
circuit relay, when the node runs them) and turns the many error types py-libp2p raises for "could not
connect" into ``NetworkError``. Every dial it makes first lifts py-libp2p's negative dial cache for
that peer: the swarm refuses, for 60 s, to dial a peer whose addresses all failed once ("recently
failed all addresses"), which made a node reconnect to a restarted mailbox 34-62 s late although it
redials every ``MAILBOX_REDIAL`` seconds. Our own redials are already paced; the cache only delays them.

What it is not: it does not decide *when* to dial (the node and the store driver do) and holds no
protocol state; the addresses a node is reachable at are ``Node.listen_addrs`` and what ``reserve``
returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.exceptions import BaseLibp2pError
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from multiaddr import Multiaddr

from meshchat.errors import BadAddress, NetworkError
from meshchat.net.host import close_connections, parse_multiaddr
from meshchat.net.relay import CircuitRelay

__all__ = [
    "BOOTSTRAP_TIMEOUT",
    "CLOSE_TIMEOUT",
    "CONTACT_MAILBOX_GRACE",
    "DHT_LOOKUP_TIMEOUT",
    "DIAL_ERRORS",
    "MAILBOX_REDIAL",
    "Dialer",
    "Whereabouts",
    "peer_info",
]

#: Seconds to wait for one dial (a bootstrap peer, a contact, a mailbox, a relay).
BOOTSTRAP_TIMEOUT = 10.0
#: Seconds the dials to a contact's mailboxes may go on once the contact itself is connected (see
#: ``Dialer._reach``): the message then goes to the contact directly, and an honest mailbox on a
#: working network has answered by then; the next retry dials the others again.
CONTACT_MAILBOX_GRACE = 2.0
#: Seconds a DHT lookup of one PeerId may take.
DHT_LOOKUP_TIMEOUT = 15.0
#: Seconds between attempts to reconnect to a configured mailbox that is down.
MAILBOX_REDIAL = 5.0
#: Seconds closing a node's connections may take.
CLOSE_TIMEOUT = 5.0
#: Seconds an address dialled stays in the peerstore: py-libp2p's ``connect`` keeps them as long.
DIAL_ADDRESS_TTL = 120

#: What a dial, a stream or a relay reservation raises when the network says no. py-libp2p's swarm
#: wraps transport failures in ``SwarmException`` (a ``BaseLibp2pError``), but its circuit relay
#: transport raises the builtin ``ConnectionError`` (an ``OSError``) and sockets raise ``OSError``;
#: ``trio.TooSlowError`` is our own deadline. An open set at an I/O boundary, hence these base classes;
#: anything else is a bug and propagates.
DIAL_ERRORS: tuple[type[Exception], ...] = (BaseLibp2pError, OSError, trio.TooSlowError)
#: The same, or our own ``NetworkError`` (a dial that returned without a connection).
_DIAL_FAILED: tuple[type[Exception], ...] = (*DIAL_ERRORS, NetworkError)


@dataclass(frozen=True, slots=True, kw_only=True)
class Whereabouts:
    """Where a peer may be found: what its invite says (a contact's, as ``Dialer.reach`` uses it)."""

    #: Its PeerId.
    peer_id: str
    #: Addresses it may listen at (with or without ``/p2p/<PeerId>``; circuit addresses too).
    addrs: Sequence[str] = ()
    #: Addresses of the mailboxes it syncs from.
    mailboxes: Sequence[str] = ()


def peer_info(address: str) -> PeerInfo:
    """The PeerId and address in ``address``; ``BadAddress`` if it does not end in ``/p2p/<PeerId>``."""
    parsed = parse_multiaddr(address)
    try:
        return info_from_p2p_addr(parsed)
    except ValueError as exc:  # py-libp2p's InvalidAddrError, or a PeerId that does not decode
        raise BadAddress(address, "a peer address must end in /p2p/<PeerId>") from exc


def _peer_of(address: str) -> str | None:
    """The PeerId ``address`` ends in, or None if it is not a peer address."""
    try:
        return str(peer_info(address).peer_id)
    except BadAddress:
        return None


def _problem(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Dialer:
    """Opens connections for one host (see the module docstring)."""

    def __init__(self, host: IHost) -> None:
        """Dial from ``host``; ``dht`` and ``relay`` are set once the node started them."""
        self._host = host
        #: The node's DHT, if it runs one (lookups and routing-table updates go through it).
        self.dht: KadDHT | None = None
        #: The node's circuit relay, if started (dials ``/p2p-circuit`` addresses, makes reservations).
        self.relay: CircuitRelay | None = None
        #: Configured mailboxes that could not be dialled, with the reason (cleared when one is reached).
        self.unreachable_mailboxes: dict[str, str] = {}
        #: Set once ``hang_up`` began: the node is stopping, its connections close on purpose.
        self.closing = False
        # Contacts being reached now, by PeerId: a second caller waits for the first attempt instead of
        # dialling the same addresses again (bounded by the contacts: one entry per contact at most).
        self._reaching: dict[str, trio.Event] = {}

    def connected_to(self, peer_id: str) -> bool:
        """Whether there is a connection to ``peer_id`` now."""
        return bool(self._host.get_network().connections.get(ID.from_base58(peer_id)))

    async def connect(self, address: str) -> None:
        """Dial a peer at ``address`` (a multiaddr ending in ``/p2p/<PeerId>``, possibly through a
        relay: ``<relay address>/p2p-circuit/p2p/<PeerId>``). ``NetworkError`` if that fails."""
        info = peer_info(address)
        try:
            if (
                "/p2p-circuit/" in address
                and self.relay is not None
                and not self.connected_to(str(info.peer_id))
            ):
                with trio.fail_after(BOOTSTRAP_TIMEOUT):
                    await self.relay.transport.dial(parse_multiaddr(address))
            # py-libp2p's swarm dials only the first TCP address the peerstore
            # lists for a peer, whatever address it was asked to connect to; identify puts the
            # peer's own listen addresses there, so behind a censor that blocks them the address an
            # invite names (a bridge, a path that works) was never tried. It goes first.
            await self.dial(self._first(info.peer_id, info.addrs[0]) if info.addrs else info)
        except DIAL_ERRORS as exc:
            raise NetworkError(f"dial {address}", _problem(exc)) from exc

    async def dial(self, info: PeerInfo) -> None:
        """Connect to ``info`` (within ``BOOTSTRAP_TIMEOUT``); raises one of ``DIAL_ERRORS`` or
        ``NetworkError``."""
        network = self._host.get_network()
        if isinstance(network, Swarm):  # our redials are paced already: see the module docstring
            network.unblock_peer(info.peer_id)
        with trio.fail_after(BOOTSTRAP_TIMEOUT):
            await self._host.connect(info)
        # py-libp2p's connect can return without a connection (it logs the failure): check.
        if not network.connections.get(info.peer_id):
            raise NetworkError(f"dial {info.peer_id}", "no connection could be made")
        if self.dht is not None:  # every peer we reach can answer DHT queries for us, and we for it
            # (a routing-table update may ping the bucket's oldest peer: best effort)
            with contextlib.suppress(*DIAL_ERRORS):
                await self.dht.add_peer(info.peer_id)

    def _first(self, peer_id: ID, address: Multiaddr) -> PeerInfo:
        """``peer_id`` with ``address`` added to the peerstore at the head of its list (py-libp2p 0.8.1
        returns the peerstore's own list, in the order its swarm dials), for ``host.connect``."""
        store = self._host.get_peerstore()
        store.add_addrs(peer_id, [address], DIAL_ADDRESS_TTL)
        with contextlib.suppress(PeerStoreError):
            listed = store.addrs(peer_id)
            listed.sort(key=lambda a: a != address)
        return PeerInfo(peer_id, [address])

    async def bootstrap(self, infos: list[PeerInfo]) -> None:
        """Dial every bootstrap peer; ``NetworkError`` if none could be reached."""
        reached = 0
        errors: list[str] = []
        for info in infos:
            try:
                await self.dial(info)
                reached += 1
            except _DIAL_FAILED as exc:  # refused, unreachable, wrong key: the next
                errors.append(_problem(exc))
        if not reached:
            raise NetworkError("bootstrap", "no bootstrap peer reached: " + "; ".join(errors))

    async def dial_mailboxes(self, infos: list[PeerInfo]) -> None:
        """Dial each configured mailbox we are not connected to, all at once (a failure is noted, not
        raised): one that hangs must not hold up the redial of the others for ``BOOTSTRAP_TIMEOUT``."""
        connected = self._host.get_network().connections
        async with trio.open_nursery() as nursery:
            for info in infos:
                if not connected.get(info.peer_id):
                    nursery.start_soon(self._dial_mailbox, info)

    async def _dial_mailbox(self, info: PeerInfo) -> None:
        try:
            await self.dial(info)
            self.unreachable_mailboxes.pop(str(info.peer_id), None)
        except _DIAL_FAILED as exc:  # down now: the next round tries again
            self.unreachable_mailboxes[str(info.peer_id)] = _problem(exc)

    async def keep_mailboxes_connected(self, infos: list[PeerInfo]) -> None:
        """Redial configured mailboxes that went away, every ``MAILBOX_REDIAL`` seconds (a backoff:
        there is nothing to wait on for a peer that is down)."""
        while True:
            await trio.sleep(MAILBOX_REDIAL)
            await self.dial_mailboxes(infos)

    async def reach(self, contact: Whereabouts) -> bool:
        """Dial ``contact``'s mailboxes, then ``contact`` itself at its invite's addresses, or by the
        DHT, where not connected (best effort: relays and mailboxes may carry it). Returns whether we
        are connected to the contact afterwards. Concurrent calls for one contact share one attempt."""
        running = self._reaching.get(contact.peer_id)
        if running is not None:
            await running.wait()
            return self.connected_to(contact.peer_id)
        done = self._reaching[contact.peer_id] = trio.Event()
        try:
            await self._reach(contact)
        finally:
            del self._reaching[contact.peer_id]
            done.set()
        return self.connected_to(contact.peer_id)

    async def reach_peer(self, peer_id: str, whereabouts: Whereabouts | None = None) -> bool:
        """Whether we are connected to ``peer_id``, after dialling it if not (at ``whereabouts`` if
        known, else by the DHT): a file's source or a mailbox named in a manifest."""
        if self.connected_to(peer_id):
            return True
        return await self.reach(whereabouts or Whereabouts(peer_id=peer_id))

    async def _reach(self, contact: Whereabouts) -> None:
        """The contact's mailboxes (all at once) beside the contact itself. Dialled one after the other,
        three mailboxes that accept a connection and never answer held a message to a contact who was
        online for 30 s (``BOOTSTRAP_TIMEOUT`` each, at every retry); once the contact is connected,
        the mailbox dials get ``CONTACT_MAILBOX_GRACE`` more and are given up."""
        own = [a for a in contact.mailboxes if _peer_of(a) == contact.peer_id]  # a contact's own mailbox
        others = [a for a in contact.mailboxes if a not in own]
        async with trio.open_nursery() as nursery:
            mailboxes = trio.CancelScope()
            nursery.start_soon(self._connect_all, others, mailboxes)
            await self._reach_directly(contact, [*contact.addrs, *own])
            if self.connected_to(contact.peer_id):
                mailboxes.deadline = min(mailboxes.deadline, trio.current_time() + CONTACT_MAILBOX_GRACE)

    async def _reach_directly(self, contact: Whereabouts, addresses: Sequence[str]) -> None:
        for address in addresses:
            if self.connected_to(contact.peer_id):
                return
            full = address if "/p2p/" in address else f"{address}/p2p/{contact.peer_id}"
            with contextlib.suppress(BadAddress, NetworkError):
                await self.connect(full)
                return
        if self.connected_to(contact.peer_id):
            return
        with contextlib.suppress(NetworkError):
            for address in await self.find_peer(contact.peer_id):
                with contextlib.suppress(BadAddress, NetworkError):
                    await self.connect(address)
                    return

    async def _connect_all(self, addresses: Sequence[str], scope: trio.CancelScope) -> None:
        """Dial each of ``addresses`` not connected yet, all at once, within ``scope`` (best effort)."""
        with scope:
            async with trio.open_nursery() as nursery:
                for address in addresses:
                    nursery.start_soon(self._connect_quietly, address)

    async def _connect_quietly(self, address: str) -> None:
        with contextlib.suppress(BadAddress, NetworkError):
            if not self.connected_to(str(peer_info(address).peer_id)):
                await self.connect(address)

    async def find_peer(self, peer_id: str) -> list[str]:
        """Look ``peer_id`` up in the DHT; its addresses (each ending in ``/p2p/<PeerId>``), or none.

        Raises ``NetworkError`` if the node runs without the DHT or the lookup fails.
        """
        if self.dht is None:
            raise NetworkError(f"find {peer_id}", "this node runs without the DHT")
        try:
            with trio.fail_after(DHT_LOOKUP_TIMEOUT):
                info = await self.dht.find_peer(ID.from_base58(peer_id))
        except DIAL_ERRORS as exc:
            raise NetworkError(f"find {peer_id}", _problem(exc)) from exc
        if info is None:
            return []
        return [f"{a}/p2p/{peer_id}" if "/p2p/" not in str(a) else str(a) for a in info.addrs]

    async def reserve(self, relay_address: str, own_peer_id: str) -> str:
        """Reserve a slot on the circuit relay at ``relay_address``; return the address peers can dial
        ``own_peer_id`` at through it. ``NetworkError`` if the relay cannot be reached or refuses."""
        await self.connect(relay_address)
        assert self.relay is not None, "the node starts its circuit relay before anything dials"
        relay_id = peer_info(relay_address).peer_id
        try:
            with trio.fail_after(BOOTSTRAP_TIMEOUT):
                await self.relay.discovery.discover_relays()
                reserved = await self.relay.discovery.make_reservation(relay_id)
        except DIAL_ERRORS as exc:
            raise NetworkError(f"reserve on {relay_address}", _problem(exc)) from exc
        if not reserved:
            raise NetworkError(f"reserve on {relay_address}", "the relay refused or does not relay")
        return f"{relay_address}/p2p-circuit/p2p/{own_peer_id}"

    def drop_stale_circuits(self, nursery: trio.Nursery) -> None:
        """From now on, when a peer connects through a relay while an older relayed connection to it
        is still open, hang up on that peer (all its connections; it dials again at its next retry).

        Why: py-libp2p 0.8.1's relay does not close the far end of a circuit when the dialling side
        goes away, so a one-shot sender (``meshchat send``) leaves a dead relayed connection behind on
        the recipient. The sender's next run connects again; the recipient's gossip link to it still
        writes on the dead connection, the sender never hears the recipient's subscription, and its
        messages stay queued (three sends through a relay: one arrived). A clean slate fixes it.
        """
        self._host.get_network().register_notifee(_StaleCircuitDropper(self, nursery))

    async def hang_up_on(self, peer: ID) -> None:
        """Close every connection to ``peer`` (best effort)."""
        with trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(*DIAL_ERRORS):
            await close_connections(self._host, peer)

    async def hang_up(self) -> None:
        """Stop listening and close every connection before the host stops: py-libp2p 0.8.1 leaks
        dialled sockets, and its listeners run in system tasks that outlive the host, so a node
        closed inside a process went on accepting connections on its port."""
        network = self._host.get_network()
        self.closing = True
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            for listener in list(network.listeners.values()):
                with contextlib.suppress(*DIAL_ERRORS):
                    await listener.close()
            for peer_id in list(network.connections):
                with contextlib.suppress(*DIAL_ERRORS):  # already closed by the other side
                    await close_connections(self._host, peer_id)


def _relayed(conn: INetConn) -> bool:
    return any("/p2p-circuit" in str(a) for a in conn.get_transport_addresses())


class _StaleCircuitDropper(INotifee):
    """See ``Dialer.drop_stale_circuits``."""

    def __init__(self, dialer: Dialer, nursery: trio.Nursery) -> None:
        self._dialer = dialer
        self._nursery = nursery

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        """A new relayed connection: if an older relayed one to the same peer is open, start over.
        (A direct connection next to a relayed one is an upgrade, not a sign of a dead circuit.)"""
        if not _relayed(conn):
            return
        peer = conn.muxed_conn.peer_id
        older = [c for c in network.connections.get(peer, []) if c is not conn and not c.is_closed]
        if any(_relayed(c) for c in older):
            self._nursery.start_soon(self._dialer.hang_up_on, peer)  # not inline: we are in add_conn

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        """Not needed."""

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        """Not needed."""

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        """Not needed."""
