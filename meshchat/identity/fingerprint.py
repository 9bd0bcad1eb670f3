"""Fingerprints and safety numbers: what two people compare to know they hold each other's real keys.

The construction follows Signal's ``NumericFingerprintGenerator`` (libsignal, version 0 scalable
fingerprint): each side's 30 digits come from iterated SHA-512 over the public key, so finding a key with
a chosen fingerprint costs an attacker 5,200 hashes per try; the safety number is the two 30-digit halves
in a fixed order (smaller first), so both people see the same 60 digits whoever computes it.
"""

from __future__ import annotations

import hashlib

__all__ = ["FINGERPRINT_ITERATIONS", "fingerprint_of", "safety_number_of"]

#: Hash iterations per fingerprint, as in Signal: slows a search for a colliding key by this factor.
FINGERPRINT_ITERATIONS = 5200
_FINGERPRINT_VERSION = b"\x00\x00"
_GROUPS_PER_KEY = 6
_GROUP_DIGITS = 5
_BYTES_PER_GROUP = 5


def _digits(ed25519: bytes) -> str:
    # Signal hashes version || key || stable identifier; a meshchat identity *is* its key.
    digest = hashlib.sha512(_FINGERPRINT_VERSION + ed25519 + ed25519).digest()
    for _ in range(FINGERPRINT_ITERATIONS):
        digest = hashlib.sha512(digest + ed25519).digest()
    groups = []
    for i in range(_GROUPS_PER_KEY):
        chunk = digest[i * _BYTES_PER_GROUP : (i + 1) * _BYTES_PER_GROUP]
        groups.append(f"{int.from_bytes(chunk, 'big') % 10**_GROUP_DIGITS:0{_GROUP_DIGITS}d}")
    return "".join(groups)


def _grouped(digits: str) -> str:
    return " ".join(digits[i : i + _GROUP_DIGITS] for i in range(0, len(digits), _GROUP_DIGITS))


def fingerprint_of(ed25519: bytes) -> str:
    """Return an Ed25519 public key's 30-digit fingerprint as six groups of five digits."""
    return _grouped(_digits(ed25519))


def safety_number_of(a: bytes, b: bytes) -> str:
    """Return the 60-digit safety number of two keys (12 groups of 5), the same whichever comes first."""
    first, second = sorted((_digits(a), _digits(b)))
    return _grouped(first + second)
