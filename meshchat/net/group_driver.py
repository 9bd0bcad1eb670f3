"""The groups core's I/O half on a real network (STYLE.md section 1: a thin loop around a core).

``GroupDriver`` performs ``GroupsCore``'s actions: a control message goes out on the sealed 1:1
path (``Messenger.send(..., control=True)``: durable, retried, stored on mailboxes, acknowledged by
a receipt); a group envelope is published on the group's topic and stored on mailboxes
(``Messenger.store_shared``); accepted envelopes enter the seen window (``Messenger.group_accepted``)
so mailbox syncs stop fetching them; when the groups we take part in change, or the day turns, it
joins and leaves topics and tells the messenger which group tags to follow. It feeds the core what
arrives for it: control messages and group envelopes (handed over by the store driver from the
messenger's actions), group-topic gossip, mailboxes storing our envelopes, and the core's timer.

It decides nothing: the core does. It calls the core synchronously, in the same task as the input,
so a control message is committed by the core before the store driver publishes its receipt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, assert_never

import trio

from meshchat.crypto import INBOX_EPOCH_SECONDS
from meshchat.errors import DecodeError
from meshchat.groups.core import GroupsCore
from meshchat.groups.events import (
    GroupAction,
    GroupChanged,
    GroupEvent,
    GroupInvited,
    GroupMessage,
    GroupProblem,
    GroupSeen,
    GroupStatus,
    PublishGroup,
    SendControl,
    TopicsChanged,
)
from meshchat.groups.seal import GROUP_TOPIC_PREFIX
from meshchat.identity import PublicIdentity
from meshchat.net.driver import GossipDriver
from meshchat.net.store_driver import GroupStoreAction, StoreDriver
from meshchat.store.messenger import (
    ControlReceived,
    EnvelopeRefused,
    EnvelopeStored,
    GroupEnvelopes,
    Messenger,
)

__all__ = ["GroupDriver"]


class GroupDriver:
    """See the module docstring."""

    def __init__(
        self,
        core: GroupsCore,
        *,
        messenger: Messenger,
        store: StoreDriver,
        gossip: GossipDriver,
        wall_clock: Callable[[], float],
        on_event: Callable[[GroupEvent], None],
        reach: Callable[[PublicIdentity, bytes], None],
    ) -> None:
        """``reach(recipient, message_id)``: publish a control message to a member we may not be
        connected to (the node dials it first, as for a direct message)."""
        self.core = core
        self._messenger = messenger
        self._store = store
        self._gossip = gossip
        self._wall_clock = wall_clock
        self._on_event = on_event
        self._reach = reach
        self._nursery: trio.Nursery | None = None
        self._stopped = False  # ``run`` was cancelled (the node closing): no new task (see StoreDriver)
        self._kick = trio.Event()
        self._topics: set[str] = set()
        self._topics_dirty = True
        #: Group envelopes the network refused to take (no mailbox), by reason, for diagnostics.
        self.refused: dict[str, int] = {}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the groups' topics and run the core's timers until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._run(task_status)
            finally:
                self._stopped = True

    async def _run(self, task_status: Any) -> None:
        """Follow the topics, then run the core's timers (``run``'s body)."""
        await self._follow_topics()
        task_status.started()
        while True:
            if self._topics_dirty:
                await self._follow_topics()
            now = self._wall_clock()
            deadline = self.core.next_deadline()
            day_turns = now - now % INBOX_EPOCH_SECONDS + INBOX_EPOCH_SECONDS + 1
            wake = day_turns if deadline is None else min(deadline, day_turns)
            self._kick = trio.Event()
            with trio.move_on_after(max(0.0, wake - now) if math.isfinite(wake) else math.inf):
                await self._kick.wait()
                continue
            now = self._wall_clock()
            if now >= day_turns:
                self._topics_dirty = True
            self.perform(self.core.on_timer(wall_now=now))

    def now(self) -> float:
        """The wall time, from the injected clock."""
        return self._wall_clock()

    # --- inputs -----------------------------------------------------------------------------------------

    def from_store(self, action: GroupStoreAction) -> None:
        """An action of the messenger's that concerns groups (called by the store driver, in order)."""
        now = self._wall_clock()
        match action:
            case ControlReceived():
                self.perform(self.core.control_received(action.sender, action.body, wall_now=now))
            case GroupEnvelopes():
                self.perform(self.core.envelopes_received(action.envelopes, wall_now=now))
            case EnvelopeStored():
                self.perform(self.core.stored(action.message_id, action.peer, wall_now=now))
            case EnvelopeRefused():
                key = str(action.code)
                self.refused[key] = self.refused.get(key, 0) + 1
            case _:
                assert_never(action)

    def gossip(self, topic: str, data: bytes) -> bool:
        """A message on gossip ``topic``; True if it was a group topic (and so handled here)."""
        if not topic.startswith(GROUP_TOPIC_PREFIX):
            return False
        # Through the messenger: the seen window drops what a sync already brought, the rest comes
        # back as ``GroupEnvelopes``.
        self._store.perform(self._messenger.receive([data], wall_now=self._wall_clock()))
        return True

    # --- actions ----------------------------------------------------------------------------------------

    def perform(self, actions: list[GroupAction]) -> None:
        """Carry out the core's actions, in order."""
        now = self._wall_clock()
        queued: list[bytes] = []
        for action in actions:
            match action:
                case SendControl():
                    try:
                        recipient = PublicIdentity.from_bytes(action.recipient)
                    except DecodeError:  # a "member" key an admin made up: not a point, nobody to seal to
                        self.refused["bad member key"] = self.refused.get("bad member key", 0) + 1
                        if action.control_id:
                            queued.append(action.control_id)
                        continue
                    record, store_actions = self._messenger.send(
                        recipient,
                        action.body,
                        wall_now=now,
                        ttl=action.ttl,
                        control=True,
                        ref=f"group-control:{action.control_id.hex()}" if action.control_id else "",
                    )
                    self._store.perform(store_actions)
                    if store_actions:
                        self._reach(recipient, record.message_id)
                    if action.control_id:
                        queued.append(action.control_id)
                case PublishGroup():
                    assert self._nursery is not None, "the group driver runs before anything is sent"
                    if not self._stopped:  # else the groups outbox publishes it again at the next start
                        self._nursery.start_soon(self._publish, action)
                    self._store.perform(
                        self._messenger.store_shared(
                            action.tag, action.message_id, action.envelope, wall_now=now
                        )
                    )
                case GroupSeen():
                    self._store.perform(self._messenger.group_accepted(action.entries, wall_now=now))
                case TopicsChanged():
                    self._topics_dirty = True
                case GroupMessage() | GroupChanged() | GroupStatus() | GroupInvited() | GroupProblem():
                    self._on_event(action)
                case _:
                    assert_never(action)
        if queued:  # the messenger's outbox has them now: the groups store may forget them
            self.perform(self.core.controls_queued(queued))
        self._kick.set()

    async def _publish(self, action: PublishGroup) -> None:
        if action.again:  # past the routers' seen caches: members who lack it take it
            await self._gossip.publish_and_flush(action.topic, action.envelope, again=True)
        else:
            await self._gossip.publish(action.topic, action.envelope)

    async def _follow_topics(self) -> None:
        """Join today's group topics, leave the ones no longer wanted, follow the tags in syncs."""
        self._topics_dirty = False
        now = self._wall_clock()
        wanted = self.core.topics(now)
        for topic in sorted(wanted - self._topics):
            await self._gossip.join(topic)
        for topic in sorted(self._topics - wanted):
            await self._gossip.leave(topic)
        self._topics = wanted
        self._store.perform(self._messenger.watch_tags(list(self.core.tags(now)), wall_now=now))
