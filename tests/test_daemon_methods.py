"""The JSON-RPC methods on real nodes (127.0.0.1, real profiles): status, contacts, sending, events."""

from __future__ import annotations

from pathlib import Path

import trio
from rpc_harness import WAIT, alice_and_bob, client

from meshchat.inbox import DirectMessage


async def test_status_contacts_send_and_the_message_event(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path) as pair, client(pair.methods) as alice:
        status = await alice.call("node.status")
        assert status["peer_id"] == pair.alice.peer_id
        assert status["name"] == "Alice"
        assert status["fingerprint"] == pair.alice.identity.public.fingerprint
        assert status["blocked_dropped"] == 0
        contacts = await alice.call("contacts.list")
        assert [c["name"] for c in contacts] == ["Bob"]
        assert contacts[0]["peer_id"] == pair.bob.peer_id
        assert contacts[0]["verification"] == "unverified"
        subscription = (await alice.call("events.subscribe"))["subscription"]
        sent = await alice.call("messages.send", to="Bob", text="Привет, Боб!")
        assert sent["outgoing"] is True
        assert sent["peer"] == pair.bob.peer_id
        assert sent["text"] == "Привет, Боб!"
        assert sent["status"] in {"queued", "relayed"}
        with trio.fail_after(WAIT):
            async for event in pair.bob.events():
                if isinstance(event, DirectMessage):
                    assert event.body.decode() == "Привет, Боб!"
                    break
        delivered = await alice.wait_event("status", id=sent["id"], status="delivered")
        assert delivered["error"] == ""
        assert alice.notes[0]["params"]["subscription"] == subscription


async def test_a_message_to_alice_is_an_event_and_in_her_inbox(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path) as pair, client(pair.methods) as alice:
        await alice.call("events.subscribe")
        await pair.bob.send("Alice", "hi Alice")
        event = await alice.wait_event("message")
        message = event["message"]
        assert message["text"] == "hi Alice"
        assert message["outgoing"] is False
        assert message["peer"] == pair.bob.peer_id
        assert message["status"] is None
        inbox = await alice.call("messages.inbox", after=0)
        assert [m["text"] for m in inbox["messages"]] == ["hi Alice"]
        assert inbox["messages"][0]["id"] == message["id"]
