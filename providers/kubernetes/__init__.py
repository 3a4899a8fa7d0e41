"""Provider ``kubernetes``: one inventory entry per cluster (a kubeconfig context, or the
in-cluster service account), the namespaces where the model servers run, one region.

A model's workloads are found by label (``killswitch.io/model=<model>`` unless the model
says otherwise). The ``kubernetes`` package is imported only when a lever first calls
the cluster, never to validate the inventory or show ``--help``.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from killswitch.contract import Problem
from killswitch.sdk import ProviderBase, within
from providers.kubernetes.config import KubernetesConfig, check, selector_for
from providers.kubernetes.labels import LabelSelector

if TYPE_CHECKING:
    from providers.kubernetes.client import Apis, Obj


class KubernetesProvider(ProviderBase):
    type: ClassVar[str] = "kubernetes"
    config_model: ClassVar[builtins.type[BaseModel]] = KubernetesConfig
    # name → "module:Class", imported on first use.
    levers: ClassVar[Mapping[str, str]] = {
        "configmap-flag": "providers.kubernetes.configmap_flag:ConfigMapFlag",
        "network-policy": "providers.kubernetes.network_policy:NetworkPolicyLever",
        "scale": "providers.kubernetes.scale:Scale",
    }
    config: KubernetesConfig

    @classmethod
    def check(cls, config: Any, models: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
        problems = cls.lever_problems(config.mechanisms)
        problems += cls.unknown_models("models", config.models or [], models)
        return problems + check(config, models)

    def __init__(self, name: str, config: Any, models: Mapping[str, Mapping[str, Any]]) -> None:
        super().__init__(name, config, models)
        self._apis: Apis | None = None
        self._lock = threading.RLock()  # fan-out threads build the client on first use

    # -- what it controls --------------------------------------------------------
    def regions(self) -> list[str]:
        return [self.config.region]

    @property
    def served(self) -> list[str]:
        """The models this cluster serves: the entry's ``models``, or every model."""
        return list(self.config.models) if self.config.models is not None else list(self.models)

    @property
    def namespaces(self) -> list[str]:
        return list(self.config.namespaces)

    def selector(self, model: str) -> LabelSelector:
        return selector_for(self.models, model)

    def least_privilege(self) -> dict[str, Any]:
        """A Role per namespace with exactly the verbs this entry's levers use (a v1 List)."""
        from providers.kubernetes.rbac import roles

        levers = {name: self.mechanism(name) for name in self.config.mechanisms}
        return roles(self.name, self.config, levers, self.served)

    # -- calling the cluster -------------------------------------------------------
    @property
    def cluster(self) -> str:
        """How messages name the cluster: the entry, and its context."""
        where = "in-cluster" if self.config.in_cluster else f"context {self.config.context}"
        return f"{self.name} ({where})"

    def call(
        self, what: str, fn: Callable[[Apis], Any], *, fence: Callable[[], None] | None = None
    ) -> Obj:
        """One API call on this cluster; its JSON reply, or a classified error. A write
        passes its op's ``fence``, checked right before the request goes out."""
        from providers.kubernetes.client import connect, request

        with self._lock:
            if self._apis is None:
                self._apis = connect(self.name, self.config)
            apis = self._apis
        if fence is not None:
            fence()
        where = f"{what} in {self.cluster}"
        return within(self.call_bound_seconds(), where, lambda: request(apis, where, fn))

    def call_bound_seconds(self) -> float:
        """A request's connect and read timeouts (both ``timeout_seconds``), end to end."""
        return 2 * self.config.timeout_seconds
