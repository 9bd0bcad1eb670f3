"""The parts of ``meshchat.Node`` that face the network layer directly: reaching peers, its own
addresses, plain gossip topics, mailboxes and inbox topics, and the relays' check of status topics.

A mixin, so that ``meshchat.node`` stays a thin facade (DESIGN.md): ``Node`` inherits these methods and
holds the attributes declared below (its constructor sets them).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable
from pathlib import Path

import nacl.utils
import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import PeerInfo

from meshchat.contacts import Contact
from meshchat.credentials.status import STATUS_TOPIC_PREFIX, check_status_message
from meshchat.crypto import INBOX_EPOCH_SECONDS, inbox_topic_at
from meshchat.errors import TransportUnavailable
from meshchat.gossip import ValidationResult, Validator
from meshchat.gossip.messages import Topic
from meshchat.identity import Identity
from meshchat.net import DriverStatistics, GossipDriver, NetDrop
from meshchat.net.cover_driver import run_cover
from meshchat.net.dialer import Dialer
from meshchat.net.host import dialable_addrs
from meshchat.net.keeper_driver import DEFAULT_KEEPER, KeeperDriver, KeeperOptions
from meshchat.net.mailbox import MailboxServer
from meshchat.net.reach_driver import ReachDriver, ReachOptions
from meshchat.net.store_driver import StoreDriver
from meshchat.net.transports import transport_failures
from meshchat.profile import write_addresses
from meshchat.reach import AddressesChanged, NodeAddress, ReachStatistics, classify, invite_addresses
from meshchat.store.cover import CoverConfig, CoverStatistics, CoverTraffic
from meshchat.store.mailbox import MailboxCore, MailboxStatistics
from meshchat.store.messenger import Messenger, MessengerStatistics

__all__ = ["NodeNetwork", "status_relay_check"]


class NodeNetwork:
    """``Node``'s network-facing methods (see the module docstring)."""

    identity: Identity
    events_dropped: int
    _host: IHost
    _driver: GossipDriver
    _dialer: Dialer
    _store: StoreDriver
    _messenger: Messenger
    _mailbox: MailboxCore | None
    _mailbox_server: MailboxServer | None
    _profile: Path | None
    _reserved: list[str]
    _inbox_topics: set[str]
    _wall_clock: Callable[[], float]
    _cover: CoverTraffic | None = None
    _keeper: KeeperDriver | None = None
    _reachability: ReachDriver | None = None  # AutoNAT and automatic relays
    _emit: Callable[[AddressesChanged], None]

    def sync_mailboxes(self) -> None:
        """Sync with every reachable mailbox now, rather than at the next interval."""
        self._store.perform(self._messenger.sync_now(wall_now=self._wall_clock()))

    @property
    def mailboxes(self) -> list[str]:
        """PeerIds of the mailboxes this node stores messages on and syncs from."""
        return self._messenger.mailboxes

    @property
    def unreachable_mailboxes(self) -> dict[str, str]:
        """Configured mailboxes that could not be dialled (at start or since), with the reason."""
        return self._dialer.unreachable_mailboxes

    def store_statistics(self) -> MessengerStatistics:
        """Counters of the outbox, inbox and mailbox syncs: received, receipts, discards by reason."""
        return self._messenger.statistics()

    def mailbox_statistics(self) -> MailboxStatistics | None:
        """What this node holds for others as a mailbox (None if it is not one). ``refused`` also
        counts streams refused before a request could be read (undecodable, broken)."""
        if self._mailbox is None:
            return None
        server = self._mailbox_server
        return self._mailbox.statistics() if server is None else server.statistics()

    @property
    def inbox_rejected(self) -> dict[str, int]:
        """Envelopes addressed to this node that failed to open, by error (forged, altered, expired)."""
        return self._messenger.statistics().rejected

    def inbox_topic(self, wall_now: float | None = None) -> str:
        """The inbox shard topic this node's envelopes travel on today (or at unix time ``wall_now``)."""
        now = self._wall_clock() if wall_now is None else wall_now
        return inbox_topic_at(self.identity.public, now)

    async def _join_inbox(self) -> None:
        wanted = self._messenger.topics(self._wall_clock())
        for topic in sorted(wanted - self._inbox_topics):
            await self._driver.join(topic)
        for topic in sorted(self._inbox_topics - wanted):
            await self._driver.leave(topic)
        self._inbox_topics = wanted

    async def _rejoin_inbox_daily(self) -> None:
        """Follow the inbox tags as the days turn (a timer: the next epoch starts at a known time)."""
        while True:
            now = self._wall_clock()
            await trio.sleep(INBOX_EPOCH_SECONDS - now % INBOX_EPOCH_SECONDS + 1)
            await self._join_inbox()

    def cover_statistics(self) -> CoverStatistics | None:
        """Dummy envelopes published as cover traffic (None: the node runs without, ``cover_interval``)."""
        return None if self._cover is None else self._cover.statistics()

    def _start_cover(self, nursery: trio.Nursery, interval: float | None) -> None:
        """With ``interval``, publish dummy envelopes at that mean rate (``meshchat.store.cover``)."""
        if interval is None:
            return
        config = CoverConfig(interval=interval, ttl=self._messenger.config.ttl)
        self._cover = CoverTraffic(
            config, now=trio.current_time(), rng=random.Random(), random_bytes=nacl.utils.random
        )
        nursery.start_soon(
            functools.partial(run_cover, self._cover, self._driver, wall_clock=self._wall_clock)
        )

    def _start_keeper(
        self, nursery: trio.Nursery, options: KeeperOptions | None, bootstrap: list[PeerInfo]
    ) -> None:
        """With ``options``, redial below a floor and close stalled gossip connections
        (``meshchat.net.keeper_driver``; counted in ``statistics().keeper``). With the default options
        the redial part runs only on a node given bootstrap peers (a member of a network)."""
        if options is None:
            return
        if options is DEFAULT_KEEPER and not bootstrap:
            # a node wired by hand (no bootstrap list: tests, a LAN pair) keeps the links it was given
            options = dataclasses.replace(options, keeper=None)
        if options.keeper is None and options.keepalive is None:
            return
        self._keeper = KeeperDriver(
            self._host, self._driver, self._dialer, options, bootstrap=bootstrap, rng=random.Random()
        )
        nursery.start_soon(self._keeper.run)

    # --- reaching peers -----------------------------------------------------------------------------

    async def connect(self, address: str) -> None:
        """Dial a peer at ``address`` (a multiaddr ending in ``/p2p/<PeerId>``, possibly through a
        relay: ``<relay address>/p2p-circuit/p2p/<PeerId>``). ``NetworkError`` if that fails."""
        await self._dialer.connect(address)

    async def reach(self, contact: Contact) -> None:
        """Dial ``contact``'s mailboxes and ``contact`` itself at its invite's addresses, or by the DHT,
        where not connected (best effort: relays and mailboxes may carry it)."""
        await self._dialer.reach(contact.whereabouts())

    async def reserve(self, relay_address: str) -> str:
        """Reserve a slot on the circuit relay at ``relay_address``; return the address peers can dial
        this node at through it (``<relay>/p2p-circuit/p2p/<our PeerId>``: put it in the invite; it
        is also added to ``addresses.json``).

        Raises ``NetworkError`` if the relay cannot be reached or refuses.
        """
        if self._reachability is not None:  # renewed, probed and replaced from now on (``reach``)
            await self._dialer.connect(relay_address)
            return await self._reachability.reserve_pinned(relay_address)
        relayed = await self._dialer.reserve(relay_address, self.peer_id)
        if relayed not in self._reserved:
            self._reserved.append(relayed)
            self._write_addresses()
            self._emit(AddressesChanged(addresses=tuple(self.addresses())))
        return relayed

    async def find_peer(self, peer_id: str) -> list[str]:
        """Look ``peer_id`` up in the DHT; its addresses (each ending in ``/p2p/<PeerId>``), or none.

        Raises ``NetworkError`` if the node runs without the DHT or the lookup fails.
        """
        return await self._dialer.find_peer(peer_id)

    # --- who we are ---------------------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's PeerId: the one in the user's invite."""
        return self.identity.public.peer_id

    @property
    def listen_addrs(self) -> list[str]:
        """Addresses peers can dial, each ending in ``/p2p/<PeerId>``."""
        return [str(a) for a in self._host.get_addrs()]

    # --- transports that could not start ------------------------------------------

    @property
    def transport_failures(self) -> list[TransportUnavailable]:
        """Listen addresses skipped because their transport could not start, each naming what is
        missing (``meshchat.net.transports``); the node listens on the others."""
        return transport_failures(self._host)

    @property
    def dialable_addrs(self) -> list[str]:
        """Where other peers can dial this node: the listen addresses with a wildcard (``0.0.0.0``)
        expanded to this machine's interfaces (loopback last), then the circuit relay addresses it
        reserved."""
        return dialable_addrs(self._host, self.peer_id) + self._reserved

    def _write_addresses(self) -> None:
        """Record ``invite_addrs`` in the profile's ``addresses.json`` (atomically), for invites."""
        if self._profile is not None:
            write_addresses(self._profile, self.invite_addrs, written_at=self._wall_clock())

    # --- reachability ----------------------------------------------------

    def addresses(self) -> list[NodeAddress]:
        """Our addresses and their kinds: ``public`` (an AutoNAT server dialled us back there),
        ``relayed`` (through a circuit relay holding a reservation for us), ``private`` (LAN,
        loopback, or not confirmed). Public first, then relayed, then private. Without ``reach``
        nothing is confirmed: listen addresses are private, reserved ones relayed."""
        if self._reachability is not None:
            return list(self._reachability.addresses())
        return list(classify(dialable_addrs(self._host, self.peer_id), self._reserved, ()))

    @property
    def invite_addrs(self) -> list[str]:
        """The addresses an invite made now should carry: the public and relayed ones, or, with none
        of those, the private ones (``meshchat.reach.invite_addresses``). Without ``reach``:
        ``dialable_addrs``."""
        if self._reachability is None:
            return self.dialable_addrs
        return invite_addresses(self.addresses())

    def reach_statistics(self) -> ReachStatistics | None:
        """AutoNAT verdicts, relays held, renewed, given up (by reason) and replaced (None without
        ``reach``)."""
        return None if self._reachability is None else self._reachability.statistics()

    async def wait_reach(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, re-checked after every step of the reachability core
        (without ``reach`` nothing changes: it must hold already)."""
        if self._reachability is None:
            assert condition(), "the node runs without reach: nothing would change"
            return
        await self._reachability.wait_until(condition)

    async def _start_reach(self, nursery: trio.Nursery, options: ReachOptions | None) -> None:
        """With ``options``, run AutoNAT and automatic relays (``meshchat.net.reach_driver``)."""
        if options is None:
            return
        assert self._dialer.relay is not None, "the circuit relay starts before reachability"
        self._reachability = ReachDriver(
            self._host,
            self._dialer.relay,
            options,
            wall_clock=self._wall_clock,
            on_change=self._addresses_changed,
        )
        await nursery.start(self._reachability.run)

    def _addresses_changed(self, event: AddressesChanged) -> None:
        self._write_addresses()
        self._emit(event)

    @property
    def host(self) -> IHost:
        """The py-libp2p host (for discovery and diagnostics)."""
        return self._host

    @property
    def driver(self) -> GossipDriver:
        """The gossip driver (its router, mesh and counters)."""
        return self._driver

    # --- gossip -------------------------------------------------------------------------------------

    async def subscribe(self, topic: Topic) -> None:
        """Join gossip ``topic``: its messages arrive as ``MessageDelivered`` events."""
        await self._driver.join(topic)

    async def unsubscribe(self, topic: Topic) -> None:
        """Leave gossip ``topic``."""
        await self._driver.leave(topic)

    async def publish(self, topic: Topic, data: bytes) -> None:
        """Publish ``data`` on gossip ``topic`` (joined or not)."""
        await self._driver.publish(topic, data)

    def statistics(self) -> DriverStatistics:
        """Counters of the network driver and the router, drops by reason. Events the application did
        not take count as ``EVENT_QUEUE_FULL`` whichever of the two queues (driver's, node's) was full."""
        stats = self._driver.statistics()
        if self._keeper is not None:
            stats = dataclasses.replace(stats, keeper=self._keeper.statistics())
        if not self.events_dropped:
            return stats
        drops = dict(stats.drops)
        drops[NetDrop.EVENT_QUEUE_FULL] += self.events_dropped
        return dataclasses.replace(stats, drops=drops)


def status_relay_check(inner: Validator | None) -> Validator:
    """Relays pass on a status topic's message only if it is a status list token its topic's issuer
    signed (``check_status_message``); other topics go to ``inner`` (or pass)."""

    def check(topic: str, data: bytes, mid: bytes) -> ValidationResult:
        if topic.startswith(STATUS_TOPIC_PREFIX):
            return ValidationResult.ACCEPT if check_status_message(topic, data) else ValidationResult.REJECT
        return inner(topic, data, mid) if inner is not None else ValidationResult.ACCEPT

    return check
