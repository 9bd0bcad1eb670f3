"""Peers on the local network, found by mDNS: the fallback when the Internet is cut (a whitelist-only
shutdown) and nodes on one LAN have no bootstrap, relay or DHT to meet through.

What it does: announces this node's dialable addresses as a libp2p mDNS service (``_p2p._udp.local``,
one ``dnsaddr=/ip4/…/tcp/…/p2p/<PeerId>`` TXT string per address, as the libp2p mDNS spec says),
browses for the others' and dials each peer it finds at once. When this machine's network changes
(an interface or address comes or goes, a link goes up or down: a laptop whose cable moved to another
LAN) it closes its zeroconf instance and opens a new one on the interfaces there are now, which
announces the node again and asks for the peers there; a peer it was connected to that comes back
under a new name (its network changed: it was away), or that we find again after our own network
changed, is hung up on and dialled again, since that connection may be dead or stale on either side
(and a new connection makes both sides start again: a mailbox is synced on connection). A node that
finds a mailbox this way uses it as it uses any connected mailbox (``meshchat.net.store_driver``: it
stores its messages there and syncs its inbox from it), so a laptop running a mailbox carries sealed
envelopes from one LAN to another.

Why not py-libp2p 0.8.1's own mDNS (``libp2p.discovery.mdns``, ``new_host(enable_mDNS=True)``):
with real ``meshchat node --mdns`` processes in network namespaces (a bridge as the LAN, no route out)
multicast works (zeroconf in one namespace browses what another registers), yet the nodes never
connect:

1. It announces the host's listen addresses as they are: a node listening on every interface (the
   default, ``/ip4/0.0.0.0/tcp/0``) announces ``dnsaddr=/ip4/0.0.0.0/tcp/PORT/p2p/…``, which a peer
   dials as its own machine. (Seen: the TXT record a browser in the other namespace got.)
2. Its A record takes the source address of a UDP socket "connected" to 8.8.8.8: with no route out,
   the case mDNS is the fallback for, that fails and it announces 127.0.0.1. (Seen likewise.)
3. It only puts found addresses in the peerstore; nothing dials them but the swarm's auto-connector,
   which looks every 10 to 30 s and skips a peer for 60 s after it disconnected (from its code; with
   ``--listen`` on each namespace's own address, so that 1. does not bite, two nodes connected 3 s
   after start, when its first look came after the mDNS answer).
4. Its zeroconf instance joins the multicast group on the interfaces there are when the node starts
   (zeroconf resolves ``InterfaceChoice.All`` once): on an interface that appears later (the cable
   plugged into another LAN) the node is neither heard nor announced. (Seen with this module's
   restart turned off: the laptop of ``tests/test_lan_netns.py``, plugged into LAN2, was not found
   there in 60 s; with the restart, in about 2 s.) And on a machine with no interface up at all,
   ``Zeroconf()`` raises ``RuntimeError`` ("No interfaces to listen on"), which here leaves the node
   running without mDNS until an interface comes up.
5. Its listener runs in zeroconf's thread, writes the peerstore from there and sleeps there between
   retries.

Here, zeroconf (py-libp2p's dependency) still speaks mDNS; the rest runs under trio: zeroconf's
callbacks only hand a service name to the trio loop (``TrioToken.run_sync_soon``); names wait in a
bounded queue (``MAX_PENDING``: a LAN that floods announcements costs drops, counted, not memory);
records are read in a worker thread; dials run at most ``MAX_DIALS`` at a time. Network changes come
from a Linux netlink socket (``RTMGRP_LINK`` and the address groups) where there is one, else from a
check every ``ADDRESS_POLL`` seconds.
"""

from __future__ import annotations

import contextlib
import functools
import math
import secrets
import socket
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import ifaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError
from multiaddr import Multiaddr
from zeroconf import Error as ZeroconfError
from zeroconf import ServiceBrowser, ServiceInfo, ServiceListener, Zeroconf

from meshchat.errors import BadAddress, NetworkError
from meshchat.net.host import IO_ERRORS, dialable_addrs, parse_multiaddr

__all__ = [
    "ADDRESS_POLL",
    "DIAL_TIMEOUT",
    "MAX_ADDRS_PER_PEER",
    "MAX_ANNOUNCED",
    "MAX_DIALS",
    "MAX_KNOWN",
    "MAX_PENDING",
    "RESOLVE_TIMEOUT",
    "SERVICE_TYPE",
    "SETTLE",
    "START_RETRY",
    "LanDiscovery",
    "network_fingerprint",
    "peer_of_txt",
]

#: The libp2p mDNS service type (https://github.com/libp2p/specs/blob/master/discovery/mdns.md).
SERVICE_TYPE = "_p2p._udp.local."
#: Milliseconds zeroconf may take to read a found service's records (they usually came with its
#: announcement and are read from the cache at once; a query and its answer take a few ms on a LAN).
RESOLVE_TIMEOUT = 3000
#: Seconds one dial to a found peer may take (a TCP connect and a Noise handshake on a LAN: far less).
DIAL_TIMEOUT = 10.0
#: Found services waiting to be read and dialled; beyond it new ones are dropped (counted): a peer
#: announcing many services cannot grow the queue. A peer that was dropped is found again at its next
#: announcement or our next query.
MAX_PENDING = 64
#: Peers whose last announced service name is remembered (the oldest forgotten beyond it): a peer
#: that comes back under a new name has moved (its zeroconf restarted on a network change).
MAX_KNOWN = 256
#: Seconds before zeroconf is tried again after it failed to start (and no network change came).
START_RETRY = 5.0
#: Dials to found peers running at once.
MAX_DIALS = 8
#: Addresses taken from one peer's TXT record (the rest ignored): a node has a few interfaces.
MAX_ADDRS_PER_PEER = 16
#: Addresses this node announces at most (each a TXT string of under 100 bytes: within one packet).
MAX_ANNOUNCED = 16
#: Seconds of quiet awaited after a network change before zeroconf restarts: one cable moved makes
#: several netlink messages (link down, address gone, link up, address added) within milliseconds.
SETTLE = 0.3
#: Seconds between checks of this machine's interfaces where no netlink socket tells of changes (not
#: Linux): there is nothing to wait on there.
ADDRESS_POLL = 5.0

#: Seconds the peerstore keeps a found peer's addresses (what py-libp2p's ``connect`` gives them).
_ADDRESS_TTL = 120
#: What a failed dial to a found peer raises (counted in ``LanDiscovery.failed``).
_DIAL_FAILED: tuple[type[Exception], ...] = (*IO_ERRORS, NetworkError, trio.TooSlowError)

# Linux netlink (linux/rtnetlink.h): the multicast groups telling of links and addresses.
_NETLINK_ROUTE = 0
_RTMGRP_LINK = 0x1
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV6_IFADDR = 0x100

#: Operational states (``/sys/class/net/<name>/operstate``) of an interface that can carry traffic
#: (loopback and some virtual interfaces say "unknown").
_LINK_UP = frozenset({"up", "unknown"})


def network_fingerprint() -> frozenset[tuple[str, int, str]]:
    """This machine's usable IPv4 addresses now: (interface, its index, address) for each interface
    whose link is up. A changed interface index means a new interface, even with the same name and
    address (a cable pulled and another plugged in)."""
    found: set[tuple[str, int, str]] = set()
    for adapter in ifaddr.get_adapters():
        if not _link_up(adapter.name):
            continue
        try:
            index = socket.if_nametoindex(adapter.name)
        except OSError:
            continue  # gone since it was listed
        found.update((adapter.name, index, ip.ip) for ip in adapter.ips if isinstance(ip.ip, str))
    return frozenset(found)


def _link_up(name: str) -> bool:
    try:
        state = Path(f"/sys/class/net/{name}/operstate").read_text(encoding="ascii").strip()
    except OSError:
        return True  # not Linux (or not told): count it as up
    return state in _LINK_UP


def peer_of_txt(text: bytes, own: ID | None = None) -> PeerInfo | None:
    """The peer a service's TXT record (the raw record: length-prefixed strings) announces, with at most
    ``MAX_ADDRS_PER_PEER`` of its TCP addresses; None if it names no peer, names ``own``, or gives no
    usable address. Reads the spec's ``dnsaddr=…`` strings (go and js libp2p repeat that key) and
    py-libp2p's ``dnsaddr2=…``; addresses naming another peer than the first are ignored."""
    peer: ID | None = None
    addrs: list[Multiaddr] = []
    for entry in _txt_strings(text):
        key, _sep, value = entry.partition(b"=")
        if not key.startswith(b"dnsaddr") or b"/p2p/" not in value:
            continue
        where, _p2p, named_text = value.rpartition(b"/p2p/")
        try:
            address = parse_multiaddr(where.decode("ascii"))
            named = ID.from_base58(named_text.decode("ascii"))
        except (BadAddress, ValueError):  # not ASCII, not a multiaddr, not a PeerId: skipped
            continue
        if peer is None:
            peer = named
        if named != peer or not _tcp(address) or len(addrs) >= MAX_ADDRS_PER_PEER:
            continue
        addrs.append(address)
    if peer is None or peer == own or not addrs:
        return None
    return PeerInfo(peer, addrs)


def _txt_strings(text: bytes) -> list[bytes]:
    """The strings of a DNS TXT record (each one length byte, then that many bytes)."""
    out: list[bytes] = []
    at = 0
    while at < len(text):
        length = text[at]
        out.append(text[at + 1 : at + 1 + length])
        at += 1 + length
    return out


def _tcp(address: Multiaddr) -> bool:
    names = [protocol.name for protocol in address.protocols()]
    return len(names) >= 2 and names[0] in {"ip4", "ip6"} and names[1] == "tcp"


def _txt_record(addrs: list[str]) -> bytes:
    strings = [f"dnsaddr={a}".encode("ascii") for a in addrs[:MAX_ANNOUNCED]]
    return b"".join(bytes([len(s)]) + s for s in strings if len(s) <= 255)


class _Found(ServiceListener):
    """zeroconf's callbacks (in its thread): hand each service added or updated to the trio loop."""

    def __init__(self, token: trio.lowlevel.TrioToken, found: Callable[[str], None]) -> None:
        self._token = token
        self._found = found

    def _hand_over(self, name: str) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the node stopped meanwhile
            self._token.run_sync_soon(self._found, name)

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        """A service appeared."""
        self._hand_over(name)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        """A service's records changed (its addresses, perhaps)."""
        self._hand_over(name)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        """A service said goodbye: its connections end by themselves."""


class LanDiscovery:
    """mDNS for one host: announce it, find and dial the others, follow network changes. Run ``run``
    in a nursery; the counters say what happened."""

    def __init__(
        self,
        host: IHost,
        dial: Callable[[PeerInfo], Awaitable[None]],
        hang_up: Callable[[ID], Awaitable[None]],
        *,
        service_type: str = SERVICE_TYPE,
    ) -> None:
        """``dial`` connects to a found peer (raising what a failed dial raises); ``hang_up`` closes
        every connection to a peer (best effort)."""
        self._host = host
        self._dial = dial
        self._hang_up = hang_up
        #: The service name each peer announced last (the ``MAX_KNOWN`` most recent peers).
        self._names: OrderedDict[ID, str] = OrderedDict()
        self._service_type = service_type
        self._own = host.get_id()
        self._zeroconf: Zeroconf | None = None
        self._name = ""  # our service's name in the current zeroconf
        self._found_send, self._found_receive = trio.open_memory_channel[str](MAX_PENDING)
        self._dialling: set[ID] = set()
        #: Peers we were connected to when our own network changed, not seen since: found again, they
        #: are redialled as a peer that moved is (our side of the connection may be the dead one).
        self._recheck: set[ID] = set()
        self._dials = trio.CapacityLimiter(MAX_DIALS)
        #: Times zeroconf was (re)started on this machine's interfaces.
        self.starts = 0
        #: Peers found (a service read and naming another peer with a usable address).
        self.found = 0
        #: Dials to found peers that connected, and that failed.
        self.connected = 0
        self.failed = 0
        #: Connected peers that came back under a new name (their network changed) or were found again
        #: after ours changed: hung up on and dialled again.
        self.redialled = 0
        #: Services dropped because ``MAX_PENDING`` were waiting, or unreadable within the timeout.
        self.dropped = 0
        #: Why zeroconf could not start on the current interfaces (None: it runs).
        self.problem: str | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Announce and browse until cancelled, restarting zeroconf on every network change."""
        token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._dial_found, nursery)
            watch = _NetworkWatch()
            with watch:
                fingerprint = network_fingerprint()
                await self._start(token)
                task_status.started()
                try:
                    while True:
                        retry = START_RETRY if self._zeroconf is None else math.inf
                        with trio.move_on_after(retry):  # zeroconf failed to start: try again then
                            await watch.changed()
                        now = network_fingerprint()
                        if now == fingerprint and self._zeroconf is not None:
                            continue
                        fingerprint = now
                        await self._stop()
                        self._recheck = set(list(self._host.get_network().connections)[:MAX_KNOWN])
                        await self._start(token)
                finally:
                    await self._stop()

    async def _start(self, token: trio.lowlevel.TrioToken) -> None:
        """Open zeroconf on the interfaces there are now, announce this node, browse for the others. If
        zeroconf cannot (no interface is up, not even loopback), the node goes on without mDNS until
        the next network change: ``problem`` says why."""
        addrs = [a for a in dialable_addrs(self._host, str(self._own)) if "/p2p-circuit" not in a]
        try:
            zeroconf = await trio.to_thread.run_sync(Zeroconf)
        except (OSError, RuntimeError) as exc:  # RuntimeError: "No interfaces to listen on"
            self.problem = str(exc) or type(exc).__name__
            return
        self._zeroconf = zeroconf
        self.starts += 1
        self.problem = None
        label = secrets.token_hex(16)  # a fresh name each start: no conflict with a stale cache entry
        self._name = f"{label}.{self._service_type}"
        info = ServiceInfo(
            self._service_type,
            self._name,
            port=_port_of(addrs),
            properties=_txt_record(addrs),
            server=f"{label}.local.",
            parsed_addresses=_host_addresses(addrs),
        )
        try:  # zeroconf's sync calls block their thread (registration probes, then announces: ~1 s)
            await trio.to_thread.run_sync(zeroconf.register_service, info)
        except (OSError, ZeroconfError) as exc:
            self.problem = str(exc) or type(exc).__name__
            await self._stop()
            return
        ServiceBrowser(zeroconf, self._service_type, listener=_Found(token, self._queue))

    async def _stop(self) -> None:
        zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is not None:
            with trio.CancelScope(shield=True):  # its goodbyes and threads end within zeroconf's timeouts
                await trio.to_thread.run_sync(zeroconf.close)

    def _queue(self, name: str) -> None:
        if name == self._name:
            return  # our own announcement
        try:
            self._found_send.send_nowait(name)
        except trio.WouldBlock:
            self.dropped += 1

    async def _dial_found(self, nursery: trio.Nursery) -> None:
        async for name in self._found_receive:
            zeroconf = self._zeroconf
            if zeroconf is None:
                continue
            read = functools.partial(_read_service, zeroconf, self._service_type, name)
            # (mypy 2.4 rejects any keyword after trio's ``*args: Unpack[Ts]``; trio 0.35 takes it)
            info = await trio.to_thread.run_sync(read, abandon_on_cancel=True)  # type: ignore[call-arg]
            peer = None if info is None else peer_of_txt(info.text or b"", self._own)
            if info is None:
                self.dropped += 1
            if peer is None:
                continue
            moved = self._remember(peer.peer_id, name) or peer.peer_id in self._recheck
            self._recheck.discard(peer.peer_id)
            connected = _connected(self._host, peer.peer_id)
            if peer.peer_id in self._dialling or (connected and not moved):
                continue
            self.found += 1
            if len(self._dialling) >= MAX_PENDING:  # dials waiting for a slot: at most this many
                self.dropped += 1
                continue
            self._dialling.add(peer.peer_id)
            nursery.start_soon(self._dial_one, peer, connected)

    def _remember(self, peer: ID, name: str) -> bool:
        """Note that ``peer`` announced itself as ``name``; True if it had another name before."""
        previous = self._names.pop(peer, None)
        self._names[peer] = name
        if len(self._names) > MAX_KNOWN:
            self._names.popitem(last=False)
        return previous is not None and previous != name

    async def _dial_one(self, peer: PeerInfo, connected: bool) -> None:
        """Dial ``peer``; if ``connected`` (it moved, or we did) hang up first: a network changed since
        our connection was made, which may be dead (a laptop that was on another LAN: nothing told
        either side), and a new connection makes both sides start again (a mailbox is synced on
        connection)."""
        try:
            async with self._dials:
                if connected:
                    self.redialled += 1
                    await self._hang_up(peer.peer_id)
                _put_first(self._host, peer)
                with trio.fail_after(DIAL_TIMEOUT):
                    await self._dial(peer)
            self.connected += 1
        except _DIAL_FAILED:
            self.failed += 1
        finally:
            self._dialling.discard(peer.peer_id)


def _read_service(zeroconf: Zeroconf, service_type: str, name: str) -> ServiceInfo | None:
    try:
        return zeroconf.get_service_info(service_type, name, timeout=RESOLVE_TIMEOUT)
    except (OSError, RuntimeError):  # zeroconf closed meanwhile (a network change)
        return None


def _put_first(host: IHost, peer: PeerInfo) -> None:
    """Make ``peer``'s announced addresses the first its peerstore entry lists. py-libp2p 0.8.1 dials
    only the first TCP address it knows for a peer (its swarm's "smart address selection" takes one
    address per transport class), so an older one (from an invite, or from the LAN a laptop was on
    before) would be the only one tried. Seen without this: Bob, given the laptop's LAN1 address as
    his mailbox, failed to dial it on LAN2 (``SwarmDialAllFailedError``), as did Alice's redial of the
    laptop back on LAN1; with it both connect."""
    store = host.get_peerstore()
    try:
        known = store.addrs(peer.peer_id)
    except PeerStoreError:
        known = []
    store.clear_addrs(peer.peer_id)
    store.add_addrs(peer.peer_id, [*peer.addrs, *(a for a in known if a not in peer.addrs)], _ADDRESS_TTL)


def _connected(host: IHost, peer: ID) -> bool:
    return bool(host.get_network().connections.get(peer))


def _port_of(addrs: list[str]) -> int:
    for address in addrs:
        parts = address.split("/")
        if len(parts) > 4 and parts[3] == "tcp":
            return int(parts[4])
    return 0


def _host_addresses(addrs: list[str]) -> list[str]:
    """The A records to announce: the IPv4 addresses among ``addrs``, loopback only if there is no
    other (zeroconf reads a service as found only once it has an address; peers dial the TXT's)."""
    ips = sorted({address.split("/")[2] for address in addrs if address.startswith("/ip4/")})
    outside = [ip for ip in ips if not ip.startswith("127.")]
    return outside or ips


class _NetworkWatch:
    """Tells when this machine's links or addresses may have changed: a netlink socket on Linux, else a
    check every ``ADDRESS_POLL`` seconds. Use as a context manager (it closes the socket)."""

    def __init__(self) -> None:
        self._socket: trio.socket.SocketType | None = None

    def __enter__(self) -> _NetworkWatch:
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):  # no netlink here (a sandbox): poll
                raw = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
                try:
                    raw.bind((0, _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV6_IFADDR))
                except OSError:
                    raw.close()
                    raise
                sock = trio.socket.from_stdlib_socket(raw)
                self._socket = sock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._socket is not None:
            self._socket.close()

    async def changed(self) -> None:
        """Return after the next change (and ``SETTLE`` seconds of quiet after it)."""
        if self._socket is None:
            await trio.sleep(ADDRESS_POLL)
            return
        await self._socket.recv(65536)
        while True:
            with trio.move_on_after(SETTLE):
                await self._socket.recv(65536)
                continue
            return
