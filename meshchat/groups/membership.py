"""Group membership: the state every member computes from the same set of signed operations.

A group is the set of its operations (``meshchat.groups.ops``); each names its parents, so the set is
a causal graph rooted at the CREATE. ``Membership`` holds one group's operations and computes its
state (members, admins, name) as a function of the SET alone: two members holding the same operations
agree, whatever order the operations arrived in, duplicates included. No clock and no server orders
anything; the authors' timestamps are never consulted. This module does no I/O and knows nothing of
keys for messages (``chains``) or of how operations travel (the groups core).

Words used below. The *past* of an operation: every operation reachable through its parents.
*Concurrent*: neither is in the other's past. The *canonical order*: by (depth, op id), where depth is
the longest parent path from the CREATE; it is a topological order, and restricted to a past it is
that past's own canonical order. *Stored*: accepted by ``add`` (authorized in its own past, see row 1).
*Counted*: a stored operation that takes effect in the state of the whole set (rows 5 and 11 void
some). A *removal of X*: a REMOVE naming X, or X's own LEAVE; a *demotion of X*: a DEMOTE naming X.

Rules (each row has a test in tests/test_group_membership.py named after it):

=== ======================================= ========================================================
row situation                               result
=== ======================================= ========================================================
1   roles in the causal past                An operation is stored only if its author has the role
                                            it needs in the state of its own past: ADD, REMOVE,
                                            PROMOTE, DEMOTE, RENAME need admin, LEAVE needs member.
                                            Else ``NotAuthorized``, not stored. The CREATE's author
                                            is the first admin, its targets the first members.
                                            REMOVE/PROMOTE/DEMOTE must name members and ADD
                                            non-members of that state (else ``DecodeError``).
2   add X ‖ remove X                        X out (remove wins): X is a member iff some counted add
                                            of X has every counted removal of X in its past.
3   remove X, then add X                    X back in (the add has the removal in its past, row 2).
4   A removes B ‖ B removes A (admins)      Both out: removals, demotions and leaves are never
                                            voided by concurrency.
5   A removed/demoted/left ‖ A adds,        A's op is void (rights-granting and cosmetic ops by an
    promotes or renames                     author who concurrently lost the right do not count);
                                            A's removals and demotions still count (row 4).
6   promote X ‖ demote X                    X not admin (demote wins): X is admin iff X is a member
                                            and some counted promotion of X (the CREATE, for its
                                            author) has every counted demotion and removal of X in
                                            its past.
7   remove X ‖ promote X                    X out (admins are members). A removal also ends the
                                            role: X re-added later is no admin until promoted again.
8   rename ‖ rename                         The name of the counted renames that are in no other
                                            counted rename's past; among several, the highest op
                                            id. No counted rename: the CREATE's name.
9   concurrent adds exceed                  Members ranked by their earliest qualifying add in the
    MAX_GROUP_MEMBERS                       canonical order, ties by key: the first 1,000 are in,
                                            the rest void (not members, their ops do not count). An
                                            ADD that overflows its author's own view is refused
                                            (``GroupFull``).
10  no admin left (all left, removed or     The member whose earliest qualifying add comes first
    demoted)                                in the canonical order (ties by key) is admin, only as
                                            long as nobody holds a granted role: it should PROMOTE
                                            itself before promoting anyone else.
11  an op made with voided rights           An operation counts only if its author has the role in
                                            the state of the *counted* operations of its past: X
                                            promoted by a void promotion (row 5) cannot add anyone,
                                            even in operations stored before the void was known.
12  a removal that does not count itself    Still voids its target's concurrent grants (row 5).
                                            Voiding by *stored* removals keeps the rules free of
                                            cycles; by *counted* ones it has none or two answers:
                                            A promotes D ‖ C promotes B; B removes A; D removes C.
                                            Here both promotions are void, so neither removal counts.
13  announce (only admins post)             Once any ANNOUNCE counts, only admins post: one way,
                                            so concurrent ones cannot disagree. ANNOUNCE needs
                                            admin (row 1) and is voided like a rename (row 5).
=== ======================================= ========================================================

Refinements of the first design (GROUPS.md): rows 11 and 12 (a fixpoint over counted removals can
oscillate, see row 12's example; with stored removals the rules are a plain recursion along the
causal order, no iteration), and the canonical order by (depth, op id) instead of Kahn's algorithm
with ties by op id (the same for a past as for the whole set, and incremental).

Cost: ancestor sets are Python ints used as bitsets over arrival indices (a topological order, which
is all the counting needs: every decision depends on an operation's past only). The counted set and
each member's earliest qualifying add are kept up to date op by op; an op whose whole past counts
needs no new judgement (it was judged on that past when accepted), so only what follows a newly void
grant is judged again. A new op's past is read off the same records, recounting only downstream of a
grant voided from outside that past. Measured (1,000 members, 300 ops with concurrent demotions):
about 0.1 ms per ``add``, 0.1-0.5 ms for ``state()`` after a change.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from meshchat.errors import DecodeError, GroupFull, NotAuthorized
from meshchat.groups.ops import MAX_GROUP_MEMBERS, GroupOp, OpKind

__all__ = [
    "MAX_OPS",
    "MAX_PENDING_OPS",
    "MAX_REFUSED_IDS",
    "MAX_TARGET_ENTRIES",
    "GroupState",
    "Membership",
    "OpOutcome",
]

#: Operations one group keeps: years of weekly churn in a 1,000-member group; ancestor bitsets for
#: all of them take ~12 MB.
MAX_OPS = 10_000
#: Operations held while their parents are missing: a few sync rounds' worth; the oldest goes first.
MAX_PENDING_OPS = 256
#: Ids of refused operations remembered, so that what follows them is refused at once rather than held
#: and fetched again and again (a refusal is final: it depends on the operation's past alone).
MAX_REFUSED_IDS = 1024
#: Member keys named by all stored operations together (a CREATE of 1,000 plus a hundred full
#: re-additions): bounds the per-key indexes whatever the admins sign.
MAX_TARGET_ENTRIES = 100_000

_WHAT = "group operation"
#: Operations that grant rights or change how the group looks: void when their author concurrently
#: lost the admin role (row 5).
_GRANTS = frozenset((OpKind.ADD, OpKind.PROMOTE, OpKind.RENAME, OpKind.ANNOUNCE))


class OpOutcome(Enum):
    """What ``Membership.add`` did with an operation."""

    #: Stored (and any pending operations that waited for it were tried too).
    ACCEPTED = "accepted"
    #: Already stored or already pending: nothing changed.
    DUPLICATE = "duplicate"
    #: Held until its missing parents arrive (``Membership.missing`` lists them).
    PENDING = "pending"


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupState:
    """What the group is, as every member holding the same operations computes it."""

    #: The group id (the CREATE's op id).
    group_id: bytes
    #: The current name.
    name: str
    #: Member keys.
    members: frozenset[bytes]
    #: Admin keys (a subset of members; empty only when there are no members).
    admins: frozenset[bytes]
    #: The CREATE's author.
    creator: bytes
    #: Ascending ids of the stored operations no stored operation names as a parent.
    heads: tuple[bytes, ...]
    #: Keys removed or left (by a counted removal) and not members now.
    removed: frozenset[bytes]
    #: Only admins post (a counted ANNOUNCE, row 13).
    admins_only: bool = False


class Membership:
    """One group's operations and the state they make. Sans-IO, deterministic.

    Operations must come from ``decode_op`` or ``sign_op`` (signatures verified); ``add`` judges who
    may do what.
    """

    __slots__ = (
        "_adds",
        "_anc",
        "_announces",
        "_authored_grants",
        "_canonical_adds",
        "_counted_all",
        "_demotions",
        "_depth",
        "_firsts_all",
        "_grants",
        "_has_child",
        "_ids",
        "_index",
        "_members_memo",
        "_ops",
        "_pending",
        "_refused",
        "_removals",
        "_renames",
        "_state",
        "_stats",
        "_target_entries",
        "_void",
        "_voided",
        "_voiders",
        "_waiting",
        "group_id",
    )

    def __init__(self, create: GroupOp) -> None:
        """Start from the group's CREATE (``ValueError`` for another kind)."""
        if create.kind is not OpKind.CREATE:
            raise ValueError(f"a group starts from its CREATE operation, not {create.kind.name}")
        #: The group id: the CREATE's op id.
        self.group_id = create.op_id
        self._ops: list[GroupOp] = []
        self._ids: list[bytes] = []
        self._index: dict[bytes, int] = {}
        self._anc: list[int] = []
        self._depth: list[int] = []
        self._void: list[int] = []
        self._has_child: list[bool] = []
        # Per key: adds (CREATE targets, ADD targets) and grants (CREATE author, PROMOTE targets) as
        # index lists; removals (REMOVE targets, own LEAVE) and demotions as bitsets.
        self._adds: dict[bytes, list[int]] = {}
        self._grants: dict[bytes, list[int]] = {}
        self._removals: dict[bytes, int] = {}
        self._demotions: dict[bytes, int] = {}
        # For voiding (row 5): grant ops by author; removals and demotions against a key.
        self._authored_grants: dict[bytes, list[int]] = {}
        self._voiders: dict[bytes, list[int]] = {}
        self._voided: set[int] = set()
        # The counted ops of everything stored (a bitset), kept up to date by _store.
        self._counted_all = 0
        # Row 2 for the whole set: each member's earliest qualifying add (before row 9's limit).
        self._firsts_all: dict[bytes, int] = {}
        self._renames: list[int] = []
        self._announces: list[int] = []
        self._canonical_adds: list[int] | None = None
        self._members_memo: dict[int, frozenset[bytes]] = {}
        self._target_entries = 0
        self._pending: dict[bytes, GroupOp] = {}
        self._waiting: dict[bytes, set[bytes]] = {}
        self._refused: dict[bytes, None] = {}
        self._state: GroupState | None = None
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "accepted",
                "duplicate",
                "evicted",
                "refused_not_authorized",
                "refused_malformed",
                "refused_wrong_group",
                "refused_full",
                "refused_parent",
            ),
            0,
        )
        self._store(create, self.group_id, 0)
        self._stats["accepted"] = 1

    # ----------------------------------------------------------------------------------------------
    # Public API

    def add(self, op: GroupOp) -> OpOutcome:
        """Store ``op`` if its author may do it, hold it if parents are missing, or raise.

        Raises ``DecodeError`` (another group, a second CREATE, targets that do not fit the author's
        view, a parent this group refused), ``NotAuthorized`` (the author lacks the role in the op's
        past), ``GroupFull`` (``MAX_OPS``, ``MAX_TARGET_ENTRIES``, or an ADD past
        ``MAX_GROUP_MEMBERS``). Refused ops are counted and not kept; held ops that follow them are
        dropped and counted. A held op is judged when its last parent arrives (a refusal then is
        counted, not raised). When ``MAX_PENDING_OPS`` are already held, the oldest is dropped
        (counted as evicted) and the call still returns PENDING.
        """
        if op.kind is OpKind.CREATE:
            if op.op_id == self.group_id:
                self._stats["duplicate"] += 1
                return OpOutcome.DUPLICATE
            self._stats["refused_wrong_group"] += 1
            raise DecodeError(_WHAT, "a second CREATE for this group (another group's root)")
        if op.group_id != self.group_id:
            self._stats["refused_wrong_group"] += 1
            raise DecodeError(_WHAT, f"belongs to group {op.group_id.hex()[:16]}…, not this one")
        op_id = op.op_id
        if op_id in self._index or op_id in self._pending:
            self._stats["duplicate"] += 1
            return OpOutcome.DUPLICATE
        if any(p in self._refused for p in op.parents):
            self._stats["refused_parent"] += 1
            self._refuse(op_id)
            raise DecodeError(_WHAT, "follows an operation this group refused")
        missing = [p for p in op.parents if p not in self._index]
        if missing:
            self._hold(op, op_id, missing)
            return OpOutcome.PENDING
        self._accept_counted(op, op_id)
        self._resolve(op_id)
        return OpOutcome.ACCEPTED

    def state(self) -> GroupState:
        """The group's state from every stored operation (cached until the next change)."""
        if self._state is None:
            self._members_memo.clear()
            counted = self._counted_all
            members = self._members(counted)
            admins = frozenset(k for k in self._grants if self._admin_by_grant(k, counted, members))
            if not admins:
                fallback = self._fallback_admin(counted)
                admins = frozenset(() if fallback is None else (fallback,))
            removed = frozenset(
                k for k, mask in self._removals.items() if mask & counted and k not in members
            )
            self._state = GroupState(
                group_id=self.group_id,
                name=self._name(counted),
                members=members,
                admins=admins,
                creator=self._ops[0].author,
                heads=tuple(sorted(self._ids[i] for i, child in enumerate(self._has_child) if not child)),
                removed=removed,
                admins_only=any(counted >> i & 1 for i in self._announces),
            )
        return self._state

    def ops(self) -> list[GroupOp]:
        """Every stored operation in the canonical order (parents first; the CREATE first)."""
        order = sorted(range(len(self._ops)), key=self._canonical_key)
        return [self._ops[i] for i in order]

    def missing(self) -> set[bytes]:
        """Ids of parents that held operations name and nobody has given us yet."""
        return {
            parent
            for op in self._pending.values()
            for parent in op.parents
            if parent not in self._index and parent not in self._pending and parent not in self._refused
        }

    def statistics(self) -> dict[str, int]:
        """Counts: accepted, duplicate, pending (held now), evicted, refused_* by reason, ops stored."""
        return {**self._stats, "pending": len(self._pending), "ops": len(self._ops)}

    def get(self, op_id: bytes) -> GroupOp | None:
        """The stored op with this id (to hand to a member who misses it), or None."""
        index = self._index.get(op_id)
        return None if index is None else self._ops[index]

    def precedes(self, earlier: bytes, later: bytes) -> bool:
        """True if stored op ``earlier`` is in the past of stored op ``later`` (``KeyError`` if either
        is not stored)."""
        return bool(self._anc[self._index[later]] >> self._index[earlier] & 1)

    def __contains__(self, op_id: object) -> bool:
        """True if the op with this id is stored (not merely held)."""
        return op_id in self._index

    def __len__(self) -> int:
        """Stored ops, the CREATE included."""
        return len(self._ops)

    # ----------------------------------------------------------------------------------------------
    # Accepting and holding

    def _hold(self, op: GroupOp, op_id: bytes, missing: Iterable[bytes]) -> None:
        if len(self._pending) >= MAX_PENDING_OPS:
            oldest_id = next(iter(self._pending))
            self._drop_pending(oldest_id)
            self._stats["evicted"] += 1
        self._pending[op_id] = op
        for parent in missing:
            self._waiting.setdefault(parent, set()).add(op_id)

    def _drop_pending(self, op_id: bytes) -> None:
        op = self._pending.pop(op_id)
        for parent in op.parents:
            waiting = self._waiting.get(parent)
            if waiting is not None:
                waiting.discard(op_id)
                if not waiting:
                    del self._waiting[parent]

    def _resolve(self, accepted_id: bytes) -> None:
        """Try the held operations that waited for ``accepted_id`` (and, in turn, for them)."""
        work = [accepted_id]
        while work:
            for child_id in sorted(self._waiting.pop(work.pop(), ())):
                child = self._pending.get(child_id)
                if child is None or any(p not in self._index for p in child.parents):
                    continue
                self._drop_pending(child_id)
                try:
                    self._accept_counted(child, child_id)
                except (DecodeError, NotAuthorized, GroupFull):
                    continue  # counted, remembered, and what waited for it dropped (_refuse)
                work.append(child_id)

    def _accept_counted(self, op: GroupOp, op_id: bytes) -> None:
        try:
            self._accept(op, op_id)
        except (DecodeError, NotAuthorized, GroupFull) as exc:
            if isinstance(exc, NotAuthorized):
                self._stats["refused_not_authorized"] += 1
            elif isinstance(exc, GroupFull):
                self._stats["refused_full"] += 1
            else:
                self._stats["refused_malformed"] += 1
            self._refuse(op_id)
            raise
        self._stats["accepted"] += 1

    def _refuse(self, op_id: bytes) -> None:
        """Remember a refused op and drop the held ops that follow it (they can never be stored)."""
        work = [op_id]
        while work:
            refused = work.pop()
            if len(self._refused) >= MAX_REFUSED_IDS:
                del self._refused[next(iter(self._refused))]
            self._refused[refused] = None
            for child_id in sorted(self._waiting.pop(refused, ())):
                if child_id in self._pending:
                    self._drop_pending(child_id)
                    self._stats["refused_parent"] += 1
                    work.append(child_id)

    def _accept(self, op: GroupOp, op_id: bytes) -> None:
        if len(self._ops) >= MAX_OPS:
            raise GroupFull(what="operation count", size=len(self._ops) + 1, limit=MAX_OPS)
        if self._target_entries + len(op.targets) > MAX_TARGET_ENTRIES:
            size = self._target_entries + len(op.targets)
            raise GroupFull(what="operation targets", size=size, limit=MAX_TARGET_ENTRIES)
        past = 0
        for parent in op.parents:
            index = self._index[parent]
            past |= self._anc[index] | (1 << index)
        self._check(op, past)
        self._store(op, op_id, past)

    def _check(self, op: GroupOp, past: int) -> None:
        """Row 1: the author's role and the targets, judged in the state of the op's past alone."""
        self._members_memo.clear()
        counted = self._counted_within(past)
        author = op.author
        if op.kind is OpKind.LEAVE:
            if not self._is_member(author, counted):
                raise NotAuthorized(what="LEAVE", author=author.hex(), needs="a member")
            return
        if not self._is_admin(author, counted):
            raise NotAuthorized(what=op.kind.name, author=author.hex(), needs="an admin")
        if op.kind in (OpKind.RENAME, OpKind.ANNOUNCE):
            return
        if len(op.targets) <= 8:  # a few keys: look each up; many: list the members once
            in_group = [self._is_member(t, counted) for t in op.targets]
        else:
            members = self._members(counted)
            in_group = [t in members for t in op.targets]
        if op.kind is not OpKind.ADD:
            if not all(in_group):
                raise DecodeError(_WHAT, f"{op.kind.name} names someone who is not a member")
            return
        if any(in_group):
            raise DecodeError(_WHAT, "ADD names someone who is a member already")
        if len(self._adds) + len(op.targets) > MAX_GROUP_MEMBERS:  # else no view can overflow
            size = len(self._members(counted)) + len(op.targets)
            if size > MAX_GROUP_MEMBERS:
                raise GroupFull(what="membership", size=size, limit=MAX_GROUP_MEMBERS)

    def _store(self, op: GroupOp, op_id: bytes, past: int) -> None:
        index = len(self._ops)
        bit = 1 << index
        self._ops.append(op)
        self._ids.append(op_id)
        self._index[op_id] = index
        self._anc.append(past)
        self._has_child.append(False)
        self._void.append(0)
        depth = 0
        for parent in op.parents:
            parent_index = self._index[parent]
            self._has_child[parent_index] = True
            depth = max(depth, self._depth[parent_index] + 1)
        self._depth.append(depth)
        self._target_entries += len(op.targets)
        author, kind = op.author, op.kind
        if kind in (OpKind.CREATE, OpKind.ADD):
            for key in op.targets:
                self._adds.setdefault(key, []).append(index)
            self._canonical_adds = None
        if kind is OpKind.CREATE:
            self._grants.setdefault(author, []).append(index)
        elif kind is OpKind.PROMOTE:
            for key in op.targets:
                self._grants.setdefault(key, []).append(index)
        elif kind is OpKind.RENAME:
            self._renames.append(index)
        elif kind is OpKind.ANNOUNCE:
            self._announces.append(index)
        lost: tuple[bytes, ...] = ()
        if kind is OpKind.REMOVE:
            lost = op.targets
            for key in lost:
                self._removals[key] = self._removals.get(key, 0) | bit
        elif kind is OpKind.LEAVE:
            lost = (author,)
            self._removals[author] = self._removals.get(author, 0) | bit
        elif kind is OpKind.DEMOTE:
            lost = op.targets
            for key in lost:
                self._demotions[key] = self._demotions.get(key, 0) | bit
        first_change = self._pair_voids(op, index, past, lost)
        self._members_memo.clear()
        before = self._counted_all
        self._counted_all = self._recount((bit << 1) - 1, before, first_change)
        self._firsts_all = self._firsts_from(self._firsts_all, before, self._counted_all)
        self._state = None

    def _pair_voids(self, op: GroupOp, index: int, past: int, lost: tuple[bytes, ...]) -> int:
        """Row 5: pair a new op with the concurrent ones it voids or that void it; return the lowest
        index whose counted status may change. A new op cannot be in an older op's past, so
        "concurrent" is "not in the new op's past"."""
        bit = 1 << index
        first_change = index
        for key in lost:
            self._voiders.setdefault(key, []).append(index)
            for grant in self._authored_grants.get(key, ()):
                if not past >> grant & 1:
                    if not self._void[grant]:
                        first_change = min(first_change, grant)
                    self._void[grant] |= bit
                    self._voided.add(grant)
        if op.kind in _GRANTS:
            self._authored_grants.setdefault(op.author, []).append(index)
            for voider in self._voiders.get(op.author, ()):
                if not past >> voider & 1:
                    self._void[index] |= 1 << voider
            if self._void[index]:
                self._voided.add(index)
        return first_change

    # ----------------------------------------------------------------------------------------------
    # The rules, for any down-set given as a bitset

    def _canonical_key(self, index: int) -> tuple[int, bytes]:
        return (self._depth[index], self._ids[index])

    def _counted_within(self, within: int) -> int:
        """The counted ops (rows 5, 11, 12) of the down-set ``within`` (a bitset).

        They are those of the whole set, except downstream of a grant that only voiders outside
        ``within`` void (the first index of such a grant is where recounting starts).
        """
        start = min((g for g in self._voided if within >> g & 1 and not self._void[g] & within), default=None)
        if start is None:
            return within & self._counted_all
        return self._recount(within, self._counted_all, start)

    def _recount(self, within: int, known: int, start: int) -> int:
        """The counted ops of the down-set ``within``, given that below index ``start`` they are
        exactly those in ``known``. Indices ascend along the causal order, so one pass suffices."""
        uncounted = within & ~known & ((1 << start) - 1)
        void, anc = self._void, self._anc
        flags = format(within >> start, "b")[::-1]  # flags[k]: is index start + k in ``within``
        for offset, flag in enumerate(flags):
            if flag != "1":
                continue
            index = start + offset
            # Row 5 (void), or row 11: judge it again when its past lost an op. An op whose whole
            # past counts counts too (unless void): it was judged on that very past when accepted.
            past = anc[index]
            if void[index] & within or (past & uncounted and not self._authorized(index, past & ~uncounted)):
                uncounted |= 1 << index
        return within & ~uncounted

    def _authorized(self, index: int, counted: int) -> bool:
        op = self._ops[index]
        if op.kind is OpKind.LEAVE:
            return self._is_member(op.author, counted)
        return self._is_admin(op.author, counted)

    def _qualifying_add(self, key: bytes, counted: int) -> int | None:
        """Row 2: the earliest (canonical) counted add of ``key`` with every counted removal in its past."""
        removals = self._removals.get(key, 0) & counted
        best: int | None = None
        for add in self._adds.get(key, ()):
            qualifies = counted >> add & 1 and self._anc[add] & removals == removals
            if qualifies and (best is None or self._canonical_key(add) < self._canonical_key(best)):
                best = add
        return best

    def _firsts_from(self, firsts: dict[bytes, int], known: int, counted: int) -> dict[bytes, int]:
        """Row 2's earliest qualifying adds for ``counted``, from ``firsts`` (those for ``known``):
        only keys that an op counted in one and not the other adds or removes are looked at again."""
        changed = known ^ counted
        if not changed:
            return firsts
        keys: set[bytes] = set()
        while changed:
            low = changed & -changed
            changed ^= low
            op = self._ops[low.bit_length() - 1]
            if op.kind in (OpKind.CREATE, OpKind.ADD, OpKind.REMOVE):
                keys.update(op.targets)
            elif op.kind is OpKind.LEAVE:
                keys.add(op.author)
        if not keys:
            return firsts
        updated = dict(firsts)
        for key in keys:
            add = self._qualifying_add(key, counted)
            if add is None:
                updated.pop(key, None)
            else:
                updated[key] = add
        return updated

    def _members(self, counted: int) -> frozenset[bytes]:
        """Members (rows 2, 3, 9) among the ``counted`` ops."""
        memo = self._members_memo.get(counted)
        if memo is not None:
            return memo
        firsts = self._firsts_from(self._firsts_all, self._counted_all, counted)
        if len(firsts) > MAX_GROUP_MEMBERS:  # row 9
            ranked = sorted(firsts, key=lambda k: (*self._canonical_key(firsts[k]), k))
            firsts = {k: firsts[k] for k in ranked[:MAX_GROUP_MEMBERS]}
        members = frozenset(firsts)
        if len(self._members_memo) > 64:  # only the current computation's few views are reused
            self._members_memo.clear()
        self._members_memo[counted] = members
        return members

    def _is_member(self, key: bytes, counted: int) -> bool:
        add = self._qualifying_add(key, counted)
        if add is None:
            return False
        if len(self._adds) <= MAX_GROUP_MEMBERS:
            return True  # row 9 cannot apply: fewer keys were ever added than fit
        # Row 9: at most ``ahead`` members rank before ``key`` (every target of an earlier counted add,
        # and the lower keys of its own); only if that could fill the group, rank everyone.
        rank = self._canonical_key(add)
        ahead = bisect.bisect_left(self._ops[add].targets, key)
        for other in self._adds_in_canonical_order():
            if self._canonical_key(other) >= rank:
                break
            if counted >> other & 1:
                ahead += len(self._ops[other].targets)
        if ahead < MAX_GROUP_MEMBERS:
            return True
        firsts = self._firsts_from(self._firsts_all, self._counted_all, counted)
        return len(firsts) <= MAX_GROUP_MEMBERS or key in self._members(counted)

    def _adds_in_canonical_order(self) -> list[int]:
        if self._canonical_adds is None:
            adds = {i for indexes in self._adds.values() for i in indexes}
            self._canonical_adds = sorted(adds, key=self._canonical_key)
        return self._canonical_adds

    def _admin_by_grant(self, key: bytes, counted: int, members: frozenset[bytes] | None = None) -> bool:
        """Rows 6, 7: a member with a counted grant having every counted demotion and removal in its past."""
        if not (key in members if members is not None else self._is_member(key, counted)):
            return False
        lost = (self._removals.get(key, 0) | self._demotions.get(key, 0)) & counted
        return any(
            counted >> grant & 1 and self._anc[grant] & lost == lost for grant in self._grants.get(key, ())
        )

    def _fallback_admin(self, counted: int) -> bytes | None:
        """Row 10: the member whose earliest qualifying add comes first (ties by key)."""
        for add in self._adds_in_canonical_order():
            if counted >> add & 1:
                for key in self._ops[add].targets:  # ascending: ties by key
                    removals = self._removals.get(key, 0) & counted
                    if self._anc[add] & removals == removals:
                        return key
        return None

    def _is_admin(self, key: bytes, counted: int) -> bool:
        if self._admin_by_grant(key, counted):
            return True
        if any(self._admin_by_grant(k, counted) for k in self._grants if k != key):
            return False
        return self._fallback_admin(counted) == key

    def _name(self, counted: int) -> str:
        """Row 8."""
        renames = [r for r in self._renames if counted >> r & 1]
        latest = [r for r in renames if not any(self._anc[other] >> r & 1 for other in renames)]
        if not latest:
            return self._ops[0].name
        return self._ops[max(latest, key=lambda r: self._ids[r])].name
