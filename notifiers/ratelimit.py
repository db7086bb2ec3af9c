"""Per-channel rate limits as token buckets.

Robot webhooks and SMS gateways throttle senders (WeCom group robots, for one, allow about
20 messages a minute); going over gets messages refused or the robot banned, so the outbox
spends a token per message and leaves the rest of its rows due for the next token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`per_s` tokens a second, at most `burst` saved up; starts full."""

    def __init__(self, per_s: float, burst: int = 1, clock: Callable[[], float] = time.monotonic):
        if per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs per_s > 0 and burst >= 1")
        self.per_s = per_s
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_s)
        self._at = now

    def try_take(self) -> bool:
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def wait_s(self) -> float:
        """Seconds until the next token (0 when one is there)."""
        with self._lock:
            self._refill()
            return max(0.0, (1.0 - self._tokens) / self.per_s)
