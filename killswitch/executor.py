"""Apply a plan under the apply lock: journal, waves, bounded concurrency, retries,
read-back, and (after taking the lock over from a loosening op) a final read once that
op's writes in flight can no longer land."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby

import structlog

from killswitch import fleet, replay
from killswitch.clock import SYSTEM, Clock
from killswitch.contract import ApplyContext, Grouped
from killswitch.domain import (
    DONE,
    Access,
    Action,
    Change,
    ChangeKind,
    Intent,
    LedgerEntry,
    Operation,
    OpStatus,
    Plan,
    Posture,
    Step,
    StepResult,
    Target,
    utcnow,
)
from killswitch.errors import Interrupted, KillswitchError, LeaseLost
from killswitch.fleet import Fleet
from killswitch.lease import Heartbeat, LockRules, Waiting, take
from killswitch.probes import Effect, Prober
from killswitch.progress import QUIET, Phase, Progress, phase
from killswitch.state import Lease, StateStore

log = structlog.get_logger("killswitch.executor")

# What a target's step says when the plan made under the lease needs no write.
SETTLED = {ChangeKind.NONE: StepResult.SKIPPED, ChangeKind.KEPT: StepResult.KEPT}


@dataclass
class Held:
    """The apply lock while an op holds it: the heartbeat that keeps it, when it was
    taken (monotonic), and the holder it fenced out, if any."""

    beat: Heartbeat
    taken_at: float

    @property
    def lease(self) -> Lease:
        return self.beat.lease


class Executor:
    def __init__(
        self,
        fleet: Fleet,
        store: StateStore,
        owner: str,
        *,
        progress: Progress = QUIET,
        rules: LockRules,
        inflight_seconds: float,
        clock: Clock = SYSTEM,
        on_wait: Waiting | None = None,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.owner = owner
        self.progress = progress  # told what each target's step came to
        self.rules = rules
        # The longest a fenced holder's provider call can stay in flight (per-call bound).
        self.inflight_seconds = inflight_seconds
        self.clock = clock
        self.on_wait = on_wait
        # Proof by effect (killswitch/probes.py), when the inventory names probes.
        self.prober = Prober(fleet.inventory, clock=clock) if fleet.inventory.spec.probes else None
        self._written: dict[str, float] = {}  # target → when its write was read back

    # -- the lock ---------------------------------------------------------------
    @contextmanager
    def hold(self, op_id: str | None, intent: Intent) -> Iterator[Held]:
        """The apply lock, kept alive by a heartbeat until the block ends."""
        lease = take(
            self.store,
            self.owner,
            op_id,
            intent,
            self.rules,
            clock=self.clock,
            on_wait=self.on_wait,
        )
        taken_at = self.clock.monotonic()
        try:
            with Heartbeat(self.store, lease, self.rules) as beat:
                yield Held(beat, taken_at)
        finally:
            self.store.release(lease)

    def plan(
        self, action: Action, requested: Access, targets: Sequence[Target], held: Held
    ) -> Plan:
        """The plan as read now, under the lock: what apply does and reports comes from it."""
        held.beat.check()
        entries = self.store.ledger()  # once: one read of the store, not one per target
        ledger = {t.id: e.desired for t in targets if (e := entries.get(t.id))}
        return fleet.plan(self.fleet, action, requested, targets, ledger)

    # -- applying ---------------------------------------------------------------
    def apply(self, op: Operation, plan: Plan, held: Held) -> OpStatus:
        """Apply ``plan`` (made under ``held``) for ``op``; journal every target.

        Targets the plan refused (unsupported, preflight) are journaled ``refused``; the
        rest are applied in waves and read back. A tightening op that fenced out a holder
        whose late writes could be looser (``must_settle``) reads every target again once
        those writes in flight can no longer land, and closes again what they re-opened
        (a restore that took over needs no settling: late tightening writes only close)."""
        self.store.set_op_status(op.id, OpStatus.RUNNING, held.lease)
        work = [c for c in plan.changes if c.kind in (ChangeKind.CHANGE, ChangeKind.UNREADABLE)]
        log.info("applying", op=op.id, action=op.action.value, changes=len(work))
        # The ledger records intent: a target that fails still should be in this posture.
        # The audit event carries what was set, so the log backs every ledger row.
        now = utcnow()
        entries = [LedgerEntry(c.target.id, c.desired, op.id, now) for c in plan.changes]
        self.store.set_ledger(entries, held.lease)
        self.store.append_audit(
            self.owner,
            "op.applying",
            op.id,
            {
                "action": op.action.value,
                "targets": len(plan.changes),
                "changes": len(work),
                "status": OpStatus.RUNNING.value,
            },
        )
        # The entries set, a bounded batch per event (an event is one item in a store).
        for batch in replay.ledger_batches(entries):
            self.store.append_audit(self.owner, "ledger.set", op.id, batch)
        # The command's deadline (Switch starts it); policy's when applied on its own.
        deadline = self.fleet.deadline or (
            time.monotonic() + self.fleet.inventory.spec.policy.deadline_seconds
        )
        verified = {
            t for t, step in self.store.steps(op.id).items() if step.result is StepResult.VERIFIED
        }
        for change in plan.changes:
            if change.kind in SETTLED:
                if change.target.id in verified:
                    continue  # verified by an earlier run, and read as such again just now
                self._record(op, change, SETTLED[change.kind], held, observed=change.observed)
            elif change.kind is ChangeKind.UNSUPPORTED:
                self._record(op, change, StepResult.REFUSED, held, error=change.error)
        self._written.clear()
        self.fleet.prepare([c.target for c in work])
        try:
            self._apply_waves(op, work, held, deadline)
            if op.action.tightens and self.must_settle(held):
                self._settle(op, plan, held, deadline)
            if self.prober is not None:
                self._prove(op, plan, held, deadline)
        except KeyboardInterrupt:
            self._interrupted(op, held)
            raise Interrupted(op.id) from None
        return self._finish(op, held)

    def _interrupted(self, op: Operation, held: Held) -> None:
        """Ctrl-C while applying: say so in the op and the audit log, so `ops list` shows
        it and `ops resume` finishes it (best effort: the lease may be gone already)."""
        try:
            self.store.set_op_status(op.id, OpStatus.INTERRUPTED, held.lease)
            self.store.append_audit(
                self.owner, "op.interrupted", op.id, {"status": OpStatus.INTERRUPTED.value}
            )
            # Calls of ours may still be in flight: leave the lock as a broken holder does,
            # fenced, so the next revoke waits them out and reads again (must_settle),
            # and any write not yet sent is refused.
            self.store.break_lock(held.lease.token)
        except KillswitchError as exc:
            log.warning("could not mark the op interrupted", op=op.id, error=str(exc))

    def _prove(self, op: Operation, plan: Plan, held: Held, deadline: float) -> None:
        """Probe every target that holds its posture now until the serving path agrees
        (killswitch/probes.py): effective, with the seconds from its write, or not."""
        assert self.prober is not None
        steps = self.store.steps(op.id)
        goals, changes = [], {}
        for change in plan.changes:
            step = steps.get(change.target.id)
            if step is None or step.result not in DONE or not self.prober.covers(change.target):
                continue
            goals.append((change.target, step.observed or change.desired))
            changes[change.target.id] = change
        with phase(self.progress, Phase.PROBE, len(goals)):
            effects = self.prober.until(
                goals, written_at=self._written, deadline=deadline, on_effect=self._proved
            )
        for target_id, effect in effects.items():
            result = StepResult.EFFECTIVE if effect.effective else StepResult.NOT_EFFECTIVE
            held.beat.check()
            observed = steps[target_id].observed
            self._record(
                op, changes[target_id], result, held, error=effect.detail, observed=observed
            )

    def _proved(self, target: Target, effect: Effect) -> None:
        self.progress.advance(Phase.PROBE, target, effect.result, effect.detail)

    def must_settle(self, held: Held) -> bool:
        """Whether the holder we fenced out may still land a write looser than ours: any
        op that writes to providers (a stopped restrict's restricted over our revoked,
        too), unless it was a revoke, whose writes are as tight as any can be."""
        fenced = held.lease.fenced
        if fenced is None or fenced.intent is Intent.OTHER:
            return False
        op = self.store.get_op(fenced.op_id) if fenced.op_id else None
        return op is None or not (op.action.tightens and op.desired.posture is Posture.REVOKED)

    def _finish(self, op: Operation, held: Held) -> OpStatus:
        steps = self.store.steps(op.id)
        done = all(steps.get(t) and steps[t].result in DONE for t in op.target_ids)
        status = OpStatus.COMPLETE if done else OpStatus.PARTIAL
        log.info("op finished", op=op.id, status=status.value)
        self.store.set_op_status(op.id, status, held.lease)
        counts: dict[str, int] = {}
        for step in steps.values():
            counts[step.result.value] = counts.get(step.result.value, 0) + 1
        self.store.append_audit(
            self.owner, "op.finished", op.id, {"status": status.value, "results": counts}
        )
        return status

    def _settle(self, op: Operation, plan: Plan, held: Held, deadline: float) -> None:
        """After a takeover: wait until the fenced holder's last write could have landed,
        read every target again, and close again whatever it re-opened."""
        assert held.lease.fenced is not None
        wait = held.taken_at + self.inflight_seconds - self.clock.monotonic()
        log.warning(
            "waiting out the fenced holder's writes in flight",
            holder=held.lease.fenced.owner,
            op=held.lease.fenced.op_id,
            seconds=round(max(0.0, wait), 1),
        )
        self.clock.sleep(wait)
        targets = [c.target for c in plan.changes if c.kind is not ChangeKind.UNSUPPORTED]
        again = self.plan(op.action, op.desired, targets, held)
        reopened = [
            c for c in again.changes if c.kind in (ChangeKind.CHANGE, ChangeKind.UNREADABLE)
        ]
        if reopened:
            log.warning("closing again what the fenced holder re-opened", targets=len(reopened))
        for change in again.changes:
            if change.kind in SETTLED:
                self._record(op, change, SETTLED[change.kind], held, observed=change.observed)
        self._apply_waves(op, reopened, held, deadline)

    def _apply_waves(
        self, op: Operation, changes: Sequence[Change], held: Held, deadline: float
    ) -> None:
        """Write every change, wave by wave, and read each back as its write returns."""
        with (
            phase(self.progress, Phase.APPLY, len(changes)),
            phase(self.progress, Phase.VERIFY, len(changes)),
        ):
            for wave in self._waves(op.action, [_unknown_as_change(c) for c in changes]):
                self._apply_wave(op, wave, held, deadline)

    def _waves(self, action: Action, changes: Sequence[Change]) -> list[list[Change]]:
        """Revoke and restrict close the edge first; restore opens the deep levers first."""

        def wave(change: Change) -> int:
            return self.fleet.mechanism(change.target).wave

        ordered = sorted(changes, key=wave, reverse=action is Action.RESTORE)
        return [list(group) for _, group in groupby(ordered, key=wave)]

    def _units(self, wave: list[Change]) -> list[list[Change]]:
        """Changes applied by one provider call: a group sharing a resource key and a
        desired posture, or one."""
        units: dict[tuple[object, ...], list[Change]] = {}
        for change in wave:
            target = change.target
            mechanism = self.fleet.mechanism(target)
            if isinstance(mechanism, Grouped):
                key: tuple[object, ...] = (
                    target.provider,
                    mechanism.name,
                    mechanism.resource_key(target),
                    change.desired,
                )
            else:
                key = ("single", target.id)
            units.setdefault(key, []).append(change)
        return list(units.values())

    def _apply_wave(self, op: Operation, wave: list[Change], held: Held, deadline: float) -> None:
        ctx = ApplyContext(op.id, op.actor, op.reason, op.ticket, utcnow(), fence=held.beat.check)

        def apply_unit(unit: list[Change]) -> None:
            held.beat.check()
            if time.monotonic() > deadline:
                for change in unit:
                    step = self._record(
                        op,
                        change,
                        StepResult.FAILED,
                        held,
                        error="op deadline passed before this target was tried "
                        "(--deadline or policy.deadline_seconds); `ops resume` tries it",
                    )
                    self._done(change, step, Phase.APPLY, Phase.VERIFY)
                return
            for change in unit:
                self._record(op, change, StepResult.STARTED, held)
            try:
                self.fleet.apply(unit, ctx)
            except LeaseLost:
                raise
            except KillswitchError as exc:
                log.warning(
                    "step failed", op=op.id, targets=[c.target.id for c in unit], error=str(exc)
                )
                for change in unit:
                    step = self._record(op, change, StepResult.FAILED, held, error=str(exc))
                    self._done(change, step, Phase.APPLY, Phase.VERIFY)
                return
            for change in unit:
                self.progress.advance(Phase.APPLY, change.target, "written")
            for change in unit:
                self._verify(op, change, held)

        lost: BaseException | None = None
        units = self._units(wave)
        for unit, outcome in self.fleet.fan_out(units, apply_unit, where=lambda u: u[0].target):
            if isinstance(outcome, LeaseLost):
                lost = outcome
            elif isinstance(outcome, BaseException):
                # A bug, not a provider error: record it against the targets and go on.
                log.error("step crashed", target=unit[0].target.id, error=repr(outcome))
                for change in unit:
                    step = self._record(
                        op, change, StepResult.FAILED, held, error=f"internal error: {outcome!r}"
                    )
                    self._done(change, step, Phase.VERIFY)
        if lost is not None:
            raise lost

    def _verify(self, op: Operation, change: Change, held: Held) -> None:
        """Read the target back: verified only when observed equals desired."""
        try:
            seen = self.fleet.read_back(change.target).access
        except KillswitchError as exc:
            step = self._record(op, change, StepResult.FAILED, held, error=f"read-back: {exc}")
        else:
            if seen != change.desired:
                error = f"read back {seen}, wanted {change.desired}"
                step = self._record(op, change, StepResult.FAILED, held, error=error, observed=seen)
            else:
                step = self._record(op, change, StepResult.VERIFIED, held, observed=seen)
        self._done(change, step, Phase.VERIFY)

    def _record(
        self,
        op: Operation,
        change: Change,
        result: StepResult,
        held: Held,
        *,
        error: str | None = None,
        observed: Access | None = None,
    ) -> Step:
        """Journal one step (fenced by our lease)."""
        desired = change.desired if change.desired != op.desired else None
        step = Step(op.id, change.target.id, result, error, utcnow(), observed, desired)
        if result is StepResult.VERIFIED:
            self._written[change.target.id] = self.clock.monotonic()
        self.store.record_step(step, held.lease)
        return step

    def _done(self, change: Change, step: Step, *phases: Phase) -> None:
        """Tell the display that ``change``'s target is through ``phases`` with ``step``."""
        for which in phases:
            self.progress.advance(which, change.target, step.result.value, step.error)


def _unknown_as_change(change: Change) -> Change:
    """A target we could not read is applied anyway: closing it is the safe bet."""
    if change.kind is ChangeKind.UNREADABLE:
        return Change(change.target, change.desired, None, ChangeKind.CHANGE)
    return change
