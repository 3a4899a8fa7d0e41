"""Per service-region token buckets with adaptive backoff on throttling.

AWS throttles per account, service, region and API family. Staying under the
published rates avoids most ThrottlingExceptions; when one comes anyway the
bucket halves its rate and then creeps back (additive increase, multiplicative
decrease), so a large fan-out slows down instead of failing.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

Kind = Literal["read", "write"]

# Requests per second. SSM: GetParameter 40, PutParameter 3 (standard throughput).
# IAM and ELBv2 do not publish exact rates; these stay well inside what accounts see.
DEFAULTS: dict[str, dict[Kind, float]] = {
    "ssm": {"read": 40.0, "write": 3.0},
    "iam": {"read": 20.0, "write": 5.0},
    "elbv2": {"read": 10.0, "write": 5.0},
    "sts": {"read": 10.0, "write": 10.0},
    # Organizations publishes no per-API rates either; its calls go to one endpoint.
    "organizations": {"read": 10.0, "write": 5.0},
}
FALLBACK: dict[Kind, float] = {"read": 10.0, "write": 2.0}


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.base = rate
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; return the time waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return waited
                pause = (1.0 - self.tokens) / self.rate
            time.sleep(pause)
            waited += pause

    def throttled(self) -> None:
        with self._lock:
            self.rate = max(self.base / 16, self.rate / 2)
            self.tokens = min(self.tokens, 0.0)

    def succeeded(self) -> None:
        with self._lock:
            if self.rate < self.base:
                self.rate = min(self.base, self.rate + self.base / 20)


class RateLimits:
    """One bucket per (account, service, region, kind), built on first use."""

    def __init__(self, overrides: dict[str, dict[Kind, float]] | None = None) -> None:
        self.rates = {**DEFAULTS, **(overrides or {})}
        self._buckets: dict[tuple[str, str, str, Kind], TokenBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, account: str, service: str, region: str, kind: Kind) -> TokenBucket:
        key = (account, service, region, kind)
        with self._lock:
            if key not in self._buckets:
                self._buckets[key] = TokenBucket(self.rates.get(service, FALLBACK)[kind])
            return self._buckets[key]
