"""What a deny document really does: a small IAM evaluator for the statements killswitch
writes (providers/aws/bedrock_access.py), and the read-back of one region from it.

The read-back asks about every (action, resource form, region, caller kind) a closed
region must refuse, global routes included; a region reads as revoked or restricted
only if every path holds it. Only operators killswitch writes are needed (a statement
it did not write fails the read-back before evaluation), so the evaluator is small.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from killswitch.domain import OPEN, REVOKED, Access, Posture
from providers.aws.bedrock_access import (
    ACTIONS,
    REGION_KEY,
    ModelPaths,
    as_list,
    canonical,
    statements_of,
)


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
            values = as_list(wanted)
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
        if not any(_glob(request.action, a, case=False) for a in as_list(statement["Action"])):
            continue
        if not any(_glob(request.resource, r) for r in as_list(statement.get("Resource"))):
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
                        found.update(as_list(v))
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
            any(_glob(action, a, case=False) for a in as_list(s.get("Action"))) or "NotAction" in s
            for s in statements
        )
        groups.setdefault(signature, action)
    return list(groups.values())
