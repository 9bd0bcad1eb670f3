"""Shared by the JSON-RPC daemon tests: two real nodes on 127.0.0.1 with profiles that know each other,
the methods over Alice's node, and a client session collecting its notifications."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from conftest import make_profile

from meshchat.app.jsonrpc import RpcSession, open_session
from meshchat.app.methods import Methods, open_methods
from meshchat.node import Node
from meshchat.store.messenger import StoreConfig
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 30.0
FAST_RETRY = StoreConfig(retry_initial=0.5, sync_interval=1.0)


@dataclass
class Pair:
    alice: Node
    bob: Node
    methods: Methods
    alice_dir: Path
    bob_dir: Path


@asynccontextmanager
async def alice_and_bob(tmp_path: Path) -> AsyncIterator[Pair]:
    """Bob's node, then Alice's with the methods over it; each has the other as a contact (Bob's
    invite carries his address)."""
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 2)
    (alice_dir / "profile.json").write_text(json.dumps({"name": "Alice"}))
    async with AsyncExitStack() as stack:
        bob = await stack.enter_async_context(
            Node.open(bob_dir, listen=LOCAL, store_config=FAST_RETRY, dht=False)
        )
        alice = await stack.enter_async_context(
            Node.open(alice_dir, listen=LOCAL, store_config=FAST_RETRY, dht=False)
        )
        alice.contacts.add(Invite.create(bob_id, name="Bob", addrs=bob.listen_addrs).to_text())
        bob.contacts.add(Invite.create(alice_id, name="Alice").to_text())  # he answers over her connection
        await alice.connect(bob.listen_addrs[0])
        with trio.fail_after(WAIT):  # each hears the other on its inbox shard: sends go straight there
            await alice.wait_for(lambda: bob.peer_id in alice.driver.router.topic_peers(bob.inbox_topic()))
            await bob.wait_for(lambda: alice.peer_id in bob.driver.router.topic_peers(alice.inbox_topic()))
        methods = await stack.enter_async_context(open_methods(alice))
        yield Pair(alice=alice, bob=bob, methods=methods, alice_dir=alice_dir, bob_dir=bob_dir)


@dataclass
class Client:
    """A session with its notifications kept, for tests."""

    session: RpcSession
    notes: list[dict[str, Any]] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)
    next_id: int = 0

    async def notify(self, text: str) -> None:
        self.notes.append(json.loads(text))
        self.arrived.set()
        self.arrived = trio.Event()

    async def call(self, method: str, **params: Any) -> Any:
        """The result of ``method`` (AssertionError with the error if it failed)."""
        reply = await self.request(method, params)
        assert "error" not in reply, reply
        return reply["result"]

    async def request(self, method: str, params: Any) -> dict[str, Any]:
        self.next_id += 1
        text = json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        reply = await self.session.handle(text)
        assert reply is not None
        answer: dict[str, Any] = json.loads(reply)
        assert answer["id"] == self.next_id
        return answer

    async def wait_event(self, kind: str, **match: Any) -> dict[str, Any]:
        """The first event of type ``kind`` whose fields include ``match`` (waits for it)."""
        with trio.fail_after(WAIT):
            while True:
                for note in self.notes:
                    event = note["params"]["event"]
                    if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                        return event  # type: ignore[no-any-return]
                await self.arrived.wait()


@asynccontextmanager
async def client(methods: Methods) -> AsyncIterator[Client]:
    """A session over ``methods`` whose notifications are kept."""
    holder: list[Client] = []

    async def notify(text: str) -> None:
        await holder[0].notify(text)

    async with open_session(methods, notify) as session:
        holder.append(Client(session=session))
        yield holder[0]
