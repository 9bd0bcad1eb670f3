"""Per-peer batching of what one router step wants to send: control piggybacks on messages.

Within one ``handle``/``on_timer`` call the router queues messages and control entries per peer; at the
end ``flush`` turns each peer's queue into a single ``SendRpc`` (gossipsub-v1.0.md, "Control Message
Piggybacking"). One RPC per peer per step also keeps the simulator's event count down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshchat.gossip.events import SendRpc
from meshchat.gossip.messages import (
    RPC,
    ControlMessage,
    Graft,
    IDontWant,
    IHave,
    IWant,
    PeerId,
    Prune,
    PubMessage,
    SubOpts,
)

__all__ = ["Outbox"]


@dataclass(slots=True)
class _Pending:
    subscriptions: list[SubOpts] = field(default_factory=list)
    publish: list[PubMessage] = field(default_factory=list)
    ihave: list[IHave] = field(default_factory=list)
    iwant: list[IWant] = field(default_factory=list)
    graft: list[Graft] = field(default_factory=list)
    prune: list[Prune] = field(default_factory=list)
    idontwant: list[IDontWant] = field(default_factory=list)

    def to_rpc(self) -> RPC:
        control = None
        if self.ihave or self.iwant or self.graft or self.prune or self.idontwant:
            control = ControlMessage(
                ihave=tuple(self.ihave),
                iwant=tuple(self.iwant),
                graft=tuple(self.graft),
                prune=tuple(self.prune),
                idontwant=tuple(self.idontwant),
            )
        return RPC(subscriptions=tuple(self.subscriptions), publish=tuple(self.publish), control=control)


class Outbox:
    """What to send to whom, collected during one router step."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        """Start empty."""
        self._pending: dict[PeerId, _Pending] = {}

    def _for(self, peer: PeerId) -> _Pending:
        pending = self._pending.get(peer)
        if pending is None:
            pending = self._pending[peer] = _Pending()
        return pending

    def subscription(self, peer: PeerId, sub: SubOpts) -> None:
        """Queue a subscription announcement."""
        self._for(peer).subscriptions.append(sub)

    def message(self, peer: PeerId, message: PubMessage) -> None:
        """Queue a message."""
        self._for(peer).publish.append(message)

    def ihave(self, peer: PeerId, entry: IHave) -> None:
        """Queue gossip."""
        self._for(peer).ihave.append(entry)

    def iwant(self, peer: PeerId, entry: IWant) -> None:
        """Queue a request for messages."""
        self._for(peer).iwant.append(entry)

    def graft(self, peer: PeerId, entry: Graft) -> None:
        """Queue a GRAFT."""
        self._for(peer).graft.append(entry)

    def prune(self, peer: PeerId, entry: Prune) -> None:
        """Queue a PRUNE."""
        self._for(peer).prune.append(entry)

    def idontwant(self, peer: PeerId, entry: IDontWant) -> None:
        """Queue an IDONTWANT."""
        self._for(peer).idontwant.append(entry)

    def discard(self, peer: PeerId) -> None:
        """Forget everything queued for ``peer`` (it disconnected)."""
        self._pending.pop(peer, None)

    def flush(self) -> list[SendRpc]:
        """One ``SendRpc`` per peer with anything queued, in the order peers were first queued."""
        sends = [SendRpc(peer=peer, rpc=pending.to_rpc()) for peer, pending in self._pending.items()]
        self._pending.clear()
        return sends
