"""Range-based set reconciliation of message ids (``meshchat.store.reconcile``).

What is proven here: for any two sets (empty, equal, disjoint, overlapping, crowded on one expiry, ids
sharing long prefixes) reconciliation ends and reports exactly the ids only the initiator has as
``have`` and exactly those only the responder has as ``need``, each once, at every frame limit from
``MIN_FRAME_LIMIT`` up, with no produced message over its frame limit; the bytes exchanged grow with the
difference, not the history; fingerprints are the documented formula; messages survive the wire round
trip, and ``decode_message`` refuses every malformed shape with ``DecodeError`` (``TooLarge`` before
parsing), never another exception; bad items and bad frame limits are caller mistakes (``ValueError``).
"""

from __future__ import annotations

import hashlib
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.errors import DecodeError, TooLarge, UnsupportedVersion
from meshchat.store.reconcile import (
    BUCKETS,
    DEFAULT_FRAME_LIMIT,
    FINGERPRINT_SIZE,
    ID_SIZE,
    INFINITY,
    MAX_EXPIRY,
    MAX_IDS,
    MAX_MESSAGE_SIZE,
    MAX_RANGES,
    MIN_FRAME_LIMIT,
    PROTOCOL_VERSION,
    Bound,
    Item,
    Mode,
    Range,
    ReconcileMessage,
    Reconciler,
    decode_message,
    encode_message,
    reconcile_sets,
)

NOW = 1_800_000_000


def _id(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _items(tag: str, count: int, *, spread: int = 86_400, seed: int = 0) -> list[Item]:
    """``count`` distinct items, expiries drawn from ``spread`` seconds (many shared when it is small)."""
    rng = random.Random(f"{tag}/{seed}")
    return [(NOW + rng.randrange(spread), _id(tag, seed, i)) for i in range(count)]


def _ids(items: list[Item]) -> set[bytes]:
    return {id_ for _, id_ in items}


def _expected_fingerprint(ids: list[bytes]) -> bytes:
    """The documented formula, computed independently of the module's prefix sums."""
    total = sum(int.from_bytes(id_, "little") for id_ in ids) % 2**256
    return hashlib.sha256(total.to_bytes(32, "little") + len(ids).to_bytes(8, "little")).digest()[:16]


def _run(
    initiator: Reconciler, responder: Reconciler, *, max_rounds: int = 10_000
) -> tuple[list[bytes], list[bytes], list[int]]:
    """A reconciliation over the wire that also returns every message's encoded size (both ways)."""
    have: list[bytes] = []
    need: list[bytes] = []
    sizes: list[int] = []
    message: ReconcileMessage | None = initiator.initiate()
    for _ in range(max_rounds):
        assert message is not None
        data = encode_message(message)
        reply = encode_message(responder.respond(decode_message(data)))
        sizes += [len(data), len(reply)]
        message, found_have, found_need = initiator.reconcile(decode_message(reply))
        have += found_have
        need += found_need
        if message is None:
            return have, need, sizes
    raise AssertionError("reconciliation did not end")


# --- correctness ---------------------------------------------------------------------------------------

_expiries = st.one_of(st.integers(0, 3), st.integers(NOW, NOW + 2), st.integers(0, MAX_EXPIRY))
_raw_ids = st.one_of(
    st.binary(min_size=ID_SIZE, max_size=ID_SIZE),
    # ids sharing 31 leading bytes: the shortest separating bound is the whole id
    st.integers(0, 255).map(lambda b: bytes(ID_SIZE - 1) + bytes([b])),
    st.integers(0, 255).map(lambda b: bytes([b]) + bytes(ID_SIZE - 1)),
)
_LABELS = ("both", "a", "b")


@st.composite
def set_pairs(
    draw: st.DrawFn,
    bulk_sizes: tuple[int, ...] = (0, 40, 600, 3_000),
    shares: tuple[tuple[float, float], ...] = (
        (0.0, 0.0),
        (0.002, 0.002),
        (0.05, 0.0),
        (0.0, 0.3),
        (0.5, 0.5),
    ),
) -> tuple[list[Item], list[Item], set[bytes], set[bytes]]:
    """(initiator items, responder items, ids only the initiator has, ids only the responder has)."""
    drawn = draw(st.lists(st.tuples(_expiries, _raw_ids), unique_by=lambda item: item[1], max_size=60))
    labels = draw(st.lists(st.sampled_from(_LABELS), min_size=len(drawn), max_size=len(drawn)))
    # Bulk items, enough for splits two and three levels deep, with chosen shares on each side.
    bulk = draw(st.sampled_from(bulk_sizes))
    seed = draw(st.integers(0, 2**16))
    spread = draw(st.sampled_from([1, 60, MAX_EXPIRY]))
    only_a, only_b = draw(st.sampled_from(shares))
    rng = random.Random(seed)
    labelled = dict(zip(drawn, labels, strict=True))
    for i in range(bulk):
        id_ = _id("bulk", seed, i)
        roll = rng.random()
        label = "a" if roll < only_a else "b" if roll < only_a + only_b else "both"
        labelled[(int.from_bytes(id_[:4], "little") % spread, id_)] = label
    a = [item for item, label in labelled.items() if label != "b"]
    b = [item for item, label in labelled.items() if label != "a"]
    rng.shuffle(a)
    return (
        a,
        b,
        {item[1] for item, label in labelled.items() if label == "a"},
        {item[1] for item, label in labelled.items() if label == "b"},
    )


@settings(max_examples=150, deadline=None)
@given(set_pairs())
def test_reconcile_sets_finds_exactly_the_difference(
    pair: tuple[list[Item], list[Item], set[bytes], set[bytes]],
) -> None:
    a, b, only_a, only_b = pair
    have, need, rounds, total = reconcile_sets(Reconciler(a), Reconciler(b))
    assert have == only_a
    assert need == only_b
    assert rounds >= 1
    assert total > 0


@settings(max_examples=60, deadline=None)
@given(
    set_pairs((600, 3_000), ((0.01, 0.01), (0.0, 0.3), (0.5, 0.5), (1.0, 0.0))),
    st.sampled_from([MIN_FRAME_LIMIT, 1_500, 2_000, 5_000]),
)
def test_small_frame_limits_still_complete_and_are_respected(
    pair: tuple[list[Item], list[Item], set[bytes], set[bytes]], frame_limit: int
) -> None:
    a, b, only_a, only_b = pair
    have, need, sizes = _run(Reconciler(a, frame_limit=frame_limit), Reconciler(b, frame_limit=frame_limit))
    assert sorted(have) == sorted(only_a)  # each id reported once, even when ranges are revisited
    assert sorted(need) == sorted(only_b)
    assert max(sizes) <= frame_limit


@pytest.mark.parametrize(
    ("shared", "only_a", "only_b"),
    [
        (0, 0, 0),
        (0, 1, 0),
        (0, 0, 1),
        (0, 500, 0),
        (0, 0, 500),
        (0, 700, 700),
        (1, 0, 0),
        (32, 0, 0),
        (33, 0, 0),
        (5_000, 0, 0),
        (32, 1, 0),
        (33, 0, 1),
        (2 * BUCKETS, 2 * BUCKETS, 2 * BUCKETS),
        (1_000, 1, 1),
        (10, 0, 2_000),
    ],
)
@pytest.mark.parametrize("spread", [1, 86_400])
def test_edge_shapes(shared: int, only_a: int, only_b: int, spread: int) -> None:
    common = _items("shared", shared, spread=spread)
    a_only = _items("a", only_a, spread=spread)
    b_only = _items("b", only_b, spread=spread)
    have, need, _, _ = reconcile_sets(Reconciler(common + a_only), Reconciler(common + b_only))
    assert have == _ids(a_only)
    assert need == _ids(b_only)


def test_equal_sets_end_in_one_round_with_one_skip() -> None:
    items = _items("x", 3_000)
    initiator, responder = Reconciler(items), Reconciler(list(reversed(items)))
    reply = responder.respond(initiator.initiate())
    assert reply.ranges == (Range(upper=INFINITY, mode=Mode.SKIP),)
    assert reply.done
    assert initiator.reconcile(reply) == (None, [], [])
    assert reconcile_sets(initiator, responder)[2] == 1


def test_ids_are_reported_once_per_session_and_initiate_starts_over() -> None:
    common, extra = _items("c", 2_000), _items("e", 300)
    initiator = Reconciler(common + extra, frame_limit=MIN_FRAME_LIMIT)
    responder = Reconciler(common, frame_limit=MIN_FRAME_LIMIT)
    for _ in range(2):
        have, need, _ = _run(initiator, responder)
        assert len(have) == len(set(have)) == 300
        assert set(have) == _ids(extra)
        assert need == []


def test_reconcile_sets_is_bounded() -> None:
    a, b = _items("a", 3_000), _items("b", 3_000)
    with pytest.raises(RuntimeError, match="not complete after 2 rounds"):
        reconcile_sets(Reconciler(a, frame_limit=2_000), Reconciler(b, frame_limit=2_000), max_rounds=2)


# --- the messages themselves -----------------------------------------------------------------------------


def test_initiate_small_set_sends_its_ids() -> None:
    items = _items("s", 2 * BUCKETS)
    message = Reconciler(items).initiate()
    assert message.ranges == (
        Range(upper=INFINITY, mode=Mode.IDLIST, ids=tuple(i for _, i in sorted(items))),
    )
    empty = Reconciler([]).initiate()
    assert empty.ranges == (Range(upper=INFINITY, mode=Mode.IDLIST),)


@pytest.mark.parametrize("spread", [1, 10, 86_400])
def test_initiate_splits_into_buckets_with_documented_fingerprints(spread: int) -> None:
    items = sorted(_items("big", 1_000 + 7, spread=spread))
    message = Reconciler(items).initiate()
    assert len(message.ranges) == BUCKETS
    assert all(r.mode is Mode.FINGERPRINT and len(r.fingerprint) == FINGERPRINT_SIZE for r in message.ranges)
    assert message.ranges[-1].upper == INFINITY
    start = 0
    for range_ in message.ranges:
        inside = [i for i in items[start:] if (i[0], i[1]) < (range_.upper.expiry, range_.upper.id)]
        assert len(inside) in {1_007 // BUCKETS, 1_007 // BUCKETS + 1}
        assert range_.fingerprint == _expected_fingerprint([id_ for _, id_ in inside])
        start += len(inside)
        if range_.upper != INFINITY:
            # the shortest bound that separates the neighbours: one byte less would not
            below, above = items[start - 1], items[start]
            assert (below[0], below[1]) < (range_.upper.expiry, range_.upper.id) <= above
            shorter = Bound(expiry=range_.upper.expiry, id=range_.upper.id[:-1])
            assert not range_.upper.id or (shorter.expiry, shorter.id) <= (below[0], below[1])
    assert start == len(items)


def test_reconciler_sorts_and_deduplicates() -> None:
    items = _items("d", 50)
    assert len(Reconciler(items + items[:10])) == 50
    assert Reconciler(items).initiate() == Reconciler(list(reversed(items)) + items).initiate()


@pytest.mark.parametrize(
    "item",
    [
        (NOW, bytes(31)),
        (NOW, bytes(33)),
        (NOW, "x" * 32),
        (NOW, bytearray(32)),
        (-1, bytes(32)),
        (MAX_EXPIRY + 1, bytes(32)),
        (True, bytes(32)),
        (float(NOW), bytes(32)),
        [NOW, bytes(32)],
        (NOW, bytes(32), 0),
        None,
    ],
)
def test_bad_items_are_value_errors(item: object) -> None:
    with pytest.raises(ValueError, match="item"):
        Reconciler([(NOW, bytes(32)), item])  # type: ignore[list-item]


def test_one_id_under_two_expiries_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="two expiries"):
        Reconciler([(NOW, bytes(32)), (NOW + 1, bytes(32))])


@pytest.mark.parametrize("frame_limit", [MIN_FRAME_LIMIT - 1, 0, MAX_MESSAGE_SIZE + 1, 2_000.0])
def test_bad_frame_limits_are_value_errors(frame_limit: int) -> None:
    with pytest.raises(ValueError, match="frame_limit"):
        Reconciler([], frame_limit=frame_limit)


def test_constructors_refuse_invalid_values() -> None:
    fingerprint = bytes(FINGERPRINT_SIZE)
    with pytest.raises(ValueError):
        Bound(expiry=MAX_EXPIRY + 1, id=b"\x00")
    with pytest.raises(ValueError):
        Bound(expiry=-1, id=b"")
    with pytest.raises(ValueError):
        Bound(expiry=0, id=bytes(ID_SIZE + 1))
    with pytest.raises(ValueError):
        Range(upper=INFINITY, mode=Mode.FINGERPRINT)
    with pytest.raises(ValueError):
        Range(upper=INFINITY, mode=Mode.SKIP, fingerprint=fingerprint)
    with pytest.raises(ValueError):
        Range(upper=INFINITY, mode=Mode.FINGERPRINT, fingerprint=fingerprint, ids=(bytes(32),))
    with pytest.raises(ValueError):
        Range(upper=INFINITY, mode=Mode.IDLIST, ids=(bytes(31),))
    with pytest.raises(ValueError):
        Range(upper=INFINITY, mode=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ReconcileMessage(ranges=())
    with pytest.raises(ValueError):
        ReconcileMessage(ranges=(Range(upper=Bound(expiry=5, id=b""), mode=Mode.SKIP),))
    skip5 = Range(upper=Bound(expiry=5, id=b""), mode=Mode.SKIP)
    with pytest.raises(ValueError):
        ReconcileMessage(ranges=(skip5, skip5, Range(upper=INFINITY, mode=Mode.SKIP)))


# --- cost and frame limits ---------------------------------------------------------------------------


def _differing(history: int) -> tuple[int, int]:
    """(bytes, rounds) to reconcile 5 + 5 differences over a shared ``history``."""
    common = _items("history", history)
    a_only, b_only = _items("mine", 5), _items("theirs", 5)
    have, need, rounds, total = reconcile_sets(Reconciler(common + a_only), Reconciler(common + b_only))
    assert have == _ids(a_only)
    assert need == _ids(b_only)
    return total, rounds


def test_cost_grows_with_the_difference_not_the_history() -> None:
    large_bytes, large_rounds = _differing(20_000)
    small_bytes, small_rounds = _differing(2_000)
    assert large_bytes < 20_000 * ID_SIZE / 10
    assert large_rounds <= 8
    assert small_rounds <= 8
    assert large_bytes <= 3 * small_bytes
    # and identical histories cost one small round whatever their size
    same = _items("same", 20_000)
    _, _, rounds, total = reconcile_sets(Reconciler(same), Reconciler(same))
    assert rounds == 1
    assert total < 1_000


def test_frame_limit_respected_for_large_differences() -> None:
    a, b = _items("a", 3_000), _items("b", 3_000)
    have, need, sizes = _run(Reconciler(a, frame_limit=2_000), Reconciler(b, frame_limit=2_000))
    assert sorted(have) == sorted(_ids(a))
    assert sorted(need) == sorted(_ids(b))
    assert max(sizes) <= 2_000
    # the frame is used, not wasted: the ids alone are 192,000 bytes
    assert sum(sizes) < 2 * (len(a) + len(b)) * ID_SIZE


def test_default_frame_limit_respected_when_one_side_is_empty() -> None:
    items = _items("mailbox", 12_000)
    have, need, sizes = _run(Reconciler([]), Reconciler(items))
    assert have == []
    assert sorted(need) == sorted(_ids(items))
    assert max(sizes) <= DEFAULT_FRAME_LIMIT
    have, need, sizes = _run(Reconciler(items), Reconciler([]))
    assert sorted(have) == sorted(_ids(items))
    assert need == []
    assert max(sizes) <= DEFAULT_FRAME_LIMIT


# --- encoding ---------------------------------------------------------------------------------------------


@st.composite
def messages(draw: st.DrawFn) -> ReconcileMessage:
    bounds = draw(
        st.lists(st.tuples(st.integers(0, MAX_EXPIRY), st.binary(max_size=ID_SIZE)), max_size=12, unique=True)
    )
    uppers = [Bound(expiry=e, id=i) for e, i in sorted(bounds) if (e, i) != (0, b"")] + [INFINITY]
    ranges = []
    for upper in uppers:
        mode = draw(st.sampled_from(Mode))
        if mode is Mode.FINGERPRINT:
            fingerprint = draw(st.binary(min_size=FINGERPRINT_SIZE, max_size=FINGERPRINT_SIZE))
            ranges.append(Range(upper=upper, mode=mode, fingerprint=fingerprint))
        elif mode is Mode.IDLIST:
            ids = draw(st.lists(st.binary(min_size=ID_SIZE, max_size=ID_SIZE), max_size=4))
            ranges.append(Range(upper=upper, mode=mode, ids=tuple(ids)))
        else:
            ranges.append(Range(upper=upper, mode=mode))
    return ReconcileMessage(ranges=tuple(ranges))


@settings(max_examples=300, deadline=None)
@given(messages())
def test_round_trip(message: ReconcileMessage) -> None:
    data = encode_message(message)
    assert decode_message(data) == message
    assert len(data) <= MAX_MESSAGE_SIZE


def _raw(*ranges: tuple[object, ...], version: object = PROTOCOL_VERSION) -> bytes:
    fields: list[object] = [version]
    for range_ in ranges:
        fields += list(range_)
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


_FP = bytes(FINGERPRINT_SIZE)
_END = (2**32, b"", 0, b"")  # a SKIP up to INFINITY from expiry 0
_VALID = _raw((5, b"\x01", 1, _FP), (0, b"\x02", 2, bytes(64)), (2**32 - 5, b"", 0, b""))


def test_valid_reference_message_decodes() -> None:
    message = decode_message(_VALID)
    assert [r.mode for r in message.ranges] == [Mode.FINGERPRINT, Mode.IDLIST, Mode.SKIP]
    assert message.ranges[1].upper == Bound(expiry=5, id=b"\x02")
    assert message.ranges[1].ids == (bytes(32), bytes(32))
    assert encode_message(message) == _VALID


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "msgpack"),
        (b"\xc1", "msgpack"),
        (_VALID[:-1], "msgpack"),
        (_VALID + b"\x00", "trailing"),
        (b"\x91" * 5_000 + b"\x00", "msgpack"),  # nested past msgpack's stack
        (msgpack.packb({1: 2}), "msgpack"),
        (msgpack.packb({}), "array"),
        (msgpack.packb(5), "array"),
        (msgpack.packb([]), "array"),
        (msgpack.packb(["x"]), "msgpack"),
        (msgpack.packb(msgpack.ExtType(1, b"x")), "msgpack"),
        (_raw(_END, version=True), "version"),
        (_raw(_END, version=1.0), "version"),
        (_raw(), "fields"),
        (msgpack.packb([1, 2**32, b"", 0]), "fields"),
        (_raw((2**32, b"", 0, b""), (0, b"", 0)), "fields"),
        (_raw((float(2**32), b"", 0, b"")), "delta"),
        (_raw((-1, b"", 0, b""), _END), "delta"),
        (_raw((True, b"", 0, b""), _END), "delta"),
        (_raw((2**32, None, 0, b"")), "binary"),
        (_raw((2**32, b"", 0, None)), "binary"),
        (_raw((2**32, b"", 3, b"")), "mode"),
        (_raw((2**32, b"", -1, b"")), "mode"),
        (_raw((2**32, b"", True, b"")), "mode"),
        (_raw((2**32, b"", 0.0, b"")), "mode"),
        (_raw((5, b"", 1, _FP), (0, b"", 1, _FP), (2**32 - 5, b"", 0, b"")), "increase"),
        (_raw((5, b"\x02", 1, _FP), (0, b"\x01", 1, _FP), (2**32 - 5, b"", 0, b"")), "increase"),
        (_raw((0, b"", 0, b""), _END), "increase"),
        (_raw((5, bytes(33), 0, b""), (2**32 - 5, b"", 0, b"")), "at most 32"),
        (_raw((2**32, b"", 2, bytes(31))), "whole number"),
        (_raw((2**32, b"", 2, bytes(33))), "whole number"),
        (_raw((2**32, b"", 1, bytes(15))), "fingerprint"),
        (_raw((2**32, b"", 1, bytes(17))), "fingerprint"),
        (_raw((2**32, b"", 0, b"x")), "fingerprint"),
        (_raw((5, b"", 0, b"")), "INFINITY"),
        (_raw((2**32, b"\x00", 0, b"")), "INFINITY"),
        (_raw((2**32 + 1, b"", 0, b"")), "expiry"),
        (_raw((2**64 - 1, b"", 0, b"")), "expiry"),
        (
            _raw(
                (1, b"", 2, bytes(32 * (MAX_IDS // 2 + 1))), (2**32 - 1, b"", 2, bytes(32 * (MAX_IDS // 2)))
            ),
            "ids",
        ),
        # One id list over MAX_IDS: refused by the id count (the shared bounded unpack limits bins by frame).
        (_raw((2**32, b"", 2, bytes(32 * (MAX_IDS + 1)))), "ids"),
        (_raw(*[(1, b"", 0, b"")] * MAX_RANGES, (2**32 - MAX_RANGES, b"", 0, b"")), "msgpack"),
    ],
)
def test_decode_refuses(data: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem) as caught:
        decode_message(data)
    assert not isinstance(caught.value, TooLarge)


def test_decode_limits_are_inclusive() -> None:
    ranges = decode_message(
        _raw(*[(1, b"", 0, b"")] * (MAX_RANGES - 1), (2**32 - MAX_RANGES + 1, b"", 0, b""))
    )
    assert len(ranges.ranges) == MAX_RANGES
    ids = decode_message(_raw((2**32, b"", 2, bytes(32 * MAX_IDS))))
    assert len(ids.ranges[0].ids) == MAX_IDS


def test_decode_unknown_version() -> None:
    with pytest.raises(UnsupportedVersion):
        decode_message(_raw(_END, version=PROTOCOL_VERSION + 1))


def test_decode_oversized_before_parsing() -> None:
    with pytest.raises(TooLarge) as caught:
        decode_message(b"\xc1" * (MAX_MESSAGE_SIZE + 1))
    assert (caught.value.size, caught.value.limit) == (MAX_MESSAGE_SIZE + 1, MAX_MESSAGE_SIZE)
    with pytest.raises(DecodeError) as parsed:
        decode_message(b"\xc1" * MAX_MESSAGE_SIZE)
    assert not isinstance(parsed.value, TooLarge)


def _decodes_or_refuses(data: bytes) -> None:
    """Either a message that survives its own round trip, or DecodeError; nothing else."""
    try:
        message = decode_message(data)
    except DecodeError:
        return
    assert decode_message(encode_message(message)) == message


@settings(max_examples=1_000, deadline=None)
@given(st.binary(max_size=300))
def test_decode_random_bytes(data: bytes) -> None:
    _decodes_or_refuses(data)


@settings(max_examples=500, deadline=None)
@given(messages(), st.data())
def test_decode_mutated_messages(message: ReconcileMessage, data: st.DataObject) -> None:
    encoded = bytearray(encode_message(message))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(encoded)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and position < len(encoded):
            encoded[position] = data.draw(st.integers(0, 255))
        elif action == "insert":
            encoded[position:position] = bytes([data.draw(st.integers(0, 255))])
        elif action == "delete":
            del encoded[position : position + 1]
        else:
            del encoded[position:]
    _decodes_or_refuses(bytes(encoded))


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, 2, 3, 2**32, 2**32 - 1]),
    st.binary(max_size=40),
    st.sampled_from([b"", _FP, bytes(32), bytes(64)]),
    st.floats(allow_nan=False),
    st.text(max_size=3),
)
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(_values, max_size=13), st.sampled_from([PROTOCOL_VERSION, 0, None]))
def test_decode_arbitrary_msgpack(fields: list[object], version: object) -> None:
    _decodes_or_refuses(msgpack.packb([version, *fields] if version is not None else fields))


def test_responder_answers_decoded_hostile_shapes() -> None:
    """Messages no honest initiator sends (ids out of place, empty lists) still get bounded replies."""
    items = _items("r", 5_000)
    responder = Reconciler(items, frame_limit=MIN_FRAME_LIMIT)
    everything = ReconcileMessage(ranges=(Range(upper=INFINITY, mode=Mode.IDLIST, ids=(bytes(32),) * 3),))
    reply = responder.respond(everything)
    assert len(encode_message(reply)) <= MIN_FRAME_LIMIT
    assert reply.ranges[-1].mode is Mode.FINGERPRINT
    many = ReconcileMessage(
        ranges=(
            *(
                Range(upper=Bound(expiry=NOW + i, id=b""), mode=Mode.FINGERPRINT, fingerprint=_FP)
                for i in range(1, 500)
            ),
            Range(upper=INFINITY, mode=Mode.FINGERPRINT, fingerprint=_FP),
        )
    )
    assert len(encode_message(responder.respond(many))) <= MIN_FRAME_LIMIT


def test_constructors_refuse_wrong_types_and_counts() -> None:
    with pytest.raises(ValueError, match="Bound"):
        Range(upper=(5, b""), mode=Mode.SKIP)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bytes"):
        Range(upper=INFINITY, mode=Mode.FINGERPRINT, fingerprint=bytearray(_FP))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tuple"):
        Range(upper=INFINITY, mode=Mode.IDLIST, ids=[bytes(32)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Range"):
        ReconcileMessage(ranges=(INFINITY,))  # type: ignore[arg-type]
    skips = tuple(Range(upper=Bound(expiry=i, id=b""), mode=Mode.SKIP) for i in range(1, MAX_RANGES + 1))
    with pytest.raises(ValueError, match="ranges"):
        ReconcileMessage(ranges=(*skips, Range(upper=INFINITY, mode=Mode.SKIP)))
    with pytest.raises(ValueError, match="ids"):
        ReconcileMessage(ranges=(Range(upper=INFINITY, mode=Mode.IDLIST, ids=(bytes(32),) * (MAX_IDS + 1)),))


def _many(mode: Mode, count: int) -> ReconcileMessage:
    """``count`` narrow ranges of ``mode`` (wrong fingerprints, no ids) below NOW, then one to INFINITY."""
    fingerprint = _FP if mode is Mode.FINGERPRINT else b""
    uppers = [Bound(expiry=i, id=b"") for i in range(1, count)] + [INFINITY]
    return ReconcileMessage(ranges=tuple(Range(upper=u, mode=mode, fingerprint=fingerprint) for u in uppers))


@pytest.mark.parametrize("mode", [Mode.FINGERPRINT, Mode.IDLIST])
def test_replies_stay_within_max_ranges(mode: Mode) -> None:
    """Each narrow range needs an answer of a few bytes: the range count, not the bytes, fills the frame."""
    responder = Reconciler(_items("r", 100), frame_limit=MAX_MESSAGE_SIZE)
    assert responder.frame_limit == MAX_MESSAGE_SIZE
    reply = responder.respond(_many(mode, MAX_RANGES))
    assert MAX_RANGES - 2 <= len(reply.ranges) <= MAX_RANGES  # two kept free for a SKIP and the closing range
    assert reply.ranges[-1] == Range(
        upper=INFINITY, mode=Mode.FINGERPRINT, fingerprint=reply.ranges[-1].fingerprint
    )
    assert decode_message(encode_message(reply)) == reply


def test_replies_stay_within_max_ids() -> None:
    """Ranges of 2 * BUCKETS items each, all differing: the id count, not the bytes, fills the frame."""
    items = sorted(_items("r", 200 * 2 * BUCKETS))
    starts = items[2 * BUCKETS :: 2 * BUCKETS]
    uppers = [Bound(expiry=e, id=i) for e, i in starts] + [INFINITY]
    message = ReconcileMessage(
        ranges=tuple(Range(upper=u, mode=Mode.FINGERPRINT, fingerprint=_FP) for u in uppers)
    )
    reply = Reconciler(items, frame_limit=MAX_MESSAGE_SIZE).respond(message)
    assert sum(len(r.ids) for r in reply.ranges) == MAX_IDS
    assert reply.ranges[-1].mode is Mode.FINGERPRINT
    assert len(encode_message(reply)) <= MAX_MESSAGE_SIZE
