"""The router's time-limited tables that remote peers fill: GRAFT backoffs, IWANT promises and
IDONTWANT ids, each with its bound and its expiry.

Every entry here is put in because of something a peer sent, so each table says what bounds it:
backoffs expire and are capped per topic (``MAX_BACKOFFS_PER_TOPIC``), promises expire after the
IWANT follow-up time, IDONTWANT ids after the message cache window (and arrive at a capped rate per
heartbeat, ``GossipConfig.max_idontwant_ids``). The router (``meshchat.gossip.router``) decides what
goes in and what an expiry means; these classes only keep the entries. No I/O, no clock: every time
comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from meshchat.gossip.messages import MessageId, PeerId, Topic

__all__ = ["MAX_BACKOFFS_PER_TOPIC", "Backoffs", "DontSend", "Promises"]

#: Backoff entries kept per topic. Connected peers hold at most one each (the host caps connections
#: at 1,024); the rest belong to peers that left, remembered so they cannot reset a backoff by
#: reconnecting. New identities cost nothing, so past this many the entries of departed peers that
#: expire first are forgotten: the worst a flood of identities achieves is an early GRAFT allowed.
MAX_BACKOFFS_PER_TOPIC = 4096


class Backoffs:
    """When each peer may be grafted again in each topic (gossipsub v1.1, "PRUNE Backoff")."""

    __slots__ = ("_by_topic",)

    def __init__(self) -> None:
        """Start empty."""
        self._by_topic: dict[Topic, dict[PeerId, float]] = {}

    def until(self, topic: Topic, peer: PeerId) -> float | None:
        """When ``peer``'s backoff in ``topic`` ends, or None if it has none."""
        backoffs = self._by_topic.get(topic)
        return None if backoffs is None else backoffs.get(peer)

    def active(self, topic: Topic, peer: PeerId, now: float) -> bool:
        """True while ``peer`` may not be grafted in ``topic``."""
        until = self.until(topic, peer)
        return until is not None and until > now

    def add(self, topic: Topic, peer: PeerId, until: float, *, connected: Container[PeerId]) -> None:
        """Back ``peer`` off in ``topic`` until ``until`` (a later end already set is kept).

        Past ``MAX_BACKOFFS_PER_TOPIC`` entries, departed peers' (not in ``connected``) that end first
        are forgotten.
        """
        backoffs = self._by_topic.setdefault(topic, {})
        backoffs[peer] = max(backoffs.get(peer, until), until)
        if len(backoffs) > MAX_BACKOFFS_PER_TOPIC:
            departed = sorted((at, p) for p, at in backoffs.items() if p not in connected)
            for _, gone in departed[: len(backoffs) - MAX_BACKOFFS_PER_TOPIC]:
                del backoffs[gone]

    def expire(self, now: float) -> None:
        """Forget backoffs that ended at or before ``now``, and topics left without any."""
        for topic in list(self._by_topic):
            backoffs = self._by_topic[topic]
            for peer in [p for p, at in backoffs.items() if at <= now]:
                del backoffs[peer]
            if not backoffs:
                del self._by_topic[topic]

    def __len__(self) -> int:
        return sum(len(backoffs) for backoffs in self._by_topic.values())


class Promises:
    """Message ids asked for with IWANT, and by when the peer that advertised each must deliver it.

    gossipsub v1.1 ("Spam Protection Measures"): one random id per IWANT is tracked; an advertiser that
    lets it lapse is penalised (P7). A message that arrives, from anyone, fulfils every promise of it.
    """

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        """Start empty."""
        self._by_id: dict[MessageId, dict[PeerId, float]] = {}

    def add(self, message_id: MessageId, peer: PeerId, deadline: float) -> None:
        """``peer`` advertised ``message_id`` and was asked for it; it must come by ``deadline``."""
        self._by_id.setdefault(message_id, {})[peer] = deadline

    def pending(self, message_id: MessageId) -> bool:
        """True while some peer was asked for ``message_id`` and its time is not up."""
        return message_id in self._by_id

    def fulfil(self, message_id: MessageId) -> None:
        """``message_id`` arrived: nobody owes it any more."""
        self._by_id.pop(message_id, None)

    def broken(self, now: float) -> list[PeerId]:
        """Remove the promises due at or before ``now``; the peers that broke them, once per promise."""
        breakers: list[PeerId] = []
        done: list[MessageId] = []
        for message_id, advertisers in self._by_id.items():
            for peer, deadline in list(advertisers.items()):
                if deadline <= now:
                    del advertisers[peer]
                    breakers.append(peer)
            if not advertisers:
                done.append(message_id)
        for message_id in done:
            del self._by_id[message_id]
        return breakers

    def owed_by(self, peer: PeerId) -> bool:
        """True if ``peer`` still owes a message."""
        return any(peer in advertisers for advertisers in self._by_id.values())

    def __len__(self) -> int:
        return sum(len(advertisers) for advertisers in self._by_id.values())


class DontSend:
    """Message ids each peer said it does not want (gossipsub v1.2 IDONTWANT), with when it said so."""

    __slots__ = ("by_peer",)

    def __init__(self) -> None:
        """Start empty."""
        #: Ids by peer, each peer's in the order they arrived, that is in time order (read it, do not
        #: change it: the router looks peers up here for every copy it forwards).
        self.by_peer: dict[PeerId, dict[MessageId, float]] = {}

    def add(self, peer: PeerId, message_ids: Iterable[MessageId], now: float) -> None:
        """``peer`` said IDONTWANT for ``message_ids`` at ``now``."""
        dont = self.by_peer.setdefault(peer, {})
        for message_id in message_ids:
            # Re-inserted at the end, so insertion order stays time order: ``expire`` stops at the first
            # live entry, and an id repeated every heartbeat at the front kept every entry behind it
            # for ever (5,000 more per heartbeat).
            dont.pop(message_id, None)
            dont[message_id] = now

    def forget_peer(self, peer: PeerId) -> None:
        """``peer`` is gone: drop its ids."""
        self.by_peer.pop(peer, None)

    def expire(self, horizon: float) -> None:
        """Forget ids said at or before ``horizon``, and peers left without any."""
        for peer in list(self.by_peer):
            dont = self.by_peer[peer]
            # Drop from the front up to the first live one. Scanning every entry each heartbeat cost 6 %
            # of a simulation.
            stale: list[MessageId] = []
            for message_id, at in dont.items():
                if at > horizon:
                    break
                stale.append(message_id)
            for message_id in stale:
                del dont[message_id]
            if not dont:
                del self.by_peer[peer]

    def __len__(self) -> int:
        return sum(len(dont) for dont in self.by_peer.values())
