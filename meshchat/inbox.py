"""Sealed direct messages over gossip: inbox shard topics, the relay check, and opening what is ours.

A message to a contact is a sealed envelope (``meshchat.crypto.seal``) published on the contact's inbox
shard topic (``meshchat.crypto.inbox_topic`` of today's blinded tag). Every node on that shard relays
it after the cheap relay check (structure, size, expiry within the TTL window); only the recipient,
whose tag it carries, opens it, and only a verified sender's message reaches the application.

``Inbox`` is pure state, no I/O: the node feeds it the wall time and the envelopes that arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from meshchat.contacts import Contact, Contacts
from meshchat.crypto import INBOX_TOPIC_PREFIX, MAX_TTL, inbox_tags_around, inbox_topic, open_envelope
from meshchat.errors import DecodeError, MeshchatError
from meshchat.gossip import ValidationResult, Validator
from meshchat.identity import Identity, KeyCache, PublicIdentity
from meshchat.wire import decode_envelope

__all__ = ["CLOCK_SKEW", "DirectMessage", "Inbox", "envelope_relay_check"]

#: Seconds a sender's clock may run ahead of ours before its envelopes look as if they expire too late.
CLOCK_SKEW = 600


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectMessage:
    """A sealed message to this node that opened and verified."""

    #: Who signed it (proven).
    sender: PublicIdentity
    #: The contact with that key, if it is one.
    contact: Contact | None
    #: The body, exactly as sent.
    body: bytes
    #: The sender's clock when it sealed the message, ms since the unix epoch (the sender's claim).
    sent_at_ms: int
    #: The envelope's id.
    message_id: bytes


def envelope_relay_check(wall_clock: Callable[[], float], inner: Validator | None = None) -> Validator:
    """The relay's validator: envelopes on inbox topics must decode and be unexpired, with an expiry no
    further ahead than the longest TTL (plus clock skew); other topics go to ``inner`` (or pass)."""

    def check(topic: str, data: bytes, mid: bytes) -> ValidationResult:
        if not topic.startswith(INBOX_TOPIC_PREFIX):
            return inner(topic, data, mid) if inner is not None else ValidationResult.ACCEPT
        try:
            expiry = decode_envelope(data).expiry
        except DecodeError:
            return ValidationResult.REJECT
        now = wall_clock()
        if not now <= expiry <= now + MAX_TTL + CLOCK_SKEW:
            return ValidationResult.REJECT
        return ValidationResult.ACCEPT

    return check


class Inbox:
    """Which inbox topics this identity listens on today, and opening the envelopes addressed to it."""

    def __init__(self, identity: Identity, contacts: Contacts | None) -> None:
        """Listen as ``identity``; name senders from ``contacts``."""
        self._identity = identity
        self._contacts = contacts
        self._keys = KeyCache()
        self._tags: dict[bytes, int] = {}
        #: Envelopes with our tag that failed to open, by error class name (forged, altered, expired).
        self.rejected: dict[str, int] = {}

    def topics(self, wall_now: float) -> set[str]:
        """The inbox topics to be joined at ``wall_now`` (yesterday's, today's and tomorrow's tags)."""
        self._tags = inbox_tags_around(self._identity.public, wall_now)
        return {inbox_topic(tag) for tag in self._tags}

    def open(self, data: bytes, *, wall_now: float) -> DirectMessage | None:
        """Our message in ``data``, opened and verified; None if it is someone else's or fails to open
        (the failure is counted in ``rejected``)."""
        try:
            tag = decode_envelope(data).inbox_tag
        except DecodeError:
            return None
        if tag not in self._tags:
            return None  # another recipient on the same shard: relayed, not ours to open
        try:
            opened = open_envelope(self._identity, data, wall_now=wall_now, key_cache=self._keys)
        except MeshchatError as exc:
            name = type(exc).__name__
            self.rejected[name] = self.rejected.get(name, 0) + 1
            return None
        contact = self._contacts.by_key(opened.sender) if self._contacts is not None else None
        return DirectMessage(
            sender=opened.sender,
            contact=contact,
            body=opened.body,
            sent_at_ms=opened.sent_at_ms,
            message_id=opened.message_id,
        )
