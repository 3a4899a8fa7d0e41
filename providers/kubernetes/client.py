"""All Kubernetes I/O: one ApiClient per cluster, replies classified once, at the edge.

Levers work on plain JSON objects as the API server sends them (camelCase, no
client-side models), so what they compare and patch is exactly what the server holds.
The ``kubernetes`` package is imported here, and only when a lever first calls a cluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from killswitch.errors import PermanentError, ProviderError, RetryableError
from providers.kubernetes.config import KubernetesConfig

Obj = dict[str, Any]
T = TypeVar("T")
CONFLICT_ATTEMPTS = 5  # re-read and re-apply this often before the engine's retry takes over


class NotFound(PermanentError):
    """404: the object (or the namespace) is not there."""


class Conflict(RetryableError):
    """409: someone else wrote first (a stale resourceVersion), or the object already exists."""


class Apis:
    """The typed API groups of one cluster, and the options every call carries."""

    def __init__(self, api_client: Any, timeout: float) -> None:
        from kubernetes import client

        # Typed Any: levers send plain JSON bodies, which the client accepts as its models.
        self.core: Any = client.CoreV1Api(api_client)
        self.apps: Any = client.AppsV1Api(api_client)
        self.networking: Any = client.NetworkingV1Api(api_client)
        self.autoscaling: Any = client.AutoscalingV2Api(api_client)
        # Raw replies: JSON as the server wrote it; a connect and a read timeout per request.
        self.raw: dict[str, Any] = {"_preload_content": False, "_request_timeout": (timeout,) * 2}


def connect(name: str, config: KubernetesConfig) -> Apis:
    """An ApiClient for the entry's cluster, with urllib3's own retries off: killswitch's
    retry policy (bounded, with jitter, honouring Retry-After) is the only one."""
    from kubernetes import client
    from kubernetes import config as kubeconfig
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if config.in_cluster:
            kubeconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            path = config.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            if os.pathsep not in path:
                path = os.path.expanduser(path)
            kubeconfig.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path,
                context=config.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError, ValueError) as exc:
        where = "in-cluster config" if config.in_cluster else f"context {config.context!r}"
        raise PermanentError(f"kubernetes {name}: cannot load {where}: {exc}") from exc
    configuration.retries = False
    return Apis(client.ApiClient(configuration), config.timeout_seconds)


def classify(exc: Exception, what: str) -> ProviderError:
    """The typed error for ``exc`` raised while doing ``what`` (e.g. 'patch deployment …')."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError, SSLError

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        text = f"{what}: {status} {_message(exc)}".strip()
        if status == 409:
            return Conflict(text)
        if status == 429 or status >= 500:
            return RetryableError(text, retry_after=_retry_after(exc))
        if status == 404:
            return NotFound(text)
        return PermanentError(text)  # 400, 401, 403, 422 …; status 0: TLS trouble
    if isinstance(exc, SSLError):
        return PermanentError(f"{what}: TLS: {exc}")
    if isinstance(exc, HTTPError):
        # Refused, reset, timed out: the request may or may not have landed, and every
        # write is guarded by a resourceVersion or re-reads first, so another try is safe.
        return RetryableError(f"{what}: {exc}")
    raise exc


@contextmanager
def kube_errors(what: str) -> Iterator[None]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except (ApiException, HTTPError) as exc:
        raise classify(exc, what) from exc


def request(apis: Apis, what: str, fn: Callable[[Apis], Any]) -> Obj:
    """``fn(apis)`` (one raw API call), its JSON reply as a dict; errors classified."""
    with kube_errors(what):
        reply = fn(apis)
        body: Obj = json.loads(reply.data or b"{}")
        return body


def guarded(write: Callable[[], T]) -> T:
    """Run one read-modify-write (``write`` reads, decides, writes with the resourceVersion
    it read); on a conflict, read again and decide again, never overwrite blindly."""
    for _ in range(CONFLICT_ATTEMPTS - 1):
        try:
            return write()
        except Conflict:
            continue
    return write()  # a conflict now goes to the engine's retry, which backs off


def _message(exc: Any) -> str:
    try:
        status = json.loads(exc.body or "")
        message = str(status.get("message") or status.get("reason") or "")
    except (ValueError, AttributeError):
        message = ""
    return message or str(exc.reason or "").strip()


def _retry_after(exc: Any) -> float | None:
    value = (exc.headers or {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
