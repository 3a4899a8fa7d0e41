"""The posture map (``killswitch status --output html``): one self-contained page of every
model by provider and region, its posture and drift, the op that set it, and the audit log.

Pure: values in, an HTML string out. Nothing on the page reaches the network (a CSP
meta forbids it, and there is no script). Every string from the state or a provider is
made printable (``text.printable``: control and bidi characters shown as escapes, URL
passwords masked) and then HTML-escaped; the page itself is ASCII, so any terminal
encoding carries it. Colour is never the only signal: every cell says its posture and
drift in words, and ``@media print`` keeps the colours on paper.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from killswitch.domain import (
    OPEN,
    Access,
    AuditEvent,
    LedgerEntry,
    Operation,
    Posture,
    Report,
    Target,
)
from killswitch.outcome import Outcome
from killswitch.text import excerpt, printable

RECENT = 50  # audit events on the timeline, newest first
REASON_CHARS = 200  # a reason's excerpt in a cell; the operations table has it whole
ERROR_CHARS = 300

# Light backgrounds with dark text: readable on screen and on paper alike.
COLOURS = {
    "revoked": "#f4c7cb",
    "restricted": "#ffe69c",
    "open": "#c3e6cb",
    "unreadable": "#d3d6da",
    "none": "#ffffff",
}
DRIFT_COLOUR = "#6f2dbd"
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


@dataclass(frozen=True)
class Column:
    """One column of the grid: a provider instance (and account) in one region."""

    provider_type: str
    provider: str
    account: str
    region: str

    @classmethod
    def of(cls, target: Target) -> Column:
        return cls(target.provider_type, target.provider, target.account, target.region)


@dataclass(frozen=True)
class Lever:
    """One target: what the provider says, what the ledger says, and who set it."""

    target: Target
    observed: Access | None  # None: unreadable
    entry: LedgerEntry | None  # None: no op has set it (expected open)
    op: Operation | None
    error: str | None = None

    @property
    def desired(self) -> Access:
        return self.entry.desired if self.entry else OPEN

    @property
    def drifted(self) -> bool:
        return self.observed is not None and self.observed != self.desired


@dataclass(frozen=True)
class Cell:
    """The levers of one model at one column. It shows the loosest posture among them
    (what a caller can still get through), unreadable when any lever could not be read."""

    levers: tuple[Lever, ...]

    @property
    def shown(self) -> Access | None:
        loosest: Access | None = None
        for lever in self.levers:
            if lever.observed is None:
                return None
            if loosest is None or lever.observed.looser_than(loosest):
                loosest = lever.observed
        return loosest

    @property
    def word(self) -> str:
        """The cell's class and label: a posture, ``unreadable``, or ``none`` (no levers)."""
        if not self.levers:
            return "none"
        shown = self.shown
        return "unreadable" if shown is None else shown.posture.value

    @property
    def drifted(self) -> bool:
        return any(lever.drifted for lever in self.levers)


@dataclass(frozen=True)
class Moment:
    """One audit event on the timeline, as the log says it (the reason only where the
    event carries one: a request, a decline)."""

    seq: int
    at: str
    actor: str
    kind: str
    op_id: str
    reason: str

    @classmethod
    def of(cls, event: AuditEvent) -> Moment:
        reason = event.payload.get("reason")
        label = event.payload.get("label")  # --actor: a display label beside the principal
        actor = f"{event.actor} ({label})" if isinstance(label, str) else event.actor
        text = reason if isinstance(reason, str) else ""
        return cls(event.seq, event.at, actor, event.kind, event.op_id or "", text)


@dataclass(frozen=True)
class PostureMap:
    inventory: str
    generated_at: str
    status: Outcome
    models: tuple[str, ...]
    columns: tuple[Column, ...]
    cells: Mapping[tuple[str, Column], Cell]
    ops: tuple[Operation, ...]  # the ops that set what the grid shows, newest first
    timeline: tuple[Moment, ...]  # newest first
    events: int  # in the whole log

    def cell(self, model: str, column: Column) -> Cell:
        return self.cells.get((model, column), Cell(()))


def survey(
    report: Report,
    ledger: Mapping[str, LedgerEntry],
    find_op: Callable[[str], Operation | None],
    events: Sequence[AuditEvent],
    *,
    inventory: str,
    generated_at: str,
    recent: int = RECENT,
) -> PostureMap:
    """The map of ``report`` (``Switch.status``) against ``ledger`` (the safety ledger:
    drift is judged as ``killswitch drift`` judges it), with the ops ``find_op`` knows."""
    found: dict[str, Operation | None] = {}

    def op(op_id: str | None) -> Operation | None:
        if op_id is None:
            return None
        if op_id not in found:
            found[op_id] = find_op(op_id)
        return found[op_id]

    models: dict[str, None] = {}
    columns: dict[Column, None] = {}
    levers: dict[tuple[str, Column], list[Lever]] = {}
    for row in report.rows:
        target, column = row.target, Column.of(row.target)
        models.setdefault(target.model)
        columns.setdefault(column)
        entry = ledger.get(target.id)
        lever = Lever(target, row.observed, entry, op(entry.op_id if entry else None), row.error)
        levers.setdefault((target.model, column), []).append(lever)
    latest = reversed(events[-recent:]) if recent > 0 else ()
    timeline = tuple(Moment.of(event) for event in latest)
    ordered = sorted(columns, key=_grouped(list(columns)))
    setters = {lever.op.id: lever.op for ls in levers.values() for lever in ls if lever.op}
    return PostureMap(
        inventory=inventory,
        generated_at=generated_at,
        status=report.status,
        models=tuple(models),
        columns=tuple(ordered),
        cells={key: Cell(tuple(ls)) for key, ls in levers.items()},
        ops=tuple(sorted(setters.values(), key=lambda o: o.created_at, reverse=True)),
        timeline=timeline,
        events=len(events),
    )


def _grouped(columns: list[Column]) -> Callable[[Column], tuple[int, int, int]]:
    """Columns side by side per provider, then per account, in the order first seen."""
    providers = {p: i for i, p in enumerate(dict.fromkeys(c.provider for c in columns))}
    accounts = {a: i for i, a in enumerate(dict.fromkeys((c.provider, c.account) for c in columns))}
    seen = {c: i for i, c in enumerate(columns)}
    return lambda c: (providers[c.provider], accounts[c.provider, c.account], seen[c])


# -- the page ---------------------------------------------------------------------------


def _e(value: object) -> str:
    """Any value as harmless HTML text: printable first, then escaped (quotes too)."""
    return html.escape(printable(value), quote=True)


def _label(access: Access | None) -> str:
    if access is None:
        return "UNREADABLE"
    if access.posture is Posture.RESTRICTED:
        return f"RESTRICTED ({', '.join(access.audience)})"
    return access.posture.value.upper()


def page(posture: PostureMap) -> str:
    """The whole page, ASCII only (everything else as character references)."""
    body = "\n".join(
        [
            _header(posture),
            _legend(),
            _grid(posture),
            _attention(posture),
            _operations(posture),
            _timeline(posture),
            "<footer>Made by <code>killswitch status --output html</code>: no scripts, "
            "nothing fetched. Drift is judged as <code>killswitch drift</code> judges it "
            "(a target no op has set is expected open).</footer>",
        ]
    )
    document = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>killswitch posture map &mdash; {_e(posture.inventory)}</title>
<style>{_css()}</style>
</head>
<body>
{body}
</body>
</html>
"""
    return document.encode("ascii", "xmlcharrefreplace").decode("ascii")


def _header(posture: PostureMap) -> str:
    cells = [posture.cell(m, c) for m in posture.models for c in posture.columns]
    counts = {word: sum(1 for c in cells if c.word == word) for word in COLOURS}
    drifted = sum(1 for c in cells if c.drifted)
    levers = sum(len(c.levers) for c in cells)
    summary = ", ".join(
        f"{counts[w]} {w}" for w in ("revoked", "restricted", "open", "unreadable") if counts[w]
    )
    return (
        '<header><h1>killswitch posture map</h1><dl class="facts">'
        f"<dt>inventory</dt><dd id=inventory>{_e(posture.inventory)}</dd>"
        f"<dt>generated</dt><dd id=generated-at><time>{_e(posture.generated_at)}</time></dd>"
        f"<dt>status</dt><dd id=status>{_e(posture.status.value)}</dd>"
        f"<dt>cells</dt><dd id=summary>{len(posture.models)} model(s) &times; "
        f"{len(posture.columns)} place(s), {levers} target(s): {_e(summary or 'none')}; "
        f"{drifted} with drift</dd></dl></header>"
    )


def _legend() -> str:
    items = [
        ("revoked", "REVOKED", "nobody gets through"),
        ("restricted", "RESTRICTED (audience)", "only the named audiences get through"),
        ("open", "OPEN", "everyone gets through"),
        ("unreadable", "UNREADABLE", "a lever could not be read: the posture is unknown"),
        ("none", "&mdash;", "the model is not served there"),
    ]
    rows = "".join(
        f'<li><span class="swatch p-{word}">{label}</span> {text}</li>'
        for word, label, text in items
    )
    drift = (
        '<li><span class="swatch p-none drift"><span class="drift-flag">DRIFT</span></span> '
        "a lever differs from the ledger (someone changed it by hand)</li>"
    )
    return (
        '<section id=legend><h2>Legend</h2><ul class="legend">'
        f"{rows}{drift}</ul><p>A cell shows the loosest posture among its levers; each "
        "lever is listed with the ledger's posture and the op that set it.</p></section>"
    )


def _grid(posture: PostureMap) -> str:
    if not posture.columns:
        return '<section id=map><h2>Map</h2><p class="empty">No targets selected.</p></section>'
    providers: dict[str, list[Column]] = {}
    for column in posture.columns:
        providers.setdefault(column.provider, []).append(column)
    with_accounts = any(c.account for c in posture.columns)
    head = [f'<tr><th rowspan="{3 if with_accounts else 2}" scope="col">model</th>']
    for name, cols in providers.items():
        kind = cols[0].provider_type
        head.append(
            f'<th colspan="{len(cols)}" scope="colgroup" class="provider">{_e(name)} '
            f'<span class="kind">{_e(kind)}</span></th>'
        )
    head.append("</tr>")
    if with_accounts:
        head.append("<tr>")
        for cols in providers.values():
            accounts: dict[str, int] = {}
            for c in cols:
                accounts[c.account] = accounts.get(c.account, 0) + 1
            for account, span in accounts.items():
                text = f"account {_e(account)}" if account else ""
                head.append(f'<th colspan="{span}" scope="colgroup" class="account">{text}</th>')
        head.append("</tr>")
    head.append(
        "<tr>"
        + "".join(f'<th scope="col" class="region">{_e(c.region)}</th>' for c in posture.columns)
        + "</tr>"
    )
    thead = "".join(head)
    body = []
    for model in posture.models:
        cells = "".join(_cell(model, c, posture.cell(model, c)) for c in posture.columns)
        body.append(f'<tr><th scope="row" class="model">{_e(model)}</th>{cells}</tr>')
    return (
        '<section id=map><h2>Map</h2><div class="scroll"><table class="grid">'
        f"<thead>{thead}</thead><tbody>{''.join(body)}</tbody></table></div></section>"
    )


def _cell(model: str, column: Column, cell: Cell) -> str:
    word = cell.word
    data = (
        f'data-model="{_e(model)}" data-provider="{_e(column.provider)}" '
        f'data-account="{_e(column.account)}" data-region="{_e(column.region)}" '
        f'data-posture="{word}" data-drift="{"true" if cell.drifted else "false"}"'
    )
    if not cell.levers:
        return f'<td class="cell p-none" {data}><span class="posture">&mdash;</span></td>'
    flag = ' <span class="drift-flag">DRIFT</span>' if cell.drifted else ""
    levers = "".join(_lever(lever) for lever in cell.levers)
    setters: dict[str, tuple[Operation | None, str]] = {}
    for lever in cell.levers:
        if lever.entry is not None:  # the latest time this op set a lever of the cell
            _, at = setters.get(lever.entry.op_id, (None, ""))
            setters[lever.entry.op_id] = (lever.op, max(at, lever.entry.at))
    ops = "".join(_setter(op_id, op, at) for op_id, (op, at) in setters.items())
    if not setters:
        ops = '<p class="op">never set by killswitch</p>'
    drift = " drift" if cell.drifted else ""
    return (
        f'<td class="cell p-{word}{drift}" {data}>'
        f'<div class="head"><span class="posture">{_e(_label(cell.shown))}</span>{flag}</div>'
        f'<ul class="levers">{levers}</ul>{ops}</td>'
    )


def _lever(lever: Lever) -> str:
    name = f'<span class="mechanism">{_e(lever.target.mechanism)}</span>'
    word = "unreadable" if lever.observed is None else lever.observed.posture.value
    attrs = f'class="lever l-{word}" data-target="{_e(lever.target.id)}"'
    if lever.observed is None:
        why = _e(excerpt(lever.error or "could not be read", ERROR_CHARS))
        return f'<li {attrs}>{name}: UNREADABLE <span class="error">{why}</span></li>'
    text = f"{name}: {_e(lever.observed)}"
    if lever.drifted:
        where = f"set by {lever.entry.op_id}" if lever.entry else "never set by killswitch"
        return (
            f'<li {attrs} data-drift="true">{text} <span class="drift-flag">DRIFT</span> '
            f'<span class="ledger">ledger says {_e(lever.desired)} ({_e(where)})</span></li>'
        )
    return f"<li {attrs}>{text}</li>"


def _setter(op_id: str, op: Operation | None, at: str) -> str:
    """Who set the cell's ledger posture, when, and why."""
    link = f'<a href="#{_e(op_id)}">{_e(op_id)}</a>'
    when = f"set <time>{_e(at)}</time>"
    if op is None:
        return f'<p class="op" data-op="{_e(op_id)}">{when} by {link} (not in the store)</p>'
    reason = _e(excerpt(op.reason, REASON_CHARS))
    return (
        f'<p class="op" data-op="{_e(op_id)}">{when} by {link} ({_e(op.action.value)})<br>'
        f'<span class="actor">{_e(op.actor)}</span>: <q class="reason">{reason}</q></p>'
    )


def _attention(posture: PostureMap) -> str:
    rows = []
    for model in posture.models:
        for column in posture.columns:
            for lever in posture.cell(model, column).levers:
                if lever.observed is None:
                    what = f"UNREADABLE: {excerpt(lever.error or '', ERROR_CHARS)}"
                elif lever.drifted:
                    what = f"DRIFT: observed {lever.observed}, ledger says {lever.desired}"
                else:
                    continue
                rows.append(f"<li><code>{_e(lever.target.id)}</code> {_e(what)}</li>")
    body = f"<ul>{''.join(rows)}</ul>" if rows else "<p>No drift; every target was read.</p>"
    return f"<section id=attention><h2>Needs attention</h2>{body}</section>"


def _operations(posture: PostureMap) -> str:
    if not posture.ops:
        return "<section id=ops><h2>Operations</h2><p>No op has set these targets.</p></section>"
    rows = "".join(
        f'<tr id="{_e(op.id)}"><td><code>{_e(op.id)}</code></td><td>{_e(op.action.value)}</td>'
        f"<td>{_e(op.desired)}</td><td>{_e(op.status.value)}</td><td>{_e(op.actor)}</td>"
        f"<td><time>{_e(op.created_at)}</time></td><td>{_e(op.ticket or '')}</td>"
        f'<td class="reason">{_e(op.reason)}</td></tr>'
        for op in posture.ops
    )
    head = "".join(
        f'<th scope="col">{h}</th>'
        for h in ("op", "action", "desired", "status", "actor", "created", "ticket", "reason")
    )
    return (
        "<section id=ops><h2>Operations that set these postures</h2>"
        f'<table class="list"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
        "</section>"
    )


def _timeline(posture: PostureMap) -> str:
    shown = len(posture.timeline)
    title = f"Audit timeline (newest first; {shown} of {posture.events} events)"
    if not shown:
        return f"<section id=timeline><h2>{title}</h2><p>No audit events.</p></section>"
    rows = [
        f'<tr data-seq="{m.seq}"><td><time>{_e(m.at)}</time></td><td>{_e(m.actor)}</td>'
        f"<td>{_e(m.kind)}</td><td><code>{_e(m.op_id)}</code></td>"
        f'<td class="reason">{_e(excerpt(m.reason, REASON_CHARS))}</td></tr>'
        for m in posture.timeline
    ]
    head = "".join(f'<th scope="col">{h}</th>' for h in ("time", "actor", "kind", "op", "reason"))
    return (
        f"<section id=timeline><h2>{title}</h2>"
        f'<table class="list"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table></section>"
    )


def _css() -> str:
    swatches = "".join(
        f".p-{word}{{background-color:{colour};}}" for word, colour in COLOURS.items()
    )
    return (
        """
:root{color-scheme:light;}
*{box-sizing:border-box;}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111;
 background:#fff;margin:1.5em;}
h1{font-size:1.6em;margin:0 0 .3em;}
h2{font-size:1.15em;margin:1.4em 0 .4em;}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em;margin:0;}
.facts dt{font-weight:600;}
.facts dd{margin:0;}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.4em 1.4em;}
.swatch{display:inline-block;min-width:7em;padding:.1em .5em;border:1px solid #555;
 font-weight:700;font-size:.85em;}
.scroll{overflow-x:auto;}
table{border-collapse:separate;border-spacing:3px;}
.grid th{background:#f1f3f5;padding:.3em .5em;text-align:left;vertical-align:bottom;}
.grid th.model{vertical-align:top;}
.kind{font-weight:400;color:#444;font-size:.85em;}
td.cell{border:1px solid #555;padding:.35em .5em;vertical-align:top;min-width:11em;
 max-width:22em;}
td.cell.drift{border:4px dashed """
        + DRIFT_COLOUR
        + """;}
.posture{font-weight:700;}
.drift-flag{display:inline-block;border:2px solid """
        + DRIFT_COLOUR
        + """;color:"""
        + DRIFT_COLOUR
        + """;font-weight:700;
 padding:0 .3em;margin-left:.3em;font-size:.85em;background:#fff;}
.levers{margin:.3em 0;padding-left:1.1em;font-size:.9em;}
.mechanism{font-family:ui-monospace,monospace;}
.ledger,.error{color:#333;font-style:italic;}
.op{margin:.2em 0;font-size:.85em;overflow-wrap:anywhere;}
.reason{overflow-wrap:anywhere;white-space:pre-wrap;}
.list code{white-space:nowrap;}
.list th,.list td{text-align:left;vertical-align:top;padding:.2em .5em;border-bottom:1px
 solid #ccc;}
.list td.reason{max-width:40em;}
code{font-family:ui-monospace,monospace;overflow-wrap:anywhere;}
footer{margin-top:2em;color:#444;font-size:.85em;}
td.cell,.swatch,.drift-flag{-webkit-print-color-adjust:exact;print-color-adjust:exact;}
@page{size:landscape;margin:10mm;}
@media print{
 body{margin:0;font-size:10px;}
 .scroll{overflow:visible;}
 td.cell{min-width:0;}
 tr,td.cell,li{break-inside:avoid;}
 thead{display:table-header-group;}
 a{color:inherit;text-decoration:none;}
}
"""
        + swatches
    )
