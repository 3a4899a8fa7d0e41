"""The conformance kit: proves a lever keeps the mechanism contract against its real (or
simulated) server. Every shipped lever runs it, and so should an outside one (docs/sdk.md).

    from killswitch.testing import conform
    conform(provider, target, writes=lambda: server.write_count())

``conform`` drives the lever the way the engine does (``observe``, ``apply``, observe
again) through every posture it declares and back, and fails with a ``ContractBroken``
(an AssertionError, so pytest shows it) naming the lever, the target and the rule:

- **declared**: a name, a wave, ``supports`` holds revoked and open (a kill-switch lever
  can close and re-open), and ``permissions`` is not empty;
- **read-back**: after ``apply(desired)``, ``observe`` says ``desired``;
- **one write**: a change makes at least one write, and applying it again makes none,
  whether the lever reads first or is handed the plan's read (``ctx.observed``); a
  ``Grouped`` lever's ``apply_group`` makes none either;
- **declared postures only**: ``observe`` never reports a posture outside ``supports``
  (the planner sends only those: fleet.plan refuses the rest as ``unsupported``);
- **exact restore**: applying what was first observed reads back as that, and, given a
  ``snapshot`` of what the server holds for the target, the server holds it again;
- **permissions cover the calls**: given ``calls`` (what the server saw, as (action,
  resource) pairs), each one matches a declared permission.

No pytest here and no sleeping: the caller's fixtures start the servers.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from killswitch.contract import ApplyContext, Grouped, Mechanism, Permission, Provider
from killswitch.domain import Access, Posture, Target

PLACEHOLDER = re.compile(r"\{[^}]*\}")


class ContractBroken(AssertionError):
    """A lever broke one rule of the contract; the message names lever, target and rule."""


@dataclass
class Conformance:
    """What ``conform`` checked (rule names, in order) and the postures it applied."""

    lever: str
    target: str
    rules: list[str] = field(default_factory=list)
    applied: list[Access] = field(default_factory=list)

    def passed(self, rule: str) -> None:
        if rule not in self.rules:
            self.rules.append(rule)


def context(op_id: str) -> ApplyContext:
    """The ApplyContext the kit applies with, one op id per step (override with ``ctx``)."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    return ApplyContext(op_id, "conformance-kit", "conformance check", None, at)


def conform(
    provider: Provider,
    target: Target,
    writes: Callable[[], int],
    *,
    audience: Sequence[str] = ("us-person",),
    snapshot: Callable[[], object] | None = None,
    calls: Callable[[], Iterable[tuple[str, str]]] | None = None,
    ctx: Callable[[str], ApplyContext] = context,
) -> Conformance:
    """Run every rule on ``target`` of ``provider``; ``writes()`` is how many writes the
    server has seen so far (any monotonic count that covers this target's lever)."""
    lever = provider.mechanism(target.mechanism)
    report = Conformance(getattr(lever, "name", target.mechanism), target.id)

    def broken(rule: str, detail: str) -> ContractBroken:
        return ContractBroken(f"lever {report.lever} at {target.id}: {rule}: {detail}")

    _declared(lever, broken)
    report.passed("declared")
    original = lever.observe(target).access
    before = snapshot() if snapshot is not None else None
    tightest_first = [Access(Posture.REVOKED), Access(Posture.RESTRICTED, tuple(audience))]
    steps = [a for a in tightest_first if a.posture in lever.supports and a != original]
    for n, desired in enumerate([*steps, original], start=1):
        _step(lever, target, desired, ctx(f"op-conformance-{n}"), writes, broken)
        report.applied.append(desired)
        report.passed("read-back")
        report.passed("one write")
    report.passed("declared postures only")
    if snapshot is not None and snapshot() != before:
        raise broken(
            "exact restore", f"the server held {before!r} before, {snapshot()!r} after restore"
        )
    report.passed("exact restore")
    if calls is not None:
        _covered(lever.permissions, calls(), broken)
        report.passed("permissions cover the calls")
    return report


def _declared(lever: Mechanism, broken: Callable[[str, str], ContractBroken]) -> None:
    if not isinstance(getattr(lever, "name", None), str) or not isinstance(lever.wave, int):
        raise broken("declared", "a lever declares its name and its wave")
    if not {Posture.REVOKED, Posture.OPEN} <= set(lever.supports):
        raise broken("declared", f"supports {sorted(lever.supports)}: it must revoke and open")
    if not lever.permissions or not all(isinstance(p, Permission) for p in lever.permissions):
        raise broken("declared", "no permissions declared: its least privilege is unknown")


def _step(
    lever: Mechanism,
    target: Target,
    desired: Access,
    ctx: ApplyContext,
    writes: Callable[[], int],
    broken: Callable[[str, str], ContractBroken],
) -> None:
    """Apply ``desired``, read it back, then apply it twice more: no write either time."""
    held = lever.observe(target).access
    start = writes()
    lever.apply(target, desired, replace(ctx, observed=held))
    changed = writes() - start
    if held != desired and changed < 1:
        raise broken("one write", f"{held} → {desired} made no write at all")
    seen = lever.observe(target).access
    if seen != desired:
        raise broken("read-back", f"applied {desired}, observed {seen}")
    if seen.posture not in lever.supports:
        raise broken("declared postures only", f"observed {seen}, not in supports")
    settled = writes()
    lever.apply(target, desired, ctx)  # reads for itself, as on a retry
    lever.apply(target, desired, replace(ctx, observed=desired))  # handed the plan's read
    if isinstance(lever, Grouped):
        lever.apply_group([target], desired, ctx)
    if writes() != settled:
        raise broken("one write", f"applying {desired} again made {writes() - settled} write(s)")
    if lever.observe(target).access != desired:
        raise broken("read-back", f"{desired} did not hold after applying it again")


def _covered(
    permissions: Sequence[Permission],
    seen: Iterable[tuple[str, str]],
    broken: Callable[[str, str], ContractBroken],
) -> None:
    """Each call (action, resource) matches a permission: actions compared without a
    service prefix (``ssm:GetParameter`` covers ``GetParameter``), resources as globs with
    inventory placeholders (``{ssm_prefix}``) matching anything."""
    for action, resource in seen:
        if not any(_matches(p, action, resource) for p in permissions):
            raise broken("permissions cover the calls", f"{action} {resource} is not declared")


def _matches(permission: Permission, action: str, resource: str) -> bool:
    declared = permission.action.rsplit(":", 1)[-1]
    pattern = PLACEHOLDER.sub("*", permission.resource)
    return declared.lower() == action.lower() and fnmatch.fnmatchcase(resource, pattern)


__all__ = ["Conformance", "ContractBroken", "conform", "context"]
