"""Forward secrecy in store-and-forward: chats and controls travel in 1:1 Double Ratchet sessions inside
the sealed envelope, and every ratchet step is written in the transaction of the message it sealed or
opened (``Messenger`` with ``MemoryStorage`` and ``SqliteStorage``).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshchat.crypto import open_envelope, seal
from meshchat.errors import NoSession, Replay, StorageError
from meshchat.identity import Identity
from meshchat.sessions.session import SESSION_MESSAGE, SESSION_SETUP
from meshchat.sessions.x3dh import InitHeader
from meshchat.store.messenger import (
    ControlReceived,
    MessageReceived,
    Messenger,
    PublishEnvelope,
    StoreProblem,
)
from meshchat.store.payload import Chat, Receipt, ReceiptKind, encode_payload
from meshchat.store.reasons import DiscardReason, RejectReason
from meshchat.store.sqlite import SqliteStorage
from meshchat.store.storage import MemoryStorage, Storage

NOW = 1_800_000_000.0


def _messenger(identity: Identity, storage: Storage, seed: int = 1) -> Messenger:
    return Messenger(identity, storage, rng=random.Random(seed), wall_now=NOW)


def _published(actions: list[object]) -> list[bytes]:
    return [a.envelope for a in actions if isinstance(a, PublishEnvelope)]


def _bodies(actions: list[object]) -> list[bytes]:
    return [a.message.body for a in actions if isinstance(a, MessageReceived)]


def _kind(recipient: Identity, envelope: bytes) -> int:
    return open_envelope(recipient, envelope, wall_now=NOW).body[0]


def _setup_header(recipient: Identity, envelope: bytes) -> InitHeader:
    body = open_envelope(recipient, envelope, wall_now=NOW).body
    size = int.from_bytes(body[1:3], "big")
    return InitHeader.decode(body[3 : 3 + size])


@pytest.fixture
def pair() -> tuple[Identity, Identity, Messenger, Messenger]:
    alice, bob = Identity.generate(), Identity.generate()
    return alice, bob, _messenger(alice, MemoryStorage(), 1), _messenger(bob, MemoryStorage(), 2)


def test_set_up_rides_every_message_until_the_first_reply(
    pair: tuple[Identity, Identity, Messenger, Messenger],
) -> None:
    alice, bob, ma, mb = pair
    first = [ma.send(bob.public, f"m{i}".encode(), wall_now=NOW)[0].envelope for i in range(3)]
    assert [_kind(bob, e) for e in first] == [SESSION_SETUP] * 3
    # Delivered last first: the set-up in each lets any of them open the session.
    assert _bodies(mb.receive(first[::-1], wall_now=NOW)) == [b"m0", b"m1", b"m2"]
    reply = mb.send(alice.public, b"r", wall_now=NOW)[0].envelope
    assert _kind(alice, reply) == SESSION_MESSAGE  # Bob answers on Alice's session
    assert _bodies(ma.receive([reply], wall_now=NOW)) == [b"r"]
    after = ma.send(bob.public, b"after", wall_now=NOW)[0].envelope
    assert _kind(bob, after) == SESSION_MESSAGE
    assert _bodies(mb.receive([after], wall_now=NOW)) == [b"after"]
    # A message with no set-up is far smaller: no ephemeral, no ML-KEM ciphertext.
    assert len(after) < len(first[0])


def test_a_bundle_from_the_invite_starts_a_post_quantum_session(
    pair: tuple[Identity, Identity, Messenger, Messenger],
) -> None:
    _alice, bob, ma, mb = pair
    bundle = mb.bundle(wall_now=NOW)
    ma.set_bundle(bob.public, bundle)
    envelope = ma.send(bob.public, b"hello", wall_now=NOW)[0].envelope
    header = _setup_header(bob, envelope)
    assert header.spk_id == bundle.spk_id and header.pq_id == bundle.pq_id != 0
    assert len(header.pq_ciphertext) == 1088
    assert _bodies(mb.receive([envelope], wall_now=NOW)) == [b"hello"]
    # Without a bundle: the identity-only set-up, which still opens.
    carol = Identity.generate()
    mc = _messenger(carol, MemoryStorage(), 3)
    envelope = mc.send(bob.public, b"hi", wall_now=NOW)[0].envelope
    assert _setup_header(bob, envelope).spk_id == 0
    assert _bodies(mb.receive([envelope], wall_now=NOW)) == [b"hi"]


def test_a_failed_accept_moves_no_ratchet(pair: tuple[Identity, Identity, Messenger, Messenger]) -> None:
    _alice, bob, ma, mb = pair
    envelopes = [ma.send(bob.public, f"m{i}".encode(), wall_now=NOW)[0].envelope for i in range(4)]
    assert isinstance(mb.storage, MemoryStorage)
    mb.storage.fail_next = 1
    actions = mb.receive(envelopes[2:], wall_now=NOW)
    assert any(isinstance(a, StoreProblem) for a in actions) and not _bodies(actions)
    # Memory was rolled back with the disk: the same envelopes open again, each exactly once.
    assert _bodies(mb.receive(envelopes, wall_now=NOW)) == [b"m0", b"m1", b"m2", b"m3"]
    assert _bodies(mb.receive(envelopes, wall_now=NOW)) == []


def test_a_failed_send_moves_no_ratchet(pair: tuple[Identity, Identity, Messenger, Messenger]) -> None:
    _alice, bob, ma, mb = pair
    assert isinstance(ma.storage, MemoryStorage)
    sent = ma.send(bob.public, b"one", wall_now=NOW)[0].envelope
    ma.storage.fail_next = 1
    with pytest.raises(StorageError):
        ma.send(bob.public, b"lost", wall_now=NOW)
    second = ma.send(bob.public, b"two", wall_now=NOW)[0].envelope
    assert _bodies(mb.receive([second, sent], wall_now=NOW)) == [b"one", b"two"]
    assert mb.statistics().rejected == {}


def test_sessions_survive_a_restart_on_sqlite(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    received: list[bytes] = []
    for round_ in range(3):
        with SqliteStorage(tmp_path / "a.db") as sa, SqliteStorage(tmp_path / "b.db") as sb:
            ma, mb = _messenger(alice, sa, 1 + round_), _messenger(bob, sb, 7 + round_)
            to_bob = [
                ma.send(bob.public, f"a{round_}.{i}".encode(), wall_now=NOW)[0].envelope for i in range(2)
            ]
            received += _bodies(mb.receive(to_bob, wall_now=NOW))
            to_alice = mb.send(alice.public, f"b{round_}".encode(), wall_now=NOW)[0].envelope
            received += _bodies(ma.receive([to_alice], wall_now=NOW))
    assert sorted(received) == sorted(
        [f"a{r}.{i}".encode() for r in range(3) for i in range(2)] + [f"b{r}".encode() for r in range(3)]
    )


def test_only_receipts_travel_outside_sessions(pair: tuple[Identity, Identity, Messenger, Messenger]) -> None:
    alice, bob, ma, mb = pair
    plain = seal(alice, bob.public, encode_payload(Chat(seq=1, body=b"x")), wall_now=NOW)
    assert _bodies(mb.receive([plain], wall_now=NOW)) == []
    assert mb.statistics().rejected == {RejectReason.DECODE_ERROR: 1}
    # A receipt inside a session is refused too.
    receipt = encode_payload(Receipt(kind=ReceiptKind.DELIVERED, message_ids=(bytes(32),)))
    inside = seal(alice, bob.public, ma.sessions.seal_body(bob.public, receipt, wall_now=NOW), wall_now=NOW)
    mb.receive([inside], wall_now=NOW)
    assert mb.statistics().rejected == {RejectReason.DECODE_ERROR: 2}


def test_a_control_is_kept_until_handed_on(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    ma = _messenger(alice, MemoryStorage())
    envelope = ma.send(bob.public, b"group handout", wall_now=NOW, control=True)[0].envelope
    with SqliteStorage(tmp_path / "b.db") as sb:
        actions = _messenger(bob, sb).receive([envelope], wall_now=NOW)
        assert [a.body for a in actions if isinstance(a, ControlReceived)] == [b"group handout"]
        # The process dies before its driver handed the control on: the key is used, but it is kept.
    with SqliteStorage(tmp_path / "b.db") as sb:
        mb = _messenger(bob, sb)
        pending = mb.pending_controls()
        assert [(c.body, c.sender) for c in pending] == [(b"group handout", alice.public)]
        again = mb.receive([envelope], wall_now=NOW)  # another copy: a duplicate, receipted again
        assert not [a for a in again if isinstance(a, ControlReceived)] and _published(again)
        assert mb.statistics().discarded == {DiscardReason.DUPLICATE: 1}
        assert mb.controls_handled([c.message_id for c in pending]) == []
        assert mb.pending_controls() == []


def test_a_stolen_state_does_not_open_earlier_messages(
    pair: tuple[Identity, Identity, Messenger, Messenger],
) -> None:
    alice, bob, ma, mb = pair
    ma.set_bundle(bob.public, mb.bundle(wall_now=NOW))
    early = [ma.send(bob.public, f"early{i}".encode(), wall_now=NOW)[0].envelope for i in range(3)]
    assert len(_bodies(mb.receive(early, wall_now=NOW))) == 3
    reply = mb.send(alice.public, b"r", wall_now=NOW)[0].envelope
    ma.receive([reply], wall_now=NOW)
    # The thief copies Bob's whole store (identity key included) after the fact.
    stolen_storage = copy.deepcopy(mb.storage)
    thief = _messenger(bob, stolen_storage, 9)
    for envelope in early:
        body = open_envelope(bob, envelope, wall_now=NOW).body  # the seal's key is Bob's long-term key
        with pytest.raises((Replay, NoSession)):
            thief.sessions.open_body(alice.public, body, wall_now=NOW)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "deliver", "dup", "restart_a", "restart_b"]), st.integers(0, 10**6)
        ),
        min_size=1,
        max_size=40,
    )
)
def test_any_interleaving_delivers_each_message_exactly_once(plan: list[tuple[str, int]]) -> None:
    """Sends both ways, envelopes lost for a while, duplicated, reordered, both sides restarted (a new
    ``Messenger`` on the same storage): in the end, with every envelope delivered (a mailbox sync),
    each message reached its inbox exactly once and nothing was refused."""
    alice, bob = Identity.generate(), Identity.generate()
    stores = {"a": MemoryStorage(), "b": MemoryStorage()}
    ids = {"a": alice, "b": bob}
    peers = {"a": _messenger(alice, stores["a"], 1), "b": _messenger(bob, stores["b"], 2)}
    in_flight: dict[str, list[bytes]] = {"a": [], "b": []}  # envelopes on their way to a / b
    everything: dict[str, list[bytes]] = {"a": [], "b": []}
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    sent: dict[str, list[bytes]] = {"a": [], "b": []}
    for number, (step, pick) in enumerate(plan):
        if step in ("a", "b"):
            to = "b" if step == "a" else "a"
            body = f"{step}{number}".encode()
            envelope = peers[step].send(ids[to].public, body, wall_now=NOW)[0].envelope
            in_flight[to].append(envelope)
            everything[to].append(envelope)
            sent[to].append(body)
        elif step in ("deliver", "dup"):
            to = "ab"[pick % 2]
            if in_flight[to]:
                envelope = in_flight[to].pop(pick % len(in_flight[to]))
                if step == "dup":
                    in_flight[to].append(envelope)
                got[to] += _bodies(peers[to].receive([envelope], wall_now=NOW))
        else:
            who = step[-1]
            peers[who] = _messenger(ids[who], stores[who], pick)
    for to in "ab":  # the mailbox sync at the end: everything, in a random order
        rest = everything[to][:]
        random.Random(len(plan)).shuffle(rest)
        got[to] += _bodies(peers[to].receive(rest, wall_now=NOW))
        assert sorted(got[to]) == sorted(sent[to])
        assert peers[to].statistics().rejected == {}
