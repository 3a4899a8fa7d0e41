"""The Kubernetes provider: two clusters in two regions, in the same ops as the AWS
ssm-flag lever. Every assertion reads what the clusters (and moto) now hold.

The tests here use only what a real cluster offers too (seed objects, read them back,
scale by hand), so tests_cluster/ runs these same tests against the cluster in
$KUBECONFIG by overriding the ``clusters`` fixture. Tests that need the test server's
own powers (injected faults, a racing writer, the call log) live in
test_kubernetes_levers.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Result, Workspace
from tests.support.kubeserver import KubeServer, write_kubeconfig

Obj = dict[str, Any]
MODELS = {"mythos-5": {}, "fable-5": {"kubernetes": {"selector": "app.kubernetes.io/name=fable"}}}
LEVERS = ["configmap-flag", "scale", "network-policy"]
AWS_REGIONS = ["us-east-1", "eu-west-1"]
BEFORE = "killswitch.io/replicas-before"
US_SCALE = "kubernetes:k8s-us/us-east-1/scale/mythos-5"
AUDIENCE = "killswitch.io/audience"
# kind → (API attribute, method suffix); everything goes through the official client.
KINDS = {
    "Namespace": ("core", "namespace"),
    "ConfigMap": ("core", "config_map"),
    "Deployment": ("apps", "deployment"),
    "StatefulSet": ("apps", "stateful_set"),
    "NetworkPolicy": ("networking", "network_policy"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontal_pod_autoscaler"),
}


@dataclass
class Cluster:
    """One test cluster: its inventory entry, and a client to seed it and read it back.

    ``ns`` maps a role (serving, batch, gateway) to the namespace's real name, so the
    same tests run in a shared real cluster under unique names."""

    entry: str
    context: str
    kubeconfig: str
    region: str
    ns: dict[str, str]
    api: Any
    served: list[str] = field(default_factory=lambda: ["serving"])  # roles in the inventory
    server: KubeServer | None = None  # only for the test server

    def _api(self, kind: str) -> tuple[Any, str]:
        from kubernetes import client

        group, suffix = KINDS[kind]
        cls = {
            "core": client.CoreV1Api,
            "apps": client.AppsV1Api,
            "networking": client.NetworkingV1Api,
            "autoscaling": client.AutoscalingV2Api,
        }[group]
        return cls(self.api), suffix

    def create(self, kind: str, role: str | None, body: Obj) -> None:
        api, suffix = self._api(kind)
        if role is None:
            reply = getattr(api, f"create_{suffix}")(body, _preload_content=False)
        else:
            namespace = self.ns[role]
            reply = getattr(api, f"create_namespaced_{suffix}")(
                namespace, body, _preload_content=False
            )
        assert reply.data  # read to the end, so the connection goes back to the pool

    def get(self, kind: str, role: str, name: str) -> Obj | None:
        from kubernetes.client.exceptions import ApiException

        api, suffix = self._api(kind)
        try:
            reply = getattr(api, f"read_namespaced_{suffix}")(
                name, self.ns[role], _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        found: Obj = json.loads(reply.data)
        return found

    def replicas(self, role: str, name: str, kind: str = "Deployment") -> int:
        obj = self.get(kind, role, name)
        assert obj is not None, f"{kind} {role}/{name} is gone"
        return int(obj["spec"].get("replicas") or 0)

    def annotations(self, role: str, name: str, kind: str = "Deployment") -> dict[str, str]:
        obj = self.get(kind, role, name)
        assert obj is not None
        found: dict[str, str] = obj["metadata"].get("annotations") or {}
        return found

    def scale_by_hand(self, role: str, name: str, replicas: int) -> None:
        api, _ = self._api("Deployment")
        patch = {"spec": {"replicas": replicas}}
        reply = api.patch_namespaced_deployment(name, self.ns[role], patch, _preload_content=False)
        assert reply.data

    def flag(self, role: str, model: str) -> Obj | None:
        configmap = self.get("ConfigMap", role, "killswitch-models")
        value = ((configmap or {}).get("data") or {}).get(model)
        return None if value is None else dict(json.loads(value))

    def policy(self, role: str, model: str) -> Obj | None:
        return self.get("NetworkPolicy", role, f"killswitch-{model}")

    def entry_config(self) -> Obj:
        return {
            "type": "kubernetes",
            "context": self.context,
            "kubeconfig": self.kubeconfig,
            "region": self.region,
            "namespaces": [self.ns[role] for role in self.served],
            "mechanisms": LEVERS,
            "timeout_seconds": 5,
        }


# ---------------------------------------------------------------- seeding


def workload(name: str, replicas: int, labels: dict[str, str], kind: str = "Deployment") -> Obj:
    pod_labels = {"app": name, **labels}
    container = {"name": "server", "image": "registry.k8s.io/pause:3.9"}
    spec: Obj = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": pod_labels}, "spec": {"containers": [container]}},
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


MYTHOS = {"killswitch.io/model": "mythos-5"}
FABLE = {"app.kubernetes.io/name": "fable"}


def seed(cluster: Cluster, counts: dict[str, int]) -> None:
    """Namespaces, the model servers (``counts``: name → replicas), and bystanders."""
    audience = {AUDIENCE: "us-person"}
    for role, name in cluster.ns.items():
        labels = audience if role == "gateway" else {}
        cluster.create("Namespace", None, {"metadata": {"name": name, "labels": labels}})
    cluster.create("Deployment", "serving", workload("mythos-api", counts["mythos-api"], MYTHOS))
    cluster.create(
        "StatefulSet",
        "serving",
        workload("mythos-cache", counts["mythos-cache"], MYTHOS, kind="StatefulSet"),
    )
    cluster.create("Deployment", "serving", workload("fable-api", counts["fable-api"], FABLE))
    if "batch" in cluster.served:
        cluster.create("Deployment", "batch", workload("mythos-batch", 1, MYTHOS))
        cluster.create("Deployment", "batch", workload("fable-batch", 5, FABLE))
    # Bystanders: another team's service, policy and gateway settings.
    cluster.create("Deployment", "serving", workload("billing", 4, {"app.kubernetes.io/name": "b"}))
    cluster.create(
        "NetworkPolicy",
        "serving",
        {
            "metadata": {"name": "deny-egress"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]},
        },
    )
    cluster.create(
        "ConfigMap",
        "serving",
        {"metadata": {"name": "killswitch-models"}, "data": {"gateway.conf": "cache=30s"}},
    )


COUNTS = {
    "k8s-eu": {"mythos-api": 3, "mythos-cache": 2, "fable-api": 2},
    "k8s-us": {"mythos-api": 4, "mythos-cache": 1, "fable-api": 6},
}


@pytest.fixture
def kube_server_class() -> type[KubeServer]:
    """What each test cluster runs; test modules override this for a server with more powers."""
    return KubeServer


@pytest.fixture
def clusters(tmp_path: Path, kube_server_class: type[KubeServer]) -> Iterator[list[Cluster]]:
    """Two test clusters: eu-west-1 (namespaces serving and batch), us-east-1 (serving)."""
    eu, us = kube_server_class().start(), kube_server_class().start()
    kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", {"eu-prod": eu, "us-prod": us}))
    roles = {"serving": "serving", "batch": "batch", "gateway": "gateway-us"}
    found = [
        Cluster(
            "k8s-eu",
            "eu-prod",
            kubeconfig,
            "eu-west-1",
            roles,
            eu.client(retries=False),
            ["serving", "batch"],
            eu,
        ),
        Cluster(
            "k8s-us",
            "us-prod",
            kubeconfig,
            "us-east-1",
            {k: v for k, v in roles.items() if k != "batch"},
            us.client(retries=False),
            ["serving"],
            us,
        ),
    ]
    yield found
    for cluster in found:
        cluster.api.close()
        if cluster.server is not None:
            cluster.server.stop()


@dataclass
class Fleet:
    ws: Workspace
    eu: Cluster
    us: Cluster

    @property
    def clusters(self) -> list[Cluster]:
        return [self.eu, self.us]

    def run(self, *args: str) -> Result:
        return self.ws.run(*args)


@pytest.fixture
def fleet(ws: Workspace, clusters: list[Cluster]) -> Fleet:
    """The AWS ssm-flag lever in two regions and both clusters, in one inventory."""
    for cluster in clusters:
        seed(cluster, COUNTS[cluster.entry])
    providers: Obj = {
        "aws-prod": {
            "type": "aws",
            "regions": AWS_REGIONS,
            "mechanisms": ["ssm-flag"],
            "endpoint_url": ws.endpoint,
        }
    }
    providers |= {c.entry: c.entry_config() for c in clusters}
    ws.write_inventory(
        models=MODELS,
        providers=providers,
        scopes={},
        policy={
            "restore": {"approvals": 1},
            "retry": {"attempts": 3, "max_seconds": 5, "base_seconds": 0.05},
        },
    )
    return Fleet(ws, clusters[0], clusters[1])


def content(obj: Obj | None) -> Obj | None:
    """What a bystander is: its spec, data, labels and annotations (not its status, which
    a real cluster's controllers keep writing)."""
    if obj is None:
        return None
    meta = obj["metadata"]
    annotations = {  # without what a real Deployment controller adds on its own
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith("deployment.kubernetes.io/")
    }
    return {
        "spec": obj.get("spec"),
        "data": obj.get("data"),
        "labels": meta.get("labels"),
        "annotations": annotations,
    }


def bystanders(fleet: Fleet) -> dict[str, Obj | None]:
    found = {}
    for c in fleet.clusters:
        found[f"{c.entry}/billing"] = content(c.get("Deployment", "serving", "billing"))
        found[f"{c.entry}/deny-egress"] = content(c.get("NetworkPolicy", "serving", "deny-egress"))
        gateway = (c.get("ConfigMap", "serving", "killswitch-models") or {}).get("data", {})
        found[f"{c.entry}/gateway.conf"] = {"value": gateway.get("gateway.conf")}
    return found


def everything(fleet: Fleet, model: str) -> dict[str, str]:
    """The posture each lever holds, read from the servers themselves."""
    found = {f"aws/{r}": fleet.ws.posture(r, model) for r in AWS_REGIONS}
    for c in fleet.clusters:
        for role in c.served:
            flag = c.flag(role, model)
            found[f"{c.entry}/{role}/configmap"] = flag["posture"] if flag else "open"
            policy = c.policy(role, model)
            if policy is None:
                found[f"{c.entry}/{role}/policy"] = "open"
            else:
                found[f"{c.entry}/{role}/policy"] = (
                    "restricted" if policy["spec"].get("ingress") else "revoked"
                )
    return found


# ---------------------------------------------------------------- the tests


def test_revoke_closes_every_lever_in_both_clusters_and_aws_in_one_op(fleet: Fleet) -> None:
    result = fleet.run("revoke", "-m", "all", "--reason", "jailbreak", "--yes", "-o", "json")

    assert result.code == 0, result.stdout + result.stderr
    report = result.json()
    assert {t["provider"] for t in report["targets"]} == {"aws-prod", "k8s-eu", "k8s-us"}
    assert {t["result"] for t in report["targets"]} == {"verified"}
    for model in MODELS:
        assert set(everything(fleet, model).values()) == {"revoked"}, model
    for c in fleet.clusters:
        for name, count in COUNTS[c.entry].items():
            kind = "StatefulSet" if name == "mythos-cache" else "Deployment"
            assert c.replicas("serving", name, kind) == 0, (c.entry, name)
            assert c.annotations("serving", name, kind)[BEFORE] == str(count)
        assert c.flag("serving", "mythos-5")["op"] == report["op"]  # type: ignore[index]
    assert fleet.eu.replicas("batch", "mythos-batch") == 0
    policy = fleet.eu.policy("batch", "mythos-5")
    assert policy is not None
    assert policy["spec"]["podSelector"] == {"matchLabels": MYTHOS}
    assert fleet.eu.policy("serving", "fable-5")["spec"]["podSelector"] == {  # type: ignore[index]
        "matchLabels": FABLE
    }


def test_restrict_keeps_revoked_then_restore_to_an_audience_and_every_count_exactly(
    fleet: Fleet,
) -> None:
    fleet.run("revoke", "-m", "all", "--reason", "order", "--yes")
    restrict = fleet.run(
        "restrict", "-m", "all", "-a", "us-person", "--target", "!*/scale/*",
        "--reason", "order", "--yes", "-o", "json",
    )  # fmt: skip

    # restrict only tightens: what is revoked stays revoked.
    assert restrict.code == 0, restrict.stdout + restrict.stderr
    assert {t["result"] for t in restrict.json()["targets"]} == {"kept"}
    for model in MODELS:
        assert set(everything(fleet, model).values()) == {"revoked"}

    # Loosening revoked to us-person is a restore (this fleet's policy: one approval).
    loosen = fleet.run(
        "restore", "-m", "all", "-a", "us-person", "--target", "!*/scale/*",
        "--reason", "order", "--yes",
    )  # fmt: skip

    assert loosen.code == 0, loosen.stdout + loosen.stderr
    for model in MODELS:
        held = everything(fleet, model)
        assert set(held.values()) == {"restricted"}, held
    ingress = fleet.us.policy("serving", "mythos-5")["spec"]["ingress"]  # type: ignore[index]
    assert ingress == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {"key": AUDIENCE, "operator": "In", "values": ["us-person"]}
                        ]
                    }
                }
            ]
        }
    ]
    assert fleet.eu.flag("batch", "fable-5")["audience"] == ["us-person"]  # type: ignore[index]
    assert fleet.us.replicas("serving", "mythos-api") == 0  # scale stays revoked

    restore = fleet.run("restore", "-m", "all", "--reason", "fixed", "--yes")

    assert restore.code == 0, restore.stdout + restore.stderr
    for model in MODELS:
        assert set(everything(fleet, model).values()) == {"open"}, model
    for c in fleet.clusters:
        for name, count in COUNTS[c.entry].items():
            kind = "StatefulSet" if name == "mythos-cache" else "Deployment"
            assert c.replicas("serving", name, kind) == count, (c.entry, name)
            assert BEFORE not in c.annotations("serving", name, kind)
        assert c.flag("serving", "mythos-5")["posture"] == "open"  # type: ignore[index]
    assert fleet.eu.replicas("batch", "fable-batch") == 5


def test_restrict_is_refused_where_scale_cannot_express_it(fleet: Fleet) -> None:
    result = fleet.run(
        "restrict", "-m", "mythos-5", "-a", "us-person", "--reason", "r", "--yes", "-o", "json"
    )

    assert result.code == 3, result.stdout + result.stderr
    rows = {t["id"]: t for t in result.json()["targets"]}
    for scale in ("k8s-eu/eu-west-1", "k8s-us/us-east-1"):
        row = rows[f"kubernetes:{scale}/scale/mythos-5"]
        assert row["result"] == "refused"
        assert "cannot express restricted" in row["error"]
    # The levers that can restrict did; the scale lever wrote nothing.
    assert {r["result"] for r in rows.values()} == {"refused", "verified"}
    assert set(everything(fleet, "mythos-5").values()) == {"restricted"}


def test_an_autoscaler_refuses_its_target_and_the_revoke_closes_everything_else(
    fleet: Fleet,
) -> None:
    hpa = {
        "metadata": {"name": "mythos-api"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mythos-api"},
            "minReplicas": 3,
            "maxReplicas": 6,
        },
    }
    fleet.eu.create("HorizontalPodAutoscaler", "serving", hpa)

    result = fleet.run("revoke", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 3, result.stdout + result.stderr
    report = result.json()
    assert report["status"] == "partial"
    rows = {t["id"]: t for t in report["targets"]}
    refused = rows["kubernetes:k8s-eu/eu-west-1/scale/mythos-5"]
    serving = fleet.eu.ns["serving"]
    assert refused["result"] == "refused"
    assert f"HorizontalPodAutoscaler {serving}/mythos-api" in refused["error"]
    others = {r["result"] for i, r in rows.items() if i != refused["id"]}
    assert others == {"verified"}  # the autoscaler held up nothing else
    assert "ops resume" in report["message"]
    # Every other lever is closed at the servers; the autoscaled workload still serves.
    assert set(everything(fleet, "mythos-5").values()) == {"revoked"}
    assert fleet.eu.replicas("serving", "mythos-api") == 3
    assert fleet.us.replicas("serving", "mythos-api") == 0


def test_bystanders_are_never_touched(fleet: Fleet) -> None:
    before = bystanders(fleet)

    fleet.run("revoke", "-m", "all", "--reason", "r", "--yes")
    fleet.run(
        "restrict", "-m", "all", "-a", "us-person", "--target", "!*/scale/*",
        "--reason", "r", "--yes",
    )  # fmt: skip
    fleet.run("restore", "-m", "all", "--reason", "r", "--yes")

    assert bystanders(fleet) == before
    assert before["k8s-eu/gateway.conf"] == {"value": "cache=30s"}
    assert fleet.us.replicas("serving", "billing") == 4


def test_rerun_changes_nothing_in_any_cluster(fleet: Fleet) -> None:
    fleet.run("revoke", "-m", "all", "--reason", "r", "--yes")
    held = {
        (c.entry, role, kind, name): content(c.get(kind, role, name))
        for c in fleet.clusters
        for role in c.served
        for kind, name in [
            ("ConfigMap", "killswitch-models"),
            ("NetworkPolicy", "killswitch-mythos-5"),
            ("Deployment", "mythos-api" if role == "serving" else "mythos-batch"),
        ]
    }

    again = fleet.run("revoke", "-m", "all", "--reason", "r", "--yes", "-o", "json")

    assert again.code == 0 and again.json()["status"] == "already-done"
    by_entry = {c.entry: c for c in fleet.clusters}
    now = {key: content(by_entry[key[0]].get(key[2], key[1], key[3])) for key in held}
    assert now == held


def test_a_workload_scaled_by_hand_after_revoke_is_drift_not_overwritten(fleet: Fleet) -> None:
    fleet.run("revoke", "-m", "mythos-5", "--reason", "r", "--yes")
    fleet.us.scale_by_hand("serving", "mythos-api", 2)  # someone brings it back during the incident

    drift = fleet.run("drift", "-m", "mythos-5", "-o", "json")
    restore = fleet.run("restore", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")

    assert drift.code == 3, drift.stdout  # the scale lever cannot say one posture: unreadable
    row = next(t for t in drift.json()["targets"] if t["id"] == US_SCALE)
    assert row["result"] == "unreadable"
    serving = fleet.us.ns["serving"]
    assert f"drift: deployment {serving}/mythos-api was scaled to 2 by hand" in row["error"]
    assert restore.code == 3, restore.stdout + restore.stderr
    failed = [t for t in restore.json()["targets"] if t["result"] == "failed"]
    assert [t["id"] for t in failed] == [US_SCALE]
    assert "mythos-api was scaled to 2 by hand" in failed[0]["error"]
    assert fleet.us.replicas("serving", "mythos-api") == 2  # left as the person set it
    assert fleet.us.replicas("serving", "mythos-cache", "StatefulSet") == 1  # restored exactly
    assert fleet.eu.replicas("serving", "mythos-api") == 3


def test_rbac_is_valid_yaml_naming_a_role_per_namespace(fleet: Fleet) -> None:
    from killswitch import inventory
    from providers.kubernetes import KubernetesProvider
    from providers.kubernetes.rbac import to_yaml

    inv = inventory.load(fleet.ws.inventory)
    provider = inv.provider("k8s-eu")
    assert isinstance(provider, KubernetesProvider)

    document = yaml.safe_load(to_yaml(provider.least_privilege()))

    assert document["kind"] == "List"
    roles = document["items"]
    assert [(r["kind"], r["metadata"]["namespace"]) for r in roles] == [
        ("Role", fleet.eu.ns["serving"]),
        ("Role", fleet.eu.ns["batch"]),
    ]
    deployments = {
        verb
        for rule in roles[0]["rules"]
        if rule["apiGroups"] == ["apps"] and "deployments" in rule["resources"]
        for verb in rule["verbs"]
    }
    assert deployments == {"get", "list", "patch"}
    policy_names = {
        name
        for rule in roles[0]["rules"]
        if rule["resources"] == ["networkpolicies"]
        for name in rule.get("resourceNames", [])
    }
    assert policy_names == {"killswitch-mythos-5", "killswitch-fable-5"}


def test_a_network_policy_deleted_by_hand_is_found_and_healed(fleet: Fleet) -> None:
    from kubernetes import client

    assert fleet.run("revoke", "-m", "mythos-5", "--reason", "order", "--yes").code == 0
    # Someone deletes the deny policy in the EU cluster, bypassing killswitch.
    client.NetworkingV1Api(fleet.eu.api).delete_namespaced_network_policy(
        "killswitch-mythos-5", fleet.eu.ns["serving"]
    )

    found = fleet.run("drift", "-m", "mythos-5", "-o", "json")
    healed = fleet.run("drift", "-m", "mythos-5", "--fix", "-o", "json")

    # Its namespaces now disagree (batch still denies, serving is open): no one posture.
    assert found.code == 3, found.stdout
    [row] = [t for t in found.json()["targets"] if t["result"] != "in-sync"]
    assert row["id"] == "kubernetes:k8s-eu/eu-west-1/network-policy/mythos-5"
    assert "namespaces disagree" in row["error"] and "serving: open" in row["error"]
    # The ledger says revoked: closing it again is safe whatever it is now.
    assert healed.code == 0, healed.stdout
    assert fleet.eu.policy("serving", "mythos-5") is not None
    assert fleet.run("drift", "-m", "mythos-5").code == 0


def test_the_longest_reason_and_ticket_accepted_still_close_every_lever(fleet: Fleet) -> None:
    """At the limits (1,000 characters of 4-byte UTF-8, a 128-character CJK ticket) the
    SSM parameter, the ConfigMap flag and the NetworkPolicy annotations all still fit."""
    from killswitch.text import MAX_REASON_BYTES, MAX_REASON_CHARS, MAX_TICKET_CHARS

    reason = "\U0001f6ab" * MAX_REASON_CHARS  # 4 bytes each: exactly the byte limit too
    ticket = "票" * MAX_TICKET_CHARS
    assert len(reason.encode()) == MAX_REASON_BYTES

    result = fleet.run("revoke", "-m", "all", "--reason", reason, "--ticket", ticket, "--yes")

    assert result.code == 0, result.stderr
    for model in MODELS:
        assert set(everything(fleet, model).values()) == {"revoked"}, model
    for c in fleet.clusters:
        flag = c.flag("serving", "mythos-5")
        assert flag is not None and reason.startswith(flag["reason"].rstrip("…"))
        assert flag["ticket"] == ticket
        policy = c.policy("serving", "mythos-5")
        assert policy is not None
        assert policy["metadata"]["annotations"]["killswitch.io/reason"] == reason
