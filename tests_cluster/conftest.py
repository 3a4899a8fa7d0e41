"""The opt-in suite: the Kubernetes provider's tests against a real cluster (``make
test-cluster``; never part of ``make test``, whose testpaths are ``tests`` only).

It needs ``KUBECONFIG``. ``KILLSWITCH_TEST_CONTEXTS=eu,us`` names two contexts to play
the two regions; by default the current context plays both, each entry with its own
namespaces. Every namespace is created under a fresh ``ks-<random>-`` prefix and
deleted at the end. The AWS side of each op still runs against moto.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import _offline_aws_credentials, moto, moto_server, ws  # noqa: F401
from tests.integration.test_kubernetes import Cluster

REGIONS = ("eu-west-1", "us-east-1")


def _kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG")
    if not path:
        pytest.fail("tests_cluster needs KUBECONFIG (a cluster where it may create namespaces)")
    return path


def _contexts(path: str) -> list[str]:
    from kubernetes import config

    named = [c for c in os.environ.get("KILLSWITCH_TEST_CONTEXTS", "").split(",") if c]
    if named:
        return (named * 2)[:2]
    _, current = config.list_kube_config_contexts(config_file=path)
    return [current["name"]] * 2


@pytest.fixture
def clusters() -> Iterator[list[Cluster]]:
    """Two entries (eu-west-1 with serving and batch, us-east-1 with serving) in real clusters."""
    from kubernetes import client, config

    path = _kubeconfig()
    prefix = f"ks-{uuid.uuid4().hex[:6]}"
    found: list[Cluster] = []
    for (entry, roles), context, region in zip(
        (("k8s-eu", ["serving", "batch"]), ("k8s-us", ["serving"])),
        _contexts(path),
        REGIONS,
        strict=True,
    ):
        short = entry.removeprefix("k8s-")
        ns = {role: f"{prefix}-{short}-{role}" for role in [*roles, "gateway"]}
        api: Any = config.new_client_from_config(
            config_file=path, context=context, persist_config=False
        )
        found.append(Cluster(entry, context, path, region, ns, api, roles))
    yield found
    for cluster in found:
        core = client.CoreV1Api(cluster.api)
        for namespace in cluster.ns.values():
            try:
                core.delete_namespace(namespace)
            except client.exceptions.ApiException as exc:
                if exc.status != 404:
                    raise
        cluster.api.close()
