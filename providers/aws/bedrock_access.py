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

import fnmatch
import functools
import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from killswitch.domain import OPEN, REVOKED, Access, Observed, Posture, Target
from killswitch.errors import PermanentError

log = structlog.get_logger(__name__)

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
    if not set(_as_list(statement.get("Action"))) <= {*ACTIONS, *LEGACY_ACTIONS}:
        return "actions killswitch does not deny"
    condition = statement.get("Condition") or {}
    if not isinstance(condition, dict) or not set(condition) <= OWN_OPERATORS:
        return "a condition operator killswitch does not use"
    keys = {REGION_KEY, f"aws:PrincipalTag/{tag}"}
    for block in condition.values():
        if not isinstance(block, dict) or not set(block) <= keys:
            return "a condition key killswitch does not use"
    return None


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


# -- evaluation: what the document really does to one request -------------------------
@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    region: str
    audience: str | None  # the caller's audience tag, or None


@functools.lru_cache(maxsize=65536)
def _glob(value: str, pattern: str, *, case: bool = True) -> bool:
    if not case:
        value, pattern = value.lower(), pattern.lower()
    return _compiled(pattern).fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), re.DOTALL)


def _context(request: Request, tag: str) -> dict[str, str]:
    found = {REGION_KEY: request.region}
    if request.audience is not None:
        found[f"aws:PrincipalTag/{tag}"] = request.audience
    return found


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    """AWS's rules for the operators we read: every operator and key must hold; a missing
    key fails a positive operator and satisfies a negated one. An operator we do not know
    is taken as not holding (the statement then denies nothing)."""
    for operator, block in condition.items():
        if not isinstance(block, dict):
            return False
        base = operator.removesuffix("IfExists")
        for key, wanted in block.items():
            values = _as_list(wanted)
            matching = {k.lower(): v for k, v in context.items()}
            present = key.lower() in matching
            value = matching.get(key.lower(), "")
            if operator.endswith("IfExists") and not present:
                continue
            if base == "StringEquals":
                ok = present and value in values
            elif base == "StringNotEquals":
                ok = not present or value not in values
            elif base == "StringLike":
                ok = present and any(fnmatch.fnmatchcase(value, v) for v in values)
            elif base == "StringNotLike":
                ok = not present or not any(fnmatch.fnmatchcase(value, v) for v in values)
            elif base == "Null":
                ok = (not present) == (str(wanted).lower() == "true")
            else:
                return False
            if not ok:
                return False
    return True


def denies(document: Mapping[str, Any], request: Request, tag: str) -> bool:
    """Whether any Deny statement of ``document`` matches ``request``."""
    context = _context(request, tag)
    for statement in statements_of(document):
        if not isinstance(statement, dict) or statement.get("Effect") != "Deny":
            continue
        if "NotAction" in statement or "NotResource" in statement:
            continue  # never ours; read as denying nothing (the strict check refuses it)
        if not any(_glob(request.action, a, case=False) for a in _as_list(statement["Action"])):
            continue
        if not any(_glob(request.resource, r) for r in _as_list(statement.get("Resource"))):
            continue
        if _condition_holds(statement.get("Condition") or {}, context):
            return True
    return False


# -- read-back: the posture the document gives one region ------------------------------
def candidates(document: Mapping[str, Any], tag: str) -> set[str]:
    """Audiences the document names (a caller tagged with one may be spared)."""
    found: set[str] = set()
    key = f"aws:PrincipalTag/{tag}".lower()
    for statement in statements_of(document):
        if not isinstance(statement, dict):
            continue
        condition = statement.get("Condition") or {}
        for block in condition.values() if isinstance(condition, dict) else ():
            if isinstance(block, dict):
                for k, v in block.items():
                    if k.lower() == key:
                        found.update(_as_list(v))
    return found


@dataclass(frozen=True)
class Reading:
    """What one region's requests get from a document: ``strict`` is the posture every
    path holds (the read-back); ``tightest`` the tightest any path shows (what a rewrite
    keeps, so replacing an older or edited document never opens anything)."""

    strict: Access
    tightest: Access
    reachable: tuple[str, ...]  # for the detail: paths still open to a caller kept out


OUTSIDER = "killswitch-outsider"  # a caller whose tag names no audience


def read(
    document: Mapping[str, Any],
    regions: Iterable[str],
    open_regions: Sequence[str],
    paths: ModelPaths,
    tag: str,
    account: str = "000000000000",
) -> Reading:
    """Evaluate every (action, resource form, region, caller) the document must close in
    ``regions`` (one listed region, or every unlisted one), global routes included.
    Pure: one run asks about one document many times (plan, rewrite, notes)."""
    key = canonical(document)
    return _read(key, tuple(regions), tuple(open_regions), paths, tag, account)


@functools.lru_cache(maxsize=4096)
def _read(
    key: str,
    regions: tuple[str, ...],
    open_regions: tuple[str, ...],
    paths: ModelPaths,
    tag: str,
    account: str,
) -> Reading:
    document = json.loads(key)
    audiences = sorted(candidates(document, tag))
    callers: list[str | None] = [None, OUTSIDER, *audiences]
    regional: list[Request] = []
    routes: set[Request] = set()
    for region in regions:
        for action in _distinct_actions(document):
            regional += [Request(action, a, region, None) for a in paths.probes(region, account)]
            for source in {region, *open_regions}:
                routes.update(
                    Request(action, arn, source, None)
                    for arn in paths.global_routes(source, account)
                )
    allowed = {
        caller: [
            r
            for r in regional
            if not denies(document, Request(r.action, r.resource, r.region, caller), tag)
        ]
        for caller in callers
    }
    outsiders_in = allowed[None] + allowed[OUTSIDER]
    routes_in = [
        r
        for caller in (None, OUTSIDER)
        for r in routes
        if not denies(document, Request(r.action, r.resource, r.region, caller), tag)
    ]
    # The read-back claims no more than every path holds: an audience let in anywhere
    # counts as let in; anyone else let in anywhere, and the region reads as open.
    let_in = tuple(a for a in audiences if allowed[a])
    if outsiders_in or routes_in:
        strict = OPEN
    else:
        strict = Access(Posture.RESTRICTED, let_in) if let_in else REVOKED
    # What a rewrite keeps: closed as soon as any path keeps outsiders out.
    if len(allowed[None]) < len(regional) or len(allowed[OUTSIDER]) < len(regional):
        everywhere = tuple(a for a in audiences if len(allowed[a]) == len(regional))
        tightest = Access(Posture.RESTRICTED, everywhere) if everywhere else REVOKED
    else:
        tightest = OPEN
    reachable = sorted({f"{r.action} on {r.resource}" for r in outsiders_in + routes_in})
    return Reading(strict, tightest, tuple(reachable[:3]))


def _distinct_actions(document: Mapping[str, Any]) -> list[str]:
    """One action per group the document cannot tell apart (every statement matches all
    of a group or none): asking about one asks about all, exactly."""
    statements = [s for s in statements_of(document) if isinstance(s, dict)]
    groups: dict[tuple[bool, ...], str] = {}
    for action in ACTIONS:
        signature = tuple(
            any(_glob(action, a, case=False) for a in _as_list(s.get("Action"))) or "NotAction" in s
            for s in statements
        )
        groups.setdefault(signature, action)
    return list(groups.values())


@dataclass(frozen=True)
class DenyPolicy:
    """One model's deny document as a lever sees it: the regions its entry lists, the
    model's paths and the audience tag."""

    name: str  # for messages: the policy's name
    listed: tuple[str, ...]
    paths: ModelPaths
    tag: str
    account: str = "000000000000"

    def reading(self, document: Mapping[str, Any], region: str) -> Reading:
        """The read-back of ``region`` (or ``UNLISTED``): a statement killswitch did not
        write fails it, naming the statement."""
        foreign = foreign_statements(document, self.tag)
        if foreign:
            raise PermanentError(
                f"policy {self.name} holds statements killswitch did not write "
                f"({'; '.join(foreign)}); revoke or restore rewrites it"
            )
        return self.evaluate(document, region)

    def evaluate(self, document: Mapping[str, Any], region: str) -> Reading:
        from providers.aws.config import unlisted_regions

        regions = (
            [*unlisted_regions(self.listed), FUTURE_REGION] if region == UNLISTED else [region]
        )
        return read(document, regions, self.listed, self.paths, self.tag, self.account)

    def rewrite(
        self, document: Mapping[str, Any] | None, changes: Mapping[str, Access], limit: int
    ) -> dict[str, Any]:
        """The document with ``changes`` (region → posture) made; every other region keeps
        the tightest posture ``document`` gives it, so a rewrite never opens anything."""
        regions = sorted({*self.listed, UNLISTED, *changes})
        now = (
            {r: self.evaluate(document, r).tightest for r in regions}
            if document
            else dict.fromkeys(regions, OPEN)
        )
        new = render({**now, **changes}, self.paths, self.tag)
        check_size(new, limit, f"policy {self.name}")
        return new


def observed(
    reading: Reading, label: str, missing: str, region: str, listed: Sequence[str]
) -> Observed:
    """What ``observe`` reports for a deny lever: the read-back, unless the policy does
    not bind everyone it should (``missing`` names who it is not attached to)."""
    detail = label
    if reading.strict != reading.tightest:
        detail += f" partly closed; still reachable: {'; '.join(reading.reachable)}"
    if reading.strict.posture is not Posture.OPEN:
        if missing:
            return Observed(OPEN, f"{label} denies but is not attached to {missing}")
        if region == UNLISTED:
            detail += f"; {covered(listed)}"
    return Observed(reading.strict, detail)


def geography_notes(policy: DenyPolicy, document: Mapping[str, Any]) -> list[str]:
    """Geographies whose regions hold different postures: a geography profile invoked
    from an open region can be routed into a closed one (refused there), so its callers
    see requests fail now and then."""
    from providers.aws.config import unlisted_regions

    elsewhere = unlisted_regions(policy.listed)
    unlisted = policy.evaluate(document, UNLISTED).strict if elsewhere else OPEN
    postures = {r: policy.evaluate(document, r).strict for r in policy.listed}
    postures.update(dict.fromkeys(elsewhere, unlisted))
    notes = []
    for prefix in sorted({r.split("-", maxsplit=1)[0] for r in postures}):
        regions = sorted(r for r in postures if r.startswith(f"{prefix}-"))
        closed = [r for r in regions if postures[r].posture is not Posture.OPEN]
        left_open = [r for r in regions if postures[r].posture is Posture.OPEN]
        if closed and left_open:
            geo = GEOGRAPHIES.get(prefix, prefix)
            notes.append(
                f"{geo}. inference profiles invoked in {', '.join(left_open[:3])} (left open) "
                f"can be routed into {', '.join(closed[:3])} (closed), where they are refused"
            )
    return notes


class DenyNotes:
    """Warnings a deny lever gives once per run (logs go to stderr): which unlisted
    regions a change closes, and geography profiles that cross closed and open regions."""

    def __init__(self, lever: str) -> None:
        self.lever = lever
        self._seen: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def _first(self, *key: str) -> bool:
        with self._lock:
            fresh = key not in self._seen
            self._seen.add(key)
            return fresh

    def closing_unlisted(self, target: Target, desired: Access, listed: Sequence[str]) -> None:
        if target.region != UNLISTED or desired.posture is Posture.OPEN:
            return
        if self._first("unlisted", target.provider, target.account, target.model):
            log.warning(
                "closes the regions the inventory does not list",
                lever=self.lever,
                target=target.id,
                covers=covered(listed),
                hint="list a region in the inventory to leave it open",
            )

    def geography(self, policy: DenyPolicy, document: Mapping[str, Any]) -> None:
        if self._first("geography", policy.name, canonical(document)):
            for note in geography_notes(policy, document):
                log.warning(
                    "geography profiles cross closed regions",
                    lever=self.lever,
                    policy=policy.name,
                    note=note,
                )


def canonical(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def check_size(document: Mapping[str, Any], limit: int, what: str) -> None:
    found = size(document)
    if found > limit:
        raise PermanentError(
            f"{what} would be {found} characters, over AWS's limit of {limit}: too many "
            "distinct audiences or ids; restrict regions to fewer audience sets"
        )


def covered(listed: Sequence[str]) -> str:
    """For plan and status: which regions the ``unlisted`` target closes."""
    from providers.aws.config import unlisted_regions

    others = unlisted_regions(listed)
    if not others:
        return "covers regions AWS adds later"
    return f"covers {len(others)} unlisted regions ({', '.join(others)}) and regions AWS adds later"
