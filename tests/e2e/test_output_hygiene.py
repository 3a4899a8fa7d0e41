"""What reaches the terminal, the logs and the state: JSON where promised, no secrets."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import REGIONS, Result, Workspace, killswitch_command, shows_next_step
from tests.support.faultproxy import FaultProxy

SECRET = "sk-test-9f8e7d6c5b4a-DO-NOT-LEAK"


def _run(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": SECRET + "-token"}
    done = subprocess.run(
        [killswitch_command(), "--inventory", str(ws.inventory), "--log-level", "debug", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    result = Result(done.returncode, done.stdout, done.stderr)
    assert shows_next_step(result), f"exit {done.returncode} of {args} names no next step"
    return done


def test_secrets_never_reach_output_logs_state_or_flags(ws: Workspace) -> None:
    outputs = [
        _run(ws, "revoke", "-m", "all", "--reason", "r", "--yes"),
        _run(ws, "status", "-o", "json"),
        _run(ws, "drift"),
        _run(ws, "restore", "-m", "all", "--reason", "r", "--yes"),
        _run(ws, "audit", "list", "-o", "json"),
        _run(ws, "ops", "list"),
    ]

    for result in outputs:
        assert SECRET not in result.stdout
        assert SECRET not in result.stderr
    for path in ws.state_db.parent.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path
    flag = ws.flag("eu-west-1", "mythos-5")
    assert flag is not None
    assert SECRET not in json.dumps(flag)


def test_logs_are_json_lines_on_stderr_when_not_a_terminal(ws: Workspace) -> None:
    result = _run(ws, "revoke", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")

    assert result.returncode == 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "expected log lines at debug level"
    events = [json.loads(line) for line in lines]
    assert {"event", "level", "timestamp"} <= set(events[0])
    assert any(e["event"] == "op finished" and e["status"] == "complete" for e in events)
    assert json.loads(result.stdout)["status"] == "complete"  # stdout is only the report


def test_off_a_terminal_a_change_reports_each_target_done_as_a_json_line(ws: Workspace) -> None:
    result = subprocess.run(
        [killswitch_command(), "--inventory", str(ws.inventory), "revoke", "-m", "mythos-5",
         "--reason", "r", "--yes"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    starts = [(e["phase"], e["total"]) for e in progress if "target" not in e]
    done = [e for e in progress if "target" in e]
    assert starts == [("read", 8), ("apply", 8)]
    assert [(e["phase"], e["done"], e["total"]) for e in done] == [
        ("verify", n, 8) for n in range(1, 9)
    ]
    assert {e["target"] for e in done} == {f"aws:aws-prod/{r}/ssm-flag/mythos-5" for r in REGIONS}
    assert {e["result"] for e in done} == {"verified"}
    # The table on stdout is the report alone, a row a line, however wide.
    rows = [line for line in result.stdout.splitlines() if line.startswith("✓")]
    assert len(rows) == 8 and all(line.rstrip().endswith("verified") for line in rows)


def test_role_arn_is_assumed_before_any_write(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    ws = faulty_ws
    ws.write_inventory(
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": ["us-east-1", "eu-west-1"],
                "mechanisms": ["ssm-flag"],
                "endpoint_url": ws.endpoint,
                "role_arn": "arn:aws:iam::123456789012:role/killswitch-operator",
            }
        },
        scopes={},
    )

    result = ws.run("revoke", "-m", "all", "--reason", "r", "--yes")

    assert result.code == 0, result.stderr
    # Once to read (session killswitch-observe), once to write (session named after the op).
    assert proxy.count("AssumeRole") == 2
    assert ws.posture("eu-west-1", "fable-5") == "revoked"


def test_off_a_terminal_a_runbook_says_each_step_as_a_json_line(ws: Workspace) -> None:
    book = str(Path(__file__).resolve().parents[2] / "runbooks" / "global-emergency-off.yaml")
    result = _run(ws, "runbook", "run", book, "--var", "models=mythos-5", "--var", "ticket=T-1",
                  "--yes", "-o", "json")  # fmt: skip

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    steps = [(e["event"], e["step"]) for e in events if e["event"].startswith("step ")]
    assert steps == [
        ("step started", 1), ("step finished", 1),
        ("step started", 2), ("step finished", 2),
        ("step started", 3), ("step finished", 3),
    ]  # fmt: skip
    assert json.loads(result.stdout)["status"] == "complete"
