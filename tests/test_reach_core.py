"""``meshchat.reach``: AutoNAT verdicts, relay choice, renewal, replacement, bounds, address kinds.

Sans-IO: a virtual clock from ``now = 1000.0`` and the unix clock at ``WALL``; no sockets.
"""

from __future__ import annotations

import random

import pytest

from meshchat.reach.addresses import AddressesChanged, NodeAddress, classify, invite_addresses
from meshchat.reach.core import (
    MAX_BAD_RELAYS,
    MAX_CANDIDATES,
    MAX_SERVERS,
    AskAutonat,
    AutonatAnswered,
    DialBack,
    DropReason,
    OwnAddresses,
    PeerFacts,
    PeerGone,
    PeersSeen,
    Probe,
    ProbeAnswered,
    Reachability,
    ReachAction,
    ReachConfig,
    ReachCore,
    Release,
    ReservationFailed,
    ReservationMade,
    Reserve,
    ScanPeers,
    relay_of,
)

ME = "12D3KooWme"
WALL = 1_700_000_000.0
TTL = 100.0


class Clock:
    """A core with its two clocks moving together."""

    def __init__(self, config: ReachConfig | None = None, seed: int = 1) -> None:
        self.now = 1000.0
        self.core = ReachCore(config or ReachConfig(), local_peer=ME, rng=random.Random(seed), now=self.now)

    @property
    def wall(self) -> float:
        return WALL + self.now - 1000.0

    def feed(self, event: object) -> list[ReachAction]:
        return self.core.handle(event, now=self.now, wall_now=self.wall)  # type: ignore[arg-type]  # every test input is a ReachInput

    def advance(self, to: float) -> list[ReachAction]:
        self.now = to
        return self.core.on_timer(now=self.now)

    def made(self, relay: str, ttl: float = TTL) -> list[ReachAction]:
        return self.feed(
            ReservationMade(
                relay=relay, expires_at=self.wall + ttl, relay_addrs=(f"/ip4/10.0.0.9/tcp/1/p2p/{relay}",)
            )
        )


def relays(n: int, *, autonat: bool = False) -> PeersSeen:
    return PeersSeen(peers=tuple(PeerFacts(peer=f"R{i}", hop=True, autonat=autonat) for i in range(n)))


def of(kind: type, actions: list[ReachAction]) -> list[ReachAction]:
    return [a for a in actions if isinstance(a, kind)]


def reserved(actions: list[ReachAction]) -> list[str]:
    return [a.relay for a in actions if isinstance(a, Reserve) and not a.renewal]


def test_first_step_scans_and_a_node_of_unknown_reachability_reserves_two_relays() -> None:
    c = Clock()
    assert of(ScanPeers, c.advance(1000.0))
    chosen = reserved(c.feed(relays(5)))
    assert len(chosen) == 2 and len(set(chosen)) == 2
    assert reserved(c.feed(relays(5))) == []  # asked already: no second request


def test_only_direct_hop_peers_are_candidates() -> None:
    c = Clock()
    peers = PeersSeen(
        peers=(
            PeerFacts(peer="A", hop=False),
            PeerFacts(peer="B", hop=True, direct=False),
            PeerFacts(peer=ME, hop=True),
            PeerFacts(peer="C", hop=True),
        )
    )
    assert reserved(c.feed(peers)) == ["C"]


def test_a_reservation_is_probed_at_once_and_renewed_at_three_quarters_of_its_lifetime() -> None:
    c = Clock(ReachConfig(relays=1))
    (relay,) = reserved(c.feed(relays(1)))
    actions = c.made(relay)
    assert of(Probe, actions) == [Probe(relay=relay)]
    assert c.core.held_relays() == [relay]
    assert c.core.next_deadline() <= 1000.0 + 0.75 * TTL
    assert not of(Reserve, c.advance(1000.0 + 0.74 * TTL))
    assert of(Reserve, c.advance(1000.0 + 0.75 * TTL)) == [Reserve(relay=relay, renewal=True)]
    assert not of(Reserve, c.advance(1000.0 + 0.76 * TTL))  # one renewal in flight at a time
    c.made(relay)  # renewed: a new lifetime from now
    assert c.core.statistics().renewals == 1
    assert not of(Reserve, c.advance(c.now + 0.74 * TTL))
    assert of(Reserve, c.advance(c.now + 0.02 * TTL))


def test_a_reservation_that_runs_out_is_dropped_and_replaced() -> None:
    c = Clock(ReachConfig(relays=1))
    (first,) = reserved(c.feed(relays(2)))
    c.made(first)
    c.advance(1000.0 + 0.75 * TTL)  # renewal asked, never answered
    actions = c.advance(1000.0 + TTL)
    assert Release(relay=first, reason=DropReason.EXPIRED) in actions
    (second,) = reserved(actions)
    assert second != first  # the expired one is remembered as bad
    c.made(second)
    stats = c.core.statistics()
    assert stats.dropped[DropReason.EXPIRED] == 1 and stats.replaced == 1 and stats.renewals_failed == 1


def test_a_relay_that_disconnects_is_replaced_and_counted() -> None:
    c = Clock(ReachConfig(relays=1))
    (first,) = reserved(c.feed(relays(2)))
    c.made(first)
    actions = c.feed(PeerGone(peer=first))
    assert Release(relay=first, reason=DropReason.GONE) in actions
    (second,) = reserved(actions)
    c.made(second)
    assert c.core.statistics().replaced == 1
    # a snapshot without the relay drops it too
    actions = c.feed(PeersSeen(peers=(PeerFacts(peer=first, hop=True),)))
    assert Release(relay=second, reason=DropReason.GONE) in actions
    assert reserved(actions) == [first]  # gone is not bad: it came back and is chosen again


def test_a_relay_that_drops_traffic_is_detected_replaced_and_kept_off_the_list() -> None:
    config = ReachConfig(relays=1, probe_failures=2, probe_retry=5.0, bad_relay_period=600.0)
    c = Clock(config)
    (bad,) = reserved(c.feed(relays(2)))
    c.made(bad)
    assert not of(Release, c.feed(ProbeAnswered(relay=bad, ok=False)))  # one failure: retried
    assert of(Probe, c.advance(c.now + 5.0)) == [Probe(relay=bad)]
    actions = c.feed(ProbeAnswered(relay=bad, ok=False))
    assert Release(relay=bad, reason=DropReason.DROPS_TRAFFIC) in actions
    (good,) = reserved(actions)
    assert good != bad
    c.made(good)
    c.feed(ProbeAnswered(relay=good, ok=True))
    stats = c.core.statistics()
    assert stats.dropped[DropReason.DROPS_TRAFFIC] == 1 and stats.replaced == 1 and stats.bad_relays == 1
    assert stats.probes_failed == 2 and stats.probes_ok == 1
    only_bad = PeersSeen(peers=(PeerFacts(peer=bad, hop=True),))
    assert reserved(c.feed(only_bad)) == []  # the good one left; the bad one is still within its period
    assert reserved(c.advance(c.now + 600.0)) == [bad]  # forgiven


def test_a_refused_reservation_keeps_that_relay_off_the_list() -> None:
    c = Clock(ReachConfig(relays=1))
    (first,) = reserved(c.feed(relays(2)))
    actions = c.feed(ReservationFailed(relay=first))
    (second,) = reserved(actions)
    assert second != first
    assert c.core.statistics().reservations_failed == 1
    # an answer for a relay given up meanwhile changes nothing
    c.feed(ReservationFailed(relay=second))
    assert c.made(second) == [] or c.core.held_relays() == []


def test_autonat_needs_confirmations_and_public_nodes_release_their_relays() -> None:
    c = Clock(ReachConfig(relays=1, confirmations=2))
    c.feed(OwnAddresses(addrs=(f"/ip4/10.1.1.1/tcp/4001/p2p/{ME}", f"/ip4/127.0.0.1/tcp/4001/p2p/{ME}")))
    actions = c.feed(relays(3, autonat=True))
    asked = [a.server for a in of(AskAutonat, actions)]
    assert len(asked) == 2  # MAX_AUTONAT_INFLIGHT
    (relay,) = reserved(actions)
    c.made(relay)
    actions = c.feed(
        AutonatAnswered(server=asked[0], verdict=DialBack.REACHABLE, address="/ip4/10.1.1.1/tcp/4001")
    )
    assert c.core.reachability is Reachability.UNKNOWN  # one server is not enough
    (third,) = [a.server for a in of(AskAutonat, actions)]  # a slot free: the next server is asked
    actions = c.feed(
        AutonatAnswered(server=asked[1], verdict=DialBack.REACHABLE, address="/ip4/10.1.1.1/tcp/4001")
    )
    assert c.core.reachability is Reachability.PUBLIC
    assert Release(relay=relay, reason=DropReason.NOT_NEEDED) in actions
    (changed,) = of(AddressesChanged, actions)
    assert changed.addresses == (
        NodeAddress(f"/ip4/10.1.1.1/tcp/4001/p2p/{ME}", "public"),
        NodeAddress(f"/ip4/127.0.0.1/tcp/4001/p2p/{ME}", "private"),  # loopback: never public
    )
    # the third server lies: one contrary verdict does not flip the status
    c.feed(AutonatAnswered(server=third, verdict=DialBack.UNREACHABLE))
    assert c.core.reachability is Reachability.PUBLIC
    assert c.core.statistics().reachability_changes == 1


def test_autonat_no_verdict_counts_nothing_and_is_asked_again_later() -> None:
    c = Clock(ReachConfig(relays=0, autonat_retry=60.0))
    (ask,) = of(AskAutonat, c.feed(PeersSeen(peers=(PeerFacts(peer="S", autonat=True),))))
    c.feed(AutonatAnswered(server=ask.server, verdict=DialBack.NO_VERDICT))
    assert c.core.reachability is Reachability.UNKNOWN
    assert not of(AskAutonat, c.advance(c.now + 59.0))
    assert of(AskAutonat, c.advance(c.now + 1.0)) == [AskAutonat(server="S")]


def test_private_when_confirmed_unreachable_and_unknown_once_verdicts_are_stale() -> None:
    c = Clock(ReachConfig(relays=1, confirmations=2, verdict_ttl=1800.0, autonat_interval=3600.0))
    actions = c.feed(relays(2, autonat=True))
    for ask in of(AskAutonat, actions):
        c.feed(AutonatAnswered(server=ask.server, verdict=DialBack.UNREACHABLE))
    assert c.core.reachability is Reachability.PRIVATE
    assert c.core.statistics().relays == 1  # a private node keeps its relay
    c.advance(c.now + 1800.0)
    assert c.core.reachability is Reachability.UNKNOWN


def test_pinned_relays_are_kept_when_public_and_renewed() -> None:
    c = Clock(ReachConfig(relays=0))
    c.feed(
        ReservationMade(
            relay="P", expires_at=c.wall + TTL, relay_addrs=("/ip4/1.2.3.4/tcp/1/p2p/P",), pinned=True
        )
    )
    assert c.core.held_relays() == ["P"]
    assert c.core.addresses() == (NodeAddress(f"/ip4/1.2.3.4/tcp/1/p2p/P/p2p-circuit/p2p/{ME}", "relayed"),)
    assert of(Reserve, c.advance(c.now + 0.75 * TTL)) == [Reserve(relay="P", renewal=True)]


def test_no_auto_relay_reserves_nothing_by_itself() -> None:
    c = Clock(ReachConfig(auto_relay=False))
    assert reserved(c.feed(relays(3))) == []


def test_relay_addresses_must_name_the_relay() -> None:
    c = Clock(ReachConfig(relays=1))
    (relay,) = reserved(c.feed(relays(1)))
    c.feed(
        ReservationMade(relay=relay, expires_at=c.wall + TTL, relay_addrs=("/ip4/1.1.1.1/tcp/1/p2p/OTHER",))
    )
    assert c.core.addresses() == ()
    assert relay_of(f"/ip4/1.1.1.1/tcp/1/p2p/{relay}/p2p-circuit/p2p/{ME}") == relay
    assert relay_of("/ip4/1.1.1.1/tcp/1/p2p/X") is None


def test_an_expired_grant_is_a_refusal() -> None:
    c = Clock(ReachConfig(relays=1))
    (relay,) = reserved(c.feed(relays(2)))
    actions = c.made(relay, ttl=0.0)
    assert Release(relay=relay, reason=DropReason.REFUSED) in actions


def test_bounds_hold_under_a_flood_of_peers_servers_and_bad_relays() -> None:
    c = Clock(ReachConfig(relays=2, probe_failures=1))
    flood = PeersSeen(peers=tuple(PeerFacts(peer=f"P{i}", hop=True, autonat=True) for i in range(1000)))
    c.feed(flood)
    stats = c.core.statistics()
    assert stats.candidates == MAX_CANDIDATES and stats.candidates_ignored == 1000 - MAX_CANDIDATES
    for round_ in range(MAX_BAD_RELAYS + 40):  # every relay refuses: each one remembered as bad
        pending = [p for p in list(c.core._relays) if not c.core._relays[p].held]
        for peer in pending:
            c.feed(ReservationFailed(relay=peer))
        c.feed(PeersSeen(peers=tuple(PeerFacts(peer=f"Q{round_}-{i}", hop=True) for i in range(3))))
    assert c.core.statistics().bad_relays <= MAX_BAD_RELAYS
    for i in range(200):  # servers answering one after the other
        c.feed(PeersSeen(peers=(PeerFacts(peer=f"S{i}", autonat=True),)))
        for ask in of(AskAutonat, c.advance(c.now + 1.0)):
            c.feed(AutonatAnswered(server=ask.server, verdict=DialBack.REACHABLE, address=None))
    assert len(c.core._servers) <= MAX_SERVERS


@pytest.mark.parametrize("seed", range(20))
def test_random_histories_keep_the_invariants(seed: int) -> None:
    """Any order of inputs: relays within bounds, a held relay is never bad, every drop counted."""
    rng = random.Random(seed)
    c = Clock(ReachConfig(relays=2, confirmations=2), seed=seed)
    peers = [f"R{i}" for i in range(6)]
    releases = 0
    for _ in range(400):
        choice = rng.randrange(7)
        relay = rng.choice(peers)
        if choice == 0:
            event: object = PeersSeen(
                peers=tuple(PeerFacts(peer=p, hop=True, autonat=True) for p in peers if rng.random() < 0.8)
            )
        elif choice == 1:
            event = PeerGone(peer=relay)
        elif choice == 2:
            event = ReservationMade(relay=relay, expires_at=c.wall + rng.uniform(-5, 200), relay_addrs=())
        elif choice == 3:
            event = ReservationFailed(relay=relay)
        elif choice == 4:
            event = ProbeAnswered(relay=relay, ok=rng.random() < 0.5)
        elif choice == 5:
            event = AutonatAnswered(server=relay, verdict=rng.choice(list(DialBack)))
        else:
            releases += len(of(Release, c.advance(c.now + rng.uniform(0, 50))))
            continue
        releases += len(of(Release, c.feed(event)))
        stats = c.core.statistics()
        assert stats.relays <= 2
        assert not set(c.core.held_relays()) & set(c.core._bad)
        assert sum(stats.dropped.values()) == releases
        assert all(a.kind == "relayed" for a in c.core.addresses())


def test_classify_and_invite_addresses() -> None:
    direct = [
        f"/ip4/192.168.1.5/tcp/1/p2p/{ME}",
        f"/ip4/127.0.0.1/tcp/1/p2p/{ME}",
        f"/ip4/8.8.4.4/tcp/9/p2p/{ME}",
    ]
    relayed = [f"/ip4/5.5.5.5/tcp/1/p2p/R/p2p-circuit/p2p/{ME}"]
    addresses = classify(direct, relayed, ["/ip4/8.8.4.4/tcp/9", "/ip4/127.0.0.1/tcp/1"])
    assert [(a.kind, a.address.split("/")[2]) for a in addresses] == [
        ("public", "8.8.4.4"),
        ("relayed", "5.5.5.5"),
        ("private", "192.168.1.5"),
        ("private", "127.0.0.1"),
    ]
    assert invite_addresses(addresses) == [direct[2], relayed[0]]
    only_private = classify(direct[:2], [], [])
    assert invite_addresses(only_private) == direct[:2]  # nothing better: the LAN ones
    with pytest.raises(ValueError, match="renew_fraction"):
        ReachConfig(renew_fraction=1.0)
