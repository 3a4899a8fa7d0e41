"""The SQLite store's lease lock (one holder, expiry, takeover and fencing), and its file
from an older release."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from killswitch.domain import OpStatus, OpTiming, Step, StepResult
from killswitch.errors import LeaseLost, LockHeld
from killswitch.state.sqlite import SqliteStore
from tests.support.clocks import AheadClock


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state.db")


def test_second_holder_is_told_who_holds_the_lock(store: SqliteStore) -> None:
    store.acquire("alice@laptop", "op-1", ttl_seconds=30)

    with pytest.raises(LockHeld) as caught:
        store.acquire("bob@desk", "op-2", ttl_seconds=30)

    assert caught.value.holder.owner == "alice@laptop"
    assert caught.value.holder.op_id == "op-1"
    assert "alice@laptop" in str(caught.value)
    assert "since" in str(caught.value)


def test_released_lock_can_be_taken_with_a_higher_token(store: SqliteStore) -> None:
    first = store.acquire("alice", "op-1", ttl_seconds=30)
    store.release(first)

    second = store.acquire("bob", "op-2", ttl_seconds=30)

    assert second.token > first.token
    assert store.lock_status() is not None


def test_expired_lease_is_taken_over_and_the_old_holder_is_fenced(
    tmp_path: Path, store: SqliteStore
) -> None:
    stale = store.acquire("alice", "op-1", ttl_seconds=30)
    # another process's view of the same file, a minute later
    other = SqliteStore(tmp_path / "state.db", clock=AheadClock(60))

    fresh = other.acquire("bob", "op-2", ttl_seconds=30)

    assert fresh.token > stale.token
    with pytest.raises(LeaseLost):
        store.record_step(Step("op-1", "t", StepResult.VERIFIED), stale)
    with pytest.raises(LeaseLost):
        store.renew(stale, 30)
    other.record_step(Step("op-2", "t", StepResult.VERIFIED), fresh)
    assert other.steps("op-2")["t"].result is StepResult.VERIFIED
    assert store.steps("op-1") == {}


def test_approvals_are_one_per_person(store: SqliteStore) -> None:
    store.add_approval("op-1", "alice")
    store.add_approval("op-1", "alice")

    assert store.add_approval("op-1", "bob") == ["alice", "bob"]


# The ops table as killswitch wrote it before ops kept their timing.
OLD_OPS = """CREATE TABLE ops (
  id TEXT PRIMARY KEY, action TEXT NOT NULL, desired TEXT NOT NULL, target_ids TEXT NOT NULL,
  actor TEXT NOT NULL, reason TEXT NOT NULL, ticket TEXT, selector TEXT NOT NULL,
  created_at TEXT NOT NULL, status TEXT NOT NULL, required_approvals INTEGER NOT NULL
)"""


def test_a_state_file_from_before_op_timing_opens_and_its_ops_load_without_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute(OLD_OPS)
        db.execute(
            "INSERT INTO ops VALUES ('op-old', 'revoke', ?, ?, 'alice', 'order', NULL,"
            " '--model mythos-5', '2025-06-01T00:00:00.000Z', 'complete', 0)",
            ('{"posture": "revoked", "audience": []}', '["aws:aws-prod/eu-west-1/ssm-flag/m"]'),
        )
    db.close()

    store = SqliteStore(path)
    [old] = store.list_ops()
    lease = store.acquire("alice", "op-old", ttl_seconds=30)
    timing = OpTiming("2026-01-01T00:00:00.000Z", 1, 3.25, None, (("setup", 0.5),))
    store.set_op_timing("op-old", timing, lease)

    assert (old.id, old.status, old.timing) == ("op-old", OpStatus.COMPLETE, None)
    assert store.get_op("op-old") == replace(old, timing=timing)
