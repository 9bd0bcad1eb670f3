"""Seal and open throughput: meshchat against raw PyNaCl/msgpack/hashlib calls doing the same work.

Run: python benchmarks/bench_crypto.py [--seconds S]

For a 256-byte body, one run measures:

- meshchat ``seal`` and ``open_envelope`` (with a ``KeyCache``, a receiver's steady state, and without
  one, a first message from a stranger, which also checks the sender's key is a prime-order point);
- the ceiling: the same primitive work written inline with no meshchat code, in the order
  ``meshchat/crypto/seal.py`` does it. Seal: Ed25519 sign of the same signed bytes, 56 random bytes,
  X25519 base-point and shared-secret multiplications, the keyed BLAKE2b inbox tag, the BLAKE2b key,
  XChaCha20-Poly1305 over the padded inner msgpack, msgpack of the inner and outer maps. Open: msgpack
  unpack of the outer and inner maps, X25519, BLAKE2b key, XChaCha20-Poly1305, Ed25519 verify, and the
  BLAKE2b message id ``open_envelope`` returns. What the ceiling leaves out is meshchat's validation
  (canonical re-encoding, field checks, the expiry check, padding checks) and its Python overhead;
- for scale, the classic "sign + crypto_box_seal + pack" and "unpack + box_seal_open + verify" (no
  sealed sender, no padding, no inbox tag: cheaper and not the same thing).

The machine is noisy, so the cases run in alternating rounds (the order rotates each round) and each
side's best round counts; the median of per-round ratios is printed too. The last line reads
``seal_ratio=X.XX open_ratio=Y.YY``: meshchat's rate over the same-work ceiling (open with the cache).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable

import msgpack
import nacl.bindings as sodium
import nacl.utils

from meshchat.crypto import open_envelope, seal
from meshchat.identity import Identity, KeyCache

BODY = bytes(range(256))
NOW = 1_800_000_000.5
ROUNDS = 7
#: Constants of the construction, copied so the ceiling runs no meshchat code at all.
DOMAIN = b"meshchat/seal/v1\x00"
SEAL_PERSON = b"meshchat-seal-v1"
INBOX_PERSON = b"meshchat-inbox1"
EPOCH_SECONDS = 24 * 3600
PAD_BUCKETS = (256, 1024, 4096, 16384)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn``, measured over about ``seconds``."""
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(25):
            fn()
        count += 25
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="total measuring time (default 15)")
    args = parser.parse_args()

    alice, bob = Identity(bytes([0xA1]) * 32), Identity(bytes([0xB0]) * 32)
    alice_pk = alice.public.ed25519
    alice_sk = sodium.crypto_sign_seed_keypair(alice.seed)[1]
    bob_pk, bob_x, bob_x_secret = bob.public.ed25519, bob.public.x25519, bob.x25519_secret
    cache = KeyCache()
    envelope = seal(alice, bob.public, BODY, wall_now=NOW)

    sent_at = int(NOW * 1000)
    probe = msgpack.packb({1: alice_pk, 2: sent_at, 3: BODY, 4: bytes(64)})
    pad_zeros = next(b for b in PAD_BUCKETS if len(probe) + 1 <= b) - len(probe) - 1

    def raw_seal() -> bytes:
        signed = b"".join((DOMAIN, bob_pk, b"\x01", alice_pk, sent_at.to_bytes(8, "big"), BODY))
        signature = sodium.crypto_sign(signed, alice_sk)[:64]
        inner = msgpack.packb({1: alice_pk, 2: sent_at, 3: BODY, 4: signature})
        padded = inner + b"\x80" + bytes(pad_zeros)
        randomness = nacl.utils.random(56)
        secret, nonce = randomness[:32], randomness[32:]
        ephemeral = sodium.crypto_scalarmult_base(secret)
        shared = sodium.crypto_scalarmult(secret, bob_x)
        epoch = int(NOW // EPOCH_SECONDS)
        tag = hashlib.blake2b(
            epoch.to_bytes(8, "big"), key=bob_pk, digest_size=16, person=INBOX_PERSON
        ).digest()
        expiry = int(NOW) + 7 * 24 * 3600
        key = hashlib.blake2b(shared + ephemeral + bob_x, digest_size=32, person=SEAL_PERSON).digest()
        aad = b"\x01\x01" + tag + expiry.to_bytes(4, "big") + ephemeral + nonce
        ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, aad, nonce, key)
        return b"\x01" + msgpack.packb({1: 1, 2: tag, 3: expiry, 4: ephemeral, 5: nonce, 6: ciphertext})

    def raw_open() -> bytes:
        fields = msgpack.unpackb(envelope[1:], strict_map_key=False)
        ephemeral, nonce = fields[4], fields[5]
        shared = sodium.crypto_scalarmult(bob_x_secret, ephemeral)
        key = hashlib.blake2b(shared + ephemeral + bob_x, digest_size=32, person=SEAL_PERSON).digest()
        aad = b"\x01\x01" + fields[2] + fields[3].to_bytes(4, "big") + ephemeral + nonce
        padded = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(fields[6], aad, nonce, key)
        inner = msgpack.unpackb(padded.rstrip(b"\x00")[:-1], strict_map_key=False)
        sender, body = inner[1], inner[3]
        signed = b"".join((DOMAIN, bob_pk, b"\x01", sender, inner[2].to_bytes(8, "big"), body))
        sodium.crypto_sign_open(inner[4] + signed, sender)
        hashlib.blake2b(envelope, digest_size=32).digest()  # the message id
        return body

    boxed = b""

    def classic_seal() -> bytes:
        nonlocal boxed
        signed = sodium.crypto_sign(alice_pk + BODY, alice_sk)
        boxed = msgpack.packb({1: sodium.crypto_box_seal(signed, bob_x)})
        return boxed

    def classic_open() -> bytes:
        sealed = msgpack.unpackb(boxed, strict_map_key=False)[1]
        opened = sodium.crypto_box_seal_open(sealed, bob_x, bob_x_secret)
        return bytes(sodium.crypto_sign_open(opened, opened[64:96]))[32:]

    # The ceiling must do real work: its envelopes open in meshchat, and it opens meshchat's.
    assert open_envelope(bob, raw_seal(), wall_now=NOW).body == BODY
    assert len(raw_seal()) == len(envelope)
    assert raw_open() == BODY
    classic_seal()
    assert classic_open() == BODY

    cases: dict[str, Callable[[], object]] = {
        "meshchat seal": lambda: seal(alice, bob.public, BODY, wall_now=NOW),
        "raw seal (same work)": raw_seal,
        "meshchat open (key cache)": lambda: open_envelope(bob, envelope, wall_now=NOW, key_cache=cache),
        "raw open (same work)": raw_open,
        "meshchat open (no key cache)": lambda: open_envelope(bob, envelope, wall_now=NOW),
        "classic sign + box_seal + pack": classic_seal,
        "classic unpack + box_seal_open + verify": classic_open,
    }
    names = list(cases)
    rates: dict[str, list[float]] = {name: [] for name in names}
    per_case = args.seconds / (ROUNDS * len(cases))
    for fn in cases.values():  # warm up caches and allocators before anything counts
        rate(fn, min(per_case, 0.05))
    for round_number in range(ROUNDS):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(rate(cases[name], per_case))

    def ratios(mine: str, ceiling: str) -> list[float]:
        return [a / b for a, b in zip(rates[mine], rates[ceiling], strict=True)]

    print(f"\n{'256-byte body':42s} {'best msgs/s':>12s} {'median':>12s} {'µs/msg':>8s}")
    for name in names:
        best = max(rates[name])
        print(f"{name:42s} {best:12,.0f} {statistics.median(rates[name]):12,.0f} {1e6 / best:8.1f}")
    seal_ratio = max(rates["meshchat seal"]) / max(rates["raw seal (same work)"])
    open_ratio = max(rates["meshchat open (key cache)"]) / max(rates["raw open (same work)"])
    cold_ratio = max(rates["meshchat open (no key cache)"]) / max(rates["raw open (same work)"])
    seal_rounds = ratios("meshchat seal", "raw seal (same work)")
    open_rounds = ratios("meshchat open (key cache)", "raw open (same work)")
    print(
        f"\nmedian of per-round ratios: seal {statistics.median(seal_rounds):.2f}, "
        f"open {statistics.median(open_rounds):.2f}"
    )
    print(f"open without a key cache / raw open: {cold_ratio:.2f} (adds a prime-order check of the key)")
    print(f"seal_ratio={seal_ratio:.2f} open_ratio={open_ratio:.2f}")


if __name__ == "__main__":
    main()
