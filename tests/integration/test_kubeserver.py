"""The Kubernetes API test server, driven through the official ``kubernetes`` client.

Each test pins one Kubernetes API convention that the provider relies on, and
checks what the server then holds by reading it back through the client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.support.kubeserver import KubeServer, write_kubeconfig

NS = "default"


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    server = KubeServer().start()
    yield server
    server.stop()


@pytest.fixture
def api(kube: KubeServer) -> Iterator[Any]:
    with kube.client() as api_client:
        yield api_client


def deployment(name: str = "web", replicas: int = 2, **labels: str) -> dict[str, Any]:
    pod_labels = {"app": name}
    container = {
        "name": "server",
        "image": "nginx:1",
        "ports": [{"containerPort": 80, "name": "http"}],
    }
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {"metadata": {"labels": pod_labels}, "spec": {"containers": [container]}},
        },
    }


def configmap(name: str, data: dict[str, str] | None = None, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": data or {"enabled": "true"}}


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


def test_create_fills_system_metadata_that_reads_back(api: Any) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(NS, configmap("flags"))
    read = core.read_namespaced_config_map("flags", NS)
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert (read.api_version, read.kind) == ("v1", "ConfigMap")
    assert read.metadata.uid == created.metadata.uid
    assert read.metadata.resource_version == created.metadata.resource_version
    assert read.metadata.namespace == NS and read.data == {"enabled": "true"}


def test_resource_version_is_one_counter_bumped_by_real_writes_only(api: Any) -> None:
    core = client.CoreV1Api(api)
    first = core.create_namespaced_config_map(NS, configmap("a"))
    second = core.create_namespaced_config_map(NS, configmap("b"))
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)

    same = core.replace_namespaced_config_map("a", NS, configmap("a"))
    patched = core.patch_namespaced_config_map("a", NS, {"data": {"enabled": "true"}})
    assert same.metadata.resource_version == first.metadata.resource_version
    assert patched.metadata.resource_version == first.metadata.resource_version

    changed = core.patch_namespaced_config_map("a", NS, {"data": {"enabled": "false"}})
    assert int(changed.metadata.resource_version) > int(second.metadata.resource_version)
    read = core.read_namespaced_config_map("a", NS)
    assert read.metadata.resource_version == changed.metadata.resource_version
    assert read.data == {"enabled": "false"}


def test_generation_follows_spec_changes_not_metadata(api: Any) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(NS, deployment())
    assert created.metadata.generation == 1
    relabelled = apps.patch_namespaced_deployment(
        "web", NS, {"metadata": {"labels": {"tier": "x"}}}
    )
    assert relabelled.metadata.generation == 1
    assert relabelled.metadata.resource_version != created.metadata.resource_version
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 5}})
    read = apps.read_namespaced_deployment("web", NS)
    assert (read.metadata.generation, read.spec.replicas) == (2, 5)


def test_stale_resource_version_on_put_is_409_conflict(kube: KubeServer, api: Any) -> None:
    core = client.CoreV1Api(api)
    stale = core.create_namespaced_config_map(NS, configmap("flags"))
    kube.touch("ConfigMap", NS, "flags")  # a concurrent writer
    stale.data = {"enabled": "false"}
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_config_map("flags", NS, stale)
    status = status_of(caught.value)
    assert caught.value.status == 409
    assert (status["kind"], status["status"], status["reason"], status["code"]) == (
        "Status",
        "Failure",
        "Conflict",
        409,
    )
    assert status["details"] == {"name": "flags", "kind": "configmaps"}
    assert core.read_namespaced_config_map("flags", NS).data == {"enabled": "true"}


def test_put_without_resource_version_is_unconditional(kube: KubeServer, api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, configmap("flags"))
    kube.touch("ConfigMap", NS, "flags")
    core.replace_namespaced_config_map("flags", NS, configmap("flags", {"enabled": "false"}))
    assert core.read_namespaced_config_map("flags", NS).data == {"enabled": "false"}


def test_stale_resource_version_in_a_patch_is_409_conflict(api: Any) -> None:
    apps = client.AppsV1Api(api)
    old = apps.create_namespaced_deployment(NS, deployment()).metadata.resource_version
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    with pytest.raises(ApiException) as caught:
        patch = {"metadata": {"resourceVersion": old}, "spec": {"replicas": 0}}
        apps.patch_namespaced_deployment("web", NS, patch)
    assert caught.value.status == 409
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 3


def test_create_of_an_existing_name_is_409_already_exists(api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, configmap("flags"))
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map(NS, configmap("flags", {"enabled": "false"}))
    status = status_of(caught.value)
    assert (caught.value.status, status["reason"]) == (409, "AlreadyExists")
    assert status["message"] == 'configmaps "flags" already exists'
    assert core.read_namespaced_config_map("flags", NS).data == {"enabled": "true"}


def test_missing_object_is_404_not_found_status(api: Any) -> None:
    with pytest.raises(ApiException) as caught:
        client.AppsV1Api(api).read_namespaced_deployment("ghost", NS)
    status = status_of(caught.value)
    assert (caught.value.status, status["reason"], status["code"]) == (404, "NotFound", 404)
    assert status["message"] == 'deployments.apps "ghost" not found'
    assert status["details"] == {"name": "ghost", "group": "apps", "kind": "deployments"}


def test_create_in_a_missing_namespace_is_404(api: Any) -> None:
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(api).create_namespaced_config_map("nowhere", configmap("flags"))
    assert caught.value.status == 404
    assert status_of(caught.value)["message"] == 'namespaces "nowhere" not found'


def test_dict_patch_is_sent_and_applied_as_strategic_merge(kube: KubeServer, api: Any) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment())
    sidecar = {"name": "sidecar", "image": "envoy:1"}
    apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"template": {"spec": {"containers": [sidecar]}}}}
    )
    assert kube.calls[-1].content_type == "application/strategic-merge-patch+json"
    containers = apps.read_namespaced_deployment("web", NS).spec.template.spec.containers
    assert [c.name for c in containers] == ["server", "sidecar"]  # merged by name


def test_strategic_merge_delete_directive_and_port_merge_key(api: Any) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment())
    apps.patch_namespaced_deployment(
        "web",
        NS,
        {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "e"}]}}}},
    )
    server = {
        "name": "server",
        "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 81}],
    }
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}, server]}}
        }
    }
    apps.patch_namespaced_deployment("web", NS, patch)
    containers = apps.read_namespaced_deployment("web", NS).spec.template.spec.containers
    assert [c.name for c in containers] == ["server"]
    assert containers[0].image == "nginx:1"  # untouched fields stay
    assert [(p.container_port, p.name) for p in containers[0].ports] == [(80, "web"), (81, None)]


def test_strategic_merge_replace_directive_replaces_a_merged_list(api: Any) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment())
    containers = [{"$patch": "replace"}, {"name": "only", "image": "busybox"}]
    apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"template": {"spec": {"containers": containers}}}}
    )
    read = apps.read_namespaced_deployment("web", NS).spec.template.spec.containers
    assert [(c.name, c.image, c.ports) for c in read] == [("only", "busybox", None)]


def test_merge_patch_replaces_lists_and_null_deletes(kube: KubeServer, api: Any) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment(team="a", tier="web"))
    patch = {
        "metadata": {"labels": {"tier": None}},
        "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "busybox"}]}}},
    }
    apps.patch_namespaced_deployment("web", NS, patch, _content_type="application/merge-patch+json")
    assert kube.calls[-1].content_type == "application/merge-patch+json"
    read = apps.read_namespaced_deployment("web", NS)
    assert read.metadata.labels == {"team": "a"}
    assert [c.name for c in read.spec.template.spec.containers] == ["only"]


def test_list_patch_is_sent_and_applied_as_json_patch(kube: KubeServer, api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, configmap("flags", {"a": "1", "b": "2"}))
    ops = [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "one"},
        {"op": "remove", "path": "/data/b"},
        {"op": "add", "path": "/metadata/labels", "value": {"x~y": "z"}},
        {"op": "copy", "from": "/data/a", "path": "/data/c"},
    ]
    core.patch_namespaced_config_map("flags", NS, ops)
    assert kube.calls[-1].content_type == "application/json-patch+json"
    read = core.read_namespaced_config_map("flags", NS)
    assert read.data == {"a": "one", "c": "one"}
    assert read.metadata.labels == {"x~y": "z"}


def test_failed_json_patch_test_is_422_and_changes_nothing(api: Any) -> None:
    core = client.CoreV1Api(api)
    before = core.create_namespaced_config_map(NS, configmap("flags"))
    ops = [
        {"op": "replace", "path": "/data/enabled", "value": "false"},
        {"op": "test", "path": "/data/enabled", "value": "true"},
    ]
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_config_map("flags", NS, ops)
    assert (caught.value.status, status_of(caught.value)["reason"]) == (422, "Invalid")
    after = core.read_namespaced_config_map("flags", NS)
    assert after.data == {"enabled": "true"}
    assert after.metadata.resource_version == before.metadata.resource_version


def test_deployment_scale_subresource_reads_and_writes_spec_replicas(api: Any) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(NS, deployment(replicas=3))
    scale = apps.read_namespaced_deployment_scale("web", NS)
    assert (scale.kind, scale.api_version, scale.spec.replicas) == ("Scale", "autoscaling/v1", 3)
    assert scale.metadata.resource_version == created.metadata.resource_version
    assert scale.status.selector == "app=web"

    scaled = apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 0}})
    assert scaled.spec.replicas is None  # Go's omitempty: a Scale of 0 has an empty spec
    read = apps.read_namespaced_deployment("web", NS)
    assert (read.spec.replicas, read.metadata.generation) == (0, 2)
    assert read.metadata.resource_version == scaled.metadata.resource_version


def test_statefulset_scale_read_and_replace(api: Any) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_stateful_set(NS, deployment("db", replicas=1))
    scale = apps.read_namespaced_stateful_set_scale("db", NS)
    scale.spec.replicas = 4
    apps.replace_namespaced_stateful_set_scale("db", NS, scale)
    assert apps.read_namespaced_stateful_set("db", NS).spec.replicas == 4
    assert apps.read_namespaced_stateful_set_scale("db", NS).spec.replicas == 4


def test_scale_patch_carrying_resource_version_must_match_the_workload(
    kube: KubeServer, api: Any
) -> None:
    apps = client.AppsV1Api(api)
    rv = apps.create_namespaced_deployment(NS, deployment()).metadata.resource_version
    kube.touch("deployments", NS, "web")
    stale = {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 0}}
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("web", NS, stale)
    assert caught.value.status == 409
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 2

    current = apps.read_namespaced_deployment("web", NS).metadata.resource_version
    fresh = {"metadata": {"resourceVersion": current}, "spec": {"replicas": 0}}
    apps.patch_namespaced_deployment_scale("web", NS, fresh)
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 0


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("model=mythos-5", ["a", "b"]),
        ("model==mythos-5,tier=edge", ["a"]),
        ("model!=mythos-5", ["c", "d"]),
        ("model in (fable-5, other)", ["c"]),
        ("model notin (fable-5)", ["a", "b", "d"]),
        ("tier", ["a", "c"]),
        ("!tier", ["b", "d"]),
        ("model in (mythos-5),!tier", ["b"]),
    ],
)
def test_label_selectors(api: Any, selector: str, expected: list[str]) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_config_map(NS, configmap("a", model="mythos-5", tier="edge"))
    core.create_namespaced_config_map(NS, configmap("b", model="mythos-5"))
    core.create_namespaced_config_map(NS, configmap("c", model="fable-5", tier="core"))
    core.create_namespaced_config_map("other", configmap("d"))
    everywhere = core.list_config_map_for_all_namespaces(label_selector=selector)
    assert sorted(i.metadata.name for i in everywhere.items) == expected
    in_default = core.list_namespaced_config_map(NS, label_selector=selector)
    assert sorted(i.metadata.name for i in in_default.items) == [n for n in expected if n != "d"]


def test_malformed_label_selector_is_400(api: Any) -> None:
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(api).list_namespaced_config_map(NS, label_selector="a in b")
    assert (caught.value.status, status_of(caught.value)["reason"]) == (400, "BadRequest")


def test_list_is_a_typed_list_with_resource_version_and_pages(api: Any) -> None:
    core = client.CoreV1Api(api)
    for name in ("a", "b", "c"):
        last = core.create_namespaced_config_map(NS, configmap(name))
    page = core.list_namespaced_config_map(NS, limit=2)
    assert (page.kind, page.api_version) == ("ConfigMapList", "v1")
    assert page.metadata.resource_version == last.metadata.resource_version
    assert [i.metadata.name for i in page.items] == ["a", "b"]
    rest = core.list_namespaced_config_map(NS, limit=2, _continue=page.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["c"] and not rest.metadata._continue


def test_namespaces_are_cluster_scoped_and_labelled(api: Any) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespace({"metadata": {"name": "tenant-a", "labels": {"team": "ml"}}})
    assert created.metadata.namespace is None and created.status.phase == "Active"
    found = core.list_namespace(label_selector="team=ml").items
    assert [n.metadata.name for n in found] == ["tenant-a"]
    assert found[0].metadata.labels == {"team": "ml", "kubernetes.io/metadata.name": "tenant-a"}


def test_deleting_a_namespace_returns_it_and_removes_its_objects(api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "tenant-a"}})
    core.create_namespaced_config_map("tenant-a", configmap("flags"))
    gone = core.delete_namespace("tenant-a")
    assert (gone["kind"], gone["status"]["phase"]) == ("Namespace", "Terminating")
    assert core.list_config_map_for_all_namespaces().items == []
    with pytest.raises(ApiException) as caught:
        core.read_namespace("tenant-a")
    assert caught.value.status == 404


def test_delete_returns_success_status_then_404(api: Any) -> None:
    apps = client.AppsV1Api(api)
    uid = apps.create_namespaced_deployment(NS, deployment()).metadata.uid
    status = apps.delete_namespaced_deployment("web", NS)  # v37 types deletes as a plain dict
    assert (status["kind"], status["status"]) == ("Status", "Success")
    assert status["details"] == {"name": "web", "group": "apps", "kind": "deployments", "uid": uid}
    assert apps.list_namespaced_deployment(NS).items == []
    with pytest.raises(ApiException) as caught:
        apps.delete_namespaced_deployment("web", NS)
    assert caught.value.status == 404


def test_delete_precondition_on_resource_version(kube: KubeServer, api: Any) -> None:
    core = client.CoreV1Api(api)
    rv = core.create_namespaced_config_map(NS, configmap("flags")).metadata.resource_version
    kube.touch("configmaps", NS, "flags")
    with pytest.raises(ApiException) as caught:
        core.delete_namespaced_config_map(
            "flags", NS, body={"preconditions": {"resourceVersion": rv}}
        )
    assert caught.value.status == 409
    assert core.read_namespaced_config_map("flags", NS).metadata.name == "flags"


def test_network_policy_crud(api: Any) -> None:
    net = client.NetworkingV1Api(api)
    policy = {
        "metadata": {"name": "deny-mythos", "labels": {"killswitch": "true"}},
        "spec": {"podSelector": {"matchLabels": {"app": "mythos-5"}}, "ingress": []},
    }
    created = net.create_namespaced_network_policy(NS, policy)
    assert (created.kind, created.api_version) == ("NetworkPolicy", "networking.k8s.io/v1")
    assert created.spec.policy_types == ["Ingress"] and created.metadata.generation == 1
    listed = net.list_network_policy_for_all_namespaces(label_selector="killswitch=true").items
    assert [p.metadata.name for p in listed] == ["deny-mythos"]
    net.delete_namespaced_network_policy("deny-mythos", NS)
    assert net.list_namespaced_network_policy(NS).items == []


def test_horizontal_pod_autoscaler_v2_crud(api: Any) -> None:
    hpa_api = client.AutoscalingV2Api(api)
    hpa = {
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 10,
        },
    }
    created = hpa_api.create_namespaced_horizontal_pod_autoscaler(NS, hpa)
    assert created.status.desired_replicas == 0
    hpa_api.patch_namespaced_horizontal_pod_autoscaler("web", NS, {"spec": {"minReplicas": 0}})
    with pytest.raises(ApiException) as caught:  # maxReplicas below minReplicas
        hpa_api.patch_namespaced_horizontal_pod_autoscaler("web", NS, {"spec": {"maxReplicas": 0}})
    assert caught.value.status == 422
    items = hpa_api.list_namespaced_horizontal_pod_autoscaler(NS).items
    assert [(h.spec.min_replicas, h.spec.max_replicas) for h in items] == [(0, 10)]


def test_invalid_workload_is_422_with_causes(api: Any) -> None:
    apps = client.AppsV1Api(api)
    bad = deployment()
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment(NS, bad)
    status = status_of(caught.value)
    assert (caught.value.status, status["reason"]) == (422, "Invalid")
    assert status["message"].startswith('Deployment.apps "web" is invalid: ')
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.template.metadata.labels"]
    assert apps.list_namespaced_deployment(NS).items == []


def test_status_is_kept_on_writes_to_the_main_resource(kube: KubeServer, api: Any) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment())
    kube.touch("Deployment", NS, "web", lambda d: d["status"].update(readyReplicas=2))
    apps.patch_namespaced_deployment("web", NS, {"status": {"readyReplicas": 9}})
    assert apps.read_namespaced_deployment("web", NS).status.ready_replicas == 2


def test_workload_controller_reconciles_status_after_a_write() -> None:
    with KubeServer(workload_controller=True) as kube, kube.client() as api:
        apps = client.AppsV1Api(api)
        written = apps.create_namespaced_deployment(NS, deployment(replicas=3))
        read = apps.read_namespaced_deployment("web", NS)
        assert (read.status.ready_replicas, read.status.observed_generation) == (3, 1)
        assert int(read.metadata.resource_version) > int(written.metadata.resource_version)
        apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 0}})
        assert apps.read_namespaced_deployment_scale("web", NS).status.replicas == 0


def test_injected_429_carries_retry_after_then_clears(kube: KubeServer, api: Any) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment())
    fault = kube.inject("PATCH", r"/deployments/web/scale$", 429, times=1, retry_after=3)
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 0}})
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "3"
    status = status_of(caught.value)
    assert (status["reason"], status["details"]) == ("TooManyRequests", {"retryAfterSeconds": 3})
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 2
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 0}})
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 0
    assert fault.hits == 1


def test_default_client_retries_reads_on_429_with_retry_after(kube: KubeServer, api: Any) -> None:
    """urllib3's default Retry honours Retry-After for GET/PUT/DELETE: providers see no 429."""
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, configmap("flags"))
    kube.inject("GET", r"/configmaps/flags$", 429, times=1, retry_after=0)
    assert core.read_namespaced_config_map("flags", NS).metadata.name == "flags"
    assert [c.status for c in kube.calls if c.method == "GET"] == [429, 200]
    with kube.client(retries=False) as no_retries:
        kube.inject("GET", r"/configmaps/flags$", 429, times=1, retry_after=0)
        with pytest.raises(ApiException) as caught:
            client.CoreV1Api(no_retries).read_namespaced_config_map("flags", NS)
        assert caught.value.status == 429


def test_injected_500_fails_n_matching_requests(kube: KubeServer, api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, configmap("flags"))
    kube.inject("PATCH", r"/configmaps/flags$", 500, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            core.patch_namespaced_config_map("flags", NS, {"data": {"enabled": "false"}})
        assert status_of(caught.value)["reason"] == "InternalError"
    assert core.read_namespaced_config_map("flags", NS).data == {"enabled": "true"}
    core.patch_namespaced_config_map("flags", NS, {"data": {"enabled": "false"}})
    assert core.read_namespaced_config_map("flags", NS).data == {"enabled": "false"}


def test_fault_after_apply_loses_the_reply_not_the_write(kube: KubeServer, api: Any) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment())
    kube.inject("PATCH", r"/scale$", 500, after_apply=True)
    with pytest.raises(ApiException):
        apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 0}})
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 0


def test_no_op_apply_is_visible_in_the_call_log(kube: KubeServer, api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, configmap("flags"))
    rv = kube.resource_version
    core.patch_namespaced_config_map("flags", NS, {"data": {"enabled": "true"}})
    assert kube.resource_version == rv
    assert [(c.method, c.status) for c in kube.writes] == [("POST", 201), ("PATCH", 200)]


def test_version_and_discovery(kube: KubeServer, api: Any) -> None:
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {
        g.name: g.preferred_version.group_version
        for g in client.ApisApi(api).get_api_versions().groups
    }
    assert groups == {
        "apps": "apps/v1",
        "autoscaling": "autoscaling/v2",
        "networking.k8s.io": "networking.k8s.io/v1",
    }
    resources = {r.name for r in client.AppsV1Api(api).get_api_resources().resources}
    assert {"deployments", "deployments/scale", "statefulsets", "statefulsets/scale"} <= resources
    assert {r.name for r in client.CoreV1Api(api).get_api_resources().resources} == {
        "configmaps",
        "namespaces",
    }


def test_clusters_are_independent_and_reachable_by_kubeconfig_context(tmp_path: Path) -> None:
    with KubeServer() as east, KubeServer() as west:
        path = write_kubeconfig(tmp_path / "kubeconfig", {"east": east, "west": west})
        for name in ("east", "west"):
            with config.new_client_from_config(config_file=str(path), context=name) as api:
                client.CoreV1Api(api).create_namespaced_config_map(NS, configmap(f"on-{name}"))
        assert [c.method for c in east.writes] == [c.method for c in west.writes] == ["POST"]
        with east.client() as api:
            names = [
                c.metadata.name for c in client.CoreV1Api(api).list_namespaced_config_map(NS).items
            ]
        assert names == ["on-east"]
        assert west.get("configmaps", NS, "on-west") is not None
        assert west.get("configmaps", NS, "on-east") is None
