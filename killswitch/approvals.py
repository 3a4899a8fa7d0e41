"""The two-person rule for restore, and what keeps an approval from re-opening more
than it was given for.

- The requester counts once, never twice.
- An approval is bound to its restore's request: the ``op.requested`` audit event,
  whose payload holds a digest of exactly what the op re-opens (action, posture,
  targets, approvals required). An approval of another request, or an op row edited
  since its request, counts for nothing.
- A restore stands only while nothing newer reached its targets: a revoke or restrict
  supersedes it (marked and audited), and a ledger entry set by any op requested after
  it makes its approvals stale. Either way ``approve`` and ``ops resume`` refuse it
  (exit 6) and a new restore must be requested.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from killswitch.domain import AuditEvent, Operation, OpStatus
from killswitch.errors import AwaitingApproval, Superseded, UsageError
from killswitch.state import StateStore

__all__ = ["Superseded", "approvers", "check", "record", "requested", "standing"]

APPROVAL_KINDS = ("restore.requested-approval", "restore.approved")


class AlreadyApproved(AwaitingApproval):
    """The same person approving again adds nothing; the op still waits."""

    def __init__(self, op: Operation, actor: str, have: list[str]) -> None:
        super().__init__(op.id, have, op.required_approvals)
        role = "requested it" if actor == op.actor else "already approved it"
        self.args = (
            f"{actor} {role}; op {op.id} needs {op.required_approvals} different people "
            f"(approved so far: {', '.join(have)}). Another person runs "
            f"`killswitch approve {op.id}`",
        )


def digest(op: Operation) -> str:
    """What an approval of ``op`` says yes to: action, posture, targets, quorum."""
    body = [op.action.value, op.desired.to_json(), sorted(op.target_ids), op.required_approvals]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def requested(op: Operation) -> dict[str, object]:
    """The audit payload of a new op: who asked for what, why, on how many targets."""
    return {
        "action": op.action.value,
        "desired": op.desired.to_json(),
        "reason": op.reason,
        "ticket": op.ticket,
        "selector": op.selector,
        "targets": len(op.target_ids),
        "required_approvals": op.required_approvals,
        "digest": digest(op),
    }


def request_event(events: Sequence[AuditEvent], op_id: str) -> AuditEvent | None:
    return next((e for e in events if e.op_id == op_id and e.kind == "op.requested"), None)


def approvers(
    store: StateStore, op: Operation, events: Sequence[AuditEvent] | None = None
) -> list[str]:
    """The approvals that count: in the approvals table AND in the audit log, given for
    this op's request as it was made. A row added to the table by hand, or an event for
    another request, does not count; a forged event breaks the hash chain."""
    events = store.audit_events() if events is None else events
    request = request_event(events, op.id)
    if request is None or request.payload.get("digest") != digest(op):
        return []
    audited = {
        e.actor
        for e in events
        if e.op_id == op.id
        and e.kind in APPROVAL_KINDS
        and e.payload.get("request") == request.hash
    }
    return [actor for actor in store.approvals(op.id) if actor in audited]


def standing(store: StateStore, op: Operation) -> None:
    """Raise Superseded unless ``op`` (a restore) may still re-open what it names."""
    events = store.audit_events()
    superseded = [e for e in events if e.op_id == op.id and e.kind == "op.superseded"]
    if op.status is OpStatus.SUPERSEDED or superseded:
        why = superseded[-1].payload if superseded else {}
        by = why.get("by")
        if by:
            what = f"{why.get('action')} op {by} ({why.get('reason')}"
            what += f", ticket {why.get('ticket')})" if why.get("ticket") else ")"
            raise Superseded(op.id, f"it was superseded by the newer {what}")
        raise Superseded(op.id, str(why.get("why") or "it was superseded"))
    request = request_event(events, op.id)
    if request is None:
        raise Superseded(op.id, "its request is not in the audit log")
    if request.payload.get("digest") != digest(op):
        raise Superseded(
            op.id, "the op in the state store differs from what was requested and approved"
        )
    # Anything set on these targets by an op requested after this one makes it stale.
    first_seen: dict[str, int] = {}
    for event in events:
        if event.op_id is not None:
            first_seen.setdefault(event.op_id, event.seq)
    ledger = store.ledger()
    for target_id in op.target_ids:
        entry = ledger.get(target_id)
        if entry is None or entry.op_id == op.id:
            continue
        if first_seen.get(entry.op_id, request.seq + 1) > request.seq:
            raise Superseded(
                op.id,
                f"{target_id} was set to {entry.desired} by op {entry.op_id} after this "
                "restore was requested, so its approvals are stale",
            )


def check(store: StateStore, op: Operation, actor: str) -> None:
    """Raise unless ``actor`` may approve ``op`` now."""
    if op.status is not OpStatus.AWAITING_APPROVAL:
        raise UsageError(
            f"op {op.id} is {op.status.value}; only a restore awaiting approval takes one"
        )
    have = approvers(store, op)
    if actor in have:
        raise AlreadyApproved(op, actor, have)


def record(store: StateStore, op: Operation, actor: str, *, as_requester: bool) -> list[str]:
    """Record ``actor``'s approval of ``op``, bound to its request; return every approver."""
    check(store, op, actor)
    request = request_event(store.audit_events(), op.id)
    if request is None:
        raise Superseded(op.id, "its request is not in the audit log")
    recorded = store.add_approval(op.id, actor)
    kind = "restore.requested-approval" if as_requester else "restore.approved"
    store.append_audit(
        actor,
        kind,
        op.id,
        {"approvals": recorded, "required": op.required_approvals, "request": request.hash},
    )
    return approvers(store, op)
