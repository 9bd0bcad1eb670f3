"""The virtual clock and the event heap that drive a simulation.

Time only moves when the next event is taken off the heap; nothing reads the wall clock. The clock
starts at a random large offset (STYLE.md section 6, after trio's ``SystemClock``): a router or test
that calls ``time.monotonic()`` instead of using ``now`` gets numbers that are visibly wrong, not
subtly right. Simulated unix time, for envelope expiry, is ``SIM_EPOCH`` plus the virtual time elapsed.

Events are plain tuples ``(time, sequence, kind, node, a, b, c)``: the sequence number increases with
every push, so two events never compare further than it and the order is total and the same in every
run (a heap with this tie-breaker gives the same order; ``EventQueue`` is a faster structure for
it). Tuples, not objects, because a run pushes millions of them; what ``a``/``b``/``c`` hold depends on
``kind`` (see ``EventKind``).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from enum import IntEnum
from typing import Any, TypeAlias

__all__ = ["CLOCK_OFFSET_RANGE", "SIM_EPOCH", "Event", "EventKind", "EventQueue", "VirtualClock"]

#: Simulated unix time at the start of every run (2027-01-15T08:00:00Z): a fixed date, so envelope
#: expiry and inbox-tag epochs come out the same in every run and on every machine.
SIM_EPOCH = 1_800_000_000
#: The virtual monotonic clock starts somewhere in this range, seconds: far from 0 (where a test's
#: hand-moved clock starts) and far from any real ``time.monotonic()`` reading of a fresh machine.
#: At 1e8 s a double still resolves 15 ns, far below any delay simulated.
CLOCK_OFFSET_RANGE = (1.0e6, 1.0e8)
#: Buckets of the event queue per virtual second: 1 ms, so a bucket holds a few dozen events of a
#: 1,000-node run and nearly every event (link delays of 5-150 ms, heartbeats) lands in a later bucket.
BUCKETS_PER_SECOND = 1000.0


class EventKind(IntEnum):
    """What an event does; the payload slots ``a``, ``b``, ``c`` of each kind are listed."""

    #: An RPC reaches ``node``: a = sending node, b = the ``RpcReceived`` input, c = the link it took.
    ARRIVE = 0
    #: ``node``'s router timer: a = the router incarnation it was set for.
    TIMER = 1
    #: An honest message is due: a = its index.
    PUBLISH = 2
    #: ``node`` starts: joins the topic and dials its neighbours.
    BOOT = 3
    #: A dial from ``node`` completes: a = the other node, b = the new link.
    OPEN = 4
    #: Close the connection between ``node`` and a = the other node if it is still b = link id (a
    #: router asked to).
    CLOSE = 5
    #: Tell ``node``'s router that a send to a = the other node failed.
    SEND_FAILED = 6
    #: ``node`` leaves (churn).
    LEAVE = 7
    #: ``node`` comes back with a fresh router.
    REJOIN = 8
    #: The partition starts.
    SPLIT = 9
    #: The partition heals.
    HEAL = 10
    #: Attacker ``node`` acts (floods, spams) and schedules its next act.
    ATTACK = 11


#: ``(time, sequence, kind, node, a, b, c)``.
Event: TypeAlias = tuple[float, int, EventKind, Any, Any, Any, Any]


class VirtualClock:
    """Virtual monotonic time (``now``) and the simulated unix time derived from it (``wall``)."""

    __slots__ = ("now", "start")

    def __init__(self, rng: random.Random) -> None:
        """Start at a random large offset drawn from ``rng``."""
        #: Where the run started on the monotonic clock.
        self.start = float(rng.randint(int(CLOCK_OFFSET_RANGE[0]), int(CLOCK_OFFSET_RANGE[1])))
        #: The current virtual time (monotonic seconds).
        self.now = self.start

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the start of the run."""
        return self.now - self.start

    @property
    def wall(self) -> float:
        """Simulated unix time, seconds."""
        return SIM_EPOCH + (self.now - self.start)

    def at(self, elapsed: float) -> float:
        """The monotonic time ``elapsed`` seconds after the start."""
        return self.start + elapsed


class EventQueue:
    """Events in (time, sequence) order: a calendar queue of 1 ms buckets.

    A binary heap of millions of tuples spends most of its time comparing them (a pop is ~2 log2(n)
    tuple comparisons, each two object comparisons). Nearly every event here is due within a second
    (link delays, heartbeats), so events go into per-millisecond buckets (a dict append); a small heap
    orders the bucket keys, and each bucket is sorted once, when it is reached. An event pushed into
    the bucket being drained is inserted in order. The result is exactly the heap's order.
    """

    __slots__ = ("_buckets", "_counter", "_current", "_current_key", "_index", "_keys")

    def __init__(self) -> None:
        """Start empty."""
        self._counter = itertools.count()
        self._buckets: dict[int, list[Event]] = {}
        self._keys: list[int] = []  # heap of the keys of non-empty buckets
        self._current: list[Event] = []  # the bucket being drained, sorted
        self._index = 0  # next event of ``_current``
        self._current_key = -1

    def push(  # noqa: PLR0917 (called millions of times: positional arguments are the cheap ones)
        self, time: float, kind: EventKind, node: Any = None, a: Any = None, b: Any = None, c: Any = None
    ) -> None:
        """Schedule an event at ``time``; events at equal times run in the order they were pushed."""
        event = (time, next(self._counter), kind, node, a, b, c)
        key = int(time * BUCKETS_PER_SECOND)
        if key <= self._current_key:
            bisect.insort(self._current, event, lo=self._index)
            return
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [event]
            heapq.heappush(self._keys, key)
        else:
            bucket.append(event)

    def pop_until(self, limit: float) -> Event | None:
        """Take the earliest event if it is due at or before ``limit``; None otherwise."""
        while True:
            current = self._current
            if self._index < len(current):
                event = current[self._index]
                if event[0] > limit:
                    return None
                self._index += 1
                return event
            keys = self._keys
            if not keys or keys[0] > limit * BUCKETS_PER_SECOND:
                return None
            key = heapq.heappop(keys)
            bucket = self._buckets.pop(key)
            bucket.sort()
            self._current, self._index, self._current_key = bucket, 0, key

    def peek_time(self) -> float | None:
        """When the earliest event is due, or None if there is none."""
        if self._index < len(self._current):
            return self._current[self._index][0]
        if not self._keys:
            return None
        return min(self._buckets[self._keys[0]])[0]

    def __len__(self) -> int:
        return len(self._current) - self._index + sum(len(b) for b in self._buckets.values())
