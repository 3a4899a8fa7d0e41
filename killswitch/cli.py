"""The ``killswitch`` command. Thin: parse, call the engine, render, exit with the code.

Nothing here imports a provider or a cloud SDK at start-up: ``--help`` stays fast.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from killswitch.domain import Action, Plan, Report
from killswitch.errors import ExitCode, KillswitchError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FOR_STATUS = {
    "ok": ExitCode.OK,
    "in-sync": ExitCode.OK,
    "nothing-to-do": ExitCode.OK,
    "already-done": ExitCode.OK,
    "complete": ExitCode.OK,
    "changes-pending": ExitCode.PENDING,
    "blocked": ExitCode.USAGE,
    "drift": ExitCode.PENDING,
    "partial": ExitCode.PARTIAL,
    "running": ExitCode.PARTIAL,
    "unreadable": ExitCode.PARTIAL,
    "awaiting-approval": ExitCode.AWAITING_APPROVAL,
    "superseded": ExitCode.SUPERSEDED,
    "refused": ExitCode.PARTIAL,
}


@dataclass
class Session:
    """What every command needs: where the inventory is, who acts, how to print."""

    inventory_path: str | None
    actor: str | None
    concurrency: int | None
    output: str = "table"
    lock_wait: float | None = None  # --lock-timeout; None: policy.lock.wait_seconds
    deadline: float | None = None  # --deadline; None: policy.deadline_seconds

    def load(self) -> Any:
        from killswitch import inventory

        return inventory.load(inventory.resolve_path(self.inventory_path))

    def who(self) -> str:
        actor = self.actor or os.environ.get("KILLSWITCH_ACTOR")
        if not actor:
            actor = f"{getpass.getuser()}@{socket.gethostname()}"
        from killswitch.text import check_actor

        return check_actor(actor)


def session_options(fn: F) -> F:
    """--inventory, --actor and --output, accepted after the command name too."""

    def remember(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
        def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
            if value is not None:
                setattr(ctx.find_object(Session), attr, value)
            return value

        return callback

    fn = click.option(
        "--inventory",
        "-i",
        "inventory_path",
        metavar="PATH",
        expose_value=False,
        callback=remember("inventory_path"),
        help="Inventory file (default: $KILLSWITCH_INVENTORY or ./killswitch.yaml).",
    )(fn)
    fn = click.option(
        "--actor",
        expose_value=False,
        callback=remember("actor"),
        help="Who acts (default: $KILLSWITCH_ACTOR or user@host).",
    )(fn)
    fn = click.option(
        "--output",
        "-o",
        type=click.Choice(["table", "json"]),
        expose_value=False,
        callback=remember("output"),
        help="table (default) or json on stdout.",
    )(fn)
    return fn


def lock_options(fn: F) -> F:
    """--lock-timeout and --deadline, for commands that take the apply lock."""

    def remember(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
        def callback(ctx: click.Context, _param: click.Parameter, value: float | None) -> None:
            session = ctx.find_object(Session)
            if value is not None and session is not None:
                setattr(session, attr, value)

        return callback

    fn = click.option(
        "--deadline",
        type=click.FloatRange(1, 86400),
        metavar="SECONDS",
        expose_value=False,
        callback=remember("deadline"),
        help="The whole command (plan, apply, verify) ends by then: what is not done is "
        "reported and resumable, exit 3 (default: policy.deadline_seconds, 900).",
    )(fn)
    return click.option(
        "--lock-timeout",
        type=click.FloatRange(0, 3600),
        metavar="SECONDS",
        expose_value=False,
        callback=remember("lock_wait"),
        help="How long revoke/restrict wait for another revoke or restrict holding the "
        "lock (default: policy.lock.wait_seconds, 30). A restore holding it is fenced "
        "out at once.",
    )(fn)


def selector_options(fn: F) -> F:
    for decorator in reversed(
        [
            click.option(
                "--model",
                "-m",
                "models",
                multiple=True,
                metavar="NAME",
                help="Model name or glob; 'all'; '!glob' excludes. Repeatable.",
            ),
            click.option(
                "--region",
                "-r",
                "regions",
                multiple=True,
                metavar="REGION",
                help="Region name or glob ('eu-*'); 'all'; '!us-*' excludes. Repeatable.",
            ),
            click.option(
                "--provider",
                "-p",
                "providers",
                multiple=True,
                metavar="NAME",
                help="Provider instance or type. Repeatable.",
            ),
            click.option(
                "--target",
                "target_globs",
                multiple=True,
                metavar="GLOB",
                help="Glob over target ids (aws:aws-prod/eu-west-1/ssm-flag/mythos-5).",
            ),
            click.option("--scope", "-s", metavar="NAME", help="A named scope from the inventory."),
        ]
    ):
        fn = decorator(fn)
    return fn


def make_selector(
    models: tuple[str, ...],
    regions: tuple[str, ...],
    providers: tuple[str, ...],
    target_globs: tuple[str, ...],
    scope: str | None,
) -> Any:
    from killswitch.selectors import Selector

    return Selector(models, regions, providers, target_globs, scope)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--inventory",
    "-i",
    "inventory_path",
    metavar="PATH",
    help="Inventory file (default: $KILLSWITCH_INVENTORY or ./killswitch.yaml).",
)
@click.option("--actor", help="Who acts (default: $KILLSWITCH_ACTOR or user@host).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 512),
    metavar="N",
    help="Parallel provider calls (1 = serial, for debugging).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=lambda: os.environ.get("KILLSWITCH_LOG_LEVEL", "warning"),
    show_default="warning",
    help="Logs go to stderr (JSON when not a terminal).",
)
@click.version_option(package_name="killswitch")
@click.pass_context
def cli(
    ctx: click.Context,
    inventory_path: str | None,
    actor: str | None,
    concurrency: int | None,
    log_level: str,
) -> None:
    """Revoke, restrict or restore AI model access everywhere, in one verified operation.

    \b
    Exit codes: 0 ok · 2 changes pending / drift · 3 partial · 4 locked ·
                5 awaiting approval · 64 usage or inventory error · 1 unexpected
    """
    from killswitch import logs

    logs.configure(log_level)
    ctx.obj = Session(inventory_path, actor, concurrency)


# -- helpers ------------------------------------------------------------------


def _switch(
    session: Session,
    *,
    progress: bool = False,
    actor: str | None = None,
    break_glass: bool = False,
) -> Any:
    """The engine on the inventory's store. ``break_glass`` (revoke, restrict): when the
    shared store cannot be reached, run on a local spool instead, loudly."""
    from killswitch import render
    from killswitch.engine import Switch
    from killswitch.state import break_glass_warning, open_store
    from killswitch.state.spool import default_spool_dir

    inventory = session.load()
    actor = actor or session.who()  # checked before the store is even opened
    spool_dir = default_spool_dir(inventory.path) if break_glass else None
    store = open_store(inventory.state_url, spool_dir=spool_dir)
    warning = break_glass_warning(store)
    if warning:
        from killswitch.text import printable

        warning = "\n".join(printable(line) for line in warning.split("\n"))
        color = sys.stderr.isatty() and "NO_COLOR" not in os.environ
        click.secho(warning, fg="red", bold=True, err=True, color=color)
    on_step = None
    if progress and session.output == "table" and sys.stderr.isatty():
        on_step = lambda target, step: render.step_line(target, step, sys.stderr)  # noqa: E731
    return Switch(
        inventory,
        store,
        actor,
        concurrency=session.concurrency,
        on_step=on_step,
        lock_wait=session.lock_wait,
        on_wait=_lock_waiting(),
        deadline=session.deadline,
    )


def _lock_waiting() -> Callable[[Any, float], None]:
    """Progress while a revoke waits for another tightening op's lock: once a second."""
    shown: list[int] = []

    def on_wait(holder: Any, waited: float) -> None:
        second = int(waited)
        if shown and shown[-1] == second:
            return
        shown.append(second)
        click.echo(
            f"waiting for the lock: {holder.owner} holds it for op {holder.op_id or '?'} "
            f"({holder.doing}); {second}s",
            err=True,
        )

    return on_wait


def _confirmer(yes: bool) -> Callable[[Plan], None]:
    def confirm(plan: Plan) -> None:
        from killswitch import render

        if yes:
            return
        if not sys.stdin.isatty():
            raise UsageError(
                f"{plan.action.value} changes {len(plan.pending)} targets; "
                "not a terminal, so nothing asks: add --yes to go ahead (nothing was changed)"
            )
        render.plan_preview(plan, sys.stderr)
        if not click.confirm(f"{plan.action.value} now?", default=False, err=True):
            raise UsageError("not confirmed; nothing was changed")

    return confirm


def _finish(session: Session, report: Report, title: str) -> int:
    from killswitch import render

    if session.output == "json":
        render.emit_json(render.report_json(report))
    else:
        render.report_table(report, title)
    return int(EXIT_FOR_STATUS.get(report.status, ExitCode.ERROR))


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
    switch = _switch(session)
    result = switch.plan(Action(action), make_selector(**picks), audience)
    return _finish_plan(session, result, f"plan: {action}")


def _finish_plan(session: Session, result: Plan, title: str) -> int:
    from killswitch.engine import plan_rows, plan_status

    report = Report(None, plan_status(result), plan_rows(result))
    if result.blocked and result.action.tightens:
        report = Report(
            None,
            report.status,
            report.rows,
            f"{len(result.blocked)} target(s) cannot take this posture (unsupported rows): "
            f"{result.action.value} closes the rest and reports those refused (exit 3)",
        )
    elif report.status == "blocked":
        report = Report(
            None,
            "blocked",
            report.rows,
            "some targets cannot take this posture (see unsupported rows)",
        )
    return _finish(session, report, title)


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
        switch = _switch(session, progress=True, break_glass=action is not Action.RESTORE)
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
            confirm=_confirmer(yes),
        )
        return _finish_op(session, switch, report, action.value)

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
@click.argument("op_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before applying.")
@session_options
@lock_options
@click.pass_obj
def approve(session: Session, /, op_id: str, yes: bool) -> int:
    """Approve a restore; once enough people approved, it applies."""
    switch = _switch(session, progress=True)
    report = switch.approve(op_id, confirm=_confirmer(yes))
    return _finish_op(session, switch, report, f"approve {op_id}")


@cli.command()
@selector_options
@session_options
@click.pass_obj
def status(session: Session, /, **picks: Any) -> int:
    """Observed posture of every selected target (all, by default)."""
    switch = _switch(session)
    return _finish(session, switch.status(make_selector(**picks)), "status")


DRIFT_ACTOR = "drift-check"


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
    switch = _switch(session, actor=DRIFT_ACTOR if fix or fix_open else None)
    found = switch.drift(selector)
    healed: list[Report] = []
    if (fix or fix_open) and found.status in ("drift", "unreadable"):
        reason = f"drift-check run by {session.who()}: back to the ledger's posture"
        healed = switch.heal(found, fix_open=fix_open, reason=reason)
    url = notify_url or _inventory_webhook(switch.inventory, "drift")
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
    code = _finish(session, final, "drift")
    if "awaiting-approval" in statuses:
        return int(ExitCode.AWAITING_APPROVAL)
    if "partial" in statuses:
        return int(ExitCode.PARTIAL)
    return code


def _finish_op(session: Session, switch: Any, report: Report, title: str) -> int:
    """Render an op's report and, when the inventory asks for it, post it to the webhook."""
    from killswitch import notify

    url = _inventory_webhook(switch.inventory, "op")
    if url and report.op_id and report.status in ("complete", "partial", "awaiting-approval"):
        notify.send(url, notify.op_message(title, report, switch.actor))
    return _finish(session, report, title)


def _inventory_webhook(inventory: Any, event: str) -> str | None:
    spec = inventory.spec.notify
    return spec.url() if spec is not None and event in spec.on else None


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
    from killswitch.state import open_store

    store = open_store(session.load().state_url)
    found = store.list_ops(limit)
    if session.output == "json":
        render.emit_json({"ops": [render.op_json(op) for op in found]})
    else:
        render.ops_table(found)
    return 0


@ops.command("show")
@click.argument("op_id")
@session_options
@click.pass_obj
def ops_show(session: Session, /, op_id: str) -> int:
    """One operation and the latest step of each of its targets."""
    switch = _switch(session)
    op = switch.store.get_op(op_id)
    report = switch.op_report(op_id)
    if session.output == "json":
        from killswitch import render

        data = render.report_json(report)
        data["operation"] = render.op_json(op)
        from killswitch.approvals import approvers

        data["approvals"] = approvers(switch.store, op)
        render.emit_json(data)
        return int(EXIT_FOR_STATUS.get(report.status, ExitCode.ERROR))
    title = f"{op.action.value} → {op.desired} by {op.actor}: {op.reason}"
    return _finish(session, report, title)


@ops.command("resume")
@click.argument("op_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before applying.")
@session_options
@lock_options
@click.pass_obj
def ops_resume(session: Session, /, op_id: str, yes: bool) -> int:
    """Finish a partial or interrupted op (idempotent)."""
    switch = _switch(session, progress=True)
    report = switch.resume(op_id, confirm=_confirmer(yes))
    return _finish_op(session, switch, report, f"resume {op_id}")


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

    events = open_store(session.load().state_url).audit_events()[-limit:]
    if session.output == "json":
        render.emit_json({"events": [render.audit_json(e) for e in events]})
    else:
        render.audit_table(events)
    return 0


@audit.command("verify")
@session_options
@click.pass_obj
def audit_verify(session: Session, /) -> int:
    """Recompute the hash chain. Exit 0 intact; 3 broken (edited, deleted or moved rows)."""
    from killswitch import audit as chain
    from killswitch import render
    from killswitch.state import open_store

    store = open_store(session.load().state_url)
    events = store.audit_events()
    problems = chain.verify(events, store.audit_head())
    if session.output == "json":
        render.emit_json({"intact": not problems, "events": len(events), "problems": problems})
    elif problems:
        click.echo(f"audit chain BROKEN ({len(events)} events):", err=False)
        for p in problems:
            click.echo(f"  {p}")
    else:
        click.echo(f"audit chain intact: {len(events)} events")
    return int(ExitCode.PARTIAL if problems else ExitCode.OK)


@cli.group("aws")
def aws_group() -> None:
    """AWS helpers."""


@aws_group.command("policy")
@click.option(
    "--boundary",
    is_flag=True,
    help="Print the recommended permissions boundary for the operator role instead.",
)
@session_options
@click.pass_obj
def aws_policy(session: Session, /, boundary: bool) -> int:
    """Print the least-privilege IAM policy the inventory's AWS levers need (JSON)."""
    from killswitch import render
    from killswitch.contract import LeastPrivilege
    from killswitch.state import state_permissions

    inv = session.load()
    statements: list[Any] = []
    for name in inv.provider_names:
        provider = inv.provider(name)
        if inv.spec.providers[name].type == "aws" and isinstance(provider, LeastPrivilege):
            # The boundary (optional, AWS's own) caps the operator role at these permissions.
            found = getattr(provider, "permissions_boundary", None) if boundary else None
            document = found() if callable(found) else provider.least_privilege()
            for statement in document["Statement"]:
                if statement not in statements:
                    statements.append(statement)
    if not statements:
        raise UsageError("the inventory has no aws provider")
    statements += state_permissions(inv.spec.state)
    render.emit_json({"Version": "2012-10-17", "Statement": statements})
    return 0


@cli.group("kubernetes")
def kubernetes_group() -> None:
    """Kubernetes helpers."""


@kubernetes_group.command("rbac")
@click.option(
    "--provider",
    "-p",
    "providers",
    multiple=True,
    metavar="NAME",
    help="A kubernetes entry (repeatable; default: all of them).",
)
@session_options
@click.pass_obj
def kubernetes_rbac(session: Session, /, providers: tuple[str, ...]) -> int:
    """Print the least-privilege Roles the inventory's Kubernetes levers need (YAML).

    One Role per listed namespace; apply it per cluster, e.g.
    `killswitch kubernetes rbac -p k8s-eu | kubectl --context eu-prod apply -f -`.
    """
    import yaml

    from killswitch import render
    from killswitch.contract import LeastPrivilege

    inv = session.load()
    entries = [n for n in inv.provider_names if inv.spec.providers[n].type == "kubernetes"]
    if not entries:
        raise UsageError("the inventory has no kubernetes provider")
    for name in providers:
        if name not in entries:
            raise UsageError(
                f"--provider {name}: not a kubernetes entry (known: {', '.join(entries)})"
            )
    items: list[Any] = []
    for name in providers or entries:
        provider = inv.provider(name)
        if isinstance(provider, LeastPrivilege):
            items += provider.least_privilege()["items"]
    document = {"apiVersion": "v1", "kind": "List", "items": items}
    if session.output == "json":
        render.emit_json(document)
    else:
        click.echo(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), nl=False)
    return 0


@cli.group("inventory")
def inventory_group() -> None:
    """The inventory file."""


@inventory_group.command("validate")
@session_options
@click.pass_obj
def inventory_validate(session: Session, /) -> int:
    """Check the inventory; errors name file, line and field (exit 64)."""
    from killswitch import render
    from killswitch.selectors import all_targets

    inv = session.load()
    targets = all_targets(inv)
    if session.output == "json":
        render.emit_json(
            {
                "valid": True,
                "path": str(inv.path),
                "models": inv.models,
                "providers": inv.provider_names,
                "targets": len(targets),
            }
        )
    else:
        click.echo(f"{inv.path}: valid — {render.blast_radius(targets)}")
    return 0


# state and lock live in their own module; imported here, after session_options exists.
from killswitch.cli_state import lock, state  # noqa: E402

cli.add_command(state)
cli.add_command(lock)


# -- entry point ----------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    from killswitch.text import printable

    color = sys.stderr.isatty() and "NO_COLOR" not in os.environ
    lines = [printable(line) for line in message.split("\n")]
    click.secho("error: " + "\n".join(lines), fg="red", err=True, color=color)
    return code


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI and exit with a documented code; never a traceback for a known error."""
    try:
        code = cli.main(args=argv, prog_name="killswitch", standalone_mode=False)
        code = int(code or 0)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=False)
        code = 0
    except click.UsageError as exc:
        exc.show()
        code = ExitCode.USAGE
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        code = _fail("aborted; nothing more was changed", ExitCode.ERROR)
    except KillswitchError as exc:
        code = _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        code = _fail("interrupted; `killswitch ops list` shows what ran", ExitCode.ERROR)
    except Exception as exc:
        import structlog

        structlog.get_logger("killswitch").exception("unexpected error")
        code = _fail(f"unexpected error: {exc!r}", ExitCode.ERROR)
    sys.exit(code)


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
                "description": book.spec.description.strip().splitlines()[0]
                if book.spec.description.strip()
                else "",
            }
        )
    if session.output == "json":
        render.emit_json({"runbooks": found})
    else:
        for entry in found:
            click.echo(f"{entry['name']:<28} {entry['file']:<44} {entry['description']}")
    return 0


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
    session: Session, switch: Any, book: Any, variables: dict[str, Any], *, yes: bool, dry_run: bool
) -> Any:
    from killswitch import notify
    from killswitch import runbook as runbooks

    def ask(question: str) -> bool:
        if not sys.stdin.isatty():
            raise UsageError(f"confirm step needs a person: {question} (or run with --yes)")
        return click.confirm(question, default=False, err=True)

    def send(message: str, webhook_env: str) -> bool | None:
        """None when no webhook is configured (the step is skipped)."""
        url = os.environ.get(webhook_env) if webhook_env else None
        url = url or _inventory_webhook(switch.inventory, "op")
        return notify.send(url, {"text": message}) if url else None

    return runbooks.Runner(
        switch,
        book,
        variables,
        yes=yes,
        dry_run=dry_run,
        confirm_plan=_confirmer(yes),
        ask=ask,
        notify=send,
    )


def _finish_run(session: Session, result: Any) -> int:
    from killswitch import render

    if session.output == "json":
        render.emit_json(
            {
                "run": result.run_id,
                "runbook": result.runbook,
                "status": result.status,
                "code": result.code,
                "steps": [s.to_json() for s in result.steps],
            }
        )
    else:
        for s in result.steps:
            op = f" op {s.op}" if s.op else ""
            click.echo(f"  {s.index + 1}. [{s.kind}] {s.name}: {s.status}{op} — {s.detail}")
        run = f"run {result.run_id}" if result.run_id else "dry run"
        click.echo(f"{result.runbook}: {run} {result.status} (exit {result.code})")
        if result.run_id and result.code:
            click.echo(f"finish it later with: killswitch runbook resume {result.run_id}")
    return int(result.code)


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
    switch = _switch(session, progress=True)
    result = _runner(session, switch, book, values, yes=yes, dry_run=dry_run).run()
    return _finish_run(session, result)


@runbook.command("resume")
@click.argument("run_id")
@click.option("--yes", "-y", is_flag=True, help="Skip confirm steps and prompts.")
@session_options
@lock_options
@click.pass_obj
def runbook_resume(session: Session, /, run_id: str, yes: bool) -> int:
    """Continue a run from the step that stopped it (the same runbook file, unchanged)."""
    from killswitch import runbook as runbooks

    switch = _switch(session, progress=True)
    started, steps = runbooks.find_run(switch.store.audit_events(), run_id)
    book = runbooks.load(Path(str(started["file"])))
    if book.digest != started["sha256"]:
        raise UsageError(f"{book.path} changed since run {run_id} started; start a new run")
    if not (yes or sys.stdin.isatty()):
        raise UsageError("not a terminal, so nobody can confirm: add --yes")
    runner = _runner(session, switch, book, dict(started["variables"]), yes=yes, dry_run=False)
    result = runner.run(run_id, start=runbooks.resume_point(steps))
    return _finish_run(session, result)
