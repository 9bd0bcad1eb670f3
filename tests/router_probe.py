"""Looks inside a ``GossipRouter`` for the tests that prove its state is bounded.

The router has no public view of its private tables (and should not grow one for tests); these
helpers name every table a remote peer can put entries in, so a test can say "nothing of this peer
is left" or "this table stays under its bound" in one line.
"""

from __future__ import annotations

from meshchat.gossip import GossipRouter


def peer_footprint(router: GossipRouter, peer: str) -> set[str]:
    """The names of the router's tables that still mention ``peer`` (retained scores excepted)."""
    found = set()
    if peer in router._peers:
        found.add("peers")
    if any(peer in members for members in router._topic_peers.values()):
        found.add("topic_peers")
    if any(peer in members for members in router._mesh.values()):
        found.add("mesh")
    if any(peer in members for members in router._fanout.values()):
        found.add("fanout")
    if peer in router._dont_send.by_peer:
        found.add("dont_send")
    if router._promises.owed_by(peer):
        found.add("promises")
    if peer in router._outbox.pending:
        found.add("outbox")
    if any(peer in counts for counts in router._mcache._iwant_counts.values()):
        found.add("iwant_counts")
    score = router._score
    if score is not None:
        stats = score._peers.get(peer)
        if stats is not None and (stats.connected or peer not in score._retained):
            found.add("score")  # a departed peer's score may stay only as a retained (expiring) one
    return found


def topic_entries(router: GossipRouter) -> int:
    """Entries in the per-topic peer sets, counting an empty set as one (it still costs a key)."""
    return sum(max(1, len(members)) for members in router._topic_peers.values())


def backoff_entries(router: GossipRouter) -> int:
    """Entries in the GRAFT backoff table."""
    return len(router._backoff)
