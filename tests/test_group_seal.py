"""The group envelope: round trips, the construction by hand, tags and topics, header unlinkability,
expiry, and every way to tamper with or forge a group message (typed errors, the chain never moved).

``_seal_by_hand`` rebuilds ``seal_group`` from GROUPS.md section 3 and the module docstring with raw
hashlib, msgpack and PyNaCl; the first test proves it matches byte for byte, so forgeries built with it
are refused for the reason each test names.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import replace

import msgpack
import nacl.bindings as sodium
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import meshchat.groups.chains as chains_module
from meshchat.crypto import DEFAULT_TTL, INBOX_EPOCH_SECONDS, MAX_TTL, epoch_of, seal
from meshchat.errors import (
    BadSignature,
    ChainJumpTooFar,
    DecodeError,
    DecryptionFailed,
    Expired,
    Replay,
    TooLarge,
    UnknownChain,
    UnsupportedVersion,
)
from meshchat.groups.chains import MAX_SKIP, MAX_SKIPPED_KEYS, ReceiverChain, SenderChain
from meshchat.groups.seal import (
    GROUP_TOPIC_PREFIX,
    MAX_GROUP_BODY,
    OpenedGroupMessage,
    group_tag,
    group_tags_around,
    group_topic,
    header_key,
    open_group,
    read_header,
    seal_group,
)
from meshchat.identity import Identity
from meshchat.wire import (
    MAX_ENVELOPE_SIZE,
    PAD_BUCKETS,
    EnvelopeKind,
    associated_data,
    decode_envelope,
    encode_envelope,
    message_id,
)
from meshchat.wire.envelope import encode_fields

NOW = 1_800_000_000.25
TTL = 3600
GROUP = hashlib.blake2b(b"a family group", digest_size=32).digest()
OTHER_GROUP = hashlib.blake2b(b"a classroom", digest_size=32).digest()
ALICE = Identity(bytes([0xA1]) * 32)
BOB = Identity(bytes([0xB0]) * 32)
CHAIN_RANDOMNESS = bytes(range(80))
NONCE = bytes(range(100, 124))
#: Every error a peer's bytes may cause here; anything else (or a wrong body) is a bug.
TYPED = (DecodeError, DecryptionFailed, BadSignature, Expired, Replay, UnknownChain, ChainJumpTooFar)


def fixed(data: bytes) -> Callable[[int], bytes]:
    def random_bytes(n: int) -> bytes:
        assert n == len(data)
        return data

    return random_bytes


def new_pair(randomness: bytes = CHAIN_RANDOMNESS) -> tuple[SenderChain, ReceiverChain]:
    sender = SenderChain.new(fixed(randomness), wall_now=NOW)
    return sender, ReceiverChain.from_handout(sender.handout(), ALICE.public.ed25519)


def send(chain: SenderChain, body: bytes = b"hello group") -> bytes:
    envelope, _ = seal_group(chain, group_id=GROUP, body=body, wall_now=NOW, ttl=TTL)
    return envelope


# --- the construction, by hand ---------------------------------------------------------------------


def _blake(data: bytes, *, key: bytes = b"", size: int = 32, person: bytes) -> bytes:
    return hashlib.blake2b(data, key=key, digest_size=size, person=person).digest()


def _header(group_id: bytes, chain_id: bytes, iteration: int, nonce: bytes) -> bytes:
    hkey = _blake(group_id, person=b"meshchat-ghk1")
    position = chain_id + iteration.to_bytes(8, "big")
    plain = position + _blake(position, key=hkey, size=8, person=b"meshchat-ghchk1")
    mask = _blake(nonce, key=hkey, person=b"meshchat-ghdr1")
    return bytes(a ^ b for a, b in zip(plain, mask, strict=True))


def spec_keys(chain_key: bytes, count: int) -> list[bytes]:
    keys = []
    for _ in range(count):
        keys.append(_blake(b"\x01", key=chain_key, person=b"meshchat-gmk1"))
        chain_key = _blake(b"\x02", key=chain_key, person=b"meshchat-gck1")
    return keys


def _pad(inner: bytes) -> bytes:
    size = next(b for b in PAD_BUCKETS if len(inner) + 1 <= b)
    return inner + b"\x80" + bytes(size - len(inner) - 1)


def _seal_by_hand(
    *,
    message_key: bytes,
    chain_id: bytes,
    iteration: int,
    body: bytes,
    sign: Callable[[bytes], bytes],
    nonce: bytes = NONCE,
    group_id: bytes = GROUP,
    sent_at_ms: int = int(NOW * 1000),
    inner: Callable[[int, bytes, bytes], bytes] | None = None,
) -> bytes:
    tag = _blake((epoch_of(NOW)).to_bytes(8, "big"), key=group_id, size=16, person=b"meshchat-gtag1")
    expiry = int(NOW) + TTL
    ephemeral = _header(group_id, chain_id, iteration, nonce)
    ad = associated_data(EnvelopeKind.GROUP, tag, expiry, ephemeral, nonce)
    signature = sign(b"meshchat/group-seal/v1\x00" + group_id + ad + sent_at_ms.to_bytes(8, "big") + body)
    if inner is None:
        plaintext = msgpack.packb({1: sent_at_ms, 2: body, 3: signature}, use_bin_type=True)
    else:
        plaintext = inner(sent_at_ms, body, signature)
    ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(_pad(plaintext), ad, nonce, message_key)
    return encode_fields(
        kind=EnvelopeKind.GROUP,
        inbox_tag=tag,
        expiry=expiry,
        ephemeral_key=ephemeral,
        nonce=nonce,
        ciphertext=ciphertext,
    )


def _signer(seed: bytes) -> Callable[[bytes], bytes]:
    secret = sodium.crypto_sign_seed_keypair(seed)[1]
    return lambda message: sodium.crypto_sign(message, secret)[:64]


def test_the_hand_built_construction_matches_seal_group_byte_for_byte() -> None:
    sender, _ = new_pair()
    twin, _ = new_pair()
    twin.next_message_key()
    iteration, key = twin.next_message_key()
    send(sender)
    envelope, sealed_iteration = seal_group(
        sender, group_id=GROUP, body=b"second", wall_now=NOW, ttl=TTL, random_bytes=fixed(NONCE)
    )
    assert sealed_iteration == iteration == 1
    by_hand = _seal_by_hand(
        message_key=key,
        chain_id=sender.chain_id,
        iteration=1,
        body=b"second",
        sign=_signer(CHAIN_RANDOMNESS[48:]),
    )
    assert envelope == by_hand


# --- round trips -----------------------------------------------------------------------------------


def test_seal_and_open_round_trip_with_every_field() -> None:
    sender, receiver = new_pair()
    envelope, iteration = seal_group(sender, group_id=GROUP, body=b"dinner at 7", wall_now=NOW, ttl=TTL)
    opened = open_group(envelope, group_id=GROUP, chain=receiver, wall_now=NOW)
    assert opened == OpenedGroupMessage(
        sender=ALICE.public.ed25519,
        chain_id=sender.chain_id,
        iteration=iteration,
        body=b"dinner at 7",
        sent_at_ms=int(NOW * 1000),
        message_id=message_id(envelope),
        expiry=int(NOW) + TTL,
    )
    decoded = decode_envelope(envelope)
    assert decoded.kind is EnvelopeKind.GROUP
    assert decoded.inbox_tag == group_tag(GROUP, epoch_of(NOW))
    assert len(decoded.ciphertext) - 16 in PAD_BUCKETS
    assert receiver.iteration == 1
    # Passing the already decoded envelope gives the same result.
    second, _ = seal_group(sender, group_id=GROUP, body=b"ok", wall_now=NOW, ttl=TTL)
    again = open_group(second, group_id=GROUP, chain=receiver, wall_now=NOW, envelope=decode_envelope(second))
    assert again.body == b"ok" and again.iteration == 1


def test_messages_open_out_of_order_and_each_once() -> None:
    sender, receiver = new_pair()
    envelopes = [send(sender, body=bytes([i]) * i) for i in range(6)]
    for index in (4, 0, 5, 2, 1, 3):
        opened = open_group(envelopes[index], group_id=GROUP, chain=receiver, wall_now=NOW)
        assert (opened.iteration, opened.body) == (index, bytes([index]) * index)
    for envelope in envelopes:
        with pytest.raises(Replay):
            open_group(envelope, group_id=GROUP, chain=receiver, wall_now=NOW)
    assert receiver.skipped_keys == {}


@pytest.mark.parametrize("size", [0, 1, 200, 1000, 5000, MAX_GROUP_BODY])
def test_bodies_up_to_the_maximum_round_trip(size: int) -> None:
    sender, receiver = new_pair()
    envelope = send(sender, body=b"\x07" * size)
    assert len(envelope) <= MAX_ENVELOPE_SIZE
    assert open_group(envelope, group_id=GROUP, chain=receiver, wall_now=NOW).body == b"\x07" * size


def test_refused_input_leaves_the_sending_chain_unmoved() -> None:
    sender, _ = new_pair()
    stored = sender.to_bytes()
    with pytest.raises(TooLarge):
        send(sender, body=bytes(MAX_GROUP_BODY + 1))
    for ttl in (0, -1, MAX_TTL + 1):
        with pytest.raises(ValueError, match="ttl"):
            seal_group(sender, group_id=GROUP, body=b"x", wall_now=NOW, ttl=ttl)
    with pytest.raises(ValueError, match="wall_now"):
        seal_group(sender, group_id=GROUP, body=b"x", wall_now=-1.0)
    with pytest.raises(ValueError, match="group id"):
        seal_group(sender, group_id=GROUP[:16], body=b"x", wall_now=NOW)
    assert sender.to_bytes() == stored
    assert seal_group(sender, group_id=GROUP, body=b"x", wall_now=NOW)[1] == 0
    assert decode_envelope(send(sender)).expiry == int(NOW) + TTL
    assert DEFAULT_TTL <= MAX_TTL


# --- tags, topics, headers -------------------------------------------------------------------------


def test_tags_change_every_day_and_differ_per_group() -> None:
    today = epoch_of(NOW)
    tags = {group_tag(GROUP, day) for day in range(today - 5, today + 5)}
    assert len(tags) == 10
    assert group_tag(GROUP, today) != group_tag(OTHER_GROUP, today)
    assert group_tag(GROUP, today) == _blake(
        today.to_bytes(8, "big"), key=GROUP, size=16, person=b"meshchat-gtag1"
    )
    around = group_tags_around(GROUP, NOW)
    assert around == {group_tag(GROUP, day): day for day in (today - 1, today, today + 1)}
    tomorrow_envelope = seal_group(
        new_pair()[0], group_id=GROUP, body=b"", wall_now=NOW + INBOX_EPOCH_SECONDS
    )[0]
    assert decode_envelope(tomorrow_envelope).inbox_tag == group_tag(GROUP, today + 1)


def test_topics_name_the_tag_and_nothing_of_the_group() -> None:
    tag = group_tag(GROUP, epoch_of(NOW))
    topic = group_topic(tag)
    assert topic == GROUP_TOPIC_PREFIX + tag.hex() == "meshchat/group/" + tag.hex()
    assert GROUP.hex()[:8] not in topic and header_key(GROUP).hex()[:8] not in topic
    assert group_topic(group_tag(GROUP, epoch_of(NOW) + 1)) != topic


def test_headers_do_not_link_messages_of_one_chain() -> None:
    sender, _ = new_pair()
    first, second = decode_envelope(send(sender)), decode_envelope(send(sender))
    assert first.ephemeral_key != second.ephemeral_key
    assert sender.chain_id not in first.ephemeral_key
    # The same chain position under two nonces gives unrelated header bytes.
    a, b = _header(GROUP, sender.chain_id, 5, NONCE), _header(GROUP, sender.chain_id, 5, bytes(24))
    assert a != b and sum(x == y for x, y in zip(a, b, strict=True)) < 8
    assert read_header(first, GROUP) == (sender.chain_id, 0)
    assert read_header(second, GROUP) == (sender.chain_id, 1)
    with pytest.raises(DecodeError):
        read_header(first, OTHER_GROUP)


@pytest.mark.parametrize("position", range(16, 24))
def test_an_outsider_flipping_header_bits_costs_members_no_key_derivation(
    position: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The header is XOR-encrypted, so a relay can flip bits of the iteration without knowing any key;
    # the keyed check refuses the result before the chain derives the keys up to the claimed index.
    sender, receiver = new_pair()
    decoded = decode_envelope(send(sender))
    derived = 0

    def counting(chain_key: bytes) -> bytes:
        nonlocal derived
        derived += 1
        return chain_key

    monkeypatch.setattr(chains_module, "_message_key", counting)
    monkeypatch.setattr(chains_module, "_next_chain_key", counting)
    for flip in (0x01, 0x04, 0x40):
        ephemeral = bytearray(decoded.ephemeral_key)
        ephemeral[position] ^= flip
        tampered = encode_envelope(replace(decoded, ephemeral_key=bytes(ephemeral)))
        with pytest.raises(DecodeError, match="header"):
            open_group(tampered, group_id=GROUP, chain=receiver, wall_now=NOW)
    assert derived == 0 and receiver.iteration == 0


def test_header_key_is_the_documented_hash() -> None:
    assert header_key(GROUP) == _blake(GROUP, person=b"meshchat-ghk1")


# --- refusals --------------------------------------------------------------------------------------


def test_expired_messages_are_refused_and_the_chain_unmoved() -> None:
    sender, receiver = new_pair()
    envelope = send(sender)
    expiry = int(NOW) + TTL
    stored = receiver.to_bytes()
    with pytest.raises(Expired):
        open_group(envelope, group_id=GROUP, chain=receiver, wall_now=expiry + 0.5)
    assert receiver.to_bytes() == stored
    assert open_group(envelope, group_id=GROUP, chain=receiver, wall_now=expiry).body == b"hello group"


def test_a_message_on_another_chain_is_unknown_chain() -> None:
    _, receiver = new_pair()
    other, _ = new_pair(bytes(range(1, 81)))
    envelope = send(other)
    with pytest.raises(UnknownChain) as caught:
        open_group(envelope, group_id=GROUP, chain=receiver, wall_now=NOW)
    assert caught.value.chain_id == other.chain_id


def test_a_message_of_another_group_is_refused_by_its_header() -> None:
    sender, receiver = new_pair()
    envelope, _ = seal_group(sender, group_id=OTHER_GROUP, body=b"x", wall_now=NOW)
    with pytest.raises(DecodeError, match="header"):
        open_group(envelope, group_id=GROUP, chain=receiver, wall_now=NOW)
    assert receiver.iteration == 0


def test_a_one_to_one_envelope_is_not_a_group_message() -> None:
    _, receiver = new_pair()
    envelope = seal(ALICE, BOB.public, b"hi", wall_now=NOW)
    with pytest.raises(DecodeError, match="GROUP"):
        open_group(envelope, group_id=GROUP, chain=receiver, wall_now=NOW)


def test_a_jump_beyond_max_skip_is_refused_and_costs_nothing() -> None:
    sender, receiver = new_pair()
    for _ in range(MAX_SKIP + 1):
        sender.next_message_key()
    envelope = send(sender)
    stored = receiver.to_bytes()
    with pytest.raises(ChainJumpTooFar):
        open_group(envelope, group_id=GROUP, chain=receiver, wall_now=NOW)
    assert receiver.to_bytes() == stored


def test_a_member_with_the_chain_key_but_not_the_signing_key_cannot_forge() -> None:
    sender, receiver = new_pair()
    mallory_view = ReceiverChain.from_handout(sender.handout(), ALICE.public.ed25519)  # every member's copy
    genuine = send(sender, body=b"pick up the kids at 4")
    open_group(genuine, group_id=GROUP, chain=receiver, wall_now=NOW)
    # Mallory computes the key of Alice's next message and encrypts her own body under it.
    key, _ = mallory_view.key_for(1)
    stored = receiver.to_bytes()
    for sign in (_signer(bytes([0x3A]) * 32), lambda _message: bytes(64)):
        forged = _seal_by_hand(
            message_key=key, chain_id=sender.chain_id, iteration=1, body=b"the kids stay at school", sign=sign
        )
        with pytest.raises(BadSignature):
            open_group(forged, group_id=GROUP, chain=receiver, wall_now=NOW)
        assert receiver.to_bytes() == stored  # no key burnt, no skipped key stored
    # A forged message further ahead must not grow the skipped store either.
    key_far, _ = mallory_view.key_for(500)
    forged_far = _seal_by_hand(
        message_key=key_far, chain_id=sender.chain_id, iteration=500, body=b"x", sign=_signer(bytes(32))
    )
    with pytest.raises(BadSignature):
        open_group(forged_far, group_id=GROUP, chain=receiver, wall_now=NOW)
    assert receiver.to_bytes() == stored and receiver.skipped_keys == {}
    # Alice's real next message still opens.
    assert (
        open_group(send(sender, body=b"real"), group_id=GROUP, chain=receiver, wall_now=NOW).body == b"real"
    )


def test_a_signature_from_another_message_does_not_transfer() -> None:
    sender, receiver = new_pair()
    probe, _ = new_pair()
    _, key = probe.next_message_key()
    signed_other_body = _seal_by_hand(
        message_key=key,
        chain_id=sender.chain_id,
        iteration=0,
        body=b"a",
        sign=lambda message: _signer(CHAIN_RANDOMNESS[48:])(message[:-1] + b"b"),  # signed body "b"
    )
    with pytest.raises(BadSignature):
        open_group(signed_other_body, group_id=GROUP, chain=receiver, wall_now=NOW)
    assert receiver.iteration == 0


def _inner_variants() -> list[Callable[[int, bytes, bytes], bytes]]:
    return [
        lambda s, b, g: msgpack.packb({2: b, 1: s, 3: g}, use_bin_type=True),  # keys out of order
        lambda s, b, g: msgpack.packb({1: s, 2: b}, use_bin_type=True),  # no signature
        lambda s, b, g: msgpack.packb({1: s, 2: b, 3: g, 4: 0}, use_bin_type=True),
        lambda s, b, g: msgpack.packb({1: -1, 2: b, 3: g}, use_bin_type=True),
        lambda s, b, g: msgpack.packb({1: s, 2: b.decode(), 3: g}, use_bin_type=True),
        lambda s, b, g: msgpack.packb({1: s, 2: b, 3: g[:63]}, use_bin_type=True),
        lambda s, b, g: msgpack.packb([s, b, g], use_bin_type=True),
        lambda s, b, g: msgpack.packb({1: s, 2: b, 3: g}, use_bin_type=True) + b"\x00\x01",
        lambda s, b, g: msgpack.packb(None),
    ]


@pytest.mark.parametrize("variant", range(9))
def test_a_malformed_inside_under_the_right_key_is_decode_error(variant: int) -> None:
    sender, receiver = new_pair()
    probe, _ = new_pair()
    _, key = probe.next_message_key()
    envelope = _seal_by_hand(
        message_key=key,
        chain_id=sender.chain_id,
        iteration=0,
        body=b"abc",
        sign=_signer(CHAIN_RANDOMNESS[48:]),
        inner=_inner_variants()[variant],
    )
    with pytest.raises(DecodeError):
        open_group(envelope, group_id=GROUP, chain=receiver, wall_now=NOW)
    assert receiver.iteration == 0


def test_every_changed_byte_is_a_typed_error_and_moves_nothing() -> None:
    sender, _ = new_pair()
    for _ in range(3):
        send(sender)
    envelope = send(sender, body=b"the real body")
    fresh = ReceiverChain.from_handout(new_pair()[0].handout(), ALICE.public.ed25519)
    for _ in range(3):
        fresh.commit(fresh.key_for(fresh.iteration)[1])  # the receiver read messages 0 to 2
    stored = fresh.to_bytes()
    seen: set[type] = set()
    for position, flip in itertools.product(range(len(envelope)), (0x01, 0x80, 0xFF)):
        changed = bytearray(envelope)
        changed[position] ^= flip
        receiver = ReceiverChain.from_bytes(stored)
        with pytest.raises(TYPED) as caught:
            open_group(bytes(changed), group_id=GROUP, chain=receiver, wall_now=NOW)
        seen.add(type(caught.value))
        assert receiver.to_bytes() == stored
    assert {DecodeError, UnsupportedVersion, DecryptionFailed} <= seen
    assert open_group(
        envelope, group_id=GROUP, chain=ReceiverChain.from_bytes(stored), wall_now=NOW
    ).body == (b"the real body")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_typed_errors_only(data: bytes) -> None:
    _, receiver = new_pair()
    stored = receiver.to_bytes()
    with pytest.raises(TYPED):
        open_group(data, group_id=GROUP, chain=receiver, wall_now=NOW)
    assert receiver.to_bytes() == stored


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_envelopes_raise_typed_errors_or_open_the_original(data: st.DataObject) -> None:
    sender, receiver = new_pair()
    envelope = send(sender, body=b"original")
    stored = receiver.to_bytes()
    start = data.draw(st.integers(min_value=0, max_value=len(envelope)))
    end = data.draw(st.integers(min_value=start, max_value=min(len(envelope), start + 40)))
    replacement = data.draw(st.binary(max_size=40))
    mutated = envelope[:start] + replacement + envelope[end:]
    try:
        opened = open_group(mutated, group_id=GROUP, chain=receiver, wall_now=NOW)
    except TYPED:
        assert receiver.to_bytes() == stored
    else:
        assert mutated == envelope and opened.body == b"original"


class GroupChainMachine(RuleBasedStateMachine):
    """A sender, a receiver restarted from storage at will, deliveries in any order with duplicates and
    member forgeries mixed in: each genuine message is delivered once with its body, nothing else ever."""

    def __init__(self) -> None:
        super().__init__()
        self.sender, self.receiver = new_pair()
        self.sent: list[bytes] = []
        self.delivered: set[int] = set()

    @rule()
    def send(self) -> None:
        self.sent.append(send(self.sender, body=b"message %d" % len(self.sent)))

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(min_value=0, max_value=len(self.sent) - 1))
        stored = self.receiver.to_bytes()
        try:
            opened = open_group(self.sent[index], group_id=GROUP, chain=self.receiver, wall_now=NOW)
        except Replay:
            assert index in self.delivered
            assert self.receiver.to_bytes() == stored
            return
        assert index not in self.delivered
        assert (opened.iteration, opened.body) == (index, b"message %d" % index)
        self.delivered.add(index)

    @rule(data=st.data())
    def forge(self, data: st.DataObject) -> None:
        # A member forges message ``iteration``: one already delivered, one still awaited, or ahead.
        iteration = data.draw(st.integers(min_value=0, max_value=self.sender.iteration + 30))
        key = spec_keys(CHAIN_RANDOMNESS[16:48], iteration + 1)[iteration]
        forged = _seal_by_hand(
            message_key=key,
            chain_id=self.sender.chain_id,
            iteration=iteration,
            body=b"forged",
            sign=_signer(bytes(32)),
        )
        stored = self.receiver.to_bytes()
        with pytest.raises(Replay if iteration in self.delivered else BadSignature):
            open_group(forged, group_id=GROUP, chain=self.receiver, wall_now=NOW)
        assert self.receiver.to_bytes() == stored

    @rule()
    def restart(self) -> None:
        self.receiver = ReceiverChain.from_bytes(self.receiver.to_bytes())

    @invariant()
    def skipped_keys_are_exactly_the_undelivered_ones(self) -> None:
        assert set(self.receiver.skipped_keys) == set(range(self.receiver.iteration)) - self.delivered
        assert len(self.receiver.skipped_keys) <= MAX_SKIPPED_KEYS


GroupChainMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_group_chain_machine = GroupChainMachine.TestCase
