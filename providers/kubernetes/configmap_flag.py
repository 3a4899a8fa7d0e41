"""Lever ``configmap-flag``: the model's posture document in a ConfigMap, per namespace.

The ConfigMap (``killswitch-models`` by default) holds one key per model; each value is
the flag document of docs/flag-format.md, the same JSON the AWS ``ssm-flag`` lever
writes, so one gateway parser serves both. A missing ConfigMap or key reads as ``open``.

Every write carries the resourceVersion it was decided on: a ConfigMap changed by
someone else in between answers 409, and the lever reads it again and decides again.
Only the models' own keys are written; other keys and other ConfigMaps are left alone.
All models of one op share the ConfigMap, so the lever is ``Grouped``: one patch per
namespace sets every model's key (and the models do not race each other for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from killswitch.contract import ApplyContext, Permission
from killswitch.domain import OPEN, Access, Observed, Posture, Target
from killswitch.sdk import CorruptFlag, Wave, flag_document, parse_flag
from providers.kubernetes.client import NotFound, Obj, guarded
from providers.kubernetes.namespaces import combine

if TYPE_CHECKING:
    from providers.kubernetes import KubernetesProvider

MANAGED_BY = {"app.kubernetes.io/managed-by": "killswitch"}


class ConfigMapFlag:
    name: ClassVar[str] = "kubernetes.configmap-flag"
    supports: ClassVar[frozenset[Posture]] = frozenset(Posture)
    wave: ClassVar[int] = Wave.EDGE
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission("get", "configmaps/{configmap}"),
        Permission("patch", "configmaps/{configmap}"),
        # RBAC cannot limit create to a name: the name is in the body, not the URL.
        Permission("create", "configmaps"),
    )

    def __init__(self, provider: KubernetesProvider) -> None:
        self.provider = provider
        self.configmap = provider.config.configmap

    def observe(self, target: Target) -> Observed:
        found = {}
        for ns in self.provider.namespaces:
            configmap = self._read(ns)
            access = self._access(ns, configmap, target.model)
            if configmap is None:
                detail = "no ConfigMap (reads as open)"
            elif target.model not in (configmap.get("data") or {}):
                detail = f"no key {target.model} (reads as open)"
            else:
                detail = f"resourceVersion {configmap['metadata']['resourceVersion']}"
            found[ns] = Observed(access, detail)
        return combine(f"configmap {self.configmap}", found)

    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        self.apply_group([target], desired, ctx)

    def resource_key(self, target: Target) -> str:
        """Every model's flag lives in the same ConfigMap: one write per namespace for all."""
        return self.configmap

    def apply_group(self, targets: Sequence[Target], desired: Access, ctx: ApplyContext) -> None:
        models = sorted({t.model for t in targets})
        for ns in self.provider.namespaces:
            guarded(partial(self._converge, ns, models, desired, ctx))

    def _converge(self, ns: str, models: list[str], desired: Access, ctx: ApplyContext) -> None:
        """One read-modify-write of one namespace's ConfigMap (no write when already there)."""
        configmap = self._read(ns)
        data = {}
        for model in models:
            try:
                if self._access(ns, configmap, model) == desired:
                    continue
            except CorruptFlag:
                pass  # a document no gateway can read is replaced by one it can
            data[model] = flag_document(model, desired, ctx)
        if not data:
            return
        where = f"{ns}/{self.configmap}"
        if configmap is None:
            body = {"metadata": {"name": self.configmap, "labels": MANAGED_BY}, "data": data}
            self.provider.call(  # 409 AlreadyExists: someone created it first; read again
                f"create configmap {where}",
                lambda k: k.core.create_namespaced_config_map(ns, body, **k.raw),
                fence=ctx.fence,
            )
            return
        patch = {
            "metadata": {"resourceVersion": configmap["metadata"]["resourceVersion"]},
            "data": data,
        }
        self.provider.call(
            f"patch configmap {where} keys {', '.join(sorted(data))}",
            lambda k: k.core.patch_namespaced_config_map(self.configmap, ns, patch, **k.raw),
            fence=ctx.fence,
        )

    def _read(self, ns: str) -> Obj | None:
        try:
            return self.provider.call(
                f"get configmap {ns}/{self.configmap}",
                lambda k: k.core.read_namespaced_config_map(self.configmap, ns, **k.raw),
            )
        except NotFound:
            return None

    def _access(self, ns: str, configmap: Obj | None, model: str) -> Access:
        value = ((configmap or {}).get("data") or {}).get(model)
        if value is None:
            return OPEN
        return parse_flag(f"configmap {ns}/{self.configmap} key {model}", value)
