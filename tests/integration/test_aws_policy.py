"""`killswitch aws policy` prints the least privilege the inventory's levers need."""

from __future__ import annotations

from tests.conftest import Workspace


def test_policy_covers_each_lever_and_nothing_more(ws: Workspace) -> None:
    ws.write_inventory(
        models={"mythos-5": {"aws": {"bedrock_ids": ["anthropic.mythos-5-v1:0"]}}},
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": ["us-east-1", "eu-west-1"],
                "mechanisms": ["ssm-flag", "iam-deny"],
                "endpoint_url": ws.endpoint,
                "role_arn": "arn:aws:iam::{account}:role/killswitch-operator",
                "accounts": [{"id": "111111111111"}, {"id": "222222222222"}],
                "ssm_prefix": "/gateway/flags",
                "iam": {"roles": ["model-callers"]},
            }
        },
        scopes={},
    )

    result = ws.run("aws", "policy")

    assert result.code == 0, result.stderr
    policy = result.json()
    assert policy["Version"] == "2012-10-17"
    by_action = {a: s for s in policy["Statement"] for a in s["Action"]}
    assert by_action["ssm:PutParameter"]["Resource"] == "arn:aws:ssm:*:*:parameter/gateway/flags/*"
    assert by_action["iam:CreatePolicyVersion"]["Resource"] == (
        "arn:aws:iam::*:policy/killswitch/killswitch-deny-*"
    )
    attach = by_action["iam:AttachRolePolicy"]
    assert attach["Resource"] == "arn:aws:iam::*:role/model-callers"
    assert attach["Condition"] == {
        "ArnLike": {"iam:PolicyARN": "arn:aws:iam::*:policy/killswitch/killswitch-deny-*"}
    }
    assert "iam:AttachGroupPolicy" not in by_action  # the inventory names no groups
    assert by_action["sts:AssumeRole"]["Resource"] == [
        "arn:aws:iam::111111111111:role/killswitch-operator",
        "arn:aws:iam::222222222222:role/killswitch-operator",
    ]
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    assert not any(a.endswith(":*") for a in by_action)


def test_one_entrys_policy_by_name_and_a_mistyped_name_is_named(ws: Workspace) -> None:
    ws.write_inventory()

    one = ws.run("provider", "aws-prod", "policy")
    wrong = ws.run("provider", "aws-prd", "policy")

    assert one.code == 0, one.stderr
    actions = {a for s in one.json()["Statement"] for a in s["Action"]}
    assert "ssm:PutParameter" in actions
    assert wrong.code == 64 and "did you mean 'aws-prod'" in wrong.stderr
