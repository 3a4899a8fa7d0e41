"""The fleet: every lever call goes through here (retries, the op's deadline, bounded
fan-out per provider-region), and a plan is the fleet's reads diffed by the planner."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import structlog

from killswitch import retry
from killswitch.contract import CALL_DEADLINE, Mechanism, Preflight
from killswitch.domain import Access, Action, Change, ChangeKind, Observed, Plan, Target
from killswitch.errors import DeadlinePassed, KillswitchError
from killswitch.fanout import fan_out
from killswitch.inventory import Inventory
from killswitch.planner import Observation, diff
from killswitch.progress import QUIET, Phase, Progress, phase

log = structlog.get_logger("killswitch.fleet")

T = TypeVar("T")
R = TypeVar("R")
Item = TypeVar("Item")


class Fleet:
    """The inventory's levers, as the engine sees them: target → mechanism, with policy."""

    def __init__(self, inventory: Inventory, *, concurrency: int | None = None) -> None:
        self.inventory = inventory
        policy = inventory.spec.policy
        self.retry = policy.retry
        self.total = concurrency if concurrency is not None else policy.concurrency.total
        self.per_region = policy.concurrency.per_region
        # The current op's deadline (time.monotonic()); None: no op is running.
        self.deadline: float | None = None
        self.progress: Progress = QUIET  # told of every read (killswitch/progress.py)

    def mechanism(self, target: Target) -> Mechanism:
        return self.inventory.provider(target.provider).mechanism(target.mechanism)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` with retries, within the op's deadline: no try starts after it, the
        retries' budget ends at it, and levers bound their calls by it (``time_left``)."""
        budget = self.retry.max_seconds
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise DeadlinePassed("op deadline passed before this call (`ops resume` tries it)")
            budget = min(budget, left)
        token = CALL_DEADLINE.set(self.deadline)
        try:
            return retry.call(
                fn,
                attempts=self.retry.attempts,
                max_seconds=budget,
                base_seconds=self.retry.base_seconds,
            )
        finally:
            CALL_DEADLINE.reset(token)

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

    def observe(self, target: Target) -> Observed:
        mechanism = self.mechanism(target)
        return self.call(lambda: mechanism.observe(target))

    def observe_all(self, targets: Sequence[Target]) -> dict[str, Observation]:
        """Every target's observation, or the error that kept us from reading it."""
        with phase(self.progress, Phase.READ, len(targets)):
            return self._observe_all(targets)

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
