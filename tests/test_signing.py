"""StrictSign and StrictNoSign message policies (libp2p pubsub "Message Signing"), at the router."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from meshchat.gossip import (
    Deliver,
    DropReason,
    GossipConfig,
    GossipRouter,
    Join,
    PeerConnected,
    Publish,
    RpcReceived,
    ScoreParams,
    SendRpc,
)
from meshchat.gossip.messages import RPC, PubMessage, SubOpts
from meshchat.gossip.rpc import decode_rpc, encode_rpc
from meshchat.gossip.signing import MessageSigner, signature_problem, signed_message_id, unsigned_problem
from meshchat.identity import Identity

SIGNED = "shared"
PLAIN = "meshchat"
ALICE, BOB = Identity(b"\x0a" * 32), Identity(b"\x0b" * 32)


def router(identity: Identity, *, signer: bool = True) -> GossipRouter:
    config = GossipConfig(signed_topics=frozenset({SIGNED}))
    r = GossipRouter(
        config,
        local_peer=identity.public.peer_id,
        rng=random.Random(1),
        signer=MessageSigner(identity, first_seqno=1000) if signer else None,
        score_params=ScoreParams(),
    )
    for topic in (SIGNED, PLAIN):
        r.handle(Join(topic=topic), now=0.0)
    return r


def connected(receiver: GossipRouter, sender: Identity) -> GossipRouter:
    peer = sender.public.peer_id
    receiver.handle(PeerConnected(peer=peer, outbound=True), now=0.0)
    subscribe = tuple(SubOpts(subscribe=True, topic=t) for t in (SIGNED, PLAIN))
    receiver.handle(RpcReceived(peer=peer, rpc=RPC(subscriptions=subscribe)), now=0.0)
    return receiver


def published(identity: Identity, topic: str, data: bytes) -> PubMessage:
    """What ``identity``'s router puts on the wire when it publishes (via the real codec)."""
    r = connected(router(identity), BOB if identity is ALICE else ALICE)
    actions = r.handle(Publish(topic=topic, data=data), now=1.0)
    rpcs = [a.rpc for a in actions if isinstance(a, SendRpc) and a.rpc.publish]
    assert rpcs, actions
    return decode_rpc(encode_rpc(rpcs[0])).publish[0]


def receive(message: PubMessage, *, by: Identity = BOB, sender: Identity = ALICE) -> GossipRouter:
    r = connected(router(by), sender)
    r.handle(RpcReceived(peer=sender.public.peer_id, rpc=RPC(publish=(message,))), now=2.0)
    return r


def delivered(r: GossipRouter) -> int:
    return r.statistics().delivered


def test_a_signed_topic_carries_author_seqno_and_a_signature_that_verifies() -> None:
    message = published(ALICE, SIGNED, b"hello")
    assert message.from_peer is not None and message.seqno is not None and message.signature is not None
    assert message.key is None  # the Ed25519 key is inside the PeerId
    assert message.seqno == (1000).to_bytes(8, "big")
    assert signature_problem(message) is None
    r = receive(message)
    assert delivered(r) == 1
    assert r.statistics().drops[DropReason.BAD_SIGNATURE] == 0


def test_seqnos_increase_and_ids_are_author_plus_seqno() -> None:
    signer = MessageSigner(ALICE, first_seqno=7)
    first, second = (signer.sign(PubMessage(topic=SIGNED, data=b"same")) for _ in range(2))
    assert int.from_bytes(second.seqno or b"", "big") == 8
    assert signed_message_id(first) == (first.from_peer or b"") + (first.seqno or b"")
    assert signed_message_id(first) != signed_message_id(second)  # same data, two messages


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: replace(m, data=m.data + b"!"),
        lambda m: replace(m, seqno=(2).to_bytes(8, "big")),
        lambda m: replace(m, signature=None),
        lambda m: replace(m, from_peer=None),
        lambda m: replace(m, signature=bytes(64)),
        lambda m: replace(m, from_peer=bytes.fromhex("1220") + bytes(32)),  # a sha2-256 (RSA) PeerId
        lambda m: replace(m, key=b"\x08\x01\x12\x20" + bytes(32)),  # a key that is not the author's
        lambda m: replace(m, topic=PLAIN),  # signed fields on a StrictNoSign topic
    ],
    ids=["data", "seqno", "no-signature", "no-author", "zero-signature", "rsa-author", "wrong-key", "plain"],
)
def test_a_tampered_or_misplaced_signed_message_is_rejected_and_penalised(tamper: object) -> None:
    message = tamper(published(ALICE, SIGNED, b"hello"))  # type: ignore[operator]
    r = receive(message)
    assert delivered(r) == 0
    assert r.statistics().drops[DropReason.BAD_SIGNATURE] == 1
    assert r.score(ALICE.public.peer_id, now=3.0) < 0


def test_an_unsigned_message_on_a_signed_topic_is_rejected() -> None:
    plain = published(ALICE, PLAIN, b"hello")
    assert unsigned_problem(plain) is None and signature_problem(plain) is not None
    r = receive(replace(plain, topic=SIGNED))
    assert delivered(r) == 0
    assert r.statistics().drops[DropReason.BAD_SIGNATURE] == 1


def test_the_plain_topic_stays_content_addressed_and_unsigned() -> None:
    message = published(ALICE, PLAIN, b"hello")
    assert (message.from_peer, message.seqno, message.signature, message.key) == (None, None, None, None)
    r = receive(message)
    assert delivered(r) == 1
    assert r.statistics().drops[DropReason.BAD_SIGNATURE] == 0


def test_publishing_on_a_signed_topic_without_a_signer_is_a_caller_error() -> None:
    r = router(ALICE, signer=False)
    with pytest.raises(ValueError, match="StrictSign"):
        r.handle(Publish(topic=SIGNED, data=b"x"), now=1.0)
    assert not [a for a in r.handle(Publish(topic=PLAIN, data=b"x"), now=1.0) if isinstance(a, Deliver)]
