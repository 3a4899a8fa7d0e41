"""Every lever we ship, and the outside example plug-in, through the conformance kit
(killswitch/testing.py) against real servers on 127.0.0.1: moto behind the fault proxy,
the Kubernetes test server, the partner simulator, a directory of flag files. Writes are
counted at the server, never by the lever.

Every AWS lever too: ``ssm-flag``, ``iam-deny``, ``scp-deny`` and ``elb-rule``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from killswitch.contract import Provider
from killswitch.domain import Posture, Target
from killswitch.inventory import load
from killswitch.testing import ContractBroken, conform
from tests.conftest import MOTO_ACCOUNT, Workspace
from tests.integration import test_kubernetes as shared
from tests.integration.test_kubernetes import Fleet
from tests.support.faultproxy import FaultProxy
from tests.support.partnersim import PartnerSim

# The Kubernetes fixtures: two test clusters and AWS in one inventory.
kube_server_class = shared.kube_server_class
clusters = shared.clusters
fleet = shared.fleet

EVERY_RULE = ["declared", "read-back", "one write", "declared postures only", "exact restore"]
READS = ("Get", "Describe", "List")


def provider_of(ws: Workspace, name: str) -> Provider:
    return load(ws.inventory).provider(name)


def target_of(provider: Provider, mechanism: str, model: str = "mythos-5") -> Target:
    return next(t for t in provider.targets() if t.mechanism == mechanism and t.model == model)


# ---------------------------------------------------------------- AWS


def test_ssm_flag_keeps_the_lever_contract(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    provider = provider_of(faulty_ws, "aws-prod")
    target = target_of(provider, "ssm-flag")
    lever: Any = provider.mechanism("ssm-flag")
    arn = f"arn:aws:ssm:{target.region}:{MOTO_ACCOUNT}:parameter{lever.parameter(target)}"

    def actions() -> list[str]:
        return [key.split("@")[0] for key, n in proxy.calls.items() for _ in range(n)]

    report = conform(
        provider,
        target,
        writes=lambda: sum(1 for a in actions() if not a.startswith(READS)),
        calls=lambda: [(a, arn) for a in actions()],
    )

    assert report.rules == [*EVERY_RULE, "permissions cover the calls"]
    assert [a.posture for a in report.applied] == [Posture.REVOKED, Posture.RESTRICTED, "open"]
    assert faulty_ws.posture(target.region, "mythos-5") == "open"


def aws_writes(proxy: FaultProxy) -> Callable[[], int]:
    """Every request the levers sent through the proxy that is not a read."""

    def count() -> int:
        return sum(n for key, n in proxy.calls.items() if not key.split("@")[0].startswith(READS))

    return count


def test_iam_deny_keeps_the_lever_contract(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    from tests.integration.test_aws_iam_deny import ACCOUNTS, _write_inventory, iam_in

    for account in ACCOUNTS:
        iam_in(faulty_ws, account).create_role(RoleName="model-callers",
                                               AssumeRolePolicyDocument="{}")  # fmt: skip
    _write_inventory(faulty_ws, groups=[], policy={"restore": {"approvals": 1}})
    provider = provider_of(faulty_ws, "bedrock-org")

    report = conform(provider, target_of(provider, "iam-deny"), aws_writes(proxy))

    assert report.rules == EVERY_RULE
    assert report.applied[-1].posture is Posture.OPEN


def test_scp_deny_keeps_the_lever_contract(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    from tests.integration.test_aws_scp_deny import org, write_org_inventory

    client = org(faulty_ws)
    client.create_organization(FeatureSet="ALL")
    root = client.list_roots()["Roots"][0]["Id"]
    ou = client.create_organizational_unit(ParentId=root, Name="ml")["OrganizationalUnit"]
    write_org_inventory(faulty_ws, scp={"targets": [ou["Id"]]})
    provider = provider_of(faulty_ws, "aws-org")

    report = conform(provider, target_of(provider, "scp-deny"), aws_writes(proxy))

    assert report.rules == EVERY_RULE
    assert report.applied[-1].posture is Posture.OPEN


def test_elb_rule_keeps_the_lever_contract(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    from tests.integration.test_aws_elb_rule import make_alb, write_inventory

    alb = make_alb(faulty_ws, "eu-west-1", "gateway")
    write_inventory(faulty_ws, listeners={"eu-west-1": list(alb.listeners)},
                    regions=["eu-west-1"])  # fmt: skip
    provider = provider_of(faulty_ws, "aws-prod")

    report = conform(provider, target_of(provider, "elb-rule"), aws_writes(proxy))

    assert report.rules == EVERY_RULE
    assert report.applied[-1].posture is Posture.OPEN


# ---------------------------------------------------------------- Kubernetes


def writes_to(fleet: Fleet) -> int:
    assert fleet.eu.server is not None
    return len(fleet.eu.server.writes)


def test_configmap_flag_keeps_the_lever_contract(fleet: Fleet) -> None:
    provider = provider_of(fleet.ws, "k8s-eu")
    gateway_conf = fleet.eu.get("ConfigMap", "serving", "killswitch-models")["data"]  # type: ignore[index]

    report = conform(provider, target_of(provider, "configmap-flag"), lambda: writes_to(fleet))

    assert report.rules == EVERY_RULE
    data = fleet.eu.get("ConfigMap", "serving", "killswitch-models")["data"]  # type: ignore[index]
    assert data["gateway.conf"] == gateway_conf["gateway.conf"]  # a bystander key, untouched
    assert json.loads(data["mythos-5"])["posture"] == "open"


def test_scale_keeps_the_lever_contract_and_restores_every_replica_count(fleet: Fleet) -> None:
    provider = provider_of(fleet.ws, "k8s-eu")

    def replicas() -> dict[str, int]:
        return {
            "serving/mythos-api": fleet.eu.replicas("serving", "mythos-api"),
            "serving/mythos-cache": fleet.eu.replicas("serving", "mythos-cache", "StatefulSet"),
            "batch/mythos-batch": fleet.eu.replicas("batch", "mythos-batch"),
        }

    report = conform(
        provider, target_of(provider, "scale"), lambda: writes_to(fleet), snapshot=replicas
    )

    assert report.rules == EVERY_RULE
    assert replicas() == {
        "serving/mythos-api": 3,
        "serving/mythos-cache": 2,
        "batch/mythos-batch": 1,
    }


def test_network_policy_keeps_the_lever_contract_and_leaves_no_policy_behind(
    fleet: Fleet,
) -> None:
    provider = provider_of(fleet.ws, "k8s-eu")

    def policies() -> list[object]:
        return [fleet.eu.policy(role, "mythos-5") for role in ("serving", "batch")]

    report = conform(
        provider, target_of(provider, "network-policy"), lambda: writes_to(fleet), snapshot=policies
    )

    assert report.rules == EVERY_RULE
    assert Posture.RESTRICTED in [a.posture for a in report.applied]
    assert policies() == [None, None]


# ---------------------------------------------------------------- partner


@pytest.fixture
def partner(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[PartnerSim]:
    sim = PartnerSim(
        secret="kit-secret", key_id="ks-kit", regions=["eu-west"], models=["mythos-5"]
    ).start()
    sim.behave(poll_after=0)
    monkeypatch.setenv("KIT_PARTNER_SECRET", "kit-secret")
    ws.write_inventory(
        providers={
            "acme": {
                "type": "partner",
                "base_url": sim.url,
                "key_id": "ks-kit",
                "secret_env": "KIT_PARTNER_SECRET",
                "regions": ["eu-west"],
                "models": {"mythos-5": "mythos-5"},
                "timeout_seconds": 2,
            }
        },
        scopes={},
    )
    yield sim
    sim.stop()


def test_partner_access_api_keeps_the_lever_contract(ws: Workspace, partner: PartnerSim) -> None:
    provider = provider_of(ws, "acme")

    report = conform(
        provider,
        target_of(provider, "access-api"),
        writes=lambda: partner.count("writes"),
        calls=lambda: [(r.method, r.path) for r in partner.requests],
    )

    assert report.rules == [*EVERY_RULE, "permissions cover the calls"]
    assert partner.posture("mythos-5", "eu-west") == "open"


# ---------------------------------------------------------------- the outside plug-in


@pytest.fixture
def files(ws: Workspace) -> Path:
    """An inventory with the example plug-in's type (examples/outside-lever)."""
    directory = ws.path / "flags"
    ws.write_inventory(
        providers={
            "edge-files": {
                "type": "jsonfile",
                "directory": str(directory),
                "regions": ["eu-west", "us-east"],
            }
        },
        scopes={},
        policy={"restore": {"approvals": 1}},
    )
    return directory


def versions(directory: Path) -> int:
    """Writes the directory has seen: each write moves its file's version on by one."""
    return sum(json.loads(p.read_text())["version"] for p in directory.glob("*/*.json"))


def test_the_outside_plug_in_keeps_the_lever_contract(ws: Workspace, files: Path) -> None:
    provider = provider_of(ws, "edge-files")

    report = conform(provider, target_of(provider, "flag-file"), lambda: versions(files))

    assert report.rules == EVERY_RULE
    assert [a.posture for a in report.applied] == [Posture.REVOKED, Posture.RESTRICTED, "open"]
    assert versions(files) == 3  # one write per change, none for the repeats


def posture_file(files: Path, region: str, model: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((files / region / f"{model}.json").read_text())
    return found


def test_the_outside_plug_in_revokes_restricts_drifts_and_restores_through_the_cli(
    ws: Workspace, files: Path
) -> None:
    revoke = ws.run("revoke", "-m", "mythos-5", "-r", "eu-*", "--reason", "order", "--yes")
    restrict = ws.run("restrict", "-m", "mythos-5", "-a", "us-person", "--reason", "order", "--yes")

    assert revoke.code == 0, revoke.stdout + revoke.stderr
    assert restrict.code == 0, restrict.stdout + restrict.stderr
    assert posture_file(files, "eu-west", "mythos-5")["posture"] == "revoked"  # kept tighter
    assert posture_file(files, "us-east", "mythos-5")["audience"] == ["us-person"]
    assert not (files / "eu-west" / "fable-5.json").exists()

    opened = posture_file(files, "eu-west", "mythos-5") | {"posture": "open", "audience": []}
    (files / "eu-west" / "mythos-5.json").write_text(json.dumps(opened))  # someone re-opens
    drift = ws.run("drift", "-o", "json")
    healed = ws.run("drift", "--fix")

    assert drift.code == 2, drift.stdout + drift.stderr
    assert "edge-files" in drift.stdout
    assert healed.code == 0, healed.stdout + healed.stderr
    assert posture_file(files, "eu-west", "mythos-5")["posture"] == "revoked"

    restore = ws.run("restore", "-m", "mythos-5", "--reason", "review done", "--yes")

    assert restore.code == 0, restore.stdout + restore.stderr
    assert {posture_file(files, r, "mythos-5")["posture"] for r in ("eu-west", "us-east")} == {
        "open"
    }


def test_the_kit_names_the_lever_and_the_rule_a_repeat_write_breaks(
    ws: Workspace, files: Path
) -> None:
    provider = provider_of(ws, "edge-files")
    target = target_of(provider, "flag-file")
    counted = iter(range(1000))  # a server that sees a write on every count: never settles

    with pytest.raises(ContractBroken) as broken:
        conform(provider, target, lambda: next(counted))

    assert str(broken.value).startswith(
        f"lever jsonfile.flag-file at {target.id}: one write: applying revoked again made"
    )
