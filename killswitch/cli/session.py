"""What every command shares: the session (inventory, who acts, output), the common
options, the engine on the inventory's store, and how a report becomes an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from killswitch.cli import complete
from killswitch.clock import SYSTEM, Clock
from killswitch.domain import Plan, Report
from killswitch.errors import UsageError
from killswitch.outcome import Outcome

if TYPE_CHECKING:
    from killswitch.engine import Switch
    from killswitch.identity import Identity
    from killswitch.inventory import Inventory
    from killswitch.progress import Progress
    from killswitch.selectors import Selector

if TYPE_CHECKING:
    _Choice = click.Choice[str]
else:  # click before 8.2 has no generic Choice
    _Choice = click.Choice

F = TypeVar("F", bound=Callable[..., Any])
# The ends of an op that the inventory's webhook hears of.
ANNOUNCED = frozenset({Outcome.COMPLETE, Outcome.PARTIAL, Outcome.AWAITING_APPROVAL})


@dataclass
class Session:
    """What every command needs: where the inventory is, who acts, how to print."""

    inventory_path: str | None
    actor: str | None
    concurrency: int | None
    output: str = "table"
    lock_wait: float | None = None  # --lock-timeout; None: policy.lock.wait_seconds
    deadline: float | None = None  # --deadline; None: policy.deadline_seconds
    key: str | None = None  # --key: the SSH key that signs restores, approvals, declines
    argv: tuple[str, ...] = ()  # the command line as typed, for the next step to show
    clock: Clock = SYSTEM  # the engine's (tests pass one that never sleeps)
    # When the command began (on ``clock``): an op's time to kill counts from here.
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock.monotonic()

    def load(self) -> Inventory:
        from killswitch import inventory

        return inventory.load(inventory.resolve_path(self.inventory_path))

    def identity(self, inventory: Inventory) -> Identity:
        """Who acts, from a credential (killswitch/identity.py); --actor is a label."""
        from killswitch import identity

        label = self.actor or os.environ.get(identity.LABEL_ENV) or None
        return identity.resolve(inventory, key=self.key, label=label)

    def who(self) -> str:
        """The acting principal, for commands outside the engine (lock break, migrate)."""
        return str(self.identity(self.load()).principal)


class OutputFormat(_Choice):
    """``--output``: table or json; html (the posture map) where the command draws one.
    Elsewhere html is a usage error (exit 64) that says where it goes."""

    def __init__(self, html: bool) -> None:
        super().__init__(["table", "json", "html"] if html else ["table", "json"])

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value == "html" and "html" not in self.choices:
            self.fail(
                "html is the posture map, drawn only by `killswitch status`; "
                "this command takes table or json",
                param,
                ctx,
            )
        return str(super().convert(value, param, ctx))


def session_options(fn: F, *, html: bool = False) -> F:
    """--inventory, --actor and --output, accepted after the command name too. ``html``:
    the command also draws the posture map (``--output html``)."""

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
        type=click.Path(),
        expose_value=False,
        callback=remember("inventory_path"),
        help="Inventory file (default: $KILLSWITCH_INVENTORY or ./killswitch.yaml).",
    )(fn)
    fn = click.option(
        "--actor",
        expose_value=False,
        callback=remember("actor"),
        help="A display label beside who acts (default: $KILLSWITCH_ACTOR). Who acts "
        "comes from your key, AWS credentials or OS account, never from this.",
    )(fn)
    fn = click.option(
        "--key",
        metavar="PATH",
        expose_value=False,
        callback=remember("key"),
        help="SSH key that signs restore requests, approvals and declines (a private key, "
        "or a .pub served by ssh-agent; default: $KILLSWITCH_SIGNING_KEY).",
    )(fn)
    fn = click.option(
        "--output",
        "-o",
        type=OutputFormat(html),
        expose_value=False,
        callback=remember("output"),
        help="table (default), json, or html: the posture map, one self-contained page; "
        "all on stdout."
        if html
        else "table (default) or json on stdout.",
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
                shell_complete=complete.models,
                help="Model name or glob; 'all'; 'not:glob' (or '!glob') excludes. Repeatable.",
            ),
            click.option(
                "--region",
                "-r",
                "regions",
                multiple=True,
                metavar="REGION",
                shell_complete=complete.regions,
                help="Region name or glob ('eu-*'); 'all'; not:us-* (or '!us-*') excludes. "
                "Repeatable.",
            ),
            click.option(
                "--provider",
                "-p",
                "providers",
                multiple=True,
                metavar="NAME",
                shell_complete=complete.providers,
                help="Provider instance or type. Repeatable.",
            ),
            click.option(
                "--target",
                "target_globs",
                multiple=True,
                metavar="GLOB",
                shell_complete=complete.targets,
                help="Glob over target ids (aws:aws-prod/eu-west-1/ssm-flag/mythos-5).",
            ),
            click.option(
                "--scope",
                "-s",
                metavar="NAME",
                shell_complete=complete.scopes,
                help="A named scope from the inventory.",
            ),
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
) -> Selector:
    from killswitch.selectors import Selector

    return Selector(models, regions, providers, target_globs, scope)


# -- helpers ------------------------------------------------------------------


def engine_for(
    session: Session,
    *,
    progress: bool = False,
    label: str | None = None,
    break_glass: bool = False,
    acts: bool = True,
) -> Switch:
    """The engine on the inventory's store. ``break_glass`` (revoke, restrict): when the
    shared store cannot be reached, run on a local spool instead, loudly. ``acts``: the
    command writes, so who acts is read from a credential (reads skip that).
    ``progress``: the command changes targets, so off a terminal each one finished gets
    a line on stderr (on a terminal every command that reads providers shows bars)."""
    from killswitch.engine import Switch
    from killswitch.state import break_glass_warning, open_store
    from killswitch.state.spool import default_spool_dir

    inventory = session.load()
    if acts:  # checked before the store is even opened
        actor = session.identity(inventory)
        if label:
            from dataclasses import replace

            actor = replace(actor, label=label)
    else:
        from killswitch.identity import Identity, os_principal

        actor = Identity(os_principal(), "os")
    spool_dir = default_spool_dir(inventory.path) if break_glass else None
    store = open_store(inventory.state, spool_dir=spool_dir)
    warning = break_glass_warning(store)
    if warning:
        from killswitch.text import printable

        warning = "\n".join(printable(line) for line in warning.split("\n"))
        color = sys.stderr.isatty() and "NO_COLOR" not in os.environ
        click.secho(warning, fg="red", bold=True, err=True, color=color)
    return Switch(
        inventory,
        store,
        actor,
        concurrency=session.concurrency,
        progress=_display(session, changes=progress),
        lock_wait=session.lock_wait,
        on_wait=_lock_waiting(),
        deadline=session.deadline,
        clock=session.clock,
        started=session.started,
    )


def _display(session: Session, *, changes: bool) -> Progress:
    """Bars on a terminal; lines elsewhere for a change; else nothing. Closed with the
    command, whatever way it ends, so no bar is left drawing over an error."""
    from killswitch.cli.progress import Bars, Lines
    from killswitch.progress import QUIET

    shown: Bars | Lines
    tty = sys.stderr.isatty()
    if tty and session.output == "table":
        shown = Bars(sys.stderr)
    elif changes:
        shown = Lines(sys.stderr, as_json=not tty)
    else:
        return QUIET
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(shown.close)
    return shown


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


def confirmer(yes: bool) -> Callable[[Plan], None]:
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


def finish(session: Session, report: Report, title: str, notes: Sequence[str] = ()) -> int:
    """Print ``report`` (and ``notes`` under it on a terminal) and, when it did not end
    well, the command to run next, last."""
    from killswitch import render
    from killswitch.cli import nextstep

    then = nextstep.for_report(report, session.argv)
    if session.output == "json":
        render.emit_json(report_document(session, report))
    else:
        render.report_table(report, title)
        for note in notes:
            click.echo(note)
        if then and not report.message.startswith("next:"):
            click.echo(f"next: {then}")
    return int(report.status.exit_code)


def report_document(session: Session, report: Report) -> dict[str, object]:
    """A report as JSON, with ``next``: the command to run when it did not end well."""
    from killswitch import render
    from killswitch.cli import nextstep

    return {**render.report_json(report), "next": nextstep.for_report(report, session.argv) or None}


def finish_op(session: Session, switch: Switch, report: Report, title: str) -> int:
    """Render an op's report and, when the inventory asks for it, post it to the webhook."""
    from killswitch import notify
    from killswitch.timing import headline

    op = switch.store.get_op(report.op_id) if report.op_id else None
    url = inventory_webhook(switch.inventory, "op")
    if url and op is not None and report.status in ANNOUNCED:
        notify.send(url, notify.op_message(title, report, switch.actor, op))
    timed = [headline(op.timing, op.action)] if op is not None and op.timing else []
    code = finish(session, report, title, timed)
    switch.anchor()
    return code


def inventory_webhook(inventory: Inventory, event: str) -> str | None:
    spec = inventory.spec.notify
    return spec.url() if spec is not None and event in spec.on else None
