"""The libp2p pubsub RPC on the wire: protobuf bytes to the records of ``messages.py`` and back.

What it is: the codec for the ``RPC`` protobuf that every pubsub router (floodsub, gossipsub
``/meshsub/1.0.0`` to ``1.2.0``) exchanges, as defined by the libp2p specs ``pubsub/README.md`` ("The
RPC", "The Message"), ``pubsub/gossipsub/gossipsub-v1.0.md`` (IHAVE, IWANT, GRAFT, PRUNE),
``gossipsub-v1.1.md`` (PRUNE peer exchange and backoff, ``PeerInfo``) and ``gossipsub-v1.2.md``
(IDONTWANT); plus the unsigned-varint length prefix that frames each RPC on a pubsub stream
(multiformats unsigned-varint, as go-msgio and it-length-prefixed write it). Field numbers and types
follow what go-libp2p-pubsub and js-libp2p-gossipsub really send: ``Message.from`` and the message ids
are ``bytes`` (the README's older schema says ``string``; the wire bytes are the same).

What it is not: no routing, validation of message contents, signatures or ids (the router and the
envelope layer do that), no I/O (drivers read and write the frames), and no general protobuf library:
it knows exactly this schema.

Encoding is byte-for-byte what the reference protobuf encoder writes for the same message (fields in
field-number order, proto2 optional fields omitted when ``None``), so message ids and sizes agree with
every other implementation; ``rpc_size`` computes that length without building the bytes, for the
simulator's bandwidth accounting. Decoding follows protobuf's rules (unknown fields and fields of an
unexpected wire type are skipped, so newer peers' extensions such as gossipsub v1.3's pass through; a
non-repeated field sent twice keeps its last value, except ``control``, whose occurrences merge) with
three stricter choices: groups (wire types 3 and 4, deprecated since proto2 and in no pubsub schema)
are refused, string fields must be valid UTF-8, and PeerIds in peer exchange must be PeerId multihashes.
Sizes and counts are bounded by ``RpcLimits``, the size before any parsing. Optional fields that the
records model without ``None`` (``SubOpts.subscribe``, the ``topicID`` of IHAVE/GRAFT/PRUNE,
``Message.data``) decode to the protobuf default when absent, as go-libp2p-pubsub's getters do; the
required ``Message.topic`` must be present.

Why hand-written rather than the ``protobuf`` package with the spec's ``rpc.proto``: the router needs
records, not protobuf objects, and with upb's C parser the Python conversion to and from records is
most of protobuf's cost. ``benchmarks/bench_rpc.py`` measures both doing that whole job in one run. On
the development machine (CPython 3.11, protobuf 6.33 with upb, two cores shared with other work, so
+-15% between runs) this codec was mostly faster and never clearly slower: a 1 KiB message 1.4-1.9x
protobuf's encodes per second and 1.1-1.5x its decodes (~800k and ~200k per second), an IHAVE of 50
ids 1.0-1.25x and 1.1-1.45x, a mixed RPC 0.9-1.2x and 1.0-1.35x; geometric means 1.12-1.29 (encode),
1.15-1.37 (decode). Two tricks make it so: ids of one length (hashes) are written with one ``join``
and read with strided slices instead of a Python loop per id, and every tag of this schema is one
byte, read inline. It also enforces the limits while parsing (protobuf would first build every
object) and spares meshchat a compiled runtime dependency and generated code. Per-message size caches
were not worth it: an unsigned message's size is two ``len`` calls and a few comparisons, cheaper than
hashing the record to look it up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import base58

from meshchat.errors import DecodeError, TooLarge
from meshchat.gossip.messages import (
    RPC,
    Choke,
    ControlMessage,
    Graft,
    IDontWant,
    IHave,
    IWant,
    MessageId,
    PeerId,
    PeerInfo,
    Prune,
    PubMessage,
    SubOpts,
    Topic,
    Unchoke,
)

__all__ = [
    "CHOKE_FIELD",
    "DEFAULT_MAX_CONTROL_ENTRIES",
    "DEFAULT_MAX_IDS_PER_ENTRY",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_MAX_PEERS_PER_PRUNE",
    "DEFAULT_MAX_RPC_SIZE",
    "DEFAULT_MAX_SUBSCRIPTIONS",
    "DEFAULT_MAX_TOPIC_LENGTH",
    "MAX_FRAME_PREFIX_BYTES",
    "UNCHOKE_FIELD",
    "FrameDecoder",
    "RpcLimits",
    "decode_rpc",
    "encode_message",
    "encode_rpc",
    "frame",
    "peer_id_bytes",
    "peer_id_text",
    "rpc_size",
]

#: Largest RPC accepted, bytes: go-libp2p-pubsub's ``DefaultMaxMessageSize`` (1 << 20) and the pubsub
#: README's "limited, say to 1 MiB". A meshchat envelope is far smaller; an RPC may batch several.
DEFAULT_MAX_RPC_SIZE = 1 << 20
#: Most messages in one RPC: the largest batch a router sends is its answer to an IWANT, and a peer
#: asks for at most ``max_ihave_length`` ids (5000: gossipsub v1.1's default, go's
#: ``GossipSubMaxIHaveLength``, meshchat's ``GossipConfig``).
DEFAULT_MAX_MESSAGES = 5000
#: Most message ids in one IHAVE, IWANT or IDONTWANT: ``max_ihave_length`` again (5000), the most
#: a router acts on per heartbeat anyway (meshchat's ``max_ihave_length`` and ``max_idontwant_ids``).
DEFAULT_MAX_IDS_PER_ENTRY = 5000
#: Longest topic, UTF-8 bytes. Real topics are short (Ethereum's ``/eth2/<fork>/<name>/ssz_snappy``
#: stay under 64, meshchat's shard topics under 40); 1 KiB leaves room for any naming scheme while a
#: hostile peer cannot make the router keep megabyte-long keys in its per-topic maps.
DEFAULT_MAX_TOPIC_LENGTH = 1024
#: Most subscription changes in one RPC. A peer announces all its topics in its first RPC; a meshchat
#: node is in a handful (its inbox shard, its groups), an Ethereum consensus node in at most a couple of
#: hundred. Bounds the work one RPC costs; what the router keeps per peer has its own, lower bound
#: (``GossipConfig.max_topics_per_peer``), since many RPCs can follow one another.
DEFAULT_MAX_SUBSCRIPTIONS = 1024
#: Most control entries (IHAVE + IWANT + GRAFT + PRUNE + IDONTWANT) in one RPC. Routers send one
#: IHAVE/GRAFT/PRUNE per topic and, like go-libp2p-pubsub, one IDONTWANT per large message, batched.
#: The smallest entry is 2 bytes, so without this bound 1 MiB could become 500,000 Python objects.
DEFAULT_MAX_CONTROL_ENTRIES = 5000
#: Most peers offered in one PRUNE: 8x gossipsub v1.1's default ``PrunePeers`` (16), so peers with a
#: raised setting still interoperate; the router uses at most its own ``prune_peers`` of them.
DEFAULT_MAX_PEERS_PER_PRUNE = 128
#: Longest RPC length prefix, bytes: the multiformats unsigned-varint spec caps varints at 9 bytes (63
#: bits); a 1 MiB limit needs only 3.
MAX_FRAME_PREFIX_BYTES = 9

#: ``ControlMessage`` field numbers of meshchat's CHOKE and UNCHOKE (``meshchat.gossip.choke``). Fields 6-8
#: are taken (gossipsub v1.3 ``extensions``, v1.4 ``preamble``/``imreceiving``) and the older Episub
#: draft's 5 and 6 collide with IDONTWANT and them, so these follow gossipsub v1.3's rule for
#: experimental extensions: numbers above 0x200000, four-byte tags ("MC" 0x4D43 then 1 and 2). Every
#: protobuf decoder skips unknown fields, so a peer without the extension just sees a v1.2 peer.
CHOKE_FIELD, UNCHOKE_FIELD = 0x4D4301, 0x4D4302

# Protobuf wire types (protobuf encoding guide, "Message Structure").
_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
#: A protobuf varint is at most 10 bytes (64 bits, 7 per byte).
_MAX_VARINT_BYTES = 10
#: Tags are 32-bit varints (field number << 3 | wire type), so at most 5 bytes.
_MAX_TAG = (1 << 32) - 1
_U64_MASK = (1 << 64) - 1
#: Fewest ids worth the strided-slice check of ``_Parser._uniform_ids``: below it the loop is cheaper.
_MIN_UNIFORM_IDS = 4
#: PeerIds are multihashes: identity (0x00) of a public key of at most 42 bytes, else sha2-256 (0x12)
#: of 32 bytes (libp2p specs, peer-ids/peer-ids.md, "Peer Ids").
_MULTIHASH_IDENTITY, _MULTIHASH_SHA2_256 = 0x00, 0x12
_MAX_INLINE_KEY = 42
_SHA2_256_SIZE = 32
#: PeerId conversions cached: base58 costs ~10 µs, and the same few dozen peers recur in every PRUNE.
_PEER_ID_CACHE_SIZE = 4096

# Tags (field number << 3 | wire type) of the fields in this schema: all below 0x80, so one byte each.
_F1_LEN, _F2_LEN, _F3_LEN, _F4_LEN, _F5_LEN, _F6_LEN = (n << 3 | _LEN for n in range(1, 7))
_F1_VARINT, _F3_VARINT = 1 << 3 | _VARINT, 3 << 3 | _VARINT
_UNSIGNED = (None, None, None, None)
_ONE_BYTE = tuple(bytes((n,)) for n in range(0x80))
_T1_LEN, _T2_LEN, _T3_LEN, _T4_LEN, _T5_LEN, _T6_LEN = (
    _ONE_BYTE[tag] for tag in (_F1_LEN, _F2_LEN, _F3_LEN, _F4_LEN, _F5_LEN, _F6_LEN)
)
_T3_VARINT = _ONE_BYTE[_F3_VARINT]
_SUBSCRIBE, _UNSUBSCRIBE = _ONE_BYTE[_F1_VARINT] + b"\x01", _ONE_BYTE[_F1_VARINT] + b"\x00"
_CHOKE_TAG, _UNCHOKE_TAG = CHOKE_FIELD << 3 | _LEN, UNCHOKE_FIELD << 3 | _LEN
_LONG_TAG_SIZE = 4  # both tags need four varint bytes (below 1 << 28)


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcLimits:
    """Bounds on what one decoded RPC may contain; see the ``DEFAULT_*`` constants for the reasons."""

    #: Largest encoded RPC, bytes; checked before parsing.
    max_rpc_size: int = DEFAULT_MAX_RPC_SIZE
    #: Most published messages.
    max_messages: int = DEFAULT_MAX_MESSAGES
    #: Most message ids in one IHAVE, IWANT or IDONTWANT.
    max_ids_per_entry: int = DEFAULT_MAX_IDS_PER_ENTRY
    #: Longest topic, UTF-8 bytes.
    max_topic_length: int = DEFAULT_MAX_TOPIC_LENGTH
    #: Most subscription changes.
    max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    #: Most control entries of all kinds together.
    max_control_entries: int = DEFAULT_MAX_CONTROL_ENTRIES
    #: Most peers offered in one PRUNE.
    max_peers_per_prune: int = DEFAULT_MAX_PEERS_PER_PRUNE

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"RpcLimits.{name} must be a non-negative integer, not {value!r}")


_DEFAULT_LIMITS = RpcLimits()


# ---------------------------------------------------------------------------------------------- sizes


def _varint_size(value: int) -> int:
    if value < 0x80:
        return 1
    if value < 0x4000:
        return 2
    return (value.bit_length() + 6) // 7


def _len_field_size(length: int) -> int:
    """A length-delimited field with a one-byte tag."""
    return 1 + (1 if length < 0x80 else _varint_size(length)) + length


def _text_size(text: str) -> int:
    return _len_field_size(len(text) if text.isascii() else len(text.encode()))


def _message_size(message: PubMessage) -> int:
    size = _len_field_size(len(message.data)) + _text_size(message.topic)
    if message.from_peer is not None:
        size += _len_field_size(len(message.from_peer))
    if message.seqno is not None:
        size += _len_field_size(len(message.seqno))
    if message.signature is not None:
        size += _len_field_size(len(message.signature))
    if message.key is not None:
        size += _len_field_size(len(message.key))
    return size


def _ids_size(ids: tuple[MessageId, ...]) -> int:
    lengths = set(map(len, ids))
    if len(lengths) == 1 and (length := lengths.pop()) < 0x80:  # the usual case: ids of one hash
        return len(ids) * (2 + length)
    return sum([_len_field_size(len(mid)) for mid in ids])


def _prune_size(prune: Prune) -> int:
    size = _text_size(prune.topic)
    for info in prune.peers:
        inner = 0
        if info.peer_id is not None:
            inner += _len_field_size(len(_peer_id_bytes(info.peer_id)))
        if info.signed_peer_record is not None:
            inner += _len_field_size(len(info.signed_peer_record))
        size += _len_field_size(inner)
    if prune.backoff is not None:
        size += 1 + _varint_size(prune.backoff)
    return size


def _control_size(control: ControlMessage) -> int:
    size = 0
    for ihave in control.ihave:
        size += _len_field_size(_text_size(ihave.topic) + _ids_size(ihave.message_ids))
    for iwant in control.iwant:
        size += _len_field_size(_ids_size(iwant.message_ids))
    for graft in control.graft:
        size += _len_field_size(_text_size(graft.topic))
    for prune in control.prune:
        size += _len_field_size(_prune_size(prune))
    for idontwant in control.idontwant:
        size += _len_field_size(_ids_size(idontwant.message_ids))
    for topic in [entry.topic for entry in control.choke] + [entry.topic for entry in control.unchoke]:
        size += _LONG_TAG_SIZE - 1 + _len_field_size(_text_size(topic))
    return size


def rpc_size(rpc: RPC) -> int:
    """The exact length of ``encode_rpc(rpc)``, bytes, computed without encoding."""
    size = 0
    for sub in rpc.subscriptions:
        size += _len_field_size(2 + _text_size(sub.topic))  # "subscribe" is a tag and one byte
    for message in rpc.publish:
        size += _len_field_size(_message_size(message))
    if rpc.control is not None:
        size += _len_field_size(_control_size(rpc.control))
    return size


# -------------------------------------------------------------------------------------------- encoding


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_CHOKE_TAG_BYTES, _UNCHOKE_TAG_BYTES = _varint(_CHOKE_TAG), _varint(_UNCHOKE_TAG)


def _len_field(tag: bytes, payload: bytes) -> bytes:
    length = len(payload)
    return tag + (_ONE_BYTE[length] if length < 0x80 else _varint(length)) + payload


def _encode_message(message: PubMessage) -> bytes:
    signed = message.from_peer, message.seqno, message.signature, message.key
    if signed == _UNSIGNED:  # StrictNoSign: topic and data only
        return _len_field(_T2_LEN, message.data) + _len_field(_T4_LEN, message.topic.encode())
    parts = []
    if message.from_peer is not None:
        parts.append(_len_field(_T1_LEN, message.from_peer))
    parts.append(_len_field(_T2_LEN, message.data))
    if message.seqno is not None:
        parts.append(_len_field(_T3_LEN, message.seqno))
    parts.append(_len_field(_T4_LEN, message.topic.encode()))
    if message.signature is not None:
        parts.append(_len_field(_T5_LEN, message.signature))
    if message.key is not None:
        parts.append(_len_field(_T6_LEN, message.key))
    return b"".join(parts)


def encode_message(message: PubMessage) -> bytes:
    """The protobuf ``Message`` alone, as pubsub signatures sign it (without ``signature``/``key``)."""
    return _encode_message(message)


def _encode_ids(tag: bytes, ids: tuple[MessageId, ...]) -> bytes:
    if len(ids) == 1:  # IDONTWANT is sent one id at a time
        return _len_field(tag, ids[0])
    lengths = set(map(len, ids))
    if len(lengths) == 1 and (length := lengths.pop()) < 0x80:  # the usual case: ids of one hash
        prefix = tag + _ONE_BYTE[length]
        return prefix + prefix.join(ids)
    return b"".join([_len_field(tag, mid) for mid in ids])


def _encode_peer_info(info: PeerInfo) -> bytes:
    peer = b"" if info.peer_id is None else _len_field(_T1_LEN, _peer_id_bytes(info.peer_id))
    if info.signed_peer_record is None:
        return peer
    return peer + _len_field(_T2_LEN, info.signed_peer_record)


def _encode_prune(prune: Prune) -> bytes:
    parts = [_len_field(_T1_LEN, prune.topic.encode())]
    parts += [_len_field(_T2_LEN, _encode_peer_info(info)) for info in prune.peers]
    if prune.backoff is not None:
        if not 0 <= prune.backoff <= _U64_MASK:
            raise ValueError(f"PRUNE backoff {prune.backoff} does not fit a uint64")
        parts.append(_T3_VARINT + _varint(prune.backoff))
    return b"".join(parts)


def _encode_choke(tag: bytes, topic: Topic) -> bytes:
    return _len_field(tag, _len_field(_T1_LEN, topic.encode()))


def _encode_control(control: ControlMessage) -> bytes:
    parts = []
    for ihave in control.ihave:
        inner = _len_field(_T1_LEN, ihave.topic.encode()) + _encode_ids(_T2_LEN, ihave.message_ids)
        parts.append(_len_field(_T1_LEN, inner))
    if control.iwant:
        parts += [_len_field(_T2_LEN, _encode_ids(_T1_LEN, iwant.message_ids)) for iwant in control.iwant]
    if control.graft:
        parts += [_len_field(_T3_LEN, _len_field(_T1_LEN, graft.topic.encode())) for graft in control.graft]
    if control.prune:
        parts += [_len_field(_T4_LEN, _encode_prune(prune)) for prune in control.prune]
    if control.idontwant:
        parts += [_len_field(_T5_LEN, _encode_ids(_T1_LEN, d.message_ids)) for d in control.idontwant]
    if control.choke:
        parts += [_encode_choke(_CHOKE_TAG_BYTES, entry.topic) for entry in control.choke]
    if control.unchoke:
        parts += [_encode_choke(_UNCHOKE_TAG_BYTES, entry.topic) for entry in control.unchoke]
    return b"".join(parts)


def encode_rpc(rpc: RPC) -> bytes:
    """The protobuf encoding of ``rpc``, as the reference encoder writes it.

    Raises ``ValueError`` (the caller's mistake) for a PeerId that is not PeerId text, a backoff
    outside uint64 or a topic that is not encodable as UTF-8 (lone surrogates).
    """
    parts = []
    for sub in rpc.subscriptions:
        flag = _SUBSCRIBE if sub.subscribe else _UNSUBSCRIBE
        parts.append(_len_field(_T1_LEN, flag + _len_field(_T2_LEN, sub.topic.encode())))
    if rpc.publish:
        parts += [_len_field(_T2_LEN, _encode_message(message)) for message in rpc.publish]
    if rpc.control is not None:
        parts.append(_len_field(_T3_LEN, _encode_control(rpc.control)))
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------- PeerIds


def _is_peer_id(raw: bytes) -> bool:
    # Both multihash header varints are single bytes for the two codes and lengths allowed.
    if len(raw) < 2:
        return False
    code, length = raw[0], raw[1]
    if code == _MULTIHASH_IDENTITY:
        return 0 < length <= _MAX_INLINE_KEY and len(raw) == 2 + length
    return code == _MULTIHASH_SHA2_256 and length == _SHA2_256_SIZE and len(raw) == 2 + length


@functools.lru_cache(maxsize=_PEER_ID_CACHE_SIZE)
def _peer_id_bytes(peer_id: PeerId) -> bytes:
    """The binary PeerId under a PeerId text; ``ValueError`` if it is not one, in canonical form."""
    try:
        raw = bytes(base58.b58decode(peer_id.encode("ascii")))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"{peer_id!r} is not PeerId text (base58btc)") from exc
    if not _is_peer_id(raw) or base58.b58encode(raw).decode("ascii") != peer_id:
        raise ValueError(f"{peer_id!r} is not a canonical PeerId")
    return raw


@functools.lru_cache(maxsize=_PEER_ID_CACHE_SIZE)
def _peer_id_text(raw: bytes) -> PeerId:
    if not _is_peer_id(raw):
        raise DecodeError("RPC", "PRUNE offers a PeerId that is not an identity or sha2-256 multihash")
    return str(base58.b58encode(raw).decode("ascii"))


def peer_id_bytes(peer_id: PeerId) -> bytes:
    """The binary PeerId (a multihash) under canonical PeerId text; ``ValueError`` otherwise."""
    return _peer_id_bytes(peer_id)


def peer_id_text(raw: bytes) -> PeerId:
    """The canonical text of a binary PeerId; ``DecodeError`` if it is not an identity/sha2-256 multihash."""
    return _peer_id_text(raw)


# ------------------------------------------------------------------------------------------------ framing


def frame(data: bytes) -> bytes:
    """``data`` behind its unsigned-varint length, as one RPC travels on a pubsub stream."""
    return _varint(len(data)) + data


class FrameDecoder:
    """Splits a pubsub stream into its length-prefixed RPCs, whatever the chunking of the reads.

    A length above ``max_frame_size`` raises ``TooLarge`` as soon as the prefix is complete, before the
    body is waited for; a prefix longer than ``MAX_FRAME_PREFIX_BYTES`` or not in its shortest form
    raises ``DecodeError``. After either, the stream cannot be resynchronised: every later ``feed``
    raises the same error, and the driver should reset the stream.
    """

    __slots__ = ("_buffer", "_error", "_max_frame_size")

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_RPC_SIZE) -> None:
        self._buffer = bytearray()
        self._max_frame_size = max_frame_size
        self._error: DecodeError | None = None

    @property
    def pending(self) -> bool:
        """True while part of a frame has been fed and the rest has not (a stream stalled mid-frame)."""
        return bool(self._buffer)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes read from the stream; return every frame they complete, in order."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += chunk
        frames: list[bytes] = []
        pos = 0
        try:
            while (header := self._read_prefix(pos)) is not None:
                body, length = header
                if len(buffer) - body < length:
                    break
                frames.append(bytes(buffer[body : body + length]))
                pos = body + length
        except DecodeError as exc:
            self._error = exc
            raise
        finally:
            del buffer[:pos]
        return frames

    def _read_prefix(self, pos: int) -> tuple[int, int] | None:
        """(start of the body, its length) of the frame at ``pos``, or None if the prefix is incomplete."""
        buffer, length, shift = self._buffer, 0, 0
        for index in range(pos, min(len(buffer), pos + MAX_FRAME_PREFIX_BYTES)):
            byte = buffer[index]
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                if byte == 0 and index > pos:
                    raise DecodeError("RPC frame", "length prefix is not in its shortest form")
                if length > self._max_frame_size:
                    raise TooLarge(what="RPC frame", size=length, limit=self._max_frame_size)
                return index + 1, length
        if len(buffer) - pos >= MAX_FRAME_PREFIX_BYTES:
            raise DecodeError("RPC frame", f"length prefix longer than {MAX_FRAME_PREFIX_BYTES} bytes")
        return None


# --------------------------------------------------------------------------------------------- decoding


def decode_rpc(data: bytes | bytearray | memoryview, *, limits: RpcLimits = _DEFAULT_LIMITS) -> RPC:
    """The RPC encoded in ``data``: ``TooLarge`` past ``limits.max_rpc_size`` (before parsing),
    ``DecodeError`` for anything malformed or beyond the other limits, never another exception."""
    if len(data) > limits.max_rpc_size:
        raise TooLarge(what="RPC", size=len(data), limit=limits.max_rpc_size)
    return _Parser(bytes(data), limits).rpc()


def _truncated() -> DecodeError:
    return DecodeError("RPC", "truncated: a field runs past the end of its message")


class _Parser:
    """One RPC being decoded. Each method parses one message type from ``data[pos:end]``.

    Every loop reads its tag inline when it is one byte in 8..127 (every tag of this schema is) and
    dispatches on the tag value; ``_long_tag`` decodes the others, so a tag written in more bytes than
    needed still means its field, as protobuf reads it.
    """

    __slots__ = ("_control_entries", "_data", "_limits")

    def __init__(self, data: bytes, limits: RpcLimits) -> None:
        self._data = data
        self._limits = limits
        self._control_entries = 0

    def _varint(self, pos: int, end: int) -> tuple[int, int]:
        """(value, next position) of the varint at ``pos``; 64-bit wrap-around as protobuf does."""
        data, value, shift = self._data, 0, 0
        if pos < end and (byte := data[pos]) < 0x80:  # booleans, short backoffs
            return byte, pos + 1
        for index in range(pos, min(end, pos + _MAX_VARINT_BYTES)):
            byte = data[index]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value & _U64_MASK, index + 1
            shift += 7
        if end - pos >= _MAX_VARINT_BYTES:
            raise DecodeError("RPC", f"varint longer than {_MAX_VARINT_BYTES} bytes")
        raise _truncated()

    def _long_tag(self, pos: int, end: int) -> tuple[int, int]:
        """(tag, next position) of a tag that is not a single byte in 8..127."""
        tag, after = self._varint(pos, end)
        if tag > _MAX_TAG:
            raise DecodeError("RPC", "field tag does not fit 32 bits")
        if tag < 8:
            raise DecodeError("RPC", "field number 0")
        return tag, after

    def _span(self, pos: int, end: int) -> tuple[int, int]:
        """(start, stop) of the length-delimited value whose length is at ``pos``."""
        data = self._data
        if pos < end and (first := data[pos]) < 0x80:  # lengths up to 127: ids, topics, keys
            start, stop = pos + 1, pos + 1 + first
        elif pos + 1 < end and (second := data[pos + 1]) < 0x80:  # up to 16 KiB: messages
            start, stop = pos + 2, pos + 2 + (first & 0x7F | second << 7)
        else:
            length, start = self._varint(pos, end)
            stop = start + length
        if stop > end:
            raise _truncated()
        return start, stop

    def _skip(self, tag: int, pos: int, end: int) -> int:
        """Position after the value of a field this schema does not have (protobuf ignores those)."""
        wire_type = tag & 7
        if wire_type == _VARINT:
            return self._varint(pos, end)[1]
        if wire_type == _LEN:
            return self._span(pos, end)[1]
        if wire_type in (_I64, _I32):
            stop = pos + (8 if wire_type == _I64 else 4)
            if stop > end:
                raise _truncated()
            return stop
        if wire_type in (_SGROUP, _EGROUP):
            raise DecodeError("RPC", "protobuf groups (wire types 3, 4) are not accepted")
        raise DecodeError("RPC", f"invalid wire type {wire_type}")

    def _text(self, start: int, stop: int) -> Topic:
        if stop - start > self._limits.max_topic_length:
            raise TooLarge(what="topic", size=stop - start, limit=self._limits.max_topic_length)
        try:
            return self._data[start:stop].decode()
        except UnicodeDecodeError as exc:
            raise DecodeError("RPC", "a topic is not valid UTF-8") from exc

    def rpc(self) -> RPC:
        data, limits, end, pos = self._data, self._limits, len(self._data), 0
        subscriptions: list[SubOpts] = []
        publish: list[PubMessage] = []
        control: _ControlLists | None = None
        while pos < end:
            tag = data[pos]
            if 8 <= tag < 0x80:
                pos += 1
            else:
                tag, pos = self._long_tag(pos, end)
            if tag not in (_F1_LEN, _F2_LEN, _F3_LEN):
                pos = self._skip(tag, pos, end)
                continue
            start, pos = self._span(pos, end)
            if tag == _F1_LEN:
                subscriptions.append(self._subopts(start, pos))
                if len(subscriptions) > limits.max_subscriptions:
                    raise _too_many(limits.max_subscriptions, "subscriptions")
            elif tag == _F2_LEN:
                publish.append(self._message(start, pos))
                if len(publish) > limits.max_messages:
                    raise _too_many(limits.max_messages, "messages")
            else:  # protobuf merges repeated occurrences of a message field: one set of lists for all
                control = control or _ControlLists()
                self._control(start, pos, control)
        return RPC(
            subscriptions=tuple(subscriptions),
            publish=tuple(publish),
            control=None if control is None else control.freeze(),
        )

    def _subopts(self, pos: int, end: int) -> SubOpts:
        data, subscribe, topic = self._data, False, ""
        while pos < end:
            tag = data[pos]
            if 8 <= tag < 0x80:
                pos += 1
            else:
                tag, pos = self._long_tag(pos, end)
            if tag == _F1_VARINT:
                value, pos = self._varint(pos, end)
                subscribe = value != 0
            elif tag == _F2_LEN:
                start, pos = self._span(pos, end)
                topic = self._text(start, pos)
            else:
                pos = self._skip(tag, pos, end)
        return SubOpts(subscribe=subscribe, topic=topic)

    def _message(self, pos: int, end: int) -> PubMessage:
        data = self._data
        found: list[bytes | None] = [None] * 7  # by field number; 4, the topic, is text
        topic: Topic | None = None
        while pos < end:
            tag = data[pos]
            if 8 <= tag < 0x80:
                pos += 1
            else:
                tag, pos = self._long_tag(pos, end)
            if tag & 7 != _LEN or not _F1_LEN <= tag <= _F6_LEN:
                pos = self._skip(tag, pos, end)
                continue
            start, pos = self._span(pos, end)
            if tag == _F4_LEN:
                topic = self._text(start, pos)
            else:
                found[tag >> 3] = data[start:pos]
        if topic is None:
            raise DecodeError("RPC", "a message has no topic (a required field)")
        return PubMessage(
            topic=topic,
            data=found[2] or b"",
            from_peer=found[1],
            seqno=found[3],
            signature=found[5],
            key=found[6],
        )

    def _uniform_ids(self, pos: int, end: int, tag: int) -> list[MessageId] | None:
        """The ids filling ``data[pos:end]`` if all are fields ``tag`` of one length below 128, else None.

        Ids are hashes of one size, so this is the usual case; strided slices check every tag and
        length byte at C speed, where a field-by-field loop would cost a Python iteration each.
        """
        data = self._data
        if end - pos < 2 or (length := data[pos + 1]) >= 0x80:
            return None
        stride = length + 2
        count, rest = divmod(end - pos, stride)
        if rest or count < _MIN_UNIFORM_IDS or data[pos:end:stride] != _ONE_BYTE[tag] * count:
            return None
        if data[pos + 1 : end : stride] != _ONE_BYTE[length] * count:
            return None
        return [data[start : start + length] for start in range(pos + 2, pos + 2 + count * stride, stride)]

    def _ids(self, pos: int, end: int, id_tag: int) -> tuple[Topic, tuple[MessageId, ...]]:
        """An IHAVE (topic in field 1, ids in field 2) or an IWANT/IDONTWANT (ids in field 1)."""
        data, limit = self._data, self._limits.max_ids_per_entry
        topic, tried_uniform = "", False
        ids: list[MessageId] = []
        while pos < end and len(ids) <= limit:
            tag = data[pos]
            if tag == id_tag and not tried_uniform:  # once only, so a hostile list stays linear
                tried_uniform = True
                if (uniform := self._uniform_ids(pos, end, id_tag)) is not None:
                    ids += uniform
                    break
            if 8 <= tag < 0x80:
                pos += 1
            else:
                tag, pos = self._long_tag(pos, end)
            if tag == id_tag:
                start, pos = self._span(pos, end)
                ids.append(data[start:pos])
            elif tag == _F1_LEN:  # the topic of an IHAVE
                start, pos = self._span(pos, end)
                topic = self._text(start, pos)
            else:
                pos = self._skip(tag, pos, end)
        if len(ids) > limit:
            raise _too_many(limit, "message ids in one control entry")
        return topic, tuple(ids)

    def _topic_only(self, pos: int, end: int) -> Topic:
        data, topic = self._data, ""
        while pos < end:
            tag = data[pos]
            if 8 <= tag < 0x80:
                pos += 1
            else:
                tag, pos = self._long_tag(pos, end)
            if tag == _F1_LEN:
                start, pos = self._span(pos, end)
                topic = self._text(start, pos)
            else:
                pos = self._skip(tag, pos, end)
        return topic

    def _control(self, pos: int, end: int, lists: _ControlLists) -> None:
        data, limit = self._data, self._limits.max_control_entries
        while pos < end:
            tag = data[pos]
            if 8 <= tag < 0x80:
                pos += 1
            else:
                tag, pos = self._long_tag(pos, end)
            if tag & 7 != _LEN or not (_F1_LEN <= tag <= _F5_LEN or tag in (_CHOKE_TAG, _UNCHOKE_TAG)):
                pos = self._skip(tag, pos, end)
                continue
            start, pos = self._span(pos, end)
            self._control_entries += 1
            if self._control_entries > limit:
                raise _too_many(limit, "control entries")
            if tag == _F1_LEN:
                topic, ids = self._ids(start, pos, _F2_LEN)
                lists.ihave.append(IHave(topic=topic, message_ids=ids))
            elif tag == _F2_LEN:
                lists.iwant.append(IWant(message_ids=self._ids(start, pos, _F1_LEN)[1]))
            elif tag == _F3_LEN:
                lists.graft.append(Graft(topic=self._topic_only(start, pos)))
            elif tag == _F4_LEN:
                lists.prune.append(self._prune(start, pos))
            elif tag == _F5_LEN:
                lists.idontwant.append(IDontWant(message_ids=self._ids(start, pos, _F1_LEN)[1]))
            elif tag == _CHOKE_TAG:
                lists.choke.append(Choke(topic=self._topic_only(start, pos)))
            else:
                lists.unchoke.append(Unchoke(topic=self._topic_only(start, pos)))

    def _prune(self, pos: int, end: int) -> Prune:
        data, limit = self._data, self._limits.max_peers_per_prune
        topic, peers, backoff = "", [], None
        while pos < end:
            tag = data[pos]
            if 8 <= tag < 0x80:
                pos += 1
            else:
                tag, pos = self._long_tag(pos, end)
            if tag == _F1_LEN:
                start, pos = self._span(pos, end)
                topic = self._text(start, pos)
            elif tag == _F2_LEN:
                start, pos = self._span(pos, end)
                peers.append(self._peer_info(start, pos))
                if len(peers) > limit:
                    raise _too_many(limit, "peers in one PRUNE")
            elif tag == _F3_VARINT:
                backoff, pos = self._varint(pos, end)
            else:
                pos = self._skip(tag, pos, end)
        return Prune(topic=topic, peers=tuple(peers), backoff=backoff)

    def _peer_info(self, pos: int, end: int) -> PeerInfo:
        data = self._data
        peer_id: bytes | None = None
        record: bytes | None = None
        while pos < end:
            tag = data[pos]
            if 8 <= tag < 0x80:
                pos += 1
            else:
                tag, pos = self._long_tag(pos, end)
            if tag == _F1_LEN:
                start, pos = self._span(pos, end)
                peer_id = data[start:pos]
            elif tag == _F2_LEN:
                start, pos = self._span(pos, end)
                record = data[start:pos]
            else:
                pos = self._skip(tag, pos, end)
        text = None if peer_id is None else _peer_id_text(peer_id)  # checked last: the last value counts
        return PeerInfo(peer_id=text, signed_peer_record=record)


def _too_many(limit: int, what: str) -> DecodeError:
    return DecodeError("RPC", f"more than {limit:,} {what}")


class _ControlLists:
    """The entries of every ``control`` field of one RPC, merged as protobuf merges them."""

    __slots__ = ("choke", "graft", "idontwant", "ihave", "iwant", "prune", "unchoke")

    def __init__(self) -> None:
        self.ihave: list[IHave] = []
        self.iwant: list[IWant] = []
        self.graft: list[Graft] = []
        self.prune: list[Prune] = []
        self.idontwant: list[IDontWant] = []
        self.choke: list[Choke] = []
        self.unchoke: list[Unchoke] = []

    def freeze(self) -> ControlMessage:
        return ControlMessage(
            ihave=tuple(self.ihave),
            iwant=tuple(self.iwant),
            graft=tuple(self.graft),
            prune=tuple(self.prune),
            idontwant=tuple(self.idontwant),
            choke=tuple(self.choke),
            unchoke=tuple(self.unchoke),
        )
