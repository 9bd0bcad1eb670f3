"""The gossipsub message cache (``mcache``) and the time-bounded seen cache.

``MessageCache`` keeps recent messages in ``mcache_len`` history windows, one per heartbeat, so IWANT
can be answered and IHAVE gossip emitted about the newest ``mcache_gossip`` windows
(gossipsub-v1.0.md, "Message Cache"). It also counts how often each peer asked for each message, so
IWANT spam cannot make us retransmit without bound (v1.1, "Spam Protection Measures").

``SeenCache`` remembers every message id for ``seen_ttl`` seconds, with the time it was first seen and
what validation said, so duplicates are dropped and near-first deliveries can be credited (P3).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from meshchat.gossip.messages import MessageId, PeerId, PubMessage, Topic

__all__ = ["MessageCache", "SeenCache", "SeenRecord"]


class MessageCache:
    """Recent messages by id, in heartbeat-sized windows."""

    __slots__ = ("_gossip", "_iwant_counts", "_messages", "_windows")

    def __init__(self, *, history: int, gossip: int) -> None:
        """Keep ``history`` windows; gossip about the newest ``gossip`` of them."""
        self._messages: dict[MessageId, PubMessage] = {}
        self._iwant_counts: dict[MessageId, dict[PeerId, int]] = {}
        self._windows: deque[list[tuple[MessageId, Topic]]] = deque([[]], maxlen=history)
        self._gossip = gossip

    def put(self, message_id: MessageId, message: PubMessage) -> None:
        """Add a message to the newest window."""
        self._messages[message_id] = message
        self._windows[0].append((message_id, message.topic))

    def get(self, message_id: MessageId) -> PubMessage | None:
        """The cached message, or None if it is unknown or has aged out."""
        return self._messages.get(message_id)

    def get_for_peer(self, message_id: MessageId, peer: PeerId, limit: int) -> PubMessage | None:
        """The message for ``peer``'s IWANT; None if uncached or asked for more than ``limit`` times."""
        message = self._messages.get(message_id)
        if message is None:
            return None
        counts = self._iwant_counts.setdefault(message_id, {})
        asked = counts.get(peer, 0) + 1
        counts[peer] = asked
        return message if asked <= limit else None

    def gossip_ids(self, topic: Topic) -> list[MessageId]:
        """Ids of the messages in ``topic`` from the newest ``gossip`` windows."""
        ids: list[MessageId] = []
        for index, window in enumerate(self._windows):
            if index >= self._gossip:
                break
            ids.extend(mid for mid, t in window if t == topic)
        return ids

    def shift(self) -> None:
        """Start a new window, forgetting the messages of the oldest one once the history is full."""
        if len(self._windows) == self._windows.maxlen:
            for mid, _ in self._windows[-1]:
                self._messages.pop(mid, None)
                self._iwant_counts.pop(mid, None)
        self._windows.appendleft([])

    def __len__(self) -> int:
        return len(self._messages)


@dataclass(slots=True)
class SeenRecord:
    """What the router remembers of a message id it has seen."""

    #: When the id may be forgotten.
    expires: float
    #: When the message first arrived.
    first_seen: float
    #: True once it validated; False if rejected or ignored.
    valid: bool


class SeenCache:
    """Message ids seen in the last ``ttl`` seconds (insertion order is expiry order)."""

    __slots__ = ("_ttl", "records")

    def __init__(self, ttl: float) -> None:
        """Remember ids for ``ttl`` seconds."""
        #: The records by id (read it, do not change it: the router looks ids up here on its hot path).
        self.records: dict[MessageId, SeenRecord] = {}
        self._ttl = ttl

    def get(self, message_id: MessageId) -> SeenRecord | None:
        """The record of ``message_id``, or None if not seen (or forgotten)."""
        return self.records.get(message_id)

    def add(self, message_id: MessageId, *, now: float, valid: bool) -> SeenRecord:
        """Record ``message_id`` as first seen at ``now``."""
        record = SeenRecord(expires=now + self._ttl, first_seen=now, valid=valid)
        self.records[message_id] = record
        return record

    def expire(self, now: float) -> None:
        """Forget ids whose time is up (they were added in time order, so stop at the first live one)."""
        records = self.records
        while records:
            first = next(iter(records))
            if records[first].expires > now:
                break
            del records[first]

    def __contains__(self, message_id: object) -> bool:
        return message_id in self.records

    def __len__(self) -> int:
        return len(self.records)
