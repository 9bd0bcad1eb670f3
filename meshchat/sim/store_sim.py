"""Store-and-forward at scale: real ``Messenger``s and ``MailboxCore``s on a virtual clock.

``run_store(StoreScenario(users=1000, mailboxes=10, messages=2000))`` answers the question the
gossip simulator cannot: do messages reach recipients who are offline, or on the other side of a
partition, exactly once and within their TTL, and what does it cost? It is the discrete-event,
networked big brother of ``tests/store_harness.py``: the same cores, driven from one event heap.

**What is real.** Every user is a ``meshchat.store.messenger.Messenger`` with a real ``Identity``
(seeded: ``meshchat.sim.payloads.make_identities``), ``MemoryStorage``, real sealing, opening,
signatures and receipts, and ``StoreConfig(sync_interval, retry_initial, mailbox_copies, ttl)``; its
``rng`` and nonce source come from ``component_rng(seed, ...)``, so the same seed seals the same bytes
and the run is reproducible. Every mailbox is a ``MailboxCore`` on ``MemoryStorage``. Each mailbox
call goes through the wire format (``encode_request`` -> ``decode_request`` at the mailbox,
``encode_response`` -> ``decode_response`` at the caller), and those encoded sizes are the bytes
counted. The cores only take wall time, so the driver's clock *is* the simulated unix time, starting
at ``meshchat.sim.clock.SIM_EPOCH`` (1,800,000,000: a fixed date, so epochs and inbox tags are the
same in every run); timers are armed at exactly the wall time ``next_deadline()`` returns.

**The driver** (STYLE.md section 1: a thin loop around sans-IO cores). Each user has at most one live
timer event, at its messenger's ``next_deadline()``, re-armed after every call into that messenger
(stale events are skipped, as ``meshchat.sim.engine`` does). Actions are performed at once:

- ``CallMailbox``: the request travels one link (one-way delay uniform in ``latency``), the mailbox
  answers at arrival (``MailboxCore.handle``), the response travels back. Each leg is lost with
  probability ``loss``; a lost leg means the caller hears ``mailbox_failed`` ``call_timeout`` seconds
  after it called. A call only starts to a mailbox in the caller's view (same side, online). When a
  connection closes under a call in flight (its user goes offline, or a partition or a carrier's move
  takes the mailbox out of the user's view), the call fails at that moment, *before* the driver
  reports the new view with ``mailboxes_changed`` (see "Found" below for why the order matters), and a
  request still travelling then is lost with its connection.
- ``PublishEnvelope`` (the gossip path) is modelled as **one hop to the online subscribers of the
  topic on the publisher's side**, each copy lost with probability ``loss`` and arriving after one
  link delay; ``published(message_id, peers=n)`` is reported at once with the copies sent. Subscribers
  are those whose ``inbox_tags_around`` (yesterday, today, tomorrow) map to the topic, i.e. exactly
  ``Messenger.topics``. Only the owner of the envelope's tag is handed the envelope: every other
  subscriber's ``receive`` would discard it as "not ours", so that call is skipped (its only effect
  would be that counter). The gossip router itself (mesh, IHAVE/IWANT, scoring) is measured by the
  gossip simulator (``meshchat.sim.engine``), not here.
- ``MessageReceived`` is counted by message id against the ids ``send`` returned; ``StatusChanged``
  records when the sender first saw ``delivered``.

**Who sees which mailbox.** A user's view is every mailbox on its side, in a fixed order (mailboxes
themselves never churn); an offline user's view is empty. Whenever a view changes (the partition
starts or heals, a carrier moves, the user comes online or leaves), the driver calls
``mailboxes_changed`` with it; a mailbox entering the view is synced with at once.

**Workload.** Users boot at uniform times in the first ``BOOT_WINDOW`` seconds (so their periodic
syncs are not in lockstep). ``messages`` sends happen at uniform random times in ``[0, duration]``,
each from a random online user to a random other user, in any state.

**Churn.** ``churn * users`` users, chosen at random, alternate online periods (exponential, mean
``online_mean``) and offline periods (exponential, mean ``offline_mean``, truncated at
``OFFLINE_CAP_FACTOR`` times the mean so every user comes back) starting within ``[0, duration]``.
Offline, a user's ``Messenger`` keeps its state, as a phone app in the background, but is fed nothing:
no timers, no envelopes, no mailbox answers. Back online, it is fed again, starting with
``mailboxes_changed`` (or, with ``restart_on_return``, a new ``Messenger`` is built on the same
``MemoryStorage``: a process restart, which must not re-deliver anything).

**Partition.** With ``partition=(at, heal)`` users and mailboxes are split 50/50 at random from
``at`` to ``heal`` (virtual seconds from the start): no gossip copy and no mailbox call crosses.
**Carriers** are mailboxes that switch sides every ``carrier_period`` seconds during the partition:
what senders stored on them on one side is synced by recipients on the other (delay-tolerant
forwarding), and receipts ride back the same way. With ``groups`` the sides are a region and the
rest, or many LAN-sized clusters, and carriers go round them (``meshchat.sim.store_views``);
``local_share`` draws that share of recipients from the sender's own side. **Removal**: with
``remove_mailboxes=(at, keep)`` every mailbox but ``keep`` leaves every view at ``at`` for good, with
what it holds (calls in flight to it fail as "closed").

**Simplified.** Links have no bandwidth, queueing or per-link persistence (each leg draws its delay
anew); a mailbox answers instantly; mailboxes never go offline; the gossip mesh is one hop; all users
run the same ``StoreConfig``; a carrier's move is instantaneous. Loss is independent per leg and copy.

**Found while building it** (both fixed in ``Messenger``; regression tests in
``tests/test_sim_store.py``): a ``mailbox_failed`` for a mailbox that had left the view set a next
sync that was never consumed (a deadline stuck in the past); and a delivery receipt whose store calls
failed and whose gossip copy missed the sender was never sent again (it is now retried until a
mailbox holds it, and senders re-publish stored messages on a long backoff). This driver still fails
calls before changing a view, and counts any deadline ``on_timer`` did not consume in
``stale_deadlines``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeAlias, assert_never, get_args

from meshchat.crypto import epoch_of, inbox_tags_around, inbox_topic
from meshchat.identity import Identity
from meshchat.sim.clock import SIM_EPOCH
from meshchat.sim.payloads import make_identities
from meshchat.sim.running import PROGRESS_STEPS, collector_paused
from meshchat.sim.store_results import RECEIPTED, collect_results
from meshchat.sim.store_scenario import SentMessage, StoreResults, StoreScenario
from meshchat.sim.store_views import SideViews, assign_sides, carrier_start, next_side
from meshchat.sim.world import component_rng
from meshchat.store.mailbox import MailboxCore
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
from meshchat.store.protocol import (
    Deleted,
    DeleteRequest,
    MailboxRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from meshchat.store.storage import MemoryStorage
from meshchat.wire import decode_envelope

__all__ = [
    "BOOT_WINDOW",
    "OFFLINE_CAP_FACTOR",
    "STALE_DEADLINE_RETRY",
    "SentMessage",
    "StoreResults",
    "StoreScenario",
    "StoreSimulation",
    "run_store",
]

#: Users come online at uniform times in the first this many seconds: phones do not start in lockstep,
#: and neither do their periodic syncs.
BOOT_WINDOW = 60.0
#: An offline period is at most this many times ``offline_mean`` (an exponential truncated there:
#: e^-6, 0.25 % of periods), so every churned user comes back before a drain of that length ends.
OFFLINE_CAP_FACTOR = 6.0
#: Seconds until the driver asks again when the messenger's deadline did not move past an ``on_timer``
#: call at that time (a deadline nothing will consume: see "Found" in the module docstring).
STALE_DEADLINE_RETRY = 1.0
#: Random draws tried to find an online sender before scanning the whole list.
SENDER_DRAWS = 64
#: How ``mailbox_calls_by_kind`` names each request: ``StoreRequest`` is "store", and so on.
_REQUEST_KINDS: dict[type, str] = {
    kind: kind.__name__.removesuffix("Request").lower() for kind in get_args(MailboxRequest)
}


class _Kind(IntEnum):
    """What an event does; slots ``a``, ``b``, ``c`` of each kind are listed."""

    #: A workload message is due: a = its index.
    SEND = 0
    #: A user's timer: a = the user, b = its session.
    TIMER = 1
    #: A mailbox request reaches the mailbox: a = the call, b = the request bytes.
    REQUEST = 2
    #: A mailbox response reaches the caller: a = the call, b = the response bytes.
    REPLY = 3
    #: A call with a lost leg times out: a = the call.
    TIMEOUT = 4
    #: A gossip copy reaches its recipient: a = the user, b = the envelope.
    GOSSIP = 5
    #: A user comes online: a = the user.
    ONLINE = 6
    #: A user goes offline: a = the user.
    OFFLINE = 7
    #: The partition starts.
    SPLIT = 8
    #: The partition heals.
    HEAL = 9
    #: A carrier switches sides: a = the mailbox.
    CARRIER = 10
    #: Every mailbox but the kept ones is removed for good (``remove_mailboxes``).
    REMOVE = 11


#: ``(wall time, sequence, kind, a, b, c)``: the sequence number makes the order total and stable.
_Event: TypeAlias = tuple[float, int, _Kind, Any, Any, Any]


class _User:
    """A user: identity, storage, messenger, and what the driver knows about it."""

    __slots__ = (
        "calls",
        "identity",
        "incarnation",
        "index",
        "messenger",
        "online",
        "peer_id",
        "public",
        "session",
        "side",
        "storage",
        "timer_at",
        "view",
    )

    def __init__(self, index: int, identity: Identity, messenger: Messenger, storage: MemoryStorage) -> None:
        self.index = index
        self.identity = identity
        self.public = identity.public
        self.peer_id = identity.public.peer_id
        self.storage = storage
        self.messenger = messenger
        self.incarnation = 0
        self.online = False
        self.session = 0  # bumped at every online/offline switch: older timer events are stale
        self.side = 0
        self.timer_at = math.inf
        self.view: tuple[str, ...] = ()
        self.calls: dict[str, _Call] = {}  # mailbox peer id -> the call in flight to it


class _Mailbox:
    """A mailbox node."""

    __slots__ = ("carrier", "core", "index", "moves", "peer_id", "removed", "side")

    def __init__(self, index: int, peer_id: str, *, carrier: bool) -> None:
        self.index = index
        self.peer_id = peer_id
        self.core = MailboxCore(MemoryStorage())
        self.carrier = carrier
        self.side = 0
        self.moves = 0  # side switches made (a carrier's)
        self.removed = False


@dataclass(slots=True, eq=False)
class _Call:
    """A mailbox call in flight (identity matters: the user's ``calls`` holds the live one)."""

    user: int
    peer: str
    request: MailboxRequest
    started: float


class StoreSimulation:
    """One run of a ``StoreScenario``: ``run()`` it, or step it with ``run_until`` and look inside."""

    def __init__(self, scenario: StoreScenario) -> None:
        """Build users and mailboxes and schedule the whole run; nothing happens until it runs."""
        self.scenario = s = scenario
        seed = s.seed
        #: Simulated unix time now (the cores' ``wall_now``).
        self.now = float(SIM_EPOCH)
        self._queue: list[_Event] = []
        self._sequence = itertools.count()
        self._latency_rng = component_rng(seed, "store/latency")
        self._loss_rng = component_rng(seed, "store/loss")
        self._workload_rng = component_rng(seed, "store/workload")
        self._config = s.store_config()
        identities = make_identities(s.users + s.mailboxes, component_rng(seed, "store/identities"))
        self.users = [self._new_user(i, identities[i]) for i in range(s.users)]
        self.mailboxes = [
            _Mailbox(j, identities[s.users + j].public.peer_id, carrier=j < s.carriers)
            for j in range(s.mailboxes)
        ]
        self._mailbox_of = {m.peer_id: m for m in self.mailboxes}
        self._views = SideViews(s.sides)
        self._views.everything = tuple(m.peer_id for m in self.mailboxes)
        self.partitioned = False
        #: Set at ``remove_mailboxes``: users online then, of them those that had completed a sync
        #: (the network had formed), and the undelivered messages whose every stored copy went.
        self.online_at_removal = 0
        self.synced_at_removal = 0
        self.stranded: set[bytes] = set()
        #: Every sent message by id.
        self.sent: dict[bytes, SentMessage] = {}
        self.unsent = 0
        self.events = 0
        self.calls = 0
        self.calls_by_kind: Counter[str] = Counter(dict.fromkeys(_REQUEST_KINDS.values(), 0))
        self.empty_deletes = 0
        self.failures: Counter[str] = Counter()
        self.bytes = 0
        self.gossip_copies = 0
        self.stale_deadlines = 0
        self.store_problems = 0
        #: Group actions from the messenger (none are expected: this simulation has no groups).
        self.group_actions = 0
        self.misdelivered = 0
        self.retired_discards: Counter[str] = Counter()
        self.retired_rejects: Counter[str] = Counter()
        self._via = ""
        self._subscribers_day = -1
        self._subscribers: dict[str, list[int]] = {}
        self._owner_of: dict[bytes, int] = {}
        self._plan()

    def _new_user(self, index: int, identity: Identity) -> _User:
        storage = MemoryStorage()
        return _User(index, identity, self._new_messenger(index, 0, identity, storage), storage)

    def _new_messenger(
        self, index: int, incarnation: int, identity: Identity, storage: MemoryStorage
    ) -> Messenger:
        seed = self.scenario.seed
        return Messenger(
            identity,
            storage,
            config=self._config,
            rng=component_rng(seed, f"store/messenger/{index}/{incarnation}"),
            random_bytes=component_rng(seed, f"store/nonces/{index}/{incarnation}").randbytes,
            wall_now=self.now,
        )

    # --- the plan ---------------------------------------------------------------------------------

    def _push(self, wall: float, kind: _Kind, a: Any = None, b: Any = None, c: Any = None) -> None:
        heapq.heappush(self._queue, (wall, next(self._sequence), kind, a, b, c))

    def _at(self, elapsed: float) -> float:
        return SIM_EPOCH + elapsed

    def _plan(self) -> None:
        s = self.scenario
        churn_rng = component_rng(s.seed, "store/churn")
        boots = [churn_rng.uniform(0.0, min(BOOT_WINDOW, s.duration)) for _ in self.users]
        for user, boot in zip(self.users, boots, strict=True):
            self._push(self._at(boot), _Kind.ONLINE, user)
        for index in sorted(churn_rng.sample(range(s.users), round(s.churn * s.users))):
            t = boots[index] + churn_rng.expovariate(1.0 / s.online_mean)
            while t < s.duration:
                away = min(churn_rng.expovariate(1.0 / s.offline_mean), OFFLINE_CAP_FACTOR * s.offline_mean)
                self._push(self._at(t), _Kind.OFFLINE, self.users[index])
                self._push(self._at(t + away), _Kind.ONLINE, self.users[index])
                t += away + churn_rng.expovariate(1.0 / s.online_mean)
        times = sorted(self._workload_rng.uniform(0.0, s.duration) for _ in range(s.messages))
        for index, t in enumerate(times):
            self._push(self._at(t), _Kind.SEND, index)
        if s.partition is not None:
            at, heal = s.partition
            fixed = [m for m in self.mailboxes if not m.carrier]
            assign_sides(self.users, fixed, s, component_rng(s.seed, "store/partition"))
            for mailbox in self.mailboxes:
                if mailbox.carrier:
                    mailbox.side = carrier_start(mailbox.index, s.carriers, s)
                    if at + s.carrier_period < heal:
                        self._push(self._at(at + s.carrier_period), _Kind.CARRIER, mailbox)
            self._push(self._at(at), _Kind.SPLIT)
            self._push(self._at(heal), _Kind.HEAL)
        self._side_members = [[u for u in self.users if u.side == k] for k in range(s.sides)]
        if s.remove_mailboxes is not None:
            self._push(self._at(s.remove_mailboxes[0]), _Kind.REMOVE)

    # --- running ----------------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the start."""
        return self.now - SIM_EPOCH

    def run(self, progress: Callable[[float], None] | None = None) -> StoreResults:
        """Run to ``duration + drain``; call ``progress(fraction)`` along the way."""
        started = time.perf_counter()  # wall time, only for the report: the simulation never sees it
        end = self.scenario.end
        with collector_paused():
            for step in range(1, PROGRESS_STEPS + 1):
                self.run_until(end * step / PROGRESS_STEPS)
                if progress is not None:
                    progress(step / PROGRESS_STEPS)
        return self.results(wall_seconds=time.perf_counter() - started)

    def run_until(self, elapsed: float) -> None:
        """Process every event due up to ``elapsed`` virtual seconds; leave the clock there."""
        limit = self._at(elapsed)
        queue = self._queue
        kinds = _Kind
        count = 0
        while queue and queue[0][0] <= limit:
            event = heapq.heappop(queue)
            self.now = event[0]
            count += 1
            kind = event[2]
            if kind is kinds.REQUEST:
                self._on_request(event[3], event[4])
            elif kind is kinds.REPLY:
                self._on_reply(event[3], event[4])
            elif kind is kinds.TIMER:
                self._on_timer(event[3], event[4])
            elif kind is kinds.GOSSIP:
                self._on_gossip(event[3], event[4])
            elif kind is kinds.TIMEOUT:
                self._on_timeout(event[3])
            elif kind is kinds.SEND:
                self._on_send(event[3])
            elif kind is kinds.ONLINE:
                self._on_online(event[3])
            elif kind is kinds.OFFLINE:
                self._on_offline(event[3])
            elif kind is kinds.SPLIT or kind is kinds.HEAL:
                self.partitioned = kind is kinds.SPLIT
                self._refresh_sides()
            elif kind is kinds.CARRIER:
                self._on_carrier(event[3])
            elif kind is kinds.REMOVE:
                self._on_remove()
            else:
                assert_never(kind)
        self.now = max(self.now, limit)
        self.events += count

    # --- feeding messengers -------------------------------------------------------------------------

    def _feed(self, user: _User, actions: list[Action]) -> None:
        """Perform a messenger call's actions, then arm the user's timer if its deadline moved earlier."""
        if actions:
            self._perform(user, actions)
        if not user.online:
            return
        deadline = user.messenger.next_deadline()
        if deadline is not None:
            deadline = max(deadline, self.now)
            if deadline < user.timer_at:
                user.timer_at = deadline
                self._push(deadline, _Kind.TIMER, user, user.session)

    def _perform(self, user: _User, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case CallMailbox(peer=peer, request=request):
                    self._call(user, peer, request)
                case PublishEnvelope():
                    self._publish(user, action)
                case MessageReceived(message=message):
                    record = self.sent.get(message.message_id)
                    if record is None or record.recipient != user.index:
                        self.misdelivered += 1
                        continue
                    record.deliveries += 1
                    if record.deliveries == 1:
                        record.delivered_at = self.elapsed
                        record.via = self._via
                case StatusChanged(message_id=mid, status=status):
                    sent = self.sent.get(mid)
                    if sent is not None and sent.receipt_at is None and status in RECEIPTED:
                        sent.receipt_at = self.elapsed
                case StoreProblem():
                    self.store_problems += 1
                case ControlReceived() | GroupEnvelopes() | EnvelopeStored() | EnvelopeRefused():
                    self.group_actions += 1  # nobody sends these here (``meshchat.sim.group_sim`` does)
                case DeviceListChanged() | Linked():
                    self.group_actions += 1  # simulated users have one device each
                case _:
                    assert_never(action)

    def _on_timer(self, user: _User, session: int) -> None:
        if not user.online or session != user.session or self.now != user.timer_at:
            return  # stale: the user left, or an earlier deadline replaced this one
        user.timer_at = math.inf
        messenger = user.messenger
        actions = messenger.on_timer(wall_now=self.now)
        if actions:
            self._perform(user, actions)
        deadline = messenger.next_deadline()
        if deadline is not None:
            if deadline <= self.now:
                self.stale_deadlines += 1
                deadline = self.now + STALE_DEADLINE_RETRY
            user.timer_at = deadline
            self._push(deadline, _Kind.TIMER, user, user.session)

    # --- mailbox calls ----------------------------------------------------------------------------

    def _call(self, user: _User, peer: str, request: MailboxRequest) -> None:
        assert user.online and peer in user.view, "a messenger calls only mailboxes in its view"
        assert peer not in user.calls, "a messenger has one call in flight per mailbox"
        self.calls += 1
        self.calls_by_kind[_REQUEST_KINDS[type(request)]] += 1
        call = _Call(user=user.index, peer=peer, request=request, started=self.now)
        user.calls[peer] = call
        data = encode_request(request)
        self.bytes += len(data)
        if self._lost():
            self._push(self.now + self.scenario.call_timeout, _Kind.TIMEOUT, call)
        else:
            self._push(self.now + self._delay(), _Kind.REQUEST, call, data)

    def _on_request(self, call: _Call, data: bytes) -> None:
        user = self.users[call.user]
        if user.calls.get(call.peer) is not call:
            return  # the connection closed while the request travelled: it went down with it
        response = self._mailbox_of[call.peer].core.handle(
            user.peer_id, decode_request(data), wall_now=self.now
        )
        if type(call.request) is DeleteRequest and type(response) is Deleted and response.count == 0:
            self.empty_deletes += 1
        answer = encode_response(response)
        self.bytes += len(answer)
        if self._lost():
            self._push(call.started + self.scenario.call_timeout, _Kind.TIMEOUT, call)
        else:
            self._push(self.now + self._delay(), _Kind.REPLY, call, answer)

    def _on_reply(self, call: _Call, data: bytes) -> None:
        user = self.users[call.user]
        if user.calls.get(call.peer) is not call:
            return  # already failed: the connection closed under it
        del user.calls[call.peer]
        self._via = "mailbox"
        actions = user.messenger.mailbox_replied(
            call.peer, call.request, decode_response(data), wall_now=self.now
        )
        self._feed(user, actions)

    def _on_timeout(self, call: _Call) -> None:
        user = self.users[call.user]
        if user.calls.get(call.peer) is not call:
            return
        del user.calls[call.peer]
        self.failures["lost"] += 1
        self._feed(
            user, user.messenger.mailbox_failed(call.peer, call.request, "timed out", wall_now=self.now)
        )

    def _lost(self) -> bool:
        loss = self.scenario.loss
        return loss > 0 and self._loss_rng.random() < loss

    def _delay(self) -> float:
        low, high = self.scenario.latency
        return self._latency_rng.uniform(low, high)

    # --- gossip -----------------------------------------------------------------------------------

    def _publish(self, user: _User, action: PublishEnvelope) -> None:
        if not user.online:
            return
        today = epoch_of(self.now)
        if today != self._subscribers_day:
            self._index_tags(today)
        owner = self._owner_of.get(decode_envelope(action.envelope).inbox_tag)
        users, side, partitioned = self.users, user.side, self.partitioned
        peers = 0
        for index in self._subscribers.get(action.topic, ()):
            other = users[index]
            if other is user or not other.online or (partitioned and other.side != side) or self._lost():
                continue
            peers += 1
            if index == owner:
                self._push(self.now + self._delay(), _Kind.GOSSIP, other, action.envelope)
        self.gossip_copies += peers
        self.bytes += peers * len(action.envelope)
        if action.message_id is not None and peers:
            self._perform(user, user.messenger.published(action.message_id, peers=peers, wall_now=self.now))

    def _index_tags(self, today: int) -> None:
        """Who subscribes to each inbox topic on day ``today`` (``Messenger.topics``), and whose tag each
        of yesterday's, today's and tomorrow's tags is."""
        self._subscribers_day = today
        self._subscribers = {}
        self._owner_of = {}
        for user in self.users:
            for tag in inbox_tags_around(user.public, self.now):
                self._owner_of[tag] = user.index
                members = self._subscribers.setdefault(inbox_topic(tag), [])
                if not members or members[-1] != user.index:  # two of its tags may share a shard
                    members.append(user.index)

    def _on_gossip(self, user: _User, envelope: bytes) -> None:
        if not user.online:
            return
        self._via = "gossip"
        self._feed(user, user.messenger.receive([envelope], wall_now=self.now))

    # --- workload, churn, partition -----------------------------------------------------------------

    def _on_send(self, index: int) -> None:
        rng, users = self._workload_rng, self.users
        sender = self._pick_sender()
        if sender is None:
            self.unsent += 1
            return
        local = self.scenario.local_share
        members = self._side_members[sender.side]
        if local is not None and len(members) > 1 and rng.random() < local:
            recipient = members[rng.randrange(len(members) - 1)]
            if recipient is sender:  # uniform over the others: the last one stands in for the sender
                recipient = members[-1]
        else:
            pick = rng.randrange(len(users) - 1)
            recipient = users[pick + 1 if pick >= sender.index else pick]
        record, actions = sender.messenger.send(
            recipient.public, f"message {index}".encode(), wall_now=self.now
        )
        self.sent[record.message_id] = SentMessage(
            index=index,
            sender=sender.index,
            recipient=recipient.index,
            sent_at=self.elapsed,
            cross_partition=self.partitioned and sender.side != recipient.side,
            recipient_offline=not recipient.online,
        )
        self._feed(sender, actions)

    def _pick_sender(self) -> _User | None:
        rng, users = self._workload_rng, self.users
        for _ in range(SENDER_DRAWS):
            user = users[rng.randrange(len(users))]
            if user.online:
                return user
        online = [u for u in users if u.online]
        return rng.choice(online) if online else None

    def _on_online(self, user: _User) -> None:
        if user.online:
            return
        if self.scenario.restart_on_return and user.session > 0:
            retired = user.messenger.statistics()
            self.retired_discards.update(retired.discarded)
            self.retired_rejects.update(retired.rejected)
            user.incarnation += 1
            user.messenger = self._new_messenger(user.index, user.incarnation, user.identity, user.storage)
        user.online = True
        user.session += 1
        self._set_view(user)

    def _on_offline(self, user: _User) -> None:
        if not user.online:
            return
        user.online = False
        user.session += 1
        user.timer_at = math.inf
        self._set_view(user)

    def _on_carrier(self, mailbox: _Mailbox) -> None:
        mailbox.side = next_side(mailbox.side, self.scenario.sides)
        mailbox.moves += 1
        self._refresh_sides()
        heal = self.scenario.partition[1] if self.scenario.partition is not None else 0.0
        following = self.elapsed + self.scenario.carrier_period
        if following < heal:
            self._push(self._at(following), _Kind.CARRIER, mailbox)

    def _on_remove(self) -> None:
        """Every mailbox but ``keep`` of them goes for good, with what it holds."""
        assert self.scenario.remove_mailboxes is not None
        keep = self.scenario.remove_mailboxes[1]
        rng = component_rng(self.scenario.seed, "store/removal")
        kept = set(rng.sample(range(len(self.mailboxes)), keep))
        gone = {m.peer_id for m in self.mailboxes if m.index not in kept}
        online = [u for u in self.users if u.online]
        self.online_at_removal = len(online)
        self.synced_at_removal = sum(u.messenger.statistics().syncs > 0 for u in online)
        for mid, record in self.sent.items():
            if record.delivered_at is None:
                outbox = self.users[record.sender].storage.outbox_get(mid)
                if outbox is not None and outbox.stored_on and set(outbox.stored_on) <= gone:
                    self.stranded.add(mid)
        for mailbox in self.mailboxes:
            if mailbox.peer_id in gone:
                mailbox.removed = True
                mailbox.core = MailboxCore(MemoryStorage())  # what it held is gone with it
        self._refresh_sides()

    def _refresh_sides(self) -> None:
        self._views.refresh((m.peer_id, m.side) for m in self.mailboxes if not m.removed)
        for user in self.users:
            if user.online:
                self._set_view(user)

    def _view_of(self, user: _User) -> tuple[str, ...]:
        if not user.online:
            return ()
        return self._views.view(user.side, partitioned=self.partitioned)

    def _set_view(self, user: _User) -> None:
        """Tell ``user``'s messenger its view changed; first fail the calls whose connections closed."""
        view = self._view_of(user)
        if view == user.view:
            return
        messenger = user.messenger
        for peer in [p for p in user.calls if p not in view]:
            call = user.calls.pop(peer)
            self.failures["closed"] += 1
            self._feed(
                user, messenger.mailbox_failed(peer, call.request, "connection closed", wall_now=self.now)
            )
        user.view = view
        self._feed(user, messenger.mailboxes_changed(view, wall_now=self.now))

    # --- results ----------------------------------------------------------------------------------

    def results(self, *, wall_seconds: float) -> StoreResults:
        """The figures of the run so far (computed in ``meshchat.sim.store_results``)."""
        return collect_results(self, wall_seconds=wall_seconds)


def run_store(scenario: StoreScenario, progress: Callable[[float], None] | None = None) -> StoreResults:
    """Run ``scenario`` to the end and return its results."""
    return StoreSimulation(scenario).run(progress)
