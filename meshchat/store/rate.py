"""Token buckets by key (a peer, an inbox tag), in a bounded map. Sans-IO: the caller passes the time.

Each key's bucket holds up to ``burst`` tokens and refills at ``rate`` per second; taking one when
none is left is refused. The map keeps at most ``max_keys`` buckets: when it is full, buckets that
have refilled completely are forgotten (a full bucket is what a new key gets anyway, so forgetting it
changes nothing); if none has, the oldest one is, which can only make a limit more lenient for that
key, never stricter, and never lets the map grow. Making room scans the map (``max_keys`` entries, a
few milliseconds at 10,000), only when a new key comes while it is full.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBuckets"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """Per-key rate limits (see the module docstring)."""

    def __init__(self, *, rate: float, burst: float, max_keys: int) -> None:
        """``rate`` tokens per second, up to ``burst``, for at most ``max_keys`` keys at a time."""
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate > 0, burst >= 1 and max_keys >= 1 are required")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[object, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: object, now: float) -> bool:
        """Take one token from ``key``'s bucket at time ``now``: False (nothing taken) if it is empty."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._make_room(now)
            bucket = self._buckets[key] = _Bucket(tokens=self.burst, at=now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _make_room(self, now: float) -> None:
        refilled = [
            key for key, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst
        ]
        for key in refilled:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]  # the oldest: a more lenient limit for it
