"""How a command ended, and the exit code that says so: one table for the CLI and the
runbook runner alike (docs/exit-codes.md)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Stable exit codes; runbooks, cron jobs and CI depend on them."""

    OK = 0  # success; for plan and drift: nothing to change / no drift
    ERROR = 1  # unexpected error
    PENDING = 2  # plan: changes pending; drift: drift found
    PARTIAL = 3  # some targets failed or could not be verified
    LOCKED = 4  # the lock is held by another operation
    AWAITING_APPROVAL = 5  # a restore waits for more approvals
    # A restore that no longer stands: superseded by a newer revoke or restrict, stale,
    # declined or expired. Nothing was changed; request a new restore.
    SUPERSEDED = 6
    USAGE = 64  # usage or inventory error; nothing was changed


class Outcome(StrEnum):
    """The status word of a report (plan, change, op, status, drift)."""

    OK = "ok"  # status: every target read
    IN_SYNC = "in-sync"  # plan, drift: nothing differs
    NOTHING_TO_DO = "nothing-to-do"  # a change found nothing to change (no op recorded)
    ALREADY_DONE = "already-done"  # the same op finished before
    COMPLETE = "complete"  # every target verified
    CHANGES_PENDING = "changes-pending"  # plan: apply would write
    BLOCKED = "blocked"  # a restore plan some targets cannot take
    DRIFT = "drift"  # a target differs from the ledger
    PARTIAL = "partial"  # some targets failed or could not be verified
    RUNNING = "running"  # an op that is not being applied crashed: resume it
    UNREADABLE = "unreadable"  # some targets could not be read
    REFUSED = "refused"  # a tightening plan past targets that cannot take it
    AWAITING_APPROVAL = "awaiting-approval"
    SUPERSEDED = "superseded"
    DECLINED = "declined"
    EXPIRED = "expired"
    INTERRUPTED = "interrupted"  # Ctrl-C while applying: resume it

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_CODES[self]


EXIT_CODES = {
    Outcome.OK: ExitCode.OK,
    Outcome.IN_SYNC: ExitCode.OK,
    Outcome.NOTHING_TO_DO: ExitCode.OK,
    Outcome.ALREADY_DONE: ExitCode.OK,
    Outcome.COMPLETE: ExitCode.OK,
    Outcome.CHANGES_PENDING: ExitCode.PENDING,
    Outcome.BLOCKED: ExitCode.USAGE,
    Outcome.DRIFT: ExitCode.PENDING,
    Outcome.PARTIAL: ExitCode.PARTIAL,
    Outcome.RUNNING: ExitCode.PARTIAL,
    Outcome.UNREADABLE: ExitCode.PARTIAL,
    Outcome.REFUSED: ExitCode.PARTIAL,
    Outcome.AWAITING_APPROVAL: ExitCode.AWAITING_APPROVAL,
    Outcome.SUPERSEDED: ExitCode.SUPERSEDED,
    Outcome.DECLINED: ExitCode.SUPERSEDED,
    Outcome.EXPIRED: ExitCode.SUPERSEDED,
    Outcome.INTERRUPTED: ExitCode.PARTIAL,
}
