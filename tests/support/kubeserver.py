"""A Kubernetes API test server on 127.0.0.1, for the official ``kubernetes`` client.

No kube-apiserver can run in the test environment, so this module serves, over
real HTTP, the part of the Kubernetes REST API that killswitch's Kubernetes
provider uses, with the conventions the provider relies on:

- core/v1 ConfigMaps and Namespaces (cluster-scoped), apps/v1 Deployments and
  StatefulSets with their ``scale`` subresource (``autoscaling/v1`` Scale),
  networking.k8s.io/v1 NetworkPolicies, autoscaling/v2 HorizontalPodAutoscalers;
- ``uid``, ``creationTimestamp``, ``generation`` (counts spec changes of
  workloads) and a ``resourceVersion`` from one counter per server, bumped by
  every real write and never by a no-op write;
- 409 Conflict for a PUT, PATCH or scale write that carries a stale
  ``metadata.resourceVersion``; 409 AlreadyExists; 404 NotFound; 422 Invalid;
- PATCH as JSON merge patch (RFC 7386), strategic merge patch (lists merged by
  their Kubernetes merge key, ``$patch: delete``/``replace``) or JSON patch
  (RFC 6902, a failed ``test`` is 422). The v37 client sends a list body as
  json-patch and any other body as strategic merge, unless told otherwise;
- lists filtered by label selector (``=``, ``==``, ``!=``, ``in``, ``notin``,
  ``key``, ``!key``), namespaced or across namespaces, with ``limit``/``continue``;
- ``/version`` and the ``/api``, ``/apis`` discovery documents;
- injected faults (``inject``), a concurrent writer (``touch``), a call log.

As a real server does: list items carry no ``kind``/``apiVersion``; a Scale of
0 replicas has an empty ``spec`` (Go's omitempty); writes to a resource with a
status subresource keep its ``status``; DELETE answers a ``Status`` (deleting a
Namespace answers the Namespace, now Terminating).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

Obj = dict[str, Any]
Query = dict[str, str]
Mutate = Callable[[Obj], None]
GIT_VERSION = "v1.37.0"


@dataclass(frozen=True)
class Resource:
    """One served resource type."""

    plural: str
    group: str
    version: str
    kind: str
    namespaced: bool = True
    status: Obj | None = None  # initial status, for types with a status subresource
    generation: bool = False  # metadata.generation counts spec changes
    scale: bool = False  # has the scale subresource

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How messages name it: ``configmaps``, ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


HPA = {"desiredReplicas": 0}  # Go ints without omitempty show as 0; the v37 models need them
RESOURCES = {
    r.plural: r
    for r in (
        Resource("configmaps", "", "v1", "ConfigMap"),
        Resource("namespaces", "", "v1", "Namespace", False, {"phase": "Active"}),
        Resource("deployments", "apps", "v1", "Deployment", True, {}, True, True),
        Resource("statefulsets", "apps", "v1", "StatefulSet", True, {"replicas": 0}, True, True),
        Resource("networkpolicies", "networking.k8s.io", "v1", "NetworkPolicy", generation=True),
        Resource(
            "horizontalpodautoscalers", "autoscaling", "v2", "HorizontalPodAutoscaler", True, HPA
        ),
    )
}
DEFAULTS: dict[str, Obj] = {  # merged under spec on every write, as API defaulting does
    "namespaces": {"finalizers": ["kubernetes"]},
    "deployments": {"replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
    "statefulsets": {
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "podManagementPolicy": "OrderedReady",
    },
    "networkpolicies": {"podSelector": {}},
    "horizontalpodautoscalers": {"minReplicas": 1},
}
ROUTE = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))(?:/namespaces/(?P<ns>[^/]+))?"
    r"/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[a-z]+))?$"
)
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
NS_MISMATCH = (
    "the namespace of the provided object does not match the namespace sent on the request"
)


class ApiError(Exception):
    """A failure, answered with a ``kind: Status`` body."""

    def __init__(
        self,
        code: int,
        message: str,
        details: Obj | None = None,
        *,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details
        self.reason = reason or REASONS.get(code, "Unknown")
        self.headers = headers or {}

    def body(self) -> Obj:
        status: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        status |= {"message": self.message, "reason": self.reason, "code": self.code}
        return status | ({"details": self.details} if self.details is not None else {})


def _details(res: Resource, name: str) -> Obj:
    return {"name": name} | ({"group": res.group} if res.group else {}) | {"kind": res.plural}


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, f'{res.qualified} "{name}" not found', _details(res, name))


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        _details(res, name),
    )


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid; each cause is (field, message)."""
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    details: Obj = {"name": name} | ({"group": group} if group else {}) | {"kind": kind}
    details["causes"] = [
        {"reason": "FieldValueInvalid", "field": f, "message": m} for f, m in causes
    ]
    qualified = f"{kind}.{group}" if group else kind
    return ApiError(422, f'{qualified} "{name}" is invalid: {text}', details)


NOT_SERVED = ApiError(404, "the server could not find the requested resource", {})


# ---------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Lists merged element by element on a key (Kubernetes' patchMergeKey); other lists are replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}


def strategic_merge(original: Any, patch: Any) -> Any:
    """Strategic merge patch for the built-in types served here."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):  # $patch, $setElementOrder/…, $retainKeys: order and pruning hints
            continue
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS:
            result[key] = _merge_list(result.get(key) or [], value, MERGE_KEYS[key])
        else:
            result[key] = strategic_merge(result.get(key), value)
    return result


def _merge_list(original: list[Any], patch: list[Any], key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        kept = [i for i in patch if not (isinstance(i, dict) and "$patch" in i)]
        return [strategic_merge({}, i) for i in kept]
    result = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise ApiError(400, f"map: {item} does not contain declared merge key: {key}")
        at = next((n for n, old in enumerate(result) if old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            result = [old for old in result if old.get(key) != item[key]]
        elif at is None:
            result.append(strategic_merge({}, item))
        else:
            result[at] = strategic_merge(result[at], item)
    return result


def json_patch(doc: Any, operations: list[Any]) -> Any:
    """RFC 6902 JSON patch; any failure raises ValueError, KeyError or IndexError."""

    def locate(path: str) -> tuple[Any, str]:  # (parent container, last token)
        if not path.startswith("/"):
            raise ValueError(f"invalid JSON pointer {path!r}")
        *steps, last = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
        parent = root
        for step in steps:
            parent = parent[index(parent, step)] if isinstance(parent, list) else parent[step]
        return parent, last

    def index(array: list[Any], token: str, extra: int = 0) -> int:
        if (token == "-" and extra) or (token.isdigit() and int(token) < len(array) + extra):
            return len(array) if token == "-" else int(token)
        raise IndexError(f"index {token} is out of bounds")

    def get(path: str) -> Any:
        parent, last = locate(path)
        return parent[index(parent, last)] if isinstance(parent, list) else parent[last]

    def add(path: str, value: Any) -> None:
        parent, last = locate(path)
        if isinstance(parent, list):
            parent.insert(index(parent, last, 1), copy.deepcopy(value))
        else:
            parent[last] = copy.deepcopy(value)

    def remove(path: str) -> Any:
        parent, last = locate(path)
        return parent.pop(index(parent, last) if isinstance(parent, list) else last)

    root = copy.deepcopy(doc)
    for op in operations:
        kind, path = op["op"], op["path"]
        if kind == "add":
            add(path, op["value"])
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            remove(path)
            add(path, op["value"])
        elif kind == "move":
            add(path, remove(op["from"]))
        elif kind == "copy":
            add(path, get(op["from"]))
        elif kind == "test" and get(path) != op["value"]:
            raise ValueError(f"testing value {path} failed")
        elif kind not in ("add", "remove", "replace", "move", "copy", "test"):
            raise ValueError(f"unknown operation {kind!r}")
    return root


def apply_patch(target: Obj, patch: Any, content_type: str) -> Any:
    """Apply a PATCH body according to its Content-Type, as the API server does."""
    if content_type == "application/json-patch+json" and isinstance(patch, list):
        try:
            return json_patch(target, patch)
        except (ValueError, KeyError, IndexError, TypeError) as error:
            cause = {"reason": "FieldValueInvalid", "message": str(error)}
            message = "the server rejected our request due to an error in our request"
            raise ApiError(422, message, {"causes": [cause]}) from error
    if content_type == "application/merge-patch+json" and isinstance(patch, dict):
        return merge_patch(target, patch)
    if content_type == "application/strategic-merge-patch+json" and isinstance(patch, dict):
        return strategic_merge(target, patch)
    if content_type.endswith("patch+json"):
        raise ApiError(400, f"the body of a {content_type} request has the wrong JSON type")
    raise ApiError(415, f"the body of the request was in an unknown format: {content_type}")


# ---------------------------------------------------------------- label selectors

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")
_EQUALS = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)$")
_IN = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^)]*)\)$")


Requirement = tuple[str, str, frozenset[str]]  # key, operator, values


def parse_label_selector(text: str) -> list[Requirement]:
    """The requirements of a label selector; 400 BadRequest when it is malformed."""
    terms = [t.strip() for t in re.split(r",(?![^(]*\))", text) if t.strip()]  # commas outside (…)
    requirements: list[Requirement] = []
    for term in terms:
        if m := _EXISTS.match(term):
            requirements.append((m[2], m[1] or "exists", frozenset()))
        elif m := (_EQUALS.match(term) or _IN.match(term)):
            values = frozenset(v.strip() for v in m[3].split(","))
            requirements.append((m[1], {"==": "=", "in": "="}.get(m[2], m[2]), values))
        else:
            raise ApiError(400, f"unable to parse requirement: {term!r}")
    return requirements


def selects(requirements: list[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether labels meet every requirement (``!=`` and ``notin`` hold where the key is absent)."""
    for key, operator, values in requirements:
        if operator == "exists" and key not in labels:
            return False
        if operator == "!" and key in labels:
            return False
        if operator == "=" and labels.get(key) not in values:
            return False
        if operator in ("!=", "notin") and labels.get(key) in values:
            return False
    return True


# ---------------------------------------------------------------- the server


@dataclass
class Fault:
    """Fail the next ``times`` requests matching ``method`` and ``path`` with ``status``."""

    method: str
    path: re.Pattern[str]
    status: int
    times: int | None = 1  # None: every matching request
    retry_after: int | None = None
    after_apply: bool = False  # carry the request out, then answer with the fault (a lost reply)
    delay: float = 0.0  # seconds to wait before answering
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        live = self.times is None or self.hits < self.times
        return live and self.method in ("*", method) and self.path.search(path) is not None

    def error(self) -> ApiError:
        message = f"injected fault: {self.status} {REASONS.get(self.status, '')}".strip()
        if self.status == 429:
            message = "Too many requests, please try again later."
        if self.retry_after is None:
            return ApiError(self.status, message, {})
        header = {"Retry-After": str(self.retry_after)}
        return ApiError(
            self.status, message, {"retryAfterSeconds": self.retry_after}, headers=header
        )


@dataclass(frozen=True)
class Call:
    """One request the server answered."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any
    status: int


def resource_for(kind: str) -> Resource:
    """The resource named by its plural (``deployments``) or its kind (``Deployment``)."""
    for res in RESOURCES.values():
        if kind.lower() in (res.plural, res.kind.lower()):
            return res
    raise KeyError(f"unknown kind {kind!r}; served: {sorted(RESOURCES)}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeServer:
    """One fake cluster on 127.0.0.1: its objects, resourceVersion counter, faults and call log."""

    def __init__(self, *, workload_controller: bool = False) -> None:
        # workload_controller: right after each write, a Deployment's or StatefulSet's status
        # follows its spec, in a second write, as the controllers of a healthy cluster do.
        self.workload_controller = workload_controller
        self.url = ""
        self._lock = threading.RLock()
        self._http: _HTTPServer | None = None
        self.reset()

    def start(self) -> KubeServer:
        self._http = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._http.kube, self._http.connections = self, set()
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            for connection in list(self._http.connections):  # keep-alive ones, too
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._http = None

    def __enter__(self) -> KubeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every object, fault and call; recreate the default namespaces."""
        with self._lock:
            self._objects: dict[tuple[str, str, str], Obj] = {}
            self._faults: list[Fault] = []
            self._calls: list[Call] = []
            self._rv = 0
            for name in ("default", "kube-system", "kube-public"):
                self._create(RESOURCES["namespaces"], "", {"metadata": {"name": name}})

    def client(self, **configuration: Any) -> Any:
        """A ``kubernetes.client.ApiClient`` for this server; kwargs set Configuration attributes
        (e.g. ``retries=False``: by default urllib3 retries GET, PUT and DELETE on a 429 or 503
        with Retry-After, up to 3 times)."""
        from kubernetes import client

        config = client.Configuration(host=self.url)
        config.no_proxy = "127.0.0.1"
        for key, value in configuration.items():
            setattr(config, key, value)
        return client.ApiClient(config)

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int,
        times: int | None = 1,
        retry_after: int | None = None,
        *,
        after_apply: bool = False,
        delay: float = 0.0,
    ) -> Fault:
        """Fail the next ``times`` requests whose method (or ``*``) and path (no query) match."""
        path = re.compile(path_regex)
        fault = Fault(method.upper(), path, status, times, retry_after, after_apply, delay)
        with self._lock:
            self._faults.append(fault)
        return fault

    def touch(self, kind: str, ns: str | None, name: str, mutate: Mutate | None = None) -> Obj:
        """Write an object as another writer would, so its resourceVersion moves on.

        ``mutate`` edits the stored object in place (its spec, its labels, or the status a
        controller writes), unchecked; without it, an annotation changes.
        """
        res = resource_for(kind)
        with self._lock:
            old = self._read(res, ns or "", name)
            new = copy.deepcopy(old)
            if mutate is None:
                annotations = new["metadata"].setdefault("annotations", {})
                annotations["killswitch.test/touched"] = str(self._rv)
            else:
                mutate(new)
            _count_generation(res, new, old)
            return self._commit(res, new)

    def get(self, kind: str, ns: str | None, name: str) -> Obj | None:
        """A copy of the object as the server holds it, or None."""
        key = (resource_for(kind).plural, ns or "", name)
        with self._lock:
            return copy.deepcopy(self._objects.get(key))

    @property
    def resource_version(self) -> int:
        """The server's resourceVersion counter: it moves on every real write."""
        return self._rv

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    @property
    def writes(self) -> list[Call]:
        """The calls that may change state: POST, PUT, PATCH and DELETE."""
        return [c for c in self.calls if c.method in ("POST", "PUT", "PATCH", "DELETE")]

    # ---- one request

    def handle(self, method: str, path: str, query: Query, content_type: str, body: Any) -> Obj:
        """Answer one request, or raise ApiError; faults apply here."""
        with self._lock:
            fault = next((f for f in self._faults if f.matches(method, path)), None)
            if fault is not None:
                fault.hits += 1
        if fault is not None:
            time.sleep(fault.delay)
            if not fault.after_apply:
                raise fault.error()
        with self._lock:
            answer = self._route(method, path.rstrip("/") or "/", query, content_type, body)
        if fault is not None:
            raise fault.error()
        return answer

    def _route(self, method: str, path: str, query: Query, content_type: str, body: Any) -> Obj:
        if method == "GET" and (document := _discovery(path, self.url)) is not None:
            return document
        m = ROUTE.match(path)
        res = RESOURCES.get(m["plural"]) if m else None
        if not m or not res or (m["core"] or f"{m['group']}/{m['version']}") != res.api_version:
            raise NOT_SERVED
        ns, name, sub = m["ns"] or "", m["name"], m["sub"]
        misplaced = bool(ns) != res.namespaced and (ns or name)
        if misplaced or (sub and (sub != "scale" or not res.scale)):
            raise NOT_SERVED
        if name is None and method in ("GET", "POST"):
            return self._list(res, ns, query) if method == "GET" else self._create(res, ns, body)
        if name is None or method not in ("GET", "PUT", "PATCH", "DELETE"):
            raise ApiError(405, f"the server does not allow {method} on the requested resource")
        old = self._read(res, ns, name)
        current = _scale_of(old) if sub else old
        if method == "GET":
            return copy.deepcopy(current)
        if method == "DELETE":
            return self._delete(res, old, body or {})
        wanted = body if method == "PUT" else apply_patch(current, body, content_type)
        if not isinstance(wanted, dict):
            raise ApiError(400, "the request body must be a JSON object")
        if sub:
            return _scale_of(self._update(res, old, _with_scale(res, old, wanted)))
        return self._update(res, old, wanted)

    def _read(self, res: Resource, ns: str, name: str) -> Obj:
        found = self._objects.get((res.plural, ns, name))
        if found is None:
            raise not_found(res, name)
        return found

    def _list(self, res: Resource, ns: str, query: Query) -> Obj:
        if query.get("watch") in ("true", "1"):
            raise ApiError(400, "watch is not served by this test server")
        selector = parse_label_selector(query.get("labelSelector", ""))
        items = [  # as a real server lists them: without kind and apiVersion
            {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("kind", "apiVersion")}
            for (plural, obj_ns, _), obj in sorted(self._objects.items())
            if plural == res.plural and ns in ("", obj_ns) and selects(selector, _labels(obj))
        ]
        meta: Obj = {"resourceVersion": str(self._rv)}
        if not all(query.get(k, "0").isdigit() for k in ("limit", "continue")):
            raise ApiError(400, "limit and continue must be non-negative integers")
        start, limit = int(query.get("continue") or 0), int(query.get("limit") or 0)
        if limit and start + limit < len(items):
            left = len(items) - start - limit
            meta |= {"continue": str(start + limit), "remainingItemCount": left}
        items = items[start : start + limit if limit else None]
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version} | {
            "metadata": meta,
            "items": items,
        }

    def _create(self, res: Resource, ns: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        meta = body.setdefault("metadata", {})
        if meta.get("namespace") not in (None, "", ns):
            raise ApiError(400, NS_MISMATCH)
        if meta.get("resourceVersion"):
            raise ApiError(400, "resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        system = {"uid": str(uuid.uuid4()), "creationTimestamp": _now(), "generation": 1}
        obj = self._prepare(res, ns, body, system, copy.deepcopy(res.status))
        name = obj["metadata"]["name"]
        if res.namespaced and ("namespaces", "", ns) not in self._objects:
            raise not_found(RESOURCES["namespaces"], ns)
        if (res.plural, ns, name) in self._objects:
            message = f'{res.qualified} "{name}" already exists'
            raise ApiError(409, message, _details(res, name), reason="AlreadyExists")
        return self._commit(res, obj)

    def _update(self, res: Resource, old: Obj, wanted: Obj) -> Obj:
        meta, have = wanted.get("metadata") or {}, old["metadata"]
        if meta.get("name", have["name"]) != have["name"]:
            raise ApiError(400, f"the name of the object ({meta['name']}) does not match the URL")
        if meta.get("namespace") not in (None, "", have.get("namespace")):
            raise ApiError(400, NS_MISMATCH)
        if meta.get("resourceVersion") not in (None, "", have["resourceVersion"]):
            raise conflict(res, have["name"])  # optimistic concurrency
        if meta.get("uid") not in (None, "", have["uid"]):
            raise conflict(res, have["name"])
        new = self._prepare(res, have.get("namespace", ""), wanted, have, old.get("status"))
        if res.scale and new["spec"].get("selector") != old["spec"].get("selector"):
            cause = ("spec.selector", "Invalid value: field is immutable")
            raise invalid(res.kind, res.group, have["name"], [cause])
        _count_generation(res, new, old)
        return copy.deepcopy(old) if new == old else self._commit(res, new)  # a no-op is no write

    def _delete(self, res: Resource, old: Obj, options: Obj) -> Obj:
        meta = old["metadata"]
        for key, value in (options.get("preconditions") or {}).items():
            if value not in (None, meta.get(key)):
                raise conflict(res, meta["name"])
        self._rv += 1
        del self._objects[(res.plural, meta.get("namespace", ""), meta["name"])]
        if res.plural == "namespaces":  # its objects go with it (at once, here)
            for key in [k for k in self._objects if k[1] == meta["name"]]:
                del self._objects[key]
            gone = copy.deepcopy(old) | {"status": {"phase": "Terminating"}}
            gone["metadata"] |= {"deletionTimestamp": _now(), "resourceVersion": str(self._rv)}
            return gone
        details = _details(res, meta["name"]) | {"uid": meta["uid"]}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"} | {
            "details": details
        }

    def _prepare(self, res: Resource, ns: str, body: Obj, system: Obj, status: Obj | None) -> Obj:
        """The object as it would be stored: system metadata, defaults, kept status; 422 if bad."""
        body = _prune(copy.deepcopy(body))
        expected = {"apiVersion": res.api_version, "kind": res.kind}
        if any(body.get(k, v) != v for k, v in expected.items()):
            raise ApiError(400, f"the object is not a {res.api_version} {res.kind}")
        meta = {  # drop what Go omits as empty, and what only the server sets
            k: v
            for k, v in (body.get("metadata") or {}).items()
            if v not in ({}, [])
            and k not in ("managedFields", "selfLink", "generation", "namespace")
        }
        kept = ("uid", "creationTimestamp", "resourceVersion", "deletionTimestamp")
        meta |= {k: system[k] for k in kept if k in system}
        meta |= {"namespace": ns} if res.namespaced else {}
        meta |= {"generation": system["generation"]} if res.generation else {}
        if res.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
        obj: Obj = expected | {"metadata": meta}
        obj |= {
            k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata", "status")
        }
        if res.plural == "configmaps":
            obj = {k: v for k, v in obj.items() if v != {}}  # empty data is omitted
        else:
            defaults = copy.deepcopy(DEFAULTS.get(res.plural, {}))
            obj["spec"] = merge_patch(defaults, obj.get("spec") or {})
        if res.plural == "networkpolicies" and "policyTypes" not in obj["spec"]:
            egress = "egress" in obj["spec"]
            obj["spec"]["policyTypes"] = ["Ingress", "Egress"] if egress else ["Ingress"]
        if status is not None:
            obj["status"] = copy.deepcopy(status)
        _validate(res, obj)
        return obj

    def _commit(self, res: Resource, obj: Obj) -> Obj:
        """Store a changed object under the next resourceVersion; answer a copy."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        self._objects[(res.plural, meta.get("namespace", ""), meta["name"])] = obj
        answer = copy.deepcopy(obj)
        if self.workload_controller and res.scale:
            n = obj["spec"]["replicas"]
            status = {"observedGeneration": meta["generation"], "replicas": n, "updatedReplicas": n}
            status |= {"readyReplicas": n, "availableReplicas": n}
            if res.plural == "statefulsets":
                status["currentReplicas"] = n
            else:
                status = {k: v for k, v in status.items() if v}  # omitempty
            if status != obj["status"]:
                self._rv += 1
                obj["status"] = status
                meta["resourceVersion"] = str(self._rv)
        return answer


def _prune(value: Any) -> Any:
    """Drop ``null`` members, as decoding into Go types does."""
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = obj["metadata"].get("labels") or {}
    return labels


def _count_generation(res: Resource, new: Obj, old: Obj) -> None:
    if res.generation:
        changed = new.get("spec") != old.get("spec")
        new["metadata"]["generation"] = old["metadata"]["generation"] + changed


ANNOTATIONS_LIMIT = 256 * 1024  # TotalAnnotationSizeLimitB
CONFIGMAP_LIMIT = 1024 * 1024  # MaxSecretSize, which ConfigMaps share


def _validate(res: Resource, obj: Obj) -> None:
    """The checks of the real validation that a provider could trip over."""
    causes: list[tuple[str, str]] = []
    name, spec = obj["metadata"].get("name") or "", obj.get("spec") or {}
    longest = 63 if res.plural == "namespaces" else 253
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif not NAME.match(name) or len(name) > longest or (longest == 63 and "." in name):
        causes.append(("metadata.name", f'Invalid value: "{name}": not a lowercase RFC 1123 name'))
    for key, value in _labels(obj).items():
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append((f"metadata.labels.{key}", f'Invalid value: "{value}"'))
    # apimachinery's ValidateAnnotationsSize: keys and values together, in bytes.
    annotations = obj["metadata"].get("annotations") or {}
    size = sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items())
    if size > ANNOTATIONS_LIMIT:
        causes.append(
            ("metadata.annotations", f"Too long: must have at most {ANNOTATIONS_LIMIT} bytes")
        )
    if res.plural == "configmaps":  # ValidateConfigMap: data and binaryData, 1 MiB in all
        data = {**(obj.get("data") or {}), **(obj.get("binaryData") or {})}
        size = sum(len(k.encode()) + len(str(v).encode()) for k, v in data.items())
        if size > CONFIGMAP_LIMIT:
            causes.append(("data", f"Too long: must have at most {CONFIGMAP_LIMIT} bytes"))
    if res.scale:
        replicas, template = spec.get("replicas"), spec.get("template") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not isinstance(replicas, int) or replicas < 0:
            causes.append(("spec.replicas", f"Invalid value: {replicas}: must be >= 0"))
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            message = "Invalid value: `selector` does not match template `labels`"
            causes.append(("spec.template.metadata.labels", message))
        if not (template.get("spec") or {}).get("containers"):
            causes.append(("spec.template.spec.containers", "Required value"))
    if res.plural == "horizontalpodautoscalers":
        high, low = spec.get("maxReplicas"), spec.get("minReplicas")
        if not isinstance(high, int) or not isinstance(low, int) or high < max(1, low):
            causes.append(("spec.maxReplicas", f"Invalid value: {high}: must be >= minReplicas"))
        if not (spec.get("scaleTargetRef") or {}).get("name"):
            causes.append(("spec.scaleTargetRef.name", "Required value"))
    if causes:
        raise invalid(res.kind, res.group, name, causes)


def _scale_of(obj: Obj) -> Obj:
    """The ``autoscaling/v1`` Scale of a workload."""
    replicas, meta = obj["spec"]["replicas"], obj["metadata"]
    selector = sorted(obj["spec"]["selector"].get("matchLabels", {}).items())
    kept = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in kept},
        "spec": {"replicas": replicas} if replicas else {},  # Go's omitempty
        "status": {
            "replicas": obj["status"].get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in selector),
        },
    }


def _with_scale(res: Resource, old: Obj, scale: Obj) -> Obj:
    """The workload with the replicas that a written Scale asks for."""
    if scale.get("kind", "Scale") != "Scale":
        raise ApiError(400, f"expected kind Scale, not {scale['kind']}")
    version = (scale.get("metadata") or {}).get("resourceVersion")
    if version not in (None, "", old["metadata"]["resourceVersion"]):
        raise conflict(res, old["metadata"]["name"])
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or replicas < 0:
        cause = ("spec.replicas", f"Invalid value: {replicas}: must be >= 0")
        raise invalid("Scale", "autoscaling", old["metadata"]["name"], [cause])
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = replicas
    return new


def _discovery(path: str, url: str) -> Obj | None:
    """``/version``, ``/api``, ``/apis`` and each group version's resource list."""
    if path == "/version":
        major, minor, _ = GIT_VERSION[1:].split(".")
        build = {
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
        }
        platform = {"goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64"}
        return {"major": major, "minor": minor, "gitVersion": GIT_VERSION} | build | platform
    if path == "/api":
        address = [{"clientCIDR": "0.0.0.0/0", "serverAddress": url.removeprefix("http://")}]
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": address}
    if path == "/apis":
        groups = []
        for gv in sorted({r.api_version for r in RESOURCES.values() if r.group}):
            entry = {"groupVersion": gv, "version": gv.split("/")[1]}
            groups.append(
                {"name": gv.split("/")[0], "versions": [entry], "preferredVersion": entry}
            )
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    listed: list[Obj] = []
    for res in RESOURCES.values():
        if path == ("/apis/" if res.group else "/api/") + res.api_version:
            verbs = ["create", "delete", "get", "list", "patch", "update"]
            kind: Obj = {"name": res.plural, "singularName": res.kind.lower(), "kind": res.kind}
            listed.append(kind | {"namespaced": res.namespaced, "verbs": verbs})
            if res.scale:
                scale: Obj = {"name": f"{res.plural}/scale", "singularName": "", "kind": "Scale"}
                scale |= {"group": "autoscaling", "version": "v1", "namespaced": True}
                listed.append(scale | {"verbs": ["get", "patch", "update"]})
    if not listed:
        return None
    version = path.removeprefix("/api/").removeprefix("/apis/")
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": version} | {
        "resources": listed
    }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    kube: KubeServer
    connections: set[socket.socket]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm holds
    # the body until the client's delayed ACK: about 40 ms per request.
    disable_nagle_algorithm = True
    server: _HTTPServer
    timeout = 10  # an idle keep-alive connection closes after this

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        body: Any = None
        headers: dict[str, str] = {}  # Retry-After
        try:
            body = json.loads(raw) if raw else None
            answer = self.server.kube.handle(self.command, url.path, query, content_type, body)
            code = 201 if self.command == "POST" else 200
        except ApiError as error:
            code, answer, headers = error.code, error.body(), error.headers
        except json.JSONDecodeError as error:
            code, answer = 400, ApiError(400, f"the request body is not JSON: {error}").body()
        except Exception:  # a bug here must reach the test as a 500, not hang it
            code, answer = 500, ApiError(500, traceback.format_exc()).body()
        self.server.kube.record(
            Call(self.command, url.path, query, content_type or None, body, code)
        )
        data = json.dumps(answer).encode()
        self.send_response(code)
        headers |= {"Content-Type": "application/json", "Content-Length": str(len(data))}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815 (http.server's names)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: ``KubeServer.calls`` is the log."""


def write_kubeconfig(
    path: Path | str, servers: Mapping[str, KubeServer], current: str | None = None
) -> Path:
    """Write a kubeconfig with one context (its own cluster and user) per named server."""
    names = list(servers)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current or (names[0] if names else ""),
        "clusters": [{"name": n, "cluster": {"server": s.url}} for n, s in servers.items()],
        "users": [{"name": n, "user": {"token": f"test-token-{n}"}} for n in names],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in names],
    }
    target = Path(path)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target
