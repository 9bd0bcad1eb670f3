"""The JSON-RPC methods on real nodes (127.0.0.1, real profiles): status, contacts, sending, events."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import trio
from rpc_harness import WAIT, alice_and_bob, client

from meshchat.identity import Identity, safety_number
from meshchat.inbox import DirectMessage
from meshchat.wire import Invite


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


async def test_the_conversation_pages_back_and_mark_read_reaches_the_sender(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path) as pair, client(pair.methods) as alice:
        await alice.call("events.subscribe")
        sent = [await alice.call("messages.send", to="Bob", text=f"n{i}") for i in range(3)]
        assert all(isinstance(s["cursor"], int) for s in sent)
        await pair.bob.send("Alice", "reply")
        reply = (await alice.wait_event("message"))["message"]
        assert isinstance(reply["cursor"], int)
        page = await alice.call("messages.conversation", **{"with": "Bob", "limit": 2})
        assert [m["text"] for m in page["messages"]] == ["n2", "reply"]
        assert page["more"] is True
        older = await alice.call(
            "messages.conversation", **{"with": pair.bob.peer_id, "before": page["messages"][0]["cursor"]}
        )
        assert [m["text"] for m in older["messages"]] == ["n0", "n1"]
        assert older["more"] is False
        assert all(m["outgoing"] and m["peer"] == pair.bob.peer_id for m in older["messages"])
        assert await alice.call("messages.mark_read", id=reply["id"]) == {}
        unknown = await alice.request("messages.mark_read", {"id": "00" * 32})
        assert unknown["error"]["code"] == -32000
        assert unknown["error"]["data"]["type"] == "UnknownMessage"
        outbox = await alice.call("messages.outbox", limit=10)
        assert {m["id"] for m in outbox["messages"]} == {s["id"] for s in sent}


async def test_contacts_verify_rename_block_and_add_from_a_qr_photo(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path) as pair, client(pair.methods) as alice:
        verified = await alice.call("contacts.verify", contact="Bob")
        assert verified["verification"] == "verified"
        renamed = await alice.call("contacts.rename", contact="Bob", petname="Bobby")
        assert (renamed["name"], renamed["petname"], renamed["claimed_name"]) == ("Bobby", "Bobby", "Bob")
        back = await alice.call("contacts.rename", contact="Bobby", petname=None)
        assert back["name"] == "Bob"
        assert await alice.call("contacts.block", contact="Bob") == {}
        assert (await alice.call("contacts.blocked"))["blocked"] == [pair.bob.peer_id]
        assert (await alice.call("contacts.list"))[0]["blocked"] is True
        assert await alice.call("contacts.unblock", contact="Bob") == {}
        assert (await alice.call("contacts.blocked"))["blocked"] == []
        number = await alice.call("contacts.safety_number", contact="Bob")
        assert number["number"] == safety_number(pair.alice.identity.public, pair.bob.identity.public)
        assert number["qr_svg"].startswith("<svg")
        carol = Identity(b"\x07" * 32)
        photo = io.BytesIO()
        Invite.create(carol, name="Carol").qr().save(photo, kind="png", scale=6)
        image = base64.b64encode(photo.getvalue()).decode()
        added = await alice.call("contacts.add_qr", image=image, petname="C.")
        assert (added["peer_id"], added["name"], added["claimed_name"]) == (
            carol.public.peer_id,
            "C.",
            "Carol",
        )
        junk = await alice.request("contacts.add_qr", {"image": base64.b64encode(b"not a picture").decode()})
        assert junk["error"]["data"]["type"] == "DecodeError"
        invite = await alice.call("node.invite")
        assert Invite.from_text(invite["text"]).public == pair.alice.identity.public
        assert invite["qr_svg"].startswith("<svg")


async def test_groups_files_credentials_and_documents_over_json_rpc(tmp_path: Path) -> None:
    async with alice_and_bob(tmp_path) as pair, client(pair.methods) as alice:
        await alice.call("events.subscribe")
        group = await alice.call("groups.create", name="Family", members=["Bob"])
        assert group["name"] == "Family"
        assert pair.bob.peer_id in group["members"]
        assert (await alice.call("groups.list"))[0]["id"] == group["id"]
        sent = await alice.call("groups.send", group="Family", text="dinner at 8")
        history = await alice.call("groups.history", group=group["id"])
        assert [m["text"] for m in history["messages"]] == ["dinner at 8"]
        assert history["messages"][0]["id"] == sent["id"]
        status = await alice.call("groups.status", id=sent["id"])
        assert status["group"] == group["id"]
        photo = tmp_path / "note.txt"
        photo.write_text("a file for Bob")
        file = await alice.call("files.send", to="Bob", path=str(photo), caption="read me")
        assert (await alice.call("files.sent"))["files"][0]["id"] == file["id"]
        missing = await alice.request("files.send", {"to": "Bob", "path": str(tmp_path / "none")})
        assert missing["error"]["data"]["type"] == "FileError"
        received = await alice.call("files.received")
        assert received == {"files": []}
        challenge = await alice.call("credentials.challenge")
        assert challenge["audience"].startswith("did:key:")
        await alice.call("credentials.trust", did=challenge["audience"], name="Me")
        assert (await alice.call("credentials.trusted"))[challenge["audience"]] == "Me"
        assert await alice.call("credentials.held") == []
        asked = await alice.call("credentials.request", issuer="Bob", vct="student")
        assert len(asked["id"]) == 64
        assert await alice.call("documents.list") == []
        contract = tmp_path / "contract.txt"
        contract.write_text("we agree")
        proposed = await alice.call("documents.propose", path=str(contract), signers=["Bob"], threshold=2)
        view = await alice.call("documents.view", doc_id=proposed["doc_id"])
        assert (view["state"], view["threshold"], view["name"]) == ("open", 2, "contract.txt")
        assert pair.bob.peer_id in view["pending"]
        signed = await alice.call("documents.sign", doc_id=proposed["doc_id"])
        assert signed["sent"]
        assert "bundle" in await alice.call("documents.bundle", doc_id=proposed["doc_id"])
