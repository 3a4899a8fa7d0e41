"""The lower bound on a verified revoke, from round trips, concurrency and rate limits.

No tool can beat it with the same policy (concurrency caps and per-bucket rate limits)
against the same round trip, because a verified revoke needs, per target:

1. a read before anything changes (the plan: which targets need a write), then
2. a write, then
3. a read back of what the write left.

The plan must finish before the first write (the operator confirms a whole plan), so

    plan  = max(RTT x ceil(N / C),   RTT + max(0, (R_b - burst_r) / rate_r))
    apply = max(2 RTT x ceil(N / C), 2 RTT + max(0, (W_b - burst_w) / rate_w))
    bound = plan + apply

where C is the effective concurrency (``policy.concurrency.total``, but at most
``per_region`` x regions, since the per-region cap is shared by the accounts),
W_b and R_b are the writes and reads one (account, region) bucket must pass in the
phase, and a bucket starts full (burst = max(1, rate), as providers/aws/ratelimit.py
does). A re-run with nothing to do and a drift check need only the plan's reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.fleet import RAISED, Shape

SSM_READ, SSM_WRITE = 40.0, 3.0  # providers/aws/ratelimit.py DEFAULTS["ssm"]


@dataclass(frozen=True)
class Bound:
    plan: float
    apply: float
    concurrency: int
    limited_by: str  # "round trips" or "rate limits"

    @property
    def revoke(self) -> float:
        return self.plan + self.apply

    @property
    def read_only(self) -> float:
        """A re-run with nothing to do, or a drift check: only the reads."""
        return self.plan


def lower_bound(
    shape: Shape,
    rtt: float,
    *,
    raised_limits: bool,
    total: int = 32,
    per_region: int = 8,
) -> Bound:
    n = shape.n
    c = min(total, per_region * shape.regions)
    rounds = math.ceil(n / c)
    read_rate = RAISED if raised_limits else SSM_READ
    write_rate = RAISED if raised_limits else SSM_WRITE
    per_bucket = shape.models  # one target per model in each (account, region)

    def queued(count: int, rate: float) -> float:
        return max(0.0, (count - max(1.0, rate)) / rate)

    plan_rtt, plan_rate = rtt * rounds, rtt + queued(per_bucket, read_rate)
    apply_rtt, apply_rate = 2 * rtt * rounds, 2 * rtt + queued(per_bucket, write_rate)
    limited = "rate limits" if apply_rate > apply_rtt or plan_rate > plan_rtt else "round trips"
    return Bound(max(plan_rtt, plan_rate), max(apply_rtt, apply_rate), c, limited)
