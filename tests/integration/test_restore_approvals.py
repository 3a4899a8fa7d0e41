"""Restore is the careful direction: two different people, or nothing opens."""

from __future__ import annotations

from tests.conftest import MODELS, NON_US, US, Workspace, person


def _revoked_everywhere(ws: Workspace) -> None:
    assert ws.run("revoke", "-m", "all", "--reason", "export order", "--yes").code == 0


def test_restore_waits_for_a_second_person(ws: Workspace) -> None:
    _revoked_everywhere(ws)

    result = ws.run("restore", "-m", "all", "--reason", "review done", "--yes", "-o", "json")

    assert result.code == 5
    report = result.json()
    assert report["status"] == "awaiting-approval"
    assert report["op"] in report["message"]
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)


def test_requester_cannot_approve_their_own_restore(ws: Workspace) -> None:
    _revoked_everywhere(ws)
    op = ws.run("restore", "-m", "all", "--reason", "review", "--yes", "-o", "json").json()["op"]

    result = ws.run("approve", op, "--yes", actor="alice")

    assert result.code == 5
    assert f"{person('alice')} requested it" in result.stderr
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)
    assert ws.run("ops", "show", op, "-o", "json").json()["approvals"] == [person("alice")]


def test_second_approver_applies_the_restore(ws: Workspace) -> None:
    _revoked_everywhere(ws)
    op = ws.run("restore", "-m", "all", "--reason", "review", "--yes", "-o", "json").json()["op"]

    result = ws.run("approve", op, "--yes", "-o", "json", actor="bob")

    assert result.code == 0, result.stderr
    assert result.json()["status"] == "complete"
    assert all(ws.posture(r, m) == "open" for r in US + NON_US for m in MODELS)
    events = ws.run("audit", "list", "-o", "json").json()["events"]
    approvals = [(e["actor"], e["kind"]) for e in events if e["op"] == op]
    assert (person("alice"), "op.requested") in approvals
    assert (person("bob"), "restore.approved") in approvals


def test_the_same_approver_twice_does_not_count_twice(ws: Workspace) -> None:
    ws.write_inventory(policy={"restore": {"approvals": 3}})
    _revoked_everywhere(ws)
    op = ws.run("restore", "-m", "all", "--reason", "review", "--yes", "-o", "json").json()["op"]

    assert ws.run("approve", op, "--yes", actor="bob").code == 5
    again = ws.run("approve", op, "--yes", actor="bob")

    assert again.code == 5
    assert f"{person('bob')} already approved it" in again.stderr
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)
    assert ws.run("approve", op, "--yes", actor="carol").code == 0
    assert all(ws.posture(r, m) == "open" for r in US + NON_US for m in MODELS)


def test_approved_restore_can_be_applied_by_ops_resume(ws: Workspace) -> None:
    _revoked_everywhere(ws)
    op = ws.run("restore", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json").json()["op"]
    assert ws.run("ops", "resume", op, "--yes").code == 5  # one approval is not enough

    assert ws.run("approve", op, "--yes", actor="bob").code == 0

    assert all(ws.posture(r, "mythos-5") == "open" for r in US + NON_US)
    assert all(ws.posture(r, "fable-5") == "revoked" for r in US + NON_US)


def test_an_unconfirmed_approval_is_not_recorded(ws: Workspace) -> None:
    _revoked_everywhere(ws)
    op = ws.run("restore", "-m", "all", "--reason", "review", "--yes", "-o", "json").json()["op"]

    refused = ws.run("approve", op, actor="bob")  # no terminal, no --yes

    assert refused.code == 64
    assert ws.run("ops", "show", op, "-o", "json").json()["approvals"] == [person("alice")]
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)
    assert ws.run("approve", op, "--yes", actor="bob").code == 0
    assert all(ws.posture(r, m) == "open" for r in US + NON_US for m in MODELS)


def test_an_approved_restore_cut_short_by_the_lock_finishes_on_approve_again(
    ws: Workspace,
) -> None:
    from killswitch.state.sqlite import SqliteStore

    _revoked_everywhere(ws)
    op = ws.run("restore", "-m", "all", "--reason", "review", "--yes", "-o", "json").json()["op"]
    holder = SqliteStore(ws.state_db)  # carol's apply, from another terminal
    lease = holder.acquire("carol@desk", "op-other", ttl_seconds=30)

    blocked = ws.run("approve", op, "--yes", actor="bob")
    holder.release(lease)
    again = ws.run("approve", op, "--yes", actor="bob")

    assert blocked.code == 4
    assert "carol@desk" in blocked.stderr
    assert again.code == 0, again.stderr
    assert all(ws.posture(r, m) == "open" for r in US + NON_US for m in MODELS)


def test_approving_an_unknown_op_is_a_usage_error(ws: Workspace) -> None:
    result = ws.run("approve", "op-doesnotexist", "--yes", actor="bob")

    assert result.code == 64
    assert "op-doesnotexist" in result.stderr


def test_revoke_never_waits_for_approval(ws: Workspace) -> None:
    ws.write_inventory(policy={"restore": {"approvals": 5}})

    result = ws.run("revoke", "-m", "all", "--reason", "now", "--yes")

    assert result.code == 0
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)


def test_an_approval_written_into_the_state_file_by_hand_does_not_count(ws: Workspace) -> None:
    import sqlite3

    _revoked_everywhere(ws)
    op = ws.run("restore", "-m", "all", "--reason", "review", "--yes", "-o", "json").json()["op"]
    db = sqlite3.connect(ws.state_db)
    with db:
        db.execute("INSERT INTO approvals VALUES (?, 'mallory', '2026-11-27T00:00:00.000Z')", (op,))
    db.close()

    result = ws.run("ops", "resume", op, "--yes")

    assert result.code == 5
    assert ws.run("ops", "show", op, "-o", "json").json()["approvals"] == [person("alice")]
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)
