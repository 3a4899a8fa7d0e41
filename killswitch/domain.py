"""The words of an incident, as small immutable values."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from killswitch.outcome import Outcome

# Every name a user types ends up inside an ARN, a parameter path, a label or a
# URL; a strict pattern keeps a name from widening any of them.
NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")


def utcnow() -> str:
    """Now, as an ISO-8601 UTC timestamp with milliseconds (sorts as text)."""
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """``moment`` (UTC) as the stores write times: ISO-8601, milliseconds, ``Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x' or 'y'?)' for a mistyped name, or '' when nothing is close."""
    close = difflib.get_close_matches(value, sorted(choices), n=3, cutoff=0.75)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)"


def is_valid_name(value: str) -> bool:
    return bool(NAME_PATTERN.fullmatch(value)) and ".." not in value


class Posture(StrEnum):
    OPEN = "open"
    RESTRICTED = "restricted"
    REVOKED = "revoked"


class Action(StrEnum):
    REVOKE = "revoke"
    RESTRICT = "restrict"
    RESTORE = "restore"

    @property
    def tightens(self) -> bool:
        """Revoke and restrict only ever close; restore is the one way to open."""
        return self is not Action.RESTORE

    @property
    def posture(self) -> Posture:
        return {
            Action.REVOKE: Posture.REVOKED,
            Action.RESTRICT: Posture.RESTRICTED,
            Action.RESTORE: Posture.OPEN,
        }[self]


@dataclass(frozen=True)
class Access:
    """A posture and, for ``restricted``, the audiences that keep access."""

    posture: Posture
    audience: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Only a restricted posture has an audience; keep it sorted so equal means equal.
        audience = tuple(sorted(set(self.audience))) if self.posture is Posture.RESTRICTED else ()
        object.__setattr__(self, "audience", audience)

    def to_json(self) -> dict[str, object]:
        return {"posture": self.posture.value, "audience": list(self.audience)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Access:
        audience = data.get("audience") or []
        if not isinstance(audience, list):
            raise ValueError("audience must be a list")
        return cls(Posture(str(data["posture"])), tuple(str(a) for a in audience))

    def __str__(self) -> str:
        if self.posture is Posture.RESTRICTED:
            return f"restricted({','.join(self.audience)})"
        return self.posture.value

    # -- the one order of postures: revoked, restricted(A), restricted(A+B), open --
    def at_least_as_tight_as(self, other: Access) -> bool:
        """Whether everyone ``self`` lets in, ``other`` lets in too."""
        if self.posture is Posture.REVOKED or other.posture is Posture.OPEN:
            return True
        if other.posture is Posture.REVOKED or self.posture is Posture.OPEN:
            return False
        return set(self.audience) <= set(other.audience)

    def looser_than(self, other: Access) -> bool:
        """Whether ``self`` lets in someone ``other`` keeps out."""
        return not self.at_least_as_tight_as(other)

    def meet(self, other: Access) -> Access:
        """The loosest posture at least as tight as both: only who both let in gets in."""
        if self.at_least_as_tight_as(other):
            return self
        if other.at_least_as_tight_as(self):
            return other
        common = set(self.audience) & set(other.audience)  # two restricted, neither inside
        return Access(Posture.RESTRICTED, tuple(common)) if common else Access(Posture.REVOKED)


OPEN = Access(Posture.OPEN)
REVOKED = Access(Posture.REVOKED)


def tightened(requested: Access, *already: Access | None) -> Access:
    """What a tightening op sets: ``requested``, kept at least as tight as every posture
    in ``already`` (what the target holds now, what the ledger says it should hold)."""
    result = requested
    for other in already:
        if other is not None:
            result = result.meet(other)
    return result


@dataclass(frozen=True)
class Target:
    """One place where one model's access is controlled."""

    provider_type: str
    provider: str
    region: str
    mechanism: str
    model: str
    account: str = ""  # set when one provider entry spans several accounts

    @property
    def id(self) -> str:
        where = f"{self.provider}@{self.account}" if self.account else self.provider
        return f"{self.provider_type}:{where}/{self.region}/{self.mechanism}/{self.model}"


@dataclass(frozen=True)
class Observed:
    """What a provider says about one target; ``detail`` is for humans."""

    access: Access
    detail: str = ""


class Intent(StrEnum):
    """What the holder of the apply lock is doing; decides who may take the lock over."""

    TIGHTEN = "tighten"  # revoke, restrict, a drift heal: never kept waiting by a loosening
    LOOSEN = "loosen"  # restore: fenced at once by any tightening op
    OTHER = "other"  # state migrate, state sync

    @classmethod
    def of(cls, action: Action) -> Intent:
        return cls.TIGHTEN if action.tightens else cls.LOOSEN


class ChangeKind(StrEnum):
    CHANGE = "change"  # observed differs from desired: apply will write
    NONE = "no-change"  # already there: apply makes no write
    KEPT = "kept"  # already tighter than asked: a tightening op keeps it as it is
    UNSUPPORTED = "unsupported"  # the mechanism cannot express the desired posture
    UNREADABLE = "unreadable"  # observe failed; we do not know


@dataclass(frozen=True)
class Change:
    """One line of a plan."""

    target: Target
    desired: Access
    observed: Access | None
    kind: ChangeKind
    error: str | None = None


@dataclass(frozen=True)
class Plan:
    action: Action
    desired: Access
    changes: tuple[Change, ...]

    @property
    def pending(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.kind is ChangeKind.CHANGE)

    @property
    def kept(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.kind is ChangeKind.KEPT)

    @property
    def blocked(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.kind is ChangeKind.UNSUPPORTED)

    @property
    def unreadable(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.kind is ChangeKind.UNREADABLE)


class OpStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting-approval"
    RUNNING = "running"
    COMPLETE = "complete"
    PARTIAL = "partial"
    # A loosening op that a newer revoke or restrict reached first: it never re-opens.
    SUPERSEDED = "superseded"
    # A restore request someone declined (killswitch decline), or that nobody approved
    # within policy.restore.expires_after: it never re-opens either.
    DECLINED = "declined"
    EXPIRED = "expired"
    # Cut short by the operator (Ctrl-C) while applying: `ops resume` finishes it.
    INTERRUPTED = "interrupted"

    @property
    def unfinished(self) -> bool:
        return self in (
            OpStatus.AWAITING_APPROVAL,
            OpStatus.RUNNING,
            OpStatus.PARTIAL,
            OpStatus.INTERRUPTED,
        )


class StepResult(StrEnum):
    PENDING = "pending"
    STARTED = "started"  # written before the provider call
    VERIFIED = "verified"  # read back and equal to desired
    FAILED = "failed"
    SKIPPED = "skipped"  # already in the desired posture (read under the lease); no write
    KEPT = "kept"  # already tighter than asked (read under the lease); kept, no write
    REFUSED = "refused"  # the lever cannot take this posture safely (unsupported, preflight)
    EFFECTIVE = "effective"  # the probes' callers are served or refused as it says
    NOT_EFFECTIVE = "not-effective"  # read back, but a probe still answers otherwise


DONE = frozenset({StepResult.VERIFIED, StepResult.SKIPPED, StepResult.KEPT, StepResult.EFFECTIVE})


PHASES = ("setup", "plan", "confirm", "lock", "apply", "verify", "effect")
"""Where a run of an op spends its time, in the order it does (killswitch/timing.py)."""


@dataclass(frozen=True)
class OpTiming:
    """How long an op took to take hold, in seconds on the engine's clock, from the start
    of the command that first applied it: its time to kill (killswitch/timing.py)."""

    started_at: str  # when that command began (UTC, ISO-8601)
    runs: int  # the commands that applied the op: a resume is one more
    # Until every target read back as set; None while one has not (a partial op).
    verified_after: float | None
    # Until every probe agreed with every target; None without probes, or while one does not.
    effective_after: float | None
    # The last run's phases, in PHASES order; ``effect`` only where probes ran.
    phases: tuple[tuple[str, float], ...] = ()

    def phase(self, name: str) -> float | None:
        return dict(self.phases).get(name)


@dataclass(frozen=True)
class Operation:
    """One applied (or to-be-applied) plan, as recorded in the journal."""

    id: str
    action: Action
    desired: Access
    target_ids: tuple[str, ...]
    actor: str
    reason: str
    ticket: str | None
    selector: str
    created_at: str
    status: OpStatus
    required_approvals: int = 0
    timing: OpTiming | None = None  # set when a run of the op ends (None: never applied)


@dataclass(frozen=True)
class Step:
    """The latest journal record of one target within one op."""

    op_id: str
    target_id: str
    result: StepResult
    error: str | None = None
    at: str = ""
    observed: Access | None = None
    # This target's own posture when it differs from the op's (a tightening op keeps a
    # tighter target as it is); None: the op's.
    desired: Access | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """The desired posture of one target as last set by an op."""

    target_id: str
    desired: Access
    op_id: str
    at: str


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    at: str
    actor: str
    kind: str
    op_id: str | None
    payload: dict[str, object] = field(default_factory=dict)
    prev_hash: str = ""
    hash: str = ""


@dataclass(frozen=True)
class TargetReport:
    """One target's line in any report (plan, apply, status, drift)."""

    target: Target
    desired: Access | None
    observed: Access | None
    result: str
    error: str | None = None


@dataclass(frozen=True)
class Report:
    """What a command tells the user: the op (if any), a status word, one row per target."""

    op_id: str | None
    status: Outcome
    rows: tuple[TargetReport, ...]
    message: str = ""
