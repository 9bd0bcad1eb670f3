"""Ed25519 identities: the secret root key a user holds and the public half everyone else sees.

The Ed25519 signing key is the user's root identity. The X25519 key used for sealing is derived from it
(RFC 7748 birational map, libsodium's ``crypto_sign_ed25519_*_to_curve25519``) so one key pair serves both
signatures and encryption; the libp2p PeerId is derived from the same public key (see ``peerid``).

Only PyNaCl's libsodium bindings run underneath; nothing here is hand-written cryptography.
"""

from __future__ import annotations

from collections.abc import Callable

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from meshchat.errors import BadSignature, DecodeError
from meshchat.identity.fingerprint import fingerprint_of
from meshchat.identity.peerid import PUBLIC_KEY_SIZE, peer_id_from_public_key, public_key_from_peer_id

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "Identity",
    "KeyCache",
    "PublicIdentity",
    "RandomBytes",
]

#: Size of the Ed25519 seed the whole identity is derived from, bytes.
SEED_SIZE = sodium.crypto_sign_SEEDBYTES
#: Size of an Ed25519 signature, bytes.
SIGNATURE_SIZE = sodium.crypto_sign_BYTES

#: A source of random bytes: ``random_bytes(n)`` returns ``n`` bytes. Injected so tests can be exact.
RandomBytes = Callable[[int], bytes]


class PublicIdentity:
    """Someone's public key: verifies their signatures and receives envelopes sealed to them.

    Construct with :meth:`from_bytes` or :meth:`from_peer_id`, which reject byte strings that are not a
    usable Ed25519 point: wrong length, not on the curve, small order, or with a torsion component
    (libsodium's signature check alone accepts some of those). Immutable; equal and hashable by key.
    """

    __slots__ = ("_ed25519", "_x25519")

    def __init__(self, ed25519: bytes, x25519: bytes) -> None:
        # Private: use from_bytes, which proves the pair belongs together.
        self._ed25519 = ed25519
        self._x25519 = x25519

    @classmethod
    def from_bytes(cls, ed25519: bytes) -> PublicIdentity:
        """Check and wrap a 32-byte Ed25519 public key; raise ``DecodeError`` if it is unusable."""
        if not isinstance(ed25519, bytes) or len(ed25519) != PUBLIC_KEY_SIZE:
            raise DecodeError("public key", f"expected {PUBLIC_KEY_SIZE} bytes")
        try:
            # Also checks the point is on the curve and in the prime-order subgroup.
            x25519 = sodium.crypto_sign_ed25519_pk_to_curve25519(ed25519)
        except nacl.exceptions.CryptoError as exc:
            raise DecodeError("public key", "not a valid Ed25519 point") from exc
        return cls(ed25519, x25519)

    @property
    def ed25519(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return self._ed25519

    @property
    def x25519(self) -> bytes:
        """The 32-byte X25519 public key derived from it, used to seal envelopes to this identity."""
        return self._x25519

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicIdentity) and other._ed25519 == self._ed25519

    def __hash__(self) -> int:
        return hash(self._ed25519)

    def __repr__(self) -> str:
        return f"PublicIdentity(peer_id={self.peer_id!r})"

    def verify(self, message: bytes, signature: bytes, *, what: str = "signature") -> None:
        """Raise ``BadSignature`` unless ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != SIGNATURE_SIZE:
            raise BadSignature(what)
        try:
            sodium.crypto_sign_open(signature + message, self.ed25519)
        except nacl.exceptions.BadSignatureError as exc:
            raise BadSignature(what) from exc

    @classmethod
    def from_peer_id(cls, peer_id: str) -> PublicIdentity:
        """Recover the public key an Ed25519 PeerId names; raise ``DecodeError`` for anything else."""
        return cls.from_bytes(public_key_from_peer_id(peer_id))

    @property
    def peer_id(self) -> str:
        """The libp2p PeerId string of this key (``12D3KooW…``)."""
        return peer_id_from_public_key(self.ed25519)

    @property
    def fingerprint(self) -> str:
        """This key's 30-digit fingerprint in six groups of five: the half of a safety number it owns."""
        return fingerprint_of(self.ed25519)


class KeyCache:
    """A bounded memo of public keys that already passed :meth:`PublicIdentity.from_bytes`.

    Checking that a key is a prime-order point costs about as much as a signature check. Messages
    mostly come from the same few contacts, so a receiver keeps one cache and pays that cost once per
    sender. Least recently used keys are forgotten beyond ``capacity``, so a flood of new keys cannot
    grow it.
    """

    __slots__ = ("_capacity", "_keys")

    #: Default number of keys kept: far more than anyone's contact list, a few hundred KiB at most.
    DEFAULT_CAPACITY = 4096

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        """Create an empty cache holding at most ``capacity`` keys."""
        if capacity < 1:
            raise ValueError("a key cache holds at least one key")
        self._capacity = capacity
        self._keys: dict[bytes, PublicIdentity] = {}

    def public_identity(self, ed25519: bytes) -> PublicIdentity:
        """Return the checked ``PublicIdentity`` for ``ed25519``; ``DecodeError`` if it is unusable."""
        key = self._keys.pop(ed25519, None)
        if key is None:
            key = PublicIdentity.from_bytes(ed25519)
            if len(self._keys) >= self._capacity:
                del self._keys[next(iter(self._keys))]  # dicts keep insertion order: oldest first
        self._keys[ed25519] = key  # (re)inserted last: most recently used
        return key

    def __len__(self) -> int:
        return len(self._keys)


class Identity:
    """A user's secret root key. Signs, and opens envelopes sealed to its public half.

    Keep it in a key file (``meshchat.identity.save_identity``); it never appears in a repr.
    """

    __slots__ = ("_secret_key", "_seed", "_x25519_secret", "public")

    def __init__(self, seed: bytes) -> None:
        """Derive the identity from a 32-byte seed (use :meth:`generate` for a new one)."""
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise ValueError(f"an identity seed is {SEED_SIZE} bytes")
        public_key, secret_key = sodium.crypto_sign_seed_keypair(seed)
        self._seed = seed
        self._secret_key = secret_key
        self._x25519_secret = sodium.crypto_sign_ed25519_sk_to_curve25519(secret_key)
        #: The public half, safe to share.
        self.public = PublicIdentity.from_bytes(public_key)

    @classmethod
    def generate(cls, random_bytes: RandomBytes = nacl.utils.random) -> Identity:
        """Create a fresh identity from ``random_bytes`` (the OS's CSPRNG unless you pass another)."""
        return cls(random_bytes(SEED_SIZE))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed; whoever holds it *is* this identity."""
        return self._seed

    @property
    def x25519_secret(self) -> bytes:
        """The X25519 secret scalar derived from the seed (RFC 7748 / libsodium conversion)."""
        return self._x25519_secret

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return sodium.crypto_sign(message, self._secret_key)[:SIGNATURE_SIZE]

    def __repr__(self) -> str:
        return f"Identity(peer_id={self.public.peer_id!r})"
