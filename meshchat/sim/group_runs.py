"""The scripted group runs on ``meshchat.sim.group_sim``: fan-out, removal, churn, partition.

``run_group(GroupScenario(run=GroupRun.FANOUT, members=1000))`` returns a ``GroupResults``. Every run
starts the same way (**setup**): user 0 (the admin) creates the group naming users ``0..members-1``;
each invitation (the op set) travels as a 1:1 control message; each member accepts at once (``join``)
and follows the group's topics and tags. ``setup_s`` is the time until every member has joined.

- **fanout**: ``messages`` messages, one every ``interval`` seconds, from ``senders`` members in turn
  (users 2, 3, ...). A message's first send from a member also hands its chain to every member
  (``ChainControl`` on the 1:1 path, travelling alongside the envelope). Expected deliveries: every
  message to every member but its sender. ``all_decrypted_s``: per message, send until the last
  expected member decrypted it. ``bytes_per_member_per_message``: envelope bytes members received from
  the first measured send to the end of the drain (group copies, 1:1 copies: chain handouts and
  receipts; mailbox answers: syncs), / (members x messages).
- **removal**: fanout, then the admin removes the last member and at once sends the next message.
  ``details["removal"]``: ``seconds`` from the removal until every remaining member decrypted that
  message, the ``bytes`` moved over every link meanwhile (every copy, request and response), the
  bytes per remaining member, and the removal property: the removed member is an eavesdropper (it
  keeps receiving the group's copies after its removal), ``removed_decrypted`` counts the messages
  sent after the removal that its core emitted (must be 0), ``removed_got_chain`` says whether the
  chain that message is sealed with was ever handed to it (must be False).
- **churn**: fanout's messages, while ``churn x members`` members go (half leave, half are removed
  by the admin) at random times of the message phase, and as many new users are invited, each 1-3 s
  after one of the departures (a group of 1,000 takes nobody more before someone went), and join.
  Expected deliveries: every message to every member present throughout (neither gone nor new) but
  its sender; ``details`` counts the joiners' deliveries of messages sent 5 s or more after they
  joined (not in the ratio: a member added mid-run reads from the chains' position when they were
  handed to it).
- **partition**: user 1 is promoted admin; every sender sends a warm-up message; users and mailboxes
  split 50/50 (user 0 on side 0, user 1 on side 1). On side 0 the admin removes ``X`` (a side-1
  member); on side 1 the other admin removes ``Z`` (a side-0 member), then adds ``Y`` (a new user on
  side 1); ``Y`` sends; the senders on both sides send all along. After ``partition_length``
  seconds the sides heal; the run waits (at most ``settle``) until **converged**: every member that
  considers itself joined has the same members, admins and name, and the joined members are exactly
  those members. Then every sender, both admins and ``Y`` send once more. Expected deliveries:
  messages sent during the partition by a member present throughout (neither X, Z nor Y) to every such
  member; messages sent after convergence to every final member but the sender.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from meshchat.errors import GroupFull, UnknownGroup
from meshchat.groups.events import MemberStatus
from meshchat.groups.seal import read_header
from meshchat.sim.group_scenario import GroupResults, GroupRun, GroupScenario
from meshchat.sim.group_sim import GroupSimulation, SimUser
from meshchat.sim.results import DIGITS, summarize
from meshchat.sim.running import collector_paused
from meshchat.sim.world import component_rng
from meshchat.wire import decode_envelope

__all__ = ["JOINER_GRACE", "run_group"]

#: Seconds after a joiner's join from which its deliveries are counted (``details`` of churn).
JOINER_GRACE = 5.0
#: Times an invitation refused because the group is full is tried again, a second apart.
_INVITE_TRIES = 10
#: Seconds between the end of the setup and the first measured message.
_QUIET = 5.0


@dataclass(slots=True)
class _Sent:
    """One measured message and who must decrypt it."""

    message_id: bytes
    sender: int
    sent_at: float
    expected: tuple[int, ...]


class _Run:
    """State shared by the scripted runs."""

    def __init__(self, scenario: GroupScenario, *, extra_users: int) -> None:
        self.scenario = scenario
        self.sim = GroupSimulation(scenario, users=scenario.members + extra_users)
        self.rng = component_rng(scenario.seed, "group/script")
        self.members = self.sim.users[: scenario.members]
        self.admin = self.members[0]
        self.senders = self.members[2 : 2 + scenario.senders]
        self.group_id = b""
        self.sent: list[_Sent] = []
        self.setup_s: float | None = None
        self.setup_bytes: float | None = None
        self.phase_start = 0.0
        self.phase_bytes = (0, 0, 0)
        self.phase_received: tuple[int, int, int] | None = None
        self.details: dict[str, object] = {}

    def setup(self) -> None:
        sim = self.sim
        self.group_id = sim.create(self.admin, self.members[1:], "simulated group")
        done = sim.run_while(lambda: len(sim.invited) < len(self.members) - 1, limit=self.scenario.settle)
        self.setup_s = None if done is None else round(done, DIGITS)
        self.setup_bytes = round(self.bytes_in(self.members) / len(self.members), DIGITS)
        sim.run_until(sim.elapsed + _QUIET)

    def bytes_in(self, users: Sequence[SimUser]) -> int:
        return sum(self.sim.received(users))

    def send(self, user: SimUser, expected: Sequence[SimUser]) -> None:
        mid = self.sim.send(user, self.group_id, f"message {len(self.sent)}".encode())
        self.sent.append(
            _Sent(mid, user.index, self.sim.elapsed, tuple(u.index for u in expected if u is not user))
        )

    def message_phase(self, expected: Sequence[SimUser]) -> None:
        """The measured messages, one every ``interval``, from the senders in turn (scheduled now)."""
        s, sim = self.scenario, self.sim
        self.phase_start = sim.elapsed
        self.phase_bytes = self.sim.received(self.members)
        for i in range(s.messages):
            sender = self.senders[i % len(self.senders)]
            sim.at(self.phase_start + i * s.interval, partial(self.send, sender, expected))

    def run_phase(self) -> None:
        """Run to the end of the message phase (its drain included) and count what members received."""
        s = self.scenario
        self.sim.run_until(self.phase_start + (s.messages - 1) * s.interval + s.drain)
        self.end_phase()

    def end_phase(self) -> None:
        """Count what members received since the phase started."""
        now = self.sim.received(self.members)
        before = self.phase_bytes
        self.phase_received = (now[0] - before[0], now[1] - before[1], now[2] - before[2])

    def results(self, started: float, measured: int) -> GroupResults:
        s, sim = self.scenario, self.sim
        latencies: list[float] = []
        complete: list[float] = []
        expected = delivered = 0
        for record in self.sent:
            times = [sim.decrypted.get((record.message_id, i)) for i in record.expected]
            got = [t - record.sent_at for t in times if t is not None]
            expected += len(times)
            delivered += len(got)
            latencies += got
            if got and len(got) == len(times):
                complete.append(max(got))
        per = len(self.members) * measured
        by_path = None
        if self.phase_received is not None and per:
            by_path = dict(
                zip(
                    ("group", "direct", "mailbox"),
                    (round(b / per, DIGITS) for b in self.phase_received),
                    strict=True,
                )
            )
        return GroupResults(
            run=s.run.value,
            seed=s.seed,
            members=s.members,
            messages=len(self.sent),
            delivery_ratio=round(delivered / expected, DIGITS) if expected else None,
            expected=expected,
            delivered=delivered,
            duplicates=sim.duplicates,
            all_decrypted_s=summarize(sorted(complete), ordered=True),
            latency_s=summarize(sorted(latencies), ordered=True),
            bytes_per_member_per_message=None if by_path is None else round(sum(by_path.values()), DIGITS),
            bytes_by_path=by_path,
            setup_s=self.setup_s,
            setup_bytes_per_member=self.setup_bytes,
            details=self.details,
            core_counts=sim.core_counts(),
            discarded=sim.discarded(),
            mailbox_calls=sim.calls,
            driver_counts=sim.driver_counts(),
            controls=dict(sorted(sim.controls.items())),
            events=sim.events,
            virtual_seconds=round(sim.elapsed, DIGITS),
            wall_seconds=round(time.perf_counter() - started, 3),
            parameters=s.to_dict(),
        )


def _fanout(run: _Run) -> int:
    run.setup()
    run.message_phase(run.members)
    run.run_phase()
    return run.scenario.messages


def _removal(run: _Run) -> int:
    measured = _fanout(run)
    sim, admin = run.sim, run.admin
    victim = run.members[-1]
    remaining = [u for u in run.members if u is not victim]
    victim.eavesdrop = True
    before_bytes, before_in, started = sim.bytes_total, run.bytes_in(remaining), sim.elapsed
    sim.apply(admin, lambda core: core.remove(run.group_id, victim.key, wall_now=sim.now))
    run.send(admin, remaining)
    after = run.sent[-1]
    done = sim.run_while(
        lambda: any((after.message_id, i) not in sim.decrypted for i in after.expected),
        limit=run.scenario.settle,
        step=0.01,
    )
    moved, received = sim.bytes_total - before_bytes, run.bytes_in(remaining) - before_in
    sim.run_until(sim.elapsed + run.scenario.drain)
    chain_id = _chain_of(run, after.message_id)
    run.details["removal"] = {
        "seconds": None if done is None else round(done - started, DIGITS),
        "bytes": moved,
        "bytes_per_remaining_member": round(received / len(remaining), DIGITS),
        "removed_decrypted": sum(
            (r.message_id, victim.index) in sim.decrypted for r in run.sent if r.sent_at >= started
        ),
        "removed_got_chain": chain_id in victim.chains_handed,
        "removed_status": victim.core.view(run.group_id).status.value,
    }
    return measured


def _churn(run: _Run) -> int:
    s, sim, rng = run.scenario, run.sim, run.rng
    run.setup()
    count = max(2, round(s.churn * s.members))
    gone = rng.sample(run.members[2 + s.senders :], count)
    leavers, removed = gone[: count // 2], gone[count // 2 :]
    joiners = sim.users[s.members : s.members + count]
    going = {u.index for u in gone}
    throughout = [u for u in run.members if u.index not in going]
    run.message_phase(throughout)
    span = (s.messages - 1) * s.interval
    gid, admin = run.group_id, run.admin
    went_at: dict[int, float] = {}

    def leave(user: SimUser) -> None:
        went_at[user.index] = sim.elapsed
        sim.apply(user, lambda core: core.leave(gid, wall_now=sim.now))

    def remove(user: SimUser) -> None:
        went_at[user.index] = sim.elapsed
        sim.apply(admin, lambda core: core.remove(gid, user.key, wall_now=sim.now))

    def invite(user: SimUser, tries: int) -> None:
        try:
            sim.apply(admin, lambda core: core.invite(gid, user.public, wall_now=sim.now))
        except GroupFull:  # the departure it follows has not reached the admin yet: a little later
            if tries < _INVITE_TRIES:
                sim.at(sim.elapsed + 1.0, partial(invite, user, tries + 1))

    # Departures at random times; each joiner is invited 1-3 s after one of them (a full group of
    # 1,000 takes nobody more before someone went).
    times = sorted(rng.uniform(0, span) for _ in gone)
    for user, at in zip(gone, times, strict=True):
        sim.at(run.phase_start + at, partial(leave if user in leavers else remove, user))
    for user, at in zip(joiners, times, strict=True):
        sim.at(run.phase_start + at + rng.uniform(1.0, 3.0), partial(invite, user, 0))
    run.run_phase()
    joiner_expected = joiner_delivered = gone_after = 0
    for record in run.sent:
        for user in joiners:
            joined = sim.invited.get(user.index)
            if joined is not None and record.sent_at >= joined + JOINER_GRACE:
                joiner_expected += 1
                joiner_delivered += (record.message_id, user.index) in sim.decrypted
        for user in gone:
            after = record.sent_at >= went_at.get(user.index, float("inf")) + JOINER_GRACE
            gone_after += after and (record.message_id, user.index) in sim.decrypted
    final = admin.core.view(gid)
    run.details["churn"] = {
        "left": len(leavers),
        "removed": len(removed),
        "joined": sum(u.index in sim.invited for u in joiners),
        "members_at_end": len(final.members),
        "joiner_expected": joiner_expected,
        "joiner_delivered": joiner_delivered,
        "gone_decrypted_after_going": gone_after,
    }
    return s.messages


def _partition(run: _Run) -> int:
    s, sim, rng = run.scenario, run.sim, run.rng
    run.setup()
    run.phase_start, run.phase_bytes = sim.elapsed, sim.received(run.members)
    gid, a0, a1 = run.group_id, run.members[0], run.members[1]
    newcomer = sim.users[s.members]
    sim.apply(a0, lambda core: core.promote(gid, a1.key, wall_now=sim.now))
    for user in (*run.senders, a1):
        run.send(user, run.members)
    sim.run_until(sim.elapsed + s.drain)
    # The split: the admins on either side, the newcomer with the second admin.
    others = run.members[2:]
    rng.shuffle(others)
    for rank, user in enumerate(others):
        user.side = rank % 2
    a1.side = newcomer.side = 1
    mailbox_sides = [rank % 2 for rank in range(s.mailboxes)]
    rng.shuffle(mailbox_sides)
    sim.split([u.side for u in sim.users], mailbox_sides)
    split_at = sim.elapsed
    quiet = [u for u in others if u not in run.senders]
    x = rng.choice([u for u in quiet if u.side == 1])  # removed by side 0
    z = rng.choice([u for u in quiet if u.side == 0])  # removed by side 1
    throughout = [u for u in run.members if u is not x and u is not z]
    sim.at(split_at + 10, lambda: sim.apply(a0, lambda core: core.remove(gid, x.key, wall_now=sim.now)))
    # Z goes before Y comes: a group of 1,000 takes nobody more.
    sim.at(split_at + 20, lambda: sim.apply(a1, lambda core: core.remove(gid, z.key, wall_now=sim.now)))
    sim.at(
        split_at + 30, lambda: sim.apply(a1, lambda core: core.invite(gid, newcomer.public, wall_now=sim.now))
    )
    newcomer_sent: list[bytes] = []
    sim.at(split_at + 40, lambda: newcomer_sent.append(sim.send(newcomer, gid, b"hello from the newcomer")))
    spacing = s.partition_length / (s.messages + 1)
    for i in range(s.messages):
        sender = run.senders[i % len(run.senders)]
        sim.at(split_at + (i + 1) * spacing, partial(run.send, sender, throughout))
    sim.run_until(split_at + s.partition_length)
    sim.heal()
    healed_at = sim.elapsed
    via_before = Counter(sim.changes_via)
    done = sim.run_while(lambda: not _converged(run), limit=s.settle)
    via_after_heal = dict(sorted((sim.changes_via - via_before).items()))
    final = a0.core.view(gid)
    final_members = [u for u in sim.users if u.key in final.members]
    before = len(run.sent)
    for user in (*run.senders, a0, a1, newcomer):
        if user.key in final.members:
            run.send(user, final_members)
    post_heal = run.sent[before:]
    sim.run_until(sim.elapsed + s.drain)
    states = {_state_of(u, gid) for u in final_members}
    present = {_state_of(u, gid) for u in throughout}
    newcomer_mid = newcomer_sent[0] if newcomer_sent else b""
    leaked = sum(_chain_of(run, r.message_id) in x.chains_handed | z.chains_handed for r in post_heal)
    during = [r for r in run.sent if split_at <= r.sent_at < healed_at]
    from_newcomer = [r for r in post_heal if r.sender == newcomer.index]
    from_present = [r for r in post_heal if r.sender != newcomer.index]
    run.details["partition"] = {
        "converged": done is not None,
        "converged_s_after_heal": None if done is None else round(done - healed_at, DIGITS),
        "states_identical": len(states) == 1,
        "ops_learnt_after_heal_via": via_after_heal,
        "present_throughout_states_identical": len(present) == 1,
        "newcomer_state_matches": _state_of(newcomer, gid) == _state_of(a0, gid),
        "post_heal_messages_on_chains_handed_to_removed": leaked,
        "final_members": len(final.members),
        "final_admins": len(final.admins),
        "removed_x_out": x.key not in final.members,
        "removed_z_out": z.key not in final.members,
        "newcomer_in": newcomer.key in final.members,
        "during_partition": _tally(run, during),
        "post_heal_from_present": _tally(run, from_present),
        "post_heal_from_newcomer": _tally(run, from_newcomer),
        "newcomer_partition_message_delivered": sum(
            (newcomer_mid, u.index) in sim.decrypted for u in throughout
        ),
        "newcomer_partition_message_expected": len(throughout),
    }
    run.end_phase()
    return len(run.sent)


def _tally(run: _Run, records: Sequence[_Sent]) -> dict[str, int]:
    """Deliveries expected and done for ``records``."""
    decrypted = run.sim.decrypted
    expected = sum(len(r.expected) for r in records)
    done = sum((r.message_id, i) in decrypted for r in records for i in r.expected)
    return {"messages": len(records), "expected": expected, "delivered": done}


def _state_of(user: SimUser, group_id: bytes) -> tuple[frozenset[bytes], frozenset[bytes], str, str]:
    try:
        view = user.core.view(group_id)
    except UnknownGroup:
        return frozenset(), frozenset(), "", "unknown"
    return view.members, view.admins, view.name, view.status.value


def _converged(run: _Run) -> bool:
    """Every user that considers itself joined holds the same state, whose members are exactly those."""
    states: set[tuple[frozenset[bytes], frozenset[bytes], str, str]] = set()
    joined: set[bytes] = set()
    for user in run.sim.users:
        state = _state_of(user, run.group_id)
        if state[3] == MemberStatus.JOINED.value:
            states.add(state)
            joined.add(user.key)
    return len(states) == 1 and next(iter(states))[0] == joined


def _chain_of(run: _Run, message_id: bytes) -> bytes:
    """The chain id a sent message is sealed with, read from the sender's outbox envelope."""
    for record in run.sent:
        if record.message_id == message_id:
            out = run.sim.users[record.sender].core.storage.outbox_get(message_id)
            assert out is not None
            return read_header(decode_envelope(out.envelope), run.group_id)[0]
    raise KeyError(message_id.hex())


def run_group(scenario: GroupScenario) -> GroupResults:
    """Run ``scenario`` and return its results."""
    started = time.perf_counter()  # wall time, only for the report
    churners = max(2, round(scenario.churn * scenario.members))
    runs = {
        GroupRun.FANOUT: (_fanout, 0),
        GroupRun.REMOVAL: (_removal, 0),
        GroupRun.CHURN: (_churn, churners),
        GroupRun.PARTITION: (_partition, 1),
    }
    script, extra = runs[scenario.run]
    with collector_paused():
        run = _Run(scenario, extra_users=extra)
        measured = script(run)
    return run.results(started, measured)
