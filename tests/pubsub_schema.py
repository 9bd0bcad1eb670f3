"""The libp2p pubsub protobuf schema, the one copy the tests and the benchmark build classes from.

``pubsub/README.md`` ("The RPC", "The Message") plus gossipsub v1.1 (``PeerInfo``, PRUNE ``backoff``)
and v1.2 (IDONTWANT), with ``Message.from`` and the message ids as ``bytes`` as go-libp2p-pubsub's and
js-libp2p-gossipsub's ``rpc.proto`` declare them. ``protobuf_classes`` turns it into message classes of
the official ``protobuf`` package at run time from a ``FileDescriptorProto``: no protoc, no generated
code. ``tests/test_rpc.py`` checks meshchat's codec against these classes; ``benchmarks/bench_rpc.py``
times the two against each other.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["SCHEMA", "protobuf_classes"]

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP, _REQ = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED, _F.LABEL_REQUIRED
_BOOL, _STR, _BYTES, _U64 = _F.TYPE_BOOL, _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_UINT64

#: Message -> its fields as (name, number, label, type); a ``str`` type names another message.
SCHEMA: dict[str, list[tuple[str, int, int, int | str]]] = {
    "RPC": [
        ("subscriptions", 1, _REP, "SubOpts"),
        ("publish", 2, _REP, "Message"),
        ("control", 3, _OPT, "ControlMessage"),
    ],
    "SubOpts": [("subscribe", 1, _OPT, _BOOL), ("topicid", 2, _OPT, _STR)],
    "Message": [
        ("from", 1, _OPT, _BYTES),
        ("data", 2, _OPT, _BYTES),
        ("seqno", 3, _OPT, _BYTES),
        ("topic", 4, _REQ, _STR),
        ("signature", 5, _OPT, _BYTES),
        ("key", 6, _OPT, _BYTES),
    ],
    "ControlMessage": [
        ("ihave", 1, _REP, "ControlIHave"),
        ("iwant", 2, _REP, "ControlIWant"),
        ("graft", 3, _REP, "ControlGraft"),
        ("prune", 4, _REP, "ControlPrune"),
        ("idontwant", 5, _REP, "ControlIDontWant"),
    ],
    "ControlIHave": [("topicID", 1, _OPT, _STR), ("messageIDs", 2, _REP, _BYTES)],
    "ControlIWant": [("messageIDs", 1, _REP, _BYTES)],
    "ControlGraft": [("topicID", 1, _OPT, _STR)],
    "ControlPrune": [("topicID", 1, _OPT, _STR), ("peers", 2, _REP, "PeerInfo"), ("backoff", 3, _OPT, _U64)],
    "PeerInfo": [("peerID", 1, _OPT, _BYTES), ("signedPeerRecord", 2, _OPT, _BYTES)],
    "ControlIDontWant": [("messageIDs", 1, _REP, _BYTES)],
}


def protobuf_classes(package: str) -> dict[str, Any]:
    """The schema's message classes, by message name, in a pool of their own under ``package``."""
    file = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto2")
    for name, fields in SCHEMA.items():
        message = file.message_type.add(name=name)
        for field_name, number, label, kind in fields:
            field = message.field.add(name=field_name, number=number, label=label)
            if isinstance(kind, str):
                field.type, field.type_name = _F.TYPE_MESSAGE, f".{package}.{kind}"
            else:
                field.type = kind
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
        for name in SCHEMA
    }
