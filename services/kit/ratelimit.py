"""Per-connection flood control: a token bucket with a strike count."""

from __future__ import annotations

import time
from enum import Enum

__all__ = ["FloodGuard", "Verdict"]


class Verdict(Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # answer rate_limited, keep the connection
    CLOSE = "close"  # the client kept going: close 4129


class FloodGuard:
    """``rate`` frames per second on average, bursts of ``burst``; after ``strikes``
    refused frames within one refill of the bucket the verdict is CLOSE."""

    __slots__ = ("_burst", "_last", "_rate", "_strikes", "_strikes_allowed", "_tokens")

    def __init__(self, rate: float, burst: int, strikes: int = 20) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._strikes_allowed = strikes
        self._strikes = 0
        self._last = time.monotonic()

    def check(self) -> Verdict:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            if self._tokens >= self._burst / 2:
                self._strikes = 0
            return Verdict.ALLOW
        self._strikes += 1
        return Verdict.CLOSE if self._strikes > self._strikes_allowed else Verdict.REFUSE
