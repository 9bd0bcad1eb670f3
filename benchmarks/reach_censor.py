"""Delivery through issue 17's censor (``tests/censor_proxy.py``), against plain TCP in the same run.

Run: python benchmarks/reach_censor.py [--mib N]

``obfs_ratio()``: goodput through the obfuscated transport (``meshchat.net.transports``: libp2p over
WebSocket in TLS 1.3) divided by goodput over plain TCP. Two hosts as ``meshchat.net.host.build_host``
makes them (Noise, yamux) on 127.0.0.1; the dialer pushes ``--mib`` MiB through one stream and the
listener acknowledges the last byte. Each path runs through a censor proxy: plain TCP through a plain
one (the fingerprint rule would drop it), WSS through one with the fingerprint rule on, so both pay the
same extra hop. Also reported: seconds from dial to an upgraded connection on each.

Last line: ``tcp_mib_s=… wss_mib_s=… tcp_connect_s=… wss_connect_s=… obfs_ratio=…``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from censor_proxy import censor_proxy

from meshchat.identity import Identity
from meshchat.net.host import build_host

#: The stream protocol the benchmark pushes its bytes on.
PUSH = TProtocol("/meshchat-bench/push/1")
#: Bytes per write (a large chunk: the figure is the transports', not the writer's).
CHUNK = 64 * 1024
#: Seconds any one run may take.
RUN_LIMIT = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ObfsFigures:
    """Goodput (MiB/s) and connection set-up (s) over plain TCP and WSS, and their ratio."""

    tcp_mib_s: float
    wss_mib_s: float
    tcp_connect_s: float
    wss_connect_s: float

    @property
    def ratio(self) -> float:
        """WSS goodput / plain TCP goodput."""
        return self.wss_mib_s / self.tcp_mib_s


@contextlib.asynccontextmanager
async def _censor(target_port: int, *, fingerprint: bool) -> AsyncIterator[int]:
    """A censor proxy's port: with the fingerprint rule if asked, else a plain one."""
    async with censor_proxy(target_port, None, fingerprint=fingerprint) as proxy:
        yield proxy.port


async def _push(listen: str, total: int, *, fingerprint: bool) -> tuple[float, float]:
    """Seconds to connect through the censor, and to push ``total`` bytes and see them acknowledged."""
    sender = build_host(Identity(b"\x51" * 32))
    receiver = build_host(Identity(b"\x52" * 32))
    done = trio.Event()

    async def sink(stream: INetStream) -> None:
        received = 0
        while received < total:
            data = await stream.read(CHUNK)
            if not data:
                break
            received += len(data)
        await stream.write(b"k")
        done.set()

    receiver.set_stream_handler(PUSH, sink)
    async with sender.run([]), receiver.run([multiaddr.Multiaddr(listen)]):
        [address] = receiver.get_addrs()
        port = int(address.value_for_protocol("tcp") or 0)
        async with _censor(port, fingerprint=fingerprint) as censor:
            through = str(address).replace(f"/tcp/{port}/", f"/tcp/{censor}/", 1)
            with trio.fail_after(RUN_LIMIT):
                started = trio.current_time()
                await sender.connect(info_from_p2p_addr(multiaddr.Multiaddr(through)))
                connected = trio.current_time()
                stream = await sender.new_stream(receiver.get_id(), [PUSH])
                chunk = b"\x00" * CHUNK
                for _ in range(total // CHUNK):
                    await stream.write(chunk)
                await stream.read(1)
                await done.wait()
                pushed = trio.current_time()
            await stream.close()
            await sender.disconnect(receiver.get_id())  # hang up before the hosts stop, as Node does
            return connected - started, pushed - connected


async def obfs_ratio(mib: int = 16) -> ObfsFigures:
    """Goodput through the obfuscated transport (WSS, past the fingerprint rule) and over plain TCP
    (through a plain proxy), ``mib`` MiB each, in this run."""
    total = mib * 1024 * 1024
    tcp_connect, tcp_push = await _push("/ip4/127.0.0.1/tcp/0", total, fingerprint=False)
    wss_connect, wss_push = await _push("/ip4/127.0.0.1/tcp/0/tls/ws", total, fingerprint=True)
    return ObfsFigures(
        tcp_mib_s=mib / tcp_push,
        wss_mib_s=mib / wss_push,
        tcp_connect_s=tcp_connect,
        wss_connect_s=wss_connect,
    )


async def main(args: argparse.Namespace) -> None:
    figures = await obfs_ratio(args.mib)
    print(f"{args.mib} MiB through one stream, each path through a censor proxy on 127.0.0.1:")
    print(f"  plain TCP      {figures.tcp_mib_s:7.1f} MiB/s, connected in {figures.tcp_connect_s:.3f} s")
    print(f"  WSS (TLS 1.3)  {figures.wss_mib_s:7.1f} MiB/s, connected in {figures.wss_connect_s:.3f} s")
    print(
        f"tcp_mib_s={figures.tcp_mib_s:.2f} wss_mib_s={figures.wss_mib_s:.2f} "
        f"tcp_connect_s={figures.tcp_connect_s:.3f} wss_connect_s={figures.wss_connect_s:.3f} "
        f"obfs_ratio={figures.ratio:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16)
    trio.run(main, parser.parse_args())
