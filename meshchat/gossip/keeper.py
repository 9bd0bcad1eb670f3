"""Keeping a node connected: redial below a floor (``ConnectionKeeper``), notice stalls (``Keepalive``).

``ConnectionKeeper`` is a sans-IO policy for one node: it keeps a bounded address book (the addresses
the node learned while joining, through bootstraps, the DHT and peer exchange, plus every peer it was
connected to) and, whenever the node's connections fall below a floor, names peers to dial. When the
book has nothing left to try it asks for a lookup: the driver finds random nodes through a connection
the node still has (a Kademlia random walk returns ``LOOKUP_RESULTS`` of them) or dials its bootstrap
peers again.

``Keepalive`` decides when a gossip connection is dead although nobody reset it: a censor that stops
forwarding a connection's bytes after a budget (16 KB) without a reset leaves both ends waiting
forever. A peer that has sent us nothing for ``KeepaliveConfig.idle`` seconds is pinged (the driver
uses libp2p's ``/ipfs/ping/1.0.0``); one that neither answers nor sends anything within
``KeepaliveConfig.timeout`` more seconds is declared dead: the driver closes the connection and
dials again (a new connection, with a new budget at a per-connection censor).

Why ``KEEPALIVE_IDLE = 5 s`` and ``KEEPALIVE_TIMEOUT = 3 s`` (a stall noticed at most 8 s after the
last byte heard; as a stall usually hits a connection mid-transfer, about that long after it began).
In the cut-16k simulation (1,000 nodes, a censor that silently stalls every connection once it carried
16 KB, 200 messages at 10/s, the stalled connection redialled once noticed; seed 1) gossip delivery is

    noticed after   1 s      2 s      3 s      4 s      15 s (libp2p's usual ping interval)
    delivered       99.9 %   97.8 %   92.6 %   83.7 %   37 %

and store-and-forward retries what gossip lost (``meshchat sim --scenario cut-16k`` reports the arm
with these defaults). Shorter is better for delivery but costs pings and, on a loaded machine or a
slow link, false alarms: a pong later than the timeout on a healthy link drops the connection
(redialled at once; what was lost is retried). 3 s is several bad mobile round trips; a node whose own
event loop was held up past a deadline gives pings in flight a fresh timeout (``Keepalive.resume``)
instead of blaming its peers.

Cost: a ping goes only to a peer that was quiet for ``idle`` seconds (a busy link costs nothing). One
ping on a fresh stream is a yamux open, the multistream negotiation of ``/ipfs/ping/1.0.0``, 32 bytes
each way and the close, each in a Noise frame: 740 bytes, both directions together, measured by
``benchmarks/bench_keeper.py`` (``ping_bytes``). At one ping per 5 s that is up to 8.9 KB per quiet
peer per minute (both ends of an idle link ping, so the link carries twice that); at 1 s it was 44 KB,
too much for a phone on a metered link with a handful of peers, which is why the default trades
detection time for it. A persistent ping stream (32 + 12 + 18 bytes each way) would cut the cost
about six-fold and allow a shorter ``idle``; not done yet (py-libp2p's ping handler drops a stream
idle for 10 s). Pass ``KeepaliveConfig(idle=1, timeout=2)`` where a censor stalls connections and
bandwidth is cheap.

What it is not: I/O. Both are driven by ``meshchat.net.keeper_driver`` on real nodes; the simulator's
``meshchat.sim.defence`` runs the very same classes.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from meshchat.gossip.messages import PeerId

__all__ = [
    "DIAL_PENDING",
    "KEEPALIVE_IDLE",
    "KEEPALIVE_TIMEOUT",
    "KEEPER_INTERVAL",
    "LOOKUP_RESULTS",
    "RECONNECT_BURST",
    "RECONNECT_REFILL",
    "ConnectionKeeper",
    "Keepalive",
    "KeepaliveConfig",
    "KeepaliveStep",
    "KeeperConfig",
    "KeeperStep",
    "Reconnects",
]

#: Seconds between two checks of a node's connection count: a heartbeat's worth, so a node that lost
#: its peers is dialling again before its router's next mesh maintenance but one.
KEEPER_INTERVAL = 1.0
#: Peers a DHT random walk returns: Kademlia's bucket size k = 20.
LOOKUP_RESULTS = 20
#: Seconds a dial may take before the keeper stops counting it as pending: several times the two
#: round trips of a dial over the slowest default link (4 x 150 ms).
DIAL_PENDING = 3.0
#: Seconds a gossip peer may stay quiet before it is pinged (see the module docstring).
KEEPALIVE_IDLE = 5.0
#: Seconds a pinged peer has to answer (or send anything) before its connection is closed as stalled.
KEEPALIVE_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeeperConfig:
    """When and how far a node redials."""

    #: Below this many connections the node dials more: the mesh's ``d_lo`` (fewer connections
    #: cannot hold a healthy mesh).
    floor: int = 4
    #: It dials up to this many connections: the mesh degree ``d``.
    target: int = 6
    #: Seconds before an address is dialled again (after a failed dial or a dropped connection).
    retry_after: float = 30.0
    #: Most addresses kept: a peer store holds a few dozen per node; the oldest go first.
    book_size: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.target:
            raise ValueError(f"need 0 < floor <= target, not {self.floor}, {self.target}")
        if self.book_size < self.target or self.retry_after <= 0:
            raise ValueError("book_size must hold at least target addresses; retry_after must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeeperStep:
    """What a keeper wants done now."""

    #: Peers to dial.
    dial: tuple[PeerId, ...] = ()
    #: True: look up random nodes in the DHT (through a remaining connection) and ``learn`` them.
    lookup: bool = False


class ConnectionKeeper:
    """One node's redial policy. ``tick`` it with its current connections; dial what it names."""

    __slots__ = ("_book", "_config", "_pending", "_rng")

    def __init__(self, config: KeeperConfig, *, rng: random.Random, addresses: Iterable[PeerId] = ()) -> None:
        """A keeper that starts out knowing ``addresses``."""
        self._config = config
        self._rng = rng
        #: Address -> earliest time it may be dialled again; insertion order is age (oldest first).
        self._book: dict[PeerId, float] = {}
        #: Dials made and not yet connected: peer -> when the keeper stops waiting for it.
        self._pending: dict[PeerId, float] = {}
        self.learn(addresses)

    @property
    def config(self) -> KeeperConfig:
        """Its settings."""
        return self._config

    def learn(self, peers: Iterable[PeerId]) -> None:
        """Remember ``peers`` (already known ones keep their retry time); evict the oldest past the bound."""
        book = self._book
        for peer in peers:
            if peer not in book:
                book[peer] = 0.0
                if len(book) > self._config.book_size:
                    del book[next(iter(book))]

    def dialling(self, peer: PeerId, *, now: float) -> None:
        """The driver dials ``peer`` on its own (a stalled connection reconnected at once): ``tick``
        counts it as pending and does not dial it too."""
        self.learn((peer,))
        self._pending[peer] = now + DIAL_PENDING

    def known(self) -> int:
        """Addresses in the book."""
        return len(self._book)

    def tick(self, *, now: float, connected: Collection[PeerId]) -> KeeperStep:
        """The dials (and whether a lookup) needed now, given the peers the node is connected to."""
        config = self._config
        self.learn(connected)
        pending = self._pending
        for peer in [p for p, until in pending.items() if until <= now or p in connected]:
            del pending[peer]
        have = len(connected) + len(pending)
        if len(connected) >= config.floor or have >= config.target:
            return KeeperStep()
        want = config.target - have
        candidates = [
            p for p, ready in self._book.items() if ready <= now and p not in connected and p not in pending
        ]
        chosen = tuple(self._rng.sample(candidates, min(want, len(candidates))))
        for peer in chosen:
            self._book[peer] = now + config.retry_after
            pending[peer] = now + DIAL_PENDING
        return KeeperStep(dial=chosen, lookup=len(chosen) < want)


# --- reconnecting cut connections ----------------------------------------------

#: Dropped connections to one peer redialled at once in a row (the sim's ``reconnect_cuts``): a
#: censor that resets every connection after 16 KB cuts a chat's burst into a few connections.
RECONNECT_BURST = 10
#: Seconds to earn one more immediate redial once the burst is spent: a peer whose connections keep
#: dropping costs at most one dial (a few KB of handshakes) per this many seconds; the keeper's floor
#: and the outbox's retries go on regardless.
RECONNECT_REFILL = 3.0
#: Peers whose budget is remembered; the oldest is forgotten first (bounded by a node's connections
#: in practice: an entry exists only for a peer we dialled).
RECONNECT_PEERS = 256


class Reconnects:
    """Whether a connection this node dialled, which the network closed (a reset, a censor's cut, the
    peer gone), is dialled again at once: a token bucket per peer (``RECONNECT_BURST`` at once, one
    more per ``RECONNECT_REFILL`` seconds), so a path that drops every connection cannot make the
    node spin."""

    __slots__ = ("_tokens",)

    def __init__(self) -> None:
        """No peer has used any of its budget."""
        #: Peer -> (tokens left, when counted); insertion order is age.
        self._tokens: dict[PeerId, tuple[float, float]] = {}

    def dropped(self, peer: PeerId, *, now: float) -> bool:
        """A connection to ``peer`` that we dialled dropped at ``now``: redial it now?"""
        tokens, at = self._tokens.pop(peer, (float(RECONNECT_BURST), now))
        tokens = min(float(RECONNECT_BURST), tokens + (now - at) / RECONNECT_REFILL)
        redial = tokens >= 1.0
        self._tokens[peer] = (tokens - 1.0 if redial else tokens, now)
        if len(self._tokens) > RECONNECT_PEERS:
            del self._tokens[next(iter(self._tokens))]
        return redial


# --- keepalive -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepaliveConfig:
    """When a quiet peer is pinged and when an unanswered one is given up."""

    #: Seconds of silence from a peer before it is pinged.
    idle: float = KEEPALIVE_IDLE
    #: Seconds a ping may go unanswered (with nothing else heard) before the connection is closed.
    timeout: float = KEEPALIVE_TIMEOUT

    def __post_init__(self) -> None:
        if not (self.idle > 0 and self.timeout > 0):
            raise ValueError(f"idle and timeout must be > 0, not {self.idle}, {self.timeout}")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepaliveStep:
    """What the keepalive wants done now."""

    #: Peers to ping (each quiet for ``idle`` seconds, not pinged since).
    ping: tuple[PeerId, ...] = ()
    #: Peers whose connection is stalled: close it (and dial again).
    close: tuple[PeerId, ...] = ()


class Keepalive:
    """Stall detection for one node's gossip connections (see the module docstring).

    ``tick`` it with the time each connected gossip peer last sent us anything; report answered pings
    with ``answered``. Its state is at most two entries per connected peer (peers not in the latest
    ``tick``'s map are forgotten), so it is bounded by the node's connections.
    """

    __slots__ = ("_answered", "_config", "_pinged")

    def __init__(self, config: KeepaliveConfig) -> None:
        """A keepalive with ``config``'s timers."""
        self._config = config
        #: Peer -> when we pinged it (unanswered so far).
        self._pinged: dict[PeerId, float] = {}
        #: Peer -> when it last answered a ping (a sign of life the driver's ``heard`` does not show).
        self._answered: dict[PeerId, float] = {}

    @property
    def config(self) -> KeepaliveConfig:
        """Its settings."""
        return self._config

    def answered(self, peer: PeerId, *, now: float) -> None:
        """``peer`` answered our ping at ``now``: alive, quiet from then on."""
        if self._pinged.pop(peer, None) is not None:
            self._answered[peer] = now

    def _last(self, peer: PeerId, heard: float) -> float:
        return max(heard, self._answered.get(peer, heard))

    def tick(self, *, now: float, heard: Mapping[PeerId, float]) -> KeepaliveStep:
        """Pings and closes due now, given when each connected gossip peer was last heard from."""
        config = self._config
        pinged = self._pinged
        for gone in [p for p in self._answered if p not in heard]:
            del self._answered[gone]
        for peer in [p for p, at in pinged.items() if p not in heard or heard[p] > at]:
            del pinged[peer]  # gone, or heard from since the ping: alive
        ping: list[PeerId] = []
        close: list[PeerId] = []
        for peer, last in heard.items():
            at = pinged.get(peer)
            if at is None:
                if now - self._last(peer, last) >= config.idle:
                    pinged[peer] = now
                    ping.append(peer)
            elif now - at >= config.timeout:
                del pinged[peer]
                self._answered.pop(peer, None)
                close.append(peer)
        return KeepaliveStep(ping=tuple(ping), close=tuple(close))

    def forget(self, peer: PeerId) -> None:
        """``peer``'s connection is gone and being dialled again: a ping sent on the old one must not
        have the new one closed when it goes unanswered."""
        self._pinged.pop(peer, None)
        self._answered.pop(peer, None)

    def resume(self, *, now: float) -> None:
        """The node itself was held up (its event loop blocked past a deadline): pings still unanswered
        get a fresh timeout from ``now``, since an answer may be waiting unread. Without this a node
        blocked for longer than the timeout would close every connection it had just pinged."""
        for peer in self._pinged:
            self._pinged[peer] = now

    def next_deadline(self, heard: Mapping[PeerId, float]) -> float | None:
        """When ``tick`` next has something to do, given ``heard`` (None: no peers)."""
        config = self._config
        pinged = self._pinged
        deadline: float | None = None
        for peer, last in heard.items():
            at = pinged.get(peer)
            due = self._last(peer, last) + config.idle if at is None else at + config.timeout
            deadline = due if deadline is None else min(deadline, due)
        return deadline

    def notice_after(self) -> float:
        """Seconds from a peer's last sign of life to its stalled connection being closed, at most
        (plus the driver's tick granularity)."""
        return self._config.idle + self._config.timeout
