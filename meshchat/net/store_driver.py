"""The store-and-forward core's I/O half: performs the ``Messenger``'s actions and runs its timers.

What it is: the driver of ``meshchat.store.messenger.Messenger`` on a real network (STYLE §1): it
publishes envelopes and reports how far they got, calls mailboxes and hands the answers back, calls
``on_timer`` at the core's deadline, notices mailboxes coming and going, and reaches a message's
recipient (invite addresses, the recipient's mailboxes, the DHT) before each retry publishes it again.
It reads the wall time from the clock it is given (``time.time`` on a real node; a function of trio's
clock in tests, so retries run under ``MockClock``).

**Order.** A recipient sees messages in the order it first receives them, so each recipient's
messages are published by one task at a time (``_Conversation``), lowest ``seq`` first: first sends,
retries and the pending messages published at start alike. (Before, each publish and each reach was
its own task, and trio does not run tasks in the order they were started: a quick 1, 2, 3 to a
contact being dialled could arrive as 3, 1, 2.) A retry, or a first send to a contact we are not
connected to, asks for a reach: the task reaches the recipient once, then queues again every message
to it still retried with a lower ``seq`` than one queued (the outbox retries each message on its own
jittered timer, so a recipient that comes back must not get the first one due before the others), and
publishes the queue in ``seq`` order. So from any reach on, the recipient is offered each message it
lacks before any later one. The price: a retry publishes the recipient's older unacknowledged
messages too. At most ``MAX_RECIPIENTS_SERVED`` recipients are served at once, and a recipient's queue
holds its ``MAX_QUEUED_PUBLISHES`` lowest ``seq``s; the rest wait for a later retry (counted in
``publishes_deferred``). Receipts need no order: each is published at once.

**Prekeys.** With ``prekey_uploads`` (``meshchat.store.prekey_upload``) it uploads the device's prekey
bundle to its mailboxes as that core plans, after every batch of actions, each upload a task of its
own (the module docstring there says why not through the messenger's mailbox calls).

What it is not: it decides nothing about delivery (the core does) and does not open connections by
itself: everything network-side goes through ``StoreIO`` (``NetStoreIO`` on a libp2p host), so a test
can run this driver on a fake network.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol, TypeAlias, assert_never

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from meshchat.errors import DecodeError, NetworkError
from meshchat.files.events import FileProgress
from meshchat.identity import PublicIdentity
from meshchat.net.dialer import Dialer, Whereabouts
from meshchat.net.driver import GossipDriver
from meshchat.net.mailbox import call_mailbox, supports_mailbox
from meshchat.store.messenger import (
    Action,
    CallMailbox,
    ControlReceived,
    DeviceListChanged,
    EnvelopeRefused,
    EnvelopeStored,
    GroupEnvelopes,
    Linked,
    MessageReceived,
    Messenger,
    PublishEnvelope,
    StatusChanged,
    StoreProblem,
)
from meshchat.store.outbox import RETRYING
from meshchat.store.prekey_upload import PrekeyUploads
from meshchat.store.protocol import MailboxRequest, MailboxResponse, PrekeysPut
from meshchat.store.storage import OutboxRecord, OutboxStatus

#: The messenger's actions that belong to the groups core (``StoreDriver(on_group=...)``).
GroupStoreAction: TypeAlias = ControlReceived | GroupEnvelopes | EnvelopeStored | EnvelopeRefused

__all__ = [
    "MAX_HELD_RECEIPTS",
    "MAX_QUEUED_PUBLISHES",
    "MAX_RECIPIENTS_SERVED",
    "PUBLISH_FLUSH_TIMEOUT",
    "REACH_TIMEOUT",
    "RECEIPT_HOLD",
    "SUBSCRIPTION_WAIT",
    "GroupStoreAction",
    "MessageHandle",
    "NetStoreIO",
    "StoreDriver",
    "StoreEvent",
    "StoreIO",
]

#: Seconds a published message may wait to be written to a peer's stream before it counts as not
#: relayed (the outbox retries it).
PUBLISH_FLUSH_TIMEOUT = 10.0
#: Recipients whose messages are published at once (each with one task: at most one reach, a dial
#: or a DHT lookup, and one flush in flight). 16: a handful of sockets and lookups at a time, while a
#: contact whose dial hangs takes one slot of 16 and the others go on.
MAX_RECIPIENTS_SERVED = 16
#: Publishes queued for one recipient (references to envelopes the outbox holds anyway). A full queue
#: keeps the lowest ``seq``s; the others wait for the outbox's next retry (counted in
#: ``publishes_deferred``).
MAX_QUEUED_PUBLISHES = 1024
#: Seconds a reach may take before its recipient's messages are published anyway (relays and
#: mailboxes may carry them): longer than a dial and a DHT lookup (``DHT_LOOKUP_TIMEOUT``) together.
REACH_TIMEOUT = 60.0
#: Seconds to wait for a contact just dialled to subscribe to its inbox shard before publishing.
SUBSCRIPTION_WAIT = 5.0

#: Seconds a receipt we published is offered again to peers that join its topic. The router drops a
#: sender's re-publish of a message we already have as a gossip duplicate for its ``seen_ttl`` (2 min),
#: so a sender that went away before our receipt reached it (``meshchat send``) would not hear from us
#: for minutes: we offer the receipt again when it comes back instead.
RECEIPT_HOLD = 600.0
#: Receipts held for that (bounded: one per batch of received messages; the oldest go first, counted).
MAX_HELD_RECEIPTS = 1024

#: What the driver tells the application: sent messages moving on, local storage failing.
StoreEvent: TypeAlias = StatusChanged | StoreProblem | DeviceListChanged | Linked


class MessageHandle:
    """A sent message: its id and, whenever asked, where it is (``status``). ``Node.send`` returns one."""

    def __init__(
        self,
        record: OutboxRecord,
        *,
        messenger: Messenger,
        wait_for: Callable[[Callable[[], bool]], Awaitable[None]],
        progress: Callable[[], FileProgress] | None = None,
    ) -> None:
        """The handle of ``record``, sent by ``messenger``; ``wait_for`` is ``Node.wait_for``;
        ``progress`` tells a file's transfer (``Node.send_file``)."""
        self._messenger = messenger
        self._progress = progress
        self._wait_for = wait_for
        #: The envelope's id (BLAKE2b-256), as ``meshchat status`` and receipts name it.
        self.message_id = record.message_id
        #: Its place in the conversation with the recipient.
        self.seq = record.seq

    @property
    def record(self) -> OutboxRecord:
        """The outbox record as it is now."""
        record = self._messenger.status(self.message_id)
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

    @property
    def progress(self) -> FileProgress | None:
        """For a file (``Node.send_file``): bytes stored on mailboxes and served; None for a message."""
        return None if self._progress is None else self._progress()

    async def wait_until(self, *statuses: OutboxStatus) -> OutboxStatus:
        """Return the status once it is one of ``statuses`` (or a later one, or a terminal one)."""
        order = list(OutboxStatus)
        first = min(order.index(s) for s in statuses)
        final = {OutboxStatus.EXPIRED, OutboxStatus.FAILED}
        await self._wait_for(lambda: order.index(self.status) >= first or self.status in final)
        return self.status

    def __repr__(self) -> str:
        return f"<MessageHandle {self.message_id.hex()[:16]} {self.status.value}>"


@dataclasses.dataclass(slots=True)
class _Conversation:
    """One recipient's publishes, waiting for the task that serves it (see "Order" above)."""

    #: Who they are for.
    recipient: PublicIdentity
    #: ``message id -> (seq, publish)``; served lowest ``seq`` first.
    queued: dict[bytes, tuple[int, PublishEnvelope]] = dataclasses.field(default_factory=dict)
    #: Reach the recipient before the next publish.
    reach: bool = False

    def topic(self) -> str:
        """The inbox topic of the first queued publish (the recipient's today)."""
        return min(self.queued.values(), key=lambda q: q[0])[1].topic

    def put(self, message_id: bytes, seq: int, action: PublishEnvelope) -> bool:
        """Queue ``action`` (merged with one queued for the same message: ``again`` if either asks
        for it). A full queue keeps the lowest ``seq``s: it drops the highest of them and ``action``.
        Returns whether something was dropped."""
        queued = self.queued.get(message_id)
        if queued is not None:
            action = dataclasses.replace(action, again=action.again or queued[1].again)
        elif len(self.queued) >= MAX_QUEUED_PUBLISHES:
            last = max(self.queued, key=lambda mid: self.queued[mid][0])
            if self.queued[last][0] < seq:
                return True
            del self.queued[last]
            self.queued[message_id] = (seq, action)
            return True
        self.queued[message_id] = (seq, action)
        return False

    def pop_first(self) -> PublishEnvelope:
        """Take the queued publish with the lowest ``seq``."""
        first = min(self.queued, key=lambda mid: self.queued[mid][0])
        return self.queued.pop(first)[1]


class StoreIO(Protocol):
    """The network as the store driver sees it."""

    async def publish(self, topic: str, envelope: bytes) -> None:
        """Publish ``envelope`` on ``topic`` without tracking it (a receipt)."""

    async def publish_and_flush(self, topic: str, envelope: bytes, *, again: bool) -> int:
        """Publish ``envelope``; return the number of peers whose stream took it (0: none)."""

    async def call_mailbox(self, peer: str, request: MailboxRequest) -> MailboxResponse:
        """Call mailbox ``peer``; ``NetworkError`` or ``DecodeError`` if that fails."""

    async def supports_mailbox(self, peer: str) -> bool:
        """Whether connected peer ``peer`` serves the mailbox protocol."""

    def connected(self, peer: str) -> bool:
        """Whether ``peer`` is connected now."""

    async def reach(self, recipient: PublicIdentity, topic: str) -> None:
        """Try to connect to ``recipient`` (a contact) and wait, briefly, until it listens on ``topic``."""

    async def wait_listening(self, peer: str, topics: Collection[str]) -> set[str]:
        """Wait (briefly) until connected ``peer`` listens on one of ``topics``; those it listens on."""

    def changed(self) -> None:
        """The outbox changed: wake whoever waits on the node's state."""


class StoreDriver:
    """Runs one ``Messenger`` on a ``StoreIO`` (see the module docstring)."""

    def __init__(
        self,
        messenger: Messenger,
        io: StoreIO,
        *,
        wall_clock: Callable[[], float],
        on_event: Callable[[StoreEvent], None],
        on_committed: Callable[[list[MessageReceived]], None],
        on_group: Callable[[GroupStoreAction], None] | None = None,
        prekey_uploads: PrekeyUploads | None = None,
    ) -> None:
        """``on_event`` hears status changes and storage problems; ``on_committed`` each batch of
        messages the core accepted into the inbox (in inbox order); ``on_group`` the actions that
        belong to the groups core (control messages, group envelopes, shared stores), at once and in
        order (without it they are counted in ``group_actions_dropped``). With ``prekey_uploads``
        the device's prekey bundle is uploaded to its mailboxes as that plans (after every batch of
        actions: a mailbox found, a one-time key used)."""
        self.messenger = messenger
        #: The owner's prekey uploads to its mailboxes (``meshchat.store.prekey_upload``), if any.
        self.prekey_uploads = prekey_uploads
        self._io = io
        self._wall_clock = wall_clock
        self._on_event = on_event
        self._on_committed = on_committed
        self._on_group = on_group
        #: Group actions with no ``on_group`` to take them.
        self.group_actions_dropped = 0
        self._nursery: trio.Nursery | None = None
        # Set once ``run`` is cancelled (the node closing): its nursery takes no new task then, while
        # the node's event task may still hand in an envelope it had already taken off the network.
        self._stopped = False
        self._timer_kick = trio.Event()
        # Receipts we published, by envelope: (topic, envelope, offered until); see RECEIPT_HOLD.
        self._held_receipts: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        #: Held receipts dropped to stay within ``MAX_HELD_RECEIPTS``.
        self.receipts_dropped = 0
        # Recipients with publishes queued, by Ed25519 key: one task serves each (see "Order").
        self._conversations: dict[bytes, _Conversation] = {}
        self._serving = trio.CapacityLimiter(MAX_RECIPIENTS_SERVED)
        # Every outbox message still retried, by recipient: ``message id -> (seq, its last publish)``,
        # published again after a reach (see "Order"). As large as the outbox's own retrying records
        # (the application sends them; no peer can grow it), each an envelope the outbox holds anyway.
        self._unacked: dict[bytes, dict[bytes, tuple[int, PublishEnvelope]]] = {}
        self._recipient_of: dict[bytes, bytes] = {}
        #: Publishes not queued because their recipient's queue was full (the outbox retries them).
        self.publishes_deferred = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the core's timers; the driver's tasks live here until this is cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await self._run_timers()
            finally:
                self._stopped = True

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the driver's; once it stopped, nothing more is started (the
        outbox keeps what was not published, and the next start publishes it again)."""
        assert self._nursery is not None, "the store driver runs before anything sends"
        if not self._stopped:
            self._nursery.start_soon(fn, *args)

    def perform(self, actions: list[Action]) -> None:
        """Carry out the messenger's actions (publishes and mailbox calls run as tasks)."""
        received: list[MessageReceived] = []
        handled: list[bytes] = []
        for action in actions:
            match action:
                case PublishEnvelope(message_id=None):  # a receipt: no order to keep
                    self._spawn(self._publish_receipt, action)
                case PublishEnvelope():
                    self._queue_publish(action)
                case CallMailbox(peer=peer, request=request):
                    self._spawn(self._call_mailbox, peer, request)
                case MessageReceived():
                    received.append(action)
                case StatusChanged():
                    if action.status not in RETRYING:
                        self._settled(action.message_id)
                    self._on_event(action)
                case StoreProblem() | DeviceListChanged() | Linked():
                    self._on_event(action)
                case ControlReceived() | GroupEnvelopes() | EnvelopeStored() | EnvelopeRefused():
                    if self._on_group is None:
                        self.group_actions_dropped += 1
                    else:
                        self._on_group(action)
                    if isinstance(action, ControlReceived):
                        handled.append(action.message_id)
                case _:
                    assert_never(action)
        if handled:  # handed on (the machinery committed what they did): forget the kept copies
            self.perform(self.messenger.controls_handled(handled))
        if received:
            self._on_committed(received)
        self._upload_prekeys()
        self._timer_kick.set()
        self._io.changed()

    def now(self) -> float:
        """The wall time, from the injected clock."""
        return self._wall_clock()

    # --- inputs from the node ---------------------------------------------------------------------

    def receive(self, envelope: bytes) -> None:
        """An envelope arrived on an inbox topic."""
        self.perform(self.messenger.receive([envelope], wall_now=self.now()))

    def reach_and_publish(self, recipient: PublicIdentity, message_id: bytes) -> None:
        """Reach ``recipient`` in the background before publishing ``message_id`` (a first send to a
        contact we are not connected to), in its place among the recipient's messages."""
        conversation = self._conversations.get(recipient.ed25519)
        if conversation is not None and message_id in conversation.queued:
            conversation.reach = True
            return
        self.perform(self.messenger.retry_now(message_id, wall_now=self.now()))

    def retry_pending(self) -> None:
        """Publish and store every pending message again now, reaching its recipient first (a node
        that just started: the persisted retry times may be minutes away). Control messages opened
        before a crash but not handed on are handed on first."""
        self.perform(list(self.messenger.pending_controls()))
        for record in self.messenger.storage.outbox_pending():
            self.perform(self.messenger.retry_now(record.message_id, wall_now=self.now()))

    def peer_joined(self, peer: str) -> None:
        """A peer connected: ask whether it is a mailbox, offer it the receipts we hold for its inbox
        topic (both in the background), and if messages to it wait for a retry, publish them now
        (reaching it first waits for its subscription): a contact that comes back gets what was
        sent meanwhile at once, not at the next retry, which may be half an hour away."""
        self._spawn(self._probe_mailbox, peer)
        if self._held_receipts:
            self._spawn(self._offer_receipts, peer)
        try:
            key = PublicIdentity.from_peer_id(peer).ed25519
        except DecodeError:  # not an Ed25519 PeerId (another libp2p application's peer): not a contact
            return
        for message_id in list(self._unacked.get(key, ())):
            self.perform(self.messenger.retry_now(message_id, wall_now=self.now()))

    def peer_left(self, peer: str) -> None:
        """A peer disconnected: if it was a mailbox, stop using it."""
        if peer in self.messenger.mailboxes:
            mailboxes = [p for p in self.messenger.mailboxes if p != peer]
            self.perform(self.messenger.mailboxes_changed(mailboxes, wall_now=self.now()))

    # --- tasks ---------------------------------------------------------------------------------------

    def _queue_publish(self, action: PublishEnvelope) -> None:
        """Queue an outbox message's publish behind its recipient's others; start the recipient's
        task if none runs. A retry asks for a reach first (it may be back, or never dialled)."""
        mid = action.message_id
        assert mid is not None
        if self._stopped:
            return  # the outbox keeps it: the next start publishes it
        record = self.messenger.status(mid)
        assert record is not None, "the messenger publishes only messages in its outbox"
        conversation = self._conversations.get(record.recipient)
        if conversation is None:
            recipient = PublicIdentity.from_bytes(record.recipient)
            conversation = self._conversations[record.recipient] = _Conversation(recipient)
            self._spawn(self._serve, record.recipient, conversation)
        if record.status in RETRYING:
            self._unacked.setdefault(record.recipient, {})[mid] = (record.seq, action)
            self._recipient_of[mid] = record.recipient
        self.publishes_deferred += conversation.put(mid, record.seq, action)
        conversation.reach = conversation.reach or action.again

    def _settled(self, message_id: bytes) -> None:
        """``message_id`` is retried no more (delivered, read, expired, failed): never publish it again."""
        recipient = self._recipient_of.pop(message_id, None)
        unacked = self._unacked.get(recipient or b"")
        if recipient is None or unacked is None:
            return
        unacked.pop(message_id, None)
        if not unacked:
            del self._unacked[recipient]

    def _queue_unacked_before(self, key: bytes, conversation: _Conversation) -> None:
        """The recipient was just reached (it may have come back, or be reached for the first time):
        queue again every message to it still retried with a lower ``seq`` than one queued, so it
        gets them before that one, not at their own retries (the outbox retries each message on its
        own jittered timer)."""
        if not conversation.queued:
            return
        highest = max(seq for seq, _ in conversation.queued.values())
        for mid, (seq, action) in self._unacked.get(key, {}).items():
            if seq < highest and mid not in conversation.queued:
                again = dataclasses.replace(action, again=True)
                self.publishes_deferred += conversation.put(mid, seq, again)

    async def _serve(self, key: bytes, conversation: _Conversation) -> None:
        """Publish ``conversation``'s queue lowest ``seq`` first, reaching the recipient once whenever
        asked to, until the queue is empty."""
        async with self._serving:
            while conversation.queued:
                if conversation.reach:
                    with trio.move_on_after(REACH_TIMEOUT):
                        await self._io.reach(conversation.recipient, conversation.topic())
                    conversation.reach = False  # retries queued while it ran are served by it
                    self._queue_unacked_before(key, conversation)
                    continue  # publishes may have been queued meanwhile, some with a lower seq
                action = conversation.pop_first()
                if action.message_id in self._recipient_of:  # else delivered (or over) meanwhile
                    await self._publish_message(action)
            del self._conversations[key]  # no checkpoint since the queue was found empty

    async def _publish_message(self, action: PublishEnvelope) -> None:
        assert action.message_id is not None
        peers = 0
        with trio.move_on_after(PUBLISH_FLUSH_TIMEOUT):
            peers = await self._io.publish_and_flush(action.topic, action.envelope, again=action.again)
        self.perform(self.messenger.published(action.message_id, peers=peers, wall_now=self.now()))

    async def _publish_receipt(self, action: PublishEnvelope) -> None:
        """Nobody needs to hear back, but see ``RECEIPT_HOLD``."""
        self._hold_receipt(action.topic, action.envelope)
        await self._io.publish(action.topic, action.envelope)

    async def _call_mailbox(self, peer: str, request: MailboxRequest) -> None:
        try:
            response = await self._io.call_mailbox(peer, request)
        except (NetworkError, DecodeError) as exc:
            self.perform(self.messenger.mailbox_failed(peer, request, str(exc), wall_now=self.now()))
            return
        self.perform(self.messenger.mailbox_replied(peer, request, response, wall_now=self.now()))

    def _upload_prekeys(self) -> None:
        """Start the prekey uploads planned now (one per mailbox at most; usually none)."""
        uploads, nursery = self.prekey_uploads, self._nursery
        if uploads is None or nursery is None or self._stopped:
            return
        for peer, request in uploads.plan(self.messenger.mailboxes, wall_now=self.now()):
            self._spawn(self._put_prekeys, uploads, peer, request)

    async def _put_prekeys(self, uploads: PrekeyUploads, peer: str, request: PrekeysPut) -> None:
        try:
            response = await self._io.call_mailbox(peer, request)
        except (NetworkError, DecodeError):
            uploads.failed(peer, request, reachable=self.messenger.mailboxes, wall_now=self.now())
            return
        uploads.replied(peer, request, response, reachable=self.messenger.mailboxes, wall_now=self.now())
        self._upload_prekeys()  # a holder switch's second half
        self._io.changed()

    async def _run_timers(self) -> None:
        """Call the messenger's timer at its deadline (wall time), re-reading it after every change."""
        while True:
            deadline = self.messenger.next_deadline()
            delay = math.inf if deadline is None else max(0.0, deadline - self.now())
            self._timer_kick = trio.Event()
            with trio.move_on_after(delay):
                await self._timer_kick.wait()
                continue
            self.perform(self.messenger.on_timer(wall_now=self.now()))

    def _hold_receipt(self, topic: str, envelope: bytes) -> None:
        self._held_receipts[envelope] = (topic, self.now() + RECEIPT_HOLD)
        while len(self._held_receipts) > MAX_HELD_RECEIPTS:
            self._held_receipts.popitem(last=False)
            self.receipts_dropped += 1

    async def _offer_receipts(self, peer: str) -> None:
        """Publish again the receipts held for the topics ``peer`` listens on (it may be a sender that
        went away before our receipt reached it)."""
        now = self.now()
        for envelope, (_, until) in list(self._held_receipts.items()):
            if until < now:
                del self._held_receipts[envelope]
        topics = {topic for topic, _ in self._held_receipts.values()}
        if not topics:
            return
        listening = await self._io.wait_listening(peer, topics)
        for envelope, (topic, _) in list(self._held_receipts.items()):
            if topic in listening:
                with trio.move_on_after(PUBLISH_FLUSH_TIMEOUT):
                    await self._io.publish_and_flush(topic, envelope, again=True)

    async def _probe_mailbox(self, peer: str) -> None:
        """A peer joined: if it serves the mailbox protocol, store on it and sync from it at once."""
        if peer in self.messenger.mailboxes or not await self._io.supports_mailbox(peer):
            return
        if peer in self.messenger.mailboxes or not self._io.connected(peer):
            return  # found meanwhile by another probe, or gone while we asked
        mailboxes = [*self.messenger.mailboxes, peer]
        self.perform(self.messenger.mailboxes_changed(mailboxes, wall_now=self.now()))


class NetStoreIO:
    """``StoreIO`` on a libp2p host: meshchat's gossip driver, the mailbox protocol, the dialer."""

    def __init__(
        self,
        host: IHost,
        gossip: GossipDriver,
        dialer: Dialer,
        whereabouts: Callable[[PublicIdentity], Whereabouts | None],
    ) -> None:
        """Publish through ``gossip``, call mailboxes on ``host``, reach recipients with ``dialer`` at
        what ``whereabouts`` says of them (None: not a contact, nothing to dial). Mailbox answers are
        charged to the gossip driver's buffer budget, so one bound covers both."""
        self._host = host
        self._gossip = gossip
        self._budget = gossip.budget
        self._dialer = dialer
        self._whereabouts = whereabouts

    async def publish(self, topic: str, envelope: bytes) -> None:
        await self._gossip.publish(topic, envelope)

    async def publish_and_flush(self, topic: str, envelope: bytes, *, again: bool) -> int:
        return await self._gossip.publish_and_flush(topic, envelope, again=again)

    async def call_mailbox(self, peer: str, request: MailboxRequest) -> MailboxResponse:
        return await call_mailbox(self._host, peer, request, budget=self._budget)

    async def supports_mailbox(self, peer: str) -> bool:
        return await supports_mailbox(self._host, peer)

    def connected(self, peer: str) -> bool:
        return bool(self._host.get_network().connections.get(ID.from_base58(peer)))

    async def reach(self, recipient: PublicIdentity, topic: str) -> None:
        contact = self._whereabouts(recipient)
        if contact is None:
            return  # not a contact: we know no address; relays and mailboxes carry it
        if not self.connected(contact.peer_id) and not await self._dialer.reach(contact):
            return  # the outbox retries it, and mailboxes keep it
        await self.wait_subscribed(contact, topic)

    async def wait_subscribed(self, contact: Whereabouts, topic: str) -> None:
        """Wait (at most ``SUBSCRIPTION_WAIT``) until ``contact`` listens on ``topic``: its subscription
        comes a round trip after the connection."""
        router = self._gossip.router
        with trio.move_on_after(SUBSCRIPTION_WAIT):
            await self._gossip.wait_for(lambda: contact.peer_id in router.topic_peers(topic))

    async def wait_listening(self, peer: str, topics: Collection[str]) -> set[str]:
        router = self._gossip.router

        def listening() -> set[str]:
            return {t for t in topics if peer in router.topic_peers(t)}

        with trio.move_on_after(SUBSCRIPTION_WAIT):
            await self._gossip.wait_for(lambda: bool(listening()))
        return listening()

    def changed(self) -> None:
        self._gossip.notify_changed()
