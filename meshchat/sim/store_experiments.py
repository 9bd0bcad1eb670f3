"""Removal and censorship experiments on store-and-forward (``meshchat sim --scenario NAME``).

Each experiment runs ``meshchat.sim.store_sim`` (real ``Messenger``s and ``MailboxCore``s on a virtual
clock) twice or more on the same seed: "defence on" with the means meshchat has, "defence off" the
same network and trouble without them. Delivery counts a message delivered to its recipient's app
within its TTL (24 h; ``remove-mailboxes`` runs until the last TTL has passed, the censorship runs
until 6 h after the last send); latency is from ``send`` to that delivery. ``scale`` multiplies users
and messages (1.0: 1,000 users, 2,000 messages; the published figures); times do not shrink, since the
TTL, the sync interval and people's hours are what is tested. Every user is a phone in the
background: syncs every 10 minutes, and no hour of 5-second receipt syncs after a send, a return or
a mailbox appearing (``receipt_sync_window=0``). With that hour, the runs cost three times the syncs
for the same delivery (``remove-mailboxes`` at 100 users); under a block with carriers it never
closes (each carrier's arrival reopens it), so a sender awaiting a receipt that cannot come syncs
every few seconds for as long as the block lasts (2.2 MB per user in 9 h at 50 users).

- ``remove-mailboxes``: after the network formed (every user online synced at least once), every
  mailbox but one goes for good, with what it holds: for every recipient, all but one of its
  mailboxes. Every user comes and goes (on for an hour, off for four, on average), so a message often
  waits for its recipient on a mailbox, and its sender is often away when the recipient is back.
  Defence on: meshchat's defaults, several copies (``mailbox_copies=3``) and the sender's retries
  (each re-publishes, re-stores what failed) until the receipt comes. Defence off: one copy and no
  retry within the TTL (a sender that hands the message to one server, once). Two more arms take the
  two halves of the defence apart: three copies without retries, one copy with retries.
- ``region-block``: 30 % of users and mailboxes (a region) lose every link to the rest for the rest of
  the run (no heal), half an hour in. Gossip and mailboxes keep working inside each side. Defence on:
  2 of the 10 mailboxes are carriers, moving between the sides every 10 minutes (a laptop on a
  train, a courier with a phone). Defence off: the same two mailboxes stay where they are. A third
  run stores each message on every mailbox in view (``mailbox_copies=10``) at once: with the
  default 3, a sender on the big side (7 mailboxes in view) puts its first 3 copies on the mailboxes
  ranked first for the recipient's tag, which include the carrier only 3 times in 7; the others reach
  a carrier when it next comes into view after their first retry.
- ``whitelist``: the Internet is shut half an hour in; only LAN-sized clusters of 40 users (25 at
  scale 1, each with one mailbox of its own) keep their links among themselves, for the rest of the
  run. Half the messages go to someone on the sender's LAN. Defence on: 5 carriers go round the LANs,
  10 minutes at each. Defence off: they stay on their first LAN.

**Figures** (scale 1.0: ``meshchat sim --scenario NAME --scale 1``; ``remove-mailboxes`` with seed
0 from ``benchmarks/bench_resilience.py``, the others seed 1; 1-3 min each). ``remove-mailboxes``:
defence on 100 % (2,000 of 2,000; p50 2,114 s, p99 55,265 s: recipients away for hours), off
97.30 %; 3 copies without retries 97.75 %, 1 copy with retries 100 %. Of the 241 undelivered messages
whose every copy went, all 241 arrived (42 by gossip, the rest through the mailbox left): a sender
counts only the copies on mailboxes still in view, so a retry, or the view change itself, stores
again on the survivor (``MailboxCalls.queue_store``). That view-change re-store works in every arm,
which is why the off arm loses only 2.7 % (before it, seed 1: on 99.80 %, off 83.6 %).
``region-block``: within the region and within the rest 100 % in every run; across, 100 % with the
carriers (721 of 721; p50 474 s, p99 4,274 s; 453 within 10 min, 705 within 1 h), 0 without, 100 %
with the carriers and a copy on every mailbox in view (p50 341 s). Before a mailbox coming into view
was given a copy of every message already retried and still undelivered (``Sending._plan_stores``),
the carriers took 70.9 % across: a message held by 3 mailboxes on the sender's side was never stored
on a carrier arriving later (with 7 mailboxes in view the carrier was among the 3 a sender picks 3
times in 7: 1/2 + 1/2 x 3/7 = 71 %). ``whitelist``: within a LAN 100 % with or without carriers
(p50 0.10 s, p99 4,165 s); across LANs 100 % with the carriers (794 of 794; 130 within 1 h, 793
within 6 h; p50 8,456 s, p99 16,672 s), 0 without; all shutdown-time messages 100 % against 52.5 %.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from meshchat.sim.experiments_base import Experiment, ExperimentArm, ExperimentReport
from meshchat.sim.results import summarize
from meshchat.sim.store_results import on_time
from meshchat.sim.store_scenario import SentMessage, StoreScenario
from meshchat.sim.store_sim import StoreSimulation

__all__ = [
    "BLOCK_AT",
    "CARRIER_PERIOD",
    "FULL_USERS",
    "LAN_USERS",
    "REMOVE_AT",
    "STORE_EXPERIMENTS",
    "TTL",
    "block_scenario",
    "removal_scenario",
    "whitelist_scenario",
]

#: Users at ``scale=1`` (the gossip experiments' size, and ``bench_store_sim``'s).
FULL_USERS = 1000
#: Fewest users at any scale: enough for three LANs of a few users and a region of six.
MIN_USERS = 20
#: Messages per user (``bench_store_sim``'s 2,000 for 1,000 users).
MESSAGES_PER_USER = 2
#: Each message's time to live, seconds: the default a day. Every run lasts until the last one passed.
TTL = 24 * 3600
#: Seconds over which messages are sent.
SEND_WINDOW = 3 * 3600.0
#: Seconds between a user's syncs with each mailbox (a phone in the background: ``bench_store_sim``).
SYNC_INTERVAL = 600.0
#: When the mailboxes go (virtual seconds): half-way through the sending, so messages sent before
#: sit on mailboxes that vanish and messages sent after find only the survivor.
REMOVE_AT = SEND_WINDOW / 2
#: Mailboxes before the removal (``bench_store_sim``'s ten).
MAILBOXES = 10
#: Mean online and offline periods in ``remove-mailboxes``, seconds: everybody comes and goes, mostly
#: away, so senders and recipients are often not online together.
REMOVAL_ONLINE_MEAN = 3600.0
REMOVAL_OFFLINE_MEAN = 4 * 3600.0
#: When a region or the Internet is cut off (virtual seconds): after every user synced once.
BLOCK_AT = 1800.0
#: Seconds a censorship run goes on after the last send (the block lasts all of it). Shorter than the
#: TTL: the carriers' figures are in within hours (a carrier visits all 25 LANs in 4 h 10 min), and
#: every simulated hour costs every user its syncs; what has not arrived by the end counts as lost.
CENSOR_DRAIN = 6 * 3600.0
#: Share of users and fixed mailboxes in the blocked region.
REGION_SHARE = 0.3
#: Carriers among the ``MAILBOXES`` in ``region-block``.
REGION_CARRIERS = 2
#: Seconds a carrier stays on a side (or a LAN) before it moves on.
CARRIER_PERIOD = 600.0
#: Users per LAN in ``whitelist`` (the issue's 20-50).
LAN_USERS = 40
#: Fewest LANs at any scale.
MIN_LANS = 3
#: Carriers going round the LANs at ``scale=1`` (one visit to each LAN every 50 minutes).
LAN_CARRIERS = 5
#: Share of ``whitelist`` messages to someone on the sender's LAN.
LAN_LOCAL_SHARE = 0.5
#: Ages (seconds after sending) at which the censorship runs report what has arrived.
MILESTONES = (600.0, 3600.0, 6 * 3600.0)


def _users(scale: float) -> int:
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], not {scale}")
    return max(MIN_USERS, round(FULL_USERS * scale))


def _base(users: int, seed: int) -> StoreScenario:
    return StoreScenario(
        users=users,
        messages=MESSAGES_PER_USER * users,
        duration=SEND_WINDOW,
        drain=float(TTL),
        ttl=TTL,
        sync_interval=SYNC_INTERVAL,
        partition=None,
        receipt_sync_window=0.0,
        seed=seed,
    )


def removal_scenario(seed: int, scale: float, *, copies: int, retries: bool) -> StoreScenario:
    """``remove-mailboxes`` with ``copies`` per message, with or without the sender's retries."""
    no_retry = {} if retries else {"retry_initial": float(TTL), "stored_retry_max": float(TTL)}
    return dataclasses.replace(
        _base(_users(scale), seed),
        mailboxes=MAILBOXES,
        churn=1.0,
        online_mean=REMOVAL_ONLINE_MEAN,
        offline_mean=REMOVAL_OFFLINE_MEAN,
        remove_mailboxes=(REMOVE_AT, 1),
        mailbox_copies=copies,
        **no_retry,  # type: ignore[arg-type]
    )


def _blocked_base(users: int, seed: int) -> StoreScenario:
    """The censorship runs' common knobs: the run ends ``CENSOR_DRAIN`` after the last send, and the
    block, from ``BLOCK_AT``, outlasts it."""
    base = dataclasses.replace(_base(users, seed), drain=CENSOR_DRAIN)
    return dataclasses.replace(base, partition=(BLOCK_AT, base.end + 1.0))


def _parked(scenario: StoreScenario, carriers: bool) -> StoreScenario:
    """Carriers that move (defence on) or stay on their first side for the whole run (off)."""
    assert scenario.partition is not None
    at, heal = scenario.partition
    return scenario if carriers else dataclasses.replace(scenario, carrier_period=heal - at)


def block_scenario(seed: int, scale: float, *, carriers: bool) -> StoreScenario:
    """``region-block``: the rest (side 0) and the region (side 1); carriers moving or parked."""
    scenario = dataclasses.replace(
        _blocked_base(_users(scale), seed),
        mailboxes=MAILBOXES,
        carriers=REGION_CARRIERS,
        carrier_period=CARRIER_PERIOD,
        groups=(1 - REGION_SHARE, REGION_SHARE),
    )
    return _parked(scenario, carriers)


def whitelist_scenario(seed: int, scale: float, *, carriers: bool) -> StoreScenario:
    """``whitelist``: LANs of about ``LAN_USERS`` users, a mailbox each; carriers going round or parked."""
    users = _users(scale)
    lans = max(MIN_LANS, users // LAN_USERS)
    count = max(1, round(LAN_CARRIERS * scale))
    scenario = dataclasses.replace(
        _blocked_base(users, seed),
        mailboxes=lans + count,
        carriers=count,
        carrier_period=CARRIER_PERIOD,
        groups=(1 / lans,) * lans,
        local_share=LAN_LOCAL_SHARE,
    )
    return _parked(scenario, carriers)


# --- figures ----------------------------------------------------------------------------------------


def _arm(label: str, records: Sequence[SentMessage], ttl: int) -> ExperimentArm:
    latencies = sorted(
        r.delivered_at - r.sent_at for r in records if r.delivered_at is not None and on_time(r, ttl)
    )
    figures = summarize(latencies, ordered=True)
    return ExperimentArm(
        label=label,
        delivered=len(latencies),
        expected=len(records),
        p50_s=figures["p50"],
        p99_s=figures["p99"],
    )


def _run(scenario: StoreScenario) -> StoreSimulation:
    sim = StoreSimulation(scenario)
    sim.run()
    return sim


def _exactly_once(sim: StoreSimulation) -> bool:
    return sim.misdelivered == 0 and all(r.deliveries <= 1 for r in sim.sent.values())


def _receipts(sim: StoreSimulation) -> str:
    got = sum(r.receipt_at is not None for r in sim.sent.values())
    return f"{got}/{len(sim.sent)}"


# --- remove-mailboxes -------------------------------------------------------------------------------

#: The arms of ``remove-mailboxes``: label, copies per message, retries.
REMOVAL_ARMS = (
    ("defence on", 3, True),
    ("defence off", 1, False),
    ("3 copies, no retries", 3, False),
    ("1 copy, retries", 1, True),
)


def run_remove_mailboxes(seed: int, scale: float) -> ExperimentReport:
    """``remove-mailboxes``: see the module docstring."""
    arms: list[ExperimentArm] = []
    notes: list[str] = []
    scenario = removal_scenario(seed, scale, copies=3, retries=True)
    for label, copies, retries in REMOVAL_ARMS:
        sim = _run(removal_scenario(seed, scale, copies=copies, retries=retries))
        ttl = sim.scenario.ttl
        arms.append(_arm(label, list(sim.sent.values()), ttl))
        stranded = [sim.sent[mid] for mid in sorted(sim.stranded)]
        rescued = [r for r in stranded if on_time(r, ttl)]
        notes.append(
            f"{label}: at the removal {sim.synced_at_removal} of {sim.online_at_removal} online users had"
            f" synced; {len(stranded)} undelivered messages had every copy on a removed mailbox, "
            f"{len(rescued)} of them delivered (by gossip: {sum(r.via == 'gossip' for r in rescued)});"
            f" receipts {_receipts(sim)}; exactly once: {_exactly_once(sim)}"
        )
    gone = scenario.mailboxes - 1
    summary = (
        f"{scenario.users} users (each on ~1 h, off ~4 h), {scenario.mailboxes} mailboxes, "
        f"{scenario.messages} messages over {SEND_WINDOW / 3600:g} h; at {REMOVE_AT / 3600:g} h "
        f"{gone} of the {scenario.mailboxes} mailboxes go for good with what they hold (all but one of "
        f"each recipient's). Delivery within the {TTL // 3600} h TTL."
    )
    return ExperimentReport(name="remove-mailboxes", summary=summary, arms=tuple(arms), notes=tuple(notes))


# --- region-block and whitelist ---------------------------------------------------------------------

Classify = Callable[[StoreSimulation, SentMessage], str]


def _classes(sim: StoreSimulation, classify: Classify) -> dict[str, list[SentMessage]]:
    """The messages sent during the block, by class (``classify``); those sent before it apart."""
    out: dict[str, list[SentMessage]] = {}
    for record in sim.sent.values():
        key = classify(sim, record) if record.sent_at >= BLOCK_AT else "before"
        out.setdefault(key, []).append(record)
    return out


def _blocked(sim: StoreSimulation, classes: dict[str, list[SentMessage]]) -> list[SentMessage]:
    return [r for key, records in classes.items() if key != "before" for r in records]


def _moves(sim: StoreSimulation) -> int:
    return sum(m.moves for m in sim.mailboxes if m.carrier)


def _arrivals(records: Sequence[SentMessage]) -> str:
    """How many of ``records`` had arrived by each of ``MILESTONES``."""
    parts = []
    for age in MILESTONES:
        got = sum(r.delivered_at is not None and r.delivered_at - r.sent_at <= age for r in records)
        parts.append(f"{got} by {age / 60:g} min" if age < 3600 else f"{got} by {age / 3600:g} h")
    return ", ".join(parts)


def _censor_report(
    name: str,
    summary: str,
    runs: Sequence[tuple[str, StoreScenario]],
    classify: Classify,
    detail: Sequence[tuple[str, str]],
) -> ExperimentReport:
    """Run each ``(label, scenario)`` of ``runs`` ("defence on" first); arms: all the messages sent
    during the block per run, then each class in ``detail`` (``(class, its label)``) per run."""
    totals: list[ExperimentArm] = []
    parts: list[ExperimentArm] = []
    notes: list[str] = []
    for defence, scenario in runs:
        sim = _run(scenario)
        classes = _classes(sim, classify)
        totals.append(_arm(defence, _blocked(sim, classes), scenario.ttl))
        for key, label in detail:
            parts.append(_arm(f"{defence}: {label}", classes.get(key, []), scenario.ttl))
        counted = ", ".join(f"{key} {len(records)}" for key, records in sorted(classes.items()))
        notes.append(
            f"{defence}: carriers moved {_moves(sim)} times; messages by class: {counted}; "
            f"receipts {_receipts(sim)}; exactly once: {_exactly_once(sim)}"
        )
        for key, label in detail:
            notes.append(f"{defence}: {label} arrived {_arrivals(classes.get(key, []))}")
    return ExperimentReport(name=name, summary=summary, arms=(*totals, *parts), notes=tuple(notes))


def _region_class(sim: StoreSimulation, record: SentMessage) -> str:
    sender, recipient = sim.users[record.sender].side, sim.users[record.recipient].side
    if sender != recipient:
        return "across"
    return "region" if sender == 1 else "rest"


def run_region_block(seed: int, scale: float) -> ExperimentReport:
    """``region-block``: see the module docstring."""
    on = block_scenario(seed, scale, carriers=True)
    off = block_scenario(seed, scale, carriers=False)
    summary = (
        f"{on.users} users, {on.mailboxes} mailboxes ({on.carriers} carriers), {on.messages} messages over"
        f" {SEND_WINDOW / 3600:g} h; at {BLOCK_AT / 60:g} min a region of {REGION_SHARE:.0%} of users and "
        f"mailboxes loses its links to the rest until the end ({on.end / 3600:g} h). Defence on: carriers "
        f"switch sides every {CARRIER_PERIOD / 60:g} min; off: they stay put; the third run adds a copy of "
        "each message on every mailbox in view (mailbox_copies=10 instead of 3). Arms count messages sent "
        "during the block, delivered by the end."
    )
    detail = (("region", "within the region"), ("rest", "within the rest"), ("across", "across"))
    everywhere = dataclasses.replace(on, mailbox_copies=on.mailboxes)
    runs = (("defence on", on), ("defence off", off), ("defence on, a copy on every mailbox", everywhere))
    return _censor_report("region-block", summary, runs, _region_class, detail)


def _lan_class(sim: StoreSimulation, record: SentMessage) -> str:
    same = sim.users[record.sender].side == sim.users[record.recipient].side
    return "lan" if same else "across"


def run_whitelist(seed: int, scale: float) -> ExperimentReport:
    """``whitelist``: see the module docstring."""
    on = whitelist_scenario(seed, scale, carriers=True)
    off = whitelist_scenario(seed, scale, carriers=False)
    lans = on.sides
    summary = (
        f"{on.users} users in {lans} LANs of ~{on.users // lans}, each LAN with a mailbox; {on.messages}"
        f" messages over {SEND_WINDOW / 3600:g} h, {LAN_LOCAL_SHARE:.0%} to someone on the sender's LAN;"
        f" at {BLOCK_AT / 60:g} min only links within a LAN remain, until the end ({on.end / 3600:g} h)."
        f" Defence on: {on.carriers} carriers go round the LANs, {CARRIER_PERIOD / 60:g} min at each; off:"
        " they stay on their first LAN. Arms count messages sent during the shutdown."
    )
    detail = (("lan", "within a LAN"), ("across", "across LANs"))
    return _censor_report(
        "whitelist", summary, (("defence on", on), ("defence off", off)), _lan_class, detail
    )


#: The store-and-forward experiments by name (``meshchat.sim.experiments`` merges them).
STORE_EXPERIMENTS: dict[str, Experiment] = {
    "remove-mailboxes": Experiment(
        name="remove-mailboxes",
        description="all but one of every recipient's mailboxes removed after the network formed",
        run=run_remove_mailboxes,
    ),
    "region-block": Experiment(
        name="region-block",
        description="a region of 30% of users cut off from the rest for the whole run, a few carriers",
        run=run_region_block,
    ),
    "whitelist": Experiment(
        name="whitelist",
        description="Internet shut: only LANs of ~40 users keep their links; carriers go round the LANs",
        run=run_whitelist,
    ),
}
