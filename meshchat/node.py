"""The public trio API: a meshchat peer on the real network.

```python
async with meshchat.Node.open(profile_dir, listen=["/ip4/0.0.0.0/tcp/0"], bootstrap=[...]) as node:
    await node.subscribe("lobby")
    await node.publish("lobby", b"hello")
    async for event in node.events():          # MessageDelivered, PeerJoined, PeerLeft
        ...
```

``Node`` ties the user's identity (the key file in the profile folder), a py-libp2p host whose key is
that identity, and the gossip router with its driver together, and closes all of it on exit. Plain
gossip topics carry whatever bytes the application publishes; sealed direct messages to a contact's
inbox and the store-and-forward outbox come with the issues that follow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeAlias

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.discovery import RelayDiscovery
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from meshchat.contacts import Contact, Contacts
from meshchat.crypto import (
    INBOX_EPOCH_SECONDS,
    INBOX_SHARDS,
    INBOX_TOPIC_PREFIX,
    epoch_of,
    inbox_tag,
    inbox_topic,
    seal,
)
from meshchat.errors import BadAddress, NetworkError, ProfileError
from meshchat.gossip import GossipConfig, GossipRouter, ScoreParams, Validator
from meshchat.gossip.messages import Topic
from meshchat.gossip.signing import MessageSigner
from meshchat.identity import KEY_FILE_NAME, Identity, PublicIdentity, load_identity
from meshchat.inbox import DirectMessage, Inbox, envelope_relay_check
from meshchat.net import (
    EVENT_QUEUE,
    DriverStatistics,
    GossipDriver,
    InboundCounter,
    MessageDelivered,
    NetDrop,
    NetEvent,
    build_host,
    parse_multiaddr,
)
from meshchat.wire import message_id

__all__ = ["DEFAULT_LISTEN", "KEY_FILE", "Node", "NodeEvent"]

#: What ``Node.events()`` yields: gossip messages, sealed messages to this node, peers coming and going.
NodeEvent: TypeAlias = NetEvent | DirectMessage

#: The identity's key file inside a profile folder.
KEY_FILE = KEY_FILE_NAME
#: Where a node listens unless told otherwise: every interface, a port the system picks.
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/0",)
#: Seconds to wait for one bootstrap peer.
BOOTSTRAP_TIMEOUT = 10.0
#: Seconds a DHT lookup of one PeerId may take.
DHT_LOOKUP_TIMEOUT = 15.0
#: Seconds closing a node's connections may take.
CLOSE_TIMEOUT = 5.0


class Node:
    """One meshchat peer: identity, libp2p host, gossip router. Make one with ``Node.open``."""

    def __init__(
        self, identity: Identity, host: IHost, driver: GossipDriver, contacts: Contacts | None
    ) -> None:
        """Use ``Node.open``; this only stores its parts."""
        self.identity = identity
        self._host = host
        self._driver = driver
        self._contacts = contacts
        self._inbox = Inbox(identity, contacts)
        self._inbox_topics: set[str] = set()
        self._events_send, self._events = trio.open_memory_channel[NodeEvent](EVENT_QUEUE)
        #: Events the application did not take in time (its queue was full), counted, not kept.
        self.events_dropped = 0
        self._dht: KadDHT | None = None
        self._relay: _CircuitRelay | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        profile_dir: str | Path | None = None,
        *,
        identity: Identity | None = None,
        passphrase: str | None = None,
        listen: Sequence[str] = DEFAULT_LISTEN,
        bootstrap: Sequence[str] = (),
        mdns: bool = False,
        config: GossipConfig | None = None,
        score_params: ScoreParams | None = None,
        validator: Validator | None = None,
        signed_topics: Sequence[str] = (),
        inbox: bool = True,
        relay_inbox_shards: bool = False,
        dht: bool = True,
        circuit_relay: bool = False,
    ) -> AsyncIterator[Node]:
        """Start a node for the identity in ``profile_dir`` (or ``identity``); stop it on exit.

        ``listen`` and ``bootstrap`` are multiaddrs; bootstrap peers need their ``/p2p/<PeerId>``.
        ``validator`` judges every new message before it is delivered or forwarded (default: accept).
        ``signed_topics`` run StrictSign (messages signed by their author, for topics shared with other
        libp2p applications); meshchat's own topics and all others are StrictNoSign. With ``inbox``
        the node joins its inbox shard topics and delivers sealed messages to it as ``DirectMessage``;
        with ``relay_inbox_shards`` it joins all ``INBOX_SHARDS`` of them to carry everyone's envelopes
        (a relay: gossip only flows through nodes that joined the topic). With ``dht`` the node takes
        part in the libp2p Kademlia DHT (``/ipfs/kad/1.0.0``, server mode), so contacts without a
        usable address in their invite can be found by PeerId (``find_peer``). Every node can reserve
        a slot on a circuit relay v2 (``reserve``) and dial ``…/p2p-circuit/p2p/<PeerId>`` addresses;
        with ``circuit_relay`` this node also relays for others (for peers behind NAT).
        Raises ``KeyFileError`` for a missing or locked identity, ``BadAddress`` for an unusable
        address and ``NetworkError`` if no bootstrap peer could be reached.
        """
        if identity is None:
            if profile_dir is None:
                raise ValueError("give a profile folder or an identity")
            identity = load_identity(Path(profile_dir) / KEY_FILE, passphrase)
        contacts = Contacts(Path(profile_dir)) if profile_dir is not None else None
        listen_addrs = [parse_multiaddr(a) for a in listen]
        bootstrap_infos = [_peer_info(a) for a in bootstrap]
        inbound = InboundCounter()
        host = build_host(identity, mdns=mdns, inbound=inbound)
        config = config or GossipConfig()
        if signed_topics:
            config = dataclasses.replace(
                config, signed_topics=config.signed_topics | frozenset(signed_topics)
            )
        router = GossipRouter(
            config,
            local_peer=identity.public.peer_id,
            rng=random.Random(),
            validator=envelope_relay_check(time.time, validator),
            signer=MessageSigner(identity, first_seqno=time.time_ns()),
            score_params=score_params if score_params is not None else ScoreParams(),
        )
        driver = GossipDriver(host, router)
        driver.count_inbound(inbound)
        node = cls(identity, host, driver, contacts)
        started = False  # past this point an OSError is the caller's, not our failure to listen
        try:
            async with host.run(listen_addrs), contextlib.AsyncExitStack() as services:
                nursery = await node._start(
                    services,
                    dht=dht,
                    circuit_relay=circuit_relay,
                    inbox=inbox,
                    relay_inbox_shards=relay_inbox_shards,
                    bootstrap=bootstrap_infos,
                )
                started = True
                try:
                    yield node
                finally:
                    inbound.closing = True
                    await node._hang_up()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # trio wraps whatever ends a nursery (an error of ours, or of the caller's ``async with``
            # body) in exception groups; one error is raised as itself, as callers expect.
            single = _only_exception(group)
            if single is None:
                raise
            if isinstance(single, OSError) and not started:
                raise NetworkError("listen", single.strerror or str(single)) from single
            raise single from None
        except OSError as exc:
            if started:
                raise
            raise NetworkError("listen", exc.strerror or str(exc)) from exc

    async def _start(
        self,
        services: contextlib.AsyncExitStack,
        *,
        dht: bool,
        circuit_relay: bool,
        inbox: bool,
        relay_inbox_shards: bool,
        bootstrap: list[PeerInfo],
    ) -> trio.Nursery:
        """Start the DHT, circuit relay, driver and event translation inside ``services``; join the
        inbox topics; dial the bootstrap peers. Returns the nursery the node's tasks run in."""
        host, driver = self._host, self._driver
        if dht:
            self._dht = KadDHT(host, DHTMode.SERVER)
            await services.enter_async_context(background_trio_service(self._dht))
        self._relay = await services.enter_async_context(_CircuitRelay.running(host, hop=circuit_relay))
        nursery = await services.enter_async_context(trio.open_nursery())
        await nursery.start(driver.run)
        nursery.start_soon(self._translate_events)
        if inbox:
            await self._join_inbox()
            nursery.start_soon(self._rejoin_inbox_daily)
        if relay_inbox_shards:
            for shard in range(INBOX_SHARDS):
                await driver.join(f"{INBOX_TOPIC_PREFIX}{shard}")
        if bootstrap:
            await self._bootstrap(bootstrap)
        return nursery

    # --- direct messages ---------------------------------------------------------------------------

    @property
    def contacts(self) -> Contacts:
        """The profile's contacts (``ProfileError`` for a node opened without a profile folder)."""
        if self._contacts is None:
            raise ProfileError("this node was opened with an identity, not a profile: it has no contacts")
        return self._contacts

    async def send(self, to: Contact | PublicIdentity | str, body: bytes | str) -> bytes:
        """Seal ``body`` to ``to`` (a contact, a public key, or a contact's name or PeerId) and publish it
        on their inbox shard; return the message id. The recipient must be reachable through the mesh
        now: store-and-forward for offline recipients comes with the next issue."""
        if isinstance(to, str):
            to = self.contacts.find(to)
        if isinstance(to, Contact):
            await self.reach(to)
        recipient = to.public if isinstance(to, Contact) else to
        data = body.encode("utf-8") if isinstance(body, str) else body
        now = time.time()
        envelope = seal(self.identity, recipient, data, wall_now=now)
        await self._driver.publish(inbox_topic(inbox_tag(recipient, epoch_of(now))), envelope)
        return message_id(envelope)

    def inbox_topic(self, wall_now: float | None = None) -> str:
        """The inbox shard topic this node's envelopes travel on today (or at unix time ``wall_now``)."""
        now = time.time() if wall_now is None else wall_now
        return inbox_topic(inbox_tag(self.identity.public, epoch_of(now)))

    async def reach(self, contact: Contact) -> None:
        """Dial ``contact`` at its invite's addresses if not connected (best effort: relays may carry it)."""
        network = self._host.get_network()
        if any(str(peer) == contact.peer_id for peer in network.connections):
            return
        for address in contact.addrs:
            full = address if "/p2p/" in address else f"{address}/p2p/{contact.peer_id}"
            with contextlib.suppress(BadAddress, NetworkError):
                await self.connect(full)
                return
        with contextlib.suppress(NetworkError):
            for address in await self.find_peer(contact.peer_id):
                with contextlib.suppress(BadAddress, NetworkError):
                    await self.connect(address)
                    return

    async def reserve(self, relay_address: str) -> str:
        """Reserve a slot on the circuit relay at ``relay_address``; return the address peers can dial
        this node at through it (``<relay>/p2p-circuit/p2p/<our PeerId>``: put it in the invite).

        Raises ``NetworkError`` if the relay cannot be reached or refuses.
        """
        await self.connect(relay_address)
        assert self._relay is not None
        relay_id = _peer_info(relay_address).peer_id
        try:
            with trio.fail_after(BOOTSTRAP_TIMEOUT):
                await self._relay.discovery.discover_relays()
                reserved = await self._relay.discovery.make_reservation(relay_id)
        except Exception as exc:  # a timeout, or py-libp2p's own errors: all one meaning here
            raise NetworkError(f"reserve on {relay_address}", str(exc) or type(exc).__name__) from exc
        if not reserved:
            raise NetworkError(f"reserve on {relay_address}", "the relay refused or does not relay")
        return f"{relay_address}/p2p-circuit/p2p/{self.peer_id}"

    async def find_peer(self, peer_id: str) -> list[str]:
        """Look ``peer_id`` up in the DHT; its addresses (each ending in ``/p2p/<PeerId>``), or none.

        Raises ``NetworkError`` if the node runs without the DHT or the lookup fails.
        """
        if self._dht is None:
            raise NetworkError(f"find {peer_id}", "this node runs without the DHT")
        try:
            with trio.fail_after(DHT_LOOKUP_TIMEOUT):
                info = await self._dht.find_peer(ID.from_base58(peer_id))
        except Exception as exc:  # a timeout, or py-libp2p's own errors: all one meaning here
            raise NetworkError(f"find {peer_id}", str(exc) or type(exc).__name__) from exc
        if info is None:
            return []
        return [f"{a}/p2p/{peer_id}" if "/p2p/" not in str(a) else str(a) for a in info.addrs]

    async def _join_inbox(self) -> None:
        wanted = self._inbox.topics(time.time())
        for topic in sorted(wanted - self._inbox_topics):
            await self._driver.join(topic)
        for topic in sorted(self._inbox_topics - wanted):
            await self._driver.leave(topic)
        self._inbox_topics = wanted

    async def _rejoin_inbox_daily(self) -> None:
        """Follow the inbox tags as the days turn (a timer: the next epoch starts at a known time)."""
        while True:
            now = time.time()
            await trio.sleep(INBOX_EPOCH_SECONDS - now % INBOX_EPOCH_SECONDS + 1)
            await self._join_inbox()

    async def _translate_events(self) -> None:
        """Turn the driver's events into the node's: inbox envelopes become ``DirectMessage``, or nothing
        if they are someone else's (a relay carries them unread); everything else passes through."""
        async for event in self._driver.events:
            out: NodeEvent | None = event
            if isinstance(event, MessageDelivered) and event.topic.startswith(INBOX_TOPIC_PREFIX):
                out = self._inbox.open(event.data, wall_now=time.time())
            if out is None:
                continue
            try:
                self._events_send.send_nowait(out)
            except trio.WouldBlock:
                self.events_dropped += 1

    @property
    def inbox_rejected(self) -> dict[str, int]:
        """Envelopes addressed to this node that failed to open, by error (forged, altered, expired)."""
        return dict(self._inbox.rejected)

    async def _hang_up(self) -> None:
        """Close every connection before the host stops (py-libp2p 0.8.1 leaks dialled sockets else)."""
        network = self._host.get_network()
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            for peer_id in list(network.connections):
                with contextlib.suppress(Exception):
                    await self._host.disconnect(peer_id)

    async def _bootstrap(self, infos: list[PeerInfo]) -> None:
        reached = 0
        errors: list[str] = []
        for info in infos:
            try:
                await self._dial(info)
                reached += 1
            except Exception as exc:  # refused, unreachable, wrong key: try the next
                errors.append(f"{exc or type(exc).__name__}")
        if not reached:
            raise NetworkError("bootstrap", "no bootstrap peer reached: " + "; ".join(errors))

    # --- who we are ---------------------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's PeerId: the one in the user's invite."""
        return self.identity.public.peer_id

    @property
    def listen_addrs(self) -> list[str]:
        """Addresses peers can dial, each ending in ``/p2p/<PeerId>``."""
        return [str(a) for a in self._host.get_addrs()]

    @property
    def host(self) -> IHost:
        """The py-libp2p host (for discovery and diagnostics)."""
        return self._host

    @property
    def driver(self) -> GossipDriver:
        """The gossip driver (its router, mesh and counters)."""
        return self._driver

    # --- gossip -------------------------------------------------------------------------------------

    async def connect(self, address: str) -> None:
        """Dial a peer at ``address`` (a multiaddr ending in ``/p2p/<PeerId>``, possibly through a
        relay: ``<relay address>/p2p-circuit/p2p/<PeerId>``)."""
        info = _peer_info(address)
        try:
            if "/p2p-circuit/" in address and self._relay is not None:
                with trio.fail_after(BOOTSTRAP_TIMEOUT):
                    await self._relay.transport.dial(parse_multiaddr(address))
            await self._dial(info)
        except Exception as exc:  # py-libp2p raises many types for one meaning
            raise NetworkError(f"dial {address}", str(exc) or type(exc).__name__) from exc

    async def _dial(self, info: PeerInfo) -> None:
        with trio.fail_after(BOOTSTRAP_TIMEOUT):
            await self._host.connect(info)
        # py-libp2p's connect can return without a connection (it logs the failure): check.
        if not self._host.get_network().connections.get(info.peer_id):
            raise NetworkError(f"dial {info.peer_id}", "no connection could be made")
        if self._dht is not None:  # every peer we reach can answer DHT queries for us, and we for it
            with contextlib.suppress(Exception):
                await self._dht.add_peer(info.peer_id)

    async def subscribe(self, topic: Topic) -> None:
        """Join gossip ``topic``: its messages arrive as ``MessageDelivered`` events."""
        await self._driver.join(topic)

    async def unsubscribe(self, topic: Topic) -> None:
        """Leave gossip ``topic``."""
        await self._driver.leave(topic)

    async def publish(self, topic: Topic, data: bytes) -> None:
        """Publish ``data`` on gossip ``topic`` (joined or not)."""
        await self._driver.publish(topic, data)

    def events(self) -> trio.MemoryReceiveChannel[NodeEvent]:
        """Messages and peer changes, in order (``async for event in node.events()``).

        A channel, not a generator: breaking out of the loop leaves nothing to clean up, and the next
        loop goes on where this one stopped. Events the application does not take are queued up to
        ``EVENT_QUEUE``; beyond that they are counted in ``events_dropped``.
        """
        return self._events

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, re-checked whenever the node's state changes."""
        await self._driver.wait_for(condition)

    def statistics(self) -> DriverStatistics:
        """Counters of the network driver and the router, drops by reason. Events the application did
        not take count as ``EVENT_QUEUE_FULL`` whichever of the two queues (driver's, node's) was full."""
        stats = self._driver.statistics()
        if not self.events_dropped:
            return stats
        drops = dict(stats.drops)
        drops[NetDrop.EVENT_QUEUE_FULL] += self.events_dropped
        return dataclasses.replace(stats, drops=drops)


class _CircuitRelay:
    """py-libp2p's circuit relay v2 on one host: the protocol (hop if asked), the transport to dial
    ``/p2p-circuit`` addresses, and relay discovery to make reservations."""

    def __init__(self, protocol: CircuitV2Protocol, transport: CircuitV2Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self.discovery = transport.discovery

    @classmethod
    @asynccontextmanager
    async def running(cls, host: IHost, *, hop: bool) -> AsyncIterator[_CircuitRelay]:
        protocol = CircuitV2Protocol(host, allow_hop=hop)
        roles = RelayRole.STOP | RelayRole.CLIENT | (RelayRole.HOP if hop else RelayRole(0))
        async with background_trio_service(protocol):
            transport = CircuitV2Transport(host, protocol, RelayConfig(roles=roles))
            transport.discovery = RelayDiscovery(host, auto_reserve=False)
            async with background_trio_service(transport.discovery):
                yield cls(protocol, transport)


def _only_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` and any groups nested in it, or None if there are several."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error


def _peer_info(address: str) -> PeerInfo:
    parsed = parse_multiaddr(address)
    try:
        return info_from_p2p_addr(parsed)
    except Exception as exc:  # no /p2p part, or a bad PeerId
        raise BadAddress(address, "a peer address must end in /p2p/<PeerId>") from exc
