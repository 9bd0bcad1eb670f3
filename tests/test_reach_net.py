"""Reachability on real hosts on 127.0.0.1: AutoNAT dial-backs, relays chosen automatically, renewed
before their (short) reservations expire, replaced when a relay stops or drops traffic, and a chat
through an automatically chosen relay."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from conftest import make_profile
from libp2p.abc import IHost, INetStream
from libp2p.host.autonat.autonat import AutoNATService
from libp2p.host.autonat.pb.autonat_pb2 import Message as AutonatMessage
from libp2p.host.basic_host import BasicHost
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode, to_proto_status
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.utils import write_delimited_msg
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr
from test_cli_network import init, meshchat, processes, stop

from meshchat.identity import Identity
from meshchat.inbox import DirectMessage
from meshchat.net.dialer import Dialer
from meshchat.net.host import IO_ERRORS, build_host, parse_multiaddr
from meshchat.net.reach_driver import ReachOptions
from meshchat.node import Node
from meshchat.reach import AddressesChanged, DropReason, Reachability, ReachConfig
from meshchat.reach.core import relay_of
from meshchat.store.messenger import StoreConfig
from meshchat.store.storage import OutboxStatus
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WAIT = 45.0
#: A node that cannot learn its reachability (no AutoNAT asked) holds relays: what a node behind a
#: NAT does. Peers are looked at every half second, probes give up after 3 s and are retried after 0.5 s.
TEST_REACH = ReachOptions(
    config=ReachConfig(relays=1, autonat=False, scan_interval=0.5, probe_retry=0.5, probe_interval=2.0),
    probe_timeout=3.0,
)


class _DroppingRelay(CircuitV2Protocol):
    """A hop relay that grants reservations like any other, then answers every CONNECT with OK and
    throws away what the circuit carries: it never reaches the destination."""

    async def _handle_connect(self, stream: INetStream, msg: HopMessage) -> None:
        await write_delimited_msg(
            stream, HopMessage(type=HopMessage.STATUS, status=to_proto_status(StatusCode.OK))
        )
        with contextlib.suppress(*IO_ERRORS):
            while await stream.read(65536):
                pass


@asynccontextmanager
async def relay_host(
    seed: int, *, ttl: int = 3600, protocol: type[CircuitV2Protocol] = CircuitV2Protocol
) -> AsyncIterator[tuple[IHost, CircuitV2Protocol]]:
    """A bare py-libp2p host on 127.0.0.1 relaying (hop) with reservations of ``ttl`` seconds."""
    host = build_host(Identity(bytes([seed]) * 32))
    limits = RelayLimits(
        duration=3600, data=1 << 30, max_circuit_conns=8, max_reservations=16, reservation_ttl=ttl
    )
    relay = protocol(host, limits=limits, allow_hop=True)
    async with host.run([parse_multiaddr(LOCAL[0])]), background_trio_service(relay):
        try:
            yield host, relay
        finally:
            await Dialer(host).hang_up()


def address_of(host: IHost) -> str:
    return str(host.get_addrs()[0])


def relayed_through(node: Node, relay: IHost) -> list[str]:
    return [
        a.address
        for a in node.addresses()
        if a.kind == "relayed" and relay_of(a.address) == str(relay.get_id())
    ]


async def test_a_node_reserves_by_itself_and_renews_before_the_short_reservation_expires() -> None:
    async with (
        relay_host(0x21, ttl=5) as (relay, protocol),
        Node.open(
            identity=Identity(b"\x22" * 32),
            listen=LOCAL,
            dht=False,
            bootstrap=[address_of(relay)],
            reach=TEST_REACH,
        ) as node,
    ):
        with trio.fail_after(WAIT):
            await node.wait_reach(lambda: bool(relayed_through(node, relay)))
            started = trio.current_time()
            # two renewals of a 4-5 s reservation (the relay rounds its expiry down to the second),
            # each due at 3/4 of it: without them it would have run out
            await node.wait_reach(lambda: node.reach_statistics().renewals >= 2)  # type: ignore[union-attr]
        assert trio.current_time() - started > 5
        assert protocol.resource_manager.has_reservation(node.host.get_id())
        stats = node.reach_statistics()
        assert stats is not None
        assert stats.reservations == 1 and stats.renewals_failed == 0 and stats.probes_ok >= 1
        assert relayed_through(node, relay)


async def test_a_relay_reserved_on_request_is_renewed_too() -> None:
    """``Node.reserve`` (``meshchat node --reserve``) under ``reach`` without automatic relays: the
    reservation it makes is renewed like the automatic ones (before this, it ran out after an hour)."""
    pinned_only = ReachOptions(config=ReachConfig(auto_relay=False, autonat=False, scan_interval=0.5))
    async with (
        relay_host(0x61, ttl=5) as (relay, protocol),
        Node.open(identity=Identity(b"\x62" * 32), listen=LOCAL, dht=False, reach=pinned_only) as node,
    ):
        with trio.fail_after(WAIT):
            relayed = await node.reserve(address_of(relay))
            assert relayed == f"{address_of(relay)}/p2p-circuit/p2p/{node.peer_id}"
            assert [a.address for a in node.addresses() if a.kind == "relayed"] == [relayed]
            await node.wait_reach(lambda: node.reach_statistics().renewals >= 2)  # type: ignore[union-attr]
        assert protocol.resource_manager.has_reservation(node.host.get_id())
        assert relayed_through(node, relay) == [relayed]


async def test_the_relay_stops_and_the_node_moves_to_another() -> None:
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(relay_host(0x31))
        second = await stack.enter_async_context(relay_host(0x32))
        relays = {str(first[0].get_id()): first, str(second[0].get_id()): second}
        node = await stack.enter_async_context(
            Node.open(
                identity=Identity(b"\x33" * 32),
                listen=LOCAL,
                dht=False,
                reach=TEST_REACH,
                bootstrap=[address_of(first[0]), address_of(second[0])],
            )
        )
        changes: list[AddressesChanged] = []
        with trio.fail_after(WAIT):
            await node.wait_reach(lambda: bool(node._reachability and node._reachability.core.held_relays()))
        (chosen,) = node._reachability.core.held_relays()  # type: ignore[union-attr]
        other = next(r for r in relays if r != chosen)
        chosen_host, _ = relays[chosen]
        await Dialer(chosen_host).hang_up()  # the relay goes away: listener closed, connections cut
        with trio.fail_after(WAIT):
            await node.wait_reach(lambda: node._reachability.core.held_relays() == [other])  # type: ignore[union-attr]
            await node.wait_reach(lambda: bool(relayed_through(node, relays[other][0])))
        assert not relayed_through(node, chosen_host)
        stats = node.reach_statistics()
        assert stats is not None
        assert stats.dropped[DropReason.GONE] == 1 and stats.replaced == 1
        while True:  # the node told its application (events queued meanwhile)
            try:
                event = node.events().receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(event, AddressesChanged):
                changes.append(event)
        assert any(
            all(relay_of(a.address) != chosen for a in c.addresses)
            and any(a.kind == "relayed" for a in c.addresses)
            for c in changes
        )


async def test_a_relay_that_accepts_and_drops_traffic_is_detected_and_replaced() -> None:
    async with (
        relay_host(0x41, protocol=_DroppingRelay) as (bad, _),
        relay_host(0x42) as (good, _),
        Node.open(
            identity=Identity(b"\x43" * 32),
            listen=LOCAL,
            dht=False,
            bootstrap=[address_of(bad)],
            reach=TEST_REACH,
        ) as node,
    ):
        with trio.fail_after(WAIT):
            await node.wait_reach(lambda: bool(relayed_through(node, bad)))  # it accepted the reservation
            await node.connect(address_of(good))
            await node.wait_reach(lambda: bool(relayed_through(node, good)))
        assert not relayed_through(node, bad)
        stats = node.reach_statistics()
        assert stats is not None
        assert stats.dropped[DropReason.DROPS_TRAFFIC] == 1 and stats.replaced == 1 and stats.bad_relays == 1
        assert stats.probes_failed >= 2
        with trio.fail_after(WAIT):
            await node.wait_reach(lambda: node.reach_statistics().probes_ok >= 1)  # type: ignore[union-attr]


async def test_a_chat_through_a_relay_the_node_chose_itself(tmp_path: Path) -> None:
    alice_dir, alice_id = make_profile(tmp_path, "alice", 1)
    dave_dir, dave_id = make_profile(tmp_path, "dave", 11)
    fast = StoreConfig(retry_initial=1.0, retry_max=4.0)
    async with (
        relay_host(0x0D) as (relay, _),
        # Dave listens nowhere, as behind a NAT, and the relay is a bare relay (no gossip, no mailbox):
        # a circuit through it is the only way to him
        Node.open(dave_dir, listen=[], dht=False, bootstrap=[address_of(relay)], reach=TEST_REACH) as dave,
        Node.open(alice_dir, listen=LOCAL, store_config=fast, dht=False) as alice,
    ):
        with trio.fail_after(WAIT):
            await dave.wait_reach(lambda: any(a.kind == "relayed" for a in dave.addresses()))
        invite_addrs = dave.invite_addrs
        assert invite_addrs and all("/p2p-circuit/" in a for a in invite_addrs)
        recorded = (dave_dir / "addresses.json").read_text()
        assert invite_addrs[0] in recorded
        alice.contacts.add(Invite.create(dave_id, name="Dave", addrs=invite_addrs).to_text())
        dave.contacts.add(Invite.create(alice_id, name="Alice").to_text())
        handle = await alice.send("Dave", "через реле, выбранное само")
        with trio.fail_after(WAIT):
            async for event in dave.events():
                if isinstance(event, DirectMessage):
                    assert event.body.decode() == "через реле, выбранное само"
                    break
            await handle.wait_until(OutboxStatus.DELIVERED)  # Dave's receipt came back the same way


async def test_autonat_dial_back_opens_a_new_connection_and_makes_the_node_public() -> None:
    public = ReachOptions(config=ReachConfig(relays=1, confirmations=1, scan_interval=0.5))
    async with (
        Node.open(identity=Identity(b"\x51" * 32), listen=LOCAL, dht=False, reach=public) as server,
        Node.open(
            identity=Identity(b"\x52" * 32),
            listen=LOCAL,
            dht=False,
            reach=public,
            bootstrap=server.listen_addrs[:1],
        ) as client,
    ):
        with trio.fail_after(WAIT):
            await client.wait_reach(lambda: client.reach_statistics().reachability is Reachability.PUBLIC)  # type: ignore[union-attr]
        # loopback is never called public, whatever the dial-back says
        assert all(a.kind == "private" for a in client.addresses())
        # an address where nothing listens: our server says so; py-libp2p's own says OK, because the
        # client is connected already (its dial-back is host.connect, which returns at once)
        with trio.socket.socket() as sock:
            await sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        nowhere = Multiaddr(f"/ip4/127.0.0.1/tcp/{closed_port}").to_bytes()
        assert isinstance(client.host, BasicHost)
        asker = AutoNATService(client.host, serve=False)
        with trio.fail_after(WAIT):
            status, _ = await asker.query_server(server.host.get_id(), addrs=[nowhere])
        assert status == AutonatMessage.E_DIAL_ERROR
        async with Node.open(identity=Identity(b"\x53" * 32), listen=LOCAL, dht=False) as plain:
            assert isinstance(plain.host, BasicHost)
            AutoNATService(plain.host, serve=True)  # py-libp2p's server, unchanged
            await client.connect(plain.listen_addrs[0])
            with trio.fail_after(WAIT):
                status, _ = await asker.query_server(plain.host.get_id(), addrs=[nowhere])
            assert status == AutonatMessage.OK  # the bug the dial-back above fixes


@pytest.mark.slow  # three processes and a peer scan every 5 s: 15-40 s on a loaded machine
async def test_meshchat_node_auto_relay_prints_its_addresses_and_invites_carry_the_relayed_one(
    tmp_path: Path,
) -> None:
    """``meshchat node --auto-relay --json``: an ``addresses`` event at the start (listen addresses,
    private), another once it reserved on the relay it was bootstrapped to (relayed first), and
    ``meshchat invite`` then carries the relayed address only; its final ``statistics`` count it."""
    relay_dir, bob_dir = tmp_path / "relay", tmp_path / "bob"
    await init(relay_dir, "Relay")
    await init(bob_dir, "Bob")
    async with processes() as start:
        relay = await start("node", "--profile", relay_dir, "--json", "--listen", LOCAL[0], "--circuit-relay")
        relay_addr = (await relay.first("listening"))["addrs"][0]
        bob = await start(
            "node",
            "--profile",
            bob_dir,
            "--json",
            "--listen",
            LOCAL[0],
            "--auto-relay",
            "--bootstrap",
            relay_addr,
        )
        first = await bob.first("addresses")
        assert [a["kind"] for a in first["addresses"]] == ["private"]

        def relayed() -> list[str]:
            return [
                a["address"]
                for e in bob.events
                if e["event"] == "addresses"
                for a in e["addresses"]
                if a["kind"] == "relayed"
            ]

        await bob.wait_for(lambda: bool(relayed()), timeout=WAIT)
        assert relayed()[0].startswith(relay_addr + "/p2p-circuit/p2p/")
        invited = json.loads((await meshchat("invite", "--profile", bob_dir, "--json")).stdout)
        assert invited["addrs"] == relayed()[:1]
        await stop(bob)
        (totals,) = [e for e in bob.events if e["event"] == "statistics"]
        assert totals["reach"]["relays_held"] == 1 and totals["reach"]["reservations"] == 1
