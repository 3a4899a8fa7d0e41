"""Lever ``iam-deny``: a customer-managed IAM deny policy per model per account.

The policy (default ``killswitch-deny-<model>``, path ``/killswitch/``) is attached to
the roles, agent service roles and groups the inventory lists. It denies every path to
the model (providers/aws/bedrock_access.py) in the closed regions; the target region
``unlisted`` stands for every region the inventory does not list (and regions AWS adds
later), so a revoke of ``all`` or ``!us-*`` closes them too. The tool owns that policy
and never edits any other. One policy covers every region of an account, so the engine
groups the changes that share it into one write (``Grouped``). Going back to a posture
that an earlier version already holds switches the default version back to it, so a
restore returns to exactly the document that was there before.

The read-back evaluates the document for every (action, resource form, region, caller)
it must close or keep open, and fails on a statement killswitch did not write.
Caveat (docs/aws.md): IAM changes take seconds to propagate.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from killswitch.contract import ApplyContext, Permission
from killswitch.domain import OPEN, Access, Observed, Posture, Target
from killswitch.errors import PermanentError
from providers.aws.bedrock_access import MAX_MANAGED_POLICY, canonical
from providers.aws.config import model_aws
from providers.aws.deny_policy import DenyNotes, DenyPolicy, observed
from providers.aws.simulate import EffectCheck
from providers.aws.trust import SessionTagCheck

if TYPE_CHECKING:
    from providers.aws import AwsProvider

PATH = "/killswitch/"
MAX_VERSIONS = 5  # IAM's limit on versions of one managed policy
OUR_POLICIES = "arn:aws:iam::*:policy/killswitch/{policy_name}"
ONLY_OURS = (("ArnLike", "iam:PolicyARN", OUR_POLICIES),)


def _document(raw: Any) -> dict[str, Any]:
    """IAM returns documents URL-encoded; boto3 usually decodes them already."""
    if isinstance(raw, str):
        raw = json.loads(urllib.parse.unquote(raw))
    if not isinstance(raw, dict):
        raise PermanentError("IAM policy document is not a JSON object")
    return raw


class IamDeny:
    name: ClassVar[str] = "aws.iam-deny"
    supports: ClassVar[frozenset[Posture]] = frozenset(Posture)
    wave: ClassVar[int] = 1  # deeper than the edge flags: closed after them, opened before
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission("sts:GetCallerIdentity", "*"),
        Permission("iam:GetPolicy", OUR_POLICIES),
        Permission("iam:GetPolicyVersion", OUR_POLICIES),
        Permission("iam:ListPolicyVersions", OUR_POLICIES),
        Permission("iam:ListEntitiesForPolicy", OUR_POLICIES),
        Permission("iam:CreatePolicy", OUR_POLICIES),
        Permission("iam:CreatePolicyVersion", OUR_POLICIES),
        Permission("iam:DeletePolicyVersion", OUR_POLICIES),
        Permission("iam:SetDefaultPolicyVersion", OUR_POLICIES),
        Permission("iam:TagPolicy", OUR_POLICIES),
        # Attach only our own policy: the condition pins the policy ARN.
        Permission("iam:AttachRolePolicy", "arn:aws:iam::*:role/{iam_role}", ONLY_OURS),
        Permission("iam:AttachGroupPolicy", "arn:aws:iam::*:group/{iam_group}", ONLY_OURS),
        # Before a restrict: can a caller role's sessions claim the audience tag? And
        # `inventory validate --reach`: do the roles and groups it attaches to exist?
        Permission("iam:GetRole", "arn:aws:iam::*:role/{iam_role}"),
        Permission("iam:GetGroup", "arn:aws:iam::*:group/{iam_group}"),
        # iam.verify_effect: AWS's own evaluation of everything attached to the roles.
        Permission("iam:SimulatePrincipalPolicy", "arn:aws:iam::*:role/{iam_role}"),
    )

    def __init__(self, provider: AwsProvider) -> None:
        self.provider = provider
        self.iam = provider.config.iam
        self._account_ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._session_tags = SessionTagCheck(provider)
        self._notes = DenyNotes("iam-deny")
        self._effect = EffectCheck(provider)

    # -- naming ------------------------------------------------------------------
    def policy_name(self, model: str) -> str:
        return self.iam.policy_name.replace("{model}", model)

    def resource_key(self, target: Target) -> str:
        return f"{target.account}/{self.policy_name(target.model)}"

    def _account_id(self, target: Target) -> str:
        if target.account:
            return target.account
        with self._lock:
            if "" not in self._account_ids:
                identity = self.provider.call(
                    target,
                    "sts",
                    "read",
                    "sts:GetCallerIdentity",
                    lambda sts: sts.get_caller_identity(),
                )
                self._account_ids[""] = str(identity["Account"])
            return self._account_ids[""]

    def policy_arn(self, target: Target) -> str:
        return (
            f"arn:aws:iam::{self._account_id(target)}:policy{PATH}{self.policy_name(target.model)}"
        )

    # -- reading -------------------------------------------------------------------
    def _iam(
        self, target: Target, kind: str, what: str, fn: Any, ctx: ApplyContext | None = None
    ) -> Any:
        return self.provider.call(target, "iam", kind, what, fn, ctx)  # type: ignore[arg-type]

    def _current(self, target: Target) -> tuple[dict[str, Any] | None, str | None]:
        """(default version document, its version id), or (None, None) if no policy."""
        arn = self.policy_arn(target)
        try:
            policy = self._iam(
                target, "read", f"iam:GetPolicy {arn}", lambda iam: iam.get_policy(PolicyArn=arn)
            )["Policy"]
        except PermanentError as exc:
            if "NoSuchEntity" in str(exc):
                return None, None
            raise
        version_id = policy["DefaultVersionId"]
        version = self._iam(
            target,
            "read",
            f"iam:GetPolicyVersion {arn} {version_id}",
            lambda iam: iam.get_policy_version(PolicyArn=arn, VersionId=version_id),
        )["PolicyVersion"]
        return _document(version["Document"]), version_id

    def _missing_attachments(self, target: Target) -> list[tuple[str, str]]:
        arn = self.policy_arn(target)
        entities = self._iam(
            target,
            "read",
            f"iam:ListEntitiesForPolicy {arn}",
            lambda iam: iam.list_entities_for_policy(PolicyArn=arn),
        )
        roles = {r["RoleName"] for r in entities.get("PolicyRoles", [])}
        groups = {g["GroupName"] for g in entities.get("PolicyGroups", [])}
        wanted = [*self.iam.roles, *self.iam.agent_roles]
        return [("role", r) for r in dict.fromkeys(wanted) if r not in roles] + [
            ("group", g) for g in self.iam.groups if g not in groups
        ]

    def absent_principals(self, account: str) -> list[str]:
        """The roles and groups in ``iam`` that do not exist in ``account``: a revoke
        could not attach the deny policy to them (``inventory validate --reach``)."""
        probe = Target("aws", self.provider.name, "us-east-1", "iam-deny", "", account)
        wanted = [("role", r) for r in dict.fromkeys([*self.iam.roles, *self.iam.agent_roles])]
        wanted += [("group", g) for g in self.iam.groups]
        absent = []
        for kind, path in wanted:
            name = path.rsplit("/", 1)[-1]
            ask = _get_role(name) if kind == "role" else _get_group(name)
            try:
                self._iam(probe, "read", f"iam:Get{kind.title()} {name}", ask)
            except PermanentError as exc:
                if "NoSuchEntity" not in str(exc):
                    raise
                absent.append(f"IAM {kind} {path} (iam.{kind}s) does not exist")
        return absent

    def policy(self, target: Target) -> DenyPolicy:
        return DenyPolicy(
            self.policy_name(target.model),
            tuple(self.provider.regions()),
            model_aws(self.provider.models, target.model).paths(),
            self.iam.audience_tag,
            self._account_id(target),
        )

    def observe(self, target: Target) -> Observed:
        document, version = self._current(target)
        name = self.policy_name(target.model)
        if document is None:
            return Observed(OPEN, f"no policy {name} (reads as open)")
        policy = self.policy(target)
        reading = policy.reading(document, target.region)
        self._notes.geography(policy, document)
        missing = ""
        if reading.strict.posture is not Posture.OPEN:
            unbound = self._missing_attachments(target)
            missing = ", ".join(f"{kind} {who}" for kind, who in unbound)
            if not missing and self.iam.verify_effect:
                reachable = self._effect.reachable(target, policy)
                if reachable:
                    return Observed(OPEN, f"{name} {version}: {reachable}")
        listed = self.provider.regions()
        return observed(reading, f"{name} {version}", missing, target.region, listed)

    def preflight(self, target: Target, desired: Access) -> str | None:
        """A restrict is refused where a caller role's sessions can claim the audience."""
        self._notes.closing_unlisted(target, desired, self.provider.regions())
        return self._session_tags.reason(target, desired, [target.account])

    # -- writing -------------------------------------------------------------------
    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        self.apply_group([target], desired, ctx)

    def apply_group(self, targets: Sequence[Target], desired: Access, ctx: ApplyContext) -> None:
        """Set ``desired`` for every region in ``targets`` (one model, one account) in one
        policy write; other regions keep the tightest posture the policy gives them now
        (so replacing an edited or older document never opens anything)."""
        first = targets[0]
        document, _ = self._current(first)
        changes = {t.region: desired for t in targets}
        new = self.policy(first).rewrite(document, changes, MAX_MANAGED_POLICY)
        if document is None:
            self._create(first, new, ctx)
        elif canonical(document) != canonical(new):
            self._set_default(first, new, ctx)
        if desired.posture is not Posture.OPEN:
            self._attach(first, ctx)

    def _create(self, target: Target, document: dict[str, Any], ctx: ApplyContext) -> None:
        name = self.policy_name(target.model)
        self._iam(
            target,
            "write",
            f"iam:CreatePolicy {name}",
            lambda iam: iam.create_policy(
                PolicyName=name,
                Path=PATH,
                PolicyDocument=json.dumps(document),
                Description=f"killswitch: Bedrock access to {target.model}, per region",
                Tags=[{"Key": "killswitch:model", "Value": target.model}],
            ),
            ctx,
        )

    def _set_default(self, target: Target, document: dict[str, Any], ctx: ApplyContext) -> None:
        """Make ``document`` the default version: switch back to an existing version
        that holds it, or create one (pruning the oldest within IAM's limit of 5)."""
        arn = self.policy_arn(target)
        versions = self._iam(
            target,
            "read",
            f"iam:ListPolicyVersions {arn}",
            lambda iam: iam.list_policy_versions(PolicyArn=arn),
        )["Versions"]
        wanted = canonical(document)
        for version in versions:
            if version["IsDefaultVersion"]:
                continue
            held = self._iam(
                target,
                "read",
                f"iam:GetPolicyVersion {arn} {version['VersionId']}",
                lambda iam, v=version["VersionId"]: iam.get_policy_version(
                    PolicyArn=arn, VersionId=v
                ),
            )["PolicyVersion"]["Document"]
            if canonical(_document(held)) == wanted:
                self._iam(
                    target,
                    "write",
                    f"iam:SetDefaultPolicyVersion {arn} {version['VersionId']}",
                    lambda iam, v=version["VersionId"]: iam.set_default_policy_version(
                        PolicyArn=arn, VersionId=v
                    ),
                    ctx,
                )
                return
        if len(versions) >= MAX_VERSIONS:
            oldest = min(
                (v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"]
            )
            self._iam(
                target,
                "write",
                f"iam:DeletePolicyVersion {arn} {oldest['VersionId']}",
                lambda iam: iam.delete_policy_version(PolicyArn=arn, VersionId=oldest["VersionId"]),
                ctx,
            )
        self._iam(
            target,
            "write",
            f"iam:CreatePolicyVersion {arn}",
            lambda iam: iam.create_policy_version(
                PolicyArn=arn, PolicyDocument=json.dumps(document), SetAsDefault=True
            ),
            ctx,
        )

    def _attach(self, target: Target, ctx: ApplyContext) -> None:
        arn = self.policy_arn(target)
        for kind, name in self._missing_attachments(target):
            if kind == "role":
                self._iam(
                    target,
                    "write",
                    f"iam:AttachRolePolicy {name}",
                    lambda iam, n=name: iam.attach_role_policy(RoleName=n, PolicyArn=arn),
                    ctx,
                )
            else:
                self._iam(
                    target,
                    "write",
                    f"iam:AttachGroupPolicy {name}",
                    lambda iam, n=name: iam.attach_group_policy(GroupName=n, PolicyArn=arn),
                    ctx,
                )


def _get_role(name: str) -> Callable[[Any], Any]:
    return lambda iam: iam.get_role(RoleName=name)


def _get_group(name: str) -> Callable[[Any], Any]:
    return lambda iam: iam.get_group(GroupName=name)
