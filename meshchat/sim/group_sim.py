"""Groups at scale: real ``GroupsCore``s over real ``Messenger``s and ``MailboxCore``s, virtual clock.

``GroupSimulation`` is the driver; ``meshchat.sim.group_runs`` scripts the runs (fan-out, removal,
churn, partition) on it. Everything cryptographic is real: every user has a seeded ``Identity``
(``meshchat.sim.payloads.make_identities``), a ``Messenger`` on ``MemoryStorage`` and a ``GroupsCore``
on ``MemoryGroupStorage``; both cores draw their nonces and keys from ``component_rng(seed, ...)``, so
the same seed seals the same bytes and a run is reproducible to the byte. Mailboxes are
``MailboxCore``s; every call goes through the wire format and its encoded sizes are the bytes counted.
The clock is simulated unix time from ``meshchat.sim.clock.SIM_EPOCH``; timers fire at exactly the
wall time the cores' ``next_deadline()`` return (one timer per user for both cores).

**The driver** performs what the cores ask, as ``meshchat.net.group_driver`` does on a network:

- ``SendControl`` -> ``Messenger.send(recipient, body, control=True, ttl=...)``, and the messenger's
  actions as ``meshchat.sim.store_sim`` performs them: ``PublishEnvelope`` is one hop to the owner of
  the envelope's inbox tag (link delay, may be lost; the other subscribers of the shard are not
  modelled), ``CallMailbox`` is a request and a response over two links to a ``MailboxCore``.
- The messenger's ``ControlReceived`` -> ``GroupsCore.control_received``; ``GroupEnvelopes`` ->
  ``envelopes_received``; ``EnvelopeStored`` -> ``stored``.
- ``PublishGroup`` -> one copy to every online member subscribed to the group topic on the
  publisher's side, each after its own link delay, uniform in ``latency`` (50-150 ms by default),
  each lost with probability ``loss``; a copy goes through the subscriber's ``Messenger.receive``
  (its seen window drops what a sync brought first) and comes out as ``GroupEnvelopes``. Then
  ``Messenger.store_shared`` puts it on mailboxes. **The topic is modelled as one hop from the
  publisher to each subscriber**: the gossip mesh itself (mesh degree, IHAVE/IWANT, scoring,
  several hops) is measured by the gossip simulator, ``meshchat.sim.engine``.
- ``GroupSeen`` -> ``Messenger.group_accepted``; ``TopicsChanged`` -> the user's topics are
  recomputed (``GroupsCore.topics``) and ``Messenger.watch_tags(GroupsCore.tags(now))``.
- ``GroupInvited``: the user accepts at once (``GroupsCore.join``), unless the run says otherwise.
- ``GroupMessage`` is recorded per (message, user) with its time: the measure of delivery.

**Sides.** ``split`` puts every user and mailbox on side 0 or 1: no copy and no mailbox call
crosses; calls in flight to a mailbox that leaves a view fail first, then the messenger hears
``mailboxes_changed`` (as in ``store_sim``). ``heal`` joins the sides again; every messenger then
syncs with the mailboxes that came into view.

**Eavesdroppers.** A user marked with ``eavesdrop`` keeps receiving its group topics' copies after
its core left them (an insider who stays subscribed, the worst case of a removal); those copies go
straight to its ``GroupsCore.envelopes_received``, so any ``GroupMessage`` it emits after its
removal is recorded and a removal property check fails.

**Simplified.** Every user is online all the time (group membership churns, not connectivity); links
have no bandwidth or queueing; a mailbox answers at once; the cores' CPU time is not virtual time
(a sender handing its chain to 999 members takes ~0.2 s of real CPU that the simulated clock does not
see). Group topics are recomputed on ``TopicsChanged`` only: a run does not cross a day.

**Found while building it** (the partition and churn runs), all fixed in ``GroupsCore`` since, with
regression tests in ``tests/test_sim_groups.py``: a member added on one side of a partition never
learnt the other side's ops (sealed with chains it never had), so it never converged and kept handing
its chain to a member removed on the other side; an invitation in several parts was lost when its
first part arrived first; a chain handout that reached a member before the op making its sender a
member (or before the invitation) was dropped for good. The ops of the other side travel through the
group envelopes its members stored on mailboxes (``store_shared``), fetched by the syncs after the
heal.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, TypeAlias, assert_never, get_args

from meshchat.crypto import epoch_of, inbox_tags_around
from meshchat.groups.chains import decode_handout
from meshchat.groups.core import GroupsCore
from meshchat.groups.events import (
    GroupAction,
    GroupChanged,
    GroupInvited,
    GroupMessage,
    GroupProblem,
    GroupSeen,
    GroupStatus,
    PublishGroup,
    SendControl,
    TopicsChanged,
)
from meshchat.groups.payload import ChainControl, OpsControl, OpsWanted, ReceiptControl, decode_control
from meshchat.groups.storage import MemoryGroupStorage
from meshchat.identity import Identity, KeyCache
from meshchat.sim.clock import SIM_EPOCH
from meshchat.sim.group_scenario import GroupScenario
from meshchat.sim.payloads import make_identities
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
    MailboxRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from meshchat.store.storage import MemoryStorage
from meshchat.wire import decode_envelope

__all__ = ["GroupSimulation", "SimUser"]

#: Seconds until the driver asks again when a core's deadline did not move past its ``on_timer``.
STALE_DEADLINE_RETRY = 1.0
#: How ``calls_by_kind`` names each request.
_REQUEST_KINDS: dict[type, str] = {
    kind: kind.__name__.removesuffix("Request").lower() for kind in get_args(MailboxRequest)
}


class _Kind(IntEnum):
    """What an event does (slots ``a``, ``b`` per kind)."""

    #: A user's timer: a = the user, b = the timer's generation.
    TIMER = 0
    #: A mailbox request reaches the mailbox: a = the call, b = the request bytes.
    REQUEST = 1
    #: A mailbox response reaches the caller: a = the call, b = the response bytes.
    REPLY = 2
    #: A call with a lost leg times out: a = the call.
    TIMEOUT = 3
    #: A 1:1 copy reaches its recipient: a = the user, b = the envelope.
    DIRECT = 4
    #: A group topic copy reaches a subscriber: a = the user, b = the envelope.
    GROUP = 5
    #: A scripted step: a = a callable without arguments.
    STEP = 6
    #: A group copy reaches an eavesdropper whose core left the topic: a = the user, b = the envelope.
    EAVESDROP = 7


_Event: TypeAlias = tuple[float, int, _Kind, Any, Any]
#: What brought the inputs an event feeds (``changes_via``).
_VIA = {
    _Kind.TIMER: "timer",
    _Kind.REQUEST: "mailbox",
    _Kind.REPLY: "mailbox",
    _Kind.TIMEOUT: "mailbox",
    _Kind.DIRECT: "direct",
    _Kind.GROUP: "topic",
    _Kind.STEP: "local",
    _Kind.EAVESDROP: "topic",
}


class _Call:
    """A mailbox call in flight (identity matters: the user's ``calls`` holds the live one)."""

    __slots__ = ("peer", "request", "started", "user")

    def __init__(self, user: int, peer: str, request: MailboxRequest, started: float) -> None:
        self.user = user
        self.peer = peer
        self.request = request
        self.started = started


class SimUser:
    """One user: identity, both cores, what the driver knows about it, and what it received."""

    def __init__(self, index: int, identity: Identity, messenger: Messenger, core: GroupsCore) -> None:
        """A user online on side 0 with no view yet."""
        self.index = index
        self.identity = identity
        self.public = identity.public
        self.key = identity.public.ed25519
        self.peer_id = identity.public.peer_id
        self.messenger = messenger
        self.core = core
        self.side = 0
        self.view: tuple[str, ...] = ()
        self.calls: dict[str, _Call] = {}
        self.timer_at = math.inf
        self.timer_generation = 0
        #: Group topics followed (as the core says).
        self.topics: frozenset[str] = frozenset()
        #: Accept invitations at once.
        self.auto_join = True
        #: Keep receiving group copies after the core left the topics (see the module docstring).
        self.eavesdrop = False
        #: Bytes received: group topic copies, 1:1 copies (control messages, receipts), mailbox answers.
        self.bytes_group = 0
        self.bytes_direct = 0
        self.bytes_mailbox = 0
        #: Chain ids handed to this user (decoded from the control messages addressed to it).
        self.chains_handed: set[bytes] = set()


class _Mailbox:
    __slots__ = ("core", "peer_id", "side")

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self.core = MailboxCore(MemoryStorage())
        self.side = 0


class GroupSimulation:
    """Users with both cores, mailboxes, links and a virtual clock; scripted by ``group_runs``."""

    def __init__(self, scenario: GroupScenario, *, users: int) -> None:
        """Build ``users`` users and the scenario's mailboxes, all online, every view complete."""
        self.scenario = s = scenario
        self.now = float(SIM_EPOCH)
        self._queue: list[_Event] = []
        self._sequence = itertools.count()
        self._latency_rng = component_rng(s.seed, "group/latency")
        self._loss_rng = component_rng(s.seed, "group/loss")
        identities = make_identities(users + s.mailboxes, component_rng(s.seed, "group/identities"))
        config = s.store_config()
        #: One cache of checked signing keys for every core (and the driver's handout decoding): each
        #: new chain's key is checked once, not by each of its ~1,000 readers (pure: same results).
        self._keys = KeyCache()
        self.users: list[SimUser] = []
        for index in range(users):
            identity = identities[index]
            messenger = Messenger(
                identity,
                MemoryStorage(),
                config=config,
                rng=component_rng(s.seed, f"group/messenger/{index}"),
                random_bytes=component_rng(s.seed, f"group/nonces/{index}").randbytes,
                wall_now=self.now,
            )
            core = GroupsCore(
                identity,
                MemoryGroupStorage(),
                wall_now=self.now,
                random_bytes=component_rng(s.seed, f"group/keys/{index}").randbytes,
                key_cache=self._keys,
            )
            self.users.append(SimUser(index, identity, messenger, core))
        self.by_key = {u.key: u for u in self.users}
        self.mailboxes = [_Mailbox(identities[users + j].public.peer_id) for j in range(s.mailboxes)]
        self._mailbox_of = {m.peer_id: m for m in self.mailboxes}
        self.partitioned = False
        self._subscribers: dict[str, set[int]] = {}
        self._owner_day = -1
        self._owner_of: dict[bytes, int] = {}
        #: (message id, user index) -> virtual seconds when that user's core emitted ``GroupMessage``.
        self.decrypted: dict[tuple[bytes, int], float] = {}
        #: ``GroupMessage`` events for a (message, user) already recorded.
        self.duplicates = 0
        #: Per user, the group messages its core emitted (message ids, in order).
        self.received_by: list[list[bytes]] = [[] for _ in self.users]
        self.events = 0
        self.calls = 0
        self.calls_by_kind: Counter[str] = Counter()
        self.controls: Counter[str] = Counter()
        #: Bytes moved over every link (copies, requests, responses), all users.
        self.bytes_total = 0
        self.counts: Counter[str] = Counter()
        self.group_changes: list[GroupChanged] = []
        #: ``GroupChanged`` events (a member learning an op) by what brought the op: ``topic`` (a group
        #: copy), ``mailbox`` (a sync or a store answer), ``direct`` (a 1:1 control message), ``local``.
        self.changes_via: Counter[str] = Counter()
        self._via = "local"
        self.invited: dict[int, float] = {}
        for user in self.users:
            self._set_view(user)

    # --- time -------------------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the start."""
        return self.now - SIM_EPOCH

    def _push(self, wall: float, kind: _Kind, a: Any = None, b: Any = None) -> None:
        heapq.heappush(self._queue, (wall, next(self._sequence), kind, a, b))

    def at(self, elapsed: float, step: Callable[[], None]) -> None:
        """Run ``step`` at ``elapsed`` virtual seconds (after the events already due then)."""
        self._push(SIM_EPOCH + max(elapsed, self.elapsed), _Kind.STEP, step)

    def run_until(self, elapsed: float) -> None:
        """Process every event due up to ``elapsed`` virtual seconds; leave the clock there."""
        limit = SIM_EPOCH + elapsed
        queue, kinds = self._queue, _Kind
        while queue and queue[0][0] <= limit:
            wall, _, kind, a, b = heapq.heappop(queue)
            self.now = wall
            self.events += 1
            self._via = _VIA[kind]
            if kind is kinds.GROUP:
                self._on_group_copy(a, b)
            elif kind is kinds.DIRECT:
                self._on_direct(a, b)
            elif kind is kinds.REQUEST:
                self._on_request(a, b)
            elif kind is kinds.REPLY:
                self._on_reply(a, b)
            elif kind is kinds.TIMER:
                self._on_timer(a, b)
            elif kind is kinds.TIMEOUT:
                self._on_timeout(a)
            elif kind is kinds.STEP:
                a()
            elif kind is kinds.EAVESDROP:
                a.bytes_group += len(b)
                self._perform(a, a.core.envelopes_received([b], wall_now=self.now))
                self._arm(a)
            else:
                assert_never(kind)
        self.now = max(self.now, limit)

    def run_while(self, pending: Callable[[], bool], *, limit: float, step: float = 0.5) -> float | None:
        """Run in ``step``-second slices while ``pending()`` holds, at most ``limit`` seconds; return the
        virtual seconds from the start when it stopped holding (None: it still held at the limit)."""
        end = self.elapsed + limit
        while pending():
            if self.elapsed >= end:
                return None
            self.run_until(min(end, self.elapsed + step))
        return self.elapsed

    # --- the application's calls (scripted) -----------------------------------------------------------

    def create(self, admin: SimUser, members: Sequence[SimUser], name: str) -> bytes:
        """``admin`` creates a group with ``members``; returns the group id."""
        group_id, actions = admin.core.create(name, [m.public for m in members], wall_now=self.now)
        self._perform(admin, actions)
        self._arm(admin)
        return group_id

    def send(self, user: SimUser, group_id: bytes, body: bytes) -> bytes:
        """``user`` sends ``body`` to the group; returns the envelope's message id."""
        out, actions = user.core.send(group_id, body, wall_now=self.now)
        self.decrypted.setdefault((out.message_id, user.index), self.elapsed)
        self._perform(user, actions)
        self._arm(user)
        return out.message_id

    def apply(self, user: SimUser, call: Callable[[GroupsCore], list[GroupAction]]) -> None:
        """Perform what ``call(user.core)`` returns (``invite``, ``remove``, ``leave``, ``promote`` ...)."""
        self._perform(user, call(user.core))
        self._arm(user)

    # --- sides ------------------------------------------------------------------------------------------

    def split(self, side_of_user: Sequence[int], side_of_mailbox: Sequence[int]) -> None:
        """Partition: nothing crosses between side 0 and side 1 until ``heal``."""
        for user, side in zip(self.users, side_of_user, strict=True):
            user.side = side
        for mailbox, side in zip(self.mailboxes, side_of_mailbox, strict=True):
            mailbox.side = side
        self.partitioned = True
        for user in self.users:
            self._set_view(user)

    def heal(self) -> None:
        """End the partition: every user sees every mailbox again."""
        self.partitioned = False
        for user in self.users:
            self._set_view(user)

    def _reachable(self, a: SimUser, b: SimUser) -> bool:
        return not self.partitioned or a.side == b.side

    def _set_view(self, user: SimUser) -> None:
        view = tuple(m.peer_id for m in self.mailboxes if not self.partitioned or m.side == user.side)
        if view == user.view:
            return
        messenger = user.messenger
        for peer in [p for p in user.calls if p not in view]:
            call = user.calls.pop(peer)
            self.counts["calls_closed"] += 1
            self._feed(
                user, messenger.mailbox_failed(peer, call.request, "connection closed", wall_now=self.now)
            )
        user.view = view
        self._feed(user, messenger.mailboxes_changed(view, wall_now=self.now))

    # --- performing the cores' actions -------------------------------------------------------------------

    def _feed(self, user: SimUser, actions: list[Action]) -> None:
        if actions:
            self._perform_store(user, actions)
        self._arm(user)

    def _perform_store(self, user: SimUser, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case CallMailbox(peer=peer, request=request):
                    self._call(user, peer, request)
                case PublishEnvelope():
                    self._publish_direct(user, action)
                case ControlReceived(sender=sender, body=body, message_id=mid):
                    self._perform(user, user.core.control_received(sender, body, wall_now=self.now))
                    self._perform_store(user, user.messenger.controls_handled([mid]))
                case GroupEnvelopes(envelopes=envelopes):
                    self._perform(user, user.core.envelopes_received(envelopes, wall_now=self.now))
                case EnvelopeStored(message_id=mid, peer=peer):
                    self._perform(user, user.core.stored(mid, peer, wall_now=self.now))
                case EnvelopeRefused():
                    self.counts["shared_refused"] += 1
                case MessageReceived():
                    self.counts["chats_received"] += 1  # none expected: only control messages go 1:1
                case StatusChanged():
                    pass
                case DeviceListChanged() | Linked():
                    self.counts["device_changes"] += 1  # simulated members have one device each
                case StoreProblem():
                    self.counts["store_problems"] += 1
                case _:
                    assert_never(action)

    def _perform(self, user: SimUser, actions: list[GroupAction]) -> None:
        for action in actions:
            match action:
                case SendControl():
                    self._send_control(user, action)
                case PublishGroup():
                    self._publish_group(user, action)
                    self._perform_store(
                        user,
                        user.messenger.store_shared(
                            action.tag, action.message_id, action.envelope, wall_now=self.now
                        ),
                    )
                case GroupSeen(entries=entries):
                    self._perform_store(user, user.messenger.group_accepted(entries, wall_now=self.now))
                case TopicsChanged():
                    self._follow_topics(user)
                case GroupMessage(message_id=mid):
                    key = (mid, user.index)
                    if key in self.decrypted:
                        self.duplicates += 1
                    else:
                        self.decrypted[key] = self.elapsed
                        self.received_by[user.index].append(mid)
                case GroupInvited(group_id=group_id):
                    self.invited.setdefault(user.index, self.elapsed)
                    if user.auto_join:
                        self._perform(user, user.core.join(group_id, wall_now=self.now))
                case GroupChanged():
                    self.group_changes.append(action)
                    self.changes_via[self._via] += 1
                case GroupStatus():
                    pass
                case GroupProblem():
                    self.counts["group_problems"] += 1
                case _:
                    assert_never(action)

    def _send_control(self, user: SimUser, action: SendControl) -> None:
        recipient = self.by_key.get(action.recipient)
        if recipient is None:
            self.counts["control_to_stranger"] += 1
            return
        control = decode_control(action.body)  # the driver reads it only to count and to check removals
        match control:
            case OpsControl():
                self.controls["ops"] += 1
            case ChainControl():
                self.controls["chain"] += 1
                recipient.chains_handed.add(decode_handout(control.handout, key_cache=self._keys).chain_id)
            case ReceiptControl():
                self.controls["receipt"] += 1
            case OpsWanted():
                self.controls["wanted"] += 1
        _, actions = user.messenger.send(
            recipient.public,
            action.body,
            wall_now=self.now,
            ttl=action.ttl,
            control=True,
            ref=f"group-control:{action.control_id.hex()}" if action.control_id else "",
        )
        self._perform_store(user, actions)
        if action.control_id:  # the messenger's outbox has it now: the groups store may forget it
            user.core.controls_queued([action.control_id])

    def _follow_topics(self, user: SimUser) -> None:
        wanted = frozenset(user.core.topics(self.now))
        for topic in user.topics - wanted:
            if not user.eavesdrop:
                self._subscribers[topic].discard(user.index)
        for topic in wanted - user.topics:
            self._subscribers.setdefault(topic, set()).add(user.index)
        user.topics = wanted if not user.eavesdrop else user.topics | wanted
        self._perform_store(
            user, user.messenger.watch_tags(list(user.core.tags(self.now)), wall_now=self.now)
        )

    def _arm(self, user: SimUser) -> None:
        deadline = _earliest(user.messenger.next_deadline(), user.core.next_deadline())
        if deadline is not None:
            deadline = max(deadline, self.now)
            if deadline < user.timer_at:
                user.timer_at = deadline
                user.timer_generation += 1
                self._push(deadline, _Kind.TIMER, user, user.timer_generation)

    def _on_timer(self, user: SimUser, generation: int) -> None:
        if generation != user.timer_generation:
            return  # an earlier deadline replaced this one
        user.timer_at = math.inf
        now = self.now
        messenger_due = user.messenger.next_deadline()
        if messenger_due is not None and messenger_due <= now:
            self._perform_store(user, user.messenger.on_timer(wall_now=now))
        core_due = user.core.next_deadline()
        if core_due is not None and core_due <= now:
            self._perform(user, user.core.on_timer(wall_now=now))
        deadline = _earliest(user.messenger.next_deadline(), user.core.next_deadline())
        if deadline is not None and deadline < user.timer_at:
            if deadline <= now:
                self.counts["stale_deadlines"] += 1
                deadline = now + STALE_DEADLINE_RETRY
            user.timer_at = deadline
            user.timer_generation += 1
            self._push(deadline, _Kind.TIMER, user, user.timer_generation)

    # --- links ------------------------------------------------------------------------------------------

    def _lost(self) -> bool:
        loss = self.scenario.loss
        return loss > 0 and self._loss_rng.random() < loss

    def _delay(self) -> float:
        low, high = self.scenario.latency
        return self._latency_rng.uniform(low, high)

    def _publish_group(self, user: SimUser, action: PublishGroup) -> None:
        size = len(action.envelope)
        copies = 0
        for index in sorted(self._subscribers.get(action.topic, ())):
            other = self.users[index]
            if other is user or not self._reachable(user, other) or self._lost():
                continue
            copies += 1
            listens = other.eavesdrop and action.topic not in other.core.topics(self.now)
            self._push(
                self.now + self._delay(), _Kind.EAVESDROP if listens else _Kind.GROUP, other, action.envelope
            )
        self.bytes_total += copies * size
        self.counts["group_copies"] += copies

    def _on_group_copy(self, user: SimUser, envelope: bytes) -> None:
        user.bytes_group += len(envelope)
        self._feed(user, user.messenger.receive([envelope], wall_now=self.now))

    def _publish_direct(self, user: SimUser, action: PublishEnvelope) -> None:
        day = epoch_of(self.now)
        if day != self._owner_day:
            self._owner_day = day
            self._owner_of = {
                tag: u.index for u in self.users for tag in inbox_tags_around(u.public, self.now)
            }
        owner = self._owner_of.get(decode_envelope(action.envelope).inbox_tag)
        if owner is None:
            return
        other = self.users[owner]
        if other is user or not self._reachable(user, other) or self._lost():
            return
        self.bytes_total += len(action.envelope)
        self.counts["direct_copies"] += 1
        self._push(self.now + self._delay(), _Kind.DIRECT, other, action.envelope)
        if action.message_id is not None:
            self._perform_store(user, user.messenger.published(action.message_id, peers=1, wall_now=self.now))

    def _on_direct(self, user: SimUser, envelope: bytes) -> None:
        user.bytes_direct += len(envelope)
        self._feed(user, user.messenger.receive([envelope], wall_now=self.now))

    # --- mailbox calls ------------------------------------------------------------------------------------

    def _call(self, user: SimUser, peer: str, request: MailboxRequest) -> None:
        assert peer in user.view and peer not in user.calls, "one call per mailbox in view"
        self.calls += 1
        self.calls_by_kind[_REQUEST_KINDS[type(request)]] += 1
        call = _Call(user.index, peer, request, self.now)
        user.calls[peer] = call
        data = encode_request(request)
        self.bytes_total += len(data)
        if self._lost():
            self._push(self.now + self.scenario.call_timeout, _Kind.TIMEOUT, call)
        else:
            self._push(self.now + self._delay(), _Kind.REQUEST, call, data)

    def _on_request(self, call: _Call, data: bytes) -> None:
        user = self.users[call.user]
        if user.calls.get(call.peer) is not call:
            return  # its connection closed while the request travelled
        response = self._mailbox_of[call.peer].core.handle(
            user.peer_id, decode_request(data), wall_now=self.now
        )
        answer = encode_response(response)
        self.bytes_total += len(answer)
        if self._lost():
            self._push(call.started + self.scenario.call_timeout, _Kind.TIMEOUT, call)
        else:
            self._push(self.now + self._delay(), _Kind.REPLY, call, answer)

    def _on_reply(self, call: _Call, data: bytes) -> None:
        user = self.users[call.user]
        if user.calls.get(call.peer) is not call:
            return
        del user.calls[call.peer]
        user.bytes_mailbox += len(data)
        actions = user.messenger.mailbox_replied(
            call.peer, call.request, decode_response(data), wall_now=self.now
        )
        self._feed(user, actions)

    def _on_timeout(self, call: _Call) -> None:
        user = self.users[call.user]
        if user.calls.get(call.peer) is not call:
            return
        del user.calls[call.peer]
        self.counts["calls_lost"] += 1
        self._feed(
            user, user.messenger.mailbox_failed(call.peer, call.request, "timed out", wall_now=self.now)
        )

    # --- figures ------------------------------------------------------------------------------------------

    @staticmethod
    def received(users: Sequence[SimUser]) -> tuple[int, int, int]:
        """Bytes ``users`` received so far: group copies, 1:1 copies, mailbox answers."""
        return (
            sum(u.bytes_group for u in users),
            sum(u.bytes_direct for u in users),
            sum(u.bytes_mailbox for u in users),
        )

    def driver_counts(self) -> dict[str, int]:
        """The driver's counters and the mailbox calls by request, sorted by name."""
        counts = Counter(self.counts)
        counts.update({f"calls_{kind}": n for kind, n in self.calls_by_kind.items()})
        for name in ("store_problems", "group_problems", "stale_deadlines", "control_to_stranger"):
            counts[name] += 0
        return dict(sorted(counts.items()))

    def core_counts(self) -> dict[str, int]:
        """``GroupsCore.statistics()`` summed over users, sorted by name."""
        total: Counter[str] = Counter()
        for user in self.users:
            total.update(user.core.statistics())
        return dict(sorted(total.items()))

    def discarded(self) -> dict[str, int]:
        """Messenger discards by reason, summed over users."""
        total: Counter[str] = Counter()
        for user in self.users:
            total.update({str(k): v for k, v in user.messenger.statistics().discarded.items()})
        return dict(sorted(total.items()))


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
