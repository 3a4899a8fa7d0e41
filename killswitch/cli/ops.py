"""``ops list|show|resume``: the operations journal."""

from __future__ import annotations

import click

from killswitch.cli import complete
from killswitch.cli.app import cli
from killswitch.cli.session import (
    Session,
    confirmer,
    engine_for,
    finish,
    finish_op,
    lock_options,
    report_document,
    session_options,
)


@cli.group()
def ops() -> None:
    """Operations: list, show, resume."""


@ops.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@session_options
@click.pass_obj
def ops_list(session: Session, /, limit: int) -> int:
    """Recent operations, newest first."""
    from killswitch import render

    switch = engine_for(session, acts=False)
    found = switch.as_now(switch.store.list_ops(limit))
    if session.output == "json":
        render.emit_json({"ops": [render.op_json(op) for op in found]})
    else:
        render.ops_table(found)
    return 0


@ops.command("show")
@click.argument("op_id", shell_complete=complete.any_op)
@session_options
@click.pass_obj
def ops_show(session: Session, /, op_id: str) -> int:
    """One operation and the latest step of each of its targets."""
    switch = engine_for(session, acts=False)
    report = switch.op_report(op_id)
    op = switch.as_now([switch.operation(op_id)])[0]
    if session.output == "json":
        from killswitch import render

        data = report_document(session, report)
        data["operation"] = render.op_json(op)
        data |= switch.approval_state(op).to_json()
        render.emit_json(data)
        return int(report.status.exit_code)
    title = f"{op.action.value} → {op.desired} by {op.actor}: {op.reason}"
    code = finish(session, report, title)
    if op.timing is not None:
        from killswitch.timing import describe

        for line in describe(op.timing, op.action):
            click.echo(line)
    if not op.action.tightens:
        from killswitch.text import printable

        state = switch.approval_state(op)
        names = ", ".join(state.approvals) or "nobody"
        signed = "signed request" if state.signed else "unsigned request"
        click.echo(f"approvals: {printable(names)} of {op.required_approvals} ({signed})")
        if state.declined:
            by = state.declined
            click.echo(printable(f"declined by {by.by} at {by.at}: {by.reason}"))
        elif state.expires_at and op.status.unfinished:
            click.echo(f"expires at {state.expires_at} unless approved")
        for note in state.not_counted:
            click.echo(printable(f"not counted: {note}"))
    return code


@ops.command("resume")
@click.argument("op_id", shell_complete=complete.resumable_op)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before applying.")
@session_options
@lock_options
@click.pass_obj
def ops_resume(session: Session, /, op_id: str, yes: bool) -> int:
    """Finish a partial or interrupted op (idempotent)."""
    switch = engine_for(session, progress=True)
    report = switch.resume(op_id, confirm=confirmer(yes))
    return finish_op(session, switch, report, f"resume {op_id}")
