"""The mailbox protocol's messages, ``/meshchat/mailbox/1.0.0``: requests, responses, their bytes.

One request, one response, each a msgpack map with small integer keys (key 0 is the operation)::

    store   {0: 1, 1: [envelope, ...]}                ->  {0: 1, 6: [[id, code, detail], ...]}
    sync    {0: 2, 2: [tag, ...], 3: reconcile msg}   ->  {0: 2, 3: reconcile msg, 5: generation, 7: held}
    fetch   {0: 3, 4: [id, ...]}                      ->  {0: 3, 1: [envelope, ...]}
    delete  {0: 4, 2: [tag, ...], 5: generation}      ->  {0: 4, 7: count}
    withdraw {0: 6, 4: [id, ...]}                     ->  {0: 4, 7: count}
    prekeys put {0: 7, 10: bundle}                    ->  {0: 7, 7: one-time keys held, 12: taken through}
    prekey take {0: 8, 11: owner Ed25519 key}         ->  {0: 8, 10: bundle with at most one one-time key}
    (any)                                             ->  {0: 5, 8: error code, 9: detail}

Sync runs range-based set reconciliation (``meshchat.store.reconcile``) over ``(expiry, id)`` of the
envelopes for the requester's own inbox tags; the mailbox checks that the tags belong to the PeerId
the secure channel authenticated, so nobody lists, fetches or deletes someone else's envelopes.
``generation`` is the mailbox's arrival counter when the sync began: ``delete`` removes what had
arrived by then, so an envelope stored during a sync is never deleted unseen. ``withdraw`` is the
sender's side of the same clean-up: once the recipient's receipt came back, the sender takes back
the copies it stored (only its own: the mailbox checks who stored each one).

``prekeys put`` and ``prekey take`` hand out one-time prekeys, as Signal's server does: the owner
uploads its encoded ``PrekeyBundle`` (``meshchat.sessions.prekeys``) with up to 100 one-time keys (the
mailbox checks that its signatures verify and that it is the key of the PeerId the secure channel
authenticated, and replaces what it held for that owner); anyone names an owner's key and gets the
owner's bundle with at most one one-time key, which the mailbox deletes before answering, so it is
handed out once. It hands them out lowest id first and answers a put with ``taken through``, the
highest id it ever handed out for that owner: ids up to it are never accepted from a later put again
(they may be in a sender's set-up already), and the owner learns which of the keys it uploaded are
still unused (``meshchat.store.prekey_upload``).

Drivers frame each message with an unsigned-varint length prefix (libp2p's convention). Decoding
checks the size before parsing, then every field's type and size; anything else is ``DecodeError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

import msgpack

from meshchat.errors import DecodeError, TooLarge
from meshchat.sessions.prekeys import MAX_BUNDLE_SIZE, PrekeyBundle
from meshchat.wire import INBOX_TAG_SIZE, MAX_ENVELOPE_SIZE
from meshchat.wire.codec import unpack_bounded

__all__ = [
    "MAILBOX_PROTOCOL",
    "MAX_FETCH_IDS",
    "MAX_FRAME",
    "MAX_STORE_BATCH",
    "MAX_SYNC_TAGS",
    "DeleteRequest",
    "Deleted",
    "ErrorCode",
    "FetchRequest",
    "Fetched",
    "MailboxError",
    "MailboxRequest",
    "MailboxResponse",
    "PrekeyGiven",
    "PrekeyTake",
    "PrekeysHeld",
    "PrekeysPut",
    "StoreCode",
    "StoreRequest",
    "StoreResult",
    "Stored",
    "SyncRequest",
    "Synced",
    "WithdrawRequest",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]

#: The libp2p protocol id.
MAILBOX_PROTOCOL = "/meshchat/mailbox/1.0.0"
#: Largest frame either side sends or accepts: 16 full envelopes, or hundreds of chat-sized ones.
MAX_FRAME = 1024 * 1024 + 4096
#: Envelopes per store request or fetch response (small ones; the frame limit caps big ones).
MAX_STORE_BATCH = 512
#: Ids per fetch request: one response of chat-sized envelopes fits a frame.
MAX_FETCH_IDS = 512
#: Tags per sync or delete: a month of daily tags (the longest TTL) plus a few for clock skew.
MAX_SYNC_TAGS = 40
#: Longest detail text in an error or a store result.
MAX_DETAIL = 200
_ID_SIZE = 32
_OP_STORE, _OP_SYNC, _OP_FETCH, _OP_DELETE, _OP_ERROR, _OP_WITHDRAW = 1, 2, 3, 4, 5, 6
_OP_PREKEYS_PUT, _OP_PREKEY_TAKE = 7, 8
_K_OP, _K_ENVELOPES, _K_TAGS, _K_RECONCILE, _K_IDS, _K_GENERATION, _K_RESULTS = 0, 1, 2, 3, 4, 5, 6
_K_COUNT, _K_CODE, _K_DETAIL, _K_BUNDLE, _K_OWNER, _K_TAKEN = 7, 8, 9, 10, 11, 12
_KEY_SIZE = 32
_MAX_U32 = 2**32 - 1


class StoreCode(IntEnum):
    """A mailbox's answer for one envelope in a store request."""

    #: Stored (or already held): it will be there until it expires or its recipient takes it.
    STORED = 0
    #: Larger than the mailbox accepts (permanent).
    TOO_LARGE = 1
    #: The recipient's inbox tag is over its quota here (may clear later).
    TAG_QUOTA = 2
    #: The sending peer is over its quota here (may clear later).
    PEER_QUOTA = 3
    #: The mailbox's disk budget is used up (may clear later).
    MAILBOX_FULL = 4
    #: Already expired, or expiring further ahead than the longest TTL (permanent).
    BAD_EXPIRY = 5
    #: Not an envelope (permanent).
    MALFORMED = 6
    #: The mailbox could not write it (its disk failed; may clear later).
    STORAGE_FAILED = 7


#: Store codes that will never turn into STORED on a retry.
PERMANENT_STORE_CODES = frozenset({StoreCode.TOO_LARGE, StoreCode.BAD_EXPIRY, StoreCode.MALFORMED})


class ErrorCode(IntEnum):
    """Why a mailbox refused a whole request."""

    #: The request did not decode.
    BAD_REQUEST = 1
    #: A tag in the request does not belong to the requesting peer.
    NOT_YOUR_TAG = 2
    #: The mailbox's storage failed.
    STORAGE_FAILED = 3
    #: A prekey bundle put whose signatures do not verify.
    BAD_BUNDLE = 4
    #: A prekey bundle put of another identity than the requesting peer's.
    NOT_YOUR_BUNDLE = 5
    #: A prekey take for an owner whose bundle the mailbox does not hold.
    NO_BUNDLE = 6
    #: The requesting peer took more prekeys than the mailbox hands out per minute (may clear later).
    TOO_MANY_TAKES = 7
    #: The mailbox holds as many owners' bundles as it keeps (may clear later).
    BUNDLES_FULL = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreRequest:
    """Please keep these envelopes for their recipients."""

    #: Envelope bytes.
    envelopes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncRequest:
    """One round of set reconciliation over the envelopes for ``tags``."""

    #: The requester's inbox tags.
    tags: tuple[bytes, ...]
    #: An encoded ``ReconcileMessage``.
    reconcile: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchRequest:
    """Send me these envelopes (mine, by tag)."""

    #: Message ids.
    message_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteRequest:
    """I have everything for ``tags`` that arrived up to ``generation``: drop it."""

    #: The requester's inbox tags.
    tags: tuple[bytes, ...]
    #: The mailbox's arrival counter from the sync's first response.
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawRequest:
    """Their recipient has them: drop these envelopes that I stored."""

    #: Message ids.
    message_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrekeysPut:
    """Hand out my prekeys: keep this bundle (mine: the mailbox checks) in place of what you held."""

    #: The owner's bundle, with up to ``MAX_BUNDLE_ONE_TIME`` one-time keys.
    bundle: PrekeyBundle


@dataclass(frozen=True, slots=True, kw_only=True)
class PrekeyTake:
    """Give me ``owner``'s bundle with one one-time key (which nobody else will get)."""

    #: The owner's Ed25519 public key.
    owner: bytes

    def __post_init__(self) -> None:
        if len(self.owner) != _KEY_SIZE:
            raise ValueError(f"an owner key is {_KEY_SIZE} bytes, not {len(self.owner)}")


MailboxRequest: TypeAlias = (
    StoreRequest | SyncRequest | FetchRequest | DeleteRequest | WithdrawRequest | PrekeysPut | PrekeyTake
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreResult:
    """The answer for one envelope."""

    #: Its id.
    message_id: bytes
    #: Stored, or why not.
    code: StoreCode
    #: Human-readable detail ("" when stored).
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """Answers to a store request, one per envelope that decoded far enough to have an id."""

    #: One per envelope.
    results: tuple[StoreResult, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Synced:
    """The mailbox's reconciliation reply."""

    #: An encoded ``ReconcileMessage``.
    reconcile: bytes
    #: The mailbox's arrival counter now.
    generation: int
    #: How many envelopes it holds for the tags (0: nothing to fetch or delete).
    held: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetched:
    """The envelopes asked for that the mailbox holds."""

    #: Envelope bytes.
    envelopes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Deleted:
    """How many envelopes the delete removed."""

    #: Count.
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxError:
    """The mailbox refused the request."""

    #: Why.
    code: ErrorCode
    #: Human-readable detail.
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PrekeysHeld:
    """The answer to a put: what the mailbox now hands out for the owner."""

    #: One-time keys held (those of the put above ``taken_through``).
    one_time: int
    #: The highest one-time key id handed out for this owner so far (0: none).
    taken_through: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PrekeyGiven:
    """The answer to a take: the owner's bundle with at most one one-time key (none left: none)."""

    #: The bundle (signatures not checked by the decoder: the taker verifies).
    bundle: PrekeyBundle

    def __post_init__(self) -> None:
        if len(self.bundle.one_time) > 1:
            raise ValueError("a prekey given carries at most one one-time key")


MailboxResponse: TypeAlias = Stored | Synced | Fetched | Deleted | MailboxError | PrekeysHeld | PrekeyGiven


def _pack(fields: dict[int, object]) -> bytes:
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    if len(data) > MAX_FRAME:
        raise TooLarge(what="mailbox message", size=len(data), limit=MAX_FRAME)
    return data


def encode_request(request: MailboxRequest) -> bytes:
    """The bytes of ``request`` (``TooLarge`` if over ``MAX_FRAME``)."""
    match request:
        case StoreRequest(envelopes=envelopes):
            return _pack({_K_OP: _OP_STORE, _K_ENVELOPES: list(envelopes)})
        case SyncRequest(tags=tags, reconcile=reconcile):
            return _pack({_K_OP: _OP_SYNC, _K_TAGS: list(tags), _K_RECONCILE: reconcile})
        case FetchRequest(message_ids=ids):
            return _pack({_K_OP: _OP_FETCH, _K_IDS: list(ids)})
        case DeleteRequest(tags=tags, generation=generation):
            return _pack({_K_OP: _OP_DELETE, _K_TAGS: list(tags), _K_GENERATION: generation})
        case WithdrawRequest(message_ids=ids):
            return _pack({_K_OP: _OP_WITHDRAW, _K_IDS: list(ids)})
        case PrekeysPut(bundle=bundle):
            return _pack({_K_OP: _OP_PREKEYS_PUT, _K_BUNDLE: bundle.encode()})
        case PrekeyTake(owner=owner):
            return _pack({_K_OP: _OP_PREKEY_TAKE, _K_OWNER: owner})


def encode_response(response: MailboxResponse) -> bytes:
    """The bytes of ``response`` (``TooLarge`` if over ``MAX_FRAME``)."""
    match response:
        case Stored(results=results):
            rows = [[r.message_id, int(r.code), r.detail[:MAX_DETAIL]] for r in results]
            return _pack({_K_OP: _OP_STORE, _K_RESULTS: rows})
        case Synced(reconcile=reconcile, generation=generation, held=held):
            return _pack(
                {_K_OP: _OP_SYNC, _K_RECONCILE: reconcile, _K_GENERATION: generation, _K_COUNT: held}
            )
        case Fetched(envelopes=envelopes):
            return _pack({_K_OP: _OP_FETCH, _K_ENVELOPES: list(envelopes)})
        case Deleted(count=count):
            return _pack({_K_OP: _OP_DELETE, _K_COUNT: count})
        case MailboxError(code=code, detail=detail):
            return _pack({_K_OP: _OP_ERROR, _K_CODE: int(code), _K_DETAIL: detail[:MAX_DETAIL]})
        case PrekeysHeld(one_time=one_time, taken_through=taken):
            return _pack({_K_OP: _OP_PREKEYS_PUT, _K_COUNT: one_time, _K_TAKEN: taken})
        case PrekeyGiven(bundle=bundle):
            return _pack({_K_OP: _OP_PREKEY_TAKE, _K_BUNDLE: bundle.encode()})


def _unpack(data: bytes, what: str) -> dict[object, object]:
    value = unpack_bounded(
        data,
        what=what,
        limit=MAX_FRAME,
        max_str=MAX_DETAIL * 4,
        max_items=max(MAX_STORE_BATCH, MAX_FETCH_IDS),
        max_map=16,
    )
    if not isinstance(value, dict) or type(value.get(_K_OP)) is not int:
        raise DecodeError(what, "not a map with an operation")
    return value


def _fields(value: dict[object, object], keys: set[int], what: str) -> None:
    if value.keys() != keys | {_K_OP}:
        raise DecodeError(what, f"operation {value[_K_OP]} needs exactly the keys {sorted(keys | {_K_OP})}")


def _blobs(value: object, what: str, field: str, *, size: int | None = None, limit: int) -> tuple[bytes, ...]:
    if not isinstance(value, tuple) or len(value) > limit:
        raise DecodeError(what, f"{field} must be a list of at most {limit}")
    for item in value:
        if type(item) is not bytes or (size is not None and len(item) != size):
            raise DecodeError(what, f"{field} must hold bytes" + (f" of {size}" if size else ""))
        if size is None and len(item) > MAX_ENVELOPE_SIZE:
            raise TooLarge(what=f"{what} {field}", size=len(item), limit=MAX_ENVELOPE_SIZE)
    return value


def _uint(value: object, what: str, field: str) -> int:
    if type(value) is not int or value < 0:
        raise DecodeError(what, f"{field} must be a non-negative integer")
    return value


def _tags(value: object, what: str) -> tuple[bytes, ...]:
    tags = _blobs(value, what, "tags", size=INBOX_TAG_SIZE, limit=MAX_SYNC_TAGS)
    if not tags:
        raise DecodeError(what, "no tags")
    return tags


def _bundle(value: object, what: str) -> PrekeyBundle:
    """A bundle's bytes decoded (signatures not checked); ``DecodeError`` (``BadBundle``) if it is not one."""
    if type(value) is not bytes or len(value) > MAX_BUNDLE_SIZE:
        raise DecodeError(what, f"a bundle must be bytes of at most {MAX_BUNDLE_SIZE:,}")
    return PrekeyBundle.decode(value)


def _reconcile_bytes(value: object, what: str) -> bytes:
    if type(value) is not bytes:
        raise DecodeError(what, "reconcile message must be bytes")
    return value


def decode_request(data: bytes) -> MailboxRequest:
    """Parse a request; ``TooLarge`` or ``DecodeError`` for anything malformed."""
    what = "mailbox request"
    value = _unpack(data, what)
    op = value[_K_OP]
    if op == _OP_STORE:
        _fields(value, {_K_ENVELOPES}, what)
        return StoreRequest(envelopes=_blobs(value[_K_ENVELOPES], what, "envelopes", limit=MAX_STORE_BATCH))
    if op == _OP_SYNC:
        _fields(value, {_K_TAGS, _K_RECONCILE}, what)
        return SyncRequest(
            tags=_tags(value[_K_TAGS], what), reconcile=_reconcile_bytes(value[_K_RECONCILE], what)
        )
    if op == _OP_FETCH:
        _fields(value, {_K_IDS}, what)
        return FetchRequest(
            message_ids=_blobs(value[_K_IDS], what, "ids", size=_ID_SIZE, limit=MAX_FETCH_IDS)
        )
    if op == _OP_DELETE:
        _fields(value, {_K_TAGS, _K_GENERATION}, what)
        return DeleteRequest(
            tags=_tags(value[_K_TAGS], what), generation=_uint(value[_K_GENERATION], what, "generation")
        )
    if op == _OP_WITHDRAW:
        _fields(value, {_K_IDS}, what)
        return WithdrawRequest(
            message_ids=_blobs(value[_K_IDS], what, "ids", size=_ID_SIZE, limit=MAX_FETCH_IDS)
        )
    if op == _OP_PREKEYS_PUT:
        _fields(value, {_K_BUNDLE}, what)
        return PrekeysPut(bundle=_bundle(value[_K_BUNDLE], what))
    if op == _OP_PREKEY_TAKE:
        _fields(value, {_K_OWNER}, what)
        owner = value[_K_OWNER]
        if type(owner) is not bytes or len(owner) != _KEY_SIZE:
            raise DecodeError(what, f"the owner must be a {_KEY_SIZE}-byte key")
        return PrekeyTake(owner=owner)
    raise DecodeError(what, f"unknown operation {op}")


def decode_response(data: bytes) -> MailboxResponse:
    """Parse a response; ``TooLarge`` or ``DecodeError`` for anything malformed."""
    what = "mailbox response"
    value = _unpack(data, what)
    op = value[_K_OP]
    if op == _OP_STORE:
        _fields(value, {_K_RESULTS}, what)
        return Stored(results=_store_results(value[_K_RESULTS], what))
    if op == _OP_SYNC:
        _fields(value, {_K_RECONCILE, _K_GENERATION, _K_COUNT}, what)
        return Synced(
            reconcile=_reconcile_bytes(value[_K_RECONCILE], what),
            generation=_uint(value[_K_GENERATION], what, "generation"),
            held=_uint(value[_K_COUNT], what, "held"),
        )
    if op == _OP_FETCH:
        _fields(value, {_K_ENVELOPES}, what)
        return Fetched(envelopes=_blobs(value[_K_ENVELOPES], what, "envelopes", limit=MAX_STORE_BATCH))
    if op == _OP_DELETE:
        _fields(value, {_K_COUNT}, what)
        return Deleted(count=_uint(value[_K_COUNT], what, "count"))
    if op == _OP_ERROR:
        _fields(value, {_K_CODE, _K_DETAIL}, what)
        code, detail = value[_K_CODE], value[_K_DETAIL]
        if type(code) is not int or code not in ErrorCode._value2member_map_ or type(detail) is not str:
            raise DecodeError(what, "bad error code or detail")
        return MailboxError(code=ErrorCode(code), detail=detail)
    if op == _OP_PREKEYS_PUT:
        _fields(value, {_K_COUNT, _K_TAKEN}, what)
        taken = _uint(value[_K_TAKEN], what, "taken through")
        if taken > _MAX_U32:
            raise DecodeError(what, "taken through is not a u32 prekey id")
        return PrekeysHeld(one_time=_uint(value[_K_COUNT], what, "one-time count"), taken_through=taken)
    if op == _OP_PREKEY_TAKE:
        _fields(value, {_K_BUNDLE}, what)
        bundle = _bundle(value[_K_BUNDLE], what)
        if len(bundle.one_time) > 1:
            raise DecodeError(what, "a prekey given carries at most one one-time key")
        return PrekeyGiven(bundle=bundle)
    raise DecodeError(what, f"unknown operation {op}")


def _store_results(value: object, what: str) -> tuple[StoreResult, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_STORE_BATCH:
        raise DecodeError(what, f"results must be a list of at most {MAX_STORE_BATCH}")
    results = []
    for row in value:
        if not (isinstance(row, tuple) and len(row) == 3):
            raise DecodeError(what, "a result is [id, code, detail]")
        message_id, code, detail = row
        if type(message_id) is not bytes or len(message_id) != _ID_SIZE:
            raise DecodeError(what, "result id must be 32 bytes")
        if type(code) is not int or code not in StoreCode._value2member_map_ or type(detail) is not str:
            raise DecodeError(what, "bad result code or detail")
        results.append(StoreResult(message_id=message_id, code=StoreCode(code), detail=detail))
    return tuple(results)


def batches(envelopes: Sequence[bytes], *, limit: int = MAX_FRAME - 4096) -> list[tuple[bytes, ...]]:
    """Split ``envelopes`` into store requests that each fit a frame and ``MAX_STORE_BATCH``."""
    out: list[tuple[bytes, ...]] = []
    batch: list[bytes] = []
    size = 0
    for envelope in envelopes:
        cost = len(envelope) + 5
        if batch and (size + cost > limit or len(batch) == MAX_STORE_BATCH):
            out.append(tuple(batch))
            batch, size = [], 0
        batch.append(envelope)
        size += cost
    if batch:
        out.append(tuple(batch))
    return out
