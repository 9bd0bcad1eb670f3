"""The receipt half of the ``Messenger``: sealing delivery and read receipts, and keeping each until a
mailbox holds it.

``ReceiptMaker`` seals one signed receipt per sender (per ``MAX_RECEIPT_IDS`` ids) and remembers it
until a mailbox acknowledges storing it (``acknowledged``), so a receipt whose store calls failed is
stored again (``waiting``) while it lives. It also decides when a duplicate of a message earns its
sender another receipt (``may_rereceipt``: the first may have been lost). It publishes and stores
nothing itself: the messenger turns what it returns into actions.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from meshchat.crypto import epoch_of, inbox_tag, inbox_topic, seal
from meshchat.identity import Identity, PublicIdentity, RandomBytes
from meshchat.store.outbox import StoreConfig
from meshchat.store.payload import MAX_RECEIPT_IDS, Receipt, ReceiptKind, encode_payload
from meshchat.store.reasons import DiscardReason
from meshchat.wire import decode_envelope, message_id

__all__ = ["MAX_UNSTORED_RECEIPTS", "RERECEIPT_INTERVAL", "ReceiptMaker", "SealedReceipt"]

#: Seconds before a duplicate of a message earns its sender another receipt.
RERECEIPT_INTERVAL = 60.0
#: Duplicates remembered for ``RERECEIPT_INTERVAL`` (bounded: a replayer cannot grow it).
_RERECEIPT_MEMORY = 10_000
#: Receipts waiting for a mailbox's acknowledgement (bounded: each names up to 1,000 messages).
MAX_UNSTORED_RECEIPTS = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedReceipt:
    """A receipt sealed to the sender of the messages it names, until a mailbox holds it."""

    #: The envelope's id.
    message_id: bytes
    #: The sender's inbox tag it is addressed to.
    tag: bytes
    #: The envelope.
    envelope: bytes
    #: Its expiry, unix seconds.
    expiry: int
    #: The sender's own mailboxes (from their invite), tried first.
    preferred: tuple[str, ...]

    @property
    def topic(self) -> str:
        """The gossip topic it is published on."""
        return inbox_topic(self.tag)


class ReceiptMaker:
    """See the module docstring."""

    def __init__(
        self,
        identity: Identity,
        config: StoreConfig,
        *,
        random_bytes: RandomBytes,
        discarded: Counter[DiscardReason],
    ) -> None:
        """Seal as ``identity``; count what is given up in ``discarded`` (the messenger's counter)."""
        self._identity = identity
        self._config = config
        self._random_bytes = random_bytes
        self._discarded = discarded
        # Kept in memory: after a crash the sender's next retry earns a new receipt.
        self._unstored: OrderedDict[bytes, SealedReceipt] = OrderedDict()
        self._rereceipted: OrderedDict[bytes, float] = OrderedDict()
        self._retry_at: float | None = None

    def seal(
        self,
        sender: PublicIdentity,
        kind: ReceiptKind,
        ids: Sequence[bytes],
        *,
        preferred: tuple[str, ...],
        wall_now: float,
    ) -> list[SealedReceipt]:
        """Receipts for ``ids`` to ``sender``, remembered until a mailbox acknowledges each."""
        sealed: list[SealedReceipt] = []
        for start in range(0, len(ids), MAX_RECEIPT_IDS):
            chunk = tuple(ids[start : start + MAX_RECEIPT_IDS])
            envelope = seal(
                self._identity,
                sender,
                encode_payload(Receipt(kind=kind, message_ids=chunk)),
                wall_now=wall_now,
                ttl=self._config.ttl,
                random_bytes=self._random_bytes,
            )
            receipt = SealedReceipt(
                message_id=message_id(envelope),
                tag=inbox_tag(sender, epoch_of(wall_now)),
                envelope=envelope,
                expiry=decode_envelope(envelope).expiry,
                preferred=preferred,
            )
            sealed.append(receipt)
            self._unstored[receipt.message_id] = receipt
            while len(self._unstored) > MAX_UNSTORED_RECEIPTS:
                self._unstored.popitem(last=False)
                self._discarded[DiscardReason.RECEIPT_TOO_MANY] += 1
        return sealed

    def acknowledged(self, message_id: bytes) -> bool:
        """A mailbox stored ``message_id``: True if it was one of our receipts (one mailbox is enough)."""
        return self._unstored.pop(message_id, None) is not None

    def waiting(self, wall_now: float) -> list[SealedReceipt]:
        """Receipts no mailbox holds yet, the expired ones dropped (and counted)."""
        for mid, receipt in list(self._unstored.items()):
            if receipt.expiry < wall_now:
                del self._unstored[mid]
                self._discarded[DiscardReason.RECEIPT_EXPIRED] += 1
        return list(self._unstored.values())

    def call_failed(self, wall_now: float) -> None:
        """A mailbox call failed: try the waiting receipts again after ``retry_initial``."""
        if self._unstored and self._retry_at is None:
            self._retry_at = wall_now + self._config.retry_initial

    def retry_due(self, wall_now: float) -> bool:
        """True (once) when the waiting receipts should be stored again."""
        if self._retry_at is not None and wall_now >= self._retry_at:
            self._retry_at = None
            return True
        return False

    def next_deadline(self) -> float | None:
        """When ``retry_due`` next turns true."""
        return self._retry_at

    def may_rereceipt(self, message_id: bytes, wall_now: float) -> bool:
        """A duplicate of ``message_id`` came: True if its sender should get another receipt now."""
        last = self._rereceipted.get(message_id)
        if last is not None and wall_now - last < RERECEIPT_INTERVAL:
            return False
        self._rereceipted[message_id] = wall_now
        self._rereceipted.move_to_end(message_id)
        while len(self._rereceipted) > _RERECEIPT_MEMORY:
            self._rereceipted.popitem(last=False)
        return True
