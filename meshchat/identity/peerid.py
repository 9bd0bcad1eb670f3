"""libp2p PeerIds for meshchat identities.

A PeerId is the base58btc text of a multihash of the libp2p protobuf ``PublicKey`` message
(libp2p specs, peer-ids/peer-ids.md). For Ed25519 the protobuf is 36 bytes, under the 42-byte limit, so
the spec requires the *identity* multihash: the key itself is inside the PeerId, and every PeerId can be
turned back into the public key it names. That is why an invite, a Noise handshake and a signature all
prove the same key.

The protobuf here is two fixed fields of fixed size, so it is written by hand rather than through the
protobuf runtime: ``08 01`` (field 1 KeyType = Ed25519) ``12 20`` (field 2, 32 bytes). The spec requires
exactly this deterministic encoding.
"""

from __future__ import annotations

import base58

from meshchat.errors import DecodeError

__all__ = ["PUBLIC_KEY_SIZE", "peer_id_from_public_key", "public_key_from_peer_id"]

#: Size of an Ed25519 public key, bytes.
PUBLIC_KEY_SIZE = 32

_KEY_TYPE_ED25519 = 1
#: protobuf tag bytes: field 1 varint (KeyType Ed25519), then field 2 length-delimited, 32 bytes.
_PROTOBUF_PREFIX = bytes([0x08, _KEY_TYPE_ED25519, 0x12, PUBLIC_KEY_SIZE])
_MULTIHASH_IDENTITY = 0x00
_PROTOBUF_SIZE = len(_PROTOBUF_PREFIX) + PUBLIC_KEY_SIZE
_MULTIHASH_PREFIX = bytes([_MULTIHASH_IDENTITY, _PROTOBUF_SIZE]) + _PROTOBUF_PREFIX
#: Longest PeerId text we try to decode; a real Ed25519 PeerId is 52 characters.
_MAX_PEER_ID_TEXT = 128


def peer_id_from_public_key(ed25519: bytes) -> str:
    """Return the PeerId text (``12D3KooW…``) of a 32-byte Ed25519 public key."""
    if len(ed25519) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes")
    return str(base58.b58encode(_MULTIHASH_PREFIX + ed25519).decode("ascii"))


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Return the 32-byte Ed25519 key an identity-multihash PeerId carries; ``DecodeError`` otherwise."""
    if len(peer_id) > _MAX_PEER_ID_TEXT:
        raise DecodeError("PeerId", f"{len(peer_id)} characters is too long")
    try:
        raw = base58.b58decode(peer_id.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise DecodeError("PeerId", "not base58btc text") from exc
    if len(raw) != len(_MULTIHASH_PREFIX) + PUBLIC_KEY_SIZE or not raw.startswith(_MULTIHASH_PREFIX):
        raise DecodeError("PeerId", "not an identity multihash of an Ed25519 public key")
    key = raw[len(_MULTIHASH_PREFIX) :]
    if peer_id_from_public_key(key) != peer_id:
        # The base58 library skips surrounding whitespace; one key has exactly one PeerId text.
        raise DecodeError("PeerId", "not in canonical form (stray characters around it?)")
    return key
