"""Groups on the real network: nodes on 127.0.0.1 create a group, invite, join, talk, remove."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio
from conftest import make_profile

from meshchat.crypto import epoch_of
from meshchat.groups.events import GroupInvited, GroupMessage, MemberStatus, SendControl
from meshchat.groups.seal import group_tag, group_topic
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 20.0
FAST_RETRY = StoreConfig(retry_initial=0.5)


async def next_invitation(node: Node) -> GroupInvited:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, GroupInvited):
                return event
    raise AssertionError("unreachable")


@asynccontextmanager
async def three_friends(tmp_path: Path) -> AsyncIterator[list[Node]]:
    """Alice, Bob and Carol: each has the others as contacts; all connected to Alice."""
    names = ["alice", "bob", "carol"]
    profiles = [make_profile(tmp_path, name, i + 1) for i, name in enumerate(names)]
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for folder, _ in profiles:
            nodes.append(
                await stack.enter_async_context(Node.open(folder, listen=LOCAL, store_config=FAST_RETRY))
            )
        for i, node in enumerate(nodes):
            for j, (_, identity) in enumerate(profiles):
                if i != j:
                    invite = Invite.create(identity, name=names[j].title(), addrs=nodes[j].listen_addrs)
                    node.contacts.add(invite.to_text())
        for node in nodes[1:]:
            await node.connect(nodes[0].listen_addrs[0])
        yield nodes


async def drain_until_message(node: Node, text: str) -> GroupMessage:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, GroupMessage) and event.body == text.encode():
                return event
    raise AssertionError("unreachable")


async def test_a_group_on_three_nodes_invite_join_talk_and_remove(tmp_path: Path) -> None:
    async with three_friends(tmp_path) as (alice, bob, carol):
        family = alice.groups.create("Family", ["Bob", "Carol"])
        assert family.status is MemberStatus.JOINED
        for node in (bob, carol):
            invited = await next_invitation(node)
            assert invited.name == "Family" and invited.by == alice.identity.public.ed25519
            joined = node.groups.join("Family")
            assert joined.status is MemberStatus.JOINED
        # No mailbox here: a member whose subscription to today's topic Alice has not heard yet would
        # miss the first message until a member's node fetches it from a mailbox; wait for them.
        today = group_topic(group_tag(family.group_id, epoch_of(alice.groups.driver.now())))
        with trio.fail_after(WAIT):
            await alice.wait_for(
                lambda: {bob.peer_id, carol.peer_id} <= alice.driver.router.topic_peers(today)
            )
        alice.groups.send("Family", "dinner at 8")
        for node in (bob, carol):
            message = await drain_until_message(node, "dinner at 8")
            assert message.sender == alice.identity.public.ed25519
        bob.groups.send("Family", "I'll bring bread")
        await drain_until_message(carol, "I'll bring bread")
        assert [m.body for m in carol.groups.history("Family")] == [b"dinner at 8", b"I'll bring bread"]
        # Alice removes Carol: Carol is told, and reads nothing sent after
        alice.groups.remove("Family", "Carol")
        with trio.fail_after(WAIT):
            await carol.wait_for(lambda: carol.groups.members(family.group_id).status is MemberStatus.REMOVED)
        with trio.fail_after(WAIT):
            await bob.wait_for(
                lambda: carol.identity.public.ed25519 not in bob.groups.members("Family").members
            )
        alice.groups.send("Family", "just us now")
        await drain_until_message(bob, "just us now")
        assert b"just us now" not in [m.body for m in carol.groups.history(family.group_id)]


async def test_a_member_key_that_is_no_key_costs_the_node_nothing(tmp_path: Path) -> None:
    """Targets of ops are not checked to be curve points (it would cost a check per key of a CREATE
    of 1,000); an admin can name a made-up key. Handing our chain to it must not stop our node."""
    async with three_friends(tmp_path) as (alice, bob, _):
        alice.groups.create("Pair", ["Bob"])
        alice.groups.driver.perform([SendControl(recipient=b"\xff" * 32, body=b"handout", ttl=60)])
        assert alice.groups.driver.refused == {"bad member key": 1}
        bob.groups.join((await next_invitation(bob)).group_id)  # the node goes on
        assert alice.groups.members("Pair").status is MemberStatus.JOINED
