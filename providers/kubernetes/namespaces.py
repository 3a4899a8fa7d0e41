"""One target covers every listed namespace of a cluster: their postures, combined."""

from __future__ import annotations

from collections.abc import Mapping

from killswitch.domain import Observed
from killswitch.errors import PermanentError


class MixedPosture(PermanentError):
    """The namespaces (or workloads) of one target disagree: the target is in no one posture.

    Reported as unreadable, so plan, status and drift show it; revoke, restrict and
    restore still converge every namespace."""


def combine(what: str, found: Mapping[str, Observed]) -> Observed:
    """The one posture every namespace shows, or MixedPosture naming each one."""
    postures = {seen.access for seen in found.values()}
    if len(postures) != 1:
        each = ", ".join(f"{ns}: {seen.access}" for ns, seen in sorted(found.items()))
        raise MixedPosture(f"{what}: namespaces disagree ({each})")
    detail = "; ".join(f"{ns}: {seen.detail}" for ns, seen in sorted(found.items()))
    return Observed(postures.pop(), detail)
