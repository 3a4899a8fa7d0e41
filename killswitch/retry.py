"""Retries for provider calls: retryable errors only, exponential backoff with full
jitter, bounded in attempts and in time, honouring a provider's Retry-After."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from killswitch.errors import RetryableError

T = TypeVar("T")


def call(fn: Callable[[], T], *, attempts: int, max_seconds: float, base_seconds: float) -> T:
    """``fn()``, retried on RetryableError; the last error is raised when the budget is spent.

    Most calls succeed at once: the first try runs before any retry machinery is built
    (tenacity's objects cost more CPU than a call's own bookkeeping). A failed first try
    goes to tenacity as its first attempt, so the budget is the same either way."""
    started = time.monotonic()
    try:
        return fn()
    except RetryableError as exc:
        if attempts <= 1 or time.monotonic() - started >= max_seconds:
            raise
        first: list[BaseException] = [exc]

    def again() -> T:
        if first:
            raise first.pop()  # the first try's error, as tenacity's first attempt
        return fn()

    backoff = wait_random_exponential(multiplier=base_seconds, max=max(base_seconds, 10.0))

    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None) or 0.0
        # A partner's Retry-After is honoured, but never past our own time budget.
        return min(max(float(retry_after), backoff(state)), max_seconds)

    retrying = Retrying(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_attempt(attempts)
        | stop_after_delay(max(0.0, max_seconds - (time.monotonic() - started))),
        wait=wait,
        reraise=True,
    )
    return retrying(again)
