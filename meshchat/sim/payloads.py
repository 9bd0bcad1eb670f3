"""What travels through a simulation: real sealed envelopes, and how each node validates them.

Every node has a real ``Identity`` drawn from the run's seed, so its PeerId is a real libp2p PeerId and
envelopes sealed to it are real envelopes (``meshchat.crypto.seal``, with the seeded RNG as the source
of nonces and ephemeral keys: the same seed seals the same bytes). Deterministic keys are fine here
and nowhere else.

Validators are what every router calls on a new message id:

- ``EnvelopeValidator`` does what a relay does (DESIGN.md, "Envelope and message flow" step 4): decode
  the envelope (size, version, structure, types) and check its expiry against the simulated unix time.
  It cannot open the envelope (only the recipient can), so it does not.
- ``FastPathValidator`` checks the size and the version byte and counts the call: for measuring the
  protocol alone. The version byte keeps a flooder's garbage detectable without parsing anything.

Decoding an envelope and hashing it into its message id are pure functions of its bytes, and in a
simulation the same bytes object reaches a thousand routers. ``EnvelopeValidator`` therefore decodes
each distinct envelope once and checks its expiry on every call, and ``MessageIds`` hashes each
distinct envelope once: the verdicts and ids are exactly those of doing the work every time (a test
checks it), the wall time is not. Both memos are bounded: when full they start over.

Both count their verdicts. Neither is a mailbox or a recipient: nothing here opens envelopes.
"""

from __future__ import annotations

import random

from meshchat.crypto import seal
from meshchat.errors import DecodeError
from meshchat.gossip import ValidationResult
from meshchat.gossip.messages import MessageId, Topic
from meshchat.identity import SEED_SIZE, Identity
from meshchat.sim.clock import VirtualClock
from meshchat.wire import ENVELOPE_VERSION, MAX_ENVELOPE_SIZE, decode_envelope, message_id

__all__ = [
    "GARBAGE_SIZE",
    "MEMO_ENTRIES",
    "EnvelopeFactory",
    "EnvelopeValidator",
    "FastPathValidator",
    "MessageIds",
    "make_identities",
]

#: Size of a flooder's invalid message, bytes: that of a short sealed envelope, so it costs a relay
#: what a real one would.
GARBAGE_SIZE = 367
#: First byte of every flooder message: never a valid envelope version, so even the fast path spots it.
GARBAGE_FIRST_BYTE = 0xFF
assert GARBAGE_FIRST_BYTE != ENVELOPE_VERSION
#: Distinct envelopes a memo keeps before it starts over: far more than are in flight at once
#: (a message stops travelling within seconds), and ~50 MiB of chat-sized envelopes.
MEMO_ENTRIES = 100_000


def make_identities(count: int, rng: random.Random) -> list[Identity]:
    """``count`` identities from seeds drawn from ``rng`` (about 0.1 ms each)."""
    return [Identity(rng.randbytes(SEED_SIZE)) for _ in range(count)]


class EnvelopeFactory:
    """Seals the bodies the scenario publishes; everything random comes from one seeded RNG."""

    __slots__ = ("_body_size", "_clock", "_rng")

    def __init__(self, *, clock: VirtualClock, rng: random.Random, body_size: int) -> None:
        """Seal ``body_size``-byte bodies at the simulated unix time of ``clock``."""
        self._clock = clock
        self._rng = rng
        self._body_size = body_size

    def sealed(self, sender: Identity, recipient: Identity) -> bytes:
        """A real envelope from ``sender`` to ``recipient``, sealed now."""
        body = self._rng.randbytes(self._body_size)
        return seal(
            sender, recipient.public, body, wall_now=self._clock.wall, random_bytes=self._rng.randbytes
        )

    def garbage(self) -> bytes:
        """Bytes that look like an envelope to nobody: a flooder's message."""
        return bytes([GARBAGE_FIRST_BYTE]) + self._rng.randbytes(GARBAGE_SIZE - 1)


class MessageIds:
    """``meshchat.wire.message_id`` with a memo shared by every router of a run."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        """Start with an empty memo."""
        self._ids: dict[bytes, MessageId] = {}

    def __call__(self, data: bytes) -> MessageId:
        """The message id of ``data``."""
        mid = self._ids.get(data)  # bytes cache their hash: a repeat costs one dict lookup
        if mid is None:
            if len(self._ids) >= MEMO_ENTRIES:
                self._ids.clear()
            mid = self._ids[data] = message_id(data)
        return mid


class EnvelopeValidator:
    """A relay's check: the envelope decodes and has not expired at the simulated unix time."""

    __slots__ = ("_clock", "_expiry", "accepted", "rejected")

    def __init__(self, clock: VirtualClock) -> None:
        """Check expiry against ``clock.wall``."""
        self._clock = clock
        self._expiry: dict[bytes, int | None] = {}  # envelope -> expiry, None if it does not decode
        #: Messages accepted so far, over all nodes.
        self.accepted = 0
        #: Messages rejected so far.
        self.rejected = 0

    def __call__(self, _topic: Topic, data: bytes, _mid: MessageId) -> ValidationResult:
        """ACCEPT a well-formed, unexpired envelope; REJECT anything else."""
        memo = self._expiry
        if data in memo:
            expiry = memo[data]
        else:
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            try:
                expiry = memo[data] = decode_envelope(data).expiry
            except DecodeError:  # TooLarge and UnsupportedVersion are DecodeErrors too
                expiry = memo[data] = None
        if expiry is None:
            self.rejected += 1
            return ValidationResult.REJECT
        if expiry < self._clock.wall:
            self.rejected += 1
            return ValidationResult.REJECT
        self.accepted += 1
        return ValidationResult.ACCEPT


class FastPathValidator:
    """The counted fast path: size and version byte only."""

    __slots__ = ("accepted", "rejected")

    def __init__(self) -> None:
        """Start counting at zero."""
        #: Messages accepted so far, over all nodes.
        self.accepted = 0
        #: Messages rejected so far.
        self.rejected = 0

    def __call__(self, _topic: Topic, data: bytes, _mid: MessageId) -> ValidationResult:
        """ACCEPT anything of envelope size that starts with the envelope version byte."""
        if 0 < len(data) <= MAX_ENVELOPE_SIZE and data[0] == ENVELOPE_VERSION:
            self.accepted += 1
            return ValidationResult.ACCEPT
        self.rejected += 1
        return ValidationResult.REJECT
