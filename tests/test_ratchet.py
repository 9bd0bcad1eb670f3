"""The Double Ratchet with header encryption (``meshchat.sessions.ratchet``).

Properties: arbitrary interleavings both ways with loss, duplication, reordering and restarts decrypt
every delivered message exactly once; forward secrecy and post-compromise security against a stolen
state; the bounds (``MAX_SKIP``, ``MAX_SKIPPED``, ``SKIPPED_TTL``, retired header keys); every error
leaves the state byte for byte as it was. The message layout is rebuilt by hand with raw libsodium, and
the root, chain and message keys are checked against the independent ``doubleratchet`` package.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import random
import tracemalloc
from collections.abc import Callable

import nacl.bindings as sodium
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from doubleratchet import AEAD, DoubleRatchet, Header
from doubleratchet.recommended import HashFunction, kdf_hkdf, kdf_separate_hmacs
from doubleratchet.recommended.diffie_hellman_ratchet_curve25519 import DiffieHellmanRatchet
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from meshchat.crypto import CLOCK_SKEW, MAX_TTL
from meshchat.errors import DecodeError, DecryptionFailed, Replay, SessionError, TooManySkipped
from meshchat.sessions.ratchet import (
    HEADER_SIZE,
    MAX_RETIRED_HEADER_KEYS,
    MAX_SKIP,
    MAX_SKIPPED,
    MESSAGE_OVERHEAD,
    SKIPPED_TTL,
    Ratchet,
    _kdf_rk,
)

NOW = 1_800_000_000.5
AD = bytes([0xA1]) * 32 + bytes([0xB0]) * 32
SK = bytes(range(32))
HKA = bytes([0x11]) * 32
NHKB = bytes([0x22]) * 32
BOB_SPK_SECRET = bytes([0x42]) * 32
BOB_SPK = sodium.crypto_scalarmult_base(BOB_SPK_SECRET)
RNG = os.urandom


def pair(random_bytes: Callable[[int], bytes] = RNG) -> tuple[Ratchet, Ratchet]:
    alice = Ratchet.initiator(SK, BOB_SPK, ad=AD, shared_hka=HKA, shared_nhkb=NHKB, random_bytes=random_bytes)
    bob = Ratchet.responder(SK, BOB_SPK_SECRET, ad=AD, shared_hka=HKA, shared_nhkb=NHKB)
    return alice, bob


def talking() -> tuple[Ratchet, Ratchet]:
    """A pair after one round trip: both sides have both chains."""
    alice, bob = pair()
    assert bob.decrypt(alice.encrypt(b"hi", random_bytes=RNG), wall_now=NOW, random_bytes=RNG) == b"hi"
    assert alice.decrypt(bob.encrypt(b"yo", random_bytes=RNG), wall_now=NOW, random_bytes=RNG) == b"yo"
    return alice, bob


def recv(ratchet: Ratchet, message: bytes, wall_now: float = NOW) -> bytes | None:
    return ratchet.decrypt(message, wall_now=wall_now, random_bytes=RNG)


def send(ratchet: Ratchet, plaintext: bytes) -> bytes:
    return ratchet.encrypt(plaintext, random_bytes=RNG)


# --- construction and layout ----------------------------------------------------------------------


def test_kdf_rk_is_hkdf_sha256_and_prefix_stable() -> None:
    rk, dh_out = os.urandom(32), os.urandom(32)
    full = HKDF(algorithm=hashes.SHA256(), length=96, salt=rk, info=b"meshchat ratchet v1").derive(dh_out)
    assert b"".join(_kdf_rk(rk, dh_out)) == full
    short = HKDF(algorithm=hashes.SHA256(), length=64, salt=rk, info=b"meshchat ratchet v1").derive(dh_out)
    assert full[:64] == short


def test_message_layout_by_hand() -> None:
    """The first message, opened step by step with raw libsodium from the spec's formulas."""
    secret = bytes([7]) * 32
    randomness = iter([secret])
    alice = Ratchet.initiator(
        SK, BOB_SPK, ad=AD, shared_hka=HKA, shared_nhkb=NHKB, random_bytes=lambda n: next(randomness)
    )
    nonces = bytes(range(48))
    message = alice.encrypt(b"hello", random_bytes=lambda n: nonces[:n])
    assert len(message) == MESSAGE_OVERHEAD + 5 == 80 + 24 + 5 + 16
    assert message[:24] == nonces[:24] and message[80:104] == nonces[24:]
    header = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(message[24:80], AD, message[:24], HKA)
    alice_pub = sodium.crypto_scalarmult_base(secret)
    assert header == alice_pub + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
    # RK, CKs, NHKs = KDF_RK_HE(SK, DH(DHs, DHr)); mk = HMAC(CKs, 0x01)
    dh_out = sodium.crypto_scalarmult(secret, BOB_SPK)
    okm = HKDF(algorithm=hashes.SHA256(), length=96, salt=SK, info=b"meshchat ratchet v1").derive(dh_out)
    mk = hmac.digest(okm[32:64], b"\x01", "sha256")
    body = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        message[104:], AD + message[:80], message[80:104], mk
    )
    assert body == b"hello"
    second = alice.encrypt(b"again", random_bytes=RNG)
    header = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(second[24:80], AD, second[:24], HKA)
    assert header[32:] == (0).to_bytes(4, "big") + (1).to_bytes(4, "big")
    mk1 = hmac.digest(hmac.digest(okm[32:64], b"\x02", "sha256"), b"\x01", "sha256")
    assert (
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(second[104:], AD + second[:80], second[80:104], mk1)
        == b"again"
    )


def test_conversation_with_dh_steps_both_ways() -> None:
    alice, bob = pair()
    for round_ in range(5):
        for i in range(round_ + 1):
            assert recv(bob, send(alice, b"a%d.%d" % (round_, i))) == b"a%d.%d" % (round_, i)
        for i in range(round_):
            assert recv(alice, send(bob, b"b%d.%d" % (round_, i))) == b"b%d.%d" % (round_, i)


def test_responder_cannot_send_first_and_forgets_its_prekey_secret() -> None:
    alice, bob = pair()
    before = bob.encode()
    with pytest.raises(SessionError):
        send(bob, b"too early")
    assert bob.encode() == before
    assert BOB_SPK_SECRET in before
    assert recv(bob, send(alice, b"hi")) == b"hi"
    assert BOB_SPK_SECRET not in bob.encode()


def test_has_received_turns_true_with_the_first_message_from_the_peer() -> None:
    alice, bob = pair()
    assert not alice.has_received and not bob.has_received
    message = send(alice, b"hi")
    assert not alice.has_received
    recv(bob, message)
    assert bob.has_received and not alice.has_received
    recv(alice, send(bob, b"yo"))
    assert alice.has_received and Ratchet.decode(alice.encode()).has_received


def test_bad_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Ratchet.initiator(SK[:31], BOB_SPK, ad=AD, shared_hka=HKA, shared_nhkb=NHKB, random_bytes=RNG)
    with pytest.raises(DecodeError, match="low-order"):
        Ratchet.initiator(SK, bytes(32), ad=AD, shared_hka=HKA, shared_nhkb=NHKB, random_bytes=RNG)
    with pytest.raises(TypeError):
        Ratchet()


def test_low_order_ratchet_key_from_the_peer_leaves_state_unchanged() -> None:
    alice, bob = pair()
    alice._dhs_pub = bytes(32)  # a hostile peer announces a low-order point
    message = send(alice, b"x")
    before = bob.encode()
    with pytest.raises(DecodeError, match="low-order"):
        recv(bob, message)
    assert bob.encode() == before


def test_message_of_another_session_is_none() -> None:
    alice, bob = talking()
    _, other = talking()
    before = other.encode()
    assert recv(other, send(alice, b"not yours")) is None
    assert other.encode() == before
    with pytest.raises(DecodeError):
        recv(bob, b"\x00" * (MESSAGE_OVERHEAD - 1))


# --- tampering ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["same chain", "new chain", "skipped"])
def test_every_flipped_byte_is_refused_and_state_unchanged(kind: str) -> None:
    alice, bob = talking()
    if kind == "same chain":
        assert recv(bob, send(alice, b"first")) == b"first"
        message = send(alice, b"payload")
    elif kind == "new chain":
        message = send(alice, b"payload")  # alice stepped on bob's reply: a new chain at bob
    else:
        message = send(alice, b"payload")
        assert recv(bob, send(alice, b"later")) == b"later"  # message is now a skipped key at bob
    before = bob.encode()
    for index in range(len(message)):
        tampered = bytearray(message)
        tampered[index] ^= 0x01
        if index < HEADER_SIZE:
            assert recv(bob, bytes(tampered)) is None  # no header key opens it: another session's
        else:
            with pytest.raises(DecryptionFailed):
                recv(bob, bytes(tampered))
        assert bob.encode() == before
    with pytest.raises(DecryptionFailed):
        recv(bob, message[:-1])
    assert bob.encode() == before
    assert recv(bob, message) == b"payload"


# --- replay, forward secrecy, post-compromise ------------------------------------------------------


def test_duplicates_raise_replay_in_every_chain() -> None:
    alice, bob = pair()
    first = send(alice, b"first")
    assert recv(bob, first) == b"first"
    for _ in range(3):
        recv(alice, send(bob, b"step"))
        recv(bob, send(alice, b"step"))
    for message in (first,):
        before = bob.encode()
        with pytest.raises(Replay) as info:
            recv(bob, message)
        assert info.value.message_id == message[:32]
        assert bob.encode() == before


def test_stolen_current_state_cannot_read_earlier_messages() -> None:
    alice, bob = pair()
    sent = []
    for i in range(6):
        message = send(alice, b"a%d" % i)
        sent.append(message)
        assert recv(bob, message) == b"a%d" % i
        if i % 2:
            recv(alice, send(bob, b"ack"))
    stolen = Ratchet.decode(bob.encode())
    for message in sent:
        with pytest.raises(Replay):
            recv(stolen, message)


def test_stolen_old_state_cannot_read_after_dh_steps_both_ways() -> None:
    alice, bob = talking()
    stolen = Ratchet.decode(bob.encode())
    # The thief sees every message afterwards and runs its copy on them.
    seen = [send(alice, b"before")]
    assert recv(bob, seen[0]) == b"before"
    reply = send(bob, b"bob steps")
    assert recv(alice, reply) == b"bob steps"
    after = [send(alice, b"secret %d" % i) for i in range(3)]
    for message in after:
        assert recv(bob, message).startswith(b"secret")  # type: ignore[union-attr]
    assert recv(stolen, seen[0]) == b"before"  # not yet healed: the same chain as at the theft
    for message in after:
        try:
            result = recv(stolen, message)
        except (DecryptionFailed, Replay):
            continue
        assert result is None


# --- bounds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chain", ["current", "next", "previous"])
def test_jump_of_a_million_is_refused_without_deriving(chain: str) -> None:
    alice, bob = talking()  # alice's next message opens a new chain at bob
    if chain == "current":
        recv(bob, send(alice, b"same chain"))
        alice._ns = 10**6
    elif chain == "next":
        alice._ns = 10**6
    else:
        recv(bob, send(alice, b"x"))
        recv(alice, send(bob, b"y"))  # alice steps again: claim her previous chain had 10**6 messages
        alice._pn = 10**6
    message = send(alice, b"far")
    before = bob.encode()
    tracemalloc.start()
    try:
        with pytest.raises(TooManySkipped) as info:
            recv(bob, message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the jump counts from the receiving chain's position: 1 in the current or previous chain, 0 in a new one
    assert info.value.limit == MAX_SKIP and info.value.jump == 10**6 - (chain != "next")
    assert peak < 64 * 1024
    assert bob.encode() == before


def test_jump_of_exactly_max_skip_is_accepted() -> None:
    alice, bob = talking()
    messages = [send(alice, b"%d" % i) for i in range(MAX_SKIP + 2)]
    with pytest.raises(TooManySkipped):
        recv(bob, messages[MAX_SKIP + 1])
    assert recv(bob, messages[MAX_SKIP]) == b"%d" % MAX_SKIP
    assert recv(bob, messages[0]) == b"0"
    assert recv(bob, messages[MAX_SKIP + 1]) == b"%d" % (MAX_SKIP + 1)


def test_max_skipped_evicts_oldest_first_and_counts() -> None:
    alice, bob = talking()
    messages = [send(alice, b"%d" % i) for i in range(2501)]
    for index in (1000, 2000, 2500):
        assert recv(bob, messages[index]) == b"%d" % index
    # skipped 0..999, 1001..1999, 2001..2499: 2498 keys, 498 over the bound
    assert bob.skipped_evicted == 2498 - MAX_SKIPPED == 498
    for index in (0, 100, 497):
        with pytest.raises(Replay):
            recv(bob, messages[index])
    for index in (498, 999, 1001, 2499):
        assert recv(bob, messages[index]) == b"%d" % index
    assert len(Ratchet.decode(bob.encode())._skipped) == MAX_SKIPPED - 4


def test_skipped_keys_of_old_chains_survive_steps_and_go_with_their_header_key() -> None:
    alice, bob = talking()
    late = send(alice, b"late")
    assert recv(bob, send(alice, b"on time")) == b"on time"
    for _ in range(3):
        recv(alice, send(bob, b"step"))
        recv(bob, send(alice, b"step"))
    assert recv(bob, late) == b"late"  # found through a retired header key

    late = send(alice, b"too late")
    assert recv(bob, send(alice, b"on time")) == b"on time"
    for _ in range(MAX_RETIRED_HEADER_KEYS + 1):
        recv(alice, send(bob, b"step"))
        recv(bob, send(alice, b"step"))
    assert bob.skipped_evicted == 1
    assert recv(bob, late) is None  # its chain's header key is forgotten


def test_skipped_keys_expire() -> None:
    alice, bob = talking()
    early, late, third = send(alice, b"early"), send(alice, b"late"), send(alice, b"third")
    assert recv(bob, third, wall_now=NOW) == b"third"
    assert recv(bob, early, wall_now=NOW + SKIPPED_TTL) == b"early"  # still within its lifetime
    before = bob.encode()
    with pytest.raises(Replay):
        recv(bob, late, wall_now=NOW + SKIPPED_TTL + 1)
    assert bob.encode() == before  # the expired key is still stored: a failed decrypt changes nothing
    assert SKIPPED_TTL == MAX_TTL + CLOCK_SKEW
    # any successful decrypt later drops what expired
    assert recv(bob, send(alice, b"now"), wall_now=NOW + SKIPPED_TTL + 1) == b"now"
    assert Ratchet.decode(bob.encode())._skipped == {}


# --- storage --------------------------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    alice, bob = talking()
    for ratchet in (alice, bob, *pair()):
        data = ratchet.encode()
        assert Ratchet.decode(data).encode() == data
    skipped = [send(alice, b"%d" % i) for i in range(5)]
    recv(bob, send(alice, b"last"))
    data = bob.encode()
    copy = Ratchet.decode(data)
    assert copy.encode() == data
    assert [recv(copy, m) for m in skipped] == [b"%d" % i for i in range(5)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_garbage_is_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Ratchet.decode(data)


_VALID_STATE = talking()[1].encode()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_VALID_STATE) - 1), st.integers(1, 255), st.booleans())
def test_decode_of_a_changed_state_is_a_state_or_decode_error(index: int, xor: int, truncate: bool) -> None:
    data = _VALID_STATE[:index] if truncate else bytearray(_VALID_STATE)
    if not truncate:
        data[index] ^= xor  # type: ignore[index]
    try:
        ratchet = Ratchet.decode(bytes(data))
    except DecodeError:
        return
    assert ratchet.encode() == bytes(data)


# --- interleavings --------------------------------------------------------------------------------


class Conversation(RuleBasedStateMachine):
    """Alice and Bob talk over a network that loses, duplicates and reorders, and restart at will."""

    def __init__(self) -> None:
        super().__init__()
        self.random_bytes = random.Random(0).randbytes
        self.ratchets = dict(zip("AB", pair(self.random_bytes), strict=True))
        self.in_flight: dict[str, list[tuple[bytes, bytes]]] = {"A": [], "B": []}  # to A, to B
        self.delivered: dict[str, list[bytes]] = {"A": [], "B": []}
        self.sent = 0
        self.now = NOW

    @rule(sender=st.sampled_from("AB"), count=st.integers(1, 3))
    def send(self, sender: str, count: int) -> None:
        if sender == "B" and not self.delivered["B"]:
            with pytest.raises(SessionError):
                self.ratchets["B"].encrypt(b"x", random_bytes=self.random_bytes)
            return
        receiver = "B" if sender == "A" else "A"
        for _ in range(count):
            self.sent += 1
            plaintext = b"%s%d" % (sender.encode(), self.sent)
            message = self.ratchets[sender].encrypt(plaintext, random_bytes=self.random_bytes)
            self.in_flight[receiver].append((message, plaintext))

    def _deliver(self, receiver: str, index: int) -> None:
        message, plaintext = self.in_flight[receiver].pop(index)
        got = self.ratchets[receiver].decrypt(message, wall_now=self.now, random_bytes=self.random_bytes)
        assert got == plaintext
        self.delivered[receiver].append(message)

    @rule(receiver=st.sampled_from("AB"), count=st.integers(1, 3), data=st.data())
    def deliver(self, receiver: str, count: int, data: st.DataObject) -> None:
        for _ in range(count):
            if self.in_flight[receiver]:
                self._deliver(receiver, data.draw(st.integers(0, len(self.in_flight[receiver]) - 1)))

    @rule(receiver=st.sampled_from("AB"), data=st.data())
    def lose(self, receiver: str, data: st.DataObject) -> None:
        if self.in_flight[receiver]:
            self.in_flight[receiver].pop(data.draw(st.integers(0, len(self.in_flight[receiver]) - 1)))

    @rule(receiver=st.sampled_from("AB"), data=st.data())
    def duplicate(self, receiver: str, data: st.DataObject) -> None:
        """A message delivered before: Replay, on the live state and on a stolen copy, and no change."""
        if not self.delivered[receiver]:
            return
        message = data.draw(st.sampled_from(self.delivered[receiver]))
        ratchet = self.ratchets[receiver]
        before = ratchet.encode()
        stolen = Ratchet.decode(before)
        for target in (ratchet, stolen):
            with pytest.raises(Replay):
                target.decrypt(message, wall_now=self.now, random_bytes=self.random_bytes)
        assert ratchet.encode() == before

    @rule(side=st.sampled_from("AB"))
    def restart(self, side: str) -> None:
        data = self.ratchets[side].encode()
        self.ratchets[side] = Ratchet.decode(data)
        assert self.ratchets[side].encode() == data

    @rule(seconds=st.integers(0, 86_400))
    def wait(self, seconds: int) -> None:
        self.now += seconds

    def teardown(self) -> None:
        for receiver in "AB":
            while self.in_flight[receiver]:
                self._deliver(receiver, len(self.in_flight[receiver]) - 1)


Conversation.TestCase.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)
test_interleavings_decrypt_every_message_exactly_once = Conversation.TestCase


# --- cross-check against python-doubleratchet -----------------------------------------------------


def test_keys_match_the_doubleratchet_package() -> None:
    """Same DH key pairs and shared secret: the same root, chain and message keys in both implementations.

    ``doubleratchet`` has no header encryption, so the header keys are not compared; its root chain
    (``kdf_hkdf`` with our info) gives the first 64 bytes of our 96-byte KDF_RK_HE, and its message chain
    (``kdf_separate_hmacs`` with the constant ``0x02 0x01``: new chain key first) is our KDF_CK.
    """

    class RootKdf(kdf_hkdf.KDF):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return b"meshchat ratchet v1"

    class MessageKdf(kdf_separate_hmacs.KDF):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

    used_keys: list[bytes] = []

    class RecordingAead(AEAD):
        """Records each message key; the 'ciphertext' is the plaintext (only keys are compared)."""

        @staticmethod
        async def encrypt(plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
            used_keys.append(key)
            return plaintext

        @staticmethod
        async def decrypt(ciphertext: bytes, key: bytes, associated_data: bytes) -> bytes:
            used_keys.append(key)
            return ciphertext

    class Theirs(DoubleRatchet):
        @staticmethod
        def _build_associated_data(associated_data: bytes, header: Header) -> bytes:
            return associated_data

    rng = random.Random(15)
    secrets = {side: [rng.randbytes(32) for _ in range(10)] for side in "AB"}

    def scripted_dh(side: str) -> type[DiffieHellmanRatchet]:
        queue = list(secrets[side])

        class Scripted(DiffieHellmanRatchet):
            @staticmethod
            def _generate_priv() -> bytes:
                return queue.pop(0)

        return Scripted

    def scripted_bytes(side: str) -> Callable[[int], bytes]:
        queue = list(secrets[side])
        return lambda n: queue.pop(0) if n == 32 else os.urandom(n)

    config = {
        "root_chain_kdf": RootKdf,
        "message_chain_kdf": MessageKdf,
        "message_chain_constant": b"\x02\x01",
        "dos_protection_threshold": MAX_SKIP,
        "max_num_skipped_message_keys": MAX_SKIPPED,
        "aead": RecordingAead,
    }
    our_bytes = {"A": scripted_bytes("A"), "B": scripted_bytes("B")}
    ours = {
        "A": Ratchet.initiator(
            SK, BOB_SPK, ad=AD, shared_hka=HKA, shared_nhkb=NHKB, random_bytes=our_bytes["A"]
        ),
        "B": Ratchet.responder(SK, BOB_SPK_SECRET, ad=AD, shared_hka=HKA, shared_nhkb=NHKB),
    }
    # Who sends each message; upper case is delivered at once, lower case is held back and delivered
    # right after the sender's next delivered message (a skipped key in the same chain, or in a chain
    # the receiver has since stepped past).
    script = "AAaABbBBAaBAbABBAAB"

    async def run() -> int:
        theirs: dict[str, DoubleRatchet] = {}
        held: dict[str, list[tuple[bytes, object, bytes, bytes]]] = {"A": [], "B": []}
        delivered = 0

        async def deliver(sender: str, item: tuple[bytes, object, bytes, bytes]) -> None:
            plaintext, encrypted, message, sender_key = item
            receiver = "B" if sender == "A" else "A"
            used_keys.clear()
            if encrypted is not None:
                await theirs[receiver].decrypt_message(encrypted, AD)  # type: ignore[arg-type]
                assert used_keys == [sender_key]
            assert (
                ours[receiver].decrypt(message, wall_now=NOW, random_bytes=our_bytes[receiver]) == plaintext
            )
            for side in "AB":
                model = theirs[side].model.diffie_hellman_ratchet
                assert ours[side]._rk == model.root_chain.key
                chains = model.symmetric_key_ratchet
                assert chains.sending_chain is not None
                assert ours[side]._cks == chains.sending_chain.key
                their_ckr = None if chains.receiving_chain is None else chains.receiving_chain.key
                assert ours[side]._ckr == their_ckr

        for index, letter in enumerate(script):
            sender = letter.upper()
            plaintext = b"message %d" % index
            used_keys.clear()
            encrypted: object = None
            if not theirs:
                theirs["A"], initial = await Theirs.encrypt_initial_message(
                    diffie_hellman_ratchet_class=scripted_dh("A"),
                    shared_secret=SK,
                    recipient_ratchet_pub=BOB_SPK,
                    message=plaintext,
                    associated_data=AD,
                    **config,
                )
                theirs["B"], _ = await Theirs.decrypt_initial_message(
                    diffie_hellman_ratchet_class=scripted_dh("B"),
                    shared_secret=SK,
                    own_ratchet_priv=BOB_SPK_SECRET,
                    message=initial,
                    associated_data=AD,
                    **config,
                )
                assert used_keys[0] == used_keys[1]
            else:
                encrypted = await theirs[sender].encrypt_message(plaintext, AD)
            sender_key = used_keys[0]
            message = ours[sender].encrypt(plaintext, random_bytes=our_bytes[sender])
            # Their message key opens our body: the message keys are the same.
            body = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                message[HEADER_SIZE + 24 :],
                AD + message[:HEADER_SIZE],
                message[HEADER_SIZE : HEADER_SIZE + 24],
                sender_key,
            )
            assert body == plaintext
            item = (plaintext, encrypted, message, sender_key)
            if letter.islower():
                held[sender].append(item)
                continue
            await deliver(sender, item)
            delivered += 1
            while held[sender]:
                await deliver(sender, held[sender].pop(0))
                delivered += 1
        return delivered

    assert asyncio.run(run()) == len(script)
