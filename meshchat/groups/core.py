"""``GroupsCore``: one user's groups as a sans-IO state machine.

The driver (``meshchat.net.group_driver``, the simulator) hands it inputs with the wall time (the
application's calls; control messages that arrived on the sealed 1:1 path; group envelopes from the
group topics and mailbox syncs; mailboxes storing our envelopes; timers) and performs the actions it
returns (``meshchat.groups.events``). It persists every change through ``GroupStorage.commit`` before
it returns, one batch per input.

**Membership** is each group's set of signed operations (``meshchat.groups.membership``): the state
is recomputed from the set, so every member agrees whatever order ops arrived in. A local change
(create, add, remove, leave, promote, demote, rename) is signed with the user's identity, naming the
group's current heads as parents, accepted locally, then published to the group (an ``OpsBody`` group
message, also kept on mailboxes) and sent on the 1:1 path to whom it concerns most: the whole op set
to members it adds (their invitation), the removal to the member it removes.

**Keys** (``meshchat.groups.keys``): our sending chain is handed to every member over the 1:1 path
(``ChainControl``) when it starts; replaced after a member goes, and on a schedule. Other members'
chains arrive the same way; a handout from someone who is not a member (yet) waits for the ops.

**Messages**: one envelope per group message on the group's topic for the day, sealed with our chain
(``meshchat.groups.seal``), stored on mailboxes under the group's tag; the history records it once
(exactly once across restarts: the message id is unique in the history, in the transaction that moves
the receiving chain). Receipts from members are batched: each member sends each sender one
``ReceiptControl`` per ``RECEIPT_DELAY`` naming every message it accepted (or read) meanwhile, and the
sender's ``GroupStatus`` says "delivered to 27 of 30, read by 12".

Everything a peer sends is checked: ops (signature, author's role in their causal past, bounds),
handouts (from a member, newer than what we hold), envelopes (tag, chain, jump bound, AEAD,
signature, the sender still a member); anything bad is counted by reason in ``statistics()``, never
raised, and costs nothing already accepted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import nacl.utils

from meshchat.crypto import CLOCK_SKEW, epoch_of
from meshchat.errors import (
    DecodeError,
    GroupFull,
    MeshchatError,
    NotAuthorized,
    NotInGroup,
    StorageError,
    UnknownGroup,
)
from meshchat.groups.early import EarlyArrivals
from meshchat.groups.events import (
    GroupAction,
    GroupInvited,
    GroupMessage,
    GroupProblem,
    GroupSeen,
    GroupStatus,
    GroupView,
    MemberStatus,
    PublishGroup,
    TopicsChanged,
)
from meshchat.groups.keys import GroupKeys
from meshchat.groups.membership import Membership
from meshchat.groups.ops import MAX_GROUP_MEMBERS, GroupOp, OpKind, decode_op, sign_op
from meshchat.groups.outbox import GroupOutbox, status_of
from meshchat.groups.payload import (
    ChainControl,
    OpsControl,
    OpsWanted,
    ReceiptControl,
    decode_control,
)
from meshchat.groups.seal import group_tag, group_topic
from meshchat.groups.session import Context, GroupSession, replace_record
from meshchat.groups.storage import (
    ChainRecord,
    ControlRecord,
    GroupMessageRecord,
    GroupOutRecord,
    GroupRecord,
    GroupStorage,
    GroupWrite,
)
from meshchat.identity import Identity, KeyCache, PublicIdentity, RandomBytes
from meshchat.store.payload import ReceiptKind
from meshchat.store.storage import SeenEntry
from meshchat.wire import decode_envelope, message_id

__all__ = [
    "CONTROL_TTL",
    "GROUP_TTL",
    "MAX_GROUPS",
    "RECEIPT_DELAY",
    "GroupConfig",
    "GroupView",
    "GroupsCore",
]

#: How long a group message waits on mailboxes for members who are offline: a week, as 1:1 messages.
GROUP_TTL = 7 * 24 * 3600
#: How long a control message (handout, invitation, receipt) waits for its member.
CONTROL_TTL = 7 * 24 * 3600
#: Seconds receipts are collected before one goes to each sender (batching: one envelope per member
#: per sender per interval, whatever the number of messages).
RECEIPT_DELAY = 2.0
#: Groups one user can be in (invitations beyond are refused and counted): each costs topics, tags
#: and memory, and any contact can invite.
MAX_GROUPS = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupConfig:
    """Tunable times of the groups core."""

    #: Lifetime of group envelopes.
    ttl: int = GROUP_TTL
    #: Receipt batching interval.
    receipt_delay: float = RECEIPT_DELAY


class GroupsCore:
    """See the module docstring."""

    def __init__(
        self,
        identity: Identity,
        storage: GroupStorage,
        *,
        wall_now: float,
        config: GroupConfig | None = None,
        random_bytes: RandomBytes = nacl.utils.random,
        key_cache: KeyCache | None = None,
    ) -> None:
        """Load every group from ``storage``. ``key_cache`` remembers the signing keys (op authors',
        chains') already checked; cores in one process may share one (a simulator's members all check
        each new chain's key)."""
        self.identity = identity
        self.me = identity.public.ed25519
        self.storage = storage
        self.config = config or GroupConfig()
        self._random = random_bytes
        self._groups: dict[bytes, GroupSession] = {}
        self._counts: Counter[str] = Counter()
        self._keys = KeyCache() if key_cache is None else key_cache
        self._early = EarlyArrivals(self._counts, self._keys)
        self._outbox = GroupOutbox(
            storage, receipt_delay=self.config.receipt_delay, control_ttl=CONTROL_TTL, counts=self._counts
        )
        self._pending_updates: list[GroupOutRecord] = []
        self._ctx = Context(
            identity=identity,
            random_bytes=random_bytes,
            ttl=self.config.ttl,
            control_ttl=CONTROL_TTL,
            counts=self._counts,
            owe=self._outbox.owe,
            topics_changed=self._topics_changed,
            keys=self._keys,
        )
        self._tags_day = -1
        self._tags: dict[bytes, bytes] = {}
        #: Controls committed but not handed to the messenger when the last process stopped.
        self._unsent: list[ControlRecord] = []
        self._load(wall_now)

    # --- start ---------------------------------------------------------------------------------------

    def _load(self, wall_now: float) -> None:
        stored = self.storage.load(wall_now)
        chains_by_group: dict[bytes, list[ChainRecord]] = {}
        for chain in stored.chains:
            chains_by_group.setdefault(chain.group_id, []).append(chain)
        for record in stored.groups:
            ops = [decode_op(data, key_cache=self._keys) for data in stored.ops.get(record.group_id, [])]
            group, early = GroupSession.restore(
                record, ops, chains_by_group.pop(record.group_id, []), self._ctx
            )
            for chain in early:  # handouts kept until their sender's op arrives
                self._early.chains[chain.chain_id] = chain
            self._groups[record.group_id] = group
        for chains in chains_by_group.values():  # handouts that came before their invitation
            for chain in chains:
                self._early.chains[chain.chain_id] = chain
        self._outbox.load(stored.outbox)
        self._outbox.unsent = list(stored.controls)
        self._tags_day = -1

    # --- the application's calls ---------------------------------------------------------------------

    def create(
        self, name: str, members: Sequence[PublicIdentity], *, wall_now: float, admins_only: bool = False
    ) -> tuple[bytes, list[GroupAction]]:
        """Create a group named ``name`` with us (its admin) and ``members`` (each invited: they get
        the op set on the 1:1 path); ``admins_only``: an announcements group (an ANNOUNCE op follows
        the CREATE). Returns the group id and the actions."""
        if len(self._groups) >= MAX_GROUPS:
            raise GroupFull(what="count", size=len(self._groups) + 1, limit=MAX_GROUPS)
        targets = tuple(sorted({self.me, *(m.ed25519 for m in members)}))
        if len(targets) > MAX_GROUP_MEMBERS:
            raise GroupFull(what="membership", size=len(targets), limit=MAX_GROUP_MEMBERS)
        op = sign_op(
            self.identity,
            kind=OpKind.CREATE,
            group_id=b"",
            parents=(),
            targets=targets,
            name=name,
            nonce=self._random(16),
            created_at_ms=int(wall_now * 1000),
        )
        record = GroupRecord(
            group_id=op.op_id,
            status=MemberStatus.JOINED,
            invited_by=self.me,
            chain=b"",
            generation=0,
            chain_members=b"",
            updated_at=wall_now,
        )
        group = self._session(record, Membership(op))
        if admins_only:
            announce = sign_op(
                self.identity,
                kind=OpKind.ANNOUNCE,
                group_id=op.op_id,
                parents=(op.op_id,),
                created_at_ms=int(wall_now * 1000),
            )
            group.membership.add(announce)
            group.announced.add(announce.op_id)
        write = GroupWrite(groups=[record])
        self._groups[op.op_id] = group
        actions: list[GroupAction] = [TopicsChanged()]
        group.persist_ops(write)
        group.announced.add(op.op_id)
        for member in targets:
            if member != self.me:
                actions += group.send_ops(member, group.membership.ops())
        actions = self._commit_or_raise(write, actions)
        self._tags_day = -1
        return op.op_id, actions

    def invite(self, group_id: bytes, member: PublicIdentity, *, wall_now: float) -> list[GroupAction]:
        """Add ``member`` (we must be an admin); it gets the op set and accepts with ``join``."""
        return self._local_op(group_id, OpKind.ADD, (member.ed25519,), wall_now=wall_now)

    def remove(self, group_id: bytes, member: bytes, *, wall_now: float) -> list[GroupAction]:
        """Remove ``member`` (admins only): every remaining member starts a new chain."""
        if member not in self._group(group_id).membership.state().members:
            raise NotInGroup(f"{member.hex()[:16]}… is not a member of this group")
        return self._local_op(group_id, OpKind.REMOVE, (member,), wall_now=wall_now)

    def promote(self, group_id: bytes, member: bytes, *, wall_now: float) -> list[GroupAction]:
        """Make ``member`` an admin (admins only)."""
        return self._local_op(group_id, OpKind.PROMOTE, (member,), wall_now=wall_now)

    def demote(self, group_id: bytes, member: bytes, *, wall_now: float) -> list[GroupAction]:
        """Take ``member``'s admin role (admins only)."""
        return self._local_op(group_id, OpKind.DEMOTE, (member,), wall_now=wall_now)

    def rename(self, group_id: bytes, name: str, *, wall_now: float) -> list[GroupAction]:
        """Rename the group (admins only)."""
        return self._local_op(group_id, OpKind.RENAME, (), name=name, wall_now=wall_now)

    def leave(self, group_id: bytes, *, wall_now: float) -> list[GroupAction]:
        """Leave the group: the others are told and start new chains; we stop following it."""
        return self._local_op(group_id, OpKind.LEAVE, (), wall_now=wall_now)

    def join(self, group_id: bytes, *, wall_now: float) -> list[GroupAction]:
        """Accept an invitation: follow the group's topics and mailboxes from now on."""
        group = self._group(group_id)
        if group.record.status is MemberStatus.JOINED:
            return []
        if group.record.status is not MemberStatus.INVITED or self.me not in group.membership.state().members:
            raise NotInGroup("this group has not invited us (or removed us since)")
        group.record = replace_record(group.record, status=MemberStatus.JOINED, updated_at=wall_now)
        self._commit_or_raise(GroupWrite(groups=[group.record]), [])
        self._tags_day = -1
        return [TopicsChanged()]

    def send(
        self, group_id: bytes, body: bytes, *, wall_now: float, ref: str = "", ttl: int | None = None
    ) -> tuple[GroupOutRecord, list[GroupAction]]:
        """Send ``body`` to the group: one envelope for all members. ``ref``: idempotency key (a
        second send with the same ref returns the first one). ``StorageError``: not sent."""
        group = self._joined(group_id)
        state = group.state()
        if state.admins_only and self.me not in state.admins:
            raise NotAuthorized(
                what="message", author=self.me.hex(), needs="an admin (only admins post here)"
            )
        if ref:
            known = self.storage.outbox_by_ref(group_id, ref)
            if known is not None:
                return known, []
        write = GroupWrite()
        out, actions = group.send_text(body, ref, write, wall_now, ttl)
        actions = self._commit_or_raise(write, actions)
        self._outbox.set(out)
        self._counts["sent"] += 1
        publish = PublishGroup(
            topic=group_topic(out.tag), tag=out.tag, envelope=out.envelope, message_id=out.message_id
        )
        return out, [*actions, publish]

    def mark_read(
        self, group_id: bytes, sender: bytes, message_ids: Sequence[bytes], *, wall_now: float
    ) -> None:
        """Tell ``sender`` (batched with the next receipts) that we read ``message_ids``."""
        self._group(group_id)
        if sender != self.me and message_ids:
            self._outbox.owe(group_id, sender, ReceiptKind.READ, message_ids, wall_now)

    # --- what the application reads ------------------------------------------------------------------

    def groups(self) -> list[GroupView]:
        """Every group we know, by name."""
        return sorted((self._view(g) for g in self._groups.values()), key=lambda v: (v.name, v.group_id))

    def view(self, group_id: bytes) -> GroupView:
        """One group: name, our status, members and admins (``UnknownGroup``)."""
        return self._view(self._group(group_id))

    def find(self, name_or_id: str) -> bytes:
        """The id of the group named ``name_or_id`` (or whose id in hex starts with it)."""
        matches = [
            g.group_id
            for g in self._groups.values()
            if g.membership.state().name == name_or_id or g.group_id.hex().startswith(name_or_id.lower())
        ]
        if len(matches) != 1:
            raise UnknownGroup(name_or_id if not matches else f"{name_or_id} (several groups match)")
        return matches[0]

    def history(self, group_id: bytes, *, after: int = 0, limit: int = 100) -> list[GroupMessageRecord]:
        """The group's messages numbered after ``after``."""
        self._group(group_id)
        return self.storage.history(group_id, after, limit)

    def status(self, message_id: bytes) -> GroupStatus | None:
        """Where our group message ``message_id`` is."""
        out = self._outbox.get(message_id)
        return None if out is None else status_of(out)

    def tags(self, wall_now: float) -> dict[bytes, bytes]:
        """The group tags to follow (mailbox syncs), for every joined group: tag -> group id."""
        self._refresh_tags(wall_now)
        return dict(self._tags)

    def topics(self, wall_now: float) -> set[str]:
        """The group topics to join now (yesterday's, today's and tomorrow's, per joined group)."""
        today = epoch_of(wall_now)
        return {
            group_topic(group_tag(g.group_id, day))
            for g in self._groups.values()
            if g.record.status is MemberStatus.JOINED
            for day in (today - 1, today, today + 1)
        }

    def statistics(self) -> dict[str, int]:
        """Counters since start: accepted, sent, and every discard by reason."""
        counts = dict(self._counts)
        for group in self._groups.values():
            if group.keys.waiting_dropped:
                counts["waiting_dropped"] = counts.get("waiting_dropped", 0) + group.keys.waiting_dropped
            for reason, n in group.membership.statistics().items():
                if n and reason not in ("accepted",):
                    counts[f"ops_{reason}"] = counts.get(f"ops_{reason}", 0) + n
        return counts

    # --- inputs from the driver ----------------------------------------------------------------------

    def control_received(self, sender: PublicIdentity, body: bytes, *, wall_now: float) -> list[GroupAction]:
        """A control message from ``sender`` (verified by the 1:1 seal) arrived."""
        try:
            control = decode_control(body)
        except DecodeError:
            self._counts["control_malformed"] += 1
            return []
        write = GroupWrite()
        actions: list[GroupAction] = []
        match control:
            case OpsControl():
                actions += self._ops_control(control, sender.ed25519, write, wall_now)
            case ChainControl():
                actions += self._chain_control(control, sender.ed25519, write, wall_now)
            case ReceiptControl():
                actions += self._receipt_control(control, sender.ed25519, write)
            case OpsWanted():
                group = self._groups.get(control.group_id)
                actions += [] if group is None else group.answer_wanted(control, sender.ed25519)
        self._adopt_orphan_chains(write, actions, wall_now)
        return self._commit(write, actions)

    def envelopes_received(self, envelopes: Sequence[bytes], *, wall_now: float) -> list[GroupAction]:
        """Group envelopes arrived (gossip or a mailbox sync): accept ours and new ones."""
        self._refresh_tags(wall_now)
        write = GroupWrite()
        actions: list[GroupAction] = []
        seen: list[SeenEntry] = []
        ids = {message_id(d): d for d in envelopes}
        known = self.storage.has_messages(ids)
        for mid, data in ids.items():
            try:
                envelope = decode_envelope(data)
            except DecodeError:
                self._counts["malformed"] += 1
                continue
            group_id = self._tags.get(envelope.inbox_tag)
            group = self._groups.get(group_id) if group_id is not None else None
            if group is None or group.record.status is not MemberStatus.JOINED:
                self._counts["not_ours"] += 1
                continue
            entry = SeenEntry(message_id=mid, inbox_tag=envelope.inbox_tag, expiry=envelope.expiry)
            if mid in known:
                self._counts["duplicate"] += 1
                seen.append(entry)
                continue
            if group.open(mid, data, write, actions, wall_now):
                seen.append(entry)
        self._adopt_orphan_chains(write, actions, wall_now)
        if seen:
            actions.append(GroupSeen(entries=tuple(seen)))
        return self._commit(write, actions)

    def stored(self, message_id: bytes, peer: str, *, wall_now: float) -> list[GroupAction]:
        """Mailbox ``peer`` stored our group envelope ``message_id``."""
        out = self._outbox.stored(message_id, peer)
        return [] if out is None else self._commit(GroupWrite(outbox=[out]), [], updated=[out])

    def on_timer(self, *, wall_now: float) -> list[GroupAction]:
        """Send the receipts that are due; publish again what nobody has; forget what expired."""
        actions: list[GroupAction] = list(self._outbox.unsent_controls())
        actions += self._outbox.receipts_due(wall_now)
        publishes, changed = self._outbox.due(wall_now, self._waiting_for)
        actions += publishes
        for out in changed:
            self._outbox.set(out)
        return self._commit(GroupWrite(outbox=changed), actions)

    def next_deadline(self) -> float | None:
        """When ``on_timer`` should next run."""
        return self._outbox.next_deadline()

    def controls_queued(self, control_ids: Sequence[bytes]) -> list[GroupAction]:
        """The messenger has these controls in its outbox now (it retries them from there)."""
        return self._commit(GroupWrite(drop_controls=list(control_ids)), [])

    # --- internals: local ops ------------------------------------------------------------------------

    def _local_op(
        self, group_id: bytes, kind: OpKind, targets: tuple[bytes, ...], *, wall_now: float, name: str = ""
    ) -> list[GroupAction]:
        group = self._joined(group_id)
        before = group.membership.state()
        op = sign_op(
            self.identity,
            kind=kind,
            group_id=group_id,
            parents=before.heads,
            targets=tuple(sorted(set(targets))),
            name=name,
            nonce=b"",
            created_at_ms=int(wall_now * 1000),
        )
        group.membership.add(op)  # NotAuthorized / GroupFull: the caller's mistake, nothing changed
        write = GroupWrite()
        group.persist_ops(write)
        actions = group.after_ops(before, write, wall_now)
        after = group.membership.state()
        if kind is OpKind.ADD:
            for member in after.members - before.members:
                actions += group.send_ops(member, group.membership.ops())
        if kind is OpKind.REMOVE:
            for member in before.members - after.members:
                actions += group.send_ops(member, [op])  # it learns it was removed
        if kind is OpKind.LEAVE:
            # Tell the others with our current chain (they can still read it), then forget it.
            actions += group.publish_ops([op], write, wall_now, fresh_chain=False)
            group.keys.drop_chain()
            group.record = replace_record(
                group.record, status=MemberStatus.LEFT, chain=b"", chain_members=b"", updated_at=wall_now
            )
            write.groups.append(group.record)
            self._tags_day = -1
            actions.append(TopicsChanged())
        else:
            actions += group.publish_ops([op], write, wall_now, fresh_chain=True)
        return self._commit_or_raise(write, actions)

    def _ops_control(
        self, control: OpsControl, sender: bytes, write: GroupWrite, wall_now: float
    ) -> list[GroupAction]:
        group = self._groups.get(control.group_id)
        if group is None:
            return self._maybe_invited(control, sender, write, wall_now)
        return group.receive_ops(control.ops, write, wall_now, source=sender)

    def _maybe_invited(
        self, control: OpsControl, sender: bytes, write: GroupWrite, wall_now: float
    ) -> list[GroupAction]:
        """Ops of a group we do not know: an invitation once its parts hold the CREATE and make us a
        member. Parts arrive in any order (an op set of a large group needs several): each is kept
        (``MAX_ORPHANS`` groups, ``MAX_ORPHAN_BYTES`` in all, the oldest group dropped first) until
        the ones before it are there."""
        parts = self._early.add_part(control.group_id, control.ops)
        create = next(
            (c for part in parts if (c := _create_among(control.group_id, part, self._keys)) is not None),
            None,
        )
        if create is None:
            return []  # a later part overtook the first
        if len(self._groups) >= MAX_GROUPS:
            self._counts["groups_full"] += 1
            return []
        record = GroupRecord(
            group_id=control.group_id,
            status=MemberStatus.INVITED,
            invited_by=sender,
            chain=b"",
            generation=0,
            chain_members=b"",
            updated_at=wall_now,
        )
        group = self._session(record, Membership(create))
        for part in parts:
            group.add_ops(part)
        state = group.state()
        if self.me not in state.members:
            self._counts["invite_incomplete"] += 1  # the op adding us is in a part still to come
            return []
        self._early.take_parts(control.group_id)
        group.announced = {op.op_id for op in group.membership.ops()}
        self._groups[control.group_id] = group
        group.persist_ops(write)
        write.groups.append(group.record)
        return [GroupInvited(group_id=control.group_id, name=state.name, by=sender)]

    def _chain_control(
        self, control: ChainControl, sender: bytes, write: GroupWrite, wall_now: float
    ) -> list[GroupAction]:
        if sender == self.me:
            self._counts["chain_unknown_group"] += 1
            return []
        return self._early.chain_control(control, sender, self._groups, write, wall_now)

    def _adopt_orphan_chains(self, write: GroupWrite, actions: list[GroupAction], wall_now: float) -> None:
        actions += self._early.adopt(self._groups, write, wall_now)

    def _session(self, record: GroupRecord, membership: Membership) -> GroupSession:
        keys = GroupKeys(chain=None, generation=0, chain_members=frozenset())
        return GroupSession(record, membership, keys, self._ctx)

    def _waiting_for(self, group_id: bytes) -> frozenset[bytes]:
        group = self._groups.get(group_id)
        if group is None or group.record.status is not MemberStatus.JOINED:
            return frozenset()  # we left: nobody to publish to
        return group.state().members - {self.me}

    def _topics_changed(self) -> None:
        self._tags_day = -1

    def _receipt_control(
        self, control: ReceiptControl, sender: bytes, write: GroupWrite
    ) -> list[GroupAction]:
        group = self._groups.get(control.group_id)
        if group is None or sender not in group.membership.state().members:
            self._counts["receipt_not_member"] += 1
            return []
        changed = self._outbox.receipt(control, sender)
        write.outbox += changed
        self._pending_updates += changed
        return []

    # --- internals: plumbing -------------------------------------------------------------------------

    def _commit(
        self, write: GroupWrite, actions: list[GroupAction], *, updated: Sequence[GroupOutRecord] = ()
    ) -> list[GroupAction]:
        """Persist ``write``; the events it makes true follow the actions. On a storage failure
        nothing is reported and the state is reloaded from storage (what came comes again)."""
        actions = self._outbox.keep_controls(write, actions, self._random)
        if not write:
            return actions
        try:
            numbered = self.storage.commit(write)
        except StorageError as exc:
            self._pending_updates = []
            self._reload(exc)
            return [GroupProblem(error=exc)]
        updated = [*updated, *self._pending_updates]
        self._pending_updates = []
        for out in write.outbox:  # (ours: sent, stored, acknowledged or published again)
            self._outbox.set(out)
        updated = [o for o in updated if not o.is_ops]
        events: list[GroupAction] = [
            GroupMessage(
                group_id=m.group_id,
                number=m.number,
                sender=m.sender,
                body=m.body,
                ref=m.ref,
                sent_at_ms=m.sent_at_ms,
                message_id=m.message_id,
            )
            for m in numbered
        ]
        self._counts["received"] += len(numbered)
        events += [status_of(o) for o in updated]
        return actions + events

    def _commit_or_raise(self, write: GroupWrite, actions: list[GroupAction]) -> list[GroupAction]:
        actions = self._outbox.keep_controls(write, actions, self._random)
        try:
            self.storage.commit(write)
        except StorageError as exc:
            self._reload(exc)
            raise
        for out in write.outbox:
            self._outbox.set(out)
        return actions

    def _reload(self, exc: StorageError) -> None:
        self._groups.clear()
        self._early.clear()
        self._counts["storage_failed"] += 1
        try:
            self._load(0.0)
        except StorageError as again:  # keep the first error; the next input tries again
            exc.add_note(f"reloading failed too: {again}")

    def _refresh_tags(self, wall_now: float) -> None:
        day = epoch_of(wall_now)
        if day == self._tags_day:
            return
        self._tags_day = day
        first = epoch_of(wall_now - self.config.ttl - CLOCK_SKEW)
        self._tags = {
            group_tag(g.group_id, d): g.group_id
            for g in self._groups.values()
            if g.record.status is MemberStatus.JOINED
            for d in range(first, day + 2)
        }

    def _group(self, group_id: bytes) -> GroupSession:
        group = self._groups.get(group_id)
        if group is None:
            raise UnknownGroup(group_id.hex()[:16])
        return group

    def _joined(self, group_id: bytes) -> GroupSession:
        group = self._group(group_id)
        if group.record.status is not MemberStatus.JOINED:
            raise NotInGroup(f"we are {group.record.status.value} in this group, not a member taking part")
        return group

    def _view(self, group: GroupSession) -> GroupView:
        state = group.membership.state()
        return GroupView(
            group_id=group.group_id,
            name=state.name,
            status=group.record.status,
            members=state.members,
            admins=state.admins,
            creator=state.creator,
            admins_only=state.admins_only,
        )


def _create_among(group_id: bytes, ops: Sequence[bytes], key_cache: KeyCache) -> GroupOp | None:
    """Group ``group_id``'s CREATE among ``ops`` (the first part of an invitation has it)."""
    for data in ops:
        try:
            op = decode_op(data, key_cache=key_cache)
        except MeshchatError:
            continue
        if op.kind is OpKind.CREATE and op.op_id == group_id:
            return op
    return None
