"""Clocks for tests that must see time pass without waiting for it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class AheadClock:
    """The real clock, ``seconds`` ahead: what another machine sees that much later.
    Nothing that uses it may sleep."""

    def __init__(self, seconds: float) -> None:
        self.ahead = timedelta(seconds=seconds)

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead.total_seconds()

    def sleep(self, seconds: float) -> None:
        raise AssertionError("a test clock never sleeps")

    def now(self) -> datetime:
        return datetime.now(UTC) + self.ahead


class FakeClock:
    """A monotonic clock the test moves by hand; ``sleep`` moves it, without waiting."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    sleep = advance
