"""One lever call as the engine makes it: retried on retryable errors, within the op's
deadline (no try starts after it, the retries' budget ends at it, and levers bound
their own calls by it through ``time_left``). The fleet makes these calls in its own
threads, or has worker processes make them (killswitch/workers.py): the same code
either way."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from killswitch import retry
from killswitch.contract import CALL_DEADLINE, ApplyContext, Grouped, Mechanism
from killswitch.domain import Change, Observed, Target
from killswitch.errors import DeadlinePassed

if TYPE_CHECKING:
    from killswitch.inventory import RetryPolicy

T = TypeVar("T")


def call(fn: Callable[[], T], policy: RetryPolicy, deadline: float | None) -> T:
    """``fn()`` with retries, within ``deadline`` (time.monotonic(); None: no op deadline)."""
    budget = policy.max_seconds
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlinePassed("op deadline passed before this call (`ops resume` tries it)")
        budget = min(budget, left)
    token = CALL_DEADLINE.set(deadline)
    try:
        return retry.call(
            fn, attempts=policy.attempts, max_seconds=budget, base_seconds=policy.base_seconds
        )
    finally:
        CALL_DEADLINE.reset(token)


def observe(
    mechanism: Mechanism, target: Target, policy: RetryPolicy, deadline: float | None
) -> Observed:
    return call(lambda: mechanism.observe(target), policy, deadline)


def apply(
    mechanism: Mechanism,
    unit: Sequence[Change],
    ctx: ApplyContext,
    policy: RetryPolicy,
    deadline: float | None,
) -> None:
    """Apply one unit: a group of changes sharing a resource key in one ``apply_group``
    call, or one change, told what the plan read on its first try."""
    first = unit[0]
    if len(unit) > 1 and isinstance(mechanism, Grouped):
        targets = [c.target for c in unit]
        call(lambda: mechanism.apply_group(targets, first.desired, ctx), policy, deadline)
    else:
        call(_first_try_knows(mechanism, first, ctx), policy, deadline)


def _first_try_knows(mechanism: Mechanism, change: Change, ctx: ApplyContext) -> Callable[[], None]:
    """``apply`` told what the plan read, on its first try; a retry reads afresh."""
    tries = 0

    def apply() -> None:
        nonlocal tries
        tries += 1
        known = change.observed if tries == 1 else None
        mechanism.apply(change.target, change.desired, replace(ctx, observed=known))

    return apply
