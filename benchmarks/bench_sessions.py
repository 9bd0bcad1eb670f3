"""What forward secrecy costs: a 1:1 message through a Double Ratchet session inside the sealed envelope,
against the sealed envelope alone, in the same run; and session set-ups per second.

Run: python benchmarks/bench_sessions.py [--rounds R] [--n N]

Cases, each timed per message (seal + open on the two sides, 256-byte body):

* ``sealed``: ``crypto.seal`` + ``crypto.open_envelope``: the path every chat took before sessions
  (one Ed25519 signature and check, two X25519 operations, XChaCha20-Poly1305);
* ``one_way``: the same with the body encrypted by ``PeerSessions.encrypt`` first and decrypted by
  ``PeerSessions.decrypt`` after: a run of messages one way (symmetric ratchet steps only);
* ``ping_pong``: as ``one_way`` but the direction alternates every message, so every message is a DH
  ratchet step (a fresh X25519 key pair and two DH operations on each side): the worst case;
* ``ratchet_only``: ``one_way`` without the seal, to show the ratchet's own share.

The cases alternate round by round and each one's best round counts (the machine is shared and noisy).
``setups`` times a whole session set-up from an invite's bundle (PQXDH with ML-KEM-768: ``initiate``,
the first message, ``respond`` and its decryption). The last line reads
``ratchet_ratio=<sealed_us / one_way_us> setups_per_s=<n> ping_pong_ratio=<sealed_us / ping_pong_us>
ratchet_only_us=<us> three_devices_ratio=<x>``; the issue's target is ``ratchet_ratio >= 0.5``.

``three_devices_ratio``: ``Messenger.send`` of one chat (in-memory storage, sessions already set up) to
a person with three devices (one envelope per device, each in its own session and outbox record)
against a person with one device, same run.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import nacl.utils

from meshchat.crypto import open_envelope, seal
from meshchat.identity import Identity
from meshchat.identity.devices import Device, DeviceList
from meshchat.sessions.prekeys import Prekeys
from meshchat.sessions.session import PeerSessions
from meshchat.store.messenger import Messenger
from meshchat.store.storage import MemoryStorage

BODY = bytes(range(256))
NOW = 1_800_000_000.5
RANDOM = nacl.utils.random


def _per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def _devices_case(devices: int) -> Callable[[], object]:
    """``Messenger.send`` to a person with ``devices`` devices (sessions started beforehand)."""
    alice, bob = Identity.generate(), Identity.generate()
    sender = Messenger(alice, MemoryStorage(), rng=random.Random(1), wall_now=NOW)
    if devices > 1:
        listed = DeviceList.first(bob, name="phone", wall_now=NOW)
        for number in range(devices - 1):
            extra = Device(key=Identity.generate().public.ed25519, name=f"device {number}", added=int(NOW))
            listed = listed.with_device(bob, extra)
        sender.devices.learn(listed.encode(), sender=bob.public.ed25519)
        sender.devices.committed()
    sender.send(bob.public, BODY, wall_now=NOW)  # the sessions' set-ups, outside the timing

    def send() -> object:
        return sender.send(bob.public, BODY, wall_now=NOW)

    return send


def measure(rounds: int = 5, n: int = 1000) -> dict[str, float]:
    """Best per-message microseconds of each case, and set-ups per second."""
    if rounds < 1 or n < 1:
        raise ValueError("rounds and n must be at least 1")
    alice, bob = Identity.generate(), Identity.generate()
    alice_keys = Prekeys.create(alice, wall_now=NOW, random_bytes=RANDOM)
    bob_keys = Prekeys.create(bob, wall_now=NOW, random_bytes=RANDOM)
    bundle = bob_keys.bundle(bob)
    at_alice, at_bob = PeerSessions(), PeerSessions()
    # Start the session and answer once, so no message carries the set-up any more.
    first = at_alice.encrypt(alice, bob.public, b"hi", bundle=bundle, wall_now=NOW, random_bytes=RANDOM)
    at_bob.decrypt(bob, bob_keys, alice.public, first, wall_now=NOW, random_bytes=RANDOM)
    answer = at_bob.encrypt(bob, alice.public, b"hi", bundle=None, wall_now=NOW, random_bytes=RANDOM)
    at_alice.decrypt(alice, alice_keys, bob.public, answer, wall_now=NOW, random_bytes=RANDOM)
    turn = [0]

    def sealed() -> object:
        envelope = seal(alice, bob.public, BODY, wall_now=NOW)
        return open_envelope(bob, envelope, wall_now=NOW).body

    def one_way() -> object:
        body = at_alice.encrypt(alice, bob.public, BODY, bundle=None, wall_now=NOW, random_bytes=RANDOM)
        opened = open_envelope(bob, seal(alice, bob.public, body, wall_now=NOW), wall_now=NOW)
        return at_bob.decrypt(bob, bob_keys, alice.public, opened.body, wall_now=NOW, random_bytes=RANDOM)

    def ping_pong() -> object:
        turn[0] ^= 1
        me, you, mine, yours, your_keys = (
            (alice, bob, at_alice, at_bob, bob_keys)
            if turn[0]
            else (bob, alice, at_bob, at_alice, alice_keys)
        )
        body = mine.encrypt(me, you.public, BODY, bundle=None, wall_now=NOW, random_bytes=RANDOM)
        opened = open_envelope(you, seal(me, you.public, body, wall_now=NOW), wall_now=NOW)
        return yours.decrypt(you, your_keys, me.public, opened.body, wall_now=NOW, random_bytes=RANDOM)

    def ratchet_only() -> object:
        body = at_alice.encrypt(alice, bob.public, BODY, bundle=None, wall_now=NOW, random_bytes=RANDOM)
        return at_bob.decrypt(bob, bob_keys, alice.public, body, wall_now=NOW, random_bytes=RANDOM)

    def setup() -> object:
        mine, yours = PeerSessions(), PeerSessions()
        body = mine.encrypt(alice, bob.public, BODY, bundle=bundle, wall_now=NOW, random_bytes=RANDOM)
        return yours.decrypt(bob, bob_keys, alice.public, body, wall_now=NOW, random_bytes=RANDOM)

    cases: dict[str, tuple[Callable[[], object], int]] = {
        "sealed_us": (sealed, n),
        "one_way_us": (one_way, n),
        "ping_pong_us": (ping_pong, n),
        "ratchet_only_us": (ratchet_only, n),
        "setup_us": (setup, max(1, n // 10)),
        "one_device_send_us": (_devices_case(1), max(1, n // 5)),
        "three_devices_send_us": (_devices_case(3), max(1, n // 5)),
    }
    for fn, count in cases.values():
        _per_call_us(fn, max(1, count // 10))  # warm up
    best = {name: float("inf") for name in cases}
    names = list(cases)
    for round_number in range(rounds):
        rotation = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in rotation:
            fn, count = cases[name]
            best[name] = min(best[name], _per_call_us(fn, count))
    return {
        **best,
        "ratchet_ratio": best["sealed_us"] / best["one_way_us"],
        "ping_pong_ratio": best["sealed_us"] / best["ping_pong_us"],
        "setups_per_s": 1e6 / best["setup_us"],
        "three_devices_ratio": best["three_devices_send_us"] / best["one_device_send_us"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case (default 5)")
    parser.add_argument("--n", type=int, default=1000, help="messages per round (default 1000)")
    args = parser.parse_args()
    f = measure(args.rounds, args.n)
    print(
        f"body {len(BODY)} bytes; best of {args.rounds} rounds of {args.n} messages (set-ups: {args.n // 10})"
    )
    print(f"sealed envelope only (before sessions): {f['sealed_us']:8.1f} us per message (seal + open)")
    print(f"ratchet + sealed, one way:              {f['one_way_us']:8.1f} us per message")
    print(f"ratchet + sealed, DH step every message:{f['ping_pong_us']:8.1f} us per message")
    print(f"ratchet alone (encrypt + decrypt):      {f['ratchet_only_us']:8.1f} us per message")
    print(
        f"session set-up (PQXDH + first message): {f['setup_us']:8.1f} us"
        f" = {f['setups_per_s']:.0f} per second"
    )
    print(f"ratio sealed / ratchet+sealed:          {f['ratchet_ratio']:8.2f} (target >= 0.5)")
    print(f"Messenger.send to a person, 1 device:   {f['one_device_send_us']:8.1f} us")
    print(f"Messenger.send to a person, 3 devices:  {f['three_devices_send_us']:8.1f} us")
    print(
        f"ratchet_ratio={f['ratchet_ratio']:.2f} setups_per_s={f['setups_per_s']:.0f} "
        f"ping_pong_ratio={f['ping_pong_ratio']:.2f} ratchet_only_us={f['ratchet_only_us']:.1f} "
        f"three_devices_ratio={f['three_devices_ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
