"""The state that decides safety, as the audit log tells it.

Every change to an op's status, to the approvals and to the ledger is an audit event
(``op.requested``, ``op.applying`` with the ledger entries it set, ``op.finished``,
``op.superseded``, ``op.expired``, ``restore.declined``, ``restore.approved`` …), so
the ops, approvals and ledger tables can be recomputed from the chain. ``audit
verify`` reports every row that disagrees; ``drift`` never trusts a ledger row that
is looser than what the log says (a row set to ``open`` by hand hides nothing).
Pure functions over values, like killswitch/audit.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from killswitch import audit
from killswitch.domain import (
    Access,
    Action,
    AuditEvent,
    LedgerEntry,
    Operation,
    OpStatus,
)
from killswitch.state import StateStore
from killswitch.state.codec import timing_to_json

if TYPE_CHECKING:
    from killswitch.approvals import Rules

# The status each event leaves its op in (op.requested and op.finished say it).
STATUS_OF = {
    "op.applying": OpStatus.RUNNING,
    "op.superseded": OpStatus.SUPERSEDED,
    "op.expired": OpStatus.EXPIRED,
    "restore.declined": OpStatus.DECLINED,
    "op.interrupted": OpStatus.INTERRUPTED,
}
APPROVAL_KINDS = ("restore.requested-approval", "restore.approved")
TIMED = "op.timed"  # how long a run of the op took (killswitch/timing.py)
SPOOLED = "break_glass"  # the payload key of an event uploaded from a spool (migrate.py)


@dataclass
class OpFacts:
    """One op as its events describe it."""

    digest: str
    status: OpStatus
    timing: object = None  # the last ``op.timed`` event's, as logged (canonical JSON)


@dataclass
class Replayed:
    ops: dict[str, OpFacts] = field(default_factory=dict)
    ledger: dict[str, LedgerEntry] = field(default_factory=dict)
    approvals: dict[str, set[str]] = field(default_factory=dict)


def replay(events: Iterable[AuditEvent]) -> Replayed:
    """Ops, approvals and ledger as the events, in chain order, set them."""
    found = Replayed()
    for event in events:
        op_id, payload = event.op_id, event.payload
        if op_id is None:
            continue
        if event.kind == "op.requested":
            action = Action(str(payload.get("action")))
            default = OpStatus.RUNNING if action.tightens else OpStatus.AWAITING_APPROVAL
            status = OpStatus(str(payload.get("status") or default.value))
            found.ops.setdefault(op_id, OpFacts(str(payload.get("digest")), status))
        elif event.kind == "op.finished" and op_id in found.ops:
            found.ops[op_id].status = OpStatus(str(payload.get("status")))
        elif event.kind == TIMED and op_id in found.ops:
            found.ops[op_id].timing = payload.get("timing")
        elif event.kind in STATUS_OF and op_id in found.ops:
            found.ops[op_id].status = STATUS_OF[event.kind]
        elif event.kind in APPROVAL_KINDS:
            found.approvals.setdefault(op_id, set()).add(event.actor)
        if event.kind in ("ledger.set", "op.applying"):  # op.applying: as first written
            _set_ledger(found.ledger, op_id, payload)
    return found


def _set_ledger(ledger: dict[str, LedgerEntry], op_id: str, payload: Mapping[str, object]) -> None:
    """The entries a ``ledger.set`` event set, in chain order. An event uploaded from a
    break-glass spool replaces only entries set earlier by the time its op set them,
    as the sync itself does (state/migrate.py)."""
    at = str(payload.get("ledger_at") or "")
    entries = payload.get("ledger")
    if not isinstance(entries, list):
        return
    synced = SPOOLED in payload
    for target_id, desired in entries:
        held = ledger.get(target_id)
        if held is None or not synced or held.at <= at:
            ledger[target_id] = LedgerEntry(target_id, Access.from_json(desired), op_id, at)


LEDGER_BATCH = 400  # entries per ledger.set event: far below a store item's 400 KB


def ledger_batches(entries: Sequence[LedgerEntry]) -> list[dict[str, object]]:
    """The ``ledger.set`` events that record ``entries`` (one op's, set together)."""
    return [
        {
            "ledger": [[e.target_id, e.desired.to_json()] for e in entries[i : i + LEDGER_BATCH]],
            "ledger_at": entries[0].at,
        }
        for i in range(0, len(entries), LEDGER_BATCH)
    ]


def disagreements(
    replayed: Replayed,
    ops: Sequence[Operation],
    ledger: Mapping[str, LedgerEntry],
    approvals: Mapping[str, Sequence[str]],
) -> list[str]:
    """Every row of the tables that the log does not back, as sentences."""
    from killswitch.approvals import digest

    problems: list[str] = []
    rows = {op.id: op for op in ops}
    for op in ops:
        facts = replayed.ops.get(op.id)
        if facts is None:
            problems.append(f"op {op.id}: in the ops table, but never requested in the log")
            continue
        if facts.digest != digest(op):
            problems.append(
                f"op {op.id}: action, posture, targets or approvals required differ from "
                "its request in the log (edited)"
            )
        # A row without timing is only missing a figure; one the log does not back was
        # written behind its back.
        if op.timing is not None and timing_to_json(op.timing) != facts.timing:
            problems.append(f"op {op.id}: its timing in the table differs from the log's (edited)")
        if facts.status is not op.status:
            problems.append(
                f"op {op.id}: status {op.status.value} in the table, {facts.status.value} "
                "in the log"
            )
    problems += [
        f"op {op_id}: requested in the log, missing from the ops table"
        for op_id in replayed.ops
        if op_id not in rows
    ]
    for target_id in sorted(set(ledger) | set(replayed.ledger)):
        row, logged = ledger.get(target_id), replayed.ledger.get(target_id)
        if logged is None:
            problems.append(f"ledger {target_id}: {row.desired if row else '?'} in the table, "
                            "never set in the log")  # fmt: skip
        elif row is None:
            problems.append(f"ledger {target_id}: {logged.desired} in the log (op "
                            f"{logged.op_id}), missing from the table")  # fmt: skip
        elif (row.desired, row.op_id) != (logged.desired, logged.op_id):
            problems.append(
                f"ledger {target_id}: {row.desired} (op {row.op_id}) in the table, "
                f"{logged.desired} (op {logged.op_id}) in the log"
            )
    for op_id in sorted(set(approvals) | set(replayed.approvals)):
        table, logged_by = set(approvals.get(op_id, ())), replayed.approvals.get(op_id, set())
        problems += [
            f"approval of op {op_id} by {actor}: in the table, not in the log"
            for actor in sorted(table - logged_by)
        ]
        problems += [
            f"approval of op {op_id} by {actor}: in the log, not in the table"
            for actor in sorted(logged_by - table)
        ]
    return problems


def safest(
    table: Mapping[str, LedgerEntry], logged: Mapping[str, LedgerEntry]
) -> dict[str, LedgerEntry]:
    """Per target, the tighter of the table's row and the log's entry (their meet when
    neither is tighter): a row loosened behind the log's back never makes drift look away."""
    merged = dict(table)
    for target_id, entry in logged.items():
        row = merged.get(target_id)
        if row is None or entry.desired.at_least_as_tight_as(row.desired):
            merged[target_id] = entry
        elif not row.desired.at_least_as_tight_as(entry.desired):
            merged[target_id] = replace(entry, desired=row.desired.meet(entry.desired))
    return merged


def verify_state(store: StateStore, rules: Rules) -> tuple[list[AuditEvent], list[str]]:
    """``audit verify``: the chain, every signature in it, and every row of the ops,
    approvals and ledger tables against what the log says. (events, problems)"""
    from killswitch.approvals import count

    dump = store.export_state()
    events = list(dump.audit)
    problems = audit.verify(events, dump.audit_head)
    by_op: dict[str, list[str]] = {}
    for approval in dump.approvals:
        by_op.setdefault(approval.op_id, []).append(approval.actor)
    ledger = {e.target_id: e for e in dump.ledger}
    problems += disagreements(replay(events), dump.ops, ledger, by_op)
    for op in dump.ops:
        if op.action.tightens:
            continue
        tally = count(events, op, rules)
        # A forged signature is always reported. An approval that does not count for
        # another reason (unsigned in signed mode, not an approver) cannot come from
        # killswitch itself, so it is reported while its op may still apply; once the op
        # is over it may only be an older policy's.
        shown = tally.ignored if op.status.unfinished else tally.forged
        problems += [f"op {op.id}: {p}" for p in shown]
    return events, problems
