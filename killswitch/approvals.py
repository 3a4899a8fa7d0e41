"""The two-person rule for restore, and what keeps an approval from re-opening more
than it was given for. Approvals are counted from the verified audit log alone.

- People, not labels: an approval counts under its identity's normalised principal
  (killswitch/identity.py), once; the requester counts once, never twice. With
  ``policy.restore.approvers`` only those principals count.
- Signed: a request, approval or decline may carry an SSH signature (killswitch/
  signing.py) over exactly what it says yes or no to: the op, its request, the digest
  of (action, posture, targets, approvals required) and the ledger generation of those
  targets at request time. A signature that does not verify against
  ``policy.restore.allowed_signers`` counts for nothing; with ``signed: true`` neither
  does an unsigned approval.
- Bound to the request: each approval names the hash of its op's ``op.requested``
  event. An approval of another request, or an op row edited since (its digest no
  longer matches the request's), counts for nothing.
- Standing: a restore may re-open only while nothing newer reached its targets (a
  revoke or restrict supersedes it; a ledger entry set by any op requested after it
  makes it stale), it was not declined, and it did not expire unapproved. Otherwise
  ``approve`` and ``ops resume`` refuse it (exit 6) and a new restore must be requested.
- A broken audit chain counts no approval at all (AuditBroken, exit 3).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from killswitch import audit, signing
from killswitch.domain import AuditEvent, LedgerEntry, Operation, OpStatus
from killswitch.errors import AuditBroken, AwaitingApproval, Superseded, UsageError
from killswitch.identity import Identity, IdentityError, normalise
from killswitch.state import StateStore

if TYPE_CHECKING:
    from killswitch.inventory import Inventory

__all__ = ["Rules", "Superseded", "Tally", "digest", "requested", "tally"]

APPROVAL_KINDS = ("restore.requested-approval", "restore.approved")
DECLINED = "restore.declined"
BAD_SIGNATURE = "has a signature that does not verify for that principal"


@dataclass(frozen=True)
class Rules:
    """policy.restore, as the counting needs it."""

    approvers: frozenset[str] = frozenset()  # empty: anyone but a second vote of the same
    allowed_signers: Path | None = None
    signed: bool = False
    expires_after: float = 4 * 3600.0

    @classmethod
    def of(cls, inventory: Inventory) -> Rules:
        from killswitch import identity

        policy = inventory.spec.policy.restore
        signers = identity.allowed_signers(inventory) if policy.allowed_signers else None
        return cls(identity.approvers(inventory), signers, policy.signed, policy.expires_after)


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


@dataclass(frozen=True)
class Declined:
    by: str
    reason: str
    at: str


@dataclass(frozen=True)
class ApprovalState:
    """What ``ops show`` says of a restore's approvals."""

    approvals: list[str]  # the principals that count, in the order they approved
    not_counted: list[str]  # why other approvals did not count
    expires_at: str | None
    signed: bool  # the request carries its requester's signature
    declined: Declined | None

    def to_json(self) -> dict[str, object]:
        return {
            "approvals": self.approvals,
            "not_counted": self.not_counted,
            "expires_at": self.expires_at,
            "signed": self.signed,
            "declined": vars(self.declined) if self.declined else None,
        }


# -- what is signed -----------------------------------------------------------------
def digest(op: Operation) -> str:
    """What an approval of ``op`` says yes to: action, posture, targets, quorum."""
    body = [op.action.value, op.desired.to_json(), sorted(op.target_ids), op.required_approvals]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def generation(ledger: Mapping[str, LedgerEntry], target_ids: Sequence[str]) -> str:
    """The ledger generation of ``target_ids``: which op set each, to what. A restore is
    signed against it, so an approval names the state it re-opens from."""
    rows = sorted(
        [t, e.op_id, e.desired.to_json()] if (e := ledger.get(t)) else [t, None, None]
        for t in target_ids
    )
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def request_message(op: Operation, ledger: str, expires_at: str) -> bytes:
    """The bytes a requester signs: exactly what would be re-opened, from what."""
    return _message(
        "request",
        op=op.id,
        action=op.action.value,
        desired=json.dumps(op.desired.to_json(), sort_keys=True),
        targets=",".join(sorted(op.target_ids)),
        approvals=str(op.required_approvals),
        digest=digest(op),
        ledger=ledger,
        expires=expires_at,
    )


def verdict_message(op: Operation, request: AuditEvent, verdict: str) -> bytes:
    """The bytes an approver (``approve``) or decliner (``decline``) signs."""
    return _message(
        verdict,
        op=op.id,
        request=request.hash,
        digest=digest(op),
        ledger=str(request.payload.get("ledger", "")),
    )


def _message(verdict: str, **fields: str) -> bytes:
    lines = [f"killswitch restore {verdict} v1"] + [f"{k}: {v}" for k, v in fields.items()]
    return ("\n".join(lines) + "\n").encode()


def requested(
    op: Operation, *, ledger: str = "", expires_at: str | None = None
) -> dict[str, object]:
    """The audit payload of a new op: who asked for what, why, on how many targets, and
    (for a restore) from which ledger generation, until when."""
    payload: dict[str, object] = {
        "action": op.action.value,
        "desired": op.desired.to_json(),
        "reason": op.reason,
        "ticket": op.ticket,
        "selector": op.selector,
        "targets": len(op.target_ids),
        "required_approvals": op.required_approvals,
        "status": op.status.value,
        "digest": digest(op),
    }
    if not op.action.tightens:
        payload |= {"ledger": ledger, "expires_at": expires_at}
    return payload


# -- counting ------------------------------------------------------------------------
@dataclass(frozen=True)
class Vote:
    principal: str
    seq: int


@dataclass
class Tally:
    """One restore's request and the approvals that count, from the verified log."""

    op: Operation
    events: list[AuditEvent]
    request: AuditEvent | None
    rules: Rules
    votes: list[Vote] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # why an event did not count
    forged: list[str] = field(default_factory=list)  # signatures that do not verify

    @property
    def names(self) -> list[str]:
        return [v.principal for v in self.votes]

    @property
    def complete(self) -> bool:
        return len(self.votes) >= self.op.required_approvals

    def of_op(self, kind: str) -> list[AuditEvent]:
        return [e for e in self.events if e.op_id == self.op.id and e.kind == kind]


def tally(store: StateStore, op: Operation, rules: Rules) -> Tally:
    """Read and verify the log once, then count ``op``'s approvals from it."""
    events = store.audit_events()
    problems = audit.verify(events, store.audit_head())
    if problems:
        raise AuditBroken(problems)
    return count(events, op, rules)


def count(events: Sequence[AuditEvent], op: Operation, rules: Rules) -> Tally:
    """The approvals of ``op`` that count (pure: ``audit verify`` uses it too)."""
    request = next((e for e in events if e.op_id == op.id and e.kind == "op.requested"), None)
    result = Tally(op, list(events), request, rules)
    if request is None or request.payload.get("digest") != digest(op):
        return result
    seen: set[str] = set()
    expires = _moment(request.payload.get("expires_at"))
    expired_at_seq = next(
        (e.seq for e in events if e.op_id == op.id and e.kind == "op.expired"), None
    )
    for event in events:
        if (
            event.op_id == op.id
            and event.kind == DECLINED
            and not _decline_verifies(event, op, request, rules)
        ):
            result.forged.append(f"event {event.seq}: {event.actor}'s decline {BAD_SIGNATURE}")
        if event.op_id != op.id or event.kind not in APPROVAL_KINDS:
            continue
        if event.payload.get("request") != request.hash:
            result.ignored.append(f"event {event.seq}: approves another request of {op.id}")
            continue
        late = expired_at_seq is not None and event.seq > expired_at_seq
        if late or (expires is not None and (_moment(event.at) or expires) > expires):
            result.ignored.append(f"event {event.seq}: {event.actor}'s approval came after "
                                  "the request expired")  # fmt: skip
            continue
        why = _why_not(event, op, request, rules)
        if why:
            result.ignored.append(f"event {event.seq}: {event.actor}'s approval {why}")
            if why == BAD_SIGNATURE:
                result.forged.append(result.ignored[-1])
            continue
        principal = normalise(event.actor)
        if principal not in seen:
            seen.add(principal)
            result.votes.append(Vote(principal, event.seq))
    return result


def _why_not(event: AuditEvent, op: Operation, request: AuditEvent, rules: Rules) -> str | None:
    """Why ``event`` (an approval of ``request``) does not count, or None when it does."""
    try:
        principal = normalise(event.actor)
    except IdentityError as exc:
        return f"names no valid person ({exc})"
    if rules.approvers and principal not in rules.approvers:
        return "is not by one of policy.restore.approvers"
    if event.kind == "restore.requested-approval":  # the requester signed the request
        signature = request.payload.get("signature")
        expires = str(request.payload.get("expires_at"))
        message = request_message(op, str(request.payload.get("ledger", "")), expires)
    else:
        signature = event.payload.get("signature")
        message = verdict_message(op, request, "approve")
    if signature is None:
        return "is unsigned, and policy.restore.signed is on" if rules.signed else None
    if rules.allowed_signers is None:
        return "is signed, but no allowed_signers file is configured to check it"
    if not _signed_by(message, str(signature), rules.allowed_signers, principal):
        return BAD_SIGNATURE
    return None


def _signed_by(message: bytes, signature: str, allowed_signers: Path, principal: str) -> bool:
    """Whether the key ``allowed_signers`` lists for ``principal`` (as spelled there, in any
    case: names compare normalised) made ``signature`` over ``message``."""
    for listed in signing.signers_of(message, signature, signing.APPROVAL, allowed_signers):
        try:
            if normalise(listed) == principal:
                return True
        except IdentityError:
            continue
    return False


def _decline_verifies(event: AuditEvent, op: Operation, request: AuditEvent, rules: Rules) -> bool:
    """An unsigned decline stands (declining only ever closes); a signed one must verify."""
    signature = event.payload.get("signature")
    if signature is None or rules.allowed_signers is None:
        return True
    try:
        principal = normalise(event.actor)
    except IdentityError:
        return False
    message = verdict_message(op, request, "decline")
    return _signed_by(message, str(signature), rules.allowed_signers, principal)


# -- standing ------------------------------------------------------------------------
def standing(tally: Tally, ledgers: Sequence[Mapping[str, LedgerEntry]], now: datetime) -> None:
    """Raise Superseded unless the restore may still re-open what it names. ``ledgers``:
    the table's and the log's (either showing a newer op on a target makes it stale)."""
    op = tally.op
    superseded = tally.of_op("op.superseded")
    if op.status is OpStatus.SUPERSEDED or superseded:
        why = superseded[-1].payload if superseded else {}
        by = why.get("by")
        if by:
            what = f"{why.get('action')} op {by} ({why.get('reason')}"
            what += f", ticket {why.get('ticket')})" if why.get("ticket") else ")"
            raise Superseded(op.id, f"it was superseded by the newer {what}")
        raise Superseded(op.id, str(why.get("why") or "it was superseded"))
    declined = tally.of_op(DECLINED)
    if op.status is OpStatus.DECLINED or declined:
        event = declined[-1] if declined else None
        who = f"{event.actor} ({event.payload.get('reason')})" if event else "someone"
        raise Superseded(op.id, f"it was declined by {who}")
    request = tally.request
    if request is None:
        raise Superseded(op.id, "its request is not in the audit log")
    if request.payload.get("digest") != digest(op):
        raise Superseded(
            op.id, "the op in the state store differs from what was requested and approved"
        )
    if op.status is OpStatus.EXPIRED or tally.of_op("op.expired") or expired(tally, now):
        raise Superseded(
            op.id, f"nobody approved it before it expired at {request.payload.get('expires_at')}"
        )
    # Anything set on these targets by an op requested after this one makes it stale.
    first_seen: dict[str, int] = {}
    for event in tally.events:
        if event.op_id is not None:
            first_seen.setdefault(event.op_id, event.seq)
    for target_id, ledger in ((t, m) for t in op.target_ids for m in ledgers):
        entry = ledger.get(target_id)
        if entry is None or entry.op_id == op.id:
            continue
        if first_seen.get(entry.op_id, request.seq + 1) > request.seq:
            raise Superseded(
                op.id,
                f"{target_id} was set to {entry.desired} by op {entry.op_id} after this "
                "restore was requested, so its approvals are stale",
            )


def _moment(stamp: object) -> datetime | None:
    """An ISO-8601 UTC time as written in events (``…Z``), or None."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def expired(tally: Tally, now: datetime) -> bool:
    """An unapproved request past its ``expires_at`` (an approved one goes on)."""
    if tally.request is None or tally.complete:
        return False
    expires_at = tally.request.payload.get("expires_at")
    if not isinstance(expires_at, str):
        return False
    return now >= datetime.fromisoformat(expires_at.replace("Z", "+00:00"))


def check(tally: Tally, actor: str) -> None:
    """Raise unless ``actor`` may add an approval to the op now."""
    op = tally.op
    if op.status is not OpStatus.AWAITING_APPROVAL:
        raise UsageError(
            f"op {op.id} is {op.status.value}; only a restore awaiting approval takes one"
        )
    if actor in tally.names:
        raise AlreadyApproved(op, actor, tally.names)


def record(store: StateStore, tally: Tally, who: Identity, *, as_requester: bool) -> list[str]:
    """Record ``who``'s approval of the op, bound to its request (and signed with their
    key, when they have one); return every approver that now counts."""
    op = tally.op
    check(tally, who.principal)
    request = tally.request
    if request is None:
        raise Superseded(op.id, "its request is not in the audit log")
    payload: dict[str, object] = {
        "approvals": len(tally.votes) + 1,
        "required": op.required_approvals,
        "request": request.hash,
    }
    if who.label:
        payload["label"] = who.label
    if who.signer is not None and not as_requester:  # a requester signed the request itself
        payload["signature"] = who.signer.sign(
            verdict_message(op, request, "approve"), signing.APPROVAL
        )
    store.add_approval(op.id, who.principal)
    kind = "restore.requested-approval" if as_requester else "restore.approved"
    event = store.append_audit(who.principal, kind, op.id, payload)
    after = count([*tally.events, event], op, tally.rules)
    return after.names
