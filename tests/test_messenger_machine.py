"""A stateful test of the ``Messenger`` (STYLE.md section 8; issue 12 "Tests the cores still lack"):
two users and a ``MailboxCore`` on ``MemoryStorage``, over a network that loses, duplicates and
reorders, with restarts and time passing. Invariants: nothing reaches an application twice (across
restarts), an outbox status only moves forward, every envelope handed to ``receive`` is counted
(accepted, or discarded or rejected for a reason), and with a quiet network everything is delivered."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshchat.identity import Identity
from meshchat.store.mailbox import MailboxCore
from meshchat.store.messenger import (
    Action,
    CallMailbox,
    MessageReceived,
    Messenger,
    PublishEnvelope,
    StatusChanged,
    StoreConfig,
    StoreProblem,
)
from meshchat.store.protocol import MailboxRequest, decode_response, encode_response
from meshchat.store.reasons import DiscardReason
from meshchat.store.storage import MemoryStorage, OutboxStatus

START = 1_800_000_000.0
CONFIG = StoreConfig(retry_initial=5.0, retry_max=60.0, stored_retry_max=120.0, sync_interval=30.0)
USERS = ("alice", "bob")
BOX = Identity(b"\x7f" * 32).public.peer_id
_S = OutboxStatus
#: Each status's place: a status may follow only one at the same or a later place (EXPIRED may
#: still turn DELIVERED or READ when a late receipt comes; nothing follows FAILED).
RANK = {_S.QUEUED: 0, _S.RELAYED: 1, _S.STORED: 2, _S.EXPIRED: 2, _S.FAILED: 2, _S.DELIVERED: 3, _S.READ: 4}
#: Reasons one envelope handed to ``receive`` may be set aside for.
ENVELOPE_REASONS = {
    DiscardReason.MALFORMED,
    DiscardReason.NOT_OURS,
    DiscardReason.EXPIRY_TOO_FAR,
    DiscardReason.DUPLICATE,
    DiscardReason.STORAGE_FAILED,
}


@dataclass
class Gossip:
    to: str
    envelope: bytes


@dataclass
class Call:
    user: str
    incarnation: int
    request: MailboxRequest


class MessengerMachine(RuleBasedStateMachine):
    """See the module docstring."""

    @initialize(seed=st.integers(0, 2**32))
    def start(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = START
        self.identities = {u: Identity(bytes([i + 1]) * 32) for i, u in enumerate(USERS)}
        self.storages = {u: MemoryStorage() for u in USERS}
        self.incarnation = dict.fromkeys(USERS, 0)
        self.messengers: dict[str, Messenger] = {}
        self.mailbox = MailboxCore(MemoryStorage())
        self.network: list[Gossip | Call] = []
        self.delivered: dict[str, set[bytes]] = {u: set() for u in USERS}
        self.sent: dict[bytes, tuple[str, str]] = {}  # id -> (sender, recipient)
        self.status: dict[bytes, OutboxStatus] = {}
        for user in USERS:
            self._boot(user)

    # --- the driver ----------------------------------------------------------------------------

    def _boot(self, user: str) -> None:
        self.messengers[user] = Messenger(
            self.identities[user],
            self.storages[user],
            config=CONFIG,
            rng=random.Random(self.rng.random()),
            random_bytes=self.rng.randbytes,
            wall_now=self.now,
        )
        self._perform(user, self.messengers[user].mailboxes_changed([BOX], wall_now=self.now))

    def _perform(self, user: str, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case PublishEnvelope():
                    other = next(u for u in USERS if u != user)
                    if action.topic in self.messengers[other].topics(self.now):
                        self.network.append(Gossip(to=other, envelope=action.envelope))
                        if action.message_id is not None:
                            more = self.messengers[user].published(
                                action.message_id, peers=1, wall_now=self.now
                            )
                            self._perform(user, more)
                case CallMailbox():
                    self.network.append(
                        Call(user=user, incarnation=self.incarnation[user], request=action.request)
                    )
                case MessageReceived():
                    mid = action.message.message_id
                    assert mid not in self.delivered[user], "a message reached the application twice"
                    self.delivered[user].add(mid)
                case StatusChanged():
                    self._moved(action.message_id, action.status)
                case StoreProblem():
                    raise AssertionError(f"memory storage never fails here: {action.error}")

    def _moved(self, mid: bytes, status: OutboxStatus) -> None:
        before = self.status.get(mid, _S.QUEUED)
        assert before is not _S.FAILED or status is _S.FAILED, f"{mid.hex()[:8]}: {before} -> {status}"
        assert RANK[status] >= RANK[before], f"{mid.hex()[:8]} moved back: {before} -> {status}"
        self.status[mid] = status

    def _receive(self, user: str, envelopes: list[bytes]) -> None:
        """Hand envelopes to ``receive``: each one is accepted, or set aside for a counted reason."""
        messenger = self.messengers[user]
        before = self._accounted(messenger)
        self._perform(user, messenger.receive(envelopes, wall_now=self.now))
        assert self._accounted(messenger) - before == len(envelopes), "an envelope went uncounted"

    @staticmethod
    def _accounted(messenger: Messenger) -> int:
        stats = messenger.statistics()
        set_aside = sum(n for reason, n in stats.discarded.items() if reason in ENVELOPE_REASONS)
        return stats.received + stats.receipts + set_aside + sum(stats.rejected.values())

    def _handle(self, item: Gossip | Call) -> None:
        match item:
            case Gossip(to=to, envelope=envelope):
                self._receive(to, [envelope])
            case Call(user=user, incarnation=incarnation, request=request):
                if incarnation != self.incarnation[user]:
                    return  # the process that asked is gone
                response = self.mailbox.handle(
                    self.identities[user].public.peer_id, request, wall_now=self.now
                )
                response = decode_response(encode_response(response))
                messenger = self.messengers[user]
                self._perform(user, messenger.mailbox_replied(BOX, request, response, wall_now=self.now))

    # --- rules -----------------------------------------------------------------------------------

    @rule(sender=st.sampled_from(USERS), body=st.binary(max_size=40))
    def send(self, sender: str, body: bytes) -> None:
        recipient = next(u for u in USERS if u != sender)
        record, actions = self.messengers[sender].send(
            self.identities[recipient].public, body, wall_now=self.now
        )
        self.sent[record.message_id] = (sender, recipient)
        self.status[record.message_id] = _S.QUEUED
        self._perform(sender, actions)

    @precondition(lambda self: self.network)
    @rule(index=st.integers(0, 10_000))
    def deliver(self, index: int) -> None:
        """Any one in flight, not the oldest: the network reorders."""
        self._handle(self.network.pop(index % len(self.network)))

    @precondition(lambda self: self.network)
    @rule(index=st.integers(0, 10_000))
    def lose(self, index: int) -> None:
        item = self.network.pop(index % len(self.network))
        if isinstance(item, Call) and item.incarnation == self.incarnation[item.user]:
            messenger = self.messengers[item.user]
            self._perform(item.user, messenger.mailbox_failed(BOX, item.request, "lost", wall_now=self.now))

    @precondition(lambda self: self.network)
    @rule(index=st.integers(0, 10_000))
    def duplicate(self, index: int) -> None:
        item = self.network[index % len(self.network)]
        self.network.append(item)

    @rule(user=st.sampled_from(USERS))
    def restart(self, user: str) -> None:
        self.incarnation[user] += 1
        self._boot(user)

    @rule(user=st.sampled_from(USERS))
    def read_something(self, user: str) -> None:
        if not self.delivered[user]:
            return
        mid = min(self.delivered[user])
        sender = self.sent[mid][0]
        actions = self.messengers[user].mark_read(self.identities[sender].public, [mid], wall_now=self.now)
        self._perform(user, actions)

    @rule(seconds=st.floats(0, 120))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        for user in USERS:
            deadline = self.messengers[user].next_deadline()
            if deadline is not None and deadline <= self.now:
                self._perform(user, self.messengers[user].on_timer(wall_now=self.now))

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def stored_status_never_behind_what_was_reported(self) -> None:
        for mid, (sender, _) in self.sent.items():
            record = self.messengers[sender].status(mid)
            assert record is not None
            assert RANK[record.status] >= RANK[self.status[mid]] or record.status is self.status[mid]

    def teardown(self) -> None:
        """With the network quiet and time passing, every message sent is delivered."""
        if not hasattr(self, "messengers"):
            return
        for _ in range(200):
            while self.network:
                self._handle(self.network.pop(0))
            if all(self.status[m] in (_S.DELIVERED, _S.READ) for m in self.sent):
                break
            self.time_passes(30.0)
        for mid, (_sender, recipient) in self.sent.items():
            assert mid in self.delivered[recipient]
            assert self.status[mid] in (_S.DELIVERED, _S.READ)


MessengerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_messenger_never_delivers_twice_and_moves_forward = MessengerMachine.TestCase


@pytest.mark.slow
def test_messenger_machine_longer() -> None:
    run = MessengerMachine.TestCase("runTest")
    run.settings = settings(
        max_examples=300, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    run.runTest()
