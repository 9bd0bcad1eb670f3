"""Prekey bundles, this device's prekeys and the X3DH / PQXDH set-up (meshchat.sessions.prekeys, .x3dh).

Both sides agree in every variant; one-time keys work once; retired signed prekeys stop working on
time; tampered, foreign or low-order keys are refused with typed errors; every codec round-trips and
turns garbage into its typed error; and the classical agreement gives the same secret as the
independent ``x3dh`` package (python-x3dh) fed the same key pairs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools

import nacl.bindings as sodium
import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from x3dh import BaseState, IdentityKeyFormat
from x3dh.crypto_provider import HashFunction
from x3dh.models import BaseStateModel, IdentityKeyPairModel, SignedPreKeyPairModel
from x3dh.types import Bundle, Header, SecretType

from meshchat.crypto import CLOCK_SKEW, MAX_TTL
from meshchat.errors import BadBundle, DecodeError, DecryptionFailed, UnknownPrekey
from meshchat.identity import Identity
from meshchat.sessions.prekeys import (
    BUNDLE_MAX_AGE,
    MAX_BUNDLE_ONE_TIME,
    MAX_PREKEY_ID,
    MAX_RETIRED,
    ONE_TIME_POOL,
    SPK_KEEP,
    SPK_ROTATION,
    OneTimeKey,
    PrekeyBundle,
    Prekeys,
    pq_signed_message,
    spk_signed_message,
)
from meshchat.sessions.x3dh import INFO_X3DH, InitHeader, initiate, respond
from meshchat.wire.codec import pack, unpack_canonical

T0 = 1_800_000_000.0
DAY = 86_400


class Counter:
    """Deterministic ``random_bytes``: SHA-512 of a label and a counter (tests can be exact)."""

    def __init__(self, label: bytes) -> None:
        self.label = label
        self.n = 0

    def __call__(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            self.n += 1
            out += hashlib.sha512(self.label + self.n.to_bytes(8, "big")).digest()
        return out[:size]


ALICE = Identity(b"\x01" * 32)
BOB = Identity(b"\x02" * 32)
CAROL = Identity(b"\x03" * 32)
#: Small-order X25519 points (u = 0 and u = 1): every clamped scalar maps them to zero.
LOW_ORDER = (b"\x00" * 32, b"\x01" + b"\x00" * 31)


@pytest.fixture
def bob_prekeys() -> Prekeys:
    return Prekeys.create(BOB, wall_now=T0, random_bytes=Counter(b"bob"))


def without_pq(bundle: PrekeyBundle) -> PrekeyBundle:
    return dataclasses.replace(bundle, pq_id=0, pq_key=b"", pq_signature=b"")


def signed_bundle(identity: Identity, *, spk: bytes, one_time: tuple[OneTimeKey, ...] = ()) -> PrekeyBundle:
    """A bundle ``identity`` really signed, around whatever keys a test wants (low-order ones included)."""
    created = int(T0)
    return PrekeyBundle(
        identity=identity.public.ed25519,
        created=created,
        spk_id=7,
        spk=spk,
        spk_signature=identity.sign(spk_signed_message(7, created, spk)),
        pq_id=0,
        pq_key=b"",
        pq_signature=b"",
        one_time=one_time,
    )


# Both sides agree.


@pytest.mark.parametrize("one_time", [0, 1, 5])
@pytest.mark.parametrize("pq", [True, False])
def test_both_sides_agree(bob_prekeys: Prekeys, one_time: int, pq: bool) -> None:
    bundle = bob_prekeys.bundle(BOB, one_time=one_time)
    if not pq:
        bundle = without_pq(bundle)
    init = initiate(ALICE, BOB.public, bundle, wall_now=T0 + DAY, random_bytes=Counter(b"alice"))
    header = InitHeader.decode(init.header.encode())
    assert header == init.header
    assert (header.spk_id, header.pq_id) == (
        bob_prekeys.current_spk_id,
        bob_prekeys.current_spk_id if pq else 0,
    )
    assert (header.one_time_id != 0) == (one_time > 0)
    assert len(header.pq_ciphertext) == (1088 if pq else 0)
    secret, ad, ratchet_secret = respond(BOB, bob_prekeys, ALICE.public, header)
    assert secret == init.shared_secret and len(secret) == 32
    assert ad == init.ad == ALICE.public.ed25519 + BOB.public.ed25519
    assert init.peer_ratchet_key == bundle.spk == sodium.crypto_scalarmult_base(ratchet_secret)


def test_identity_only_when_no_bundle() -> None:
    prekeys = Prekeys.create(BOB, wall_now=T0, random_bytes=Counter(b"bob"))
    init = initiate(ALICE, BOB.public, None, wall_now=T0, random_bytes=Counter(b"alice"))
    assert (init.header.spk_id, init.header.one_time_id, init.header.pq_id) == (0, 0, 0)
    assert init.peer_ratchet_key == BOB.public.x25519
    secret, ad, ratchet_secret = respond(BOB, prekeys, ALICE.public, init.header)
    assert (secret, ad) == (init.shared_secret, init.ad)
    assert ratchet_secret == BOB.x25519_secret
    assert len(prekeys.one_time_ids) == ONE_TIME_POOL  # nothing consumed


def test_a_stale_bundle_falls_back_to_identity_only(bob_prekeys: Prekeys) -> None:
    bundle = bob_prekeys.bundle(BOB, one_time=3)
    fresh = initiate(ALICE, BOB.public, bundle, wall_now=T0 + BUNDLE_MAX_AGE, random_bytes=Counter(b"a"))
    stale = initiate(ALICE, BOB.public, bundle, wall_now=T0 + BUNDLE_MAX_AGE + 1, random_bytes=Counter(b"a"))
    assert fresh.header.spk_id == bundle.spk_id
    assert stale.header.spk_id == 0 and stale.peer_ratchet_key == BOB.public.x25519
    assert respond(BOB, bob_prekeys, ALICE.public, stale.header)[0] == stale.shared_secret


def test_every_set_up_has_its_own_secret(bob_prekeys: Prekeys) -> None:
    bundle = bob_prekeys.bundle(BOB)
    secrets = {
        initiate(ALICE, BOB.public, bundle, wall_now=T0, random_bytes=Counter(bytes([i]))).shared_secret
        for i in range(4)
    }
    assert len(secrets) == 4


def test_the_kem_secret_enters_the_key(bob_prekeys: Prekeys) -> None:
    """A changed ciphertext decapsulates (ML-KEM's implicit rejection) to another secret: SK differs."""
    init = initiate(ALICE, BOB.public, bob_prekeys.bundle(BOB), wall_now=T0, random_bytes=Counter(b"a"))
    ct = bytearray(init.header.pq_ciphertext)
    ct[100] ^= 1
    forged = dataclasses.replace(init.header, pq_ciphertext=bytes(ct))
    assert respond(BOB, bob_prekeys, ALICE.public, forged)[0] != init.shared_secret
    # The same set-up without the KEM (same ephemeral) is yet another key: the info strings differ too.
    classical = initiate(
        ALICE, BOB.public, without_pq(bob_prekeys.bundle(BOB)), wall_now=T0, random_bytes=Counter(b"a")
    )
    assert classical.header.ephemeral == init.header.ephemeral
    assert classical.shared_secret != init.shared_secret


def test_the_wrong_initiator_gets_another_secret(bob_prekeys: Prekeys) -> None:
    init = initiate(ALICE, BOB.public, bob_prekeys.bundle(BOB), wall_now=T0, random_bytes=Counter(b"a"))
    secret, ad, _ = respond(BOB, bob_prekeys, CAROL.public, init.header)
    assert secret != init.shared_secret and ad != init.ad


# One-time keys are used once; retired signed prekeys stop working.


def test_a_one_time_key_works_once(bob_prekeys: Prekeys) -> None:
    init = initiate(
        ALICE, BOB.public, bob_prekeys.bundle(BOB, one_time=1), wall_now=T0, random_bytes=Counter(b"a")
    )
    used = init.header.one_time_id
    assert used == bob_prekeys.one_time_ids[0]
    respond(BOB, bob_prekeys, ALICE.public, init.header)
    assert used not in bob_prekeys.one_time_ids
    assert len(bob_prekeys.one_time_ids) == ONE_TIME_POOL - 1
    with pytest.raises(UnknownPrekey) as caught:
        respond(BOB, bob_prekeys, ALICE.public, init.header)
    assert (caught.value.kind, caught.value.prekey_id) == ("one-time", used)
    # The consumption survives a restart.
    assert used not in Prekeys.decode(bob_prekeys.encode()).one_time_ids


def test_a_failed_set_up_consumes_nothing(bob_prekeys: Prekeys) -> None:
    init = initiate(
        ALICE, BOB.public, bob_prekeys.bundle(BOB, one_time=1), wall_now=T0, random_bytes=Counter(b"a")
    )
    for header in (
        dataclasses.replace(init.header, spk_id=99),
        dataclasses.replace(init.header, pq_id=99),
        dataclasses.replace(init.header, ephemeral=LOW_ORDER[1]),
    ):
        with pytest.raises((UnknownPrekey, DecryptionFailed)):
            respond(BOB, bob_prekeys, ALICE.public, header)
    assert init.header.one_time_id in bob_prekeys.one_time_ids


def test_respond_on_a_copy_leaves_the_original(bob_prekeys: Prekeys) -> None:
    init = initiate(
        ALICE, BOB.public, bob_prekeys.bundle(BOB, one_time=1), wall_now=T0, random_bytes=Counter(b"a")
    )
    trial = bob_prekeys.copy()
    respond(BOB, trial, ALICE.public, init.header)
    assert init.header.one_time_id in bob_prekeys.one_time_ids
    assert init.header.one_time_id not in trial.one_time_ids


def test_retired_prekeys_answer_until_spk_keep_then_unknown(bob_prekeys: Prekeys) -> None:
    init = initiate(ALICE, BOB.public, bob_prekeys.bundle(BOB), wall_now=T0, random_bytes=Counter(b"a"))
    old_id = init.header.spk_id
    rng = Counter(b"maintain")
    assert bob_prekeys.maintain(BOB, wall_now=T0 + SPK_ROTATION, random_bytes=rng)
    assert bob_prekeys.current_spk_id != old_id and old_id in bob_prekeys.signed_ids
    assert respond(BOB, bob_prekeys.copy(), ALICE.public, init.header)[0] == init.shared_secret
    bob_prekeys.maintain(BOB, wall_now=T0 + SPK_KEEP, random_bytes=rng)
    assert old_id in bob_prekeys.signed_ids  # exactly SPK_KEEP old: still kept
    assert bob_prekeys.maintain(BOB, wall_now=T0 + SPK_KEEP + 1, random_bytes=rng)
    assert old_id not in bob_prekeys.signed_ids
    with pytest.raises(UnknownPrekey) as caught:
        respond(BOB, bob_prekeys, ALICE.public, init.header)
    assert (caught.value.kind, caught.value.prekey_id) == ("signed", old_id)
    # A header naming a live signed prekey but the forgotten PQ prekey.
    mixed = dataclasses.replace(init.header, spk_id=bob_prekeys.current_spk_id)
    with pytest.raises(UnknownPrekey) as caught:
        respond(BOB, bob_prekeys, ALICE.public, mixed)
    assert (caught.value.kind, caught.value.prekey_id) == ("post-quantum", old_id)


def test_spk_keep_covers_the_oldest_usable_bundle_in_a_mailbox() -> None:
    assert BUNDLE_MAX_AGE + MAX_TTL + CLOCK_SKEW < SPK_KEEP == 92 * DAY
    assert MAX_RETIRED == 14


def test_maintain_rotates_on_time_and_reports_changes(bob_prekeys: Prekeys) -> None:
    rng = Counter(b"m")
    assert not bob_prekeys.maintain(BOB, wall_now=T0 + SPK_ROTATION - 1, random_bytes=rng)
    assert bob_prekeys.current_spk_id == 1
    blob = bob_prekeys.encode()
    assert bob_prekeys.maintain(BOB, wall_now=T0 + SPK_ROTATION, random_bytes=rng)
    assert bob_prekeys.current_spk_id == 2 and bob_prekeys.signed_ids == (2, 1)
    assert bob_prekeys.encode() != blob
    bundle = bob_prekeys.bundle(BOB)
    bundle.verify()
    assert (bundle.spk_id, bundle.pq_id, bundle.created) == (2, 2, int(T0 + SPK_ROTATION))


@pytest.mark.parametrize("step_days", [1, 7, 8, 30])
def test_retained_generations_stay_bounded(step_days: int) -> None:
    """Never more than MAX_RETIRED + 1 generations, yet every one made within SPK_KEEP is still there."""
    prekeys = Prekeys.create(BOB, wall_now=T0, random_bytes=Counter(b"b"))
    made = {1: int(T0)}
    rng = Counter(b"m")
    for k in range(1, 120):
        now = int(T0) + k * step_days * DAY
        prekeys.maintain(BOB, wall_now=now, random_bytes=rng)
        made.setdefault(prekeys.current_spk_id, prekeys.bundle(BOB).created)
        assert len(prekeys.signed_ids) <= MAX_RETIRED + 1
        assert set(prekeys.signed_ids) == {i for i, created in made.items() if now - created <= SPK_KEEP}
    assert Prekeys.decode(prekeys.encode()).signed_ids == prekeys.signed_ids


def test_a_clock_stepping_back_and_forth_cannot_grow_the_retired_list() -> None:
    prekeys = Prekeys.create(BOB, wall_now=T0, random_bytes=Counter(b"b"))
    rng = Counter(b"m")
    for k in range(60):
        # Alternate far ahead and back: every call ahead rotates; every retired key looks young.
        prekeys.maintain(BOB, wall_now=T0 + (k + 1) * SPK_ROTATION * (1 if k % 2 else 20), random_bytes=rng)
        assert len(prekeys.signed_ids) <= MAX_RETIRED + 1


def test_a_generation_made_under_a_clock_far_ahead_is_replaced(bob_prekeys: Prekeys) -> None:
    rng = Counter(b"m")
    ahead = T0 + 365 * DAY
    bob_prekeys.maintain(BOB, wall_now=ahead, random_bytes=rng)
    assert bob_prekeys.bundle(BOB).created == int(ahead)
    assert not bob_prekeys.maintain(BOB, wall_now=ahead - SPK_ROTATION + 1, random_bytes=rng)
    assert bob_prekeys.maintain(BOB, wall_now=ahead - SPK_ROTATION, random_bytes=rng)
    assert bob_prekeys.bundle(BOB).created == int(ahead - SPK_ROTATION)


def test_the_one_time_pool_is_topped_up_below_half(bob_prekeys: Prekeys) -> None:
    rng = Counter(b"m")
    for key_id in bob_prekeys.one_time_ids[: ONE_TIME_POOL // 2]:
        bob_prekeys.consume_one_time(key_id)
    assert not bob_prekeys.maintain(BOB, wall_now=T0, random_bytes=rng)  # exactly half: not yet
    bob_prekeys.consume_one_time(bob_prekeys.one_time_ids[0])
    assert bob_prekeys.maintain(BOB, wall_now=T0, random_bytes=rng)
    ids = bob_prekeys.one_time_ids
    assert len(ids) == ONE_TIME_POOL and list(ids) == sorted(set(ids))
    assert max(ids) == ONE_TIME_POOL + ONE_TIME_POOL // 2 + 1  # fresh ids, never a used one again


def test_one_time_ids_wrap_around_past_u32_skipping_live_ones(bob_prekeys: Prekeys) -> None:
    for key_id in bob_prekeys.one_time_ids[49:]:
        bob_prekeys.consume_one_time(key_id)  # ids 1..49 stay live
    fields = unpack_canonical(bob_prekeys.encode(), what="t", limit=1 << 20)
    assert isinstance(fields, dict)
    fields[5] = MAX_PREKEY_ID - 2  # the last id handed out
    prekeys = Prekeys.decode(pack(fields))
    assert prekeys.maintain(BOB, wall_now=T0, random_bytes=Counter(b"m"))
    assert prekeys.one_time_ids == (*range(1, 99), MAX_PREKEY_ID - 1, MAX_PREKEY_ID)
    assert Prekeys.decode(prekeys.encode()).one_time_ids == prekeys.one_time_ids


def test_bundle_argument_checks(bob_prekeys: Prekeys) -> None:
    assert len(bob_prekeys.bundle(BOB, one_time=MAX_BUNDLE_ONE_TIME).one_time) == MAX_BUNDLE_ONE_TIME
    with pytest.raises(ValueError):
        bob_prekeys.bundle(BOB, one_time=MAX_BUNDLE_ONE_TIME + 1)
    with pytest.raises(ValueError):
        bob_prekeys.bundle(CAROL)
    with pytest.raises(ValueError):
        bob_prekeys.maintain(CAROL, wall_now=T0, random_bytes=Counter(b"x"))
    with pytest.raises(ValueError):
        respond(
            CAROL,
            bob_prekeys,
            ALICE.public,
            InitHeader.decode(
                initiate(ALICE, BOB.public, None, wall_now=T0, random_bytes=Counter(b"a")).header.encode()
            ),
        )


# Tampered, foreign and low-order keys.


def _flip(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    "change",
    [
        {"spk": "flip"},
        {"spk_signature": "flip"},
        {"pq_key": "flip"},
        {"pq_signature": "flip"},
        {"created": 1},
        {"spk_id": 1},
        {"pq_id": 1},
    ],
)
def test_tampered_bundles_are_refused(bob_prekeys: Prekeys, change: dict[str, object]) -> None:
    bundle = bob_prekeys.bundle(BOB, one_time=2)
    bundle.verify()
    name, how = next(iter(change.items()))
    value = getattr(bundle, name)
    new = _flip(value, 5) if how == "flip" else value + how
    tampered = dataclasses.replace(bundle, **{name: new})
    with pytest.raises(BadBundle, match="signature"):
        tampered.verify()
    with pytest.raises(BadBundle):
        initiate(ALICE, BOB.public, tampered, wall_now=T0, random_bytes=Counter(b"a"))


def test_a_bundle_of_another_identity_is_refused(bob_prekeys: Prekeys) -> None:
    carols = Prekeys.create(CAROL, wall_now=T0, random_bytes=Counter(b"c")).bundle(CAROL)
    for bundle in (carols, dataclasses.replace(carols, created=int(T0 - BUNDLE_MAX_AGE - DAY))):
        with pytest.raises(BadBundle, match="another identity"):
            initiate(ALICE, BOB.public, bundle, wall_now=T0, random_bytes=Counter(b"a"))
    # Carol's keys relabelled as Bob's: Bob's key did not sign them.
    relabelled = dataclasses.replace(carols, identity=BOB.public.ed25519)
    with pytest.raises(BadBundle, match="signature"):
        initiate(ALICE, BOB.public, relabelled, wall_now=T0, random_bytes=Counter(b"a"))


def test_an_identity_that_is_no_usable_key_is_refused(bob_prekeys: Prekeys) -> None:
    bundle = dataclasses.replace(bob_prekeys.bundle(BOB), identity=b"\x00" * 32)
    with pytest.raises(BadBundle, match="usable"):
        bundle.verify()


@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_keys_in_a_bundle_are_refused(point: bytes) -> None:
    good = sodium.crypto_scalarmult_base(b"\x05" * 32)
    for bundle in (
        signed_bundle(BOB, spk=point),
        signed_bundle(BOB, spk=good, one_time=(OneTimeKey(key_id=1, key=point),)),
    ):
        bundle.verify()  # really signed: only the DH output gives it away
        with pytest.raises(BadBundle, match="low-order"):
            initiate(ALICE, BOB.public, bundle, wall_now=T0, random_bytes=Counter(b"a"))


@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_ephemeral_keys_are_refused(bob_prekeys: Prekeys, point: bytes) -> None:
    full = initiate(ALICE, BOB.public, bob_prekeys.bundle(BOB), wall_now=T0, random_bytes=Counter(b"a"))
    bare = initiate(ALICE, BOB.public, None, wall_now=T0, random_bytes=Counter(b"a"))
    for header in (full.header, bare.header):
        with pytest.raises(DecryptionFailed):
            respond(BOB, bob_prekeys, ALICE.public, dataclasses.replace(header, ephemeral=point))


def test_a_signed_pq_key_that_is_not_ml_kem_is_refused(bob_prekeys: Prekeys) -> None:
    bundle = bob_prekeys.bundle(BOB)
    bad_key = b"\xff" * 1184  # coefficients >= q: FIPS 203's modulus check fails
    forged = dataclasses.replace(
        bundle,
        pq_key=bad_key,
        pq_signature=BOB.sign(pq_signed_message(bundle.pq_id, bundle.created, bad_key)),
    )
    forged.verify()
    with pytest.raises(BadBundle, match="ML-KEM"):
        initiate(ALICE, BOB.public, forged, wall_now=T0, random_bytes=Counter(b"a"))


def test_a_malformed_ciphertext_in_respond_is_a_decode_error(bob_prekeys: Prekeys) -> None:
    init = initiate(ALICE, BOB.public, bob_prekeys.bundle(BOB), wall_now=T0, random_bytes=Counter(b"a"))
    header = dataclasses.replace(init.header)
    object.__setattr__(header, "pq_ciphertext", b"\x00" * 1000)  # past the constructor's check
    with pytest.raises(DecodeError):
        respond(BOB, bob_prekeys, ALICE.public, header)


# Codecs: round trips, field checks, garbage.

ids = st.integers(1, MAX_PREKEY_ID)
keys = st.binary(min_size=32, max_size=32)
one_time_keys = st.lists(st.tuples(ids, keys), max_size=MAX_BUNDLE_ONE_TIME, unique_by=lambda t: t[0]).map(
    lambda pairs: tuple(OneTimeKey(key_id=i, key=k) for i, k in sorted(pairs))
)


@st.composite
def bundles(draw: st.DrawFn) -> PrekeyBundle:
    pq_id = draw(st.integers(0, MAX_PREKEY_ID))
    return PrekeyBundle(
        identity=draw(keys),
        created=draw(st.integers(0, 2**64 - 1)),
        spk_id=draw(ids),
        spk=draw(keys),
        spk_signature=draw(st.binary(min_size=64, max_size=64)),
        pq_id=pq_id,
        pq_key=draw(st.binary(min_size=1184, max_size=1184)) if pq_id else b"",
        pq_signature=draw(st.binary(min_size=64, max_size=64)) if pq_id else b"",
        one_time=draw(one_time_keys),
    )


@st.composite
def headers(draw: st.DrawFn) -> InitHeader:
    spk_id = draw(st.integers(0, MAX_PREKEY_ID))
    pq_id = draw(st.integers(0, MAX_PREKEY_ID)) if spk_id else 0
    return InitHeader(
        ephemeral=draw(keys.map(lambda k: k[:-1] + bytes([k[-1] & 0x7F]))),  # X25519's top bit is unused
        spk_id=spk_id,
        one_time_id=draw(st.integers(0, MAX_PREKEY_ID)) if spk_id else 0,
        pq_id=pq_id,
        pq_ciphertext=draw(st.binary(min_size=1088, max_size=1088)) if pq_id else b"",
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(bundles())
def test_bundle_round_trip(bundle: PrekeyBundle) -> None:
    assert PrekeyBundle.decode(bundle.encode()) == bundle


@settings(max_examples=100, deadline=None)
@given(headers())
def test_header_round_trip(header: InitHeader) -> None:
    data = header.encode()
    assert len(data) <= 1200
    assert InitHeader.decode(data) == header


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=7000))
@example(b"")
@example(b"\xc0")
@example(pack({1: 1}))
def test_garbage_is_a_bad_bundle(data: bytes) -> None:
    with contextlib.suppress(BadBundle):
        PrekeyBundle.decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1300))
@example(pack({1: 1, 2: b"", 3: 0, 4: 0, 5: 0, 6: b""}))
def test_garbage_is_a_bad_header(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        InitHeader.decode(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=5000))
def test_garbage_is_bad_prekeys(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Prekeys.decode(data)


BOB_BUNDLE = Prekeys.create(BOB, wall_now=T0, random_bytes=Counter(b"bundle")).bundle(BOB, one_time=3)


@settings(max_examples=150, deadline=None)
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_changed_bit_of_a_bundle_is_refused_unless_a_one_time_key(position: int, bit: int) -> None:
    """Bundles carry one-time keys unsigned (as X3DH does); every other bit is bound by a signature."""
    bundle = BOB_BUNDLE
    data = bytearray(bundle.encode())
    data[position % len(data)] ^= 1 << bit
    try:
        changed = PrekeyBundle.decode(bytes(data))
    except BadBundle:
        return
    try:
        changed.verify()
    except BadBundle:
        return
    assert dataclasses.replace(changed, one_time=bundle.one_time) == bundle
    assert changed.one_time != bundle.one_time


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (4, 0, "signed prekey id"),
        (4, 2**32, "signed prekey id"),
        (4, True, "signed prekey id"),
        (3, -1, "created"),
        (5, b"\x00" * 31, "signed prekey must be"),
        (6, b"\x00" * 63, "signature must be 64"),
        (7, 0, "post-quantum prekey must be"),  # id 0 with a key present
        (8, b"\x00" * 1183, "post-quantum prekey must be"),
        (2, "x" * 32, "identity"),
        (1, 2, "version"),
        (10, b"\x00" * 35, "records"),
        (10, (b"\x00" * 3 + b"\x01" + b"\x00" * 32) * 101, "more than 100"),
        (10, b"\x00" * 36, "one-time key id"),  # id 0
        (10, (b"\x00" * 3 + b"\x02" + b"\x00" * 32) + (b"\x00" * 3 + b"\x01" + b"\x00" * 32), "ascending"),
        (10, (b"\x00" * 3 + b"\x01" + b"\x00" * 32) * 2, "ascending"),
    ],
)
def test_bundle_fields_are_checked(field: int, value: object, problem: str) -> None:
    fields = {
        1: 1,
        2: BOB_BUNDLE.identity,
        3: BOB_BUNDLE.created,
        4: BOB_BUNDLE.spk_id,
        5: BOB_BUNDLE.spk,
        6: BOB_BUNDLE.spk_signature,
        7: BOB_BUNDLE.pq_id,
        8: BOB_BUNDLE.pq_key,
        9: BOB_BUNDLE.pq_signature,
        10: b"",
    }
    assert PrekeyBundle.decode(pack(fields)) == dataclasses.replace(BOB_BUNDLE, one_time=())
    fields[field] = value
    with pytest.raises(BadBundle, match=problem):
        PrekeyBundle.decode(pack(fields))
    del fields[field]
    with pytest.raises(BadBundle, match="fields 1 to 10"):
        PrekeyBundle.decode(pack(fields))


def test_an_oversized_bundle_is_a_bad_bundle() -> None:
    with pytest.raises(BadBundle):
        PrekeyBundle.decode(b"\x00" * 7000)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"ephemeral": b"\x00" * 31}, "ephemeral"),
        ({"spk_id": 2**32}, "ids"),
        ({"one_time_id": -1}, "ids"),
        ({"pq_id": True}, "ids"),
        ({"spk_id": 0}, "identity-only"),
        ({"pq_ciphertext": b""}, "ciphertext"),
        ({"pq_id": 0}, "ciphertext"),
    ],
)
def test_header_fields_are_checked(changes: dict[str, object], problem: str) -> None:
    good = {
        "ephemeral": b"\x09" * 32,
        "spk_id": 1,
        "one_time_id": 2,
        "pq_id": 3,
        "pq_ciphertext": b"\x00" * 1088,
    }
    InitHeader(**good)
    with pytest.raises(DecodeError, match=problem):
        InitHeader(**(good | changes))
    as_map = dict(zip(range(2, 7), (good | changes).values(), strict=True))
    with pytest.raises(DecodeError):
        InitHeader.decode(pack({1: 1, **as_map}))


def test_prekeys_round_trip_keeps_every_secret() -> None:
    rng = Counter(b"p")
    prekeys = Prekeys.create(BOB, wall_now=T0, random_bytes=rng)
    for k in range(1, 20):
        prekeys.maintain(BOB, wall_now=T0 + k * SPK_ROTATION, random_bytes=rng)
        for key_id in prekeys.one_time_ids[:7]:
            prekeys.consume_one_time(key_id)
    again = Prekeys.decode(prekeys.encode())
    assert again.encode() == prekeys.encode()
    assert again.signed_ids == prekeys.signed_ids and again.one_time_ids == prekeys.one_time_ids
    for spk_id in prekeys.signed_ids:
        assert again.signed_secret(spk_id) == prekeys.signed_secret(spk_id)
        assert again.pq_secret(spk_id).private_bytes_raw() == prekeys.pq_secret(spk_id).private_bytes_raw()
    assert again.bundle(BOB, one_time=5) == prekeys.bundle(BOB, one_time=5)


def test_prekeys_with_too_many_generations_are_refused() -> None:
    rng = Counter(b"p")
    prekeys = Prekeys.create(BOB, wall_now=T0, random_bytes=rng)
    for k in range(1, 40):
        prekeys.maintain(BOB, wall_now=T0 + k * SPK_ROTATION * (1 if k % 2 else 20), random_bytes=rng)
    blob = prekeys.encode()
    fields = unpack_canonical(blob, what="t", limit=1 << 20)
    assert isinstance(fields, dict)
    gens = fields[3]
    fields[3] = [dict(g) for g in itertools.islice(itertools.cycle(gens), MAX_RETIRED + 2)]
    with pytest.raises(DecodeError):
        Prekeys.decode(pack(fields))


def test_pq_prekeys_derive_from_their_stored_seed(bob_prekeys: Prekeys) -> None:
    bundle = bob_prekeys.bundle(BOB)
    secret = bob_prekeys.pq_secret(bundle.pq_id)
    assert isinstance(secret, MLKEM768PrivateKey)
    assert secret.public_key().public_bytes_raw() == bundle.pq_key


# Cross-check with python-x3dh (the `x3dh` package on PyPI), an independent X3DH implementation.


class _TheirState:
    """python-x3dh's ``BaseState`` with our identity key pair, signed prekey and one-time prekeys injected.

    Configured to match ours: SHA-256, info ``INFO_X3DH``, identity keys in ``ED_25519`` form (it
    converts them to X25519 with the same birational map as libsodium), and a public-key encoding that
    is the raw 32 bytes. What differs, and why it does not matter for the secret:

    - Signatures: python-x3dh signs the encoded signed prekey alone with XEdDSA-style Ed25519; ours
      sign a domain string, the id and the creation time too. Signatures are checked before the key
      agreement and never enter the KDF, so the secret is the same. (We hand it a plain Ed25519
      signature of the raw prekey by our identity, which its verifier accepts: our identity keys are
      ordinary Ed25519 keys.)
    - Associated data: X3DH leaves ``Encode`` to the application (the spec suggests a curve byte);
      with the raw-key encoding configured here its AD is ``IK_A || IK_B`` like ours, so the tests
      compare it too; with another encoding only AD would change, not SK.
    - Prekeys are named by their public keys in its header, by ids in ours: a mapping, not an input.
    - It has no ML-KEM, so only the classical agreement (``pq_id`` 0) is compared.
    """

    def __init__(self, identity: Identity, spk_secret: bytes, one_time_secrets: frozenset[bytes]) -> None:
        class State(BaseState):
            @staticmethod
            def _encode_public_key(key_format: IdentityKeyFormat, pub: bytes) -> bytes:
                return pub

        spk = sodium.crypto_scalarmult_base(spk_secret)
        model = BaseStateModel(
            identity_key=IdentityKeyPairModel(secret=identity.seed, secret_type=SecretType.SEED),
            signed_pre_key=SignedPreKeyPairModel(priv=spk_secret, sig=identity.sign(spk), timestamp=int(T0)),
            old_signed_pre_key=None,
            pre_keys=one_time_secrets,
        )
        self.state = State.from_model(model, IdentityKeyFormat.ED_25519, HashFunction.SHA_256, INFO_X3DH)


@pytest.mark.parametrize("with_one_time", [False, True])
async def test_our_initiation_matches_x3dh_package_response(
    bob_prekeys: Prekeys, with_one_time: bool
) -> None:
    """Our initiate, python-x3dh's passive side with Bob's keys: same SK and AD (see _TheirState)."""
    bundle = without_pq(bob_prekeys.bundle(BOB, one_time=1 if with_one_time else 0))
    init = initiate(ALICE, BOB.public, bundle, wall_now=T0, random_bytes=Counter(b"a"))
    spk_secret = bob_prekeys.signed_secret(bundle.spk_id)
    one_time = frozenset(bob_prekeys.one_time_secret(i) for i in bob_prekeys.one_time_ids[:3])
    theirs = _TheirState(BOB, spk_secret, one_time).state
    header = Header(
        identity_key=ALICE.public.ed25519,
        ephemeral_key=init.header.ephemeral,
        signed_pre_key=bundle.spk,
        pre_key=bundle.one_time[0].key if with_one_time else None,
    )
    secret, ad, _ = await theirs.get_shared_secret_passive(header, require_pre_key=False)
    assert secret == init.shared_secret
    assert ad == init.ad


@pytest.mark.parametrize("with_one_time", [False, True])
async def test_x3dh_package_initiation_matches_our_response(
    bob_prekeys: Prekeys, with_one_time: bool
) -> None:
    """python-x3dh's active side (its own ephemeral key), our respond: same SK and AD (see _TheirState)."""
    spk_id = bob_prekeys.current_spk_id
    spk = sodium.crypto_scalarmult_base(bob_prekeys.signed_secret(spk_id))
    public_one_time = {
        sodium.crypto_scalarmult_base(bob_prekeys.one_time_secret(i)): i for i in bob_prekeys.one_time_ids[:5]
    }
    alice = _TheirState(ALICE, b"\x11" * 32, frozenset()).state
    their_bundle = Bundle(
        identity_key=BOB.public.ed25519,
        signed_pre_key=spk,
        signed_pre_key_sig=BOB.sign(spk),  # plain Ed25519 by our identity: its verifier accepts it
        pre_keys=frozenset(public_one_time) if with_one_time else frozenset(),
    )
    secret, ad, header = await alice.get_shared_secret_active(their_bundle, require_pre_key=False)
    ours = InitHeader(
        ephemeral=header.ephemeral_key,
        spk_id=spk_id,
        one_time_id=public_one_time[header.pre_key] if header.pre_key is not None else 0,
        pq_id=0,
        pq_ciphertext=b"",
    )
    assert (ours.one_time_id != 0) == with_one_time
    our_secret, our_ad, _ = respond(BOB, bob_prekeys, ALICE.public, ours)
    assert our_secret == secret
    assert our_ad == ad
    if with_one_time:
        assert ours.one_time_id not in bob_prekeys.one_time_ids
