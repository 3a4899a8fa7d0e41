"""The least-privilege IAM policy for an ``aws`` inventory entry's levers."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from typing import Any

from killswitch.contract import Mechanism, Permission
from providers.aws.config import AwsConfig

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


def statements(config: AwsConfig, levers: dict[str, Mechanism]) -> list[dict[str, Any]]:
    """One statement per resource set and condition, across the entry's levers;
    placeholders filled from ``config``. A Sid names what the statement holds, so the
    same statement from several entries is printed once and different ones never share
    a Sid (a repeated Sid is a MalformedPolicyDocument)."""
    values = _values(config)
    grouped: dict[tuple[tuple[str, ...], str], set[str]] = {}
    conditions: dict[tuple[tuple[str, ...], str], dict[str, Any]] = {}
    for _, mechanism in sorted(levers.items()):
        for permission in mechanism.permissions:
            resources = tuple(_expand(permission.resource, values))
            if not resources:
                continue  # e.g. AttachGroupPolicy when the inventory names no groups
            condition = _condition(permission, values)
            key = (resources, repr(sorted(condition.items())))
            grouped.setdefault(key, set()).add(permission.action)
            conditions[key] = condition
    found = []
    for key, actions in sorted(grouped.items()):
        resources = key[0]
        statement: dict[str, Any] = {
            "Effect": "Allow",
            "Action": sorted(actions),
            "Resource": list(resources) if len(resources) > 1 else resources[0],
        }
        if conditions[key]:
            statement["Condition"] = conditions[key]
        found.append(content_sid(statement))
    return found


def content_sid(statement: dict[str, Any]) -> dict[str, Any]:
    """``statement`` with a Sid made from what it holds: ``Killswitch<service><hash>``."""
    body = json.dumps(statement, sort_keys=True, separators=(",", ":"))
    actions = statement.get("Action") or ["x:*"]
    service = sid_part(str(actions[0] if isinstance(actions, list) else actions).split(":")[0])
    digest = hashlib.sha256(body.encode()).hexdigest()[:10]
    return {"Sid": f"Killswitch{service}{digest}", **statement}


def _condition(permission: Permission, values: dict[str, list[str]]) -> dict[str, Any]:
    condition: dict[str, Any] = {}
    for operator, key, value in permission.condition:
        expanded = _expand(value, values)
        condition.setdefault(operator, {})[key] = expanded[0] if len(expanded) == 1 else expanded
    return condition


def assume_role_statement(role_arns: list[str]) -> dict[str, Any]:
    return content_sid(
        {
            "Effect": "Allow",
            "Action": ["sts:AssumeRole"],
            "Resource": sorted(role_arns) if len(role_arns) > 1 else role_arns[0],
        }
    )


def boundary_statements() -> list[dict[str, Any]]:
    """Denies a permissions boundary adds to the least privilege: the operator role can
    neither drop its boundary nor grant through any policy but killswitch's own, all of
    which live under the IAM path /killswitch/ (the allow-list narrows them to the
    inventory's names; an Allow written there fails the iam-deny read-back). The same
    for every entry, so several entries print them once."""
    ours = "arn:aws:iam::*:policy/killswitch/*"
    denies: list[dict[str, Any]] = [
        {
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
            "Effect": "Deny",
            "Action": [
                "iam:CreatePolicy",
                "iam:CreatePolicyVersion",
                "iam:SetDefaultPolicyVersion",
            ],
            "NotResource": ours,
        },
        {
            "Effect": "Deny",
            "Action": ["iam:AttachGroupPolicy", "iam:AttachRolePolicy", "iam:AttachUserPolicy"],
            "Resource": "*",
            "Condition": {"ArnNotLike": {"iam:PolicyARN": ours}},
        },
        {
            "Effect": "Deny",
            "Action": ["iam:PutGroupPolicy", "iam:PutRolePolicy", "iam:PutUserPolicy"],
            "Resource": "*",
        },
    ]
    return [content_sid(statement) for statement in denies]
