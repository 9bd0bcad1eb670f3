"""Runs ``meshchat.reach.core.ReachCore`` on a py-libp2p host: AutoNAT, automatic circuit relays that
renew and replace themselves, and the kinds of the node's addresses.

What it uses of py-libp2p 0.8.1, and where it does not, why:

- AutoNAT v1: ``libp2p.host.autonat.AutoNATService`` serves dial-back requests (its observed-IP
  filter, its refusal of requests over relayed connections) and asks servers (``query_server``).
  Its dial-back itself is replaced (``_DialBackAutoNAT._try_dial``): py-libp2p's calls
  ``host.connect``, which returns at once when a connection to the peer exists, and the peer asking
  is always connected (it asked over that connection), so every request was answered OK: a node
  behind a NAT would be told it is public. Here the server opens a *new* connection to each address
  (the transport's dial and a Noise handshake that must prove the peer's key), and closes it before
  muxing; the peer dialled back sees an inbound connection end after its handshake (counted as a
  failed inbound connection by ``meshchat.net.host.InboundCounter``). Its client-side aggregation
  (``update_status``: "4 confirmations", any non-OK counted as unreachable) is not used: a refusal
  is no verdict (see ``meshchat.reach.core``).
- Circuit relay v2: the relay (``CircuitV2Protocol``, hop and stop) and dialing ``/p2p-circuit``
  addresses (``CircuitV2Transport``) are py-libp2p's (``meshchat.net.relay``). Reservations are made
  here with its messages (``HopMessage`` RESERVE and ``read/write_delimited_msg``) rather than
  through ``RelayDiscovery.make_reservation``, which works only for relays its own discovery found
  (and that discovery caches an empty protocol list read before identify finished, and then never
  looks again), and answers ``False`` for a refusal and a broken stream alike, without the expiry
  when the relay's answer carries no limit. ``CircuitV2Transport.reserve``'s refresher renews but
  never notices a relay that left or drops traffic, and so never replaces it.
- Probing a relay: the driver connects to *itself* through the relay (HOP CONNECT naming our own
  PeerId: the relay opens a STOP stream back to us) and sends 16 random bytes, which our STOP
  handler echoes. py-libp2p's STOP handler is wrapped for that (``_on_stop``): a STOP stream from
  anyone else goes on to py-libp2p's ``handle_incoming_connection`` as before. A relay that singles
  out such self-connections could pass the probe and still drop other circuits: the probe catches a
  relay that drops circuits, not one that targets the probe. No probe is sent while a circuit
  through that relay is open (it was set up through the relay, so the relay carries traffic; the
  probe is counted as answered, and in ``probes_spared``): py-libp2p 0.8.1's relay keys its open
  circuits by peer (``CircuitV2Protocol._active_relays``), so when a probe to us ended it closed the
  streams of whichever circuit to us was stored last: a probe every few seconds cut a chat's circuit.

What it is not: the policy (``meshchat.reach.core``) nor hole punching.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from google.protobuf.message import DecodeError
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID, AutoNATService
from libp2p.host.autonat.pb.autonat_pb2 import Message as AutonatMessage
from libp2p.host.basic_host import BasicHost
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeerId
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode, to_proto_status
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from multiaddr import Multiaddr

from meshchat.errors import NetworkError
from meshchat.net.host import CLOSE_ERRORS, IO_ERRORS, dialable_addrs, parse_multiaddr
from meshchat.net.relay import CircuitRelay
from meshchat.reach.addresses import AddressesChanged, NodeAddress, is_relayed
from meshchat.reach.core import (
    MAX_OWN_ADDRESSES,
    MAX_RELAY_ADDRS,
    AskAutonat,
    AutonatAnswered,
    DialBack,
    OwnAddresses,
    PeerFacts,
    PeerGone,
    PeersSeen,
    Probe,
    ProbeAnswered,
    ReachAction,
    ReachConfig,
    ReachCore,
    ReachInput,
    ReachStatistics,
    Release,
    ReservationFailed,
    ReservationMade,
    Reserve,
    ScanPeers,
    relay_of,
)

__all__ = [
    "AUTONAT_TIMEOUT",
    "DEFAULT_REACH",
    "DIAL_BACK_TIMEOUT",
    "PROBE_TIMEOUT",
    "RESERVE_TIMEOUT",
    "ReachDriver",
    "ReachOptions",
]

#: Seconds an AutoNAT query may take: the server dials each of our addresses back (``DIAL_BACK_TIMEOUT``
#: each, a handful of addresses).
AUTONAT_TIMEOUT = 30.0
#: Seconds a server's dial-back to one address may take (a TCP connect and a Noise handshake).
DIAL_BACK_TIMEOUT = 5.0
#: Seconds a reservation request may take.
RESERVE_TIMEOUT = 10.0
#: Seconds a probe through a relay may take: two relay hops each way on a slow link take well under
#: a second; a relay that accepted and then drops the bytes is declared so after this.
PROBE_TIMEOUT = 10.0
#: Random bytes a probe sends through the relay (and expects back).
PROBE_NONCE = 16
#: Inputs waiting for the core (answers of tasks the core bounded, disconnect notices); a full queue
#: makes a task wait, and a notice that does not fit is dropped (the next peer scan sees the same).
INPUT_QUEUE = 64

#: What an answer from a peer can fail with: the network (``IO_ERRORS``), our deadline, a protobuf
#: that does not parse.
_ANSWER_ERRORS: tuple[type[Exception], ...] = (*IO_ERRORS, trio.TooSlowError, DecodeError)


class _Refused(Exception):
    """A relay answered a reservation request with something other than a reservation."""


#: ``_ANSWER_ERRORS``, or a relay's refusal.
_RESERVE_ERRORS: tuple[type[Exception], ...] = (*_ANSWER_ERRORS, _Refused)
#: ``_ANSWER_ERRORS``, or an address in an AutoNAT answer that does not parse.
_AUTONAT_ERRORS: tuple[type[Exception], ...] = (*_ANSWER_ERRORS, ValueError)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReachOptions:
    """``Node.open(reach=...)``: AutoNAT and automatic relays (``meshchat.reach.core``)."""

    #: The policy's settings (how many relays, confirmations, probe and renewal timing, ...).
    config: ReachConfig = field(default_factory=ReachConfig)
    #: Answer other peers' AutoNAT dial-back requests.
    serve_autonat: bool = True
    #: Seconds a probe through a relay may take before it counts as failed.
    probe_timeout: float = PROBE_TIMEOUT


#: The defaults: two relays while not publicly reachable, AutoNAT asked and served.
DEFAULT_REACH = ReachOptions()


class ReachDriver:
    """The I/O half of ``ReachCore`` for one host (see the module docstring)."""

    def __init__(
        self,
        host: IHost,
        relay: CircuitRelay,
        options: ReachOptions,
        *,
        wall_clock: Callable[[], float],
        on_change: Callable[[AddressesChanged], None],
    ) -> None:
        """Drive reachability for ``host``; ``on_change`` hears every change of our addresses."""
        self._host = host
        self._relay = relay
        self._options = options
        self._wall_clock = wall_clock
        self._on_change = on_change
        self._peer_id = host.get_id()
        self.core = ReachCore(
            options.config, local_peer=str(self._peer_id), rng=random.Random(), now=trio.current_time()
        )
        self._send, self._receive = trio.open_memory_channel[ReachInput](INPUT_QUEUE)
        self._autonat: _DialBackAutoNAT | None = None
        self._probe_nonces: set[bytes] = set()  # bounded by the probes in flight (one per relay)
        self._addresses: tuple[NodeAddress, ...] = ()
        self._changed = trio.Event()  # set (and replaced) at every change of ``_addresses``
        self._stepped = trio.Event()  # set (and replaced) after every step of the core
        #: Disconnect notices dropped because the input queue was full.
        self.notices_dropped = 0
        #: Probes not sent because a circuit through the relay was open (module docstring).
        self.probes_spared = 0

    # --- what the node reads ------------------------------------------------------------------------

    def addresses(self) -> tuple[NodeAddress, ...]:
        """Our addresses with their kinds, as of the last change."""
        return self._addresses or self.core.addresses()

    def statistics(self) -> ReachStatistics:
        """The core's counters."""
        return self.core.statistics()

    # --- running ------------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve AutoNAT, wrap the STOP handler and run the core until cancelled."""
        if isinstance(self._host, BasicHost):
            self._autonat = _DialBackAutoNAT(self._host, serve=self._options.serve_autonat)
        self._host.set_stream_handler(STOP_PROTOCOL_ID, self._on_stop)
        self._host.get_network().register_notifee(_GoneNotifee(self))
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                event: ReachInput | None = None
                with trio.move_on_at(self.core.next_deadline()):
                    event = await self._receive.receive()
                now = trio.current_time()
                if event is None:
                    actions = self.core.on_timer(now=now)
                else:
                    actions = self.core.handle(event, now=now, wall_now=self._wall_clock())
                self._perform(actions, nursery)
                self._stepped.set()
                self._stepped = trio.Event()

    def _perform(self, actions: list[ReachAction], nursery: trio.Nursery) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            match action:
                case ScanPeers():
                    now, wall = trio.current_time(), self._wall_clock()
                    pending += self.core.handle(self._own_addresses(), now=now, wall_now=wall)
                    pending += self.core.handle(self._peers(), now=now, wall_now=wall)
                case AskAutonat(server=server):
                    nursery.start_soon(self._ask, server)
                case Reserve(relay=relay):
                    nursery.start_soon(self._reserve, relay)
                case Probe(relay=relay):
                    nursery.start_soon(self._probe, relay)
                case Release():
                    pass  # its relayed address left our addresses (the AddressesChanged that follows)
                case AddressesChanged(addresses=addresses):
                    self._addresses = addresses
                    self._changed.set()
                    self._changed = trio.Event()
                    self._on_change(action)

    async def reserve_pinned(self, relay_address: str) -> str:
        """Reserve on the relay at ``relay_address`` (dialled already) and keep it: renewed, probed,
        replaced if it fails; return our address through it. ``NetworkError`` if it refuses or
        cannot be asked."""
        relay = parse_multiaddr(relay_address).get_peer_id()
        if relay is None:
            raise NetworkError(f"reserve on {relay_address}", "the address names no relay")
        try:
            expires_at, addrs = await self._reserve_on(ID.from_base58(relay))
        except _RESERVE_ERRORS as exc:
            raise NetworkError(f"reserve on {relay_address}", str(exc) or type(exc).__name__) from exc
        base = relay_address if relay_address.endswith(f"/p2p/{relay}") else f"{relay_address}/p2p/{relay}"
        made = ReservationMade(
            relay=relay, expires_at=expires_at, relay_addrs=(base, *addrs)[:MAX_RELAY_ADDRS], pinned=True
        )
        await self._send.send(made)
        return await self.wait_relayed(relay)

    async def wait_relayed(self, relay: str) -> str:
        """Our first address through ``relay``, once the core has taken in its reservation."""
        with trio.fail_after(RESERVE_TIMEOUT):
            while True:
                through = [
                    a.address for a in self._addresses if a.kind == "relayed" and relay_of(a.address) == relay
                ]
                if through:
                    return through[0]
                await self._changed.wait()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checked after every step of the core."""
        while not condition():
            await self._stepped.wait()

    # --- snapshots -----------------------------------------------------------------------------------

    def _own_addresses(self) -> OwnAddresses:
        suffix = f"/p2p/{self._peer_id}"
        direct = [a for a in dialable_addrs(self._host, str(self._peer_id)) if not is_relayed(a)]
        for addr in self._host.get_addrs():  # confirmed observed addresses too
            text = str(addr)
            if not is_relayed(text) and "/0.0.0.0/" not in text and "/::/" not in text:
                direct.append(text if text.endswith(suffix) else f"{text}{suffix}")
        return OwnAddresses(addrs=tuple(dict.fromkeys(direct))[:MAX_OWN_ADDRESSES])

    def _peers(self) -> PeersSeen:
        network = self._host.get_network()
        peerstore = self._host.get_peerstore()
        facts: list[PeerFacts] = []
        for peer, conns in list(network.connections.items()):
            live = [c for c in conns if not c.is_closed]
            if not live:
                continue
            try:
                protocols = set(peerstore.get_protocols(peer))
            except KeyError:  # PeerStoreError: identify has not filled it in yet
                protocols = set()
            facts.append(
                PeerFacts(
                    peer=str(peer),
                    hop=HOP_PROTOCOL_ID in protocols,
                    autonat=AUTONAT_PROTOCOL_ID in protocols,
                    direct=any(not _relayed(c) for c in live),
                    addrs=self._relay_addrs(peer),
                )
            )
        return PeersSeen(peers=tuple(facts))

    def _relay_addrs(self, peer: ID) -> tuple[str, ...]:
        """``peer``'s dialable addresses from the peerstore (no wildcard, no circuit), ``/p2p/`` added."""
        try:
            addrs = [str(a) for a in self._host.get_peerstore().addrs(peer)]
        except KeyError:
            return ()
        good = [
            a if "/p2p/" in a else f"{a}/p2p/{peer}"
            for a in addrs
            if not is_relayed(a) and "/0.0.0.0/" not in a and "/::/" not in a
        ]
        return tuple(dict.fromkeys(good))[:MAX_RELAY_ADDRS]

    # --- AutoNAT --------------------------------------------------------------------------------------

    async def _ask(self, server: str) -> None:
        verdict, address = DialBack.NO_VERDICT, None
        if self._autonat is not None:
            own = [parse_multiaddr(a).to_bytes() for a in self._own_addresses().addrs]
            try:
                with trio.fail_after(AUTONAT_TIMEOUT):
                    status, raw = await self._autonat.query_server(
                        ID.from_base58(server), addrs=own, timeout=AUTONAT_TIMEOUT
                    )
                if status == AutonatMessage.OK:
                    verdict = DialBack.REACHABLE
                    address = str(Multiaddr(raw)) if raw else None
                elif status == AutonatMessage.E_DIAL_ERROR:
                    verdict = DialBack.UNREACHABLE
            except _AUTONAT_ERRORS:
                pass
            finally:
                self._autonat.dial_results.clear()  # py-libp2p's own tally, unbounded: unused here
        await self._send.send(AutonatAnswered(server=server, verdict=verdict, address=address))

    # --- reservations ---------------------------------------------------------------------------------

    async def _reserve(self, relay: str) -> None:
        try:
            expires_at, addrs = await self._reserve_on(ID.from_base58(relay))
        except _RESERVE_ERRORS:
            await self._send.send(ReservationFailed(relay=relay))
            return
        known = self._relay_addrs(ID.from_base58(relay))
        relay_addrs = tuple(dict.fromkeys((*addrs, *known)))[:MAX_RELAY_ADDRS]
        await self._send.send(ReservationMade(relay=relay, expires_at=expires_at, relay_addrs=relay_addrs))

    async def _reserve_on(self, relay: ID) -> tuple[float, tuple[str, ...]]:
        """A reservation on ``relay``: its expiry (unix seconds) and the relay's addresses it names.
        Raises ``_Refused`` or one of ``_ANSWER_ERRORS``."""
        request = HopMessage(type=HopMessage.RESERVE, peer=CircuitPeerId(id=self._peer_id.to_bytes()))
        with trio.fail_after(RESERVE_TIMEOUT):
            stream = await self._host.new_stream(relay, [HOP_PROTOCOL_ID])
            try:
                await write_delimited_msg(stream, request)
                answer = await read_delimited_msg(stream, HopMessage)
            finally:
                await _close(stream)
        status = StatusCode(answer.status) if answer.HasField("status") else StatusCode.OK
        if answer.type != HopMessage.STATUS or status != StatusCode.OK or not answer.HasField("reservation"):
            raise _Refused(f"the relay answered {status.name}")
        addrs: list[str] = []
        for raw in answer.reservation.addrs:
            with contextlib.suppress(ValueError):  # multiaddr's parse errors are ValueErrors
                addrs.append(str(Multiaddr(raw)))
        return float(answer.reservation.expire), tuple(a for a in addrs if not is_relayed(a))

    # --- probes -----------------------------------------------------------------------------------------

    async def _probe(self, relay: str) -> None:
        if self._circuit_open(relay):
            self.probes_spared += 1
            await self._send.send(ProbeAnswered(relay=relay, ok=True))
            return
        nonce = os.urandom(PROBE_NONCE)
        self._probe_nonces.add(nonce)
        ok = False
        try:
            with trio.fail_after(self._options.probe_timeout):
                stream = await self._host.new_stream(ID.from_base58(relay), [HOP_PROTOCOL_ID])
                try:
                    connect = HopMessage(
                        type=HopMessage.CONNECT, peer=CircuitPeerId(id=self._peer_id.to_bytes())
                    )
                    await write_delimited_msg(stream, connect)
                    answer = await read_delimited_msg(stream, HopMessage)
                    if not answer.HasField("status") or StatusCode(answer.status) == StatusCode.OK:
                        await stream.write(nonce)
                        ok = await _read_exactly(stream, PROBE_NONCE) == nonce
                finally:
                    await _close(stream)
        except _ANSWER_ERRORS:
            ok = False
        finally:
            self._probe_nonces.discard(nonce)
        await self._send.send(ProbeAnswered(relay=relay, ok=ok))

    def _circuit_open(self, relay: str) -> bool:
        """Whether a connection through ``relay`` (to or from anyone) is open now."""
        through = f"/p2p/{relay}/p2p-circuit"
        return any(
            not conn.is_closed and any(through in str(a) for a in conn.get_transport_addresses())
            for conns in list(self._host.get_network().connections.values())
            for conn in conns
        )

    async def _on_stop(self, stream: INetStream) -> None:
        """py-libp2p's STOP handler, with our own probes answered here (see the module docstring)."""
        try:
            with trio.fail_after(PROBE_TIMEOUT):
                request = await read_delimited_msg(stream, StopMessage)
        except _ANSWER_ERRORS:
            await _reset(stream)
            return
        if request.type != StopMessage.CONNECT:
            await _stop_status(stream, StatusCode.MALFORMED_MESSAGE)
            await _close(stream)
            return
        await _stop_status(stream, StatusCode.OK)
        if request.peer.id == self._peer_id.to_bytes():
            await self._echo(stream)
            return
        with contextlib.suppress(ConnectionError):  # it closed the stream and logged why
            await self._relay.protocol.handle_incoming_connection(stream, request.peer.id)

    async def _echo(self, stream: INetStream) -> None:
        """One of our probes came through the relay: send its nonce back (nothing for a stranger's)."""
        try:
            with trio.fail_after(PROBE_TIMEOUT):
                nonce = await _read_exactly(stream, PROBE_NONCE)
                if nonce in self._probe_nonces:
                    await stream.write(nonce)
        except _ANSWER_ERRORS:
            pass
        finally:
            await _close(stream)

    def _gone(self, peer: ID) -> None:
        if self._host.get_network().connections.get(peer):
            return  # another connection to it is still open
        try:
            self._send.send_nowait(PeerGone(peer=str(peer)))
        except trio.WouldBlock:
            self.notices_dropped += 1


class _DialBackAutoNAT(AutoNATService):
    """py-libp2p's AutoNAT with a dial-back that opens a new connection (module docstring)."""

    async def _try_dial(self, peer_id: ID, addrs: list[bytes]) -> bytes | None:
        network = self.host.get_network()
        if not isinstance(network, Swarm):
            return None
        for raw in addrs:
            try:
                address = Multiaddr(raw)
            except ValueError:
                continue
            if await _dial_back(network, peer_id, address):
                return raw
        return None


async def _dial_back(network: Swarm, peer_id: ID, address: Multiaddr) -> bool:
    """Whether a new connection to ``address`` reaches ``peer_id`` (TCP and a Noise handshake)."""
    peer_part = address.get_peer_id()
    if peer_part is not None:
        address = address.decapsulate(Multiaddr(f"/p2p/{peer_part}"))
    if is_relayed(str(address)):
        return False
    transport = network.transport_manager.transport_for_dialing(address)
    if transport is None:
        return False
    with trio.move_on_after(DIAL_BACK_TIMEOUT):
        try:
            raw = await transport.dial(address)
        except _ANSWER_ERRORS:
            return False
        try:
            secured = await network.upgrader.upgrade_security(raw, True, peer_id)
            await secured.close()
            return True
        except _ANSWER_ERRORS:
            return False
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(*CLOSE_ERRORS):
                await raw.close()
    return False


def _relayed(conn: INetConn) -> bool:
    return any(is_relayed(str(a)) for a in conn.get_transport_addresses())


async def _read_exactly(stream: INetStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def _stop_status(stream: INetStream, code: StatusCode) -> None:
    with contextlib.suppress(*_ANSWER_ERRORS):
        await write_delimited_msg(stream, StopMessage(type=StopMessage.STATUS, status=to_proto_status(code)))


async def _close(stream: INetStream) -> None:
    with trio.move_on_after(PROBE_TIMEOUT) as scope, contextlib.suppress(*CLOSE_ERRORS):
        scope.shield = True
        await stream.close()


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(PROBE_TIMEOUT) as scope, contextlib.suppress(*CLOSE_ERRORS):
        scope.shield = True
        await stream.reset()


class _GoneNotifee(INotifee):
    """Tells the driver when a peer's last connection closed (so a relay that left is replaced now,
    not at the next scan)."""

    def __init__(self, driver: ReachDriver) -> None:
        self._driver = driver

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        """A connection closed: if it was the peer's last, the peer is gone."""
        self._driver._gone(conn.muxed_conn.peer_id)

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        """Not needed (the next scan reads the peer's protocols once identify has run)."""

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not needed."""

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        """Not needed."""

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        """Not needed."""
