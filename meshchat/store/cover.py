"""Cover traffic: dummy envelopes at a constant mean rate, which a relay cannot tell from real chats.

What it is: a sans-IO core (STYLE §1). ``CoverTraffic`` takes the monotonic ``now``, the wall time and
its randomness from its caller and answers ``next_deadline()`` / ``on_timer(...)`` with
``PublishCover`` actions; a driver (``meshchat.net.cover_driver``) publishes them on gossip.

**What a dummy is.** A sealed envelope (``meshchat.crypto.seal``) exactly as a real 1:1 chat is sealed:
kind ``SEALED``, the padding bucket a short chat in a session lands in (``COVER_BUCKET``), the chat
TTL, an ephemeral key and nonce from the same source, and the inbox tag of a throwaway recipient (a
fresh identity per dummy, forgotten at once) for today, published on that tag's inbox shard topic. It
is signed by a throwaway sender too, so no real key ever signs junk. Without the throwaway keys nobody
can open it, so to a relay, a mailbox or an observer of a link it is one more short chat to someone:
same length, same field shapes, a tag that looks like every other tag (``tests/test_cover.py`` checks
a dummy's length and fields against a real chat's). A peer that listens on the shard discards it as
not addressed to it, as it discards every other person's envelope (``DiscardReason.NOT_OURS``).

**When.** Gaps between dummies are exponential with mean ``interval`` (a Poisson process, as in
Loopix): a fixed period would let an observer who learned the phase tell the real messages apart,
one off the grid. A process that was asleep (a laptop lid) does not publish the dummies it missed in
one burst: at most ``MAX_CATCH_UP`` at once, the rest skipped and counted.

What it is not: it does not delay real messages into dummy slots (a real chat still adds to the
rate, so a global observer counting a node's envelopes over time sees real bursts on top of the
cover); dummies are not stored on mailboxes (a mailbox sees only real messages) and get no receipts
(an observer who sees both ends of a link can tell no receipt came back). The README's threat model
states these limits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from meshchat.crypto import DEFAULT_TTL, MAX_TTL, inbox_topic_at, seal
from meshchat.identity import SEED_SIZE, Identity, RandomBytes
from meshchat.wire import PAD_BUCKETS

__all__ = [
    "COVER_BUCKET",
    "MAX_CATCH_UP",
    "MIN_COVER_INTERVAL",
    "CoverConfig",
    "CoverStatistics",
    "CoverTraffic",
    "PublishCover",
]

#: The padding bucket of a short chat: in a session, a chat of 0 to ~700 bytes pads to 1,024 bytes
#: (a 1,135-byte envelope; measured, and checked against a real chat in ``tests/test_cover.py``).
COVER_BUCKET = PAD_BUCKETS[1]
#: Dummies published at once after the timer fired late (a process that slept); the rest are skipped.
#: Two: enough to keep the count honest over a short stall, never a burst that stands out.
MAX_CATCH_UP = 2
#: Shortest mean gap allowed, seconds. Each dummy costs two X25519 operations, a signature and about
#: 1.1 KB on every link of its shard's mesh; ten a second per node is already a load test, not cover.
MIN_COVER_INTERVAL = 0.1
# A body that lands in COVER_BUCKET: just over the previous bucket (the seal's fixed overhead is ~110
# bytes, so the padded plaintext is well inside the bucket and never in the one below).
_BODY_SIZE = PAD_BUCKETS[0] + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CoverConfig:
    """How much cover traffic to make."""

    #: Mean seconds between dummies (exponential gaps).
    interval: float
    #: Lifetime written into each dummy, seconds: the chats' (``StoreConfig.ttl``), so the expiry
    #: field says nothing either.
    ttl: int = DEFAULT_TTL

    def __post_init__(self) -> None:
        if not self.interval >= MIN_COVER_INTERVAL:
            raise ValueError(f"cover interval must be at least {MIN_COVER_INTERVAL} s, not {self.interval}")
        if not 0 < self.ttl <= MAX_TTL:
            raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds, not {self.ttl}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishCover:
    """Publish dummy ``envelope`` on inbox shard ``topic`` (like a chat: nobody tracks it)."""

    #: The inbox shard topic of the dummy's (throwaway) tag.
    topic: str
    #: The sealed dummy.
    envelope: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CoverStatistics:
    """What the cover core made."""

    #: Dummies handed to the driver.
    sent: int
    #: Their total size, bytes (envelopes only; gossip framing is the router's).
    bytes_sent: int
    #: Dummies skipped because the timer fired late (see ``MAX_CATCH_UP``).
    skipped: int


class CoverTraffic:
    """Dummy envelopes at a constant mean rate (see the module docstring)."""

    def __init__(
        self, config: CoverConfig, *, now: float, rng: random.Random, random_bytes: RandomBytes
    ) -> None:
        """Start the schedule at monotonic time ``now``: the first dummy is one random gap away.
        ``rng`` draws the gaps; ``random_bytes`` makes the throwaway keys, the ephemeral keys and nonces
        (the seal's source: the operating system's on a real node)."""
        self.config = config
        self._rng = rng
        self._random_bytes = random_bytes
        self._due = now + self._gap()
        self._sent = 0
        self._bytes = 0
        self._skipped = 0

    def _gap(self) -> float:
        return self._rng.expovariate(1.0 / self.config.interval)

    def next_deadline(self) -> float:
        """Monotonic time of the next dummy."""
        return self._due

    def on_timer(self, *, now: float, wall_now: float) -> list[PublishCover]:
        """The dummies due by ``now`` (at most ``MAX_CATCH_UP``; later ones skipped and counted)."""
        actions: list[PublishCover] = []
        for _ in range(MAX_CATCH_UP):
            if self._due > now:
                return actions
            actions.append(self.dummy(wall_now=wall_now))
            self._due += self._gap()
        if self._due <= now:
            # The expected number missed; the process is memoryless, so restarting it from ``now`` keeps
            # it Poisson (and a day asleep costs one step, not one per missed dummy).
            self._skipped += 1 + int((now - self._due) / self.config.interval)
            self._due = now + self._gap()
        return actions

    def dummy(self, *, wall_now: float) -> PublishCover:
        """One dummy envelope sealed now (also for tests and the benchmark)."""
        sender = Identity(self._random_bytes(SEED_SIZE))
        recipient = Identity(self._random_bytes(SEED_SIZE)).public
        body = self._random_bytes(_BODY_SIZE)
        envelope = seal(
            sender, recipient, body, wall_now=wall_now, ttl=self.config.ttl, random_bytes=self._random_bytes
        )
        self._sent += 1
        self._bytes += len(envelope)
        return PublishCover(topic=inbox_topic_at(recipient, wall_now), envelope=envelope)

    def statistics(self) -> CoverStatistics:
        """Counters: dummies made, their bytes, dummies skipped."""
        return CoverStatistics(sent=self._sent, bytes_sent=self._bytes, skipped=self._skipped)
