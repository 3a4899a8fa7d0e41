"""Error types: each knows its user-facing message and its exit code."""

from __future__ import annotations

from dataclasses import dataclass

from killswitch.domain import Intent
from killswitch.outcome import ExitCode

__all__ = [  # ExitCode lives in killswitch/outcome.py; errors carry it, so it is here too
    "AuditBroken",
    "AwaitingApproval",
    "DeadlinePassed",
    "ExitCode",
    "Interrupted",
    "InventoryError",
    "KillswitchError",
    "LeaseLost",
    "LockHeld",
    "LockInfo",
    "PermanentError",
    "ProviderError",
    "RetryableError",
    "RunbookError",
    "Superseded",
    "UnknownOperation",
    "UsageError",
]


class KillswitchError(Exception):
    """Base error: ``str(err)`` is what the user sees, ``exit_code`` what the shell sees."""

    exit_code: ExitCode = ExitCode.ERROR


class UsageError(KillswitchError):
    """Bad flags, unknown names, refused confirmation: nothing was changed."""

    exit_code = ExitCode.USAGE


class InventoryError(UsageError):
    """The inventory file is invalid; the message names file, line and field."""

    what = "inventory"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"invalid {self.what}:\n  " + "\n  ".join(problems))


class RunbookError(InventoryError):
    """A runbook file is invalid; the message names file, line and field."""

    what = "runbook"


@dataclass(frozen=True)
class LockInfo:
    """Who holds the apply lock, since when, for which operation."""

    owner: str
    op_id: str | None
    acquired_at: str
    expires_at: str
    token: int
    intent: Intent = Intent.OTHER
    beat: int = 0  # heartbeats so far: a holder whose beat stops moving is dead

    @property
    def doing(self) -> str:
        return {
            Intent.TIGHTEN: "a tightening op",
            Intent.LOOSEN: "a loosening op",
            Intent.OTHER: "state maintenance",
        }[self.intent]


class LockHeld(KillswitchError):
    """Another operation holds the lock."""

    exit_code = ExitCode.LOCKED

    def __init__(self, holder: LockInfo, *, waited: float | None = None) -> None:
        self.holder = holder
        after = f"after waiting {waited:.0f}s, " if waited is not None else ""
        super().__init__(
            f"{after}lock held by {holder.owner} since {holder.acquired_at} "
            f"for op {holder.op_id or '?'} ({holder.doing}; lease expires "
            f"{holder.expires_at}); wait for it to finish (`killswitch lock status`), "
            "or check `killswitch ops show` for that op"
        )


class LeaseLost(KillswitchError):
    """Our lease expired and another holder took over: stop writing at once."""

    exit_code = ExitCode.LOCKED


class AwaitingApproval(KillswitchError):
    """A restore needs more approvals before it may apply."""

    exit_code = ExitCode.AWAITING_APPROVAL

    def __init__(self, op_id: str, have: list[str], need: int) -> None:
        self.op_id = op_id
        self.have = have
        self.need = need
        super().__init__(
            f"op {op_id} awaits approval: {len(have)} of {need} "
            f"(approved by {', '.join(have) or 'nobody'}); "
            f"another person runs `killswitch approve {op_id}`"
        )


class Superseded(KillswitchError):
    """A loosening op that may no longer re-open anything: a newer revoke or restrict
    reached its targets, what it was approved for has changed since, or it was
    declined or expired."""

    exit_code = ExitCode.SUPERSEDED

    def __init__(self, op_id: str, why: str) -> None:
        self.op_id = op_id
        super().__init__(
            f"op {op_id} can no longer re-open anything: {why}. Nothing was changed; "
            "if access should still be restored, request a new restore "
            "(`killswitch restore …`), which needs its own approvals"
        )


class UnknownOperation(UsageError):
    def __init__(self, op_id: str) -> None:
        super().__init__(f"no operation {op_id!r} in the state store (see `killswitch ops list`)")


class ProviderError(KillswitchError):
    """A provider call failed. Classified once, at the edge, into retryable or permanent."""

    retryable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlinePassed(KillswitchError):
    """The op's deadline passed before this provider call could start or finish."""

    exit_code = ExitCode.PARTIAL


class RetryableError(ProviderError):
    """Throttling, 5xx, timeouts, conflicts: worth another try."""

    retryable = True


class PermanentError(ProviderError):
    """Access denied, not found, invalid: retrying will not help."""


class Interrupted(KillswitchError):
    """The operator stopped an op while it was applying (Ctrl-C): what was done stays
    done, journaled; the rest waits for ``ops resume``."""

    exit_code = ExitCode.PARTIAL

    def __init__(self, op_id: str) -> None:
        self.op_id = op_id
        super().__init__(
            f"interrupted: op {op_id} was cut short while applying; what it did is "
            f"journaled. Finish it with `killswitch ops resume {op_id}`"
        )


class AuditBroken(KillswitchError):
    """The audit log does not verify, so nothing that counts approvals may trust it."""

    exit_code = ExitCode.PARTIAL

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:5]) + ("\n  …" if len(problems) > 5 else "")
        super().__init__(
            f"the audit log does not verify, so its approvals cannot be counted; nothing "
            f"was changed. Run `killswitch audit verify`:\n  {shown}"
        )
