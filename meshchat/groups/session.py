"""One group as one member holds it: its record, its ops, its keys, and what each input does to them.

``GroupSession`` is the per-group half of ``meshchat.groups.core`` (which holds the sessions, the
outbox, storage and everything across groups). A session never commits: every method adds what it
changed to the caller's ``GroupWrite`` and returns the actions to perform once that is committed.

* **Ops in** (``receive_ops``): each is decoded and added to the group's ``Membership`` (signature,
  the author's role in the op's causal past, bounds: a refusal is counted by its error's name); then
  ``after_ops`` turns the change into ``GroupChanged`` events, drops the chains of members who went,
  retires our own chain when anyone went (the next message goes on a chain they never get), hands our
  current chain to members who came, and notices our own removal or leave.
* **Chains in** (``take_chain``): a handout from a current member, newer than what we hold; the
  messages that waited for it are opened then.
* **Envelopes in** (``open``): the header names the chain; a chain we never got keeps the message
  waiting (bounded), a retired one (a member who went, or replaced) counts it as a removed member's;
  then ``open_group`` (jump bound, AEAD, chain signature), the sender still a member, and the body:
  text into the history, ops into ``receive_ops``.
* **Out** (``ensure_chain``, ``seal``, ``publish_ops``): a new chain when ``GroupKeys`` says so,
  handed to every member over the 1:1 path; one envelope per message.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshchat.crypto import epoch_of
from meshchat.errors import DecodeError, MeshchatError, StorageError, UnknownChain
from meshchat.groups.chains import ReceiverChain, SenderChain, decode_handout, encode_handout
from meshchat.groups.events import (
    GroupAction,
    GroupChanged,
    GroupInvited,
    GroupSeen,
    MemberStatus,
    PublishGroup,
    SendControl,
    TopicsChanged,
)
from meshchat.groups.keys import GroupKeys, Waiting
from meshchat.groups.membership import GroupState, Membership, OpOutcome
from meshchat.groups.ops import GroupOp, OpKind, decode_op, encode_op
from meshchat.groups.outbox import REPUBLISH_FIRST
from meshchat.groups.payload import (
    MAX_WANTED_OPS,
    ChainControl,
    OpsBody,
    OpsControl,
    OpsWanted,
    TextBody,
    decode_body,
    encode_body,
    encode_control,
    pack_ops,
)
from meshchat.groups.seal import group_tag, group_topic, open_group, read_header, seal_group
from meshchat.groups.storage import (
    ChainRecord,
    GroupMessageRecord,
    GroupOutRecord,
    GroupRecord,
    GroupWrite,
    flat,
    unflat,
)
from meshchat.identity import Identity, KeyCache, RandomBytes
from meshchat.store.payload import ReceiptKind
from meshchat.store.storage import SeenEntry
from meshchat.wire import decode_envelope, message_id

__all__ = ["WANT_INTERVAL", "Context", "GroupSession", "replace_record"]

#: Seconds between two requests for missing ops in one group (each names up to ``MAX_WANTED_OPS``).
WANT_INTERVAL = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What every session of one user shares."""

    identity: Identity
    random_bytes: RandomBytes
    #: Lifetime of our group envelopes, seconds.
    ttl: int
    #: Lifetime of our control messages, seconds.
    control_ttl: int
    #: The core's counters.
    counts: Counter[str]
    #: ``owe(group_id, sender, kind, ids, wall_now)``: a receipt for the next batch.
    owe: Callable[[bytes, bytes, ReceiptKind, Sequence[bytes], float], None]
    #: Called when the groups we take part in change (topics, tags).
    topics_changed: Callable[[], None]
    #: Signing keys already checked (op authors', chains'): each is checked once, not at every use.
    keys: KeyCache

    @property
    def me(self) -> bytes:
        """Our Ed25519 key."""
        return self.identity.public.ed25519


def replace_record(record: GroupRecord, **changes: object) -> GroupRecord:
    """``record`` with ``changes``."""
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]  # (checked by the dataclass)


class GroupSession:
    """See the module docstring."""

    def __init__(self, record: GroupRecord, membership: Membership, keys: GroupKeys, ctx: Context) -> None:
        """A group from its record, its ops and its keys."""
        self.record = record
        self.membership = membership
        self.keys = keys
        self._ctx = ctx
        #: Op ids already in storage.
        self.stored_ops: set[bytes] = set()
        #: Op ids already reported as ``GroupChanged``.
        self.announced: set[bytes] = set()
        self._next_want = 0.0
        self._flat_for: frozenset[bytes] | None = None
        self._flat = b""

    @classmethod
    def restore(
        cls, record: GroupRecord, ops: Sequence[GroupOp], chains: Sequence[ChainRecord], ctx: Context
    ) -> tuple[GroupSession, list[ChainRecord]]:
        """A group as stored: its record, its ops, its chains; also returns the stored handouts whose
        sender is not a member yet (kept until it is)."""
        create = next((op for op in ops if op.kind is OpKind.CREATE), None)
        if create is None:
            raise StorageError(f"group {record.group_id.hex()[:16]} has no CREATE op stored")
        membership = Membership(create)
        for op in ops:
            if op.kind is not OpKind.CREATE:
                membership.add(op)
        own = SenderChain.from_bytes(record.chain) if record.chain else None
        keys = GroupKeys(chain=own, generation=record.generation, chain_members=unflat(record.chain_members))
        members = membership.state().members
        early: list[ChainRecord] = []
        for chain in chains:
            if chain.sender in members:
                keys.load_receiver(
                    ReceiverChain.from_bytes(chain.state, key_cache=ctx.keys), chain.generation
                )
            else:
                early.append(chain)
        group = cls(record, membership, keys, ctx)
        group.stored_ops = {op.op_id for op in ops}
        group.announced = set(group.stored_ops)
        return group, early

    @property
    def group_id(self) -> bytes:
        """The group id."""
        return self.record.group_id

    def state(self) -> GroupState:
        """The group's state from its ops."""
        return self.membership.state()

    # --- out ---------------------------------------------------------------------------------------------

    def ensure_chain(self, write: GroupWrite, wall_now: float) -> list[GroupAction]:
        """Make our chain usable now: a new one if needed (handed to every member), or the current
        one handed to the members who came since."""
        me = self._ctx.me
        everyone = self.state().members
        keys = self.keys
        if keys.needs_new_chain(everyone, wall_now=wall_now):
            recipients = everyone - {me}
            keys.new_chain(SenderChain.new(self._ctx.random_bytes, wall_now=wall_now), recipients)
            self._ctx.counts["chains_started"] += 1
        else:
            # (the common case: nobody came, nothing to hand out; set operations on 1,000 keys per
            # message were most of a large group's send cost)
            recipients = (
                everyone - keys.chain_members - {me}
                if len(keys.chain_members) + 1 != len(everyone)
                else frozenset()
            )
            if recipients:
                keys.chain_members = keys.chain_members | recipients
        assert keys.chain is not None
        self.save_keys(write, wall_now)
        if not recipients:
            return []
        handout = ChainControl(
            group_id=self.group_id, generation=keys.generation, handout=encode_handout(keys.chain.handout())
        )
        body = encode_control(handout)
        return [SendControl(recipient=m, body=body, ttl=self._ctx.control_ttl) for m in sorted(recipients)]

    def save_keys(self, write: GroupWrite, wall_now: float) -> None:
        """Put our chain's state in the record (and the record in ``write``)."""
        keys = self.keys
        if keys.chain_members is not self._flat_for:  # sorting 1,000 keys per send cost half a send
            self._flat_for, self._flat = keys.chain_members, flat(keys.chain_members)
        self.record = replace_record(
            self.record,
            chain=keys.chain.to_bytes() if keys.chain is not None else b"",
            generation=keys.generation,
            chain_members=self._flat,
            updated_at=wall_now,
        )
        if not write.groups or write.groups[-1] is not self.record:
            write.groups.append(self.record)

    def seal(
        self, body: bytes, write: GroupWrite, wall_now: float, ttl: int | None = None
    ) -> tuple[bytes, bytes]:
        """One envelope for ``body`` on our chain (``ensure_chain`` first); returns it and its tag."""
        chain = self.keys.chain
        assert chain is not None, "ensure_chain first"
        envelope, _ = seal_group(
            chain,
            group_id=self.group_id,
            body=body,
            wall_now=wall_now,
            ttl=self._ctx.ttl if ttl is None else ttl,
            random_bytes=self._ctx.random_bytes,
        )
        self.save_keys(write, wall_now)
        return envelope, group_tag(self.group_id, epoch_of(wall_now))

    def send_text(
        self, body: bytes, ref: str, write: GroupWrite, wall_now: float, ttl: int | None
    ) -> tuple[GroupOutRecord, list[GroupAction]]:
        """Seal ``body`` for the group (one envelope); put it in our outbox and history in ``write``.
        Returns its outbox record and the handouts to send first (the publish is the caller's)."""
        actions = self.ensure_chain(write, wall_now)
        envelope, tag = self.seal(encode_body(TextBody(body=body, ref=ref)), write, wall_now, ttl)
        mid = message_id(envelope)
        out = GroupOutRecord(
            message_id=mid,
            group_id=self.group_id,
            envelope=envelope,
            tag=tag,
            ref=ref,
            created_at=wall_now,
            expiry=decode_envelope(envelope).expiry,
            members=len(self.state().members) - 1,
            next_attempt=wall_now + REPUBLISH_FIRST,
        )
        write.outbox.append(out)
        write.messages.append(
            GroupMessageRecord(
                number=0,
                group_id=self.group_id,
                message_id=mid,
                sender=self._ctx.me,
                body=body,
                ref=ref,
                sent_at_ms=int(wall_now * 1000),
                received_at=wall_now,
            )
        )
        return out, actions

    def publish_ops(
        self, ops: Sequence[GroupOp], write: GroupWrite, wall_now: float, *, fresh_chain: bool
    ) -> list[GroupAction]:
        """Publish ``ops`` to the group (as many envelopes as they need)."""
        if not self.state().members - {self._ctx.me}:
            return []  # nobody to tell
        actions: list[GroupAction] = []
        if fresh_chain or self.keys.chain is None:
            actions += self.ensure_chain(write, wall_now)
        for part in pack_ops([encode_op(op) for op in ops]):
            envelope, tag = self.seal(encode_body(OpsBody(ops=part)), write, wall_now)
            mid = message_id(envelope)
            # kept in the outbox like a message (not shown to the application): published again
            # until every member acknowledged it, so a change made while nobody listened still spreads
            write.outbox.append(
                GroupOutRecord(
                    message_id=mid,
                    group_id=self.group_id,
                    envelope=envelope,
                    tag=tag,
                    ref="",
                    created_at=wall_now,
                    expiry=decode_envelope(envelope).expiry,
                    members=len(self.state().members) - 1,
                    next_attempt=wall_now + REPUBLISH_FIRST,
                    is_ops=True,
                )
            )
            actions.append(PublishGroup(topic=group_topic(tag), tag=tag, envelope=envelope, message_id=mid))
        return actions

    def send_ops(self, member: bytes, ops: Sequence[GroupOp]) -> list[GroupAction]:
        """``ops`` to one member on the 1:1 path (an invitation, or the news that it was removed)."""
        return [
            SendControl(
                recipient=member,
                body=encode_control(OpsControl(group_id=self.group_id, ops=part)),
                ttl=self._ctx.control_ttl,
            )
            for part in pack_ops([encode_op(op) for op in ops])
        ]

    def persist_ops(self, write: GroupWrite) -> None:
        """Add the ops not stored yet to ``write``."""
        if len(self.stored_ops) == len(self.membership):
            return  # nothing new (the common case: a message, not a change)
        for op in self.membership.ops():
            if op.op_id not in self.stored_ops:
                self.stored_ops.add(op.op_id)
                write.ops.append((self.group_id, op.op_id, encode_op(op)))

    # --- in ----------------------------------------------------------------------------------------------

    def take_chain(
        self, control: ChainControl, sender: bytes, write: GroupWrite, wall_now: float
    ) -> list[GroupAction]:
        """``sender``'s chain handout; open what waited for it."""
        counts = self._ctx.counts
        if sender not in self.state().members:
            counts["chain_from_non_member"] += 1
            return []
        if self.keys.generation_held(sender, control.generation):
            counts["chain_replayed"] += 1
            return []
        try:
            handout = decode_handout(control.handout, key_cache=self._ctx.keys)
        except DecodeError:
            counts["chain_malformed"] += 1
            return []
        if handout.chain_id in self.keys.receivers or handout.chain_id in self.keys.retired:
            counts["chain_replayed"] += 1
            return []
        return self.adopt_chain(
            ReceiverChain.from_handout(handout, sender, key_cache=self._ctx.keys),
            control.generation,
            write,
            wall_now,
        )

    def adopt_chain(
        self, chain: ReceiverChain, generation: int, write: GroupWrite, wall_now: float
    ) -> list[GroupAction]:
        """Hold ``chain`` (of a member, ``generation`` checked) and open what waited for it."""
        counts = self._ctx.counts
        if self.keys.generation_held(chain.sender, generation) or chain.chain_id in self.keys.retired:
            counts["chain_replayed"] += 1
            if chain.chain_id not in self.keys.receivers:  # a kept copy of a handout taken since
                write.drop_chains.append(chain.chain_id)
            return []
        write.drop_chains += self.keys.add_receiver(chain, generation)
        write.chains.append(self._chain_record(chain, generation))
        counts["chains_received"] += 1
        actions: list[GroupAction] = []
        waiting = self.keys.take_waiting(chain.chain_id)
        seen: list[SeenEntry] = []
        for item in sorted(waiting, key=lambda w: read_header(decode_envelope(w.data), self.group_id)[1]):
            if self.open(item.message_id, item.data, write, actions, wall_now):
                envelope = decode_envelope(item.data)
                seen.append(
                    SeenEntry(
                        message_id=item.message_id, inbox_tag=envelope.inbox_tag, expiry=envelope.expiry
                    )
                )
        if seen:
            actions.append(GroupSeen(entries=tuple(seen)))
        return actions

    def open(
        self, mid: bytes, data: bytes, write: GroupWrite, actions: list[GroupAction], wall_now: float
    ) -> bool:
        """Open one envelope of this group; True if it is accepted or judged for good (no retry)."""
        counts = self._ctx.counts
        try:
            chain_id, _ = read_header(decode_envelope(data), self.group_id)
        except DecodeError:
            counts["bad_header"] += 1
            return False
        chain = self.keys.receivers.get(chain_id)
        if chain is None:
            if chain_id in self.keys.retired:
                counts["removed_sender"] += 1  # a chain of a member who went, or replaced
                return True
            self.keys.wait(Waiting(message_id=mid, data=data, chain_id=chain_id))
            counts["waiting"] += 1
            return False
        try:
            opened = open_group(data, group_id=self.group_id, chain=chain, wall_now=wall_now)
            body = decode_body(opened.body)
        except UnknownChain:
            counts["unknown_chain"] += 1
            return False
        except MeshchatError as exc:
            counts[f"rejected_{type(exc).__name__}"] += 1
            return False
        sender = chain.sender
        state = self.state()
        if sender not in state.members:
            counts["removed_sender"] += 1
            return True
        write.chains.append(self._chain_record(chain, self.keys.generation_of(sender, chain.chain_id)))
        if state.admins_only and sender not in state.admins and isinstance(body, TextBody):
            counts["not_admin_post"] += 1  # an announcements group: only admins post
            return True
        if isinstance(body, OpsBody):
            actions += self.receive_ops(body.ops, write, wall_now, source=sender)
            self._ctx.owe(self.group_id, sender, ReceiptKind.DELIVERED, [mid], wall_now)
            return True
        write.messages.append(
            GroupMessageRecord(
                number=0,
                group_id=self.group_id,
                message_id=mid,
                sender=sender,
                body=body.body,
                ref=body.ref,
                sent_at_ms=opened.sent_at_ms,
                received_at=wall_now,
            )
        )
        self._ctx.owe(self.group_id, sender, ReceiptKind.DELIVERED, [mid], wall_now)
        return True

    def add_ops(self, ops: Sequence[bytes]) -> None:
        """Add encoded ops to the membership, counting refusals (no events: see ``receive_ops``)."""
        counts = self._ctx.counts
        for data in ops:
            try:
                outcome = self.membership.add(decode_op(data, key_cache=self._ctx.keys))
            except MeshchatError as exc:
                counts[f"op_refused_{type(exc).__name__}"] += 1
                continue
            if outcome is OpOutcome.DUPLICATE:
                counts["op_duplicate"] += 1

    def receive_ops(
        self, ops: Sequence[bytes], write: GroupWrite, wall_now: float, *, source: bytes | None = None
    ) -> list[GroupAction]:
        """Ops from member ``source``: add them, store them, act on what changed; if some name
        parents we lack, ask ``source`` for them (at most once per ``WANT_INTERVAL``)."""
        before = self.state()
        self.add_ops(ops)
        self.persist_ops(write)
        actions = self.after_ops(before, write, wall_now)
        missing = self.membership.missing()
        if missing and source is not None and source != self._ctx.me and wall_now >= self._next_want:
            self._next_want = wall_now + WANT_INTERVAL
            self._ctx.counts["ops_wanted"] += 1
            wanted = OpsWanted(group_id=self.group_id, op_ids=tuple(sorted(missing))[:MAX_WANTED_OPS])
            actions.append(
                SendControl(recipient=source, body=encode_control(wanted), ttl=self._ctx.control_ttl)
            )
        return actions

    def answer_wanted(self, wanted: OpsWanted, sender: bytes) -> list[GroupAction]:
        """A member asks for ops it lacks: send those we hold (a non-member gets nothing)."""
        if sender not in self.state().members:
            self._ctx.counts["wanted_from_non_member"] += 1
            return []
        ops = [op for op in map(self.membership.get, wanted.op_ids) if op is not None]
        return self.send_ops(sender, ops) if ops else []

    def after_ops(self, before: GroupState, write: GroupWrite, wall_now: float) -> list[GroupAction]:
        """What changes when ops were added (see the module docstring)."""
        me = self._ctx.me
        after = self.state()
        actions: list[GroupAction] = []
        for op in self.membership.ops() if len(self.announced) < len(self.membership) else ():
            if op.op_id not in self.announced:
                self.announced.add(op.op_id)
                actions.append(
                    GroupChanged(
                        group_id=self.group_id,
                        kind=op.kind,
                        author=op.author,
                        targets=op.targets,
                        name=after.name,
                    )
                )
        gone = before.members - after.members
        for member in gone:
            write.drop_chains += self.keys.drop_sender(member)
        status = self.record.status
        if me in gone and status in (MemberStatus.JOINED, MemberStatus.INVITED):
            self.keys.drop_chain()
            for sender in self.keys.senders():
                write.drop_chains += self.keys.drop_sender(sender)
            left = any(op.kind is OpKind.LEAVE and op.author == me for op in self.membership.ops())
            self.record = replace_record(
                self.record, status=MemberStatus.LEFT if left else MemberStatus.REMOVED, updated_at=wall_now
            )
            self.save_keys(write, wall_now)
            self._ctx.topics_changed()
            actions.append(TopicsChanged())
            return actions
        if me in after.members - before.members and status in (MemberStatus.LEFT, MemberStatus.REMOVED):
            self.record = replace_record(self.record, status=MemberStatus.INVITED, updated_at=wall_now)
            write.groups.append(self.record)
            actions.append(GroupInvited(group_id=self.group_id, name=after.name, by=b""))
        if gone and self.keys.chain is not None:
            self.keys.drop_chain()  # our next message goes on a chain the ones who went never get
            self.save_keys(write, wall_now)
        came = after.members - before.members - {me}
        if came and self.keys.chain is not None and self.record.status is MemberStatus.JOINED:
            actions += self.ensure_chain(write, wall_now)  # hands the current chain to them
        if came and self.record.status is MemberStatus.JOINED:
            actions += self._tell_newcomers(came)
        return actions

    def _tell_newcomers(self, came: frozenset[bytes]) -> list[GroupAction]:
        """Send each member who came our own ops that its invitation could not hold: those not in the
        past of the op that added it (made concurrently, e.g. on the other side of a partition; they
        were published on chains it never had)."""
        ops = self.membership.ops()
        actions: list[GroupAction] = []
        for member in sorted(came):
            added_by = [op for op in ops if op.kind in (OpKind.CREATE, OpKind.ADD) and member in op.targets]
            if not added_by:
                continue
            add_id = added_by[-1].op_id
            own = [
                op
                for op in ops
                if op.author == self._ctx.me
                and op.op_id != add_id
                and not self.membership.precedes(op.op_id, add_id)
            ]
            if own:
                self._ctx.counts["ops_to_newcomers"] += len(own)
                actions += self.send_ops(member, own)
        return actions

    def _chain_record(self, chain: ReceiverChain, generation: int) -> ChainRecord:
        return ChainRecord(
            chain_id=chain.chain_id,
            group_id=self.group_id,
            sender=chain.sender,
            generation=generation,
            state=chain.to_bytes(),
        )
