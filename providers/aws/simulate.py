"""Opt-in (``iam.verify_effect: true``): after the document read-back, ask AWS itself.

``iam:SimulatePrincipalPolicy`` evaluates every policy attached to a caller role (not
only killswitch's) for the requests a closed region must refuse: each action on each
of the model's resources there, and on its global routes, from a caller whose audience
tag names no audience. One call per role and resource; a request AWS says is allowed
makes the target read as open, naming it.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from killswitch.domain import Target
from providers.aws.bedrock_access import ACTIONS, FUTURE_REGION, REGION_KEY, UNLISTED
from providers.aws.deny_effect import OUTSIDER
from providers.aws.deny_policy import DenyPolicy

INVOKE = ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream")

if TYPE_CHECKING:
    from providers.aws import AwsProvider


class EffectCheck:
    def __init__(self, provider: AwsProvider) -> None:
        self.provider = provider
        self._arns: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def reachable(self, target: Target, policy: DenyPolicy) -> str | None:
        """The first request AWS allows that the closed target must refuse, or None."""
        iam = self.provider.config.iam
        region = FUTURE_REGION if target.region == UNLISTED else target.region
        resources = [
            *policy.paths.probes(region, policy.account),
            *policy.paths.global_routes(region, policy.account),
        ]
        context = [
            {
                "ContextKeyName": REGION_KEY,
                "ContextKeyValues": [region],
                "ContextKeyType": "string",
            },
            {
                "ContextKeyName": f"aws:PrincipalTag/{iam.audience_tag}",
                "ContextKeyValues": [OUTSIDER],
                "ContextKeyType": "string",
            },
        ]
        models = [r for r in resources if ":foundation-model/" in r]
        others = [r for r in resources if r not in models]
        # The create actions name the foundation model; every form can be invoked.
        asks = [(list(ACTIONS), models), (list(INVOKE), others)]
        for role in dict.fromkeys([*iam.roles, *iam.agent_roles]):
            arn = self._role_arn(target, role)
            for actions, arns in asks:
                for result in self._simulate(target, arn, arns, actions, context):
                    found = _allowed(result)
                    if found:
                        return (
                            f"SimulatePrincipalPolicy: role {role} is allowed "
                            f"{result.get('EvalActionName')} on {found} in {region}"
                        )
        return None

    def _role_arn(self, target: Target, role: str) -> str:
        key = (target.account, role)
        with self._lock:
            if key in self._arns:
                return self._arns[key]
        reply = self.provider.call(
            target, "iam", "read", f"iam:GetRole {role}", lambda c: c.get_role(RoleName=role)
        )
        arn = str(reply["Role"]["Arn"])
        with self._lock:
            self._arns[key] = arn
        return arn

    def _simulate(
        self,
        target: Target,
        arn: str,
        resources: list[str],
        actions: list[str],
        context: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        page: dict[str, str] = {}
        while True:

            def ask(iam: Any, page: dict[str, str] = page) -> Any:
                return iam.simulate_principal_policy(
                    PolicySourceArn=arn,
                    ActionNames=actions,
                    ResourceArns=resources,
                    ContextEntries=context,
                    **page,
                )

            probe = replace(target, region="us-east-1")
            reply = self.provider.call(
                probe, "iam", "read", f"iam:SimulatePrincipalPolicy {arn}", ask
            )
            results += reply.get("EvaluationResults", [])
            if not reply.get("IsTruncated"):
                return results
            page = {"Marker": reply["Marker"]}


def _string(key: str, value: str) -> dict[str, Any]:
    return {"ContextKeyName": key, "ContextKeyValues": [value], "ContextKeyType": "string"}


def _allowed(result: dict[str, Any]) -> str | None:
    """The resource an evaluation result allows, if any (per resource when AWS lists
    them, else the result as a whole)."""
    for specific in result.get("ResourceSpecificResults", []):
        if specific.get("EvalResourceDecision") == "allowed":
            return str(specific.get("EvalResourceName"))
    if result.get("EvalDecision") == "allowed":
        return str(result.get("EvalResourceName", "*"))
    return None
