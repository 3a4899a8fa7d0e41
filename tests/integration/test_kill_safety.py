"""The kill's central promise, tried the way an incident breaks it: a revoke racing a
restore, a stalled holder whose writes land late, stale and superseded approvals, a
restrict over what is revoked, and holders that block the lock.

Every scenario runs on both stores (SQLite, DynamoDB Local), against moto over HTTP
through the fault proxy, with real processes, SIGSTOP and SIGKILL. What is asserted
is what the servers hold afterwards, and that the reports tell the truth about it.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator

import boto3
import pytest
import yaml

from killswitch.domain import Intent
from killswitch.lease import Heartbeat, LockRules
from killswitch.state import open_store, parse_dynamodb_url
from tests.conftest import MODELS, NON_US, US, Workspace, person
from tests.support.dynamodb_local import dynamodb_local_fixture  # noqa: F401
from tests.support.faultproxy import Call, FaultProxy, Rule, for_action
from tests.support.processes import stderr_so_far, wait_for

REGIONS = US + NON_US
EVERYWHERE = [(r, m) for r in REGIONS for m in MODELS]
REVOKE_ALL = ("revoke", "-m", "all", "--yes")
CALL_TIMEOUT = 1.0  # seconds per AWS call: a takeover waits ~2 s for writes in flight


@pytest.fixture(params=["sqlite", "dynamodb"])
def ws(request: pytest.FixtureRequest, faulty_ws: Workspace) -> Workspace:
    """A workspace through the fault proxy, its state on SQLite or DynamoDB Local."""
    return on_store(request, faulty_ws, request.param)


@pytest.fixture(params=["sqlite", "dynamodb", "sqlite, workers"])
def stalled_ws(
    request: pytest.FixtureRequest, faulty_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> Workspace:
    """``ws`` on both stores with the calls made by threads, and on SQLite again with
    them made by two worker processes (killswitch/workers.py)."""
    store, _, workers = request.param.partition(", ")
    monkeypatch.setenv("KILLSWITCH_WORKERS", "2" if workers else "0")
    return on_store(request, faulty_ws, store)


def on_store(request: pytest.FixtureRequest, faulty_ws: Workspace, store: str) -> Workspace:
    state = "sqlite:///./.killswitch/state.db"
    if store == "dynamodb":
        from killswitch.state.dynamodb import DynamoDbStore

        state = request.getfixturevalue("dynamodb_local").state_url()
        table = DynamoDbStore(parse_dynamodb_url(state))
        table.create_table()
        table.close()
    return with_safety_inventory(faulty_ws, state)


@pytest.fixture
def sqlite_ws(faulty_ws: Workspace) -> Workspace:
    return with_safety_inventory(faulty_ws, "sqlite:///./.killswitch/state.db")


def with_safety_inventory(ws: Workspace, state: str) -> Workspace:
    ws.write_inventory(
        state=state,
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": REGIONS,
                "mechanisms": ["ssm-flag"],
                "endpoint_url": ws.endpoint,
                "timeout_seconds": CALL_TIMEOUT,
            }
        },
        policy={
            "restore": {"approvals": 2},
            "retry": {"attempts": 2, "max_seconds": 3, "base_seconds": 0.05},
            # An hour-long lease: only a stopped heartbeat proves a holder dead in time.
            "lock": {"ttl_seconds": 3600, "heartbeat_seconds": 0.2},
        },
    )
    return ws


def postures(ws: Workspace) -> dict[tuple[str, str], str]:
    return {(r, m): ws.posture(r, m) for r, m in EVERYWHERE}


def opening(call: Call) -> bool:
    """A PutParameter that writes an open flag: what a restore sends."""
    return call.action == "PutParameter" and b'\\"posture\\": \\"open\\"' in call.body


def state_url(ws: Workspace) -> str:
    return str(ws.run("lock", "status", "-o", "json").json()["state"])


def lock_holder(ws: Workspace) -> str | None:
    data = ws.run("lock", "status", "-o", "json").json()
    return data.get("owner") if data["held"] else None


def request_restore(ws: Workspace, *args: str) -> str:
    result = ws.run("restore", *args, "--reason", "review done", "--yes", "-o", "json")
    assert result.code == 5, result.stdout + result.stderr
    return str(result.json()["op"])


def audit_kinds(ws: Workspace, op: str) -> list[str]:
    events = ws.run("audit", "list", "-o", "json").json()["events"]
    return [e["kind"] for e in events if e["op"] == op]


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test SIGSTOPs: always continued and reaped, whatever happens."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
        p.communicate()


def stall_an_approved_restore(
    ws: Workspace, proxy: FaultProxy, stopped: list[subprocess.Popen[str]]
) -> tuple[str, Rule, subprocess.Popen[str]]:
    """Everything revoked; alice asks for a restore and bob approves it. Its writes are
    sent and sit in the network, then bob's laptop freezes (SIGSTOP)."""
    assert ws.run(*REVOKE_ALL, "--reason", "export order").code == 0
    restore = request_restore(ws, "-m", "all")
    held = proxy.add(opening, fault="hold")
    approve = ws.spawn("approve", restore, "--yes", actor="bob")
    stopped.append(approve)
    wait_for(lambda: held.fired == len(EVERYWHERE), "every restore write in flight")
    approve.send_signal(signal.SIGSTOP)
    return restore, held, approve


# -- 1 and 4: a revoke racing a restore that is applying -------------------------------------


def test_a_revoke_fences_a_stalled_restore_and_undoes_its_late_writes_before_reporting(
    stalled_ws: Workspace, proxy: FaultProxy, stopped: list[subprocess.Popen[str]]
) -> None:
    ws = stalled_ws
    restore, held, approve = stall_an_approved_restore(ws, proxy, stopped)

    # A new incident: the revoke is planned while everything still reads revoked.
    revoke = ws.spawn(*REVOKE_ALL, "--reason", "new order", "--ticket", "INC-9", "-o", "json",
                      actor="carol")  # fmt: skip
    wait_for(lambda: lock_holder(ws) == person("carol"), "the revoke to take the lock over")
    held.gate.set()  # the stalled restore's writes land now, after the takeover
    wait_for(lambda: "open" in postures(ws).values(), "a late write to land")
    out, err = revoke.communicate(timeout=120)

    assert revoke.returncode == 0, err
    report = json.loads(out)
    assert report["status"] == "complete"
    assert {t["result"] for t in report["targets"]} <= {"verified", "skipped"}
    assert set(postures(ws).values()) == {"revoked"}  # what reports closed is closed

    # The stalled holder wakes up fenced: it writes nothing more and says why.
    late = proxy.count("PutParameter")
    approve.send_signal(signal.SIGCONT)
    _, approve_err = approve.communicate(timeout=60)
    assert approve.returncode == 4, approve_err
    assert "taken over" in approve_err
    assert proxy.count("PutParameter") == late
    assert set(postures(ws).values()) == {"revoked"}
    assert ws.run("drift").code == 0
    # The restore is superseded, audited, and can never re-open anything.
    assert ws.run("ops", "show", restore, "-o", "json").json()["operation"]["status"] == (
        "superseded"
    )
    assert "op.superseded" in audit_kinds(ws, restore)
    assert ws.run("ops", "resume", restore, "--yes").code == 6
    assert set(postures(ws).values()) == {"revoked"}


@pytest.mark.usefixtures("fan_out")  # a stopped holder's threads, or its workers
def test_a_stopped_restricts_late_writes_are_closed_again_by_the_revoke_that_took_over(
    sqlite_ws: Workspace, proxy: FaultProxy, stopped: list[subprocess.Popen[str]]
) -> None:
    ws = sqlite_ws  # the store plays no part here; the stalled-restore test covers both
    restricting = proxy.add(
        lambda c: c.action == "PutParameter" and b"restricted" in c.body, fault="hold"
    )
    restrict = ws.spawn("restrict", "-m", "all", "-a", "us-person", "--reason", "order",
                        "--yes", actor="bob")  # fmt: skip
    stopped.append(restrict)
    wait_for(lambda: restricting.fired == len(EVERYWHERE), "every restrict write in flight")
    restrict.send_signal(signal.SIGSTOP)  # its heartbeat stops with it

    revoking = proxy.add(lambda c: c.action == "PutParameter" and b"revoked" in c.body,
                         fault="delay", delay=0)  # fmt: skip
    revoke = ws.spawn(*REVOKE_ALL, "--reason", "escalated", "-o", "json", actor="carol")
    wait_for(lambda: revoking.fired == len(EVERYWHERE), "the revoke's own writes")
    restricting.gate.set()  # planned before the revoke, they land after its writes
    out, err = revoke.communicate(timeout=120)

    assert revoke.returncode == 0, err
    assert json.loads(out)["status"] == "complete"
    assert set(postures(ws).values()) == {"revoked"}
    restrict.send_signal(signal.SIGCONT)
    assert restrict.wait(timeout=60) == 4
    assert set(postures(ws).values()) == {"revoked"}


# -- 2: a newer revoke supersedes an older restore ---------------------------------------------


def test_a_newer_revoke_with_nothing_to_change_still_supersedes_a_pending_restore(
    ws: Workspace, proxy: FaultProxy
) -> None:
    assert ws.run(*REVOKE_ALL, "--reason", "export order").code == 0
    restore = request_restore(ws, "-m", "all")

    again = ws.run(*REVOKE_ALL, "--reason", "second order", "--ticket", "INC-2", "-o", "json",
                   actor="carol")  # fmt: skip
    writes = proxy.count("PutParameter")
    approved = ws.run("approve", restore, "--yes", actor="bob")

    assert again.code == 0, again.stderr
    assert again.json()["status"] == "complete"
    assert {t["result"] for t in again.json()["targets"]} == {"skipped"}
    assert approved.code == 6, approved.stdout + approved.stderr
    assert "superseded by the newer revoke op" in approved.stderr
    assert "INC-2" in approved.stderr
    assert "request a new restore" in approved.stderr
    assert proxy.count("PutParameter") == writes  # nothing was written
    assert set(postures(ws).values()) == {"revoked"}
    superseded = [
        e for e in ws.run("audit", "list", "-o", "json").json()["events"]
        if e["kind"] == "op.superseded"
    ]  # fmt: skip
    assert [(e["op"], e["payload"]["by"], e["actor"]) for e in superseded] == [
        (restore, again.json()["op"], person("carol"))
    ]
    # A fresh request is a new op that needs its own approvals.
    fresh = request_restore(ws, "-m", "all")
    assert fresh != restore
    assert ws.run("approve", fresh, "--yes", actor="bob").code == 0
    assert set(postures(ws).values()) == {"open"}


def test_resuming_a_partial_restore_after_a_newer_revoke_is_refused(
    ws: Workspace, proxy: FaultProxy
) -> None:
    assert ws.run(*REVOKE_ALL, "--reason", "export order").code == 0
    restore = request_restore(ws, "-m", "all")
    failing = proxy.add(
        lambda c: opening(c) and c.region == "eu-west-1",
        fault="error",
        status=400,
        body=b'{"__type":"AccessDeniedException","message":"denied"}',
    )
    partial = ws.run("approve", restore, "--yes", actor="bob")
    assert partial.code == 3, partial.stdout + partial.stderr
    assert failing.fired > 0
    assert ws.run(*REVOKE_ALL, "--reason", "new order", actor="carol").code == 0
    proxy.clear()  # the region's permissions are fixed

    resumed = ws.run("ops", "resume", restore, "--yes")

    assert resumed.code == 6, resumed.stdout + resumed.stderr
    assert proxy.count("PutParameter") == 0
    assert set(postures(ws).values()) == {"revoked"}


def test_a_broken_lock_then_a_newer_revoke_leaves_the_stalled_restore_nothing_to_resume(
    stalled_ws: Workspace, proxy: FaultProxy, stopped: list[subprocess.Popen[str]]
) -> None:
    ws = stalled_ws
    restore, held, approve = stall_an_approved_restore(ws, proxy, stopped)
    # The runbook says: break the lock of a holder that is gone.
    assert ws.run("lock", "break", "--reason", "bob's laptop froze", "--yes").code == 0
    held.gate.set()  # its writes in flight land after the break
    wait_for(lambda: set(postures(ws).values()) == {"open"}, "the late writes to land")
    revoke = ws.run(*REVOKE_ALL, "--reason", "new order", "-o", "json", actor="carol")
    assert revoke.code == 0, revoke.stderr
    assert revoke.json()["status"] == "complete"
    assert set(postures(ws).values()) == {"revoked"}

    resumed = ws.run("ops", "resume", restore, "--yes", actor="dave")

    assert resumed.code == 6, resumed.stdout + resumed.stderr
    assert set(postures(ws).values()) == {"revoked"}
    writes = proxy.count("PutParameter")
    approve.send_signal(signal.SIGCONT)
    assert approve.wait(timeout=60) == 4
    assert proxy.count("PutParameter") == writes  # fenced: not one more write
    assert set(postures(ws).values()) == {"revoked"}


def test_an_approval_is_stale_once_its_targets_changed_after_the_request(
    ws: Workspace,
) -> None:
    assert ws.run(*REVOKE_ALL, "--reason", "export order").code == 0
    everything = request_restore(ws, "-m", "all")
    one_model = request_restore(ws, "-m", "mythos-5", "--ticket", "INC-3")
    assert ws.run("approve", one_model, "--yes", actor="bob").code == 0

    stale = ws.run("approve", everything, "--yes", actor="bob")

    assert stale.code == 6, stale.stdout + stale.stderr
    assert "stale" in stale.stderr
    assert all(ws.posture(r, "fable-5") == "revoked" for r in REGIONS)
    assert all(ws.posture(r, "mythos-5") == "open" for r in REGIONS)


def test_an_op_row_edited_after_its_request_takes_no_approval(ws: Workspace) -> None:
    assert ws.run(*REVOKE_ALL, "--reason", "export order").code == 0
    restore = request_restore(ws, "-m", "all")
    # Someone with write access to the state lowers the quorum to one person.
    url = state_url(ws)
    if url.startswith("sqlite"):
        db = sqlite3.connect(ws.state_db)
        with db:
            db.execute("UPDATE ops SET required_approvals = 1 WHERE id = ?", (restore,))
        db.close()
    else:
        parsed = parse_dynamodb_url(url)
        boto3.client(
            "dynamodb", region_name=parsed.region, endpoint_url=parsed.endpoint_url
        ).update_item(
            TableName=parsed.table,
            Key={"pk": {"S": f"OP#{restore}"}, "sk": {"S": "OP"}},
            UpdateExpression="SET required_approvals = :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    resumed = ws.run("ops", "resume", restore, "--yes")

    assert resumed.code == 6, resumed.stdout + resumed.stderr
    assert "differs from what was requested" in resumed.stderr
    assert set(postures(ws).values()) == {"revoked"}


# -- 3: restrict only tightens ----------------------------------------------------------------


def test_restrict_keeps_a_revoked_region_revoked_and_loosening_it_waits_for_approvals(
    sqlite_ws: Workspace,
) -> None:
    ws = sqlite_ws  # engine logic: the stalled and superseded tests cover both stores
    assert ws.run("revoke", "-m", "all", "-r", "eu-west-1", "--reason", "partner cutoff",
                  "--yes").code == 0  # fmt: skip

    restrict = ws.run("restrict", "-m", "all", "-a", "us-person", "--reason", "export order",
                      "--yes", "-o", "json")  # fmt: skip

    assert restrict.code == 0, restrict.stderr
    rows = {(t["region"], t["model"]): t for t in restrict.json()["targets"]}
    for (region, model), row in rows.items():
        if region == "eu-west-1":
            assert row["result"] == "kept"
            assert row["desired"]["posture"] == "revoked"
            assert ws.posture(region, model) == "revoked"
        else:
            assert row["result"] == "verified"
            assert ws.flag(region, model)["audience"] == ["us-person"]  # type: ignore[index]
    assert ws.run("drift").code == 0  # the ledger keeps the tighter posture

    loosen = ws.run("restore", "-m", "all", "-r", "eu-west-1", "-a", "us-person",
                    "--reason", "cutoff lifted", "--yes", "-o", "json")  # fmt: skip
    assert loosen.code == 5, loosen.stdout + loosen.stderr
    assert all(ws.posture("eu-west-1", m) == "revoked" for m in MODELS)
    assert ws.run("approve", loosen.json()["op"], "--yes", actor="bob").code == 0
    assert all(ws.posture("eu-west-1", m) == "restricted" for m in MODELS)


def test_drift_fix_open_re_opens_to_restricted_only_as_a_restore(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws  # engine logic: the stalled and superseded tests cover both stores
    assert ws.run("restrict", "-m", "all", "-a", "us-person", "--reason", "order",
                  "--yes").code == 0  # fmt: skip
    # Someone revokes a flag by hand: tighter than the ledger says.
    ws.ssm("eu-west-1").put_parameter(
        Name="/killswitch/models/mythos-5",
        Value='{"posture": "revoked", "audience": []}',
        Type="String",
        Overwrite=True,
    )

    healed = ws.run("drift", "--fix-open", "-o", "json")

    assert healed.code == 5, healed.stdout + healed.stderr  # a restore: it waits for approvals
    assert ws.posture("eu-west-1", "mythos-5") == "revoked"


# -- 5: revoke is never blocked -----------------------------------------------------------------


def test_a_revoke_takes_the_lock_from_a_dead_holder_once_its_heartbeat_stops(
    ws: Workspace,
) -> None:
    store = open_store(state_url(ws))
    # A holder that took the lock and died: never renewed, its lease an hour long.
    store.acquire("mallory@dead-laptop", "op-dead", 3600, Intent.TIGHTEN)

    result = ws.run(*REVOKE_ALL, "--reason", "order", "-o", "json")

    assert result.code == 0, result.stderr
    assert set(postures(ws).values()) == {"revoked"}


def test_a_revoke_waits_for_a_live_tightening_holder_and_exits_4_after_its_wait(
    ws: Workspace,
) -> None:
    store = open_store(state_url(ws))
    rules = LockRules(ttl=3600, heartbeat=0.1, wait=0)
    lease = store.acquire("drift-check", "op-heal", 3600, Intent.TIGHTEN)
    with Heartbeat(store, lease, rules):  # alive: its beat keeps moving
        result = ws.run(*REVOKE_ALL, "--reason", "order", "--lock-timeout", "2")

    assert result.code == 4, result.stdout + result.stderr
    assert "after waiting 2s, lock held by drift-check" in result.stderr
    assert "waiting for the lock" in result.stderr
    assert set(postures(ws).values()) == {"open"}


def test_a_revoke_waits_for_a_running_drift_heal_and_closes_within_its_wait(
    ws: Workspace, proxy: FaultProxy
) -> None:
    # The heal's write is held at the proxy for as long as the test needs: give it a call
    # timeout longer than that, so it holds the lock until the test lets it go.
    doc = yaml.safe_load(ws.inventory.read_text())
    doc["providers"]["aws-prod"]["timeout_seconds"] = 60
    ws.inventory.write_text(yaml.safe_dump(doc))
    assert ws.run(*REVOKE_ALL, "-r", "eu-*", "--reason", "order").code == 0
    ws.ssm("eu-west-1").delete_parameter(Name="/killswitch/models/mythos-5")  # opened by hand
    held = proxy.add(for_action("PutParameter"), fault="hold", times=1)
    heal = ws.spawn("drift", "--fix", actor="cron")
    wait_for(lambda: held.fired == 1, "the heal's write in flight")

    revoke = ws.spawn(*REVOKE_ALL, "--reason", "new order", actor="carol")
    wait_for(lambda: b"waiting for the lock" in stderr_so_far(revoke), "the revoke to wait", revoke)
    held.gate.set()
    heal.communicate(timeout=60)
    _, err = revoke.communicate(timeout=120)

    assert heal.returncode == 0
    assert revoke.returncode == 0, err
    assert set(postures(ws).values()) == {"revoked"}
