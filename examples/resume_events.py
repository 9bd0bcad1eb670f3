"""Bob's app picks up its event stream where it stopped: what arrived while it was not looking is
replayed from the inbox, in order, each message once.

An app keeps the ``number`` of the last message it finished handling (on disk, in practice) and opens
the node with ``events_after=`` that number. Run: python examples/resume_events.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

from meshchat import Identity, Node, save_identity
from meshchat.inbox import DirectMessage
from meshchat.node import KEY_FILE


async def next_message(node: Node) -> DirectMessage:
    with trio.fail_after(10):
        async for event in node.events():
            if isinstance(event, DirectMessage):
                return event
    raise AssertionError("unreachable")


async def main() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    local = ["/ip4/127.0.0.1/tcp/0"]
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp)
        save_identity(profile / KEY_FILE, bob, None)  # (a real profile has a passphrase)
        # Alice is a stranger to Bob: her node stamps what she sends him (stamps=True; a profile's
        # node does by default), or Bob's node would drop her messages unread.
        async with (
            Node.open(profile, listen=local) as b,
            Node.open(identity=alice, listen=local, stamps=True) as a,
        ):
            await a.connect(b.listen_addrs[0])
            with trio.fail_after(10):  # until Alice has heard that Bob listens on his inbox shard
                await a.wait_for(lambda: b.peer_id in a.driver.router.topic_peers(b.inbox_topic()))
            for text in ("one", "two", "three"):
                await a.send(bob.public, text)
            first = await next_message(b)
            print(f"handled #{first.number}: {first.body.decode()}")
            handled = first.number  # then the app stops, before it took the others
            with trio.fail_after(10):
                await b.wait_for(lambda: len(b.inbox()) == 3)
        async with Node.open(profile, listen=local, events_after=handled) as b:
            for _ in range(2):
                message = await next_message(b)
                print(f"replayed #{message.number}: {message.body.decode()}")


if __name__ == "__main__":
    trio.run(main)
