"""Message signatures for StrictSign topics (libp2p ``pubsub/README.md``, "Message Signing").

meshchat's own topics carry sealed envelopes and run StrictNoSign: the envelope is signed inside, and a
signature on the outside would name the sender to every relay. Topics shared with other libp2p
applications may require StrictSign instead: every message carries its author's PeerId (``from``), a
sequence number, and an Ed25519 signature over ``"libp2p-pubsub:"`` + the protobuf ``Message`` without
its ``signature`` and ``key`` fields; its id is ``from`` + ``seqno``. This module signs and checks those.

Only Ed25519 authors are accepted: their public key is inside the PeerId (identity multihash), so the
``key`` field must be absent or equal to it. RSA and secp256k1 authors are refused (counted as invalid)
because meshchat has no use for them and each would add a verifier to the attack surface.
"""

from __future__ import annotations

from dataclasses import replace

from meshchat.errors import MeshchatError
from meshchat.gossip.messages import MessageId, PubMessage
from meshchat.gossip.rpc import encode_message, peer_id_bytes, peer_id_text
from meshchat.identity import Identity, PublicIdentity

__all__ = ["SIGNING_PREFIX", "MessageSigner", "signature_problem", "signed_message_id", "unsigned_problem"]

#: What a pubsub signature signs before the message bytes.
SIGNING_PREFIX = b"libp2p-pubsub:"
#: Bytes of a sequence number (the spec: a 64-bit big-endian integer).
SEQNO_SIZE = 8
#: The protobuf-encoded Ed25519 public key of a PeerId is its identity multihash minus 2 bytes of header.
_IDENTITY_MULTIHASH_HEADER = 2
_UNSIGNED = (None, None, None, None)


class MessageSigner:
    """Signs this node's messages on StrictSign topics, numbering them from ``first_seqno`` up."""

    __slots__ = ("_identity", "_next_seqno", "from_peer")

    def __init__(self, identity: Identity, *, first_seqno: int) -> None:
        """Sign as ``identity``; use a ``first_seqno`` that grows across restarts (go-libp2p: unix ns)."""
        self._identity = identity
        self._next_seqno = first_seqno
        #: This node's PeerId, binary, as the ``from`` field carries it.
        self.from_peer = peer_id_bytes(identity.public.peer_id)

    def sign(self, message: PubMessage) -> PubMessage:
        """``message`` with ``from``, the next ``seqno`` and the signature set (``key`` left out)."""
        seqno = (self._next_seqno % (1 << 64)).to_bytes(SEQNO_SIZE, "big")
        self._next_seqno += 1
        unsigned = replace(message, from_peer=self.from_peer, seqno=seqno, signature=None, key=None)
        signature = self._identity.sign(SIGNING_PREFIX + encode_message(unsigned))
        return replace(unsigned, signature=signature)


def signed_message_id(message: PubMessage) -> MessageId:
    """The id of a StrictSign message: ``from`` + ``seqno`` (the spec's default id)."""
    return (message.from_peer or b"") + (message.seqno or b"")


def signature_problem(message: PubMessage) -> str | None:
    """Why ``message`` fails StrictSign (missing field, unsupported key, bad signature), or None."""
    if message.from_peer is None or message.seqno is None or message.signature is None:
        return "a field StrictSign requires is missing (from, seqno or signature)"
    try:
        author = PublicIdentity.from_peer_id(peer_id_text(message.from_peer))
    except (MeshchatError, ValueError):
        return "the author is not an Ed25519 PeerId"
    if message.key is not None and message.key != message.from_peer[_IDENTITY_MULTIHASH_HEADER:]:
        return "the key field does not match the author's PeerId"
    unsigned = replace(message, signature=None, key=None)
    try:
        author.verify(SIGNING_PREFIX + encode_message(unsigned), message.signature, what="pubsub signature")
    except MeshchatError:
        return "the signature does not verify"
    return None


def unsigned_problem(message: PubMessage) -> str | None:
    """Why ``message`` fails StrictNoSign (it carries from, seqno, signature or key), or None."""
    if (message.from_peer, message.seqno, message.signature, message.key) == _UNSIGNED:
        return None
    return "a StrictNoSign topic's message carries from, seqno, signature or key"
