"""Moving state: store to store (``state migrate``), spool to store (``state sync``).

Both check the audit chain before they copy and after, and both write one audit
event saying what they did, so the move itself is on the record.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from killswitch import audit
from killswitch.domain import OpStatus, Step
from killswitch.errors import ExitCode, KillswitchError, UsageError
from killswitch.state.base import JournalEntry, Lease, StateDump, StateStore
from killswitch.state.codec import (
    event_from_json,
    ledger_from_json,
    op_from_json,
    step_from_json,
    timing_from_json,
)
from killswitch.state.spool import (
    SYNCED,
    Record,
    SpoolBroken,
    machine_lock,
    pending_spools,
    read_spool,
    spool_folder,
)

MARKER = "break_glass"  # payload key of an audit event uploaded from a spool
RANK = {
    OpStatus.AWAITING_APPROVAL: 0,
    OpStatus.RUNNING: 1,
    OpStatus.INTERRUPTED: 1,
    OpStatus.PARTIAL: 2,
    OpStatus.COMPLETE: 3,
    OpStatus.SUPERSEDED: 4,
    OpStatus.DECLINED: 4,
    OpStatus.EXPIRED: 4,
}


class ChainBroken(KillswitchError):
    """An audit chain does not verify, or a copy differs from its source."""

    exit_code = ExitCode.PARTIAL


# -- migrate ------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    source: str
    destination: str
    ops: int
    journal: int
    ledger: int
    approvals: int
    audit_events: int
    audit_head: tuple[int, str]


def is_empty(store: StateStore) -> bool:
    """No op, no ledger entry, no audit event: safe to import into."""
    return store.audit_head()[0] == 0 and not store.list_ops(1) and not store.ledger()


def migrate(
    source: StateStore,
    destination: StateStore,
    *,
    source_url: str,
    destination_url: str,
    actor: str,
    ttl_seconds: float,
) -> Migration:
    """Copy everything from ``source`` into the empty ``destination``, verified both sides.

    The source's lock is held throughout, so no apply writes while the copy is made."""
    if not is_empty(destination):
        raise UsageError(
            f"{destination_url} already holds state; migrate copies into an empty store only"
        )
    lease = source.acquire(f"{actor} (state migrate)", None, ttl_seconds)
    try:
        dump = source.export_state()
        problems = audit.verify(dump.audit, dump.audit_head)
        if problems:
            raise ChainBroken(
                f"the audit chain of {source_url} is broken; nothing was copied:\n  "
                + "\n  ".join(problems)
            )
        source.renew(lease, ttl_seconds)
        destination.import_state(dump)
        copy = destination.export_state()
        problems = audit.verify(copy.audit, copy.audit_head) + differences(dump, copy)
        if problems:
            raise ChainBroken(
                f"the copy in {destination_url} does not match {source_url}:\n  "
                + "\n  ".join(problems)
            )
        head_seq, head_hash = dump.audit_head
        summary: dict[str, object] = {"events": head_seq, "head": head_hash, "ops": len(dump.ops)}
        destination.append_audit(actor, "state.migrated", None, {"from": source_url} | summary)
        source.append_audit(actor, "state.migrated", None, {"to": destination_url} | summary)
    finally:
        source.release(lease)
    return Migration(
        source_url,
        destination_url,
        len(dump.ops),
        len(dump.journal),
        len(dump.ledger),
        len(dump.approvals),
        len(dump.audit),
        dump.audit_head,
    )


def differences(a: StateDump, b: StateDump) -> list[str]:
    """What differs between two dumps of the same state, as sentences."""
    problems = []
    if sorted(a.ops, key=lambda o: o.id) != sorted(b.ops, key=lambda o: o.id):
        problems.append("operations differ")
    if _by_op(a.journal) != _by_op(b.journal):
        problems.append("journal records differ")
    if {e.target_id: e for e in a.ledger} != {e.target_id: e for e in b.ledger}:
        problems.append("ledger differs")
    if sorted(a.approvals, key=lambda x: (x.op_id, x.actor)) != sorted(
        b.approvals, key=lambda x: (x.op_id, x.actor)
    ):
        problems.append("approvals differ")
    if a.audit != b.audit or a.audit_head != b.audit_head:
        problems.append("audit events or chain head differ")
    if b.lock_token < a.lock_token:
        problems.append(f"lock token went back from {a.lock_token} to {b.lock_token}")
    return problems


def _by_op(journal: Iterable[JournalEntry]) -> dict[str, list[JournalEntry]]:
    grouped: dict[str, list[JournalEntry]] = {}
    for entry in journal:
        grouped.setdefault(entry.step.op_id, []).append(entry)
    return grouped


# -- sync ---------------------------------------------------------------------------


@dataclass
class Upload:
    """What one spool file added to the shared store."""

    spool: str
    host: str
    uploaded: Counter[str] = field(default_factory=Counter)
    skipped: int = 0  # already uploaded by an earlier sync, or superseded since


class _LeaseKeeper:
    """Our lease on the shared store, renewed as the upload goes on."""

    def __init__(self, store: StateStore, lease: Lease, ttl: float) -> None:
        self.store, self.lease, self.ttl = store, lease, ttl
        self._renewed = time.monotonic()

    def fresh(self) -> Lease:
        if time.monotonic() - self._renewed > self.ttl / 3:
            self.lease = self.store.renew(self.lease, self.ttl)
            self._renewed = time.monotonic()
        return self.lease


def sync(
    store: StateStore, spool_dir: Path, url: str, *, actor: str, ttl_seconds: float
) -> list[Upload]:
    """Upload this machine's break-glass spools for ``url`` into ``store``, oldest first.

    Idempotent: what an earlier (maybe interrupted) sync uploaded is recognised and
    skipped. A broken spool stops the sync there: earlier files stay uploaded."""
    files = pending_spools(spool_dir, url)
    if not files:
        return []
    uploads: list[Upload] = []
    with machine_lock(spool_folder(spool_dir, url), f"{actor} (state sync)", None):
        lease = store.acquire(f"{actor} (state sync)", None, ttl_seconds)
        keeper = _LeaseKeeper(store, lease, ttl_seconds)
        try:
            for path in files:
                records = read_spool(path)
                if records[0].body.get("url") != url:
                    raise SpoolBroken(f"{path}: spooled for {records[0].body.get('url')}")
                uploads.append(_upload(store, path, records, keeper, actor))
                path.rename(path.with_suffix(SYNCED))
        finally:
            store.release(keeper.lease)
    return uploads


def _upload(
    store: StateStore, path: Path, records: list[Record], keeper: _LeaseKeeper, actor: str
) -> Upload:
    header = records[0].body
    report = Upload(path.stem, str(header.get("host", "?")))
    uploaded_before = set()
    synced_before = False
    for event in store.audit_events():
        marker = event.payload.get(MARKER)
        if isinstance(marker, dict) and marker.get("spool") == report.spool:
            uploaded_before.add(marker.get("record"))
        synced_before |= event.kind == "state.synced" and event.payload.get("spool") == report.spool
    ledger = store.ledger()
    journal: dict[str, dict[str, Step]] = {}
    for record in records[1:]:
        body = record.body
        if record.kind == "op":
            if store.get_op(body["id"]) is None:
                store.create_op(op_from_json(body))
                report.uploaded["ops"] += 1
        elif record.kind == "status":
            op = store.get_op(body["op_id"])
            status = OpStatus(body["status"])
            if op is not None and RANK[status] > RANK[op.status]:
                store.set_op_status(op.id, status, keeper.fresh())
        elif record.kind == "timing":
            if store.get_op(body["op_id"]) is not None:
                store.set_op_timing(body["op_id"], timing_from_json(body["timing"]), keeper.fresh())
        elif record.kind == "step":
            step = step_from_json(body)
            latest = journal.setdefault(step.op_id, store.steps(step.op_id)).get(step.target_id)
            if latest is not None and (latest == step or latest.at > step.at):
                report.skipped += 1
                continue
            store.record_step(step, keeper.fresh())
            journal[step.op_id][step.target_id] = step
            report.uploaded["journal"] += 1
        elif record.kind == "ledger":
            entries = [ledger_from_json(e) for e in body["entries"]]
            # A newer intent set in the shared store meanwhile wins over the spooled one.
            newer = [
                e for e in entries if e.target_id not in ledger or ledger[e.target_id].at < e.at
            ]
            report.skipped += len(entries) - len(newer)
            if newer:
                store.set_ledger(newer, keeper.fresh())
                ledger.update({e.target_id: e for e in newer})
                report.uploaded["ledger"] += len(newer)
        elif record.kind == "approval":
            store.add_approval(body["op_id"], body["actor"])
        elif record.kind == "audit":
            if record.n in uploaded_before:
                report.skipped += 1
                continue
            event = event_from_json(body)
            origin = {"spool": report.spool, "record": record.n, "host": report.host}
            origin |= {"at": event.at, "seq": event.seq, "hash": event.hash}
            store.append_audit(
                event.actor, event.kind, event.op_id, event.payload | {MARKER: origin}
            )
            report.uploaded["audit"] += 1
    if not synced_before:
        store.append_audit(
            actor,
            "state.synced",
            None,
            {
                "spool": report.spool,
                "host": report.host,
                "records": len(records),
                "spool_head": records[-1].hash,
                "uploaded": dict(report.uploaded),
                "reason": header.get("reason"),
            },
        )
    return report
