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
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeAlias, assert_never

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from meshchat.contacts import Contact, Contacts
from meshchat.crypto import (
    INBOX_EPOCH_SECONDS,
    INBOX_SHARDS,
    INBOX_TOPIC_PREFIX,
    epoch_of,
    inbox_tag,
    inbox_topic,
)
from meshchat.errors import BadAddress, DecodeError, NetworkError, ProfileError
from meshchat.gossip import GossipConfig, GossipRouter, ScoreParams, Validator
from meshchat.gossip.messages import Topic
from meshchat.gossip.signing import MessageSigner
from meshchat.identity import KEY_FILE_NAME, Identity, PublicIdentity, load_identity
from meshchat.inbox import DirectMessage, envelope_relay_check
from meshchat.net import (
    EVENT_QUEUE,
    DriverStatistics,
    GossipDriver,
    InboundCounter,
    MessageDelivered,
    NetDrop,
    NetEvent,
    PeerJoined,
    PeerLeft,
    build_host,
    parse_multiaddr,
)
from meshchat.net.mailbox import MailboxServer, call_mailbox, supports_mailbox
from meshchat.net.relay import CircuitRelay
from meshchat.store.mailbox import MailboxCore, MailboxLimits, MailboxStatistics
from meshchat.store.messenger import (
    Action,
    CallMailbox,
    MessageReceived,
    Messenger,
    MessengerStatistics,
    PublishEnvelope,
    StatusChanged,
    StoreConfig,
    StoreProblem,
)
from meshchat.store.protocol import MailboxRequest
from meshchat.store.sqlite import STORE_FILE, SqliteStorage
from meshchat.store.storage import InboxRecord, MemoryStorage, OutboxRecord, OutboxStatus, Storage

__all__ = ["DEFAULT_LISTEN", "KEY_FILE", "STORE_FILE", "MessageHandle", "Node", "NodeEvent"]

#: What ``Node.events()`` yields: gossip messages, sealed messages to this node, peers coming and going,
#: sent messages moving on (``StatusChanged``), and local storage failing (``StoreProblem``).
NodeEvent: TypeAlias = NetEvent | DirectMessage | StatusChanged | StoreProblem


#: The identity's key file inside a profile folder.
KEY_FILE = KEY_FILE_NAME
#: Where a node listens unless told otherwise: every interface, a port the system picks.
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/0",)
#: Seconds to wait for one bootstrap peer.
BOOTSTRAP_TIMEOUT = 10.0
#: Seconds a DHT lookup of one PeerId may take.
DHT_LOOKUP_TIMEOUT = 15.0
#: Seconds a published message may wait to be written to a peer's stream before it counts as not
#: relayed (the outbox retries it).
PUBLISH_FLUSH_TIMEOUT = 10.0
#: Seconds to wait for a contact just dialled to subscribe to its inbox shard before publishing.
SUBSCRIPTION_WAIT = 5.0
#: Seconds between attempts to reconnect to a configured mailbox that is down.
MAILBOX_REDIAL = 5.0
#: Seconds closing a node's connections may take.
CLOSE_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Options:
    """``Node.open``'s settings, passed on to ``Node._run`` as one record."""

    mdns: bool
    config: GossipConfig | None
    score_params: ScoreParams | None
    validator: Validator | None
    signed_topics: tuple[str, ...]
    inbox: bool
    relay_inbox_shards: bool
    dht: bool
    circuit_relay: bool
    mailbox: bool
    mailbox_limits: MailboxLimits | None
    store_config: StoreConfig | None


class MessageHandle:
    """A sent message: its id and, whenever asked, where it is (``status``)."""

    def __init__(self, node: Node, record: OutboxRecord) -> None:
        """Made by ``Node.send``."""
        self._node = node
        #: The envelope's id (BLAKE2b-256), as ``meshchat status`` and receipts name it.
        self.message_id = record.message_id
        #: Its place in the conversation with the recipient.
        self.seq = record.seq

    @property
    def record(self) -> OutboxRecord:
        """The outbox record as it is now."""
        record = self._node._messenger.status(self.message_id)
        assert record is not None, "outbox records are never deleted"
        return record

    @property
    def status(self) -> OutboxStatus:
        """Where the message is: queued, relayed, stored, delivered, read, expired or failed."""
        return self.record.status

    @property
    def error(self) -> str:
        """The last problem reported for it ("" if none)."""
        return self.record.error

    async def wait_until(self, *statuses: OutboxStatus) -> OutboxStatus:
        """Return the status once it is one of ``statuses`` (or a later one, or a terminal one)."""
        order = list(OutboxStatus)
        first = min(order.index(s) for s in statuses)
        final = {OutboxStatus.EXPIRED, OutboxStatus.FAILED}
        await self._node.wait_for(lambda: order.index(self.status) >= first or self.status in final)
        return self.status

    def __repr__(self) -> str:
        return f"<MessageHandle {self.message_id.hex()[:16]} {self.status.value}>"


class Node:
    """One meshchat peer: identity, libp2p host, gossip router, store-and-forward. Use ``Node.open``."""

    def __init__(
        self,
        identity: Identity,
        host: IHost,
        *,
        driver: GossipDriver,
        contacts: Contacts | None,
        messenger: Messenger,
        mailbox: MailboxCore | None,
    ) -> None:
        """Use ``Node.open``; this only stores its parts."""
        self.identity = identity
        self._host = host
        self._driver = driver
        self._contacts = contacts
        self._messenger = messenger
        self._mailbox = mailbox
        self._mailbox_server: MailboxServer | None = None
        #: Configured mailboxes that could not be dialled at start, with the reason.
        self.unreachable_mailboxes: dict[str, str] = {}
        self._nursery: trio.Nursery | None = None
        self._timer_kick = trio.Event()
        self._inbox_topics: set[str] = set()
        self._events_send, self._events = trio.open_memory_channel[NodeEvent](EVENT_QUEUE)
        #: Events the application did not take in time (its queue was full), counted, not kept.
        self.events_dropped = 0
        self._dht: KadDHT | None = None
        self._relay: CircuitRelay | None = None

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
        mailbox: bool = False,
        mailbox_limits: MailboxLimits | None = None,
        mailboxes: Sequence[str] = (),
        store_config: StoreConfig | None = None,
        storage: Storage | None = None,
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

        Store-and-forward: the outbox, inbox and seen window live in ``profile_dir/store.db`` (sqlite;
        in memory for a node opened with an identity only, unless ``storage`` is given). Sent messages
        are retried until their recipient's receipt comes back (``store_config``); each is stored on
        up to ``store_config.mailbox_copies`` mailboxes: the peers at ``mailboxes`` (dialled at start)
        and any connected peer that serves ``/meshchat/mailbox/1.0.0``. With ``mailbox`` this node is
        one: it keeps envelopes for others within ``mailbox_limits``.
        Raises ``KeyFileError`` for a missing or locked identity, ``BadAddress`` for an unusable
        address and ``NetworkError`` if no bootstrap peer could be reached.
        """
        if identity is None:
            if profile_dir is None:
                raise ValueError("give a profile folder or an identity")
            identity = load_identity(Path(profile_dir) / KEY_FILE, passphrase)
        contacts = Contacts(Path(profile_dir)) if profile_dir is not None else None
        mailbox_addrs = [_peer_info(a) for a in mailboxes]
        listen_addrs = [parse_multiaddr(a) for a in listen]
        bootstrap_infos = [_peer_info(a) for a in bootstrap]
        opened: SqliteStorage | None = None  # the store this node opened, closed when it stops
        if storage is None:
            if profile_dir is None:
                storage = MemoryStorage()
            else:
                storage = opened = SqliteStorage(Path(profile_dir) / STORE_FILE)
        with contextlib.closing(opened) if opened is not None else contextlib.nullcontext():
            async with cls._run(
                identity,
                contacts,
                storage,
                listen_addrs,
                bootstrap_infos,
                mailbox_addrs,
                options=_Options(
                    mdns=mdns,
                    config=config,
                    score_params=score_params,
                    validator=validator,
                    signed_topics=tuple(signed_topics),
                    inbox=inbox,
                    relay_inbox_shards=relay_inbox_shards,
                    dht=dht,
                    circuit_relay=circuit_relay,
                    mailbox=mailbox,
                    mailbox_limits=mailbox_limits,
                    store_config=store_config,
                ),
            ) as node:
                yield node

    @classmethod
    @asynccontextmanager
    async def _run(  # noqa: PLR0917 (the parts Node.open checked and opened, in order)
        cls,
        identity: Identity,
        contacts: Contacts | None,
        storage: Storage,
        listen_addrs: list[Multiaddr],
        bootstrap_infos: list[PeerInfo],
        mailbox_addrs: list[PeerInfo],
        *,
        options: _Options,
    ) -> AsyncIterator[Node]:
        """Build the host, router, driver and store cores; run them until the caller is done."""
        mdns, config, score_params = options.mdns, options.config, options.score_params
        validator, signed_topics = options.validator, options.signed_topics
        store_config, mailbox, mailbox_limits = options.store_config, options.mailbox, options.mailbox_limits
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
        messenger = Messenger(
            identity, storage, config=store_config, rng=random.Random(), wall_now=time.time()
        )
        core = MailboxCore(storage, mailbox_limits) if mailbox else None
        node = cls(identity, host, driver=driver, contacts=contacts, messenger=messenger, mailbox=core)
        started = False  # past this point an OSError is the caller's, not our failure to listen
        try:
            async with host.run(listen_addrs), contextlib.AsyncExitStack() as services:
                nursery = await node._start(
                    services,
                    dht=options.dht,
                    circuit_relay=options.circuit_relay,
                    inbox=options.inbox,
                    relay_inbox_shards=options.relay_inbox_shards,
                    bootstrap=bootstrap_infos,
                    mailboxes=mailbox_addrs,
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
        mailboxes: list[PeerInfo],
    ) -> trio.Nursery:
        """Start the DHT, circuit relay, driver and event translation inside ``services``; join the
        inbox topics; dial the bootstrap peers. Returns the nursery the node's tasks run in."""
        for contact in self._contacts or ():  # receipts and messages for them go to their mailboxes
            self._prefer_mailboxes_of(contact)
        host, driver = self._host, self._driver
        if dht:
            self._dht = KadDHT(host, DHTMode.SERVER)
            await services.enter_async_context(background_trio_service(self._dht))
        self._relay = await services.enter_async_context(CircuitRelay.running(host, hop=circuit_relay))
        if self._mailbox is not None:
            self._mailbox_server = MailboxServer(host, self._mailbox)
        nursery = await services.enter_async_context(trio.open_nursery())
        self._nursery = nursery
        await nursery.start(driver.run)
        nursery.start_soon(self._translate_events)
        nursery.start_soon(self._run_store_timers)
        if inbox:
            await self._join_inbox()
            nursery.start_soon(self._rejoin_inbox_daily)
        if relay_inbox_shards:
            for shard in range(INBOX_SHARDS):
                await driver.join(f"{INBOX_TOPIC_PREFIX}{shard}")
        if bootstrap:
            await self._bootstrap(bootstrap)
        if mailboxes:
            await self._dial_mailboxes(mailboxes)
            nursery.start_soon(self._keep_mailboxes_connected, mailboxes)
        return nursery

    # --- direct messages ---------------------------------------------------------------------------

    @property
    def contacts(self) -> Contacts:
        """The profile's contacts (``ProfileError`` for a node opened without a profile folder)."""
        if self._contacts is None:
            raise ProfileError("this node was opened with an identity, not a profile: it has no contacts")
        return self._contacts

    async def send(
        self,
        to: Contact | PublicIdentity | str,
        body: bytes | str,
        *,
        ref: str = "",
        ttl: int | None = None,
    ) -> MessageHandle:
        """Send ``body`` to ``to`` (a contact, a public key, or a contact's name or PeerId).

        The message is sealed and written to the outbox before anything else happens (``StorageError``
        if that fails: then it was not queued), then published on the recipient's inbox shard and
        stored on mailboxes, and retried until the recipient's receipt comes back or it expires
        (``ttl`` seconds, default a week). ``ref`` is an idempotency key: sending again with a ref
        already in the outbox returns that message instead of sending a second one. Returns a handle
        whose ``status`` says where the message is. It does not wait for the network: a contact not
        connected yet is dialled (at its invite's addresses and mailboxes) in the background, and the
        message published again once that worked.
        """
        if isinstance(to, str):
            to = self.contacts.find(to)
        recipient = to.public if isinstance(to, Contact) else to
        if isinstance(to, Contact):
            self._prefer_mailboxes_of(to)
        data = body.encode("utf-8") if isinstance(body, str) else body
        record, actions = self._messenger.send(recipient, data, wall_now=time.time(), ref=ref, ttl=ttl)
        self._perform(actions)
        if actions and isinstance(to, Contact) and not self._connected_to(to.peer_id):
            assert self._nursery is not None
            self._nursery.start_soon(self._reach_and_publish, to, record.message_id)
        return MessageHandle(self, record)

    def _connected_to(self, peer_id: str) -> bool:
        return bool(self._host.get_network().connections.get(ID.from_base58(peer_id)))

    def _prefer_mailboxes_of(self, contact: Contact) -> None:
        peers = []
        for address in contact.mailboxes:
            with contextlib.suppress(BadAddress):  # an unusable one in an invite is skipped, not fatal
                peers.append(str(_peer_info(address).peer_id))
        self._messenger.prefer_mailboxes(contact.public, peers)

    async def _reach_and_publish(self, contact: Contact, mid: bytes) -> None:
        """Dial ``contact`` (and its mailboxes); once it hears us on its inbox shard, publish again."""
        await self.reach(contact)
        if not self._connected_to(contact.peer_id):
            return  # the outbox retries it, and its mailboxes keep it
        topic = inbox_topic(inbox_tag(contact.public, epoch_of(time.time())))
        router = self._driver.router
        with trio.move_on_after(SUBSCRIPTION_WAIT):  # its subscription comes a round trip later
            await self.wait_for(lambda: contact.peer_id in router.topic_peers(topic))
        self._perform(self._messenger.retry_now(mid, wall_now=time.time()))

    def outbox(self, limit: int = 100) -> list[OutboxRecord]:
        """The ``limit`` most recently sent messages, newest first, with their status."""
        return self._messenger.storage.outbox_recent(limit)

    def inbox(self, *, after: int = 0, limit: int = 100) -> list[InboxRecord]:
        """Received messages numbered after ``after``, in arrival order (an app resumes from the last
        number it handled: ``DirectMessage.number``)."""
        return self._messenger.storage.inbox_after(after, limit)

    def mark_read(self, message: DirectMessage) -> None:
        """Send ``message``'s sender a signed read receipt."""
        self._perform(self._messenger.mark_read(message.sender, [message.message_id], wall_now=time.time()))

    def sync_mailboxes(self) -> None:
        """Sync with every reachable mailbox now, rather than at the next interval."""
        self._perform(self._messenger.sync_now(wall_now=time.time()))

    @property
    def mailboxes(self) -> list[str]:
        """PeerIds of the mailboxes this node stores messages on and syncs from."""
        return self._messenger.mailboxes

    def store_statistics(self) -> MessengerStatistics:
        """Counters of the outbox, inbox and mailbox syncs: received, receipts, discards by reason."""
        return self._messenger.statistics()

    def mailbox_statistics(self) -> MailboxStatistics | None:
        """What this node holds for others as a mailbox (None if it is not one). ``refused`` also
        counts streams refused before a request could be read (undecodable, broken)."""
        if self._mailbox is None:
            return None
        stats = self._mailbox.statistics()
        server = self._mailbox_server
        if server is None or not server.refused:
            return stats
        refused = dict(stats.refused)
        for reason, count in server.refused.items():
            refused[reason] = refused.get(reason, 0) + count
        return dataclasses.replace(stats, refused=refused)

    # --- store-and-forward: performing the messenger's actions -------------------------------------

    def _perform(self, actions: list[Action]) -> None:
        """Carry out the messenger's actions (publishes and mailbox calls run as tasks)."""
        nursery = self._nursery
        for action in actions:
            match action:
                case PublishEnvelope():
                    assert nursery is not None
                    nursery.start_soon(self._publish_envelope, action)
                case CallMailbox(peer=peer, request=request):
                    assert nursery is not None
                    nursery.start_soon(self._call_mailbox, peer, request)
                case MessageReceived(message=message, sender=sender):
                    contact = self._contacts.by_key(sender) if self._contacts is not None else None
                    self._emit(
                        DirectMessage(
                            sender=sender,
                            contact=contact,
                            body=message.body,
                            sent_at_ms=message.sent_at_ms,
                            message_id=message.message_id,
                            seq=message.seq,
                            number=message.number,
                        )
                    )
                case StatusChanged() | StoreProblem():
                    self._emit(action)
                case _:
                    assert_never(action)
        self._timer_kick.set()
        self._driver.notify_changed()

    def _emit(self, event: NodeEvent) -> None:
        try:
            self._events_send.send_nowait(event)
        except trio.WouldBlock:
            self.events_dropped += 1

    async def _publish_envelope(self, action: PublishEnvelope) -> None:
        if action.message_id is None:  # a receipt: nobody needs to hear back
            await self._driver.publish(action.topic, action.envelope)
            return
        peers = 0
        with trio.move_on_after(PUBLISH_FLUSH_TIMEOUT):
            peers = await self._driver.publish_and_flush(action.topic, action.envelope, again=action.again)
        self._perform(self._messenger.published(action.message_id, peers=peers, wall_now=time.time()))

    async def _call_mailbox(self, peer: str, request: MailboxRequest) -> None:
        try:
            response = await call_mailbox(self._host, peer, request)
        except (NetworkError, DecodeError) as exc:
            self._perform(self._messenger.mailbox_failed(peer, request, str(exc), wall_now=time.time()))
            return
        self._perform(self._messenger.mailbox_replied(peer, request, response, wall_now=time.time()))

    async def _run_store_timers(self) -> None:
        """Call the messenger's timer at its deadline (wall time), re-reading it after every change."""
        while True:
            deadline = self._messenger.next_deadline()
            delay = math.inf if deadline is None else max(0.0, deadline - time.time())
            self._timer_kick = trio.Event()
            with trio.move_on_after(delay):
                await self._timer_kick.wait()
                continue
            self._perform(self._messenger.on_timer(wall_now=time.time()))

    async def _dial_mailboxes(self, infos: list[PeerInfo]) -> None:
        """Dial each configured mailbox we are not connected to (a failure is noted, not raised)."""
        connected = self._host.get_network().connections
        for info in infos:
            if connected.get(info.peer_id):
                continue
            try:
                await self._dial(info)
                self.unreachable_mailboxes.pop(str(info.peer_id), None)
            except Exception as exc:  # down now: the next round tries again
                self.unreachable_mailboxes[str(info.peer_id)] = str(exc) or type(exc).__name__

    async def _keep_mailboxes_connected(self, infos: list[PeerInfo]) -> None:
        """Redial configured mailboxes that went away, every ``MAILBOX_REDIAL`` seconds (a backoff:
        there is nothing to wait on for a peer that is down)."""
        while True:
            await trio.sleep(MAILBOX_REDIAL)
            await self._dial_mailboxes(infos)

    async def _probe_mailbox(self, peer: str) -> None:
        """A peer joined: if it serves the mailbox protocol, store on it and sync from it."""
        if peer in self._messenger.mailboxes or not await supports_mailbox(self._host, peer):
            return
        if peer in self._messenger.mailboxes or not self._host.get_network().connections.get(
            ID.from_base58(peer)
        ):
            return  # found meanwhile by another probe, or gone while we asked
        mailboxes = [*self._messenger.mailboxes, peer]
        self._perform(self._messenger.mailboxes_changed(mailboxes, wall_now=time.time()))

    def _mailbox_left(self, peer: str) -> None:
        if peer in self._messenger.mailboxes:
            mailboxes = [p for p in self._messenger.mailboxes if p != peer]
            self._perform(self._messenger.mailboxes_changed(mailboxes, wall_now=time.time()))

    def inbox_topic(self, wall_now: float | None = None) -> str:
        """The inbox shard topic this node's envelopes travel on today (or at unix time ``wall_now``)."""
        now = time.time() if wall_now is None else wall_now
        return inbox_topic(inbox_tag(self.identity.public, epoch_of(now)))

    async def reach(self, contact: Contact) -> None:
        """Dial ``contact``'s mailboxes and ``contact`` itself at its invite's addresses, or by the DHT,
        where not connected (best effort: relays and mailboxes may carry it)."""
        for address in contact.mailboxes:
            with contextlib.suppress(BadAddress, NetworkError):
                if not self._connected_to(str(_peer_info(address).peer_id)):
                    await self.connect(address)
        if self._connected_to(contact.peer_id):
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
        wanted = self._messenger.topics(time.time())
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
        """Turn the driver's events into the node's: inbox envelopes go to the messenger (which hands
        ours to the app and ignores the rest: a relay carries them unread); a peer that joins is asked
        whether it is a mailbox; everything else passes through."""
        async for event in self._driver.events:
            if isinstance(event, MessageDelivered) and event.topic.startswith(INBOX_TOPIC_PREFIX):
                self._perform(self._messenger.receive([event.data], wall_now=time.time()))
                continue
            if isinstance(event, PeerJoined):
                assert self._nursery is not None
                self._nursery.start_soon(self._probe_mailbox, event.peer)
            elif isinstance(event, PeerLeft):
                self._mailbox_left(event.peer)
            self._emit(event)

    @property
    def inbox_rejected(self) -> dict[str, int]:
        """Envelopes addressed to this node that failed to open, by error (forged, altered, expired)."""
        return self._messenger.statistics().rejected

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
