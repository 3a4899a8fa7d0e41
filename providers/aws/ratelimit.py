"""Per service-region token buckets with adaptive backoff on throttling.

AWS throttles per account, service, region and API family. Staying under the
published rates avoids most ThrottlingExceptions; when one comes anyway the
bucket halves its rate and then creeps back (additive increase, multiplicative
decrease), so a large fan-out slows down instead of failing.
"""

from __future__ import annotations

import threading
from typing import Literal

from killswitch.sdk import TokenBucket  # the SDK's: every provider paces with the same one

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
