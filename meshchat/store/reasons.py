"""Why the store-and-forward core set something aside: the closed sets its statistics are keyed by.

Each is a ``StrEnum`` whose values are the human-readable words the statistics always used, so a
``dict[DiscardReason, int]`` prints, compares and serialises (JSON) like the old string-keyed counters
did, and nobody parses a reason out of a string.
"""

from __future__ import annotations

from enum import StrEnum

from meshchat.errors import (
    BadSignature,
    DecodeError,
    DecryptionFailed,
    Expired,
    MeshchatError,
    Replay,
    TooLarge,
    UnsupportedVersion,
)

__all__ = ["DiscardReason", "RejectReason", "reject_reason"]


class DiscardReason(StrEnum):
    """Why an envelope, a receipt or a mailbox's answer was set aside (``MessengerStatistics.discarded``)."""

    #: Not a well-formed envelope (from gossip).
    MALFORMED = "malformed"
    #: Addressed to an inbox tag that is not ours (a relay's everyday case).
    NOT_OURS = "not ours"
    #: Expires later than the longest TTL allows: would pin a seen entry too long.
    EXPIRY_TOO_FAR = "expiry too far ahead"
    #: Already accepted (or twice in one batch).
    DUPLICATE = "duplicate"
    #: Local storage failed while accepting it (it will come again).
    STORAGE_FAILED = "storage failed"
    #: A receipt names a message we never sent.
    RECEIPT_UNKNOWN = "receipt for an unknown message"
    #: A receipt signed by someone other than the message's recipient.
    RECEIPT_WRONG_SIGNER = "receipt signed by someone else"
    #: More receipts waited for a mailbox than ``MAX_UNSTORED_RECEIPTS``: the oldest was dropped.
    RECEIPT_TOO_MANY = "receipt never stored (too many waiting)"
    #: A receipt expired before any mailbox stored it.
    RECEIPT_EXPIRED = "receipt expired unstored"
    #: A mailbox call failed (unreachable, timed out, garbage frame).
    CALL_FAILED = "mailbox call failed"
    #: A mailbox answered with an error (by code in ``MessengerStatistics.mailbox_errors``).
    MAILBOX_ERROR = "mailbox error"
    #: A mailbox answered a sync step that was already abandoned (late, harmless).
    STALE_REPLY = "mailbox reply to an abandoned sync"
    # --- a mailbox's lies: each one penalises the mailbox (``MAILBOX_PENALTY``) -------------------
    #: A mailbox answered with a response of the wrong kind.
    WRONG_ANSWER = "mailbox answered the wrong question"
    #: A mailbox's reconciliation message was garbage.
    BAD_RECONCILE = "mailbox sent a bad reconcile message"
    #: A mailbox's reconciliation went on past ``MAX_RECONCILE_ROUNDS``.
    ENDLESS_RECONCILE = "mailbox reconciliation did not end"
    #: A fetched envelope whose id was not asked for.
    UNASKED = "mailbox sent envelopes not asked for"
    #: A fetched item that is not an envelope (empty, trailing bytes, wrong map ...).
    FETCHED_MALFORMED = "mailbox sent a malformed envelope"
    #: A fetched envelope for a tag the sync did not name.
    FETCHED_WRONG_TAG = "mailbox sent an envelope for another tag"
    #: A store result for an envelope that was not in the request (or a second one).
    STORED_UNASKED = "mailbox acknowledged what it was not sent"
    #: A store request answered without a result for each envelope.
    STORED_MISSING = "mailbox left out store results"
    #: A withdraw answered with more deletions than ids asked.
    DELETED_TOO_MANY = "mailbox deleted more than asked"
    # --- stamps (issue 18) ------------------------------------------------------------------------
    #: A chat from a stranger (not a contact, not a group member, never talked with) without a valid
    #: stamp at our cost: opened, marked seen, dropped unreceipted (``Messenger(known=...)``).
    UNSTAMPED = "stranger's chat without a stamp"


class RejectReason(StrEnum):
    """Why an envelope with our tag failed to open or verify (``MessengerStatistics.rejected``); the
    values are the error class names the statistics always showed."""

    #: The envelope or its payload is malformed.
    DECODE_ERROR = "DecodeError"
    #: Over a size limit.
    TOO_LARGE = "TooLarge"
    #: An unknown version.
    UNSUPPORTED_VERSION = "UnsupportedVersion"
    #: Not sealed to us, or altered.
    DECRYPTION_FAILED = "DecryptionFailed"
    #: The sender's signature does not verify.
    BAD_SIGNATURE = "BadSignature"
    #: Past its expiry.
    EXPIRED = "Expired"
    #: Seen before.
    REPLAY = "Replay"
    #: Any other typed error of the opening code.
    OTHER = "other"


_REJECTS: tuple[tuple[type[MeshchatError], RejectReason], ...] = (
    # Subclasses before their bases.
    (TooLarge, RejectReason.TOO_LARGE),
    (UnsupportedVersion, RejectReason.UNSUPPORTED_VERSION),
    (DecodeError, RejectReason.DECODE_ERROR),
    (DecryptionFailed, RejectReason.DECRYPTION_FAILED),
    (BadSignature, RejectReason.BAD_SIGNATURE),
    (Expired, RejectReason.EXPIRED),
    (Replay, RejectReason.REPLAY),
)


def reject_reason(error: MeshchatError) -> RejectReason:
    """The reason ``error`` stands for."""
    for kind, reason in _REJECTS:
        if isinstance(error, kind):
            return reason
    return RejectReason.OTHER
