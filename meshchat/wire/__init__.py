"""Wire formats: envelopes and invites, encoded as canonical msgpack with strict limits.

Everything that crosses a process boundary is decoded here, size first, then structure and types; what
does not fit raises a ``meshchat.errors.DecodeError`` subclass.
"""

from __future__ import annotations

from meshchat.wire.envelope import (
    ENVELOPE_VERSION,
    INBOX_TAG_SIZE,
    MAX_ENVELOPE_SIZE,
    MAX_PADDED_PLAINTEXT,
    NONCE_SIZE,
    PAD_BUCKETS,
    Envelope,
    EnvelopeKind,
    associated_data,
    decode_envelope,
    encode_envelope,
    message_id,
)
from meshchat.wire.invite import INVITE_PREFIX, Invite

__all__ = [
    "ENVELOPE_VERSION",
    "INBOX_TAG_SIZE",
    "INVITE_PREFIX",
    "MAX_ENVELOPE_SIZE",
    "MAX_PADDED_PLAINTEXT",
    "NONCE_SIZE",
    "PAD_BUCKETS",
    "Envelope",
    "EnvelopeKind",
    "Invite",
    "associated_data",
    "decode_envelope",
    "encode_envelope",
    "message_id",
]
