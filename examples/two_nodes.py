"""Two meshchat nodes on 127.0.0.1: Alice sends Bob a sealed message over TCP + Noise + yamux.

Run: python examples/two_nodes.py
"""

from __future__ import annotations

import trio

from meshchat import Identity, Node
from meshchat.inbox import DirectMessage


async def main() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    local = ["/ip4/127.0.0.1/tcp/0"]
    async with Node.open(identity=bob, listen=local) as b, Node.open(identity=alice, listen=local) as a:
        await a.connect(b.listen_addrs[0])
        # Wait (at most 10 s) until Alice has heard that Bob listens on his inbox shard.
        with trio.fail_after(10):
            await a.wait_for(lambda: b.peer_id in a.driver.router.topic_peers(b.inbox_topic()))
        await a.send(bob.public, "Привет, Боб!")
        with trio.fail_after(10):
            async for event in b.events():
                if isinstance(event, DirectMessage):
                    print(f"Bob got {event.body.decode()!r}, signed by Alice: {event.sender == alice.public}")
                    break


if __name__ == "__main__":
    trio.run(main)
