"""Who can call themselves a us-person: session tags in the caller roles' trust policies.

The restricted posture spares principals whose tag ``<audience_tag>`` names an
audience. A session tag overrides the role's own tag of the same key, so anyone a
role's trust policy allows ``sts:TagSession`` could assume it with
``killswitch-audience=us-person`` and be spared. A trust policy is safe when every
statement that allows ``sts:TagSession`` pins the audience key out (one of the
conditions below), or a Deny statement refuses sessions that set it.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from killswitch.domain import Access, Posture, Target
from killswitch.errors import PermanentError
from providers.aws.bedrock_access import statements_of

if TYPE_CHECKING:
    from providers.aws import AwsProvider

log = structlog.get_logger(__name__)

# Conditions on an Allow of sts:TagSession that keep the audience key out of a session.
KEY_ALLOW_LISTS = ("ForAllValues:StringNotEquals", "ForAllValues:StringNotLike")
KEY_DENY_LISTS = ("ForAnyValue:StringEquals", "ForAnyValue:StringLike")


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


def _grants_tag_session(statement: Mapping[str, Any]) -> bool:
    if "NotAction" in statement:
        return "sts:TagSession".lower() not in {a.lower() for a in _as_list(statement["NotAction"])}
    actions = {a.lower() for a in _as_list(statement.get("Action"))}
    return bool(actions & {"sts:tagsession", "sts:*", "*"})


def _names_key(block: Any, condition_key: str, tag: str) -> bool:
    if not isinstance(block, dict):
        return False
    for key, values in block.items():
        if key.lower() == condition_key.lower():
            return any(v.lower() == tag.lower() or v == "*" for v in _as_list(values))
    return False


def _pins_key_out(condition: Mapping[str, Any], tag: str) -> bool:
    if any(_names_key(condition.get(op), "aws:TagKeys", tag) for op in KEY_ALLOW_LISTS):
        return True
    null = condition.get("Null")
    if isinstance(null, dict):
        for key, value in null.items():
            if key.lower() == f"aws:RequestTag/{tag}".lower() and str(value).lower() == "true":
                return True
    return False


def tag_session_risks(document: Mapping[str, Any], tag: str) -> list[str]:
    """The statements of a trust policy that let a session set ``tag``; [] when safe."""
    statements = [s for s in statements_of(document) if isinstance(s, dict)]
    for statement in statements:
        condition = statement.get("Condition") or {}
        refuses = statement.get("Effect") == "Deny" and _grants_tag_session(statement)
        if refuses and isinstance(condition, dict):
            keyed = [
                op for op in KEY_DENY_LISTS if _names_key(condition.get(op), "aws:TagKeys", tag)
            ]
            if keyed and set(condition) == set(keyed):
                return []  # sessions that set the key are refused outright
    risks = []
    for i, statement in enumerate(statements):
        if statement.get("Effect") != "Allow" or not _grants_tag_session(statement):
            continue
        condition = statement.get("Condition") or {}
        if isinstance(condition, dict) and _pins_key_out(condition, tag):
            continue
        risks.append(str(statement.get("Sid") or f"statement {i}"))
    return risks


def trust_document(raw: Any) -> dict[str, Any]:
    """GetRole returns the trust policy URL-encoded; boto3 usually decodes it already."""
    if isinstance(raw, str):
        raw = json.loads(urllib.parse.unquote(raw))
    return raw if isinstance(raw, dict) else {}


class SessionTagCheck:
    """Before a restrict: the caller roles whose trust policy lets a session set the
    audience tag (``iam.session_tags: refuse`` refuses the target, ``warn`` logs it).
    One GetRole per role and account per run."""

    def __init__(self, provider: AwsProvider) -> None:
        self.provider = provider
        self._seen: dict[tuple[str, str], list[str]] = {}
        self._lock = threading.Lock()

    def reason(self, target: Target, desired: Access, accounts: list[str]) -> str | None:
        if desired.posture is not Posture.RESTRICTED:
            return None
        iam = self.provider.config.iam
        unsafe = []
        for account in accounts:
            for role in dict.fromkeys([*iam.roles, *iam.agent_roles]):
                risks = self._risks(replace(target, account=account), role)
                if risks:
                    where = f" in {account}" if account else ""
                    unsafe.append(f"role {role}{where} ({', '.join(risks)})")
        if not unsafe:
            return None
        message = (
            f"{'; '.join(unsafe)}: its trust policy allows sts:TagSession without pinning the "
            f"tag key {iam.audience_tag}, so whoever may assume it can tag the session "
            f"{iam.audience_tag}={','.join(desired.audience)} and be spared (docs/aws.md, "
            "'Who counts as a us-person')"
        )
        if iam.session_tags == "warn":
            log.warning("restricted posture can be self-granted", target=target.id, why=message)
            return None
        return message

    def _risks(self, probe: Target, role: str) -> list[str]:
        key = (probe.account, role)
        with self._lock:
            if key in self._seen:
                return self._seen[key]
        try:
            reply = self.provider.call(
                probe, "iam", "read", f"iam:GetRole {role}", lambda c: c.get_role(RoleName=role)
            )
        except PermanentError as exc:
            if "NoSuchEntity" not in str(exc):
                raise
            risks: list[str] = []  # nothing to assume
        else:
            document = trust_document(reply["Role"].get("AssumeRolePolicyDocument"))
            risks = tag_session_risks(document, self.provider.config.iam.audience_tag)
        with self._lock:
            self._seen[key] = risks
        return risks
