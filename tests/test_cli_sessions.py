"""``meshchat invite`` hands out the profile's prekey bundle (invite field 6): it verifies and is the
profile's own, it is the same every time (the prekeys live in the profile's ``store.db``), and a node
started on the profile answers a session set up from it. While a node of the profile runs, the
command leaves the prekeys alone (the node owns them) and the invite names the ones the node holds."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio
from conftest import make_profile
from typer.testing import CliRunner

from meshchat import cli
from meshchat.contacts import Contacts
from meshchat.crypto import open_envelope
from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.node import Node
from meshchat.profile import hold_profile
from meshchat.sessions.prekeys import SPK_ROTATION, PrekeyBundle, Prekeys
from meshchat.sessions.session import SESSION_MESSAGE, SESSION_SETUP
from meshchat.sessions.x3dh import InitHeader
from meshchat.store.encrypted import store_key
from meshchat.store.messenger import StoreConfig
from meshchat.store.sessions import PREKEYS_KEY, own_bundle
from meshchat.store.sqlite import STORE_FILE, SqliteStorage
from meshchat.store.storage import OutboxRecord
from meshchat.wire import Invite

runner = CliRunner()
LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 15.0
FAST_RETRY = StoreConfig(retry_initial=0.5)
DAY = 86_400.0


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(cli.PROFILE_ENV, raising=False)


def invite(profile: Path, *extra: str) -> Invite:
    result = runner.invoke(cli.app, ["invite", "--profile", str(profile), *extra])
    assert result.exit_code == 0, result.output
    return Invite.from_text(result.stdout.strip())


def bundle_in(card: Invite) -> PrekeyBundle:
    assert card.bundle, "the invite carries no prekey bundle"
    bundle = PrekeyBundle.decode(card.bundle)
    bundle.verify()
    return bundle


def stored_prekeys(profile: Path, identity: Identity) -> bytes | None:
    with SqliteStorage(profile / STORE_FILE, key=store_key(identity)) as storage:
        return storage.state_get(PREKEYS_KEY)


def setup_header(recipient: Identity, record: OutboxRecord, *, wall_now: float) -> InitHeader | None:
    body = open_envelope(recipient, record.envelope, wall_now=wall_now).body
    assert body[0] in (SESSION_MESSAGE, SESSION_SETUP)
    if body[0] == SESSION_MESSAGE:
        return None
    size = int.from_bytes(body[1:3], "big")
    return InitHeader.decode(body[3 : 3 + size])


async def next_direct(node: Node) -> DirectMessage:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, DirectMessage):
                return event
    raise AssertionError("the event stream ended")


def test_invite_carries_a_bundle_that_verifies_under_the_profiles_key(tmp_path: Path) -> None:
    profile, identity = make_profile(tmp_path, "bob", 41)
    before = time.time()
    bundle = bundle_in(invite(profile))
    assert bundle.identity == identity.public.ed25519
    assert bundle.spk_id != 0 and bundle.pq_id != 0 and len(bundle.pq_key) == 1184
    assert before - 5 <= bundle.created <= time.time() + 5
    assert bundle.one_time == ()  # handed to anyone who sees the invite: no one-time keys


def test_invite_twice_gives_the_same_prekeys_kept_in_the_profiles_store(tmp_path: Path) -> None:
    profile, identity = make_profile(tmp_path, "bob", 42)
    assert not (profile / STORE_FILE).exists()
    first = bundle_in(invite(profile))
    kept = stored_prekeys(profile, identity)
    assert kept is not None
    assert Prekeys.decode(kept).bundle(identity) == first
    second = bundle_in(invite(profile))
    assert second == first
    assert stored_prekeys(profile, identity) == kept  # not made again, not rewritten


def test_invite_rotates_a_signed_prekey_that_is_due(tmp_path: Path) -> None:
    """No node runs on the profile: ``invite`` rotates a week-old signed prekey and stores the new one
    (the old one stays, so set-ups from earlier invites still open)."""
    profile, identity = make_profile(tmp_path, "bob", 43)
    with SqliteStorage(profile / STORE_FILE, key=store_key(identity)) as storage:
        old = own_bundle(
            identity, storage, wall_now=time.time() - SPK_ROTATION - DAY, random_bytes=os.urandom
        )
    new = bundle_in(invite(profile))
    assert new.spk_id != old.spk_id and new.created > old.created
    kept = stored_prekeys(profile, identity)
    assert kept is not None
    prekeys = Prekeys.decode(kept)
    assert prekeys.bundle(identity) == new
    prekeys.signed_secret(old.spk_id)  # retired, still held


def test_invite_while_a_node_runs_leaves_its_prekeys_alone(tmp_path: Path) -> None:
    """A running node holds its prekeys in memory and rotates them itself (hourly check): an invite
    that rotated them behind its back would hand out a signed prekey the node does not know (and
    the node's next write would replace it). So the invite carries the stored prekeys as they are."""
    profile, identity = make_profile(tmp_path, "bob", 44)
    with SqliteStorage(profile / STORE_FILE, key=store_key(identity)) as storage:
        old = own_bundle(
            identity, storage, wall_now=time.time() - SPK_ROTATION - DAY, random_bytes=os.urandom
        )
    kept = stored_prekeys(profile, identity)
    with hold_profile(profile):  # as a running node does
        assert bundle_in(invite(profile)) == old
    assert stored_prekeys(profile, identity) == kept


@pytest.mark.parametrize("days_later", [0, 8])
async def test_a_node_started_afterwards_answers_a_set_up_from_the_invites_bundle(
    tmp_path: Path, days_later: int
) -> None:
    """Alice and Bob add each other's `meshchat invite`; later their nodes start (at once, or 8 days
    later: Bob's node has rotated the signed prekey his invite names). Alice's first message is set
    up from the signed and post-quantum prekeys in Bob's invite, Bob reads it, and his answer runs
    on that session (no set-up of its own)."""
    alice_dir, _ = make_profile(tmp_path, "alice", 46)
    bob_dir, _ = make_profile(tmp_path, "bob", 47)
    alice_card, bob_card = invite(alice_dir), invite(bob_dir)
    Contacts(alice_dir).add(bob_card.to_text(), name="Bob")
    Contacts(bob_dir).add(alice_card.to_text(), name="Alice")
    in_invite = bundle_in(bob_card)

    def clock() -> float:
        return time.time() + days_later * DAY

    async with (
        Node.open(bob_dir, listen=LOCAL, dht=False, store_config=FAST_RETRY, wall_clock=clock) as bob,
        Node.open(alice_dir, listen=LOCAL, dht=False, store_config=FAST_RETRY, wall_clock=clock) as alice,
    ):
        bob._messenger.bundle(wall_now=clock())  # the node's prekey upkeep (as its DHT publisher runs it)
        kept = bob._messenger.storage.state_get(PREKEYS_KEY)
        assert kept is not None
        current = Prekeys.decode(kept).bundle(bob.identity)
        assert (current.spk_id != in_invite.spk_id) == (days_later * DAY >= SPK_ROTATION)
        await alice.connect(bob.listen_addrs[0])
        with trio.fail_after(WAIT):
            await alice.wait_for(lambda: bob.peer_id in alice.driver.router.topic_peers(bob.inbox_topic()))
            await bob.wait_for(lambda: alice.peer_id in bob.driver.router.topic_peers(alice.inbox_topic()))
        handle = await alice.send("Bob", "по ключам из приглашения")
        header = setup_header(bob.identity, alice.outbox()[0], wall_now=clock())
        assert header is not None
        assert header.spk_id == in_invite.spk_id != 0
        assert header.pq_id == in_invite.pq_id != 0
        message = await next_direct(bob)
        assert message.message_id == handle.message_id
        assert message.body.decode() == "по ключам из приглашения"
        reply = await bob.send("Alice", "получил")
        assert setup_header(alice.identity, bob.outbox()[0], wall_now=clock()) is None
        answer = await next_direct(alice)
        assert answer.message_id == reply.message_id and answer.body.decode() == "получил"


async def test_an_invite_made_while_the_node_runs_names_prekeys_that_node_holds(tmp_path: Path) -> None:
    """Bob's node runs (its clock says its signed prekey is fresh; the command's clock says it is due).
    The invite made meanwhile must name a signed prekey the running node can answer: on the old code
    the command rotated it in the store, and Bob's node could not open Alice's first message."""
    alice_dir, _ = make_profile(tmp_path, "alice", 48)
    bob_dir, bob_id = make_profile(tmp_path, "bob", 49)

    def behind() -> float:  # both nodes run 8 days behind the command's clock
        return time.time() - SPK_ROTATION - DAY

    alice_card = invite(alice_dir)
    Contacts(bob_dir).add(alice_card.to_text(), name="Alice")
    async with Node.open(bob_dir, listen=LOCAL, dht=False, wall_clock=behind) as bob:
        held = bob._messenger.bundle(wall_now=behind())  # made and stored by the node, in its memory
        bob_card = invite(bob_dir)
        assert bundle_in(bob_card) == held
        Contacts(alice_dir).add(bob_card.to_text(), name="Bob")
        async with Node.open(
            alice_dir, listen=LOCAL, dht=False, store_config=FAST_RETRY, wall_clock=behind
        ) as alice:
            await alice.connect(bob.listen_addrs[0])
            with trio.fail_after(WAIT):
                await alice.wait_for(
                    lambda: bob.peer_id in alice.driver.router.topic_peers(bob.inbox_topic())
                )
            handle = await alice.send("Bob", "ты меня слышишь?")
            header = setup_header(bob_id, alice.outbox()[0], wall_now=behind())
            assert header is not None and header.spk_id == held.spk_id
            message = await next_direct(bob)
            assert message.message_id == handle.message_id
            assert message.body.decode() == "ты меня слышишь?"
