"""A restricted posture trusts the caller's audience tag; a session tag overrides the
role's own. A restrict is refused where a caller role's trust policy lets whoever
assumes it set that tag (iam-deny and scp-deny alike)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from providers.aws.trust import tag_session_risks
from tests.conftest import Workspace

TAG = "killswitch-audience"
ANYONE_IN_ACCOUNT = {"AWS": "arn:aws:iam::123456789012:root"}
UNSAFE = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "TeamAssumes",
            "Effect": "Allow",
            "Principal": ANYONE_IN_ACCOUNT,
            "Action": ["sts:AssumeRole", "sts:TagSession"],
        }
    ],
}
# The condition docs/aws.md recommends: sessions may carry tags, never the audience key.
PINNED = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": ANYONE_IN_ACCOUNT,
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {"ForAllValues:StringNotEquals": {"aws:TagKeys": [TAG]}},
        }
    ],
}


def callers_with_trust(ws: Workspace, trust: dict[str, Any], **iam: Any) -> Any:
    client = boto3.client("iam", region_name="us-east-1", endpoint_url=ws.server)
    client.create_role(RoleName="model-callers", AssumeRolePolicyDocument=json.dumps(trust))
    ws.write_inventory(
        models={"mythos-5": {"aws": {"bedrock_ids": ["anthropic.mythos-5-v1:0"]}}},
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": ["us-east-1", "eu-west-1"],
                "mechanisms": ["ssm-flag", "iam-deny"],
                "endpoint_url": ws.endpoint,
                "iam": {"roles": ["model-callers"], **iam},
                "rate_limits": {"iam": {"read": 200, "write": 50}},
            }
        },
        scopes={},
    )
    return client


def restrict(ws: Workspace, *extra: str) -> Any:
    return ws.run(
        "restrict", "-m", "mythos-5", "-r", "us-*", "-a", "us-person", "--reason", "order", *extra
    )


def test_restrict_is_refused_where_anyone_who_assumes_the_role_can_claim_us_person(
    ws: Workspace,
) -> None:
    iam = callers_with_trust(ws, UNSAFE)

    plan = ws.run("plan", "restrict", "-m", "mythos-5", "-r", "us-*", "-a", "us-person")
    result = restrict(ws, "--yes", "-o", "json")

    assert "role model-callers (TeamAssumes)" in plan.stdout
    assert "sts:TagSession" in plan.stdout
    assert result.code == 3, result.stdout + result.stderr
    by_lever = {t["id"].split("/")[2]: t["result"] for t in result.json()["targets"]}
    assert by_lever == {"ssm-flag": "verified", "iam-deny": "refused"}
    # Nothing of iam-deny was written: no policy claims a restriction it cannot keep.
    policies = iam.list_policies(Scope="Local", PathPrefix="/killswitch/")["Policies"]
    assert policies == []


def test_a_trust_policy_that_keeps_the_audience_key_out_of_sessions_passes(
    ws: Workspace,
) -> None:
    callers_with_trust(ws, PINNED)

    result = restrict(ws, "--yes")

    assert result.code == 0, result.stdout + result.stderr


def test_warn_mode_restricts_and_says_so_loudly(ws: Workspace) -> None:
    callers_with_trust(ws, UNSAFE, session_tags="warn")

    result = restrict(ws, "--yes")

    assert result.code == 0, result.stdout + result.stderr
    assert "restricted posture can be self-granted" in result.stderr


@pytest.mark.parametrize(
    ("statement", "safe"),
    [
        ({"Effect": "Allow", "Action": "sts:*"}, False),
        ({"Effect": "Allow", "NotAction": "sts:AssumeRole"}, False),
        ({"Effect": "Allow", "Action": "sts:AssumeRole"}, True),
        (
            {
                "Effect": "Allow",
                "Action": "sts:TagSession",
                "Condition": {"Null": {f"aws:RequestTag/{TAG}": "true"}},
            },
            True,
        ),
        (
            {
                "Effect": "Allow",
                "Action": "sts:TagSession",
                "Condition": {"StringEquals": {f"aws:RequestTag/{TAG}": "us-person"}},
            },
            False,
        ),
    ],
)
def test_which_trust_statements_let_a_session_claim_the_audience(
    statement: dict[str, Any], safe: bool
) -> None:
    document = {"Version": "2012-10-17", "Statement": [statement]}

    assert (tag_session_risks(document, TAG) == []) is safe


def test_a_deny_on_sessions_that_set_the_key_makes_any_allow_safe() -> None:
    deny = {
        "Effect": "Deny",
        "Action": "sts:TagSession",
        "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": [TAG]}},
    }
    document = {"Version": "2012-10-17", "Statement": [UNSAFE["Statement"][0], deny]}

    assert tag_session_risks(document, TAG) == []
