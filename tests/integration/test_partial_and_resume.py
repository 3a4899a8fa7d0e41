"""Failures injected for real (a proxy in front of moto): partial ops and resume."""

from __future__ import annotations

import pytest

from tests.conftest import MODELS, NON_US, US, Workspace
from tests.support.faultproxy import FaultProxy, aws_error, for_action, for_region

QUICK_RETRY = {"attempts": 2, "max_seconds": 5, "base_seconds": 0.05}

# The faults whose handling lives in the call itself (retries, timeouts, the whole-call
# bound, the deadline, a lost reply, resume) run twice: with the calls made by threads
# and by worker processes. The rest run once, with threads.
both_modes = pytest.mark.usefixtures("fan_out")


def test_one_failing_region_gives_exit_3_and_the_rest_is_revoked(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    proxy.add(
        for_region("eu-central-1", "PutParameter"),
        **aws_error("AccessDeniedException", "not allowed in eu-central-1"),
    )

    result = ws.run("revoke", "-m", "all", "--reason", "export order", "--yes", "-o", "json")

    assert result.code == 3
    report = result.json()
    assert report["status"] == "partial"
    failed = {t["id"]: t for t in report["targets"] if t["result"] == "failed"}
    assert set(failed) == {f"aws:aws-prod/eu-central-1/ssm-flag/{m}" for m in MODELS}
    assert all("AccessDeniedException" in t["error"] for t in failed.values())
    for region in US + NON_US:
        for model in MODELS:
            expected = "open" if region == "eu-central-1" else "revoked"
            assert ws.posture(region, model) == expected
    # A permanent error is not retried.
    assert proxy.count("PutParameter", "eu-central-1") == len(MODELS)


@both_modes
def test_ops_resume_finishes_a_partial_op(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    ws = faulty_ws
    proxy.add(
        for_region("ap-northeast-1", "PutParameter"), **aws_error("AccessDeniedException", "denied")
    )
    op = ws.run("revoke", "-m", "all", "--reason", "r", "--yes", "-o", "json").json()["op"]
    writes_elsewhere = proxy.count("PutParameter") - proxy.count("PutParameter", "ap-northeast-1")
    proxy.clear()  # the region's permissions are fixed

    result = ws.run("ops", "resume", op, "--yes", "-o", "json")

    assert result.code == 0, result.stderr
    assert result.json()["status"] == "complete"
    assert {t["result"] for t in result.json()["targets"]} == {"verified"}
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)
    # Only the failed targets were written again.
    assert proxy.count("PutParameter") == len(MODELS)
    assert writes_elsewhere == len(MODELS) * (len(US + NON_US) - 1)


def test_rerunning_the_same_command_resumes_the_partial_op(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    proxy.add(for_region("us-west-1", "PutParameter"), **aws_error("AccessDeniedException", "no"))
    args = ("revoke", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")
    first = ws.run(*args).json()
    proxy.clear()

    again = ws.run(*args)

    assert again.code == 0
    assert again.json()["op"] == first["op"]
    assert again.json()["status"] == "complete"
    assert ws.posture("us-west-1", "mythos-5") == "revoked"


@both_modes
def test_throttling_is_retried_until_verified(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    ws = faulty_ws
    throttle = proxy.add(
        for_action("PutParameter"), times=6, **aws_error("ThrottlingException", "Rate exceeded")
    )

    result = ws.run("revoke", "-m", "all", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 0, result.stdout
    assert {t["result"] for t in result.json()["targets"]} == {"verified"}
    assert throttle.fired == 6
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)


def test_server_errors_past_the_retry_budget_fail_the_target(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    proxy.add(
        for_region("eu-west-1", "PutParameter"),
        status=503,
        fault="error",
        body=b'{"__type":"ServiceUnavailable","message":"down"}',
    )

    result = ws.run("revoke", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 3
    failed = [t for t in result.json()["targets"] if t["result"] == "failed"]
    assert [t["region"] for t in failed] == ["eu-west-1"]
    # policy.retry.attempts in the test inventory is 3.
    assert proxy.count("PutParameter", "eu-west-1") == 3


@both_modes
def test_a_lost_reply_after_the_write_still_verifies(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    proxy.add(for_region("eu-west-1", "PutParameter"), fault="lose-reply", times=1)

    result = ws.run(
        "revoke", "-m", "mythos-5", "-r", "eu-west-1", "--reason", "r", "--yes", "-o", "json"
    )

    assert result.code == 0, result.stdout
    flag = ws.flag("eu-west-1", "mythos-5")
    assert flag is not None and flag["posture"] == "revoked"
    # The retry read the flag first and saw it was already there: one version only.
    assert flag["_version"] == 1


@both_modes
def test_a_hanging_region_fails_on_its_timeout_and_the_rest_is_revoked(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    with_call_timeout(ws, 1)
    # The server takes every write to ap-southeast-2 and never answers.
    hang = proxy.add(for_region("ap-southeast-2", "PutParameter"), fault="hold")

    result = ws.run("revoke", "-m", "all", "--reason", "r", "--yes", "-o", "json")
    hang.gate.set()

    assert result.code == 3
    failed = {t["id"]: t["error"] for t in result.json()["targets"] if t["result"] == "failed"}
    assert set(failed) == {f"aws:aws-prod/ap-southeast-2/ssm-flag/{m}" for m in MODELS}
    assert all("timeout" in error.lower() for error in failed.values())
    assert all(
        ws.posture(r, m) == "revoked" for r in US + NON_US if r != "ap-southeast-2" for m in MODELS
    )


@both_modes
def test_a_region_that_drips_its_replies_fails_on_the_whole_call_bound_and_the_rest_is_revoked(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    with_call_timeout(ws, 1)  # each read; the whole call: 1 s connect + 1 s read
    # Every read of eu-west-1 answers one byte every 0.3 s: no single read ever times out,
    # and a whole reply would take minutes.
    proxy.add(for_region("eu-west-1", "GetParameter"), fault="drip", delay=0.3)

    result = ws.run("revoke", "-m", "all", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 3, result.stderr
    failed = {t["id"]: t["error"] for t in result.json()["targets"] if t["result"] == "failed"}
    assert set(failed) == {f"aws:aws-prod/eu-west-1/ssm-flag/{m}" for m in MODELS}
    assert all("no complete reply within 2s" in error for error in failed.values())
    assert all(
        ws.posture(r, m) == "revoked" for r in US + NON_US if r != "eu-west-1" for m in MODELS
    )


@both_modes
def test_a_deadline_ends_the_op_on_time_even_while_a_write_hangs(
    faulty_ws: Workspace, proxy: FaultProxy, fan_out: str
) -> None:
    ws = faulty_ws
    # Each call may take 35 s by its own timeouts: only the op's deadline cuts it short.
    with_call_timeout(ws, 30, retry=None)
    hang = proxy.add(for_region("ap-southeast-2", "PutParameter"), fault="hold")
    # Worker processes start within the deadline too (an interpreter each, boto3 imported
    # afresh): on a loaded machine that takes seconds, so they get a longer one.
    deadline = 6 if fan_out == "threads" else 12

    result = ws.run(
        "revoke", "-m", "all", "--reason", "r", "--yes", "--deadline", str(deadline), "-o", "json"
    )
    hang.gate.set()

    assert result.code == 3, result.stderr
    report = result.json()
    failed = {t["id"]: t["error"] for t in report["targets"] if t["result"] == "failed"}
    assert set(failed) == {f"aws:aws-prod/ap-southeast-2/ssm-flag/{m}" for m in MODELS}
    for error in failed.values():
        bound = float(error.split("no complete reply within ")[1].split("s")[0])
        assert bound <= deadline, error  # cut by the deadline, not by the 30 s read timeout
    assert "ops resume" in report["message"]
    assert all(
        ws.posture(r, m) == "revoked" for r in US + NON_US if r != "ap-southeast-2" for m in MODELS
    )


def test_connection_resets_are_retried_until_verified(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    resets = proxy.add(for_action("PutParameter"), fault="reset", times=5)

    result = ws.run("revoke", "-m", "all", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 0, result.stdout
    assert resets.fired == 5
    assert {t["result"] for t in result.json()["targets"]} == {"verified"}
    assert all(ws.flag(r, m)["_version"] == 1 for r in US + NON_US for m in MODELS)  # type: ignore[index]


def with_call_timeout(ws: Workspace, seconds: float, retry: object = QUICK_RETRY) -> None:
    """The workspace's AWS entry with ``timeout_seconds`` (and, by default, few retries)."""
    overrides: dict[str, object] = {"policy": {"retry": retry}} if retry else {}
    ws.write_inventory(
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": US + NON_US,
                "mechanisms": ["ssm-flag"],
                "endpoint_url": ws.endpoint,
                "timeout_seconds": seconds,
            }
        },
        **overrides,
    )


def test_a_revoke_with_consent_given_reads_each_target_once_before_it_writes(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    """With --yes nobody looks at a preview, so none is read: each target is read under
    the lock, written, and read back. A slow read cannot eat the deadline twice."""
    result = faulty_ws.run("revoke", "-m", "all", "--reason", "r", "--yes")

    assert result.code == 0, result.stderr
    for region in US + NON_US:
        # one read under the lock and one read-back, per model
        assert proxy.count("GetParameter", region) == 2 * len(MODELS), region
        assert proxy.count("PutParameter", region) == len(MODELS), region
