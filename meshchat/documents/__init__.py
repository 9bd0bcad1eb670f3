"""Signed documents: detached EdDSA signatures, co-signing rounds with an M-of-N rule, witnesses."""

from meshchat.documents.bundle import BundleReport, verify_bundle
from meshchat.documents.cosign import (
    MAX_DOCUMENTS,
    WITNESS_ANSWERS_PER_HOUR,
    CosignCore,
    Refusal,
)
from meshchat.documents.events import (
    Action,
    DocumentCompleted,
    DocumentEvent,
    DocumentProposed,
    DocumentRevoked,
    DocumentSigned,
    DocumentStamped,
    DocumentState,
    DocumentView,
    SendControl,
)
from meshchat.documents.payload import (
    MAX_INLINE,
    MAX_SIGNERS,
    MAX_WITNESSES,
    ControlKind,
    Proposal,
    is_document_control,
)
from meshchat.documents.signature import (
    SIGNATURE_TYP,
    SIGNATURE_VERSION,
    SignatureInfo,
    digest_bytes,
    digest_file,
    digest_stream,
    parse_signature,
    sign_digest,
    sign_document,
    verify_document,
)
from meshchat.documents.sqlite import DOCUMENTS_FILE, DocumentStore

__all__ = [
    "DOCUMENTS_FILE",
    "MAX_DOCUMENTS",
    "MAX_INLINE",
    "MAX_SIGNERS",
    "MAX_WITNESSES",
    "SIGNATURE_TYP",
    "SIGNATURE_VERSION",
    "WITNESS_ANSWERS_PER_HOUR",
    "Action",
    "BundleReport",
    "ControlKind",
    "CosignCore",
    "DocumentCompleted",
    "DocumentEvent",
    "DocumentProposed",
    "DocumentRevoked",
    "DocumentSigned",
    "DocumentStamped",
    "DocumentState",
    "DocumentStore",
    "DocumentView",
    "Proposal",
    "Refusal",
    "SendControl",
    "SignatureInfo",
    "digest_bytes",
    "digest_file",
    "digest_stream",
    "is_document_control",
    "parse_signature",
    "sign_digest",
    "sign_document",
    "verify_bundle",
    "verify_document",
]
