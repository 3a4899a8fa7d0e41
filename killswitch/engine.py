"""What the commands do, independent of how they are typed: plan, change, resume,
approve, status, drift. The CLI (and later the runbook runner) call this."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

import structlog

from killswitch import approvals, drift, planner
from killswitch.contract import Discovery
from killswitch.domain import (
    Access,
    Action,
    Change,
    ChangeKind,
    Operation,
    OpStatus,
    Plan,
    Posture,
    Report,
    StepResult,
    Target,
    TargetReport,
    is_valid_name,
    utcnow,
)
from killswitch.errors import KillswitchError, UnknownOperation, UsageError
from killswitch.executor import Executor, StepListener
from killswitch.inventory import Inventory
from killswitch.planner import Fleet
from killswitch.selectors import Selector, all_targets, resolve
from killswitch.state import StateStore

log = structlog.get_logger("killswitch.engine")

Confirm = Callable[[Plan], None]
"""Shows the plan and returns to go on; raises to refuse."""


def desired_access(action: Action, audience: Sequence[str]) -> Access:
    """The posture ``action`` sets; checks that ``--audience`` fits it."""
    for name in audience:
        if not is_valid_name(name):
            raise UsageError(f"--audience {name!r}: must match [a-z0-9._-], 1-63 characters")
    if action is Action.RESTRICT and not audience:
        raise UsageError("restrict needs --audience (who keeps access), e.g. --audience us-person")
    if action is not Action.RESTRICT and audience:
        raise UsageError(f"--audience only goes with restrict, not {action.value}")
    return Access(action.posture, tuple(audience))


def intent_op_id(
    action: Action, target_ids: Sequence[str], desired: Access, ticket: str | None
) -> str:
    """The same command on the same targets names the same op, so a re-run resumes it."""
    body = json.dumps([action.value, sorted(target_ids), desired.to_json(), ticket])
    return "op-" + hashlib.sha256(body.encode()).hexdigest()[:12]


def key_op_id(idempotency_key: str) -> str:
    return "op-k" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:11]


class Switch:
    def __init__(
        self,
        inventory: Inventory,
        store: StateStore,
        actor: str,
        *,
        concurrency: int | None = None,
        on_step: StepListener | None = None,
    ) -> None:
        self.inventory = inventory
        self.store = store
        self.actor = actor
        self.fleet = Fleet(inventory, concurrency=concurrency)
        self.executor = Executor(self.fleet, store, actor, on_step)

    # -- reading -------------------------------------------------------------
    def plan(self, action: Action, selector: Selector, audience: Sequence[str] = ()) -> Plan:
        desired = desired_access(action, audience)
        return planner.plan(self.fleet, action, desired, resolve(self.inventory, selector))

    def status(self, selector: Selector) -> Report:
        """Observed posture of every selected target, beside the ledger's. Reports only:
        drift here does not change the exit code (that is what ``drift`` is for)."""
        targets = resolve(self.inventory, selector)
        ledger = self.store.ledger()
        seen = self.fleet.observe_all(targets)
        rows = []
        for t in targets:
            entry = ledger.get(t.id)
            obs = seen[t.id]
            desired = entry.desired if entry else None
            if isinstance(obs, KillswitchError):
                rows.append(TargetReport(t, desired, None, "unreadable", str(obs)))
            elif entry is None:
                rows.append(TargetReport(t, None, obs.access, "untouched"))
            else:
                result = "in-sync" if obs.access == desired else "drift"
                rows.append(TargetReport(t, desired, obs.access, result))
        unreadable = any(r.result == "unreadable" for r in rows)
        return Report(None, "unreadable" if unreadable else "ok", tuple(rows))

    def drift(self, selector: Selector) -> Report:
        """Ledger vs observed (killswitch/drift.py)."""
        targets = resolve(self.inventory, selector)
        rows = drift.classify(targets, self.store.ledger(), self.fleet.observe_all(targets))
        models = {t.model for t in targets}
        for name in sorted({t.provider for t in targets}):
            provider = self.inventory.provider(name)
            if isinstance(provider, Discovery):
                try:
                    found = provider.discover()
                except Exception as exc:  # discovery is a bonus: never fail the check on it
                    log.warning("discovery failed", provider=name, error=str(exc))
                    continue
                rows += drift.unmanaged([(t, o) for t, o in found if t.model in models])
        return Report(None, drift.status(rows), tuple(rows))

    def heal(self, report: Report, *, fix_open: bool, reason: str) -> list[Report]:
        """Close again every drifted target that is more open than the ledger says, in
        one op per posture; re-open the others only with ``fix_open`` (a restore, so it
        waits for the approvals policy names)."""
        plan = drift.healing(report.rows)
        groups = list(plan.close.items())
        if fix_open:
            by_desired: dict[Access, list[str]] = {}
            for row in report.rows:
                if row.target.id in plan.reopen and row.desired is not None:
                    by_desired.setdefault(row.desired, []).append(row.target.id)
            groups += list(by_desired.items())
        reports = []
        for desired, ids in groups:
            action = {
                Posture.REVOKED: Action.REVOKE,
                Posture.RESTRICTED: Action.RESTRICT,
                Posture.OPEN: Action.RESTORE,
            }[desired.posture]
            reports.append(
                self.change(
                    action,
                    Selector(targets=tuple(ids)),
                    audience=desired.audience,
                    reason=reason,
                    confirm=lambda plan: None,  # --fix is the consent; it runs unattended
                )
            )
        return reports

    # -- changing --------------------------------------------------------------
    def change(
        self,
        action: Action,
        selector: Selector,
        *,
        audience: Sequence[str] = (),
        reason: str,
        ticket: str | None = None,
        idempotency_key: str | None = None,
        confirm: Confirm,
    ) -> Report:
        """Revoke, restrict or restore: plan, confirm, then apply (restore: after approvals)."""
        plan = self.preview(action, selector, audience=audience, reason=reason)
        _refuse_blocked(plan)
        target_ids = [c.target.id for c in plan.changes]
        work = [c for c in plan.changes if c.kind in (ChangeKind.CHANGE, ChangeKind.UNREADABLE)]
        op_id, existing = self._find_op(
            action, target_ids, plan.desired, ticket, idempotency_key, bool(work)
        )
        if existing is not None:
            if existing.status in (OpStatus.RUNNING, OpStatus.PARTIAL):
                log.info("resuming the op this command started before", op=existing.id)
                return self.resume(existing.id, confirm=confirm)
            if existing.status is OpStatus.AWAITING_APPROVAL:
                if self._approved(existing):  # approved, but its apply was cut short
                    return self.resume(existing.id, confirm=confirm)
                return self._awaiting(existing)
            return self._plan_report(plan, existing.id, "already-done")
        if not work:
            return self._plan_report(plan, None, "nothing-to-do")
        confirm(plan)
        op = Operation(
            id=op_id,
            action=action,
            desired=plan.desired,
            target_ids=tuple(target_ids),
            actor=self.actor,
            reason=reason,
            ticket=ticket,
            selector=selector.describe(),
            created_at=utcnow(),
            status=OpStatus.AWAITING_APPROVAL if action is Action.RESTORE else OpStatus.RUNNING,
            required_approvals=self._required(action),
        )
        if action is Action.RESTORE:
            self.store.create_op(op)
            self.store.append_audit(self.actor, "op.requested", op.id, _requested(op))
            have = approvals.record(self.store, op, self.actor, as_requester=True)
            if len(have) < op.required_approvals:
                return self._awaiting(op)
        return self._run(op, plan.changes)

    def preview(
        self, action: Action, selector: Selector, *, audience: Sequence[str] = (), reason: str
    ) -> Plan:
        """The plan a change command would apply, with the same checks (``--dry-run``)."""
        if not selector.names_models:
            raise UsageError(
                f"name which models to {action.value}: --model, --scope or --target "
                "(--model all means every model; --region alone is not enough)"
            )
        if not reason.strip():
            raise UsageError("--reason must say why (it goes into the audit log and the flag)")
        if len(reason) > MAX_REASON:
            raise UsageError(f"--reason: at most {MAX_REASON} characters")
        return self.plan(action, selector, audience)

    def approve(self, op_id: str, *, confirm: Confirm) -> Report:
        """Add this actor's approval to a restore; apply it once enough people agreed.

        When this approval completes the quorum, the confirmation comes first: a refused
        confirmation records nothing."""
        op = self._get(op_id)
        if op.status is OpStatus.AWAITING_APPROVAL and self._approved(op):
            return self.resume(op.id, confirm=confirm)  # approved, but its apply was cut short
        approvals.check(self.store, op, self.actor)
        if len(approvals.approvers(self.store, op.id)) + 1 >= op.required_approvals:
            plan = self._remaining_plan(op)
            _refuse_blocked(plan)
            if plan.pending or plan.unreadable:
                confirm(plan)
        have = approvals.record(self.store, op, self.actor, as_requester=False)
        if len(have) < op.required_approvals:
            return self._awaiting(op)
        return self.resume(op.id)

    def resume(self, op_id: str, *, confirm: Confirm | None = None) -> Report:
        """Finish a partial or crashed op: re-plan the targets not yet done and apply them."""
        op = self._get(op_id)
        if op.status is OpStatus.AWAITING_APPROVAL and not self._approved(op):
            return self._awaiting(op)
        if op.status is OpStatus.COMPLETE:
            return self.op_report(op.id)
        plan = self._remaining_plan(op)
        _refuse_blocked(plan)
        if confirm is not None and (plan.pending or plan.unreadable):
            confirm(plan)
        return self._run(op, plan.changes)

    def _remaining_plan(self, op: Operation) -> Plan:
        """A fresh plan for the op's targets that are not verified or skipped yet."""
        steps = self.store.steps(op.id)
        todo = [
            t
            for t in self._targets_of(op)
            if t.id not in steps
            or steps[t.id].result not in (StepResult.VERIFIED, StepResult.SKIPPED)
        ]
        return planner.plan(self.fleet, op.action, op.desired, todo)

    def op_report(self, op_id: str) -> Report:
        op = self._get(op_id)
        steps = self.store.steps(op.id)
        known = {t.id: t for t in all_targets(self.inventory)}
        rows = []
        for target_id in op.target_ids:
            target = known.get(target_id) or _target_from_id(target_id)
            step = steps.get(target_id)
            result = step.result.value if step else StepResult.PENDING.value
            rows.append(
                TargetReport(
                    target,
                    op.desired,
                    step.observed if step else None,
                    result,
                    step.error if step else None,
                )
            )
        return Report(op.id, op.status.value, tuple(rows))

    # -- helpers ---------------------------------------------------------------
    def _run(self, op: Operation, changes: Sequence[Change]) -> Report:
        self.executor.run(op, [_unknown_as_change(c) for c in changes], requested=_requested(op))
        return self.op_report(op.id)

    def _approved(self, op: Operation) -> bool:
        return len(approvals.approvers(self.store, op.id)) >= op.required_approvals

    def _required(self, action: Action) -> int:
        return self.inventory.spec.policy.restore.approvals if action is Action.RESTORE else 0

    def _awaiting(self, op: Operation) -> Report:
        report = self.op_report(op.id)
        have = approvals.approvers(self.store, op.id)
        message = (
            f"{len(have)} of {op.required_approvals} approvals ({', '.join(have)}); "
            f"another person runs: killswitch approve {op.id}"
        )
        return Report(op.id, OpStatus.AWAITING_APPROVAL.value, report.rows, message)

    def _get(self, op_id: str) -> Operation:
        op = self.store.get_op(op_id)
        if op is None:
            raise UnknownOperation(op_id)
        return op

    def _find_op(
        self,
        action: Action,
        target_ids: Sequence[str],
        desired: Access,
        ticket: str | None,
        idempotency_key: str | None,
        has_work: bool,
    ) -> tuple[str, Operation | None]:
        """The op id for this intent, and the op already recorded under it (if any)."""
        if idempotency_key is not None:
            op_id = key_op_id(idempotency_key)
            existing = self.store.get_op(op_id)
            if existing is not None and (
                existing.action is not action
                or sorted(existing.target_ids) != sorted(target_ids)
                or existing.desired != desired
            ):
                raise UsageError(
                    f"--idempotency-key {idempotency_key!r} was used for op {op_id} "
                    f"({existing.action.value} {existing.selector}); use a new key for a new intent"
                )
            return op_id, existing
        base = intent_op_id(action, target_ids, desired, ticket)
        op_id, generation = base, 1
        existing = self.store.get_op(op_id)
        # The same intent, done before and undone since: a new op, numbered after the last.
        while existing is not None and existing.status is OpStatus.COMPLETE and has_work:
            generation += 1
            op_id = f"{base}.{generation}"
            existing = self.store.get_op(op_id)
        return op_id, existing

    def _targets_of(self, op: Operation) -> list[Target]:
        known = {t.id: t for t in all_targets(self.inventory)}
        missing = [t for t in op.target_ids if t not in known]
        if missing:
            raise UsageError(
                f"op {op.id} names targets the inventory no longer has: {', '.join(missing)}"
            )
        return [known[t] for t in op.target_ids]

    def _plan_report(self, plan: Plan, op_id: str | None, status: str) -> Report:
        return Report(op_id, status, plan_rows(plan))


MAX_REASON = 1000  # fits a flag document, a partner's reason field and a terminal


def plan_status(plan: Plan) -> str:
    """The status word of a plan, as `plan` and `--dry-run` report it."""
    if plan.blocked:
        return "blocked"
    if plan.pending:
        return "changes-pending"
    return "unreadable" if plan.unreadable else "in-sync"


def _refuse_blocked(plan: Plan) -> None:
    if plan.blocked:
        names = "\n  ".join(f"{c.target.id}: {c.error}" for c in plan.blocked)
        raise UsageError(
            f"cannot {plan.action.value} these targets (nothing was changed):\n  {names}\n"
            "narrow the selector, e.g. --target '!<glob>'"
        )


def plan_rows(plan: Plan) -> tuple[TargetReport, ...]:
    return tuple(
        TargetReport(c.target, c.desired, c.observed, c.kind.value, c.error) for c in plan.changes
    )


def _requested(op: Operation) -> dict[str, object]:
    """The audit payload of a new op: who asked for what, why, on how many targets."""
    return {
        "action": op.action.value,
        "desired": op.desired.to_json(),
        "reason": op.reason,
        "ticket": op.ticket,
        "selector": op.selector,
        "targets": len(op.target_ids),
    }


def _unknown_as_change(change: Change) -> Change:
    """A target we could not read is applied anyway: closing it is the safe bet."""
    if change.kind is ChangeKind.UNREADABLE:
        return Change(change.target, change.desired, None, ChangeKind.CHANGE)
    return change


def _target_from_id(target_id: str) -> Target:
    """Rebuild a Target from its id, for ops whose targets left the inventory."""
    provider_type, rest = target_id.split(":", 1)
    where, region, mechanism, model = rest.split("/", 3)
    provider, _, account = where.partition("@")
    return Target(provider_type, provider, region, mechanism, model, account)


__all__ = ["Posture", "Switch", "desired_access", "plan_rows"]
