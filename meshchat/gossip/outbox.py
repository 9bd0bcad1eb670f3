"""Per-peer batching of what one router step wants to send: control piggybacks on messages.

Within one ``handle``/``on_timer`` call the router queues messages and control entries per peer; at the
end ``flush`` turns each peer's queue into a single ``SendRpc`` (gossipsub-v1.0.md, "Control Message
Piggybacking"). One RPC per peer per step also keeps the simulator's event count down.
"""

from __future__ import annotations

from typing import TypeVar

from meshchat.gossip.events import SendRpc
from meshchat.gossip.messages import (
    RPC,
    Choke,
    ControlMessage,
    Graft,
    IDontWant,
    IHave,
    IWant,
    PeerId,
    Prune,
    PubMessage,
    SubOpts,
    Unchoke,
)

__all__ = ["Outbox"]

_T = TypeVar("_T")


class _Pending:
    """What is queued for one peer; lists are created on first use (most sends carry one kind)."""

    __slots__ = ("choke", "graft", "idontwant", "ihave", "iwant", "prune", "publish", "subscriptions")

    def __init__(self) -> None:
        self.subscriptions: list[SubOpts] | None = None
        self.publish: list[PubMessage] | None = None
        self.ihave: list[IHave] | None = None
        self.iwant: list[IWant] | None = None
        self.graft: list[Graft] | None = None
        self.prune: list[Prune] | None = None
        self.idontwant: list[IDontWant] | None = None
        self.choke: list[Choke | Unchoke] | None = None  # both, in the order queued

    def to_rpc(self, single_message_rpcs: dict[int, RPC]) -> RPC:
        publish = self.publish
        if publish is not None and len(publish) == 1 and self._only_publish():
            # The common case: one message forwarded to several peers. They can share one RPC object.
            rpc = single_message_rpcs.get(id(publish[0]))
            if rpc is None:
                rpc = single_message_rpcs[id(publish[0])] = RPC(publish=(publish[0],))
            return rpc
        control = None
        if self.ihave or self.iwant or self.graft or self.prune or self.idontwant or self.choke:
            chokes = self.choke or []
            control = ControlMessage(
                ihave=_tuple(self.ihave),
                iwant=_tuple(self.iwant),
                graft=_tuple(self.graft),
                prune=_tuple(self.prune),
                idontwant=_tuple(self.idontwant),
                choke=tuple(c for c in chokes if type(c) is Choke),
                unchoke=tuple(c for c in chokes if type(c) is Unchoke),
            )
        return RPC(subscriptions=_tuple(self.subscriptions), publish=_tuple(publish), control=control)

    def _only_publish(self) -> bool:
        return not (
            self.subscriptions
            or self.ihave
            or self.iwant
            or self.graft
            or self.prune
            or self.idontwant
            or self.choke
        )


def _tuple(items: list[_T] | None) -> tuple[_T, ...]:
    return () if items is None else tuple(items)


class Outbox:
    """What to send to whom, collected during one router step."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        """Start empty."""
        #: What is queued, by peer (read it, do not change it: the router checks it is empty on its hot
        #: path). A peer sent one message and nothing else (nearly every forward) maps to the bare
        #: message: no ``_Pending`` is built for it.
        self.pending: dict[PeerId, _Pending | PubMessage] = {}

    def _for(self, peer: PeerId) -> _Pending:
        pending = self.pending.get(peer)
        if pending is None:
            pending = self.pending[peer] = _Pending()
        elif type(pending) is PubMessage:
            bare = pending
            pending = self.pending[peer] = _Pending()
            pending.publish = [bare]
        assert type(pending) is _Pending
        return pending

    def subscription(self, peer: PeerId, sub: SubOpts) -> None:
        """Queue a subscription announcement."""
        pending = self._for(peer)
        if pending.subscriptions is None:
            pending.subscriptions = []
        pending.subscriptions.append(sub)

    def message(self, peer: PeerId, message: PubMessage) -> None:
        """Queue a message."""
        if peer not in self.pending:
            self.pending[peer] = message  # the common case: one forwarded message, nothing else
            return
        pending = self._for(peer)
        if pending.publish is None:
            pending.publish = []
        pending.publish.append(message)

    def ihave(self, peer: PeerId, entry: IHave) -> None:
        """Queue gossip."""
        pending = self._for(peer)
        if pending.ihave is None:
            pending.ihave = []
        pending.ihave.append(entry)

    def iwant(self, peer: PeerId, entry: IWant) -> None:
        """Queue a request for messages."""
        pending = self._for(peer)
        if pending.iwant is None:
            pending.iwant = []
        pending.iwant.append(entry)

    def graft(self, peer: PeerId, entry: Graft) -> None:
        """Queue a GRAFT."""
        pending = self._for(peer)
        if pending.graft is None:
            pending.graft = []
        pending.graft.append(entry)

    def prune(self, peer: PeerId, entry: Prune) -> None:
        """Queue a PRUNE."""
        pending = self._for(peer)
        if pending.prune is None:
            pending.prune = []
        pending.prune.append(entry)

    def idontwant(self, peer: PeerId, entry: IDontWant) -> None:
        """Queue an IDONTWANT."""
        pending = self._for(peer)
        if pending.idontwant is None:
            pending.idontwant = []
        pending.idontwant.append(entry)

    def choke(self, peer: PeerId, entry: Choke | Unchoke) -> None:
        """Queue a CHOKE or UNCHOKE."""
        pending = self._for(peer)
        if pending.choke is None:
            pending.choke = []
        pending.choke.append(entry)

    def discard(self, peer: PeerId) -> None:
        """Forget everything queued for ``peer`` (it disconnected)."""
        self.pending.pop(peer, None)

    def flush(self) -> list[SendRpc]:
        """One ``SendRpc`` per peer with anything queued, in the order peers were first queued."""
        if not self.pending:
            return []
        shared: dict[int, RPC] = {}
        sends = []
        for peer, pending in self.pending.items():
            if type(pending) is PubMessage:
                rpc = shared.get(id(pending))
                if rpc is None:
                    rpc = shared[id(pending)] = RPC(publish=(pending,))
            else:
                assert type(pending) is _Pending
                rpc = pending.to_rpc(shared)
            sends.append(SendRpc(peer=peer, rpc=rpc))
        self.pending.clear()
        return sends
