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
