"""``node.documents``: co-signing rounds between real nodes (issue 16, CREDS.md C).

```python
proposed = await node.documents.propose("contract.pdf", signers=["Bob", "Carol"], threshold=2)
doc_id = proposed.doc_id                                  # proposed.view: the round as it is now
await node.documents.sign(doc_id)                         # on Bob's node (path= checks a big file)
node.documents.view(doc_id).state                         # DocumentState.COMPLETE once 2 signed
await node.documents.revoke(doc_id, reason="withdrawn")    # my signature no longer counts, anywhere
text = node.documents.bundle(doc_id)                      # NAME.cosign.json: `meshchat verify` it
```

A thin driver around the sans-IO ``meshchat.documents.cosign.CosignCore`` (its rules: who may sign,
one signature per signer, revocation by the signer only, witnesses, bounds). This module does the
I/O: it keeps the core's state in the profile's ``documents.db``; sends each ``SendControl`` the core
returns as a 1:1 control message (``Messenger.send(..., control=True)``: sealed, durable in the outbox,
stored on mailboxes for offline signers, retried until delivered) exactly as ``node.files`` and the
groups driver do; hands every document control the node receives (``is_document_control``) to the
core; and puts the core's events (``DocumentProposed``, ``DocumentSigned``, ``DocumentRevoked``,
``DocumentCompleted``, ``DocumentStamped``) on ``node.events()``.

Each control's ``ref`` (the outbox's idempotency key) is ``cosign:<doc_id>:<hash of recipient and
body>``: the same control to the same person is queued once however often the core asks for it,
and two different ones of a round never collapse into one (a single ``cosign:<doc_id>`` ref would
keep only the first control of a round per outbox).

A document larger than ``MAX_INLINE`` does not travel inside the proposal: ``propose`` also sends the
file to each signer with ``node.files.send`` (caption ``cosign <doc_id>``), and ``sign`` on their side
checks the file they fetched (``path=``, or the attachment with that caption, found by itself) against
the proposal's hash before signing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, assert_never

import trio

from meshchat.contacts import Contact, Contacts
from meshchat.documents.cosign import CosignCore
from meshchat.documents.events import (
    Action,
    DocumentCompleted,
    DocumentEvent,
    DocumentProposed,
    DocumentRevoked,
    DocumentSigned,
    DocumentStamped,
    DocumentView,
    SendControl,
)
from meshchat.documents.payload import MAX_INLINE
from meshchat.documents.signature import digest_bytes, digest_file
from meshchat.documents.sqlite import DOCUMENTS_FILE, DocumentStore
from meshchat.errors import DecodeError, DocumentError, ProfileError, UnknownDocument, UnknownPeer
from meshchat.files.manifest import decode_manifest
from meshchat.files.sqlite import ReceivedRecord, ReceivedState, SentRecord
from meshchat.identity import Identity, PublicIdentity
from meshchat.store.encrypted import store_key
from meshchat.store.messenger import Messenger

if TYPE_CHECKING:  # the network stack loads only where something is sent (not for `cosign list`)
    from meshchat.net.store_driver import MessageHandle, StoreDriver

__all__ = [
    "CAPTION_PREFIX",
    "MIN_PREFIX",
    "Documents",
    "FileSender",
    "Proposed",
    "open_documents_store",
    "open_offline",
]

#: Shortest prefix of a round's id that names it (a user types the first few characters).
MIN_PREFIX = 6
#: A large document's attachment caption: ``cosign <doc_id>`` (how its signers' nodes find it).
CAPTION_PREFIX = "cosign "

Signer = Contact | PublicIdentity | str


class FileSender(Protocol):
    """What a large document needs of ``node.files`` (``meshchat.file_api.Files``): send a file, find
    the one received."""

    async def send(
        self, to: Contact | PublicIdentity | str, path: str | Path, *, caption: str = "", ref: str = ""
    ) -> MessageHandle: ...
    def received(self, *, after: int = 0, limit: int = 100) -> list[ReceivedRecord]: ...
    def sent(self, limit: int = 100) -> list[SentRecord]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposed:
    """What ``propose`` did: the round and the messages it sent."""

    #: The round as it is now (``view.proposal.doc_id`` names it).
    view: DocumentView
    #: The proposal on its way to each signer and witness.
    controls: list[MessageHandle]
    #: The document itself, for a large one, on its way to each signer (else empty).
    attachments: list[MessageHandle]

    @property
    def doc_id(self) -> str:
        """The round's id."""
        return self.view.proposal.doc_id


class Documents:
    """See the module docstring. Built by ``Node``; applications use ``node.documents``."""

    def __init__(
        self,
        identity: Identity,
        *,
        store: DocumentStore,
        messenger: Messenger | None,
        driver: StoreDriver | None,
        contacts: Contacts | None,
        wall_clock: Callable[[], float],
        reach: Callable[[PublicIdentity, bytes], None] = lambda _p, _m: None,
        wait_for: Callable[[Callable[[], bool]], Awaitable[None]] | None = None,
        on_event: Callable[[DocumentEvent], None] = lambda _e: None,
        files: FileSender | None = None,
    ) -> None:
        """Used by ``Node`` (and ``open_offline`` with no messenger: reading only)."""
        self._identity = identity
        self._store = store
        self._messenger = messenger
        self._driver = driver
        self._contacts = contacts
        self._now = wall_clock
        self._reach = reach
        self._wait_for = wait_for
        self._on_event = on_event
        self._files = files
        is_contact: Callable[[PublicIdentity], bool] = (
            (lambda p: contacts.by_key(p) is not None) if contacts is not None else (lambda _p: True)
        )
        #: The sans-IO core (its ``counts`` say what was refused, by reason).
        self.core = CosignCore(identity, store, is_contact=is_contact)

    # --- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close ``documents.db``."""
        self._store.close()

    def __enter__(self) -> Documents:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- reading --------------------------------------------------------------------------------

    def view(self, doc_id: str) -> DocumentView:
        """One round (``UnknownDocument``). A unique prefix of its id is enough."""
        return self.core.view(self._resolve(doc_id))

    def documents(self) -> list[DocumentView]:
        """Every round known here."""
        return self.core.documents()

    def bundle(self, doc_id: str) -> str:
        """The round's bundle (JSON text) for ``meshchat verify`` / ``verify_bundle``."""
        return self.core.bundle(self._resolve(doc_id))

    def content(self, doc_id: str) -> bytes | None:
        """The document, if it travelled inline (or was proposed here)."""
        return self.core.content(self._resolve(doc_id))

    def _resolve(self, doc_id: str) -> str:
        """The full id of the round ``doc_id`` names: itself, or a unique prefix of at least
        ``MIN_PREFIX`` characters (``UnknownDocument`` otherwise)."""
        known = self._store.document_ids()
        if doc_id in known:
            return doc_id
        matches = [k for k in known if k.startswith(doc_id)] if len(doc_id) >= MIN_PREFIX else []
        if len(matches) != 1:
            raise UnknownDocument(doc_id)
        return matches[0]

    def known(self, doc_id: str) -> bool:
        """Whether the round is known here (for waiting on a proposal to arrive)."""
        try:
            self._resolve(doc_id)
        except UnknownDocument:
            return False
        return True

    # --- acting ---------------------------------------------------------------------------------

    def _public(self, who: Signer) -> PublicIdentity:
        if isinstance(who, Contact):
            return who.public
        if isinstance(who, PublicIdentity):
            return who
        if self._contacts is not None:
            with contextlib.suppress(UnknownPeer):
                return self._contacts.find(who).public
        try:
            return PublicIdentity.from_peer_id(who)
        except DecodeError as exc:
            raise UnknownPeer(who) from exc

    async def propose(
        self,
        document: str | Path | bytes,
        *,
        signers: Sequence[Signer],
        threshold: int,
        me: bool = True,
        witnesses: Sequence[Signer] = (),
        quorum: int = 0,
        expires: float | None = None,
        name: str | None = None,
    ) -> Proposed:
        """Start a round for ``document`` (a path, or the bytes themselves with ``name``): ``signers``
        (contacts, keys, names or PeerIds; with ``me`` this profile too) must sign, ``threshold`` of
        them for it to be complete. ``witnesses`` countersign when each signature was seen (``quorum``
        of them bound its time). ``expires``: unix time after which no signature counts."""
        keys = [self._public(s) for s in signers]
        mine = self._identity.public
        if me and mine not in keys:
            keys.insert(0, mine)
        if not me:
            keys = [k for k in keys if k != mine]
        witness_keys = [self._public(w) for w in witnesses]
        path: Path | None = None
        if isinstance(document, bytes):
            data: bytes | None = document
            digest, size = digest_bytes(document), len(document)
            shown = name or "document"
        else:
            path = Path(document)
            size = (await trio.to_thread.run_sync(path.stat)).st_size
            shown = name or path.name
            data = await trio.to_thread.run_sync(path.read_bytes) if size <= MAX_INLINE else None
            if data is not None:
                digest, size = digest_bytes(data), len(data)
            else:  # streamed on a worker thread: a large file must not stall the node
                digest, size = await trio.to_thread.run_sync(digest_file, path)
        if data is not None and len(data) > MAX_INLINE:
            raise DocumentError(
                f"a document given as bytes travels inline: at most {MAX_INLINE:,} bytes; give its path"
            )
        proposal, actions = self.core.propose(
            data,
            digest=digest,
            size=size,
            name=shown,
            signers=keys,
            threshold=threshold,
            witnesses=witness_keys,
            quorum=quorum,
            expires=expires,
            wall_now=self._now(),
        )
        controls = self._perform(proposal.doc_id, actions)
        attachments: list[MessageHandle] = []
        if data is None and path is not None and self._files is not None:
            caption = CAPTION_PREFIX + proposal.doc_id
            for key in proposal.signers:
                if key != mine:
                    attachments.append(
                        await self._files.send(
                            key, path, caption=caption, ref=f"cosign-file:{proposal.doc_id}:{key.peer_id}"
                        )
                    )
        return Proposed(view=self.core.view(proposal.doc_id), controls=controls, attachments=attachments)

    async def sign(self, doc_id: str, *, path: str | Path | None = None) -> list[MessageHandle]:
        """Sign round ``doc_id``'s document and send the signature to every participant.

        With ``path`` the file there must be the proposal's document (``DocumentMismatch`` if not). A
        document that did not travel inline needs its file: ``path``, or the attachment captioned
        ``cosign <doc_id>`` this node fetched (``DocumentError`` if there is none yet)."""
        full = self._resolve(doc_id)
        view = self.core.view(full)
        source = Path(path) if path is not None else None
        if source is None and not view.has_content:
            source = self._fetched_attachment(view)
            if source is None:
                raise DocumentError(
                    f"the document of {full} ({view.proposal.size:,} bytes) did not travel with the "
                    "proposal: fetch its attachment or give its file"
                )
        digest = None
        if source is not None:
            digest, _ = await trio.to_thread.run_sync(digest_file, source)
        return self._perform(full, self.core.sign(full, wall_now=self._now(), content_digest=digest))

    def _fetched_attachment(self, view: DocumentView) -> Path | None:
        """The file of the attachment captioned ``cosign <doc_id>`` that this node fetched from the
        proposer (or, on the proposer's node, sent), if any; its hash is checked by the core all the
        same (a file changed since is refused)."""
        if self._files is None:
            return None
        proposal = view.proposal
        caption = CAPTION_PREFIX + proposal.doc_id
        if proposal.proposer == self._identity.public:  # our own round: the file we sent with it
            for sent in self._files.sent(limit=1000):
                if decode_manifest(sent.manifest).caption == caption and os.path.isfile(sent.path):
                    return Path(sent.path)
            return None
        for record in reversed(self._files.received(limit=1000)):
            if (
                record.state is ReceivedState.DONE
                and record.sender == proposal.proposer.ed25519
                and decode_manifest(record.manifest).caption == caption
                and os.path.isfile(record.path)
            ):
                return Path(record.path)
        return None

    async def revoke(self, doc_id: str, *, reason: str = "") -> list[MessageHandle]:
        """Revoke this profile's signature of round ``doc_id`` and tell every participant."""
        full = self._resolve(doc_id)
        return self._perform(full, self.core.revoke(full, reason=reason, wall_now=self._now()))

    def control(self, sender: PublicIdentity, body: bytes, message_id: bytes) -> None:
        """A document control from ``sender`` (the node routes them here); never raises for bad
        input: the core counts what it refuses."""
        del message_id  # the core identifies controls by their content; the id is the outbox's
        self._perform("", self.core.control_received(sender, body, wall_now=self._now()))

    def _perform(self, doc_id: str, actions: Sequence[Action]) -> list[MessageHandle]:
        """Send the core's controls (sealed 1:1, durable) and emit its events; the sends' handles."""
        from meshchat.net.store_driver import MessageHandle  # noqa: PLC0415 (see the imports)

        handles: list[MessageHandle] = []
        now = self._now()
        for action in actions:
            match action:
                case SendControl(recipient=recipient, body=body):
                    if self._messenger is None or self._driver is None:
                        raise ProfileError("documents opened without a node cannot send")
                    tag = hashlib.sha256(recipient.ed25519 + body).digest()[:12]
                    ref = f"cosign:{doc_id or 'in'}:{base64.urlsafe_b64encode(tag).decode('ascii')}"
                    record, store_actions = self._messenger.send(
                        recipient, body, wall_now=now, control=True, ref=ref
                    )
                    self._driver.perform(store_actions)
                    if store_actions:
                        self._reach(recipient, record.message_id)
                    if self._wait_for is not None:
                        handles.append(
                            MessageHandle(record, messenger=self._messenger, wait_for=self._wait_for)
                        )
                case (
                    DocumentProposed()
                    | DocumentSigned()
                    | DocumentRevoked()
                    | DocumentCompleted()
                    | DocumentStamped()
                ):
                    self._on_event(action)
                case _:
                    assert_never(action)
        return handles


def open_documents_store(profile: Path | None, identity: Identity) -> DocumentStore:
    """The profile's ``documents.db`` (encrypted with the store key), or one in memory without a profile."""
    if profile is None:
        return DocumentStore(":memory:", key=None)
    return DocumentStore(profile / DOCUMENTS_FILE, key=store_key(identity))


def open_offline(profile: Path, identity: Identity) -> Documents:
    """A profile's rounds for reading (``cosign list | status | export``): no network, no sending.
    Close it (``with``) when done."""
    return Documents(
        identity,
        store=open_documents_store(profile, identity),
        messenger=None,
        driver=None,
        contacts=Contacts(profile),
        wall_clock=time.time,
    )
