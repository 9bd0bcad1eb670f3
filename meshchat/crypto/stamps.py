"""Proof-of-work stamps: what a stranger pays to put a first message in someone's inbox (hashcash).

A stamp is ``STAMP_SIZE`` bytes (a counter) such that::

    SHA-256(STAMP_DOMAIN || SHA-256(envelope bytes without the stamp field) || stamp)

starts with at least ``cost`` zero bits. The envelope's bytes hold the recipient's inbox tag, its
expiry and the whole ciphertext, so a stamp is good for that one envelope only: it cannot be moved
to another message, another recipient or another day, and a copy of the same envelope is a duplicate
the seen window drops. Minting takes 2^cost hashes on average (attempts are geometric: the median is
``ln 2`` of the mean, the 90th percentile ``ln 10`` of it); checking takes one hash, a few
microseconds, so a recipient or a mailbox can check every stamp before doing any other work.

``DEFAULT_STAMP_COST`` (19 bits) is set so that the median mint takes about 0.2 s on one core of the
machine the figures were measured on (1.7 M SHA-256 per second from Python: 2^19 x ln 2 / 1.7 M =
0.21 s; ``benchmarks/bench_stamps.py`` measured a median of 0.225 s, mean 0.29 s, 90th percentile
0.67 s over 25 stamps, and 3.3 us per check). The recipient chooses its cost and publishes it in its
invite (``meshchat.wire.Invite.stamp_cost``); ``MAX_STAMP_COST`` bounds what an invite may ask.

What it is not: a rate limit for people who have a lot of CPU, nor anything a contact ever pays
(``meshchat.store.inbound`` says who needs none). Compare LXMF (``LXMF/LXStamper.py``), whose stamps
hash a 750 KB workblock (3,000 HKDF expansions of the message id): 0.84 s at its cost 13 on this
machine when it was idle, 3.0 s median in the same run as the figures above (load ~6.5; its workers
use every core), and 127 ms to check one (the workblock), against our 3.3 us.
"""

from __future__ import annotations

import hashlib
import struct

from meshchat.wire.envelope import Envelope, decode_envelope, unstamped, with_stamp
from meshchat.wire.invite import MAX_INVITE_STAMP_COST

__all__ = [
    "DEFAULT_STAMP_COST",
    "MAX_STAMP_COST",
    "STAMP_DOMAIN",
    "STAMP_SIZE",
    "envelope_stamp_bits",
    "mint_stamp",
    "stamp_bits",
    "stamp_envelope",
    "stamp_prefix",
    "verify_stamp",
]

#: What every stamp hash starts with (so a stamp cannot be another protocol's proof of work).
STAMP_DOMAIN = b"meshchat/stamp/v1\x00"
#: Bytes in a stamp: a little-endian counter, room for every attempt any cost here can need.
STAMP_SIZE = 8
#: Leading zero bits a recipient asks of strangers unless its invite says otherwise: a median mint
#: of ~0.2 s on one core here (see the module docstring), mean ~0.3 s, 90th percentile ~0.7 s.
DEFAULT_STAMP_COST = 19
#: Highest cost an invite may ask (and a mint will try): 2^28 hashes, ~2.5 minutes of one core on
#: average. A higher one would let an inviter make a sender's first message cost hours.
MAX_STAMP_COST = MAX_INVITE_STAMP_COST
_PACK = struct.Struct("<Q").pack
_DIGEST_BITS = 256


def stamp_prefix(unstamped: bytes) -> hashlib._Hash:
    """The hash state every attempt at a stamp for ``unstamped`` (the envelope's bytes without its
    stamp) continues from: domain and the envelope's digest already absorbed."""
    return hashlib.sha256(STAMP_DOMAIN + hashlib.sha256(unstamped).digest())


def _target(cost: int) -> bytes:
    """A digest (big-endian) below this has at least ``cost`` leading zero bits."""
    if not 0 <= cost <= MAX_STAMP_COST:
        raise ValueError(f"a stamp cost is 0 to {MAX_STAMP_COST} bits, not {cost}")
    if cost == 0:
        return b"\xff" * (_DIGEST_BITS // 8 + 1)  # above every digest
    return (1 << (_DIGEST_BITS - cost)).to_bytes(_DIGEST_BITS // 8, "big")


def mint_stamp(unstamped: bytes, cost: int) -> bytes:
    """A stamp of at least ``cost`` bits for the envelope bytes ``unstamped`` (CPU-bound: 2^cost hashes
    on average). ``ValueError`` for a cost outside 0 to ``MAX_STAMP_COST``."""
    target = _target(cost)
    copy = stamp_prefix(unstamped).copy
    # 2^64 attempts are never needed: at MAX_STAMP_COST the chance of failing 2^40 in a row is nil.
    for counter in range(2**64):
        stamp = _PACK(counter)
        attempt = copy()
        attempt.update(stamp)
        if attempt.digest() < target:
            return stamp
    raise AssertionError("unreachable: 2^64 attempts")  # pragma: no cover


def stamp_bits(unstamped: bytes, stamp: bytes) -> int:
    """How many leading zero bits ``stamp`` earns for ``unstamped`` (0 for a stamp of the wrong size)."""
    if len(stamp) != STAMP_SIZE:
        return 0
    attempt = stamp_prefix(unstamped)
    attempt.update(stamp)
    value = int.from_bytes(attempt.digest(), "big")
    return _DIGEST_BITS - value.bit_length()


def verify_stamp(unstamped: bytes, stamp: bytes, cost: int) -> bool:
    """Whether ``stamp`` is worth at least ``cost`` bits for the envelope bytes ``unstamped`` (one hash).
    A cost of 0 asks for nothing: any stamp, or none, passes."""
    if cost <= 0:
        return True
    return stamp_bits(unstamped, stamp) >= cost


def stamp_envelope(data: bytes, cost: int) -> bytes:
    """``data`` (an unstamped envelope's wire bytes) with a stamp of ``cost`` bits added (CPU-bound).
    ``DecodeError`` for bytes that are not an envelope; ``ValueError`` for a cost out of range."""
    envelope = decode_envelope(data)
    return with_stamp(envelope, mint_stamp(unstamped(envelope), cost))


def envelope_stamp_bits(envelope: Envelope) -> int:
    """The bits ``envelope``'s stamp is worth (0: none, or one made for other bytes)."""
    if not envelope.stamp:
        return 0
    return stamp_bits(unstamped(envelope), envelope.stamp)
