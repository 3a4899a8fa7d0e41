"""Lever ``scale``: ``revoked`` scales the model's Deployments and StatefulSets to 0;
``open`` scales each back to exactly the count it had. It cannot express ``restricted``.

The count to return to is kept on the workload itself, in the annotation
``killswitch.io/replicas-before``, written in the same request as the scale-down: one
JSON patch (RFC 6902) on the workload that sets ``spec.replicas`` (the field the scale
subresource reads and writes) and the annotation, and that carries the
resourceVersion it was decided on, so it lands whole or not at all (a 409 when
someone else wrote in between; the lever then reads again and decides again). A write
through the scale subresource itself could not carry the annotation. docs/kubernetes.md
says more.

A workload scaled by hand after killswitch scaled it down is drift: a restore leaves
it alone and fails the target, naming it, rather than overwriting anyone's count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from killswitch.contract import ApplyContext, Permission
from killswitch.domain import OPEN, Access, Observed, Posture, Target
from killswitch.errors import PermanentError
from killswitch.sdk import Wave
from providers.kubernetes.client import CONFLICT_ATTEMPTS, Conflict, NotFound, Obj
from providers.kubernetes.namespaces import MixedPosture

if TYPE_CHECKING:
    from providers.kubernetes import KubernetesProvider

BEFORE = "killswitch.io/replicas-before"  # the count to restore
BY_OP = "killswitch.io/revoked-by-op"  # which op scaled it down, for people reading the object
KINDS = {"Deployment": "deployment", "StatefulSet": "stateful_set"}  # kind → client method suffix
JSON_PATCH = "application/json-patch+json"
T = TypeVar("T")
LISTS = {  # plural → (API group attribute, list method)
    "deployments": ("apps", "list_namespaced_deployment"),
    "statefulsets": ("apps", "list_namespaced_stateful_set"),
    "horizontalpodautoscalers": ("autoscaling", "list_namespaced_horizontal_pod_autoscaler"),
}


class ScaleDrift(PermanentError):
    """A workload killswitch scaled to 0 runs again, scaled by someone else."""

    def __init__(self, workloads: list[Workload]) -> None:
        each = "; ".join(
            f"{w.ref} was scaled to {w.replicas} by hand after killswitch scaled it to 0 "
            f"(from {w.before})"
            for w in workloads
        )
        super().__init__(
            f"drift: {each}. killswitch leaves such a workload alone on restore; settle its "
            f"count yourself, then remove the annotation {BEFORE}"
        )


@dataclass(frozen=True)
class Workload:
    kind: str  # Deployment or StatefulSet
    namespace: str
    name: str
    replicas: int
    resource_version: str
    annotations: Mapping[str, str] | None = field(default=None, compare=False)

    @classmethod
    def from_object(cls, kind: str, obj: Obj) -> Workload:
        meta = obj["metadata"]
        return cls(
            kind,
            meta["namespace"],
            meta["name"],
            int((obj.get("spec") or {}).get("replicas") or 0),  # an empty Scale spec means 0
            meta["resourceVersion"],
            meta.get("annotations"),
        )

    @property
    def ref(self) -> str:
        return f"{self.kind.lower()} {self.namespace}/{self.name}"

    @property
    def before(self) -> int | None:
        """The count killswitch recorded when it scaled this workload down, if it did."""
        raw = (self.annotations or {}).get(BEFORE)
        if raw is None:
            return None
        if not raw.isdigit():
            raise PermanentError(f"{self.ref}: annotation {BEFORE}={raw!r} is not a count")
        return int(raw)

    @property
    def state(self) -> str:
        """down (ours, at 0) · drift (ours, running again) · zero (at 0, not ours) · up."""
        if self.before is None:
            return "zero" if self.replicas == 0 else "up"
        return "down" if self.replicas == 0 else "drift"


class Scale:
    name: ClassVar[str] = "kubernetes.scale"
    supports: ClassVar[frozenset[Posture]] = frozenset({Posture.OPEN, Posture.REVOKED})
    wave: ClassVar[int] = Wave.CAPACITY
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission("list", "deployments.apps"),
        Permission("get", "deployments.apps"),
        Permission("patch", "deployments.apps"),
        Permission("list", "statefulsets.apps"),
        Permission("get", "statefulsets.apps"),
        Permission("patch", "statefulsets.apps"),
        Permission("list", "horizontalpodautoscalers.autoscaling"),
    )

    def __init__(self, provider: KubernetesProvider) -> None:
        self.provider = provider

    def observe(self, target: Target) -> Observed:
        workloads = self._workloads(target)
        drifted = [w for w in workloads if w.state == "drift"]
        if drifted:
            raise ScaleDrift(drifted)
        down = [w for w in workloads if w.state == "down"]
        running = [w for w in workloads if w.state == "up"]
        if not running:
            return Observed(
                Access(Posture.REVOKED),
                f"{len(workloads)} workloads at 0 replicas ({len(down)} with a count to restore)",
            )
        if not down:
            total = sum(w.replicas for w in workloads)
            return Observed(OPEN, f"{len(workloads)} workloads, {total} replicas")
        raise MixedPosture(
            f"partly scaled down: {', '.join(w.ref for w in down)} at 0, "
            f"{', '.join(w.ref for w in running)} running"
        )

    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        if desired.posture not in self.supports:
            raise PermanentError(f"scale cannot express {desired.posture.value}")
        workloads = self._workloads(target)
        if desired.posture is Posture.REVOKED:
            for w in workloads:
                if w.replicas > 0:
                    self._guarded(w, partial(self._scale_down, ctx=ctx))
            return
        drifted = [
            found
            for w in workloads
            if w.state in ("down", "drift")
            and (found := self._guarded(w, partial(self._restore, ctx=ctx)))
        ]
        if drifted:
            raise ScaleDrift(drifted)

    def preflight(self, target: Target, desired: Access) -> str | None:
        """An autoscaler on one of the model's workloads would undo a scale-down."""
        if desired.posture is not Posture.REVOKED:
            return None
        ours = {(w.namespace, w.kind, w.name) for w in self._workloads(target)}
        fights = []
        for ns in self.provider.namespaces:
            for hpa in self._list(ns, "horizontalpodautoscalers", None):
                ref = hpa.get("spec", {}).get("scaleTargetRef", {})
                group = str(ref.get("apiVersion", "apps/v1")).split("/")[0]
                if group == "apps" and (ns, ref.get("kind"), ref.get("name")) in ours:
                    fights.append(
                        f"HorizontalPodAutoscaler {ns}/{hpa['metadata']['name']} scales "
                        f"{str(ref['kind']).lower()} {ns}/{ref['name']}"
                    )
        if not fights:
            return None
        return (
            f"{'; '.join(fights)}: an autoscaler owns that replica count and would fight the "
            "scale-down (remove it first, or leave this cluster to the other levers)"
        )

    # -- one workload ------------------------------------------------------------
    def _guarded(self, listed: Workload, write: Callable[[Workload], T]) -> T | None:
        """``write`` on the workload as just listed; after a 409, on a fresh read of it.

        The first try needs no read of its own: the write carries the listed
        resourceVersion, so if the workload changed since, the server refuses it."""
        current: Workload | None = listed
        for attempt in range(CONFLICT_ATTEMPTS):
            if current is None:
                return None  # deleted meanwhile: nothing left to scale
            try:
                return write(current)
            except Conflict:
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
                current = self._fresh(listed)
        return None

    def _scale_down(self, w: Workload, ctx: ApplyContext) -> None:
        """Replicas to 0 and the count it had, in one guarded patch (no write if at 0)."""
        if w.replicas == 0:
            return
        record: dict[str, str | None] = {BY_OP: ctx.op_id}
        if w.before is None:  # drift being revoked again keeps the count from before the incident
            record[BEFORE] = str(w.replicas)
        self._patch(w, 0, record, f"scale {w.ref} from {w.replicas} to 0", ctx)

    def _restore(self, w: Workload, ctx: ApplyContext) -> Workload | None:
        """The recorded count back, annotations gone; a workload in drift is returned, untouched."""
        if w.state == "drift":
            return w
        if w.state != "down" or w.before is None:
            return None
        gone: dict[str, str | None] = {key: None for key in (BEFORE, BY_OP)}
        self._patch(w, w.before, gone, f"scale {w.ref} from 0 back to {w.before}", ctx)
        return None

    def _patch(
        self,
        w: Workload,
        replicas: int,
        annotations: dict[str, str | None],
        what: str,
        ctx: ApplyContext,
    ) -> None:
        # Carrying the resourceVersion makes the server refuse (409) a stale decision.
        ops: list[Obj] = [
            {"op": "replace", "path": "/metadata/resourceVersion", "value": w.resource_version},
            {"op": "add", "path": "/spec/replicas", "value": replicas},
        ]
        have = dict(w.annotations or {})
        added = {k: v for k, v in annotations.items() if v is not None}
        if w.annotations is None and added:
            ops.append({"op": "add", "path": "/metadata/annotations", "value": added})
        else:
            ops += [{"op": "add", "path": _pointer(k), "value": v} for k, v in added.items()]
        ops += [
            {"op": "remove", "path": _pointer(k)}
            for k, v in annotations.items()
            if v is None and k in have
        ]
        method = f"patch_namespaced_{KINDS[w.kind]}"
        self.provider.call(
            what,
            lambda k: getattr(k.apps, method)(
                w.name, w.namespace, ops, _content_type=JSON_PATCH, **k.raw
            ),
            fence=ctx.fence,
        )

    def _fresh(self, seen: Workload) -> Workload | None:
        """The workload as the server holds it now, or None when it is gone."""
        method = f"read_namespaced_{KINDS[seen.kind]}"
        try:
            obj = self.provider.call(
                f"get {seen.ref}",
                lambda k: getattr(k.apps, method)(seen.name, seen.namespace, **k.raw),
            )
        except NotFound:
            return None
        return Workload.from_object(seen.kind, obj)

    # -- finding them ----------------------------------------------------------------
    def _workloads(self, target: Target) -> list[Workload]:
        selector = str(self.provider.selector(target.model))
        found = [
            Workload.from_object(kind, obj)
            for ns in self.provider.namespaces
            for kind, plural in (("Deployment", "deployments"), ("StatefulSet", "statefulsets"))
            for obj in self._list(ns, plural, selector)
        ]
        if not found:
            raise PermanentError(
                f"no Deployment or StatefulSet matches {selector} in namespaces "
                f"{', '.join(self.provider.namespaces)} of {self.provider.cluster}: check "
                f"models.{target.model}.kubernetes.selector, or leave the model out of "
                f"providers.{self.provider.name}.models"
            )
        return found

    def _list(self, ns: str, plural: str, selector: str | None) -> list[Obj]:
        items: list[Obj] = []
        token: str | None = None
        while True:
            page = self._page(ns, plural, selector, token)
            for item in page.get("items") or []:
                item.setdefault("metadata", {}).setdefault("namespace", ns)
                items.append(item)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _page(self, ns: str, plural: str, selector: str | None, token: str | None) -> Obj:
        group, method = LISTS[plural]
        options: dict[str, Any] = {"limit": 500}
        if selector:
            options["label_selector"] = selector
        if token:
            options["_continue"] = token
        return self.provider.call(
            f"list {plural} in {ns}" + (f" with {selector}" if selector else ""),
            lambda k: getattr(getattr(k, group), method)(ns, **options, **k.raw),
        )


def _pointer(key: str) -> str:
    """The JSON pointer of an annotation (RFC 6901 escapes '~' and '/')."""
    return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
