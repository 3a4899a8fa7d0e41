"""The least-privilege IAM policy for an ``aws`` inventory entry's levers."""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Any

from killswitch.contract import Mechanism, Permission
from providers.aws.config import AwsConfig

if TYPE_CHECKING:
    from providers.aws import AwsProvider

PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _values(config: AwsConfig) -> dict[str, list[str]]:
    roles = list(dict.fromkeys([*config.iam.roles, *config.iam.agent_roles]))
    return {
        "ssm_prefix": [config.ssm_prefix],
        "policy_name": [config.iam.policy_name.replace("{model}", "*")],
        # A role's ARN holds its IAM path (role/ml/inference-callers); names are unique in
        # an account whatever the path, so `*/<name>` matches only that role.
        "iam_role": [f for name in roles for f in (name, f"*/{name}")],
        "iam_group": [f for name in config.iam.groups for f in (name, f"*/{name}")],
        "elb_kind": ["app", "net"],
        # AttachPolicy/DetachPolicy name the policy and the target.
        "scp_resource": [
            "arn:aws:organizations::*:policy/o-*/service_control_policy/p-*",
            *(_scp_target_arn(t) for t in config.scp.targets),
        ],
    }


def _scp_target_arn(target: str) -> str:
    if target.startswith("r-"):
        return f"arn:aws:organizations::*:root/o-*/{target}"
    if target.startswith("ou-"):
        return f"arn:aws:organizations::*:ou/o-*/{target}"
    return f"arn:aws:organizations::*:account/o-*/{target}"


def sid_part(name: str) -> str:
    """``aws-prod`` → ``AwsProd``: Sids are letters and digits only."""
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", name) if p)


def _expand(text: str, values: dict[str, list[str]]) -> list[str]:
    names = PLACEHOLDER.findall(text)
    expanded = []
    for combo in itertools.product(*(values[n] for n in names)):
        result = text
        for name, value in zip(names, combo, strict=True):
            result = result.replace("{" + name + "}", value, 1)
        expanded.append(result)
    return expanded


def statements(config: AwsConfig, levers: dict[str, Mechanism], entry: str) -> list[dict[str, Any]]:
    """One statement per lever and resource set; placeholders filled from ``config``.
    Sids carry the entry's name, so several entries' statements make one valid policy."""
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
                "Sid": f"Killswitch{sid_part(entry)}{sid_part(lever)}{i}",
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


def assume_role_statement(role_arns: list[str], entry: str) -> dict[str, Any]:
    return {
        "Sid": f"Killswitch{sid_part(entry)}AssumeOperatorRoles",
        "Effect": "Allow",
        "Action": ["sts:AssumeRole"],
        "Resource": sorted(role_arns) if len(role_arns) > 1 else role_arns[0],
    }


def boundary_statements(provider: AwsProvider) -> list[dict[str, Any]]:
    """Denies a permissions boundary adds to the least privilege: the operator role can
    neither drop its boundary nor grant through any policy but killswitch's own (whose
    statements the iam-deny read-back checks: an Allow there fails it)."""
    entry = sid_part(provider.name)
    ours = _expand("arn:aws:iam::*:policy/killswitch/{policy_name}", _values(provider.config))
    return [
        {
            "Sid": f"Killswitch{entry}KeepBoundary",
            "Effect": "Deny",
            "Action": [
                "iam:DeleteRolePermissionsBoundary",
                "iam:DeleteUserPermissionsBoundary",
                "iam:PutRolePermissionsBoundary",
                "iam:PutUserPermissionsBoundary",
            ],
            "Resource": "*",
        },
        {
            "Sid": f"Killswitch{entry}NoOtherGrants",
            "Effect": "Deny",
            "Action": [
                "iam:CreatePolicy",
                "iam:CreatePolicyVersion",
                "iam:SetDefaultPolicyVersion",
            ],
            "NotResource": ours,
        },
        {
            "Sid": f"Killswitch{entry}AttachOnlyOurs",
            "Effect": "Deny",
            "Action": ["iam:AttachGroupPolicy", "iam:AttachRolePolicy", "iam:AttachUserPolicy"],
            "Resource": "*",
            "Condition": {"ArnNotLike": {"iam:PolicyARN": ours}},
        },
        {
            "Sid": f"Killswitch{entry}NoInlineGrants",
            "Effect": "Deny",
            "Action": ["iam:PutGroupPolicy", "iam:PutRolePolicy", "iam:PutUserPolicy"],
            "Resource": "*",
        },
    ]
