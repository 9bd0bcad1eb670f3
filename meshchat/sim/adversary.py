"""Adversary models: wrappers and behaviours around the real router, never a fork of it.

- ``SybilRouter`` runs a real ``GossipRouter`` (so it subscribes, grafts, accepts grafts, gossips and
  answers control like any peer) and strips every message out of what it sends: it never forwards,
  never answers an IWANT with the message, and so breaks every promise its IHAVEs made. Control and
  subscriptions go out unchanged. That is the "silent dropper" of gossipsub-v1.1.md's attack analysis.
- ``flood_rpc`` is what a flooder sends on top of its honest router: one invalid message, to every
  peer it is connected to.

What an attacker dials, and when it acts, is scheduled by ``meshchat.sim.engine``; spammers need no
wrapper (their junk is valid, published through their own router like any message).
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from meshchat.gossip import GossipRouter, RouterAction, RouterInput, RouterStatistics, SendRpc
from meshchat.gossip.messages import RPC, PeerId, PubMessage, Topic

__all__ = ["SybilRouter", "flood_rpc"]


class SybilRouter:
    """A real router whose outgoing messages are withheld; everything else passes through."""

    __slots__ = ("_router", "withheld")

    def __init__(self, router: GossipRouter) -> None:
        """Wrap ``router``."""
        self._router = router
        #: Message copies the wrapped router wanted to send and this wrapper dropped.
        self.withheld = 0

    @property
    def router(self) -> GossipRouter:
        """The wrapped router."""
        return self._router

    @property
    def mesh(self) -> Mapping[Topic, Set[PeerId]]:
        """The wrapped router's mesh."""
        return self._router.mesh

    def handle(self, event: RouterInput, *, now: float) -> list[RouterAction]:
        """Let the router process ``event``; strip messages from what it sends."""
        return self._strip(self._router.handle(event, now=now))

    def on_timer(self, *, now: float) -> list[RouterAction]:
        """Run the router's heartbeat; strip messages from what it sends."""
        return self._strip(self._router.on_timer(now=now))

    def next_deadline(self) -> float | None:
        """The router's next deadline."""
        return self._router.next_deadline()

    def statistics(self) -> RouterStatistics:
        """The router's counters (they count the messages it meant to send)."""
        return self._router.statistics()

    def _strip(self, actions: list[RouterAction]) -> list[RouterAction]:
        kept: list[RouterAction] = []
        for action in actions:
            if isinstance(action, SendRpc) and action.rpc.publish:
                rpc = action.rpc
                self.withheld += len(rpc.publish)
                if rpc.subscriptions or rpc.control is not None:
                    control_only = RPC(subscriptions=rpc.subscriptions, control=rpc.control)
                    kept.append(SendRpc(peer=action.peer, rpc=control_only))
                continue
            kept.append(action)
        return kept


def flood_rpc(topic: Topic, garbage: bytes) -> RPC:
    """One invalid message on ``topic``: what a flooder sends to each of its peers per act."""
    return RPC(publish=(PubMessage(topic=topic, data=garbage),))
