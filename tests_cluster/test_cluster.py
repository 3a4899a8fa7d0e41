"""The Kubernetes provider's tests, unchanged, against the cluster in $KUBECONFIG; and what
only a real API server can tell: that the printed Roles are valid, and enough."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import yaml

from tests.integration import test_kubernetes as shared
from tests.integration.test_kubernetes import Fleet

# The shared tests and their fixture; `clusters` comes from this folder's conftest.
fleet = shared.fleet
test_revoke_closes_every_lever_in_both_clusters_and_aws_in_one_op = (
    shared.test_revoke_closes_every_lever_in_both_clusters_and_aws_in_one_op
)
test_restrict_where_supported_then_restore_every_count_exactly = (
    shared.test_restrict_where_supported_then_restore_every_count_exactly
)
test_restrict_is_refused_where_scale_cannot_express_it = (
    shared.test_restrict_is_refused_where_scale_cannot_express_it
)
test_an_autoscaler_on_a_workload_refuses_the_revoke_naming_the_target = (
    shared.test_an_autoscaler_on_a_workload_refuses_the_revoke_naming_the_target
)
test_bystanders_are_never_touched = shared.test_bystanders_are_never_touched
test_rerun_changes_nothing_in_any_cluster = shared.test_rerun_changes_nothing_in_any_cluster
test_a_workload_scaled_by_hand_after_revoke_is_drift_not_overwritten = (
    shared.test_a_workload_scaled_by_hand_after_revoke_is_drift_not_overwritten
)
test_rbac_is_valid_yaml_naming_a_role_per_namespace = (
    shared.test_rbac_is_valid_yaml_naming_a_role_per_namespace
)


def _roles(fleet: Fleet, entry: str) -> list[dict[str, Any]]:
    from killswitch import inventory
    from providers.kubernetes.rbac import to_yaml

    provider: Any = inventory.load(fleet.ws.inventory).provider(entry)
    items: list[dict[str, Any]] = yaml.safe_load(to_yaml(provider.least_privilege()))["items"]
    return items


def test_the_api_server_accepts_the_printed_roles(fleet: Fleet) -> None:
    from kubernetes import client

    for cluster in fleet.clusters:
        rbac = client.RbacAuthorizationV1Api(cluster.api)
        for role in _roles(fleet, cluster.entry):
            namespace = role["metadata"]["namespace"]
            reply = rbac.create_namespaced_role(
                namespace, role, dry_run="All", _preload_content=False
            )
            assert json.loads(reply.data)["kind"] == "Role"


def test_the_printed_roles_are_enough_for_revoke_restrict_and_restore(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Run the whole switch as a service account bound to nothing but the printed Roles."""
    from kubernetes import client

    for cluster in fleet.clusters:
        core, rbac = client.CoreV1Api(cluster.api), client.RbacAuthorizationV1Api(cluster.api)
        home = cluster.ns["serving"]
        account = f"killswitch-{secrets.token_hex(3)}"
        core.create_namespaced_service_account(home, {"metadata": {"name": account}})
        for role in _roles(fleet, cluster.entry):
            namespace = role["metadata"]["namespace"]
            rbac.create_namespaced_role(namespace, role)
            binding = {
                "metadata": {"name": "killswitch"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "killswitch",
                },
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": home}],
            }
            rbac.create_namespaced_role_binding(namespace, binding)
        token = json.loads(
            core.create_namespaced_service_account_token(
                account, home, {"spec": {"expirationSeconds": 900}}, _preload_content=False
            ).data
        )["status"]["token"]
        configuration = cluster.api.configuration
        server: dict[str, Any] = {"server": configuration.host}
        if configuration.ssl_ca_cert:
            server["certificate-authority"] = configuration.ssl_ca_cert
        if not configuration.verify_ssl:
            server["insecure-skip-tls-verify"] = True
        kubeconfig = tmp_path / f"{cluster.entry}.kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": server}],
                    "users": [{"name": "u", "user": {"token": token}}],
                    "contexts": [{"name": "ks", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "ks",
                }
            )
        )
        cluster.context, cluster.kubeconfig = "ks", str(kubeconfig)
    inventory = yaml.safe_load(fleet.ws.inventory.read_text())
    for cluster in fleet.clusters:
        inventory["providers"][cluster.entry] = cluster.entry_config()
    fleet.ws.inventory.write_text(yaml.safe_dump(inventory))

    revoke = fleet.run("revoke", "-m", "all", "--reason", "least privilege", "--yes")
    restrict = fleet.run(
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
    restore = fleet.run("restore", "-m", "all", "--reason", "r", "--yes")

    for result in (revoke, restrict, restore):
        assert result.code == 0, result.stdout + result.stderr
    for model in shared.MODELS:
        assert set(shared.everything(fleet, model).values()) == {"open"}
