"""Break-glass: when the shared state store cannot be reached, revoke and restrict still run.

What they would have written (op, journal, ledger, audit) goes to a local spool
file instead: one JSON record a line, each line hash-chained to the one before
and fsynced before the provider call it announces. ``killswitch state sync``
uploads the spool once the store answers again, in the order it was written,
and appends its audit events to the shared chain (each marked with where it
came from, so a second sync uploads nothing twice).

A spool is per machine and per state URL: ``<spool dir>/<hash of the URL>/``,
one file per break-glass run, named by its start time. Without the shared
store there is no shared lock: only break-glass runs on this machine exclude
each other (an flock), and the warning says so.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from killswitch.audit import GENESIS, event_hash
from killswitch.domain import (
    AuditEvent,
    Intent,
    LedgerEntry,
    Operation,
    OpStatus,
    OpTiming,
    Step,
    utcnow,
)
from killswitch.errors import ExitCode, KillswitchError, LockHeld, LockInfo, UsageError
from killswitch.state.base import Lease, StateDump
from killswitch.state.codec import (
    event_from_json,
    event_to_json,
    ledger_from_json,
    ledger_to_json,
    op_from_json,
    op_to_json,
    step_from_json,
    step_to_json,
    timing_from_json,
    timing_to_json,
)

SPOOL_ENV = "KILLSWITCH_SPOOL_DIR"
SUFFIX, SYNCED = ".jsonl", ".synced"


class SpoolBroken(KillswitchError):
    """A spool file was edited or damaged: nothing from it (or after it) is uploaded."""

    exit_code = ExitCode.PARTIAL


def default_spool_dir(inventory_path: Path) -> Path:
    """``$KILLSWITCH_SPOOL_DIR``, else ``.killswitch/spool`` beside the inventory."""
    explicit = os.environ.get(SPOOL_ENV)
    return Path(explicit) if explicit else inventory_path.parent / ".killswitch" / "spool"


def spool_folder(spool_dir: Path, url: str) -> Path:
    """Where the spools of one shared store live on this machine."""
    return spool_dir / hashlib.sha256(url.encode()).hexdigest()[:16]


def pending_spools(spool_dir: Path, url: str) -> list[Path]:
    """The spool files not yet uploaded, oldest first (names sort by start time)."""
    return sorted(spool_folder(spool_dir, url).glob(f"*{SUFFIX}"))


# -- records ------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One line of a spool: what happened, chained to the line before."""

    n: int
    kind: str  # header, op, status, timing, step, ledger, approval, audit
    body: dict[str, Any]
    prev: str
    hash: str


def _record_hash(prev: str, n: int, kind: str, body: dict[str, Any]) -> str:
    text = json.dumps([prev, n, kind, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def read_spool(path: Path) -> list[Record]:
    """Every record of ``path``, the chain checked; SpoolBroken names the first bad line.

    A torn last line is dropped: its write never returned, so the provider call it
    would have announced never happened."""
    lines = path.read_text(encoding="utf-8").split("\n")
    records: list[Record] = []
    prev = GENESIS
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            raw = json.loads(line)
            record = Record(raw["n"], raw["kind"], raw["body"], raw["prev"], raw["hash"])
        except (ValueError, KeyError, TypeError):
            if number == len(lines):
                break  # a last line without its newline: a torn write
            raise SpoolBroken(f"{path}:{number}: not a spool record") from None
        if record.n != len(records) or record.prev != prev:
            raise SpoolBroken(f"{path}:{number}: record missing, moved or inserted")
        if _record_hash(record.prev, record.n, record.kind, record.body) != record.hash:
            raise SpoolBroken(f"{path}:{number}: record edited (hash mismatch)")
        records.append(record)
        prev = record.hash
    if not records or records[0].kind != "header":
        raise SpoolBroken(f"{path}: no header record")
    return records


# -- the store -------------------------------------------------------------------------


class SpoolStore:
    """A StateStore that writes to a local spool; reads see this machine's unsynced spools."""

    def __init__(self, folder: Path, url: str, reason: str) -> None:
        self.folder, self.url, self.reason = folder, url, reason
        self.path: Path | None = None  # the spool file, made on the first write
        self._mutex = threading.RLock()
        self._file: IO[str] | None = None
        self._lock_file: IO[str] | None = None
        self._prev, self._n = GENESIS, 0
        self._ops: dict[str, Operation] = {}
        self._steps: dict[str, dict[str, Step]] = {}
        self._ledger: dict[str, LedgerEntry] = {}
        self._approvals: dict[str, list[str]] = {}
        self._events: list[AuditEvent] = []
        for earlier in pending_spools(folder.parent, url) if folder.exists() else []:
            try:
                for record in read_spool(earlier):
                    self._remember(record.kind, record.body)
            except SpoolBroken:
                continue  # never block a revoke; `state sync` reports the broken file
        self._events = []  # each spool file is its own chain

    @classmethod
    def open(cls, spool_dir: Path, url: str, *, reason: str) -> SpoolStore:
        return cls(spool_folder(spool_dir, url), url, reason)

    @property
    def warning(self) -> str:
        return (
            f"BREAK-GLASS: {self.reason}\n"
            "This change runs WITHOUT the shared lock: other operators cannot see it, "
            "and it cannot see them.\n"
            f"Its journal and audit events go to the local spool {self.folder}/.\n"
            "When the state store answers again, run `killswitch state sync` to upload them."
        )

    # -- writing ---------------------------------------------------------------
    def _append(self, kind: str, body: dict[str, Any]) -> None:
        with self._mutex:
            if self._file is None:
                self._start()
            assert self._file is not None
            digest = _record_hash(self._prev, self._n, kind, body)
            line = {"n": self._n, "kind": kind, "body": body, "prev": self._prev, "hash": digest}
            self._file.write(json.dumps(line, sort_keys=True) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())  # on disk before the provider call it announces
            self._prev, self._n = digest, self._n + 1
            self._remember(kind, body)

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = utcnow().replace("-", "").replace(":", "")
        self.path = self.folder / f"{stamp}-{os.getpid()}{SUFFIX}"
        self._file = open(self.path, "x", encoding="utf-8")  # noqa: SIM115
        header = {"url": self.url, "host": socket.gethostname(), "pid": os.getpid()}
        self._append("header", header | {"reason": self.reason, "at": utcnow()})

    def _remember(self, kind: str, body: dict[str, Any]) -> None:
        """Apply one record to what reads see."""
        if kind == "op":
            self._ops.setdefault(body["id"], op_from_json(body))
        elif kind == "status" and body["op_id"] in self._ops:
            op = self._ops[body["op_id"]]
            self._ops[op.id] = _with_status(op, OpStatus(body["status"]))
        elif kind == "timing" and body["op_id"] in self._ops:
            op = self._ops[body["op_id"]]
            self._ops[op.id] = replace(op, timing=timing_from_json(body["timing"]))
        elif kind == "step":
            self._steps.setdefault(body["op_id"], {})[body["target_id"]] = step_from_json(body)
        elif kind == "ledger":
            for entry in map(ledger_from_json, body["entries"]):
                self._ledger[entry.target_id] = entry
        elif kind == "approval":
            have = self._approvals.setdefault(body["op_id"], [])
            if body["actor"] not in have:
                have.append(body["actor"])
        elif kind == "audit":
            self._events.append(event_from_json(body))

    # -- lock: this machine only ----------------------------------------------
    def acquire(
        self, owner: str, op_id: str | None, ttl_seconds: float, intent: Intent = Intent.OTHER
    ) -> Lease:
        self._lock_file = machine_lock(self.folder, owner, op_id)
        return Lease(owner, op_id, 0, "never (break-glass: a lock on this machine only)", intent)

    def take_over(
        self, owner: str, op_id: str | None, ttl_seconds: float, intent: Intent, token: int
    ) -> Lease:
        return self.acquire(owner, op_id, ttl_seconds, intent)  # nobody to take it from

    def renew(self, lease: Lease, ttl_seconds: float) -> Lease:
        return lease

    def check(self, lease: Lease) -> None:
        return None  # this machine's flock is held until the process ends

    def release(self, lease: Lease) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file drops the flock
            self._lock_file = None

    def lock_status(self) -> LockInfo | None:
        return None

    def break_lock(self, token: int) -> LockInfo | None:
        return None

    # -- ops, journal, ledger, approvals ----------------------------------------
    def create_op(self, op: Operation) -> None:
        with self._mutex:
            if op.id not in self._ops:
                self._append("op", op_to_json(op))

    def get_op(self, op_id: str) -> Operation | None:
        return self._ops.get(op_id)

    def list_ops(self, limit: int = 50) -> list[Operation]:
        ops = sorted(self._ops.values(), key=lambda o: (o.created_at, o.id), reverse=True)
        return ops[:limit]

    def open_ops(self) -> list[Operation]:
        return [op for op in self._ops.values() if op.status.unfinished]

    def set_op_status(self, op_id: str, status: OpStatus, lease: Lease | None) -> None:
        self._append("status", {"op_id": op_id, "status": status.value})

    def set_op_timing(self, op_id: str, timing: OpTiming, lease: Lease) -> None:
        self._append("timing", {"op_id": op_id, "timing": timing_to_json(timing)})

    def record_step(self, step: Step, lease: Lease) -> None:
        self._append("step", step_to_json(step if step.at else _stamped(step)))

    def steps(self, op_id: str) -> dict[str, Step]:
        return dict(self._steps.get(op_id, {}))

    def set_ledger(self, entries: Sequence[LedgerEntry], lease: Lease) -> None:
        self._append("ledger", {"entries": [ledger_to_json(e) for e in entries]})

    def ledger(self) -> dict[str, LedgerEntry]:
        return dict(self._ledger)

    def add_approval(self, op_id: str, actor: str) -> list[str]:
        if actor not in self._approvals.get(op_id, []):
            self._append("approval", {"op_id": op_id, "actor": actor, "at": utcnow()})
        return self.approvals(op_id)

    def approvals(self, op_id: str) -> list[str]:
        return list(self._approvals.get(op_id, []))

    # -- audit: a chain of its own, re-chained onto the shared one by `state sync` --
    def append_audit(
        self, actor: str, kind: str, op_id: str | None, payload: dict[str, object]
    ) -> AuditEvent:
        with self._mutex:
            seq, prev = self.audit_head()
            at = utcnow()
            digest = event_hash(prev, seq + 1, at, actor, kind, op_id, payload)
            event = AuditEvent(seq + 1, at, actor, kind, op_id, payload, prev, digest)
            self._append("audit", event_to_json(event))
            return event

    def audit_events(self) -> list[AuditEvent]:
        return list(self._events)

    def audit_head(self) -> tuple[int, str]:
        return (self._events[-1].seq, self._events[-1].hash) if self._events else (0, GENESIS)

    def export_state(self) -> StateDump:
        raise UsageError("a break-glass spool is not a store to migrate; `state sync` it")

    def import_state(self, dump: StateDump) -> None:
        raise UsageError("a break-glass spool is not a store to migrate into")

    def close(self) -> None:
        with self._mutex:
            if self._file is not None:
                self._file.close()
                self._file = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def machine_lock(folder: Path, owner: str, op_id: str | None) -> IO[str]:
    """Exclude other break-glass runs and syncs on this machine; the OS drops it on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+", encoding="utf-8")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = json.loads(handle.read() or "{}")
        handle.close()
        since, op = holder.get("at", "?"), holder.get("op_id")
        info = LockInfo(
            holder.get("owner", "?"), op, since, "when that run on this machine ends", 0
        )
        raise LockHeld(info) from None
    handle.truncate(0)
    handle.write(json.dumps({"owner": owner, "op_id": op_id, "at": utcnow()}))
    handle.flush()
    return handle


def _with_status(op: Operation, status: OpStatus) -> Operation:
    return replace(op, status=status)


def _stamped(step: Step) -> Step:
    return replace(step, at=utcnow())
