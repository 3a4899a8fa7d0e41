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


def check(store: StateStore, op: Operation, actor: str) -> None:
    """Raise unless ``actor`` may approve ``op`` now."""
    if op.status is not OpStatus.AWAITING_APPROVAL:
        raise UsageError(
            f"op {op.id} is {op.status.value}; only a restore awaiting approval takes one"
        )
    have = store.approvals(op.id)
    if actor in have:
        raise AlreadyApproved(op, actor, have)


def record(store: StateStore, op: Operation, actor: str, *, as_requester: bool) -> list[str]:
    """Record ``actor``'s approval of ``op``; return every approver so far."""
    check(store, op, actor)
    have = store.add_approval(op.id, actor)
    kind = "restore.requested-approval" if as_requester else "restore.approved"
    store.append_audit(actor, kind, op.id, {"approvals": have, "required": op.required_approvals})
    return have
