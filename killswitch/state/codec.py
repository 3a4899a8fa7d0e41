"""One codec for the rows every store keeps (ops, journal steps, ledger entries, audit
events), used by SQLite, DynamoDB, the break-glass spool and rendering alike.

``*_to_json`` is the canonical, JSON-native form (postures and target lists nested).
A table keeps scalars, so ``flat``/``nested`` turn the nested fields into JSON text
and back: adding a field to an op means adding it here once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from killswitch.domain import (
    PHASES,
    Access,
    Action,
    AuditEvent,
    LedgerEntry,
    Operation,
    OpStatus,
    OpTiming,
    Step,
    StepResult,
)

log = structlog.get_logger("killswitch.state")

# The fields a table keeps as JSON text.
OP_NESTED = ("desired", "target_ids", "timing")
STEP_NESTED = ("observed", "desired")
LEDGER_NESTED = ("desired",)
EVENT_NESTED = ("payload",)

# Column order of the SQLite ops table.
OP_COLUMNS = (
    "id",
    "action",
    "desired",
    "target_ids",
    "actor",
    "reason",
    "ticket",
    "selector",
    "created_at",
    "status",
    "required_approvals",
    "timing",  # added later: a row from before it has none (NULL, or no attribute)
)


def flat(data: Mapping[str, Any], nested: tuple[str, ...]) -> dict[str, Any]:
    """The canonical form with its ``nested`` fields as JSON text (None stays None)."""
    return {k: (json.dumps(v) if k in nested and v is not None else v) for k, v in data.items()}


def unflat(row: Mapping[str, Any], nested: tuple[str, ...]) -> dict[str, Any]:
    """A table row back to the canonical form."""
    return {k: (json.loads(row[k]) if k in nested and row[k] else row[k]) for k in row}


# -- ops --------------------------------------------------------------------------------
def op_to_json(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "action": op.action.value,
        "desired": op.desired.to_json(),
        "target_ids": list(op.target_ids),
        "actor": op.actor,
        "reason": op.reason,
        "ticket": op.ticket,
        "selector": op.selector,
        "created_at": op.created_at,
        "status": op.status.value,
        "required_approvals": op.required_approvals,
        "timing": timing_to_json(op.timing) if op.timing else None,
    }


def op_from_json(data: Mapping[str, Any]) -> Operation:
    return Operation(
        id=data["id"],
        action=Action(data["action"]),
        desired=Access.from_json(data["desired"]),
        target_ids=tuple(data["target_ids"]),
        actor=data["actor"],
        reason=data["reason"],
        ticket=data["ticket"],
        selector=data["selector"],
        created_at=data["created_at"],
        status=OpStatus(data["status"]),
        required_approvals=int(data["required_approvals"]),
        timing=_readable_timing(data.get("timing"), data["id"]),
    )


def _readable_timing(data: Any, op_id: str) -> OpTiming | None:
    """The op's timing, or None when it is absent or not one killswitch wrote (edited
    by hand): a figure that cannot be read is only missing, and it must never keep
    ``ops list`` from answering during an incident."""
    if not data:
        return None
    try:
        return timing_from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("op timing unreadable; ignored", op=op_id, error=str(exc)[:200])
        return None


def op_row(op: Operation) -> dict[str, Any]:
    return flat(op_to_json(op), OP_NESTED)


def op_from_row(row: Mapping[str, Any]) -> Operation:
    return op_from_json(unflat(row, OP_NESTED))


def timing_to_json(timing: OpTiming) -> dict[str, Any]:
    return {
        "started_at": timing.started_at,
        "runs": timing.runs,
        "verified_after": timing.verified_after,
        "effective_after": timing.effective_after,
        "phases": dict(timing.phases),
    }


def timing_from_json(data: Mapping[str, Any]) -> OpTiming:
    """An op's timing as stored; ValueError when it is not one killswitch wrote. Its text
    reaches terminals, webhooks and metrics labels: phases are only the known ones,
    the start a real time, every figure a finite number of seconds."""

    def seconds(value: Any) -> float:
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"timing: {value!r} is not a number of seconds")
        return number

    started_at = str(data["started_at"])
    datetime.fromisoformat(started_at.replace("Z", "+00:00"))  # ValueError unless a time
    phases = data.get("phases") or {}
    if not isinstance(phases, Mapping) or not set(phases) <= set(PHASES):
        raise ValueError(f"timing: phases must be among {', '.join(PHASES)}")
    verified, effective = data.get("verified_after"), data.get("effective_after")
    return OpTiming(
        started_at=started_at,
        runs=int(data["runs"]),
        verified_after=None if verified is None else seconds(verified),
        effective_after=None if effective is None else seconds(effective),
        phases=tuple((p, seconds(phases[p])) for p in PHASES if p in phases),
    )


def timing_row(timing: OpTiming) -> str:
    """``timing`` as an op row's ``timing`` column holds it."""
    return str(flat({"timing": timing_to_json(timing)}, OP_NESTED)["timing"])


# -- journal steps ------------------------------------------------------------------------
def step_to_json(step: Step) -> dict[str, Any]:
    return {
        "op_id": step.op_id,
        "target_id": step.target_id,
        "result": step.result.value,
        "error": step.error,
        "at": step.at,
        "observed": step.observed.to_json() if step.observed else None,
        "desired": step.desired.to_json() if step.desired else None,
    }


def step_from_json(data: Mapping[str, Any]) -> Step:
    observed, desired = data.get("observed"), data.get("desired")
    return Step(
        data["op_id"],
        data["target_id"],
        StepResult(data["result"]),
        data["error"],
        data["at"],
        Access.from_json(observed) if observed else None,
        Access.from_json(desired) if desired else None,
    )


def step_row(step: Step) -> dict[str, Any]:
    return flat(step_to_json(step), STEP_NESTED)


def step_from_row(row: Mapping[str, Any]) -> Step:
    return step_from_json(unflat(row, STEP_NESTED))


# -- ledger ---------------------------------------------------------------------------------
def ledger_to_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "target_id": entry.target_id,
        "desired": entry.desired.to_json(),
        "op_id": entry.op_id,
        "at": entry.at,
    }


def ledger_from_json(data: Mapping[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        data["target_id"], Access.from_json(data["desired"]), data["op_id"], data["at"]
    )


def ledger_row(entry: LedgerEntry) -> dict[str, Any]:
    return flat(ledger_to_json(entry), LEDGER_NESTED)


def ledger_from_row(row: Mapping[str, Any]) -> LedgerEntry:
    return ledger_from_json(unflat(row, LEDGER_NESTED))


# -- audit events -------------------------------------------------------------------------
def event_to_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at,
        "actor": event.actor,
        "kind": event.kind,
        "op_id": event.op_id,
        "payload": event.payload,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def event_from_json(data: Mapping[str, Any]) -> AuditEvent:
    return AuditEvent(
        int(data["seq"]),
        data["at"],
        data["actor"],
        data["kind"],
        data["op_id"],
        data["payload"],
        data["prev_hash"],
        data["hash"],
    )


def event_row(event: AuditEvent) -> dict[str, Any]:
    return flat(event_to_json(event), EVENT_NESTED)


def event_from_row(row: Mapping[str, Any]) -> AuditEvent:
    return event_from_json(unflat(row, EVENT_NESTED))
