"""Contacts' verification states, petnames and block list (``meshchat.contacts``): the transitions,
what persists in ``contacts.json``, files written before these existed, and the bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_profile

import meshchat.contacts as contacts_module
from meshchat.contacts import (
    CONTACTS_FILE,
    TRANSITIONS,
    Contacts,
    Verification,
    VerificationInput,
)
from meshchat.errors import (
    BadPetname,
    KeyChanged,
    KeyNotConfirmed,
    NameTaken,
    ProfileError,
    UnknownPeer,
)
from meshchat.identity import Identity
from meshchat.node import Node
from meshchat.wire import Invite

V = Verification
BOB, BOB2, CAROL, STRANGER = (Identity(bytes([n]) * 32) for n in (0x41, 0x42, 0x43, 0x44))


def invite(identity: Identity, name: str, **kwargs: object) -> str:
    return Invite.create(identity, name=name, **kwargs).to_text()  # type: ignore[arg-type]


def test_the_transition_table_covers_every_state_and_input() -> None:
    assert set(TRANSITIONS) == {(s, i) for s in Verification for i in VerificationInput}
    # Only accepting or verifying leaves CHANGED; a replaced key is always CHANGED.
    assert {s for (s, i), t in TRANSITIONS.items() if s is V.CHANGED and t is not V.CHANGED} == {V.CHANGED}
    assert all(t is V.CHANGED for (_, i), t in TRANSITIONS.items() if i is VerificationInput.KEY_REPLACED)


def test_verification_moves_through_add_verify_replace_and_accept(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    contacts = Contacts(folder)
    bob = contacts.add(invite(BOB, "Bob"))
    assert bob.verification is V.UNVERIFIED
    assert contacts.accept_key("Bob").verification is V.UNVERIFIED  # nothing to accept: unchanged
    assert contacts.verify("Bob").verification is V.VERIFIED
    # The same key again (new addresses) keeps what the user checked.
    again = contacts.add(invite(BOB, "Bob", addrs=["/ip4/127.0.0.1/tcp/9"]))
    assert again.verification is V.VERIFIED and again.addrs == ("/ip4/127.0.0.1/tcp/9",)
    assert contacts.accept_key("Bob").verification is V.VERIFIED
    with pytest.raises(KeyChanged):
        contacts.add(invite(BOB2, "Bob"))
    changed = contacts.add(invite(BOB2, "Bob"), replace_key=True)
    assert (changed.public, changed.verification) == (BOB2.public, V.CHANGED)
    with pytest.raises(KeyNotConfirmed) as caught:
        contacts.confirm_key(BOB2.public)
    assert (caught.value.name, caught.value.fingerprint) == ("Bob", BOB2.public.fingerprint)
    assert Contacts(folder).find("Bob").verification is V.CHANGED  # persisted
    assert contacts.accept_key("Bob").verification is V.UNVERIFIED
    contacts.confirm_key(BOB2.public)  # sendable again
    # A replaced key scanned in person is verified at once; verify also clears CHANGED.
    assert contacts.add(invite(BOB, "Bob"), replace_key=True, verified=True).verification is V.VERIFIED
    assert contacts.add(invite(BOB2, "Bob"), replace_key=True).verification is V.CHANGED
    assert contacts.verify("Bob").verification is V.VERIFIED
    assert contacts.add(invite(CAROL, "Carol"), verified=True).verification is V.VERIFIED
    assert {c.name: c.verification for c in Contacts(folder)} == {"Bob": V.VERIFIED, "Carol": V.VERIFIED}


def test_petnames_are_apart_from_the_claimed_name(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    contacts = Contacts(folder)
    bob = contacts.add(invite(BOB, "Bob"), name="Bobby")
    assert (bob.name, bob.petname, bob.claimed_name) == ("Bobby", "Bobby", "Bob")
    assert contacts.find("Bobby") == bob
    with pytest.raises(UnknownPeer):
        contacts.find("Bob")  # found by the name shown
    # The same key again without a name keeps the petname; a petname equal to the claim is no petname.
    assert contacts.add(invite(BOB, "Bob")).petname == "Bobby"
    plain = contacts.rename("Bobby", "Bob")
    assert (plain.name, plain.petname) == ("Bob", None)
    assert contacts.rename("Bob", "Бобби 🦊").name == "Бобби 🦊"
    assert contacts.rename("Бобби 🦊", None).name == "Bob"
    contacts.add(invite(CAROL, "Carol"))
    with pytest.raises(NameTaken):
        contacts.rename("Carol", "Bob")
    for bad in ("", "   ", "x" * 65, "evil\u202etxt", "line\nbreak"):
        with pytest.raises(BadPetname):
            contacts.rename("Carol", bad) if bad else contacts.add(invite(CAROL, "Carol"), name="\x07")
    assert contacts.rename("Carol", "Caz").name == "Caz"
    reread = {c.peer_id: (c.name, c.petname, c.claimed_name) for c in Contacts(folder)}
    assert reread == {BOB.public.peer_id: ("Bob", None, "Bob"), CAROL.public.peer_id: ("Caz", "Caz", "Carol")}


def test_blocking_contacts_and_strangers_persists(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    contacts = Contacts(folder)
    contacts.add(invite(BOB, "Bob"))
    contacts.block("Bob")
    contacts.block(STRANGER.public.peer_id)  # a stranger, by PeerId
    contacts.block(CAROL.public)  # by key
    contacts.block("Bob")  # twice is once
    assert contacts.blocked() == [BOB.public, STRANGER.public, CAROL.public]
    with pytest.raises(UnknownPeer):
        contacts.block("nobody")
    reread = Contacts(folder)
    assert reread.blocked() == [BOB.public, STRANGER.public, CAROL.public]
    assert reread.is_blocked(BOB.public) and reread.is_blocked_key(STRANGER.public.ed25519)
    assert len(reread) == 1  # blocking a stranger does not make them a contact
    reread.unblock("Bob")
    reread.unblock(STRANGER.public.peer_id)
    reread.unblock(STRANGER.public)  # not blocked any more: nothing to do
    assert Contacts(folder).blocked() == [CAROL.public]
    assert not Contacts(folder).is_blocked(BOB.public)


def test_a_file_from_before_petnames_reads_as_before_and_older_readers_read_the_new_one(
    tmp_path: Path,
) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    old = {
        "contacts": [
            {"name": "Bobby", "invite": invite(BOB, "Bob")},  # a name the user chose then
            {"name": "Carol", "invite": invite(CAROL, "Carol")},
        ]
    }
    (folder / CONTACTS_FILE).write_text(json.dumps(old), encoding="utf-8")
    contacts = Contacts(folder)
    read = {c.claimed_name: (c.name, c.petname, c.verification) for c in contacts}
    assert read == {"Bob": ("Bobby", "Bobby", V.UNVERIFIED), "Carol": ("Carol", None, V.UNVERIFIED)}
    assert contacts.blocked() == []
    contacts.verify("Bobby")
    contacts.block("Carol")
    written = json.loads((folder / CONTACTS_FILE).read_text(encoding="utf-8"))
    # What an older meshchat reads: "name" is still the name shown, "invite" the invite.
    assert [(e["name"], Invite.from_text(e["invite"]).name) for e in written["contacts"]] == [
        ("Bobby", "Bob"),
        ("Carol", "Carol"),
    ]
    assert written["contacts"][0]["verification"] == "verified"
    assert written["blocked"] == [CAROL.public.peer_id]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"verification": "trusted"}, "unknown verification state"),
        ({"petname": 7}, "petname"),
    ],
)
def test_unreadable_states_are_profile_errors(tmp_path: Path, entry: dict[str, object], problem: str) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    data = {"contacts": [{"name": "Bob", "invite": invite(BOB, "Bob"), **entry}]}
    (folder / CONTACTS_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ProfileError, match=problem):
        Contacts(folder)


def test_the_block_list_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    monkeypatch.setattr(contacts_module, "MAX_CONTACTS", 2)
    contacts = Contacts(folder)
    contacts.block(BOB.public)
    contacts.block(CAROL.public)
    with pytest.raises(ProfileError, match="already blocks 2 keys"):
        contacts.block(STRANGER.public)
    contacts.block(BOB.public)  # already blocked: no new entry, no error
    assert len(Contacts(folder).blocked()) == 2
    data = json.loads((folder / CONTACTS_FILE).read_text(encoding="utf-8"))
    data["blocked"].append(STRANGER.public.peer_id)  # a file over the bound is refused, not truncated
    (folder / CONTACTS_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ProfileError, match="at most 2"):
        Contacts(folder)
    data["blocked"] = ["not a peer id"]
    (folder / CONTACTS_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ProfileError, match="blocked PeerId"):
        Contacts(folder)


async def test_node_send_to_a_changed_key_waits_for_accept_or_verify(tmp_path: Path) -> None:
    folder, _ = make_profile(tmp_path, "alice", 1)
    async with Node.open(folder, listen=["/ip4/127.0.0.1/tcp/0"], dht=False) as node:
        node.contacts.add(invite(BOB, "Bob"))
        node.contacts.add(invite(BOB2, "Bob"), replace_key=True)
        for to in ("Bob", node.contacts.find("Bob"), BOB2.public):
            with pytest.raises(KeyNotConfirmed):
                await node.send(to, "hello")
        assert node.outbox() == []  # nothing was queued
        node.contacts.accept_key("Bob")
        handle = await node.send("Bob", "hello")
        assert [e.body for e in node.conversation("Bob")] == [b"hello"]
        assert node.outbox()[0].message_id == handle.message_id
