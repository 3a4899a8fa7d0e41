"""`killswitch aws policy` prints the least privilege the inventory's levers need: every
AWS call the providers and the shared state store make, and nothing more."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from parliament import analyze_policy_string

from tests.conftest import Workspace
from tests.support.iam_simulator import Ask, evaluate

ROOT = Path(__file__).resolve().parents[2]
# AWS authorises some calls as other actions (DynamoDB's developer guide: a transaction
# is authorised as each item action it holds).
AUTHORISED_AS = {
    "dynamodb:TransactWriteItems": {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:ConditionCheckItem",
    },
}
SERVICES = ("ssm", "iam", "sts", "elbv2", "organizations", "dynamodb")
OPERATOR = "arn:aws:iam::111111111111:role/killswitch-operator"


def full_inventory(ws: Workspace) -> None:
    """Every lever, two entries, roles and groups with agents, the shared state store."""
    models = {
        "mythos-5": {
            "aws": {"bedrock_ids": ["anthropic.mythos-5-v1:0"], "route": {"path": "/v1/m/*"}}
        }
    }
    entry = {
        "type": "aws",
        "regions": ["us-east-1", "eu-west-1"],
        "mechanisms": ["ssm-flag", "iam-deny", "scp-deny", "elb-rule"],
        "endpoint_url": ws.endpoint,
        "role_arn": "arn:aws:iam::{account}:role/killswitch-operator",
        "accounts": [{"id": "111111111111"}],
        "ssm_prefix": "/gateway/flags",
        "iam": {"roles": ["inference-callers"], "agent_roles": ["support-agent"]},
        "scp": {"targets": ["ou-ab12-cd34ef56", "333333333333"]},
    }
    second = {
        **entry,
        "accounts": [{"id": "222222222222"}],
        "iam": {"roles": ["batch-callers"], "groups": ["analysts"]},
    }
    ws.write_inventory(
        state="dynamodb://killswitch-state?region=us-east-1",
        models=models,
        providers={"aws-prod": entry, "aws-research": second},
        scopes={},
    )


def printed(ws: Workspace, *args: str) -> dict[str, Any]:
    result = ws.run("aws", "policy", *args)
    assert result.code == 0, result.stderr
    document: dict[str, Any] = result.json()
    return document


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

    policy = printed(ws)

    assert policy["Version"] == "2012-10-17"
    by_action = {a: s for s in policy["Statement"] for a in s["Action"]}
    assert by_action["ssm:PutParameter"]["Resource"] == "arn:aws:ssm:*:*:parameter/gateway/flags/*"
    # Drift discovery lists the path itself, which is its own ARN.
    assert by_action["ssm:GetParametersByPath"]["Resource"] == (
        "arn:aws:ssm:*:*:parameter/gateway/flags"
    )
    assert by_action["iam:CreatePolicyVersion"]["Resource"] == (
        "arn:aws:iam::*:policy/killswitch/killswitch-deny-*"
    )
    attach = by_action["iam:AttachRolePolicy"]
    # The role by name, under any IAM path (names are unique in an account).
    assert attach["Resource"] == [
        "arn:aws:iam::*:role/model-callers",
        "arn:aws:iam::*:role/*/model-callers",
    ]
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

    assert not any(a.startswith("dynamodb:") for a in by_action)  # state is SQLite here


def boto3_calls(path: Path) -> set[str]:
    """IAM actions of the boto3 operations a module calls: methods called on a client
    and operation names passed as strings, for the services the module names."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    strings: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
    loader = botocore.session.get_session()
    actions = set()
    for service in SERVICES:
        if service not in strings:
            continue
        model = loader.get_service_model(service)
        prefix = model.signing_name or model.endpoint_prefix
        for operation in model.operation_names:
            snake = botocore.xform_name(operation)
            if snake in names or snake in strings:
                actions.add(f"{prefix}:{operation}")
    return actions


def test_every_aws_call_the_providers_and_the_state_store_make_is_in_the_policy(
    ws: Workspace,
) -> None:
    full_inventory(ws)
    modules = [*sorted((ROOT / "providers" / "aws").glob("*.py"))]
    modules.append(ROOT / "killswitch" / "state" / "dynamodb.py")
    calls = {action: path.name for path in modules for action in boto3_calls(path)}

    policy = printed(ws)

    allowed = {a for s in policy["Statement"] for a in s["Action"]}
    assert len(calls) >= 25  # the scan found the levers' calls
    missing = {
        action: module
        for action, module in calls.items()
        if not AUTHORISED_AS.get(action, {action}) <= allowed
    }
    assert missing == {}


def test_the_policy_for_two_entries_is_valid_for_aws_and_parliament(ws: Workspace) -> None:
    full_inventory(ws)

    for document in (printed(ws), printed(ws, "--boundary")):
        sids = [s["Sid"] for s in document["Statement"]]
        assert len(sids) == len(set(sids)), sids  # a repeated Sid is MalformedPolicyDocument
        findings = analyze_policy_string(json.dumps(document)).findings
        assert [(f.issue, f.detail) for f in findings] == []
        # Both fit a customer-managed policy (a permissions boundary must be one).
        assert len(json.dumps(document, separators=(",", ":"))) <= 6144


@pytest.fixture
def operator_grants(ws: Workspace) -> dict[str, list[dict[str, Any]]]:
    full_inventory(ws)
    return {OPERATOR: [printed(ws)]}


def test_roles_under_an_iam_path_and_drift_discovery_are_allowed(
    ws: Workspace, operator_grants: dict[str, list[dict[str, Any]]]
) -> None:
    ours = "arn:aws:iam::111111111111:policy/killswitch/killswitch-deny-mythos-5"
    asks = [
        Ask(
            "iam:AttachRolePolicy",
            "arn:aws:iam::111111111111:role/ml/inference-callers",
            "us-east-1",
            OPERATOR,
        ),
        Ask(
            "iam:AttachRolePolicy",
            "arn:aws:iam::111111111111:role/support-agent",
            "us-east-1",
            OPERATOR,
        ),
        Ask(
            "ssm:GetParametersByPath",
            "arn:aws:ssm:eu-central-1:111111111111:parameter/gateway/flags",
            "eu-central-1",
            OPERATOR,
        ),
        Ask(
            "dynamodb:Query",
            "arn:aws:dynamodb:us-east-1:111111111111:table/killswitch-state/index/ops-by-time",
            "us-east-1",
            OPERATOR,
        ),
    ]
    context = {"iam:PolicyARN": ours}

    answers = evaluate(asks, operator_grants, context=context)

    assert answers == ["Allowed"] * len(asks)


def test_the_boundary_keeps_the_operator_from_granting_anything_else(ws: Workspace) -> None:
    full_inventory(ws)
    boundary = printed(ws, "--boundary")
    admin = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    ours = "arn:aws:iam::111111111111:policy/killswitch/killswitch-deny-mythos-5"
    other = "arn:aws:iam::111111111111:policy/team-admin"
    role = "arn:aws:iam::111111111111:role/killswitch-operator"

    def ask(action: str, resource: str) -> Ask:
        return Ask(action, resource, "us-east-1", OPERATOR)

    asks = [
        ask("iam:CreatePolicyVersion", ours),  # its own job
        ask("iam:CreatePolicyVersion", other),  # an Allow in someone else's policy
        ask("iam:PutRolePolicy", role),  # an inline Allow on itself
        ask("iam:DeleteRolePermissionsBoundary", role),
        ask("iam:AttachRolePolicy", "arn:aws:iam::111111111111:role/inference-callers"),
    ]

    answers = evaluate(
        asks, {OPERATOR: [admin]}, boundary=[boundary], context={"iam:PolicyARN": other}
    )

    allowed = [answer == "Allowed" for answer in answers]
    assert allowed == [True, False, False, False, False]


def test_one_entrys_policy_by_name_and_a_mistyped_name_is_named(ws: Workspace) -> None:
    ws.write_inventory()

    one = ws.run("provider", "aws-prod", "policy")
    wrong = ws.run("provider", "aws-prd", "policy")

    assert one.code == 0, one.stderr
    actions = {a for s in one.json()["Statement"] for a in s["Action"]}
    assert "ssm:PutParameter" in actions
    assert wrong.code == 64 and "did you mean 'aws-prod'" in wrong.stderr
