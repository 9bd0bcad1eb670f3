"""Prekey bundles in the DHT (``meshchat.net.bundles``): what a DHT server accepts under
``/meshchat-bundle/<PeerId>``, which of two records it keeps, and a first message to someone known only
by key that starts from their published bundle (or, with none published, from their identity key)."""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from conftest import make_profile
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.kad_dht.common import DEFAULT_TTL
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Record
from libp2p.records.utils import InvalidRecordType

from meshchat.crypto import open_envelope
from meshchat.identity import Identity, PublicIdentity
from meshchat.inbox import DirectMessage
from meshchat.net.bundles import (
    BUNDLE_LOOKUP_TIMEOUT,
    BundleValidator,
    bundle_key,
    lookup_bundle,
    publish_bundle,
)
from meshchat.node import Node
from meshchat.sessions.prekeys import MAX_BUNDLE_SIZE, PrekeyBundle, Prekeys
from meshchat.sessions.session import SESSION_SETUP
from meshchat.sessions.x3dh import InitHeader
from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxRecord

ALICE, CAROL = Identity(b"\x21" * 32), Identity(b"\x22" * 32)
NOW = 1_760_000_000.0
DAY = 86_400.0
LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 15.0
FAST_RETRY = StoreConfig(retry_initial=0.5)


def bundle_of(identity: Identity, *, wall_now: float = NOW) -> PrekeyBundle:
    return Prekeys.create(identity, wall_now=wall_now, random_bytes=os.urandom).bundle(identity)


def flipped(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- the validator ------------------------------------------------------------------------------------


def test_a_valid_bundle_under_its_owners_key_is_accepted() -> None:
    bundle = bundle_of(CAROL)
    key = bundle_key(CAROL.public)
    assert key == f"/meshchat-bundle/{CAROL.public.peer_id}"
    BundleValidator().validate(key, bundle.encode())  # no error
    assert BundleValidator().select(key, [bundle.encode()]) == 0


def test_a_bundle_under_another_peer_id_is_refused() -> None:
    """Alice cannot plant her (valid, signed) bundle as Carol's."""
    with pytest.raises(InvalidRecordType, match="another identity"):
        BundleValidator().validate(bundle_key(CAROL.public), bundle_of(ALICE).encode())


@pytest.mark.parametrize("field", ["spk_signature", "spk", "pq_signature", "pq_key"])
def test_a_tampered_bundle_is_refused(field: str) -> None:
    bundle = bundle_of(CAROL)
    changed: dict[str, bytes] = {field: flipped(getattr(bundle, field), 5)}
    tampered = dataclasses.replace(bundle, **changed)  # type: ignore[arg-type]
    with pytest.raises(InvalidRecordType, match="signature"):
        BundleValidator().validate(bundle_key(CAROL.public), tampered.encode())


def test_a_bundle_dated_later_than_signed_is_refused() -> None:
    """``created`` is signed too: a record cannot be made to look newer than it is."""
    bundle = bundle_of(CAROL)
    newer = dataclasses.replace(bundle, created=bundle.created + 1)
    with pytest.raises(InvalidRecordType):
        BundleValidator().validate(bundle_key(CAROL.public), newer.encode())


def test_an_oversized_value_is_refused_before_it_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[bytes] = []
    real_decode = PrekeyBundle.decode

    def counting(data: bytes) -> PrekeyBundle:
        decoded.append(data)
        return real_decode(data)

    monkeypatch.setattr(PrekeyBundle, "decode", counting)
    value = bundle_of(CAROL).encode()
    oversized = value + b"\x00" * (MAX_BUNDLE_SIZE + 1 - len(value))
    with pytest.raises(InvalidRecordType):
        BundleValidator().validate(bundle_key(CAROL.public), oversized)
    assert decoded == []  # refused on its size: a server pays nothing for a huge value
    BundleValidator().validate(bundle_key(CAROL.public), value)
    assert decoded == [value]


@pytest.mark.parametrize(
    "key",
    [
        f"/pk/{CAROL.public.peer_id}",
        f"/ipns/{CAROL.public.peer_id}",
        f"/meshchat-bundles/{CAROL.public.peer_id}",
        f"meshchat-bundle/{CAROL.public.peer_id}",
        "/meshchat-bundle/",
        "/meshchat-bundle/not-a-peer-id",
        f"/meshchat-bundle/{CAROL.public.peer_id}/extra",
        f"/meshchat-bundle/{CAROL.public.peer_id} ",
    ],
)
def test_a_key_outside_the_namespace_or_naming_no_peer_is_refused(key: str) -> None:
    with pytest.raises(InvalidRecordType):
        BundleValidator().validate(key, bundle_of(CAROL).encode())


@settings(max_examples=200, deadline=None)
@given(key=st.one_of(st.text(max_size=80), st.just(bundle_key(CAROL.public))), value=st.binary(max_size=512))
def test_garbage_is_refused_with_the_error_libp2p_expects(key: str, value: bytes) -> None:
    """Whatever a peer sends, the validator raises ``InvalidRecordType`` (nothing else escapes)."""
    with pytest.raises(InvalidRecordType):
        BundleValidator().validate(key, value)


def test_select_picks_the_newest_signed_prekey_and_never_an_invalid_one() -> None:
    key = bundle_key(CAROL.public)
    old = bundle_of(CAROL, wall_now=NOW - 8 * DAY).encode()
    new = bundle_of(CAROL, wall_now=NOW).encode()
    validator = BundleValidator()
    assert validator.select(key, [old, new]) == 1
    assert validator.select(key, [new, old]) == 0
    assert validator.select(key, [old, new, old]) == 1
    # Newer on its face, but not signed so (or another identity's): never chosen.
    forged = dataclasses.replace(PrekeyBundle.decode(old), created=int(NOW + DAY)).encode()
    alices = bundle_of(ALICE, wall_now=NOW + 2 * DAY).encode()
    assert validator.select(key, [forged, old]) == 1
    assert validator.select(key, [alices, b"\x00" * 10, old]) == 2
    assert validator.select(key, [old, flipped(new, len(new) - 3)]) == 0


def test_select_between_equally_new_records_takes_the_later_one() -> None:
    """py-libp2p's server calls ``select(key, [stored, received])`` and refuses the received record
    unless it wins: the owner's unchanged bundle, published again, must win, or the stored copy is
    never refreshed and expires ``DEFAULT_TTL`` after its first publication."""
    key = bundle_key(CAROL.public)
    value = bundle_of(CAROL).encode()
    assert BundleValidator().select(key, [value, value]) == 1


# --- the DHT ------------------------------------------------------------------------------------------


def dht_of(node: Node) -> KadDHT:
    """The node's DHT (kept in its dialer)."""
    dht = node._dialer.dht
    assert dht is not None
    return dht


def stored(node: Node, owner: PublicIdentity) -> tuple[bytes, float] | None:
    """The bundle record ``node``'s DHT holds for ``owner`` and until when (None: none)."""
    entry = dht_of(node).value_store.store.get(bundle_key(owner).encode())
    if entry is None:
        return None
    record, validity = entry
    return record.value, validity


async def next_direct(node: Node) -> DirectMessage:
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, DirectMessage):
                return event
    raise AssertionError("the event stream ended")


def setup_header(recipient: Identity, record: OutboxRecord) -> InitHeader | None:
    """The set-up header of an outbox message's session message (None: it carries none)."""
    body = open_envelope(recipient, record.envelope, wall_now=time.time()).body
    if body[0] != SESSION_SETUP:
        return None
    size = int.from_bytes(body[1:3], "big")
    return InitHeader.decode(body[3 : 3 + size])


async def test_publish_with_no_dht_peer_known_says_not_published() -> None:
    """A node that knows no DHT peer yet (started before its bootstrap peer, or found peers by mDNS
    later) stores its bundle nowhere: ``publish_bundle`` must say so, so that the node tries again in
    a minute rather than in ``BUNDLE_REPUBLISH`` (six hours)."""
    async with Node.open(identity=CAROL, listen=LOCAL, inbox=False) as carol:
        bundle = bundle_of(CAROL, wall_now=time.time())
        with trio.fail_after(WAIT):
            assert await publish_bundle(dht_of(carol), CAROL.public, bundle) is False


def watch_stores(node: Node, owner: PublicIdentity) -> trio.Event:
    """An event set when ``node``'s DHT server stores a record of ``owner``'s bundle (a DHT store
    wakes nothing else a test could wait on)."""
    stored_now = trio.Event()
    store = dht_of(node).value_store
    real_put_record = store.put_record
    wanted = bundle_key(owner).encode()

    def put_record(key: bytes, record: Record) -> None:
        real_put_record(key, record)
        if key == wanted:
            stored_now.set()

    store.put_record = put_record  # type: ignore[method-assign]
    return stored_now


async def test_a_published_bundle_starts_the_first_message_to_someone_known_only_by_key(
    tmp_path: Path,
) -> None:
    """Carol's node publishes her bundle as it starts; Alice, who has only Carol's public key (no
    invite), sends: the first envelope's set-up uses Carol's current signed prekey and her
    post-quantum prekey, and Carol reads it."""
    alice_dir, _ = make_profile(tmp_path, "alice", 31)
    carol_dir, carol_id = make_profile(tmp_path, "carol", 32)
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(Node.open(identity=Identity(b"\x23" * 32), listen=LOCAL))
        published_to_hub = watch_stores(hub, carol_id.public)
        bootstrap = [hub.listen_addrs[0]]
        carol = await stack.enter_async_context(
            Node.open(carol_dir, listen=LOCAL, bootstrap=bootstrap, store_config=FAST_RETRY)
        )
        alice = await stack.enter_async_context(
            Node.open(alice_dir, listen=LOCAL, bootstrap=bootstrap, store_config=FAST_RETRY)
        )
        with trio.fail_after(WAIT):
            await published_to_hub.wait()
        held = stored(hub, carol_id.public)
        assert held is not None
        published = PrekeyBundle.decode(held[0])
        assert published == carol._messenger.bundle(wall_now=time.time())  # her current prekeys
        assert published.spk_id != 0 and published.pq_id != 0 and published.one_time == ()
        with trio.fail_after(WAIT):
            assert await lookup_bundle(dht_of(alice), carol_id.public) == published

        await alice.connect(carol.listen_addrs[0])
        topic = carol.inbox_topic()
        with trio.fail_after(WAIT):
            await alice.wait_for(lambda: carol.peer_id in alice.driver.router.topic_peers(topic))
        handle = await alice.send(carol_id.public, "нашла твой ключ в DHT")
        header = setup_header(carol_id, alice.outbox()[0])
        assert header is not None
        assert header.spk_id == published.spk_id  # from the published bundle, not the identity alone
        assert header.pq_id == published.pq_id and len(header.pq_ciphertext) == 1088
        message = await next_direct(carol)
        assert message.message_id == handle.message_id
        assert message.body.decode() == "нашла твой ключ в DHT"


@pytest.mark.parametrize("dht", ["empty", "silent"])
async def test_with_no_bundle_found_the_first_message_starts_from_the_identity_key(
    tmp_path: Path, dht: str
) -> None:
    """Carol runs without the DHT, so no bundle of hers is anywhere ("empty"), or Alice's DHT lookup
    never answers ("silent"): Alice waits at most ``BUNDLE_LOOKUP_TIMEOUT``, and her first message
    (identity-only set-up) still arrives."""
    alice_dir, _ = make_profile(tmp_path, "alice", 33)
    carol_dir, carol_id = make_profile(tmp_path, "carol", 34)
    async with (
        Node.open(identity=Identity(b"\x24" * 32), listen=LOCAL) as hub,
        Node.open(carol_dir, listen=LOCAL, dht=False, store_config=FAST_RETRY) as carol,
        Node.open(alice_dir, listen=LOCAL, bootstrap=[hub.listen_addrs[0]], store_config=FAST_RETRY) as alice,
    ):
        assert stored(hub, carol_id.public) is None
        lookups: list[str] = []
        if dht == "silent":

            async def never_answers(key: str, quorum: int = 0) -> bytes | None:
                lookups.append(key)
                await trio.sleep_forever()
                raise AssertionError("unreachable")

            dht_of(alice).get_value = never_answers  # type: ignore[method-assign]
        await alice.connect(carol.listen_addrs[0])
        topic = carol.inbox_topic()
        with trio.fail_after(WAIT):
            await alice.wait_for(lambda: carol.peer_id in alice.driver.router.topic_peers(topic))
        started = time.monotonic()
        handle = await alice.send(carol_id.public, "без связки ключей")
        took = time.monotonic() - started
        assert took <= BUNDLE_LOOKUP_TIMEOUT + 3.0, took  # loose: a busy machine is slow
        if dht == "silent":
            assert lookups == [bundle_key(carol_id.public)]
            assert took >= BUNDLE_LOOKUP_TIMEOUT * 0.9, took  # it did wait for the DHT
        header = setup_header(carol_id, alice.outbox()[0])
        assert header is not None and header.spk_id == 0 and header.pq_id == 0
        message = await next_direct(carol)
        assert message.message_id == handle.message_id
        assert message.body.decode() == "без связки ключей"


async def test_a_server_refreshes_a_bundle_its_owner_publishes_again(tmp_path: Path) -> None:
    """The same bundle published again (every ``BUNDLE_REPUBLISH``) renews the server's copy: on the
    old code the server kept the stored record and its expiry, so it vanished a day after the first
    publication although its owner republished it every six hours."""
    carol_dir, carol_id = make_profile(tmp_path, "carol", 35)
    async with (
        Node.open(identity=Identity(b"\x25" * 32), listen=LOCAL) as hub,
        Node.open(carol_dir, listen=LOCAL, bootstrap=[hub.listen_addrs[0]]) as carol,
    ):
        current = carol._messenger.bundle(wall_now=time.time())
        with trio.fail_after(WAIT):
            assert await publish_bundle(dht_of(carol), carol_id.public, current)
        key = bundle_key(carol_id.public).encode()
        record, _ = dht_of(hub).value_store.store[key]
        dht_of(hub).value_store.store[key] = (record, time.time() + 60.0)  # about to expire
        with trio.fail_after(WAIT):
            assert await publish_bundle(dht_of(carol), carol_id.public, current)
        held = stored(hub, carol_id.public)
        assert held is not None and held[0] == current.encode()
        assert held[1] > time.time() + DEFAULT_TTL - 600.0


@pytest.mark.parametrize("where", ["server", "own store"])
async def test_a_forged_record_held_by_a_dht_node_is_never_used(tmp_path: Path, where: str) -> None:
    """A DHT server that skips validation (a hostile one) serves Mallory's bundle under Carol's key,
    or the record sits in Alice's own store (served from there without asking the network): Alice's
    lookup refuses it, so a forged bundle can only make her start from Carol's identity key."""
    alice_dir, _ = make_profile(tmp_path, "alice", 36)
    mallory = Identity(b"\x26" * 32)
    forged = bundle_of(mallory, wall_now=time.time()).encode()
    key = bundle_key(CAROL.public).encode()
    async with (
        Node.open(identity=Identity(b"\x27" * 32), listen=LOCAL) as hub,
        Node.open(alice_dir, listen=LOCAL, bootstrap=[hub.listen_addrs[0]]) as alice,
    ):
        holder = hub if where == "server" else alice
        dht_of(holder).value_store.put(key, forged)  # bypasses the validator
        if where == "server":
            with trio.fail_after(WAIT):  # the hostile server does hand it out when asked
                served = await dht_of(alice).value_store._get_from_peer(hub.host.get_id(), key)
            assert served == forged
        with trio.fail_after(BUNDLE_LOOKUP_TIMEOUT + WAIT):
            assert await lookup_bundle(dht_of(alice), CAROL.public) is None
