"""What iam-deny really denies, decided by an independent IAM evaluator.

The real CLI revokes, restricts and restores against moto; then every path to each
model (direct calls, streaming, batch jobs, provisioned throughput, application and
system inference profiles, global routes, agents' service roles), in listed regions,
in regions the inventory does not list and in a region AWS has not opened yet, is put
to @cloud-copilot/iam-simulate with exactly the policies moto holds for the caller.
The paths and the expected answers are written here from AWS's Service Authorization
Reference, not taken from the code under test.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from tests.conftest import Workspace
from tests.support.iam_simulator import Ask, evaluate
from tests.support.servers import MotoServer
from tests.support.simulate_endpoint import SimulateEndpoint

ACCOUNT = "123456789012"  # moto's account for the test credentials
LISTED = ["us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1"]
UNLISTED = ["us-east-2", "eu-central-1", "ap-south-1", "sa-east-1", "mx-future-1"]
MODELS = {
    "mythos-5": {
        "bedrock_ids": ["anthropic.mythos-5-v1:0"],
        "application_profiles": ["mythosapp0001"],
        "provisioned_models": ["mythosprov001"],
    },
    "fable-5": {"bedrock_ids": ["anthropic.fable-5-v1:0", "anthropic.fable-5-lite-v1:0"]},
}
CALLER = f"arn:aws:iam::{ACCOUNT}:role/ml/model-callers"
AGENT = f"arn:aws:iam::{ACCOUNT}:role/agent-runner"
US_PERSON = {"killswitch-audience": "us-person"}
GEO = {"us": "us", "eu": "eu", "ap": "apac", "sa": "us", "mx": "us"}
ALLOW_BEDROCK = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"}],
}


def paths(model: str, region: str) -> list[tuple[str, str]]:
    """(action, resource) for every way to run or provision ``model`` in ``region``."""
    spec = MODELS[model]
    found = []
    for model_id in spec["bedrock_ids"]:
        fm = f"arn:aws:bedrock:{region}::foundation-model/{model_id}"
        geo = GEO[region.split("-", maxsplit=1)[0]]
        profile = f"arn:aws:bedrock:{region}:{ACCOUNT}:inference-profile/{geo}.{model_id}"
        found += [
            ("bedrock:InvokeModel", fm),
            ("bedrock:InvokeModelWithResponseStream", fm),
            ("bedrock:InvokeModel", profile),
            ("bedrock:InvokeModelWithResponseStream", profile),
            ("bedrock:CreateModelInvocationJob", fm),
            ("bedrock:CreateProvisionedModelThroughput", fm),
            ("bedrock:CreateInferenceProfile", fm),
            ("bedrock:CreateInferenceProfile", profile),
        ]
    for app in spec.get("application_profiles", []):
        arn = f"arn:aws:bedrock:{region}:{ACCOUNT}:application-inference-profile/{app}"
        found += [("bedrock:InvokeModel", arn), ("bedrock:InvokeModelWithResponseStream", arn)]
    # A model that lists no provisioned models: any provisioned model might serve it.
    for prov in spec.get("provisioned_models", ["someonesprov01"]):
        arn = f"arn:aws:bedrock:{region}:{ACCOUNT}:provisioned-model/{prov}"
        found += [("bedrock:InvokeModel", arn), ("bedrock:InvokeModelWithResponseStream", arn)]
    return found


def global_routes(model: str, source: str) -> list[tuple[str, str]]:
    """A global profile invoked from ``source``, and the region-less model ARN AWS checks."""
    found = []
    for model_id in MODELS[model]["bedrock_ids"]:
        found += [
            (
                "bedrock:InvokeModel",
                f"arn:aws:bedrock:{source}:{ACCOUNT}:inference-profile/global.{model_id}",
            ),
            ("bedrock:InvokeModel", f"arn:aws:bedrock:::foundation-model/{model_id}"),
        ]
    return found


Expect = Callable[[str, str, str], bool]  # (model, region or "global", caller) -> allowed


def reachable_paths(ws: Workspace, expect: Expect) -> list[str]:
    """Every request whose answer differs from ``expect``: a path left open, or a
    permitted caller blocked."""
    callers = {
        "us-person": (CALLER, US_PERSON),
        "other": (CALLER, {}),
        "agent": (AGENT, {}),
    }
    return wrong_answers({p: attached(ws, p) for p in (CALLER, AGENT)}, callers, expect)


def wrong_answers(
    identity: dict[str, list[dict[str, Any]]],
    callers: dict[str, tuple[str, dict[str, str]]],
    expect: Expect,
    scps: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Asks the evaluator about every path, region and caller in one batch."""
    asks: list[tuple[str, str, str, Ask]] = []
    for model, region, (who, (principal, tags)) in itertools.product(
        MODELS, LISTED + UNLISTED, callers.items()
    ):
        for action, resource in paths(model, region):
            asks.append((model, region, who, Ask(action, resource, region, principal, tags)))
        for action, resource in global_routes(model, region):
            asks.append((model, "global", who, Ask(action, resource, region, principal, tags)))
    answers = evaluate([a for *_, a in asks], identity, scps=scps or ())
    wrong = []
    for (model, region, who, ask), answer in zip(asks, answers, strict=True):
        if (answer == "Allowed") != expect(model, region, who):
            wrong.append(f"{who} {ask.action} {ask.resource} in {ask.region}: {answer}")
    return wrong


def attached(ws: Workspace, role_arn: str) -> list[dict[str, Any]]:
    """The policy documents moto holds for the role: what AWS would evaluate."""
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=ws.server)
    name = role_arn.rsplit("/", 1)[1]
    documents = []
    for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        version = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]["DefaultVersionId"]
        document = iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=version)
        raw = document["PolicyVersion"]["Document"]
        documents.append(raw if isinstance(raw, dict) else json.loads(raw))
    return documents


@pytest.fixture
def callers(ws: Workspace) -> Workspace:
    """A caller role under an IAM path and an agent's service role, both allowed Bedrock."""
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=ws.server)
    grant = iam.create_policy(PolicyName="team-bedrock", PolicyDocument=json.dumps(ALLOW_BEDROCK))
    for name, path in (("model-callers", "/ml/"), ("agent-runner", "/")):
        iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument="{}")
        iam.attach_role_policy(RoleName=name, PolicyArn=grant["Policy"]["Arn"])
    ws.write_inventory(
        models={m: {"aws": spec} for m, spec in MODELS.items()},
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": LISTED,
                "mechanisms": ["iam-deny"],
                "endpoint_url": ws.endpoint,
                "iam": {"roles": ["model-callers"], "agent_roles": ["agent-runner"]},
                "rate_limits": {"iam": {"read": 200, "write": 50}},  # moto is no rate-limited AWS
            }
        },
        scopes={},
        policy={"restore": {"approvals": 1}},
    )
    return ws


def is_us(region: str) -> bool:
    return region in LISTED and region.startswith("us-")


def test_export_control_revoke_outside_us_then_restrict_inside_leaves_no_path_open(
    callers: Workspace,
) -> None:
    revoked = callers.run("revoke", "-m", "all", "-r", "!us-*", "--reason", "order", "--yes")

    assert revoked.code == 0, revoked.stdout + revoked.stderr
    # Listed US regions stay open to everyone; every other region, listed or not (and one
    # AWS has not opened yet), and the global routes that could serve them, are closed.
    assert reachable_paths(callers, lambda model, region, who: is_us(region)) == []

    restricted = callers.run(
        "restrict", "-m", "all", "-r", "us-*", "-a", "us-person", "--reason", "order", "--yes"
    )

    assert restricted.code == 0, restricted.stdout + restricted.stderr

    def us_persons_in_us(model: str, region: str, who: str) -> bool:
        return is_us(region) and who == "us-person"

    assert reachable_paths(callers, us_persons_in_us) == []


def test_a_named_region_closes_only_that_region_and_the_global_routes(
    callers: Workspace,
) -> None:
    result = callers.run(
        "revoke", "-m", "mythos-5", "-r", "eu-west-1", "--reason", "jailbreak", "--yes"
    )

    assert result.code == 0, result.stdout + result.stderr

    def expect(model: str, region: str, who: str) -> bool:
        return model != "mythos-5" or region not in ("eu-west-1", "global")

    assert reachable_paths(callers, expect) == []


def test_restore_opens_every_path_again(callers: Workspace) -> None:
    callers.run("revoke", "-m", "all", "--reason", "r", "--yes")

    result = callers.run("restore", "-m", "all", "--reason", "review done", "--yes")

    assert result.code == 0, result.stdout + result.stderr
    assert reachable_paths(callers, lambda model, region, who: True) == []


@pytest.fixture
def simulating(
    callers: Workspace, moto: MotoServer
) -> Iterator[tuple[Workspace, SimulateEndpoint]]:
    """The inventory talks to an IAM that answers SimulatePrincipalPolicy, and opts in."""
    endpoint = SimulateEndpoint(moto.url).start()
    text = callers.inventory.read_text().replace(callers.endpoint, endpoint.url)
    callers.inventory.write_text(
        text.replace("agent_roles:", "verify_effect: true\n      agent_roles:")
    )
    yield callers, endpoint
    endpoint.stop()


def test_verify_effect_asks_aws_and_believes_it_over_the_document(
    simulating: tuple[Workspace, SimulateEndpoint],
) -> None:
    ws, endpoint = simulating

    revoked = ws.run("revoke", "-m", "fable-5", "-r", "eu-west-1", "--reason", "r", "--yes")

    assert revoked.code == 0, revoked.stdout + revoked.stderr
    assert endpoint.asked > 0
    # AWS now lets the caller role through on one path the document claims to close.
    endpoint.allowed_anyway.add(
        f"arn:aws:bedrock:eu-west-1:{ACCOUNT}:inference-profile/eu.anthropic.fable-5-lite-v1:0"
    )

    status = ws.run("status", "-m", "fable-5", "-r", "eu-west-1", "-o", "json")

    [row] = status.json()["targets"]
    assert row["observed"]["posture"] == "open"
    assert row["result"] == "drift"
