"""A family group of five on 127.0.0.1: Mum creates "Family", the others join on her invitation,
everyone talks, then Mum removes Uncle Joe, and Joe cannot read what is said after.

Each member's node opens with an identity only (in memory; an app would use a profile folder and
contacts, and name members by contact name). One envelope per group message, whatever the number
of members; a removal makes every remaining member start a new sending chain that Joe never gets.

Run: python examples/family_group.py
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TypeVar

import trio

from meshchat import Identity, Node
from meshchat.crypto import epoch_of
from meshchat.groups.events import GroupChanged, GroupInvited, GroupMessage, GroupStatus, MemberStatus
from meshchat.groups.ops import OpKind
from meshchat.groups.seal import group_tag, group_topic
from meshchat.store.messenger import StoreConfig

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
NAMES = ["Mum", "Dad", "Anna", "Ben", "Joe"]
WAIT = 60.0  # seconds any one step may take before the example gives up (a slow CI machine)
FAST_RETRY = StoreConfig(retry_initial=0.5)  # resend unacknowledged control messages quickly
E = TypeVar("E")


async def next_event(node: Node, kind: type[E], wanted: Callable[[E], bool] = lambda _: True) -> E:
    """The next event of ``node`` of type ``kind`` for which ``wanted`` holds (others are skipped)."""
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, kind) and wanted(event):
                return event
    raise AssertionError("unreachable")


def body_is(text: str) -> Callable[[GroupMessage], bool]:
    """A test for a group message whose body is ``text``."""
    return lambda message: message.body == text.encode()


async def wait_for_mesh(hub: Node, members: list[Node], topic: str) -> None:
    """Return once ``hub`` and each of ``members`` are in each other's gossip mesh for ``topic``."""
    with trio.fail_after(WAIT):
        await meshed(hub, {m.peer_id for m in members}, topic)
        for member in members:
            await meshed(member, {hub.peer_id}, topic)


async def meshed(node: Node, peers: set[str], topic: str) -> None:
    """Return once ``peers`` are all in ``node``'s gossip mesh for ``topic``."""
    await node.wait_for(lambda: peers <= node.driver.router.mesh.get(topic, set()))


async def main() -> None:
    people = {name: Identity.generate() for name in NAMES}
    name_of = {identity.public.ed25519: name for name, identity in people.items()}
    async with AsyncExitStack() as stack:
        nodes: dict[str, Node] = {}
        for name, identity in people.items():
            # A star around Mum's node. Gossip flows only through nodes that joined a topic, and key
            # handouts travel on each recipient's inbox shard: Mum's node relays all the shards.
            opening = Node.open(
                identity=identity,
                listen=LOCAL,
                dht=False,
                relay_inbox_shards=name == "Mum",
                store_config=FAST_RETRY,
            )
            nodes[name] = await stack.enter_async_context(opening)
        mum = nodes["Mum"]
        others = [nodes[name] for name in NAMES[1:]]
        for member in others:
            await member.connect(mum.listen_addrs[0])
        with trio.fail_after(WAIT):  # until Mum heard each of them listen on their inbox shard
            await mum.wait_for(
                lambda: all(n.peer_id in mum.driver.router.topic_peers(n.inbox_topic()) for n in others)
            )

        # 1. Mum creates the group; each of the others gets an invitation and joins.
        family = mum.groups.create("Family", [people[name].public for name in NAMES[1:]])
        print(f"Mum created {family.name!r} ({family.group_id.hex()[:16]}…), inviting {', '.join(NAMES[1:])}")
        for name in NAMES[1:]:
            invited = await next_event(nodes[name], GroupInvited)
            joined = nodes[name].groups.join(invited.group_id)
            print(f"{name} was invited by {name_of[invited.by]} and joined: {joined.status.value}")
        # No mailbox here, so nobody could fetch a message the gossip mesh missed: wait until the
        # group's topic for today links Mum's node with every member's (Mum forwards what they send).
        today = group_topic(group_tag(family.group_id, epoch_of(mum.groups.driver.now())))
        await wait_for_mesh(mum, others, today)

        # 2. Messages flow: every member reads every other member's message, signed by its sender.
        for sender, text in [("Mum", "Sunday lunch at ours, 1 pm"), ("Anna", "I'll bake a cake 🎂")]:
            nodes[sender].groups.send(family.group_id, text)
            for name in NAMES:
                if name != sender:
                    got = await next_event(nodes[name], GroupMessage, body_is(text))
                    assert got.sender == people[sender].public.ed25519  # proven by the sender's signature
            print(f"{sender}: {text} -> read by all {len(NAMES) - 1} others")

        # 3. Mum removes Joe. Joe's node learns it; the others drop him from their member lists.
        mum.groups.remove(family.group_id, people["Joe"].public)
        joe = nodes["Joe"]
        with trio.fail_after(WAIT):
            await joe.wait_for(lambda: joe.groups.members(family.group_id).status is MemberStatus.REMOVED)
        for name in ("Dad", "Anna", "Ben"):
            await next_event(nodes[name], GroupChanged, lambda c: c.kind is OpKind.REMOVE)
        members = sorted(name_of[key] for key in mum.groups.members(family.group_id).members)
        print(
            f"Mum removed Joe; Joe's status: {joe.groups.members(family.group_id).status.value}; "
            f"members now: {', '.join(members)}"
        )

        # 4. What follows is sealed with chains Joe never received.
        secret = "Joe's surprise party is on Friday 🤫"
        sent = mum.groups.send(family.group_id, secret)
        for name in ("Dad", "Anna", "Ben"):
            await next_event(nodes[name], GroupMessage, body_is(secret))
            print(f"{name} read: {secret}")
        joe_history = [m.body.decode() for m in joe.groups.history(family.group_id)]
        print(f"Joe's history: {' | '.join(joe_history)}")
        print(f"Joe could not read the message after his removal: {secret not in joe_history}")

        # 5. Mum's status of that message: receipts from members come back batched.
        status = await next_event(
            mum, GroupStatus, lambda s: s.message_id == sent.message_id and s.delivered == s.members
        )
        print(f"status of Mum's message: {status.describe()}")


if __name__ == "__main__":
    trio.run(main)
