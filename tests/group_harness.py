"""A few ``GroupsCore``s wired to each other directly: control messages and group envelopes are handed
over in memory (no Messenger, no network), with partitions that hold traffic back until they heal.

The store-and-forward path (``Messenger`` control messages, mailboxes) is tested on its own; here the
subject is the groups core: membership, keys, removal, receipts, restarts.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

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
from meshchat.groups.storage import MemoryGroupStorage
from meshchat.identity import Identity
from meshchat.sim.payloads import make_identities

T0 = 1_800_000_000.0


@dataclass
class Member:
    identity: Identity
    storage: MemoryGroupStorage
    core: GroupsCore
    messages: list[GroupMessage] = field(default_factory=list)
    changes: list[GroupChanged] = field(default_factory=list)
    statuses: list[GroupStatus] = field(default_factory=list)
    invited: list[GroupInvited] = field(default_factory=list)
    problems: list[GroupProblem] = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return self.identity.public.ed25519


class GroupNet:
    """``count`` members; ``deliver()`` runs every queued hand-over (bounded)."""

    def __init__(self, count: int, *, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.now = T0
        self.members: list[Member] = []
        for identity in make_identities(count, rng):
            storage = MemoryGroupStorage()
            core = GroupsCore(identity, storage, wall_now=self.now, random_bytes=rng.randbytes)
            self.members.append(Member(identity, storage, core))
        self._by_key = {m.key: i for i, m in enumerate(self.members)}
        self.queue: deque[tuple[int, int, str, bytes]] = deque()  # (from, to, kind, data)
        self.held: list[tuple[int, int, str, bytes]] = []
        self.sides: dict[int, int] = {}
        self.offline: set[int] = set()
        self.published: list[bytes] = []
        self.controls: list[tuple[int, int, bytes]] = []  # (from, to, body) of every control sent

    def __getitem__(self, index: int) -> Member:
        return self.members[index]

    def index(self, key: bytes) -> int:
        return self._by_key[key]

    def perform(self, who: int, actions: list[GroupAction]) -> None:
        member = self.members[who]
        for action in actions:
            match action:
                case SendControl():
                    if action.control_id:
                        member.core.controls_queued([action.control_id])
                    self.controls.append((who, self._by_key[action.recipient], action.body))
                    self.queue.append((who, self._by_key[action.recipient], "control", action.body))
                case PublishGroup():
                    self.published.append(action.envelope)
                    for other in range(len(self.members)):
                        if other != who:
                            self.queue.append((who, other, "group", action.envelope))
                case GroupSeen() | TopicsChanged():
                    pass
                case GroupMessage():
                    member.messages.append(action)
                case GroupChanged():
                    member.changes.append(action)
                case GroupStatus():
                    member.statuses.append(action)
                case GroupInvited():
                    member.invited.append(action)
                case GroupProblem():
                    member.problems.append(action)

    def deliver(self, *, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            sender, target, kind, data = self.queue.popleft()
            if target in self.offline or self.sides.get(sender, 0) != self.sides.get(target, 0):
                self.held.append((sender, target, kind, data))
                continue
            self.hand_over(sender, target, kind, data)
        raise AssertionError("delivery did not settle")

    def hand_over(self, sender: int, target: int, kind: str, data: bytes) -> None:
        core = self.members[target].core
        if kind == "control":
            actions = core.control_received(self.members[sender].identity.public, data, wall_now=self.now)
        else:
            actions = core.envelopes_received([data], wall_now=self.now)
        self.perform(target, actions)

    def tick(self, seconds: float) -> None:
        """Let ``seconds`` pass: every core's timer runs (receipts go out)."""
        self.now += seconds
        for i, member in enumerate(self.members):
            if i not in self.offline:
                self.perform(i, member.core.on_timer(wall_now=self.now))
        self.deliver()

    def heal(self) -> None:
        """End partitions and bring everyone online; what was held back arrives (as from mailboxes)."""
        self.sides.clear()
        self.offline.clear()
        self.queue.extend(self.held)
        self.held.clear()
        self.deliver()

    def create(self, name: str, admin: int, members: list[int], *, join: bool = True) -> bytes:
        group_id, actions = self.members[admin].core.create(
            name, [self.members[i].identity.public for i in members], wall_now=self.now
        )
        self.perform(admin, actions)
        self.deliver()
        if join:
            for i in members:
                self.join(i, group_id)
        return group_id

    def join(self, who: int, group_id: bytes) -> None:
        self.perform(who, self.members[who].core.join(group_id, wall_now=self.now))
        self.deliver()

    def send(self, who: int, group_id: bytes, text: str) -> bytes:
        record, actions = self.members[who].core.send(group_id, text.encode(), wall_now=self.now)
        self.perform(who, actions)
        self.deliver()
        return record.message_id

    def op(self, who: int, method: str, group_id: bytes, *args: object) -> None:
        actions = getattr(self.members[who].core, method)(group_id, *args, wall_now=self.now)
        self.perform(who, actions)
        self.deliver()

    def texts(self, who: int, group_id: bytes) -> list[str]:
        return [m.body.decode() for m in self.members[who].messages if m.group_id == group_id]
