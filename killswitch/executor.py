"""Apply a plan: lock, journal, waves, bounded concurrency, retries, read-back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import groupby

import structlog

from killswitch.contract import ApplyContext, Grouped, Mechanism
from killswitch.domain import (
    Access,
    Action,
    Change,
    ChangeKind,
    LedgerEntry,
    Operation,
    OpStatus,
    Step,
    StepResult,
    Target,
    utcnow,
)
from killswitch.errors import KillswitchError, LeaseLost
from killswitch.planner import Fleet
from killswitch.state import Lease, StateStore

log = structlog.get_logger("killswitch.executor")

StepListener = Callable[[Target, Step], None]
DONE = frozenset({StepResult.VERIFIED, StepResult.SKIPPED})


class _Heartbeat:
    """Renews the lease while an apply runs; remembers if it was lost."""

    def __init__(self, store: StateStore, lease: Lease, ttl: float) -> None:
        self.store, self.lease, self.ttl = store, lease, ttl
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.lease = self.store.renew(self.lease, self.ttl)
            except LeaseLost as exc:
                self.lost = exc
                log.error("lease lost; stopping", error=str(exc))
                return
            except Exception as exc:  # the store hiccuped; the next beat tries again
                log.warning("lease renewal failed", error=str(exc))


class Executor:
    def __init__(
        self,
        fleet: Fleet,
        store: StateStore,
        owner: str,
        on_step: StepListener | None = None,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.owner = owner
        self.on_step = on_step or (lambda target, step: None)
        self.ttl = fleet.inventory.spec.policy.lock.ttl_seconds
        # A runbook step's timeout, when shorter than policy.deadline_seconds.
        self.deadline_seconds: float | None = None

    def run(
        self, op: Operation, changes: Sequence[Change], *, requested: dict[str, object]
    ) -> OpStatus:
        """Apply ``changes`` (the not-yet-done targets of ``op``) under the lock.

        A new op is recorded and audited (``requested``) only once the lock is ours, so a
        run refused by the lock leaves no trace of an op that never was."""
        lease = self.store.acquire(self.owner, op.id, self.ttl)
        try:
            with _Heartbeat(self.store, lease, self.ttl) as beat:
                if self.store.get_op(op.id) is None:
                    self.store.create_op(op)
                    self.store.append_audit(op.actor, "op.requested", op.id, requested)
                self.store.set_op_status(op.id, OpStatus.RUNNING, lease)
                self.store.append_audit(
                    self.owner,
                    "op.applying",
                    op.id,
                    {"action": op.action.value, "targets": len(changes)},
                )
                log.info("applying", op=op.id, action=op.action.value, targets=len(changes))
                # The ledger records intent: a target that fails still should be in this posture.
                now = utcnow()
                self.store.set_ledger(
                    [LedgerEntry(t, op.desired, op.id, now) for t in op.target_ids], lease
                )
                budget = self.deadline_seconds or self.fleet.inventory.spec.policy.deadline_seconds
                deadline = time.monotonic() + budget
                for wave in self._waves(op.action, changes):
                    self._apply_wave(op, wave, beat, deadline)
                steps = self.store.steps(op.id)
                done = all(steps.get(t) and steps[t].result in DONE for t in op.target_ids)
                status = OpStatus.COMPLETE if done else OpStatus.PARTIAL
                log.info("op finished", op=op.id, status=status.value)
                self.store.set_op_status(op.id, status, beat.lease)
                counts: dict[str, int] = {}
                for step in steps.values():
                    counts[step.result.value] = counts.get(step.result.value, 0) + 1
                self.store.append_audit(
                    self.owner, "op.finished", op.id, {"status": status.value, "results": counts}
                )
                return status
        finally:
            self.store.release(lease)

    def _waves(self, action: Action, changes: Sequence[Change]) -> list[list[Change]]:
        """Revoke and restrict close the edge first; restore opens the deep levers first."""

        def wave(change: Change) -> int:
            return self.fleet.mechanism(change.target).wave

        ordered = sorted(changes, key=wave, reverse=action is Action.RESTORE)
        return [list(group) for _, group in groupby(ordered, key=wave)]

    def _units(self, wave: list[Change]) -> list[list[Change]]:
        """Changes applied by one provider call: a group sharing a resource key, or one."""
        units: dict[tuple[str, ...], list[Change]] = {}
        for change in wave:
            target = change.target
            mechanism = self.fleet.mechanism(target)
            if change.kind is ChangeKind.CHANGE and isinstance(mechanism, Grouped):
                key: tuple[str, ...] = (
                    target.provider,
                    mechanism.name,
                    mechanism.resource_key(target),
                )
            else:
                key = ("single", target.id)
            units.setdefault(key, []).append(change)
        return list(units.values())

    def _apply_wave(
        self, op: Operation, wave: list[Change], beat: _Heartbeat, deadline: float
    ) -> None:
        ctx = ApplyContext(op.id, op.actor, op.reason, op.ticket, utcnow())

        def apply_unit(unit: list[Change]) -> None:
            if beat.lost is not None:
                raise beat.lost
            if time.monotonic() > deadline:
                for change in unit:
                    self._record(
                        op.id,
                        change.target,
                        StepResult.FAILED,
                        beat,
                        error="op deadline passed before this target was tried "
                        "(policy.deadline_seconds); `ops resume` tries it",
                    )
                return
            if unit[0].kind is ChangeKind.NONE:
                self._record(
                    op.id, unit[0].target, StepResult.SKIPPED, beat, observed=unit[0].observed
                )
                return
            targets = [c.target for c in unit]
            for target in targets:
                self._record(op.id, target, StepResult.STARTED, beat)
            mechanism = self.fleet.mechanism(targets[0])
            try:
                if len(targets) > 1 and isinstance(mechanism, Grouped):
                    self.fleet.call(lambda: mechanism.apply_group(targets, op.desired, ctx))
                else:
                    self.fleet.call(_first_try_knows(mechanism, unit[0], op.desired, ctx))
            except LeaseLost:
                raise
            except KillswitchError as exc:
                log.warning(
                    "step failed", op=op.id, targets=[t.id for t in targets], error=str(exc)
                )
                for target in targets:
                    self._record(op.id, target, StepResult.FAILED, beat, error=str(exc))
                return
            for target in targets:
                self._verify(op, target, mechanism, beat)

        lost: BaseException | None = None
        units = self._units(wave)
        for unit, outcome in self.fleet.fan_out(units, apply_unit, where=lambda u: u[0].target):
            if isinstance(outcome, LeaseLost):
                lost = outcome
            elif isinstance(outcome, BaseException):
                # A bug, not a provider error: record it against the targets and go on.
                log.error("step crashed", target=unit[0].target.id, error=repr(outcome))
                for change in unit:
                    self._record(
                        op.id,
                        change.target,
                        StepResult.FAILED,
                        beat,
                        error=f"internal error: {outcome!r}",
                    )
        if lost is not None:
            raise lost

    def _verify(
        self, op: Operation, target: Target, mechanism: Mechanism, beat: _Heartbeat
    ) -> None:
        """Read the target back: verified only when observed equals desired."""
        try:
            seen = self.fleet.call(lambda: mechanism.observe(target)).access
        except KillswitchError as exc:
            self._record(op.id, target, StepResult.FAILED, beat, error=f"read-back: {exc}")
            return
        if seen != op.desired:
            error = f"read back {seen}, wanted {op.desired}"
            self._record(op.id, target, StepResult.FAILED, beat, error=error, observed=seen)
        else:
            self._record(op.id, target, StepResult.VERIFIED, beat, observed=seen)

    def _record(
        self,
        op_id: str,
        target: Target,
        result: StepResult,
        beat: _Heartbeat,
        *,
        error: str | None = None,
        observed: Access | None = None,
    ) -> Step:
        """Journal one step (fenced by our lease) and tell the listener."""
        step = Step(op_id, target.id, result, error, utcnow(), observed)
        self.store.record_step(step, beat.lease)
        self.on_step(target, step)
        return step


def _first_try_knows(
    mechanism: Mechanism, change: Change, desired: Access, ctx: ApplyContext
) -> Callable[[], None]:
    """``apply`` told what the plan read, on its first try; a retry reads afresh."""
    tries = 0

    def apply() -> None:
        nonlocal tries
        tries += 1
        known = change.observed if tries == 1 else None
        mechanism.apply(change.target, desired, replace(ctx, observed=known))

    return apply
