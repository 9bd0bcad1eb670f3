"""Link latency distributions: fixed, uniform and log-normal one-way delays, and their text form.

A model is sampled once per connection, when it opens, for that link's base one-way delay; per-packet
jitter is added by ``meshchat.sim.network``. The text form is what ``meshchat sim --latency`` takes:
``80ms`` (fixed), ``50-150ms`` (uniform), ``lognormal:80ms:0.5`` (median, sigma). Units are ``ms`` or
``s``; a bare number means milliseconds.

This is not a model of congestion or queueing (bandwidth queueing lives in the network), only of
propagation and routing delay between two hosts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TypeAlias

from meshchat.sim.errors import ScenarioError

__all__ = ["FixedLatency", "LatencyModel", "LogNormalLatency", "UniformLatency", "parse_latency"]

#: A log-normal sample is capped at this multiple of its median. Real paths have heavy tails, but an
#: unbounded draw (1 in 10^9 is 20x the median at sigma 0.7) would only stretch the drain period.
LOG_NORMAL_CAP_FACTOR = 20.0
#: Log-normal sigma when none is given: the slowest 1 % of links are ~3x the median.
DEFAULT_LOG_NORMAL_SIGMA = 0.5
#: Longest one-way delay a model may describe, seconds: a geostationary satellite hop is ~0.27 s, so 10 s
#: is a typo, not a network.
MAX_LATENCY = 10.0


def _check_seconds(knob: str, value: float) -> None:
    if not (math.isfinite(value) and 0 <= value <= MAX_LATENCY):
        raise ScenarioError(knob, f"{value} s is not between 0 and {MAX_LATENCY} s")


@dataclass(frozen=True, slots=True)
class FixedLatency:
    """Every link has the same one-way delay."""

    #: One-way delay, seconds.
    seconds: float

    def __post_init__(self) -> None:
        _check_seconds("latency", self.seconds)

    def sample(self, _rng: random.Random) -> float:
        """A link's one-way delay, seconds."""
        return self.seconds

    @property
    def minimum(self) -> float:
        """The smallest delay this model can produce."""
        return self.seconds

    def describe(self) -> str:
        """The text form (``parse_latency`` reads it back)."""
        return f"{_ms(self.seconds)}ms"


@dataclass(frozen=True, slots=True)
class UniformLatency:
    """One-way delays drawn uniformly from ``[low, high]``."""

    #: Shortest delay, seconds.
    low: float
    #: Longest delay, seconds.
    high: float

    def __post_init__(self) -> None:
        _check_seconds("latency", self.low)
        _check_seconds("latency", self.high)
        if self.low > self.high:
            raise ScenarioError("latency", f"range {self.low}-{self.high} s runs backwards")

    def sample(self, rng: random.Random) -> float:
        """A link's one-way delay, seconds."""
        return rng.uniform(self.low, self.high)

    @property
    def minimum(self) -> float:
        """The smallest delay this model can produce."""
        return self.low

    def describe(self) -> str:
        """The text form (``parse_latency`` reads it back)."""
        return f"{_ms(self.low)}-{_ms(self.high)}ms"


@dataclass(frozen=True, slots=True)
class LogNormalLatency:
    """One-way delays whose logarithm is normal: most links near the median, a long slow tail."""

    #: Median delay, seconds.
    median: float
    #: Standard deviation of the natural logarithm (0.5: the slowest 1 % are ~3x the median).
    sigma: float = DEFAULT_LOG_NORMAL_SIGMA

    def __post_init__(self) -> None:
        _check_seconds("latency", self.median)
        if self.median <= 0:
            raise ScenarioError("latency", "a log-normal median must be positive")
        if not (math.isfinite(self.sigma) and 0 <= self.sigma <= 3):
            raise ScenarioError("latency", f"log-normal sigma {self.sigma} is not between 0 and 3")

    def sample(self, rng: random.Random) -> float:
        """A link's one-way delay, seconds."""
        return min(rng.lognormvariate(math.log(self.median), self.sigma), self.median * LOG_NORMAL_CAP_FACTOR)

    @property
    def minimum(self) -> float:
        """The smallest delay this model can produce (a log-normal has no positive floor)."""
        return 0.0

    def describe(self) -> str:
        """The text form (``parse_latency`` reads it back)."""
        return f"lognormal:{_ms(self.median)}ms:{self.sigma:g}"


LatencyModel: TypeAlias = FixedLatency | UniformLatency | LogNormalLatency


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}"


def _seconds(text: str) -> float:
    text = text.strip().lower()
    scale = 0.001
    if text.endswith("ms"):
        text = text[:-2]
    elif text.endswith("s"):
        text, scale = text[:-1], 1.0
    try:
        value = float(text)
    except ValueError:
        raise ScenarioError("latency", f"{text!r} is not a number") from None
    return value * scale


def parse_latency(text: str) -> LatencyModel:
    """Read ``80ms``, ``50-150ms`` (also ``50ms-150ms``, ``0.05-0.15s``) or ``lognormal:80ms[:0.5]``."""
    text = text.strip()
    if text.lower().startswith("lognormal:"):
        parts = text.split(":")[1:]
        if not 1 <= len(parts) <= 2:
            raise ScenarioError("latency", f"expected lognormal:MEDIAN[:SIGMA], not {text!r}")
        try:
            sigma = float(parts[1]) if len(parts) == 2 else DEFAULT_LOG_NORMAL_SIGMA
        except ValueError:
            raise ScenarioError("latency", f"sigma {parts[1]!r} is not a number") from None
        return LogNormalLatency(_seconds(parts[0]), sigma)
    if "-" in text:
        low, _, high = text.partition("-")
        tail = high.strip().lower()
        unit = "s" if tail.endswith("s") and not tail.endswith("ms") else "ms"
        if low.strip()[-1:].isdigit():
            low += unit  # "50-150ms": the unit after the range applies to both ends
        return UniformLatency(_seconds(low), _seconds(high))
    return FixedLatency(_seconds(text))
