"""The providers' rate limits: a strict token bucket per channel, as the real services keep."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ChannelLimit:
    """A strict token bucket of the provider."""

    rate_per_second: float
    burst: int


class TokenBucket:
    """Capacity ``burst``, refilled at ``rate`` tokens per second, starting full."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.capacity = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """Take one token: 0.0 if taken, else the seconds until one is available."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            if self.rate <= 0:
                return 3600.0
            return (1 - self.tokens) / self.rate
