"""Bytes held for peers' unfinished frames, bounded per peer and in total.

What it is: the accounting behind every length-prefixed stream meshchat reads (the pubsub streams in
``meshchat.net.driver``, the mailbox calls in ``meshchat.net.mailbox``). A frame is read as it arrives
and kept until its last byte has come, up to the frame limit (1 MiB) per stream. Without a bound, a peer
that opens many streams and stalls each one in the middle of a large frame makes the node hold a frame
per stream for as long as the stall timeout allows (100 such streams held 100 MiB). Each reader charges
what it holds to its peer in a ``BufferBudget``; growth beyond the peer's share or the total is refused
with ``QuotaExceeded``, and the reader resets its stream (its caller counts that as a drop).

What it is not: it does not bound what the muxer buffers below a stream (``meshchat.net.host``'s
``WindowedYamux`` holds each stream to its window and ``MAX_STREAM_BUFFER``) nor what is queued for
sending (``meshchat.net.driver.SEND_QUEUE_BYTES``).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshchat.errors import QuotaExceeded
from meshchat.gossip.rpc import FrameDecoder

__all__ = ["MAX_BUFFERED_PER_PEER", "MAX_BUFFERED_TOTAL", "BudgetStatistics", "BufferBudget", "FrameReader"]

_MIB = 1024 * 1024
#: Bytes of unfinished frames one peer may make a node hold, across all its streams: room for a
#: maximum-size frame (1 MiB, the RPC and mailbox limits) on its pubsub stream and on three mailbox
#: calls at once. An honest peer sends one frame at a time per stream, most of them envelope-sized.
MAX_BUFFERED_PER_PEER = 4 * _MIB
#: Bytes of unfinished frames held for all peers together: what a small device (a phone, a Raspberry
#: Pi) can spare for others' half-sent frames. 64 peers sending a maximum-size frame at the same moment,
#: or about a thousand sending 64 KiB envelopes; a frame refused here is sent again by an honest peer.
MAX_BUFFERED_TOTAL = 64 * _MIB


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetStatistics:
    """A snapshot of a ``BufferBudget``."""

    #: Bytes of unfinished frames held now, for all peers.
    buffered: int
    #: The most ever held at once.
    peak: int
    #: Peers holding some now.
    peers: int
    #: Growths refused because a peer's share or the total would have been exceeded.
    refused: int


class BufferBudget:
    """How many bytes of unfinished frames each peer makes this node hold, within ``per_peer`` each and
    ``total`` together."""

    def __init__(self, *, per_peer: int = MAX_BUFFERED_PER_PEER, total: int = MAX_BUFFERED_TOTAL) -> None:
        self.per_peer = per_peer
        self.total = total
        # Peers holding bytes now (an entry is deleted at 0), so at most one per connected peer.
        self._held: dict[str, int] = {}
        self._buffered = 0
        self._peak = 0
        self._refused = 0

    def resize(self, peer: str, before: int, after: int) -> None:
        """A reader of ``peer`` went from holding ``before`` bytes to ``after``. Shrinking always
        succeeds; growing beyond the peer's share or the total raises ``QuotaExceeded`` and changes
        nothing (the reader should then drop what it holds and ``resize(peer, before, 0)``)."""
        grow = after - before
        held = self._held.get(peer, 0)
        if grow > 0:
            if held + grow > self.per_peer:
                self._refused += 1
                raise QuotaExceeded(what=f"bytes buffered for peer {peer}", used=held, limit=self.per_peer)
            if self._buffered + grow > self.total:
                self._refused += 1
                what = "bytes buffered for all peers"
                raise QuotaExceeded(what=what, used=self._buffered, limit=self.total)
        held += grow
        if held > 0:
            self._held[peer] = held
        else:
            self._held.pop(peer, None)
        self._buffered += grow
        self._peak = max(self._peak, self._buffered)

    def held(self, peer: str) -> int:
        """Bytes held for ``peer`` now."""
        return self._held.get(peer, 0)

    def statistics(self) -> BudgetStatistics:
        """A snapshot of the counters."""
        return BudgetStatistics(
            buffered=self._buffered, peak=self._peak, peers=len(self._held), refused=self._refused
        )


class FrameReader:
    """A ``FrameDecoder`` whose unfinished bytes are charged to ``peer`` in ``budget``.

    ``feed`` raises what the decoder raises (``DecodeError``, ``TooLarge``) and ``QuotaExceeded`` when
    the budget refuses what the chunk would leave unfinished; after any of these the stream cannot go
    on. Call ``release`` when the stream ends, whatever the reason (it is idempotent).
    """

    __slots__ = ("_budget", "_decoder", "_held", "_peer")

    def __init__(self, budget: BufferBudget, peer: str, *, max_frame_size: int) -> None:
        self._budget = budget
        self._peer = peer
        self._decoder = FrameDecoder(max_frame_size=max_frame_size)
        self._held = 0

    @property
    def pending(self) -> bool:
        """True while part of a frame has been read and the rest has not."""
        return self._decoder.pending

    @property
    def held(self) -> int:
        """Bytes of the unfinished frame held now."""
        return self._held

    def feed(self, chunk: bytes) -> list[bytes]:
        """The frames ``chunk`` completes, in order; what it leaves unfinished is charged."""
        frames = self._decoder.feed(chunk)
        after = self._held + len(chunk) - sum(_framed_size(len(f)) for f in frames)
        try:
            self._budget.resize(self._peer, self._held, after)
        except QuotaExceeded:
            self.release()
            raise
        self._held = after
        return frames

    def release(self) -> None:
        """Give back what this reader holds (its stream ended)."""
        self._budget.resize(self._peer, self._held, 0)
        self._held = 0


def _framed_size(length: int) -> int:
    """Bytes a frame with a body of ``length`` takes on the wire: its unsigned-varint prefix and body."""
    return max(1, (length.bit_length() + 6) // 7) + length
