"""Clocks for tests that must see time pass without waiting for it."""

from __future__ import annotations

import threading
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


class ManualClock:
    """The engine's clock (killswitch/clock.py), moved only by the test and by the servers
    it runs (a request's latency, on this clock: ``FaultProxy`` rules with ``advance``);
    ``sleep`` moves it at once. Its wall clock starts on a whole second, so every figure
    measured on it is exact."""

    def __init__(self) -> None:
        self.start = datetime.now(UTC).replace(microsecond=0)
        self.elapsed = 0.0
        self._mutex = threading.Lock()

    def monotonic(self) -> float:
        with self._mutex:
            return self.elapsed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.monotonic())

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        with self._mutex:
            self.elapsed += seconds
