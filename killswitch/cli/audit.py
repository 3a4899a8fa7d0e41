"""``audit list|verify|anchor|export``: the hash-chained audit log and its anchors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from killswitch.cli.app import cli
from killswitch.cli.session import Session, session_options
from killswitch.domain import AuditEvent
from killswitch.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from killswitch.anchor import Sink
    from killswitch.inventory import Inventory


@cli.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("list")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@session_options
@click.pass_obj
def audit_list(session: Session, /, limit: int) -> int:
    """The newest audit events."""
    from killswitch import render
    from killswitch.state import open_store

    events = open_store(session.load().state).audit_events()[-limit:]
    if session.output == "json":
        render.emit_json({"events": [render.audit_json(e) for e in events]})
    else:
        render.audit_table(events)
    return 0


@audit.command("verify")
@click.option(
    "--anchor",
    "anchor_url",
    metavar="URL",
    help="Also prove the log extends every checkpoint at URL (file:… or s3://…): "
    "catches a truncated tail or a re-hashed chain.",
)
@session_options
@click.pass_obj
def audit_verify(session: Session, /, anchor_url: str | None) -> int:
    """Recompute the hash chain, check every signature in it, and recompute the ops,
    approvals and ledger from it; with --anchor, prove the log extends every checkpoint.
    Exit 0 intact; 3 when anything disagrees (edited, deleted, moved or truncated rows,
    a re-hashed chain, forged signatures, table rows the log does not back)."""
    from killswitch import render, replay
    from killswitch.approvals import Rules
    from killswitch.state import open_store
    from killswitch.text import printable

    inventory = session.load()
    sink = _anchor_sink(anchor_url)  # a bad URL is refused before the store is opened
    store = open_store(inventory.state)
    events, problems = replay.verify_state(store, Rules.of(inventory))
    notes: list[str] = []
    if sink is not None:
        problems, notes = _check_anchor(inventory, events, sink, problems)
    then = (
        "killswitch audit export --output-file evidence.jsonl  # keep the evidence: the rows "
        "named were written outside killswitch (docs/reliability.md)"
        if problems
        else None
    )
    if session.output == "json":
        render.emit_json(
            {
                "intact": not problems,
                "events": len(events),
                "problems": problems,
                "notes": notes,
                "next": then,
            }
        )
    elif problems:
        click.echo(f"audit log and state DISAGREE ({len(events)} events):", err=False)
        for p in problems:
            click.echo(f"  {printable(p)}")
    else:
        click.echo(f"audit chain intact: {len(events)} events; ops, approvals and ledger match it")
    for note in notes if session.output != "json" else ():
        click.echo(f"  note: {note}")
    if then and session.output != "json":
        click.echo(f"next: {then}")
    return int(ExitCode.PARTIAL if problems else ExitCode.OK)


def _anchor_sink(url: str | None) -> Sink | None:
    from killswitch.anchor import parse_anchor_url

    return None if url is None else parse_anchor_url(url)


def _check_anchor(
    inventory: Inventory, events: list[AuditEvent], sink: Sink, problems: list[str]
) -> tuple[list[str], list[str]]:
    """``problems`` plus the anchor's, and the anchor's notes, as printable text."""
    from killswitch import anchor
    from killswitch.text import printable

    found = anchor.verify_against(events, sink, _allowed_signers(inventory))
    return [*problems, *map(printable, found.problems)], [printable(n) for n in found.notes]


def _allowed_signers(inventory: Inventory) -> Path | None:
    """policy.restore.allowed_signers, relative to the inventory's folder; None if unset."""
    from killswitch import identity

    if inventory.spec.policy.restore.allowed_signers is None:
        return None
    return identity.allowed_signers(inventory)


@audit.command("anchor")
@click.option(
    "--to",
    "to_url",
    metavar="URL",
    help="file:///path, file:relative/path or s3://BUCKET/PREFIX?region=REGION "
    "(a bucket with Object Lock) (default: policy.audit.anchor).",
)
@session_options
@click.pass_obj
def audit_anchor(session: Session, /, to_url: str | None) -> int:
    """Write a checkpoint of the chain head to an append-only sink, signed with --key
    (default: $KILLSWITCH_SIGNING_KEY; none: unsigned). Exit 3 if the chain is already
    broken (nothing written)."""
    from killswitch import anchor, render
    from killswitch import audit as chain
    from killswitch.signing import Signer
    from killswitch.state import open_store
    from killswitch.text import printable

    inventory = session.load()
    url = to_url or inventory.spec.policy.audit.anchor
    if url is None:
        raise UsageError(
            "audit anchor: nowhere to anchor: pass --to URL, or set policy.audit.anchor in "
            "the inventory (file:///path/checkpoints.jsonl or s3://BUCKET/PREFIX?region=…)"
        )
    sink = anchor.parse_anchor_url(url, base=None if to_url else inventory.path.parent)
    signer = Signer.from_option(session.key)
    store = open_store(inventory.state)
    problems = chain.verify(store.audit_events(), store.audit_head())
    if problems:
        click.echo("audit chain BROKEN; not anchored:", err=True)
        for p in problems:
            click.echo(f"  {p}", err=True)
        click.echo(
            "next: killswitch audit verify  # names every event and row that disagrees", err=True
        )
        return int(ExitCode.PARTIAL)
    checkpoint, where = anchor.anchor(
        store,
        sink,
        store_url=inventory.state_url,
        signer=signer,
        allowed_signers=_allowed_signers(inventory) if signer else None,
    )
    if session.output == "json":
        render.emit_json({"checkpoint": json.loads(checkpoint.to_json()), "where": where})
    else:
        click.echo(f"anchored: {printable(checkpoint.label)} -> {printable(where)}")
    return 0


@audit.command("export")
@click.option(
    "--output-file",
    default="-",
    show_default=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where the JSON Lines go: a file (replaced whole) or - for stdout.",
)
@session_options
@click.pass_obj
def audit_export(session: Session, /, output_file: str) -> int:
    """The whole audit log as JSON Lines for a SIEM: one event a line, with its hashes."""
    from killswitch.anchor import export_line
    from killswitch.state import open_store

    events = open_store(session.load().state).audit_events()
    try:
        with click.open_file(output_file, "w", encoding="utf-8", atomic=output_file != "-") as f:
            f.writelines(export_line(event) + "\n" for event in events)
    except OSError as exc:
        raise UsageError(f"audit export: cannot write {output_file}: {exc.strerror}") from None
    if output_file != "-":
        click.echo(f"exported {len(events)} events to {output_file}", err=True)
    return 0
