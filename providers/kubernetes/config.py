"""The ``kubernetes`` inventory entry and the per-model ``kubernetes:`` section, validated
offline: no kubeconfig is read and no cluster is called."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from killswitch.contract import Problem
from killswitch.domain import is_valid_name
from providers.kubernetes.labels import (
    LabelSelector,
    is_label_key,
    is_namespace,
    is_object_name,
    model_selector,
    parse_selector,
)

# kubeconfig context names are free text in principle; in practice they look like
# `eu-prod`, `gke_project_zone_name` or `arn:aws:eks:eu-west-1:123456789012:cluster/prod`.
CONTEXT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/@+=-]{0,252}$")
POLICY_PREFIX = "killswitch-"  # NetworkPolicy name: killswitch-<model>


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KubernetesConfig(_Strict):
    """One cluster: how to reach it, where the model servers run, which levers to pull."""

    context: str | None = None
    in_cluster: bool = False
    kubeconfig: str | None = None  # default: $KUBECONFIG, then ~/.kube/config
    region: str
    namespaces: list[str] = Field(min_length=1)
    mechanisms: list[str] = Field(min_length=1)
    models: list[str] | None = None  # the models this cluster serves; default: all
    configmap: str = "killswitch-models"
    audience_label: str = "killswitch.io/audience"
    timeout_seconds: StrictFloat = Field(default=10.0, gt=0, le=300)

    @field_validator("context")
    @classmethod
    def _context(cls, value: str | None) -> str | None:
        if value is not None and not CONTEXT.fullmatch(value):
            raise ValueError("a kubeconfig context name (letters, digits and _.:/@+=-)")
        return value

    @field_validator("kubeconfig")
    @classmethod
    def _kubeconfig(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(ord(c) < 32 for c in value)):
            raise ValueError("a path to a kubeconfig file")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(f"region {value!r} must match [a-z0-9._-]")
        return value

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        for namespace in value:
            if not is_namespace(namespace):
                raise ValueError(f"{namespace!r} is not a namespace name (RFC 1123 label)")
        if len(set(value)) != len(value):
            raise ValueError("a namespace is listed twice")
        return value

    @field_validator("configmap")
    @classmethod
    def _configmap(cls, value: str) -> str:
        if not is_object_name(value):
            raise ValueError(f"{value!r} is not a ConfigMap name (lowercase RFC 1123)")
        return value

    @field_validator("audience_label")
    @classmethod
    def _audience_label(cls, value: str) -> str:
        if not is_label_key(value):
            raise ValueError(f"{value!r} is not a label key ([prefix/]name)")
        return value

    @model_validator(mode="after")
    def _one_way_in(self) -> KubernetesConfig:
        if (self.context is None) == (not self.in_cluster):
            raise ValueError(
                "give exactly one of context (a kubeconfig context) or in_cluster: true; "
                "killswitch never falls back to the current context"
            )
        if self.in_cluster and self.kubeconfig is not None:
            raise ValueError("kubeconfig goes with context, not with in_cluster")
        return self


class ModelKubernetes(_Strict):
    """``models.<name>.kubernetes``: how to find the model's workloads."""

    selector: str | None = None

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str | None) -> str | None:
        if value is not None:
            parse_selector(value)
        return value


def model_kubernetes(models: Mapping[str, Mapping[str, Any]], model: str) -> ModelKubernetes:
    return ModelKubernetes.model_validate(models.get(model, {}).get("kubernetes") or {})


def selector_for(models: Mapping[str, Mapping[str, Any]], model: str) -> LabelSelector:
    """The model's workloads: its configured selector, or ``killswitch.io/model=<model>``."""
    spec = model_kubernetes(models, model)
    return parse_selector(spec.selector) if spec.selector else model_selector(model)


def check(config: KubernetesConfig, models: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
    """Each served model's ``kubernetes:`` section, and the names its levers will use
    (the provider checks the levers and models listed: ProviderBase)."""
    problems = []
    served = config.models if config.models is not None else list(models)
    for model in served:
        try:
            model_kubernetes(models, model)
        except ValidationError as exc:
            problems += [
                Problem(("models", model, "kubernetes", *e["loc"]), e["msg"], absolute=True)
                for e in exc.errors()
            ]
        if "network-policy" in config.mechanisms and not is_object_name(POLICY_PREFIX + model):
            problems.append(
                Problem(
                    ("models", model),
                    f"network-policy names its NetworkPolicy {POLICY_PREFIX}{model}, "
                    "which is not a Kubernetes name (lowercase letters, digits, '-' and '.')",
                    absolute=True,
                )
            )
    return problems
