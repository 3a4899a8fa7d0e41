"""The kill: plan, revoke, restrict, restore, approve, decline, status."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from killswitch.cli import complete
from killswitch.cli.app import cli
from killswitch.cli.session import (
    F,
    Session,
    confirmer,
    engine_for,
    finish,
    finish_op,
    lock_options,
    make_selector,
    selector_options,
    session_options,
)
from killswitch.domain import Action, Plan, Report
from killswitch.outcome import Outcome
from killswitch.selectors import Selector

if TYPE_CHECKING:
    from killswitch.engine import Switch

# -- commands ---------------------------------------------------------------


@cli.command()
@click.argument("action", type=click.Choice([a.value for a in Action]))
@selector_options
@click.option(
    "--audience",
    "-a",
    multiple=True,
    metavar="NAME",
    help="With restrict: who keeps access; with restore: who gets access back (repeatable).",
)
@session_options
@click.pass_obj
def plan(session: Session, /, action: str, audience: tuple[str, ...], **picks: Any) -> int:
    """Show what ACTION would change. Exit 0: nothing to change; 2: changes pending;
    3: targets unreadable; 64: some targets cannot take that posture."""
    switch = engine_for(session, acts=False)
    selector = make_selector(**picks)
    result = switch.plan(Action(action), selector, audience)
    flags = [*_flags(selector), *(f"--audience {a}" for a in audience)]
    then = f"next: killswitch {action} {' '.join(flags)} --reason '…'"
    return _finish_plan(session, result, f"plan: {action}", then)


def _flags(selector: Selector) -> list[str]:
    """The selector as flags to copy into a shell (quoted: ``'!us-*'``)."""
    import shlex

    found = [f"--scope {shlex.quote(selector.scope)}"] if selector.scope else []
    for flag, values in (
        ("--model", selector.models),
        ("--region", selector.regions),
        ("--provider", selector.providers),
        ("--target", selector.targets),
    ):
        found += [f"{flag} {shlex.quote(v)}" for v in values]
    return found


def _finish_plan(session: Session, result: Plan, title: str, then: str = "") -> int:
    from killswitch.engine import plan_rows, plan_status

    report = Report(None, plan_status(result), plan_rows(result))
    if report.status is Outcome.CHANGES_PENDING and then and not result.blocked:
        report = Report(None, report.status, report.rows, then)
    if result.blocked and result.action.tightens:
        report = Report(
            None,
            report.status,
            report.rows,
            f"{len(result.blocked)} target(s) cannot take this posture (unsupported rows): "
            f"{result.action.value} closes the rest and reports those refused (exit 3)",
        )
    elif report.status is Outcome.BLOCKED:
        report = Report(
            None,
            Outcome.BLOCKED,
            report.rows,
            "some targets cannot take this posture (see unsupported rows)",
        )
    return finish(session, report, title)


def _change_command(action: Action) -> Callable[..., int]:
    def command(
        session: Session,
        reason: str,
        ticket: str | None,
        yes: bool,
        dry_run: bool,
        idempotency_key: str | None,
        audience: tuple[str, ...] = (),
        **picks: Any,
    ) -> int:
        from killswitch import text

        selector = make_selector(**picks)
        text.check_reason(reason)  # before anything is opened or touched
        text.check_ticket(ticket)
        switch = engine_for(session, progress=True, break_glass=action is not Action.RESTORE)
        if dry_run:
            result = switch.preview(action, selector, audience=audience, reason=reason)
            return _finish_plan(session, result, f"dry run: {action.value}")
        report = switch.change(
            action,
            selector,
            audience=audience,
            reason=reason,
            ticket=ticket,
            idempotency_key=idempotency_key,
            confirm=None if yes else confirmer(yes),
        )
        return finish_op(session, switch, report, action.value)

    return command


def _change_options(fn: F) -> F:
    decorators: list[Callable[[Any], Any]] = [
        selector_options,
        click.option("--reason", required=True, help="Why (audit log and the flag)."),
        click.option("--ticket", metavar="ID", help="Incident or change ticket."),
        click.option("--yes", "-y", is_flag=True, help="Do not ask (required when not a TTY)."),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Only plan (exit codes as plan: 0, 2 pending, 3 unreadable, 64 blocked).",
        ),
        click.option(
            "--idempotency-key",
            metavar="KEY",
            help="Same key → same op: a retried call resumes or reports it.",
        ),
        session_options,
        lock_options,
        click.pass_obj,
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


revoke = cli.command(
    "revoke",
    help="Revoke access to the selected models. Never waits for approvals.",
)(_change_options(_change_command(Action.REVOKE)))

restrict = cli.command(
    "restrict",
    help="Restrict access to the named audiences (--audience). Never waits for approvals.",
)(
    click.option(
        "--audience",
        "-a",
        multiple=True,
        required=True,
        metavar="NAME",
        help="Who keeps access (repeatable).",
    )(_change_options(_change_command(Action.RESTRICT)))
)

restore = cli.command(
    "restore",
    help="Open access again (or, with --audience, loosen a revoked target to that "
    "audience). Needs policy.restore.approvals distinct people; exits 5 with the op id "
    "until `approve` completes it.",
)(
    click.option(
        "--audience",
        "-a",
        multiple=True,
        metavar="NAME",
        help="Re-open only to these audiences (restricted), not to everyone.",
    )(_change_options(_change_command(Action.RESTORE)))
)


@cli.command()
@click.argument("op_id", shell_complete=complete.op_awaiting_approval)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before applying.")
@session_options
@lock_options
@click.pass_obj
def approve(session: Session, /, op_id: str, yes: bool) -> int:
    """Approve a restore; once enough people approved, it applies."""
    switch = engine_for(session, progress=True)
    report = switch.approve(op_id, confirm=confirmer(yes))
    return finish_op(session, switch, report, f"approve {op_id}")


@cli.command()
@click.argument("op_id", shell_complete=complete.op_awaiting_approval)
@click.option("--reason", required=True, help="Why the restore is declined (audited).")
@session_options
@click.pass_obj
def decline(session: Session, /, op_id: str, reason: str) -> int:
    """Decline a restore request: it ends, never re-opens anything, and is audited
    (signed with --key when you have one). An approver or the requester may decline."""
    switch = engine_for(session)
    report = switch.decline(op_id, reason=reason)
    finish(session, report, f"decline {op_id}")
    switch.anchor()
    return 0


@cli.command()
@selector_options
@functools.partial(session_options, html=True)
@click.pass_obj
def status(session: Session, /, **picks: Any) -> int:
    """Observed posture of every selected target (all, by default). With --output html:
    the posture map, one self-contained page (status > posture.html)."""
    switch = engine_for(session, acts=False)
    report = switch.status(make_selector(**picks))
    if session.output == "html":
        click.echo(_posture_map(switch, report), nl=False)
        return int(report.status.exit_code)
    return finish(session, report, "status")


def _posture_map(switch: Switch, report: Report) -> str:
    """The page: ``report`` beside the safety ledger, the ops that set it, the audit log."""
    from killswitch import posture_map
    from killswitch.domain import iso

    found = posture_map.survey(
        report,
        switch.safety_ledger(),
        switch.store.get_op,
        switch.store.audit_events(),
        inventory=str(switch.inventory.path),
        generated_at=iso(switch.clock.now()),
    )
    return posture_map.page(found)


@cli.command()
@click.option(
    "--effect",
    is_flag=True,
    required=True,
    help="Probe the serving path (the inventory's probes) instead of reading the levers.",
)
@selector_options
@session_options
@lock_options
@click.pass_obj
def verify(session: Session, /, effect: bool, **picks: Any) -> int:
    """Prove the ledger's postures by their effect: each probe's callers are served or
    refused as the posture says. Exit 0 effective everywhere · 3 not effective somewhere."""
    switch = engine_for(session, acts=False)
    return finish(session, switch.prove(make_selector(**picks)), "verify --effect")
