"""The bulk channel (``meshchat.net.bulk``) against a raw trio TCP copy of the same bytes, in one run.

Run: python benchmarks/bench_bulk.py [--mib 256] [--rounds 3]

Both ends run in this process, on one trio loop, over 127.0.0.1. The sender writes ``--mib`` MiB in
256 KiB frames (the chunk size); the receiver reads them all and answers with one byte; the time is
from the first send to that answer. The bulk channel seals and opens every frame (AES-256-GCM) and
presents its ticket first; the raw copy is ``SocketStream.send_all`` / ``receive_some`` with nothing
on top. Rounds alternate raw and bulk and the best round of each counts (the machine is shared).
The last line reads ``bulk_mb_s=… raw_mb_s=… ratio=…`` (MB = 10**6 bytes).
"""

from __future__ import annotations

import argparse
import time

import trio

from meshchat.net.bulk import BulkChannel, BulkListener, open_bulk

HOST = "127.0.0.1"
FRAME = 256 * 1024


async def raw_round(total: int) -> float:
    """Seconds to copy ``total`` bytes over a plain trio TCP connection and get a one-byte answer."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    payload = bytes(FRAME)

    async def receive_all(server: trio.SocketStream) -> None:
        got = 0
        while got < total:
            data = await server.receive_some(1 << 20)
            if not data:
                raise EOFError("raw sender closed early")
            got += len(data)
        await server.send_all(b"k")

    async with listeners[0], trio.open_nursery() as nursery:
        client = await trio.open_tcp_stream(HOST, port)
        server = await listeners[0].accept()
        async with client, server:
            start = time.perf_counter()
            nursery.start_soon(receive_all, server)
            for _ in range(total // FRAME):
                await client.send_all(payload)
            if await client.receive_some(1) != b"k":
                raise AssertionError("no answer from the raw receiver")
            return time.perf_counter() - start


async def bulk_round(total: int) -> float:
    """Seconds to move ``total`` bytes through a bulk channel in 256 KiB frames and get an answer."""
    frames = total // FRAME

    async def receive_all(channel: BulkChannel) -> None:
        for _ in range(frames):
            await channel.receive()
        await channel.send(b"k")

    async with BulkListener.open(HOST, receive_all) as listener:
        ticket = listener.issue("bench peer", now=trio.current_time())
        channel = await open_bulk(HOST, listener.port, ticket, peer="bench server")
        async with channel:
            payload = bytes(FRAME)
            start = time.perf_counter()
            for _ in range(frames):
                await channel.send(payload)
            if await channel.receive() != b"k":
                raise AssertionError("no answer from the bulk receiver")
            elapsed = time.perf_counter() - start
        refused = listener.statistics().refused
        if refused:
            raise AssertionError(f"the listener refused: {refused}")
        return elapsed


async def main(mib: int, rounds: int) -> None:
    total = mib * 1024 * 1024
    raw_times: list[float] = []
    bulk_times: list[float] = []
    for number in range(1, rounds + 1):
        raw_times.append(await raw_round(total))
        bulk_times.append(await bulk_round(total))
        print(
            f"round {number}: raw {total / raw_times[-1] / 1e6:,.0f} MB/s, "
            f"bulk {total / bulk_times[-1] / 1e6:,.0f} MB/s ({mib} MiB in {FRAME // 1024} KiB frames)"
        )
    raw = total / min(raw_times) / 1e6
    bulk = total / min(bulk_times) / 1e6
    print(f"bulk_mb_s={bulk:.0f} raw_mb_s={raw:.0f} ratio={bulk / raw:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB moved per round (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    args = parser.parse_args()
    trio.run(main, args.mib, args.rounds)
