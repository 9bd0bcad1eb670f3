"""Credentials with selective disclosure: SD-JWT (RFC 9901) issue, present, verify; status lists.

- :mod:`.sdjwt`: disclosures, digests, decoys, the compact form (no keys, no policy).
- :mod:`.credential`: :func:`issue`, :func:`present`, :func:`present_one_way`, :class:`Verifier`.
- :mod:`.status`: Token Status Lists (issuer :class:`StatusList`, verifier :class:`StatusCache`).
- :mod:`.qr`: the compact binary QR payload (``MCVP1:`` + base45).
"""

from __future__ import annotations

from meshchat.credentials.credential import (
    CHALLENGE_LIFETIME,
    CLOCK_SKEW,
    HOLDER_KEY_INFO,
    ISSUER_TYP,
    KB_TYP,
    KEY_ID_SIZE,
    MAX_CHALLENGES,
    MAX_ISSUER_KEYS,
    MAX_REPLAY_ENTRIES,
    NONCE_SIZE,
    ONE_WAY_AUDIENCE,
    ONE_WAY_WINDOW,
    PREDICATES,
    RESERVED_CLAIMS,
    Credential,
    Verified,
    Verifier,
    holder_key,
    issue,
    predicates_for,
    present,
    present_one_way,
)
from meshchat.credentials.qr import QR_PREFIX, from_qr_text, qr_code, to_qr_text
from meshchat.credentials.status import (
    MAX_CACHED_LISTS,
    STATUS_TYP,
    STATUS_URI_PREFIX,
    StatusCache,
    StatusList,
    StatusRef,
    StatusToken,
    check_status_message,
    parse_status_token,
    status_topic,
    status_uri,
)

__all__ = [
    "CHALLENGE_LIFETIME",
    "CLOCK_SKEW",
    "HOLDER_KEY_INFO",
    "ISSUER_TYP",
    "KB_TYP",
    "KEY_ID_SIZE",
    "MAX_CACHED_LISTS",
    "MAX_CHALLENGES",
    "MAX_ISSUER_KEYS",
    "MAX_REPLAY_ENTRIES",
    "NONCE_SIZE",
    "ONE_WAY_AUDIENCE",
    "ONE_WAY_WINDOW",
    "PREDICATES",
    "QR_PREFIX",
    "RESERVED_CLAIMS",
    "STATUS_TYP",
    "STATUS_URI_PREFIX",
    "Credential",
    "StatusCache",
    "StatusList",
    "StatusRef",
    "StatusToken",
    "Verified",
    "Verifier",
    "check_status_message",
    "from_qr_text",
    "holder_key",
    "issue",
    "parse_status_token",
    "predicates_for",
    "present",
    "present_one_way",
    "qr_code",
    "status_topic",
    "status_uri",
    "to_qr_text",
]
