"""Known-answer tests: published vectors, and independent arithmetic for what has no published vector.

- RFC 8032 section 7.1 (Ed25519): TEST 1, TEST 2, TEST 3 and TEST SHA(abc).
- RFC 7748 section 5.2 (X25519 scalar multiplication, including the 1- and 1,000-iteration vectors) and
  section 6.1 (Diffie-Hellman), through the same libsodium calls ``meshchat.crypto.seal`` makes.
- The Ed25519 -> X25519 conversion meshchat relies on, checked against a pure-Python computation that
  does not touch libsodium: the secret scalar is clamp(SHA-512(seed)[:32]) (RFC 8032 5.1.5 / RFC 7748 5)
  and the public u-coordinate is (1 + y) / (1 - y) mod p (RFC 7748 section 4.1's birational map).
- libp2p PeerIds: the Ed25519 vector of libp2p/specs peer-ids/peer-ids.md ("Test vectors"), with the
  base58btc text recomputed here by a pure-Python encoder.
"""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
import pytest
from conftest import seeds
from hypothesis import given, settings

from meshchat.errors import BadSignature
from meshchat.identity import Identity, PublicIdentity

# --- RFC 8032 section 7.1 ------------------------------------------------------------------------

RFC8032_VECTORS = [
    pytest.param(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        id="TEST 1",
    ),
    pytest.param(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        id="TEST 2",
    ),
    pytest.param(
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        id="TEST 3",
    ),
    pytest.param(
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        # The message is SHA-512("abc"), as the RFC says.
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
        id="TEST SHA(abc)",
    ),
]
RFC8032_SEEDS = [bytes.fromhex(p.values[0]) for p in RFC8032_VECTORS]


def test_the_sha_abc_message_is_sha512_of_abc() -> None:
    message = next(p.values[2] for p in RFC8032_VECTORS if p.id == "TEST SHA(abc)")
    assert bytes.fromhex(message) == hashlib.sha512(b"abc").digest()


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_ed25519_key_and_signature(seed: str, public: str, message: str, signature: str) -> None:
    identity = Identity(bytes.fromhex(seed))
    assert identity.public.ed25519.hex() == public
    assert identity.sign(bytes.fromhex(message)).hex() == signature
    PublicIdentity.from_bytes(bytes.fromhex(public)).verify(bytes.fromhex(message), bytes.fromhex(signature))


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_every_flipped_bit_is_a_bad_signature(
    seed: str, public: str, message: str, signature: str
) -> None:
    key = PublicIdentity.from_bytes(bytes.fromhex(public))
    msg, sig = bytes.fromhex(message), bytes.fromhex(signature)
    for bit in range(len(sig) * 8):
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BadSignature):
            key.verify(msg, bytes(flipped))
    for bit in range(len(msg) * 8):
        flipped = bytearray(msg)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BadSignature):
            key.verify(bytes(flipped), sig)


# --- RFC 7748 sections 5.2 and 6.1 ----------------------------------------------------------------

RFC7748_SCALARMULT = [
    pytest.param(
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        id="5.2 vector 1",
    ),
    pytest.param(
        # The input u has its top bit set: an implementation must mask it (RFC 7748 section 5).
        "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        id="5.2 vector 2",
    ),
]


@pytest.mark.parametrize(("scalar", "u", "expected"), RFC7748_SCALARMULT)
def test_rfc7748_x25519_scalar_multiplication(scalar: str, u: str, expected: str) -> None:
    assert sodium.crypto_scalarmult(bytes.fromhex(scalar), bytes.fromhex(u)).hex() == expected


def test_rfc7748_x25519_iterated_1_and_1000_times() -> None:
    k = u = bytes([9]) + bytes(31)
    for i in range(1, 1001):
        k, u = sodium.crypto_scalarmult(k, u), k
        if i == 1:
            assert k.hex() == "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
    assert k.hex() == "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"


def test_rfc7748_diffie_hellman() -> None:
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    alice_public = sodium.crypto_scalarmult_base(alice)
    bob_public = sodium.crypto_scalarmult_base(bob)
    assert alice_public.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert bob_public.hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert sodium.crypto_scalarmult(alice, bob_public).hex() == shared
    assert sodium.crypto_scalarmult(bob, alice_public).hex() == shared


# --- Ed25519 -> X25519, computed without libsodium ------------------------------------------------

P = 2**255 - 19


def clamped_scalar(seed: bytes) -> bytes:
    """RFC 8032 5.1.5: the secret scalar is the first half of SHA-512(seed), clamped (RFC 7748 5)."""
    a = bytearray(hashlib.sha512(seed).digest()[:32])
    a[0] &= 248
    a[31] &= 127
    a[31] |= 64
    return bytes(a)


def montgomery_u(ed25519_public: bytes) -> bytes:
    """RFC 7748 4.1: the Edwards y maps to the Montgomery u = (1 + y) / (1 - y) mod p."""
    y = int.from_bytes(ed25519_public, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, -1, P) % P
    return u.to_bytes(32, "little")


CONVERSION_SEEDS = [
    *RFC8032_SEEDS,
    bytes.fromhex("7e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"),  # libp2p vector
    bytes(32),
    bytes(range(32)),
    b"\xff" * 32,
]


def test_libsodium_returns_the_clamped_scalar_not_the_raw_hash() -> None:
    # Why the comparisons below use the clamped value: libsodium's sk_to_curve25519 clamps.
    seed = RFC8032_SEEDS[0]
    raw = hashlib.sha512(seed).digest()[:32]
    assert raw != clamped_scalar(seed)
    assert Identity(seed).x25519_secret == clamped_scalar(seed)


@pytest.mark.parametrize("seed", CONVERSION_SEEDS, ids=lambda s: s.hex()[:8])
def test_x25519_keys_match_pure_python_conversion(seed: bytes) -> None:
    identity = Identity(seed)
    assert identity.x25519_secret == clamped_scalar(seed)
    assert identity.public.x25519 == montgomery_u(identity.public.ed25519)
    assert sodium.crypto_scalarmult_base(identity.x25519_secret) == identity.public.x25519
    assert PublicIdentity.from_bytes(identity.public.ed25519).x25519 == identity.public.x25519


@settings(max_examples=100)
@given(seed=seeds)
def test_x25519_conversion_matches_for_any_seed(seed: bytes) -> None:
    identity = Identity(seed)
    assert identity.x25519_secret == clamped_scalar(seed)
    assert identity.public.x25519 == montgomery_u(identity.public.ed25519)
    assert sodium.crypto_scalarmult_base(identity.x25519_secret) == identity.public.x25519


@settings(max_examples=50)
@given(a=seeds, b=seeds)
def test_converted_keys_agree_on_a_diffie_hellman_secret(a: bytes, b: bytes) -> None:
    alice, bob = Identity(a), Identity(b)
    assert sodium.crypto_scalarmult(alice.x25519_secret, bob.public.x25519) == sodium.crypto_scalarmult(
        bob.x25519_secret, alice.public.x25519
    )


# --- libp2p PeerId --------------------------------------------------------------------------------

LIBP2P_PRIVATE_KEY = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
LIBP2P_PUBLIC_KEY = bytes.fromhex("080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e")
LIBP2P_PEER_ID = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    """base58btc, written out here so the vector check does not rest on the ``base58`` package."""
    n = int.from_bytes(data, "big")
    digits = ""
    while n:
        n, r = divmod(n, 58)
        digits = _B58_ALPHABET[r] + digits
    leading_zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * leading_zeros + digits


def test_libp2p_vector_is_self_consistent() -> None:
    # Private key protobuf: 08 01 (Ed25519) 12 40 (64 bytes) seed || public key.
    assert LIBP2P_PRIVATE_KEY[:4] == bytes([0x08, 0x01, 0x12, 0x40])
    assert LIBP2P_PUBLIC_KEY[:4] == bytes([0x08, 0x01, 0x12, 0x20])
    assert LIBP2P_PRIVATE_KEY[36:] == LIBP2P_PUBLIC_KEY[4:]
    # An identity multihash (code 0x00, length 0x24 = 36) of the public key protobuf.
    assert b58encode(bytes([0x00, 0x24]) + LIBP2P_PUBLIC_KEY) == LIBP2P_PEER_ID


def test_libp2p_ed25519_peer_id_vector() -> None:
    seed, public = LIBP2P_PRIVATE_KEY[4:36], LIBP2P_PRIVATE_KEY[36:]
    identity = Identity(seed)
    assert identity.public.ed25519 == public == LIBP2P_PUBLIC_KEY[4:]
    assert identity.public.peer_id == LIBP2P_PEER_ID
    recovered = PublicIdentity.from_peer_id(LIBP2P_PEER_ID)
    assert recovered == identity.public
    assert recovered.ed25519 == public


@settings(max_examples=100)
@given(seed=seeds)
def test_peer_id_matches_independent_base58_of_the_identity_multihash(seed: bytes) -> None:
    public = Identity(seed).public
    expected = b58encode(bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]) + public.ed25519)
    assert public.peer_id == expected
