"""The groups core: invitations, one envelope per message, removal, receipts, hostile members, restarts."""

from __future__ import annotations

import pytest

from meshchat.errors import GroupFull, NotAuthorized, NotInGroup, UnknownGroup
from meshchat.groups.chains import SenderChain
from meshchat.groups.core import GroupsCore
from meshchat.groups.events import MemberStatus, PublishGroup, SendControl
from meshchat.groups.keys import ROTATE_SECONDS
from meshchat.groups.ops import OpKind
from meshchat.groups.payload import TextBody, encode_body
from meshchat.groups.seal import seal_group
from meshchat.groups.storage import GroupWrite
from meshchat.identity import Identity
from tests.group_harness import GroupNet


def test_invited_members_join_and_every_member_reads_every_message() -> None:
    net = GroupNet(5)
    gid = net.create("Family", 0, [1, 2, 3, 4], join=False)
    for i in range(1, 5):
        assert [inv.name for inv in net[i].invited] == ["Family"]
        assert net[i].core.view(gid).status is MemberStatus.INVITED
        net.join(i, gid)
        assert net[i].core.view(gid).status is MemberStatus.JOINED
    net.send(0, gid, "dinner at 8")
    net.send(2, gid, "I'll bring bread")
    for i in range(5):
        expected = [t for t, s in (("dinner at 8", 0), ("I'll bring bread", 2)) if s != i]
        assert net.texts(i, gid) == expected
        assert {m.sender for m in net[i].messages} <= {net[0].key, net[2].key}
    # the sender's own history holds its message too
    assert [m.body for m in net[0].core.history(gid)] == [b"dinner at 8", b"I'll bring bread"]


def test_one_envelope_per_group_message_whatever_the_size() -> None:
    net = GroupNet(12)
    gid = net.create("Class", 0, list(range(1, 12)))
    net.send(0, gid, "first")  # hands the chain out once
    before = len(net.published)
    record, actions = net[0].core.send(gid, b"second", wall_now=net.now)
    assert [type(a) for a in actions] == [PublishGroup]  # no per-member work once the chain is out
    net.perform(0, actions)
    net.deliver()
    assert len(net.published) == before + 1
    assert all("second" in net.texts(i, gid) for i in range(1, 12))
    assert record.members == 11


def test_a_removed_member_reads_nothing_sent_after_its_removal() -> None:
    net = GroupNet(5)
    gid = net.create("Family", 0, [1, 2, 3, 4])
    net.send(0, gid, "before")
    net.send(3, gid, "also before")
    assert "before" in net.texts(4, gid)
    net.op(0, "remove", gid, net[4].key)
    assert net[4].core.view(gid).status is MemberStatus.REMOVED
    assert net[4].key not in net[0].core.view(gid).members
    net.send(0, gid, "after, from the admin")
    net.send(3, gid, "after, from a member")
    assert "after, from the admin" not in net.texts(4, gid)
    assert "after, from a member" not in net.texts(4, gid)
    for i in (1, 2, 3):
        assert "after, from the admin" in net.texts(i, gid)
    for i in (1, 2):
        assert "after, from a member" in net.texts(i, gid)
    # even with every key it ever held, the removed member's core opens nothing new
    removed = net[4].core
    late = [e for e in net.published[-2:]]
    assert not [
        a for a in removed.envelopes_received(late, wall_now=net.now) if type(a).__name__ == "GroupMessage"
    ]


def test_only_admins_change_membership() -> None:
    net = GroupNet(4)
    gid = net.create("Committee", 0, [1, 2, 3])
    with pytest.raises(NotAuthorized):
        net[1].core.invite(gid, net[2].identity.public, wall_now=net.now)
    with pytest.raises(NotAuthorized):
        net[1].core.remove(gid, net[2].key, wall_now=net.now)
    net.op(0, "promote", gid, net[1].key)
    assert net[1].key in net[2].core.view(gid).admins
    net.op(1, "rename", gid, "House committee")
    assert all(net[i].core.view(gid).name == "House committee" for i in range(4))
    assert any(c.kind is OpKind.RENAME for c in net[3].changes)


def test_receipts_are_batched_and_counted_per_member() -> None:
    net = GroupNet(6)
    gid = net.create("Team", 0, list(range(1, 6)))
    first = net.send(0, gid, "one")
    second = net.send(0, gid, "two")
    controls_before = sum(1 for _ in net.queue)
    assert controls_before == 0
    net.tick(5.0)  # receipt timers fire: one receipt per member for both messages
    status = net[0].core.status(first)
    assert status is not None and status.delivered == 5 and status.members == 5
    assert net[0].core.status(second).delivered == 5  # type: ignore[union-attr]
    assert status.describe() == "delivered to 5 of 5"
    assert net[0].core.statistics()["receipts_received"] == 5  # one per member, not per message
    for i in range(1, 4):
        message = next(m for m in net[i].messages if m.message_id == first)
        net[i].core.mark_read(gid, message.sender, [message.message_id], wall_now=net.now)
    net.tick(5.0)
    assert net[0].core.status(first).read == 3  # type: ignore[union-attr]


def test_a_member_cannot_forge_another_members_message() -> None:
    """Members share each other's chain keys but not their signing keys."""
    net = GroupNet(3)
    gid = net.create("Trio", 0, [1, 2])
    net.send(0, gid, "genuine")
    # member 1 takes the admin's chain key from its receiving chain and seals a message with it
    receiver = next(iter(net[1].core._groups[gid].keys.receivers.values()))
    forged_chain = SenderChain(
        chain_id=receiver.chain_id,
        chain_key=receiver.chain_key,
        iteration=receiver.iteration,
        signing_seed=bytes(32),  # not the admin's
        created_at=int(net.now),
    )
    envelope, _ = seal_group(
        forged_chain, group_id=gid, body=encode_body(TextBody(body=b"forged", ref="")), wall_now=net.now
    )
    net[2].core.envelopes_received([envelope], wall_now=net.now)
    assert "forged" not in net.texts(2, gid)
    assert net[2].core.statistics().get("rejected_BadSignature") == 1
    net.send(0, gid, "still works")  # the forgery did not move the chain
    assert net.texts(2, gid) == ["genuine", "still works"]


def test_replayed_messages_are_delivered_once() -> None:
    net = GroupNet(3)
    gid = net.create("Trio", 0, [1, 2])
    net.send(0, gid, "once")
    envelope = net.published[-1]
    for _ in range(3):
        net.perform(1, net[1].core.envelopes_received([envelope], wall_now=net.now))
    assert net.texts(1, gid) == ["once"]
    assert net[1].core.statistics()["duplicate"] == 3


def test_restart_keeps_history_and_chains_and_delivers_nothing_twice() -> None:
    net = GroupNet(3)
    gid = net.create("Trio", 0, [1, 2])
    net.send(0, gid, "before restart")
    envelope = net.published[-1]
    member = net[1]
    member.core = GroupsCore(member.identity, member.storage, wall_now=net.now)
    net.perform(1, member.core.envelopes_received([envelope], wall_now=net.now))  # a mailbox's copy
    assert net.texts(1, gid) == ["before restart"]
    net.send(0, gid, "after restart")
    assert net.texts(1, gid) == ["before restart", "after restart"]
    assert [m.number for m in member.core.history(gid)] == [m.number for m in member.messages]


def test_leave_and_concurrent_changes_from_two_sides_converge() -> None:
    net = GroupNet(6)
    gid = net.create("Street", 0, [1, 2, 3, 4, 5])
    net.op(0, "promote", gid, net[3].key)
    net.sides = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    net.op(0, "remove", gid, net[5].key)  # side A removes 5
    net.op(3, "remove", gid, net[1].key)  # side B removes 1
    net.op(4, "leave", gid)
    net.heal()
    views = {i: net[i].core.view(gid) for i in (0, 2, 3)}
    assert len({(v.members, v.admins, v.name) for v in views.values()}) == 1
    assert views[0].members == frozenset({net[0].key, net[2].key, net[3].key})
    net.send(2, gid, "after the heal")
    for i in (0, 3):
        assert "after the heal" in net.texts(i, gid)
    for i in (1, 4, 5):
        assert "after the heal" not in net.texts(i, gid)


def test_unknown_group_and_not_joined_are_the_callers_mistakes() -> None:
    net = GroupNet(2)
    with pytest.raises(UnknownGroup):
        net[0].core.send(bytes(32), b"x", wall_now=net.now)
    gid = net.create("Pair", 0, [1], join=False)
    with pytest.raises(NotInGroup):
        net[1].core.send(gid, b"x", wall_now=net.now)


def test_hostile_control_messages_are_counted_not_raised() -> None:
    net = GroupNet(4)
    gid = net.create("Trio", 0, [1, 2])
    core = net[1].core
    outsider = net[3].identity.public
    assert core.control_received(outsider, b"\x00garbage", wall_now=net.now) == []
    assert core.statistics()["control_malformed"] == 1
    net.send(0, gid, "hello")
    handout = next(
        body for sender, to, body in net.controls if sender == 0 and to == 1 and b"\x02" in body[:3]
    )
    # the same handout again (a replay), and the same bytes from someone who is not a member
    assert core.control_received(net[0].identity.public, handout, wall_now=net.now) == []
    assert core.statistics()["chain_replayed"] == 1
    # a copy of a chain we hold, from someone else (for this or another group), never replaces it
    assert core.control_received(outsider, handout, wall_now=net.now) == []
    assert core.statistics()["chain_replayed"] == 2
    # an outsider's invitation naming a group that makes us no member is ignored
    _, actions = net[3].core.create("Spam", [], wall_now=net.now)
    ops = [a.body for a in actions if isinstance(a, SendControl)]
    assert ops == []  # nobody to invite: nothing sent
    net.send(0, gid, "still fine")
    assert net.texts(1, gid) == ["hello", "still fine"]


def test_in_an_announcements_group_only_admins_post() -> None:
    net = GroupNet(4)
    group_id, actions = net[0].core.create(
        "7B announcements", [net[i].identity.public for i in (1, 2, 3)], wall_now=net.now, admins_only=True
    )
    net.perform(0, actions)
    net.deliver()
    for i in (1, 2, 3):
        net.join(i, group_id)
        assert net[i].core.view(group_id).admins_only
    net.send(0, group_id, "no school on Friday")
    assert all(net.texts(i, group_id) == ["no school on Friday"] for i in (1, 2, 3))
    with pytest.raises(NotAuthorized):
        net[1].core.send(group_id, b"can we have Monday off too?", wall_now=net.now)
    # a member whose own node does not check (a hostile one) gets nowhere either: everyone drops it
    session = net[1].core._groups[group_id]
    write = GroupWrite()
    handouts = session.ensure_chain(write, net.now)
    envelope, _ = session.seal(encode_body(TextBody(body=b"forged announcement", ref="")), write, net.now)
    net.perform(1, handouts)
    net.deliver()
    for i in (0, 2, 3):
        net.perform(i, net[i].core.envelopes_received([envelope], wall_now=net.now))
        assert "forged announcement" not in net.texts(i, group_id)
        assert net[i].core.statistics()["not_admin_post"] == 1
    # the admin promotes a member: now it may post
    net.op(0, "promote", group_id, net[1].key)
    net.send(1, group_id, "class rep here")
    assert "class rep here" in net.texts(2, group_id)


def test_an_op_whose_parent_was_lost_is_fetched_from_its_author() -> None:
    net = GroupNet(4)
    gid = net.create("Street", 0, [1, 2, 3])
    net.send(0, gid, "hello")  # every member has the admin's chain now
    net.offline = {3}
    net.op(0, "rename", gid, "Elm street")
    net.held.clear()  # member 3 never gets the rename: not by gossip, not from a mailbox
    net.offline = set()
    net.op(0, "promote", gid, net[1].key)  # names the rename as its parent
    assert net[3].core.statistics()["ops_wanted"] == 1
    v0, v3 = net[0].core.view(gid), net[3].core.view(gid)
    assert (
        (v3.name, v3.members, v3.admins)
        == (v0.name, v0.members, v0.admins)
        == (
            "Elm street",
            v0.members,
            frozenset({net[0].key, net[1].key}),
        )
    )


def test_a_chain_is_replaced_on_schedule_post_compromise() -> None:
    net = GroupNet(3)
    gid = net.create("Trio", 0, [1, 2])
    net.send(0, gid, "first")
    assert net[0].core.statistics()["chains_started"] == 1
    net.now += ROTATE_SECONDS + 1
    net.send(0, gid, "a week later")
    assert net[0].core.statistics()["chains_started"] == 2  # a new chain, handed out again
    assert net.texts(1, gid) == ["first", "a week later"]


def test_a_group_larger_than_the_maximum_is_refused() -> None:
    net = GroupNet(1)
    many = [Identity(bytes([1]) + i.to_bytes(31, "big")).public for i in range(1000)]
    with pytest.raises(GroupFull):
        net[0].core.create("Too big", many, wall_now=net.now)
    assert net[0].core.groups() == []


def test_a_message_a_member_missed_is_published_again_until_every_member_has_it() -> None:
    net = GroupNet(3)
    gid = net.create("Trio", 0, [1, 2])
    net.send(0, gid, "hello")
    net.offline = {2}
    mid = net.send(0, gid, "are you there?")
    net.held.clear()  # member 2 missed it on the topic
    net.offline = set()
    net.tick(3.0)  # receipts: member 1 has it, member 2 does not
    assert net[0].core.status(mid).delivered == 1  # type: ignore[union-attr]
    net.tick(10.0)  # published again: member 2 takes it, member 1 drops it as a duplicate
    assert net.texts(2, gid) == ["hello", "are you there?"]
    assert net.texts(1, gid) == ["hello", "are you there?"]
    net.tick(3.0)
    assert net[0].core.status(mid).delivered == 2  # type: ignore[union-attr]
    published = len(net.published)
    net.tick(60.0)
    assert len(net.published) == published  # everyone has it: no more repeats


def test_a_member_added_on_one_side_of_a_partition_learns_the_other_sides_changes() -> None:
    net = GroupNet(6)
    gid = net.create("Street", 0, [1, 2, 3])
    net.op(0, "promote", gid, net[2].key)
    net.send(2, gid, "side B's admin has a chain")
    net.sides = {0: 0, 1: 0, 4: 0, 2: 1, 3: 1, 5: 1}
    net.op(0, "invite", gid, net[4].identity.public)  # side A adds 4
    net.join(4, gid)
    net.op(2, "rename", gid, "Elm street")  # side B renames and removes 1, unseen by 4
    net.op(2, "remove", gid, net[1].key)
    net.heal()
    views = {i: net[i].core.view(gid) for i in (0, 2, 3, 4)}
    assert len({(v.name, v.members, v.admins) for v in views.values()}) == 1, views
    assert views[4].name == "Elm street" and net[1].key not in views[4].members
    net.send(3, gid, "welcome, 4")
    assert "welcome, 4" in net.texts(4, gid)
    assert "welcome, 4" not in net.texts(1, gid)


def test_an_invitation_in_several_parts_arriving_in_any_order_is_complete() -> None:
    net = GroupNet(4)
    gid = net.create("Big", 0, [1], join=False)
    for i in range(60):  # enough ops that the op set needs two control messages
        net.op(0, "rename", gid, f"Big {i}")
    controls_before = len(net.controls)
    net.offline = {2, 3}
    net.op(0, "invite", gid, net[2].identity.public)
    net.op(0, "invite", gid, net[3].identity.public)
    net.held.clear()
    net.offline = set()
    for member, order in ((2, 1), (3, -1)):  # the first part first (it lacks the ADD), and the last first
        parts = [body for _, to, body in net.controls[controls_before:] if to == member]
        assert len(parts) >= 2
        core = net[member].core
        assert core.groups() == []
        for body in parts[::order]:
            net.perform(member, core.control_received(net[0].identity.public, body, wall_now=net.now))
        assert core.view(gid).status is MemberStatus.INVITED
        assert core.view(gid).name == "Big 59"


def test_a_change_nobody_heard_is_published_again_until_every_member_has_it() -> None:
    net = GroupNet(4)
    gid = net.create("Street", 0, [1, 2, 3])
    net.send(0, gid, "hello")
    net.offline = {1, 2, 3}
    net.op(0, "remove", gid, net[3].key)  # nobody hears it on the topic, and no mailbox keeps it
    controls = [h for h in net.held if h[2] == "control"]  # the messenger's outbox retries these
    net.held.clear()
    net.offline = set()
    net.queue.extend(controls)
    net.deliver()
    assert net[3].key in net[1].core.view(gid).members
    net.tick(11.0)  # published again
    assert net[3].key not in net[1].core.view(gid).members
    assert net[3].key not in net[2].core.view(gid).members
    statuses = len(net[0].statuses)
    net.tick(3.0)  # receipts for the change come back: no GroupStatus for it (it is no message)
    assert len(net[0].statuses) == statuses
    published = len(net.published)
    net.tick(60.0)
    assert len(net.published) == published  # both remaining members acknowledged it: no more


def test_an_older_chain_handout_arriving_after_a_newer_one_still_opens_its_messages() -> None:
    net = GroupNet(4)
    gid = net.create("Street", 0, [1, 2, 3])
    net.offline = {1}
    net.send(0, gid, "on the first chain")
    net.op(0, "remove", gid, net[3].key)
    net.send(0, gid, "on the second chain")
    held = [h for h in net.held if h[1] == 1]
    net.held.clear()
    net.offline = set()
    controls = [h for h in held if h[2] == "control"]
    envelopes = [h for h in held if h[2] == "group"]
    net.queue.extend(reversed(controls))  # the newer handout first, then the older one
    net.queue.extend(envelopes)
    net.deliver()
    assert net.texts(1, gid) == ["on the first chain", "on the second chain"]
    assert net[3].key not in net[1].core.view(gid).members
