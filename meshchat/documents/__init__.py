"""Signed documents: detached EdDSA signatures, co-signing rounds with an M-of-N rule, witnesses."""

from meshchat.documents.signature import (
    SIGNATURE_TYP,
    SIGNATURE_VERSION,
    SignatureInfo,
    digest_bytes,
    digest_file,
    parse_signature,
    sign_digest,
    sign_document,
    verify_document,
)

__all__ = [
    "SIGNATURE_TYP",
    "SIGNATURE_VERSION",
    "SignatureInfo",
    "digest_bytes",
    "digest_file",
    "parse_signature",
    "sign_digest",
    "sign_document",
    "verify_document",
]
