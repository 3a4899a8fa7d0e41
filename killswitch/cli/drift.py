"""``drift``: the ledger against what the providers hold, healed on request."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from killswitch.cli.app import cli
from killswitch.cli.session import (
    Session,
    engine_for,
    finish,
    inventory_webhook,
    lock_options,
    make_selector,
    report_document,
    selector_options,
    session_options,
)
from killswitch.outcome import Outcome

DRIFT_ACTOR = "drift-check"  # the label of a heal's op: who runs it comes from a credential


@cli.command()
@selector_options
@click.option(
    "--fix",
    is_flag=True,
    help="Re-close targets more open than the ledger says, at once (op by drift-check).",
)
@click.option(
    "--fix-open",
    is_flag=True,
    help="Also re-open targets more closed than the ledger says (a restore: approvals).",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Write Prometheus text format here (node_exporter textfile collector).",
)
@click.option(
    "--notify",
    "notify_url",
    metavar="URL",
    help="Post a Slack-compatible message on drift (default: the inventory's notify).",
)
@click.option(
    "--effect",
    is_flag=True,
    help="Also probe the serving path (the inventory's probes): a gateway that stopped "
    "obeying is drift too (exit 3).",
)
@session_options
@lock_options
@click.pass_obj
def drift(
    session: Session,
    /,
    fix: bool,
    fix_open: bool,
    metrics_file: Path | None,
    notify_url: str | None,
    effect: bool,
    **picks: Any,
) -> int:
    """Compare the ledger with what providers say.

    \b
    Exit 0 in sync · 2 drift (or unmanaged targets) · 3 unreadable targets or a
    failed heal · 5 a --fix-open restore awaits approval · 1 error.
    """
    from killswitch import metrics, notify

    started = time.monotonic()
    switch = engine_for(session, label=DRIFT_ACTOR, acts=fix or fix_open)
    check = switch.check_drift(make_selector(**picks), fix=fix, fix_open=fix_open)
    url = notify_url or inventory_webhook(switch.inventory, "drift")
    if url and check.found.status is Outcome.DRIFT:
        notify.send(url, notify.drift_message(check.found, check.healed))
    proven = switch.prove(make_selector(**picks)) if effect else None
    if metrics_file is not None:
        text = metrics.drift_metrics(
            check.final.rows, finished_at=time.time(), duration=time.monotonic() - started
        )
        text += metrics.effect_metrics(proven.rows) if proven is not None else ""
        # The ops done since the last run (and before) count in the time-to-kill SLO.
        text += metrics.time_to_kill_metrics(switch.store.list_ops(metrics.OPS_READ))
        metrics.write_atomically(metrics_file, text)
    code = int(check.exit_code)
    if proven is None:
        finish(session, check.final, "drift")
    elif session.output == "json":  # one document: the drift report, and the probes'
        from killswitch import render

        document = report_document(session, check.final)
        probed = report_document(session, proven)
        document |= {"effect": probed, "next": document["next"] or probed["next"]}
        render.emit_json(document)
        code = max(code, int(proven.status.exit_code))
    else:
        finish(session, check.final, "drift")
        code = max(code, finish(session, proven, "drift --effect: the serving path"))
    if check.healed:
        switch.anchor()
    return code
