"""The candidates for issue 17's transport with no fixed byte pattern, measured side by side: plain TCP,
libp2p over WebSocket in TLS 1.3 (WSS, ``meshchat.net.transports``) and obfs4 (Debian's ``obfs4proxy``
as a managed pluggable transport). The figures behind the choice in ``meshchat.net.transports``.

Run: python benchmarks/obfs_candidates.py [--mib N]

Each candidate carries one libp2p connection between two ``build_host`` hosts on 127.0.0.1 (Noise and
yamux inside every one) and pushes ``--mib`` MiB through one stream. A tap in front of the listening
side keeps what a DPI box on the path would see. Reported per candidate: goodput, seconds from dial to
an upgraded connection, start-up cost (WSS: making the certificate; obfs4: starting the two
``obfs4proxy`` processes until they report their methods), whether the first bytes either way carry
multistream-select's header (what the censor's fingerprint rule drops), the first bytes the client
sends, and the Shannon entropy of its first 2 KiB (8 bits per byte is indistinguishable from random:
what "fully encrypted" traffic detectors look for). obfs4 is reached the way Tor drives it: the client
``obfs4proxy`` offers SOCKS5, with the bridge's ``cert=…;iat-mode=0`` as the SOCKS username, and a small
forwarder here lets py-libp2p's plain TCP dial through it. Tor is not run (see the module docstring of
``meshchat.net.transports``).

Last line: ``tcp_mib_s=… wss_mib_s=… obfs4_mib_s=… wss_ratio=… obfs4_ratio=… wss_start_ms=…
obfs4_start_ms=…``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from meshchat.identity import Identity
from meshchat.net.host import build_host
from meshchat.net.transports import server_tls_context

PUSH = TProtocol("/meshchat-bench/push/1")
CHUNK = 64 * 1024
#: Bytes of each direction the tap keeps.
HEAD = 4096
MULTISTREAM = b"\x13/multistream/1.0.0\n"
#: Seconds any one candidate may take.
RUN_LIMIT = 300.0


@dataclass
class Seen:
    """What the tap saw of the first connection: the heads of both directions."""

    port: int = 0
    #: The client's first read as the tap got it (its first packet, on loopback).
    first_flight: bytes = b""
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class Figures:
    name: str
    mib_s: float
    connect_s: float
    start_s: float
    seen: Seen

    def dpi(self) -> str:
        client = bytes(self.seen.to_server)
        matched = MULTISTREAM in client[:64] or MULTISTREAM in bytes(self.seen.to_client)[:64]
        flight = self.seen.first_flight
        return (
            f"fingerprint rule {'DROPS it' if matched else 'passes'}; client opens with "
            f"{client[:3].hex(' ')}; first packet {len(flight)} B, {_popcount(flight):.2f} bits set per "
            f"byte, fully-encrypted rule {'FLAGS it' if _fully_encrypted(flight) else 'passes'}"
        )


def _popcount(data: bytes) -> float:
    return sum(bin(b).count("1") for b in data) / max(1, len(data))


def _printable(b: int) -> bool:
    return 0x20 <= b <= 0x7E


def _fully_encrypted(first: bytes) -> bool:
    """Whether the rule the Great Firewall applies to a connection's first packet since 2021 (Wu et
    al., USENIX Security 2023, "How the Great Firewall of China Detects and Blocks Fully Encrypted
    Traffic") would flag it: none of its exemptions Ex1-Ex5 holds."""
    if not first:
        return False
    runs = "".join("p" if _printable(b) else " " for b in first).split()
    exempt = (
        not 3.4 < _popcount(first) < 4.6  # Ex1: bits set per byte far from random's 4
        or all(_printable(b) for b in first[:6])  # Ex2: opens with 6 printable bytes
        or sum(map(_printable, first)) > len(first) / 2  # Ex3: mostly printable
        or max(map(len, runs), default=0) > 20  # Ex4: a printable run over 20 bytes
        or first[:2] == b"\x16\x03"  # Ex5: a TLS record (or HTTP, covered by Ex2)
    )
    return not exempt


async def _pump(source: trio.abc.Stream, sink: trio.abc.Stream, head: bytearray | None) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while data := await source.receive_some(CHUNK):
            if head is not None and len(head) < HEAD:
                head += data[: HEAD - len(head)]
            await sink.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await sink.send_eof()  # type: ignore[attr-defined]  # trio's socket streams have it


@contextlib.asynccontextmanager
async def _tap(target_port: int) -> AsyncIterator[Seen]:
    """A proxy to ``target_port`` keeping the heads of its first connection."""
    seen = Seen()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    seen.port = listeners[0].socket.getsockname()[1]
    first = [True]

    async def serve(client: trio.SocketStream) -> None:
        keep, first[0] = first[0], False
        upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
        async with client, upstream, trio.open_nursery() as pair:
            pair.start_soon(_pump, upstream, client, seen.to_client if keep else None)
            if keep:
                seen.first_flight = await client.receive_some(CHUNK)
                seen.to_server += seen.first_flight
                await upstream.send_all(seen.first_flight)
            pair.start_soon(_pump, client, upstream, seen.to_server if keep else None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        yield seen
        nursery.cancel_scope.cancel()


async def _measure(name: str, listen: str, total: int, *, start_s: float = 0.0) -> Figures:
    """Push ``total`` bytes from one host to another listening on ``listen``, through a tap."""
    return await _measure_via(name, listen, total, start_s=start_s, route=None)


async def _measure_via(
    name: str, listen: str, total: int, *, start_s: float, route: Obfs4Route | None
) -> Figures:
    sender, receiver = build_host(Identity(b"\x71" * 32)), build_host(Identity(b"\x72" * 32))
    done = trio.Event()

    async def sink(stream: INetStream) -> None:
        received = 0
        while received < total and (data := await stream.read(CHUNK)):
            received += len(data)
        await stream.write(b"k")
        done.set()

    receiver.set_stream_handler(PUSH, sink)
    async with sender.run([]), receiver.run([multiaddr.Multiaddr(listen)]):
        [address] = receiver.get_addrs()
        port = int(address.value_for_protocol("tcp") or 0)
        async with contextlib.AsyncExitStack() as stack:
            if route is None:
                seen = await stack.enter_async_context(_tap(port))
                dial = str(address).replace(f"/tcp/{port}/", f"/tcp/{seen.port}/", 1)
            else:
                seen, dial_port = await stack.enter_async_context(route(port))
                dial = f"/ip4/127.0.0.1/tcp/{dial_port}/p2p/{receiver.get_id()}"
            with trio.fail_after(RUN_LIMIT):
                started = trio.current_time()
                await sender.connect(info_from_p2p_addr(multiaddr.Multiaddr(dial)))
                connected = trio.current_time()
                stream = await sender.new_stream(receiver.get_id(), [PUSH])
                for _ in range(total // CHUNK):
                    await stream.write(b"\x00" * CHUNK)
                await stream.read(1)
                await done.wait()
                pushed = trio.current_time()
            await stream.close()
    return Figures(name, total / 2**20 / (pushed - connected), connected - started, start_s, seen)


class Obfs4Route:
    """The path to a listener through obfs4: ``obfs4proxy`` server in front of it, ``obfs4proxy``
    client, and a SOCKS5 forwarder; yields (what the tap before the server saw, the port to dial)."""

    def __init__(self) -> None:
        self.start_s = 0.0

    @contextlib.asynccontextmanager
    async def __call__(self, target_port: int) -> AsyncIterator[tuple[Seen, int]]:
        with tempfile.TemporaryDirectory() as state:
            server_port = _free_port()
            began = time.perf_counter()
            server, server_lines = _start_pt(
                state + "/s",
                TOR_PT_SERVER_TRANSPORTS="obfs4",
                TOR_PT_SERVER_BINDADDR=f"obfs4-127.0.0.1:{server_port}",
                TOR_PT_ORPORT=f"127.0.0.1:{target_port}",
            )
            client, client_lines = _start_pt(state + "/c", TOR_PT_CLIENT_TRANSPORTS="obfs4")
            self.start_s = time.perf_counter() - began
            try:
                smethod = next(line for line in server_lines if line.startswith("SMETHOD obfs4 "))
                bridge_args = smethod.split("ARGS:", 1)[1].replace(",", ";").encode()
                cmethod = next(line for line in client_lines if line.startswith("CMETHOD obfs4 "))
                socks_host, socks_port = cmethod.split()[-1].rsplit(":", 1)
                async with _tap(server_port) as seen, trio.open_nursery() as nursery:
                    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

                    async def forward(local: trio.SocketStream) -> None:
                        remote = await trio.open_tcp_stream(socks_host, int(socks_port))
                        async with local, remote:
                            await _socks5(remote, bridge_args, seen.port)
                            async with trio.open_nursery() as pair:
                                pair.start_soon(_pump, local, remote, None)
                                pair.start_soon(_pump, remote, local, None)

                    nursery.start_soon(trio.serve_listeners, forward, listeners)
                    yield seen, listeners[0].socket.getsockname()[1]
                    nursery.cancel_scope.cancel()
            finally:
                for process in (server, client):
                    process.kill()
                    process.wait()


def _free_port() -> int:
    """A port free now on 127.0.0.1 (for the obfs4 server to bind)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_pt(state: str, **settings: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``obfs4proxy`` as a managed transport; its lines up to ``…METHODS DONE``."""
    env = {
        **os.environ,
        "TOR_PT_MANAGED_TRANSPORT_VER": "1",
        "TOR_PT_STATE_LOCATION": state,
        "TOR_PT_EXIT_ON_STDIN_CLOSE": "1",
        **settings,
    }
    process = subprocess.Popen(
        ["obfs4proxy"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    lines: list[str] = []
    while (line := process.stdout.readline().strip()) and not line.endswith("METHODS DONE"):
        lines.append(line)
    return process, lines


async def _socks5(stream: trio.SocketStream, args: bytes, port: int) -> None:
    """SOCKS5 CONNECT to 127.0.0.1:``port``, the pluggable-transport arguments as the credentials."""
    user, password = args[:255], args[255:] or b"\x00"
    await stream.send_all(b"\x05\x01\x02")
    assert await stream.receive_some(2) == b"\x05\x02"
    await stream.send_all(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
    assert (await stream.receive_some(2))[1] == 0, "obfs4proxy refused the bridge arguments"
    await stream.send_all(b"\x05\x01\x00\x01" + bytes([127, 0, 0, 1]) + struct.pack(">H", port))
    reply = await stream.receive_some(10)
    assert reply[1] == 0, f"obfs4proxy could not reach the bridge: {reply!r}"


async def main(args: argparse.Namespace) -> None:
    total = args.mib * 2**20
    began = time.perf_counter()
    server_tls_context()
    cert_s = time.perf_counter() - began
    results = [
        await _measure("plain TCP", "/ip4/127.0.0.1/tcp/0", total),
        await _measure("WSS", "/ip4/127.0.0.1/tcp/0/tls/ws", total, start_s=cert_s),
    ]
    if shutil.which("obfs4proxy"):
        route = Obfs4Route()
        figures = await _measure_via("obfs4", "/ip4/127.0.0.1/tcp/0", total, start_s=0.0, route=route)
        results.append(Figures("obfs4", figures.mib_s, figures.connect_s, route.start_s, figures.seen))
    else:
        print("obfs4: not measured (obfs4proxy is not installed: Debian package obfs4proxy)")
    print("Tor: not run (needs the Tor network's directory authorities; minutes to bootstrap)")
    tcp = results[0].mib_s
    for r in results:
        print(
            f"{r.name:10s} {r.mib_s:6.1f} MiB/s ({r.mib_s / tcp:.2f} of TCP), connected in "
            f"{r.connect_s:.3f} s, start-up {r.start_s * 1000:.1f} ms; {r.dpi()}"
        )
    by = {r.name: r for r in results}
    obfs4 = by.get("obfs4")
    print(
        f"tcp_mib_s={tcp:.2f} wss_mib_s={by['WSS'].mib_s:.2f} "
        f"obfs4_mib_s={obfs4.mib_s if obfs4 else float('nan'):.2f} "
        f"wss_ratio={by['WSS'].mib_s / tcp:.3f} "
        f"obfs4_ratio={obfs4.mib_s / tcp if obfs4 else float('nan'):.3f} "
        f"wss_start_ms={cert_s * 1000:.1f} "
        f"obfs4_start_ms={obfs4.start_s * 1000 if obfs4 else float('nan'):.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=20)
    trio.run(main, parser.parse_args())
