"""Shared state on DynamoDB: every operator, runbook runner and cron job, one table.

The table's layout is in ``dynamodb_table``. The invariants live in conditions:
- the lease is one conditional UpdateItem (free, released or expired → ours,
  ``ADD token 1``); renew and release are conditional on our token;
- journal, ledger and op-status writes are transactions whose first action is a
  ConditionCheck ``token = <our token>`` on the LOCK item, so a holder fenced out
  by a takeover or ``lock break`` has every write refused (LeaseLost);
- an audit event is put (``attribute_not_exists``) in the same transaction as the
  HEAD update conditioned on the seq we read: concurrent writers retry, and the
  chain stays linear.

This is the one core module that imports boto3 and botocore.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from killswitch import aws_errors
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
from killswitch.state import DynamoDbUrl, codec
from killswitch.state.base import Approval, Lease, StateDump, StoreUnreachable
from killswitch.state.dynamodb_table import (
    HEAD_KEY,
    LOCK_KEY,
    OPEN_OPS,
    OPS_INDEX,
    TTL_ATTRIBUTE,
    Item,
    action_key,
    approval_item,
    attrs,
    create_table,
    dump_items,
    event_item,
    ledger_item,
    lock_info,
    num,
    op_item,
    op_key,
    open_marker,
    opt_str,
    read_dump,
    step_item,
    text,
    to_event,
    to_ledger,
    to_op,
    to_step,
)

log = structlog.get_logger("killswitch.state.dynamodb")

LEASE_HISTORY_DAYS = 30
MAX_TRANSACTION = 100  # DynamoDB's limit on actions in one TransactWriteItems
# Errors that mean "the store is not there for us right now", not "our request was wrong".
UNREACHABLE_CODES = aws_errors.CREDENTIALS | aws_errors.THROTTLING | aws_errors.SERVER


Values = dict[str, str | int | bool | None]


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class DynamoDbStore:
    """StateStore on one DynamoDB table, shared by every machine that acts."""

    def __init__(self, url: DynamoDbUrl, *, clock: Clock = SYSTEM) -> None:
        self.url = url
        self.clock = clock  # leases expire on it: tests move it instead of sleeping
        self.table = url.table
        session = boto3.session.Session(region_name=url.region)

        def client(read_timeout: float, attempts: int) -> Any:
            config = Config(
                connect_timeout=url.connect_timeout,
                read_timeout=read_timeout,
                retries={"mode": "standard", "total_max_attempts": attempts},
                max_pool_connections=64,
                tcp_keepalive=True,
            )
            return session.client("dynamodb", endpoint_url=url.endpoint_url, config=config)

        self._client = client(10, 5)
        # One quick try for the reachability probe: break-glass must not wait on retries.
        self._probe_client = client(url.connect_timeout, 1)
        self._stamp = _MonotonicStamp()
        self._writer = _FencedWriter(self)
        self._audit_mutex = threading.Lock()

    @classmethod
    def connect(cls, url: DynamoDbUrl, *, clock: Clock = SYSTEM) -> DynamoDbStore:
        """Open the table and check it answers within the connect timeout."""
        store = cls(url, clock=clock)
        try:
            store._call("get_item", Key=LOCK_KEY, ConsistentRead=True, _client=store._probe_client)
        except StoreUnreachable as exc:
            raise StoreUnreachable(
                f"{exc}; nothing was changed. revoke and restrict still run without it "
                "(break-glass, local spool); other commands need it"
            ) from None
        return store

    def create_table(self) -> list[str]:
        """Create the table if it is missing; return what was done, as sentences."""
        return create_table(self._call, self.table)

    # -- calls ---------------------------------------------------------------
    def _call(
        self, operation: str, *, _client: Any = None, missing_ok: bool = False, **params: Any
    ) -> dict[str, Any]:
        """One API call, errors classified once: unreachable, missing table, or ClientError."""
        if operation not in ("transact_write_items", "batch_write_item"):
            params.setdefault("TableName", self.table)
        try:
            reply: dict[str, Any] = getattr(_client or self._client, operation)(**params)
            return reply
        except ParamValidationError:
            raise
        except (BotoCoreError, ClientError) as exc:
            if missing_ok and _code_of(exc) == "ResourceNotFoundException":
                return {}
            raise self._classified(exc) from None

    def _classified(self, exc: BotoCoreError | ClientError) -> Exception:
        """What a failed call means here: the store is unreachable (revoke falls back to
        the spool), the table is missing (a usage error), or the request was wrong."""
        if isinstance(exc, BotoCoreError):
            return StoreUnreachable(self._unreachable(str(exc)))
        code = _error_code(exc)
        if code == "ResourceNotFoundException":
            where = f" at {self.url.endpoint_url}" if self.url.endpoint_url else ""
            return UsageError(
                f"state table {self.table!r} does not exist in {self.url.region}{where}; "
                f"create it with `killswitch state init` (state: {self.url})"
            )
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in UNREACHABLE_CODES or status >= 500:
            return StoreUnreachable(self._unreachable(f"{code}: {exc}"))
        return exc

    def _unreachable(self, reason: str) -> str:
        return f"cannot reach the state store {self.url} ({reason})"

    def _pages(self, operation: str, **params: Any) -> Iterator[Item]:
        """Every item of a query or scan, page after page (boto3's paginator)."""
        pages = self._client.get_paginator(operation).paginate(TableName=self.table, **params)
        try:
            for page in pages:
                yield from page.get("Items", [])
        except (BotoCoreError, ClientError) as exc:
            raise self._classified(exc) from None

    def _query(self, pk: str, prefix: str = "") -> Iterator[Item]:
        """Every item of partition ``pk`` (whose sk starts with ``prefix``), in sk order."""
        condition, values = "pk = :pk", {":pk": {"S": pk}}
        if prefix:
            condition += " AND begins_with(sk, :prefix)"
            values[":prefix"] = {"S": prefix}
        return self._pages(
            "query",
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
        )

    def _update(
        self, key: Item, update: str, condition: str, values: Values, returns: str = "NONE"
    ) -> tuple[bool, Item]:
        """A conditional UpdateItem: (True, attributes) or (False, the item as it was)."""
        used = update + condition
        names = {n: n[1:] for n in ("#token", "#owner", "#status") if n in used}
        params: dict[str, Any] = {"Key": key, "UpdateExpression": update}
        params |= {"ConditionExpression": condition, "ExpressionAttributeValues": attrs(values)}
        params |= {"ReturnValues": returns, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        if names:
            params["ExpressionAttributeNames"] = names
        try:
            reply = _retry_conflicts(lambda: self._call("update_item", **params))
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            response: Any = exc.response
            old: Item = response.get("Item") or {}
            return False, old
        return True, reply.get("Attributes", {})

    def _put_new(self, item: Item) -> None:
        """Put ``item`` unless its key exists (the existing item is left as it is)."""
        try:
            self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise

    # -- lock -------------------------------------------------------------
    def acquire(
        self, owner: str, op_id: str | None, ttl_seconds: float, intent: Intent = Intent.OTHER
    ) -> Lease:
        return self._hold(
            owner,
            op_id,
            ttl_seconds,
            intent,
            "attribute_not_exists(pk) OR held = :false OR expires_at < :now",
            {":false": False},
        )

    def take_over(
        self, owner: str, op_id: str | None, ttl_seconds: float, intent: Intent, token: int
    ) -> Lease:
        return self._hold(owner, op_id, ttl_seconds, intent, "#token = :token", {":token": token})

    def _hold(
        self,
        owner: str,
        op_id: str | None,
        ttl_seconds: float,
        intent: Intent,
        condition: str,
        values: Values,
    ) -> Lease:
        """One conditional update makes us the holder; the one before, if it never
        released (taken over, expired or broken), is fenced."""
        now, expires = iso(self.clock.now()), self._later(ttl_seconds)
        ok, old = self._update(
            LOCK_KEY,
            "SET #owner = :owner, op_id = :op, acquired_at = :now, expires_at = :exp, "
            "held = :true, intent = :intent, beat = :zero, fenced = :no ADD #token :one",
            condition,
            values
            | {":owner": owner, ":op": op_id, ":now": now, ":exp": expires, ":true": True}
            | {":intent": intent.value, ":zero": 0, ":no": False, ":one": 1},
            returns="ALL_OLD",
        )
        if not ok:
            current = old or self._lock_item()
            if current.get("held", {}).get("BOOL"):
                raise LockHeld(lock_info(current))
            raise LockHeld(
                LockInfo("nobody (it changed hands)", None, now, now, num(current, "token"))
            )
        token = num(old, "token") + 1
        was_held = old.get("held", {}).get("BOOL") or old.get("fenced", {}).get("BOOL")
        self._remember_lease(token, owner, op_id, now)
        return Lease(owner, op_id, token, expires, intent, lock_info(old) if was_held else None)

    def _remember_lease(self, token: int, owner: str, op_id: str | None, now: str) -> None:
        """Who got each token, kept a while for forensics (TTL); best effort."""
        purge = int(time.time()) + LEASE_HISTORY_DAYS * 86400
        item = attrs({"pk": "LEASE", "sk": f"{token:012d}", "owner": owner, "op_id": op_id})
        item |= attrs({"acquired_at": now, TTL_ATTRIBUTE: purge})
        try:
            self._call("put_item", Item=item)
        except (ClientError, StoreUnreachable) as exc:
            log.warning("lease history not written", token=token, error=str(exc))

    def _later(self, seconds: float) -> str:
        return iso(self.clock.now() + timedelta(seconds=seconds))

    def renew(self, lease: Lease, ttl_seconds: float) -> Lease:
        renewed = replace(lease, expires_at=self._later(ttl_seconds))
        ok, lock = self._update(
            LOCK_KEY,
            "SET expires_at = :exp ADD beat :one",
            "#token = :token AND held = :true",
            {":exp": renewed.expires_at, ":token": lease.token, ":true": True, ":one": 1},
        )
        if not ok:
            raise _lost(lease, lock)
        return renewed

    def check(self, lease: Lease) -> None:
        lock = self._lock_item()
        if num(lock, "token") != lease.token:
            raise _lost(lease, lock)

    def release(self, lease: Lease) -> None:
        # A failed condition means a newer holder has it: nothing of ours to release.
        self._update(
            LOCK_KEY,
            "SET held = :false, fenced = :false",
            "#token = :token",
            _released(lease.token),
        )

    def lock_status(self) -> LockInfo | None:
        item = self._lock_item()
        return lock_info(item) if item.get("held", {}).get("BOOL") else None

    def break_lock(self, token: int) -> LockInfo | None:
        ok, old = self._update(
            LOCK_KEY,
            # The next token fences the broken holder; its writes in flight may still land,
            # so the next holder is told (fenced).
            "SET held = :false, fenced = :true ADD #token :one",
            "held = :true AND #token = :token",
            _released(token) | {":true": True, ":one": 1},
            returns="ALL_OLD",
        )
        return lock_info(old) if ok else None

    def _lock_item(self) -> Item:
        item: Item = self._call("get_item", Key=LOCK_KEY, ConsistentRead=True).get("Item", {})
        return item

    def _fence(self, token: int) -> Item:
        """The ConditionCheck that opens every fenced transaction."""
        check = {"TableName": self.table, "Key": LOCK_KEY}
        check |= {
            "ConditionExpression": "#token = :token",
            "ExpressionAttributeNames": {"#token": "token"},
            "ExpressionAttributeValues": attrs({":token": token}),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        return {"ConditionCheck": check}

    # -- operations and journal --------------------------------------------
    def create_op(self, op: Operation) -> None:
        if op.status.unfinished:  # listed first: an op is never unfinished yet unlisted
            self._call("put_item", Item=open_marker(op.id))
        self._put_new(op_item(op))

    def get_op(self, op_id: str) -> Operation | None:
        item = self._call("get_item", Key=op_key(op_id), ConsistentRead=True).get("Item")
        return to_op(item) if item else None

    def list_ops(self, limit: int = 50) -> list[Operation]:
        found: list[Operation] = []
        pages = self._pages(
            "query",
            IndexName=OPS_INDEX,
            KeyConditionExpression="gsi1pk = :ops",
            ExpressionAttributeValues={":ops": {"S": "OPS"}},
            ScanIndexForward=False,
            Limit=min(limit, 500),
        )
        for item in pages:
            found.append(to_op(item))
            if len(found) >= limit:
                break
        return found

    def open_ops(self) -> list[Operation]:
        found = [self.get_op(text(item, "sk")) for item in self._query(OPEN_OPS)]
        return [op for op in found if op is not None and op.status.unfinished]

    def set_op_status(self, op_id: str, status: OpStatus, lease: Lease | None) -> None:
        update, condition = "SET #status = :status", "attribute_exists(pk)"  # no half-made op
        if lease is None:
            self._update(op_key(op_id), update, condition, {":status": status.value})
        else:
            action = {"TableName": self.table, "Key": op_key(op_id), "UpdateExpression": update}
            action |= {
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": attrs({":status": status.value}),
            }
            self._writer.solo(lease, [self._fence(lease.token), {"Update": action}])
        marker = open_marker(op_id)
        if status.unfinished:
            self._call("put_item", Item=marker)
        else:  # best effort: open_ops reads each listed op's own status anyway
            self._call("delete_item", Key={"pk": marker["pk"], "sk": marker["sk"]})

    def set_op_timing(self, op_id: str, timing: OpTiming, lease: Lease) -> None:
        action = {"TableName": self.table, "Key": op_key(op_id)}
        action |= {
            "UpdateExpression": "SET #timing = :timing",
            "ConditionExpression": "attribute_exists(pk)",  # no half-made op
            "ExpressionAttributeNames": {"#timing": "timing"},
            "ExpressionAttributeValues": attrs({":timing": codec.timing_row(timing)}),
        }
        self._writer.solo(lease, [self._fence(lease.token), {"Update": action}])

    def record_step(self, step: Step, lease: Lease) -> None:
        item = step_item(step, lease.token, self._stamp.next())
        self._writer.submit(lease, [{"Put": {"TableName": self.table, "Item": item}}])

    def steps(self, op_id: str) -> dict[str, Step]:
        return {s.target_id: s for s in map(to_step, self._query(f"OP#{op_id}", "STEP#"))}

    # -- ledger --------------------------------------------------------------
    def set_ledger(self, entries: Sequence[LedgerEntry], lease: Lease) -> None:
        puts = [
            {"Put": {"TableName": self.table, "Item": ledger_item(e, lease.token)}} for e in entries
        ]
        for start in range(0, len(puts), MAX_TRANSACTION - 1):
            self._writer.submit(lease, puts[start : start + MAX_TRANSACTION - 1])

    def ledger(self) -> dict[str, LedgerEntry]:
        return {e.target_id: e for e in map(to_ledger, self._query("LEDGER"))}

    # -- approvals -------------------------------------------------------------
    def add_approval(self, op_id: str, actor: str) -> list[str]:
        self._put_new(approval_item(Approval(op_id, actor, utcnow()), self._stamp.next()))
        return self.approvals(op_id)

    def approvals(self, op_id: str) -> list[str]:
        items = sorted(self._query(f"OP#{op_id}", "APPROVAL#"), key=lambda i: num(i, "stamp"))
        return [text(i, "actor") for i in items]

    # -- audit -----------------------------------------------------------------
    def append_audit(
        self, actor: str, kind: str, op_id: str | None, payload: dict[str, object]
    ) -> AuditEvent:
        with self._audit_mutex:  # this process's writers queue here, not in DynamoDB
            try:
                event: AuditEvent = self._contended(60, 10_000, _head_moved)(
                    self._append, actor, kind, op_id, payload
                )
                return event
            except ClientError as exc:
                if not _head_moved(exc):
                    raise
                reason = "the audit head stayed contended for 60s"
                raise StoreUnreachable(self._unreachable(reason)) from None

    def _append(
        self, actor: str, kind: str, op_id: str | None, payload: dict[str, object]
    ) -> AuditEvent:
        """One try: the event after the head as read now, put with the head's move."""
        seq, prev = self.audit_head()
        at = utcnow()
        digest = event_hash(prev, seq + 1, at, actor, kind, op_id, payload)
        event = AuditEvent(seq + 1, at, actor, kind, op_id, payload, prev, digest)
        move_head = {"TableName": self.table, "Key": HEAD_KEY}
        move_head |= {
            "UpdateExpression": "SET seq = :new, #hash = :hash",
            "ConditionExpression": "attribute_not_exists(pk) OR seq = :old",
            "ExpressionAttributeNames": {"#hash": "hash"},
            "ExpressionAttributeValues": attrs(
                {":new": event.seq, ":hash": event.hash, ":old": seq}
            ),
        }
        put = {"TableName": self.table, "Item": event_item(event)}
        put["ConditionExpression"] = "attribute_not_exists(pk)"
        self._call(
            "transact_write_items",
            TransactItems=[{"Update": move_head}, {"Put": put}],
            ClientRequestToken=str(uuid.uuid4()),
        )
        return event

    def audit_events(self) -> list[AuditEvent]:
        return [to_event(i) for i in self._query("AUDIT", "EVENT#")]

    def audit_head(self) -> tuple[int, str]:
        item = self._call("get_item", Key=HEAD_KEY, ConsistentRead=True).get("Item")
        return (num(item, "seq"), text(item, "hash")) if item else (0, GENESIS)

    # -- moving state between stores ----------------------------------------
    def export_state(self) -> StateDump:
        # The head first: every event up to it is committed, so the scan sees them all.
        head = self.audit_head()
        return read_dump(self._pages("scan", ConsistentRead=True), head)

    def import_state(self, dump: StateDump) -> None:
        for item in self._pages("scan", ProjectionExpression="pk", ConsistentRead=True):
            if text(item, "pk") not in ("LOCK", "LEASE"):
                raise UsageError(f"{self.url} already holds state; import needs an empty table")
        items = dump_items(dump)
        for start in range(0, len(items), 25):
            self._batch_put(items[start : start + 25])
        seq, digest = dump.audit_head
        head = attrs({"pk": "AUDIT", "sk": "HEAD", "seq": seq, "hash": digest})
        self._call("put_item", Item=head)
        # Tokens only grow, and no lease of the source (not even the one held while it was
        # copied) may write here: the copy continues above every token given out.
        token = max(dump.lock_token + 1, num(self._lock_item(), "token"))
        self._update(
            LOCK_KEY,
            "SET #token = :token, held = if_not_exists(held, :false)",
            "attribute_not_exists(pk) OR #token <= :token",
            _released(token),
        )

    def _batch_put(self, items: list[Item]) -> None:
        left: list[Item] = [{"PutRequest": {"Item": i}} for i in items]

        def put_what_is_left() -> None:
            nonlocal left
            reply = self._call("batch_write_item", RequestItems={self.table: left})
            left = reply.get("UnprocessedItems", {}).get(self.table, [])
            if left:
                raise _Unprocessed

        try:
            self._contended(60, 50, lambda exc: isinstance(exc, _Unprocessed))(put_what_is_left)
        except _Unprocessed:
            raise StoreUnreachable(self._unreachable("batch writes stayed unprocessed")) from None

    @staticmethod
    def _contended(seconds: float, attempts: int, when: Callable[[BaseException], bool]) -> Any:
        """Retrying a write that lost a race with another writer of ours: full jitter,
        5 ms growing to at most 250 ms, bounded in time and attempts (tenacity)."""
        return Retrying(
            retry=retry_if_exception(when),
            stop=stop_after_delay(seconds) | stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.005, max=0.25),
            reraise=True,
        )

    def close(self) -> None:
        self._client.close()
        self._probe_client.close()


# -- fenced group commit --------------------------------------------------------


@dataclass
class _Pending:
    lease: Lease
    actions: list[Item]
    done: bool = False
    error: BaseException | None = None
    keys: set[tuple[str, str]] = field(default_factory=set)


class _FencedWriter:
    """Fenced writes of one process, committed a batch at a time.

    Every fenced transaction names the LOCK item, so two of them in flight at once
    conflict in DynamoDB. Here one thread commits at a time, taking everything other
    threads queued meanwhile (up to the transaction limit): 32 parallel steps become
    a few transactions, not 32 that cancel each other."""

    def __init__(self, store: DynamoDbStore) -> None:
        self.store = store
        self._commit = threading.Lock()
        self._queue_mutex = threading.Lock()
        self._queue: list[_Pending] = []

    def submit(self, lease: Lease, actions: list[Item]) -> None:
        pending = _Pending(lease, actions)
        pending.keys = {action_key(a) for a in actions}
        with self._queue_mutex:
            self._queue.append(pending)
        while not pending.done:
            with self._commit:
                if not pending.done:
                    self._commit_batch(self._take())
        if pending.error is not None:
            raise pending.error

    def solo(self, lease: Lease, transaction: list[Item]) -> None:
        """One transaction of its own, still never beside another of ours."""
        with self._commit:
            self._transact(lease, transaction)

    def _take(self) -> list[_Pending]:
        """The queue's head and what can share its transaction (same token, new keys)."""
        with self._queue_mutex:
            batch = [self._queue.pop(0)]
            size, keys = len(batch[0].actions), set(batch[0].keys)
            while self._queue:
                nxt = self._queue[0]
                fits = size + len(nxt.actions) <= MAX_TRANSACTION - 1
                if nxt.lease.token != batch[0].lease.token or not fits or keys & nxt.keys:
                    break
                batch.append(self._queue.pop(0))
                size += len(nxt.actions)
                keys |= nxt.keys
        return batch

    def _commit_batch(self, batch: list[_Pending]) -> None:
        lease = batch[0].lease
        actions = [a for p in batch for a in p.actions]
        try:
            self._transact(lease, [self.store._fence(lease.token), *actions])
        except BaseException as exc:
            for p in batch:
                p.error = exc  # each waiting thread raises it (LeaseLost, StoreUnreachable …)
            if not isinstance(exc, Exception):
                raise
        finally:
            for p in batch:
                p.done = True

    def _transact(self, lease: Lease, transaction: list[Item]) -> None:
        self.store._contended(30, 1_000, _conflict)(self._transact_once, lease, transaction)

    def _transact_once(self, lease: Lease, transaction: list[Item]) -> None:
        # Each try is a new request: a retried send of the same try is applied once.
        request = str(uuid.uuid4())
        try:
            self.store._call(
                "transact_write_items", TransactItems=transaction, ClientRequestToken=request
            )
        except ClientError as exc:
            response: Any = exc.response
            reasons: list[Item] = response.get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                raise _lost(lease, reasons[0].get("Item")) from None
            if "ConditionalCheckFailed" in {r.get("Code") for r in reasons[1:]}:
                return  # the op item is missing: like an UPDATE that matched no row
            raise


# -- helpers ------------------------------------------------------------------------


class _MonotonicStamp:
    """Nanoseconds that never repeat or go back within this process."""

    def __init__(self) -> None:
        self._last = 0
        self._mutex = threading.Lock()

    def next(self) -> int:
        with self._mutex:
            self._last = max(self._last + 1, time.time_ns())
            return self._last


def _retry_conflicts(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Retry a single-item write that collided with one of our transactions."""
    single = lambda exc: _code_of(exc) == "TransactionConflictException"  # noqa: E731
    result: dict[str, Any] = DynamoDbStore._contended(30, 100, single)(call)
    return result


class _Unprocessed(Exception):
    """A batch write left items unprocessed (throttled): put them again."""


def _code_of(exc: BaseException) -> str:
    return _error_code(exc) if isinstance(exc, ClientError) else ""


def _reasons(exc: BaseException) -> set[str]:
    if not isinstance(exc, ClientError):
        return set()
    response: Any = exc.response
    return {str(r.get("Code")) for r in response.get("CancellationReasons") or []}


def _head_moved(exc: BaseException) -> bool:
    """Another writer moved the audit head first (or is moving it): read it again."""
    return bool(_reasons(exc) & {"ConditionalCheckFailed", "TransactionConflict"})


def _conflict(exc: BaseException) -> bool:
    """A fenced transaction collided with another of ours (never a lost lease)."""
    return "TransactionConflict" in _reasons(exc) or _code_of(exc) in (
        "TransactionConflictException",
        "TransactionInProgressException",
    )


def _lost(lease: Lease, lock: Item | None) -> LeaseLost:
    holder = (
        f"now token {num(lock, 'token')} of {opt_str(lock, 'owner') or '?'}"
        f"{'' if lock.get('held', {}).get('BOOL') else ', released'}"
        if lock
        else "no lock item"
    )
    return LeaseLost(
        f"lease {lease.token} of {lease.owner} was taken over or broken ({holder}); write refused"
    )


def _released(token: int) -> Values:
    return {":false": False, ":token": token}
