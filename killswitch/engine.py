"""What the commands do, independent of how they are typed: plan, change, resume,
approve, status, drift. The CLI (and later the runbook runner) call this."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

import structlog

from killswitch import approvals, drift, fleet, planner, replay, signing, text
from killswitch.clock import SYSTEM, Clock
from killswitch.contract import CallBound, Discovery
from killswitch.domain import (
    OPEN,
    Access,
    Action,
    ChangeKind,
    Intent,
    LedgerEntry,
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
from killswitch.errors import ExitCode, KillswitchError, UnknownOperation, UsageError
from killswitch.executor import Executor, Held
from killswitch.fleet import Fleet
from killswitch.identity import Identity, IdentityError, normalise
from killswitch.inventory import Inventory
from killswitch.lease import LockRules, Waiting
from killswitch.outcome import Outcome
from killswitch.progress import QUIET, Phase, Progress, phase
from killswitch.selectors import Selector, all_targets, resolve
from killswitch.state import StateStore
from killswitch.state.codec import timing_to_json
from killswitch.timing import Stopwatch

log = structlog.get_logger("killswitch.engine")

Confirm = Callable[[Plan], None]
"""Shows the plan and returns to go on; raises to refuse."""
Consent = Confirm | None
"""None: consent given ahead (--yes, drift --fix): a revoke or restrict reads each
target once, under the lock, instead of first for a preview nobody looks at."""


def desired_access(action: Action, audience: Sequence[str]) -> Access:
    """The posture ``action`` sets; checks that ``--audience`` fits it."""
    for name in audience:
        if not is_valid_name(name):
            raise UsageError(f"--audience {name!r}: must match [a-z0-9._-], 1-63 characters")
    if len(set(audience)) > MAX_AUDIENCES:
        raise UsageError(f"--audience: at most {MAX_AUDIENCES} audiences")
    if action is Action.RESTRICT and not audience:
        raise UsageError("restrict needs --audience (who keeps access), e.g. --audience us-person")
    if action is Action.REVOKE and audience:
        raise UsageError(
            "--audience goes with restrict (who keeps access) or restore (who gets access "
            "back), not revoke"
        )
    if action is Action.RESTORE and audience:
        # Loosening a revoked target to an audience is a restore, under the approvals policy.
        return Access(Posture.RESTRICTED, tuple(audience))
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
        actor: Identity | str,
        *,
        concurrency: int | None = None,
        progress: Progress = QUIET,
        lock_wait: float | None = None,
        on_wait: Waiting | None = None,
        clock: Clock = SYSTEM,
        deadline: float | None = None,
        started: float | None = None,
    ) -> None:
        self.inventory = inventory
        # Seconds a change, approve or resume may take, planning and verifying included
        # (--deadline); None: policy.deadline_seconds.
        self.deadline = deadline
        self.store = store
        # Who acts, from a credential (killswitch/identity.py); a bare name is taken as
        # it is only where the caller vouches for it (tests of the engine alone).
        self.identity = actor if isinstance(actor, Identity) else Identity(normalise(actor), "os")
        self.actor = self.identity.principal
        self.rules = approvals.Rules.of(inventory)
        self.clock = clock
        # Time to kill (killswitch/timing.py): the first op counts from ``started`` (on
        # ``clock``'s monotonic time: when the command began), later ones from their call.
        # It hears what the display hears, and passes it on.
        self.stopwatch = Stopwatch(clock, progress)
        self._started = started
        self.fleet = Fleet(inventory, concurrency=concurrency)
        self.fleet.progress = self.stopwatch
        lock = inventory.spec.policy.lock
        rules = LockRules(
            lock.ttl_seconds,
            min(lock.heartbeat_seconds, lock.ttl_seconds / 3),  # several beats per lease
            lock.wait_seconds if lock_wait is None else lock_wait,
        )
        self.executor = Executor(
            self.fleet,
            store,
            self.actor,
            progress=self.stopwatch,
            rules=rules,
            inflight_seconds=_inflight_bound(inventory),
            clock=clock,
            on_wait=on_wait,
        )

    # -- reading -------------------------------------------------------------
    def plan(self, action: Action, selector: Selector, audience: Sequence[str] = ()) -> Plan:
        desired = desired_access(action, audience)
        targets = resolve(self.inventory, selector)
        ledger = self.store.ledger() if action.tightens else {}
        known = {t.id: e.desired for t in targets if (e := ledger.get(t.id))}
        return fleet.plan(self.fleet, action, desired, targets, known)

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
        return Report(None, Outcome.UNREADABLE if unreadable else Outcome.OK, tuple(rows))

    def drift(self, selector: Selector) -> Report:
        """Ledger vs observed (killswitch/drift.py)."""
        targets = resolve(self.inventory, selector)
        ledger = self.safety_ledger()
        rows = drift.classify(targets, ledger, self.fleet.observe_all(targets))
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

    def prove(self, selector: Selector) -> Report:
        """Probe the selected targets against the ledger's posture (open where the ledger
        has none) until each is effective or the deadline passes: ``verify --effect``."""
        prober = self.executor.prober
        if prober is None:
            raise UsageError("the inventory names no probes (docs/probes.md)")
        targets = [t for t in resolve(self.inventory, selector) if prober.covers(t)]
        if not targets:
            raise UsageError(f"no probe covers the targets of {selector.describe()}")
        ledger = self.safety_ledger()  # a row loosened by hand does not loosen the proof
        goals = [(t, e.desired if (e := ledger.get(t.id)) else OPEN) for t in targets]
        with self._clock(), phase(self.fleet.progress, Phase.PROBE, len(goals)):
            assert self.fleet.deadline is not None
            effects = prober.until(
                goals,
                written_at={},
                deadline=self.fleet.deadline,
                on_effect=lambda t, e: self.fleet.progress.advance(
                    Phase.PROBE, t, e.result, e.detail
                ),
            )
        rows = tuple(
            TargetReport(t, desired, None, effects[t.id].result, effects[t.id].detail)
            for t, desired in goals
        )
        ok = all(effects[t.id].effective for t in targets)
        message = "" if ok else "some targets are not effective: their probes answer otherwise"
        return Report(None, Outcome.OK if ok else Outcome.PARTIAL, rows, message)

    def check_drift(self, selector: Selector, *, fix: bool, fix_open: bool) -> DriftCheck:
        """Drift, healed on request: re-close what is more open than the ledger says (and,
        with ``fix_open``, request restores for what is more closed), then look again."""
        found = self.drift(selector)
        drifted = [r for r in found.rows if r.result in ("drift", "unmanaged")]
        if not (fix or fix_open) or found.status not in (Outcome.DRIFT, Outcome.UNREADABLE):
            if drifted:  # say what drifted, and the command that closes it again
                message = f"{len(drifted)} target(s) differ from the ledger: {_names(drifted)}"
                found = Report(None, found.status, found.rows, message)
            return DriftCheck(found, (), found)
        reason = f"drift-check run by {self.actor}: back to the ledger's posture"
        healed = tuple(self.heal(found, fix_open=fix_open, reason=reason))
        if not healed:
            return DriftCheck(found, (), found)
        again = self.drift(selector)
        message = "; ".join(
            f"healed by op {r.op_id} ({r.status}): {r.rows[0].desired if r.rows else '?'} "
            f"again on {_names(r.rows)}"
            for r in healed
        )
        return DriftCheck(found, healed, Report(None, again.status, again.rows, message))

    def safety_ledger(self) -> dict[str, LedgerEntry]:
        """The ledger as drift must see it: per target, the tighter of the table's row and
        what the audit log says was set (a row loosened by hand hides nothing)."""
        logged = replay.replay(self.store.audit_events()).ledger
        table = self.store.ledger()
        merged = replay.safest(table, logged)
        loosened = [t for t, e in merged.items() if t in table and table[t] != e]
        if loosened:
            log.warning(
                "ledger rows looser than the audit log; using the log",
                targets=len(loosened),
                first=loosened[0],
            )
        return merged

    def heal(self, report: Report, *, fix_open: bool, reason: str) -> list[Report]:
        """Close again every drifted target that is more open than the ledger says, in
        one op per posture; re-open the others only with ``fix_open`` (a restore, so it
        waits for the approvals policy names)."""
        plan = drift.healing(report.rows)
        groups = [
            (Action.REVOKE if d.posture is Posture.REVOKED else Action.RESTRICT, d, ids)
            for d, ids in plan.close.items()
        ]
        if fix_open:
            by_desired: dict[Access, list[str]] = {}
            for row in report.rows:
                if row.target.id in plan.reopen and row.desired is not None:
                    by_desired.setdefault(row.desired, []).append(row.target.id)
            # Every loosening is a restore, re-opening to restricted included.
            groups += [(Action.RESTORE, d, ids) for d, ids in by_desired.items()]
        reports = []
        for action, desired, ids in groups:
            reports.append(
                self.change(
                    action,
                    Selector(targets=tuple(ids)),
                    audience=desired.audience,
                    reason=reason,
                    confirm=None,  # --fix is the consent; it runs unattended
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
        confirm: Consent,
        deadline: float | None = None,
    ) -> Report:
        """Revoke or restrict (at once), or request a restore (applied after approvals),
        all within ``deadline`` seconds (default: the Switch's, or policy's)."""
        with self._clock(deadline):
            read = confirm is not None or not action.tightens
            plan = self.preview(
                action, selector, audience=audience, reason=reason, ticket=ticket, read=read
            )
            if action.tightens:
                return self._tighten(plan, selector, reason, ticket, idempotency_key, confirm)
            return self._request_restore(
                plan, selector, reason, ticket, idempotency_key, confirm or _no_question
            )

    @contextmanager
    def _clock(self, seconds: float | None = None) -> Iterator[None]:
        """The command's deadline, from its start: planning, applying and verifying all
        end by it. A command inside another (a change that resumes) keeps the outer one."""
        if self.fleet.deadline is not None:
            yield
            return
        budget = seconds or self.deadline or self.inventory.spec.policy.deadline_seconds
        self.fleet.deadline = time.monotonic() + budget
        started, self._started = self._started, None
        self.stopwatch.begin(self.clock.monotonic() if started is None else started)
        try:
            yield
        finally:
            self.fleet.deadline = None
            self.fleet.close()  # its worker processes, if the command had any

    def _tighten(
        self,
        preview: Plan,
        selector: Selector,
        reason: str,
        ticket: str | None,
        idempotency_key: str | None,
        confirm: Consent,
    ) -> Report:
        """Revoke or restrict: confirm on what was read, then decide again under the lock.

        What is applied and reported comes from reads taken while holding the lock; a
        loosening holder is fenced out at once, and every unfinished restore of these
        targets is superseded, even when there is nothing to change."""
        action, requested = preview.action, preview.desired
        targets = [c.target for c in preview.changes]
        ids = [t.id for t in targets]
        if confirm is not None and (preview.pending or preview.unreadable):
            with self.stopwatch.phase("confirm"):
                confirm(preview)
        op_id, existing = self._find_op(action, ids, requested, ticket, idempotency_key, False)
        if existing is not None and existing.status.unfinished:
            return self.resume(existing.id)
        self.stopwatch.enter("lock")
        with self.executor.hold(op_id, Intent.TIGHTEN) as held:
            self.stopwatch.enter("plan")
            plan = self.executor.plan(action, requested, targets, held)
            losers = self._loosening_ops(ids)
            needed = (
                plan.pending
                or plan.unreadable
                or plan.blocked
                or losers
                or self.executor.must_settle(held)
            )
            if not needed:
                if existing is not None and existing.status is OpStatus.COMPLETE:
                    return self._plan_report(plan, existing.id, Outcome.ALREADY_DONE)
                return self._plan_report(plan, None, Outcome.NOTHING_TO_DO)
            op_id, _ = self._find_op(action, ids, requested, ticket, idempotency_key, True)
            op = self._record_op(op_id, preview, selector, reason, ticket, OpStatus.RUNNING)
            self._supersede(losers, op, held)
            self._apply(op, plan, held)
        return self.op_report(op.id)

    def _request_restore(
        self,
        plan: Plan,
        selector: Selector,
        reason: str,
        ticket: str | None,
        idempotency_key: str | None,
        confirm: Confirm,
    ) -> Report:
        """A restore is recorded, bound to what it re-opens (signed when the requester
        has a key), and waits for approvals."""
        _refuse_blocked(plan)
        target_ids = [c.target.id for c in plan.changes]
        work = [c for c in plan.changes if c.kind in (ChangeKind.CHANGE, ChangeKind.UNREADABLE)]
        op_id, existing = self._find_op(
            plan.action, target_ids, plan.desired, ticket, idempotency_key, bool(work)
        )
        if existing is not None:
            if existing.status in (OpStatus.RUNNING, OpStatus.PARTIAL, OpStatus.INTERRUPTED):
                log.info("resuming the op this command started before", op=existing.id)
                return self.resume(existing.id, confirm=confirm)
            if existing.status is OpStatus.AWAITING_APPROVAL:
                tally = self._tally(existing)
                self._standing(tally)  # an expired request is not revived by asking again
                if tally.complete:  # approved, but its apply was cut short
                    return self.resume(existing.id, confirm=confirm)
                return self._awaiting(tally)
            return self._plan_report(plan, existing.id, Outcome.ALREADY_DONE)
        if not work:
            return self._plan_report(plan, None, Outcome.NOTHING_TO_DO)
        self._careful(approving=False)
        with self.stopwatch.phase("confirm"):
            confirm(plan)
        op = self._record_op(op_id, plan, selector, reason, ticket, OpStatus.AWAITING_APPROVAL)
        have = approvals.record(self.store, self._tally(op), self.identity, as_requester=True)
        if len(have) < op.required_approvals:
            return self._awaiting(self._tally(op))
        return self.resume(op.id)

    def _careful(self, *, approving: bool = True) -> None:
        """Restore, approve and decline act only as a vouched-for person: no fallback
        identity, and a key when policy.restore.signed is on. Approving or declining
        also needs one of policy.restore.approvers (when it names any); anyone may ask."""
        who = self.identity.vouched()
        if self.rules.allowed_signers is not None and who.signer is None:
            # With keys in play, everyone acts by key: a person with a key and AWS
            # credentials must not count once under each name.
            raise IdentityError(
                "policy.restore.allowed_signers is set, so restore, approve and decline act "
                "with your SSH key (--key PATH, or $KILLSWITCH_SIGNING_KEY; a .pub served "
                "by ssh-agent)"
            )
        if self.rules.signed and who.signer is None:
            raise IdentityError(
                "policy.restore.signed is on: restore, approve and decline need your SSH "
                "key (--key PATH, or $KILLSWITCH_SIGNING_KEY; a .pub served by ssh-agent)"
            )
        if approving and self.rules.approvers and who.principal not in self.rules.approvers:
            raise UsageError(
                f"{who.principal} is not one of policy.restore.approvers, so their approval "
                "or decline would count for nothing"
            )

    def _record_op(
        self,
        op_id: str,
        plan: Plan,
        selector: Selector,
        reason: str,
        ticket: str | None,
        status: OpStatus,
    ) -> Operation:
        """Record a new op for ``plan``'s targets and audit its request (``op.requested``,
        whose digest is what a restore's approvals are bound to)."""
        op = Operation(
            id=op_id,
            action=plan.action,
            desired=plan.desired,
            target_ids=tuple(c.target.id for c in plan.changes),
            actor=self.actor,
            reason=reason,
            ticket=ticket,
            selector=selector.describe(),
            created_at=utcnow(),
            status=status,
            required_approvals=0
            if plan.action.tightens
            else self.inventory.spec.policy.restore.approvals,
        )
        payload = approvals.requested(op)
        if not op.action.tightens:
            ledger = approvals.generation(self.store.ledger(), op.target_ids)
            expires = self.clock.now() + timedelta(seconds=self.rules.expires_after)
            expires_at = expires.isoformat(timespec="seconds").replace("+00:00", "Z")
            payload = approvals.requested(op, ledger=ledger, expires_at=expires_at)
            if self.identity.signer is not None:
                message = approvals.request_message(op, ledger, expires_at)
                payload["signature"] = self.identity.signer.sign(message, signing.APPROVAL)
        if self.identity.label:
            payload["label"] = self.identity.label
        self.store.create_op(op)
        self.store.append_audit(self.actor, "op.requested", op.id, payload)
        return op

    def preview(
        self,
        action: Action,
        selector: Selector,
        *,
        audience: Sequence[str] = (),
        reason: str,
        ticket: str | None = None,
        read: bool = True,
    ) -> Plan:
        """The plan a change command would apply, with the same checks (``--dry-run``);
        ``read=False``: the targets only, each to be read under the lock."""
        if not selector.names_models:
            raise UsageError(
                f"name which models to {action.value}: --model, --scope or --target "
                "(--model all means every model; --region alone is not enough)"
            )
        if not reason.strip():
            raise UsageError("--reason must say why (it goes into the audit log and the flag)")
        text.check_reason(reason)
        text.check_ticket(ticket)
        if not read:
            desired = desired_access(action, audience)
            return planner.unread(action, desired, resolve(self.inventory, selector))
        return self.plan(action, selector, audience)

    def approve(self, op_id: str, *, confirm: Confirm) -> Report:
        with self._clock():
            return self._approve(op_id, confirm=confirm)

    def _approve(self, op_id: str, *, confirm: Confirm) -> Report:
        """Add this person's approval to a restore; apply it once enough people agreed.

        A superseded, stale, declined or expired restore takes no approval (exit 6).
        When this approval completes the quorum, the confirmation comes first: a refused
        confirmation records nothing."""
        op = self.operation(op_id)
        if op.action.tightens:
            raise UsageError(f"op {op.id} is a {op.action.value}: only a restore takes approvals")
        tally = self._tally(op)
        self._standing(tally)
        if op.status is OpStatus.AWAITING_APPROVAL and tally.complete:
            return self.resume(op.id, confirm=confirm)  # approved, but its apply was cut short
        self._careful()
        approvals.check(tally, self.actor)
        if len(tally.votes) + 1 >= op.required_approvals:
            plan = self._plan_of(op)
            _refuse_blocked(plan)
            if plan.pending or plan.unreadable:
                with self.stopwatch.phase("confirm"):
                    confirm(plan)
        have = approvals.record(self.store, tally, self.identity, as_requester=False)
        if len(have) < op.required_approvals:
            return self._awaiting(self._tally(op))
        return self.resume(op.id)

    def decline(self, op_id: str, *, reason: str) -> Report:
        """End a restore request: it will never re-open anything (audited, signed when
        the decliner has a key). An approver or the requester may decline."""
        if not reason.strip():
            raise UsageError("--reason must say why the restore is declined")
        text.check_reason(reason)
        op = self.operation(op_id)
        if op.action.tightens:
            raise UsageError(
                f"op {op.id} is a {op.action.value}: only a restore request is declined"
            )
        tally = self._tally(op)
        self._standing(tally)
        if op.status is not OpStatus.AWAITING_APPROVAL:
            raise UsageError(
                f"op {op.id} is {op.status.value}; only a restore awaiting approval can be declined"
            )
        if self.actor != op.actor:
            self._careful()
        else:
            self.identity.vouched()
        assert tally.request is not None  # standing() checked
        payload: dict[str, object] = {"reason": reason, "request": tally.request.hash}
        if self.identity.label:
            payload["label"] = self.identity.label
        if self.identity.signer is not None:
            message = approvals.verdict_message(op, tally.request, "decline")
            payload["signature"] = self.identity.signer.sign(message, signing.APPROVAL)
        self.store.set_op_status(op.id, OpStatus.DECLINED, None)
        self.store.append_audit(self.actor, approvals.DECLINED, op.id, payload)
        log.warning("restore declined", op=op.id, by=self.actor)
        return self.op_report(op.id)

    def resume(self, op_id: str, *, confirm: Confirm | None = None) -> Report:
        with self._clock():
            return self._resume(op_id, confirm=confirm)

    def _resume(self, op_id: str, *, confirm: Confirm | None = None) -> Report:
        """Finish a partial or crashed op: plan its targets again under the lock and apply.

        A restore resumes only while it still stands: approved, bound to what it was
        approved for, and not superseded by a newer revoke or restrict (else exit 6)."""
        op = self.operation(op_id)
        if op.status is OpStatus.COMPLETE:
            return self.op_report(op.id)
        if not op.action.tightens:
            tally = self._tally(op)
            self._standing(tally)
            if op.status is OpStatus.AWAITING_APPROVAL and not tally.complete:
                return self._awaiting(tally)
        if confirm is not None:
            preview = self._plan_of(op)
            if not op.action.tightens:
                _refuse_blocked(preview)
            if preview.pending or preview.unreadable:
                with self.stopwatch.phase("confirm"):
                    confirm(preview)
        self.stopwatch.enter("lock")
        with self.executor.hold(op.id, Intent.of(op.action)) as held:
            self.stopwatch.enter("plan")
            op = self.operation(op.id)  # as it is now that the lock is ours
            if op.status is OpStatus.COMPLETE:
                return self.op_report(op.id)  # the holder we waited for finished it
            if op.action.tightens:
                self._supersede(self._loosening_ops(op.target_ids), op, held)
            else:
                self._still_standing(op, held)
            plan = self.executor.plan(op.action, op.desired, self._targets_of(op), held)
            if not op.action.tightens:
                _refuse_blocked(plan)
            self._apply(op, plan, held)
        return self.op_report(op.id)

    def _apply(self, op: Operation, plan: Plan, held: Held) -> None:
        """Apply ``plan`` for ``op``, and record how long this run took, with the op and
        in the audit log (``op.timed``). The timing is best effort: the op is done."""
        self.stopwatch.applying()
        status = self.executor.apply(op, plan, held)
        timing = self.stopwatch.timing(status, op.target_ids, self.store.steps(op.id), op.timing)
        try:
            payload: dict[str, object] = {"timing": timing_to_json(timing)}
            self.store.append_audit(self.actor, replay.TIMED, op.id, payload)
            self.store.set_op_timing(op.id, timing, held.lease)
        except KillswitchError as exc:
            log.warning("could not record the op's timing", op=op.id, error=str(exc))

    def _still_standing(self, op: Operation, held: Held) -> None:
        """Under the lock, a restore checks once more that it may re-open; if not, it is
        marked superseded (audited) and refused."""
        fresh = self.operation(op.id)
        try:
            tally = self._tally(fresh)
            self._standing(tally)
            if not tally.complete:
                raise approvals.Superseded(op.id, "its approvals no longer count")
        except approvals.Superseded as exc:
            if fresh.status is not OpStatus.SUPERSEDED:
                self.store.set_op_status(op.id, OpStatus.SUPERSEDED, held.lease)
                self.store.append_audit(
                    self.actor, "op.superseded", op.id, {"by": None, "why": str(exc)}
                )
            raise

    def _plan_of(self, op: Operation) -> Plan:
        """The op's targets as read now (before the lock: for showing and confirming)."""
        targets = self._targets_of(op)
        ledger = self.store.ledger() if op.action.tightens else {}
        known = {t.id: e.desired for t in targets if (e := ledger.get(t.id))}
        return fleet.plan(self.fleet, op.action, op.desired, targets, known)

    def _loosening_ops(self, target_ids: Sequence[str]) -> list[Operation]:
        """Every unfinished restore that would re-open one of ``target_ids``."""
        wanted = set(target_ids)
        return [
            op
            for op in self.store.open_ops()
            if not op.action.tightens and op.status.unfinished and wanted & set(op.target_ids)
        ]

    def _supersede(self, losers: Sequence[Operation], by: Operation, held: Held) -> None:
        """Newer tightening wins: mark each loosening op superseded, audited, naming
        the op that did it and why."""
        reached = set(by.target_ids)
        for loser in losers:
            self.store.set_op_status(loser.id, OpStatus.SUPERSEDED, held.lease)
            self.store.append_audit(
                by.actor,
                "op.superseded",
                loser.id,
                {
                    "by": by.id,
                    "action": by.action.value,
                    "reason": by.reason,
                    "ticket": by.ticket,
                    "targets": len(reached & set(loser.target_ids)),
                },
            )
            log.warning("superseded a restore", op=loser.id, by=by.id)

    def as_now(self, ops: Sequence[Operation]) -> list[Operation]:
        """Ops as they stand now: an unapproved restore request past its expiry shows
        ``expired`` (it is marked so, audited, the next time anyone acts on it)."""
        if not any(op.status is OpStatus.AWAITING_APPROVAL for op in ops):
            return list(ops)
        events, now = self.store.audit_events(), self.clock.now()
        return [
            replace(op, status=OpStatus.EXPIRED)
            if op.status is OpStatus.AWAITING_APPROVAL
            and approvals.expired(approvals.count(events, op, self.rules), now)
            else op
            for op in ops
        ]

    def approval_state(self, op: Operation) -> approvals.ApprovalState:
        """A restore's approvals that count, what did not and why, until when it may be
        approved, and who declined it."""
        if op.action.tightens:
            return approvals.ApprovalState([], [], None, False, None)
        tally = approvals.count(self.store.audit_events(), op, self.rules)
        request = tally.request.payload if tally.request else {}
        declined = tally.of_op(approvals.DECLINED)
        expires = request.get("expires_at")
        return approvals.ApprovalState(
            tally.names,
            tally.ignored,
            expires if isinstance(expires, str) else None,
            "signature" in request,
            approvals.Declined(
                declined[-1].actor, str(declined[-1].payload.get("reason")), declined[-1].at
            )
            if declined
            else None,
        )

    def op_report(self, op_id: str) -> Report:
        op = self.as_now([self.operation(op_id)])[0]
        steps = self.store.steps(op.id)
        known = {t.id: t for t in all_targets(self.inventory)}
        rows = []
        for target_id in op.target_ids:
            target = known.get(target_id) or _target_from_id(target_id)
            step = steps.get(target_id)
            result = step.result.value if step else StepResult.PENDING.value
            desired = step.desired if step and step.desired else op.desired
            rows.append(
                TargetReport(
                    target,
                    desired,
                    step.observed if step else None,
                    result,
                    step.error if step else None,
                )
            )
        return Report(op.id, Outcome(op.status.value), tuple(rows), _next_step(op, rows))

    def anchor(self) -> None:
        """Checkpoint the audit chain's head to ``policy.audit.anchor`` (signed with the
        actor's key when there is one). Best effort and bounded (killswitch/anchor.py);
        the CLI calls it after the report is out, so it never holds what on-call reads."""
        from killswitch.anchor import anchor_after_op

        anchor_after_op(
            self.store,
            self.inventory.spec.policy.audit.anchor,
            self.identity.signer,
            store_url=self.inventory.state_url,
            base=self.inventory.path.parent,
            allowed_signers=self.rules.allowed_signers,
        )

    # -- helpers ---------------------------------------------------------------
    def _tally(self, op: Operation) -> approvals.Tally:
        """``op``'s approvals that count, from the audit log (verified first)."""
        return approvals.tally(self.store, op, self.rules)

    def _standing(self, tally: approvals.Tally) -> None:
        """Raise Superseded unless the restore still stands. A request found past its
        expiry unapproved is marked expired (audited) on the way."""
        op, now = tally.op, self.clock.now()
        if (
            op.status is OpStatus.AWAITING_APPROVAL
            and approvals.expired(tally, now)
            and tally.request is not None
        ):
            self.store.set_op_status(op.id, OpStatus.EXPIRED, None)
            self.store.append_audit(
                self.actor, "op.expired", op.id, {"expires_at": tally.request.payload["expires_at"]}
            )
        logged = replay.replay(tally.events).ledger
        approvals.standing(tally, [self.store.ledger(), logged], now)

    def _awaiting(self, tally: approvals.Tally) -> Report:
        op = tally.op
        report = self.op_report(op.id)
        have = tally.names
        expires = tally.request.payload.get("expires_at") if tally.request else None
        message = (
            f"{len(have)} of {op.required_approvals} approvals ({', '.join(have)}); "
            f"another person runs: killswitch approve {op.id}"
            + (f" (before {expires}, when the request expires)" if expires else "")
        )
        return Report(op.id, Outcome.AWAITING_APPROVAL, report.rows, message)

    def operation(self, op_id: str) -> Operation:
        """The op, or UnknownOperation (exit 64)."""
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
            if existing is not None and existing.status in VOID:
                raise approvals.Superseded(
                    op_id,
                    f"it is {existing.status.value}; a new request needs a new --idempotency-key",
                )
            return op_id, existing
        base = intent_op_id(action, target_ids, desired, ticket)
        op_id, generation = base, 1
        existing = self.store.get_op(op_id)
        # The same intent, done before and undone since (or superseded): a new op,
        # numbered after the last.
        while existing is not None and (
            existing.status in VOID or (existing.status is OpStatus.COMPLETE and has_work)
        ):
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

    def _plan_report(self, plan: Plan, op_id: str | None, status: Outcome) -> Report:
        return Report(op_id, status, plan_rows(plan))


@dataclass(frozen=True)
class DriftCheck:
    """One drift check: what it found, the ops that healed it, and what it found after."""

    found: Report
    healed: tuple[Report, ...]
    final: Report

    @property
    def exit_code(self) -> ExitCode:
        """A heal that waits for approvals (5) or did not finish (3) says so; otherwise the
        final look decides (0 in sync, 2 drift, 3 unreadable)."""
        statuses = {r.status for r in self.healed}
        if Outcome.AWAITING_APPROVAL in statuses:
            return ExitCode.AWAITING_APPROVAL
        if Outcome.PARTIAL in statuses:
            return ExitCode.PARTIAL
        return self.final.status.exit_code


# An op that will never apply: a new command with the same intent is a new op.
VOID = frozenset({OpStatus.SUPERSEDED, OpStatus.DECLINED, OpStatus.EXPIRED})
MAX_AUDIENCES = 16  # keeps every flag document within its provider's size limit


def plan_status(plan: Plan) -> Outcome:
    """The status word of a plan, as `plan` and `--dry-run` report it. A tightening plan
    goes ahead past targets it cannot change (they are refused, exit 3); a restore
    does not (blocked, 64)."""
    if plan.blocked and not plan.action.tightens:
        return Outcome.BLOCKED
    if plan.pending:
        return Outcome.CHANGES_PENDING
    if plan.blocked:
        return Outcome.REFUSED
    return Outcome.UNREADABLE if plan.unreadable else Outcome.IN_SYNC


def _names(rows: Sequence[TargetReport], shown: int = 5) -> str:
    """The first target ids of ``rows``, and how many more."""
    ids = [r.target.id for r in rows]
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


def _no_question(plan: Plan) -> None:
    """Consent given ahead."""


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


def _next_step(op: Operation, rows: Sequence[TargetReport]) -> str:
    """What to run next when an op did not finish, for the report's last line."""
    if op.status is OpStatus.SUPERSEDED:
        return f"op {op.id} was superseded by a newer revoke or restrict; request a new restore"
    if op.status not in (OpStatus.PARTIAL, OpStatus.RUNNING):
        return ""
    refused = [r for r in rows if r.result == StepResult.REFUSED.value]
    hint = f"next: fix what failed, then `killswitch ops resume {op.id}`"
    if refused:
        return f"{hint}; {len(refused)} target(s) refused ({refused[0].error}), the rest applied"
    return hint


def _inflight_bound(inventory: Inventory) -> float:
    """The longest one provider call of any provider in the inventory may take."""
    bounds = [
        provider.call_bound_seconds()
        for name in inventory.provider_names
        if isinstance(provider := inventory.provider(name), CallBound)
    ]
    return max(bounds, default=DEFAULT_CALL_BOUND)


DEFAULT_CALL_BOUND = 30.0  # for a provider that does not say how long its calls may take


def _target_from_id(target_id: str) -> Target:
    """Rebuild a Target from its id, for ops whose targets left the inventory."""
    provider_type, rest = target_id.split(":", 1)
    where, region, mechanism, model = rest.split("/", 3)
    provider, _, account = where.partition("@")
    return Target(provider_type, provider, region, mechanism, model, account)


__all__ = ["Posture", "Switch", "desired_access", "plan_rows"]
