"""The posture of each model as a gateway holds it: read through a source, kept for a
bounded TTL, kept a bounded grace past it while reads fail, then closed.

Time comes from an injected monotonic clock (tests move it; nothing sleeps). Reads are
one at a time per model (no thundering herd on SSM), each bounded by ``read_timeout``
even when the source hangs; a request that finds the posture fresh never waits on one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from killswitch.domain import Access
from killswitch.enforcer.decision import Decision, UnreadableFlag, decide
from killswitch.enforcer.sources import Source, SourceUnavailable

Clock = Callable[[], float]
log = logging.getLogger("killswitch.enforcer")


@dataclass(frozen=True)
class Reading:
    """What the gateway goes by for one model right now.

    ``access`` None: closed for ``why`` (an unreadable document, or no good read within
    TTL + grace). ``age``: seconds since the read it comes from (None: never read)."""

    model: str
    access: Access | None
    why: str
    age: float | None
    stale: bool = False  # the last read failed; this is the last good posture, in grace

    def decide(self, audiences: Iterable[str]) -> Decision:
        return decide(self.access, audiences, self.why)


@dataclass
class _Entry:
    access: Access | None = None
    why: str = "not read yet"
    good_at: float | None = None  # when the posture served was read
    checked_at: float | None = None  # when a read was last tried
    failure: str | None = None  # the last read's failure, None when it succeeded


class Enforcer:
    """A bounded cache of postures over one source, and the decision for a request."""

    def __init__(
        self,
        source: Source,
        ttl: float = 5.0,
        grace: float = 30.0,
        clock: Clock = time.monotonic,
        read_timeout: float = 3.0,
    ) -> None:
        if ttl <= 0 or grace < 0 or read_timeout <= 0:
            raise ValueError("ttl and read_timeout must be > 0, grace >= 0")
        self.source, self.ttl, self.grace = source, ttl, grace
        self.clock, self.read_timeout = clock, read_timeout
        self._entries: dict[str, _Entry] = {}
        self._reading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def check(self, model: str, audiences: Iterable[str]) -> Decision:
        """Allow or deny one request for ``model`` by a caller in ``audiences``."""
        return self.reading(model).decide(audiences)

    def cached(self, model: str) -> Reading | None:
        """The reading, without any I/O, while it needs no refresh; else None."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(model)
            if entry is None or entry.checked_at is None or now - entry.checked_at >= self.ttl:
                return None
            return self._view(model, entry, now)

    def reading(self, model: str) -> Reading:
        """The reading, refreshed first when its TTL has passed (at most one read per
        model at a time: others meanwhile get the reading there is)."""
        found = self.cached(model)
        if found is not None:
            return found
        with self._lock:
            gate = self._reading.setdefault(model, threading.Lock())
            first = model not in self._entries
        if gate.acquire(blocking=first, timeout=self.read_timeout if first else -1):
            try:
                if self.cached(model) is None:  # nobody refreshed it while we waited
                    self._refresh(model)
            finally:
                gate.release()
        now = self.clock()
        with self._lock:
            return self._view(model, self._entries.setdefault(model, _Entry()), now)

    def refresh(self, model: str) -> Reading:
        """Read ``model``'s flag now, whatever the TTL says (for probes and tests)."""
        with self._lock:
            gate = self._reading.setdefault(model, threading.Lock())
        with gate:
            self._refresh(model)
        now = self.clock()
        with self._lock:
            return self._view(model, self._entries[model], now)

    # ---- inside

    def _refresh(self, model: str) -> None:
        started = self.clock()
        access, failure, why = self._bounded_read(model)
        with self._lock:
            entry = self._entries.setdefault(model, _Entry())
            entry.checked_at = started
            entry.failure = failure
            if failure is None:
                entry.access, entry.why, entry.good_at = access, why, started
        # Once per read, not per request: an alert for whoever runs the gateway.
        if failure is not None:
            log.warning("killswitch flag of %s: read failed: %s", model, failure)
        elif access is None:
            log.error("killswitch flag of %s: refusing the model: %s", model, why)

    def _bounded_read(self, model: str) -> tuple[Access | None, str | None, str]:
        """(access, failure, why): a read in its own thread, given up after read_timeout
        (a late answer is dropped; the next refresh reads again)."""
        box: list[tuple[Access | None, str | None, str]] = []

        def read() -> None:
            try:
                box.append((self.source.read(model), None, self.source.describe()))
            except UnreadableFlag as exc:
                box.append((None, None, f"unreadable flag at {self.source.describe()}: {exc}"))
            except SourceUnavailable as exc:
                box.append((None, str(exc), ""))
            except Exception as exc:  # a source bug must not open anything either
                box.append((None, f"{exc.__class__.__name__} reading the flag", ""))

        worker = threading.Thread(target=read, name=f"killswitch-read-{model}", daemon=True)
        worker.start()
        worker.join(self.read_timeout)
        if not box:
            return None, f"read timed out after {self.read_timeout:g}s", ""
        return box[0]

    def _view(self, model: str, entry: _Entry, now: float) -> Reading:
        age = None if entry.good_at is None else now - entry.good_at
        if entry.failure is None:
            return Reading(model, entry.access, entry.why, age)
        if age is None:
            return Reading(model, None, f"flag never read: {entry.failure}", None)
        if age > self.ttl + self.grace:
            why = f"no good read for {age:.0f}s (ttl {self.ttl:g}s + grace {self.grace:g}s)"
            return Reading(model, None, f"{why}: {entry.failure}", age, stale=True)
        return Reading(model, entry.access, entry.why, age, stale=True)
