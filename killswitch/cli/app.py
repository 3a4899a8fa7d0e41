"""The ``killswitch`` group and ``main()``: parse, dispatch, and turn every known error
into its documented exit code, never a traceback."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from killswitch.cli import complete
from killswitch.cli.session import Session
from killswitch.clock import SYSTEM, Clock
from killswitch.errors import ExitCode, Interrupted, KillswitchError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--inventory",
    "-i",
    "inventory_path",
    metavar="PATH",
    type=click.Path(),
    help="Inventory file (default: $KILLSWITCH_INVENTORY or ./killswitch.yaml).",
)
@click.option(
    "--actor",
    help="A display label beside who acts (default: $KILLSWITCH_ACTOR). Who acts comes "
    "from your key, AWS credentials or OS account, never from this.",
)
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
                5 awaiting approval · 6 a restore that no longer stands ·
                64 usage or inventory error · 1 unexpected
    """
    from killswitch import logs

    logs.configure(log_level)
    if isinstance(ctx.obj, Session):  # main() made it, to know the output format on errors
        ctx.obj.inventory_path, ctx.obj.actor = inventory_path, actor
        ctx.obj.concurrency = concurrency
    else:
        ctx.obj = Session(inventory_path, actor, concurrency)


# -- entry point ----------------------------------------------------------------


def _fail(message: str, code: int, session: Session | None = None, hint: str = "") -> int:
    """Show an error: red text on stderr; with ``--output json`` also one JSON object on
    stdout (``error.code``, ``message``, ``hint``), so a script always has JSON to read."""
    from killswitch.text import printable

    color = sys.stderr.isatty() and "NO_COLOR" not in os.environ
    lines = [printable(line) for line in message.split("\n")]
    click.secho("error: " + "\n".join(lines), fg="red", err=True, color=color)
    if hint:
        click.echo(f"next: {printable(hint)}", err=True)
    if session is not None and session.output == "json":
        from killswitch import render

        error = {"code": int(code), "message": message, "hint": hint or None}
        render.emit_json({"error": error})
    return code


def main(argv: list[str] | None = None, *, clock: Clock = SYSTEM) -> NoReturn:
    """Run the CLI and exit with a documented code; never a traceback for a known error.
    ``clock``: the engine's (tests pass one that moves only when they say)."""
    args = tuple(sys.argv[1:] if argv is None else argv)
    session = Session(None, None, None, argv=args, clock=clock)
    if complete.COMPLETE_VAR in os.environ:  # TAB in a shell (killswitch/cli/complete.py)
        complete.register()
    try:
        code = cli.main(args=argv, prog_name="killswitch", standalone_mode=False, obj=session)
        code = int(code or 0)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=False)
        code = 0
    except click.UsageError as exc:
        exc.show()
        code = _json_only(session, exc.format_message(), ExitCode.USAGE)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        hint = "killswitch ops list  # what ran before the prompt, if anything"
        code = _fail("aborted; nothing more was changed", ExitCode.ERROR, session, hint)
    except Interrupted as exc:
        code = _fail(str(exc), exc.exit_code, session, _hint(exc))
        # Calls still in flight would hold the exit until their own timeouts; the op is
        # journaled and marked, and our lease is released: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    except KillswitchError as exc:
        code = _fail(str(exc), exc.exit_code, session, _hint(exc))
    except KeyboardInterrupt:
        hint = "killswitch ops list  # then: killswitch ops resume OP"
        code = _fail(
            "interrupted; `killswitch ops list` shows what ran", ExitCode.ERROR, session, hint
        )
    except Exception as exc:
        import structlog

        structlog.get_logger("killswitch").exception("unexpected error")
        hint = "killswitch ops list  # what ran; `killswitch ops resume OP` finishes one"
        code = _fail(f"unexpected error: {exc!r}", ExitCode.ERROR, session, hint)
    sys.exit(code)


def _json_only(session: Session, message: str, code: int) -> int:
    """A click usage error is already shown on stderr; scripts get the JSON object too."""
    if session.output == "json":
        from killswitch import render

        render.emit_json({"error": {"code": int(code), "message": message, "hint": None}})
    return code


def _hint(exc: KillswitchError) -> str:
    """The next command to run after ``exc`` (every code but 64 has one)."""
    from killswitch.cli import nextstep
    from killswitch.errors import (
        AuditBroken,
        AwaitingApproval,
        Interrupted,
        LeaseLost,
        LockHeld,
        Superseded,
        UsageError,
    )

    if isinstance(exc, Interrupted):
        return f"killswitch ops resume {exc.op_id}"
    if isinstance(exc, LockHeld):
        return nextstep.for_lock()
    if isinstance(exc, LeaseLost):
        return "killswitch ops list  # then `killswitch ops resume OP` once the lock is free"
    if isinstance(exc, AwaitingApproval):
        return f"killswitch approve {exc.op_id}  # by another person"
    if isinstance(exc, Superseded):
        return f"killswitch ops show {exc.op_id}; killswitch restore …  # a new request"
    if isinstance(exc, AuditBroken):
        return "killswitch audit verify  # names every event and row that disagrees"
    if isinstance(exc, UsageError):
        return ""
    return "killswitch ops list  # what ran; `killswitch ops resume OP` finishes one"
