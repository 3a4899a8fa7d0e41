"""The Kubernetes levers under pressure: concurrent writers, conflicts that do not clear,
throttling, a cluster that is down, objects killswitch did not make, and the RBAC the
levers need. These use the test server's own powers (a racing writer, injected faults,
its call log), so they do not run against a real cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from killswitch.contract import ApplyContext
from killswitch.domain import Access, Posture
from tests.conftest import Workspace
from tests.integration import test_kubernetes as shared
from tests.integration.test_kubernetes import BEFORE, MODELS, Cluster, Fleet, Obj
from tests.support.kubeserver import KubeServer

# The shared fixtures: two clusters and AWS in one inventory (here on racing servers).
clusters = shared.clusters
fleet = shared.fleet
EU_FLAG = "kubernetes:k8s-eu/eu-west-1/configmap-flag/mythos-5"


class RacingServer(KubeServer):
    """A cluster where another writer lands between killswitch's read and its write: the
    first request matching a race changes the object first (``touch``), so the request
    then carries a stale resourceVersion and gets the server's real 409."""

    def __init__(self) -> None:
        super().__init__()
        self.races: list[tuple[str, re.Pattern[str], str, str, Callable[[Obj], None] | None]] = []

    def race(
        self,
        method: str,
        path: str,
        kind: str,
        name: str,
        mutate: Callable[[Obj], None] | None = None,
    ) -> None:
        """Before the first ``method`` on ``path``, another writer changes the object
        (``mutate``, or by default an annotation)."""
        self.races.append((method, re.compile(path), kind, name, mutate))

    def handle(self, method: str, path: str, query: Any, content_type: str, body: Any) -> Obj:
        for race in list(self.races):
            if race[0] == method and race[1].search(path):
                self.races.remove(race)
                namespace = path.split("/namespaces/")[1].split("/", maxsplit=1)[0]
                self.touch(race[2], namespace, race[3], race[4])
        return super().handle(method, path, query, content_type, body)


@pytest.fixture
def kube_server_class() -> type[KubeServer]:
    return RacingServer


def racing(cluster: Cluster) -> RacingServer:
    assert isinstance(cluster.server, RacingServer)
    return cluster.server


def statuses(cluster: Cluster, method: str, path_end: str) -> list[int]:
    assert cluster.server is not None
    return [
        c.status for c in cluster.server.calls if c.method == method and c.path.endswith(path_end)
    ]


# ---------------------------------------------------------------- concurrent writers


def test_a_writer_between_read_and_write_of_the_configmap_is_kept(fleet: Fleet) -> None:
    def other_team(configmap: Obj) -> None:
        configmap["data"]["gateway.conf"] = "cache=5s"

    racing(fleet.eu).race(
        "PATCH", r"/serving/configmaps/", "ConfigMap", "killswitch-models", other_team
    )

    result = fleet.run("revoke", "-m", "mythos-5", "--target", EU_FLAG, "--reason", "r", "--yes")

    assert result.code == 0, result.stdout + result.stderr
    assert statuses(fleet.eu, "PATCH", "/serving/configmaps/killswitch-models") == [409, 200]
    data = fleet.eu.get("ConfigMap", "serving", "killswitch-models")["data"]  # type: ignore[index]
    assert data["gateway.conf"] == "cache=5s"  # their change survived
    assert json.loads(data["mythos-5"])["posture"] == "revoked"  # and so did ours


def test_a_hand_scale_between_read_and_write_is_read_again_and_that_count_kept(
    fleet: Fleet,
) -> None:
    def someone_scales(deployment: Obj) -> None:
        deployment["spec"]["replicas"] = 5

    racing(fleet.eu).race(
        "PATCH", r"/deployments/mythos-api$", "Deployment", "mythos-api", someone_scales
    )
    scale = "kubernetes:k8s-eu/eu-west-1/scale/mythos-5"

    revoke = fleet.run("revoke", "-m", "mythos-5", "--target", scale, "--reason", "r", "--yes")

    assert revoke.code == 0, revoke.stdout + revoke.stderr
    assert statuses(fleet.eu, "PATCH", "/deployments/mythos-api") == [409, 200]
    assert fleet.eu.replicas("serving", "mythos-api") == 0
    assert fleet.eu.annotations("serving", "mythos-api")[BEFORE] == "5"  # not the stale 3

    restore = fleet.run("restore", "-m", "mythos-5", "--target", scale, "--reason", "r", "--yes")

    assert restore.code == 0, restore.stdout + restore.stderr
    assert fleet.eu.replicas("serving", "mythos-api") == 5


def test_every_model_flag_lands_in_one_write_per_namespace(fleet: Fleet) -> None:
    result = fleet.run(
        "revoke", "-m", "all", "--target", "*/configmap-flag/*", "--reason", "r", "--yes"
    )

    assert result.code == 0, result.stdout + result.stderr
    for model in MODELS:
        assert fleet.eu.flag("serving", model)["posture"] == "revoked"  # type: ignore[index]
        assert fleet.eu.flag("batch", model)["posture"] == "revoked"  # type: ignore[index]
    assert statuses(fleet.eu, "PATCH", "/serving/configmaps/killswitch-models") == [200]
    assert statuses(fleet.eu, "POST", "/batch/configmaps") == [201]  # created, with both keys


def test_a_conflict_that_never_clears_fails_only_that_target(fleet: Fleet) -> None:
    assert fleet.eu.server is not None
    fleet.eu.server.inject("PATCH", r"/serving/configmaps/killswitch-models$", 409, times=None)

    result = fleet.run("revoke", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 3, result.stdout + result.stderr
    rows = {t["id"]: t for t in result.json()["targets"]}
    assert rows[EU_FLAG]["result"] == "failed"
    assert "409" in rows[EU_FLAG]["error"]
    assert {t["result"] for i, t in rows.items() if i != EU_FLAG} == {"verified"}
    assert "mythos-5" not in fleet.eu.get("ConfigMap", "serving", "killswitch-models")["data"]  # type: ignore[index]
    assert fleet.eu.replicas("serving", "mythos-api") == 0  # the deeper levers still closed


# ---------------------------------------------------------------- a cluster in trouble


def test_throttling_waits_as_long_as_the_server_asks(fleet: Fleet) -> None:
    assert fleet.us.server is not None
    fleet.us.server.inject("GET", r"/serving/deployments$", 429, times=1, retry_after=1)
    started = time.monotonic()

    result = fleet.run("revoke", "-m", "mythos-5", "-p", "k8s-us", "--reason", "r", "--yes")

    assert result.code == 0, result.stdout + result.stderr
    assert time.monotonic() - started >= 1.0
    assert statuses(fleet.us, "GET", "/serving/deployments")[:2] == [429, 200]
    assert fleet.us.replicas("serving", "mythos-api") == 0


def test_a_cluster_that_is_down_fails_its_targets_and_the_rest_closes(fleet: Fleet) -> None:
    assert fleet.us.server is not None
    fleet.us.server.stop()

    result = fleet.run("revoke", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 3, result.stdout + result.stderr
    rows = result.json()["targets"]
    down = [t for t in rows if t["provider"] == "k8s-us"]
    assert {t["result"] for t in down} == {"failed"}
    assert all("Connection refused" in t["error"] for t in down), down
    assert {t["result"] for t in rows if t["provider"] != "k8s-us"} == {"verified"}
    assert fleet.ws.posture("us-east-1", "mythos-5") == "revoked"
    assert fleet.eu.replicas("serving", "mythos-api") == 0


def test_a_cluster_killswitch_cannot_reach_is_named_with_its_context(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod, whatever runs us
    inventory = yaml.safe_load(fleet.ws.inventory.read_text())
    inventory["providers"]["k8s-us"]["context"] = "us-staging"  # not in the kubeconfig
    inventory["providers"]["k8s-in"] = {
        "type": "kubernetes",
        "in_cluster": True,
        "region": "ap-south-1",
        "namespaces": ["serving"],
        "mechanisms": ["configmap-flag"],
    }
    fleet.ws.inventory.write_text(yaml.safe_dump(inventory))

    status = fleet.run("status", "-p", "k8s-us", "-p", "k8s-in", "-o", "json")

    assert status.code == 3, status.stdout + status.stderr
    errors = {t["provider"]: t["error"] for t in status.json()["targets"]}
    assert "kubernetes k8s-us: cannot load context 'us-staging'" in errors["k8s-us"]
    assert "kubernetes k8s-in: cannot load in-cluster config" in errors["k8s-in"]


# ---------------------------------------------------------------- objects we did not make


def test_a_policy_killswitch_did_not_create_is_left_alone(fleet: Fleet) -> None:
    theirs = {"metadata": {"name": "killswitch-mythos-5"}, "spec": {"podSelector": {}}}
    fleet.us.create("NetworkPolicy", "serving", theirs)
    before = fleet.us.policy("serving", "mythos-5")

    result = fleet.run("revoke", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 3
    row = next(
        t
        for t in result.json()["targets"]
        if t["id"].endswith("k8s-us/us-east-1/network-policy/mythos-5")
    )
    assert "was not created by killswitch" in row["error"]
    assert fleet.us.policy("serving", "mythos-5") == before


def test_namespaces_that_disagree_are_reported_then_converged(fleet: Fleet, ws: Workspace) -> None:
    ctx = ApplyContext("op-by-hand", "bob", "test", None, "2026-01-01T00:00:00.000Z")
    from providers.flag import flag_document

    revoked = flag_document("mythos-5", Access(Posture.REVOKED), ctx)
    fleet.eu.create(
        "ConfigMap",
        "batch",
        {"metadata": {"name": "killswitch-models"}, "data": {"mythos-5": revoked}},
    )

    status = fleet.run("status", "--target", EU_FLAG, "-o", "json")
    revoke = fleet.run("revoke", "-m", "mythos-5", "--target", EU_FLAG, "--reason", "r", "--yes")

    assert status.code == 3
    assert (
        "namespaces disagree (batch: revoked, serving: open)"
        in status.json()["targets"][0]["error"]
    )
    assert revoke.code == 0, revoke.stdout + revoke.stderr
    assert fleet.eu.flag("batch", "mythos-5")["op"] == "op-by-hand"  # type: ignore[index] # no rewrite
    assert fleet.eu.flag("serving", "mythos-5")["posture"] == "revoked"  # type: ignore[index]


def test_a_corrupt_flag_is_unreadable_then_overwritten(fleet: Fleet) -> None:
    assert fleet.us.server is not None
    fleet.us.server.touch(
        "ConfigMap",
        "serving",
        "killswitch-models",
        lambda cm: cm["data"].update({"mythos-5": "{oops"}),
    )
    us_flag = "kubernetes:k8s-us/us-east-1/configmap-flag/mythos-5"

    status = fleet.run("status", "--target", us_flag, "-o", "json")
    revoke = fleet.run("revoke", "-m", "mythos-5", "--target", us_flag, "--reason", "r", "--yes")

    assert "not a killswitch flag document" in status.json()["targets"][0]["error"]
    assert revoke.code == 0, revoke.stdout + revoke.stderr
    assert fleet.us.flag("serving", "mythos-5")["posture"] == "revoked"  # type: ignore[index]


def test_a_model_with_no_workloads_in_a_cluster_is_named(fleet: Fleet) -> None:
    inventory = yaml.safe_load(fleet.ws.inventory.read_text())
    inventory["models"]["ghost-5"] = {}
    inventory["providers"]["k8s-us"]["models"] = ["mythos-5", "fable-5"]  # us does not serve it
    fleet.ws.inventory.write_text(yaml.safe_dump(inventory))

    result = fleet.run("revoke", "-m", "ghost-5", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 3
    rows = {t["id"]: t for t in result.json()["targets"]}
    assert not any("k8s-us" in target for target in rows)
    failed = rows["kubernetes:k8s-eu/eu-west-1/scale/ghost-5"]
    assert "no Deployment or StatefulSet matches killswitch.io/model=ghost-5" in failed["error"]
    assert rows["kubernetes:k8s-eu/eu-west-1/network-policy/ghost-5"]["result"] == "verified"


# ---------------------------------------------------------------- what the levers may do


RBAC_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+))?$"
)
VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def test_the_printed_roles_allow_every_call_the_levers_made_and_no_more(fleet: Fleet) -> None:
    from killswitch import inventory
    from killswitch.contract import LeastPrivilege
    from providers.kubernetes.rbac import to_yaml

    start = {c.entry: len(c.server.calls) for c in fleet.clusters if c.server}
    for kind, name in (("Deployment", "mythos-api"), ("StatefulSet", "mythos-cache")):
        # Someone else writes too: the conflict path's reads must be allowed as well.
        racing(fleet.us).race("PATCH", rf"/{kind.lower()}s/{name}$", kind, name)
    # restrict, then revoke (which tightens what restrict wrote), then restore: every
    # kind of write each lever makes.
    fleet.run(
        "restrict",
        "-m",
        "all",
        "-a",
        "us-person",
        "--target",
        "!*/scale/*",
        "--reason",
        "r",
        "--yes",
    )
    fleet.run("revoke", "-m", "all", "--reason", "r", "--yes")
    fleet.run("restore", "-m", "all", "--reason", "r", "--yes")
    inv = inventory.load(fleet.ws.inventory)

    all_granted: set[tuple[str, str, str]] = set()
    all_used: set[tuple[str, str, str]] = set()
    for c in fleet.clusters:
        provider = inv.provider(c.entry)
        assert isinstance(provider, LeastPrivilege)
        roles = yaml.safe_load(to_yaml(provider.least_privilege()))["items"]
        granted = {
            (role["metadata"]["namespace"], group, resource, verb, name)
            for role in roles
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
            for name in rule.get("resourceNames", [None])
        }
        assert c.server is not None
        used = set()
        for call in c.server.calls[start[c.entry] :]:
            m = RBAC_PATH.match(call.path)
            assert m, call.path
            verb = VERBS.get(call.method) or ("get" if m["name"] else "list")
            used.add((m["ns"], m["group"] or "", m["resource"], verb, m["name"]))
        for ns, group, resource, verb, name in used:
            allowed = {(ns, group, resource, verb, n) for n in (None, name)}
            assert allowed & granted, f"{c.entry}: {verb} {resource} {name} in {ns} not granted"
        all_granted |= {g[1:4] for g in granted}
        all_used |= {u[1:4] for u in used}
    assert all_granted == all_used  # and every verb granted on a resource was needed


# ---------------------------------------------------------------- the inventory, offline


def test_the_flag_document_is_the_documented_public_format() -> None:
    """Every flag lever writes docs/flag-format.md's document; gateways depend on it."""
    from providers.flag import flag_document

    ctx = ApplyContext("op-1", "alice@oncall", "export order", "INC-1", "2026-11-27T03:13:12.296Z")
    access = Access(Posture.RESTRICTED, ("us-person", "eu-citizen"))

    assert json.loads(flag_document("mythos-5", access, ctx)) == {
        "schema": "killswitch.flag/v1",
        "model": "mythos-5",
        "posture": "restricted",
        "audience": ["eu-citizen", "us-person"],
        "op": "op-1",
        "actor": "alice@oncall",
        "reason": "export order",
        "ticket": "INC-1",
        "updated_at": "2026-11-27T03:13:12.296Z",
    }


def test_inventory_mistakes_are_named_by_line_and_change_nothing(ws: Workspace) -> None:
    ws.write_inventory(
        models={
            "mythos-5": {"kubernetes": {"selector": "!app.kubernetes.io/name"}},
            "fable_5": {"kubernetes": {"selector": "app in (fable"}},
        },
        providers={
            "k8s-eu": {
                "type": "kubernetes",
                "context": "eu-prod",
                "in_cluster": True,
                "region": "eu-west-1",
                "namespaces": ["serving"],
                "mechanisms": ["configmap-flag"],
            },
            "k8s-us": {
                "type": "kubernetes",
                "context": "us-prod",
                "region": "us-east-1",
                "namespaces": ["Serving"],
                "mechanisms": ["scale-down"],
                "audience_label": "killswitch.io/audience,x",
            },
            "k8s-ap": {
                "type": "kubernetes",
                "context": "ap-prod",
                "region": "ap-northeast-1",
                "namespaces": ["serving"],
                "mechanisms": ["network-policy"],
            },
        },
        scopes={},
    )

    result = ws.run("inventory", "validate")

    assert result.code == 64, result.stdout + result.stderr
    errors = result.stderr
    assert "providers.k8s-eu: Value error, give exactly one of context" in errors
    assert "providers.k8s-us.namespaces: Value error, 'Serving' is not a namespace name" in errors
    assert "providers.k8s-us.audience_label" in errors
    assert "models.mythos-5.kubernetes.selector" in errors and "must pin a label" in errors
    assert "models.fable_5.kubernetes.selector" in errors and "cannot parse" in errors
    assert "models.fable_5: network-policy names its NetworkPolicy killswitch-fable_5" in errors
    assert re.search(r"killswitch\.yaml:\d+: providers\.k8s-eu", errors)


def test_validating_and_help_need_no_cluster_and_never_import_kubernetes(ws: Workspace) -> None:
    ws.write_inventory(
        models={
            "mythos-5": {
                "kubernetes": {"selector": "app.kubernetes.io/name=mythos,tier in (api,web)"}
            }
        },
        providers={
            "k8s-eu": {
                "type": "kubernetes",
                "context": "arn:aws:eks:eu-west-1:123456789012:cluster/prod",
                "kubeconfig": str(ws.path / "no-such-kubeconfig"),
                "region": "eu-west-1",
                "namespaces": ["serving", "batch"],
                "mechanisms": ["configmap-flag", "scale", "network-policy"],
            },
            "k8s-in": {
                "type": "kubernetes",
                "in_cluster": True,
                "region": "us-east-1",
                "namespaces": ["serving"],
                "mechanisms": ["scale"],
            },
        },
        scopes={},
    )
    script = (
        "import sys\n"
        "from killswitch.cli import main\n"
        "for argv in (['--help'], ['--inventory', sys.argv[1], 'inventory', 'validate']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        print('exit', exit.code)\n"
        "print('kubernetes imported:', 'kubernetes' in sys.modules)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", script, str(ws.inventory)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert "exit 0\n" in done.stdout and "valid — 4 targets" in done.stdout, (
        done.stdout + done.stderr
    )
    assert "kubernetes imported: False" in done.stdout
