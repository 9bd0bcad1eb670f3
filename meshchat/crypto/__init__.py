"""Cryptography above identity: sealing envelopes (sealed sender) and inbox tags. PyNaCl underneath."""

from __future__ import annotations

from meshchat.crypto.seal import (
    CLOCK_SKEW,
    DEFAULT_TTL,
    MAX_BODY_SIZE,
    MAX_TTL,
    OpenedMessage,
    open_envelope,
    seal,
)
from meshchat.crypto.tags import (
    INBOX_EPOCH_SECONDS,
    INBOX_SHARDS,
    INBOX_TOPIC_PREFIX,
    epoch_of,
    inbox_tag,
    inbox_tags_around,
    inbox_topic,
    inbox_topic_at,
)

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_TTL",
    "INBOX_EPOCH_SECONDS",
    "INBOX_SHARDS",
    "INBOX_TOPIC_PREFIX",
    "MAX_BODY_SIZE",
    "MAX_TTL",
    "OpenedMessage",
    "epoch_of",
    "inbox_tag",
    "inbox_tags_around",
    "inbox_topic",
    "inbox_topic_at",
    "open_envelope",
    "seal",
]
