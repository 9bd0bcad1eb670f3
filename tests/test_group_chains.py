"""Sender chains: the key schedule by hand, forward secrecy, out-of-order delivery, replays, jump and
store bounds, the two-step key_for/commit, and storage/handout encodings (round trips, corrupt input).

The KDF is recomputed here with hashlib from GROUPS.md section 3, so a change of the construction
fails these tests and not only a round trip.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshchat.groups.chains as chains_module
from meshchat.errors import ChainJumpTooFar, DecodeError, InvalidTransition, Replay
from meshchat.groups.chains import (
    MAX_ITERATION,
    MAX_SKIP,
    MAX_SKIPPED_KEYS,
    ChainHandout,
    ReceiverChain,
    SenderChain,
    decode_handout,
    encode_handout,
)
from meshchat.identity import Identity, KeyCache, RandomBytes

NOW = 1_800_000_000.5
SENDER = Identity(bytes([0x5E]) * 32).public.ed25519
RANDOMNESS = bytes(range(80))  # chain id (16), chain key (32), signing seed (32)


def fixed_random(data: bytes = RANDOMNESS) -> RandomBytes:
    def random_bytes(n: int) -> bytes:
        assert n == len(data)
        return data

    return random_bytes


def spec_message_key(chain_key: bytes) -> bytes:
    return hashlib.blake2b(b"\x01", key=chain_key, digest_size=32, person=b"meshchat-gmk1").digest()


def spec_next_chain_key(chain_key: bytes) -> bytes:
    return hashlib.blake2b(b"\x02", key=chain_key, digest_size=32, person=b"meshchat-gck1").digest()


def spec_keys(chain_key: bytes, count: int) -> list[bytes]:
    keys = []
    for _ in range(count):
        keys.append(spec_message_key(chain_key))
        chain_key = spec_next_chain_key(chain_key)
    return keys


def new_pair() -> tuple[SenderChain, ReceiverChain]:
    sender = SenderChain.new(fixed_random(), wall_now=NOW)
    return sender, ReceiverChain.from_handout(sender.handout(), SENDER)


def receive(chain: ReceiverChain, iteration: int) -> bytes:
    key, advance = chain.key_for(iteration)
    chain.commit(advance)
    return key


# --- the key schedule ------------------------------------------------------------------------------


def test_new_chain_takes_its_fields_from_the_randomness() -> None:
    chain = SenderChain.new(fixed_random(), wall_now=NOW)
    assert chain.chain_id == RANDOMNESS[:16]
    assert chain.chain_key == RANDOMNESS[16:48]
    assert chain.signing_seed == RANDOMNESS[48:]
    assert (chain.iteration, chain.created_at) == (0, int(NOW))
    assert chain.signing_key == Identity(RANDOMNESS[48:]).public.ed25519


def test_message_keys_follow_the_documented_kdf_on_both_sides() -> None:
    sender, receiver = new_pair()
    expected = spec_keys(RANDOMNESS[16:48], 5)
    sent = [sender.next_message_key() for _ in range(5)]
    assert sent == list(enumerate(expected))
    assert [receive(receiver, i) for i in range(5)] == expected
    # Deterministic: the same randomness makes the same chain.
    again = SenderChain.new(fixed_random(), wall_now=NOW)
    assert [again.next_message_key()[1] for _ in range(5)] == expected
    assert len(set(expected)) == 5


def test_sender_forgets_each_chain_key_as_it_moves_on() -> None:
    sender, _ = new_pair()
    first_chain_key = sender.chain_key
    stored_before = sender.to_bytes()
    _, key0 = sender.next_message_key()
    assert sender.chain_key == spec_next_chain_key(first_chain_key)
    stored = sender.to_bytes()
    assert stored != stored_before
    assert first_chain_key not in stored and key0 not in stored
    assert first_chain_key in stored_before


def test_receiver_forgets_used_keys_and_old_chain_keys() -> None:
    sender, receiver = new_pair()
    old_chain_key = receiver.chain_key
    keys = [sender.next_message_key()[1] for _ in range(4)]
    receive(receiver, 3)  # skips 0, 1, 2
    receive(receiver, 1)
    stored = receiver.to_bytes()
    assert receiver.chain_key == spec_next_chain_key(
        spec_next_chain_key(spec_next_chain_key(spec_next_chain_key(old_chain_key)))
    )
    assert old_chain_key not in stored
    assert keys[3] not in stored and keys[1] not in stored  # used: gone
    assert keys[0] in stored and keys[2] in stored  # skipped, still awaited
    assert sorted(receiver.skipped_keys) == [0, 2]


def test_a_handout_reads_from_its_iteration_on_only() -> None:
    sender, _ = new_pair()
    for _ in range(3):
        sender.next_message_key()
    receiver = ReceiverChain.from_handout(sender.handout(), SENDER)
    assert receiver.iteration == 3
    with pytest.raises(Replay):
        receiver.key_for(2)  # before the handout: unreadable, as a removed-then-readded member must find
    assert receive(receiver, 3) == sender.next_message_key()[1]


# --- out of order, replay -------------------------------------------------------------------------


def test_out_of_order_delivery_within_max_skip_reads_every_message() -> None:
    sender, receiver = new_pair()
    expected = [sender.next_message_key()[1] for _ in range(40)]
    order = [39, *range(0, 39, 2), *range(37, 0, -2)]
    assert sorted(order) == list(range(40))
    for index in order:
        assert receive(receiver, index) == expected[index]
    assert receiver.skipped_keys == {}
    assert receiver.iteration == 40
    assert receiver.dropped_keys == 0


@pytest.mark.parametrize("skip_first", [False, True])
def test_replay_of_a_used_key_raises_replay_naming_chain_and_index(skip_first: bool) -> None:
    _, receiver = new_pair()
    if skip_first:
        receive(receiver, 5)
    receive(receiver, 2)
    stored = receiver.to_bytes()
    with pytest.raises(Replay) as caught:
        receiver.key_for(2)
    assert caught.value.message_id == receiver.chain_id + (2).to_bytes(8, "big")
    assert receiver.to_bytes() == stored


def test_key_for_changes_nothing_until_commit() -> None:
    _, receiver = new_pair()
    stored = receiver.to_bytes()
    key_a, advance_a = receiver.key_for(7)
    key_b, _ = receiver.key_for(7)
    assert key_a == key_b
    assert receiver.to_bytes() == stored
    receiver.commit(advance_a)
    assert receiver.iteration == 8 and sorted(receiver.skipped_keys) == list(range(7))


def test_a_second_advance_from_the_same_state_is_refused() -> None:
    _, receiver = new_pair()
    _, first = receiver.key_for(3)
    _, second = receiver.key_for(5)
    receiver.commit(first)
    stored = receiver.to_bytes()
    with pytest.raises(InvalidTransition):
        receiver.commit(second)
    # The same skipped key committed twice is a replay.
    _, skipped_a = receiver.key_for(1)
    _, skipped_b = receiver.key_for(1)
    receiver.commit(skipped_a)
    with pytest.raises(Replay):
        receiver.commit(skipped_b)
    assert 1 not in receiver.skipped_keys and stored != receiver.to_bytes()


def test_an_advance_of_another_chain_is_refused() -> None:
    _, receiver = new_pair()
    other = ReceiverChain.from_handout(
        SenderChain.new(fixed_random(bytes(range(1, 81))), wall_now=NOW).handout(), SENDER
    )
    _, advance = other.key_for(0)
    with pytest.raises(InvalidTransition):
        receiver.commit(advance)
    assert receiver.iteration == 0


# --- bounds ---------------------------------------------------------------------------------------


def test_a_jump_of_exactly_max_skip_is_read() -> None:
    sender, receiver = new_pair()
    expected = spec_keys(sender.chain_key, MAX_SKIP + 1)
    assert receive(receiver, MAX_SKIP) == expected[MAX_SKIP]
    assert len(receiver.skipped_keys) == MAX_SKIP
    assert receive(receiver, 0) == expected[0]


@pytest.mark.parametrize("jump", [MAX_SKIP + 1, 10**6, 2**64 - 2])
def test_a_jump_beyond_max_skip_derives_nothing_and_changes_nothing(
    jump: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, receiver = new_pair()
    receive(receiver, 0)
    claimed = receiver.iteration + jump
    stored = receiver.to_bytes()
    derived = 0

    def counting(chain_key: bytes) -> bytes:
        nonlocal derived
        derived += 1
        return spec_message_key(chain_key)

    monkeypatch.setattr(chains_module, "_message_key", counting)
    monkeypatch.setattr(chains_module, "_next_chain_key", counting)
    start = time.perf_counter()
    with pytest.raises(ChainJumpTooFar) as caught:
        receiver.key_for(claimed)
    assert time.perf_counter() - start < 0.05
    assert (caught.value.jump, caught.value.limit) == (jump, MAX_SKIP)
    assert derived == 0
    assert receiver.to_bytes() == stored


def test_skipped_keys_are_bounded_oldest_dropped_and_counted() -> None:
    sender, receiver = new_pair()
    expected = spec_keys(sender.chain_key, 3 * MAX_SKIP + 3)
    receive(receiver, MAX_SKIP)  # skips 0 .. MAX_SKIP-1
    receive(receiver, 2 * MAX_SKIP + 1)  # skips MAX_SKIP+1 .. 2*MAX_SKIP: the store would hold 2x
    assert len(receiver.skipped_keys) == MAX_SKIPPED_KEYS
    assert receiver.dropped_keys == MAX_SKIP
    assert min(receiver.skipped_keys) == MAX_SKIP + 1  # the oldest were dropped
    with pytest.raises(Replay):
        receiver.key_for(0)
    assert receive(receiver, MAX_SKIP + 1) == expected[MAX_SKIP + 1]
    assert receive(receiver, 2 * MAX_SKIP) == expected[2 * MAX_SKIP]
    receive(receiver, 3 * MAX_SKIP + 2)
    assert len(receiver.skipped_keys) == MAX_SKIPPED_KEYS
    assert receiver.dropped_keys == MAX_SKIP + MAX_SKIP - 2
    # The bound survives storage.
    assert ReceiverChain.from_bytes(receiver.to_bytes()) == receiver


def test_a_used_up_sending_chain_refuses_to_go_on() -> None:
    chain = SenderChain.new(fixed_random(), wall_now=NOW)
    chain.iteration = MAX_ITERATION
    assert chain.next_message_key()[0] == MAX_ITERATION
    with pytest.raises(ValueError, match="used up"):
        chain.next_message_key()


# --- storage and handouts -------------------------------------------------------------------------


def test_sender_chain_round_trips() -> None:
    sender, _ = new_pair()
    sender.next_message_key()
    restored = SenderChain.from_bytes(sender.to_bytes())
    assert restored == sender
    assert restored.signing_key == sender.signing_key
    assert restored.sign(b"x") == sender.sign(b"x")
    assert restored.next_message_key() == sender.next_message_key()


def test_receiver_chain_round_trips_with_skipped_keys_in_order() -> None:
    _, receiver = new_pair()
    receive(receiver, 9)
    receive(receiver, 4)
    receiver.dropped_keys = 17
    restored = ReceiverChain.from_bytes(receiver.to_bytes())
    assert restored == receiver
    assert list(restored.skipped_keys) == list(receiver.skipped_keys)
    assert restored.to_bytes() == receiver.to_bytes()
    assert receive(restored, 10) == receive(receiver, 10)


def test_handout_round_trips_and_is_canonical() -> None:
    sender, _ = new_pair()
    handout = sender.handout()
    data = encode_handout(handout)
    assert decode_handout(data) == handout
    assert msgpack.unpackb(data, strict_map_key=False) == {
        1: 1,
        2: handout.chain_id,
        3: handout.chain_key,
        4: 0,
        5: sender.signing_key,
    }


def _fields(data: bytes) -> dict[int, object]:
    fields: dict[int, object] = msgpack.unpackb(data, strict_map_key=False)
    return fields


def _repack(fields: dict[int, object]) -> bytes:
    data: bytes = msgpack.packb(dict(sorted(fields.items())), use_bin_type=True)
    return data


def _receiver_corruptions(receiver: ReceiverChain) -> list[bytes]:
    good = _fields(receiver.to_bytes())
    skipped = good[8]
    assert isinstance(skipped, bytes) and len(skipped) == 2 * 40
    # Keys: 1 format, 2 chain id, 3 chain key, 4 iteration, 5 signing key, 7 sender, 8 skipped, 9 dropped.
    changes: list[tuple[int, object]] = [
        (1, 2),  # unknown format
        (1, True),  # format of the wrong type
        (2, bytes(15)),
        (3, "k" * 32),
        (4, -1),
        (4, 1.0),
        (5, bytes(32)),  # signing key not a usable point
        (7, bytes(31)),
        (8, skipped[:-1]),  # skipped entries not whole
        (8, skipped[:40] * 2),  # a skipped index twice
        (8, (10**6).to_bytes(8, "big") + bytes(32)),  # skipped index at or above the chain
        (9, -1),
        (9, True),
    ]
    out = [_repack({**good, key: value}) for key, value in changes]
    missing = dict(good)
    del missing[9]
    out.append(_repack(missing))
    out.append(_repack({**good, 10: 0}))
    data = receiver.to_bytes()
    out.extend((data[:-1], data + b"\x00", b"", b"\xc1", msgpack.packb([1, 2])))
    return out


def test_corrupt_receiver_chain_bytes_raise_decode_error() -> None:
    _, receiver = new_pair()
    receive(receiver, 2)
    for corrupt in _receiver_corruptions(receiver):
        with pytest.raises(DecodeError):
            ReceiverChain.from_bytes(corrupt)


def test_too_many_skipped_keys_in_storage_raise_decode_error() -> None:
    _, receiver = new_pair()
    receiver.iteration = MAX_SKIPPED_KEYS + 5
    receiver.skipped_keys = {i: bytes(32) for i in range(MAX_SKIPPED_KEYS + 1)}
    with pytest.raises(DecodeError):
        ReceiverChain.from_bytes(receiver.to_bytes())


def test_corrupt_sender_chain_and_handout_bytes_raise_decode_error() -> None:
    sender, _ = new_pair()
    good = _fields(sender.to_bytes())
    for key, value in [(1, 0), (2, bytes(17)), (3, None), (4, -3), (5, bytes(31)), (6, -1), (6, 1.5)]:
        with pytest.raises(DecodeError):
            SenderChain.from_bytes(_repack({**good, key: value}))
    handout = _fields(encode_handout(sender.handout()))
    for key, value in [
        (1, 2),
        (2, bytes(16 + 1)),
        (3, bytes(31)),
        (4, MAX_ITERATION + 1),
        (4, False),
        (5, bytes(32)),
    ]:
        with pytest.raises(DecodeError):
            decode_handout(_repack({**handout, key: value}))
    with pytest.raises(DecodeError):
        decode_handout(encode_handout(sender.handout()) + b"\x00")
    with pytest.raises(DecodeError):
        decode_handout(bytes(300))  # TooLarge is a DecodeError
    with pytest.raises(DecodeError):
        ReceiverChain.from_handout(sender.handout(), bytes(31))


def test_every_single_byte_change_of_a_handout_is_refused_or_a_valid_handout() -> None:
    sender, _ = new_pair()
    data = encode_handout(sender.handout())
    for position, flip in itertools.product(range(len(data)), (0x01, 0x80, 0xFF)):
        changed = bytearray(data)
        changed[position] ^= flip
        try:
            decoded = decode_handout(bytes(changed))
        except DecodeError:
            continue
        # Only a changed chain id, chain key or iteration can still be well-formed (the key is the
        # sender's to vouch for, through the sealed 1:1 path); it is then a different handout.
        assert decoded != sender.handout()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_to_chains_or_raise_decode_error(data: bytes) -> None:
    for decode in (decode_handout, SenderChain.from_bytes, ReceiverChain.from_bytes):
        with contextlib.suppress(DecodeError):
            decode(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=60), max_size=40))
def test_any_delivery_order_reads_each_message_once(order: list[int]) -> None:
    sender, receiver = new_pair()
    expected = spec_keys(sender.chain_key, 61)
    read: set[int] = set()
    for index in order:
        if index in read:
            with pytest.raises(Replay):
                receiver.key_for(index)
            continue
        assert receive(receiver, index) == expected[index]
        read.add(index)
    assert set(receiver.skipped_keys) == set(range(receiver.iteration)) - read
    assert ReceiverChain.from_bytes(receiver.to_bytes()) == receiver


def test_handout_constructor_checks_sizes() -> None:
    with pytest.raises(DecodeError):
        ChainHandout(chain_id=bytes(16), chain_key=bytes(32), iteration=-1, signing_key=bytes(32))
    with pytest.raises(DecodeError):
        SenderChain(
            chain_id=bytes(16), chain_key=bytes(31), iteration=0, signing_seed=bytes(32), created_at=0
        )


def test_a_key_cache_checks_each_signing_key_once_and_still_refuses_bad_keys() -> None:
    sender, _ = new_pair()
    data = encode_handout(sender.handout())
    cache = KeyCache(capacity=4)
    first = decode_handout(data, key_cache=cache)
    assert decode_handout(data, key_cache=cache) == first == decode_handout(data)
    assert len(cache) == 1
    chain = ReceiverChain.from_handout(first, SENDER, key_cache=cache)
    assert ReceiverChain.from_bytes(chain.to_bytes(), key_cache=cache) == chain
    assert len(cache) == 1
    bad = _repack({**_fields(data), 5: bytes(32)})
    with pytest.raises(DecodeError):
        decode_handout(bad, key_cache=cache)
    bad_handout = ChainHandout(chain_id=bytes(16), chain_key=bytes(32), iteration=0, signing_key=bytes(32))
    with pytest.raises(DecodeError):
        ReceiverChain.from_handout(bad_handout, SENDER, key_cache=cache)
    assert len(cache) == 1
