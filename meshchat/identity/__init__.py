"""Identity: the Ed25519 root key a user holds, its public half, PeerIds, safety numbers, key files.

This is the lowest meshchat layer above ``errors``: it knows nothing of envelopes, gossip or networks.
"""

from __future__ import annotations

from meshchat.identity.fingerprint import safety_number_of
from meshchat.identity.keyfile import (
    KEY_FILE_NAME,
    KEY_FILE_VERSION,
    KdfLimits,
    is_encrypted,
    load_identity,
    read_public_key,
    replace_atomically,
    save_identity,
)
from meshchat.identity.keys import SEED_SIZE, SIGNATURE_SIZE, Identity, KeyCache, PublicIdentity, RandomBytes
from meshchat.identity.peerid import PUBLIC_KEY_SIZE

__all__ = [
    "KEY_FILE_NAME",
    "KEY_FILE_VERSION",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "Identity",
    "KdfLimits",
    "KeyCache",
    "PublicIdentity",
    "RandomBytes",
    "is_encrypted",
    "load_identity",
    "read_public_key",
    "replace_atomically",
    "safety_number",
    "save_identity",
]


def safety_number(a: PublicIdentity, b: PublicIdentity) -> str:
    """The 60-digit safety number two people compare (12 groups of 5); the same whichever comes first."""
    return safety_number_of(a.ed25519, b.ed25519)
