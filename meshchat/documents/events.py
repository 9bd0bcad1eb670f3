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
