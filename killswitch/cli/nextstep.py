"""What to run next: every exit but 0 and 64 names it (docs/exit-codes.md).

On a terminal it is the report's last line, ``next: <command>  # why``; in JSON the
report's ``next`` field (or the error's ``hint``). A 64 changed nothing, and its message
says what to fix on the command line.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from killswitch.domain import Report
from killswitch.outcome import Outcome


def for_report(report: Report, argv: Sequence[str]) -> str:
    """The next command after ``report``, or '' when its exit code needs none."""
    op = report.op_id
    status = report.status
    if status.exit_code in (0, 64):
        return ""
    if report.message.startswith("next: "):  # the command knew better (plan: the apply)
        return report.message.removeprefix("next: ")
    if status in (Outcome.PARTIAL, Outcome.RUNNING, Outcome.INTERRUPTED) and op:
        return f"killswitch ops resume {op}  # after fixing what failed (errors: above)"
    if status is Outcome.AWAITING_APPROVAL and op:
        return f"killswitch approve {op}  # by another person"
    if status in (Outcome.SUPERSEDED, Outcome.DECLINED, Outcome.EXPIRED):
        shown = f"killswitch ops show {op}; " if op else ""
        return f"{shown}killswitch restore …  # a new request, with its own approvals"
    if status is Outcome.DRIFT:
        return (
            rerun(argv, add="--fix") + "  # re-closes what is more open than the ledger "
            "(--fix-open also requests restores for what is more closed)"
        )
    if status is Outcome.CHANGES_PENDING:
        return rerun(argv, drop="--dry-run")
    if status is Outcome.REFUSED:
        refused = next((r.target.id for r in report.rows if r.result == "unsupported"), "")
        leave_out = f" --target {shlex.quote('!' + refused)}" if refused else ""
        return rerun(argv) + leave_out + "  # leave out the targets that cannot take it"
    if status is Outcome.PARTIAL and any(r.result == "not-effective" for r in report.rows):
        return (
            rerun(argv)
            + "  # after checking that the serving path of each not-effective target reads "
            "its flag (docs/probes.md)"
        )
    return rerun(argv) + "  # after fixing access to the targets under errors:"


def for_lock() -> str:
    return "killswitch lock status  # who holds it, for which op, until when"


# Flags whose value may hold a secret (a webhook URL carries its token): never echoed.
UNSAID = ("--notify",)


def rerun(argv: Sequence[str], *, add: str = "", drop: str = "") -> str:
    """The same command line again (as typed, quoted for the shell), adjusted; a flag
    that may carry a secret is left out with its value."""
    words: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in UNSAID:
            skip = True
        elif word != drop and not word.startswith(tuple(f"{f}=" for f in UNSAID)):
            words.append(word)
    if add and add not in words:
        words.append(add)
    return "killswitch " + " ".join(shlex.quote(w) for w in words)
