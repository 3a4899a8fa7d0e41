"""The shared state table: its keys, its items, and how to create it.

One table holds everything (``pk`` partition key, ``sk`` sort key, both strings):

    pk            sk                          item
    LOCK          apply                       the lease: owner, op_id, token, acquired_at,
                                              expires_at, held
    LEASE         <token, 12 digits>          who got each token, for forensics (TTL: 30 days)
    OP#<op id>    OP                          an operation; gsi1pk=OPS, gsi1sk=<created_at>#<id>
    OP#<op id>    STEP#<token>#<stamp>        a journal record; sorts by fencing token, then
                                              by the writer's monotonic clock
    OP#<op id>    APPROVAL#<actor>            one approval of a restore
    LEDGER        <target id>                 the desired posture of one target
    AUDIT         EVENT#<seq, 12 digits>      one hash-chained audit event
    AUDIT         HEAD                        (seq, hash) of the newest event

The index ``ops-by-time`` (gsi1pk, gsi1sk) lists ops newest first. TTL is on
``expires_epoch``, which only LEASE items carry: the LOCK item must never expire,
or its token would start again from 1 and fencing would be void.

No boto3 here: the client comes from ``killswitch.state.dynamodb``.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from killswitch.domain import (
    AuditEvent,
    Intent,
    LedgerEntry,
    Operation,
    Step,
    utcnow,
)
from killswitch.errors import LockInfo
from killswitch.state import codec
from killswitch.state.base import Approval, JournalEntry, StateDump

Item = dict[str, Any]
"""An item or key in DynamoDB's typed JSON: ``{"pk": {"S": "LOCK"}, "token": {"N": "7"}}``."""

LOCK_KEY: Item = {"pk": {"S": "LOCK"}, "sk": {"S": "apply"}}
HEAD_KEY: Item = {"pk": {"S": "AUDIT"}, "sk": {"S": "HEAD"}}
OPS_INDEX = "ops-by-time"
OPEN_OPS = "OPENOPS"  # the partition listing unfinished ops
TTL_ATTRIBUTE = "expires_epoch"
KEYS = [("pk", "HASH"), ("sk", "RANGE")]
INDEX_KEYS = [("gsi1pk", "HASH"), ("gsi1sk", "RANGE")]


# -- typed attributes -----------------------------------------------------------


def attrs(values: Mapping[str, str | int | bool | bytes | None]) -> Item:
    """Plain values → typed attributes (str S, int N, bool BOOL, bytes B, None NULL)."""
    typed: Item = {}
    for name, value in values.items():
        if value is None:
            typed[name] = {"NULL": True}
        elif isinstance(value, bool):
            typed[name] = {"BOOL": value}
        elif isinstance(value, int):
            typed[name] = {"N": str(value)}
        elif isinstance(value, bytes):
            typed[name] = {"B": value}
        else:
            typed[name] = {"S": value}
    return typed


def plain(item: Item, name: str) -> Any:
    """One typed attribute as a plain value (a missing one is None)."""
    value = item.get(name) or {"NULL": True}
    if "S" in value:
        return str(value["S"])
    if "N" in value:
        return int(value["N"])
    if "BOOL" in value:
        return bool(value["BOOL"])
    if "B" in value:
        return value["B"]
    return None


def text(item: Item, name: str) -> str:
    return str(item[name]["S"])


def opt_str(item: Item | None, name: str) -> str | None:
    value = (item or {}).get(name, {})
    return str(value["S"]) if "S" in value else None


def num(item: Item | None, name: str) -> int:
    value = (item or {}).get(name, {})
    return int(value["N"]) if "N" in value else 0


# -- items ------------------------------------------------------------------------

BIG_TARGET_LIST = 100_000  # bytes; larger lists are gzipped to stay far below 400 KB


def op_item(op: Operation) -> Item:
    row = codec.op_row(op)
    targets = row.pop("target_ids")
    item = attrs(row | {"pk": f"OP#{op.id}", "sk": "OP", "gsi1pk": "OPS"})
    item["gsi1sk"] = {"S": f"{op.created_at}#{op.id}"}
    if len(targets) > BIG_TARGET_LIST:
        item["target_ids_gz"] = {"B": gzip.compress(targets.encode())}
    else:
        item["target_ids"] = {"S": targets}
    return item


def to_op(item: Item) -> Operation:
    if "target_ids_gz" in item:
        targets = gzip.decompress(item["target_ids_gz"]["B"]).decode()
    else:
        targets = text(item, "target_ids")
    return codec.op_from_row(
        {k: plain(item, k) for k in codec.OP_COLUMNS} | {"target_ids": targets}
    )


def step_item(step: Step, token: int, stamp: int) -> Item:
    row = codec.step_row(step if step.at else replace(step, at=utcnow()))
    del row["op_id"]  # in the key
    return attrs(
        row | {"pk": f"OP#{step.op_id}", "sk": f"STEP#{token:012d}#{stamp:020d}", "token": token}
    )


def to_step(item: Item) -> Step:
    fields = ("target_id", "result", "error", "at", "observed", "desired")
    return codec.step_from_row(
        {k: plain(item, k) for k in fields} | {"op_id": text(item, "pk")[3:]}
    )


def ledger_item(entry: LedgerEntry, token: int) -> Item:
    row = codec.ledger_row(entry)
    return attrs({"pk": "LEDGER", "sk": row.pop("target_id")} | row | {"token": token})


def to_ledger(item: Item) -> LedgerEntry:
    fields = ("desired", "op_id", "at")
    return codec.ledger_from_row(
        {k: plain(item, k) for k in fields} | {"target_id": text(item, "sk")}
    )


def approval_item(approval: Approval, stamp: int) -> Item:
    return attrs(
        {
            "pk": f"OP#{approval.op_id}",
            "sk": f"APPROVAL#{approval.actor}",
            "actor": approval.actor,
            "at": approval.at,
            "stamp": stamp,
        }
    )


def event_item(event: AuditEvent) -> Item:
    return attrs({"pk": "AUDIT", "sk": f"EVENT#{event.seq:012d}"} | codec.event_row(event))


def to_event(item: Item) -> AuditEvent:
    fields = ("seq", "at", "actor", "kind", "op_id", "payload", "prev_hash", "hash")
    return codec.event_from_row({k: plain(item, k) for k in fields})


def lock_info(item: Item) -> LockInfo:
    return LockInfo(
        owner=opt_str(item, "owner") or "?",
        op_id=opt_str(item, "op_id"),
        acquired_at=opt_str(item, "acquired_at") or "?",
        expires_at=opt_str(item, "expires_at") or "?",
        token=num(item, "token"),
        intent=Intent(opt_str(item, "intent") or Intent.OTHER.value),
        beat=num(item, "beat"),
    )


def open_marker(op_id: str) -> Item:
    """One item per unfinished op in one partition: a strongly consistent list of them
    (the ops index is only eventually consistent)."""
    return attrs({"pk": OPEN_OPS, "sk": op_id})


def op_key(op_id: str) -> Item:
    return {"pk": {"S": f"OP#{op_id}"}, "sk": {"S": "OP"}}


def action_key(action: Item) -> tuple[str, str]:
    """The key a TransactWriteItems action writes (one transaction may name a key once)."""
    body = next(iter(action.values()))
    key = body.get("Key") or body["Item"]
    return text(key, "pk"), text(key, "sk")


# -- a whole table as a StateDump, and back -------------------------------------------


def read_dump(items: Iterable[Item], head: tuple[int, str]) -> StateDump:
    """Every item of a scan, sorted into a StateDump; events past ``head`` are left out."""
    ops, journal, ledger, audit = [], [], [], []
    approvals: list[tuple[int, Approval]] = []
    lock_token = 0
    for item in sorted(items, key=lambda i: (text(i, "pk"), text(i, "sk"))):
        pk, sk = text(item, "pk"), text(item, "sk")
        if pk == "LOCK":
            lock_token = num(item, "token")
        elif pk.startswith("OP#") and sk == "OP":
            ops.append(to_op(item))
        elif pk.startswith("OP#") and sk.startswith("STEP#"):
            journal.append(JournalEntry(to_step(item), num(item, "token")))
        elif pk.startswith("OP#") and sk.startswith("APPROVAL#"):
            approval = Approval(pk[3:], text(item, "actor"), text(item, "at"))
            approvals.append((num(item, "stamp"), approval))
        elif pk == "LEDGER":
            ledger.append(to_ledger(item))
        elif pk == "AUDIT" and sk.startswith("EVENT#") and num(item, "seq") <= head[0]:
            audit.append(to_event(item))
    return StateDump(
        ops=tuple(sorted(ops, key=lambda o: (o.created_at, o.id))),
        journal=tuple(journal),
        ledger=tuple(ledger),
        approvals=tuple(a for _, a in sorted(approvals, key=lambda p: (p[1].op_id, p[0]))),
        audit=tuple(audit),
        audit_head=head,
        lock_token=lock_token,
    )


def dump_items(dump: StateDump) -> list[Item]:
    """The items that hold ``dump`` (all but the LOCK and the audit HEAD)."""
    items = [op_item(op) for op in dump.ops]
    items += [open_marker(op.id) for op in dump.ops if op.status.unfinished]
    # Journal order as stamps 1, 2, 3 …: below any live writer's clock within a token.
    items += [step_item(e.step, e.token, n) for n, e in enumerate(dump.journal, 1)]
    items += [ledger_item(e, 0) for e in dump.ledger]
    items += [approval_item(a, n) for n, a in enumerate(dump.approvals, 1)]
    items += [event_item(e) for e in dump.audit]
    return items


# -- the table itself ---------------------------------------------------------------


def _definitions() -> list[dict[str, str]]:
    return [{"AttributeName": n, "AttributeType": "S"} for n, _ in KEYS + INDEX_KEYS]


def _schema(keys: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"AttributeName": n, "KeyType": k} for n, k in keys]


def table_definition(table: str) -> dict[str, Any]:
    """The CreateTable request: on-demand, one index, deletion protection on."""
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": _definitions(),
        "KeySchema": _schema(KEYS),
        "GlobalSecondaryIndexes": [
            {
                "IndexName": OPS_INDEX,
                "KeySchema": _schema(INDEX_KEYS),
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "DeletionProtectionEnabled": True,
        "Tags": [{"Key": "app", "Value": "killswitch"}],
    }


def cloudformation(table: str) -> dict[str, Any]:
    """The same table as a CloudFormation resource, for teams that manage tables as code."""
    spec = table_definition(table)
    properties: dict[str, Any] = {
        key: spec[key]
        for key in (
            "TableName",
            "BillingMode",
            "AttributeDefinitions",
            "KeySchema",
            "GlobalSecondaryIndexes",
            "DeletionProtectionEnabled",
            "Tags",
        )
    }
    properties["TimeToLiveSpecification"] = {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    properties["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
    properties["SSESpecification"] = {"SSEEnabled": True}
    return {
        "Resources": {
            "KillswitchStateTable": {
                "Type": "AWS::DynamoDB::Table",
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
                "Properties": properties,
            }
        }
    }


Call = Callable[..., dict[str, Any]]


def create_table(call: Call, table: str, *, wait_seconds: float = 300) -> list[str]:
    """Create ``table`` unless it exists (then check its keys); return what happened."""
    found = call("describe_table", missing_ok=True).get("Table")
    if found is not None:
        keys = {(k["AttributeName"], k["KeyType"]) for k in found["KeySchema"]}
        indexes = {i["IndexName"] for i in found.get("GlobalSecondaryIndexes", [])}
        if keys != set(KEYS) or OPS_INDEX not in indexes:
            raise ValueError(
                f"table {table!r} exists but is not a killswitch state table "
                f"(keys {sorted(keys)}, indexes {sorted(indexes)})"
            )
        return [f"table {table} exists ({found['TableStatus'].lower()}); nothing to do"]
    call("create_table", **table_definition(table))
    deadline = time.monotonic() + wait_seconds
    while call("describe_table")["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {table} not active after {wait_seconds:.0f}s")
        time.sleep(0.5)
    done = [f"created table {table} (on-demand billing, deletion protection on)"]
    spec = {"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    call("update_time_to_live", TimeToLiveSpecification=spec)
    done.append(f"time to live on {TTL_ATTRIBUTE} (lease history only)")
    try:
        call(
            "update_continuous_backups",
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
        done.append("point-in-time recovery on")
    except Exception as exc:  # DynamoDB Local has no backups
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or str(exc)
        done.append(f"point-in-time recovery NOT enabled ({code}); enable it on the real table")
    return done
