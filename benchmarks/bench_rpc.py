"""Pubsub RPC codec throughput: meshchat's hand-written codec against the protobuf package.

Run: python benchmarks/bench_rpc.py [--seconds S]

Both sides do the whole job the router pays for: records to bytes (encode) and bytes to records
(decode), including the limit checks. The protobuf side uses the official ``protobuf`` package (its
upb C backend when installed) with the spec's schema (``tests/pubsub_schema.py``, the copy the tests
use too), and converts its message objects to and from ``meshchat.gossip.messages`` records.

Three realistic RPCs, measured in one run and interleaved (rounds of each side alternate; the best
round of each counts, as the machine is noisy):

- ``message``: one StrictNoSign message with a 1 KiB envelope, the common forward;
- ``ihave``: control only, one IHAVE of 50 32-byte ids, the heartbeat gossip;
- ``mixed``: two subscriptions, two 512-byte messages, IHAVE (20 ids), IWANT (5), GRAFT, PRUNE with
  four peer-exchange PeerIds and a backoff, three IDONTWANT.

Ratios are meshchat's rate over protobuf's (above 1: meshchat is faster). The last line reads
``encode_ratio=… decode_ratio=…``: the geometric means over the three RPCs.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import base58
from google.protobuf.internal import api_implementation

from meshchat.errors import DecodeError, TooLarge
from meshchat.gossip.messages import (
    RPC,
    ControlMessage,
    Graft,
    IDontWant,
    IHave,
    IWant,
    PeerInfo,
    Prune,
    PubMessage,
    SubOpts,
)
from meshchat.gossip.rpc import RpcLimits, decode_rpc, encode_rpc
from meshchat.identity import Identity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.pubsub_schema
from tests.pubsub_schema import protobuf_classes

ROUNDS = 12
LIMITS = RpcLimits()

PB = protobuf_classes("bench.pubsub")


@functools.lru_cache(maxsize=4096)
def _peer_bytes(peer_id: str) -> bytes:
    return bytes(base58.b58decode(peer_id))


@functools.lru_cache(maxsize=4096)
def _peer_text(raw: bytes) -> str:
    return str(base58.b58encode(raw).decode("ascii"))


def protobuf_encode(rpc: RPC) -> bytes:
    """Records to bytes through protobuf message objects."""
    out = PB["RPC"]()
    for sub in rpc.subscriptions:
        out.subscriptions.add(subscribe=sub.subscribe, topicid=sub.topic)
    for message in rpc.publish:
        fields = {"data": message.data, "topic": message.topic}
        signed = {
            "from": message.from_peer,
            "seqno": message.seqno,
            "signature": message.signature,
            "key": message.key,
        }
        fields.update((name, value) for name, value in signed.items() if value is not None)
        out.publish.add(**fields)
    if rpc.control is not None:
        control = out.control
        control.SetInParent()
        for ihave in rpc.control.ihave:
            control.ihave.add(topicID=ihave.topic, messageIDs=ihave.message_ids)
        for iwant in rpc.control.iwant:
            control.iwant.add(messageIDs=iwant.message_ids)
        for graft in rpc.control.graft:
            control.graft.add(topicID=graft.topic)
        for prune in rpc.control.prune:
            entry = control.prune.add(topicID=prune.topic)
            for info in prune.peers:
                peer = entry.peers.add()
                if info.peer_id is not None:
                    peer.peerID = _peer_bytes(info.peer_id)
                if info.signed_peer_record is not None:
                    peer.signedPeerRecord = info.signed_peer_record
            if prune.backoff is not None:
                entry.backoff = prune.backoff
        for idontwant in rpc.control.idontwant:
            control.idontwant.add(messageIDs=idontwant.message_ids)
    return bytes(out.SerializeToString())


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _check(count: int, limit: int) -> None:
    if count > limit:
        raise DecodeError("RPC", f"more than {limit}")


def protobuf_control(control: Any) -> ControlMessage:
    """A protobuf ControlMessage as a record, with the same limit checks as the codec."""
    entries = control.ihave, control.iwant, control.graft, control.prune, control.idontwant
    _check(sum(map(len, entries)), LIMITS.max_control_entries)
    for ids_entry in (*control.ihave, *control.iwant, *control.idontwant):
        _check(len(ids_entry.messageIDs), LIMITS.max_ids_per_entry)
    prunes = []
    for prune in control.prune:
        _check(len(prune.peers), LIMITS.max_peers_per_prune)
        peers = tuple(
            PeerInfo(
                peer_id=_peer_text(p.peerID) if p.HasField("peerID") else None,
                signed_peer_record=_optional(p, "signedPeerRecord"),
            )
            for p in prune.peers
        )
        prunes.append(Prune(topic=prune.topicID, peers=peers, backoff=_optional(prune, "backoff")))
    return ControlMessage(
        ihave=tuple(IHave(topic=i.topicID, message_ids=tuple(i.messageIDs)) for i in control.ihave),
        iwant=tuple(IWant(message_ids=tuple(i.messageIDs)) for i in control.iwant),
        graft=tuple(Graft(topic=g.topicID) for g in control.graft),
        prune=tuple(prunes),
        idontwant=tuple(IDontWant(message_ids=tuple(i.messageIDs)) for i in control.idontwant),
    )


def protobuf_decode(data: bytes) -> RPC:
    """Bytes to records through protobuf message objects, with the same limit checks as the codec."""
    if len(data) > LIMITS.max_rpc_size:
        raise TooLarge(what="RPC", size=len(data), limit=LIMITS.max_rpc_size)
    parsed = PB["RPC"].FromString(data)
    _check(len(parsed.subscriptions), LIMITS.max_subscriptions)
    _check(len(parsed.publish), LIMITS.max_messages)
    return RPC(
        subscriptions=tuple(SubOpts(subscribe=s.subscribe, topic=s.topicid) for s in parsed.subscriptions),
        publish=tuple(
            PubMessage(
                topic=m.topic,
                data=m.data,
                from_peer=_optional(m, "from"),
                seqno=_optional(m, "seqno"),
                signature=_optional(m, "signature"),
                key=_optional(m, "key"),
            )
            for m in parsed.publish
        ),
        control=protobuf_control(parsed.control) if parsed.HasField("control") else None,
    )


def sample_rpcs() -> dict[str, RPC]:
    """The three RPCs measured."""
    topic = "/meshchat/inbox/1/shard-0017"
    ids = [bytes([n]) * 32 for n in range(50)]
    peers = tuple(PeerInfo(peer_id=Identity(bytes([n]) * 32).public.peer_id) for n in range(4))
    control = ControlMessage(
        ihave=(IHave(topic=topic, message_ids=tuple(ids[:20])),),
        iwant=(IWant(message_ids=tuple(ids[20:25])),),
        graft=(Graft(topic="/meshchat/group/3f9a"),),
        prune=(Prune(topic="/meshchat/inbox/1/shard-0003", peers=peers, backoff=60),),
        idontwant=tuple(IDontWant(message_ids=(mid,)) for mid in ids[25:28]),
    )
    return {
        "message": RPC(publish=(PubMessage(topic=topic, data=bytes(range(256)) * 4),)),
        "ihave": RPC(control=ControlMessage(ihave=(IHave(topic=topic, message_ids=tuple(ids)),))),
        "mixed": RPC(
            subscriptions=(SubOpts(subscribe=True, topic=topic), SubOpts(subscribe=False, topic="/old")),
            publish=tuple(PubMessage(topic=topic, data=bytes([n]) * 512) for n in range(2)),
            control=control,
        ),
    }


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="total measuring time (default 12)")
    args = parser.parse_args()
    rpcs = sample_rpcs()
    cases: dict[tuple[str, str, str], Callable[[], object]] = {}
    sizes = {}
    for name, rpc in rpcs.items():
        data = encode_rpc(rpc)
        assert data == protobuf_encode(rpc), f"{name}: the two encoders disagree"
        assert decode_rpc(data) == protobuf_decode(data) == rpc, f"{name}: the two decoders disagree"
        sizes[name] = len(data)
        cases[name, "encode", "meshchat"] = functools.partial(encode_rpc, rpc)
        cases[name, "encode", "protobuf"] = functools.partial(protobuf_encode, rpc)
        cases[name, "decode", "meshchat"] = functools.partial(decode_rpc, data)
        cases[name, "decode", "protobuf"] = functools.partial(protobuf_decode, data)
    best = dict.fromkeys(cases, 0.0)
    per_case = args.seconds / (ROUNDS * len(cases))
    for _ in range(ROUNDS):
        for key, fn in cases.items():
            best[key] = max(best[key], rate(fn, per_case))

    print(f"protobuf backend: {api_implementation.Type()}")
    print(f"{'rpc':8s} {'bytes':>6s} {'op':7s} {'codec':9s} {'RPCs/s':>10s} {'MB/s':>8s} {'ratio':>6s}")
    ratios: dict[str, list[float]] = {"encode": [], "decode": []}
    for (name, op, codec), value in best.items():
        ratio = value / best[name, op, "protobuf"]
        if codec == "meshchat":
            ratios[op].append(ratio)
        shown = f"{ratio:6.2f}" if codec == "meshchat" else ""
        mb_per_s = value * sizes[name] / 1e6
        print(f"{name:8s} {sizes[name]:6d} {op:7s} {codec:9s} {value:10,.0f} {mb_per_s:8.1f} {shown}")

    def geomean(values: list[float]) -> float:
        return math.exp(sum(map(math.log, values)) / len(values))

    print(f"encode_ratio={geomean(ratios['encode']):.2f} decode_ratio={geomean(ratios['decode']):.2f}")


if __name__ == "__main__":
    main()
