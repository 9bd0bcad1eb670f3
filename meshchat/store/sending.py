"""Sealing what the ``Messenger`` sends: one payload per device, each in its session, each its own outbox
record. Sans-IO.

A message to a person goes to every device of theirs (``DeviceBook.targets``: the root key alone when
they never linked one) and, as a ``Copy``, to this person's other devices, so every device shows the
whole conversation. Each envelope is an ``OutboxRecord`` of its own (its own receipt, retries and
mailbox copies); the first is the message's record for the application, and when there are more, a
state record ``b"fan:" + its id`` lists the others (``Messenger.siblings``). A linked device attaches
its person's signed device list to its first message to each peer device after each change
(``DeviceBook.announcement``), so the peer can tell whose device it is.

Sealing moves ratchets (``SessionKeeper``) in memory; the caller writes the records, the ratchet steps
and the fan record in one transaction and rolls the sessions back if that fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshchat.crypto import seal
from meshchat.crypto.stamps import stamp_envelope
from meshchat.identity import Identity, PublicIdentity, RandomBytes
from meshchat.store.devices import DeviceBook
from meshchat.store.payload import Chat, Control, Payload, encode_payload
from meshchat.store.sessions import SessionKeeper
from meshchat.store.storage import OutboxRecord, OutboxStatus, StateWrite, Storage
from meshchat.store.tracker import OutboxTracker
from meshchat.wire import decode_envelope, message_id

__all__ = ["FAN_PREFIX", "Planned", "fan_write", "seal_planned", "siblings_of"]

#: State key prefix of a fanned-out message's list of sibling records.
FAN_PREFIX = b"fan:"
_ID_SIZE = 32


@dataclass(frozen=True, slots=True)
class Planned:
    """One envelope to seal: to ``target`` (a device key), the payload for its ``seq``, and its ref;
    ``stamp_cost`` > 0: stamped at that cost once sealed (``meshchat.crypto.stamps``)."""

    target: PublicIdentity
    payload: Callable[[int], Payload]
    ref: str = ""
    stamp_cost: int = 0


def seal_planned(
    plan: Sequence[Planned],
    *,
    identity: Identity,
    sessions: SessionKeeper,
    devices: DeviceBook,
    outbox: OutboxTracker,
    wall_now: float,
    ttl: int,
    retry_initial: float,
    random_bytes: RandomBytes,
    mint: bool = True,
) -> list[OutboxRecord]:
    """Seal every planned envelope in its session (ratchets move in memory only); the records to write.
    Without ``mint`` the envelopes are left unstamped (the caller mints: ``Sending.seal_chat``)."""
    records = []
    seqs: dict[bytes, int] = {}
    for item in plan:
        target = item.target
        seq = seqs.get(target.ed25519) or outbox.next_seq(target.ed25519)
        seqs[target.ed25519] = seq + 1
        payload = item.payload(seq)
        if isinstance(payload, Chat | Control):
            attach = devices.announcement(target.ed25519)
            if attach:
                payload = type(payload)(seq=payload.seq, body=payload.body, devices=attach)
        body = sessions.seal_body(target, encode_payload(payload), wall_now=wall_now)
        envelope = seal(identity, target, body, wall_now=wall_now, ttl=ttl, random_bytes=random_bytes)
        if item.stamp_cost and mint:
            # CPU-bound (~0.2 s at the default cost): the proof of work that lets a first message
            # through to someone who has not added us. Over the sealed bytes, so it binds to them.
            envelope = stamp_envelope(envelope, item.stamp_cost)
        records.append(
            OutboxRecord(
                message_id=message_id(envelope),
                recipient=target.ed25519,
                envelope=envelope,
                ref=item.ref,
                seq=seq,
                created_at=wall_now,
                expiry=decode_envelope(envelope).expiry,
                status=OutboxStatus.QUEUED,
                next_attempt=wall_now + retry_initial,
                updated_at=wall_now,
            )
        )
    return records


def fan_write(records: Sequence[OutboxRecord]) -> list[StateWrite]:
    """The state write listing the siblings of a fanned-out message (none for a single record)."""
    if len(records) < 2:
        return []
    return [(FAN_PREFIX + records[0].message_id, b"".join(r.message_id for r in records[1:]))]


def siblings_of(storage: Storage, message_id: bytes) -> list[bytes]:
    """The ids of every record of the message whose first record is ``message_id`` (itself first)."""
    listed = storage.state_get(FAN_PREFIX + message_id) or b""
    return [message_id] + [listed[i : i + _ID_SIZE] for i in range(0, len(listed), _ID_SIZE)]
