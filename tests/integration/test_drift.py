"""Drift: the ledger against what the servers really say."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Workspace


def test_drift_finds_a_model_reopened_by_hand(ws: Workspace) -> None:
    ws.run("revoke", "-s", "outside-us", "--reason", "export order", "--yes")
    assert ws.run("drift").code == 0

    # At 2 a.m. someone re-enables mythos-5 in one region, bypassing killswitch.
    ws.ssm("ap-southeast-2").put_parameter(
        Name="/killswitch/models/mythos-5",
        Value=json.dumps({"posture": "open", "audience": []}),
        Type="String",
        Overwrite=True,
    )
    result = ws.run("drift", "-o", "json")

    assert result.code == 2
    drifted = [t for t in result.json()["targets"] if t["result"] == "drift"]
    assert [t["id"] for t in drifted] == ["aws:aws-prod/ap-southeast-2/ssm-flag/mythos-5"]
    assert drifted[0]["desired"]["posture"] == "revoked"
    assert drifted[0]["observed"]["posture"] == "open"


def test_drift_is_gone_after_revoking_again(ws: Workspace) -> None:
    ws.run("revoke", "-m", "fable-5", "--reason", "r", "--yes")
    ws.ssm("eu-west-1").delete_parameter(Name="/killswitch/models/fable-5")
    assert ws.run("drift", "-m", "fable-5").code == 2

    assert ws.run("revoke", "-m", "fable-5", "--reason", "r", "--yes").code == 0

    assert ws.run("drift", "-m", "fable-5").code == 0
    assert ws.posture("eu-west-1", "fable-5") == "revoked"


def test_a_target_no_op_touched_is_expected_open(ws: Workspace) -> None:
    ws.ssm("us-east-1").put_parameter(
        Name="/killswitch/models/fable-5",
        Value=json.dumps({"posture": "revoked", "audience": []}),
        Type="String",
    )

    result = ws.run("drift", "-o", "json")

    assert result.code == 2
    drifted = [t["id"] for t in result.json()["targets"] if t["result"] == "drift"]
    assert drifted == ["aws:aws-prod/us-east-1/ssm-flag/fable-5"]


def test_unreadable_flag_is_reported_not_guessed(ws: Workspace) -> None:
    ws.ssm("us-east-1").put_parameter(
        Name="/killswitch/models/fable-5", Value="not json", Type="String"
    )

    result = ws.run("drift", "-r", "us-east-1", "-m", "fable-5", "-o", "json")

    assert result.code == 3
    [target] = result.json()["targets"]
    assert target["result"] == "unreadable"
    assert "not a killswitch flag document" in target["error"]


@pytest.mark.parametrize("garbage", ["{garbage", "42", '"revoked"', "[]"])
def test_revoke_overwrites_an_unreadable_flag(ws: Workspace, garbage: str) -> None:
    ws.ssm("us-east-1").put_parameter(
        Name="/killswitch/models/fable-5", Value=garbage, Type="String"
    )

    result = ws.run("revoke", "-r", "us-east-1", "-m", "fable-5", "--reason", "r", "--yes")

    assert result.code == 0, result.stdout
    assert ws.posture("us-east-1", "fable-5") == "revoked"
