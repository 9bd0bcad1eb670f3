"""Range-based set reconciliation (RBSR) of message ids: what a recipient and a mailbox lack.

A recipient syncing with a mailbox must learn which messages each side holds that the other lacks
without sending every id it has: a long history would cost ``32 * n`` bytes per sync even when nothing
changed. Range-based set reconciliation (Aljoscha Meyer, "Range-Based Set Reconciliation",
arXiv:2212.13567), in the form the Negentropy protocol uses (https://github.com/hoytech/negentropy),
makes the bytes exchanged grow with the *difference* of the two sets and only logarithmically with
their size. Both sides order their items by ``(expiry, id)``. The initiator sends fingerprints of
``BUCKETS`` ranges covering everything; the other side compares each with its own fingerprint of the
same range: equal ranges are answered ``SKIP``, differing ones are split again into ``BUCKETS``
sub-ranges with fingerprints or, once one side holds at most ``2 * BUCKETS`` items in a range, sent as
an ``IDLIST`` of those ids. When the responder receives an id list it answers with its own ids in that
range, so the initiator computes both directions (``have`` and ``need``); the responder learns nothing
and the initiator is the one that then uploads and downloads. A range's fingerprint is the first
``FINGERPRINT_SIZE`` bytes of SHA-256 over the sum of its ids (256-bit little-endian integers, modulo
``2**256``, as 32 bytes little-endian) followed by the item count (8 bytes little-endian); prefix sums
over the sorted items make any range's fingerprint cost two bisections and one hash.

Every produced message stays within the frame limit the ``Reconciler`` was given: when the detail for
a range would not fit, the message ends with one ``FINGERPRINT`` range over everything not yet
answered, which the peer splits again in the next round. The detail for the first differing range
always fits (``MIN_FRAME_LIMIT`` is sized for it), so every round moves the lowest unresolved bound up
or narrows the range at it, and reconciliation always ends.

What it is not: not the Negentropy wire format (messages are msgpack: a protocol version followed by
four fields per range, expiry deltas and shortest distinguishing id prefixes as in Negentropy's
bounds; the count in the fingerprint is 8 bytes rather than a varint), not an authenticated protocol
(a lying peer can only make its own sync wrong or long, and each message it can make us produce is
bounded), and not I/O: callers carry the bytes. It is hand-written because no maintained Python
library implements RBSR or Negentropy.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import msgpack

from meshchat.errors import DecodeError, UnsupportedVersion
from meshchat.wire.codec import unpack_bounded

__all__ = [
    "BUCKETS",
    "DEFAULT_FRAME_LIMIT",
    "FINGERPRINT_SIZE",
    "ID_SIZE",
    "INFINITY",
    "MAX_EXPIRY",
    "MAX_IDS",
    "MAX_MESSAGE_SIZE",
    "MAX_RANGES",
    "MIN_FRAME_LIMIT",
    "PROTOCOL_VERSION",
    "Bound",
    "Item",
    "Mode",
    "Range",
    "ReconcileMessage",
    "Reconciler",
    "decode_message",
    "encode_message",
    "reconcile_sets",
]

#: One item of a reconciled set: (expiry in unix seconds, message id). Sets are ordered by this tuple.
Item = tuple[int, bytes]

#: Message ids are BLAKE2b-256 digests.
ID_SIZE = 32
#: Bytes of a range fingerprint: 128 bits make an accidental match between differing ranges negligible.
FINGERPRINT_SIZE = 16
#: Sub-ranges a differing range is split into (Negentropy's value: few rounds, small messages).
BUCKETS = 16
#: Largest expiry an item may have: envelope expiries are unsigned 32-bit unix seconds.
MAX_EXPIRY = 2**32 - 1
#: Version written first in every message, so a later format can be told apart and refused.
PROTOCOL_VERSION = 1
#: Largest encoded message ``decode_message`` parses: four default frames, refused before parsing.
MAX_MESSAGE_SIZE = 256 * 1024
#: Most ranges in one message: bounds the bisections and hashes one message can make the receiver do.
MAX_RANGES = 8_192
#: Most ids in one message (128 KiB of ids): bounds the set comparisons one message can demand.
MAX_IDS = 4_096
#: Default cap on an encoded message: fits a 64 KiB transport frame with room for its own framing.
DEFAULT_FRAME_LIMIT = 60_000


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Bound:
    """Exclusive upper bound of a range: every item ``(expiry, id)`` below ``(self.expiry, self.id)``.

    ``id`` may be a prefix shorter than ``ID_SIZE``: bytes compare lexicographically, so the shortest
    prefix that separates two neighbouring items is enough (and cheaper on the wire).
    """

    #: Expiry part, 0..2**32 (2**32 only in ``INFINITY``).
    expiry: int
    #: Id part: 0..``ID_SIZE`` bytes; empty when ``expiry`` is 2**32.
    id: bytes

    def __post_init__(self) -> None:
        if type(self.expiry) is not int or not 0 <= self.expiry <= MAX_EXPIRY + 1:
            raise ValueError(f"bound expiry must be an int in 0..2**32, not {self.expiry!r}")
        if type(self.id) is not bytes or len(self.id) > ID_SIZE:
            raise ValueError(f"bound id must be at most {ID_SIZE} bytes")
        if self.expiry > MAX_EXPIRY and self.id:
            raise ValueError("a bound with expiry 2**32 is INFINITY and has an empty id")


#: The bound above every item: the last range of every message ends here.
INFINITY = Bound(expiry=MAX_EXPIRY + 1, id=b"")
#: The bound below every item, where the first range of every message starts (never sent).
_LOWEST = Bound(expiry=0, id=b"")


class Mode(IntEnum):
    """What a range carries."""

    #: Both sides agree on this range (or it needs no reply); no payload.
    SKIP = 0
    #: The sender's fingerprint of its items in the range.
    FINGERPRINT = 1
    #: The sender's ids in the range, in order.
    IDLIST = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Range:
    """One range of a message: from the previous range's ``upper`` (or the lowest bound) to ``upper``."""

    #: Exclusive upper bound.
    upper: Bound
    #: What the range carries.
    mode: Mode
    #: ``FINGERPRINT_SIZE`` bytes in ``FINGERPRINT`` mode, otherwise empty.
    fingerprint: bytes = b""
    #: The sender's ids in the range in ``IDLIST`` mode (``ID_SIZE`` bytes each), otherwise empty.
    ids: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.upper, Bound):
            raise ValueError("range upper must be a Bound")
        if not isinstance(self.mode, Mode):
            raise ValueError(f"unknown range mode {self.mode!r}")
        if type(self.fingerprint) is not bytes or type(self.ids) is not tuple:
            raise ValueError("range fingerprint must be bytes and ids a tuple")
        wanted = FINGERPRINT_SIZE if self.mode is Mode.FINGERPRINT else 0
        if len(self.fingerprint) != wanted:
            raise ValueError(f"{self.mode.name} range needs a {wanted}-byte fingerprint")
        if self.ids and self.mode is not Mode.IDLIST:
            raise ValueError(f"{self.mode.name} range carries no ids")
        if any(type(i) is not bytes or len(i) != ID_SIZE for i in self.ids):
            raise ValueError(f"every id must be {ID_SIZE} bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileMessage:
    """One message of a reconciliation: consecutive ranges from the lowest bound up to ``INFINITY``."""

    #: The ranges, upper bounds strictly increasing; the first starts at the lowest bound, the last
    #: ends at ``INFINITY``. At most ``MAX_RANGES`` ranges and ``MAX_IDS`` ids in all.
    ranges: tuple[Range, ...]

    def __post_init__(self) -> None:
        if type(self.ranges) is not tuple or not self.ranges:
            raise ValueError("a message has a non-empty tuple of ranges")
        if len(self.ranges) > MAX_RANGES:
            raise ValueError(f"{len(self.ranges)} ranges; at most {MAX_RANGES}")
        previous = _LOWEST
        ids = 0
        for range_ in self.ranges:
            if not isinstance(range_, Range):
                raise ValueError("every range must be a Range")
            if range_.upper <= previous:
                raise ValueError("range bounds must increase strictly")
            previous = range_.upper
            ids += len(range_.ids)
        if previous != INFINITY:
            raise ValueError("the last range must end at INFINITY")
        if ids > MAX_IDS:
            raise ValueError(f"{ids} ids; at most {MAX_IDS}")

    @property
    def done(self) -> bool:
        """True if every range is ``SKIP``: the sender has nothing left to reconcile."""
        return all(range_.mode is Mode.SKIP for range_ in self.ranges)


# --- encoding ----------------------------------------------------------------------------------------

_WHAT = "reconcile message"
_MODES = frozenset(int(mode) for mode in Mode)
#: msgpack fields per range: expiry delta, bound id, mode, payload.
_FIELDS_PER_RANGE = 4
#: Longest top-level array a message can have (the version, then four fields per range).
_MAX_FIELDS = 1 + _FIELDS_PER_RANGE * MAX_RANGES


def _payload(range_: Range) -> bytes:
    return b"".join(range_.ids) if range_.mode is Mode.IDLIST else range_.fingerprint


def encode_message(message: ReconcileMessage) -> bytes:
    """msgpack ``[PROTOCOL_VERSION, delta, bound id, mode, payload, ...]``: four fields per range.

    ``delta`` is the bound's expiry minus the previous bound's (0 before the first), ``payload`` the
    fingerprint, the concatenated ids, or empty for ``SKIP``.
    """
    fields: list[object] = [PROTOCOL_VERSION]
    previous = 0
    for range_ in message.ranges:
        fields += [range_.upper.expiry - previous, range_.upper.id, int(range_.mode), _payload(range_)]
        previous = range_.upper.expiry
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


def decode_message(data: bytes) -> ReconcileMessage:
    """Parse a message from a peer: ``TooLarge`` over ``MAX_MESSAGE_SIZE``, ``DecodeError`` if malformed.

    Malformed means anything ``encode_message`` could not have written for a valid message: not
    msgpack, trailing bytes, wrong types, an unknown version (``UnsupportedVersion``) or mode, bounds
    not strictly increasing, an id or bound id of the wrong size, a fingerprint not
    ``FINGERPRINT_SIZE`` bytes, more than ``MAX_RANGES`` ranges or ``MAX_IDS`` ids, or a last bound
    other than ``INFINITY``. No other exception escapes.
    """
    # Every bin is bounded by the frame (ids and fingerprints are checked below: at most ``MAX_IDS`` ids).
    value = unpack_bounded(
        data,
        what=_WHAT,
        limit=MAX_MESSAGE_SIZE,
        max_str=0,
        max_items=_MAX_FIELDS,
        max_map=0,
        use_list=True,
    )
    if type(value) is not list or not value:
        raise DecodeError(_WHAT, "not a non-empty array")
    version = value[0]
    if type(version) is not int:
        raise DecodeError(_WHAT, "version is not an integer")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(what=_WHAT, version=version, supported=(PROTOCOL_VERSION,))
    fields = value[1:]
    if not fields or len(fields) % _FIELDS_PER_RANGE:
        raise DecodeError(_WHAT, f"expected {_FIELDS_PER_RANGE} fields for each of one or more ranges")
    ranges: list[Range] = []
    expiry = 0
    ids = 0
    for start in range(0, len(fields), _FIELDS_PER_RANGE):
        delta, bound_id, mode, payload = fields[start : start + _FIELDS_PER_RANGE]
        if type(delta) is not int or delta < 0:
            raise DecodeError(_WHAT, "expiry delta is not a non-negative integer")
        if type(bound_id) is not bytes or type(payload) is not bytes:
            raise DecodeError(_WHAT, "bound id and payload must be binary")
        if type(mode) is not int or mode not in _MODES:
            raise DecodeError(_WHAT, f"unknown range mode {mode!r}")
        expiry += delta
        if mode == Mode.IDLIST:
            if len(payload) % ID_SIZE:
                raise DecodeError(_WHAT, f"id list is not a whole number of {ID_SIZE}-byte ids")
            ids += len(payload) // ID_SIZE
            if ids > MAX_IDS:
                raise DecodeError(_WHAT, f"more than {MAX_IDS} ids")
            id_list = tuple(payload[i : i + ID_SIZE] for i in range(0, len(payload), ID_SIZE))
            fingerprint = b""
        else:
            id_list, fingerprint = (), payload
        try:
            upper = Bound(expiry=expiry, id=bound_id)
            ranges.append(Range(upper=upper, mode=Mode(mode), fingerprint=fingerprint, ids=id_list))
        except ValueError as exc:
            raise DecodeError(_WHAT, str(exc)) from exc
    try:
        return ReconcileMessage(ranges=tuple(ranges))
    except ValueError as exc:
        raise DecodeError(_WHAT, str(exc)) from exc


# --- sizes of encoded ranges (exact, so frames can be filled to the limit) ------------------------------


def _uint_size(value: int) -> int:
    """Bytes msgpack writes for a non-negative int."""
    if value < 0x80:
        return 1
    if value < 0x100:
        return 2
    if value < 0x10000:
        return 3
    return 5 if value < 0x1_0000_0000 else 9


def _bin_size(length: int) -> int:
    """Bytes msgpack writes for a ``bin`` of ``length`` bytes."""
    if length < 0x100:
        return 2 + length
    return (3 if length < 0x10000 else 5) + length


def _range_size(previous_expiry: int, range_: Range) -> int:
    payload = len(range_.ids) * ID_SIZE if range_.mode is Mode.IDLIST else len(range_.fingerprint)
    delta = range_.upper.expiry - previous_expiry
    return _uint_size(delta) + _bin_size(len(range_.upper.id)) + 1 + _bin_size(payload)


#: Most bytes a range spends before its payload: expiry delta (uint64), bound id (bin8), mode.
_MAX_RANGE_HEAD = 9 + _bin_size(ID_SIZE) + 1
#: Most bytes of a ``bin`` header.
_MAX_BIN_HEAD = 5
#: Most bytes before the first range: array header (array32) and the version.
_MAX_MESSAGE_HEAD = 5 + 1
#: Most bytes of a ``SKIP`` range.
_MAX_SKIP_SIZE = _MAX_RANGE_HEAD + _bin_size(0)
#: Most bytes of a ``FINGERPRINT`` range.
_MAX_FINGERPRINT_SIZE = _MAX_RANGE_HEAD + _bin_size(FINGERPRINT_SIZE)
#: Most bytes of the detail sent for one differing range: BUCKETS fingerprints or a short id list.
_MAX_DETAIL_SIZE = max(BUCKETS * _MAX_FINGERPRINT_SIZE, _MAX_RANGE_HEAD + _bin_size(2 * BUCKETS * ID_SIZE))
#: Smallest frame limit: the head, a SKIP before and after the first detail, that detail and the
#: closing FINGERPRINT; below it a round might carry no detail and reconciliation might never end.
MIN_FRAME_LIMIT = _MAX_MESSAGE_HEAD + 2 * _MAX_SKIP_SIZE + _MAX_DETAIL_SIZE + _MAX_FINGERPRINT_SIZE
#: Ranges kept free at any point for a SKIP and the closing FINGERPRINT.
_RESERVED_RANGES = 2


class _Builder:
    """Collects an outgoing message's ranges within a frame limit, merging consecutive SKIPs."""

    __slots__ = ("_budget", "_end", "_ids", "_pending", "_ranges", "_size", "detailed")

    def __init__(self, frame_limit: int) -> None:
        self._ranges: list[Range] = []
        #: Upper bound of the last range in ``_ranges``.
        self._end = _LOWEST
        #: Upper bound of a SKIP not yet written (merged with any SKIP that follows).
        self._pending: Bound | None = None
        #: Encoded bytes of ``_ranges``.
        self._size = 0
        self._ids = 0
        # Room for the message head, a trailing SKIP and the closing FINGERPRINT is always kept.
        self._budget = frame_limit - _MAX_MESSAGE_HEAD - _MAX_SKIP_SIZE - _MAX_FINGERPRINT_SIZE
        #: True once any range other than SKIP was added.
        self.detailed = False

    def skip(self, upper: Bound) -> None:
        self._pending = upper

    def _flush_cost(self) -> tuple[int, int, int]:
        """(bytes, ranges, expiry after it) of writing the pending SKIP."""
        if self._pending is None:
            return 0, 0, self._end.expiry
        skip = Range(upper=self._pending, mode=Mode.SKIP)
        return _range_size(self._end.expiry, skip), 1, self._pending.expiry

    def _flush(self) -> None:
        if self._pending is not None:
            skip = Range(upper=self._pending, mode=Mode.SKIP)
            self._size += _range_size(self._end.expiry, skip)
            self._ranges.append(skip)
            self._end, self._pending = self._pending, None

    def add(self, ranges: Sequence[Range]) -> bool:
        """Append ``ranges`` (after the pending SKIP) if they fit; False, and nothing added, if not."""
        size, count, previous = self._flush_cost()
        for range_ in ranges:
            size += _range_size(previous, range_)
            previous = range_.upper.expiry
        count += len(ranges) + len(self._ranges) + _RESERVED_RANGES
        ids = self._ids + sum(len(range_.ids) for range_ in ranges)
        if self._size + size > self._budget or count > MAX_RANGES or ids > MAX_IDS:
            return False
        self._flush()
        for range_ in ranges:
            self._size += _range_size(self._end.expiry, range_)
            self._ranges.append(range_)
            self._end = range_.upper
        self._ids = ids
        self.detailed = True
        return True

    def ids_that_fit(self) -> int:
        """How many ids one more IDLIST range is sure to fit (worst-case bound size)."""
        size, count, _ = self._flush_cost()
        if len(self._ranges) + count + 1 + _RESERVED_RANGES > MAX_RANGES:
            return 0
        room = self._budget - self._size - size - _MAX_RANGE_HEAD - _MAX_BIN_HEAD
        return max(0, min(room // ID_SIZE, MAX_IDS - self._ids))

    def end(self) -> Bound:
        """Where everything added so far (pending SKIP included) ends."""
        return self._end if self._pending is None else self._pending

    def finish(self, remainder: bytes | None) -> ReconcileMessage:
        """The message; ``remainder`` is the fingerprint closing it from ``end()`` to INFINITY, if cut."""
        self._flush()
        if remainder is not None:
            self._ranges.append(Range(upper=INFINITY, mode=Mode.FINGERPRINT, fingerprint=remainder))
        return ReconcileMessage(ranges=tuple(self._ranges))


# --- the reconciler -------------------------------------------------------------------------------------

#: Fingerprint sums are taken modulo 2**256.
_SUM_MASK = (1 << 256) - 1


class Reconciler:
    """One side of a reconciliation over a fixed set of items; sans-IO, no clock.

    The initiator calls ``initiate`` and then ``reconcile`` on each reply until it returns no message;
    the responder calls ``respond`` on each message it receives. Use one ``Reconciler`` per session on
    the initiating side (``initiate`` starts over); ``respond`` keeps no state.

    Each id must always come with the same expiry (it is the message's own expiry): the same id under
    two expiries is refused here, and a peer that pairs an id with another expiry than ours may see it
    reported on both sides.
    """

    __slots__ = ("_frame_limit", "_ids", "_items", "_reported_have", "_reported_need", "_sums")

    def __init__(self, items: Iterable[Item], *, frame_limit: int = DEFAULT_FRAME_LIMIT) -> None:
        """Sort and de-duplicate ``items``; ``ValueError`` for a bad item or frame limit."""
        if type(frame_limit) is not int or not MIN_FRAME_LIMIT <= frame_limit <= MAX_MESSAGE_SIZE:
            raise ValueError(f"frame_limit must be an int in {MIN_FRAME_LIMIT}..{MAX_MESSAGE_SIZE}")
        expiries: dict[bytes, int] = {}
        for item in items:
            if type(item) is not tuple or len(item) != 2:
                raise ValueError(f"an item is a tuple (expiry, id), not {item!r}")
            expiry, id_ = item
            if type(expiry) is not int or not 0 <= expiry <= MAX_EXPIRY:
                raise ValueError(f"item expiry must be an int in 0..{MAX_EXPIRY}, not {expiry!r}")
            if type(id_) is not bytes or len(id_) != ID_SIZE:
                raise ValueError(f"item id must be {ID_SIZE} bytes")
            if expiries.setdefault(id_, expiry) != expiry:
                raise ValueError(f"id {id_.hex()[:16]}… appears with two expiries")
        self._frame_limit = frame_limit
        self._items: list[Item] = sorted((expiry, id_) for id_, expiry in expiries.items())
        self._ids = frozenset(expiries)
        sums = [0]
        for _, id_ in self._items:
            sums.append((sums[-1] + int.from_bytes(id_, "little")) & _SUM_MASK)
        #: ``_sums[i]`` is the sum of the first ``i`` ids modulo 2**256.
        self._sums = sums
        self._reported_have: set[bytes] = set()
        self._reported_need: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def frame_limit(self) -> int:
        """Largest encoded message this side produces."""
        return self._frame_limit

    # -- the protocol ----------------------------------------------------------------------------------

    def initiate(self) -> ReconcileMessage:
        """The initiator's first message (and the start of a new session on this side)."""
        self._reported_have.clear()
        self._reported_need.clear()
        out = _Builder(self._frame_limit)
        fits = out.add(self._detail(INFINITY, 0, len(self._items)))
        assert fits, "MIN_FRAME_LIMIT leaves room for the first detail"
        return out.finish(None)

    def respond(self, message: ReconcileMessage) -> ReconcileMessage:
        """The responder's reply to ``message``; all ``SKIP`` when it has nothing more to say."""
        reply, _, _ = self._process(message, initiator=False)
        return reply

    def reconcile(
        self, message: ReconcileMessage
    ) -> tuple[ReconcileMessage | None, list[bytes], list[bytes]]:
        """The initiator's step on the responder's reply: (next message or None when complete, have, need).

        ``have`` are ids this side holds and the responder lacks, ``need`` ids the responder holds and
        this side lacks, each found in this round and reported once per session.
        """
        reply, have, need = self._process(message, initiator=True)
        return (None if reply.done else reply), have, need

    # -- internals -------------------------------------------------------------------------------------

    def _position(self, bound: Bound, low: int = 0) -> int:
        """Index of the first item at or above ``bound``."""
        return bisect_left(self._items, (bound.expiry, bound.id), low)

    def _fingerprint(self, low: int, high: int) -> bytes:
        total = (self._sums[high] - self._sums[low]) & _SUM_MASK
        data = total.to_bytes(32, "little") + (high - low).to_bytes(8, "little")
        return hashlib.sha256(data).digest()[:FINGERPRINT_SIZE]

    def _bound_between(self, index: int) -> Bound:
        """Shortest bound above item ``index - 1`` and at or below item ``index``."""
        below_expiry, below_id = self._items[index - 1]
        expiry, id_ = self._items[index]
        if below_expiry != expiry:
            return Bound(expiry=expiry, id=b"")
        differing = int.from_bytes(below_id, "big") ^ int.from_bytes(id_, "big")
        shared = ID_SIZE - (differing.bit_length() + 7) // 8
        return Bound(expiry=expiry, id=id_[: shared + 1])

    def _id_list(self, low: int, high: int) -> tuple[bytes, ...]:
        return tuple(id_ for _, id_ in self._items[low:high])

    def _detail(self, upper: Bound, low: int, high: int) -> list[Range]:
        """What to send for a differing range holding items ``low:high``: ids, or BUCKETS fingerprints."""
        count = high - low
        if count <= 2 * BUCKETS:
            return [Range(upper=upper, mode=Mode.IDLIST, ids=self._id_list(low, high))]
        ranges = []
        size, extra = divmod(count, BUCKETS)
        start = low
        for bucket in range(BUCKETS):
            end = start + size + (bucket < extra)
            bound = upper if bucket == BUCKETS - 1 else self._bound_between(end)
            ranges.append(
                Range(upper=bound, mode=Mode.FINGERPRINT, fingerprint=self._fingerprint(start, end))
            )
            start = end
        return ranges

    def _reply_ids(self, out: _Builder, upper: Bound, low: int, high: int) -> bool:
        """Answer an id list with ours for the range; False if the reply had to be cut short."""
        fit = out.ids_that_fit()
        if high - low <= fit:
            return out.add([Range(upper=upper, mode=Mode.IDLIST, ids=self._id_list(low, high))])
        if fit > 0:
            cut = low + fit
            partial = Range(upper=self._bound_between(cut), mode=Mode.IDLIST, ids=self._id_list(low, cut))
            added = out.add([partial])
            assert added, "ids_that_fit counts the worst case"
        return False

    def _record(
        self, low: int, high: int, theirs: tuple[bytes, ...], have: list[bytes], need: list[bytes]
    ) -> None:
        """Initiator: compare our items ``low:high`` with the responder's ids for the same range."""
        their_set = set(theirs)
        for _, id_ in self._items[low:high]:
            if id_ not in their_set and id_ not in self._reported_have:
                self._reported_have.add(id_)
                have.append(id_)
        for id_ in theirs:
            if id_ not in self._ids and id_ not in self._reported_need:
                self._reported_need.add(id_)
                need.append(id_)

    def _process(
        self, message: ReconcileMessage, *, initiator: bool
    ) -> tuple[ReconcileMessage, list[bytes], list[bytes]]:
        out = _Builder(self._frame_limit)
        have: list[bytes] = []
        need: list[bytes] = []
        low = 0
        cut = False
        for range_ in message.ranges:
            high = self._position(range_.upper, low)
            if range_.mode is Mode.FINGERPRINT:
                if self._fingerprint(low, high) == range_.fingerprint:
                    out.skip(range_.upper)
                elif not out.add(self._detail(range_.upper, low, high)):
                    cut = True
            elif range_.mode is Mode.IDLIST:
                if initiator:
                    self._record(low, high, range_.ids, have, need)
                    out.skip(range_.upper)
                elif not self._reply_ids(out, range_.upper, low, high):
                    cut = True
            else:
                out.skip(range_.upper)
            if cut:
                # The frame is full: close it with one fingerprint over everything not yet answered,
                # which the peer splits again next round. The first detail always fits.
                assert out.detailed, "MIN_FRAME_LIMIT leaves room for the first detail"
                remainder = self._fingerprint(self._position(out.end()), len(self._items))
                return out.finish(remainder), have, need
            low = high
        return out.finish(None), have, need


def reconcile_sets(
    initiator: Reconciler, responder: Reconciler, *, max_rounds: int = 64
) -> tuple[set[bytes], set[bytes], int, int]:
    """Run a whole reconciliation in memory, through the wire encoding both ways.

    Returns (ids only the initiator has, ids only the responder has, rounds, encoded bytes sent in
    both directions); a round is one message each way. ``RuntimeError`` if not done in ``max_rounds``.
    """
    have: set[bytes] = set()
    need: set[bytes] = set()
    total = 0
    message = initiator.initiate()
    for rounds in range(1, max_rounds + 1):
        data = encode_message(message)
        reply = encode_message(responder.respond(decode_message(data)))
        total += len(data) + len(reply)
        following, found_have, found_need = initiator.reconcile(decode_message(reply))
        have.update(found_have)
        need.update(found_need)
        if following is None:
            return have, need, rounds, total
        message = following
    raise RuntimeError(f"reconciliation not complete after {max_rounds} rounds")
