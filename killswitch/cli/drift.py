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
    selector_options,
    session_options,
)
from killswitch.domain import Report
from killswitch.errors import ExitCode

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
    **picks: Any,
) -> int:
    """Compare the ledger with what providers say.

    \b
    Exit 0 in sync · 2 drift (or unmanaged targets) · 3 unreadable targets or a
    failed heal · 5 a --fix-open restore awaits approval · 1 error.
    """
    from killswitch import metrics, notify

    started = time.monotonic()
    selector = make_selector(**picks)
    switch = engine_for(session, label=DRIFT_ACTOR, acts=fix or fix_open)
    found = switch.drift(selector)
    healed: list[Report] = []
    if (fix or fix_open) and found.status in ("drift", "unreadable"):
        reason = f"drift-check run by {switch.actor}: back to the ledger's posture"
        healed = switch.heal(found, fix_open=fix_open, reason=reason)
    url = notify_url or inventory_webhook(switch.inventory, "drift")
    if url and found.status == "drift":
        notify.send(url, notify.drift_message(found, healed))
    final = switch.drift(selector) if healed else found
    if metrics_file is not None:
        text = metrics.drift_metrics(
            final.rows, finished_at=time.time(), duration=time.monotonic() - started
        )
        metrics.write_atomically(metrics_file, text)
    statuses = {r.status for r in healed}
    if healed:
        message = "; ".join(f"healed by op {r.op_id}: {r.status}" for r in healed)
        final = Report(None, final.status, final.rows, message)
    code = finish(session, final, "drift")
    if healed:
        switch.anchor()
    if "awaiting-approval" in statuses:
        return int(ExitCode.AWAITING_APPROVAL)
    if "partial" in statuses:
        return int(ExitCode.PARTIAL)
    return code
