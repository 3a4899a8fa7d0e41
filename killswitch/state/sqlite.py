"""Embedded state in one SQLite file (WAL): the default for one operator machine."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from killswitch.audit import GENESIS, event_hash
from killswitch.clock import SYSTEM, Clock
from killswitch.domain import (
    AuditEvent,
    Intent,
    LedgerEntry,
    Operation,
    OpStatus,
    OpTiming,
    Step,
    iso,
    utcnow,
)
from killswitch.errors import LeaseLost, LockHeld, LockInfo, UsageError
from killswitch.state import codec
from killswitch.state.base import Approval, JournalEntry, Lease, StateDump

SCHEMA = """
CREATE TABLE IF NOT EXISTS lock (
  name TEXT PRIMARY KEY, owner TEXT, op_id TEXT, token INTEGER NOT NULL,
  acquired_at TEXT, expires_at TEXT, held INTEGER NOT NULL,
  intent TEXT NOT NULL DEFAULT 'other', beat INTEGER NOT NULL DEFAULT 0,
  fenced INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ops (
  id TEXT PRIMARY KEY, action TEXT NOT NULL, desired TEXT NOT NULL, target_ids TEXT NOT NULL,
  actor TEXT NOT NULL, reason TEXT NOT NULL, ticket TEXT, selector TEXT NOT NULL,
  created_at TEXT NOT NULL, status TEXT NOT NULL, required_approvals INTEGER NOT NULL,
  timing TEXT
);
CREATE TABLE IF NOT EXISTS steps (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, op_id TEXT NOT NULL, target_id TEXT NOT NULL,
  result TEXT NOT NULL, error TEXT, observed TEXT, at TEXT NOT NULL, token INTEGER NOT NULL,
  desired TEXT
);
CREATE INDEX IF NOT EXISTS steps_by_op ON steps (op_id, target_id, seq);
CREATE TABLE IF NOT EXISTS ledger (
  target_id TEXT PRIMARY KEY, desired TEXT NOT NULL, op_id TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
  op_id TEXT NOT NULL, actor TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (op_id, actor)
);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, kind TEXT NOT NULL,
  op_id TEXT, payload TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (
  id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL
);
"""

LOCK_NAME = "apply"
STEP_COLUMNS = ("op_id", "target_id", "result", "error", "observed", "at", "desired")
EVENT_COLUMNS = ("seq", "at", "actor", "kind", "op_id", "payload", "prev_hash", "hash")
LEDGER_COLUMNS = ("target_id", "desired", "op_id", "at")
EVENT_INSERT = "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
LEDGER_UPSERT = "INSERT OR REPLACE INTO ledger VALUES (?, ?, ?, ?)"
# Columns added after the first release: a state file made before them gets them on open.
ADDED_COLUMNS = (
    ("lock", "intent", "TEXT NOT NULL DEFAULT 'other'"),
    ("lock", "beat", "INTEGER NOT NULL DEFAULT 0"),
    ("lock", "fenced", "INTEGER NOT NULL DEFAULT 0"),
    ("steps", "desired", "TEXT"),
    ("ops", "timing", "TEXT"),
)


class SqliteStore:
    """StateStore on SQLite. One connection shared by threads, serialised by a mutex."""

    def __init__(self, path: Path, *, clock: Clock = SYSTEM, read_only: bool = False) -> None:
        self.path = path
        self.clock = clock  # leases expire on it: tests move it instead of sleeping
        self._mutex = threading.Lock()
        if read_only:  # shell completion: an existing file, read, never waited on or made
            uri = f"{path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=1, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._tx() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, column, kind in ADDED_COLUMNS:
                have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            db.execute(
                "INSERT OR IGNORE INTO audit_head (id, seq, hash) VALUES (1, 0, ?)", (GENESIS,)
            )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the file's write lock up front."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._mutex:
            return list(self._db.execute(sql, args))

    # -- lock -------------------------------------------------------------
    def acquire(
        self, owner: str, op_id: str | None, ttl_seconds: float, intent: Intent = Intent.OTHER
    ) -> Lease:
        now = iso(self.clock.now())
        with self._tx() as db:
            row = db.execute("SELECT * FROM lock WHERE name = ?", (LOCK_NAME,)).fetchone()
            if row is not None and row["held"] and row["expires_at"] > now:
                raise LockHeld(_lock_info(row))
            return self._hold(db, row, owner, op_id, ttl_seconds, intent, now)

    def take_over(
        self, owner: str, op_id: str | None, ttl_seconds: float, intent: Intent, token: int
    ) -> Lease:
        now = iso(self.clock.now())
        with self._tx() as db:
            row = db.execute("SELECT * FROM lock WHERE name = ?", (LOCK_NAME,)).fetchone()
            if row is None or row["token"] != token:
                if row is not None and row["held"]:
                    raise LockHeld(_lock_info(row))
                raise LockHeld(LockInfo("nobody (it changed hands)", None, now, now, token))
            return self._hold(db, row, owner, op_id, ttl_seconds, intent, now)

    def _hold(
        self,
        db: sqlite3.Connection,
        row: sqlite3.Row | None,
        owner: str,
        op_id: str | None,
        ttl_seconds: float,
        intent: Intent,
        now: str,
    ) -> Lease:
        """Make us the holder; the one before, if it never released, is fenced."""
        fenced = _lock_info(row) if row is not None and (row["held"] or row["fenced"]) else None
        token = (row["token"] if row is not None else 0) + 1
        lease = Lease(owner, op_id, token, self._later(ttl_seconds), intent, fenced)
        db.execute(
            "INSERT OR REPLACE INTO lock (name, owner, op_id, token, acquired_at, expires_at,"
            " held, intent, beat, fenced) VALUES (?, ?, ?, ?, ?, ?, 1, ?, 0, 0)",
            (LOCK_NAME, owner, op_id, token, now, lease.expires_at, intent.value),
        )
        return lease

    def _later(self, seconds: float) -> str:
        return iso(self.clock.now() + timedelta(seconds=seconds))

    def renew(self, lease: Lease, ttl_seconds: float) -> Lease:
        renewed = replace(lease, expires_at=self._later(ttl_seconds))
        with self._tx() as db:
            self._check_fence(db, lease)
            db.execute(
                "UPDATE lock SET expires_at = ?, beat = beat + 1 WHERE name = ?",
                (renewed.expires_at, LOCK_NAME),
            )
        return renewed

    def check(self, lease: Lease) -> None:
        with self._mutex:
            self._check_fence(self._db, lease)

    def release(self, lease: Lease) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE lock SET held = 0, fenced = 0 WHERE name = ? AND token = ?",
                (LOCK_NAME, lease.token),
            )

    def lock_status(self) -> LockInfo | None:
        rows = self._read("SELECT * FROM lock WHERE name = ? AND held = 1", (LOCK_NAME,))
        return _lock_info(rows[0]) if rows else None

    def break_lock(self, token: int) -> LockInfo | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM lock WHERE name = ?", (LOCK_NAME,)).fetchone()
            if row is None or not row["held"] or row["token"] != token:
                return None
            # Moving the token on fences the broken holder: its next write is refused. Its
            # writes in flight may still land: the next holder is told (fenced = 1).
            db.execute(
                "UPDATE lock SET held = 0, fenced = 1, token = ? WHERE name = ?",
                (token + 1, LOCK_NAME),
            )
        return _lock_info(row)

    def _check_fence(self, db: sqlite3.Connection, lease: Lease) -> None:
        row = db.execute("SELECT token FROM lock WHERE name = ?", (LOCK_NAME,)).fetchone()
        if row is None or row["token"] != lease.token:
            raise LeaseLost(
                f"lease {lease.token} of {lease.owner} was taken over "
                f"(current token {row['token'] if row else 'none'}); write refused"
            )

    # -- operations and journal --------------------------------------------
    def create_op(self, op: Operation) -> None:
        with self._tx() as db:
            _insert_op(db, op)

    def get_op(self, op_id: str) -> Operation | None:
        rows = self._read("SELECT * FROM ops WHERE id = ?", (op_id,))
        return _op(rows[0]) if rows else None

    def list_ops(self, limit: int = 50) -> list[Operation]:
        rows = self._read("SELECT * FROM ops ORDER BY created_at DESC, id LIMIT ?", (limit,))
        return [_op(r) for r in rows]

    def open_ops(self) -> list[Operation]:
        unfinished = [s.value for s in OpStatus if s.unfinished]
        marks = ", ".join("?" * len(unfinished))
        rows = self._read(f"SELECT * FROM ops WHERE status IN ({marks})", unfinished)
        return [_op(r) for r in rows]

    def set_op_status(self, op_id: str, status: OpStatus, lease: Lease | None) -> None:
        with self._tx() as db:
            if lease is not None:
                self._check_fence(db, lease)
            db.execute("UPDATE ops SET status = ? WHERE id = ?", (status.value, op_id))

    def set_op_timing(self, op_id: str, timing: OpTiming, lease: Lease) -> None:
        with self._tx() as db:
            self._check_fence(db, lease)
            db.execute("UPDATE ops SET timing = ? WHERE id = ?", (codec.timing_row(timing), op_id))

    def record_step(self, step: Step, lease: Lease) -> None:
        with self._tx() as db:
            self._check_fence(db, lease)
            db.execute(
                STEP_INSERT, _step_row(step if step.at else replace(step, at=utcnow()), lease.token)
            )

    def steps(self, op_id: str) -> dict[str, Step]:
        rows = self._read("SELECT * FROM steps WHERE op_id = ? ORDER BY seq", (op_id,))
        return {r["target_id"]: _step(r) for r in rows}

    # -- ledger --------------------------------------------------------------
    def set_ledger(self, entries: Sequence[LedgerEntry], lease: Lease) -> None:
        with self._tx() as db:
            self._check_fence(db, lease)
            db.executemany(
                "INSERT OR REPLACE INTO ledger VALUES (?, ?, ?, ?)", map(_ledger_row, entries)
            )

    def ledger(self) -> dict[str, LedgerEntry]:
        return {r["target_id"]: _ledger(r) for r in self._read("SELECT * FROM ledger")}

    # -- approvals -------------------------------------------------------------
    def add_approval(self, op_id: str, actor: str) -> list[str]:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO approvals VALUES (?, ?, ?)", (op_id, actor, utcnow()))
        return self.approvals(op_id)

    def approvals(self, op_id: str) -> list[str]:
        rows = self._read("SELECT actor FROM approvals WHERE op_id = ? ORDER BY at", (op_id,))
        return [r["actor"] for r in rows]

    # -- audit -----------------------------------------------------------------
    def append_audit(
        self, actor: str, kind: str, op_id: str | None, payload: dict[str, object]
    ) -> AuditEvent:
        with self._tx() as db:
            head = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            seq, at = head["seq"] + 1, utcnow()
            digest = event_hash(head["hash"], seq, at, actor, kind, op_id, payload)
            event = AuditEvent(seq, at, actor, kind, op_id, payload, head["hash"], digest)
            db.execute(EVENT_INSERT, _event_row(event))
            db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, digest))
        return event

    def audit_events(self) -> list[AuditEvent]:
        return [_event(r) for r in self._read("SELECT * FROM audit ORDER BY rowid")]

    def audit_head(self) -> tuple[int, str]:
        row = self._read("SELECT seq, hash FROM audit_head WHERE id = 1")[0]
        return int(row["seq"]), str(row["hash"])

    # -- moving state between stores ----------------------------------------
    def export_state(self) -> StateDump:
        with self._mutex:
            db = self._db
            db.execute("BEGIN")  # one consistent snapshot of every table
            try:
                ops = [_op(r) for r in db.execute("SELECT * FROM ops ORDER BY created_at, id")]
                journal = [
                    JournalEntry(_step(r), r["token"])
                    for r in db.execute("SELECT * FROM steps ORDER BY seq")
                ]
                ledger = [_ledger(r) for r in db.execute("SELECT * FROM ledger ORDER BY target_id")]
                approvals = [
                    Approval(r["op_id"], r["actor"], r["at"])
                    for r in db.execute("SELECT * FROM approvals ORDER BY op_id, at, rowid")
                ]
                audit = [_event(r) for r in db.execute("SELECT * FROM audit ORDER BY seq")]
                head = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
                lock = db.execute("SELECT token FROM lock WHERE name = ?", (LOCK_NAME,)).fetchone()
            finally:
                db.execute("COMMIT")
        return StateDump(
            ops=tuple(ops),
            journal=tuple(journal),
            ledger=tuple(ledger),
            approvals=tuple(approvals),
            audit=tuple(audit),
            audit_head=(int(head["seq"]), str(head["hash"])),
            lock_token=int(lock["token"]) if lock else 0,
        )

    def import_state(self, dump: StateDump) -> None:
        with self._tx() as db:
            used = [
                db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("ops", "steps", "ledger", "approvals", "audit")
            ]
            if any(used):
                raise UsageError(f"{self.path} already holds state; import needs an empty store")
            for op in dump.ops:
                _insert_op(db, op)
            db.executemany(STEP_INSERT, [_step_row(e.step, e.token) for e in dump.journal])
            db.executemany("INSERT INTO ledger VALUES (?, ?, ?, ?)", map(_ledger_row, dump.ledger))
            db.executemany(
                "INSERT INTO approvals VALUES (?, ?, ?)",
                [(a.op_id, a.actor, a.at) for a in dump.approvals],
            )
            db.executemany(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)", map(_event_row, dump.audit)
            )
            db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", dump.audit_head)
            # Tokens only grow, and no lease of the source (not even the one held while it
            # was copied) may write here: the copy continues above every token given out.
            db.execute(
                "INSERT INTO lock (name, token, held) VALUES (?, ?, 0)"
                " ON CONFLICT (name) DO UPDATE SET token = MAX(token, excluded.token)",
                (LOCK_NAME, dump.lock_token + 1),
            )

    def close(self) -> None:
        with self._mutex:
            self._db.close()


def _lock_info(row: sqlite3.Row) -> LockInfo:
    return LockInfo(
        owner=row["owner"],
        op_id=row["op_id"],
        acquired_at=row["acquired_at"],
        expires_at=row["expires_at"],
        token=row["token"],
        intent=Intent(row["intent"]),
        beat=row["beat"],
    )


STEP_INSERT = (
    "INSERT INTO steps (op_id, target_id, result, error, observed, at, token, desired)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _step_row(step: Step, token: int) -> tuple[object, ...]:
    row = codec.step_row(step)
    return (*tuple(row[c] for c in STEP_COLUMNS[:6]), token, row["desired"])


def _op(row: sqlite3.Row) -> Operation:
    return codec.op_from_row({k: row[k] for k in codec.OP_COLUMNS})


def _step(row: sqlite3.Row) -> Step:
    return codec.step_from_row({k: row[k] for k in STEP_COLUMNS})


def _ledger(row: sqlite3.Row) -> LedgerEntry:
    return codec.ledger_from_row({k: row[k] for k in LEDGER_COLUMNS})


def _ledger_row(entry: LedgerEntry) -> list[object]:
    row = codec.ledger_row(entry)
    return [row[c] for c in LEDGER_COLUMNS]


def _event_row(event: AuditEvent) -> list[object]:
    row = codec.event_row(event)
    return [row[c] for c in EVENT_COLUMNS]


def _event(row: sqlite3.Row) -> AuditEvent:
    return codec.event_from_row({k: row[k] for k in EVENT_COLUMNS})


def _insert_op(db: sqlite3.Connection, op: Operation) -> None:
    """Record ``op`` unless its id exists (an existing op is left as it is)."""
    row = codec.op_row(op)
    columns, marks = ", ".join(codec.OP_COLUMNS), ", ".join("?" * len(codec.OP_COLUMNS))
    db.execute(
        f"INSERT OR IGNORE INTO ops ({columns}) VALUES ({marks})",
        [row[c] for c in codec.OP_COLUMNS],
    )
