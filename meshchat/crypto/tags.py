"""Blinded, rotating inbox tags: where a recipient's envelopes are addressed, without naming them.

``inbox_tag(key, epoch)`` is a keyed BLAKE2b-128 of the epoch number under the recipient's public key.
An observer who does not already know the recipient's key cannot tell which tags belong to one person,
and tags change every ``INBOX_EPOCH_SECONDS``, so one day's traffic does not link to the next. A
contact, who knows the key, computes the tag to address envelopes and to ask mailboxes for them.
"""

from __future__ import annotations

import hashlib

from meshchat.identity import PublicIdentity
from meshchat.wire import INBOX_TAG_SIZE

__all__ = [
    "INBOX_EPOCH_SECONDS",
    "INBOX_SHARDS",
    "INBOX_TOPIC_PREFIX",
    "epoch_of",
    "inbox_tag",
    "inbox_tags_around",
    "inbox_topic",
    "inbox_topic_at",
]

#: How long one inbox tag is used: a day, so a recipient polls at most two tags around midnight UTC.
INBOX_EPOCH_SECONDS = 24 * 3600
_PERSON = b"meshchat-inbox1"


def epoch_of(wall_now: float) -> int:
    """The inbox epoch number that contains unix time ``wall_now``."""
    return int(wall_now // INBOX_EPOCH_SECONDS)


def inbox_tag(recipient: PublicIdentity, epoch: int) -> bytes:
    """The 16-byte inbox tag of ``recipient`` during ``epoch``."""
    return hashlib.blake2b(
        epoch.to_bytes(8, "big"), key=recipient.ed25519, digest_size=INBOX_TAG_SIZE, person=_PERSON
    ).digest()


#: Inbox topics: every recipient's envelopes travel on one of this many shards, chosen by its tag, so a
#: relay sees a shard's traffic (many recipients) and not one person's. 64 keeps a shard of a
#: 1,000-user network at ~16 people (k-anonymity) while each node joins at most 3 topics.
INBOX_SHARDS = 64
#: Prefix of the inbox shard topics.
INBOX_TOPIC_PREFIX = "meshchat/inbox/"


def inbox_topic(tag: bytes) -> str:
    """The gossip topic that carries envelopes addressed to inbox ``tag``."""
    return f"{INBOX_TOPIC_PREFIX}{int.from_bytes(tag[:2], 'big') % INBOX_SHARDS}"


def inbox_topic_at(recipient: PublicIdentity, wall_now: float) -> str:
    """The inbox shard topic ``recipient``'s envelopes travel on at unix time ``wall_now``."""
    return inbox_topic(inbox_tag(recipient, epoch_of(wall_now)))


def inbox_tags_around(recipient: PublicIdentity, wall_now: float) -> dict[bytes, int]:
    """``recipient``'s tags for yesterday, today and tomorrow (senders' clocks and midnight), by epoch."""
    today = epoch_of(wall_now)
    return {inbox_tag(recipient, epoch): epoch for epoch in (today - 1, today, today + 1)}
