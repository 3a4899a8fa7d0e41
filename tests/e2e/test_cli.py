"""The installed ``killswitch`` command, run as its own process, as a user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.conftest import (
    MODELS,
    NON_US,
    US,
    Result,
    Workspace,
    killswitch_command,
    person,
    shows_next_step,
)
from tests.support.faultproxy import FaultProxy, for_action
from tests.support.processes import stderr_so_far, wait_for


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """The installed command; like every CLI call of the suite, an exit but 0 and 64 must
    name the next step."""
    done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        [killswitch_command(), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
        **kwargs,
    )
    result = Result(done.returncode, done.stdout, done.stderr)
    assert shows_next_step(result), f"exit {done.returncode} of {args} names no next step"
    return done


def test_help_does_not_import_cloud_sdks() -> None:
    probe = (
        "import sys; from killswitch.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    code = e.code\n"
        "loaded = [m for m in ('boto3', 'botocore', 'kubernetes', 'rich') if m in sys.modules]\n"
        "print(code, loaded, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.stderr.strip().splitlines()[-1] == "0 []"
    assert "revoke" in result.stdout


def test_python_dash_m_runs_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "killswitch", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0
    assert "Exit codes" in result.stdout


def test_a_usage_error_exits_64_not_2(ws: Workspace) -> None:
    result = _run("--inventory", str(ws.inventory), "revoke", "--no-such-flag")

    assert result.returncode == 64
    assert "--no-such-flag" in result.stderr


def test_missing_reason_exits_64(ws: Workspace) -> None:
    result = _run("--inventory", str(ws.inventory), "revoke", "-m", "all", "--yes")

    assert result.returncode == 64
    assert "--reason" in result.stderr


def test_without_a_terminal_revoke_needs_yes_and_changes_nothing(ws: Workspace) -> None:
    result = _run("--inventory", str(ws.inventory), "revoke", "-m", "all", "--reason", "r")

    assert result.returncode == 64
    assert "--yes" in result.stderr
    assert "Traceback" not in result.stderr
    assert all(ws.flag(r, m) is None for r in US + NON_US for m in MODELS)


def test_mistyped_region_exits_64_and_touches_nothing(ws: Workspace) -> None:
    result = _run(
        "--inventory",
        str(ws.inventory),
        "revoke",
        "-m",
        "all",
        "-r",
        "eu-wset-1",
        "--reason",
        "r",
        "--yes",
    )

    assert result.returncode == 64
    assert "eu-wset-1" in result.stderr
    assert "did you mean 'eu-west-1'" in result.stderr
    assert all(ws.flag(r, m) is None for r in US + NON_US for m in MODELS)


def test_acting_without_a_selector_is_refused(ws: Workspace) -> None:
    result = _run("--inventory", str(ws.inventory), "revoke", "--reason", "r", "--yes")

    assert result.returncode == 64
    assert "--model all" in result.stderr


def test_broken_inventory_exits_64_with_file_and_line(ws: Workspace) -> None:
    ws.inventory.write_text(ws.inventory.read_text().replace("ssm-flag", "ssm-flga"))

    result = _run("--inventory", str(ws.inventory), "status")

    assert result.returncode == 64
    assert f"{ws.inventory}:" in result.stderr
    assert "unknown mechanism 'ssm-flga'" in result.stderr
    assert "Traceback" not in result.stderr


def test_inventory_from_the_environment(ws: Workspace) -> None:
    result = _run(
        "inventory", "validate", env={**_env(), "KILLSWITCH_INVENTORY": str(ws.inventory)}
    )

    assert result.returncode == 0
    assert "16 targets" in result.stdout


def test_end_to_end_revoke_status_and_drift_as_a_user(ws: Workspace) -> None:
    base = ("--inventory", str(ws.inventory), "--actor", "oncall")
    revoke = _run(*base, "revoke", "-s", "outside-us", "--reason", "export order", "--yes")
    assert revoke.returncode == 0, revoke.stderr
    assert "complete" in revoke.stdout

    status = _run(*base, "status", "-o", "json")
    drift = _run(*base, "drift")

    assert status.returncode == 0
    assert drift.returncode == 0
    assert all(ws.posture(r, m) == "revoked" for r in NON_US for m in MODELS)


def test_a_second_revoke_told_not_to_wait_exits_4_naming_the_holder(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    # The first apply's writes are held at the proxy, so it sits inside its lock.
    hold = proxy.add(for_action("PutParameter"), fault="hold")
    args = ("revoke", "-m", "all", "--reason", "export order", "--yes")
    first = ws.spawn(*args, actor="alice")
    wait_for(lambda: proxy.count("PutParameter") > 0, "the first apply's writes")

    second = ws.spawn(*args, "--lock-timeout", "0", actor="bob")
    _, loser_err = second.communicate(timeout=120)
    hold.gate.set()
    first.communicate(timeout=120)

    assert (first.returncode, second.returncode) == (0, 4), loser_err
    assert f"lock held by {person('alice')} since" in loser_err
    assert "a tightening op" in loser_err
    assert "op-" in loser_err
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)
    # Every target was written exactly once: the applies never interleaved.
    assert proxy.count("PutParameter") == len(MODELS) * len(US + NON_US)
    # The refused run left no trace of an op that never was.
    events = ws.run("audit", "list", "-o", "json").json()["events"]
    assert [e["actor"] for e in events if e["kind"] == "op.requested"] == [person("alice")]


def test_a_second_revoke_waits_for_the_first_then_reads_everything_closed(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    hold = proxy.add(for_action("PutParameter"), fault="hold")
    first = ws.spawn("revoke", "-m", "all", "--reason", "order", "--yes", actor="alice")
    wait_for(lambda: proxy.count("PutParameter") > 0, "the first apply's writes")
    second = ws.spawn("revoke", "-s", "outside-us", "--reason", "order", "--yes", "-o", "json")
    wait_for(lambda: b"waiting" in stderr_so_far(second), "the second revoke to wait", second)

    hold.gate.set()
    out, err = second.communicate(timeout=120)
    first.communicate(timeout=120)

    assert (first.returncode, second.returncode) == (0, 0), err
    # Read under the lock, after the first finished: nothing left to change, nothing guessed.
    report = json.loads(out)
    assert report["status"] == "nothing-to-do"
    assert {t["result"] for t in report["targets"]} == {"no-change"}
    assert proxy.count("PutParameter") == len(MODELS) * len(US + NON_US)


def test_a_killed_revoke_is_finished_by_resume_without_waiting_out_its_lease(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    # A lease an hour long: only the dead holder's stopped heartbeat can free it in time.
    ws.write_inventory(policy={"lock": {"ttl_seconds": 3600, "heartbeat_seconds": 0.2}})
    proxy.add(for_action("PutParameter"), fault="delay", times=3)  # three writes go through …
    hold = proxy.add(for_action("PutParameter"), fault="hold")  # … the fourth hangs
    process = ws.spawn("revoke", "-m", "all", "--reason", "r", "--yes")
    wait_for(lambda: hold.fired > 0, "the fourth write")
    process.kill()  # SIGKILL mid-apply: no cleanup, lock still held, steps half-journaled
    process.communicate()
    hold.gate.set()
    proxy.clear()
    ops = ws.run("ops", "list", "-o", "json").json()["ops"]
    assert [o["status"] for o in ops] == ["running"]

    result = ws.run("ops", "resume", ops[0]["id"], "--yes", "-o", "json", actor="bob")

    assert result.code == 0, result.stderr
    assert {t["result"] for t in result.json()["targets"]} <= {"verified", "skipped"}
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)
    assert ws.run("drift").code == 0


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_a_script_asking_for_json_gets_its_errors_as_json_too(ws: Workspace) -> None:
    unknown = ws.run("approve", "op-nope", "--yes", "-o", "json")
    typo = ws.run("revoke", "-m", "no-such-model", "--reason", "r", "--yes", "-o", "json")

    for result in (unknown, typo):
        assert result.code == 64
        error = result.json()["error"]
        assert error["code"] == 64
        assert error["message"] and error["message"] in result.stderr


@pytest.mark.usefixtures("fan_out")  # Ctrl-C reaches the parent; its workers end with it
def test_ctrl_c_mid_revoke_marks_the_op_interrupted_and_names_the_resume(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    proxy.add(for_action("PutParameter"), fault="delay", times=3)  # three writes go through …
    hold = proxy.add(for_action("PutParameter"), fault="hold")  # … the fourth hangs
    # As from a terminal: SIGINT handled (a test runner's worker may have it ignored).
    process = ws.spawn("revoke", "-m", "all", "--reason", "r", "--yes", preexec_fn=_sigint)
    wait_for(lambda: hold.fired > 0, "the fourth write")
    process.send_signal(signal.SIGINT)  # the operator presses Ctrl-C
    _, err = process.communicate(timeout=60)
    hold.gate.set()
    proxy.clear()

    assert process.returncode == 3, err
    [op] = ws.run("ops", "list", "-o", "json").json()["ops"]
    assert op["status"] == "interrupted"
    assert f"killswitch ops resume {op['id']}" in err
    resumed = ws.run("ops", "resume", op["id"], "--yes")
    assert resumed.code == 0, resumed.stderr
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)


def _sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_plan_with_changes_pending_prints_the_command_that_applies_it(ws: Workspace) -> None:
    result = ws.run("plan", "revoke", "-m", "all", "-r", "!us-*", "-o", "json")

    assert result.code == 2
    assert result.json()["message"] == (
        "next: killswitch revoke --model all --region '!us-*' --reason '…'"
    )
    assert result.json()["next"] == "killswitch revoke --model all --region '!us-*' --reason '…'"
