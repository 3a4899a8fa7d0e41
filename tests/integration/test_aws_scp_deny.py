"""Lever scp-deny against moto's Organizations: one service control policy per model,
attached to an OU and to an account the inventory names nowhere else, binding every
principal there; what it denies is decided by the independent IAM evaluator."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from tests.conftest import Workspace
from tests.integration.test_aws_deny_effect import LISTED, MODELS, US_PERSON, wrong_answers

SCP = "SERVICE_CONTROL_POLICY"
ALLOW_BEDROCK = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"}],
}


def org(ws: Workspace) -> Any:
    return boto3.client("organizations", region_name="us-east-1", endpoint_url=ws.server)


@pytest.fixture
def organisation(ws: Workspace) -> dict[str, str]:
    """An organisation with an OU for the ML teams and a research account elsewhere."""
    client = org(ws)
    client.create_organization(FeatureSet="ALL")
    root = client.list_roots()["Roots"][0]["Id"]
    ou = client.create_organizational_unit(ParentId=root, Name="ml")["OrganizationalUnit"]["Id"]
    account = client.create_account(Email="research@example.com", AccountName="research")
    targets = {"ou": ou, "account": account["CreateAccountStatus"]["AccountId"]}
    write_org_inventory(ws, scp={"targets": [ou, targets["account"]]})
    return targets


def write_org_inventory(ws: Workspace, **entry: Any) -> None:
    """One aws entry with scp-deny over the listed regions; ``entry`` adds keys to it."""
    ws.write_inventory(
        models={m: {"aws": spec} for m, spec in MODELS.items()},
        providers={
            "aws-org": {
                "type": "aws",
                "regions": LISTED,
                "mechanisms": ["scp-deny"],
                "endpoint_url": ws.endpoint,
                # moto is no rate-limited AWS: the tests need not wait for its quotas.
                "rate_limits": {"organizations": {"read": 200, "write": 50}},
                **entry,
            }
        },
        scopes={},
        policy={"restore": {"approvals": 1}},
    )


def scp(ws: Workspace, model: str) -> tuple[str, dict[str, Any], set[str]]:
    """(id, document, targets) of the model's SCP as moto holds it."""
    client = org(ws)
    [summary] = [
        p
        for p in client.list_policies(Filter=SCP)["Policies"]
        if p["Name"] == f"killswitch-deny-{model}"
    ]
    content = client.describe_policy(PolicyId=summary["Id"])["Policy"]["Content"]
    targets = client.list_targets_for_policy(PolicyId=summary["Id"])["Targets"]
    return summary["Id"], json.loads(content), {t["TargetId"] for t in targets}


def test_scp_revoke_outside_us_binds_every_principal_in_the_targets(
    ws: Workspace, organisation: dict[str, str]
) -> None:
    result = ws.run("revoke", "-m", "all", "-r", "!us-*", "--reason", "order", "--yes")

    assert result.code == 0, result.stdout + result.stderr
    full_access = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    scps = [full_access]
    for model in MODELS:
        _, document, attached = scp(ws, model)
        assert attached == set(organisation.values())
        scps.append(document)
    # Any principal of the research account, one the inventory names nowhere, with a
    # tag or without: the SCP binds them all.
    anyone = f"arn:aws:iam::{organisation['account']}:role/some-team-role"
    callers = {"tagged": (anyone, US_PERSON), "untagged": (anyone, {})}

    wrong = wrong_answers(
        {anyone: [ALLOW_BEDROCK]},
        callers,
        lambda model, region, who: region in LISTED and region.startswith("us-"),
        scps=scps,
    )

    assert wrong == []


def test_scp_restore_detaches_and_a_partial_restore_returns_the_previous_document(
    ws: Workspace, organisation: dict[str, str]
) -> None:
    ws.run("revoke", "-m", "fable-5", "-r", "eu-west-1", "--reason", "r", "--yes")
    policy_id, before, _ = scp(ws, "fable-5")
    ws.run("revoke", "-m", "fable-5", "--reason", "r2", "--yes")
    assert scp(ws, "fable-5")[1] != before

    partial = ws.run("restore", "-m", "fable-5", "-r", "!eu-west-1", "--reason", "ok", "--yes")

    assert partial.code == 0, partial.stdout + partial.stderr
    assert scp(ws, "fable-5") == (policy_id, before, set(organisation.values()))

    full = ws.run("restore", "-m", "fable-5", "--reason", "review done", "--yes")

    assert full.code == 0, full.stdout + full.stderr
    # Back to how the organisation was before the first revoke: attached nowhere.
    assert scp(ws, "fable-5")[2] == set()
    assert ws.run("drift", "-m", "fable-5").code == 0


def test_scp_deny_without_targets_is_an_inventory_error(
    ws: Workspace, organisation: dict[str, str]
) -> None:
    write_org_inventory(ws, scp={"targets": []})

    result = ws.run("plan", "revoke", "-m", "all")

    assert result.code == 64, result.stdout + result.stderr
    assert "scp-deny needs scp.targets" in result.stderr
    names = [p["Name"] for p in org(ws).list_policies(Filter=SCP)["Policies"]]
    assert names == ["FullAWSAccess"]  # nothing was created


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("scp", {"targets": ["ou-nope"]}, "providers.aws-org.scp.targets"),
        ("scp", {"targets": ["r-abcd"], "colour": "red"}, "providers.aws-org.scp.colour"),
    ],
)
def test_a_bad_scp_section_is_an_inventory_error_naming_the_field(
    ws: Workspace, field: str, value: Any, says: str
) -> None:
    write_org_inventory(ws, **{field: value})

    result = ws.run("plan", "revoke", "-m", "all")

    assert result.code == 64
    assert says in result.stderr
    assert "killswitch.yaml:" in result.stderr
