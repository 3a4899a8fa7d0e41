"""The StateStore protocol: ledger, ops journal, lease lock, approvals and audit log.

Every store (SQLite embedded, DynamoDB shared) passes the same conformance tests.
Writes made on behalf of an apply carry the caller's lease; a store refuses
them once a newer holder exists (fencing), so a stalled process cannot
overwrite the work of the one that took over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from killswitch.domain import (
    AuditEvent,
    Intent,
    LedgerEntry,
    Operation,
    OpStatus,
    OpTiming,
    Step,
)
from killswitch.errors import KillswitchError, LockInfo


class StoreUnreachable(KillswitchError):
    """The state store did not answer (network, timeout, 5xx, credentials): nothing was changed.

    revoke and restrict fall back to the local break-glass spool instead of raising this."""


@dataclass(frozen=True)
class Lease:
    owner: str
    op_id: str | None
    token: int  # fencing token: strictly increases with every new holder
    expires_at: str
    intent: Intent = Intent.OTHER
    # The holder before us whose provider writes may still be in flight: taken over,
    # expired or broken without releasing. None: the lock was released cleanly.
    fenced: LockInfo | None = None


@dataclass(frozen=True)
class JournalEntry:
    """One journal record as written, with the fencing token of the lease that wrote it."""

    step: Step
    token: int


@dataclass(frozen=True)
class Approval:
    op_id: str
    actor: str
    at: str


@dataclass(frozen=True)
class StateDump:
    """Everything a store holds, verbatim, for moving it to another store.

    ``journal`` is in write order within each op; ``audit`` in chain order."""

    ops: tuple[Operation, ...]
    journal: tuple[JournalEntry, ...]
    ledger: tuple[LedgerEntry, ...]
    approvals: tuple[Approval, ...]
    audit: tuple[AuditEvent, ...]
    audit_head: tuple[int, str]
    lock_token: int  # the newest fencing token handed out; a copy continues above it


class StateStore(Protocol):
    # -- lock -------------------------------------------------------------
    def acquire(
        self, owner: str, op_id: str | None, ttl_seconds: float, intent: Intent = Intent.OTHER
    ) -> Lease:
        """Take the apply lock if it is free or its lease expired; raise LockHeld naming
        the holder if it is taken."""
        ...

    def take_over(
        self, owner: str, op_id: str | None, ttl_seconds: float, intent: Intent, token: int
    ) -> Lease:
        """Take the lock from the holder of ``token`` at once, fencing it out; raise
        LockHeld when the lock changed hands meanwhile (``token`` is no longer current)."""
        ...

    def renew(self, lease: Lease, ttl_seconds: float) -> Lease:
        """Extend our lease and count a heartbeat; raise LeaseLost if another holder
        took over."""
        ...

    def check(self, lease: Lease) -> None:
        """Raise LeaseLost unless ``lease`` still holds the lock (read, not remembered)."""
        ...

    def release(self, lease: Lease) -> None: ...

    def lock_status(self) -> LockInfo | None: ...

    def break_lock(self, token: int) -> LockInfo | None:
        """Free the lock held under ``token`` and fence that holder out (the token moves on).

        Return the holder that was broken; None when the lock is free or changed hands."""
        ...

    # -- operations and journal --------------------------------------------
    def create_op(self, op: Operation) -> None:
        """Record a new op; an existing id is left as it is."""
        ...

    def get_op(self, op_id: str) -> Operation | None: ...

    def list_ops(self, limit: int = 50) -> list[Operation]: ...

    def open_ops(self) -> list[Operation]:
        """Every op not yet finished: awaiting approval, running or partial."""
        ...

    def set_op_status(self, op_id: str, status: OpStatus, lease: Lease | None) -> None: ...

    def set_op_timing(self, op_id: str, timing: OpTiming, lease: Lease) -> None:
        """Record how long a run of the op took (fenced by ``lease``); a missing op stays
        missing."""
        ...

    def record_step(self, step: Step, lease: Lease) -> None:
        """Journal one step of one target (fenced by ``lease``)."""
        ...

    def steps(self, op_id: str) -> dict[str, Step]:
        """The latest step of each target of ``op_id``."""
        ...

    # -- ledger --------------------------------------------------------------
    def set_ledger(self, entries: Sequence[LedgerEntry], lease: Lease) -> None: ...

    def ledger(self) -> dict[str, LedgerEntry]: ...

    # -- approvals -------------------------------------------------------------
    def add_approval(self, op_id: str, actor: str) -> list[str]:
        """Record ``actor``'s approval once; return every approver so far."""
        ...

    def approvals(self, op_id: str) -> list[str]: ...

    # -- audit -----------------------------------------------------------------
    def append_audit(
        self, actor: str, kind: str, op_id: str | None, payload: dict[str, object]
    ) -> AuditEvent:
        """Append an event to the hash chain atomically with moving the chain head."""
        ...

    def audit_events(self) -> list[AuditEvent]: ...

    def audit_head(self) -> tuple[int, str]:
        """The (seq, hash) of the newest event as recorded beside the chain."""
        ...

    # -- moving state between stores ----------------------------------------
    def export_state(self) -> StateDump:
        """Everything, verbatim (hashes, timestamps and tokens as stored)."""
        ...

    def import_state(self, dump: StateDump) -> None:
        """Load ``dump`` into this store; refuse (UsageError) unless it is empty."""
        ...

    def close(self) -> None: ...
