"""Tables and JSON. JSON goes to stdout; humans' extras to stderr. Tables fit the
terminal (killswitch/terminal.py); the progress of an op is killswitch/cli/progress.py.

rich is imported only when a table is drawn, so JSON output and ``--help`` stay fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import IO

from killswitch import terminal
from killswitch.domain import (
    Access,
    AuditEvent,
    Operation,
    Plan,
    Report,
    Target,
    TargetReport,
)
from killswitch.terminal import Cell, Column, console_for
from killswitch.text import printable

GLYPHS = {
    "change": "~",
    "no-change": "=",
    "unsupported": "!",
    "unreadable": "?",
    "verified": "✓",
    "skipped": "=",
    "failed": "✗",
    "started": "…",
    "pending": "·",
    "drift": "≠",
    "in-sync": "=",
    "kept": "=",
    "refused": "!",
    "effective": "✓",
    "not-effective": "✗",
}
STYLES = {
    "change": "yellow",
    "unsupported": "red",
    "unreadable": "red",
    "verified": "green",
    "effective": "green",
    "not-effective": "bold red",
    "refused": "bold red",
    "failed": "bold red",
    "drift": "bold red",
    "revoked": "red",
    "restricted": "yellow",
    "open": "green",
}
POSTURE_BREAKS = "(,"  # restricted(eu-person,us-person) wraps after "(" and each ","
# A wide layout is worth it while its free text keeps this many columns; narrower, the
# narrow layout (free text stacked in a column of its own) reads better.
WIDE_FREE_TEXT = 24


def _access(access: Access | None) -> str:
    return "-" if access is None else str(access)


def target_json(row: TargetReport) -> dict[str, object]:
    t = row.target
    return {
        "id": t.id,
        "model": t.model,
        "provider": t.provider,
        "region": t.region,
        "mechanism": t.mechanism,
        "desired": row.desired.to_json() if row.desired else None,
        "observed": row.observed.to_json() if row.observed else None,
        "result": row.result,
        "error": row.error,
    }


def report_json(report: Report) -> dict[str, object]:
    return {
        "op": report.op_id,
        "status": report.status,
        "message": report.message or None,
        "targets": [target_json(r) for r in report.rows],
    }


def emit_json(data: object, stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def blast_radius(targets: Iterable[Target]) -> str:
    targets = list(targets)
    models = sorted({t.model for t in targets})
    regions = {t.region for t in targets}
    providers = sorted({t.provider for t in targets})
    accounts = {(t.provider, t.account) for t in targets if t.account}
    return (
        f"{len(targets)} target{'' if len(targets) == 1 else 's'}: "
        f"{len(models)} model(s) ({', '.join(models)}) in "
        f"{len(regions)} region(s) at {len(providers)} provider(s) ({', '.join(providers)})"
        + (f" in {len(accounts)} accounts" if len(accounts) > 1 else "")
    )


def report_table(report: Report, title: str, stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    console = console_for(out)
    errors: list[str] = []
    effects: list[str] = []
    for row in report.rows:
        if row.error:
            line = f"  {row.target.id}: {printable(row.error)}"
            (effects if row.result == "effective" else errors).append(line)
    terminal.draw(out, _report_layouts(report.rows), room=terminal.room(out), title=title)
    if effects:
        console.print("time to effect (probes):", style="green")
        for line in effects:
            console.print(line, markup=False)
    if errors:
        console.print("errors:", style="red")
        for line in errors:
            console.print(line, markup=False)
    summary = _summary(report.rows)
    line = f"{report.status}" + (f" — op {report.op_id}" if report.op_id else "") + f" — {summary}"
    console.print(line, markup=False)
    if report.message:
        console.print(printable(report.message), markup=False)


def _report_layouts(rows: Sequence[TargetReport]) -> list[terminal.Layout]:
    """Wide: a column per part of the target, ``account`` among them when the rows span
    several accounts (two accounts' rows would look the same without it). Narrow: the
    target id (which names the account) in one column that wraps after each ``/``."""
    accounts = len({r.target.account for r in rows}) > 1
    wide = [
        Column(""),
        Column("model"),
        Column("provider"),
        *([Column("account")] if accounts else []),
        Column("region"),
        Column("mechanism"),
        Column("observed", breaks=POSTURE_BREAKS),
        Column("desired", breaks=POSTURE_BREAKS),
        Column("result"),
    ]
    narrow = [
        Column(""),
        Column("target", breaks="/", give=2),
        Column("observed", breaks=POSTURE_BREAKS),
        Column("desired", breaks=POSTURE_BREAKS),
        Column("result"),
    ]
    wide_rows: list[list[Cell]] = []
    narrow_rows: list[list[Cell]] = []
    for row in rows:
        t = row.target
        glyph = GLYPHS.get(row.result, " ")
        observed: Cell = (
            (str(row.observed), STYLES.get(row.observed.posture.value, "")) if row.observed else "-"
        )
        desired, result = _access(row.desired), (row.result, STYLES.get(row.result, ""))
        where = [t.provider, *([t.account or "-"] if accounts else []), t.region, t.mechanism]
        wide_rows.append([glyph, t.model, *where, observed, desired, result])
        narrow_rows.append([glyph, t.id, observed, desired, result])
    return [terminal.Layout(wide, wide_rows), terminal.Layout(narrow, narrow_rows)]


def _summary(rows: Sequence[TargetReport]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.result] = counts.get(row.result, 0) + 1
    parts = ", ".join(f"{n} {result}" for result, n in sorted(counts.items()))
    return f"{blast_radius(r.target for r in rows)}; {parts}"


def plan_preview(plan: Plan, stream: IO[str]) -> None:
    """What the confirmation prompt shows: the changes and the blast radius."""
    console = console_for(stream)
    pending = plan.pending
    console.print(
        f"{plan.action.value} → {plan.desired}: {len(pending)} of {len(plan.changes)} "
        "selected targets will change",
        markup=False,
    )
    for change in pending[:40]:
        was = _access(change.observed)
        console.print(f"  ~ {change.target.id}: {was} → {change.desired}", markup=False)
    if len(pending) > 40:
        console.print(f"  … and {len(pending) - 40} more", markup=False)
    console.print("blast radius: " + blast_radius(c.target for c in pending), markup=False)


def op_json(op: Operation) -> dict[str, object]:
    """An op as ``ops list/show -o json`` print it: the stored form, with the number of
    targets rather than their ids."""
    from killswitch.state.codec import op_to_json

    data = op_to_json(op)
    data["targets"] = len(data.pop("target_ids"))
    return data


def ops_table(ops: Sequence[Operation], stream: IO[str] | None = None) -> None:
    """Wide: a column each. Narrow: the action under the op id, the actor above the
    reason, the time wrapped after its date."""
    out = stream or sys.stdout
    wide = [
        Column("op"),
        Column("action"),
        Column("desired", breaks=POSTURE_BREAKS),
        Column("status", breaks="-"),
        Column("targets"),
        Column("actor", breaks=" @", give=0),
        Column("created", breaks="T"),
        Column("reason", free=True, least=WIDE_FREE_TEXT),
    ]
    narrow = [
        Column("op\naction"),
        Column("desired", breaks=POSTURE_BREAKS),
        Column("status", breaks="-"),
        Column("targets"),
        Column("created", breaks="T"),
        Column("actor\nreason", free=True),
    ]
    wide_rows: list[list[Cell]] = []
    narrow_rows: list[list[Cell]] = []
    for op in ops:
        actor, reason = printable(op.actor), printable(op.reason)
        desired, status, targets = str(op.desired), op.status.value, str(len(op.target_ids))
        wide_rows.append(
            [op.id, op.action.value, desired, status, targets, actor, op.created_at, reason]
        )
        narrow_rows.append(
            [f"{op.id}\n{op.action.value}", desired, status, targets, op.created_at,
             f"{actor}\n{reason}"]
        )  # fmt: skip
    layouts = [terminal.Layout(wide, wide_rows), terminal.Layout(narrow, narrow_rows)]
    terminal.draw(out, layouts, room=terminal.room(out))


def audit_json(event: AuditEvent) -> dict[str, object]:
    return {
        "seq": event.seq,
        "at": event.at,
        "actor": event.actor,
        "kind": event.kind,
        "op": event.op_id,
        "payload": event.payload,
        "hash": event.hash,
    }


def audit_table(events: Sequence[AuditEvent], stream: IO[str] | None = None) -> None:
    """Wide: a column each, the detail (the event's JSON) wrapping. Narrow: the actor
    above the detail, the time wrapped after its date."""
    out = stream or sys.stdout
    wide = [
        Column("seq"),
        Column("at", breaks="T"),
        Column("actor", breaks=" @", give=0),
        Column("kind"),
        Column("op"),
        Column("detail", free=True, least=WIDE_FREE_TEXT),
    ]
    narrow = [
        Column("seq"),
        Column("at", breaks="T"),
        Column("kind", breaks="."),
        Column("op"),
        Column("actor\ndetail", free=True),
    ]
    wide_rows: list[list[Cell]] = []
    narrow_rows: list[list[Cell]] = []
    for e in events:
        detail = printable(json.dumps(e.payload, ensure_ascii=False))
        actor, seq, op = printable(e.actor), str(e.seq), e.op_id or "-"
        wide_rows.append([seq, e.at, actor, e.kind, op, detail])
        narrow_rows.append([seq, e.at, e.kind, op, f"{actor}\n{detail}"])
    layouts = [terminal.Layout(wide, wide_rows), terminal.Layout(narrow, narrow_rows)]
    terminal.draw(out, layouts, room=terminal.room(out))
