"""py-libp2p's bitswap against meshchat's chunk protocol, the same encrypted chunks, in one run.

Run: python benchmarks/bench_bitswap.py [--mib 32]

Two meshchat nodes in this process on 127.0.0.1 (TCP + Noise + yamux). A file of ``--mib`` MiB is cut
into meshchat's encrypted 256 KiB chunks (``meshchat.files.chunks.cut``); each chunk is also a CIDv1
raw block with a sha2-256 multihash (the same bytes, the same hash), so bitswap can carry it as it is.

1. bitswap: py-libp2p 0.8.1's ``BitswapClient`` (protocol 1.2.0) on both hosts; the provider holds
   every block in a ``MemoryBlockStore``; the fetcher asks for all of them with a session's
   ``get_blocks_batch`` (batches of 32) from the provider.
2. meshchat's chunk protocol (``/meshchat/chunks/1.0.0``) over the same kind of libp2p stream, no
   bulk channel (``open_source(bulk=False)``), a window of 32 chunks in flight as the file driver
   keeps, served from memory as bitswap's store does.
3. The same with the bulk channel (``open_source(bulk=True)``).

MB/s for each, every chunk's hash checked by the fetcher. The last line reads
``bitswap_mb_s=… chunks_stream_mb_s=… chunks_bulk_mb_s=…``. Both nodes share one process (and the
machine's two cores), so the figures compare the protocols, not the machine's best.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections import deque

import trio
from libp2p.bitswap import BitswapClient, MemoryBlockStore, compute_cid_v1
from libp2p.peer.id import ID

from meshchat.files.chunks import address_of, cut
from meshchat.files.protocol import ChunkData, Get, decode_reply, encode
from meshchat.identity import Identity
from meshchat.net.chunk_server import open_source
from meshchat.node import Node

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
WINDOW = 32


async def bitswap(provider: Node, fetcher: Node, chunks: list[tuple[bytes, bytes]]) -> float:
    stores = (MemoryBlockStore(), MemoryBlockStore())
    clients = (BitswapClient(provider.host, stores[0]), BitswapClient(fetcher.host, stores[1]))
    async with trio.open_nursery() as nursery:
        for client in clients:
            client.set_nursery(nursery)
            await client.start()
        cids = []
        for _address, data in chunks:
            cid = compute_cid_v1(data)
            await clients[0].add_block(cid, data)
            cids.append(cid)
        session = clients[1].new_session()
        start = time.perf_counter()
        got = await session.get_blocks_batch(cids, peer_id=ID.from_base58(provider.peer_id), timeout=120.0)
        elapsed = time.perf_counter() - start
        assert len(got) == len(chunks), f"bitswap fetched {len(got)} of {len(chunks)} blocks"
        for cid, (address, _data) in zip(cids, chunks, strict=True):
            assert address_of(got[cid]) == address
        for client in clients:
            await client.stop()
        nursery.cancel_scope.cancel()
    return sum(len(d) for _a, d in chunks) / elapsed / 1e6


async def chunk_protocol(
    provider: Node, fetcher: Node, chunks: list[tuple[bytes, bytes]], *, bulk: bool
) -> float:
    held = dict(chunks)
    server = provider.files.driver.server
    server._load_many = lambda batch: [held.get(a) for a in batch]  # type: ignore[method-assign]  # serve from memory, as bitswap does
    start = time.perf_counter()
    channel = await open_source(fetcher.host, provider.peer_id, bulk=bulk)
    wanted = deque(a for a, _d in chunks)
    in_flight: deque[bytes] = deque()
    while wanted or in_flight:
        if wanted and len(in_flight) <= WINDOW // 2:
            batch = [wanted.popleft() for _ in range(min(WINDOW - len(in_flight), len(wanted)))]
            in_flight.extend(batch)
            await channel.send(encode(Get(addresses=tuple(batch))))
        reply = decode_reply(await channel.receive())
        expected = in_flight.popleft()
        assert isinstance(reply, ChunkData) and reply.address == expected == address_of(reply.data)
    await channel.aclose()
    return sum(len(d) for _a, d in chunks) / (time.perf_counter() - start) / 1e6


async def main(mib: int) -> None:
    data = os.urandom(mib * 1024 * 1024)
    key = os.urandom(32)
    chunks = [(c.address, c.ciphertext) for c in cut(io.BytesIO(data), key, len(data))]
    async with (
        Node.open(identity=Identity.generate(), listen=LOCAL, dht=False, inbox=False) as provider,
        Node.open(identity=Identity.generate(), listen=LOCAL, dht=False, inbox=False) as fetcher,
    ):
        await fetcher.connect(provider.listen_addrs[0])
        stream = await chunk_protocol(provider, fetcher, chunks, bulk=False)
        fast = await chunk_protocol(provider, fetcher, chunks, bulk=True)
        swap = await bitswap(provider, fetcher, chunks)
    print(f"{mib} MiB in {len(chunks)} encrypted 256 KiB chunks, both nodes in one process")
    print(f"  bitswap 1.2.0 (py-libp2p)        {swap:8.1f} MB/s")
    print(f"  chunk protocol, libp2p stream    {stream:8.1f} MB/s")
    print(f"  chunk protocol, bulk channel     {fast:8.1f} MB/s")
    print(f"bitswap_mb_s={swap:.1f} chunks_stream_mb_s={stream:.1f} chunks_bulk_mb_s={fast:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32, help="file size in MiB (default 32)")
    trio.run(main, parser.parse_args().mib)
