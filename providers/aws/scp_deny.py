"""Lever ``scp-deny``: one AWS Organizations service control policy per model.

The policy (default ``killswitch-deny-<model>``) holds the same deny document as
``iam-deny`` (providers/aws/bedrock_access.py) and is attached to the roots, OUs and
accounts in ``scp.targets``: it binds every principal of those accounts, whoever they
are and whatever is attached to them, including accounts the inventory lists nowhere
else. Organizations calls go to the management account (``scp.role_arn``, or the
entry's own credentials). One policy covers every region, so the engine groups the
changes that share it into one write (``Grouped``).

Exact restore: opening every region detaches the policy from the targets (the state
before the first revoke); opening some regions writes the document those postures
had before (documents are rendered from postures, so the same postures give the same
bytes). The read-back evaluates the document like ``iam-deny`` and fails on a
statement killswitch did not write; a target the policy is not attached to reads as
open. SCPs never bind the management account itself (docs/aws.md).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from killswitch.contract import ApplyContext, Permission
from killswitch.domain import OPEN, Access, Observed, Posture, Target
from killswitch.errors import PermanentError
from providers.aws.bedrock_access import MAX_SCP, canonical
from providers.aws.config import model_aws
from providers.aws.deny_policy import DenyNotes, DenyPolicy, observed
from providers.aws.trust import SessionTagCheck

if TYPE_CHECKING:
    from providers.aws import AwsProvider

SCP = "SERVICE_CONTROL_POLICY"
POLICY_ARN = "arn:aws:organizations::*:policy/o-*/service_control_policy/p-*"
ONLY_SCPS = (("StringEquals", "organizations:PolicyType", SCP),)


class ScpDeny:
    name: ClassVar[str] = "aws.scp-deny"
    supports: ClassVar[frozenset[Posture]] = frozenset(Posture)
    wave: ClassVar[int] = 1  # deeper than the edge flags, like iam-deny
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission("organizations:ListPolicies", "*", ONLY_SCPS),
        Permission("organizations:DescribePolicy", POLICY_ARN, ONLY_SCPS),
        Permission("organizations:ListTargetsForPolicy", POLICY_ARN, ONLY_SCPS),
        # The policy has no ARN before it exists: policy linters want "*" here.
        Permission("organizations:CreatePolicy", "*", ONLY_SCPS),
        Permission("organizations:UpdatePolicy", POLICY_ARN, ONLY_SCPS),
        Permission("organizations:TagResource", POLICY_ARN),
        # Attach and detach name the policy and the target: both must be allowed.
        Permission("organizations:AttachPolicy", "{scp_resource}", ONLY_SCPS),
        Permission("organizations:DetachPolicy", "{scp_resource}", ONLY_SCPS),
        # Before a restrict: can a caller role's sessions claim the audience tag?
        Permission("iam:GetRole", "arn:aws:iam::*:role/{iam_role}"),
    )

    def __init__(self, provider: AwsProvider) -> None:
        self.provider = provider
        self.scp = provider.config.scp
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._session_tags = SessionTagCheck(provider)
        self._notes = DenyNotes("scp-deny")

    def policy_name(self, model: str) -> str:
        return self.scp.policy_name.replace("{model}", model)

    def resource_key(self, target: Target) -> str:
        return f"organizations/{self.policy_name(target.model)}"

    def policy(self, target: Target) -> DenyPolicy:
        return DenyPolicy(
            self.policy_name(target.model),
            tuple(self.provider.regions()),
            model_aws(self.provider.models, target.model).paths(),
            self.provider.config.iam.audience_tag,
        )

    def _org(
        self, target: Target, kind: str, what: str, fn: Any, ctx: ApplyContext | None = None
    ) -> Any:
        return self.provider.call(target, "organizations", kind, what, fn, ctx)  # type: ignore[arg-type]

    # -- reading -------------------------------------------------------------------
    def _policy_id(self, target: Target) -> str | None:
        name = self.policy_name(target.model)
        with self._lock:
            if name in self._ids:
                return self._ids[name]
        page: dict[str, str] = {}
        while True:

            def list_page(org: Any, page: dict[str, str] = page) -> Any:
                return org.list_policies(Filter=SCP, **page)

            reply = self._org(target, "read", "organizations:ListPolicies", list_page)
            for summary in reply.get("Policies", []):
                if summary["Name"] == name:
                    with self._lock:
                        self._ids[name] = str(summary["Id"])
                    return str(summary["Id"])
            if not reply.get("NextToken"):
                return None
            page = {"NextToken": reply["NextToken"]}

    def _current(self, target: Target) -> tuple[str | None, dict[str, Any] | None]:
        policy_id = self._policy_id(target)
        if policy_id is None:
            return None, None
        reply = self._org(
            target,
            "read",
            f"organizations:DescribePolicy {policy_id}",
            lambda org: org.describe_policy(PolicyId=policy_id),
        )
        document = json.loads(reply["Policy"]["Content"])
        if not isinstance(document, dict):
            raise PermanentError(f"SCP {policy_id} is not a JSON object")
        return policy_id, document

    def _attached(self, target: Target, policy_id: str) -> set[str]:
        found: set[str] = set()
        page: dict[str, str] = {}
        while True:

            def list_page(org: Any, page: dict[str, str] = page) -> Any:
                return org.list_targets_for_policy(PolicyId=policy_id, **page)

            reply = self._org(
                target, "read", f"organizations:ListTargetsForPolicy {policy_id}", list_page
            )
            found |= {str(t["TargetId"]) for t in reply.get("Targets", [])}
            if not reply.get("NextToken"):
                return found
            page = {"NextToken": reply["NextToken"]}

    def observe(self, target: Target) -> Observed:
        name = self.policy_name(target.model)
        policy_id, document = self._current(target)
        if policy_id is None or document is None:
            return Observed(OPEN, f"no SCP {name} (reads as open)")
        missing = [t for t in self.scp.targets if t not in self._attached(target, policy_id)]
        if len(missing) == len(self.scp.targets):
            return Observed(OPEN, f"SCP {name} ({policy_id}) is attached to no target")
        policy = self.policy(target)
        reading = policy.reading(document, target.region)
        self._notes.geography(policy, document)
        label = f"SCP {name} ({policy_id})"
        return observed(reading, label, ", ".join(missing), target.region, self.provider.regions())

    def preflight(self, target: Target, desired: Access) -> str | None:
        """A restrict is refused where a caller role's sessions can claim the audience
        (the entry's listed roles, in each of its accounts)."""
        self._notes.closing_unlisted(target, desired, self.provider.regions())
        return self._session_tags.reason(target, desired, self.provider.accounts())

    # -- writing -------------------------------------------------------------------
    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        self.apply_group([target], desired, ctx)

    def apply_group(self, targets: Sequence[Target], desired: Access, ctx: ApplyContext) -> None:
        """Set ``desired`` for every region in ``targets`` (one model) in one write."""
        first = targets[0]
        policy_id, document = self._current(first)
        attached = self._attached(first, policy_id) if policy_id else set()
        if policy_id is not None and document is not None and not attached:
            document = None  # detached: nothing is closed, whatever it still holds
        changes = {t.region: desired for t in targets}
        new = self.policy(first).rewrite(document, changes, MAX_SCP)
        opens_all = all(s.get("Sid") == "KillswitchNothingDenied" for s in new["Statement"])
        if opens_all:
            for target_id in sorted(attached & set(self.scp.targets)):
                self._detach(first, policy_id or "", target_id, ctx)
            return
        if policy_id is None:
            policy_id = self._create(first, new, ctx)
        elif document is None or canonical(document) != canonical(new):
            self._update(first, policy_id, new, ctx)
        for target_id in self.scp.targets:
            if target_id not in attached:
                self._attach(first, policy_id, target_id, ctx)

    def _create(self, target: Target, document: dict[str, Any], ctx: ApplyContext) -> str:
        name = self.policy_name(target.model)
        reply = self._org(
            target,
            "write",
            f"organizations:CreatePolicy {name}",
            lambda org: org.create_policy(
                Content=json.dumps(document, separators=(",", ":")),
                Description=f"killswitch: Bedrock access to {target.model}, per region",
                Name=name,
                Type=SCP,
                Tags=[{"Key": "killswitch:model", "Value": target.model}],
            ),
            ctx,
        )
        policy_id = str(reply["Policy"]["PolicySummary"]["Id"])
        with self._lock:
            self._ids[name] = policy_id
        return policy_id

    def _update(
        self, target: Target, policy_id: str, document: dict[str, Any], ctx: ApplyContext
    ) -> None:
        self._org(
            target,
            "write",
            f"organizations:UpdatePolicy {policy_id}",
            lambda org: org.update_policy(
                PolicyId=policy_id, Content=json.dumps(document, separators=(",", ":"))
            ),
            ctx,
        )

    def _attach(self, target: Target, policy_id: str, target_id: str, ctx: ApplyContext) -> None:
        self._target_call("attach_policy", target, policy_id, target_id, ctx)

    def _detach(self, target: Target, policy_id: str, target_id: str, ctx: ApplyContext) -> None:
        self._target_call("detach_policy", target, policy_id, target_id, ctx)

    def _target_call(
        self, method: str, target: Target, policy_id: str, target_id: str, ctx: ApplyContext
    ) -> None:
        action = "".join(p.capitalize() for p in method.split("_"))
        self._org(
            target,
            "write",
            f"organizations:{action} {policy_id} {target_id}",
            lambda org: getattr(org, method)(PolicyId=policy_id, TargetId=target_id),
            ctx,
        )
