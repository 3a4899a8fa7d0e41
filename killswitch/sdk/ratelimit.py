"""A token bucket that halves its rate on throttling and creeps back (additive increase,
multiplicative decrease), so a large fan-out slows down instead of failing.

One bucket per thing the remote side throttles on (an account and API, a partner's
key). The clock and the sleep are injectable, so a test can drive it without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` requests a second, bursts of ``burst`` (default: one second's worth)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("a token bucket's rate must be positive")
        self.base = rate
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self.stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; return the time waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return waited
                pause = (1.0 - self.tokens) / self.rate
            self._sleep(pause)
            waited += pause

    def throttled(self) -> None:
        """The remote side said slow down: halve the rate (down to a sixteenth)."""
        with self._lock:
            self.rate = max(self.base / 16, self.rate / 2)
            self.tokens = min(self.tokens, 0.0)

    def succeeded(self) -> None:
        """A call went through: win back a twentieth of the base rate."""
        with self._lock:
            if self.rate < self.base:
                self.rate = min(self.base, self.rate + self.base / 20)
