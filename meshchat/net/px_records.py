"""Signed peer records in gossipsub peer exchange, both ways (found with the bootstraps blocked).

What it is: the gossip driver's two small edges of peer exchange (gossipsub v1.1 PX). The router
(sans-IO) names the peers a PRUNE offers by PeerId only; an offered PeerId is of no use to a node that
has no address for it, which is exactly the node whose bootstrap peers a censor blocks. So:

- ``with_records``: before a PRUNE that offers peers goes out, each offered peer gets the signed peer
  record (``libp2p-peer-record`` envelope, RFC 0003) the host's peerstore holds for it (learned through
  identify, which py-libp2p's hosts exchange on every connection), as go-libp2p-pubsub does;
- ``consume_record``: a record received with an offer is checked (its signature, and that it is the
  offered peer's: py-libp2p's ``consume_peer_record``) and its addresses go into the peerstore, so the
  dial that follows has somewhere to go.

Before, the driver dialled an offered peer only if the peerstore already knew it, so peer exchange
never introduced a node to anyone new.

What it is not: a decision to accept peer exchange (the router's ``accept_px_threshold`` decides, by
the pruning peer's score) or to dial (the router's ``Dial`` action).
"""

from __future__ import annotations

import dataclasses

from google.protobuf.message import DecodeError as ProtobufDecodeError
from libp2p.abc import IPeerStore
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PEER_RECORD_ENVELOPE_DOMAIN

from meshchat.gossip.messages import RPC, PeerId, PeerInfo

__all__ = ["MAX_RECORD_BYTES", "RECORD_TTL", "consume_record", "with_records"]

#: Seconds the addresses of an offered peer stay in the peerstore: long enough for the dial that follows
#: (py-libp2p's ``connect`` keeps what it dials 120 s too).
RECORD_TTL = 120
#: Largest signed record taken from an offer: a record with a handful of addresses is ~200-400 bytes
#: (a key, a sequence number, the addresses, a signature); the RPC decoder's limits bound the rest.
MAX_RECORD_BYTES = 4096


def with_records(rpc: RPC, store: IPeerStore) -> RPC:
    """``rpc`` with the signed peer record of every peer its PRUNEs offer, where the peerstore has one."""
    control = rpc.control
    if control is None or not any(p.peers for p in control.prune):
        return rpc
    prunes = tuple(
        dataclasses.replace(prune, peers=tuple(_with_record(info, store) for info in prune.peers))
        for prune in control.prune
    )
    return dataclasses.replace(rpc, control=dataclasses.replace(control, prune=prunes))


def _with_record(info: PeerInfo, store: IPeerStore) -> PeerInfo:
    if info.peer_id is None or info.signed_peer_record is not None:
        return info
    try:
        envelope = store.get_peer_record(ID.from_base58(info.peer_id))
    except ValueError:  # not a PeerId we could have a record for
        return info
    if envelope is None:
        return info
    return dataclasses.replace(info, signed_peer_record=envelope.marshal_envelope())


def consume_record(store: IPeerStore, peer: PeerId, record: bytes | None) -> bool:
    """Put the addresses of ``record`` (offered for ``peer``) into ``store``; whether it was taken (a
    record that is missing, too large, badly signed or someone else's is not)."""
    if record is None or len(record) > MAX_RECORD_BYTES:
        return False
    try:
        envelope, peer_record = consume_envelope(record, PEER_RECORD_ENVELOPE_DOMAIN)
        if peer_record.peer_id != ID.from_base58(peer):
            return False
    except (ProtobufDecodeError, ValueError, TypeError, KeyError):  # undecodable, or a bad signature
        return False
    return store.consume_peer_record(envelope, RECORD_TTL)
