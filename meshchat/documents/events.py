"""What ``CosignCore`` returns: controls to send, events for the application, and the round's view."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from meshchat.documents.payload import Proposal
from meshchat.documents.signature import SignatureInfo
from meshchat.identity import PublicIdentity

__all__ = [
    "Action",
    "DocumentCompleted",
    "DocumentEvent",
    "DocumentProposed",
    "DocumentRevoked",
    "DocumentSigned",
    "DocumentStamped",
    "DocumentState",
    "DocumentView",
    "Refusal",
    "SendControl",
]


class DocumentState(Enum):
    """Where a co-signing round is."""

    #: Fewer valid, unrevoked signatures than the threshold, and still taking signatures.
    OPEN = "open"
    #: At least ``threshold`` valid, unrevoked signatures.
    COMPLETE = "complete"
    #: Not complete and past its deadline: it takes no new signatures.
    EXPIRED = "expired"


class Refusal(Enum):
    """Why a control was refused (the keys of ``CosignCore.counts``, by value)."""

    #: Not a well-formed control or JWS.
    MALFORMED = "malformed"
    #: A format version this meshchat does not read.
    UNKNOWN_VERSION = "unknown version"
    #: A JWS whose signature does not verify.
    BAD_SIGNATURE = "bad signature"
    #: A proposal sent by someone other than its proposer.
    NOT_PROPOSER = "not from the proposer"
    #: A proposal that does not name this profile.
    NOT_PARTICIPANT = "not a participant"
    #: An inline document whose hash or size differs from the proposal's.
    CONTENT_MISMATCH = "content mismatch"
    #: ``MAX_DOCUMENTS`` rounds kept and none finished, or ``MAX_OPEN_PER_PROPOSER`` open from this one.
    TOO_MANY_DOCUMENTS = "too many documents"
    #: A signature or revocation by a key the round does not list as a signer.
    NOT_A_SIGNER = "not a signer"
    #: A signature whose hash or size is not the round's document.
    WRONG_DOCUMENT = "wrong document"
    #: A signature made after the round's deadline.
    AFTER_DEADLINE = "after the deadline"
    #: A signer's second, different signature (the first stays).
    SECOND_SIGNATURE = "second signature"
    #: A signer's second, different revocation (the first stays).
    SECOND_REVOCATION = "second revocation"
    #: A stamp by a key that is not a witness, or a witness request to a profile that is not one.
    NOT_A_WITNESS = "not a witness"
    #: A witness request sent by someone other than the signature's signer.
    NOT_REQUESTER = "request not from the signer"
    #: A witness request from a peer that is not a contact.
    NOT_CONTACT = "request from a stranger"
    #: A witness request for a signature claiming a time past the witness's clock + ``CLOCK_SKEW``.
    FUTURE = "signed in the future"
    #: A requester over ``WITNESS_ANSWERS_PER_HOUR``.
    RATE = "witness rate"
    #: ``MAX_ORPHANS`` (or the sender's share) waiting already.
    ORPHANS_FULL = "too many waiting"
    #: A stamp beyond the quorum's earliest ``quorum + STAMP_SLACK`` (not kept).
    EXTRA_STAMP = "extra stamp"
    #: Not refused: the same control again (idempotent, nothing changed).
    DUPLICATE = "duplicate"
    #: Not refused: kept until the proposal or signature it names arrives.
    WAITING = "waiting"


@dataclass(frozen=True, slots=True)
class DocumentView:
    """What a participant knows about a round."""

    proposal: Proposal
    state: DocumentState
    #: Valid signatures not revoked, in signer order.
    signatures: tuple[SignatureInfo, ...]
    #: Signers who revoked their signature, and when (their clock).
    revoked: tuple[tuple[PublicIdentity, float], ...]
    #: Signers without a valid, unrevoked signature.
    pending: tuple[PublicIdentity, ...]
    #: Signer did -> the witness times of its signature, earliest first.
    stamps: dict[str, tuple[float, ...]]
    #: Signer did -> "signed no later than": the quorum-th earliest stamp (only once quorum stamps came).
    signed_by: dict[str, float]
    #: Whether this profile holds the document's bytes (inline in the proposal).
    has_content: bool
    #: Whether this profile's own valid, unrevoked signature is among ``signatures``.
    signed_by_me: bool

    @property
    def doc_id(self) -> str:
        """The round's id."""
        return self.proposal.doc_id


@dataclass(frozen=True, slots=True)
class SendControl:
    """Send ``body`` to ``recipient`` as a 1:1 control message."""

    recipient: PublicIdentity
    body: bytes


@dataclass(frozen=True, slots=True)
class DocumentProposed:
    """A round this profile takes part in was proposed (by it or by a peer)."""

    view: DocumentView


@dataclass(frozen=True, slots=True)
class DocumentSigned:
    """A signer's valid signature was added."""

    doc_id: str
    signer: PublicIdentity


@dataclass(frozen=True, slots=True)
class DocumentRevoked:
    """A signer revoked its signature."""

    doc_id: str
    signer: PublicIdentity


@dataclass(frozen=True, slots=True)
class DocumentCompleted:
    """The round reached its threshold."""

    doc_id: str


@dataclass(frozen=True, slots=True)
class DocumentStamped:
    """A witness stamped a signer's signature."""

    doc_id: str
    signer: PublicIdentity
    witness: PublicIdentity


DocumentEvent: TypeAlias = (
    DocumentProposed | DocumentSigned | DocumentRevoked | DocumentCompleted | DocumentStamped
)
Action: TypeAlias = SendControl | DocumentEvent
