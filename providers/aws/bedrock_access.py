"""Every path to a Bedrock model, and the deny document that closes them (iam-deny, scp-deny).

The actions come from AWS's Service Authorization Reference for Amazon Bedrock: each
one runs the model or provisions capacity for it and names the ``foundation-model``
(or an inference profile, application profile or provisioned model) as its resource.
``Converse``/``ConverseStream`` and ``StartAsyncInvoke`` are not IAM actions: AWS
authorises them as ``InvokeModel``/``InvokeModelWithResponseStream``. An agent invokes
the model with its own service role, so that role carries the deny too. A prompt
router invokes the models it routes to as the caller, so the model ARNs' deny holds
there too (``CreatePromptRouter`` is left out: policy linters do not know it yet).

One document per model. IAM and SCP act account-wide, so a statement's resources carry a
region wildcard and ``aws:RequestedRegion`` picks the regions: a statement for a posture
that regions outside the inventory share (``unlisted``) names the regions it spares
(``StringNotEquals``), so regions AWS adds later are closed too; a posture only listed
regions hold names them (``StringEquals``). A cross-region request is authorised again in
its destination region with that region as ``aws:RequestedRegion``; a global profile is
authorised on the region-less foundation-model ARN, so any closed region closes the
global routes (``KillswitchGlobalRoutes``) for all but who every closed region spares.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from killswitch.domain import OPEN, Access, Posture
from killswitch.errors import PermanentError

ACTIONS = (
    "bedrock:InvokeModel",  # also Converse and StartAsyncInvoke
    "bedrock:InvokeModelWithResponseStream",  # also ConverseStream
    "bedrock:CreateModelInvocationJob",  # batch inference
    "bedrock:CreateProvisionedModelThroughput",
    "bedrock:UpdateProvisionedModelThroughput",  # point provisioned capacity at the model
    "bedrock:CreateInferenceProfile",  # an application profile on the model
    "bedrock:CreateModelCustomizationJob",  # a derived custom model
    "bedrock:CreateEvaluationJob",
    "bedrock:CreateModelEvaluationJob",
)
UNLISTED = "unlisted"  # the target that stands for every region the inventory does not list
REGION_KEY = "aws:RequestedRegion"
MAX_MANAGED_POLICY = 6144  # IAM: characters of a managed policy, whitespace not counted
MAX_SCP = 5120  # Organizations: characters of a service control policy
NOTHING_SID = "KillswitchNothingDenied"
GLOBAL_SID = "KillswitchGlobalRoutes"
OWN_SID = re.compile(
    r"^Killswitch(Revoked|Restricted\d+|GlobalRoutes|NothingDenied"
    # Written by killswitch before 0.2 (one statement per region, KillswitchEuWest1): read
    # by their effect, and replaced on the next write.
    r"|(?:[A-Z][a-z]+)+\d+)$"
)
LEGACY_ACTIONS = ("bedrock:Converse", "bedrock:ConverseStream")
OWN_OPERATORS = frozenset({"StringEquals", "StringNotEquals"})
# A region AWS has not opened yet: the read-back of `unlisted` asks about it too.
FUTURE_REGION = "xx-future-1"
# System inference profiles: <geography>.<model id>; `global.` routes to every region.
GEOGRAPHIES = {"us": "us", "eu": "eu", "ap": "apac", "ca": "ca", "sa": "us", "me": "apac"}


@dataclass(frozen=True)
class ModelPaths:
    """What names one model at Bedrock: its ids, and the application inference profiles
    and provisioned models built on it (their ids are arbitrary, so the inventory lists
    them)."""

    bedrock_ids: tuple[str, ...]
    application_profiles: tuple[str, ...] = ()
    provisioned_models: tuple[str, ...] = ()  # ("*",): every provisioned model

    def regional(self, region: str = "*", account: str = "*", profile: str = "*") -> list[str]:
        """ARNs that serve the model in ``region`` (``*``: every region); ``profile``: the
        system profiles' geography prefix (``*``: every geography)."""
        arns = [f"arn:aws:bedrock:{region}::foundation-model/{i}" for i in self.bedrock_ids]
        arns += [
            f"arn:aws:bedrock:{region}:{account}:inference-profile/{profile}.{i}"
            for i in self.bedrock_ids
        ]
        arns += [
            f"arn:aws:bedrock:{region}:{account}:application-inference-profile/{p}"
            for p in self.application_profiles
        ]
        arns += [
            f"arn:aws:bedrock:{region}:{account}:provisioned-model/{p}"
            for p in self.provisioned_models
        ]
        return arns

    def global_routes(self, source: str = "*", account: str = "*") -> list[str]:
        """The region-less foundation-model ARN AWS checks for global profiles, and the
        global profiles themselves (invoked from ``source``, ``*``: any region)."""
        return [f"arn:aws:bedrock:::foundation-model/{i}" for i in self.bedrock_ids] + [
            f"arn:aws:bedrock:{source}:{account}:inference-profile/global.{i}"
            for i in self.bedrock_ids
        ]

    def probes(self, region: str, account: str) -> list[str]:
        """Concrete resources in ``region`` to ask the policy about on read-back (an id
        the inventory leaves open, `*`, is asked about with a made-up one)."""
        prefix = region.split("-", maxsplit=1)[0]
        found = self.regional(region, account, GEOGRAPHIES.get(prefix, prefix))
        return [arn.replace("/*", "/killswitchprobe0") for arn in found]


def size(document: Mapping[str, Any]) -> int:
    """Characters AWS counts against a policy's size limit (whitespace is not counted)."""
    return len(json.dumps(document, separators=(",", ":")))


def _audience_condition(access: Access, tag: str) -> dict[str, list[str]]:
    if access.posture is Posture.RESTRICTED:
        return {f"aws:PrincipalTag/{tag}": list(access.audience)}
    return {}


def _classes(postures: Mapping[str, Access]) -> list[Access]:
    closed = {a for a in postures.values() if a.posture is not Posture.OPEN}
    return sorted(closed, key=lambda a: (a.posture is not Posture.REVOKED, a.audience))


def render(postures: Mapping[str, Access], paths: ModelPaths, tag: str) -> dict[str, Any]:
    """The deny document for region → posture; ``UNLISTED`` stands for every region the
    mapping does not name (missing: open)."""
    listed = sorted(r for r in postures if r != UNLISTED)
    unlisted = postures.get(UNLISTED, OPEN)
    statements: list[dict[str, Any]] = []
    restricted = 0
    for access in _classes(postures):
        if access.posture is Posture.REVOKED:
            sid = "KillswitchRevoked"
        else:
            restricted += 1
            sid = f"KillswitchRestricted{restricted}"
        spared: dict[str, list[str]] = _audience_condition(access, tag)
        condition: dict[str, dict[str, list[str]]] = {}
        if unlisted == access:
            others = [r for r in listed if postures[r] != access]
            if others:
                spared = {REGION_KEY: others, **spared}
        else:
            condition["StringEquals"] = {REGION_KEY: [r for r in listed if postures[r] == access]}
        if spared:
            condition["StringNotEquals"] = spared
        statement: dict[str, Any] = {
            "Sid": sid,
            "Effect": "Deny",
            "Action": list(ACTIONS),
            "Resource": paths.regional(),
        }
        if condition:
            statement["Condition"] = condition
        statements.append(statement)
    routes = global_posture(postures)
    everywhere = routes == unlisted and all(postures[r] == routes for r in listed)
    if routes.posture is not Posture.OPEN and not everywhere:
        statement = {
            "Sid": GLOBAL_SID,
            "Effect": "Deny",
            "Action": list(ACTIONS),
            "Resource": paths.global_routes(),
        }
        if routes.posture is Posture.RESTRICTED:
            statement["Condition"] = {"StringNotEquals": _audience_condition(routes, tag)}
        statements.append(statement)
    if not statements:  # IAM wants at least one statement: this one never matches
        statements.append(
            {
                "Sid": NOTHING_SID,
                "Effect": "Deny",
                "Action": list(ACTIONS),
                "Resource": paths.regional(),
                "Condition": {"StringEquals": {REGION_KEY: ["killswitch-nothing-denied"]}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def global_posture(postures: Mapping[str, Access]) -> Access:
    """A global profile can serve a request in any region: only who every region lets in."""
    result = OPEN
    for access in postures.values():
        result = result.meet(access)
    return result


def statements_of(document: Mapping[str, Any]) -> list[Any]:
    raw = document.get("Statement", [])
    return [raw] if isinstance(raw, dict) else list(raw)


def foreign_statements(document: Mapping[str, Any], tag: str) -> list[str]:
    """Statements killswitch would never write in its own policy (an Allow, another Sid,
    NotAction, an operator or key we do not use): each one named, for the error."""
    found = []
    for i, statement in enumerate(statements_of(document)):
        if not isinstance(statement, dict):
            found.append(f"statement {i} is not an object")
            continue
        name = str(statement.get("Sid", f"#{i}"))
        why = _why_foreign(statement, tag)
        if why:
            found.append(f"{name}: {why}")
    return found


def _why_foreign(statement: Mapping[str, Any], tag: str) -> str | None:
    if statement.get("Effect") != "Deny":
        return f"Effect {statement.get('Effect')!r}"
    if not OWN_SID.fullmatch(str(statement.get("Sid", ""))):
        return "a Sid killswitch does not write"
    extra = set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition"}
    if extra:
        return f"{', '.join(sorted(extra))}"
    if not set(as_list(statement.get("Action"))) <= {*ACTIONS, *LEGACY_ACTIONS}:
        return "actions killswitch does not deny"
    condition = statement.get("Condition") or {}
    if not isinstance(condition, dict) or not set(condition) <= OWN_OPERATORS:
        return "a condition operator killswitch does not use"
    keys = {REGION_KEY, f"aws:PrincipalTag/{tag}"}
    for block in condition.values():
        if not isinstance(block, dict) or not set(block) <= keys:
            return "a condition key killswitch does not use"
    return None


def as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


def canonical(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def check_size(document: Mapping[str, Any], limit: int, what: str) -> None:
    found = size(document)
    if found > limit:
        raise PermanentError(
            f"{what} would be {found} characters, over AWS's limit of {limit}: too many "
            "distinct audiences or ids; restrict regions to fewer audience sets"
        )
