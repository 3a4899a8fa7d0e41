"""The least-privilege RBAC of a ``kubernetes`` entry, built from its levers' permissions.

Each lever declares ``Permission(verb, "<resource>[.<group>][/<name>]")`` (kubectl's
notation); ``{configmap}`` and ``{model}`` in a name are filled from the inventory. The
result is one Role per listed namespace (nothing cluster-wide is needed), as a v1 List
that ``kubectl apply -f -`` takes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from killswitch.contract import Mechanism
from providers.kubernetes.config import KubernetesConfig

ROLE_NAME = "killswitch"
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def parse_resource(text: str) -> tuple[str, str, str | None]:
    """``deployments.apps`` → ("apps", "deployments", None); ``configmaps/x`` → ("", …, "x")."""
    kind, _, name = text.partition("/")
    resource, _, group = kind.partition(".")
    return group, resource, name or None


def _expand(template: str, values: Mapping[str, Sequence[str]]) -> list[str]:
    names = [template]
    for placeholder in PLACEHOLDER.findall(template):
        names = [n.replace("{" + placeholder + "}", v) for n in names for v in values[placeholder]]
    return names


def rules(levers: Mapping[str, Mechanism], values: Mapping[str, Sequence[str]]) -> list[Any]:
    """RBAC rules: verbs per (group, resource, names), resources with equal verbs merged."""
    verbs: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for lever in levers.values():
        for permission in lever.permissions:
            group, resource, name = parse_resource(permission.resource)
            names = tuple(sorted(set(_expand(name, values)))) if name else ()
            if name and not names:
                continue  # e.g. a per-model name when the entry serves no model
            verbs.setdefault((group, resource, names), set()).add(permission.action)
    merged: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for (group, resource, names), found in sorted(verbs.items()):
        merged.setdefault((group, names, tuple(sorted(found))), []).append(resource)
    found_rules = []
    for (group, names, verb_list), resources in sorted(merged.items()):
        rule: dict[str, Any] = {"apiGroups": [group], "resources": resources}
        if names:
            rule["resourceNames"] = list(names)
        rule["verbs"] = list(verb_list)
        found_rules.append(rule)
    return found_rules


def roles(
    entry: str, config: KubernetesConfig, levers: Mapping[str, Mechanism], models: Sequence[str]
) -> dict[str, Any]:
    """A ``Role`` named ``killswitch`` in each namespace of the entry, in a v1 ``List``."""
    values = {"configmap": [config.configmap], "model": list(models)}
    cluster = "in-cluster" if config.in_cluster else f"context {config.context}"
    found = rules(levers, values)
    items = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {
                "name": ROLE_NAME,
                "namespace": ns,
                "labels": {"app.kubernetes.io/managed-by": "killswitch"},
                "annotations": {
                    "killswitch.io/provider": entry,
                    "killswitch.io/cluster": cluster,
                    "killswitch.io/levers": ",".join(sorted(levers)),
                },
            },
            "rules": found,
        }
        for ns in config.namespaces
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def to_yaml(document: Mapping[str, Any]) -> str:
    """YAML for ``kubectl apply -f -`` (block style, keys in the order Kubernetes shows them)."""
    return yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)
