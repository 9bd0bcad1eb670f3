"""Prekey bundles in the libp2p Kademlia DHT: a node publishes its signed bundle, and a sender with no
session and no bundle for a peer (not a contact: a group member, a key typed in) looks one up before
the first message, so that message starts a forward-secret session too.

Records live under ``/meshchat-bundle/<PeerId>`` (the DHT's namespaced value store, as ``/pk/`` and
``/ipns/`` are). ``BundleValidator`` is registered for the namespace on every node, so a DHT server
stores and serves only records that decode as a ``PrekeyBundle`` whose signatures verify under the key
the record is named after, at most ``MAX_BUNDLE_SIZE`` bytes; between two valid records for one key it
keeps the newest signed prekey (``created``), and of two equally new ones the one received last (so
the owner's unchanged bundle, published again, renews a server's copy before it expires). A peer can
therefore not plant a bundle of its own under someone else's name, only withhold one (then the sender
starts from the identity key alone).

The bundle published carries no one-time prekeys: with nobody to hand each out once, two senders
would pick the same one and the second's first messages could not be opened.
"""

from __future__ import annotations

import logging

import trio
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import Validator

from meshchat.errors import DecodeError
from meshchat.identity import PublicIdentity
from meshchat.sessions.prekeys import MAX_BUNDLE_SIZE, PrekeyBundle

__all__ = [
    "BUNDLE_LOOKUP_TIMEOUT",
    "BUNDLE_NAMESPACE",
    "BUNDLE_REPUBLISH",
    "BundleValidator",
    "bundle_key",
    "lookup_bundle",
    "publish_bundle",
]

_log = logging.getLogger(__name__)

#: The DHT namespace of prekey bundle records.
BUNDLE_NAMESPACE = "meshchat-bundle"
#: Seconds between two publications of one's bundle (DHT records are dropped after a day or two).
BUNDLE_REPUBLISH = 6 * 3600.0
#: Seconds a sender waits for a bundle lookup before starting from the identity key alone.
BUNDLE_LOOKUP_TIMEOUT = 3.0


def bundle_key(peer: PublicIdentity) -> str:
    """The DHT key of ``peer``'s bundle record."""
    return f"/{BUNDLE_NAMESPACE}/{peer.peer_id}"


def _check(key: str, value: bytes) -> PrekeyBundle:
    prefix = f"/{BUNDLE_NAMESPACE}/"
    if not key.startswith(prefix) or len(value) > MAX_BUNDLE_SIZE:
        raise InvalidRecordType(f"not a prekey bundle record: {key[:80]}")
    try:
        owner = PublicIdentity.from_peer_id(key[len(prefix) :])
        bundle = PrekeyBundle.decode(value)
        bundle.verify()
    except (DecodeError, ValueError) as exc:
        raise InvalidRecordType(f"bad prekey bundle under {key[:80]}: {exc}") from exc
    if bundle.identity != owner.ed25519:
        raise InvalidRecordType(f"a prekey bundle of another identity under {key[:80]}")
    return bundle


class BundleValidator(Validator):
    """What a DHT server accepts under ``/meshchat-bundle/``: see the module docstring."""

    def validate(self, key: str, value: bytes) -> None:
        """Raise ``InvalidRecordType`` unless ``value`` is a valid bundle of the key's owner."""
        _check(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        """The index of the newest valid bundle (invalid ones never win); between equally new ones,
        the last. py-libp2p's server asks ``select(key, [stored, received])`` and keeps the stored
        record (and its expiry) unless the received one wins: the owner's unchanged bundle published
        again must win, or the stored copy is never renewed and expires a day after it first came."""
        best, best_created = 0, -1
        for index, value in enumerate(values):
            try:
                created = _check(key, value).created
            except InvalidRecordType:
                continue
            if created >= best_created:
                best, best_created = index, created
        return best


async def publish_bundle(dht: KadDHT, owner: PublicIdentity, bundle: PrekeyBundle) -> bool:
    """Put ``bundle`` in the DHT under ``owner``'s key; False (logged) if no peer took it.

    With no DHT peer known yet (``put_value`` then stores the record only here, and does not say
    so), it is not published: False, so the caller tries again soon rather than hours later."""
    if dht.get_routing_table_size() == 0:
        _log.info("no DHT peer known yet: the prekey bundle is not published")
        return False
    try:
        with trio.fail_after(BUNDLE_LOOKUP_TIMEOUT * 4):
            await dht.put_value(bundle_key(owner), bundle.encode())
    except (trio.TooSlowError, OSError, InvalidRecordType, ValueError) as exc:
        _log.info("publishing the prekey bundle failed: %s", exc)
        return False
    return True


async def lookup_bundle(dht: KadDHT, peer: PublicIdentity) -> PrekeyBundle | None:
    """``peer``'s bundle from the DHT, checked, or None (none found, invalid, or too slow)."""
    key = bundle_key(peer)
    try:
        with trio.fail_after(BUNDLE_LOOKUP_TIMEOUT):
            value = await dht.get_value(key)
    except (trio.TooSlowError, OSError, InvalidRecordType, ValueError) as exc:
        _log.info("looking up %s failed: %s", key, exc)
        return None
    if value is None:
        return None
    try:
        return _check(key, value)
    except InvalidRecordType:
        return None
