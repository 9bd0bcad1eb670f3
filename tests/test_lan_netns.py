"""The local fallback when the Internet is cut (issue 17), with real ``meshchat`` processes in network
namespaces (``tests/netns.py``): each LAN is a bridge, no namespace has a route out, nobody is given a
bootstrap peer or an address.

1. Three nodes on one LAN find each other by mDNS alone (``--mdns``) and a chat goes directly.
2. A laptop running a mailbox (``meshchat mailbox --mdns``) sits on LAN1 and takes Alice's sealed
   envelope for Bob (her contact, whose invite names the laptop as his mailbox); its cable is pulled
   from LAN1 and plugged into LAN2, where Bob's node finds it by mDNS and gets the message from it.

The seconds each step took are printed (``pytest -s``): how long until the nodes found each other,
until the message was delivered, until Bob had it after the laptop was plugged in.

The mDNS module itself (``meshchat.net.lan``): its TXT records are read and written here too, with no
network (``peer_of_txt``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from netns import Netns, netns_made
from processes import JsonLinesProcess, stop_processes

from meshchat.cli.common import PASSPHRASE_ENV, PROFILE_ENV
from meshchat.identity import Identity
from meshchat.net.lan import MAX_ADDRS_PER_PEER, _txt_record, peer_of_txt

MESHCHAT = [sys.executable, "-m", "meshchat"]
#: Seconds any one wait on a process may take (generous: two cores shared with other test runs).
WAIT = 60.0


# --- TXT records, no network --------------------------------------------------------------------


def _peer(seed: int) -> str:
    return Identity(bytes([seed]) * 32).public.peer_id


def test_a_txt_record_gives_the_peer_and_its_tcp_addresses() -> None:
    me, other = _peer(1), _peer(2)
    record = _txt_record([f"/ip4/10.1.0.2/tcp/4001/p2p/{me}", f"/ip4/127.0.0.1/tcp/4001/p2p/{me}"])
    found = peer_of_txt(record)
    assert found is not None and str(found.peer_id) == me
    assert [str(a) for a in found.addrs] == ["/ip4/10.1.0.2/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]
    assert peer_of_txt(record, own=found.peer_id) is None  # our own announcement
    # py-libp2p 0.8.1 numbers its keys (dnsaddr, dnsaddr2, ...); an address naming another peer than
    # the first one is ignored, and so are other keys and transports
    mixed = b"".join(
        bytes([len(s)]) + s
        for s in (
            f"dnsaddr=/ip4/10.1.0.3/tcp/5/p2p/{other}".encode(),
            f"dnsaddr2=/ip4/10.1.0.4/tcp/6/p2p/{other}".encode(),
            f"dnsaddr3=/ip4/10.1.0.5/tcp/7/p2p/{me}".encode(),
            f"dnsaddr4=/ip4/10.1.0.6/udp/7/quic-v1/p2p/{other}".encode(),
            b"id=whatever",
        )
    )
    found = peer_of_txt(mixed)
    assert found is not None and str(found.peer_id) == other
    assert [str(a) for a in found.addrs] == ["/ip4/10.1.0.3/tcp/5", "/ip4/10.1.0.4/tcp/6"]


def test_a_txt_record_that_is_garbage_or_too_long_is_bounded() -> None:
    for garbage in (
        b"",
        b"\x05dnsad",
        b"\xffabc",
        b"\x10dnsaddr=/p2p/xyz",
        b"\x1adnsaddr=/ip4/1.2.3.4/p2p/0OIl",
    ):
        assert peer_of_txt(garbage) is None
    me = _peer(3)
    many = _txt_record([f"/ip4/10.1.{i // 250}.{i % 250}/tcp/1/p2p/{me}" for i in range(100)])
    found = peer_of_txt(many)
    assert found is not None and len(found.addrs) <= MAX_ADDRS_PER_PEER


# --- processes in namespaces ----------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, PROFILE_ENV)}
    return {**env, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}


async def meshchat(*args: str | Path) -> bytes:
    """Run one ``meshchat`` command (in the root namespace: it does not touch the network); its output."""
    with trio.fail_after(WAIT):
        done = await trio.run_process(
            [*MESHCHAT, *map(str, args)], capture_stdout=True, capture_stderr=True, check=False, env=_env()
        )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


async def init(profile: Path, name: str) -> str:
    """Make a profile; its PeerId."""
    await meshchat("init", "--profile", profile, "--name", name, "--insecure-no-passphrase")
    return str(json.loads(await meshchat("id", "--profile", profile, "--json"))["peer_id"])


@asynccontextmanager
async def processes(net: Netns, logs: Path) -> AsyncIterator[Callable[..., Any]]:
    """A ``start(namespace, *args)`` that runs ``meshchat`` inside ``namespace`` printing JSON events;
    every process is killed (by PID: ``ip netns exec`` execs meshchat) and reaped at the end."""
    started: list[trio.Process] = []
    printed: list[tuple[str, JsonLinesProcess]] = []
    async with trio.open_nursery() as nursery:

        async def start(namespace: str, *args: str | Path) -> JsonLinesProcess:
            with open(logs / f"{namespace}.stderr", "ab") as err:  # noqa: ASYNC230 (a local file)
                process = await trio.lowlevel.open_process(
                    net.argv(namespace, [*MESHCHAT, *map(str, args)]),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=_env(),
                )
            started.append(process)
            events = JsonLinesProcess(process)
            printed.append((namespace, events))
            nursery.start_soon(events.read_events)
            await events.wait_for(lambda: _has(events, "listening"), timeout=WAIT)
            return events

        try:
            yield start
        finally:
            await stop_processes(started)
            nursery.cancel_scope.cancel()
            for namespace, events in printed:  # what each printed, for a failure's post-mortem
                with open(logs / f"{namespace}.events", "a", encoding="utf-8") as out:  # noqa: ASYNC230
                    out.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in events.events)


def _has(events: JsonLinesProcess, kind: str, **fields: object) -> bool:
    return any(e["event"] == kind and all(e.get(k) == v for k, v in fields.items()) for e in events.events)


def _connected_to(events: JsonLinesProcess, peer: str) -> Callable[[], bool]:
    return lambda: _has(events, "peer_connected", peer=peer)


def _got(events: JsonLinesProcess, text: str) -> Callable[[], bool]:
    data = base64.b64encode(text.encode()).decode()
    return lambda: _has(events, "direct", data=data)


def _no_route_out(net: Netns, *namespaces: str) -> None:
    """The Internet is cut: no namespace has a default route (only its LAN's subnet)."""
    for namespace in namespaces:
        assert "default" not in net.run(namespace, "ip", "route", "show")


@pytest.mark.slow
async def test_three_nodes_on_a_cut_off_lan_find_each_other_by_mdns_and_chat_directly(tmp_path: Path) -> None:
    """Alice and Bob find each other and chat; Carol's node starts on a machine with no network at all
    (no cable, loopback down: zeroconf cannot start) and runs on; plugged in, she finds them both."""
    names = {"alice": "Alice", "bob": "Bob", "carol": "Carol"}
    ids = {short: await init(tmp_path / short, name) for short, name in names.items()}
    bob_invite = await meshchat("invite", "--profile", tmp_path / "bob")
    await meshchat("add", "--profile", tmp_path / "alice", bob_invite.decode().strip())
    with netns_made("lan") as net:
        net.switch("lan")
        for short in names:
            net.host(short)
        net.link("alice", "10.71.0.2/24", "lan", bridge=True)
        net.link("bob", "10.71.0.3/24", "lan", bridge=True)
        net.run("carol", "ip", "link", "set", "lo", "down")  # as a new namespace: no address at all
        net.run("carol", "ip", "addr", "flush", "dev", "lo")
        _no_route_out(net, *names)
        async with processes(net, tmp_path) as start:
            bob = await start("bob", "node", "--profile", tmp_path / "bob", "--mdns", "--json")
            carol = await start("carol", "node", "--profile", tmp_path / "carol", "--mdns", "--json")
            spawned = trio.current_time()
            alice = await start(
                "alice", "chat", "--profile", tmp_path / "alice", "--to", "Bob", "--mdns", "--json"
            )
            started = trio.current_time()
            await alice.wait_for(_connected_to(alice, ids["bob"]), timeout=WAIT)
            await bob.wait_for(_connected_to(bob, ids["alice"]), timeout=WAIT)
            found = trio.current_time()
            assert alice.process.stdin is not None
            await alice.process.stdin.send_all("Интернет сүнгән, LAN эшли\n".encode())
            await bob.wait_for(_got(bob, "Интернет сүнгән, LAN эшли"), timeout=WAIT)
            delivered = trio.current_time()
            direct = next(e for e in bob.events if e["event"] == "direct")
            assert direct["contact"] is None and direct["sender"] == ids["alice"]  # Bob never added her
            await alice.wait_for(lambda: _has(alice, "status", status="delivered"), timeout=WAIT)

            assert not _has(carol, "peer_connected") and carol.process.returncode is None
            net.run("carol", "ip", "link", "set", "lo", "up")
            net.link("carol", "10.71.0.4/24", "lan", bridge=True)
            plugged = trio.current_time()
            for other in ("alice", "bob"):
                await carol.wait_for(_connected_to(carol, ids[other]), timeout=WAIT)
            carol_found = trio.current_time()
    print(
        f"\nLAN: Alice's process up in {started - spawned:.1f} s, she and Bob connected "
        f"{found - started:.1f} s after that, chat delivered {delivered - found:.2f} s later; "
        f"Carol plugged in, connected to both {carol_found - plugged:.1f} s later"
    )


@dataclass
class _Laptop:
    """Where the laptop's cable is: its interface, the switch's end of it, the LAN (a switch)."""

    cable: str
    switch_end: str
    lan: str

    def move(self, net: Netns, lan: str, address: str, *, same_cable: bool) -> None:
        """Plug the laptop into ``lan`` with ``address`` (as DHCP there would give it): a new cable (the
        old one pulled out: a new interface), or the same cable moved to ``lan``'s switch (the
        laptop's interface stays, its link goes down and up)."""
        if same_cable:
            net.run(self.lan, "ip", "link", "set", self.switch_end, "netns", net.name(lan))
            net.run(lan, "ip", "link", "set", self.switch_end, "master", "br0")
            net.run(lan, "ip", "link", "set", self.switch_end, "up")
            net.run("laptop", "ip", "addr", "flush", "dev", self.cable)
            net.run("laptop", "ip", "addr", "add", address, "dev", self.cable)
        else:
            net.unlink("laptop", self.cable)
            self.cable, self.switch_end = net.link("laptop", address, lan, bridge=True)
        self.lan = lan


@pytest.mark.slow
@pytest.mark.parametrize("move", ["new cable", "same cable, other switch"])
async def test_a_laptop_mailbox_carries_a_sealed_envelope_from_one_lan_to_another(
    tmp_path: Path, move: str
) -> None:
    """Alice's message goes to Bob on the laptop; Bob's receipt and reply come back to Alice on it."""
    alice, bob, laptop = tmp_path / "alice", tmp_path / "bob", tmp_path / "laptop"
    alice_id = await init(alice, "Alice")
    await init(bob, "Bob")
    laptop_id = await init(laptop, "Laptop")
    mailbox_on_lan1 = f"/ip4/10.72.1.9/tcp/4001/p2p/{laptop_id}"
    bob_invite = await meshchat("invite", "--profile", bob, "--mailbox", mailbox_on_lan1)
    await meshchat("add", "--profile", alice, bob_invite.decode().strip())
    await meshchat("add", "--profile", bob, (await meshchat("invite", "--profile", alice)).decode().strip())
    same_cable = move == "same cable, other switch"
    with netns_made("carry") as net:
        net.switch("lan1")
        net.switch("lan2")
        net.host("alice")
        net.host("bob")
        net.host("laptop")
        net.link("alice", "10.72.1.2/24", "lan1", bridge=True)
        net.link("bob", "10.72.2.3/24", "lan2", bridge=True)
        cable = _Laptop(*net.link("laptop", "10.72.1.9/24", "lan1", bridge=True), lan="lan1")
        _no_route_out(net, "alice", "bob", "laptop")
        async with processes(net, tmp_path) as start:
            # the laptop listens on every interface: whatever address the next LAN gives it
            carrier = await start(
                "laptop",
                "mailbox",
                "--profile",
                laptop,
                "--listen",
                "/ip4/0.0.0.0/tcp/4001",
                "--mdns",
                "--json",
            )
            receiver = await start(
                "bob",
                "chat",
                "--profile",
                bob,
                "--to",
                "Alice",
                "--mdns",
                "--mailbox",
                mailbox_on_lan1,
                "--json",
            )
            sender = await start("alice", "chat", "--profile", alice, "--to", "Bob", "--mdns", "--json")
            await sender.wait_for(_connected_to(sender, laptop_id), timeout=WAIT)
            assert sender.process.stdin is not None
            await sender.process.stdin.send_all(b"the laptop carries this\n")
            await sender.wait_for(lambda: _has(sender, "status", status="stored"), timeout=WAIT)
            assert not _has(receiver, "peer_connected")  # Bob, alone on LAN2, met nobody

            plugged = trio.current_time()
            cable.move(net, "lan2", "10.72.2.9/24", same_cable=same_cable)
            await receiver.wait_for(_connected_to(receiver, laptop_id), timeout=WAIT)
            found = trio.current_time()
            await receiver.wait_for(_got(receiver, "the laptop carries this"), timeout=WAIT)
            delivered = trio.current_time()
            assert not _has(receiver, "peer_connected", peer=alice_id)  # the laptop brought it
            assert not _has(sender, "status", status="delivered")
            assert receiver.process.stdin is not None
            await receiver.process.stdin.send_all(b"got it, thanks\n")
            await receiver.wait_for(lambda: _has(receiver, "status", status="stored"), timeout=WAIT)

            back = trio.current_time()  # Bob's receipt and reply ride back on the laptop
            cable.move(net, "lan1", "10.72.1.9/24", same_cable=same_cable)
            await sender.wait_for(_got(sender, "got it, thanks"), timeout=WAIT)
            replied = trio.current_time()
            await sender.wait_for(lambda: _has(sender, "status", status="delivered"), timeout=WAIT)
            carrier.process.send_signal(signal.SIGTERM)  # stopped cleanly, it prints what it held
            await carrier.wait_for(lambda: _has(carrier, "mailbox"), timeout=WAIT)
        held = next(e for e in carrier.events if e["event"] == "mailbox")
        assert held["stored"] >= 3 and held["fetched"] >= 3  # the message, the receipt, the reply
    print(
        f"\nlaptop plugged into LAN2 ({move}): Bob found it {found - plugged:.1f} s later, "
        f"had the message {delivered - found:.2f} s after that; back on LAN1, Alice had Bob's "
        f"reply {replied - back:.1f} s after it was plugged in"
    )
