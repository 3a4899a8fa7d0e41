"""Worker processes make a large fan-out's calls (killswitch/workers.py): a worker that
dies mid-revoke never turns into a verified target, the op it leaves is resumed, and
the default rule starts workers only for a large plan on free cores."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from killswitch import workers
from tests.conftest import MODELS, NON_US, US, Workspace
from tests.integration.test_kill_safety import (
    EVERYWHERE,
    REVOKE_ALL,
    opening,
    postures,
    request_restore,
    with_safety_inventory,
)
from tests.support.faultproxy import Call, FaultProxy, aws_error, for_region
from tests.support.processes import wait_for


def person(ws: Workspace, name: str) -> Callable[[Call], bool]:
    """Whether a request is signed with ``name``'s access key."""
    key = ws.credentials(name)["AWS_ACCESS_KEY_ID"]
    return lambda call: f"Credential={key}/" in call.headers.get("Authorization", "")


def worker_pids(parent: int) -> list[int]:
    """The killswitch worker processes whose parent is ``parent`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"killswitch.workers" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_worker_killed_mid_revoke_leaves_its_targets_failed_and_resume_closes_them(
    faulty_ws: Workspace, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = faulty_ws
    monkeypatch.setenv(workers.ENV, "2")
    # Every write to eu-west-1 lands at the server, then its reply is held: the worker
    # dies after the write, before it could say so.
    held = proxy.add(for_region("eu-west-1", "PutParameter"), fault="hold")
    revoke = ws.spawn("revoke", "-m", "all", "--reason", "order", "--yes", "-o", "json")
    wait_for(lambda: held.fired == len(MODELS), "eu-west-1's writes in flight", revoke)
    pids = worker_pids(revoke.pid)
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    out, err = revoke.communicate(timeout=120)
    held.gate.set()
    proxy.clear()

    assert revoke.returncode == 3, err
    report = json.loads(out)
    assert report["status"] == "partial"
    results = {t["id"]: t for t in report["targets"]}
    # Whatever the server holds, a target whose worker died is never reported verified.
    for model in MODELS:
        lost = results[f"aws:aws-prod/eu-west-1/ssm-flag/{model}"]
        assert lost["result"] == "failed", lost
        assert "worker process" in lost["error"] and "ops resume" in lost["error"]
    assert "ops resume" in report["message"]

    resumed = ws.run("ops", "resume", report["op"], "--yes", "-o", "json")
    assert resumed.code == 0, resumed.stderr
    assert {t["result"] for t in resumed.json()["targets"]} <= {"verified", "skipped"}
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)
    assert worker_pids(revoke.pid) == []


def test_a_workers_retried_write_after_a_takeover_is_refused_by_its_fence(
    faulty_ws: Workspace, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fence reaches the worker processes: bob's approved restore fails its first
    writes, and its workers are frozen mid-retry until carol's revoke has taken the lock
    over. Each retried write then asks bob's process for the lease first, and none
    leaves. (Freezing bob's own process could catch it inside a store transaction.)"""
    monkeypatch.setenv(workers.ENV, "2")
    ws = with_safety_inventory(faulty_ws, "sqlite:///./.killswitch/state.db")
    document = yaml.safe_load(ws.inventory.read_text())
    # Retries enough to outlast the test: each held read costs one try (its 2 s bound).
    document["policy"]["retry"] = {"attempts": 20, "max_seconds": 120, "base_seconds": 0.05}
    ws.inventory.write_text(yaml.safe_dump(document))
    assert ws.run(*REVOKE_ALL, "--reason", "export order").code == 0
    restore = request_restore(ws, "-m", "all")
    bob = person(ws, "bob")
    failing = proxy.add(
        lambda c: opening(c) and bob(c), **aws_error("InternalServerError", "hiccup", 500)
    )
    retrying: set[tuple[str | None, bytes]] = set()  # targets whose retry is reading

    def retry_read(call: Call) -> bool:
        if bob(call) and call.action == "GetParameter" and failing.fired > 0:
            retrying.add((call.region, call.body))
            return True
        return False

    retried = proxy.add(retry_read, fault="hold")
    approve = ws.spawn("approve", restore, "--yes", actor="bob")
    # Every target's first write failed and its retry reads (held): no write is in flight.
    wait_for(lambda: len(retrying) == len(EVERYWHERE), "every target's retry", approve)
    frozen = worker_pids(approve.pid)
    assert len(frozen) == 2
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        failing.times = failing.fired  # from now on bob's writes would go through
        sent = proxy.add(lambda c: opening(c) and bob(c), fault="delay", delay=0)
        taken = ws.run(*REVOKE_ALL, "--reason", "escalated", "-o", "json", actor="carol")
        retried.gate.set()
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    _, err = approve.communicate(timeout=120)

    assert taken.code == 0, taken.stderr
    assert approve.returncode == 4, err  # its lease was lost: it stops
    assert sent.fired == 0  # no write of the fenced restore left after the takeover
    assert set(postures(ws).values()) == {"revoked"}


def test_workers_start_only_for_a_large_plan_on_free_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(workers.ENV, raising=False)
    assert workers.how_many("auto", workers.MIN_TARGETS - 1) == 0
    assert workers.how_many(0, 100_000) == 0
    assert workers.how_many(3, 10) == 3
    expected = max(0, min(workers.MAX_WORKERS, workers.free_cores() - 1))
    assert workers.how_many("auto", workers.MIN_TARGETS) == expected
    monkeypatch.setenv(workers.ENV, "2")  # forced: tests and benchmarks
    assert workers.how_many("auto", 1) == 2
    assert workers.how_many(0, 1) == 2
