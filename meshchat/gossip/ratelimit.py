"""A token bucket: how much one peer may send the router per second, with a burst allowance.

What it is: the per-peer rate limit of the gossip router (``GossipConfig.max_messages_per_second`` and
``max_control_per_second``): each peer has one bucket for published messages and one for control
entries; what arrives with the bucket empty is dropped and counted (``DropReason.MESSAGE_RATE_LIMIT``,
``CONTROL_RATE_LIMIT``). Per-heartbeat limits (IHAVE, IDONTWANT) bound particular entries; this bounds
the work one peer can make the router do in any second, whatever it sends. No clock: ``now`` comes in.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        """A full bucket at ``now``."""
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, not {rate}, {burst}")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, count: int, now: float) -> int:
        """Spend up to ``count`` tokens at ``now``; return how many there were (``count`` if enough)."""
        tokens = self._tokens
        if now > self._stamp:
            tokens = min(self._burst, tokens + (now - self._stamp) * self._rate)
            self._stamp = now
        if tokens >= count:
            self._tokens = tokens - count
            return count
        granted = int(tokens)
        self._tokens = tokens - granted
        return granted

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (without spending any)."""
        return min(self._burst, self._tokens + max(0.0, now - self._stamp) * self._rate)
