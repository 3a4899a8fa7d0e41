"""``runbook list|validate|show|run|resume``: incident runbooks."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from killswitch.cli import complete
from killswitch.cli.app import cli
from killswitch.cli.session import (
    Session,
    engine_for,
    inventory_webhook,
    lock_options,
    session_options,
)
from killswitch.errors import UsageError

if TYPE_CHECKING:
    from killswitch.domain import Target
    from killswitch.engine import Switch
    from killswitch.runbook import Consent, Runbook, Runner, RunResult, StepOutcome, StepSpec

# -- runbooks -------------------------------------------------------------------


@cli.group()
def runbook() -> None:
    """Incident runbooks (YAML in runbooks/): list, show, validate, run, resume."""


@runbook.command("list")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runbooks"),
    show_default=True,
)
@session_options
@click.pass_obj
def runbook_list(session: Session, /, folder: Path) -> int:
    """The runbooks in a folder, with their descriptions."""
    from killswitch import render
    from killswitch import runbook as runbooks

    found = []
    for path in sorted(folder.glob("*.yaml")):
        book = runbooks.load(path)
        found.append(
            {
                "name": book.spec.name,
                "file": str(path),
                "description": _first_sentence(book.spec.description),
            }
        )
    if session.output == "json":
        render.emit_json({"runbooks": found})
    else:
        for entry in found:
            click.echo(f"{entry['name']}  ({entry['file']})\n    {entry['description']}")
    return 0


def _first_sentence(text: str) -> str:
    """What a runbook is for, in one sentence: its description up to the first full stop."""
    flat = " ".join(text.split())
    end = flat.find(". ")
    return flat if end < 0 else flat[: end + 1]


@runbook.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@session_options
@click.pass_obj
def runbook_validate(session: Session, /, file: Path) -> int:
    """Check a runbook; errors name file, line and field (exit 64)."""
    from killswitch import render
    from killswitch import runbook as runbooks

    book = runbooks.load(file)
    if session.output == "json":
        render.emit_json({"valid": True, "name": book.spec.name, "steps": len(book.spec.steps)})
    else:
        click.echo(f"{file}: valid — {book.spec.name}, {len(book.spec.steps)} steps")
    return 0


@runbook.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@session_options
@click.pass_obj
def runbook_show(session: Session, /, file: Path) -> int:
    """A runbook's inputs and steps, as it will run them."""
    from killswitch import render
    from killswitch import runbook as runbooks

    book = runbooks.load(file)
    if session.output == "json":
        render.emit_json(book.spec.model_dump(mode="json"))
        return 0
    click.echo(f"{book.spec.name}: {book.spec.description.strip()}")
    for name, spec in book.spec.inputs.items():
        default = f" (default {spec.default})" if spec.default is not None else ""
        required = " (required)" if spec.required else ""
        click.echo(f"  input {name}: {spec.type}{default}{required} — {spec.description}")
    for i, step in enumerate(book.spec.steps, 1):
        click.echo(f"  {i}. [{step.kind}] {step.name} (on failure: {step.on_failure})")
    return 0


def _runner(
    session: Session,
    switch: Switch,
    book: Runbook,
    variables: dict[str, Any],
    *,
    yes: bool,
    dry_run: bool,
) -> Runner:
    from killswitch import notify
    from killswitch import runbook as runbooks

    def send(message: str, webhook_env: str) -> bool | None:
        """None when no webhook is configured (the step is skipped)."""
        url = os.environ.get(webhook_env) if webhook_env else None
        url = url or inventory_webhook(switch.inventory, "op")
        return notify.send(url, {"text": message}) if url else None

    return runbooks.Runner(
        switch,
        book,
        variables,
        yes=yes,
        dry_run=dry_run,
        ask=_ask_once,
        notify=send,
        watch=_StepHeaders(),
    )


def _ask_once(consent: Consent) -> bool:
    """The run's one question: the confirm steps' words, then every change step's plan
    and the blast radius of them all (stderr); no terminal, no question (64)."""
    from killswitch import render
    from killswitch.text import printable

    if not sys.stdin.isatty():
        raise UsageError("not a terminal, so nobody can confirm: add --yes (nothing was changed)")
    for question in consent.questions:
        click.echo(printable(question), err=True)
    pending: dict[str, Target] = {}  # a target two steps change counts once
    for index, step, plan in consent.plans:
        click.echo("\n" + printable(f"step {index + 1} [{step.kind}] {step.name}:"), err=True)
        render.plan_preview(plan, sys.stderr)
        pending |= {c.target.id: c.target for c in plan.pending}
    for index, step, why in consent.skipped:
        click.echo("\n" + printable(f"step {index + 1} [{step.kind}] {step.name}: {why}"), err=True)
    click.echo("\nthe whole run changes " + render.blast_radius(pending.values()), err=True)
    changes = len(consent.plans)
    return click.confirm(
        f"run {consent.runbook} ({changes} change step{'' if changes == 1 else 's'}) now?",
        default=False,
        err=True,
    )


class _StepHeaders:
    """A line on stderr as each step starts, and one as it ends: a run is never silent.
    Off a terminal the lines are JSON, as the logs and the progress lines are."""

    def __init__(self) -> None:
        from killswitch.logs import progress_logger

        self.log = None if sys.stderr.isatty() else progress_logger()

    def started(self, index: int, total: int, step: StepSpec) -> None:
        if self.log is not None:
            self.log.info("step started", step=index + 1, of=total, kind=step.kind, name=step.name)
        else:
            from killswitch.text import printable

            header = f"── step {index + 1}/{total} [{step.kind}] {step.name}"
            click.echo(printable(header), err=True)

    def finished(self, outcome: StepOutcome) -> None:
        from killswitch.text import printable

        if self.log is not None:
            done = {k: v for k, v in outcome.to_json().items() if k != "index"}
            self.log.info("step finished", step=outcome.index + 1, **done)
            return
        op = f" op {outcome.op}" if outcome.op else ""
        detail = f" — {printable(outcome.detail)}" if outcome.detail else ""
        click.echo(f"   {outcome.status}{op}{detail}", err=True)


def _finish_run(session: Session, result: RunResult, argv: tuple[str, ...]) -> int:
    from killswitch import render

    then = _run_next_step(result, argv)
    if session.output == "json":
        render.emit_json(
            {
                "run": result.run_id,
                "runbook": result.runbook,
                "status": result.status,
                "code": result.code,
                "steps": [s.to_json() for s in result.steps],
                "next": then or None,
            }
        )
    else:
        for s in result.steps:
            op = f" op {s.op}" if s.op else ""
            click.echo(f"  {s.index + 1}. [{s.kind}] {s.name}: {s.status}{op} — {s.detail}")
        run = f"run {result.run_id}" if result.run_id else "dry run"
        click.echo(f"{result.runbook}: {run} {result.status} (exit {result.code})")
        if then:
            click.echo(f"next: {then}")
    return int(result.code)


def _run_next_step(result: RunResult, argv: tuple[str, ...]) -> str:
    """What to run after a run that did not end with 0 (or 64)."""
    from killswitch.cli.nextstep import rerun

    if result.code in (0, 64):
        return ""
    if result.run_id is None:  # a dry run with changes pending: the same, for real
        return rerun(argv, drop="--dry-run")
    resume = f"killswitch runbook resume {result.run_id}"
    stopped = result.stopped_by
    if stopped is not None and stopped.status == "awaiting-approval" and stopped.op:
        return f"killswitch approve {stopped.op}  # by another person; then: {resume}"
    return f"{resume}  # after fixing what stopped it"


@runbook.command("run")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="An input value (lists: comma-separated). Repeatable.",
)
@click.option("--dry-run", is_flag=True, help="Plan every step; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Skip confirm steps and prompts.")
@session_options
@lock_options
@click.pass_obj
def runbook_run(
    session: Session, /, file: Path, variables: tuple[str, ...], dry_run: bool, yes: bool
) -> int:
    """Run a runbook. Exit codes follow its ops' (0, 3 partial, 5 awaiting approval …)."""
    from killswitch import runbook as runbooks

    book = runbooks.load(file)
    given = {}
    for item in variables:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--var {item!r}: write NAME=VALUE")
        given[name] = value
    values = book.bind(given)
    if not (yes or dry_run or sys.stdin.isatty()):
        raise UsageError("not a terminal, so nobody can confirm: add --yes (or --dry-run)")
    switch = engine_for(session, progress=True)
    result = _runner(session, switch, book, values, yes=yes, dry_run=dry_run).run()
    code = _finish_run(session, result, session.argv)
    if not dry_run:
        switch.anchor()
    return code


@runbook.command("resume")
@click.argument("run_id", shell_complete=complete.runbook_run)
@click.option("--yes", "-y", is_flag=True, help="Skip confirm steps and prompts.")
@session_options
@lock_options
@click.pass_obj
def runbook_resume(session: Session, /, run_id: str, yes: bool) -> int:
    """Continue a run from the step that stopped it (the same runbook file, unchanged)."""
    from killswitch import runbook as runbooks

    switch = engine_for(session, progress=True)
    started, steps = runbooks.find_run(switch.store.audit_events(), run_id)
    book = runbooks.load(Path(str(started["file"])))
    if book.digest != started["sha256"]:
        raise UsageError(f"{book.path} changed since run {run_id} started; start a new run")
    if not (yes or sys.stdin.isatty()):
        raise UsageError("not a terminal, so nobody can confirm: add --yes")
    runner = _runner(session, switch, book, dict(started["variables"]), yes=yes, dry_run=False)
    result = runner.run(run_id, start=runbooks.resume_point(steps))
    code = _finish_run(session, result, session.argv)
    switch.anchor()
    return code
