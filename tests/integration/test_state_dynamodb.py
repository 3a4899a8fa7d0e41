"""Shared state on DynamoDB Local, as an incident uses it: several operators at once, a
holder that dies or stalls, an outage of the state itself, and moving to and from SQLite.

Every store here is reached over HTTP (DynamoDB Local on Java; moto for the levers);
faults are real: SIGKILL, SIGSTOP, a proxy that drops or holds the connection.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from killswitch import audit
from killswitch.domain import Step, StepResult, utcnow
from killswitch.errors import LeaseLost
from killswitch.state import StateStore, open_store, parse_dynamodb_url
from killswitch.state.base import Lease
from killswitch.state.migrate import sync
from killswitch.state.spool import SpoolBroken, SpoolStore, pending_spools
from tests.conftest import MODELS, NON_US, US, Workspace, person
from tests.support.dynamodb_local import DynamoDbLocal, dynamodb_local_fixture  # noqa: F401
from tests.support.faultproxy import FaultProxy, for_action

ALL_TARGETS = len(MODELS) * len(US + NON_US)
REVOKE = ("revoke", "-m", "all", "--reason", "export order", "--yes")


def make_table(url: str) -> str:
    from killswitch.state.dynamodb import DynamoDbStore

    store = DynamoDbStore(parse_dynamodb_url(url))
    store.create_table()
    store.close()
    return url


@pytest.fixture
def table(dynamodb_local: DynamoDbLocal) -> str:
    """The state URL of a fresh table on DynamoDB Local."""
    return make_table(dynamodb_local.state_url())


@pytest.fixture
def shared(ws: Workspace, table: str) -> Workspace:
    """A workspace whose inventory keeps its state on DynamoDB Local."""
    ws.write_inventory(state=table)
    return ws


def items(url: str, prefix: str) -> list[dict[str, Any]]:
    """What the table really holds, read with boto3 straight from the server."""
    parsed = parse_dynamodb_url(url)
    client = boto3.client("dynamodb", region_name=parsed.region, endpoint_url=parsed.endpoint_url)
    found = client.scan(TableName=parsed.table, ConsistentRead=True)["Items"]
    return [i for i in found if i["pk"]["S"].startswith(prefix)]


def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def verified_chain(store: StateStore) -> list[Any]:
    events = store.audit_events()
    assert audit.verify(events, store.audit_head()) == []
    return events


# -- many operators, one lock ----------------------------------------------------------------


def test_four_racing_revokes_told_not_to_wait_apply_one_at_a_time_and_the_others_exit_4(
    faulty_ws: Workspace, proxy: FaultProxy, table: str
) -> None:
    ws = faulty_ws
    ws.write_inventory(state=table)
    hold = proxy.add(for_action("PutParameter"), fault="hold")  # the winner waits inside the lock
    racers = {
        name: ws.spawn(*REVOKE, "--lock-timeout", "0", actor=name)
        for name in ("ann", "ben", "cat", "dan")
    }

    wait_for(lambda: proxy.count("PutParameter") > 0, "the winner's first write")
    wait_for(lambda: sum(p.poll() is not None for p in racers.values()) == 3, "three losers")
    hold.gate.set()
    outcome = {name: (p.wait(timeout=120), p.communicate()[1]) for name, p in racers.items()}

    codes = sorted(code for code, _ in outcome.values())
    assert codes == [0, 4, 4, 4], outcome
    winner = next(name for name, (code, _) in outcome.items() if code == 0)
    for code, err in outcome.values():
        if code == 4:
            assert f"lock held by {person(winner)} since" in err, err
    # Each target written exactly once: the applies never interleaved.
    assert proxy.count("PutParameter") == ALL_TARGETS
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)
    store = open_store(table)
    events = verified_chain(store)
    assert [e.actor for e in events if e.kind == "op.requested"] == [person(winner)]
    assert store.lock_status() is None
    assert [i["token"]["N"] for i in items(table, "LOCK")] == ["1"]  # losers got no token


# -- a holder that dies, or stalls -------------------------------------------------------------


def test_killed_holder_is_taken_over_once_its_heartbeat_stops_and_its_token_is_fenced(
    faulty_ws: Workspace, proxy: FaultProxy, table: str
) -> None:
    ws = faulty_ws
    # A lease an hour long: only the stopped heartbeat can prove the holder dead in time.
    ws.write_inventory(
        state=table, policy={"lock": {"ttl_seconds": 3600, "heartbeat_seconds": 0.2}}
    )
    proxy.add(for_action("PutParameter"), fault="delay", times=3)  # three writes go through …
    hold = proxy.add(for_action("PutParameter"), fault="hold")  # … the fourth hangs
    holder = ws.spawn(*REVOKE)
    wait_for(lambda: hold.fired > 0, "the holder inside its apply")
    seen = ws.run("lock", "status", "-o", "json")
    assert seen.code == 4 and seen.json()["owner"] == person("alice"), seen.stderr

    holder.send_signal(signal.SIGKILL)  # no cleanup: lock still held, journal half-written
    holder.communicate()
    hold.gate.set()
    proxy.clear()
    op = seen.json()["op_id"]
    taken = ws.run("ops", "resume", op, "--yes", "-o", "json", actor="bob")

    assert taken.code == 0, taken.stderr
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)
    store = open_store(table)
    dead = Lease("alice", op, seen.json()["token"], seen.json()["expires_at"])
    before = len(items(table, f"OP#{op}"))
    with pytest.raises(LeaseLost):  # a late write carrying the dead holder's token
        store.record_step(Step(op, "aws:any/eu-west-1/ssm-flag/x", StepResult.FAILED), dead)
    assert len(items(table, f"OP#{op}")) == before
    assert {s.result for s in store.steps(op).values()} <= {StepResult.VERIFIED, StepResult.SKIPPED}
    verified_chain(store)


def test_stalled_holder_wakes_after_a_takeover_and_every_write_it_tries_is_refused(
    faulty_ws: Workspace, proxy: FaultProxy, table: str
) -> None:
    ws = faulty_ws
    ws.write_inventory(
        state=table, policy={"lock": {"ttl_seconds": 3600, "heartbeat_seconds": 0.2}}
    )
    hold = proxy.add(for_action("PutParameter"), fault="hold", times=1)
    stalled = ws.spawn(*REVOKE, actor="alice")
    wait_for(lambda: hold.fired > 0, "the first write of the holder")
    op = ws.run("lock", "status", "-o", "json").json()["op_id"]
    stalled.send_signal(signal.SIGSTOP)  # a frozen laptop: no heartbeat, no writes
    try:
        taken = ws.run("ops", "resume", op, "--yes", actor="bob")  # its heartbeat stopped
        assert taken.code == 0, taken.stderr
        old_token_steps = [i for i in items(table, f"OP#{op}") if i["sk"]["S"].startswith("STEP#")]
        old_token_steps = [i for i in old_token_steps if i["token"]["N"] == "1"]
    finally:
        stalled.send_signal(signal.SIGCONT)
    hold.gate.set()  # its provider call returns; it tries to journal the result
    _, err = stalled.communicate(timeout=60)

    assert stalled.returncode == 4, err
    assert "taken over" in err
    late = [i for i in items(table, f"OP#{op}") if i["sk"]["S"].startswith("STEP#")]
    assert [i for i in late if i["token"]["N"] == "1"] == old_token_steps
    store = open_store(table)
    final = store.get_op(op)
    assert final is not None and final.status.value == "complete"
    assert {s.result for s in store.steps(op).values()} <= {StepResult.VERIFIED, StepResult.SKIPPED}


def test_the_audit_chain_verifies_after_concurrent_writer_processes(table: str) -> None:
    script = textwrap.dedent(
        """
        import sys
        from killswitch.state import open_store
        store = open_store(sys.argv[1])
        for i in range(8):
            store.append_audit(sys.argv[2], "test.event", None, {"i": i})
        """
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, table, f"writer-{n}"]) for n in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]

    events = verified_chain(open_store(table))
    assert [e.seq for e in events] == list(range(1, 33))
    for n in range(4):
        mine = [e.payload["i"] for e in events if e.actor == f"writer-{n}"]
        assert mine == list(range(8))


# -- lock status and lock break, on both stores ------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "dynamodb"])
def test_a_stuck_lock_is_shown_then_broken_with_a_reason_and_its_holder_fenced(
    ws: Workspace, kind: str, request: pytest.FixtureRequest
) -> None:
    if kind == "dynamodb":
        ws.write_inventory(state=request.getfixturevalue("table"))
    url = ws.run("lock", "status", "-o", "json").json()["state"]
    stuck = open_store(url).acquire("carol@crashed-laptop", "op-123", ttl_seconds=600)

    shown = ws.run("lock", "status")
    refused = ws.run("lock", "break", "--reason", "carol's laptop died")  # not a TTY, no --yes
    broken = ws.run("lock", "break", "--reason", "carol's laptop died", "--yes", actor="dave")

    assert shown.code == 4 and "lock held by carol@crashed-laptop" in shown.stdout
    assert refused.code == 64 and "--yes" in refused.stderr
    assert broken.code == 0, broken.stderr
    assert "ops resume op-123" in broken.stdout
    assert ws.run("lock", "status").code == 0
    store = open_store(url)
    event = store.audit_events()[-1]
    assert (event.kind, event.actor, event.op_id) == ("lock.broken", person("dave"), "op-123")
    assert event.payload["reason"] == "carol's laptop died"
    assert event.payload["holder"] == "carol@crashed-laptop"
    with pytest.raises(LeaseLost):
        store.record_step(Step("op-123", "t", StepResult.VERIFIED, at=utcnow()), stuck)
    assert ws.run("lock", "break", "--reason", "again", "--yes").stdout.startswith("lock free")
    assert ws.run("lock", "break", "--reason", " ", "--yes").code == 64


# -- break-glass ------------------------------------------------------------------------------


@pytest.fixture
def state_proxy(dynamodb_local: DynamoDbLocal) -> Iterator[FaultProxy]:
    """A proxy in front of DynamoDB Local: the test cuts the state store off and back."""
    p = FaultProxy(dynamodb_local.url).start()
    yield p
    p.stop()


def test_revoke_and_restrict_run_on_a_spool_while_the_state_is_down_and_sync_uploads_it(
    ws: Workspace, state_proxy: FaultProxy
) -> None:
    url = make_table(f"dynamodb://ks-outage?region=us-east-1&endpoint_url={state_proxy.url}")
    ws.write_inventory(state=url)
    outage = state_proxy.add(lambda call: True, fault="reset")  # every connection dropped

    revoke = ws.run("revoke", "-m", "mythos-5", "-r", "!us-*", "--reason", "order", "--yes")
    restore = ws.run("restore", "-m", "all", "--reason", "too early", "--yes")
    restrict = ws.run(
        "restrict", "-m", "mythos-5", "-r", "us-east-1", "-a", "us-person", "--reason", "o", "--yes"
    )

    assert revoke.code == 0, revoke.stderr
    assert "BREAK-GLASS" in revoke.stderr and "state sync" in revoke.stderr
    assert restore.code == 1 and "cannot reach the state store" in restore.stderr
    assert restrict.code == 0, restrict.stderr
    assert all(ws.posture(r, "mythos-5") == "revoked" for r in NON_US)
    assert ws.posture("us-east-1", "mythos-5") == "restricted"
    spool_dir = ws.path / ".killswitch" / "spool"
    assert len(pending_spools(spool_dir, url)) == 2
    assert outage.fired > 0

    state_proxy.clear()  # the store is back
    synced = ws.run("state", "sync", "-o", "json")
    again = ws.run("state", "sync")

    assert synced.code == 0, synced.stderr
    assert len(synced.json()["spools"]) == 2
    assert again.code == 0 and "nothing to sync" in again.stdout
    assert pending_spools(spool_dir, url) == []
    ops = ws.run("ops", "list", "-o", "json").json()["ops"]
    assert sorted(o["action"] for o in ops) == ["restrict", "revoke"]
    assert {o["status"] for o in ops} == {"complete"}
    assert all(o["timing"]["verified_after"] is not None for o in ops)  # timed on the spool
    assert ws.run("drift").code == 0  # the ledger came along
    events = verified_chain(open_store(url))
    kinds = [e.kind for e in events]
    one_op = [
        "op.requested",
        "op.applying",
        "ledger.set",
        "op.finished",
        "op.timed",
        "state.synced",
    ]
    assert kinds == one_op * 2
    first = [e.payload["break_glass"] for e in events[:4]]
    assert [m["seq"] for m in first] == [1, 2, 3, 4]  # the spool's own order, kept
    assert ws.run("audit", "verify").code == 0  # the synced log backs every table
    assert all(e.payload["break_glass"]["at"] < e.at for e in events if e.kind != "state.synced")


def test_break_glass_falls_back_within_the_connect_timeout_when_the_store_hangs(
    tmp_path: Path, state_proxy: FaultProxy
) -> None:
    url = make_table(
        f"dynamodb://ks-hang?region=us-east-1&endpoint_url={state_proxy.url}&connect_timeout=1"
    )
    hang = state_proxy.add(lambda call: True, fault="hold")  # accepts, never answers
    started = time.monotonic()

    store = open_store(url, spool_dir=tmp_path)

    assert isinstance(store, SpoolStore)
    assert time.monotonic() - started < 3
    hang.gate.set()


def test_sync_refuses_a_spool_edited_after_the_fact(tmp_path: Path) -> None:
    url = "dynamodb://ks-any?region=us-east-1"
    spool = SpoolStore.open(tmp_path, url, reason="store down")
    lease = spool.acquire("alice", "op-1", 60)
    spool.record_step(Step("op-1", "t1", StepResult.VERIFIED, at=utcnow()), lease)
    spool.append_audit("alice", "op.finished", "op-1", {"status": "complete"})
    spool.release(lease)
    spool.close()
    path = pending_spools(tmp_path, url)[0]
    path.write_text(path.read_text().replace("verified", "failed"))
    target = open_store(f"sqlite:///{tmp_path / 'state.db'}")

    with pytest.raises(SpoolBroken, match=r":2: record edited"):
        sync(target, tmp_path, url, actor="bob", ttl_seconds=30)

    assert target.audit_events() == [] and target.list_ops() == []
    assert pending_spools(tmp_path, url) == [path]


def test_a_write_cut_short_by_a_crash_is_dropped_and_the_rest_of_the_spool_syncs(
    tmp_path: Path,
) -> None:
    url = "dynamodb://ks-any?region=us-east-1"
    spool = SpoolStore.open(tmp_path, url, reason="store down")
    lease = spool.acquire("alice", "op-1", 60)
    spool.record_step(Step("op-1", "t1", StepResult.STARTED, at=utcnow()), lease)
    spool.close()
    path = pending_spools(tmp_path, url)[0]
    with path.open("a") as spooled:
        spooled.write('{"n": 2, "kind": "step", "bo')  # the process died mid-write
    target = open_store(f"sqlite:///{tmp_path / 'state.db'}")

    uploads = sync(target, tmp_path, url, actor="bob", ttl_seconds=30)

    assert uploads[0].uploaded["journal"] == 1
    assert target.steps("op-1")["t1"].result is StepResult.STARTED
    assert [e.kind for e in target.audit_events()] == ["state.synced"]


# -- init and migration -------------------------------------------------------------------------


def test_state_init_creates_the_table_once_and_prints_its_cloudformation(
    ws: Workspace, dynamodb_local: DynamoDbLocal
) -> None:
    url = dynamodb_local.state_url("ks-init-test")

    first = ws.run("state", "init", "--url", url)
    second = ws.run("state", "init", "--url", url, "-o", "json")

    assert first.code == 0, first.stderr
    assert "created table ks-init-test" in first.stderr
    assert "Type: AWS::DynamoDB::Table" in first.stdout
    assert "BillingMode: PAY_PER_REQUEST" in first.stdout
    assert second.code == 0 and "exists" in second.json()["done"][0]
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=dynamodb_local.url)
    ttl = client.describe_time_to_live(TableName="ks-init-test")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_epoch"
    assert client.describe_table(TableName="ks-init-test")["Table"]["BillingModeSummary"][
        "BillingMode"
    ] == ("PAY_PER_REQUEST")


def test_an_inventory_naming_a_table_without_region_is_refused(ws: Workspace) -> None:
    ws.write_inventory(state="dynamodb://ks-state")

    result = ws.run("inventory", "validate")

    assert result.code == 64
    assert "region=REGION" in result.stderr


def test_state_moves_from_sqlite_to_dynamodb_and_back_with_its_chain_and_approvals(
    ws: Workspace, dynamodb_local: DynamoDbLocal
) -> None:
    assert ws.run("revoke", "-s", "outside-us", "--reason", "export order", "--yes").code == 0
    asked = ws.run("restore", "-s", "outside-us", "--reason", "review done", "--yes", "-o", "json")
    assert asked.code == 5
    sqlite_url = ws.run("lock", "status", "-o", "json").json()["state"]
    table = dynamodb_local.state_url("ks-migrated")
    assert ws.run("state", "init", "--url", table).code == 0

    moved = ws.run("state", "migrate", "--to", table, "-o", "json")
    again = ws.run("state", "migrate", "--to", table)

    assert moved.code == 0, moved.stderr
    assert moved.json()["verified"] is True and moved.json()["ops"] == 2
    assert again.code == 64 and "already holds state" in again.stderr
    ws.write_inventory(state=table)
    assert ws.run("audit", "verify").code == 0
    assert ws.run("drift").code == 0
    # The approval given on SQLite counts on DynamoDB: a second person completes the restore.
    approved = ws.run("approve", asked.json()["op"], "--yes", actor="bob")
    assert approved.code == 0, approved.stderr
    assert all(ws.posture(r, m) == "open" for r in NON_US for m in MODELS)

    back = ws.run("state", "migrate", "--to", "sqlite:///./back.db")

    assert back.code == 0, back.stderr
    shared, local = open_store(table), open_store(f"sqlite:///{ws.path / 'back.db'}")
    old = open_store(sqlite_url)
    assert verified_chain(local)[:-1] == verified_chain(shared)[:-1]
    assert verified_chain(old)[-1].kind == "state.migrated"
    assert local.list_ops() == shared.list_ops()
    assert local.ledger() == shared.ledger()
    op = asked.json()["op"]
    assert local.approvals(op) == shared.approvals(op) == [person("alice"), person("bob")]
    assert os.path.exists(ws.path / "back.db")


# -- the audit log resists editing on DynamoDB too ------------------------------------------


def _client(url: str) -> tuple[Any, str]:
    parsed = parse_dynamodb_url(url)
    return (
        boto3.client("dynamodb", region_name=parsed.region, endpoint_url=parsed.endpoint_url),
        parsed.table,
    )


def _event_key(seq: int) -> dict[str, Any]:
    return {"pk": {"S": "AUDIT"}, "sk": {"S": f"EVENT#{seq:012d}"}}


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "truncate"])
def test_tampering_with_audit_items_is_detected(shared: Workspace, table: str, tamper: str) -> None:
    shared.run("revoke", "-m", "all", "-r", "eu-*", "--reason", "export order", "--yes")
    assert shared.run("audit", "verify").code == 0
    client, name = _client(table)
    events = sorted(items(table, "AUDIT"), key=lambda i: i["sk"]["S"])
    events = [e for e in events if e["sk"]["S"].startswith("EVENT#")]
    assert len(events) >= 3
    if tamper == "edit":
        first = dict(events[0])
        first["actor"] = {"S": "someone-else"}
        client.put_item(TableName=name, Item=first)
    elif tamper == "delete":
        client.delete_item(TableName=name, Key=_event_key(2))
    elif tamper == "reorder":
        one, two = dict(events[0]), dict(events[1])
        one["sk"], two["sk"] = two["sk"], one["sk"]
        client.put_item(TableName=name, Item=one)
        client.put_item(TableName=name, Item=two)
    else:  # the newest event goes, as if the log had been cut short
        client.delete_item(TableName=name, Key={"pk": {"S": "AUDIT"}, "sk": events[-1]["sk"]})

    result = shared.run("audit", "verify", "-o", "json")

    assert result.code == 3, tamper
    assert result.json()["intact"] is False


def test_an_op_item_from_before_op_timing_loads_and_an_edited_timing_is_detected(
    shared: Workspace, table: str
) -> None:
    shared.run("revoke", "-m", "all", "-r", "eu-*", "--reason", "export order", "--yes")
    [op] = shared.run("ops", "list", "-o", "json").json()["ops"]
    client, name = _client(table)
    key = {"pk": {"S": f"OP#{op['id']}"}, "sk": {"S": "OP"}}
    timing = client.get_item(TableName=name, Key=key)["Item"]["timing"]["S"]
    assert json.loads(timing) == op["timing"] and op["timing"]["verified_after"] > 0

    # As an older killswitch wrote it: no timing attribute at all.
    client.update_item(TableName=name, Key=key, UpdateExpression="REMOVE timing")
    old = shared.run("ops", "show", op["id"], "-o", "json")
    assert old.code == 0 and old.json()["operation"]["timing"] is None
    assert "time to kill" not in shared.run("ops", "show", op["id"]).stdout
    assert shared.run("audit", "verify").code == 0  # a missing figure hides nothing

    edited = json.loads(timing) | {"verified_after": 0.5}
    client.update_item(
        TableName=name,
        Key=key,
        UpdateExpression="SET timing = :t",
        ExpressionAttributeValues={":t": {"S": json.dumps(edited)}},
    )
    result = shared.run("audit", "verify", "-o", "json")
    assert result.code == 3
    assert result.json()["problems"] == [
        f"op {op['id']}: its timing in the table differs from the log's (edited)"
    ]
