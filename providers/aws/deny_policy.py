"""One model's deny document as a lever sees it (iam-deny, scp-deny): the read-back of a
target, a rewrite that never opens anything, and the warnings a change deserves."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from killswitch.domain import OPEN, Access, Observed, Posture, Target
from killswitch.errors import PermanentError
from providers.aws.bedrock_access import (
    FUTURE_REGION,
    GEOGRAPHIES,
    UNLISTED,
    ModelPaths,
    canonical,
    check_size,
    foreign_statements,
    render,
)
from providers.aws.deny_effect import Reading, read

log = structlog.get_logger(__name__)


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


def covered(listed: Sequence[str]) -> str:
    """For plan and status: which regions the ``unlisted`` target closes."""
    from providers.aws.config import unlisted_regions

    others = unlisted_regions(listed)
    if not others:
        return "covers regions AWS adds later"
    return f"covers {len(others)} unlisted regions ({', '.join(others)}) and regions AWS adds later"
