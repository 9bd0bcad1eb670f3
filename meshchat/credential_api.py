"""``node.credentials``: ask for, issue, hold, present, verify and revoke credentials (SD-JWT).

```python
# the holder asks the school (a contact) for a diploma, bound to a key only the holder can derive
holder.credentials.request("School", "diploma")
# the school sees CredentialRequested on its node, and issues it against that request
credential, handle = school.credentials.issue("Ann", vct="diploma", claims={"name": "Ann", "degree": "MSc"})
# the holder's node receives it (CredentialReceived); later it presents two claims to an employer
text = holder.credentials.present(credential.credential_id, ["degree"], nonce=n, audience=employer_did)
verified = employer.credentials.verify(text, nonce=n)       # offline: signatures, binding, status
school.credentials.revoke(credential.credential_id)        # the employer's node gets the list by gossip
```

**Issuance binds to a request.** A credential is bound (``cnf``) to a holder key derived for that one
credential from the holder's seed (``holder_key(seed, key_id)``): the issuer cannot derive it, so it
cannot pick the key itself. The holder therefore asks first (``request``: a REQUEST control carrying a
proof of possession of the new key, ``meshchat.credentials.messages``); the request waits in the
issuer's wallet (``requests()``, a ``CredentialRequested`` event) and ``issue`` answers the pending
request of that holder and type (``NoPendingRequest`` without one: the simplest rule that is always
correct). The ISSUED control goes back on the sealed 1:1 path; the holder's node checks the issuer
signature, that the sender is the issuer it asked, the type, and that the credential is bound to the
key of *its own* request, then keeps it (``held()``, a ``CredentialReceived`` event). Anything else is
refused and counted in ``counts`` by reason; controls arrive at least once, and handling one twice
changes nothing.

**Revocation travels by gossip.** Each issuer keeps Token Status Lists (16,384 entries each, entries
picked at random) in its wallet. ``revoke`` flips the bit and publishes a freshly signed status token
on ``status_topic(own did)``; the node republishes every ``REPUBLISH_INTERVAL`` and whenever a new peer
joins that topic (a verifier that just started), each time signed anew (so each is a new gossip
message, and its ``iat`` says how fresh it is). A verifier that ``trust``s the issuer joins its topic,
caches the newest token per list (persisted in the wallet: verification stays offline after a
restart) and reports its age; tokens from issuers it does not trust are ignored, forged or malformed
ones refused and counted (relays drop them too: ``check_status_message``).

**Verification is offline.** ``verify`` needs only the wallet: the trusted issuers (did -> name), the
cached status tokens and, for one-way presentations, this node's replay cache (``Verifier``).

What this is not: the format (``meshchat.credentials``: SD-JWT, status lists, QR) nor the storage
(``meshchat.credentials.wallet``); it is the glue between them, the messenger and the gossip driver.
A ``Credentials`` built without a network (``network=None``: the CLI's offline commands) can present,
verify, trust and list; asking, issuing and revoking need the node's.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TypeAlias

import trio

from meshchat.contacts import Contact, Contacts
from meshchat.credentials.credential import (
    ONE_WAY_AUDIENCE,
    Credential,
    Verified,
    Verifier,
    holder_key,
    issue,
    predicates_for,
    present,
    present_one_way,
)
from meshchat.credentials.messages import (
    CredentialRequest,
    IssuedCredential,
    decode_control,
    encode_issued,
    encode_request,
)
from meshchat.credentials.status import (
    StatusCache,
    StatusList,
    StatusRef,
    parse_status_token,
    status_topic,
    status_uri,
)
from meshchat.credentials.wallet import (
    WALLET_FILE,
    WALLET_SCHEMA_VERSION,
    HeldRecord,
    IssuedRecord,
    OwnRequest,
    PendingRequest,
    Wallet,
)
from meshchat.errors import (
    BadSignature,
    CredentialError,
    DecodeError,
    NoPendingRequest,
    ProfileError,
    UnknownCredential,
    UnknownIssuer,
    UnknownPeer,
)
from meshchat.identity import Identity, PublicIdentity
from meshchat.net.store_driver import MessageHandle, StoreDriver
from meshchat.store.encrypted import encrypted_connect, store_key
from meshchat.store.messenger import Messenger
from meshchat.wire.jose import b64url_encode, did_key, public_of_did

__all__ = [
    "LIST_SIZE",
    "MAX_STATUS_LISTS",
    "REPUBLISH_INTERVAL",
    "STATUS_TOPIC_PREFIX",
    "STATUS_TTL",
    "CredentialEvent",
    "CredentialNetwork",
    "CredentialReceived",
    "CredentialRequested",
    "Credentials",
    "GossipLink",
    "StatusReceived",
    "open_wallet",
]

#: Seconds between two publications of an issuer's status lists (besides each revocation and each new
#: subscriber): a verifier online is never more than this behind, plus the gossip delay.
REPUBLISH_INTERVAL: Final = 600.0
#: The ``ttl`` written in our status tokens, seconds: how long a verifier may rely on one.
STATUS_TTL: Final = 3600
#: Entries in one status list (the Token Status List draft's example size; 2 KiB of bits, a few
#: hundred bytes compressed). A new list is started when one is full.
LIST_SIZE: Final = 16_384
#: Status lists one issuer keeps, at most (``LIST_SIZE`` each: ``wallet.MAX_ISSUED`` credentials).
MAX_STATUS_LISTS: Final = 64
#: The prefix of every issuer's status topic (``status_topic(did)`` is it plus the did).
STATUS_TOPIC_PREFIX: Final = status_topic("")
#: Bytes of a request nonce and of a key id (base64url of 16 random bytes: 22 characters).
_NONCE_BYTES: Final = 16
_DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialRequested:
    """A holder asked this node (an issuer) for a credential: ``node.credentials.issue`` answers it."""

    #: The request as the wallet keeps it (``requester`` is who to send the credential to).
    request: PendingRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialReceived:
    """A credential we asked for arrived and is in the wallet (``node.credentials.held()``)."""

    credential_id: str
    issuer_did: str
    vct: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReceived:
    """A trusted issuer's status list token arrived by gossip and replaced the cached one."""

    issuer_did: str
    #: When the issuer signed it (unix seconds).
    issued_at: float


#: What ``node.credentials`` announces on ``node.events()``.
CredentialEvent: TypeAlias = CredentialRequested | CredentialReceived | StatusReceived


class GossipLink(Protocol):
    """What ``Credentials`` needs of the gossip driver (``meshchat.net.GossipDriver``)."""

    async def join(self, topic: str) -> None: ...
    async def publish(self, topic: str, data: bytes) -> None: ...
    async def wait_for(self, condition: Callable[[], bool]) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialNetwork:
    """The node's parts ``request``, ``issue`` and ``revoke`` use."""

    messenger: Messenger
    store: StoreDriver
    gossip: GossipLink
    reach: Callable[[PublicIdentity, bytes], None]
    wait_for: Callable[[Callable[[], bool]], Awaitable[None]]
    topic_peers: Callable[[str], Collection[str]]


def open_wallet(profile: Path | None, identity: Identity) -> Wallet:
    """``<profile>/credentials.db``, encrypted with the identity's store key (like ``store.db``); in
    memory without a profile."""
    if profile is None:
        return Wallet(":memory:")
    connect = encrypted_connect(store_key(identity), schema_version=WALLET_SCHEMA_VERSION)
    return Wallet(profile / WALLET_FILE, connect=connect)


class Credentials:
    """A person's credentials as holder, issuer and verifier (see the module docstring)."""

    def __init__(
        self,
        identity: Identity,
        wallet: Wallet,
        *,
        wall_clock: Callable[[], float],
        contacts: Contacts | None = None,
        on_event: Callable[[CredentialEvent], None] = lambda _: None,
        network: CredentialNetwork | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """Use ``node.credentials``, or ``Credentials.offline`` for the commands that need no network."""
        self.identity = identity
        self.wallet = wallet
        self.did = did_key(identity.public)
        self._wall_clock = wall_clock
        self._contacts = contacts
        self._on_event = on_event
        self._network = network
        self._random = random_bytes
        #: Controls and status tokens refused, by reason.
        self.counts: dict[str, int] = {}
        self._trusted: dict[str, str] = wallet.trusted()
        self._cache = StatusCache()
        now = wall_clock()
        for issuer_did, token, _ in wallet.cached_tokens():
            self._take_token(issuer_did, token, now=now, persist=False)
        self._lists = {uri: StatusList.from_bytes(uri, bits) for uri, bits, _ in wallet.status_lists()}
        self._verifier = Verifier(audience=self.did, trusted=self._trusted, status=self._cache)
        self._wake = trio.Event()
        self._joined: set[str] = set()
        #: Per own list: the ``iat`` and bits of the last token signed.
        self._signed: dict[str, tuple[int, bytes]] = {}

    @classmethod
    def offline(
        cls,
        identity: Identity,
        wallet: Wallet,
        *,
        wall_clock: Callable[[], float],
        contacts: Contacts | None = None,
    ) -> Credentials:
        """Present, verify, trust and list without a node (``request``/``issue``/``revoke`` refuse)."""
        return cls(identity, wallet, wall_clock=wall_clock, contacts=contacts)

    # --- holder ------------------------------------------------------------------------------------

    def request(self, issuer: Contact | PublicIdentity | str, vct: str, *, note: str = "") -> MessageHandle:
        """Ask ``issuer`` (a contact, its name or PeerId, or a key) for a ``vct`` credential, bound to
        a new holder key; the request is remembered in the wallet and sent as a control message."""
        network = self._need_network("asking for a credential")
        public = self.person(issuer)
        key_id = self._random(_NONCE_BYTES)
        nonce = b64url_encode(self._random(_NONCE_BYTES))
        now = self._wall_clock()
        body = encode_request(
            holder_key(self.identity.seed, key_id),
            issuer_did=did_key(public),
            vct=vct,
            nonce=nonce,
            now=now,
            note=note,
        )
        self.wallet.add_own_request(
            OwnRequest(nonce=nonce, issuer_did=did_key(public), vct=vct, key_id=key_id, requested_at=now)
        )
        return self._send(network, public, body, ref=f"credential-request:{nonce}")

    def own_requests(self) -> list[OwnRequest]:
        """Our requests not answered yet."""
        return self.wallet.own_requests()

    def held(self) -> list[Credential]:
        """Credentials held, oldest first (parsed and issuer-checked again)."""
        return [Credential.parse(record.compact) for record in self.wallet.held()]

    def _held(self, credential_id: str) -> tuple[HeldRecord, Credential]:
        record = self.wallet.held_one(credential_id)
        if record is None:
            matches = [r for r in self.wallet.held() if r.credential_id.startswith(credential_id)]
            if len(matches) != 1 or not credential_id:
                raise UnknownCredential(credential_id)
            record = matches[0]
        return record, Credential.parse(record.compact)

    def present(self, credential_id: str, disclose: Collection[str], *, nonce: str, audience: str) -> str:
        """A presentation of the claims ``disclose`` answering a verifier's ``nonce`` and ``audience``
        (``UnknownCredential``; ``BadDisclosure`` for a claim the credential does not have)."""
        record, credential = self._held(credential_id)
        key = holder_key(self.identity.seed, record.key_id)
        return present(
            credential, key, disclose=disclose, audience=audience, nonce=nonce, now=self._wall_clock()
        )

    def present_one_way(
        self, credential_id: str, disclose: Collection[str], *, audience: str = ONE_WAY_AUDIENCE
    ) -> str:
        """A presentation for a one-way check (valid for ``ONE_WAY_WINDOW`` seconds, no challenge)."""
        record, credential = self._held(credential_id)
        key = holder_key(self.identity.seed, record.key_id)
        return present_one_way(credential, key, disclose=disclose, now=self._wall_clock(), audience=audience)

    # --- issuer ------------------------------------------------------------------------------------

    def requests(self) -> list[PendingRequest]:
        """Holders' requests waiting for this issuer, oldest first."""
        return self.wallet.pending()

    def issue(
        self,
        to: Contact | PublicIdentity | str,
        *,
        vct: str,
        claims: Mapping[str, object],
        valid_days: float | None = None,
        birth_date: datetime.date | None = None,
    ) -> tuple[Credential, MessageHandle]:
        """Issue a ``vct`` credential with ``claims`` (plus the predicates of ``birth_date``: age_over_18
        ...) to ``to``, bound to the key of ``to``'s pending request of that type, and send it.
        ``NoPendingRequest`` without one. Returns the credential and the handle of its control."""
        network = self._need_network("issuing a credential")
        requester = self.person(to)
        pending = self.wallet.pending_from(requester.ed25519, vct)
        if pending is None:
            raise NoPendingRequest(holder=self.name_of(requester), vct=vct)
        now = self._wall_clock()
        everything = dict(claims)
        if birth_date is not None:
            today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
            everything.update(predicates_for(birth_date, today))
        status_list, ref = self._allocate()
        credential = issue(
            self.identity,
            holder=PublicIdentity.from_bytes(pending.holder),
            vct=vct,
            claims=everything,
            now=now,
            valid_for=None if valid_days is None else valid_days * _DAY,
            status=ref,
            random_bytes=self._random,
        )
        self.wallet.add_issued(
            IssuedRecord(
                credential_id=credential.credential_id,
                request=pending.nonce,
                requester=requester.ed25519,
                holder=pending.holder,
                vct=vct,
                list_uri=ref.uri,
                status_index=ref.index,
                revoked=False,
                issued_at=now,
                expires=credential.expires,
                compact=credential.compact,
            ),
            bits=(ref.uri, status_list.to_bytes(), now),
        )
        body = encode_issued(credential.compact, nonce=pending.nonce)
        handle = self._send(network, requester, body, ref=f"credential-issued:{credential.credential_id}")
        self._wake.set()  # a new list is published at once
        return credential, handle

    def issued(self, limit: int = 1000) -> list[IssuedRecord]:
        """Credentials this profile issued, newest first."""
        return self.wallet.issued(limit)

    def revoke(self, credential_id: str) -> IssuedRecord:
        """Revoke a credential we issued: its status list entry is set and the new list is published
        (now, and with every republication). ``UnknownCredential`` if we did not issue it."""
        record = self.wallet.issued_one(credential_id)
        if record is None:
            matches = [r for r in self.wallet.issued(10**9) if r.credential_id.startswith(credential_id)]
            if len(matches) != 1 or not credential_id:
                raise UnknownCredential(credential_id)
            record = matches[0]
        status_list = self._lists[record.list_uri]
        status_list.revoke(record.status_index)
        self.wallet.set_revoked(
            record.credential_id, bits=(record.list_uri, status_list.to_bytes(), self._wall_clock())
        )
        self._wake.set()
        return record

    def status_tokens(self) -> list[str]:
        """Our status lists, each as a freshly signed status token (what is published).

        ``iat`` is whole seconds and a verifier keeps only a token newer than the one it has, so a list
        that changed within the second of its last token is signed one second later than that (never
        more than one second per publication ahead of the clock: verifiers allow ``CLOCK_SKEW``)."""
        now = int(self._wall_clock())
        tokens = []
        for uri, status_list in self._lists.items():
            bits = status_list.bits
            signed_at, signed_bits = self._signed.get(uri, (0, bits))
            iat = max(now, signed_at + (signed_bits != bits))
            tokens.append(status_list.token(self.identity, now=iat, ttl=STATUS_TTL))
            self._signed[uri] = (iat, bits)
        return tokens

    def _allocate(self) -> tuple[StatusList, StatusRef]:
        """A free entry, drawn at random, in the newest status list (a new list when it is full)."""
        if self._lists:
            newest = self._lists[next(reversed(self._lists))]
            try:
                return newest, newest.allocate(self._random)
            except CredentialError:  # full: start the next list
                pass
        if len(self._lists) >= MAX_STATUS_LISTS:
            raise CredentialError(f"all {MAX_STATUS_LISTS} status lists are full")
        status_list = StatusList(status_uri(self.did, str(len(self._lists) + 1)), LIST_SIZE)
        self._lists[status_list.uri] = status_list
        return status_list, status_list.allocate(self._random)

    # --- verifier ----------------------------------------------------------------------------------

    def challenge(self) -> str:
        """A fresh nonce for a holder to answer (``present(..., nonce=, audience=self.did)``); it is
        accepted once, within ``CHALLENGE_LIFETIME`` (10 minutes)."""
        return self._verifier.challenge(self._random, now=self._wall_clock())

    def trust(self, did: str, name: str) -> None:
        """Trust issuer ``did`` (a ``did:key``) under ``name``; a running node follows its status
        topic from now on. ``DecodeError`` for a did that is not an Ed25519 did:key."""
        public_of_did(did)
        self.wallet.trust(did, name, now=self._wall_clock())
        self._trusted[did] = name
        if self._verifier.trusted is not None:  # the verifier keeps its own copy
            self._verifier.trusted[did] = name
        self._wake.set()

    def trusted(self) -> dict[str, str]:
        """Trusted issuers: did -> name."""
        return dict(self._trusted)

    def status_age(self, issuer_did: str) -> float | None:
        """Seconds since the issuer signed the newest status token we have of it (None: none)."""
        return self._cache.age(issuer_did, now=self._wall_clock())

    def verify(
        self,
        text: str,
        *,
        nonce: str | None = None,
        audience: str | None = None,
        require: Collection[str] = (),
    ) -> Verified:
        """Check a presentation (``meshchat.credentials.qr.from_qr_text`` turns a QR payload into one)
        offline: issuer trusted and its signature, disclosures, holder binding, ``nonce`` and
        ``audience`` (default: our did) or, without ``nonce``, the one-way window and the replay cache,
        validity dates, revocation (from the cached status lists), ``require``d claims. Raises the
        typed ``CredentialError`` that failed."""
        presentation = text.strip()
        verifier = self._verifier
        if audience is not None and audience != self.did:
            verifier = Verifier(audience=audience, trusted=self._trusted, status=self._cache)
        return verifier.verify(presentation, now=self._wall_clock(), nonce=nonce, require=require)

    def import_status(self, token: str) -> bool:
        """Take a status list token handed over another way (a file, a QR code: a till that is never
        online): ``DecodeError``/``BadSignature`` for a bad one, ``UnknownIssuer`` if its issuer is not
        trusted; False if it is not newer than the one cached."""
        parsed = parse_status_token(token.strip())
        if parsed.issuer_did not in self._trusted:
            raise UnknownIssuer(parsed.issuer_did)
        now = self._wall_clock()
        if not self._cache.put(parsed.compact, now=now):
            return False
        self.wallet.cache_token(parsed.uri, parsed.issuer_did, parsed.compact, now=now)
        return True

    def gossip(self, topic: str, data: bytes) -> bool:
        """A gossip message: True if it was for us (a status topic), taken or refused and counted."""
        if not topic.startswith(STATUS_TOPIC_PREFIX):
            return False
        issuer_did = topic[len(STATUS_TOPIC_PREFIX) :]
        if issuer_did not in self._trusted:
            self._count("status of an issuer not trusted")
            return True
        try:
            token = data.decode("ascii")
        except UnicodeDecodeError:
            self._count("status token not ASCII")
            return True
        self._take_token(issuer_did, token, now=self._wall_clock(), persist=True)
        return True

    def _take_token(self, issuer_did: str, token: str, *, now: float, persist: bool) -> None:
        try:
            parsed = parse_status_token(token)
            if parsed.issuer_did != issuer_did:
                raise DecodeError("status token", "not issued by the topic's issuer")
            taken = self._cache.put(token, now=now)
        except (DecodeError, BadSignature) as exc:
            self._count(f"bad status token ({type(exc).__name__})")
            return
        if taken and persist:
            self.wallet.cache_token(parsed.uri, issuer_did, token, now=now)
            self._on_event(StatusReceived(issuer_did=issuer_did, issued_at=parsed.issued_at))

    # --- controls ----------------------------------------------------------------------------------

    def control(self, sender: PublicIdentity, body: bytes, message_id: bytes) -> None:
        """A credential control from ``sender`` (sealed and signed by them): never raises for bad input,
        refusals are counted in ``counts``."""
        del message_id  # controls are idempotent by their nonce and credential id
        try:
            message = decode_control(body)
        except DecodeError as exc:
            self._count(f"malformed control ({exc.problem[:40]})")
            return
        if isinstance(message, CredentialRequest):
            self._requested(sender, message)
        else:
            self._issued(sender, message)

    def _requested(self, sender: PublicIdentity, request: CredentialRequest) -> None:
        if request.audience != self.did:
            self._count("request for another issuer")
            return
        stranger = self._contacts is None or self._contacts.by_key(sender) is None
        record = PendingRequest(
            nonce=request.nonce,
            requester=sender.ed25519,
            holder=request.holder.ed25519,
            vct=request.vct,
            note=request.note,
            stranger=stranger,
            received_at=self._wall_clock(),
        )
        if self.wallet.add_pending(record):
            self._on_event(CredentialRequested(request=record))

    def _issued(self, sender: PublicIdentity, issued: IssuedCredential) -> None:
        own = self.wallet.own_request(issued.nonce)
        if own is None:
            known = any(r.issuer_did == did_key(sender) for r in self.wallet.held())
            self._count("answer to a request already answered" if known else "credential not asked for")
            return
        try:
            credential = Credential.parse(issued.compact)
        except (DecodeError, CredentialError, BadSignature) as exc:
            self._count(f"bad credential ({type(exc).__name__})")
            return
        if credential.issuer_did != own.issuer_did or credential.issuer != sender:
            self._count("credential from another issuer than asked")
            return
        if credential.vct != own.vct:
            self._count("credential of another type than asked")
            return
        if credential.holder != holder_key(self.identity.seed, own.key_id).public:
            self._count("credential bound to another key than requested")
            return
        record = HeldRecord(
            credential_id=credential.credential_id,
            compact=credential.compact,
            key_id=own.key_id,
            issuer_did=credential.issuer_did,
            vct=credential.vct,
            received_at=self._wall_clock(),
        )
        if self.wallet.add_held(record, answered=own.nonce):
            self._on_event(
                CredentialReceived(
                    credential_id=credential.credential_id,
                    issuer_did=credential.issuer_did,
                    vct=credential.vct,
                )
            )
        else:
            self._count("wallet full")

    # --- the node's tasks --------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow trusted issuers' status topics; publish our lists on changes, to new subscribers and
        every ``REPUBLISH_INTERVAL`` (a task in the node's nursery)."""
        network = self._need_network("publishing status lists")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._greet_subscribers, network)
            while True:
                await self._join_trusted(network)
                if self._lists:
                    await self._publish(network)
                with trio.move_on_after(REPUBLISH_INTERVAL):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _join_trusted(self, network: CredentialNetwork) -> None:
        for did in sorted(set(self._trusted) - self._joined):
            await network.gossip.join(status_topic(did))
            self._joined.add(did)

    async def _publish(self, network: CredentialNetwork) -> None:
        topic = status_topic(self.did)
        for token in self.status_tokens():
            await network.gossip.publish(topic, token.encode("ascii"))

    async def _greet_subscribers(self, network: CredentialNetwork) -> None:
        """Publish again whenever a peer we have not served joins our status topic (a verifier that
        just started would otherwise wait for the next republication)."""
        topic = status_topic(self.did)
        served: set[str] = set()

        def newcomer() -> bool:
            return bool(set(network.topic_peers(topic)) - served)

        while True:
            await network.wait_for(newcomer)
            served.clear()  # peers that left are forgotten: bounded by the connected peers
            served.update(network.topic_peers(topic))
            if self._lists:
                self._wake.set()

    # --- helpers -----------------------------------------------------------------------------------

    def _need_network(self, what: str) -> CredentialNetwork:
        if self._network is None:
            raise ProfileError(f"{what} needs a running node (node.credentials)")
        return self._network

    def person(self, who: Contact | PublicIdentity | str) -> PublicIdentity:
        """Someone named by contact, contact name, PeerId, ``did:key`` or key (``UnknownPeer``)."""
        if isinstance(who, Contact):
            return who.public
        if isinstance(who, PublicIdentity):
            return who
        if self._contacts is not None:
            try:
                return self._contacts.find(who).public
            except UnknownPeer:
                pass
        if who.startswith("did:key:"):
            return public_of_did(who)
        try:
            return PublicIdentity.from_peer_id(who)
        except DecodeError as exc:
            raise UnknownPeer(who) from exc

    def name_of(self, public: PublicIdentity) -> str:
        """A contact's name, else the PeerId."""
        contact = self._contacts.by_key(public) if self._contacts is not None else None
        return contact.name if contact is not None else public.peer_id

    def _send(
        self, network: CredentialNetwork, recipient: PublicIdentity, body: bytes, *, ref: str
    ) -> MessageHandle:
        record, actions = network.messenger.send(
            recipient, body, wall_now=self._wall_clock(), ref=ref, ttl=None, control=True
        )
        network.store.perform(actions)
        if actions:
            network.reach(recipient, record.message_id)
        return MessageHandle(record, messenger=network.messenger, wait_for=network.wait_for)

    def _count(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
