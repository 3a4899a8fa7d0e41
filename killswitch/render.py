"""Tables and JSON. JSON goes to stdout; humans' extras to stderr. The progress of an
op is killswitch/cli/progress.py.

rich is imported only when a table is drawn, so JSON output and ``--help`` stay fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

from killswitch.domain import (
    Access,
    AuditEvent,
    Operation,
    Plan,
    Report,
    Target,
    TargetReport,
)
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


def use_color(stream: IO[str]) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def _console(stream: IO[str]) -> Any:
    from rich.console import Console

    tty = stream.isatty()
    return Console(
        file=stream,
        no_color=not use_color(stream),
        highlight=False,
        width=None if tty else 240,
        force_terminal=tty and use_color(stream),
    )


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
    return (
        f"{len(targets)} target{'' if len(targets) == 1 else 's'}: "
        f"{len(models)} model(s) ({', '.join(models)}) in "
        f"{len(regions)} region(s) at {len(providers)} provider(s) ({', '.join(providers)})"
    )


def report_table(report: Report, title: str, stream: IO[str] | None = None) -> None:
    from rich.table import Table

    console = _console(stream or sys.stdout)
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in ("", "model", "provider", "region", "mechanism", "observed", "desired", "result"):
        table.add_column(column)
    errors: list[str] = []
    effects: list[str] = []
    for row in report.rows:
        style = STYLES.get(row.result, "")
        observed = _access(row.observed)
        table.add_row(
            GLYPHS.get(row.result, " "),
            row.target.model,
            row.target.provider,
            row.target.region,
            row.target.mechanism,
            f"[{STYLES.get(observed.split('(')[0], '')}]{observed}[/]" if row.observed else "-",
            _access(row.desired),
            f"[{style}]{row.result}[/]" if style else row.result,
        )
        if row.error:
            line = f"  {row.target.id}: {printable(row.error)}"
            (effects if row.result == "effective" else errors).append(line)
    console.print(table)
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


def _summary(rows: Sequence[TargetReport]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.result] = counts.get(row.result, 0) + 1
    parts = ", ".join(f"{n} {result}" for result, n in sorted(counts.items()))
    return f"{blast_radius(r.target for r in rows)}; {parts}"


def plan_preview(plan: Plan, stream: IO[str]) -> None:
    """What the confirmation prompt shows: the changes and the blast radius."""
    console = _console(stream)
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
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False)
    for column in ("op", "action", "desired", "status", "targets", "actor", "created", "reason"):
        table.add_column(column)
    for op in ops:
        table.add_row(
            op.id,
            op.action.value,
            str(op.desired),
            op.status.value,
            str(len(op.target_ids)),
            Text(printable(op.actor)),
            op.created_at,
            Text(printable(op.reason)),
        )
    _console(stream or sys.stdout).print(table)


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
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False)
    for column in ("seq", "at", "actor", "kind", "op", "detail"):
        table.add_column(column)
    for e in events:
        detail = printable(json.dumps(e.payload, ensure_ascii=False))
        table.add_row(
            str(e.seq), e.at, Text(printable(e.actor)), e.kind, e.op_id or "-", Text(detail)
        )
    _console(stream or sys.stdout).print(table)
