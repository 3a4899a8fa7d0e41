"""`inventory validate --reach`: before the night it is needed, every credential, role,
secret and endpoint a kill would use is called once, reading only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.conftest import MODELS, Workspace
from tests.support.partnersim import PartnerSim
from tests.support.servers import free_port


@pytest.fixture
def acme() -> Iterator[PartnerSim]:
    sim = PartnerSim(secret="acme-secret", key_id="ks", regions=["eu-west"], models=MODELS)
    sim.start()
    yield sim
    sim.stop()


def _inventory(ws: Workspace, *, roles: list[str], partner_url: str) -> None:
    secret = ws.path / "acme.secret"
    secret.write_text("acme-secret")
    aws: dict[str, Any] = {
        "type": "aws",
        "regions": ["us-east-1", "eu-west-1"],
        "mechanisms": ["ssm-flag", "iam-deny"],
        "endpoint_url": ws.endpoint,
        "iam": {"roles": roles},
    }
    ws.write_inventory(
        models={m: {"aws": {"bedrock_ids": [f"anthropic.{m}-v1:0"]}} for m in MODELS},
        providers={
            "aws-prod": aws,
            "acme": {
                "type": "partner",
                "base_url": partner_url,
                "key_id": "ks",
                "secret_file": str(secret),
                "regions": ["eu-west"],
                "models": {m: m for m in MODELS},
            },
        },
        scopes={},
    )


def test_everything_reachable_says_so_and_changes_nothing(ws: Workspace, acme: PartnerSim) -> None:
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=ws.server)
    iam.create_role(RoleName="bedrock-callers", AssumeRolePolicyDocument="{}")
    _inventory(ws, roles=["bedrock-callers"], partner_url=acme.url)

    result = ws.run("inventory", "validate", "--reach")

    assert result.code == 0, result
    assert "reachable: the state store and every provider answered" in result.stdout
    assert acme.count("writes") == 0
    assert iam.list_policies(Scope="Local")["Policies"] == []


def test_a_missing_role_and_a_partner_that_does_not_answer_are_named(ws: Workspace) -> None:
    boto3.client("iam", region_name="us-east-1", endpoint_url=ws.server).create_role(
        RoleName="bedrock-callers", AssumeRolePolicyDocument="{}"
    )
    _inventory(
        ws,
        roles=["bedrock-callers", "inference-callers"],
        partner_url=f"http://127.0.0.1:{free_port()}",  # nobody listens there
    )

    offline = ws.run("inventory", "validate")
    result = ws.run("inventory", "validate", "--reach", "-o", "json")

    assert offline.code == 0  # without --reach, nothing is called
    assert result.code == 3
    found = result.json()
    problems = found["unreachable"]
    assert problems["providers.aws-prod"] == [
        "the credentials' account: IAM role inference-callers (iam.roles) does not exist"
    ]
    [partner] = problems["providers.acme"]  # one lever read: the partner does not answer
    assert partner.startswith("partner:acme/eu-west/access-api/") and "refused" in partner
    assert "state" not in problems
    assert found["next"].startswith("killswitch ") and "inventory validate --reach" in found["next"]
