"""Drift: the ledger (what ops set) against what providers say, and how to heal it.

Pure functions: no I/O. Healing goes in the safe direction only: a target more
open than the ledger says is closed again at once; a target more closed than
the ledger says is only reported (re-opening is a restore, with its approvals).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from killswitch.domain import OPEN, Access, LedgerEntry, Observed, Posture, Target, TargetReport
from killswitch.errors import KillswitchError
from killswitch.outcome import Outcome


def classify(
    targets: Sequence[Target],
    ledger: Mapping[str, LedgerEntry],
    seen: Mapping[str, Observed | KillswitchError],
) -> list[TargetReport]:
    """One row per target: in-sync, drift or unreadable. A target no op has set is
    expected open."""
    rows = []
    for target in targets:
        entry = ledger.get(target.id)
        observation = seen[target.id]
        if isinstance(observation, KillswitchError):
            desired = entry.desired if entry else None
            rows.append(TargetReport(target, desired, None, "unreadable", str(observation)))
            continue
        observed = observation.access
        desired = entry.desired if entry else OPEN
        if observed == desired:
            rows.append(TargetReport(target, desired, observed, "in-sync"))
            continue
        origin = f"set by {entry.op_id}" if entry else "never changed by killswitch"
        rows.append(
            TargetReport(
                target,
                desired,
                observed,
                "drift",
                f"observed {observed}, ledger says {desired} ({origin})",
            )
        )
    return rows


def unmanaged(found: Sequence[tuple[Target, Observed]]) -> list[TargetReport]:
    """Rows for what a provider shows outside the inventory (a region it does not list)."""
    return [
        TargetReport(
            target,
            None,
            observed.access,
            "unmanaged",
            f"{observed.detail or 'found at the provider'}; not in the inventory: add "
            f"{target.region} to provider {target.provider} to manage it",
        )
        for target, observed in found
    ]


def status(rows: Sequence[TargetReport]) -> Outcome:
    results = {r.result for r in rows}
    if results & {"drift", "unmanaged"}:
        return Outcome.DRIFT
    return Outcome.UNREADABLE if "unreadable" in results else Outcome.IN_SYNC


@dataclass(frozen=True)
class Healing:
    """What ``drift --fix`` would do: close again (grouped by posture), including targets
    that cannot be read but should be closed, and re-open (only with --fix-open)."""

    close: dict[Access, list[str]]
    reopen: list[str]


def healing(rows: Sequence[TargetReport]) -> Healing:
    close: dict[Access, list[str]] = {}
    reopen: list[str] = []
    for row in rows:
        if row.desired is None:
            continue
        if row.result == "unreadable" and row.desired.posture is not Posture.OPEN:
            # We cannot tell how open it is (a provider error, namespaces that disagree):
            # applying the ledger's closed posture again is safe whatever it is now.
            close.setdefault(row.desired, []).append(row.target.id)
            continue
        if row.result != "drift" or row.observed is None:
            continue
        if row.observed.looser_than(row.desired):
            close.setdefault(row.desired, []).append(row.target.id)
        else:
            reopen.append(row.target.id)
    return Healing(close, reopen)
