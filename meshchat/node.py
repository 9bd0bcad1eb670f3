"""The public trio API: a meshchat peer on the real network.

```python
async with meshchat.Node.open(profile_dir, passphrase=..., listen=["/ip4/0.0.0.0/tcp/0"]) as node:
    bob = node.contacts.add(invite_text)
    handle = await node.send(bob, "hello")         # a MessageHandle: .status says where it is
    async for event in node.events():              # DirectMessage, StatusChanged, PeerJoined, ...
        ...
```

``Node`` is a facade (DESIGN.md, "node.py: thin"): it ties the user's identity (the key file in the
profile folder), a py-libp2p host whose key is that identity, the gossip router and its driver
(``meshchat.net.driver``), the store-and-forward core and its driver (``meshchat.net.store_driver``:
sealed direct messages, the durable outbox, mailboxes) and the dialer (``meshchat.net.dialer``:
bootstrap, contacts, DHT, circuit relays) together, and closes all of it on exit. Plain gossip topics
carry whatever bytes the application publishes.

**What the event stream promises.** ``Node.events()`` yields ``DirectMessage`` for every message
committed to this profile's inbox while the node runs, in inbox order (``DirectMessage.number`` 1, 2,
...), none skipped: they are read back from the store, so a slow application makes the stream wait,
it never drops one. Other events (``StatusChanged``, ``StoreProblem``, ``PeerJoined``, ``PeerLeft``,
``MessageDelivered``, and the groups' ``GroupMessage``, ``GroupChanged``, ``GroupStatus``,
``GroupInvited``: ``node.groups``) are live notices, queued up to ``EVENT_QUEUE`` and counted in
``events_dropped`` beyond that (group messages stay in ``node.groups.history``); they are not
ordered with respect to the direct messages. Across
restarts the stream is at-least-once, not exactly-once: a message committed but not yet handled when
the process stopped is replayed if the application opens the node with ``events_after=`` the last
``number`` it finished handling (messages after that number come first, then live ones); without
``events_after`` only messages committed from now on are announced, and the application catches up
with ``node.inbox(after=last_number)``. A message is never committed twice (the seen window), so
``number`` identifies it.

While a node runs on a profile folder it holds ``<profile>/lock`` (a second node on the same profile
gets ``ProfileLocked`` naming the first one's PID) and keeps the addresses it can be dialled at in
``<profile>/addresses.json`` (``{"addrs": [...], "written_at": unix seconds}``) for ``meshchat invite``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeAlias

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from meshchat.contacts import Contact, Contacts
from meshchat.credential_api import (
    STATUS_TOPIC_PREFIX,
    CredentialEvent,
    CredentialNetwork,
    Credentials,
)
from meshchat.credentials.messages import is_credential_control
from meshchat.crypto import (
    INBOX_SHARDS,
    INBOX_TOPIC_PREFIX,
    inbox_topic_at,
)
from meshchat.device_api import Devices
from meshchat.document_api import Documents
from meshchat.documents.events import DocumentEvent
from meshchat.documents.payload import is_document_control
from meshchat.errors import NetworkError, ProfileError
from meshchat.file_api import Files
from meshchat.files.events import Attachment, FileEvent
from meshchat.files.hold import HoldLimits
from meshchat.files.manifest import is_offer
from meshchat.first_contact import FirstContact
from meshchat.gossip import GossipConfig, GossipRouter, ScoreParams, Validator
from meshchat.gossip.signing import MessageSigner
from meshchat.group_api import Groups
from meshchat.groups.events import GroupEvent, GroupMessage
from meshchat.groups.sqlite import GROUPS_FILE
from meshchat.history import ConversationEntry, conversation, from_blocked, read_receipt_target
from meshchat.identity import KEY_FILE_NAME, Identity, PublicIdentity, load_identity
from meshchat.inbox import DirectMessage, InboxFeed, envelope_relay_check
from meshchat.net import (
    EVENT_QUEUE,
    GossipDriver,
    InboundCounter,
    MessageDelivered,
    NetEvent,
    PeerJoined,
    PeerLeft,
    build_host,
    parse_multiaddr,
)
from meshchat.net.bundles import BUNDLE_NAMESPACE, BundleValidator
from meshchat.net.dialer import Dialer, Whereabouts, peer_info
from meshchat.net.file_driver import FileConfig, FileDriver
from meshchat.net.host import listen_ip, only_exception
from meshchat.net.keeper_driver import KeeperOptions
from meshchat.net.lan import LanDiscovery
from meshchat.net.mailbox import MailboxServer
from meshchat.net.punch import HolePuncher, PunchEvent, PunchStatistics
from meshchat.net.reach_driver import ReachOptions
from meshchat.net.relay import CircuitRelay
from meshchat.net.store_driver import GroupStoreAction, MessageHandle, NetStoreIO, StoreDriver, StoreEvent
from meshchat.net.transports import transport_failures
from meshchat.node_network import NodeNetwork, status_relay_check
from meshchat.node_parts import LocalParts, knows, open_local_parts, queue_chat
from meshchat.profile import ADDRESSES_FILE, LOCK_FILE, hold_profile
from meshchat.reach import AddressesChanged
from meshchat.store.mailbox import MailboxCore, MailboxLimits
from meshchat.store.messenger import (
    ControlReceived,
    DeviceListChanged,
    Linked,
    MessageReceived,
    Messenger,
    StatusChanged,
    StoreConfig,
    StoreProblem,
)
from meshchat.store.prekey_upload import PrekeyUploads
from meshchat.store.sqlite import STORE_FILE
from meshchat.store.storage import InboxRecord, OutboxRecord, Storage

__all__ = [
    "ADDRESSES_FILE",
    "DEFAULT_LISTEN",
    "GROUPS_FILE",
    "KEY_FILE",
    "LOCK_FILE",
    "STORE_FILE",
    "MessageHandle",
    "Node",
    "NodeEvent",
]

#: What ``Node.events()`` yields: gossip messages, sealed messages to this node, peers coming and going,
#: sent messages moving on (``StatusChanged``), local storage failing (``StoreProblem``), and groups
#: (``GroupMessage``, ``GroupChanged``, ``GroupStatus``, ``GroupInvited``, ``GroupProblem``), files
#: (``Attachment``, ``AttachmentFetched``, ``FileProblem``) and devices (``DeviceListChanged``: a
#: contact's or our own list; ``Linked``: this new device was approved; ``node.devices``) and
#: co-signing rounds (``DocumentProposed``, ``DocumentSigned``, ``DocumentRevoked``,
#: ``DocumentCompleted``, ``DocumentStamped``: ``node.documents``).
NodeEvent: TypeAlias = (
    NetEvent
    | DirectMessage
    | StatusChanged
    | StoreProblem
    | DeviceListChanged
    | Linked
    | GroupEvent
    | FileEvent
    | DocumentEvent
    | CredentialEvent
    | AddressesChanged  # our addresses or their kinds changed
    | PunchEvent  # DirectConnection, PunchFailed (meshchat.net.punch)
)


#: The identity's key file inside a profile folder.
KEY_FILE = KEY_FILE_NAME
#: Where a node listens unless told otherwise: every interface, a port the system picks.
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/0",)


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
    stamps: bool
    wall_clock: Callable[[], float]
    events_after: int | None
    file_config: FileConfig
    hold_limits: HoldLimits | None
    cover_interval: float | None = None
    keeper: KeeperOptions | None = None
    reach: ReachOptions | None = None
    hole_punch: bool = False


class Node(NodeNetwork):
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
        parts: LocalParts,
        wall_clock: Callable[[], float] = time.time,
        events_after: int | None = None,
        profile: Path | None = None,
        file_config: FileConfig,
    ) -> None:
        """Use ``Node.open``; this only stores and wires its parts."""
        self.identity = identity
        self._host = host
        self._driver = driver
        self._contacts = contacts
        self._messenger = messenger
        self._mailbox = mailbox
        self._mailbox_server: MailboxServer | None = None
        self._wall_clock = wall_clock
        self._profile = profile
        self._nursery: trio.Nursery | None = None
        self._inbox_topics: set[str] = set()
        self._reserved: list[str] = []
        self._puncher: HolePuncher | None = None
        self._events_send, self._events = trio.open_memory_channel[NodeEvent](EVENT_QUEUE)
        #: Events the application did not take in time (its queue was full), counted, not kept.
        #: Direct messages are never among them: the inbox feed waits for the application instead.
        self.events_dropped = 0
        self._dialer = Dialer(host)
        self._first_contact = FirstContact(host, self._dialer, messenger, wall_clock=wall_clock)
        #: One chat queued at a time: a stamp is minted in a worker thread between sealing and
        #: queueing, and a second send must not overtake the first (chats arrive in the order sent).
        self._send_lock = trio.Lock()
        self._feed = InboxFeed(messenger.storage, contacts, self._events_send, after=events_after)
        self._store = StoreDriver(
            messenger,
            NetStoreIO(host, driver, self._dialer, self._whereabouts),
            wall_clock=wall_clock,
            on_event=self._emit,
            on_committed=self._committed,
            on_group=self._from_store,
            prekey_uploads=PrekeyUploads(messenger),
        )
        #: The user's groups: create, invite, join, send, history (``meshchat.group_api.Groups``).
        files = parts.files
        self.groups = Groups.build(
            identity,
            parts.groups,
            messenger=messenger,
            store=self._store,
            gossip=driver,
            wall_clock=wall_clock,
            on_event=self._emit,
            reach=self._reach,
            contacts=contacts,
        )
        self._group_driver = self.groups.driver
        file_driver = FileDriver(
            host,
            files.store,
            identity=identity,
            hold=files.hold,
            config=file_config,
            downloads=files.downloads,
            wall_clock=wall_clock,
            on_event=self._emit,
            reach=self._reach_peer,
            on_change=driver.notify_changed,
            group_peers=self._group_peers,
        )
        #: Files sent and received: ``send``, ``fetch``, ``received``, ``progress`` (``meshchat.file_api``).
        self.files = Files(
            file_driver,
            identity=identity,
            messenger=messenger,
            store=self._store,
            contacts=contacts,
            wall_clock=wall_clock,
            reach=self._reach,
            wait_for=self.wait_for,
            groups=self.groups,
        )
        #: This person's devices: link, approve, list, remove (``meshchat.device_api``).
        self.devices = Devices(
            identity,
            messenger=messenger,
            store=self._store,
            contacts=contacts,
            profile=profile,
            wall_clock=wall_clock,
            wait_for=self.wait_for,
            connect=self.connect,
            reach=self._dialer.reach,
            use_invite=self._first_contact.use_invite,
            addrs=lambda: self.invite_addrs,
        )
        #: Co-signing rounds: propose, sign, revoke, view, bundle (``meshchat.document_api``).
        self.documents = Documents(
            identity,
            store=parts.documents,
            messenger=messenger,
            driver=self._store,
            contacts=contacts,
            wall_clock=wall_clock,
            reach=self._reach,
            wait_for=self.wait_for,
            on_event=self._emit,
            files=self.files,
        )
        #: Credentials asked for, issued, held, presented, verified, revoked (``meshchat.credential_api``).
        self.credentials = Credentials(
            identity,
            parts.wallet,
            wall_clock=wall_clock,
            contacts=contacts,
            on_event=self._emit,
            network=CredentialNetwork(
                messenger=messenger,
                store=self._store,
                gossip=driver,
                reach=self._reach,
                wait_for=self.wait_for,
                topic_peers=driver.router.topic_peers,
            ),
        )

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
        stamps: bool | None = None,
        storage: Storage | None = None,
        wall_clock: Callable[[], float] = time.time,
        events_after: int | None = None,
        file_config: FileConfig | None = None,
        hold_limits: HoldLimits | None = None,
        cover_interval: float | None = None,
        keeper: KeeperOptions | None = None,
        reach: ReachOptions | None = None,
        hole_punch: bool = False,
    ) -> AsyncIterator[Node]:
        """Start a node for the identity in ``profile_dir`` (or ``identity``); stop it on exit.

        ``listen`` and ``bootstrap`` are multiaddrs; bootstrap peers need their ``/p2p/<PeerId>``. With
        ``mdns`` the node announces itself on the local network and dials the peers it finds there,
        following network changes (``meshchat.net.lan``: the fallback when the Internet is cut).
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
        in memory for a node opened with an identity only, unless ``storage`` is given); groups
        (``node.groups``) in ``profile_dir/groups.db``, both encrypted with the identity's store key.
        Sent messages are retried until their recipient's receipt comes back (``store_config``); each
        retry first dials the recipient (a contact: its invite's addresses, its mailboxes, the DHT), and every
        pending message is published again as soon as the node has started. Each message is stored on
        up to ``store_config.mailbox_copies`` mailboxes: the peers at ``mailboxes`` (dialled at start,
        redialled while down) and any connected peer that serves ``/meshchat/mailbox/1.0.0``; the node
        syncs with a mailbox as soon as it connects. With ``mailbox`` this node is one: it keeps
        envelopes for others within ``mailbox_limits``, and other people's file chunks within
        ``hold_limits`` (in ``profile_dir/hold``). Files (``node.files``, ``send_file``, ``fetch``) are
        recorded in ``profile_dir/files.db`` and land in ``profile_dir/downloads`` (``file_config``).

        Stamps (``meshchat.crypto.stamps``; default: on for a profile, off for a bare identity, which
        has no contacts): a chat from someone who is not a contact, not a member of one of our groups
        and never talked with must carry a stamp of ``store_config.stamp_cost`` bits (publish it in the
        invite), else it is dropped unread and counted (``store_statistics().unstamped``); chats to
        someone who never answered are stamped at the cost their invite asks (~0.2 s each by default).

        ``wall_clock`` is where the node reads unix time (expiry, retries, syncs); tests pass a
        function of trio's clock. ``events_after``: replay inbox messages numbered after it as
        ``DirectMessage`` events before live ones (see the module docstring).
        ``cover_interval``: publish a dummy envelope every so many seconds on average, which relays cannot
        tell from a short chat (``meshchat.store.cover``; counted in ``cover_statistics``).
        ``keeper``: redial known peers when connections fall below a floor (only on a node given
        ``bootstrap`` peers), and ping quiet gossip peers to close (and redial) stalled connections
        (``meshchat.net.keeper_driver``; ``DEFAULT_KEEPER`` there). Off by default (None) for now:
        with it on, the full test run showed py-libp2p sockets left unclosed after pings and dials,
        and hand-wired networks rewiring themselves; turned on once those are settled.
        ``reach``: AutoNAT (ask connected peers to dial us back; answer theirs) and automatic circuit
        relays while not publicly reachable: reservations on peers offering circuit v2 hop, renewed
        before they expire, probed, replaced when a relay leaves, refuses or drops traffic; reserved
        relays (``reserve``) are renewed too (``meshchat.net.reach_driver``, ``DEFAULT_REACH``).
        ``addresses()`` says which addresses are public, relayed or private, an ``AddressesChanged``
        event when that changes, and ``addresses.json`` (invites) then carries the public and relayed
        ones. Off by default (None) for now, like ``keeper``.
        ``hole_punch``: turn connections through a circuit relay into direct ones (DCUtR, within
        ``meshchat.net.punch.PUNCH_TIMEOUT``; a failed punch keeps the relay): ``DirectConnection``
        and ``PunchFailed`` events, ``punch_statistics()``. Off by default for now (``meshchat node``
        and ``chat`` turn it on): closing the relayed connection after a punch sets off py-libp2p's
        AutoConnector, whose dial, cancelled when a node closes at that moment, leaves its socket
        to the garbage collector; on by default once a full test run with it on is clean.

        Raises ``ProfileLocked`` if another process runs a node on ``profile_dir``, ``KeyFileError``
        for a missing or locked identity, ``BadAddress`` for an unusable address and ``NetworkError``
        if none of ``listen`` could be listened on or no bootstrap peer could be reached.
        """
        if identity is None and profile_dir is None:
            raise ValueError("give a profile folder or an identity")
        profile = Path(profile_dir) if profile_dir is not None else None
        with hold_profile(profile) if profile is not None else contextlib.nullcontext():
            if identity is None:
                assert profile is not None
                identity = load_identity(profile / KEY_FILE, passphrase)
            contacts = Contacts(profile) if profile is not None else None
            mailbox_addrs = [peer_info(a) for a in mailboxes]
            listen_addrs = [parse_multiaddr(a) for a in listen]
            bootstrap_infos = [peer_info(a) for a in bootstrap]
            with contextlib.ExitStack() as closing:
                file_config = file_config or FileConfig()
                parts = open_local_parts(
                    profile,
                    identity,
                    storage=storage,
                    file_config=file_config,
                    mailbox=mailbox,
                    hold_limits=hold_limits,
                    closing=closing,
                )
                async with cls._run(
                    identity,
                    contacts,
                    parts,
                    listen_addrs,
                    bootstrap_infos,
                    mailbox_addrs,
                    profile=profile,
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
                        stamps=profile is not None if stamps is None else stamps,
                        wall_clock=wall_clock,
                        events_after=events_after,
                        file_config=file_config,
                        hold_limits=hold_limits,
                        cover_interval=cover_interval,
                        keeper=keeper,
                        reach=reach,
                        hole_punch=hole_punch,
                    ),
                ) as node:
                    yield node

    @classmethod
    @asynccontextmanager
    async def _run(  # noqa: PLR0917 (the parts Node.open checked and opened, in order)
        cls,
        identity: Identity,
        contacts: Contacts | None,
        parts: LocalParts,
        listen_addrs: list[Multiaddr],
        bootstrap_infos: list[PeerInfo],
        mailbox_addrs: list[PeerInfo],
        *,
        profile: Path | None,
        options: _Options,
    ) -> AsyncIterator[Node]:
        """Build the host, router, driver and store cores; run them until the caller is done."""
        wall_clock = options.wall_clock
        inbound = InboundCounter()
        host = build_host(identity, inbound=inbound)
        config = options.config or GossipConfig()
        if options.signed_topics:
            config = dataclasses.replace(
                config, signed_topics=config.signed_topics | frozenset(options.signed_topics)
            )
        router = GossipRouter(
            config,
            local_peer=identity.public.peer_id,
            rng=random.Random(),
            validator=envelope_relay_check(wall_clock, status_relay_check(options.validator)),
            signer=MessageSigner(identity, first_seqno=int(wall_clock() * 1e9)),
            score_params=options.score_params if options.score_params is not None else ScoreParams(),
        )
        driver = GossipDriver(host, router)
        driver.count_inbound(inbound)
        storage = parts.storage
        node: Node | None = None

        def known(person: bytes) -> bool:  # needs no stamp: a contact, or a member of one of our groups
            return node is not None and knows(contacts, node.groups, person)

        messenger = Messenger(
            identity,
            storage,
            config=options.store_config,
            rng=random.Random(),
            wall_now=wall_clock(),
            blocked=None if contacts is None else contacts.is_blocked_key,  # their chats: dropped unread
            known=known if options.stamps else None,  # strangers' chats need a stamp
        )
        core = None
        if options.mailbox:
            # the owner and its contacts keep a reserve that strangers' identities cannot fill
            core = MailboxCore(storage, options.mailbox_limits, owner=identity.public)
            core.set_friends(contact.public for contact in contacts or ())
        node = cls(
            identity,
            host,
            driver=driver,
            contacts=contacts,
            messenger=messenger,
            mailbox=core,
            parts=parts,
            wall_clock=wall_clock,
            events_after=options.events_after,
            profile=profile,
            file_config=options.file_config,
        )
        started = False  # past this point an OSError is the caller's, not our failure to listen
        try:
            async with host.run(listen_addrs), contextlib.AsyncExitStack() as services:
                if listen_addrs and not host.get_transport_addrs():
                    # py-libp2p logs a listener that fails to bind and goes on without it
                    wanted = ", ".join(str(a) for a in listen_addrs)
                    why = "".join(f"; {f}" for f in transport_failures(host))
                    raise NetworkError("listen", f"could not listen on any of {wanted}{why}")
                nursery = await node._start(
                    services,
                    options=options,
                    bootstrap=bootstrap_infos,
                    mailboxes=mailbox_addrs,
                )
                started = True
                try:
                    yield node
                finally:
                    inbound.closing = True
                    await node._dialer.hang_up()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # trio wraps whatever ends a nursery (an error of ours, or of the caller's ``async with``
            # body) in exception groups; one error is raised as itself, as callers expect.
            single = only_exception(group)
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
        options: _Options,
        bootstrap: list[PeerInfo],
        mailboxes: list[PeerInfo],
    ) -> trio.Nursery:
        """Start the DHT, circuit relay, drivers and event translation inside ``services``; join the
        inbox topics; dial the bootstrap peers and mailboxes; publish what is pending. Returns the
        nursery the node's tasks run in."""
        for contact in self._contacts or ():  # receipts and messages for them go to their mailboxes
            self._first_contact.use_invite(contact)
        if self._store.prekey_uploads is not None:  # one-time prekeys go to our own mailboxes
            self._store.prekey_uploads.prefer(str(info.peer_id) for info in mailboxes)
        host, driver = self._host, self._driver
        if options.dht:
            self._dialer.dht = KadDHT(host, DHTMode.SERVER)
            self._dialer.dht.register_validator(BUNDLE_NAMESPACE, BundleValidator())
            await services.enter_async_context(background_trio_service(self._dialer.dht))
        relay = await services.enter_async_context(CircuitRelay.running(host, hop=options.circuit_relay))
        self._dialer.relay = relay
        if self._mailbox is not None:
            # one buffer budget for gossip and mailbox streams, so its total bounds both together
            self._mailbox_server = MailboxServer(
                host, self._mailbox, budget=driver.budget, wall_clock=self._wall_clock
            )
        nursery = await services.enter_async_context(trio.open_nursery())
        self._nursery = nursery
        self._dialer.drop_stale_circuits(nursery)
        await self._start_reach(nursery, options.reach)  # before addresses.json is written
        if options.hole_punch:  # DCUtR on relayed connections
            punching = HolePuncher.running(host, nursery, self._emit)
            self._puncher = await services.enter_async_context(punching)
        await nursery.start(driver.run)
        await nursery.start(self._store.run)
        await nursery.start(self._group_driver.run)
        await nursery.start(functools.partial(self.files.driver.run, bulk_ip=listen_ip(self._host)))
        if options.mdns:  # peers on the LAN found by mDNS and dialled (meshchat.net.lan)
            lan = LanDiscovery(host, self._dialer.dial, self._dialer.hang_up_on)
            nursery.start_soon(lan.run)  # announcing takes ~1 s
        nursery.start_soon(self._feed.run)  # before anything can commit: nothing is missed
        nursery.start_soon(self._translate_events)
        self._write_addresses()
        self.devices.start(nursery)
        self._start_cover(nursery, options.cover_interval)
        nursery.start_soon(self.credentials.run)  # status topics: follow trusted issuers, publish ours
        if options.inbox:
            await self._join_inbox()
            nursery.start_soon(self._rejoin_inbox_daily)
        if options.relay_inbox_shards:
            for shard in range(INBOX_SHARDS):
                await driver.join(f"{INBOX_TOPIC_PREFIX}{shard}")
        if bootstrap:
            await self._dialer.bootstrap(bootstrap)
        if mailboxes:
            await self._dialer.dial_mailboxes(mailboxes)
            nursery.start_soon(self._dialer.keep_mailboxes_connected, mailboxes)
        self._start_keeper(nursery, options.keeper, bootstrap)
        self._store.retry_pending()
        if self._dialer.dht is not None:
            nursery.start_soon(self._first_contact.publish_bundle, self._dialer.dht, self.identity.public)
        return nursery

    # --- events ----------------------------------------------------------------------------------

    def _emit(self, event: NodeEvent | StoreEvent) -> None:
        if from_blocked(self._contacts, event):  # a group message, invitation or file: not shown
            return
        if isinstance(event, GroupMessage) and is_offer(event.body):  # a file sent to a group
            sender = PublicIdentity.from_bytes(event.sender)
            self.files.driver.offered(sender, event.body, event.message_id, group_id=event.group_id)
            return  # announced as an ``Attachment`` (the history keeps the offer)
        if isinstance(event, Linked):
            self.devices.on_linked(event)  # the profile takes the primary's snapshot, then we announce
        try:
            self._events_send.send_nowait(event)
        except trio.WouldBlock:
            self.events_dropped += 1

    def _committed(self, received: list[MessageReceived]) -> None:
        self._feed.committed([r.message.number for r in received])

    async def _translate_events(self) -> None:
        """Turn the driver's events into the node's: inbox envelopes go to the store driver (which
        hands ours to the app and ignores the rest: a relay carries them unread); a peer that joins is
        asked whether it is a mailbox; everything else passes through."""
        async for event in self._driver.events:
            if isinstance(event, MessageDelivered):
                if event.topic.startswith(INBOX_TOPIC_PREFIX):
                    self._store.receive(event.data)
                    continue
                if self._group_driver.gossip(event.topic, event.data):  # a group topic's envelope
                    continue
                if event.topic.startswith(STATUS_TOPIC_PREFIX):  # an issuer's status list
                    self.credentials.gossip(event.topic, event.data)
                    continue
            if isinstance(event, PeerJoined):
                self._store.peer_joined(event.peer)
            elif isinstance(event, PeerLeft):
                self._store.peer_left(event.peer)
            self._emit(event)

    def punch_statistics(self) -> PunchStatistics | None:
        """Hole punches so far (None: opened with ``hole_punch=False``)."""
        return None if self._puncher is None else self._puncher.statistics()

    def events(self) -> trio.MemoryReceiveChannel[NodeEvent]:
        """Messages and peer changes (``async for event in node.events()``; promises: module docstring).
        A channel, not a generator: a loop broken out of leaves nothing behind; the next goes on."""
        return self._events

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, re-checked whenever the node's state changes."""
        await self._driver.wait_for(condition)

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
        message published again once that worked. Only the first message to someone with no session
        waits: for a one-time prekey from a contact's mailboxes (at most ``PREKEY_TAKE_TIMEOUT``, 3 s),
        else, with no bundle from an invite, for a DHT lookup (at most ``BUNDLE_LOOKUP_TIMEOUT``, 3 s).
        ``KeyNotConfirmed`` for a contact whose key changed (``Contacts.accept_key`` or ``verify`` first).
        """
        if isinstance(to, str):
            to = self.contacts.find(to)
        recipient = to.public if isinstance(to, Contact) else to
        if self._contacts is not None:  # KeyNotConfirmed: their key changed, not accepted yet
            self._contacts.confirm_key(recipient)
        await self._first_contact.prepare(to)
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            async with self._send_lock:
                record, actions = await queue_chat(  # a stamp, if any, minted off the trio loop
                    self._messenger, recipient, data, wall_now=self._wall_clock(), ref=ref, ttl=ttl
                )
        finally:
            if isinstance(to, Contact):
                self._first_contact.use_invite(to)  # a one-time key is never used for a second set-up
        self._store.perform(actions)
        if actions:
            self._reach(recipient, record.message_id)
        return MessageHandle(record, messenger=self._messenger, wait_for=self.wait_for)

    def _from_store(self, action: GroupStoreAction) -> None:
        if isinstance(action, ControlReceived) and is_offer(action.body):
            self.files.driver.offered(action.sender, action.body, action.message_id)
        elif isinstance(action, ControlReceived) and is_document_control(action.body):
            self.documents.control(action.sender, action.body, action.message_id)
        elif isinstance(action, ControlReceived) and is_credential_control(action.body):
            self.credentials.control(action.sender, action.body, action.message_id)
        else:
            self._group_driver.from_store(action)

    # --- files --------------------------------------------------------------------------------------

    async def send_file(
        self, to: Contact | PublicIdentity | str, path: str | Path, *, caption: str = "", ref: str = ""
    ) -> MessageHandle:
        """Send the file at ``path`` with ``caption``: ``node.files.send`` (its docstring says more)."""
        return await self.files.send(to, path, caption=caption, ref=ref)

    async def fetch(self, attachment: Attachment | int, dest: str | Path | None = None) -> Path:
        """Fetch a received attachment and return its path: ``node.files.fetch``."""
        return await self.files.fetch(attachment, dest)

    def _group_peers(self, group_id: bytes) -> list[str]:
        members = self.groups.members(group_id).members - {self.identity.public.ed25519}
        peers = [PublicIdentity.from_bytes(m).peer_id for m in sorted(members)]
        return [p for p in peers if self._dialer.connected_to(p)]

    async def _reach_peer(self, peer: str) -> bool:
        contact = next((c for c in self._contacts or () if c.peer_id == peer), None)
        return await self._dialer.reach_peer(peer, None if contact is None else contact.whereabouts())

    def _reach(self, recipient: PublicIdentity, message_id: bytes) -> None:
        """A message just queued for ``recipient``: if it is a contact we are not connected to, or
        connected to a moment ago and not yet heard subscribe to its inbox shard, reach it in the
        background (dial, wait briefly for the subscription) and publish then (a publish before the
        subscription is heard reaches no peer, and the next message would overtake it). Anyone else
        is reached by gossip and mailboxes."""
        contact = self._contacts.by_key(recipient) if self._contacts is not None else None
        if contact is None:
            return
        topic = inbox_topic_at(recipient, self._wall_clock())
        listening = contact.peer_id in self._driver.router.topic_peers(topic)
        if not self._dialer.connected_to(contact.peer_id) or not listening:
            self._store.reach_and_publish(recipient, message_id)

    def _whereabouts(self, public: PublicIdentity) -> Whereabouts | None:
        contact = self._contacts.by_key(public) if self._contacts is not None else None
        return self.devices.whereabouts(public) if contact is None else contact.whereabouts()

    def outbox(self, limit: int = 100) -> list[OutboxRecord]:
        """The ``limit`` most recently sent messages, newest first, with their status."""
        return self._messenger.storage.outbox_recent(limit)

    def inbox(self, *, after: int = 0, limit: int = 100) -> list[InboxRecord]:
        """Received messages numbered after ``after``, in arrival order (an app resumes from the last
        number it handled: ``DirectMessage.number``)."""
        return self._messenger.storage.inbox_after(after, limit)

    def conversation(
        self, who: Contact | PublicIdentity | str, *, before: int | None = None, limit: int = 100
    ) -> list[ConversationEntry]:
        """The conversation with ``who``, oldest first, ``limit`` before ``before``: ``meshchat.history``."""
        return conversation(self._messenger.storage, self._contacts, who, before=before, limit=limit)

    def mark_read_id(self, message_id: bytes) -> None:
        """Send a read receipt for received message ``message_id`` (``UnknownMessage``: none has that id)."""
        sender = read_receipt_target(self._messenger.storage, message_id)
        self._store.perform(self._messenger.mark_read(sender, [message_id], wall_now=self._wall_clock()))

    @property
    def blocked_dropped(self) -> int:
        """Direct messages from blocked people dropped since the node started (``Contacts.block``)."""
        return self._messenger.blocked_dropped

    def mark_read(self, message: DirectMessage) -> None:
        """Send ``message``'s sender (the device of theirs that sent it) a signed read receipt."""
        sender = message.device or message.sender
        self._store.perform(
            self._messenger.mark_read(sender, [message.message_id], wall_now=self._wall_clock())
        )
