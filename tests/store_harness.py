"""A tiny synchronous driver for ``Messenger`` and ``MailboxCore``: users and mailboxes in one process,
gossip as "every online user on the topic gets it", mailbox calls as direct calls. For unit tests."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from meshchat.identity import Identity
from meshchat.store.mailbox import MailboxCore, MailboxLimits
from meshchat.store.messenger import (
    Action,
    CallMailbox,
    ControlReceived,
    EnvelopeRefused,
    EnvelopeStored,
    GroupEnvelopes,
    MessageReceived,
    Messenger,
    PublishEnvelope,
    StatusChanged,
    StoreConfig,
    StoreProblem,
)
from meshchat.store.protocol import MailboxRequest, MailboxResponse, decode_response, encode_response
from meshchat.store.storage import MemoryStorage, Storage

START = 1_800_000_000.0


@dataclass
class User:
    name: str
    identity: Identity
    storage: Storage
    messenger: Messenger
    online: bool = True
    received: list[MessageReceived] = field(default_factory=list)
    statuses: list[StatusChanged] = field(default_factory=list)
    problems: list[StoreProblem] = field(default_factory=list)
    controls: list[ControlReceived] = field(default_factory=list)
    groups: list[GroupEnvelopes] = field(default_factory=list)
    shared: list[EnvelopeStored | EnvelopeRefused] = field(default_factory=list)


class Harness:
    """Users, mailboxes, a clock; ``settle()`` runs every action until nothing is left."""

    def __init__(self, *, config: StoreConfig | None = None, seed: int = 1) -> None:
        self.now = START
        self.config = config or StoreConfig(retry_initial=10.0, sync_interval=60.0)
        self.rng = random.Random(seed)
        self.users: dict[str, User] = {}
        self.mailboxes: dict[str, MailboxCore] = {}
        self.mailbox_online: dict[str, bool] = {}
        self.queue: deque[tuple[str, Action]] = deque()
        #: Rewrites mailbox responses (tests of lying mailboxes): (mailbox, request, response) -> response.
        self.tamper = None
        self.published: list[tuple[str, PublishEnvelope]] = []
        #: Drops gossip (tests of receipts that must come by mailbox): (sender, receiver, action) -> lost?
        self.gossip_lost: Callable[[str, str, PublishEnvelope], bool] | None = None

    def _random_bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def add_user(self, name: str, storage: Storage | None = None) -> User:
        identity = Identity(self.rng.randbytes(32)) if name not in self.users else self.users[name].identity
        storage = storage if storage is not None else MemoryStorage()
        messenger = Messenger(
            identity,
            storage,
            config=self.config,
            rng=random.Random(self.rng.random()),
            random_bytes=self._random_bytes,
            wall_now=self.now,
        )
        user = User(name, identity, storage, messenger)
        self.users[name] = user
        return user

    def restart(self, name: str) -> User:
        """The same identity and storage, a fresh messenger (a process restart)."""
        old = self.users[name]
        messenger = Messenger(
            old.identity,
            old.storage,
            config=self.config,
            rng=random.Random(self.rng.random()),
            random_bytes=self._random_bytes,
            wall_now=self.now,
        )
        user = User(name, old.identity, old.storage, messenger, online=old.online)
        self.users[name] = user
        self.queue = deque(item for item in self.queue if item[0] != name)
        return user

    def add_mailbox(self, limits: MailboxLimits | None = None, storage: Storage | None = None) -> str:
        peer = Identity(self.rng.randbytes(32)).public.peer_id
        self.mailboxes[peer] = MailboxCore(storage if storage is not None else MemoryStorage(), limits)
        self.mailbox_online[peer] = True
        return peer

    def connect(self, name: str) -> None:
        """``name`` comes online and sees every online mailbox."""
        user = self.users[name]
        user.online = True
        up = [p for p, on in self.mailbox_online.items() if on]
        self.feed(name, user.messenger.mailboxes_changed(up, wall_now=self.now))

    def disconnect(self, name: str) -> None:
        user = self.users[name]
        user.online = False
        user.messenger.mailboxes_changed([], wall_now=self.now)

    def feed(self, name: str, actions: list[Action]) -> None:
        self.queue.extend((name, a) for a in actions)

    def send(self, sender: str, recipient: str, body: bytes, **kw: object) -> bytes:
        record, actions = self.users[sender].messenger.send(
            self.users[recipient].identity.public, body, wall_now=self.now, **kw
        )
        self.feed(sender, actions)
        return record.message_id

    def settle(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            name, action = self.queue.popleft()
            self._perform(name, action)
        raise AssertionError("actions did not settle")

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer due on the way."""
        end = self.now + seconds
        for _ in range(100_000):
            due = [
                (d, n)
                for n, u in self.users.items()
                if u.online and (d := u.messenger.next_deadline()) is not None and d <= end
            ]
            if not due:
                break
            when, name = min(due)
            self.now = max(self.now, when)
            self.feed(name, self.users[name].messenger.on_timer(wall_now=self.now))
            self.settle()
        self.now = end

    def _perform(self, name: str, action: Action) -> None:
        user = self.users[name]
        match action:
            case PublishEnvelope():
                self.published.append((name, action))
                peers = 0
                for other in self.users.values():
                    if other is user or not other.online or not user.online:
                        continue
                    if action.topic in other.messenger.topics(self.now):
                        peers += 1
                        if self.gossip_lost is not None and self.gossip_lost(name, other.name, action):
                            continue
                        self.feed(other.name, other.messenger.receive([action.envelope], wall_now=self.now))
                if action.message_id is not None:
                    self.feed(
                        name, user.messenger.published(action.message_id, peers=peers, wall_now=self.now)
                    )
            case CallMailbox(peer=peer, request=request):
                self.feed(name, self._call(user, peer, request))
            case MessageReceived():
                user.received.append(action)
            case StatusChanged():
                user.statuses.append(action)
            case StoreProblem():
                user.problems.append(action)
            case ControlReceived():
                user.controls.append(action)
            case GroupEnvelopes():
                user.groups.append(action)
            case EnvelopeStored() | EnvelopeRefused():
                user.shared.append(action)

    def _call(self, user: User, peer: str, request: MailboxRequest) -> list[Action]:
        messenger = user.messenger
        if not self.mailbox_online.get(peer) or not user.online:
            return messenger.mailbox_failed(peer, request, "unreachable", wall_now=self.now)
        response: MailboxResponse = self.mailboxes[peer].handle(
            user.identity.public.peer_id, request, wall_now=self.now
        )
        response = decode_response(encode_response(response))  # through the wire format
        if self.tamper is not None:
            response = self.tamper(peer, request, response)
        return messenger.mailbox_replied(peer, request, response, wall_now=self.now)
