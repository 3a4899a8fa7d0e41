"""Lever iam-deny against moto's IAM over HTTP, in two accounts reached by assumed roles.

moto does not evaluate resource-level denies, so these tests assert the documents it
holds; test_aws_deny_effect.py puts them to an independent IAM evaluator.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import boto3
import pytest

from tests.conftest import Workspace, person
from tests.support.faultproxy import Call, FaultProxy, aws_query_error

ACCOUNTS = ["111111111111", "222222222222"]
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1"]
IDS = {"mythos-5": ["anthropic.mythos-5-v1:0"], "fable-5": ["anthropic.fable-5-v1:0"]}
# From AWS's Service Authorization Reference: Converse and ConverseStream are not IAM
# actions (AWS authorises them as InvokeModel and InvokeModelWithResponseStream).
MUST_DENY = {
    "bedrock:InvokeModel",
    "bedrock:InvokeModelWithResponseStream",
    "bedrock:CreateModelInvocationJob",
    "bedrock:CreateProvisionedModelThroughput",
    "bedrock:CreateInferenceProfile",
}


# moto answers faster than IAM's published 20 reads/s: the tests need not wait for it.
FAST_IAM = {"iam": {"read": 200, "write": 50}}


ACTIONS_BEFORE_0_2 = [
    "bedrock:InvokeModel",
    "bedrock:InvokeModelWithResponseStream",
    "bedrock:Converse",
    "bedrock:ConverseStream",
]


def iam_in(ws: Workspace, account: str) -> Any:
    """An IAM client acting in ``account`` (moto maps assumed-role keys to the account)."""
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=ws.server)
    creds = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/test-admin", RoleSessionName="test"
    )["Credentials"]
    return boto3.client(
        "iam",
        region_name="us-east-1",
        endpoint_url=ws.server,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def policy_arn(account: str, model: str) -> str:
    return f"arn:aws:iam::{account}:policy/killswitch/killswitch-deny-{model}"


def default_document(iam: Any, arn: str) -> dict[str, Any]:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document: dict[str, Any] = iam.get_policy_version(PolicyArn=arn, VersionId=version)[
        "PolicyVersion"
    ]["Document"]
    return document


def statements(iam: Any, arn: str) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in default_document(iam, arn)["Statement"]}


def resources(model: str) -> list[str]:
    """Every region (the condition picks them): the model, the profiles routing to it."""
    [model_id] = IDS[model]
    return [
        f"arn:aws:bedrock:*::foundation-model/{model_id}",
        f"arn:aws:bedrock:*:*:inference-profile/*.{model_id}",
        # No provisioned_models listed: any provisioned model could serve it.
        "arn:aws:bedrock:*:*:provisioned-model/*",
    ]


@pytest.fixture
def bedrock(ws: Workspace) -> Workspace:
    """Two accounts, each with the role and group that call Bedrock, and an unrelated policy."""
    for account in ACCOUNTS:
        iam = iam_in(ws, account)
        iam.create_role(RoleName="model-callers", AssumeRolePolicyDocument="{}")
        iam.create_group(GroupName="analysts")
        other = iam.create_policy(
            PolicyName="team-s3",
            PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
            '"Action":"s3:GetObject","Resource":"*"}]}',
        )["Policy"]["Arn"]
        iam.attach_role_policy(RoleName="model-callers", PolicyArn=other)
    _write_inventory(ws, groups=["analysts"], policy={"restore": {"approvals": 1}})
    return ws


@pytest.fixture
def bedrock_via_proxy(faulty_ws: Workspace) -> Workspace:
    return faulty_ws


def test_revoke_outside_us_denies_each_region_in_each_account(bedrock: Workspace) -> None:
    result = bedrock.run("revoke", "-m", "all", "-r", "!us-*", "--reason", "order", "--yes")

    assert result.code == 0, result.stdout + result.stderr
    for account, model in itertools.product(ACCOUNTS, IDS):
        iam = iam_in(bedrock, account)
        found = statements(iam, policy_arn(account, model))
        assert set(found) == {"KillswitchRevoked", "KillswitchGlobalRoutes"}
        statement = found["KillswitchRevoked"]
        assert statement["Effect"] == "Deny"
        assert set(statement["Action"]) >= MUST_DENY
        assert not any("Converse" in action for action in statement["Action"])
        assert statement["Resource"] == resources(model)
        # Every region but the listed US ones: unlisted regions and future ones too.
        assert statement["Condition"] == {
            "StringNotEquals": {"aws:RequestedRegion": ["us-east-1", "us-west-2"]}
        }
        [model_id] = IDS[model]
        assert (
            f"arn:aws:bedrock:::foundation-model/{model_id}"
            in (found["KillswitchGlobalRoutes"]["Resource"])
        )
        entities = iam.list_entities_for_policy(PolicyArn=policy_arn(account, model))
        assert [r["RoleName"] for r in entities["PolicyRoles"]] == ["model-callers"]
        assert [g["GroupName"] for g in entities["PolicyGroups"]] == ["analysts"]


def test_restrict_spares_principals_tagged_with_the_audience(bedrock: Workspace) -> None:
    bedrock.run("revoke", "-m", "mythos-5", "-r", "!us-*", "--reason", "order", "--yes")

    result = bedrock.run(
        "restrict", "-m", "mythos-5", "-r", "us-*", "-a", "us-person", "--reason", "order", "--yes"
    )

    assert result.code == 0, result.stdout
    found = statements(iam_in(bedrock, ACCOUNTS[0]), policy_arn(ACCOUNTS[0], "mythos-5"))
    assert found["KillswitchRestricted1"]["Condition"] == {
        "StringEquals": {"aws:RequestedRegion": ["us-east-1", "us-west-2"]},
        "StringNotEquals": {"aws:PrincipalTag/killswitch-audience": ["us-person"]},
    }
    # The revoke stays as it was: every region but the (now restricted) US ones.
    assert found["KillswitchRevoked"]["Condition"] == {
        "StringNotEquals": {"aws:RequestedRegion": ["us-east-1", "us-west-2"]}
    }


def test_one_iam_write_per_model_and_account(
    bedrock_via_proxy: Workspace, proxy: FaultProxy
) -> None:
    ws = bedrock_via_proxy
    _bedrock_inventory(ws)

    result = ws.run("revoke", "-m", "all", "--reason", "order", "--yes", "-o", "json")

    assert result.code == 0, result.stdout
    # Each listed region, and `unlisted` (every other region of the account).
    assert len(result.json()["targets"]) == len(IDS) * len(ACCOUNTS) * (len(REGIONS) + 1)
    # Four regions of one model in one account are one policy: one write for all of them.
    writes = proxy.count("CreatePolicy") + proxy.count("CreatePolicyVersion")
    assert writes == len(IDS) * len(ACCOUNTS)


def test_restore_switches_back_to_the_previous_version(bedrock: Workspace) -> None:
    iam = iam_in(bedrock, ACCOUNTS[0])
    arn = policy_arn(ACCOUNTS[0], "fable-5")
    bedrock.run("revoke", "-m", "fable-5", "-r", "eu-west-1", "--reason", "r", "--yes")
    before = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    bedrock.run("revoke", "-m", "fable-5", "--reason", "r2", "--yes")
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] != before

    result = bedrock.run("restore", "-m", "fable-5", "-r", "!eu-west-1", "--reason", "ok", "--yes")

    assert result.code == 0, result.stdout
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == before
    assert len(iam.list_policy_versions(PolicyArn=arn)["Versions"]) == 2
    assert set(statements(iam, arn)) == {"KillswitchRevoked", "KillswitchGlobalRoutes"}


def test_versions_stay_within_iams_limit_of_five(bedrock: Workspace) -> None:
    arn = policy_arn(ACCOUNTS[1], "mythos-5")
    # Seven restricts, each narrower than the last (restrict only ever tightens): seven
    # new policy versions.
    for i in range(7):
        audiences = [arg for n in range(1, 8 - i) for arg in ("-a", f"a{n}")]
        result = bedrock.run(
            "restrict", "-m", "mythos-5", *audiences, "--reason", f"step {i}", "--yes"
        )
        assert result.code == 0, result.stdout

    iam = iam_in(bedrock, ACCOUNTS[1])
    assert len(iam.list_policy_versions(PolicyArn=arn)["Versions"]) <= 5
    # Every region holds the same posture: one statement, no region condition.
    assert statements(iam, arn)["KillswitchRestricted1"]["Condition"] == {
        "StringNotEquals": {"aws:PrincipalTag/killswitch-audience": ["a1"]}
    }


def test_other_policies_are_never_touched(bedrock: Workspace) -> None:
    iam = iam_in(bedrock, ACCOUNTS[0])
    other = next(
        p for p in iam.list_policies(Scope="Local")["Policies"] if p["PolicyName"] == "team-s3"
    )

    bedrock.run("revoke", "-m", "all", "--reason", "r", "--yes")
    bedrock.run("restore", "-m", "all", "--reason", "r", "--yes")

    after = iam.get_policy(PolicyArn=other["Arn"])["Policy"]
    assert after["DefaultVersionId"] == other["DefaultVersionId"]
    assert len(iam.list_policy_versions(PolicyArn=other["Arn"])["Versions"]) == 1
    attached = iam.list_attached_role_policies(RoleName="model-callers")["AttachedPolicies"]
    assert other["Arn"] in {p["PolicyArn"] for p in attached}


def test_detached_policy_reads_as_open_and_revoke_reattaches(bedrock: Workspace) -> None:
    bedrock.run("revoke", "-m", "fable-5", "--reason", "r", "--yes")
    iam = iam_in(bedrock, ACCOUNTS[0])
    iam.detach_role_policy(RoleName="model-callers", PolicyArn=policy_arn(ACCOUNTS[0], "fable-5"))

    drift = bedrock.run("drift", "-m", "fable-5", "-o", "json")
    fixed = bedrock.run("revoke", "-m", "fable-5", "--reason", "r", "--yes")

    assert drift.code == 2
    drifted = {t["id"] for t in drift.json()["targets"] if t["result"] == "drift"}
    assert drifted == {
        f"aws:bedrock-org@{ACCOUNTS[0]}/{r}/iam-deny/fable-5" for r in [*REGIONS, "unlisted"]
    }
    assert fixed.code == 0
    roles = iam.list_entities_for_policy(PolicyArn=policy_arn(ACCOUNTS[0], "fable-5"))
    assert [r["RoleName"] for r in roles["PolicyRoles"]] == ["model-callers"]


def test_session_name_in_cloudtrail_carries_actor_and_op(
    bedrock_via_proxy: Workspace, proxy: FaultProxy
) -> None:
    ws = bedrock_via_proxy
    _bedrock_inventory(ws)
    names: list[str] = []
    proxy.add(lambda call: _session_name(call, names), fault="delay", delay=0)

    op = ws.run("revoke", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json").json()["op"]

    assert f"ks.{op}.{person('alice')}" in names


def test_throttling_and_a_lost_reply_still_end_verified(
    bedrock_via_proxy: Workspace, proxy: FaultProxy
) -> None:
    ws = bedrock_via_proxy
    _bedrock_inventory(ws)
    proxy.add(lambda call: call.action == "CreatePolicy", fault="lose-reply", times=1)
    # Every distinct read and write is throttled the first time it is sent: each one must
    # be retried (and the bucket slowed) before it gets through.
    seen: set[bytes] = set()

    def first_time(call: Call) -> bool:
        if call.action not in {"GetPolicy", "ListEntitiesForPolicy", "CreatePolicyVersion"}:
            return False
        key = (call.region or "").encode() + call.headers.get("Authorization", "")[:60].encode()
        key += call.body
        fresh = key not in seen
        seen.add(key)
        return fresh

    throttled = proxy.add(first_time, **aws_query_error("Throttling", "Rate exceeded"))

    result = ws.run("revoke", "-m", "all", "-r", "!us-*", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 0, result.stdout
    assert {t["result"] for t in result.json()["targets"]} == {"verified"}
    assert throttled.fired > 0
    for account, model in itertools.product(ACCOUNTS, IDS):
        iam = iam_in(ws, account)
        arn = policy_arn(account, model)
        # The lost CreatePolicy was not repeated: one policy, one version.
        assert len(iam.list_policy_versions(PolicyArn=arn)["Versions"]) == 1
        assert set(statements(iam, arn)) == {"KillswitchRevoked", "KillswitchGlobalRoutes"}


def test_regions_all_resolves_offline(bedrock: Workspace) -> None:
    providers = {
        "bedrock-org": {
            "type": "aws",
            "regions": "all",
            "mechanisms": ["iam-deny"],
            "endpoint_url": "http://127.0.0.1:9",  # nothing listens: validation must not call AWS
            "iam": {"roles": ["model-callers"]},
        }
    }
    bedrock.write_inventory(
        models={m: {"aws": {"bedrock_ids": ids}} for m, ids in IDS.items()},
        providers=providers,
        scopes={},
    )

    result = bedrock.run("inventory", "validate", "-o", "json")

    assert result.code == 0, result.stderr
    import botocore.session

    expected = len(botocore.session.get_session().get_available_regions("bedrock"))
    assert result.json()["targets"] == (expected + 1) * len(IDS)  # + `unlisted` (future regions)


def test_missing_bedrock_ids_is_an_inventory_error(bedrock: Workspace) -> None:
    text = (
        bedrock.inventory.read_text()
        .replace("- anthropic.fable-5-v1:0", "[]")
        .replace("bedrock_ids:\n      []", "bedrock_ids: []")
    )
    bedrock.inventory.write_text(text)

    result = bedrock.run("status")

    assert result.code == 64
    assert "iam-deny needs aws.bedrock_ids" in result.stderr


def _bedrock_inventory(ws: Workspace) -> None:
    for account in ACCOUNTS:
        iam = iam_in(ws, account)
        iam.create_role(RoleName="model-callers", AssumeRolePolicyDocument="{}")
    _write_inventory(ws, groups=[], policy={})


def _write_inventory(ws: Workspace, *, groups: list[str], policy: dict[str, Any]) -> None:
    """Both accounts through the operator role; the deny policy on model-callers (+ groups)."""
    ws.write_inventory(
        models={m: {"aws": {"bedrock_ids": ids}} for m, ids in IDS.items()},
        providers={
            "bedrock-org": {
                "type": "aws",
                "regions": REGIONS,
                "mechanisms": ["iam-deny"],
                "endpoint_url": ws.endpoint,
                "role_arn": "arn:aws:iam::{account}:role/killswitch-operator",
                "accounts": [{"id": a} for a in ACCOUNTS],
                "iam": {"roles": ["model-callers"], "groups": groups},
                "rate_limits": FAST_IAM,
            }
        },
        scopes={},
        policy={"retry": {"attempts": 8, "max_seconds": 30, "base_seconds": 0.05}, **policy},
    )


def _session_name(call: Call, names: list[str]) -> bool:
    if call.action == "AssumeRole":
        body = call.body.decode()
        for part in body.split("&"):
            if part.startswith("RoleSessionName="):
                from urllib.parse import unquote_plus

                names.append(unquote_plus(part.split("=", 1)[1]))
    return False


def test_an_allow_slipped_into_our_policy_fails_the_read_back_and_revoke_removes_it(
    bedrock: Workspace,
) -> None:
    bedrock.run("revoke", "-m", "fable-5", "-r", "eu-west-1", "--reason", "r", "--yes")
    iam = iam_in(bedrock, ACCOUNTS[0])
    arn = policy_arn(ACCOUNTS[0], "fable-5")
    document = default_document(iam, arn)
    # Someone with killswitch's own permissions grants themselves everything through it.
    document["Statement"].append(
        {"Sid": "KillswitchRevoked2", "Effect": "Allow", "Action": "*", "Resource": "*"}
    )
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(document), SetAsDefault=True)

    status = bedrock.run("status", "-m", "fable-5", "-r", "eu-west-1", "-o", "json")
    fixed = bedrock.run("revoke", "-m", "fable-5", "-r", "eu-west-1", "--reason", "r", "--yes")

    assert status.code != 0
    assert "KillswitchRevoked2: Effect 'Allow'" in status.stdout + status.stderr
    assert fixed.code == 0, fixed.stdout
    after = default_document(iam, arn)
    assert {s["Effect"] for s in after["Statement"]} == {"Deny"}
    assert "KillswitchRevoked2" not in {s["Sid"] for s in after["Statement"]}


def test_a_deny_edited_to_match_nothing_reads_as_open(bedrock: Workspace) -> None:
    bedrock.run("revoke", "-m", "fable-5", "--reason", "r", "--yes")
    iam = iam_in(bedrock, ACCOUNTS[1])
    arn = policy_arn(ACCOUNTS[1], "fable-5")
    document = default_document(iam, arn)
    # The bytes still look like ours, but the condition now spares every real region.
    for statement in document["Statement"]:
        statement["Condition"] = {"StringEquals": {"aws:RequestedRegion": ["xx-nowhere-1"]}}
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(document), SetAsDefault=True)

    drift = bedrock.run("drift", "-m", "fable-5", "-o", "json")

    assert drift.code == 2
    drifted = {t["id"] for t in drift.json()["targets"] if t["result"] == "drift"}
    assert drifted == {
        f"aws:bedrock-org@{ACCOUNTS[1]}/{r}/iam-deny/fable-5" for r in [*REGIONS, "unlisted"]
    }


def test_plan_says_which_unlisted_regions_an_exclusion_closes(bedrock: Workspace) -> None:
    result = bedrock.run("plan", "revoke", "-m", "mythos-5", "-r", "!us-*", "-o", "json")

    assert result.code == 2, result.stderr
    planned = {t["id"].split("/")[1] for t in result.json()["targets"]}
    assert "unlisted" in planned
    assert "closes the regions the inventory does not list" in result.stderr
    # A US region the inventory does not list is closed too: the warning names it.
    assert "us-east-2" in result.stderr


def test_status_warns_when_a_geography_profile_crosses_into_a_closed_region(
    bedrock: Workspace,
) -> None:
    bedrock.run("revoke", "-m", "fable-5", "-r", "eu-west-1", "--reason", "r", "--yes")

    result = bedrock.run("status", "-m", "fable-5")

    assert "geography profiles cross closed regions" in result.stderr
    assert "eu. inference profiles invoked in eu-central-1" in result.stderr


def test_a_policy_written_by_an_older_killswitch_is_read_by_its_effect_and_upgraded(
    bedrock: Workspace,
) -> None:
    iam = iam_in(bedrock, ACCOUNTS[0])
    [model_id] = IDS["mythos-5"]
    # Before 0.2: one statement per region, invoke actions only (Converse included).
    legacy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "KillswitchEuWest1",
                "Effect": "Deny",
                "Action": ACTIONS_BEFORE_0_2,
                "Resource": [
                    f"arn:aws:bedrock:eu-west-1::foundation-model/{model_id}",
                    f"arn:aws:bedrock:eu-west-1:*:inference-profile/*.{model_id}",
                ],
            }
        ],
    }
    arn = iam.create_policy(
        PolicyName="killswitch-deny-mythos-5",
        Path="/killswitch/",
        PolicyDocument=json.dumps(legacy),
    )["Policy"]["Arn"]
    iam.attach_role_policy(RoleName="model-callers", PolicyArn=arn)
    iam.attach_group_policy(GroupName="analysts", PolicyArn=arn)

    status = bedrock.run("status", "-m", "mythos-5", "-r", "eu-west-1", "-o", "json")
    revoke = bedrock.run(
        "revoke", "-m", "mythos-5", "-r", "ap-northeast-1", "--reason", "r", "--yes"
    )

    # Batch jobs and provisioned throughput were never denied: it reads as open, not as an
    # unreadable policy.
    [row] = [t for t in status.json()["targets"] if ACCOUNTS[0] in t["id"]]
    assert row["observed"]["posture"] == "open", status.stdout
    assert revoke.code == 0, revoke.stdout
    found = statements(iam, arn)
    # The rewrite keeps eu-west-1 closed (and now on every path) beside ap-northeast-1.
    assert found["KillswitchRevoked"]["Condition"] == {
        "StringEquals": {"aws:RequestedRegion": ["ap-northeast-1", "eu-west-1"]}
    }
    assert "KillswitchEuWest1" not in found
