"""Lever ``elb-rule``: a fixed-response rule in front of a model's route on ALB listeners.

For self-hosted fleets behind Application Load Balancers. Per region, the
listeners are the ones ``elb.listeners.<region>`` names or, for regions not
named there, every listener of the ALBs tagged ``killswitch:model`` with the
model's name (the tag value may list several models separated by spaces, since
one ALB often serves several models and a tag key appears once per resource).

``revoked`` adds one rule per listener that matches the model's route
(``models.<name>.aws.route``) and answers ``elb.status_code`` with a small JSON
body. The rule is created with its tags (``killswitch:model``, ``killswitch:op``)
in the same call, so it can always be found again by tag, even after a reply
lost on the way back. It takes the lowest free priority: 1 when free (ahead of
every other rule), else the first gap; other rules are never renumbered, and
observe says when ours is not first. ``open`` deletes exactly the rules tagged
for the model, nothing else. A rule cannot tell audiences apart, so
``restricted`` is not supported.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from botocore.exceptions import ClientError

from killswitch.contract import ApplyContext, Permission
from killswitch.domain import OPEN, Access, Observed, Posture, Target
from killswitch.errors import PermanentError, RetryableError
from providers.aws.config import Route, model_aws

if TYPE_CHECKING:
    from providers.aws import AwsProvider
    from providers.aws.ratelimit import Kind

MODEL_TAG = "killswitch:model"
OP_TAG = "killswitch:op"
TAGS_PER_CALL = 20  # DescribeTags takes at most 20 ARNs
PAGE_SIZE = 400  # the most DescribeLoadBalancers / DescribeRules return per page
Shape = frozenset[tuple[str, str, frozenset[str]]]  # conditions, comparable


def rule_conditions(route: Route) -> list[dict[str, Any]]:
    """The ALB conditions matching ``route``; several headers must all match (ALB ANDs)."""
    if route.path is not None:
        return [{"Field": "path-pattern", "PathPatternConfig": {"Values": [route.path]}}]
    return [
        {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": name, "Values": values}}
        for name, values in sorted((route.header or {}).items())
    ]


def response_body(model: str) -> str:
    """What a client of the blocked route reads. Deliberately not the operator's reason:
    that is free text for the audit log (incident names, tickets), not for the public.
    Model names are at most 63 characters, so this stays far below ALB's 1024 bytes."""
    return json.dumps(
        {"error": "model_unavailable", "model": model, "reason": "access revoked"},
        separators=(",", ":"),
    )


def shape(conditions: Sequence[Mapping[str, Any]]) -> Shape:
    """Conditions as a set, so ours compare equal however AWS echoes them back (the legacy
    ``Values`` field, header-name case, order)."""
    found = set()
    for condition in conditions:
        field = str(condition.get("Field", ""))
        if field == "path-pattern":
            values = condition.get("PathPatternConfig", {}).get("Values") or condition.get(
                "Values", []
            )
            found.add((field, "", frozenset(values)))
        elif field == "http-header":
            config = condition.get("HttpHeaderConfig", {})
            name = str(config.get("HttpHeaderName", "")).lower()
            found.add((field, name, frozenset(config.get("Values", []))))
        else:  # any other condition narrows the rule: it no longer equals the route's
            found.add((field, json.dumps(condition, sort_keys=True), frozenset()))
    return frozenset(found)


def short(arn: str) -> str:
    """``app/<lb>/<id>/<listener id>[/<rule id>]``: enough to find it, short enough to read."""
    return arn.partition("/")[2] or arn


@dataclass(frozen=True)
class Rule:
    arn: str
    priority: int | None  # None: the listener's default rule
    ours: bool  # tagged for the target's model
    managed: bool  # tagged for any model: a killswitch rule
    blocks: bool  # answers the model's route with a fixed response


@dataclass(frozen=True)
class Listener:
    arn: str
    rules: tuple[Rule, ...]

    @property
    def ours(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.ours)

    @property
    def blocking(self) -> Rule | None:
        return next((r for r in self.ours if r.blocks), None)

    def ahead_of(self, rule: Rule) -> list[int]:
        """Priorities of the service's rules the ALB evaluates before ``rule`` (another
        model's killswitch rule ahead of ours lets nothing through, so it does not count)."""
        return sorted(
            r.priority
            for r in self.rules
            if not r.managed
            and r.priority is not None
            and rule.priority is not None
            and r.priority < rule.priority
        )

    def free_priority(self) -> int:
        """The lowest free priority: 1 (ahead of all) when free, else the first gap."""
        taken = {r.priority for r in self.rules if r.priority is not None}
        return next(n for n in range(1, len(taken) + 2) if n not in taken)


ELB_ARN = "arn:aws:elasticloadbalancing:*:*"


class ElbRule:
    name: ClassVar[str] = "aws.elb-rule"
    supports: ClassVar[frozenset[Posture]] = frozenset({Posture.OPEN, Posture.REVOKED})
    wave: ClassVar[int] = 0  # the edge: requests stop at the load balancer
    permissions: ClassVar[tuple[Permission, ...]] = (
        # Describe* calls support no resource-level permissions.
        Permission("elasticloadbalancing:DescribeLoadBalancers", "*"),
        Permission("elasticloadbalancing:DescribeTags", "*"),
        Permission("elasticloadbalancing:DescribeListeners", "*"),
        Permission("elasticloadbalancing:DescribeRules", "*"),
        # AWS's resource formats for listeners and rules; {elb_kind} is app and net, as the
        # Service Authorization Reference names both (NLBs have no rules).
        Permission("elasticloadbalancing:CreateRule", f"{ELB_ARN}:listener/{{elb_kind}}/*/*/*"),
        Permission(
            "elasticloadbalancing:DeleteRule", f"{ELB_ARN}:listener-rule/{{elb_kind}}/*/*/*/*"
        ),
        # CreateRule with Tags is authorised as AddTags on the new rule too.
        Permission("elasticloadbalancing:AddTags", f"{ELB_ARN}:listener-rule/{{elb_kind}}/*/*/*/*"),
    )

    def __init__(self, provider: AwsProvider) -> None:
        self.provider = provider
        self.elb = provider.config.elb
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def _call(
        self,
        target: Target,
        kind: Kind,
        what: str,
        fn: Callable[[Any], Any],
        ctx: ApplyContext | None = None,
    ) -> Any:
        return self.provider.call(target, "elbv2", kind, f"{what} in {target.region}", fn, ctx)

    def _route(self, target: Target) -> Route:
        route = model_aws(self.provider.models, target.model).route
        if route is None:  # the inventory check refuses this; a clear error if it slips by
            raise PermanentError(f"elb-rule: model {target.model} has no aws.route")
        return route

    # -- finding the listeners ---------------------------------------------------------
    def listener_arns(self, target: Target) -> list[str]:
        """The listeners that serve the model in the target's region."""
        if target.region in self.elb.listeners:
            arns = self.elb.listeners[target.region]
            for arn in arns:
                if arn.split(":")[3] != target.region:
                    raise PermanentError(
                        f"elb.listeners.{target.region} names a listener in another region: {arn}"
                    )
        else:
            arns = [
                arn
                for lb in self._tagged_balancers(target)
                for arn in self._listeners_of(target, lb)
            ]
        if not arns:
            raise PermanentError(
                f"elb-rule: no ALB listener for {target.model} in {target.region}: name them in "
                f"elb.listeners.{target.region} or tag the load balancers "
                f"{MODEL_TAG}={target.model}"
            )
        return arns

    def _tagged_balancers(self, target: Target) -> list[str]:
        balancers = [
            lb["LoadBalancerArn"]
            for lb in self._pages(
                target,
                "elbv2:DescribeLoadBalancers",
                "LoadBalancers",
                "describe_load_balancers",
                {"PageSize": PAGE_SIZE},
            )
            if lb.get("Type") == "application"  # only ALBs answer with a fixed response
        ]
        tags = self._tags(target, balancers)
        return [
            arn for arn in balancers if target.model in tags.get(arn, {}).get(MODEL_TAG, "").split()
        ]

    def _listeners_of(self, target: Target, balancer: str) -> list[str]:
        return [
            listener["ListenerArn"]
            for listener in self._pages(
                target,
                f"elbv2:DescribeListeners {short(balancer)}",
                "Listeners",
                "describe_listeners",
                {"LoadBalancerArn": balancer},
            )
        ]

    def _pages(
        self, target: Target, what: str, key: str, method: str, params: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Every item of a Marker-paged Describe call; one rate-limited call per page."""
        marker: dict[str, str] = {}
        while True:
            reply = self._call(target, "read", what, _bound(method, {**params, **marker}))
            yield from reply.get(key, [])
            if not reply.get("NextMarker"):
                return
            marker = {"Marker": reply["NextMarker"]}

    def _tags(self, target: Target, arns: Sequence[str]) -> dict[str, dict[str, str]]:
        tags: dict[str, dict[str, str]] = {}
        for start in range(0, len(arns), TAGS_PER_CALL):
            batch = list(arns[start : start + TAGS_PER_CALL])
            reply = self._call(
                target,
                "read",
                f"elbv2:DescribeTags ({len(batch)} resources)",
                _bound("describe_tags", {"ResourceArns": batch}),
            )
            for description in reply.get("TagDescriptions", []):
                tags[description["ResourceArn"]] = {
                    t["Key"]: t.get("Value", "") for t in description.get("Tags", [])
                }
        return tags

    # -- reading the rules -------------------------------------------------------------
    def _listener(self, target: Target, arn: str, route: Shape) -> Listener:
        raw = list(
            self._pages(
                target,
                f"elbv2:DescribeRules {short(arn)}",
                "Rules",
                "describe_rules",
                {"ListenerArn": arn, "PageSize": PAGE_SIZE},
            )
        )
        custom = [r for r in raw if not r.get("IsDefault")]
        tags = self._tags(target, [r["RuleArn"] for r in custom])
        rules = tuple(
            Rule(
                arn=r["RuleArn"],
                priority=None if r.get("IsDefault") else int(r["Priority"]),
                ours=tags.get(r["RuleArn"], {}).get(MODEL_TAG) == target.model,
                managed=MODEL_TAG in tags.get(r["RuleArn"], {}),
                blocks=shape(r.get("Conditions", [])) == route
                and any(a.get("Type") == "fixed-response" for a in r.get("Actions", [])),
            )
            for r in raw
        )
        return Listener(arn, rules)

    def survey(self, target: Target) -> list[Listener]:
        """Every listener of the model in the target's region, with its rules."""
        route = self._shape(target)
        return [self._listener(target, arn, route) for arn in self.listener_arns(target)]

    def _shape(self, target: Target) -> Shape:
        return shape(rule_conditions(self._route(target)))

    def observe(self, target: Target) -> Observed:
        listeners = self.survey(target)
        missing = [short(listener.arn) for listener in listeners if listener.blocking is None]
        if len(missing) == len(listeners):
            stale = sum(len(listener.ours) for listener in listeners)
            note = f"; {stale} rule(s) tagged for it do not block its route" if stale else ""
            return Observed(OPEN, f"no blocking rule on {len(listeners)} listener(s){note}")
        if missing:
            return Observed(
                OPEN,
                f"blocking rule on {len(listeners) - len(missing)} of {len(listeners)} "
                f"listeners; missing on {', '.join(missing)}",
            )
        notes = []
        for listener in listeners:
            rule = listener.blocking
            ahead = listener.ahead_of(rule) if rule is not None else []
            if rule is not None and ahead:
                notes.append(
                    f"on {short(listener.arn)} it has priority {rule.priority}, after rules "
                    f"{', '.join(map(str, ahead))} (no lower number was free; "
                    "other rules are never renumbered)"
                )
        detail = f"blocking rule on {len(listeners)} listener(s)"
        return Observed(Access(Posture.REVOKED), "; ".join([detail, *notes]))

    # -- writing -----------------------------------------------------------------------
    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        if desired.posture not in self.supports:
            raise PermanentError(f"elb-rule cannot express {desired.posture.value}")
        route = self._shape(target)
        for arn in self.listener_arns(target):
            # The engine applies the models of one region in parallel, and they share
            # listeners: read the free priority and take it under one lock per listener.
            with self._listener_lock(arn):
                listener = self._listener(target, arn, route)
                if desired.posture is Posture.OPEN:
                    for rule in listener.ours:
                        self._delete(target, rule, ctx)
                elif listener.blocking is None:
                    self._create(target, listener, ctx)
                    # Rules of ours that no longer block (edited by hand, an older route)
                    # only confuse whoever reads the listener next.
                    for rule in listener.ours:
                        self._delete(target, rule, ctx)

    def _listener_lock(self, arn: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(arn, threading.Lock())

    def _create(self, target: Target, listener: Listener, ctx: ApplyContext) -> None:
        priority = listener.free_priority()
        action = {
            "Type": "fixed-response",
            "FixedResponseConfig": {
                "StatusCode": str(self.elb.status_code),
                "ContentType": "application/json",
                "MessageBody": response_body(target.model),
            },
        }
        try:
            self._call(
                target,
                "write",
                f"elbv2:CreateRule {short(listener.arn)} priority {priority}",
                lambda elb: elb.create_rule(
                    ListenerArn=listener.arn,
                    Priority=priority,
                    Conditions=rule_conditions(self._route(target)),
                    Actions=[action],
                    Tags=[
                        {"Key": MODEL_TAG, "Value": target.model},
                        {"Key": OP_TAG, "Value": ctx.op_id},
                    ],
                ),
                ctx,
            )
        except PermanentError as exc:
            if _code(exc) == "PriorityInUse":
                # Someone took the number since we read the rules: the retry reads again.
                raise RetryableError(str(exc)) from exc
            raise

    def _delete(self, target: Target, rule: Rule, ctx: ApplyContext) -> None:
        try:
            self._call(
                target,
                "write",
                f"elbv2:DeleteRule {short(rule.arn)}",
                lambda elb: elb.delete_rule(RuleArn=rule.arn),
                ctx,
            )
        except PermanentError as exc:
            if _code(exc) != "RuleNotFound":  # already gone is what we wanted
                raise


def _bound(method: str, params: dict[str, Any]) -> Callable[[Any], Any]:
    """``client.<method>(**params)`` with the params bound now, not when a loop moves on."""
    return lambda client: getattr(client, method)(**params)


def _code(exc: Exception) -> str:
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code", ""))
    return ""
