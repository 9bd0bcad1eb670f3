"""The real network in one process: nodes on 127.0.0.1 over TCP + Noise + yamux (or mplex), running the
gossip router through ``GossipDriver``; and peers that misbehave on the wire.

Every test is bounded by ``trio.fail_after``; every host is closed by its ``async with``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.custom_types import TProtocol
from libp2p.host.ping import PingService
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex

import meshchat
from meshchat.errors import BadAddress, KeyFileError, NetworkError
from meshchat.gossip import DropReason, Protocol, ValidationResult
from meshchat.gossip.messages import RPC, PubMessage, SubOpts
from meshchat.gossip.rpc import encode_rpc, frame
from meshchat.identity import Identity, save_identity
from meshchat.net import MessageDelivered, NetDrop, PeerJoined
from meshchat.net import driver as driver_module
from meshchat.node import KEY_FILE, Node

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
TOPIC = "lobby"
#: Seconds any one wait in these tests may take before it fails (all of them finish in well under 1 s).
WAIT = 15.0


def identity(n: int) -> Identity:
    return Identity(bytes([n]) * 32)


async def wait_for(node: Node, condition: Callable[[], bool], what: str) -> None:
    """Wait, at most WAIT seconds, until ``condition`` holds (checked on each change of ``node``)."""
    with trio.fail_after(WAIT):
        await node.wait_for(condition)
    assert condition(), what


@asynccontextmanager
async def line(count: int, **kwargs: object) -> AsyncIterator[list[Node]]:
    """``count`` nodes, each connected to the next, all in TOPIC's mesh."""
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(Node.open(identity=identity(i + 1), listen=LOCAL, **kwargs))  # type: ignore[arg-type]
            for i in range(count)
        ]
        for node in nodes:
            await node.subscribe(TOPIC)
        for left, right in itertools.pairwise(nodes):
            await right.connect(left.listen_addrs[0])
        for i, node in enumerate(nodes):
            want = (i > 0) + (i < count - 1)
            await wait_for(node, lambda n=node, w=want: len(n.driver.router.mesh.get(TOPIC, ())) == w, "mesh")
        yield nodes


async def collect(node: Node, count: int) -> list[MessageDelivered]:
    got: list[MessageDelivered] = []
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, MessageDelivered):
                got.append(event)
                if len(got) == count:
                    break
    return got


async def test_messages_cross_a_line_of_four_nodes_over_tcp_noise_yamux() -> None:
    async with line(4) as nodes:
        assert [n.peer_id for n in nodes] == [identity(i + 1).public.peer_id for i in range(4)]
        for i in range(20):
            await nodes[0].publish(TOPIC, f"сообщение {i}".encode())
        got = await collect(nodes[3], 20)
        assert [e.data.decode() for e in got] == [f"сообщение {i}" for i in range(20)]
        assert {e.source for e in got} == {nodes[2].peer_id}
        # and back the other way
        await nodes[3].publish(TOPIC, b"reply")
        assert [e.data for e in await collect(nodes[0], 1)] == [b"reply"]
        for node in nodes:
            stats = node.statistics()
            assert not any(stats.drops.values()), stats.drops
            assert stats.router.delivered == (
                21 if node is not nodes[0] and node is not nodes[3] else 20 if node is nodes[3] else 1
            )


async def test_the_peer_sees_the_invite_peer_id_and_speaks_meshsub_1_2() -> None:
    async with line(2) as (a, b):
        joined = None
        with trio.fail_after(WAIT):
            async for event in a.events():
                if isinstance(event, PeerJoined):
                    joined = event
                    break
        assert joined is not None
        assert (joined.peer, joined.protocol) == (b.peer_id, Protocol.MESHSUB_V12)
        assert joined.outbound is False  # b dialled a
        assert str(b.listen_addrs[0]).endswith("/p2p/" + b.peer_id)


async def test_node_opens_the_profile_identity(tmp_path: Path) -> None:
    alice = identity(9)
    save_identity(tmp_path / KEY_FILE, alice, None)
    async with meshchat.Node.open(tmp_path, listen=LOCAL) as node:
        assert node.peer_id == alice.public.peer_id
        assert node.listen_addrs and all("/ip4/127.0.0.1/tcp/" in a for a in node.listen_addrs)


async def test_bad_profile_and_addresses_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        async with Node.open(tmp_path, listen=LOCAL):
            pass
    with pytest.raises(BadAddress):
        async with Node.open(identity=identity(1), listen=["not a multiaddr"]):
            pass
    with pytest.raises(BadAddress, match="/p2p/"):
        async with Node.open(identity=identity(1), listen=LOCAL, bootstrap=["/ip4/127.0.0.1/tcp/9"]):
            pass
    async with Node.open(identity=identity(2), listen=LOCAL) as gone:
        dead = gone.listen_addrs[0]
    with pytest.raises(NetworkError, match="no bootstrap peer reached"):
        async with Node.open(identity=identity(1), listen=LOCAL, bootstrap=[dead]):
            pass


# --- peers that misbehave on the wire ---------------------------------------------------------------


class Sink:
    """Reads what a node writes on its pubsub stream to a raw peer."""

    def __init__(self) -> None:
        self.data = b""
        self._more = trio.Event()

    async def read(self, stream: INetStream) -> None:
        while chunk := await stream.read(65536):
            self.data += chunk
            self._more.set()
            self._more = trio.Event()

    async def wait_for(self, needle: bytes) -> None:
        with trio.fail_after(WAIT):
            while needle not in self.data:
                await self._more.wait()


@asynccontextmanager
async def raw_peer(n: int, *, mplex_only: bool = False) -> AsyncIterator[IHost]:
    """A bare py-libp2p host (Noise; yamux or only mplex) to speak pubsub by hand."""
    key_pair = create_new_key_pair(bytes([n]) * 32)
    kwargs: dict[str, object] = {}
    if mplex_only:
        kwargs["muxer_opt"] = {TProtocol(MPLEX_PROTOCOL_ID): Mplex}
    host = new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE): NoiseTransport(key_pair, noise_privkey=create_x25519().private_key)},
        **kwargs,  # type: ignore[arg-type]
    )
    host.sink = Sink()  # type: ignore[attr-defined]
    host.set_stream_handler(TProtocol("/meshsub/1.1.0"), host.sink.read)  # type: ignore[attr-defined]
    async with host.run([multiaddr.Multiaddr(LOCAL[0])]):
        try:
            yield host
        finally:
            for peer_id in list(host.get_network().connections):  # else py-libp2p leaks the sockets
                with trio.move_on_after(WAIT):
                    await host.disconnect(peer_id)


async def open_pubsub(host: IHost, node: Node) -> INetStream:
    await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.listen_addrs[0])))
    return await host.new_stream(
        info_from_p2p_addr(multiaddr.Multiaddr(node.listen_addrs[0])).peer_id, [TProtocol("/meshsub/1.1.0")]
    )


async def honest_traffic_still_flows(a: Node, b: Node) -> None:
    await a.publish(TOPIC, b"still here")
    got = await collect(b, 1)
    assert [e.data for e in got] == [b"still here"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (frame(b"\xff\xff\xff\xff"), NetDrop.MALFORMED_RPC),  # a tag with no field
        (b"\x80" * 12, NetDrop.MALFORMED_RPC),  # a length prefix that never ends
        (bytes.fromhex("8080800280") + b"x" * 100, NetDrop.OVERSIZED_FRAME),  # announces 4 MiB
    ],
    ids=["garbage-protobuf", "endless-prefix", "4-MiB-frame"],
)
async def test_a_bad_frame_resets_the_stream_is_counted_and_traffic_goes_on(
    payload: bytes, reason: NetDrop
) -> None:
    async with line(2) as (a, b), raw_peer(50) as evil:
        stream = await open_pubsub(evil, b)
        await stream.write(payload)
        await wait_for(b, lambda: b.statistics().drops[reason] == 1, f"{reason} counted")
        await honest_traffic_still_flows(a, b)


async def test_a_stream_stalled_mid_frame_is_reset_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver_module, "FRAME_STALL_TIMEOUT", 0.3)
    async with line(2) as (a, b), raw_peer(51) as slow:
        stream = await open_pubsub(slow, b)
        whole = frame(encode_rpc(RPC(subscriptions=(SubOpts(subscribe=True, topic=TOPIC),))))
        await stream.write(whole[: len(whole) // 2])
        await wait_for(b, lambda: b.statistics().drops[NetDrop.STALLED_STREAM] == 1, "stall counted")
        await honest_traffic_still_flows(a, b)


async def test_a_flood_of_invalid_messages_is_penalised_and_honest_traffic_goes_on() -> None:
    def only_hello(topic: str, data: bytes, mid: bytes) -> ValidationResult:
        return ValidationResult.ACCEPT if data == b"still here" else ValidationResult.REJECT

    async with line(2, validator=only_hello) as (a, b), raw_peer(52) as flooder:
        stream = await open_pubsub(flooder, b)
        await stream.write(frame(encode_rpc(RPC(subscriptions=(SubOpts(subscribe=True, topic=TOPIC),)))))
        junk = b"".join(
            frame(encode_rpc(RPC(publish=(PubMessage(topic=TOPIC, data=b"junk %d" % i),))))
            for i in range(200)
        )
        await stream.write(junk)
        flooder_id = flooder.get_id().to_base58()

        def refused() -> int:
            drops = b.statistics().router.drops
            return drops[DropReason.INVALID] + drops[DropReason.GRAYLISTED]

        await wait_for(b, lambda: refused() == 200, "every junk message rejected or ignored")
        drops = b.statistics().router.drops
        assert drops[DropReason.INVALID] >= 1
        assert drops[DropReason.GRAYLISTED] >= 1  # once its score fell that far, it was not even parsed
        assert b.driver.router.score(flooder_id, now=trio.current_time()) < 0
        await wait_for(b, lambda: flooder_id not in b.driver.router.peers, "the flooder was disconnected")
        await honest_traffic_still_flows(a, b)


async def test_a_peer_that_only_speaks_mplex_still_gets_messages() -> None:
    async with line(1) as (a,), raw_peer(53, mplex_only=True) as old:
        stream = await open_pubsub(old, a)
        await stream.write(frame(encode_rpc(RPC(subscriptions=(SubOpts(subscribe=True, topic=TOPIC),)))))
        await wait_for(
            a, lambda: old.get_id().to_base58() in a.driver.router.topic_peers(TOPIC), "subscribed"
        )
        await a.publish(TOPIC, b"to the old peer")
        await old.sink.wait_for(b"to the old peer")  # type: ignore[attr-defined]
        conns = old.get_network().connections[
            info_from_p2p_addr(multiaddr.Multiaddr(a.listen_addrs[0])).peer_id
        ]
        assert [type(c.muxed_conn) for c in conns] == [Mplex]  # the message came over mplex


async def test_errors_from_the_callers_own_code_come_out_unchanged() -> None:
    with pytest.raises(FileNotFoundError):
        async with Node.open(identity=identity(3), listen=LOCAL):
            raise FileNotFoundError("the caller's, not the network's")
    with pytest.raises(ValueError, match="mine"):
        async with Node.open(identity=identity(3), listen=LOCAL):
            raise ValueError("mine")


async def test_two_nodes_find_each_other_by_mdns_and_gossip() -> None:
    """No bootstrap, no address: mDNS on the local network (py-libp2p's, over zeroconf) connects them."""
    async with (
        Node.open(identity=identity(21), listen=LOCAL, mdns=True) as a,
        Node.open(identity=identity(22), listen=LOCAL, mdns=True) as b,
    ):
        await a.subscribe(TOPIC)
        await b.subscribe(TOPIC)
        with trio.fail_after(WAIT):
            await a.wait_for(lambda: b.peer_id in a.driver.router.topic_peers(TOPIC))
        await a.publish(TOPIC, b"found you on the LAN")
        assert [e.data for e in await collect(b, 1)] == [b"found you on the LAN"]


async def test_nodes_answer_libp2p_ping_and_identify() -> None:
    """The standard libp2p services run on every node (py-libp2p's defaults): ping and identify."""
    async with line(2) as (a, b):
        b_id = ID.from_base58(b.peer_id)
        with trio.fail_after(WAIT):
            rtts = await PingService(a.host).ping(b_id, ping_amt=3)
        assert len(rtts) == 3 and all(rtt >= 0 for rtt in rtts)
        with trio.fail_after(WAIT):
            stream = await a.host.new_stream(b_id, [TProtocol("/ipfs/id/1.0.0")])
            await stream.close()


async def test_events_the_application_did_not_take_are_counted_in_statistics() -> None:
    async with Node.open(identity=identity(4), listen=LOCAL) as node:
        assert node.statistics().drops[NetDrop.EVENT_QUEUE_FULL] == 0
        node.events_dropped = 3  # as _translate_events counts when the node's own queue is full
        assert node.statistics().drops[NetDrop.EVENT_QUEUE_FULL] == 3
