"""The least-privilege IAM policy for an ``aws`` inventory entry's levers."""

from __future__ import annotations

import itertools
import re
from typing import Any

from killswitch.contract import Mechanism, Permission
from providers.aws.config import AwsConfig

PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _values(config: AwsConfig) -> dict[str, list[str]]:
    return {
        "ssm_prefix": [config.ssm_prefix],
        "policy_name": [config.iam.policy_name.replace("{model}", "*")],
        "iam_role": list(config.iam.roles),
        "iam_group": list(config.iam.groups),
    }


def _expand(text: str, values: dict[str, list[str]]) -> list[str]:
    names = PLACEHOLDER.findall(text)
    expanded = []
    for combo in itertools.product(*(values[n] for n in names)):
        result = text
        for name, value in zip(names, combo, strict=True):
            result = result.replace("{" + name + "}", value, 1)
        expanded.append(result)
    return expanded


def statements(config: AwsConfig, levers: dict[str, Mechanism]) -> list[dict[str, Any]]:
    """One statement per lever and resource set; placeholders filled from ``config``."""
    values = _values(config)
    found: list[dict[str, Any]] = []
    for lever, mechanism in sorted(levers.items()):
        grouped: dict[tuple[tuple[str, ...], str], list[str]] = {}
        conditions: dict[tuple[tuple[str, ...], str], dict[str, Any]] = {}
        for permission in mechanism.permissions:
            resources = tuple(_expand(permission.resource, values))
            if not resources:
                continue  # e.g. AttachGroupPolicy when the inventory names no groups
            condition = _condition(permission, values)
            key = (resources, repr(sorted(condition.items())))
            grouped.setdefault(key, []).append(permission.action)
            conditions[key] = condition
        for i, ((resources, _), actions) in enumerate(sorted(grouped.items())):
            statement: dict[str, Any] = {
                "Sid": "Killswitch" + "".join(p.capitalize() for p in lever.split("-")) + str(i),
                "Effect": "Allow",
                "Action": sorted(set(actions)),
                "Resource": list(resources) if len(resources) > 1 else resources[0],
            }
            if conditions[(resources, _)]:
                statement["Condition"] = conditions[(resources, _)]
            found.append(statement)
    return found


def _condition(permission: Permission, values: dict[str, list[str]]) -> dict[str, Any]:
    condition: dict[str, Any] = {}
    for operator, key, value in permission.condition:
        expanded = _expand(value, values)
        condition.setdefault(operator, {})[key] = expanded[0] if len(expanded) == 1 else expanded
    return condition


def assume_role_statement(role_arns: list[str]) -> dict[str, Any]:
    return {
        "Sid": "KillswitchAssumeOperatorRoles",
        "Effect": "Allow",
        "Action": ["sts:AssumeRole"],
        "Resource": sorted(role_arns) if len(role_arns) > 1 else role_arns[0],
    }
