"""Group membership: the rules table of meshchat/groups/membership.py, one test per row, and the
property that matters most: the same set of operations gives the same state, whatever the order.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.errors import DecodeError, GroupFull, NotAuthorized
from meshchat.groups import membership as membership_module
from meshchat.groups.membership import MAX_PENDING_OPS, GroupState, Membership, OpOutcome
from meshchat.groups.ops import (
    CREATE_NONCE_SIZE,
    MAX_GROUP_MEMBERS,
    GroupOp,
    OpKind,
    decode_op,
    encode_op,
    sign_op,
)
from meshchat.identity import Identity
from meshchat.sim.payloads import make_identities

POOL = make_identities(8, random.Random(2026))
A, B, C, D, E, F, G, H = POOL


def key(identity: Identity) -> bytes:
    return identity.public.ed25519


def keys(*identities: Identity) -> frozenset[bytes]:
    return frozenset(key(i) for i in identities)


def make_create(
    author: Identity, members: Iterable[bytes], *, name: str = "family", nonce: bytes = b""
) -> GroupOp:
    return sign_op(
        author,
        kind=OpKind.CREATE,
        group_id=b"",
        parents=(),
        targets={key(author), *members},
        name=name,
        nonce=nonce or bytes(range(CREATE_NONCE_SIZE)),
        created_at_ms=1_700_000_000_000,
    )


class Group:
    """A group and a Membership holding every op; ops can branch from any earlier op."""

    def __init__(self, *members: Identity, extra: Iterable[bytes] = ()) -> None:
        self.create = make_create(A, [*(key(m) for m in members), *extra])
        self.id = self.create.op_id
        self.all: list[GroupOp] = [self.create]
        self.clock = 1_700_000_000_000

    def sign(
        self,
        author: Identity,
        kind: OpKind,
        targets: Iterable[bytes] = (),
        *,
        after: Sequence[GroupOp],
        name: str = "",
    ) -> GroupOp:
        self.clock += 1
        op = sign_op(
            author,
            kind=kind,
            group_id=self.id,
            parents=[p.op_id for p in after],
            targets=targets,
            name=name,
            created_at_ms=self.clock,
        )
        self.all.append(op)
        return op

    def membership(self, ops: Iterable[GroupOp] | None = None) -> Membership:
        m = Membership(self.create)
        for op in self.all if ops is None else ops:
            m.add(op)
        return m

    def state(self) -> GroupState:
        """The state of every op, checked to be the same in reverse order and shuffled (twice)."""
        forward = self.membership().state()
        backward = self.membership(reversed(self.all)).state()
        shuffled = list(self.all) * 2
        random.Random(len(self.all)).shuffle(shuffled)
        assert self.membership(shuffled).state() == backward == forward
        return forward


def test_row_01_roles_in_the_causal_past() -> None:
    g = Group(B, C)
    m = g.membership()
    with pytest.raises(NotAuthorized):  # B is a member, not an admin
        m.add(g.sign(B, OpKind.ADD, [key(D)], after=[g.create]))
    with pytest.raises(NotAuthorized):  # D is not even a member
        m.add(g.sign(D, OpKind.LEAVE, after=[g.create]))
    with pytest.raises(NotAuthorized):
        m.add(g.sign(D, OpKind.RENAME, name="mine", after=[g.create]))
    promote = g.sign(A, OpKind.PROMOTE, [key(B)], after=[g.create])
    assert m.add(promote) is OpOutcome.ACCEPTED
    # An op is judged in its own past: B signing before it saw its promotion is refused...
    with pytest.raises(NotAuthorized):
        m.add(g.sign(B, OpKind.ADD, [key(D)], after=[g.create]))
    # ...and allowed once its past holds the promotion.
    assert m.add(g.sign(B, OpKind.ADD, [key(D)], after=[promote])) is OpOutcome.ACCEPTED
    assert m.state().members == keys(A, B, C, D)
    with pytest.raises(DecodeError):  # adding a member again
        m.add(g.sign(A, OpKind.ADD, [key(C)], after=[promote]))
    with pytest.raises(DecodeError):  # removing, promoting, demoting a non-member
        m.add(g.sign(A, OpKind.REMOVE, [key(E)], after=[promote]))
    with pytest.raises(DecodeError):
        m.add(g.sign(A, OpKind.PROMOTE, [key(E)], after=[promote]))
    many = [key(B), key(C), *(bytes([7, i]) * 16 for i in range(9))]  # > 8 targets: the bulk check
    with pytest.raises(DecodeError):
        m.add(g.sign(A, OpKind.REMOVE, many, after=[promote]))
    with pytest.raises(DecodeError):
        m.add(g.sign(A, OpKind.ADD, many, after=[promote]))
    stats = m.statistics()
    assert stats["refused_not_authorized"] == 4
    assert stats["refused_malformed"] == 5
    assert stats["accepted"] == 3  # the CREATE, the promotion, B's add
    assert stats["ops"] == 3


def test_row_02_add_x_concurrent_with_remove_x_remove_wins() -> None:
    g = Group(B, C, D)
    promote = g.sign(A, OpKind.PROMOTE, [key(B)], after=[g.create])
    removed = g.sign(A, OpKind.REMOVE, [key(D)], after=[promote])
    re_added = g.sign(A, OpKind.ADD, [key(D)], after=[removed])
    concurrent_remove = g.sign(B, OpKind.REMOVE, [key(D)], after=[promote])
    state = g.state()
    assert key(D) not in state.members
    assert key(D) in state.removed
    # Once an add has both removals in its past, D is back.
    g.sign(A, OpKind.ADD, [key(D)], after=[re_added, concurrent_remove])
    assert key(D) in g.state().members


def test_row_03_remove_x_then_add_x_brings_x_back() -> None:
    g = Group(B, C)
    removed = g.sign(A, OpKind.REMOVE, [key(C)], after=[g.create])
    assert g.state().members == keys(A, B)
    assert g.state().removed == keys(C)
    left = g.sign(C, OpKind.LEAVE, after=[g.create])  # C also left, concurrently with the removal
    back = g.sign(A, OpKind.ADD, [key(C)], after=[removed, left])
    state = g.state()
    assert state.members == keys(A, B, C)
    assert state.removed == frozenset()
    # Leaving again after the re-add counts.
    g.sign(C, OpKind.LEAVE, after=[back])
    assert g.state().members == keys(A, B)


def test_row_04_admins_removing_each_other_both_go() -> None:
    g = Group(B, C, D)
    promote = g.sign(A, OpKind.PROMOTE, [key(B)], after=[g.create])
    g.sign(A, OpKind.REMOVE, [key(B)], after=[promote])
    g.sign(B, OpKind.REMOVE, [key(A)], after=[promote])
    state = g.state()
    assert state.members == keys(C, D)
    assert state.removed == keys(A, B)
    assert state.admins == {min(key(C), key(D))}  # row 10 picks the new admin


def test_row_05_an_admin_losing_the_role_voids_her_concurrent_grants() -> None:
    g = Group(B, C, D)
    promote = g.sign(A, OpKind.PROMOTE, [key(B)], after=[g.create])
    g.sign(A, OpKind.DEMOTE, [key(B)], after=[promote])
    g.sign(B, OpKind.ADD, [key(E)], after=[promote])  # void
    g.sign(B, OpKind.PROMOTE, [key(C)], after=[promote])  # void
    g.sign(B, OpKind.RENAME, name="B's group", after=[promote])  # void
    g.sign(B, OpKind.REMOVE, [key(D)], after=[promote])  # still counts
    state = g.state()
    assert state.members == keys(A, B, C)
    assert state.admins == keys(A)
    assert state.name == "family"
    # Removed instead of demoted: the same.
    g2 = Group(B, C)
    promote2 = g2.sign(A, OpKind.PROMOTE, [key(B)], after=[g2.create])
    g2.sign(A, OpKind.REMOVE, [key(B)], after=[promote2])
    g2.sign(B, OpKind.ADD, [key(E)], after=[promote2])
    g2.sign(B, OpKind.DEMOTE, [key(A)], after=[promote2])  # counts: A is no admin...
    assert g2.state().members == keys(A, C)
    assert g2.state().admins == keys(A)  # ...but row 10 makes the earliest member (A) admin again


def test_row_06_promote_concurrent_with_demote_demote_wins() -> None:
    g = Group(B, C)
    promote_c = g.sign(A, OpKind.PROMOTE, [key(C)], after=[g.create])
    promote_b = g.sign(A, OpKind.PROMOTE, [key(B)], after=[promote_c])
    demote = g.sign(A, OpKind.DEMOTE, [key(B)], after=[promote_b])
    again = g.sign(C, OpKind.PROMOTE, [key(B)], after=[promote_b])  # C had not seen the demotion
    assert g.state().admins == keys(A, C)
    g.sign(C, OpKind.PROMOTE, [key(B)], after=[demote, again])
    assert g.state().admins == keys(A, B, C)  # a promotion that saw the demotion counts


def test_row_06_promote_concurrent_with_demote_of_a_plain_member() -> None:
    g = Group(B, C)
    promote_c = g.sign(A, OpKind.PROMOTE, [key(C)], after=[g.create])
    g.sign(A, OpKind.PROMOTE, [key(B)], after=[promote_c])
    g.sign(C, OpKind.DEMOTE, [key(B)], after=[promote_c])  # B was no admin in C's view: allowed
    assert g.state().admins == keys(A, C)


def test_row_07_remove_concurrent_with_promote_x_is_out_and_no_admin_when_back() -> None:
    g = Group(B, C)
    remove = g.sign(A, OpKind.REMOVE, [key(B)], after=[g.create])
    promote = g.sign(A, OpKind.PROMOTE, [key(B)], after=[g.create])
    assert g.state().members == keys(A, C)
    g.sign(A, OpKind.ADD, [key(B)], after=[remove, promote])
    state = g.state()
    assert key(B) in state.members
    assert key(B) not in state.admins  # the removal ended the role


def test_row_08_concurrent_renames_highest_op_id_then_the_latest() -> None:
    g = Group(B)
    promote = g.sign(A, OpKind.PROMOTE, [key(B)], after=[g.create])
    first = g.sign(A, OpKind.RENAME, name="Smiths", after=[promote])
    second = g.sign(B, OpKind.RENAME, name="The Smiths", after=[promote])
    winner = max((first, second), key=lambda op: op.op_id)
    assert g.state().name == winner.name
    loser = first if winner is second else second
    g.sign(A, OpKind.RENAME, name="Smith family", after=[loser])  # saw only the loser: concurrent
    names = {op.op_id: op.name for op in g.all if op.kind is OpKind.RENAME and op is not loser}
    assert g.state().name == names[max(names)]
    g.sign(B, OpKind.RENAME, name="final", after=g.all[-3:])
    assert g.state().name == "final"


def test_row_13_announce_only_admins_post_one_way() -> None:
    g = Group(B, C)
    assert not g.state().admins_only
    m = g.membership()
    with pytest.raises(NotAuthorized):  # a member cannot make the group an announcements group
        m.add(g.sign(B, OpKind.ANNOUNCE, after=[g.create]))
    g.all.pop()
    announce = g.sign(A, OpKind.ANNOUNCE, after=[g.create])
    assert g.state().admins_only
    # concurrent with A's removal by another admin, A's ANNOUNCE is void like a rename (row 5)
    h = Group(B, C)
    promote = h.sign(A, OpKind.PROMOTE, [key(B)], after=[h.create])
    h.sign(A, OpKind.ANNOUNCE, after=[promote])
    h.sign(B, OpKind.REMOVE, [key(A)], after=[promote])
    assert not h.state().admins_only
    # one way: later ops do not undo it
    g.sign(A, OpKind.RENAME, name="news", after=[announce])
    assert g.state().admins_only


def test_row_09_concurrent_adds_past_the_limit_are_counted_in_order() -> None:
    synthetic = sorted(bytes([1, i >> 8, i & 0xFF]) + bytes(29) for i in range(1200))
    start, left, right = synthetic[:900], synthetic[900:1000], synthetic[1000:1100]
    g = Group(B, extra=start)  # 902 members
    promote = g.sign(A, OpKind.PROMOTE, [key(B)], after=[g.create])
    add_left = g.sign(A, OpKind.ADD, left[:60], after=[promote])
    add_right = g.sign(B, OpKind.ADD, right[:60], after=[promote])
    state = g.state()
    assert len(state.members) == MAX_GROUP_MEMBERS
    first, second = sorted((add_left, add_right), key=lambda op: op.op_id)
    assert set(first.targets) <= state.members
    assert len(set(second.targets) & state.members) == MAX_GROUP_MEMBERS - 902 - 60
    assert set(second.targets) & state.members == set(second.targets[:38])  # ties by key
    # In one's own view an overflowing ADD is refused.
    m = g.membership()
    with pytest.raises(GroupFull):
        m.add(g.sign(A, OpKind.ADD, synthetic[1100:1199], after=[add_left]))
    assert m.statistics()["refused_full"] == 1


def test_row_09_a_member_beyond_the_limit_cannot_act() -> None:
    synthetic = sorted(bytes([2, i >> 8, i & 0xFF]) + bytes(29) for i in range(996))
    g = Group(B, extra=synthetic)  # A, B and 996 others: 998
    promote = g.sign(A, OpKind.PROMOTE, [key(B)], after=[g.create])
    add_c = g.sign(A, OpKind.ADD, [key(C)], after=[promote])
    add_de = g.sign(B, OpKind.ADD, [key(D), key(E)], after=[promote])  # together one too many
    first = min((add_c, add_de), key=lambda op: op.op_id)  # same depth: the lower op id counts first
    out_identity = C if first is add_de else max((D, E), key=key)
    state = g.state()
    assert len(state.members) == MAX_GROUP_MEMBERS
    assert state.members == keys(A, B, C, D, E) - keys(out_identity) | set(synthetic)
    m = g.membership()
    with pytest.raises(NotAuthorized):  # in a view with both adds, it is no member
        m.add(g.sign(out_identity, OpKind.LEAVE, after=[add_c, add_de]))


def test_row_10_no_admin_left_the_earliest_member_becomes_admin() -> None:
    g = Group(B, C, D)
    leave = g.sign(A, OpKind.LEAVE, after=[g.create])
    state = g.state()
    fallback = min(key(B), key(C), key(D))
    assert state.admins == {fallback}
    successor = next(i for i in (B, C, D) if key(i) == fallback)
    g.sign(successor, OpKind.ADD, [key(E)], after=[leave])  # the fallback admin may act
    assert key(E) in g.state().members
    # A member added earlier beats the creator's other CREATE targets only by order: a later add
    # never becomes the fallback while a CREATE member remains.
    assert g.state().admins == {fallback}


def test_row_10_the_stand_in_admin_keeps_the_role_by_promoting_itself() -> None:
    g = Group(B, C, D)
    leave = g.sign(A, OpKind.LEAVE, after=[g.create])
    stand_in = next(i for i in (B, C, D) if key(i) == min(key(B), key(C), key(D)))
    other = next(i for i in (B, C, D) if i is not stand_in)
    promote_other = g.sign(stand_in, OpKind.PROMOTE, [key(other)], after=[leave])
    assert g.state().admins == keys(other)  # a granted role exists: the stand-in is no admin now
    g.all.remove(promote_other)
    promote_self = g.sign(stand_in, OpKind.PROMOTE, [key(stand_in)], after=[leave])
    g.sign(stand_in, OpKind.PROMOTE, [key(other)], after=[promote_self])
    assert g.state().admins == keys(stand_in, other)


def test_row_10_empty_group_has_no_admin() -> None:
    g = Group()
    g.sign(A, OpKind.LEAVE, after=[g.create])
    state = g.state()
    assert state.members == frozenset() == state.admins
    assert state.removed == keys(A)


def test_row_11_ops_made_with_voided_rights_do_not_count() -> None:
    g = Group(B, C, D)
    promote_c = g.sign(A, OpKind.PROMOTE, [key(C)], after=[g.create])
    promote_b = g.sign(A, OpKind.PROMOTE, [key(B)], after=[promote_c])
    add_e = g.sign(B, OpKind.ADD, [key(E)], after=[promote_b])  # stored: B saw no demotion
    demote_a = g.sign(C, OpKind.DEMOTE, [key(A)], after=[promote_c])
    m = g.membership()
    state = m.state()
    assert key(B) not in state.admins  # A's promotion of B is void (row 5)...
    assert key(E) not in state.members  # ...so B's add does not count (row 11)
    assert state.admins == keys(C)
    assert m.statistics()["refused_not_authorized"] == 0
    # B, now seeing the demotion, may not add anyone.
    with pytest.raises(NotAuthorized):
        m.add(g.sign(B, OpKind.ADD, [key(F)], after=[add_e, demote_a]))


def test_row_12_removals_by_voided_admins_still_void_but_do_not_count() -> None:
    g = Group(B, C, D)
    promote_c = g.sign(A, OpKind.PROMOTE, [key(C)], after=[g.create])
    promote_d = g.sign(A, OpKind.PROMOTE, [key(D)], after=[promote_c])
    g.sign(D, OpKind.REMOVE, [key(C)], after=[promote_d])
    promote_b = g.sign(C, OpKind.PROMOTE, [key(B)], after=[promote_c])
    g.sign(B, OpKind.REMOVE, [key(A)], after=[promote_b])
    state = g.state()
    assert state.members == keys(A, B, C, D)
    assert state.admins == keys(A, C)


def test_wrong_group_and_second_create_are_refused() -> None:
    g = Group(B)
    other = Group(B)
    other.create = make_create(A, [key(B)], nonce=b"x" * CREATE_NONCE_SIZE)
    other.id = other.create.op_id
    m = g.membership()
    assert m.add(g.create) is OpOutcome.DUPLICATE
    with pytest.raises(DecodeError):
        m.add(other.create)
    with pytest.raises(DecodeError):
        m.add(other.sign(A, OpKind.ADD, [key(C)], after=[other.create]))
    assert m.statistics()["refused_wrong_group"] == 2
    with pytest.raises(ValueError):
        Membership(g.sign(A, OpKind.ADD, [key(C)], after=[g.create]))


def test_duplicates_change_nothing() -> None:
    g = Group(B)
    op = g.sign(A, OpKind.ADD, [key(C)], after=[g.create])
    m = g.membership()
    before = m.state()
    assert m.add(op) is OpOutcome.DUPLICATE
    assert m.add(decode_op(encode_op(op))) is OpOutcome.DUPLICATE
    assert m.state() is before
    assert m.statistics()["duplicate"] == 3  # g.membership() also hands it the CREATE again


def test_pending_ops_resolve_when_parents_arrive() -> None:
    g = Group(B, C)
    a = g.sign(A, OpKind.PROMOTE, [key(B)], after=[g.create])
    b = g.sign(B, OpKind.ADD, [key(D)], after=[a])
    c = g.sign(D, OpKind.LEAVE, after=[b])
    unauthorized = g.sign(C, OpKind.ADD, [key(E)], after=[b])  # C is no admin: dropped once judged
    m = Membership(g.create)
    assert m.add(c) is OpOutcome.PENDING
    assert m.add(unauthorized) is OpOutcome.PENDING
    assert m.add(b) is OpOutcome.PENDING
    assert m.add(c) is OpOutcome.DUPLICATE
    assert m.missing() == {a.op_id}
    assert m.statistics()["pending"] == 3
    assert m.add(a) is OpOutcome.ACCEPTED
    assert m.missing() == set()
    stats = m.statistics()
    assert stats["pending"] == 0
    assert stats["refused_not_authorized"] == 1
    assert stats["ops"] == 4
    g.all.remove(unauthorized)
    assert m.state() == g.membership().state()
    assert m.state().members == keys(A, B, C)
    assert m.get(b.op_id) == b
    assert m.get(unauthorized.op_id) is None
    assert b.op_id in m
    assert unauthorized.op_id not in m
    assert len(m) == 4


def test_what_follows_a_refused_op_is_dropped_not_fetched() -> None:
    g = Group(B, C)
    bad = g.sign(B, OpKind.PROMOTE, [key(C)], after=[g.create])  # B is no admin
    child = g.sign(C, OpKind.RENAME, name="C's", after=[bad])
    grandchild = g.sign(C, OpKind.LEAVE, after=[child])
    m = Membership(g.create)
    assert m.add(grandchild) is OpOutcome.PENDING
    assert m.add(child) is OpOutcome.PENDING
    assert m.missing() == {bad.op_id}
    with pytest.raises(NotAuthorized):
        m.add(bad)
    assert m.missing() == set()  # nothing left to fetch
    stats = m.statistics()
    assert (stats["pending"], stats["refused_parent"], stats["refused_not_authorized"]) == (0, 2, 1)
    with pytest.raises(DecodeError):  # arriving again later: refused at once, not held
        m.add(child)
    assert m.statistics()["refused_parent"] == 3
    assert m.statistics()["pending"] == 0


def test_pending_bound_evicts_the_oldest() -> None:
    g = Group(B)
    fake_parents = [bytes([9, i >> 8, i & 0xFF]) + bytes(29) for i in range(MAX_PENDING_OPS + 1)]
    m = Membership(g.create)
    held = []
    for parent in fake_parents:
        op = sign_op(A, kind=OpKind.RENAME, group_id=g.id, parents=[parent], name="x", created_at_ms=1)
        held.append(op)
        assert m.add(op) is OpOutcome.PENDING
    stats = m.statistics()
    assert stats["pending"] == MAX_PENDING_OPS
    assert stats["evicted"] == 1
    assert m.missing() == set(fake_parents[1:])  # the oldest held op is gone, and what it needed
    assert m.add(held[0]) is OpOutcome.PENDING  # so it is new again, and pushes out the next oldest
    assert m.statistics()["evicted"] == 2
    assert m.missing() == {fake_parents[0], *fake_parents[2:]}
    # A full holding area does not stop ops whose parents are here.
    assert m.add(g.sign(A, OpKind.ADD, [key(C)], after=[g.create])) is OpOutcome.ACCEPTED
    assert m.statistics()["pending"] == MAX_PENDING_OPS


def test_max_ops_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership_module, "MAX_OPS", 3)
    g = Group(B)
    m = Membership(g.create)
    first = g.sign(A, OpKind.RENAME, name="one", after=[g.create])
    second = g.sign(A, OpKind.RENAME, name="two", after=[first])
    third = g.sign(A, OpKind.RENAME, name="three", after=[second])
    m.add(first)
    m.add(second)
    with pytest.raises(GroupFull):
        m.add(third)
    assert m.statistics()["refused_full"] == 1
    assert m.state().name == "two"


def test_ops_come_in_a_deterministic_topological_order() -> None:
    g = Group(B, C)
    p = g.sign(A, OpKind.PROMOTE, [key(B)], after=[g.create])
    g.sign(B, OpKind.ADD, [key(D)], after=[p])
    g.sign(A, OpKind.RENAME, name="x", after=[p])
    forward = g.membership().ops()
    backward = g.membership(reversed(g.all)).ops()
    assert forward == backward
    assert forward[0] == g.create
    seen: set[bytes] = set()
    for op in forward:
        assert set(op.parents) <= seen
        seen.add(op.op_id)
    assert g.state().heads == tuple(sorted(op.op_id for op in g.all[-2:]))


# ---------------------------------------------------------------------------------------------------
# The convergence property


class Member:
    """A simulated member: its own identity and its own partial view of the group."""

    def __init__(self, identity: Identity, create: GroupOp) -> None:
        self.identity = identity
        self.view = Membership(create)
        self.known: dict[bytes, GroupOp] = {create.op_id: create}

    def receive(self, ops: Iterable[GroupOp]) -> None:
        for op in ops:
            if op.op_id not in self.known:
                self.known[op.op_id] = op
                self.view.add(op)  # every op was accepted by its author's view: valid anywhere

    def act(self, rng: random.Random, group_id: bytes, clock: int) -> GroupOp | None:
        """Sign one op this member may make in its own view (admins do most), and keep it."""
        state = self.view.state()
        me = key(self.identity)
        outsiders = [key(p) for p in POOL if key(p) not in state.members]
        others = sorted(state.members - {me})
        choices: list[tuple[OpKind, list[bytes], str]] = [(OpKind.LEAVE, [], "")]
        if me in state.admins:
            choices *= rng.random() < 0.3  # admins seldom leave
            if outsiders:
                choices += [
                    (OpKind.ADD, rng.sample(outsiders, rng.randint(1, min(2, len(outsiders)))), "")
                ] * 6
            if others:
                choices += [(OpKind.REMOVE, [rng.choice(others)], "")] * 2
                choices += [(OpKind.PROMOTE, [rng.choice(others)], "")] * 3
                choices += [(OpKind.DEMOTE, [rng.choice(sorted(state.members))], "")] * 2
            choices += [(OpKind.RENAME, [], f"name {clock}")]
        elif rng.random() < 0.9:
            return None  # plain members mostly just talk
        kind, targets, name = rng.choice(choices)
        op = sign_op(
            self.identity,
            kind=kind,
            group_id=group_id,
            parents=state.heads,
            targets=targets,
            name=name,
            created_at_ms=clock,
        )
        try:
            self.view.add(op)
        except GroupFull:
            return None  # the group is full in this member's view
        self.known[op.op_id] = op
        return op


def _history(
    rng: random.Random, members: int, steps: int, *, split: bool = False
) -> tuple[GroupOp, list[GroupOp], list[Member]]:
    """Members acting on partial views; ``split``: start partitioned, an admin on each side."""
    founders = POOL[:members]
    create = make_create(founders[0], [key(f) for f in founders[1:]], nonce=rng.randbytes(CREATE_NONCE_SIZE))
    everyone = [Member(identity, create) for identity in POOL]
    # Two more admins from the start, known to all: admins on both sides of a partition.
    promote = sign_op(
        founders[0],
        kind=OpKind.PROMOTE,
        group_id=create.op_id,
        parents=[create.op_id],
        targets=[key(f) for f in founders[1:3]],
        created_at_ms=1_700_000_000_000,
    )
    for member in everyone:
        member.receive([promote])
    sides: list[list[Member]] = [everyone]
    if split:
        rest = rng.sample(everyone[2:], len(everyone) - 2)
        cut = rng.randint(0, len(rest))
        sides = [[everyone[0], *rest[:cut]], [everyone[1], *rest[cut:]]]
    for step in range(steps):
        roll = rng.random()
        if roll < 0.1:  # a partition: two sides evolve apart
            shuffled = rng.sample(everyone, len(everyone))
            cut = rng.randint(1, len(everyone) - 1)
            sides = [shuffled[:cut], shuffled[cut:]]
        elif roll < 0.2:
            sides = [everyone]  # heal (ops still only spread by exchange)
        elif roll < 0.6:  # a member passes a random part of what it has to others on its side
            side = rng.choice(sides)
            giver = rng.choice(side)
            ops = list(giver.known.values())
            for taker in rng.sample(side, rng.randint(0, len(side))):
                taker.receive(rng.sample(ops, rng.randint(len(ops) // 2, len(ops))))
        else:  # a member acts in its own view; admins are the busy ones
            active = [m for m in everyone if key(m.identity) in m.view.state().members]
            admins = [m for m in active if key(m.identity) in m.view.state().admins]
            pick = admins if admins and rng.random() < 0.8 else active
            if pick:
                rng.choice(pick).act(rng, create.op_id, 1_700_000_000_000 + step)
    all_ops = {op_id: op for m in everyone for op_id, op in m.known.items()}
    return create, list(all_ops.values()), everyone


def _two_sides(rng: random.Random, members: int, steps: int) -> tuple[GroupOp, list[GroupOp]]:
    """Two sides of a partition, each one shared view, evolve apart; then they merge and go on.

    Every op of one side is concurrent with every op of the other, so conflicts are the rule: adds
    past the member limit, grants by admins demoted on the other side, and what such admins did next.
    """
    create, ops, _ = _history(rng, members, 0)
    by_key = {key(p): p for p in POOL}
    sides = [Member(POOL[0], create), Member(POOL[0], create)]
    for side, newcomer in zip(sides, POOL[-2:], strict=True):
        side.receive(ops)
        # Each side first adds its own newcomer: with one free seat, the merge has one member too many.
        add = sign_op(
            POOL[0],
            kind=OpKind.ADD,
            group_id=create.op_id,
            parents=side.view.state().heads,
            targets=[key(newcomer)],
            created_at_ms=1_700_000_000_000,
        )
        with contextlib.suppress(GroupFull):
            side.view.add(add)
            side.known[add.op_id] = add
    for step in range(steps):
        side = sides[rng.randrange(2)] if step < steps * 3 // 4 else sides[0]
        if step == steps * 3 // 4:
            for other in sides:
                other.receive(sides[1].known.values())  # the heal: side 0 gets everything
        state = side.view.state()
        pool = sorted(state.admins) if state.admins and rng.random() < 0.85 else sorted(state.members)
        if pool:
            side.identity = by_key[rng.choice(pool)]
            side.act(rng, create.op_id, 1_700_000_000_000 + step)
    return create, list({op.op_id: op for side in sides for op in side.known.values()}.values())


def _check_invariants(state: GroupState) -> None:
    assert state.admins <= state.members
    assert bool(state.admins) == bool(state.members)
    assert not state.removed & state.members


@settings(max_examples=200, deadline=None)
@given(
    rng=st.randoms(use_true_random=False),
    members=st.integers(min_value=3, max_value=6),
    steps=st.integers(min_value=5, max_value=60),
    two_sides=st.booleans(),
)
def test_any_order_with_duplicates_converges(
    rng: random.Random, members: int, steps: int, two_sides: bool
) -> None:
    if two_sides:
        create, ops = _two_sides(rng, members, steps)
        everyone = []
    else:
        create, ops, everyone = _history(rng, members, steps)
    states = []
    orders = []
    for _ in range(3):
        feed = ops + rng.sample(ops, len(ops) // 3)
        rng.shuffle(feed)
        m = Membership(create)
        for op in feed:
            m.add(op)
        stats = m.statistics()
        assert stats["pending"] == 0
        assert stats["ops"] == len(ops)
        assert not any(v for k, v in stats.items() if k.startswith("refused_"))
        states.append(m.state())
        orders.append(m.ops())
    assert all(order == orders[0] for order in orders)
    # Everyone who catches up agrees too, including the members that built the history.
    for member in rng.sample(everyone, min(2, len(everyone))):
        member.receive(ops)
        states.append(member.view.state())
    assert all(s == states[0] for s in states)
    _check_invariants(states[0])
    # The same set through encode/decode (every signature checked again).
    decoded = Membership(create)
    for op in sorted(ops, key=lambda op: op.op_id):
        decoded.add(decode_op(encode_op(op)))
    assert decoded.state() == states[0]


# ---------------------------------------------------------------------------------------------------
# A reference: the rules table read literally, with no bitsets, shortcuts or caches


class Reference:
    """The state of a set of ops, straight from the rules table (slow, obviously right)."""

    def __init__(self, ops: Iterable[GroupOp], limit: int) -> None:
        self.ops = {op.op_id: op for op in ops}
        self.limit = limit
        self.past: dict[bytes, frozenset[bytes]] = {}
        self.depth: dict[bytes, int] = {}
        for op_id in sorted(self.ops, key=self._depth_of):
            op = self.ops[op_id]
            self.past[op_id] = frozenset().union(*({p} | self.past[p] for p in op.parents))

    def _depth_of(self, op_id: bytes) -> int:
        if op_id not in self.depth:
            parents = self.ops[op_id].parents
            self.depth[op_id] = 1 + max(map(self._depth_of, parents)) if parents else 0
        return self.depth[op_id]

    def order(self, ids: Iterable[bytes]) -> list[bytes]:
        return sorted(ids, key=lambda i: (self.depth[i], i))

    def concurrent(self, x: bytes, y: bytes) -> bool:
        return x != y and x not in self.past[y] and y not in self.past[x]

    def lost(self, member: bytes, ids: Iterable[bytes], *, demotions: bool) -> set[bytes]:
        """Ids among ``ids`` that remove ``member`` (and demote it, if asked)."""
        kinds = {OpKind.REMOVE, OpKind.DEMOTE} if demotions else {OpKind.REMOVE}
        return {
            i
            for i in ids
            if (self.ops[i].kind in kinds and member in self.ops[i].targets)
            or (self.ops[i].kind is OpKind.LEAVE and self.ops[i].author == member)
        }

    def counted(self, down_set: frozenset[bytes]) -> frozenset[bytes]:
        counted: set[bytes] = set()
        for x in self.order(down_set):
            op = self.ops[x]
            voiders = self.lost(op.author, down_set, demotions=True)  # rows 5 and 12: every stored one
            if op.kind in (OpKind.ADD, OpKind.PROMOTE, OpKind.RENAME) and any(
                self.concurrent(x, r) for r in voiders
            ):
                continue
            if op.kind is OpKind.CREATE or self.may(op, frozenset(self.past[x] & counted)):  # row 11
                counted.add(x)
        return frozenset(counted)

    def first_adds(self, c: frozenset[bytes]) -> dict[bytes, bytes]:
        """Row 2: each member's earliest counted add that has all its counted removals in its past."""
        firsts: dict[bytes, bytes] = {}
        for a in self.order(c):
            op = self.ops[a]
            if op.kind in (OpKind.CREATE, OpKind.ADD):
                for member in op.targets:
                    if member not in firsts and self.lost(member, c, demotions=False) <= self.past[a]:
                        firsts[member] = a
        return firsts

    def members(self, c: frozenset[bytes]) -> frozenset[bytes]:
        firsts = self.first_adds(c)
        ranked = sorted(firsts, key=lambda m: (self.depth[firsts[m]], firsts[m], m))
        return frozenset(ranked[: self.limit])  # row 9

    def admins(self, c: frozenset[bytes]) -> frozenset[bytes]:
        members = self.members(c)
        admins = set()
        for member in members:
            lost = self.lost(member, c, demotions=True)
            for g in c:
                op = self.ops[g]
                grants = (op.kind is OpKind.CREATE and op.author == member) or (
                    op.kind is OpKind.PROMOTE and member in op.targets
                )
                if grants and lost <= self.past[g]:
                    admins.add(member)
        if not admins and members:  # row 10
            firsts = self.first_adds(c)
            admins.add(min(members, key=lambda m: (self.depth[firsts[m]], firsts[m], m)))
        return frozenset(admins)

    def may(self, op: GroupOp, c: frozenset[bytes]) -> bool:
        if op.kind is OpKind.LEAVE:
            return op.author in self.members(c)
        return op.author in self.admins(c)

    def name(self, c: frozenset[bytes]) -> str:
        renames = [r for r in c if self.ops[r].kind is OpKind.RENAME]
        latest = [r for r in renames if not any(r in self.past[o] for o in renames)]
        create = next(op for op in self.ops.values() if op.kind is OpKind.CREATE)
        return self.ops[max(latest)].name if latest else create.name

    def state(self) -> tuple[frozenset[bytes], frozenset[bytes], str]:
        c = self.counted(frozenset(self.ops))
        return self.members(c), self.admins(c), self.name(c)


@settings(max_examples=150, deadline=None)
@given(
    rng=st.randoms(use_true_random=False),
    members=st.integers(min_value=3, max_value=6),
    steps=st.integers(min_value=5, max_value=45),
    room=st.sampled_from([0, 1, 1, 2, MAX_GROUP_MEMBERS]),
    split=st.booleans(),
)
def test_membership_matches_the_literal_rules(
    rng: random.Random, members: int, steps: int, room: int, split: bool
) -> None:
    """The fast implementation (bitsets, skipped re-checks, rank bounds) against the table read
    literally, including row 9 with a small member limit; and every stored op is allowed in its past."""
    limit = min(members + room, MAX_GROUP_MEMBERS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(membership_module, "MAX_GROUP_MEMBERS", limit)
        create, ops = _two_sides(rng, members, steps) if split else _history(rng, members, steps)[:2]
        m = Membership(create)
        for op in rng.sample(ops, len(ops)):
            m.add(op)
        state = m.state()
    reference = Reference(ops, limit)
    assert (state.members, state.admins, state.name) == reference.state()
    for op in ops:
        if op.kind is not OpKind.CREATE:
            past = reference.past[op.op_id]
            assert reference.may(op, reference.counted(past))
