"""Being reachable: AutoNAT verdicts, relays chosen among connected peers, reservations renewed,
probed and replaced, and the kinds of our own addresses. Sans-IO.

``ReachCore`` is one node's policy. Its inputs say what the driver saw (the connected peers and what
identify says they offer, AutoNAT answers, reservations made or refused, probes through a relay) and
its actions say what to do next (ask a peer for an AutoNAT dial-back, reserve a slot on a relay or
renew it, probe a relay, look at the peers again). It never sees a socket or a clock: ``now`` is
monotonic seconds for its timers, ``wall_now`` unix seconds for a reservation's expiry (a relay
states it in unix time, circuit relay v2 spec, ``Reservation.expire``).

Reachability (AutoNAT v1). Each server's latest verdict counts, for ``verdict_ttl``: a dial-back that
worked says REACHABLE (and names the address it reached), one that failed says UNREACHABLE; a refusal
(the server would not dial: none of our addresses has the IP it sees us from, as behind a NAT whose
outside address we do not know yet), a malformed answer or a failed query says nothing (counted).
The status becomes PUBLIC when ``confirmations`` servers say REACHABLE and they outnumber those that
say UNREACHABLE, PRIVATE the other way round; otherwise it stays as it was (one lying server cannot
flip it), and UNKNOWN once no verdict is fresh. Default 2 confirmations, not the spec's "more than
three" (py-libp2p's ``CONFIRMATIONS_REQUIRED = 4``): a small community mesh often has no four peers
that serve AutoNAT, and a node that cannot decide keeps its relays anyway.

Relays (circuit v2). Unless the node is PUBLIC (or ``relay_when_public``), it holds ``relays``
reservations on connected peers whose identify lists the hop protocol and that it reaches directly
(a relay reached through a relay would refuse, and be useless). Each reservation is renewed at
``renew_fraction`` (3/4) of its lifetime and probed at once and every ``probe_interval``: the driver
sends a few random bytes through the relay to ourselves and expects them back. A relay is dropped
and replaced when its peer disconnects (GONE), it refuses a reservation or renewal (REFUSED), its
reservation runs out (EXPIRED), or ``probe_failures`` probes in a row fail (DROPS_TRAFFIC: it accepted
the reservation and then drops what it should carry); the last three keep it off the candidate list
for ``bad_relay_period``. Each is counted in ``statistics()``, and so is each replacement.

What it is not: I/O (``meshchat.net.reach_driver`` runs it against py-libp2p's AutoNAT and circuit
relay), nor hole punching (DCUtR: ``meshchat.net.punch``).
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field
from typing import TypeAlias, assert_never

from meshchat.reach.addresses import AddressesChanged, NodeAddress, classify

__all__ = [
    "MAX_AUTONAT_INFLIGHT",
    "MAX_BAD_RELAYS",
    "MAX_CANDIDATES",
    "MAX_OWN_ADDRESSES",
    "MAX_PINNED",
    "MAX_RELAY_ADDRS",
    "MAX_SERVERS",
    "AskAutonat",
    "AutonatAnswered",
    "DialBack",
    "DropReason",
    "OwnAddresses",
    "PeerFacts",
    "PeerGone",
    "PeersSeen",
    "Probe",
    "ProbeAnswered",
    "ReachAction",
    "ReachConfig",
    "ReachCore",
    "ReachInput",
    "ReachStatistics",
    "Reachability",
    "Release",
    "ReservationFailed",
    "ReservationMade",
    "Reserve",
    "ScanPeers",
    "relay_of",
]

#: Connected peers remembered as relay or AutoNAT candidates. A node has a few dozen connections;
#: beyond this many candidates more choice buys nothing, and a flood of Sybil peers cannot grow it.
MAX_CANDIDATES = 64
#: AutoNAT servers whose verdicts are kept (the most recently asked win): enough for any sane
#: ``confirmations``, bounded against peers churning through connections.
MAX_SERVERS = 32
#: AutoNAT queries at once: each makes the server dial us back, which takes up to a dial timeout.
MAX_AUTONAT_INFLIGHT = 2
#: Relays remembered as bad (refused, expired early, dropped traffic); the soonest to be forgiven
#: is forgotten first beyond this.
MAX_BAD_RELAYS = 256
#: Relays reserved on request (``Node.reserve``) at once, besides the automatic ones.
MAX_PINNED = 8
#: Addresses kept per relay (from its reservation or identify): a relay has a handful.
MAX_RELAY_ADDRS = 4
#: Own direct addresses kept (listen addresses on every interface, observed ones).
MAX_OWN_ADDRESSES = 32


class Reachability(enum.Enum):
    """What AutoNAT says about us."""

    #: No fresh verdict, or not enough agreement yet.
    UNKNOWN = "unknown"
    #: Enough servers dialled us back.
    PUBLIC = "public"
    #: Enough servers could not.
    PRIVATE = "private"


class DialBack(enum.Enum):
    """One AutoNAT server's answer."""

    #: It dialled us back (at the address it names).
    REACHABLE = "reachable"
    #: It tried and could not.
    UNREACHABLE = "unreachable"
    #: It refused to try, answered nonsense, or could not be asked: no verdict.
    NO_VERDICT = "no_verdict"


class DropReason(enum.Enum):
    """Why a relay was given up."""

    #: Its peer disconnected.
    GONE = "gone"
    #: It refused a reservation or its renewal (or could not be asked).
    REFUSED = "refused"
    #: The reservation ran out before a renewal came through.
    EXPIRED = "expired"
    #: Probes through it failed: it accepted the reservation and drops the traffic.
    DROPS_TRAFFIC = "drops_traffic"
    #: The node became publicly reachable and needs no relay.
    NOT_NEEDED = "not_needed"


# --- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReachConfig:
    """``ReachCore``'s settings (module docstring for the reasons behind the defaults)."""

    #: Reservations to hold while not publicly reachable (go-libp2p's autorelay holds 2 by default).
    relays: int = 2
    #: Choose relays automatically (False: only renew and probe the ones reserved on request).
    auto_relay: bool = True
    #: Hold relays even when AutoNAT says we are public.
    relay_when_public: bool = False
    #: Ask peers for AutoNAT dial-backs.
    autonat: bool = True
    #: Agreeing verdicts needed to become PUBLIC or PRIVATE.
    confirmations: int = 2
    #: Seconds before a server that gave a verdict is asked again (go-libp2p: 15 min; we re-ask sooner
    #: as phones move between networks).
    autonat_interval: float = 600.0
    #: Seconds before a server that gave no verdict is asked again.
    autonat_retry: float = 60.0
    #: Seconds a verdict counts.
    verdict_ttl: float = 1800.0
    #: Renew a reservation once this fraction of its lifetime has passed.
    renew_fraction: float = 0.75
    #: Seconds between probes through a held relay.
    probe_interval: float = 60.0
    #: Seconds before a failed probe is repeated.
    probe_retry: float = 5.0
    #: Failed probes in a row that drop a relay (one lost probe on a busy link is not a verdict).
    probe_failures: int = 2
    #: Seconds a relay that failed us stays off the candidate list.
    bad_relay_period: float = 600.0
    #: Seconds between looks at the connected peers (py-libp2p's identify runs in a task that tells
    #: nobody when it is done, so a new peer's protocols are read back from the peerstore).
    scan_interval: float = 5.0

    def __post_init__(self) -> None:
        if self.relays < 0 or self.confirmations < 1 or self.probe_failures < 1:
            raise ValueError("relays >= 0, confirmations >= 1 and probe_failures >= 1")
        if not 0 < self.renew_fraction < 1:
            raise ValueError("renew_fraction must be between 0 and 1")


# --- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerFacts:
    """What we know of one connected peer."""

    #: Its PeerId.
    peer: str
    #: Its identify lists the circuit v2 hop protocol.
    hop: bool = False
    #: Its identify lists AutoNAT.
    autonat: bool = False
    #: We hold a direct (not relayed) connection to it.
    direct: bool = True
    #: Its addresses (from identify), for a relayed address through it.
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PeersSeen:
    """Every peer connected now (a snapshot: a peer missing from it is gone)."""

    peers: tuple[PeerFacts, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerGone:
    """Every connection to ``peer`` closed."""

    peer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnAddresses:
    """Our direct addresses now (listen addresses on each interface, observed ones), each ending in
    ``/p2p/<our PeerId>``."""

    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AutonatAnswered:
    """A server answered our AutoNAT query (or could not be asked: ``NO_VERDICT``)."""

    server: str
    verdict: DialBack
    #: The address it reached us at (REACHABLE only).
    address: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationMade:
    """``relay`` granted (or renewed) a reservation until ``expires_at`` (unix seconds)."""

    relay: str
    expires_at: float
    #: The relay's own addresses (from its answer or identify), each ending in ``/p2p/<relay>``.
    relay_addrs: tuple[str, ...] = ()
    #: Reserved on request (``Node.reserve``): kept whatever the reachability.
    pinned: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationFailed:
    """``relay`` refused a reservation or renewal, or could not be asked."""

    relay: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeAnswered:
    """A probe through ``relay`` came back (``ok``) or did not."""

    relay: str
    ok: bool


ReachInput: TypeAlias = (
    PeersSeen
    | PeerGone
    | OwnAddresses
    | AutonatAnswered
    | ReservationMade
    | ReservationFailed
    | ProbeAnswered
)

# --- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanPeers:
    """Report the connected peers (``PeersSeen``) and our addresses (``OwnAddresses``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AskAutonat:
    """Ask ``server`` to dial us back; report ``AutonatAnswered``."""

    server: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reserve:
    """Reserve a slot on ``relay`` (or renew ours); report ``ReservationMade`` or ``ReservationFailed``."""

    relay: str
    renewal: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """Send a few bytes through ``relay`` to ourselves; report ``ProbeAnswered``."""

    relay: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """``relay`` is no longer used (its relayed address left our addresses)."""

    relay: str
    reason: DropReason


ReachAction: TypeAlias = ScanPeers | AskAutonat | Reserve | Probe | Release | AddressesChanged

# --- state -----------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Relay:
    """A relay we reserve on: asked (``held`` False) or holding a reservation."""

    pinned: bool
    held: bool = False
    expires_at: float = math.inf
    renew_at: float = math.inf
    renewing: bool = False
    next_probe_at: float = math.inf
    probing: bool = False
    failed_probes: int = 0
    addrs: tuple[str, ...] = ()


@dataclass(slots=True, kw_only=True)
class _Server:
    """An AutoNAT server: when to ask it next and its latest verdict."""

    next_ask_at: float = -math.inf
    asking: bool = False
    verdict: DialBack | None = None
    verdict_at: float = -math.inf
    address: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReachStatistics:
    """Counters of ``ReachCore`` (a snapshot)."""

    reachability: Reachability
    #: Relays holding a reservation for us now, and all relays in use or being asked.
    relays_held: int
    relays: int
    candidates: int
    #: Connected peers not remembered as candidates (``MAX_CANDIDATES`` reached).
    candidates_ignored: int
    autonat_verdicts: dict[DialBack, int]
    reachability_changes: int
    reservations: int
    reservations_failed: int
    renewals: int
    renewals_failed: int
    probes_ok: int
    probes_failed: int
    #: Relays given up, by reason.
    dropped: dict[DropReason, int]
    #: Reservations that took the place of a relay given up (GONE, REFUSED, EXPIRED, DROPS_TRAFFIC).
    replaced: int
    bad_relays: int


@dataclass(slots=True)
class _Counters:
    autonat_verdicts: dict[DialBack, int] = field(default_factory=lambda: dict.fromkeys(DialBack, 0))
    dropped: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(DropReason, 0))
    candidates_ignored: int = 0
    reachability_changes: int = 0
    reservations: int = 0
    reservations_failed: int = 0
    renewals: int = 0
    renewals_failed: int = 0
    probes_ok: int = 0
    probes_failed: int = 0
    replaced: int = 0


class ReachCore:
    """One node's reachability policy (see the module docstring)."""

    def __init__(self, config: ReachConfig, *, local_peer: str, rng: random.Random, now: float) -> None:
        self.config = config
        self.local_peer = local_peer
        self._rng = rng
        self.reachability = Reachability.UNKNOWN
        # bounded: MAX_CANDIDATES, MAX_SERVERS, config.relays + MAX_PINNED, MAX_BAD_RELAYS
        self._candidates: dict[str, PeerFacts] = {}
        self._servers: dict[str, _Server] = {}
        self._relays: dict[str, _Relay] = {}
        self._bad: dict[str, float] = {}
        self._own: tuple[str, ...] = ()
        self._published: tuple[NodeAddress, ...] = ()
        self._next_scan = now
        self._vacancies = 0  # relays given up for a fault, not yet replaced
        self._counters = _Counters()

    # --- the driver's side -----------------------------------------------------------------------

    def handle(self, event: ReachInput, *, now: float, wall_now: float) -> list[ReachAction]:
        """Take in what happened; return what to do."""
        actions: list[ReachAction] = []
        match event:
            case PeersSeen(peers=peers):
                self._seen(peers, now, actions)
            case PeerGone(peer=peer):
                self._candidates.pop(peer, None)
                self._drop(peer, DropReason.GONE, now, actions)
            case OwnAddresses(addrs=addrs):
                self._own = tuple(dict.fromkeys(addrs))[:MAX_OWN_ADDRESSES]
            case AutonatAnswered():
                self._answered(event, now)
            case ReservationMade():
                self._reserved(event, now, wall_now, actions)
            case ReservationFailed(relay=relay):
                self._refused(relay, now, actions)
            case ProbeAnswered(relay=relay, ok=ok):
                self._probed(relay, ok, now, actions)
            case _:
                assert_never(event)
        return actions + self._step(now)

    def on_timer(self, *, now: float) -> list[ReachAction]:
        """Do what is due at ``now``."""
        return self._step(now)

    def next_deadline(self) -> float:
        """When ``on_timer`` has something to do next."""
        times = [self._next_scan, *self._bad.values()]
        for relay in self._relays.values():
            if relay.held:
                times.append(relay.expires_at)
                if not relay.renewing:
                    times.append(relay.renew_at)
                if not relay.probing:
                    times.append(relay.next_probe_at)
        for peer, server in self._servers.items():
            if server.verdict is not None:
                times.append(server.verdict_at + self.config.verdict_ttl)
            if self._autonat_candidate(peer) and not server.asking:
                times.append(server.next_ask_at)
        return min(times)

    # --- what others read --------------------------------------------------------------------------

    def addresses(self) -> tuple[NodeAddress, ...]:
        """Our addresses with their kinds now (``meshchat.reach.addresses.classify``)."""
        confirmed = [
            s.address
            for s in self._servers.values()
            if s.verdict is DialBack.REACHABLE and s.address is not None
        ]
        relayed: list[str] = []
        for relay in self._relays.values():
            if relay.held:
                relayed += [f"{a}/p2p-circuit/p2p/{self.local_peer}" for a in relay.addrs]
        return classify(self._own, relayed, confirmed)

    def held_relays(self) -> list[str]:
        """PeerIds of the relays holding a reservation for us."""
        return [peer for peer, relay in self._relays.items() if relay.held]

    def statistics(self) -> ReachStatistics:
        """Counters and the current state."""
        c = self._counters
        return ReachStatistics(
            reachability=self.reachability,
            relays_held=len(self.held_relays()),
            relays=len(self._relays),
            candidates=len(self._candidates),
            candidates_ignored=c.candidates_ignored,
            autonat_verdicts=dict(c.autonat_verdicts),
            reachability_changes=c.reachability_changes,
            reservations=c.reservations,
            reservations_failed=c.reservations_failed,
            renewals=c.renewals,
            renewals_failed=c.renewals_failed,
            probes_ok=c.probes_ok,
            probes_failed=c.probes_failed,
            dropped=dict(c.dropped),
            replaced=c.replaced,
            bad_relays=len(self._bad),
        )

    # --- inputs ---------------------------------------------------------------------------------

    def _seen(self, peers: tuple[PeerFacts, ...], now: float, actions: list[ReachAction]) -> None:
        connected = {p.peer for p in peers}
        self._candidates = {}
        for facts in peers:
            if facts.peer == self.local_peer or not facts.direct or not (facts.hop or facts.autonat):
                continue
            if len(self._candidates) >= MAX_CANDIDATES:
                self._counters.candidates_ignored += 1
                continue
            self._candidates[facts.peer] = facts
        for peer in [p for p in self._relays if p not in connected]:
            self._drop(peer, DropReason.GONE, now, actions)

    def _answered(self, event: AutonatAnswered, now: float) -> None:
        self._counters.autonat_verdicts[event.verdict] += 1
        server = self._servers.get(event.server)
        if server is None:
            return  # forgotten meanwhile (bound): the answer still counted above
        server.asking = False
        if event.verdict is DialBack.NO_VERDICT:
            server.next_ask_at = now + self.config.autonat_retry
            return
        server.next_ask_at = now + self.config.autonat_interval
        server.verdict, server.verdict_at = event.verdict, now
        server.address = event.address if event.verdict is DialBack.REACHABLE else None

    def _reserved(
        self, event: ReservationMade, now: float, wall_now: float, actions: list[ReachAction]
    ) -> None:
        relay = self._relays.get(event.relay)
        if relay is None:
            if not event.pinned or sum(r.pinned for r in self._relays.values()) >= MAX_PINNED:
                return  # given up while the answer was on its way
            relay = self._relays[event.relay] = _Relay(pinned=True)
            self._bad.pop(event.relay, None)
        lifetime = event.expires_at - wall_now
        if lifetime <= 0:  # a reservation that has already run out is none
            self._refused(event.relay, now, actions)
            return
        c = self._counters
        if relay.held:
            c.renewals += 1
        else:
            c.reservations += 1
            if self._vacancies:
                self._vacancies -= 1
                c.replaced += 1
            relay.next_probe_at = now  # accepted: now see whether it carries anything
        relay.pinned = relay.pinned or event.pinned
        relay.held, relay.renewing = True, False
        relay.expires_at = now + lifetime
        relay.renew_at = now + lifetime * self.config.renew_fraction
        relay.addrs = tuple(a for a in event.relay_addrs if a.endswith(f"/p2p/{event.relay}"))[
            :MAX_RELAY_ADDRS
        ]

    def _refused(self, peer: str, now: float, actions: list[ReachAction]) -> None:
        relay = self._relays.get(peer)
        if relay is None:
            return
        if relay.held:
            self._counters.renewals_failed += 1
        else:
            self._counters.reservations_failed += 1
        self._drop(peer, DropReason.REFUSED, now, actions)

    def _probed(self, peer: str, ok: bool, now: float, actions: list[ReachAction]) -> None:
        relay = self._relays.get(peer)
        if relay is None or not relay.held:
            return
        relay.probing = False
        if ok:
            self._counters.probes_ok += 1
            relay.failed_probes = 0
            relay.next_probe_at = now + self.config.probe_interval
            return
        self._counters.probes_failed += 1
        relay.failed_probes += 1
        if relay.failed_probes >= self.config.probe_failures:
            self._drop(peer, DropReason.DROPS_TRAFFIC, now, actions)
        else:
            relay.next_probe_at = now + self.config.probe_retry

    def _drop(self, peer: str, reason: DropReason, now: float, actions: list[ReachAction]) -> None:
        relay = self._relays.pop(peer, None)
        if relay is None:
            return
        self._counters.dropped[reason] += 1
        actions.append(Release(relay=peer, reason=reason))
        if reason is DropReason.NOT_NEEDED:
            return
        self._vacancies += 1
        if reason is not DropReason.GONE:  # a peer that left may come back; the others failed us
            if len(self._bad) >= MAX_BAD_RELAYS:
                del self._bad[min(self._bad, key=self._bad.__getitem__)]
            self._bad[peer] = now + self.config.bad_relay_period

    # --- timers -------------------------------------------------------------------------------------

    def _step(self, now: float) -> list[ReachAction]:
        actions: list[ReachAction] = []
        if now >= self._next_scan:
            self._next_scan = now + self.config.scan_interval
            actions.append(ScanPeers())
        for peer in [p for p, until in self._bad.items() if until <= now]:
            del self._bad[peer]
        self._update_reachability(now)
        self._tend_relays(now, actions)
        self._choose_relays(now, actions)
        self._ask_servers(now, actions)
        addresses = self.addresses()
        if addresses != self._published:
            self._published = addresses
            actions.append(AddressesChanged(addresses=addresses))
        return actions

    def _update_reachability(self, now: float) -> None:
        fresh = [
            s.verdict
            for s in self._servers.values()
            if s.verdict is not None and now < s.verdict_at + self.config.verdict_ttl
        ]
        for server in self._servers.values():
            if server.verdict is not None and now >= server.verdict_at + self.config.verdict_ttl:
                server.verdict, server.address = None, None
        yes = fresh.count(DialBack.REACHABLE)
        no = fresh.count(DialBack.UNREACHABLE)
        status = self.reachability
        if not fresh:
            status = Reachability.UNKNOWN
        elif yes >= self.config.confirmations and yes > no:
            status = Reachability.PUBLIC
        elif no >= self.config.confirmations and no > yes:
            status = Reachability.PRIVATE
        if status is not self.reachability:
            self.reachability = status
            self._counters.reachability_changes += 1

    def _tend_relays(self, now: float, actions: list[ReachAction]) -> None:
        for peer, relay in list(self._relays.items()):
            if not relay.held:
                continue
            if now >= relay.expires_at:
                self._counters.renewals_failed += 1
                self._drop(peer, DropReason.EXPIRED, now, actions)
                continue
            if now >= relay.renew_at and not relay.renewing:
                relay.renewing = True
                actions.append(Reserve(relay=peer, renewal=True))
            if now >= relay.next_probe_at and not relay.probing:
                relay.probing = True
                actions.append(Probe(relay=peer))

    def _wanted(self) -> int:
        if not self.config.auto_relay:
            return 0
        if self.reachability is Reachability.PUBLIC and not self.config.relay_when_public:
            return 0
        return self.config.relays

    def _choose_relays(self, now: float, actions: list[ReachAction]) -> None:
        wanted = self._wanted()
        if wanted == 0 and self.config.auto_relay:
            for peer in [p for p, r in self._relays.items() if not r.pinned]:
                self._drop(peer, DropReason.NOT_NEEDED, now, actions)
            self._vacancies = 0
            return
        eligible = sorted(
            p
            for p, facts in self._candidates.items()
            if facts.hop and p not in self._relays and p not in self._bad
        )
        while len(self._relays) < wanted and eligible:
            peer = eligible.pop(self._rng.randrange(len(eligible)))
            self._relays[peer] = _Relay(pinned=False, addrs=self._candidates[peer].addrs)
            actions.append(Reserve(relay=peer, renewal=False))

    def _autonat_candidate(self, peer: str) -> bool:
        facts = self._candidates.get(peer)
        return self.config.autonat and facts is not None and facts.autonat

    def _ask_servers(self, now: float, actions: list[ReachAction]) -> None:
        if not self.config.autonat:
            return
        for peer in self._candidates:
            if self._autonat_candidate(peer) and peer not in self._servers:
                if len(self._servers) >= MAX_SERVERS:
                    self._forget_a_server()
                self._servers[peer] = _Server()
        asking = sum(s.asking for s in self._servers.values())
        for peer in sorted(self._servers, key=lambda p: self._servers[p].next_ask_at):
            server = self._servers[peer]
            if asking >= MAX_AUTONAT_INFLIGHT or server.next_ask_at > now:
                break
            if server.asking or not self._autonat_candidate(peer):
                continue
            server.asking = True
            asking += 1
            actions.append(AskAutonat(server=peer))

    def _forget_a_server(self) -> None:
        """Make room: forget a server not being asked, the one with the oldest verdict."""
        idle = [p for p, s in self._servers.items() if not s.asking]
        if idle:
            del self._servers[min(idle, key=lambda p: self._servers[p].verdict_at)]


def relay_of(address: str) -> str | None:
    """The relay's PeerId in a relayed address ``…/p2p/<relay>/p2p-circuit/…``, or None."""
    before, circuit, _ = address.partition("/p2p-circuit")
    parts = before.rstrip("/").split("/")
    if not circuit or len(parts) < 3 or parts[-2] != "p2p":
        return None
    return parts[-1]
