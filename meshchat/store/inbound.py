"""The ``Messenger``'s inbox screening: which arriving envelopes are ours, which are for watched
(group) tags, and what ours say once opened (chats, receipts, control messages). No storage: the
messenger checks the seen window before and writes what this sorted after.

A chat from a blocked person (the ``blocked`` predicate, on the person's root key) is sorted apart
(``Inbound.blocked``): it had to be opened to learn who sent it, its id goes into the seen window (so
it is not fetched and opened again), and it never reaches the inbox, the history or the application.
Nor does its sender get a delivery receipt, the first time or for a copy that comes again: their
outbox never says ``delivered``, as if we were offline, and retries until the message expires. Each
dropped id is remembered (``meshchat.store.dropped``), so a copy that comes again after an unblock is
not receipted either: the app never showed it. Control messages (groups, files, devices) from a
blocked person are still handled and receipted: the groups machinery needs every member's operations;
the node hides what they would show.

**Strangers and stamps.** When the messenger checks stamps (a ``known`` predicate: the node's contacts
and group members, plus everyone we have a conversation with, either way), a chat from a person it
does not know must carry a valid stamp at our cost (``meshchat.crypto.stamps``). The stamp is checked
in ``screen``, before any opening (one hash, microseconds); the sender is known only once the seal is
open (sealed sender), so an unstamped envelope is still opened once. A stranger's chat without a
valid stamp is then handled as a blocked person's (``Inbound.unstamped``): seen, remembered as
dropped, counted (``DiscardReason.UNSTAMPED``), never delivered, never receipted; its sender's outbox
never says ``delivered``. Copies from our own devices and control messages need no stamp.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from meshchat.crypto import CLOCK_SKEW, MAX_TTL, open_envelope
from meshchat.crypto.stamps import envelope_stamp_bits
from meshchat.errors import DecodeError, MeshchatError
from meshchat.identity import Identity, KeyCache, PublicIdentity
from meshchat.identity.devices import DeviceList
from meshchat.sessions.session import is_session_message
from meshchat.store.devices import DeviceBook
from meshchat.store.outbox import ControlReceived, DeviceListChanged, Linked, OutboxInput
from meshchat.store.payload import (
    Chat,
    Control,
    Copy,
    DeviceUpdate,
    Grant,
    Payload,
    Receipt,
    ReceiptKind,
    decode_payload,
)
from meshchat.store.reasons import DiscardReason, RejectReason, reject_reason
from meshchat.store.receipts import ReceiptMaker
from meshchat.store.sessions import SessionKeeper, pending_control
from meshchat.store.storage import InboxRecord, SeenEntry, StateWrite
from meshchat.store.tracker import Move, OutboxTracker
from meshchat.wire import decode_envelope, message_id

__all__ = ["Fresh", "Inbound", "open_inbound", "receipt_moves", "screen"]

#: Envelopes worth opening, by id: ``(envelope, expiry, inbox tag)``.
Fresh = dict[bytes, tuple[bytes, int, bytes]]


@dataclass(slots=True)
class Inbound:
    """What one ``receive`` opened, sorted (``open_inbound``)."""

    #: Chats for the inbox: the record to write, its proven sender, its seen entry.
    chats: list[tuple[InboxRecord, PublicIdentity, SeenEntry]] = field(default_factory=list)
    #: Receipts, with their proven signer and seen entry.
    receipts: list[tuple[Receipt, PublicIdentity, SeenEntry]] = field(default_factory=list)
    #: Control messages, their seen entries and the writes that keep them until handed on.
    controls: list[ControlReceived] = field(default_factory=list)
    control_entries: list[SeenEntry] = field(default_factory=list)
    control_writes: list[StateWrite] = field(default_factory=list)
    #: Device lists that changed, and a grant that linked this device (after the commit).
    changes: list[DeviceListChanged | Linked] = field(default_factory=list)
    #: Seen entries of chats from blocked people: accepted as seen, never delivered, never receipted.
    blocked: list[SeenEntry] = field(default_factory=list)
    #: Seen entries of strangers' chats without a valid stamp: handled as the blocked ones.
    unstamped: list[SeenEntry] = field(default_factory=list)
    #: Senders to receipt: duplicates again (per ``RERECEIPT_INTERVAL``), and control messages.
    rereceipts: dict[PublicIdentity, list[bytes]] = field(default_factory=dict)


def screen(
    envelopes: Sequence[bytes],
    tags: Collection[bytes],
    watched: Collection[bytes],
    *,
    wall_now: float,
    discarded: Counter[DiscardReason],
    stamp_cost: int | None = None,
    stamped: set[bytes] | None = None,
) -> tuple[Fresh, dict[bytes, bytes]]:
    """The envelopes for our ``tags`` worth opening, by id (well-formed, sane expiry, once each); and
    those for ``watched`` tags, by id (the same checks; not ours to open). The rest is counted. With
    ``stamp_cost``, the ids of ours whose stamp is worth it are added to ``stamped``."""
    fresh: Fresh = {}
    shared: dict[bytes, bytes] = {}
    for data in envelopes:
        try:
            envelope = decode_envelope(data)
        except DecodeError:
            discarded[DiscardReason.MALFORMED] += 1
            continue
        ours = envelope.inbox_tag in tags  # (our own tags win over a watched one equal to them)
        is_watched = not ours and envelope.inbox_tag in watched
        if not ours and not is_watched:
            discarded[DiscardReason.NOT_OURS] += 1
            continue
        if envelope.expiry > wall_now + MAX_TTL + CLOCK_SKEW:
            # No honest sender seals one (the seen window keeps ids until their expiry: refuse
            # what would pin an entry for longer than the longest TTL).
            discarded[DiscardReason.EXPIRY_TOO_FAR] += 1
            continue
        mid = message_id(data)
        if mid in fresh or mid in shared:
            discarded[DiscardReason.DUPLICATE] += 1
        elif is_watched:
            shared[mid] = data
        else:
            fresh[mid] = (data, envelope.expiry, envelope.inbox_tag)
            if (
                stamp_cost is not None
                and stamped is not None
                and envelope.stamp
                and envelope_stamp_bits(envelope) >= stamp_cost
            ):
                stamped.add(mid)
    return fresh, shared


def open_inbound(
    identity: Identity,
    fresh: Fresh,
    seen: Collection[bytes],
    *,
    wall_now: float,
    keys: KeyCache,
    sessions: SessionKeeper,
    devices: DeviceBook,
    receipts: ReceiptMaker,
    rejected: Counter[RejectReason],
    discarded: Counter[DiscardReason],
    blocked: Callable[[bytes], bool] | None = None,
    dropped: Collection[bytes] = (),
    known: Callable[[bytes], bool] | None = None,
    stamped: Collection[bytes] = (),
) -> Inbound:
    """Open and verify ``fresh`` envelopes (``seen``: ids already accepted); sort them. Chats from people
    ``blocked`` names (by root key) go to ``Inbound.blocked``; ``dropped``: the seen ids that were
    dropped so (never receipted again). With ``known`` (by root key), chats from people it does not
    name whose ids are not in ``stamped`` (a valid stamp) go to ``Inbound.unstamped``.

    A chat or control travels in a 1:1 session (the seal's body is a session message): its ratchet
    moves in ``sessions`` (written by the caller with what it accepts). A receipt is sealed only (it
    names message ids, nothing the seal's key would not already show). Anything else is rejected."""
    inbound = Inbound()
    for mid, (data, expiry, tag) in fresh.items():
        try:
            opened = open_envelope(identity, data, wall_now=wall_now, key_cache=keys)
        except MeshchatError as exc:
            rejected[reject_reason(exc)] += 1
            continue
        in_session = is_session_message(opened.body)
        if mid in seen:
            discarded[DiscardReason.DUPLICATE] += 1
            # Receipted again (its receipt may have been lost), unless its sender is blocked or was
            # when it came (dropped unread: no receipt ever).
            if (
                in_session
                and mid not in dropped
                and not _blocked(blocked, devices, opened.sender)
                and receipts.may_rereceipt(mid, wall_now)
            ):
                inbound.rereceipts.setdefault(opened.sender, []).append(mid)
            continue
        device = opened.sender.ed25519
        try:
            if in_session:
                payload = decode_payload(sessions.open_body(opened.sender, opened.body, wall_now=wall_now))
                if isinstance(payload, Receipt):
                    raise DecodeError("message payload", "a receipt travels outside sessions")
            else:
                payload = decode_payload(opened.body)
                if not isinstance(payload, Receipt):
                    raise DecodeError("message payload", "a chat or control outside a session")
            change = _devices_news(identity, devices, payload, device)
        except MeshchatError as exc:
            rejected[reject_reason(exc)] += 1
            continue
        entry = SeenEntry(message_id=mid, inbox_tag=tag, expiry=expiry)
        if change is not None:
            inbound.changes.append(change)
        if isinstance(payload, DeviceUpdate | Grant):  # the device book's: receipted like a control
            inbound.rereceipts.setdefault(opened.sender, []).append(mid)
            inbound.control_entries.append(entry)
            if isinstance(payload, Grant):
                inbound.control_writes.append(devices.pending_write(None))
            continue
        if isinstance(payload, Control):
            # Kept until its driver handed it on (``Messenger.controls_handled``): its key is gone.
            # Its sender gets a receipt for it (after the commit), as for a chat.
            inbound.rereceipts.setdefault(opened.sender, []).append(mid)
            inbound.controls.append(
                ControlReceived(
                    sender=opened.sender, body=payload.body, message_id=mid, sent_at_ms=opened.sent_at_ms
                )
            )
            inbound.control_entries.append(entry)
            inbound.control_writes.append(
                pending_control(mid, opened.sender.ed25519, opened.sent_at_ms, payload.body, expiry)
            )
            continue
        if isinstance(payload, Receipt):
            inbound.receipts.append((payload, opened.sender, entry))
            continue
        owner = devices.owner_of(device)
        message = InboxRecord(
            number=0,
            message_id=mid,
            sender=owner,
            seq=payload.seq,
            body=payload.body,
            sent_at_ms=opened.sent_at_ms,
            received_at=wall_now,
            device=b"" if device == owner else device,
            to=payload.to if isinstance(payload, Copy) else b"",
        )
        inbound.chats.append((message, opened.sender, entry))
    _set_blocked_apart(inbound, blocked)
    _set_unstamped_apart(inbound, known, stamped)
    return inbound


def _set_unstamped_apart(
    inbound: Inbound, known: Callable[[bytes], bool] | None, stamped: Collection[bytes]
) -> None:
    """Move the chats from strangers (``known`` does not name their person) that carry no valid stamp
    to ``inbound.unstamped``. A copy from another of our devices is ours: never a stranger's."""
    if known is None:
        return
    kept = []
    for chat in inbound.chats:
        record, _, entry = chat
        if not record.to and entry.message_id not in stamped and not known(record.sender):
            inbound.unstamped.append(entry)
        else:
            kept.append(chat)
    inbound.chats = kept


def _set_blocked_apart(inbound: Inbound, blocked: Callable[[bytes], bool] | None) -> None:
    """Move the chats from blocked people (by root key) to ``inbound.blocked`` (their seen entries).
    A copy (``to`` set) is ours, sent from another of our devices: never blocked."""
    if blocked is None:
        return
    kept = []
    for chat in inbound.chats:
        if not chat[0].to and blocked(chat[0].sender):
            inbound.blocked.append(chat[2])
        else:
            kept.append(chat)
    inbound.chats = kept


def _blocked(blocked: Callable[[bytes], bool] | None, devices: DeviceBook, sender: PublicIdentity) -> bool:
    """Whether the person whose device ``sender`` is, is blocked."""
    return blocked is not None and blocked(devices.owner_of(sender.ed25519))


def _devices_news(
    identity: Identity, devices: DeviceBook, payload: Payload, device: bytes
) -> DeviceListChanged | Linked | None:
    """Check what ``payload`` from ``device`` says about devices, and learn it (raises the typed error
    that rejects the message, before anything is learnt)."""
    if isinstance(payload, Copy) and devices.owner_of(device) != devices.root:
        raise DecodeError("message payload", "a copy from a device that is not one of ours")
    if isinstance(payload, Grant):
        if devices.pending_link() is None:
            raise DecodeError("grant", "no link request of this device is waiting")
        granted = DeviceList.decode(payload.devices)
        named = granted.keys()
        if identity.public.ed25519 not in named or device != granted.root:
            raise DecodeError("grant", "not from the primary of a list that names this device")
        devices.become_linked(granted)
        return Linked(
            root=PublicIdentity.from_bytes(granted.root), devices=granted, snapshot=payload.snapshot
        )
    carried = payload.devices if isinstance(payload, Chat | Control | DeviceUpdate) else b""
    if not carried:
        return None
    learnt = devices.learn(carried, sender=device)
    if learnt is None:
        return None
    new, added, removed, own = learnt
    return DeviceListChanged(root=new.root, devices=new, added=added, removed=removed, own=own)


def receipt_moves(
    receipts: Sequence[tuple[Receipt, PublicIdentity, SeenEntry]],
    outbox: OutboxTracker,
    discarded: Counter[DiscardReason],
) -> list[Move]:
    """The outbox inputs ``receipts`` prove (a receipt counts only from the message's recipient)."""
    moves: list[Move] = []
    for receipt, signer, _ in receipts:
        event = OutboxInput.READ_RECEIPT if receipt.kind is ReceiptKind.READ else OutboxInput.DELIVERY_RECEIPT
        for mid in receipt.message_ids:
            record = outbox.lookup(mid)
            if record is None:
                discarded[DiscardReason.RECEIPT_UNKNOWN] += 1
            elif record.recipient != signer.ed25519:
                discarded[DiscardReason.RECEIPT_WRONG_SIGNER] += 1
            else:
                moves.append((record, event, None))
    return moves
