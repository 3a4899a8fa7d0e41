"""The apply lock as ops take it: who may take it over, how long a revoke waits, and
the heartbeat that keeps it (and proves its holder alive).

Revoke is never blocked (DESIGN.md, invariant 4): a tightening op takes the lock over
at once from a loosening holder, waits a bounded time for another tightening holder,
and takes it from a holder whose heartbeat has stopped, without waiting out its lease.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from killswitch.clock import SYSTEM, Clock
from killswitch.domain import Intent
from killswitch.errors import LeaseLost, LockHeld, LockInfo
from killswitch.state import Lease, StateStore

log = structlog.get_logger("killswitch.lease")

POLL_SECONDS = 0.25
Waiting = Callable[[LockInfo, float], None]
"""Progress while a tightening op waits: the holder, seconds waited so far."""


@dataclass(frozen=True)
class LockRules:
    ttl: float  # a lease not renewed for this long has expired
    heartbeat: float  # the holder renews this often
    wait: float  # how long a tightening op waits for another tightening holder

    @property
    def dead_after(self) -> float:
        """A holder whose heartbeat has not moved for this long is dead (or stopped)."""
        return 3 * self.heartbeat + 1.0


def take(
    store: StateStore,
    owner: str,
    op_id: str | None,
    intent: Intent,
    rules: LockRules,
    *,
    clock: Clock = SYSTEM,
    on_wait: Waiting | None = None,
) -> Lease:
    """The apply lock for an op of ``intent``.

    Loosening and other ops take a free or expired lock, or raise LockHeld at once. A
    tightening op takes it over from a loosening holder or a dead one (fencing it), and
    waits up to ``rules.wait`` for a live tightening holder before raising LockHeld."""
    started = clock.monotonic()
    watched: tuple[int, int] | None = None
    moved_at = started
    while True:
        try:
            return store.acquire(owner, op_id, rules.ttl, intent)
        except LockHeld as held:
            if intent is not Intent.TIGHTEN:
                raise
            holder, now = held.holder, clock.monotonic()
            if (holder.token, holder.beat) != watched:
                watched, moved_at = (holder.token, holder.beat), now
            dead = now - moved_at >= rules.dead_after
            if holder.intent is Intent.LOOSEN or dead:
                try:
                    lease = store.take_over(owner, op_id, rules.ttl, intent, holder.token)
                except LockHeld:
                    continue  # it changed hands meanwhile: look again
                why = "its heartbeat stopped" if dead else "a loosening op never delays a kill"
                log.warning("took the lock over", holder=holder.owner, op=holder.op_id, why=why)
                return lease
            waited = now - started
            if waited >= rules.wait:
                raise LockHeld(holder, waited=waited) from None
            if on_wait is not None:
                on_wait(holder, waited)
            clock.sleep(min(POLL_SECONDS, rules.wait - waited))


class Heartbeat:
    """Renews the lease while an op runs; remembers if it was lost. ``check`` is the
    fence a lever calls right before each provider write."""

    def __init__(self, store: StateStore, lease: Lease, rules: LockRules) -> None:
        self.store, self.lease, self.rules = store, lease, rules
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        """Raise LeaseLost unless we still hold the lock, as the store says now."""
        if self.lost is not None:
            raise self.lost
        try:
            self.store.check(self.lease)
        except LeaseLost as exc:
            self.lost = exc
            raise

    def _run(self) -> None:
        while not self._stop.wait(self.rules.heartbeat):
            try:
                self.lease = self.store.renew(self.lease, self.rules.ttl)
            except LeaseLost as exc:
                self.lost = exc
                log.error("lease lost; stopping", error=str(exc))
                return
            except Exception as exc:  # the store hiccuped; the next beat tries again
                log.warning("lease renewal failed", error=str(exc))
