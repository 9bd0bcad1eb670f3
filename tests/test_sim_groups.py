"""The group simulator (meshchat.sim.group_sim, group_runs): real groups cores over real messengers."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshchat.groups.events import MemberStatus
from meshchat.sim.group_runs import run_group
from meshchat.sim.group_scenario import GroupResults, GroupRun, GroupScenario
from meshchat.sim.group_sim import GroupSimulation

ROOT = Path(__file__).resolve().parent.parent

#: Small runs: 40 members, 6 measured messages from 2 senders, 4 mailboxes.
SMALL = GroupScenario(members=40, mailboxes=4, messages=6, senders=2, settle=120.0, seed=3)
#: The issue's size.
BIG = GroupScenario(members=1000, messages=10, senders=3, settle=120.0, seed=1)


def _one_hop(result: GroupResults) -> None:
    """Every expected member decrypted every message within one link delay (50-150 ms), once."""
    assert result.delivery_ratio == 1.0 and result.delivered == result.expected > 0
    assert result.duplicates == 0
    worst = result.all_decrypted_s["max"]
    assert worst is not None and worst <= 0.15
    _clean(result)


def _clean(result: GroupResults) -> None:
    """Nothing went wrong in the driver: no storage problem, no deadline left behind, no stray message."""
    counts = result.driver_counts
    for name in ("store_problems", "group_problems", "stale_deadlines", "control_to_stranger"):
        assert counts[name] == 0, name
    assert counts.get("chats_received", 0) == 0


def test_fanout_delivers_every_message_to_every_member_in_one_hop() -> None:
    result = run_group(SMALL)
    assert result.run == "fanout" and result.messages == 6 and result.expected == 6 * 39
    _one_hop(result)
    assert result.setup_s is not None and result.setup_s <= 1.0  # invitations: one 1:1 hop
    assert result.bytes_per_member_per_message is not None and result.bytes_per_member_per_message > 0
    # Each sender's first message hands its chain to the 39 others; nothing else is handed out.
    assert result.controls["chain"] == 2 * 39 and result.controls["ops"] == 39
    assert result.core_counts["chains_started"] == 2


def test_same_seed_same_json_and_another_seed_differs() -> None:
    first = run_group(SMALL).to_json()
    assert run_group(SMALL).to_json() == first
    assert run_group(dataclasses.replace(SMALL, seed=4)).to_json() != first
    assert "wall_seconds" not in json.loads(first)


def test_same_json_in_processes_with_different_string_hashing() -> None:
    """Nothing depends on the order of sets of bytes or strings, which changes with PYTHONHASHSEED."""
    code = (
        "from meshchat.sim.group_runs import run_group; "
        "from meshchat.sim.group_scenario import GroupScenario, GroupRun; "
        "print(run_group(GroupScenario(run=GroupRun.CHURN, members=24, mailboxes=3, messages=4, senders=2, "
        "churn=0.1, loss=0.05)).to_json())"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed},
            timeout=300,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1] and json.loads(outputs[0])["run"] == "churn"


def test_removed_member_reads_nothing_sent_after_its_removal() -> None:
    result = run_group(dataclasses.replace(SMALL, run=GroupRun.REMOVAL))
    removal = result.details["removal"]
    assert isinstance(removal, dict)
    # The removed member stays subscribed (an eavesdropper) and still cannot read the next message:
    # the chain it is sealed with was never handed to it, and its core emitted nothing for it.
    assert removal["removed_decrypted"] == 0
    assert removal["removed_got_chain"] is False
    assert removal["removed_status"] == "removed"
    # Every remaining member reads it: a new chain handed over the 1:1 path, one hop like the envelope.
    assert removal["seconds"] is not None and removal["seconds"] <= 0.5
    assert isinstance(removal["bytes"], int) and removal["bytes"] > 0
    assert result.delivery_ratio == 1.0 and result.duplicates == 0
    _clean(result)
    assert result.core_counts["chains_started"] == 3  # two senders, then the admin's after the removal


def test_churn_delivers_everything_to_the_members_present_throughout() -> None:
    result = run_group(dataclasses.replace(SMALL, run=GroupRun.CHURN, members=60, messages=10, churn=0.1))
    churn = result.details["churn"]
    assert isinstance(churn, dict)
    assert churn["left"] == 3 and churn["removed"] == 3 and churn["joined"] == 6
    assert churn["members_at_end"] == 60
    assert churn["gone_decrypted_after_going"] == 0
    assert result.delivery_ratio == 1.0 and result.duplicates == 0
    _clean(result)


def _partition(members: int, *, seed: int = 3) -> dict[str, object]:
    result = run_group(
        dataclasses.replace(
            SMALL, run=GroupRun.PARTITION, members=members, messages=10, partition_length=300.0, seed=seed
        )
    )
    assert result.duplicates == 0
    _clean(result)
    details = result.details["partition"]
    assert isinstance(details, dict)
    return details


def test_partition_members_present_throughout_converge_and_read_both_sides() -> None:
    """Ops made on each side reach the other after the heal (group topic and mailbox syncs of the
    group's tag), and so do the messages sent during the partition: for every member that was a member
    on both sides."""
    details = _partition(40)
    assert details["present_throughout_states_identical"] is True
    assert details["removed_x_out"] and details["removed_z_out"] and details["newcomer_in"]
    assert details["final_members"] == 39 and details["final_admins"] == 2
    # What carried the other side's ops: the group envelopes stored on the other side's mailboxes,
    # fetched by the syncs that follow the heal (the topic copies were published before it).
    via = details["ops_learnt_after_heal_via"]
    assert isinstance(via, dict) and via.get("mailbox", 0) >= 40 and via.get("topic", 0) == 0
    for tally in (details["during_partition"], details["post_heal_from_present"]):
        assert isinstance(tally, dict) and tally["messages"] > 0
        assert tally["delivered"] == tally["expected"] > 0


def test_partition_newcomer_converges_and_is_read_by_everyone() -> None:
    """Regression (fixed in GroupsCore by 7a7dad2): a member added on one side never got the other
    side's ops (sealed with chains it never had), never converged, and kept handing its chain to a
    member removed on the other side."""
    details = _partition(40)
    assert details["converged"] is True and details["states_identical"] is True
    assert details["newcomer_state_matches"] is True
    assert details["post_heal_messages_on_chains_handed_to_removed"] == 0
    tally = details["post_heal_from_newcomer"]
    assert isinstance(tally, dict) and tally["delivered"] == tally["expected"] > 0


def test_partition_newcomer_message_sent_during_the_partition_is_read_by_everyone() -> None:
    """Regression (fixed in GroupsCore by a27a08b, early chain handouts): a handout that reached a
    member before the op making its sender a member was dropped for good, so the newcomer's message
    sent during the partition stayed unreadable to the other side (19 of 38 read it)."""
    details = _partition(40)
    assert details["newcomer_partition_message_delivered"] == details["newcomer_partition_message_expected"]


def test_scenario_rejects_impossible_knobs() -> None:
    with pytest.raises(ValueError, match="members"):
        GroupScenario(members=1001)
    with pytest.raises(ValueError, match="senders"):
        GroupScenario(members=8, senders=3)
    with pytest.raises(ValueError, match="round trip"):
        GroupScenario(latency=(0.1, 6.0))


@pytest.mark.slow
def test_fanout_of_a_thousand_members() -> None:
    result = run_group(BIG)
    _one_hop(result)
    assert result.expected == 10 * 999


@pytest.mark.slow
def test_removal_in_a_thousand_members() -> None:
    result = run_group(dataclasses.replace(BIG, run=GroupRun.REMOVAL))
    removal = result.details["removal"]
    assert isinstance(removal, dict)
    assert removal["removed_decrypted"] == 0 and removal["removed_got_chain"] is False
    assert removal["seconds"] is not None and removal["seconds"] <= 10.0
    assert result.delivery_ratio == 1.0


@pytest.mark.slow
def test_churn_of_five_percent_in_a_thousand_members() -> None:
    result = run_group(dataclasses.replace(BIG, run=GroupRun.CHURN, messages=12, churn=0.05))
    churn = result.details["churn"]
    assert isinstance(churn, dict) and churn["left"] + churn["removed"] == 50
    assert churn["joined"] == 50 and churn["members_at_end"] == 1000  # invitations of ~100 ops: 3 parts
    assert churn["gone_decrypted_after_going"] == 0
    assert result.delivery_ratio == 1.0 and result.duplicates == 0


@pytest.mark.slow
def test_partition_of_a_thousand_members() -> None:
    result = run_group(dataclasses.replace(BIG, run=GroupRun.PARTITION, partition_length=120.0, settle=60.0))
    details = result.details["partition"]
    assert isinstance(details, dict)
    assert details["converged"] is True and details["states_identical"] is True
    assert details["post_heal_messages_on_chains_handed_to_removed"] == 0
    for tally in (
        details["during_partition"],
        details["post_heal_from_present"],
        details["post_heal_from_newcomer"],
    ):
        assert isinstance(tally, dict) and tally["delivered"] == tally["expected"] > 0


def test_invitation_in_several_parts_is_accepted_when_they_arrive_in_order() -> None:
    """Regression (fixed in GroupsCore by 7a7dad2): when the first part (with the CREATE) of an
    invitation in several parts arrived first, the member was not in that part's state yet, the part
    was dropped and the rest waited forever (11 of 50 invitations in the 1,000-member churn run)."""
    scenario = GroupScenario(members=10, mailboxes=3, senders=1, latency=(0.1, 0.1), seed=3)
    sim = GroupSimulation(scenario, users=11)
    admin, outsider = sim.users[0], sim.users[10]
    group_id = sim.create(admin, sim.users[1:10], "before")
    sim.run_until(2.0)
    for i in range(50):  # 52 ops in all: the invitation goes in two parts (48 ops per part at most)
        sim.apply(admin, lambda core, i=i: core.rename(group_id, f"name {i}", wall_now=sim.now))
    sim.run_until(4.0)
    sim.apply(admin, lambda core: core.invite(group_id, outsider.public, wall_now=sim.now))
    sim.run_until(10.0)  # equal link delays: the parts arrive in the order they were sent
    assert sim.controls["ops"] == 9 + 2
    assert outsider.core.view(group_id).status is MemberStatus.JOINED
