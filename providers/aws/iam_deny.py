"""Lever ``iam-deny``: a customer-managed IAM deny policy per model per account.

The policy (default ``killswitch-deny-<model>``, path ``/killswitch/``) is
attached to the roles and groups the inventory lists. Its default version holds
one statement per closed region; the tool owns that policy and never edits any
other. One policy covers every region of an account, so the engine groups the
changes that share it into one write (``Grouped``). Going back to a posture that
an earlier version already holds switches the default version back to it, so a
restore returns to exactly the document that was there before.

Caveats (docs/aws.md): IAM changes take seconds to propagate; cross-region
inference profiles route requests to other regions, so a region's statement
also denies the inference profiles (``*.<model id>``) invoked from that region.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from killswitch.contract import ApplyContext, Permission
from killswitch.domain import OPEN, Access, Observed, Posture, Target
from killswitch.errors import PermanentError
from providers.aws.config import model_aws

if TYPE_CHECKING:
    from providers.aws import AwsProvider

ACTIONS = (
    "bedrock:InvokeModel",
    "bedrock:InvokeModelWithResponseStream",
    "bedrock:Converse",
    "bedrock:ConverseStream",
)
PATH = "/killswitch/"
MAX_VERSIONS = 5  # IAM's limit on versions of one managed policy
NOTHING_SID = "KillswitchNothingDenied"
OUR_POLICIES = "arn:aws:iam::*:policy/killswitch/{policy_name}"
ONLY_OURS = (("ArnLike", "iam:PolicyARN", OUR_POLICIES),)
# IAM wants at least one statement: this one can never match a request.
NOTHING_DENIED = {
    "Sid": NOTHING_SID,
    "Effect": "Deny",
    "Action": list(ACTIONS),
    "Resource": "*",
    "Condition": {"StringEquals": {"aws:RequestedRegion": "killswitch-nothing-denied"}},
}


def sid(region: str) -> str:
    """``eu-west-1`` → ``KillswitchEuWest1`` (Sids are alphanumeric)."""
    return "Killswitch" + "".join(part.capitalize() for part in region.split("-"))


def resources(region: str, bedrock_ids: Sequence[str]) -> list[str]:
    """The model's foundation-model ARNs in ``region`` and the inference profiles
    (``<geo>.<model id>``, any account) that route to it."""
    arns = [f"arn:aws:bedrock:{region}::foundation-model/{i}" for i in bedrock_ids]
    arns += [f"arn:aws:bedrock:{region}:*:inference-profile/*.{i}" for i in bedrock_ids]
    return sorted(arns)


def render(
    postures: Mapping[str, Access], bedrock_ids: Sequence[str], audience_tag: str
) -> dict[str, Any]:
    """The policy document for region → posture (open regions get no statement)."""
    statements: list[dict[str, Any]] = []
    for region in sorted(postures):
        access = postures[region]
        if access.posture is Posture.OPEN:
            continue
        statement: dict[str, Any] = {
            "Sid": sid(region),
            "Effect": "Deny",
            "Action": list(ACTIONS),
            "Resource": resources(region, bedrock_ids),
        }
        if access.posture is Posture.RESTRICTED:
            statement["Condition"] = {
                "StringNotEquals": {f"aws:PrincipalTag/{audience_tag}": list(access.audience)}
            }
        statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements or [NOTHING_DENIED]}


def parse(
    document: Mapping[str, Any],
    regions: Sequence[str],
    bedrock_ids: Sequence[str],
    audience_tag: str,
) -> dict[str, Access]:
    """region → posture the document really enforces. A statement that was edited so it
    no longer covers the model reads as open: it does not do its job."""
    raw = document.get("Statement", [])
    statements = [raw] if isinstance(raw, dict) else list(raw)
    by_sid = {s.get("Sid"): s for s in statements if isinstance(s, dict)}
    postures = {}
    for region in regions:
        statement = by_sid.get(sid(region))
        postures[region] = _posture(statement, region, bedrock_ids, audience_tag)
    return postures


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _posture(
    statement: Mapping[str, Any] | None, region: str, bedrock_ids: Sequence[str], tag: str
) -> Access:
    if statement is None or statement.get("Effect") != "Deny":
        return OPEN
    if not set(ACTIONS) <= set(_as_list(statement.get("Action"))):
        return OPEN
    if not set(resources(region, bedrock_ids)) <= set(_as_list(statement.get("Resource"))):
        return OPEN
    condition = statement.get("Condition")
    if not condition:
        return Access(Posture.REVOKED)
    spared = condition.get("StringNotEquals", {}).get(f"aws:PrincipalTag/{tag}")
    if spared is None or len(condition) != 1:
        return OPEN  # a condition we did not write: we cannot vouch for what it denies
    return Access(Posture.RESTRICTED, tuple(_as_list(spared)))


def _document(raw: Any) -> dict[str, Any]:
    """IAM returns documents URL-encoded; boto3 usually decodes them already."""
    if isinstance(raw, str):
        raw = json.loads(urllib.parse.unquote(raw))
    if not isinstance(raw, dict):
        raise PermanentError("IAM policy document is not a JSON object")
    return raw


def _canonical(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


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
    )

    def __init__(self, provider: AwsProvider) -> None:
        self.provider = provider
        self.iam = provider.config.iam
        self._account_ids: dict[str, str] = {}
        self._lock = threading.Lock()

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

    def _ids(self, target: Target) -> list[str]:
        return model_aws(self.provider.models, target.model).bedrock_ids

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
        return [("role", r) for r in self.iam.roles if r not in roles] + [
            ("group", g) for g in self.iam.groups if g not in groups
        ]

    def observe(self, target: Target) -> Observed:
        document, version = self._current(target)
        if document is None:
            return Observed(OPEN, f"no policy {self.policy_name(target.model)} (reads as open)")
        access = parse(document, [target.region], self._ids(target), self.iam.audience_tag)[
            target.region
        ]
        if access.posture is not Posture.OPEN:
            missing = self._missing_attachments(target)
            if missing:
                names = ", ".join(f"{kind} {name}" for kind, name in missing)
                return Observed(OPEN, f"policy {version} denies but is not attached to {names}")
        return Observed(access, f"{self.policy_name(target.model)} {version}")

    # -- writing -------------------------------------------------------------------
    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        self.apply_group([target], desired, ctx)

    def apply_group(self, targets: Sequence[Target], desired: Access, ctx: ApplyContext) -> None:
        """Set ``desired`` for every region in ``targets`` (one model, one account) in one
        policy write; other regions keep the posture the policy gives them now."""
        first = targets[0]
        ids, tag = self._ids(first), self.iam.audience_tag
        regions = sorted(set(self.provider.regions()) | {t.region for t in targets})
        document, _ = self._current(first)
        now = parse(document, regions, ids, tag) if document else dict.fromkeys(regions, OPEN)
        wanted = {**now, **{t.region: desired for t in targets}}
        new = render(wanted, ids, tag)
        if document is None:
            self._create(first, new, ctx)
        elif _canonical(document) != _canonical(new):
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
        wanted = _canonical(document)
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
            if _canonical(_document(held)) == wanted:
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
