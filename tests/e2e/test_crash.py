"""The CLI killed with SIGKILL at many points of an apply: recovery always finishes, no
target is left with an unknown step, and the ledger and the provider agree afterwards."""

from __future__ import annotations

import os
import random
import time

from tests.conftest import MODELS, NON_US, US, Workspace
from tests.support.faultproxy import FaultProxy, for_action

RUNS = int(os.environ.get("KILLSWITCH_CRASH_RUNS", "10"))  # `make soak` runs 200
SEED = int(os.environ.get("KILLSWITCH_CRASH_SEED", "20261127"))


def test_sigkill_at_seeded_points_then_recovery_converges(
    faulty_ws: Workspace, proxy: FaultProxy, fan_out: str
) -> None:
    ws = faulty_ws
    # With workers, every command starts two more interpreters: half the kill points
    # (another seed's), to keep the suite's time (`make soak` runs both at length).
    runs = RUNS if fan_out == "threads" or "KILLSWITCH_CRASH_RUNS" in os.environ else RUNS // 2
    ws.write_inventory(
        policy={"restore": {"approvals": 1}, "lock": {"ttl_seconds": 1, "heartbeat_seconds": 0.1}}
    )
    rng = random.Random(SEED if fan_out == "threads" else SEED + 1)
    targets = len(MODELS) * len(US + NON_US)
    tried = []
    checked: set[str] = set()  # ops whose every step was read and found done
    for run in range(runs):
        action = "revoke" if run % 2 == 0 else "restore"
        want = "revoked" if action == "revoke" else "open"
        # Kill while the n-th read or write of the apply is on the wire.
        call = rng.choice(["GetParameter", "PutParameter"])
        nth = rng.randint(1, targets * (2 if call == "GetParameter" else 1))
        tried.append((action, call, nth))
        proxy.clear()
        proxy.add(for_action(call), fault="delay", times=nth - 1)
        hold = proxy.add(for_action(call), fault="hold")
        process = ws.spawn(action, "-m", "all", "--reason", f"crash run {run}", "--yes")
        deadline = time.monotonic() + 60
        while hold.fired == 0 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.kill()
        process.communicate()
        hold.gate.set()
        proxy.clear()

        _recover(ws, action)

        assert all(ws.posture(r, m) == want for r in US + NON_US for m in MODELS), tried[-1]
        ops = ws.run("ops", "list", "-o", "json").json()["ops"]
        assert {o["status"] for o in ops} == {"complete"}, tried[-1]
        for op in ops:
            if op["id"] in checked:
                continue  # complete ops are never written again
            steps = ws.run("ops", "show", op["id"], "-o", "json").json()["targets"]
            assert {t["result"] for t in steps} <= {"verified", "skipped"}, (tried[-1], op)
            checked.add(op["id"])
        assert ws.run("drift").code == 0, tried[-1]
    assert ws.run("audit", "verify").code == 0
    assert len(set(tried)) > runs // 2  # the kill points really varied


def _recover(ws: Workspace, action: str) -> None:
    """What the on-call engineer does: resume what was cut short, or run it again."""
    for _ in range(50):
        running = [
            o
            for o in ws.run("ops", "list", "-o", "json").json()["ops"]
            if o["status"] != "complete"
        ]
        if running:
            result = ws.run("ops", "resume", running[0]["id"], "--yes")
        else:  # killed before the op was recorded: the same command again
            result = ws.run(action, "-m", "all", "--reason", "recover", "--yes")
        if result.code == 0:
            return
        assert result.code == 4, result.stderr  # the dead holder's lease: wait it out
        time.sleep(0.3)
    raise AssertionError("recovery did not converge")
