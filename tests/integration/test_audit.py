"""The audit log is hash-chained: any edit, deletion, reordering or truncation shows."""

from __future__ import annotations

import sqlite3

import pytest

from tests.conftest import Workspace, person


@pytest.fixture
def audited(ws: Workspace) -> Workspace:
    ws.run("revoke", "-m", "all", "-r", "eu-*", "--reason", "export order", "--yes")
    ws.run("restrict", "-m", "all", "-r", "us-*", "-a", "us-person", "--reason", "r", "--yes")
    result = ws.run("audit", "verify", "-o", "json")
    assert result.code == 0
    assert result.json()["intact"] is True
    assert result.json()["events"] >= 6
    return ws


def _tamper(ws: Workspace, *statements: str) -> None:
    db = sqlite3.connect(ws.state_db)
    with db:
        for sql in statements:
            db.execute(sql)
    db.close()


def test_edited_reason_is_detected(audited: Workspace) -> None:
    _tamper(
        audited,
        "UPDATE audit SET payload = replace(payload, 'export order', 'routine') WHERE seq = 1",
    )

    result = audited.run("audit", "verify")

    assert result.code == 3
    assert "event 1: content does not match its hash" in result.stdout


def test_deleted_row_is_detected(audited: Workspace) -> None:
    _tamper(audited, "DELETE FROM audit WHERE seq = 2")

    result = audited.run("audit", "verify", "-o", "json")

    assert result.code == 3
    assert any("event 3" in p for p in result.json()["problems"])


def test_reordered_rows_are_detected(audited: Workspace) -> None:
    _tamper(
        audited,
        "UPDATE audit SET seq = -1 WHERE seq = 2",
        "UPDATE audit SET seq = 2 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = -1",
    )

    assert audited.run("audit", "verify").code == 3


def test_truncated_tail_is_detected(audited: Workspace) -> None:
    _tamper(audited, "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")

    result = audited.run("audit", "verify", "-o", "json")

    assert result.code == 3
    assert any("chain head" in p for p in result.json()["problems"])


def test_every_change_is_audited_with_actor_and_reason(audited: Workspace) -> None:
    events = audited.run("audit", "list", "-o", "json").json()["events"]

    requested = [e for e in events if e["kind"] == "op.requested"]
    assert [e["payload"]["action"] for e in requested] == ["revoke", "restrict"]
    assert all(e["actor"] == person("alice") for e in requested)
    assert requested[0]["payload"]["reason"] == "export order"
    finished = [e for e in events if e["kind"] == "op.finished"]
    assert [e["payload"]["status"] for e in finished] == ["complete", "complete"]


def test_a_time_to_kill_shortened_in_the_ops_table_is_detected(audited: Workspace) -> None:
    # Someone with write access to the state makes an incident's SLO look better.
    ops = audited.run("ops", "list", "-o", "json").json()["ops"]
    revoke = next(o for o in ops if o["action"] == "revoke")
    _tamper(
        audited,
        "UPDATE ops SET timing = json_set(timing, '$.verified_after', 0.5)"
        f" WHERE id = '{revoke['id']}'",
    )

    result = audited.run("audit", "verify", "-o", "json")

    assert result.code == 3
    assert result.json()["problems"] == [
        f"op {revoke['id']}: its timing in the table differs from the log's (edited)"
    ]
    logged = [
        e["payload"]["timing"]
        for e in audited.run("audit", "list", "-o", "json").json()["events"]
        if e["kind"] == "op.timed" and e["op"] == revoke["id"]
    ]
    assert logged == [revoke["timing"]]  # the log still holds what the op measured
