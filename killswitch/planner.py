"""Observed against desired → Plan: what apply would do for each target. No I/O here: the
reads are the fleet's (killswitch/fleet.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import structlog

from killswitch.domain import (
    Access,
    Action,
    Change,
    ChangeKind,
    Observed,
    Plan,
    Target,
    tightened,
)
from killswitch.errors import KillswitchError

log = structlog.get_logger("killswitch.planner")

Observation = Observed | KillswitchError
T = TypeVar("T")
R = TypeVar("R")
Item = TypeVar("Item")


def diff(
    action: Action,
    requested: Access,
    targets: Sequence[Target],
    observations: Mapping[str, Observation],
    supports: Callable[[Target, Access], bool],
    ledger: Mapping[str, Access] | None = None,
) -> Plan:
    """The plan: for each target, what apply would do. No I/O.

    A tightening action only tightens: each target gets ``requested`` kept at least as
    tight as what it holds now and what the ledger says it should hold (a revoked
    target stays revoked under ``restrict``). Restore sets ``requested`` everywhere."""
    ledger = ledger or {}
    changes = []
    for target in targets:
        seen = observations[target.id]
        observed = _access(seen)
        desired = (
            tightened(requested, observed, ledger.get(target.id)) if action.tightens else requested
        )
        if observed is not None and observed == desired:
            kind = ChangeKind.NONE if desired == requested else ChangeKind.KEPT
            changes.append(Change(target, desired, observed, kind))
        elif not supports(target, desired):
            changes.append(
                Change(
                    target,
                    desired,
                    observed,
                    ChangeKind.UNSUPPORTED,
                    f"{target.mechanism} cannot express {desired.posture.value}",
                )
            )
        elif isinstance(seen, KillswitchError):
            changes.append(Change(target, desired, None, ChangeKind.UNREADABLE, str(seen)))
        else:
            changes.append(Change(target, desired, observed, ChangeKind.CHANGE))
    return Plan(action, requested, tuple(changes))


def _access(seen: Observation) -> Access | None:
    return seen.access if isinstance(seen, Observed) else None


def unread(action: Action, requested: Access, targets: Sequence[Target]) -> Plan:
    """The plan of a tightening op nobody is asked to confirm: nothing read yet, every
    target to be read under the lock (so a slow read cannot eat the deadline twice)."""
    why = "not read yet: read under the lock"
    return Plan(
        action,
        requested,
        tuple(Change(t, requested, None, ChangeKind.UNREADABLE, why) for t in targets),
    )
