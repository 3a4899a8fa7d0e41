"""The fleet: every lever call goes through here (retries, the op's deadline, bounded
fan-out per provider-region, worker processes for a large fan-out), and a plan is the
fleet's reads diffed by the planner."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import structlog

from killswitch import calls, workers
from killswitch.contract import Affinity, ApplyContext, CallBound, Mechanism, Preflight
from killswitch.domain import Access, Action, Change, ChangeKind, Observed, Plan, Target
from killswitch.errors import KillswitchError
from killswitch.fanout import fan_out
from killswitch.inventory import Inventory
from killswitch.planner import Observation, diff
from killswitch.progress import QUIET, Phase, Progress, phase

log = structlog.get_logger("killswitch.fleet")

T = TypeVar("T")
R = TypeVar("R")
Item = TypeVar("Item")


class Fleet:
    """The inventory's levers, as the engine sees them: target → mechanism, with policy.

    A large fan-out may have worker processes make the calls (killswitch/workers.py,
    ``policy.workers``); everything else (the fan-out's caps, the journal, the lease)
    stays in this process, and a call's outcome is the same either way."""

    def __init__(self, inventory: Inventory, *, concurrency: int | None = None) -> None:
        self.inventory = inventory
        policy = inventory.spec.policy
        self.retry = policy.retry
        self.total = concurrency if concurrency is not None else policy.concurrency.total
        self.per_region = policy.concurrency.per_region
        # The current op's deadline (time.monotonic()); None: no op is running.
        self.deadline: float | None = None
        self.progress: Progress = QUIET  # told of every read (killswitch/progress.py)
        self._workers: workers.Pool | None = None
        self._decided = False  # threads or workers, once per command
        self._affinities: dict[Target, str] = {}
        self._read_backs: dict[Target, Observed | Exception] = {}
        self._lock = threading.Lock()

    def mechanism(self, target: Target) -> Mechanism:
        return self.inventory.provider(target.provider).mechanism(target.mechanism)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` with retries, within the op's deadline: no try starts after it, the
        retries' budget ends at it, and levers bound their calls by it (``time_left``)."""
        return calls.call(fn, self.retry, self.deadline)

    def observe(self, target: Target) -> Observed:
        if self._workers is not None:
            return self._workers.observe(target, self.deadline)
        return calls.observe(self.mechanism(target), target, self.retry, self.deadline)

    def read_back(self, target: Target) -> Observed:
        """The read after ``apply`` that decides whether a target is verified: the one its
        worker made right after the write, or a read now."""
        with self._lock:
            read = self._read_backs.pop(target, None)
        if isinstance(read, Exception):
            raise read
        return read if read is not None else self.observe(target)

    def apply(self, unit: Sequence[Change], ctx: ApplyContext) -> None:
        """Apply one unit (changes sharing a resource key and a desired posture, or one)."""
        if self._workers is not None:
            read = self._workers.apply(unit, ctx, self.deadline)
            with self._lock:
                self._read_backs.update(read)  # each taken by the read-back that follows
            return
        calls.apply(self.mechanism(unit[0].target), unit, ctx, self.retry, self.deadline)

    def prepare(self, targets: Sequence[Target]) -> None:
        """Before a fan-out over ``targets``: decide, once per command, whether worker
        processes make the calls (and start them), and place these targets on them."""
        if not self._decided:
            self._decided = True
            count = workers.how_many(self.inventory.spec.policy.workers, len(targets))
            if count > 0:
                self._workers = workers.Pool(
                    self.inventory,
                    count,
                    threads=self.total,
                    affinity=self._affinity,
                    patience=self.retry.max_seconds + self._call_bound(),
                    retry=self.retry,
                )
        if self._workers is not None:
            self._workers.place(targets)

    def close(self) -> None:
        """The command is over: stop the worker processes, if any."""
        pool, self._workers, self._decided = self._workers, None, False
        self._read_backs.clear()
        if pool is not None:
            pool.close()

    def _affinity(self, target: Target) -> str:
        key = self._affinities.get(target)
        if key is None:  # once per target: a Protocol isinstance check costs microseconds
            provider = self.inventory.provider(target.provider)
            key = target.provider
            if isinstance(provider, Affinity):
                key = f"{target.provider}:{provider.affinity(target)}"
            self._affinities[target] = key
        return key

    def _call_bound(self) -> float:
        bounds = [
            p.call_bound_seconds()
            for name in self.inventory.provider_names
            if isinstance(p := self.inventory.provider(name), CallBound)
        ]
        return max(bounds, default=30.0)

    def fan_out(
        self, items: Sequence[Item], work: Callable[[Item], R], *, where: Callable[[Item], Target]
    ) -> list[tuple[Item, R | BaseException]]:
        """``work`` on every item, bounded overall and per provider-region (of ``where(item)``)."""
        return list(
            fan_out(
                items,
                work,
                key=lambda i: (where(i).provider, where(i).region),
                total=self.total,
                per_key=self.per_region,
                # Rate limits are per account and region: start work across all of them.
                spread=lambda i: (where(i).provider, where(i).account, where(i).region),
            )
        )

    def observe_all(self, targets: Sequence[Target]) -> dict[str, Observation]:
        """Every target's observation, or the error that kept us from reading it."""
        self.prepare(targets)
        with self._lock:  # a read-back left over from a unit that failed half-way is stale
            self._read_backs.clear()
        try:
            with phase(self.progress, Phase.READ, len(targets)):
                return self._observe_all(targets)
        finally:
            if self.deadline is None:
                self.close()  # a read-only command (status, drift, plan): it is over

    def _observe_all(self, targets: Sequence[Target]) -> dict[str, Observation]:
        results: dict[str, Observation] = {}
        for target, outcome in self.fan_out(targets, self.observe, where=lambda t: t):
            if isinstance(outcome, KillswitchError):
                results[target.id] = outcome
            elif isinstance(outcome, Exception):
                # A bug or an unclassified provider reply: this target is unreadable,
                # the others are still worth reading (and a revoke still worth trying).
                log.error("observe crashed", target=target.id, error=repr(outcome))
                results[target.id] = KillswitchError(f"internal error: {outcome!r}")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results[target.id] = outcome
            self.progress.advance(Phase.READ, target, _read(results[target.id]))
        return results


def _read(seen: Observation) -> str:
    """What a read found, as a report row says it."""
    return "unreadable" if isinstance(seen, KillswitchError) else str(seen.access)


def plan(
    fleet: Fleet,
    action: Action,
    requested: Access,
    targets: Sequence[Target],
    ledger: Mapping[str, Access] | None = None,
) -> Plan:
    observations = fleet.observe_all(targets)
    drafted = diff(
        action,
        requested,
        targets,
        observations,
        lambda t, desired: desired.posture in fleet.mechanism(t).supports,
        ledger,
    )
    return _preflight(fleet, drafted)


def _preflight(fleet: Fleet, drafted: Plan) -> Plan:
    """Ask levers that can tell whether a pending change would hold (read-only)."""
    checks = [
        c
        for c in drafted.changes
        if c.kind is ChangeKind.CHANGE and isinstance(fleet.mechanism(c.target), Preflight)
    ]
    if not checks:
        return drafted

    def check(change: Change) -> str | None:
        lever = fleet.mechanism(change.target)
        assert isinstance(lever, Preflight)
        return fleet.call(lambda: lever.preflight(change.target, change.desired))

    refused: dict[str, str] = {}
    for change, outcome in fleet.fan_out(checks, check, where=lambda c: c.target):
        if isinstance(outcome, BaseException):
            # Could not ask: the change goes ahead (a kill must not stall on a side check).
            log.warning("preflight failed", target=change.target.id, error=str(outcome))
        elif outcome is not None:
            refused[change.target.id] = outcome
    return Plan(
        drafted.action,
        drafted.desired,
        tuple(
            Change(c.target, c.desired, c.observed, ChangeKind.UNSUPPORTED, refused[c.target.id])
            if c.target.id in refused
            else c
            for c in drafted.changes
        ),
    )
