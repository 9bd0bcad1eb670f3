"""A recipient's messages are published in the order they were sent (``seq``), whatever the network
does meanwhile: the store driver on a fake network under trio's ``MockClock``, where each reach of a
contact takes a random time (before, each publish and each reach was its own task, and the
recipient could get 3, 1, 2)."""

from __future__ import annotations

import math
import random
from collections.abc import Collection

import pytest
import trio
import trio.testing

from meshchat.identity import Identity, PublicIdentity
from meshchat.net import store_driver
from meshchat.net.store_driver import REACH_TIMEOUT, StoreDriver
from meshchat.store.messenger import MessageReceived, Messenger, PublishEnvelope, StoreConfig
from meshchat.store.protocol import MailboxRequest, MailboxResponse
from meshchat.store.storage import MemoryStorage

EPOCH = 1_800_000_000.0
ALICE = Identity(b"\x01" * 32)
BOB = Identity(b"\x02" * 32)
CAROL = Identity(b"\x03" * 32)


class NoJitter(random.Random):
    """Retries wait exactly ``retry_initial * 2**attempts``."""

    def random(self) -> float:
        return 0.0


def ignore(event: object) -> None:
    pass


def wall_clock() -> float:
    return EPOCH + trio.current_time()


class SlowDials:
    """A ``StoreIO`` where nobody listens (every publish reaches 0 peers) and reaching a contact takes
    a random time, or for ever for the contacts in ``hangs``."""

    def __init__(self, seed: int, *, hangs: Collection[PublicIdentity] = ()) -> None:
        self.publishes: list[tuple[float, bytes, bool]] = []
        self.reaches: list[tuple[float, PublicIdentity]] = []
        self.reached_at: list[float] = []
        self.reaching = 0
        self.most_reaching = 0
        self._rng = random.Random(seed)
        self._hangs = set(hangs)

    async def publish(self, topic: str, envelope: bytes) -> None:
        raise AssertionError("no receipts in this test")

    async def publish_and_flush(self, topic: str, envelope: bytes, *, again: bool) -> int:
        self.publishes.append((trio.current_time(), envelope, again))
        await trio.sleep(self._rng.uniform(0, 0.01))  # writing to a stream takes a moment
        return 0

    async def call_mailbox(self, peer: str, request: MailboxRequest) -> MailboxResponse:
        raise AssertionError("no mailboxes in this test")

    async def supports_mailbox(self, peer: str) -> bool:
        return False

    def connected(self, peer: str) -> bool:
        return False

    async def reach(self, recipient: PublicIdentity, topic: str) -> None:
        self.reaches.append((trio.current_time(), recipient))
        self.reaching += 1
        self.most_reaching = max(self.most_reaching, self.reaching)
        try:
            await trio.sleep(math.inf if recipient in self._hangs else self._rng.uniform(0, 2))
        finally:
            self.reaching -= 1
            self.reached_at.append(trio.current_time())

    async def wait_listening(self, peer: str, topics: Collection[str]) -> set[str]:
        return set()

    def changed(self) -> None:
        pass


def alice(storage: MemoryStorage | None = None, *, rng: random.Random | None = None) -> Messenger:
    config = StoreConfig(retry_initial=10.0, retry_max=600.0)
    return Messenger(
        ALICE, storage or MemoryStorage(), config=config, rng=rng or NoJitter(), wall_now=wall_clock()
    )


def send_like_node(
    driver: StoreDriver, to: PublicIdentity, count: int
) -> dict[bytes, tuple[PublicIdentity, int]]:
    """What ``Node.send`` does for a contact it is not connected to, ``count`` times in a row: queue
    the publish, then ask for a reach. Returns ``envelope -> (recipient, seq)``."""
    sent = {}
    for i in range(count):
        record, actions = driver.messenger.send(to, f"m{i + 1}".encode(), wall_now=wall_clock())
        driver.perform(actions)
        driver.reach_and_publish(to, record.message_id)
        sent[record.envelope] = (to, record.seq)
    return sent


@pytest.mark.parametrize("seed", range(5))
async def test_fifty_quick_sends_to_a_contact_being_dialled_go_out_in_seq_order(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    network = SlowDials(seed)
    driver = StoreDriver(alice(), network, wall_clock=wall_clock, on_event=ignore, on_committed=ignore)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        sent = send_like_node(driver, BOB.public, 50)
        await trio.sleep(5)  # virtual: before the first retry (10 s)
        nursery.cancel_scope.cancel()
    assert [sent[envelope][1] for _, envelope, _ in network.publishes] == list(range(1, 51))
    assert len(network.reaches) == 1  # reached once, then everything queued published
    assert network.publishes[0][0] >= network.reaches[0][0]


@pytest.mark.parametrize("seed", range(3))
async def test_retries_keep_the_order(autojump_clock: trio.testing.MockClock, seed: int) -> None:
    network = SlowDials(seed)
    driver = StoreDriver(alice(), network, wall_clock=wall_clock, on_event=ignore, on_committed=ignore)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        sent = send_like_node(driver, BOB.public, 50)
        await trio.sleep(100)  # virtual: the first send, retries at 10, 30 and 70 s
        nursery.cancel_scope.cancel()
    order = [sent[envelope][1] for _, envelope, _ in network.publishes]
    assert order == list(range(1, 51)) * 4
    assert [again for _, _, again in network.publishes[50:]] == [True] * 150
    assert len(network.reaches) == 4  # one per round, not one per message


@pytest.mark.parametrize("seed", range(5))
async def test_jittered_retries_offer_every_missing_message_in_order_from_any_reach_on(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    """Sends spread over time, retries on their own jittered timers: whenever a reach completes (the
    moment the recipient may be back), the messages published from then on, each counted when first
    offered, come in seq order: a recipient that came back then sees 1, 2, 3, ..."""
    rng = random.Random(seed)
    network = SlowDials(seed)
    messenger = alice(rng=random.Random(seed))
    driver = StoreDriver(messenger, network, wall_clock=wall_clock, on_event=ignore, on_committed=ignore)
    sent: dict[bytes, tuple[PublicIdentity, int]] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        for _ in range(30):
            sent |= send_like_node(driver, BOB.public, 1)
            await trio.sleep(rng.uniform(0, 3))
        await trio.sleep(200)
        nursery.cancel_scope.cancel()
    assert len(network.reached_at) > 5
    for reached in network.reached_at:
        offered: list[int] = []
        for t, envelope, _ in network.publishes:
            seq = sent[envelope][1]
            if t >= reached and seq not in offered:
                offered.append(seq)
        assert offered == sorted(offered), f"after the reach at {reached}"


async def test_pending_messages_published_at_start_go_out_in_seq_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    before = alice(storage)
    seqs = {}
    for i in range(30):
        record, _ = before.send(BOB.public, f"m{i}".encode(), wall_now=wall_clock())  # never published
        seqs[record.envelope] = record.seq
    network = SlowDials(7)
    driver = StoreDriver(alice(storage), network, wall_clock=wall_clock, on_event=ignore, on_committed=ignore)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        driver.retry_pending()
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert [seqs[envelope] for _, envelope, _ in network.publishes] == list(range(1, 31))
    assert len(network.reaches) == 1


async def test_a_contact_whose_dial_hangs_does_not_hold_up_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SlowDials(3, hangs=[BOB.public])
    driver = StoreDriver(alice(), network, wall_clock=wall_clock, on_event=ignore, on_committed=ignore)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        start = trio.current_time()
        to_bob = send_like_node(driver, BOB.public, 5)
        to_carol = send_like_node(driver, CAROL.public, 5)
        await trio.sleep(REACH_TIMEOUT + 5)
        nursery.cancel_scope.cancel()
    carol = [(t - start, to_carol[e][1]) for t, e, _ in network.publishes if e in to_carol]
    bob = [(t - start, to_bob[e][1]) for t, e, _ in network.publishes if e in to_bob]
    assert [seq for t, seq in carol if t < 3] == [1, 2, 3, 4, 5]  # at once, then her retries
    # Bob's hung reach is given up after REACH_TIMEOUT; his messages then go out, in order.
    assert [seq for _, seq in bob[:5]] == [1, 2, 3, 4, 5] and all(t >= REACH_TIMEOUT for t, _ in bob)


async def test_recipients_served_at_once_are_bounded(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_driver, "MAX_RECIPIENTS_SERVED", 2)
    others = [Identity(bytes([10 + i]) * 32).public for i in range(4)]
    network = SlowDials(5, hangs=others)
    driver = StoreDriver(alice(), network, wall_clock=wall_clock, on_event=ignore, on_committed=ignore)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        for other in others:
            send_like_node(driver, other, 1)
        await trio.sleep(1)
        assert network.reaching == 2  # two recipients served, the others wait their turn
        await trio.sleep(3 * REACH_TIMEOUT)
        nursery.cancel_scope.cancel()
    assert network.most_reaching == 2
    assert {who for _, who in network.reaches} == set(others)  # each had its turn


async def test_a_full_queue_keeps_the_lowest_seqs_and_the_rest_go_out_once_those_are_delivered(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_driver, "MAX_QUEUED_PUBLISHES", 3)
    network = SlowDials(6)
    driver = StoreDriver(alice(), network, wall_clock=wall_clock, on_event=ignore, on_committed=ignore)
    bob = Messenger(BOB, MemoryStorage(), rng=random.Random(1), wall_now=wall_clock())
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        sent = send_like_node(driver, BOB.public, 5)
        # 4 and 5 were not queued (their publish and their reach): the outbox retries them
        assert driver.publishes_deferred == 4
        await trio.sleep(5)
        first = [sent[e][1] for _, e, _ in network.publishes]
        assert first == [1, 2, 3]
        # Bob got 1, 2 and 3; his receipts come back: only 4 and 5 are retried at 10 s
        got = [e for e, (_, seq) in sent.items() if seq <= 3]
        for action in bob.receive(got, wall_now=wall_clock()):
            if isinstance(action, PublishEnvelope):
                driver.receive(action.envelope)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert [sent[e][1] for _, e, _ in network.publishes[3:]] == [4, 5]


class TakesReceipts(SlowDials):
    async def publish(self, topic: str, envelope: bytes) -> None:
        pass


async def test_the_receiver_commits_live_envelopes_as_they_arrive_and_a_batch_in_seq_order() -> None:
    """What ``DirectMessage``'s docstring says: envelopes that arrive one by one (gossip) are committed
    and numbered as the network delivers them; a batch (one mailbox fetch) in each sender's order."""
    sender = alice()
    envelopes = [sender.send(BOB.public, f"m{i}".encode(), wall_now=EPOCH)[0].envelope for i in range(1, 7)]
    committed: list[MessageReceived] = []
    bob = Messenger(BOB, MemoryStorage(), rng=random.Random(1), wall_now=EPOCH)
    driver = StoreDriver(
        bob, TakesReceipts(1), wall_clock=lambda: EPOCH, on_event=ignore, on_committed=committed.extend
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        for envelope in (envelopes[2], envelopes[0], envelopes[1]):  # live, out of order: 3, 1, 2
            driver.receive(envelope)
        batch = [a for a in bob.receive(envelopes[:2:-1], wall_now=EPOCH) if isinstance(a, MessageReceived)]
        nursery.cancel_scope.cancel()
    assert [(r.message.seq, r.message.number) for r in committed] == [(3, 1), (1, 2), (2, 3)]
    assert [(r.message.seq, r.message.number) for r in batch] == [(4, 4), (5, 5), (6, 6)]  # sent 6, 5, 4


async def test_a_contact_that_connects_gets_what_waits_for_it_at_once_not_at_the_next_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SlowDials(5)
    driver = StoreDriver(alice(), network, wall_clock=wall_clock, on_event=ignore, on_committed=ignore)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        sent = send_like_node(driver, BOB.public, 5)
        await trio.sleep(15)  # virtual: sent at 0, retried at 10; the next retry is at 30
        before = len(network.publishes)
        driver.peer_joined("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")  # not a contact: nothing
        await trio.sleep(3)
        assert len(network.publishes) == before
        driver.peer_joined(BOB.public.peer_id)
        await trio.sleep(3)  # virtual: well before the retry at 30
        nursery.cancel_scope.cancel()
    now_published = [sent[envelope][1] for t, envelope, _ in network.publishes[before:]]
    assert now_published == [1, 2, 3, 4, 5]
    assert all(t < 30 for t, _, _ in network.publishes[before:])
