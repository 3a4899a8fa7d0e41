"""The elb-rule lever against ALBs in moto (over HTTP), read back from the server itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3

from killswitch.domain import Posture, Target
from killswitch.inventory import load
from tests.conftest import Workspace
from tests.support.faultproxy import FaultProxy, for_action

REGIONS = ["eu-west-1", "eu-central-1", "ap-northeast-1"]
MODELS = {
    "mythos-5": {"aws": {"route": {"path": "/v1/models/mythos-5/*"}}},
    "fable-5": {"aws": {"route": {"header": {"x-model": ["fable-5"]}}}},
}
MYTHOS_PATH = [
    {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/v1/models/mythos-5/*"]}}
]
FABLE_HEADER = [
    {
        "Field": "http-header",
        "HttpHeaderConfig": {"HttpHeaderName": "x-model", "Values": ["fable-5"]},
    }
]
REASON = ("--reason", "export order", "--yes", "-o", "json")


@dataclass(frozen=True)
class Alb:
    region: str
    arn: str
    listeners: tuple[str, ...]
    target_group: str


def elbv2(ws: Workspace, region: str) -> Any:
    return boto3.client("elbv2", region_name=region, endpoint_url=ws.server)


def make_alb(
    ws: Workspace, region: str, name: str, *, ports: tuple[int, ...] = (80,), tag: str | None = None
) -> Alb:
    """A VPC, two subnets, an ALB, a target group and listeners forwarding to it."""
    ec2 = boto3.client("ec2", region_name=region, endpoint_url=ws.server)
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)["Subnet"][
            "SubnetId"
        ]
        for i, zone in enumerate(zones)
    ]
    elb = elbv2(ws, region)
    tags = {"Tags": [{"Key": "killswitch:model", "Value": tag}]} if tag else {}
    lb = elb.create_load_balancer(Name=name, Subnets=subnets, **tags)["LoadBalancers"][0]
    group = elb.create_target_group(Name=f"{name}-tg", Protocol="HTTP", Port=80, VpcId=vpc)
    group_arn = group["TargetGroups"][0]["TargetGroupArn"]
    listeners = tuple(
        elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=port,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": group_arn}],
        )["Listeners"][0]["ListenerArn"]
        for port in ports
    )
    return Alb(region, lb["LoadBalancerArn"], listeners, group_arn)


def add_app_rule(ws: Workspace, alb: Alb, priority: int, path: str) -> str:
    """A rule the service team owns: killswitch must never touch it."""
    rule = elbv2(ws, alb.region).create_rule(
        ListenerArn=alb.listeners[0],
        Priority=priority,
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": [path]}}],
        Actions=[{"Type": "forward", "TargetGroupArn": alb.target_group}],
    )
    return str(rule["Rules"][0]["RuleArn"])


def rules(ws: Workspace, region: str, listener: str) -> dict[str, dict[str, Any]]:
    """Rule ARN → the rule as the server holds it, with its tags; no default rule."""
    elb = elbv2(ws, region)
    found = [r for r in elb.describe_rules(ListenerArn=listener)["Rules"] if not r["IsDefault"]]
    tags = {}
    if found:
        described = elb.describe_tags(ResourceArns=[r["RuleArn"] for r in found])
        tags = {
            d["ResourceArn"]: {t["Key"]: t["Value"] for t in d["Tags"]}
            for d in described["TagDescriptions"]
        }
    return {r["RuleArn"]: {**r, "Tags": tags.get(r["RuleArn"], {})} for r in found}


def killswitch_rules(ws: Workspace, region: str, listener: str, model: str) -> list[dict[str, Any]]:
    held = rules(ws, region, listener).values()
    return [r for r in held if r["Tags"].get("killswitch:model") == model]


def write_inventory(
    ws: Workspace, *, listeners: dict[str, list[str]] | None = None, regions: list[str] = REGIONS
) -> None:
    ws.write_inventory(
        models=MODELS,
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": regions,
                "mechanisms": ["elb-rule"],
                "endpoint_url": ws.endpoint,
                "elb": {"listeners": listeners} if listeners is not None else {},
                # moto is not AWS: no need to pace the calls as the real API wants.
                "rate_limits": {"elbv2": {"read": 1000, "write": 1000}},
            }
        },
        scopes={},
        policy={
            "restore": {"approvals": 1},
            "retry": {"attempts": 3, "max_seconds": 5, "base_seconds": 0.05},
        },
    )


def fleet(ws: Workspace) -> dict[str, Alb]:
    """One ALB per region, its listener named in the inventory."""
    albs = {region: make_alb(ws, region, "gateway") for region in REGIONS}
    write_inventory(ws, listeners={r: list(alb.listeners) for r, alb in albs.items()})
    return albs


def observe(ws: Workspace, region: str, model: str) -> Any:
    """The lever's own reading (its detail is for humans and not in any report yet)."""
    provider = load(ws.inventory).provider("aws-prod")
    return provider.mechanism("elb-rule").observe(
        Target("aws", "aws-prod", region, "elb-rule", model)
    )


def test_revoke_puts_a_json_403_rule_ahead_of_the_service_rules(ws: Workspace) -> None:
    albs = fleet(ws)
    theirs = {
        r: [add_app_rule(ws, a, 10, "/v1/*"), add_app_rule(ws, a, 20, "/health")]
        for r, a in albs.items()
    }
    before = {r: rules(ws, r, a.listeners[0]) for r, a in albs.items()}

    result = ws.run("revoke", "-m", "mythos-5", *REASON)

    assert result.code == 0, result.stderr
    op = result.json()["op"]
    for region, alb in albs.items():
        [ours] = killswitch_rules(ws, region, alb.listeners[0], "mythos-5")
        assert ours["Priority"] == "1"
        assert ours["Conditions"] == MYTHOS_PATH
        [action] = ours["Actions"]
        assert action["Type"] == "fixed-response"
        response = action["FixedResponseConfig"]
        assert response["StatusCode"] == "403"
        assert response["ContentType"] == "application/json"
        assert json.loads(response["MessageBody"]) == {
            "error": "model_unavailable",
            "model": "mythos-5",
            "reason": "access revoked",
        }
        assert "export order" not in response["MessageBody"]  # the operator's words stay inside
        assert ours["Tags"] == {"killswitch:model": "mythos-5", "killswitch:op": op}
        after = rules(ws, region, alb.listeners[0])
        assert {arn: after[arn] for arn in theirs[region]} == before[region]
        assert killswitch_rules(ws, region, alb.listeners[0], "fable-5") == []
    assert {t["observed"]["posture"] for t in result.json()["targets"]} == {"revoked"}


def test_revoke_takes_the_first_gap_when_priority_1_is_taken_and_says_so(ws: Workspace) -> None:
    alb = make_alb(ws, "eu-west-1", "gateway")
    theirs = [add_app_rule(ws, alb, p, f"/app{p}/*") for p in (1, 2, 4)]
    write_inventory(ws, listeners={"eu-west-1": list(alb.listeners)}, regions=["eu-west-1"])
    before = rules(ws, "eu-west-1", alb.listeners[0])

    assert ws.run("revoke", "-m", "mythos-5", *REASON).code == 0

    [ours] = killswitch_rules(ws, "eu-west-1", alb.listeners[0], "mythos-5")
    assert ours["Priority"] == "3"
    after = rules(ws, "eu-west-1", alb.listeners[0])
    assert {arn: after[arn] for arn in theirs} == before  # nobody was renumbered
    seen = observe(ws, "eu-west-1", "mythos-5")
    assert seen.access.posture is Posture.REVOKED
    assert "priority 3, after rules 1, 2" in seen.detail


def test_revoking_again_makes_no_write(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    ws = faulty_ws
    albs = fleet(ws)
    assert ws.run("revoke", "-m", "all", *REASON).code == 0
    assert proxy.count("CreateRule") == len(REGIONS) * len(MODELS)
    proxy.clear()

    again = ws.run("revoke", "-m", "all", *REASON)

    assert again.code == 0, again.stderr
    assert proxy.count("CreateRule") == 0
    assert proxy.count("DeleteRule") == 0
    assert proxy.count("DescribeRules") > 0  # it did look
    for region, alb in albs.items():
        assert len(killswitch_rules(ws, region, alb.listeners[0], "mythos-5")) == 1


def test_restore_removes_exactly_the_models_rule(ws: Workspace) -> None:
    albs = fleet(ws)
    theirs = {r: add_app_rule(ws, a, 1, "/v1/*") for r, a in albs.items()}
    assert ws.run("revoke", "-m", "all", *REASON).code == 0
    kept = {r: killswitch_rules(ws, r, a.listeners[0], "fable-5") for r, a in albs.items()}

    result = ws.run("restore", "-m", "mythos-5", "--reason", "order lifted", "--yes", "-o", "json")

    assert result.code == 0, result.stderr
    assert result.json()["status"] == "complete"
    for region, alb in albs.items():
        held = rules(ws, region, alb.listeners[0])
        assert killswitch_rules(ws, region, alb.listeners[0], "mythos-5") == []
        assert killswitch_rules(ws, region, alb.listeners[0], "fable-5") == kept[region]
        assert theirs[region] in held
        assert len(held) == 2  # the service's rule and fable-5's


def test_listeners_of_tagged_load_balancers_are_found_when_none_are_named(
    ws: Workspace,
) -> None:
    tagged = {r: make_alb(ws, r, "models", ports=(80, 8080), tag="mythos-5") for r in REGIONS}
    shared = make_alb(ws, "eu-west-1", "shared", tag="fable-5 mythos-5")
    other = make_alb(ws, "eu-west-1", "billing")
    write_inventory(ws)

    result = ws.run("revoke", "-m", "mythos-5", *REASON)

    assert result.code == 0, result.stderr
    for region, alb in tagged.items():
        for listener in alb.listeners:
            [ours] = killswitch_rules(ws, region, listener, "mythos-5")
            assert ours["Priority"] == "1"
    assert len(killswitch_rules(ws, "eu-west-1", shared.listeners[0], "mythos-5")) == 1
    assert rules(ws, "eu-west-1", other.listeners[0]) == {}


def test_header_route_becomes_an_http_header_condition(ws: Workspace) -> None:
    albs = fleet(ws)

    result = ws.run("revoke", "-m", "fable-5", "-r", "eu-central-1", *REASON)

    assert result.code == 0, result.stderr
    [ours] = killswitch_rules(ws, "eu-central-1", albs["eu-central-1"].listeners[0], "fable-5")
    assert ours["Conditions"] == FABLE_HEADER
    assert ours["Actions"][0]["Type"] == "fixed-response"
    for region in ("eu-west-1", "ap-northeast-1"):
        assert rules(ws, region, albs[region].listeners[0]) == {}


def test_restrict_is_refused_at_plan_time(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    ws = faulty_ws
    albs = fleet(ws)

    result = ws.run(
        "restrict", "-m", "all", "-a", "us-person", "--reason", "order", "--yes", "-o", "json"
    )
    plan = ws.run("plan", "restrict", "-m", "all", "-a", "us-person", "-o", "json")

    assert plan.code == 3
    assert plan.json()["status"] == "refused"
    assert {t["result"] for t in plan.json()["targets"]} == {"unsupported"}
    assert result.code == 3
    rows = {t["id"]: t for t in result.json()["targets"]}
    assert {r["result"] for r in rows.values()} == {"refused"}
    assert all("cannot express restricted" in r["error"] for r in rows.values())
    for region in REGIONS:
        for model in MODELS:
            assert f"aws:aws-prod/{region}/elb-rule/{model}" in rows
    assert proxy.count("CreateRule") == 0
    assert proxy.count("DeleteRule") == 0
    assert all(rules(ws, r, a.listeners[0]) == {} for r, a in albs.items())


def test_a_listener_missing_the_rule_reads_as_open_and_revoke_repairs_only_it(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    alb = make_alb(ws, "eu-west-1", "gateway", ports=(80, 443))
    write_inventory(ws, listeners={"eu-west-1": list(alb.listeners)}, regions=["eu-west-1"])
    assert ws.run("revoke", "-m", "mythos-5", *REASON).code == 0
    [removed] = killswitch_rules(ws, "eu-west-1", alb.listeners[1], "mythos-5")
    elbv2(ws, "eu-west-1").delete_rule(RuleArn=removed["RuleArn"])  # a hand edit

    seen = observe(ws, "eu-west-1", "mythos-5")

    assert seen.access.posture is Posture.OPEN
    assert alb.listeners[1].partition("/")[2] in seen.detail
    assert alb.listeners[0].partition("/")[2] not in seen.detail
    proxy.clear()
    assert ws.run("revoke", "-m", "mythos-5", *REASON).code == 0
    assert proxy.count("CreateRule") == 1
    assert all(len(killswitch_rules(ws, "eu-west-1", ls, "mythos-5")) == 1 for ls in alb.listeners)


def test_a_lost_create_reply_does_not_leave_two_rules(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    albs = fleet(ws)
    proxy.add(for_action("CreateRule"), fault="lose-reply", times=1)

    result = ws.run("revoke", "-m", "mythos-5", *REASON)

    assert result.code == 0, result.stderr
    assert proxy.count("CreateRule") == len(REGIONS)  # the retry found the rule and stopped
    for region, alb in albs.items():
        assert len(killswitch_rules(ws, region, alb.listeners[0], "mythos-5")) == 1


def test_a_rule_edited_to_forward_reads_as_open_and_revoke_replaces_it(ws: Workspace) -> None:
    alb = make_alb(ws, "eu-west-1", "gateway")
    write_inventory(ws, listeners={"eu-west-1": list(alb.listeners)}, regions=["eu-west-1"])
    assert ws.run("revoke", "-m", "mythos-5", *REASON).code == 0
    [edited] = killswitch_rules(ws, "eu-west-1", alb.listeners[0], "mythos-5")
    elbv2(ws, "eu-west-1").modify_rule(
        RuleArn=edited["RuleArn"],
        Actions=[{"Type": "forward", "TargetGroupArn": alb.target_group}],
    )
    assert observe(ws, "eu-west-1", "mythos-5").access.posture is Posture.OPEN

    assert ws.run("revoke", "-m", "mythos-5", *REASON).code == 0

    [ours] = killswitch_rules(ws, "eu-west-1", alb.listeners[0], "mythos-5")
    assert ours["RuleArn"] != edited["RuleArn"]
    assert ours["Priority"] == "2"  # created before the edited one at 1 was deleted
    assert ours["Actions"][0]["Type"] == "fixed-response"
    assert list(rules(ws, "eu-west-1", alb.listeners[0])) == [ours["RuleArn"]]


def test_a_region_with_no_listener_for_the_model_cannot_be_controlled(ws: Workspace) -> None:
    make_alb(ws, "eu-west-1", "gateway", tag="mythos-5")
    write_inventory(ws, regions=["eu-west-1", "eu-central-1"])

    result = ws.run("status", "-m", "mythos-5", "-o", "json")

    rows = {t["region"]: t for t in result.json()["targets"]}
    assert rows["eu-west-1"]["observed"]["posture"] == "open"
    error = rows["eu-central-1"]["error"]
    assert "mythos-5" in error
    assert "eu-central-1" in error
    assert "killswitch:model=mythos-5" in error


def test_restoring_what_was_never_revoked_writes_nothing(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    fleet(ws)

    result = ws.run("restore", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 0, result.stderr
    assert proxy.count("DeleteRule") == 0
