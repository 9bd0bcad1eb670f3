"""The decoders ``scripts/fuzz.py`` fuzzes: each with seeds made by the real encoders, and a check.

A target's ``check(data)`` runs what a receiver runs on bytes (or text) from a peer: the decoder, and
for signed or authenticated objects the verification too. It returns the verified content (something
hashable a receiver would act on) or raises. Text decoders see ``data`` decoded as UTF-8 with
replacement characters (what arrives as text has been decoded so; the mutator works on the bytes).

Seeds are deterministic (a counter stands in for randomness) except the X3DH set-up headers
(``x3dh_header``, ``session_message``): ML-KEM encapsulation draws its own randomness, so their
reproducers replay only in the process that found them.

Not targets, and why: local state read back from our own sqlite (``Ratchet.decode``,
``PeerSessions.decode``, ``Prekeys.decode``, ``SenderChain.from_bytes``, ``ReceiverChain.from_bytes``,
``decode_pending``): written by this node only, never by a peer; key files (their own tests).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.bindings as sodium

from meshchat.crypto import open_envelope, seal
from meshchat.crypto.seal import _key as seal_key
from meshchat.errors import MeshchatError
from meshchat.files import manifest as file_manifest
from meshchat.files import protocol as file_protocol
from meshchat.files.chunks import CHUNK_SIZE, index_chunk_count
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
from meshchat.gossip.rpc import FrameDecoder, decode_rpc, encode_rpc, frame
from meshchat.gossip.signing import MessageSigner, signature_problem
from meshchat.groups import chains as group_chains
from meshchat.groups import ops as group_ops
from meshchat.groups import payload as group_payload
from meshchat.groups.seal import open_group, seal_group
from meshchat.identity import Identity, KeyCache
from meshchat.sessions.prekeys import PrekeyBundle, Prekeys
from meshchat.sessions.session import PeerSessions
from meshchat.sessions.x3dh import InitHeader
from meshchat.store import payload as store_payload
from meshchat.store import protocol as mailbox
from meshchat.store import reconcile
from meshchat.wire import Invite, decode_envelope, encode_envelope

#: A fixed "now" for every seed and check (unix seconds), so expiry never moves under a run.
NOW = 1_800_000_000.0
ALICE = Identity(bytes([0xA1]) * 32)
BOB = Identity(bytes([0xB0]) * 32)
CAROL = Identity(bytes([0xC0]) * 32)
#: A credential request nonce: base64url of 16 bytes.
NONCE = base64.urlsafe_b64encode(bytes(range(16))).rstrip(b"=").decode()


def counter_bytes(start: int = 0) -> Callable[[int], bytes]:
    """Deterministic 'random' bytes: each call's bytes differ (a counter hashed)."""
    numbers = itertools.count(start)

    def draw(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(next(numbers).to_bytes(8, "big")).digest()
        return out[:n]

    return draw


@dataclass(frozen=True, slots=True)
class Target:
    """One decoder under fuzz."""

    name: str
    about: str
    seeds: tuple[bytes, ...]
    check: Callable[[bytes], object]
    #: Whether acceptance means "authentic" (then a mutated input accepted with new content is a forgery).
    signed: bool = False
    #: The exception types that are a typed refusal (anything else is a finding).
    typed: tuple[type[BaseException], ...] = (MeshchatError,)
    #: The verified contents of the seeds (filled in by ``build_targets``).
    seed_contents: frozenset[object] = field(default=frozenset())
    #: Contents are frozensets of separately signed items: a forgery is an item no seed has.
    items: bool = False
    #: Inner encodings the mutator may open, mutate inside and close again.
    layers: tuple[Layer, ...] = ()


#: ``layer(seed, rng)``: ``(inner bytes, rebuild)`` or None when the seed has no such layer.
Layer = Callable[[bytes, random.Random], "tuple[bytes, Callable[[bytes], bytes]] | None"]


def base32_layer(prefix: bytes) -> Layer:
    """The base32 body after ``prefix`` (invites, link requests)."""

    def layer(seed: bytes, rng: random.Random) -> tuple[bytes, Callable[[bytes], bytes]] | None:
        del rng
        if not seed.startswith(prefix):
            return None
        body = seed[len(prefix) :]
        inner = base64.b32decode(body + b"=" * (-len(body) % 8))
        return inner, lambda mutated: prefix + base64.b32encode(mutated).rstrip(b"=")

    return layer


def b64url_segment_layer(seed: bytes, rng: random.Random) -> tuple[bytes, Callable[[bytes], bytes]] | None:
    """One base64url segment of a compact JWS / SD-JWT (``a.b.c~d~e``): its decoded JSON or bytes."""
    parts = re.split(rb"([.~])", seed)
    indexes = [i for i, p in enumerate(parts) if p and p not in (b".", b"~")]
    if not indexes:
        return None
    at = rng.choice(indexes)
    try:
        inner = base64.urlsafe_b64decode(parts[at] + b"=" * (-len(parts[at]) % 4))
    except ValueError:
        return None

    def rebuild(mutated: bytes) -> bytes:
        out = list(parts)
        out[at] = base64.urlsafe_b64encode(mutated).rstrip(b"=")
        return b"".join(out)

    return inner, rebuild


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# --- envelopes ---------------------------------------------------------------------------------


def _envelope_targets() -> list[Target]:
    draw = counter_bytes()
    seeds = tuple(
        seal(ALICE, BOB.public, body, wall_now=NOW, ttl=3600, random_bytes=draw)
        for body in (b"", b"hi", b"x" * 300, bytes(range(256)) * 8)
    )
    cache = KeyCache()

    def opened(data: bytes) -> object:
        message = open_envelope(BOB, data, wall_now=NOW, key_cache=cache)
        return (message.sender.ed25519, message.body, message.sent_at_ms, message.kind, message.expiry)

    def plaintext_layer(seed: bytes, rng: random.Random) -> tuple[bytes, Callable[[bytes], bytes]] | None:
        """The padded plaintext inside the AEAD (decrypted with Bob's key, re-encrypted after the
        mutation): what a sender with a real key could put inside a valid seal."""
        del rng
        envelope = decode_envelope(seed)
        shared = sodium.crypto_scalarmult(BOB.x25519_secret, envelope.ephemeral_key)
        key = seal_key(shared, envelope.ephemeral_key, BOB.public.x25519)
        ad, nonce = envelope.associated_data(), envelope.nonce
        inner = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(envelope.ciphertext, ad, nonce, key)

        def rebuild(mutated: bytes) -> bytes:
            ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(mutated, ad, nonce, key)
            return encode_envelope(dataclasses.replace(envelope, ciphertext=ciphertext))

        return inner, rebuild

    def decoded(data: bytes) -> object:
        envelope = decode_envelope(data)
        if encode_envelope(envelope) != data:  # one envelope, one byte form (its id is a hash of it)
            raise AssertionError("decode then encode gave other bytes")
        return None

    return [
        Target("envelope", "wire.decode_envelope (+ re-encode identity)", seeds, decoded),
        Target(
            "envelope_open",
            "crypto.open_envelope: decrypt + sender signature",
            seeds,
            opened,
            signed=True,
            layers=(plaintext_layer,),
        ),
    ]


# --- gossip RPC --------------------------------------------------------------------------------


def _rpc_targets() -> list[Target]:
    signer = MessageSigner(ALICE, first_seqno=1)
    signed = signer.sign(PubMessage(topic="meshchat/inbox/3", data=b"envelope bytes" * 4))
    ids = tuple(hashlib.sha256(bytes([i])).digest()[:20] for i in range(4))
    control = ControlMessage(
        ihave=(IHave(topic="t", message_ids=ids),),
        iwant=(IWant(message_ids=ids[:2]),),
        graft=(Graft(topic="t"),),
        prune=(Prune(topic="t", peers=(PeerInfo(peer_id=BOB.public.peer_id),), backoff=60),),
        idontwant=(IDontWant(message_ids=ids[:1]),),
    )
    rpcs = (
        RPC(subscriptions=(SubOpts(subscribe=True, topic="t"), SubOpts(subscribe=False, topic="u"))),
        RPC(publish=(signed,)),
        RPC(publish=(PubMessage(topic="t", data=b"unsigned"),)),
        RPC(control=control),
        RPC(subscriptions=(SubOpts(subscribe=True, topic="t"),), publish=(signed,), control=control),
    )
    seeds = tuple(encode_rpc(rpc) for rpc in rpcs)

    def decoded(data: bytes) -> object:
        rpc = decode_rpc(data)
        verified = tuple(m for m in rpc.publish if m.signature is not None and signature_problem(m) is None)
        return verified or None

    def framed(data: bytes) -> object:
        decoder = FrameDecoder()
        return tuple(decode_rpc(body) for body in decoder.feed(data)) and None

    frames = (b"".join(frame(s) for s in seeds), frame(seeds[1]))
    return [
        Target(
            "rpc", "gossip.rpc.decode_rpc + StrictSign check of each message", seeds, decoded, signed=True
        ),
        Target("rpc_frames", "gossip.rpc.FrameDecoder (varint length prefixes) + decode_rpc", frames, framed),
    ]


# --- mailbox protocol and reconciliation ---------------------------------------------------------


def _mailbox_targets() -> list[Target]:
    draw = counter_bytes(1000)
    envelope = seal(ALICE, BOB.public, b"for bob", wall_now=NOW, ttl=3600, random_bytes=draw)
    tag, mid = envelope[2:18].ljust(16, b"\x00"), hashlib.sha256(envelope).digest()
    prekeys = Prekeys.create(BOB, wall_now=NOW, random_bytes=draw)
    bundle = prekeys.bundle(BOB, one_time=2)
    one = prekeys.bundle(BOB, one_time=1)
    a = reconcile.Reconciler([(int(NOW) + i, hashlib.sha256(b"a%d" % i).digest()) for i in range(40)])
    b = reconcile.Reconciler([(int(NOW) + i, hashlib.sha256(b"b%d" % i).digest()) for i in range(30)])
    first = a.initiate()
    second = b.respond(first)
    recon_seeds = (reconcile.encode_message(first), reconcile.encode_message(second))
    requests = (
        mailbox.StoreRequest(envelopes=(envelope,)),
        mailbox.SyncRequest(tags=(tag,), reconcile=recon_seeds[0]),
        mailbox.FetchRequest(message_ids=(mid, mid[::-1])),
        mailbox.DeleteRequest(tags=(tag,), generation=7),
        mailbox.WithdrawRequest(message_ids=(mid,)),
        mailbox.PrekeysPut(bundle=bundle),
        mailbox.PrekeyTake(owner=BOB.public.ed25519),
    )
    responses = (
        mailbox.Stored(results=(mailbox.StoreResult(message_id=mid, code=mailbox.StoreCode.STORED),)),
        mailbox.Synced(reconcile=recon_seeds[1], generation=3, held=2),
        mailbox.Fetched(envelopes=(envelope, envelope)),
        mailbox.Deleted(count=4),
        mailbox.MailboxError(code=mailbox.ErrorCode.BAD_REQUEST, detail="no"),
        mailbox.PrekeysHeld(one_time=3, taken_through=9),
        mailbox.PrekeyGiven(bundle=one),
    )

    def bundle_check(data: bytes) -> object:
        decoded = PrekeyBundle.decode(data)
        decoded.verify()
        # One-time keys are unsigned by design (X3DH; see sessions/prekeys.py): the signed content only.
        b = decoded
        return (b.identity, b.spk_id, b.created, b.spk, b.pq_id, b.pq_key)

    return [
        Target(
            "mailbox_request",
            "store.protocol.decode_request",
            tuple(mailbox.encode_request(r) for r in requests),
            mailbox.decode_request,
        ),
        Target(
            "mailbox_response",
            "store.protocol.decode_response",
            tuple(mailbox.encode_response(r) for r in responses),
            mailbox.decode_response,
        ),
        Target("reconcile", "store.reconcile.decode_message", recon_seeds, reconcile.decode_message),
        Target(
            "prekey_bundle",
            "sessions.PrekeyBundle.decode + verify (identity's signatures on prekeys)",
            (bundle.encode(), one.encode(), prekeys.bundle(BOB).encode()),
            bundle_check,
            signed=True,
        ),
    ]


# --- invites, payloads, sessions ---------------------------------------------------------------


def _session_targets() -> list[Target]:
    draw = counter_bytes(2000)
    bob_prekeys = Prekeys.create(BOB, wall_now=NOW, random_bytes=draw)
    bundle = bob_prekeys.bundle(BOB, one_time=1)
    invites = (
        Invite.create(ALICE, name="Alice"),
        Invite.create(ALICE, name="Алиса", addrs=("/ip4/127.0.0.1/tcp/4001",), bundle=bundle.encode()),
        Invite.create(
            BOB,
            name="b",
            mailboxes=(f"/ip4/10.0.0.1/tcp/1/p2p/{CAROL.public.peer_id}",),
        ),
    )

    def invite(data: bytes) -> object:
        parsed = Invite.from_text(_text(data))
        return (parsed.public.ed25519, parsed.name, parsed.addrs, parsed.mailboxes, parsed.bundle)

    payloads = (
        store_payload.Chat(seq=1, body=b"hello"),
        store_payload.Chat(seq=2, body=b"x" * 100, devices=b"d" * 40),
        store_payload.Receipt(kind=store_payload.ReceiptKind.READ, message_ids=(bytes(32), bytes(range(32)))),
        store_payload.Control(seq=3, body=b"ctl"),
        store_payload.Copy(seq=4, body=b"copy", to=BOB.public.ed25519),
        store_payload.DeviceUpdate(seq=5, devices=b"list"),
        store_payload.Grant(seq=6, devices=b"list", snapshot=b"{}"),
    )
    alice_side = PeerSessions()
    setup = alice_side.encrypt(ALICE, BOB.public, b"first", bundle=bundle, wall_now=NOW, random_bytes=draw)
    second = alice_side.encrypt(ALICE, BOB.public, b"second", bundle=bundle, wall_now=NOW, random_bytes=draw)
    header_size = int.from_bytes(setup[1:3], "big")
    header = setup[3 : 3 + header_size]
    bare = PeerSessions().encrypt(
        ALICE, BOB.public, b"no bundle", bundle=None, wall_now=NOW, random_bytes=draw
    )

    def session(data: bytes) -> object:
        # A fresh record each time: Bob has never talked to Alice; a setup must carry what opens it.
        plaintext, _ = PeerSessions().decrypt(
            BOB, bob_prekeys, ALICE.public, data, wall_now=NOW, random_bytes=draw
        )
        return plaintext

    return [
        Target(
            "invite",
            "wire.Invite.from_text (signed by the inviter)",
            tuple(i.to_text().encode() for i in invites),
            invite,
            signed=True,
            layers=(base32_layer(b"MESHCHAT:"),),
        ),
        Target(
            "payload",
            "store.payload.decode_payload",
            tuple(store_payload.encode_payload(p) for p in payloads),
            store_payload.decode_payload,
        ),
        Target("x3dh_header", "sessions.x3dh.InitHeader.decode", (header,), InitHeader.decode),
        Target(
            "session_message",
            "sessions.PeerSessions.decrypt of a set-up message (X3DH + ratchet, authenticated)",
            (setup, second, bare),
            session,
            signed=True,
        ),
    ]


# --- groups ------------------------------------------------------------------------------------


def _group_targets() -> list[Target]:
    draw = counter_bytes(3000)
    create = group_ops.sign_op(
        ALICE,
        kind=group_ops.OpKind.CREATE,
        group_id=b"",
        parents=(),
        targets=(ALICE.public.ed25519, BOB.public.ed25519),
        name="friends",
        nonce=bytes(range(group_ops.CREATE_NONCE_SIZE)),
        created_at_ms=int(NOW * 1000),
    )
    group_id = create.op_id
    add = group_ops.sign_op(
        ALICE,
        kind=group_ops.OpKind.ADD,
        group_id=group_id,
        parents=(create.op_id,),
        targets=(CAROL.public.ed25519,),
        created_at_ms=int(NOW * 1000) + 1,
    )
    ops_bytes = (group_ops.encode_op(create), group_ops.encode_op(add))
    cache = KeyCache()

    def op(data: bytes) -> object:
        return group_ops.encode_op(group_ops.decode_op(data, key_cache=cache))

    sender = group_chains.SenderChain.new(draw, wall_now=NOW)
    handout = group_chains.encode_handout(sender.handout())
    receiver = group_chains.ReceiverChain.from_handout(sender.handout(), ALICE.public.ed25519)
    messages = tuple(
        seal_group(sender, group_id=group_id, body=body, wall_now=NOW, random_bytes=draw)[0]
        for body in (b"hi all", b"y" * 500)
    )

    def group_message(data: bytes) -> object:
        # open_group leaves the chain unchanged on any error, and a success moves it on: use a copy.
        chain = group_chains.ReceiverChain.from_bytes(receiver.to_bytes())
        opened = open_group(data, group_id=group_id, chain=chain, wall_now=NOW)
        return opened.body

    bodies = (
        group_payload.TextBody(body=b"text", ref=""),
        group_payload.OpsBody(ops=ops_bytes),
    )
    controls = (
        group_payload.OpsControl(group_id=group_id, ops=ops_bytes),
        group_payload.ChainControl(group_id=group_id, generation=1, handout=handout),
        group_payload.ReceiptControl(
            group_id=group_id, kind=store_payload.ReceiptKind.DELIVERED, message_ids=(bytes(32),)
        ),
        group_payload.OpsWanted(group_id=group_id, op_ids=(create.op_id,)),
    )
    return [
        Target("group_op", "groups.ops.decode_op (author's signature)", ops_bytes, op, signed=True),
        Target("chain_handout", "groups.chains.decode_handout", (handout,), group_chains.decode_handout),
        Target(
            "group_message",
            "groups.seal.open_group (chain key + chain signature)",
            messages,
            group_message,
            signed=True,
        ),
        Target(
            "group_body",
            "groups.payload.decode_body",
            tuple(group_payload.encode_body(b) for b in bodies),
            group_payload.decode_body,
        ),
        Target(
            "group_control",
            "groups.payload.decode_control",
            tuple(group_payload.encode_control(c) for c in controls),
            group_payload.decode_control,
        ),
    ]


# --- files -------------------------------------------------------------------------------------


def _file_targets() -> list[Target]:
    index = tuple(hashlib.sha256(bytes([i])).digest() for i in range(3))
    manifests = (
        file_manifest.Manifest(
            name="a.jpg",
            mime="image/jpeg",
            size=2 * CHUNK_SIZE + 5,
            key=bytes(32),
            index=index[: index_chunk_count(2 * CHUNK_SIZE + 5)],
        ),
        file_manifest.Manifest(
            name="voice.ogg",
            mime="audio/ogg",
            size=10,
            key=bytes(range(32)),
            index=index[:1],
            thumbnail=b"\xff\xd8" * 20,
            width=10,
            height=20,
            duration_ms=3000,
            caption="привет",
            mailboxes=(CAROL.public.peer_id,),
            expiry=int(NOW),
        ),
    )
    file_id = hashlib.sha256(b"file").digest()
    requests = (
        file_protocol.Get(addresses=index),
        file_protocol.Hold(file_id=file_id, expiry=int(NOW), token_hashes=index[:2], total_bytes=1000),
        file_protocol.Put(file_id=file_id, address=index[0], data=b"chunk" * 30),
        file_protocol.Done(file_id=file_id, token=bytes(16)),
        file_protocol.Has(addresses=index),
        file_protocol.Bulk(),
    )
    replies = (
        file_protocol.ChunkData(address=index[0], data=b"z" * 200),
        file_protocol.ChunkMissing(address=index[1]),
        file_protocol.Ok(),
        file_protocol.Failed(code=next(iter(file_protocol.ErrorCode)), text="no"),
        file_protocol.Held(addresses=index[:2]),
        file_protocol.Offer(port=4242, ticket=bytes(16), key=bytes(32)),
    )
    return [
        Target(
            "file_manifest",
            "files.manifest.decode_manifest",
            tuple(file_manifest.encode_manifest(m) for m in manifests),
            file_manifest.decode_manifest,
        ),
        Target(
            "file_offer",
            "files.manifest.decode_offer",
            tuple(file_manifest.encode_offer(m) for m in manifests),
            file_manifest.decode_offer,
        ),
        Target(
            "chunk_request",
            "files.protocol.decode_request",
            tuple(file_protocol.encode(r) for r in requests),
            file_protocol.decode_request,
        ),
        Target(
            "chunk_reply",
            "files.protocol.decode_reply",
            tuple(file_protocol.encode(r) for r in replies),
            file_protocol.decode_reply,
        ),
    ]


def build_targets() -> dict[str, Target]:
    """Every target, by name, with its seeds' verified contents filled in (seeds must be accepted)."""
    from fuzz_targets_app import app_parts  # noqa: PLC0415  # it imports this module

    targets: list[Target] = []
    for part in (
        _envelope_targets,
        _rpc_targets,
        _mailbox_targets,
        _session_targets,
        _group_targets,
        _file_targets,
        *app_parts(),
    ):
        targets.extend(part())
    out: dict[str, Target] = {}
    for target in targets:
        contents = frozenset(target.check(seed) for seed in target.seeds) if target.signed else frozenset()
        out[target.name] = Target(
            target.name,
            target.about,
            target.seeds,
            target.check,
            target.signed,
            target.typed,
            contents,
            target.items,
            target.layers,
        )
    return out
