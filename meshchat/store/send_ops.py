"""The ``Messenger``'s sending side: a message to a person sealed once per device (and copied to our
own other devices), written with the ratchet steps and device lists that go with it, published and
planned onto mailboxes; linking and removing devices. A mixin of ``Messenger`` (``messenger.py`` keeps
the receiving, syncing and the glue), split off to keep each module readable; it uses the
messenger's attributes declared below. The sealing itself is ``sending.py``.

**Stamps.** With stamps on (``Messenger(known=...)``), a chat to a person who never answered (no chat
from them in the conversation's last ``STAMP_LOOKBACK`` entries, and none of ours to them delivered)
is stamped at the cost their invite asks (``set_stamp_cost``; ``DEFAULT_STAMP_COST`` without one),
each device's envelope with its own stamp. ``send`` mints in place (sans-IO: pure CPU, like the
sealing): ~0.2 s median at the default cost, once per message until the person answers. A driver that
must not stall that long (the node's trio loop) calls ``seal_chat`` (sealed, ratchet steps written,
seqs reserved), mints ``SealedChat.to_mint`` elsewhere (a worker thread: the stamps are pure functions
of the bytes), then ``queue_sealed`` (records, history, publishing). A crash in between loses the
unsent message only (its ratchet step is skipped, as a lost message's is), and the caller never got
a handle for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshchat.crypto import inbox_topic
from meshchat.crypto.stamps import DEFAULT_STAMP_COST, MAX_STAMP_COST
from meshchat.errors import MeshchatError, NotPrimary, StorageError
from meshchat.identity import Identity, KeyCache, PublicIdentity, RandomBytes
from meshchat.identity.devices import Device, DeviceList, LinkRequest
from meshchat.store.calls import MailboxCalls
from meshchat.store.devices import DeviceBook
from meshchat.store.outbox import Action, PublishEnvelope, StoreConfig
from meshchat.store.payload import Chat, Control, Copy, DeviceUpdate, Grant
from meshchat.store.sending import Planned, fan_write, seal_planned, siblings_of
from meshchat.store.sessions import SessionKeeper
from meshchat.store.storage import HistoryRecord, OutboxRecord, OutboxStatus, Storage
from meshchat.store.tracker import OutboxTracker
from meshchat.wire import decode_envelope, message_id
from meshchat.wire.envelope import unstamped

__all__ = ["STAMP_LOOKBACK", "SealedChat", "Sending"]

_S = OutboxStatus
#: Conversation entries (the newest) looked at to tell whether a person answered: a chat from them or
#: one of ours delivered among them. Bounded so a long one-sided conversation costs one short query.
STAMP_LOOKBACK = 50
#: Attempts after which an undelivered message is also stored on every mailbox that comes into view
#: (the first attempt is the send itself; one retry found nobody to deliver it).
SPREAD_AFTER_ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class SealedChat:
    """A chat sealed for every device, its ratchet steps written, waiting for stamps (``seal_chat``)."""

    #: The records to write, their envelopes unstamped.
    records: tuple[OutboxRecord, ...]
    #: Each record's stamp cost (0: none).
    costs: tuple[int, ...]
    #: ``(recipient key, body)`` for the conversation's history.
    said: tuple[bytes, bytes]
    #: When it was sealed (the history's ``sent_at_ms``, as in the envelope).
    sealed_at: float

    @property
    def to_mint(self) -> list[tuple[bytes, int]]:
        """``(unstamped envelope, cost)`` per record, for ``meshchat.crypto.stamps.stamp_envelope``
        (cost 0: hand the envelope back as it is)."""
        return [(r.envelope, c) for r, c in zip(self.records, self.costs, strict=True)]


class Sending:
    """``Messenger.send`` and the device operations (see the module docstring)."""

    identity: Identity
    storage: Storage
    config: StoreConfig
    sessions: SessionKeeper
    devices: DeviceBook
    _keys: KeyCache
    _outbox: OutboxTracker
    _calls: MailboxCalls
    _random_bytes: RandomBytes
    _preferred: dict[bytes, tuple[str, ...]]
    _known: Callable[[bytes], bool] | None
    _stamp_costs: dict[bytes, int]
    _counts: Counter[str]

    def set_stamp_cost(self, recipient: PublicIdentity, cost: int | None) -> None:
        """What ``recipient``'s invite asks of a stamp, bits (None: ``DEFAULT_STAMP_COST``).
        ``ValueError`` beyond ``MAX_STAMP_COST``."""
        if cost is None:
            self._stamp_costs.pop(recipient.ed25519, None)
        elif not 0 <= cost <= MAX_STAMP_COST:
            raise ValueError(f"a stamp cost is 0 to {MAX_STAMP_COST} bits, not {cost}")
        else:
            self._stamp_costs[recipient.ed25519] = cost

    def stamp_cost_for(self, person: bytes) -> int:
        """The stamp cost a chat to ``person`` (a root key) carries now: 0 with stamps off or once they
        answered (a chat from them, or one of ours delivered, in the conversation's last entries)."""
        if self._known is None:
            return 0
        try:
            entries = self.storage.conversation(person, before=None, limit=STAMP_LOOKBACK)
        except StorageError:  # cannot tell: a stamp costs CPU only, a missing one the message
            entries = []
        if any(not e.outgoing or e.status in (_S.DELIVERED, _S.READ) for e in entries):
            return 0
        return self._stamp_costs.get(person, DEFAULT_STAMP_COST)

    def send(
        self,
        recipient: PublicIdentity,
        body: bytes,
        *,
        wall_now: float,
        ref: str = "",
        ttl: int | None = None,
        control: bool = False,
    ) -> tuple[OutboxRecord, list[Action]]:
        """Queue ``body`` for ``recipient``; return its outbox record and the actions to start delivery.

        With ``ref`` (an idempotency key) a second send with the same ref returns the first one's record
        and does nothing, so an app that crashed mid-send can simply send everything again. The record is
        durable when this returns; ``StorageError`` means it was not queued. With ``control`` the body is
        for the recipient's machinery (groups), not its inbox: it arrives as ``ControlReceived``; the
        rest (outbox, retries, mailboxes, delivery receipt) is as for a chat.
        """
        if ref:
            known = self.storage.outbox_by_ref(ref)
            if known is not None:
                return known, []
        said = None
        if control:  # the machinery of the device the person's invite names (groups, files)
            plan = [Planned(recipient, lambda seq: Control(seq=seq, body=body), ref)]
        else:
            plan = self._chat_plan(recipient, body, ref)
            said = (recipient.ed25519, body)  # the conversation's history keeps the text
        records = self._queue(plan, wall_now=wall_now, ttl=ttl, said=said)
        self._counts["stamps_minted"] += sum(1 for item in plan if item.stamp_cost)
        return records[0], self._start(records)

    def seal_chat(
        self,
        recipient: PublicIdentity,
        body: bytes,
        *,
        wall_now: float,
        ref: str = "",
        ttl: int | None = None,
    ) -> SealedChat:
        """Seal the chat ``send`` would and write its ratchet steps, but leave the stamps to the caller
        (``SealedChat.to_mint``) and the records to ``queue_sealed`` (module docstring). Raises as
        ``send`` does, having written nothing."""
        plan = self._chat_plan(recipient, body, ref)
        try:
            records = self._seal(plan, wall_now=wall_now, ttl=ttl, mint=False)
            # Written now: nothing else may roll these ratchet steps back while the stamps are minted.
            self.storage.state_put(self.sessions.writes() + self.devices.writes())
        except (MeshchatError, ValueError):
            self.sessions.rolled_back()
            self.devices.rolled_back()
            raise
        self.sessions.committed()
        self.devices.committed()
        for record in records:
            self._outbox.reserve_seq(record.recipient, record.seq)
        costs = tuple(item.stamp_cost for item in plan)
        return SealedChat(tuple(records), costs, (recipient.ed25519, body), wall_now)

    def queue_sealed(
        self, sealed: SealedChat, envelopes: Sequence[bytes], *, wall_now: float
    ) -> tuple[OutboxRecord, list[Action]]:
        """Write ``sealed``'s records carrying ``envelopes`` (the same envelopes, stamped) with the
        history entry, then start delivery, as ``send`` does. ``ValueError`` for an envelope that is
        not its record's; ``StorageError``: nothing queued."""
        records = []
        for record, data in zip(sealed.records, envelopes, strict=True):
            if unstamped(decode_envelope(data)) != record.envelope:
                raise ValueError("an envelope that is not the one sealed for this record")
            records.append(record.replace(envelope=data, message_id=message_id(data)))
        peer, body = sealed.said
        history = [
            HistoryRecord(
                peer=peer,
                message_id=records[0].message_id,
                outgoing=True,
                body=body,
                sent_at_ms=int(sealed.sealed_at * 1000),
            )
        ]
        self.storage.outbox_add(records, fan_write(records), history)
        for record in records:
            self._outbox.added(record)
        self._calls.hurry(wall_now)
        self._counts["stamps_minted"] += sum(1 for cost in sealed.costs if cost)
        return records[0], self._start(records)

    def _chat_plan(self, recipient: PublicIdentity, body: bytes, ref: str) -> list[Planned]:
        """A chat to every device of ``recipient``'s, and a copy to each of our other devices."""

        def sibling_ref(key: bytes) -> str:
            return f"{ref}#{key.hex()[:16]}" if ref else ""

        plan = []
        cost = self.stamp_cost_for(self.devices.owner_of(recipient.ed25519))
        for number, key in enumerate(self.devices.targets(recipient.ed25519)):
            target = recipient if key == recipient.ed25519 else self._keys.public_identity(key)
            plan.append(
                Planned(
                    target,
                    lambda seq: Chat(seq=seq, body=body),
                    sibling_ref(key) if number else ref,
                    stamp_cost=cost,
                )
            )
        for key in self.devices.own_others():
            plan.append(
                Planned(
                    self._keys.public_identity(key),
                    lambda seq: Copy(seq=seq, body=body, to=recipient.ed25519),
                    sibling_ref(key),
                )
            )
        return plan

    def _queue(
        self,
        plan: Sequence[Planned],
        *,
        wall_now: float,
        ttl: int | None,
        said: tuple[bytes, bytes] | None = None,
    ) -> list[OutboxRecord]:
        """Seal ``plan`` and write its records with the ratchet steps and device lists that go with them,
        and (``said``: a chat, ``(recipient key, body)``) its history entry, in one transaction
        (``StorageError``: nothing was queued, nothing moved)."""
        try:
            records = self._seal(plan, wall_now=wall_now, ttl=ttl)
            # The ratchet steps that sealed them are written with them: neither exists without the other.
            writes = self.sessions.writes() + self.devices.writes() + fan_write(records)
            history = []
            if said is not None and records:
                peer, body = said
                history = [
                    HistoryRecord(
                        peer=peer,
                        message_id=records[0].message_id,
                        outgoing=True,
                        body=body,
                        sent_at_ms=int(wall_now * 1000),  # what ``seal`` puts in the envelope
                    )
                ]
            self.storage.outbox_add(records, writes, history)
        except (MeshchatError, ValueError):  # storage, a bundle or a body out of bounds, a bad ttl
            self.sessions.rolled_back()
            self.devices.rolled_back()
            raise
        self.sessions.committed()
        self.devices.committed()
        for record in records:
            self._outbox.added(record)
        self._calls.hurry(wall_now)
        return records

    def _seal(
        self, plan: Sequence[Planned], *, wall_now: float, ttl: int | None, mint: bool = True
    ) -> list[OutboxRecord]:
        """Seal ``plan`` into records (``mint``: stamps minted in place; else left to the caller)."""
        return seal_planned(
            plan,
            identity=self.identity,
            sessions=self.sessions,
            devices=self.devices,
            outbox=self._outbox,
            wall_now=wall_now,
            ttl=self.config.ttl if ttl is None else ttl,
            retry_initial=self.config.retry_initial,
            random_bytes=self._random_bytes,
            mint=mint,
        )

    def _start(self, records: Sequence[OutboxRecord]) -> list[Action]:
        actions: list[Action] = []
        for record in records:
            actions.append(self._publish(record))
            actions += self._plan_stores(record)
        return actions

    def siblings(self, message_id: bytes) -> list[OutboxRecord]:
        """Every record of a message sent to several devices (the first ``send`` returned, then the
        other devices', then the copies to our own); just the one for a single-device message."""
        found = (self._outbox.lookup(mid) for mid in siblings_of(self.storage, message_id))
        return [record for record in found if record is not None]

    # --- several devices ---------------------------------------------------------------------------

    def link_request(self, *, name: str, addrs: Sequence[str], wall_now: float) -> LinkRequest:
        """On a new device: the request to show the person's primary device (it waits for the grant)."""
        request = LinkRequest.create(
            self.identity, name=name, addrs=addrs, wall_now=wall_now, random_bytes=self._random_bytes
        )
        self.storage.state_put([self.devices.pending_write(request.nonce)])
        return request

    def approve_link(
        self, request: LinkRequest, *, snapshot: bytes, wall_now: float, primary_name: str = "primary"
    ) -> tuple[DeviceList, list[Action]]:
        """On the primary: add the requesting device to our list (version + 1), grant it the list and
        ``snapshot``, and tell our other devices. ``NotPrimary`` on a linked device; ``ValueError`` for
        a device already listed or a full list. Send the list to contacts with ``send_device_list``."""
        own = self._own_list_to_change(wall_now, primary_name)
        new = own.with_device(
            self.identity, Device(key=request.device, name=request.name, added=int(wall_now))
        )
        self.devices.adopt_own(new)
        data = new.encode()
        plan = [
            Planned(
                self._keys.public_identity(request.device),
                lambda seq: Grant(seq=seq, devices=data, snapshot=snapshot),
            )
        ]
        plan += self._update_plan(new, skip=request.device)
        return new, self._start(self._queue(plan, wall_now=wall_now, ttl=None))

    def remove_device(self, key: bytes, *, wall_now: float) -> tuple[DeviceList, list[Action]]:
        """On the primary: drop device ``key`` from our list (version + 1) and tell our other devices;
        nothing is sent to it any more. ``NotPrimary``; ``ValueError`` for the root or an unknown key."""
        own = self._own_list_to_change(wall_now, "primary")
        new = own.without_device(self.identity, key)
        self.devices.adopt_own(new)
        return new, self._start(self._queue(self._update_plan(new), wall_now=wall_now, ttl=None))

    def send_device_list(self, recipient: PublicIdentity, *, wall_now: float) -> list[Action]:
        """Send our device list to every device of ``recipient`` (after a link or a removal)."""
        own = self.devices.own_list
        if own is None:
            return []
        data = own.encode()
        plan = [
            Planned(self._keys.public_identity(key), lambda seq: DeviceUpdate(seq=seq, devices=data))
            for key in self.devices.targets(recipient.ed25519)
        ]
        return self._start(self._queue(plan, wall_now=wall_now, ttl=None))

    def _own_list_to_change(self, wall_now: float, primary_name: str) -> DeviceList:
        if not self.devices.is_primary:
            raise NotPrimary()
        own = self.devices.own_list
        return (
            own if own is not None else DeviceList.first(self.identity, name=primary_name, wall_now=wall_now)
        )

    def _update_plan(self, new: DeviceList, *, skip: bytes = b"") -> list[Planned]:
        data = new.encode()
        return [
            Planned(self._keys.public_identity(key), lambda seq: DeviceUpdate(seq=seq, devices=data))
            for key in self.devices.own_others()
            if key != skip
        ]

    def _preferred_of(self, key: bytes) -> tuple[str, ...]:
        """The mailboxes of device ``key``: its own, else its person's (from their invite)."""
        return self._preferred.get(key) or self._preferred.get(self.devices.owner_of(key), ())

    def _publish(self, record: OutboxRecord, *, again: bool = False) -> PublishEnvelope:
        tag = decode_envelope(record.envelope).inbox_tag
        return PublishEnvelope(
            topic=inbox_topic(tag), envelope=record.envelope, message_id=record.message_id, again=again
        )

    def _plan_stores(self, record: OutboxRecord, new: Sequence[str] = ()) -> list[Action]:
        """Queue ``record`` for the mailboxes it still needs; start calls to idle ones. ``new``: mailboxes
        that just came into view; a message already retried (undelivered past its first attempts)
        is stored on each of them too, beyond ``mailbox_copies``: a mailbox that moves (a carrier
        between a blocked region and the rest, a laptop between two LANs) then carries it across
        (the ``region-block`` experiment: 71 % across with a fixed number of copies)."""
        if record.status not in (_S.QUEUED, _S.RELAYED, _S.STORED):
            return []
        tag = decode_envelope(record.envelope).inbox_tag
        preferred = self._preferred_of(record.recipient)
        also = new if record.attempts >= SPREAD_AFTER_ATTEMPTS else ()
        peers = self._calls.queue_store(
            tag, record.message_id, record.envelope, record.stored_on, preferred, also=also
        )
        return [a for peer in peers for a in self._calls.pump(peer)]
