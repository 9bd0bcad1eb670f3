"""Properties of the groups core over random histories (hypothesis): whatever members do, in any
order, a member who is out reads nothing sent after it went, and everyone in reads everything."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from meshchat.errors import MeshchatError
from meshchat.groups.events import MemberStatus
from tests.group_harness import GroupNet

POOL = 7
Step = tuple[str, int, int]
steps = st.lists(
    st.tuples(
        st.sampled_from(["send", "send", "send", "remove", "invite", "leave", "promote"]),
        st.integers(0, POOL - 1),
        st.integers(0, POOL - 1),
    ),
    min_size=1,
    max_size=18,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=steps, seed=st.integers(0, 2**16))
def test_removed_members_read_nothing_sent_after_and_members_read_everything(
    history: list[Step], seed: int
) -> None:
    net = GroupNet(POOL, seed=seed)
    gid = net.create("G", 0, [1, 2, 3])
    inside = {0, 1, 2, 3}
    sent: list[tuple[str, frozenset[int], frozenset[int]]] = []  # (text, members then, out then)
    ever = set(inside)
    for n, (kind, who, whom) in enumerate(history):
        view = net[who].core.groups()
        joined = any(v.group_id == gid and v.status is MemberStatus.JOINED for v in view)
        if not joined:
            continue
        try:
            if kind == "send":
                text = f"m{n}"
                net.send(who, gid, text)
                sent.append((text, frozenset(inside - {who}), frozenset(ever - inside)))
            elif kind == "remove" and whom in inside and whom != who:
                net.op(who, "remove", gid, net[whom].key)
                inside.discard(whom)
            elif kind == "invite" and whom not in inside:
                net.op(who, "invite", gid, net[whom].identity.public)
                net.join(whom, gid)
                inside.add(whom)
                ever.add(whom)
            elif kind == "leave":
                net.op(who, "leave", gid)
                inside.discard(who)
            elif kind == "promote" and whom in inside and whom != who:
                net.op(who, "promote", gid, net[whom].key)
        except MeshchatError:  # a member who is not an admin, an ADD of a member: refused, no change
            continue
    removed_then_sent = any(out for _, _, out in sent)
    event(f"a message sent after a member went: {removed_then_sent}")
    event(f"sends: {min(len(sent), 5)}+")
    for i in range(POOL):
        status = net[i].core.groups()[0].status if net[i].core.groups() else None
        assert (status is MemberStatus.JOINED) == (i in inside), (i, status)
    for text, members, out in sent:
        for i in members:
            assert text in net.texts(i, gid), (text, i)
        for i in out:
            assert text not in net.texts(i, gid), (text, i)
    # every member who stayed has the same view of the group
    views = {(net[i].core.view(gid).members, net[i].core.view(gid).admins) for i in inside}
    assert len(views) <= 1
