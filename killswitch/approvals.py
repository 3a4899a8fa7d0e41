"""The two-person rule for restore: the requester counts once, never twice."""

from __future__ import annotations

from killswitch.domain import Operation, OpStatus
from killswitch.errors import AwaitingApproval, UsageError
from killswitch.state import StateStore


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


def approvers(store: StateStore, op_id: str) -> list[str]:
    """The approvals that count: recorded in the approvals table AND in the audit log. A
    row added to the table by hand, without its audit event, does not count; one added
    with a forged event breaks the hash chain, which `audit verify` reports."""
    audited = {
        e.actor
        for e in store.audit_events()
        if e.op_id == op_id and e.kind in ("restore.requested-approval", "restore.approved")
    }
    return [actor for actor in store.approvals(op_id) if actor in audited]


def check(store: StateStore, op: Operation, actor: str) -> None:
    """Raise unless ``actor`` may approve ``op`` now."""
    if op.status is not OpStatus.AWAITING_APPROVAL:
        raise UsageError(
            f"op {op.id} is {op.status.value}; only a restore awaiting approval takes one"
        )
    have = approvers(store, op.id)
    if actor in have:
        raise AlreadyApproved(op, actor, have)


def record(store: StateStore, op: Operation, actor: str, *, as_requester: bool) -> list[str]:
    """Record ``actor``'s approval of ``op``; return every approver so far."""
    check(store, op, actor)
    recorded = store.add_approval(op.id, actor)
    kind = "restore.requested-approval" if as_requester else "restore.approved"
    store.append_audit(
        actor, kind, op.id, {"approvals": recorded, "required": op.required_approvals}
    )
    return approvers(store, op.id)
