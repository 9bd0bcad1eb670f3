"""Typed errors for everything meshchat rejects.

Every error a caller can see derives from :class:`MeshchatError`, is named for its cause and carries
the numbers that explain it, so the message reads well on its own (``TooLarge(size=70_112,
limit=65_536)`` -> "envelope is 70,112 bytes; the limit is 65,536"). Decoders raise these for bad input
from the outside world; callers catch the narrowest class they can handle.

This module is the bottom of the layer stack: it imports nothing from meshchat.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "AddressInUse",
    "BadAddress",
    "BadBundle",
    "BadDisclosure",
    "BadInvite",
    "BadManifest",
    "BadSignature",
    "ChainJumpTooFar",
    "ChallengeMismatch",
    "ChunkMismatch",
    "CredentialError",
    "CredentialNotValid",
    "CredentialRevoked",
    "DecodeError",
    "DecryptionFailed",
    "DeviceError",
    "DiskFull",
    "DocumentError",
    "DocumentExpired",
    "DocumentMismatch",
    "Expired",
    "FileError",
    "GroupError",
    "GroupFull",
    "InvalidTransition",
    "KeyChanged",
    "KeyFileError",
    "KeyFileProblem",
    "LinkCodeMismatch",
    "MeshchatError",
    "NetworkError",
    "NoPendingRequest",
    "NoSession",
    "NotASigner",
    "NotAuthorized",
    "NotInGroup",
    "NotPrimary",
    "NotSigned",
    "PresentationExpired",
    "PresentationReplayed",
    "ProfileError",
    "ProfileLocked",
    "QuotaExceeded",
    "Replay",
    "SessionError",
    "SignatureRevoked",
    "StatusUnknown",
    "StorageError",
    "TooLarge",
    "TooManySkipped",
    "UnknownChain",
    "UnknownCredential",
    "UnknownDevice",
    "UnknownDocument",
    "UnknownFile",
    "UnknownGroup",
    "UnknownIssuer",
    "UnknownPeer",
    "UnknownPrekey",
    "UnsupportedVersion",
    "WrongHolder",
]


class MeshchatError(Exception):
    """Base class of every error meshchat raises on purpose."""


class DecodeError(MeshchatError):
    """Bytes from outside are not a well-formed meshchat object (wrong structure, types or encoding)."""

    def __init__(self, what: str, problem: str) -> None:
        self.what = what
        self.problem = problem
        super().__init__(f"malformed {what}: {problem}")


class TooLarge(DecodeError):
    """An object is larger than its fixed limit; raised before any parsing work is done."""

    def __init__(self, *, what: str = "envelope", size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        MeshchatError.__init__(self, f"{what} is {size:,} bytes; the limit is {limit:,}")
        self.what = what
        self.problem = f"{size:,} bytes > {limit:,}"


class UnsupportedVersion(DecodeError):
    """An object announces a format version this meshchat cannot read."""

    def __init__(self, *, what: str, version: int, supported: tuple[int, ...]) -> None:
        self.version = version
        self.supported = supported
        readable = ", ".join(str(v) for v in supported)
        MeshchatError.__init__(self, f"{what} has version {version}; this meshchat reads version {readable}")
        self.what = what
        self.problem = f"unsupported version {version}"


class BadInvite(DecodeError):
    """An invite token is malformed, or its signature does not match its contents (tampered)."""

    def __init__(self, problem: str) -> None:
        super().__init__("invite", problem)


class BadSignature(MeshchatError):
    """A signature does not verify against the key that supposedly made it."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what}: signature does not verify")


class DecryptionFailed(MeshchatError):
    """A sealed envelope cannot be opened with this key: it is for someone else, or it was altered."""

    def __init__(self) -> None:
        super().__init__("cannot open envelope: it is addressed to another key or was altered in transit")


class Expired(MeshchatError):
    """An envelope's expiry time has passed."""

    def __init__(self, *, expiry: int, now: float) -> None:
        self.expiry = expiry
        self.now = now
        super().__init__(f"envelope expired at {expiry} (unix seconds); it is now {int(now)}")


class Replay(MeshchatError):
    """A message that was already accepted arrived again."""

    def __init__(self, message_id: bytes) -> None:
        self.message_id = message_id
        super().__init__(f"message {message_id.hex()[:16]}… was already accepted")


class QuotaExceeded(MeshchatError):
    """A storage quota (per inbox tag, per peer, or total) would be exceeded."""

    def __init__(self, *, what: str, used: int, limit: int) -> None:
        self.what = what
        self.used = used
        self.limit = limit
        super().__init__(f"{what} quota exceeded: {used:,} of {limit:,} used")


class UnknownPeer(MeshchatError):
    """An operation names a peer or contact this node does not know."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        super().__init__(f"unknown peer or contact: {peer}")


class BadAddress(MeshchatError):
    """A network address (multiaddr) that cannot be parsed or used."""

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        super().__init__(f"bad address {address!r}: {problem}")


class NetworkError(MeshchatError):
    """The network could not do what was asked (listen, dial, open a stream); says what and why."""

    def __init__(self, what: str, problem: str) -> None:
        self.what = what
        super().__init__(f"{what}: {problem}")


class KeyFileProblem(Enum):
    """Why a key file could not be loaded or written."""

    #: The file does not exist.
    MISSING = "missing"
    #: Group or other users may read the file; the secret key may have leaked.
    INSECURE_PERMISSIONS = "insecure permissions"
    #: The file is shorter than its format requires or not structured as a key file.
    CORRUPT = "truncated or corrupt"
    #: The file announces a format version this meshchat cannot read.
    UNKNOWN_VERSION = "unknown version"
    #: The passphrase does not decrypt the key.
    WRONG_PASSPHRASE = "wrong passphrase"
    #: The file is encrypted but no passphrase was supplied.
    PASSPHRASE_REQUIRED = "passphrase required"
    #: A key file is already there and would be replaced.
    EXISTS = "already exists"
    #: The operating system refused to read or write the file.
    IO = "input/output error"


class KeyFileError(MeshchatError):
    """A key file is missing, unreadable, insecure, corrupt, of an unknown version, or locked."""

    def __init__(self, *, path: str, problem: KeyFileProblem, detail: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"key file {path}: {detail}")


class ProfileError(MeshchatError):
    """A profile folder is missing or does not hold a meshchat identity."""


class StorageError(MeshchatError):
    """The local store failed (disk full, corrupt database, I/O error); nothing accepted was lost."""


class AddressInUse(NetworkError):
    """Another process already listens on the address (refused: sharing a port splits its connections)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"listen on {address}", "the address is already in use by another process")


class ProfileLocked(ProfileError):
    """Another process runs a node on this profile folder (two would share one store and one identity)."""

    def __init__(self, *, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"profile {path} is in use by {who}; stop it first or use another profile")


class InvalidTransition(MeshchatError):
    """A state machine was handed an input its current state does not allow (the caller's mistake, as
    h11's LocalProtocolError): names the machine, the state and the input."""

    def __init__(self, *, machine: str, state: str, event: str) -> None:
        self.machine = machine
        self.state = state
        self.event = event
        super().__init__(f"{machine} can't handle {event} in state {state}")


class GroupError(MeshchatError):
    """Base class of the errors of group membership, keys and messages (``meshchat.groups``)."""


class UnknownGroup(GroupError):
    """A group id this node does not know (not a member, never invited, or the id is wrong)."""

    def __init__(self, group: str) -> None:
        self.group = group
        super().__init__(f"unknown group: {group}")


class NotAuthorized(GroupError):
    """A group operation or message whose author lacks the role it needs (a non-member, a non-admin,
    a removed member), judged against what the author could see when it signed."""

    def __init__(self, *, what: str, author: str, needs: str) -> None:
        self.what = what
        self.author = author
        self.needs = needs
        super().__init__(f"{what} by {author[:16]}… refused: the author is not {needs}")


class NotInGroup(GroupError):
    """The local user tried something in a group it is not (or no longer) a member of, or named a
    member the group does not have (the caller's mistake)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class GroupFull(GroupError):
    """A group would grow past a fixed bound (members, operations, pending operations)."""

    def __init__(self, *, what: str, size: int, limit: int) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(f"group {what} would be {size:,}; the limit is {limit:,}")


class UnknownChain(GroupError):
    """A group message on a sending chain this member was never handed (or has discarded: its sender
    was removed, or the chain was replaced)."""

    def __init__(self, chain_id: bytes) -> None:
        self.chain_id = chain_id
        super().__init__(f"no sending chain {chain_id.hex()[:16]}… in this group")


class ChainJumpTooFar(GroupError):
    """A group message claims a position too far ahead on its sender's chain: deriving the skipped keys
    would cost memory and time the sender did not earn. Nothing is derived or stored."""

    def __init__(self, *, jump: int, limit: int) -> None:
        self.jump = jump
        self.limit = limit
        super().__init__(f"chain jump of {jump:,} messages; the limit is {limit:,}")


class FileError(MeshchatError):
    """A file transfer went wrong (base class of the attachment errors)."""


class BadManifest(DecodeError):
    """A file manifest is malformed or inconsistent (absurd sizes, counts that do not add up)."""

    def __init__(self, problem: str) -> None:
        super().__init__("file manifest", problem)


class ChunkMismatch(FileError):
    """A chunk's bytes do not hash to the address they were asked for: the source lied or the bytes were
    damaged. Nothing was written; the chunk is fetched elsewhere and the source counted."""

    def __init__(self, *, source: str, address: bytes) -> None:
        self.source = source
        self.address = address
        super().__init__(f"chunk {address.hex()[:16]}… from {source[-12:]} does not match its hash")


class UnknownFile(FileError):
    """No attachment (received) or file (sent) with this id in this profile."""

    def __init__(self, file_id: str) -> None:
        self.file_id = file_id
        super().__init__(f"no file {file_id}")


class DiskFull(StorageError):
    """The disk filled while writing a file: what was written is kept and the transfer resumes later."""

    def __init__(self, *, path: str, needed: int) -> None:
        self.path = path
        self.needed = needed
        super().__init__(f"no space left writing {path} ({needed:,} bytes more needed)")


class SessionError(MeshchatError):
    """A 1:1 session (X3DH set-up, Double Ratchet) refused a message (base class of the session errors)."""


class BadBundle(DecodeError):
    """A prekey bundle is malformed, names another identity, or carries a signature that does not verify."""

    def __init__(self, problem: str) -> None:
        super().__init__("prekey bundle", problem)


class UnknownPrekey(SessionError):
    """A session set-up names a prekey this device no longer has (a one-time prekey already used, a
    signed prekey retired long ago): it cannot be answered, and nothing was stored."""

    def __init__(self, *, kind: str, prekey_id: int) -> None:
        self.kind = kind
        self.prekey_id = prekey_id
        super().__init__(f"no {kind} prekey {prekey_id}: used already, or retired")


class NoSession(SessionError):
    """A ratchet message that no session with its sender can open (its header decrypts under none of
    their header keys) and that carries no set-up to start one."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        super().__init__(f"no session with {peer[-12:]} opens this message")


class TooManySkipped(SessionError):
    """A ratchet message claims a position too far ahead: deriving the skipped keys would cost memory and
    time the sender did not earn. Nothing is derived or stored."""

    def __init__(self, *, jump: int, limit: int) -> None:
        self.jump = jump
        self.limit = limit
        super().__init__(f"ratchet jump of {jump:,} messages; the limit is {limit:,}")


class DeviceError(MeshchatError):
    """Linking, listing or removing a person's devices went wrong (base class of the device errors)."""


class NotPrimary(DeviceError):
    """Only the primary device, which holds the person's root key, signs device lists (links, removals)."""

    def __init__(self) -> None:
        super().__init__("only the primary device (the one holding the root key) can link or remove devices")


class LinkCodeMismatch(DeviceError):
    """The comparison code given does not match the link request's: the request may have been swapped."""

    def __init__(self) -> None:
        super().__init__(
            "the code does not match this link request's: it may have been swapped on its way; "
            "make a new request on the new device and compare again"
        )


class UnknownDevice(DeviceError):
    """No device of ours has this name or key (or several have the name)."""

    def __init__(self, device: str, *, several: bool = False) -> None:
        self.device = device
        why = "several devices have that name; give its PeerId" if several else "no device of yours"
        super().__init__(f"{device}: {why}")


class KeyChanged(ProfileError):
    """An invite names a contact this profile knows under another key: the person's safety number changed
    (a new phone without its old key, or someone else). Compare the new one before accepting it."""

    def __init__(self, *, name: str, old: str, new: str) -> None:
        self.name = name
        self.old = old
        self.new = new
        super().__init__(
            f"the safety number of {name!r} changed: their key was {old}, this invite's is {new}; "
            "compare it with them again before replacing it"
        )


class DocumentError(MeshchatError):
    """A signed document or a co-signing round is wrong (meshchat.documents)."""


class DocumentMismatch(DocumentError):
    """The document is not the one that was signed: its hash differs from the signed hash."""

    def __init__(self, *, signed: str, actual: str) -> None:
        self.signed = signed
        self.actual = actual
        super().__init__(
            f"the document was altered: the signature covers sha-256 {signed}, this document is {actual}"
        )


class SignatureRevoked(DocumentError):
    """The signer revoked this signature (a signed revocation names it)."""

    def __init__(self, *, signer: str, at: float) -> None:
        self.signer = signer
        self.at = at
        super().__init__(f"{signer} revoked this signature at {at:.0f} (unix time)")


class UnknownDocument(DocumentError):
    """No co-signing round with that id is known here."""

    def __init__(self, document: str) -> None:
        self.document = document
        super().__init__(f"no document {document!r} is known here")


class NotASigner(DocumentError):
    """A signature, revocation or request from a key the document does not name as a signer."""

    def __init__(self, *, document: str, key: str) -> None:
        self.document = document
        self.key = key
        super().__init__(f"{key} is not one of the signers of document {document}")


class CredentialError(MeshchatError):
    """A credential or a presentation of one fails a check (meshchat.credentials)."""


class BadDisclosure(CredentialError):
    """A disclosure is altered, not covered by the issuer's signature, duplicated or malformed."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"bad disclosure: {problem}")


class WrongHolder(CredentialError):
    """The presentation is not signed by the key the credential is bound to (or carries no binding)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"not presented by the credential's holder: {problem}")


class ChallengeMismatch(CredentialError):
    """The presentation answers another challenge or another verifier (a replay from elsewhere)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"the presentation does not answer this challenge: {problem}")


class PresentationReplayed(CredentialError):
    """This verifier already accepted this very presentation (a one-way presentation shown twice)."""

    def __init__(self) -> None:
        super().__init__("this presentation was already shown here (a replay)")


class PresentationExpired(CredentialError):
    """A presentation's time window is over (or it claims a time too far in the future)."""

    def __init__(self, *, issued_at: float, now: float, window: float) -> None:
        self.issued_at = issued_at
        self.now = now
        self.window = window
        super().__init__(
            f"the presentation was made at {issued_at:.0f} and is valid for {window:.0f} s; "
            f"it is now {now:.0f}"
        )


class CredentialNotValid(CredentialError):
    """The credential is outside its validity dates (expired or not yet valid)."""

    def __init__(self, *, not_before: float | None, expires: float | None, now: float) -> None:
        self.not_before = not_before
        self.expires = expires
        self.now = now
        span = f"from {not_before or '-'} until {expires or '-'}"
        super().__init__(f"the credential is valid {span} (unix time); it is now {now:.0f}")


class CredentialRevoked(CredentialError):
    """The issuer's status list marks the credential revoked."""

    def __init__(self, *, issuer: str, index: int, list_age: float) -> None:
        self.issuer = issuer
        self.index = index
        self.list_age = list_age
        super().__init__(
            f"{issuer} revoked this credential (status list entry {index}, list {list_age:.0f} s old)"
        )


class UnknownIssuer(CredentialError):
    """The credential's issuer is not one this verifier trusts (or its key cannot be resolved)."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        super().__init__(f"unknown issuer {issuer!r}: not among the issuers this verifier trusts")


class StatusUnknown(CredentialError):
    """The verifier has no status list for the credential's issuer, or only one older than it accepts."""

    def __init__(self, *, issuer: str, list_age: float | None, max_age: float) -> None:
        self.issuer = issuer
        self.list_age = list_age
        self.max_age = max_age
        have = "no status list" if list_age is None else f"a status list {list_age:.0f} s old"
        super().__init__(
            f"cannot tell whether {issuer} revoked it: have {have}, accept at most {max_age:.0f} s"
        )


class DocumentExpired(DocumentError):
    """The co-signing round's deadline (``exp``) has passed: it takes no new signatures."""

    def __init__(self, *, document: str, expired: float, now: float) -> None:
        self.document = document
        self.expired = expired
        self.now = now
        super().__init__(
            f"document {document} stopped taking signatures at {expired:.0f} (unix time); it is now {now:.0f}"
        )


class NotSigned(DocumentError):
    """A revocation of a signature that was never made: this key has not signed the document."""

    def __init__(self, *, document: str, key: str) -> None:
        self.document = document
        self.key = key
        super().__init__(f"{key} has not signed document {document}: there is nothing to revoke")


class UnknownCredential(CredentialError):
    """No credential with that id is held (or was issued) here."""

    def __init__(self, credential: str) -> None:
        self.credential = credential
        super().__init__(f"no credential {credential!r} is known here")


class NoPendingRequest(CredentialError):
    """An issuer was asked to issue without a request from the holder to bind the credential to."""

    def __init__(self, *, holder: str, vct: str) -> None:
        self.holder = holder
        self.vct = vct
        super().__init__(
            f"no pending request from {holder} for a {vct!r} credential: the holder must ask first "
            f"(meshchat credential request ISSUER --type {vct})"
        )


# --- issue 19, contacts: verification, petnames, blocking (helper CONTACTS) ---------------------------


class KeyNotConfirmed(ProfileError):
    """A message to a contact whose key changed (``Verification.CHANGED``): refused until the user
    accepts the new key (``Contacts.accept_key``) or verifies it (``Contacts.verify``)."""

    def __init__(self, name: str, fingerprint: str) -> None:
        self.name = name
        self.fingerprint = fingerprint
        super().__init__(
            f"the safety number of {name!r} changed (their key is now {fingerprint}): compare it with "
            f"them, then accept the new key (meshchat contact accept-key) or mark it verified before "
            "sending"
        )


class NameTaken(ProfileError):
    """A contact's new name is the name another contact already shows under (names find contacts)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"another contact is already called {name!r}; choose another name")


class BadPetname(ProfileError):
    """A name chosen for a contact that cannot be one: empty, too long, or with control characters."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"not a usable name for a contact: {problem}")


class UnknownMessage(MeshchatError):
    """An operation names a message this profile has not received (``Node.mark_read_id``)."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(f"no received message has the id {message_id}")


# --- a transport that could not start -------------------------------------------


class TransportUnavailable(NetworkError):
    """A transport could not start (a package, program or certificate it needs is missing or
    unusable): its addresses are skipped, the node's other transports go on."""

    def __init__(self, transport: str, missing: str, detail: str, *, address: str | None = None) -> None:
        self.transport = transport
        self.missing = missing
        self.detail = detail
        self.address = address
        where = f" on {address}" if address is not None else ""
        super().__init__(f"the {transport} transport{where}", f"needs {missing}: {detail}")

    def at(self, address: str) -> TransportUnavailable:
        """The same failure, for listen address ``address``."""
        return TransportUnavailable(self.transport, self.missing, self.detail, address=address)
