"""One StateStore contract, two stores: the embedded SQLite file and DynamoDB Local.

Every test runs against both. A second ``open()`` of the same URL plays another
process (another operator's machine) looking at the same state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from killswitch import audit
from killswitch.clock import SYSTEM, Clock
from killswitch.domain import (
    Access,
    Action,
    LedgerEntry,
    Operation,
    OpStatus,
    OpTiming,
    Posture,
    Step,
    StepResult,
    utcnow,
)
from killswitch.errors import LeaseLost, LockHeld
from killswitch.state import StateStore, open_store, parse_dynamodb_url
from killswitch.state.base import Lease
from killswitch.state.migrate import differences
from tests.support.clocks import AheadClock
from tests.support.dynamodb_local import DynamoDbLocal, dynamodb_local_fixture  # noqa: F401

REVOKED = Access(Posture.REVOKED)
TARGETS = [f"aws:aws-prod/{r}/ssm-flag/mythos-5" for r in ("eu-west-1", "eu-central-1")]


def new_table(server: DynamoDbLocal) -> str:
    """A fresh table on DynamoDB Local, made the way `killswitch state init` makes it."""
    from killswitch.state.dynamodb import DynamoDbStore

    url = server.state_url()
    store = DynamoDbStore(parse_dynamodb_url(url))
    store.create_table()
    store.close()
    return url


@dataclass
class Backend:
    url: str
    opened: list[StateStore]

    def open(self, clock: Clock = SYSTEM) -> StateStore:
        store = open_store(self.url, clock=clock)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = new_table(request.getfixturevalue("dynamodb_local"))
    b = Backend(url, [])
    yield b
    for store in b.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> StateStore:
    return backend.open()


def an_op(op_id: str = "op-1", targets: list[str] = TARGETS, at: str | None = None) -> Operation:
    return Operation(
        id=op_id,
        action=Action.REVOKE,
        desired=REVOKED,
        target_ids=tuple(targets),
        actor="alice",
        reason="export order",
        ticket="INC-1",
        selector="--model mythos-5",
        created_at=at or utcnow(),
        status=OpStatus.RUNNING,
    )


# -- the lease ------------------------------------------------------------------------


def test_second_holder_is_told_who_holds_the_lock(store: StateStore) -> None:
    store.acquire("alice@laptop", "op-1", ttl_seconds=30)

    with pytest.raises(LockHeld) as caught:
        store.acquire("bob@desk", "op-2", ttl_seconds=30)

    assert caught.value.holder.owner == "alice@laptop"
    assert caught.value.holder.op_id == "op-1"
    assert "lock held by alice@laptop since" in str(caught.value)
    status = store.lock_status()
    assert status is not None and status.owner == "alice@laptop"


def test_released_lock_is_taken_with_a_higher_token(store: StateStore) -> None:
    first = store.acquire("alice", "op-1", ttl_seconds=30)
    store.release(first)
    assert store.lock_status() is None

    second = store.acquire("bob", "op-2", ttl_seconds=30)

    assert second.token > first.token


def test_expired_lease_is_taken_over_and_every_write_of_the_stale_holder_is_refused(
    backend: Backend,
) -> None:
    stalled, other = backend.open(), backend.open(AheadClock(60))  # a minute later
    stalled.create_op(an_op())
    stale = stalled.acquire("alice", "op-1", ttl_seconds=30)

    fresh = other.acquire("bob", "op-1", ttl_seconds=30)

    assert fresh.token > stale.token
    step = Step("op-1", TARGETS[0], StepResult.VERIFIED, at=utcnow())
    entry = LedgerEntry(TARGETS[0], REVOKED, "op-1", utcnow())
    for write in (
        lambda: stalled.record_step(step, stale),
        lambda: stalled.set_ledger([entry], stale),
        lambda: stalled.set_op_status("op-1", OpStatus.COMPLETE, stale),
        lambda: stalled.renew(stale, 30),
    ):
        with pytest.raises(LeaseLost):
            write()
    assert other.steps("op-1") == {}
    assert other.ledger() == {}
    op = other.get_op("op-1")
    assert op is not None and op.status is OpStatus.RUNNING
    other.record_step(step, fresh)
    assert other.steps("op-1")[TARGETS[0]].result is StepResult.VERIFIED


def test_release_by_a_stale_holder_leaves_the_new_holder_alone(backend: Backend) -> None:
    a, b = backend.open(), backend.open(AheadClock(60))  # b acts a minute later
    stale = a.acquire("alice", "op-1", ttl_seconds=30)
    fresh = b.acquire("bob", "op-2", ttl_seconds=30)

    a.release(stale)

    holder = b.lock_status()
    assert holder is not None and (holder.owner, holder.token) == ("bob", fresh.token)


def test_breaking_the_lock_frees_it_and_fences_the_holder(store: StateStore) -> None:
    lease = store.acquire("alice", "op-1", ttl_seconds=300)

    assert store.break_lock(lease.token + 7) is None  # not the lease we were shown
    broken = store.break_lock(lease.token)

    assert broken is not None and broken.owner == "alice"
    assert store.lock_status() is None
    assert store.break_lock(lease.token) is None  # nothing left to break
    with pytest.raises(LeaseLost):
        store.record_step(Step("op-1", TARGETS[0], StepResult.STARTED, at=utcnow()), lease)
    assert store.acquire("bob", "op-2", ttl_seconds=30).token > lease.token


# -- operations and journal --------------------------------------------------------------


def test_an_op_is_recorded_once_and_ops_are_listed_newest_first(store: StateStore) -> None:
    store.create_op(an_op("op-old", at="2026-01-01T00:00:00.000Z"))
    store.create_op(an_op("op-new", at="2026-01-02T00:00:00.000Z"))
    store.create_op(an_op("op-old", targets=["changed"], at="2026-01-03T00:00:00.000Z"))

    assert [o.id for o in store.list_ops()] == ["op-new", "op-old"]
    assert [o.id for o in store.list_ops(1)] == ["op-new"]
    assert store.get_op("op-old") == an_op("op-old", at="2026-01-01T00:00:00.000Z")
    assert store.get_op("op-missing") is None


def test_op_status_moves_under_the_lease_and_a_missing_op_stays_missing(
    store: StateStore,
) -> None:
    store.create_op(an_op())
    lease = store.acquire("alice", "op-1", ttl_seconds=30)

    store.set_op_status("op-1", OpStatus.PARTIAL, lease)
    store.set_op_status("op-ghost", OpStatus.COMPLETE, lease)
    store.set_op_status("op-ghost", OpStatus.COMPLETE, None)

    op = store.get_op("op-1")
    assert op is not None and op.status is OpStatus.PARTIAL
    assert store.get_op("op-ghost") is None


TIMING = OpTiming(
    started_at="2026-01-01T00:00:00.000Z",
    runs=2,
    verified_after=607.0,
    effective_after=None,
    phases=(("setup", 0.5), ("plan", 1.0), ("confirm", 0.0), ("lock", 0.0), ("apply", 2.0),
            ("verify", 0.25)),
)  # fmt: skip


def test_an_op_s_timing_is_recorded_under_the_lease_and_a_stale_holder_s_is_refused(
    backend: Backend,
) -> None:
    store, op = backend.open(), an_op(at="2026-01-01T00:00:00.000Z")
    store.create_op(op)
    stale = store.acquire("alice", "op-1", ttl_seconds=30)
    store.break_lock(stale.token)
    lease = store.acquire("bob", "op-1", ttl_seconds=30)

    store.set_op_timing("op-1", TIMING, lease)
    store.set_op_timing("op-ghost", TIMING, lease)
    with pytest.raises(LeaseLost):
        store.set_op_timing("op-1", replace(TIMING, verified_after=1.0), stale)

    assert store.get_op("op-1") == replace(op, timing=TIMING)
    assert store.list_ops() == [replace(op, timing=TIMING)]
    assert backend.open().get_op("op-1") == replace(op, timing=TIMING)  # another machine
    assert store.get_op("op-ghost") is None


def test_parallel_steps_are_all_journaled_and_the_latest_per_target_wins(
    store: StateStore,
) -> None:
    targets = [f"aws:aws-prod/r{n}/ssm-flag/mythos-5" for n in range(24)]
    store.create_op(an_op(targets=targets))
    lease = store.acquire("alice", "op-1", ttl_seconds=30)

    def apply(target: str) -> None:
        store.record_step(Step("op-1", target, StepResult.STARTED, at=utcnow()), lease)
        done = Step("op-1", target, StepResult.VERIFIED, at=utcnow(), observed=REVOKED)
        store.record_step(done, lease)

    threads = [threading.Thread(target=apply, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    steps = store.steps("op-1")
    assert set(steps) == set(targets)
    assert {s.result for s in steps.values()} == {StepResult.VERIFIED}
    assert all(s.observed == REVOKED for s in steps.values())
    assert len(store.export_state().journal) == 2 * len(targets)


def test_failed_step_keeps_its_error(store: StateStore) -> None:
    lease = store.acquire("alice", "op-1", ttl_seconds=30)
    store.record_step(Step("op-1", TARGETS[0], StepResult.FAILED, "AccessDenied", utcnow()), lease)

    assert store.steps("op-1")[TARGETS[0]].error == "AccessDenied"


# -- ledger and approvals ----------------------------------------------------------------


def test_the_ledger_holds_the_latest_intent_of_every_target(store: StateStore) -> None:
    lease = store.acquire("alice", "op-1", ttl_seconds=30)
    many = [f"aws:aws-prod/r{n}/ssm-flag/fable-5" for n in range(230)]  # several transactions
    store.set_ledger([LedgerEntry(t, REVOKED, "op-1", utcnow()) for t in many], lease)
    restricted = Access(Posture.RESTRICTED, ("us-person",))

    store.set_ledger([LedgerEntry(many[0], restricted, "op-2", utcnow())], lease)

    ledger = store.ledger()
    assert len(ledger) == 230
    assert ledger[many[0]].desired == restricted and ledger[many[0]].op_id == "op-2"
    assert ledger[many[-1]].desired == REVOKED


def test_approvals_are_one_per_person_in_the_order_given(store: StateStore) -> None:
    store.add_approval("op-1", "alice")
    store.add_approval("op-1", "alice")

    assert store.add_approval("op-1", "bob") == ["alice", "bob"]
    assert store.approvals("op-2") == []


# -- audit ----------------------------------------------------------------------------------


def test_an_empty_audit_log_starts_at_the_genesis_head(store: StateStore) -> None:
    assert store.audit_events() == []
    assert store.audit_head() == (0, audit.GENESIS)


def test_audit_events_chain_and_the_head_follows(store: StateStore) -> None:
    first = store.append_audit("alice", "op.requested", "op-1", {"targets": 2, "why": "ünïcode"})
    second = store.append_audit("bob", "lock.broken", None, {"reason": "stuck"})

    events = store.audit_events()
    assert events == [first, second]
    assert second.prev_hash == first.hash
    assert store.audit_head() == (2, second.hash)
    assert audit.verify(events, store.audit_head()) == []


def test_the_audit_chain_stays_linear_under_concurrent_writers(backend: Backend) -> None:
    writers = [backend.open() for _ in range(3)]

    def write(n: int) -> None:
        for i in range(8):
            writers[n].append_audit(f"writer-{n}", "test.event", None, {"i": i})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    store = backend.open()
    events = store.audit_events()
    assert [e.seq for e in events] == list(range(1, 49))
    assert audit.verify(events, store.audit_head()) == []


# -- moving state ------------------------------------------------------------------------------


def test_export_then_import_into_an_empty_store_is_verbatim(
    backend: Backend, tmp_path: Path
) -> None:
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}")
    big = [f"aws:aws-prod@{n:012d}/eu-west-1/ssm-flag/mythos-5" for n in range(4000)]
    source.create_op(an_op("op-1"))
    source.create_op(an_op("op-big", targets=big))
    lease = source.acquire("alice", "op-1", ttl_seconds=30)
    source.set_op_timing("op-1", TIMING, lease)
    source.record_step(Step("op-1", TARGETS[0], StepResult.STARTED, at=utcnow()), lease)
    source.record_step(
        Step("op-1", TARGETS[0], StepResult.VERIFIED, None, utcnow(), REVOKED), lease
    )
    source.set_ledger([LedgerEntry(TARGETS[0], REVOKED, "op-1", utcnow())], lease)
    source.add_approval("op-1", "carol")
    source.append_audit("alice", "op.requested", "op-1", {"targets": 2})
    source.release(lease)
    dump = source.export_state()
    target = backend.open()

    target.import_state(dump)

    assert differences(dump, target.export_state()) == []
    assert target.get_op("op-big") == an_op("op-big", targets=big, at=dump.ops[1].created_at)
    assert target.get_op("op-1").timing == TIMING  # type: ignore[union-attr]
    assert target.steps("op-1")[TARGETS[0]].result is StepResult.VERIFIED
    assert audit.verify(target.audit_events(), target.audit_head()) == []
    assert target.acquire("bob", None, ttl_seconds=30).token > lease.token
    with pytest.raises(Exception, match="already holds state"):
        target.import_state(dump)
    source.close()


def test_a_lease_from_before_the_copy_cannot_write_to_the_copy(
    backend: Backend, tmp_path: Path
) -> None:
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}")
    old = source.acquire("alice", "op-1", ttl_seconds=30)
    target = backend.open()
    target.import_state(source.export_state())

    with pytest.raises(LeaseLost):
        target.record_step(Step("op-1", TARGETS[0], StepResult.STARTED, at=utcnow()), old)
    with pytest.raises(LeaseLost):
        target.record_step(
            Step("op-1", TARGETS[0], StepResult.STARTED, at=utcnow()),
            Lease("mallory", None, 0, "never"),
        )
    source.close()
