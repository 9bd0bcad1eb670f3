"""The node's events as JSON, and the hub that fans them out to JSON-RPC subscribers.

``event_json`` gives every ``NodeEvent`` a JSON form with a ``"type"``: ``message`` (a direct message,
as a Message), ``status`` (an outgoing message moved on), ``peer`` (a peer connected or left),
``gossip`` (a message on a plain topic), and for everything else (groups, files, devices, documents,
credentials, store problems) the event's class name in snake case with its fields (``to_json``).

``EventHub`` is the only reader of ``node.events()``: one task takes each event, turns it into JSON
once and offers it to every subscriber's bounded queue (``SUBSCRIBER_QUEUE``). Offering never waits:
a subscriber whose queue is full has fallen behind; it is cut off (its queue closed after what it
holds, so its session sends those and then one ``overflow`` event) and counted in ``overflowed``. So
no client, however slow, holds up the node or another client; direct messages stay in the inbox
(``messages.inbox``, ``messages.conversation``) for a client that reconnects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from meshchat.app.methods_more import attachment_json
from meshchat.app.params import Json
from meshchat.app.views import direct_message, snake_case, to_json
from meshchat.errors import QuotaExceeded
from meshchat.files.events import Attachment
from meshchat.inbox import DirectMessage
from meshchat.net import MessageDelivered, PeerJoined, PeerLeft
from meshchat.store.messenger import StatusChanged

if TYPE_CHECKING:
    from meshchat.node import Node, NodeEvent

__all__ = ["MAX_SUBSCRIBERS", "SUBSCRIBER_QUEUE", "EventHub", "Subscription", "event_json"]

#: Events one subscriber may have waiting before it counts as fallen behind: a few seconds of a busy
#: node's events; a client that reads its socket keeps its queue near empty.
SUBSCRIBER_QUEUE = 256
#: Subscriptions the hub holds at once, over all sessions (each session holds at most
#: ``meshchat.app.jsonrpc.MAX_SUBSCRIPTIONS``; transports bound their sessions).
MAX_SUBSCRIBERS = 1024


def event_json(event: NodeEvent, cursor_of: Callable[[bytes], int | None] | None = None) -> dict[str, Json]:
    """``event`` as JSON with a ``"type"`` (module docstring); ``cursor_of`` gives a message's place in
    the conversation history (``Message.cursor``)."""
    match event:
        case DirectMessage():
            cursor = cursor_of(event.message_id) if cursor_of is not None else None
            return {"type": "message", "message": direct_message(event, cursor)}
        case StatusChanged(message_id=mid, status=status, error=error):
            return {"type": "status", "id": mid.hex(), "status": status.value, "error": error}
        case PeerJoined(peer=peer):
            return {"type": "peer", "peer": peer, "joined": True}
        case PeerLeft(peer=peer):
            return {"type": "peer", "peer": peer, "joined": False}
        case Attachment():
            return {"type": "attachment", **attachment_json(event)}
        case MessageDelivered(topic=topic, message_id=mid, data=data, source=source):
            return {"type": "gossip", "topic": topic, "id": mid.hex(), "source": source, "data": data.hex()}
        case _:
            fields = to_json(event)
            return {
                **(fields if isinstance(fields, dict) else {"value": fields}),
                "type": snake_case(type(event).__name__),
            }


@dataclass(eq=False, slots=True)
class Subscription:
    """One subscriber's queue: ``receive`` yields event JSON until it ends (unsubscribed or cut off)."""

    #: The events, oldest first.
    receive: trio.MemoryReceiveChannel[dict[str, Json]]
    #: The hub's end.
    send: trio.MemorySendChannel[dict[str, Json]] = field(repr=False)
    #: True once the hub cut it off because its queue was full.
    overflowed: bool = False


class EventHub:
    """Reads ``node.events()`` and fans each event out to the subscribers, never waiting on one."""

    def __init__(
        self,
        node: Node,
        *,
        queue: int = SUBSCRIBER_QUEUE,
        cursor_of: Callable[[bytes], int | None] | None = None,
    ) -> None:
        """Fan out ``node``'s events, ``queue`` events at most waiting per subscriber; ``cursor_of``
        gives a message's cursor in the conversation history."""
        self._node = node
        self._cursor_of = cursor_of
        self._queue = queue
        self._subscribers: set[Subscription] = set()
        #: Subscribers cut off for falling behind, since the start.
        self.overflowed = 0
        #: Events read from the node, since the start.
        self.events = 0

    def subscribe(self) -> Subscription:
        """A new subscriber (``QuotaExceeded`` past ``MAX_SUBSCRIBERS``)."""
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            raise QuotaExceeded(
                what="event subscriptions", used=len(self._subscribers), limit=MAX_SUBSCRIBERS
            )
        send, receive = trio.open_memory_channel[dict[str, Json]](self._queue)
        subscription = Subscription(receive=receive, send=send)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """End ``subscription`` (its reader gets what is queued, then the end)."""
        self._subscribers.discard(subscription)
        subscription.send.close()

    @property
    def subscribers(self) -> int:
        """Subscriptions now."""
        return len(self._subscribers)

    def publish(self, event: dict[str, Json]) -> None:
        """Offer ``event`` to every subscriber; cut off those whose queue is full."""
        for subscription in list(self._subscribers):
            try:
                subscription.send.send_nowait(event)
            except trio.WouldBlock:
                subscription.overflowed = True
                self.overflowed += 1
                self.unsubscribe(subscription)
            except trio.BrokenResourceError:  # its reader is gone (the session ended)
                self.unsubscribe(subscription)

    async def run(self) -> None:
        """Read the node's events until cancelled."""
        async for event in self._node.events():
            self.events += 1
            self.publish(event_json(event, self._cursor_of))
