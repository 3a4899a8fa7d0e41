"""The SQLite store's lease lock: one holder, expiry, takeover and fencing."""

from __future__ import annotations

from pathlib import Path

import pytest

from killswitch.domain import Step, StepResult
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
