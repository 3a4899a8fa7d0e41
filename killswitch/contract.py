"""The contract between the engine and providers (Terraform-like).

A provider is one small class that the registry loads by entry point; it turns
its inventory entry into targets and hands out mechanisms. A mechanism is one
lever: ``observe`` reads, ``apply`` converges. The engine decides success by
observing again after ``apply``.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from killswitch.domain import Access, Observed, Posture, Target

# The op's deadline (time.monotonic()) while the engine makes a provider call.
CALL_DEADLINE: ContextVar[float | None] = ContextVar("killswitch_call_deadline", default=None)


def time_left() -> float | None:
    """Seconds until the current op's deadline, for a lever bounding its own calls; None
    when no op deadline applies."""
    deadline = CALL_DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


@dataclass(frozen=True)
class ApplyContext:
    """Why a change is made; mechanisms record it at the provider where they can."""

    op_id: str
    actor: str
    reason: str
    ticket: str | None
    at: str
    # What the plan read at this target moments ago; set on a call's first try only (a
    # retry gets None: the first try may have landed). A lever may use it instead of
    # reading again before its write. None: read.
    observed: Access | None = None
    # Called by a lever immediately before each provider write: raises LeaseLost once
    # another op has taken the apply lock over, so a fenced holder writes nothing more.
    fence: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)


@dataclass(frozen=True)
class Problem:
    """One validation problem; ``loc`` is relative to the provider's entry unless
    ``absolute`` (e.g. ``("models", "mythos-5", "aws", "bedrock_ids")``)."""

    loc: tuple[str | int, ...]
    message: str
    absolute: bool = False


@dataclass(frozen=True)
class Permission:
    """One permission a lever needs, e.g. ``ssm:PutParameter`` on a resource pattern.

    ``resource`` may name inventory values in braces (``{ssm_prefix}``), which the
    provider fills in when it prints its least-privilege policy."""

    action: str
    resource: str
    condition: tuple[tuple[str, str, str], ...] = ()  # (operator, key, value)


@runtime_checkable
class Mechanism(Protocol):
    name: ClassVar[str]  # "aws.ssm-flag"
    supports: ClassVar[frozenset[Posture]]  # postures it can express
    # Revoke applies lower waves first (edge flags before deeper levers); restore the reverse.
    wave: ClassVar[int]
    permissions: ClassVar[tuple[Permission, ...]]

    def observe(self, target: Target) -> Observed:
        """Read-only: the target's current posture."""
        ...

    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        """Converge to ``desired``; idempotent, no write when already there."""
        ...


@runtime_checkable
class Grouped(Protocol):
    """Optional: a lever where one provider resource controls many targets (an IAM
    policy covers every region of an account). The engine applies all changes that
    share a resource key in one call."""

    def resource_key(self, target: Target) -> str: ...

    def apply_group(self, targets: Sequence[Target], desired: Access, ctx: ApplyContext) -> None:
        """Converge every target in ``targets`` (same resource key) in one write."""
        ...


@runtime_checkable
class Preflight(Protocol):
    """Optional: a lever that can tell at plan time that a change would not hold
    (e.g. an autoscaler that would undo a scale-down). The plan refuses such targets,
    naming the reason, before anything is changed."""

    def preflight(self, target: Target, desired: Access) -> str | None:
        """A reason this change cannot be made safely, or None."""
        ...


@runtime_checkable
class Discovery(Protocol):
    """Optional: a provider that can show what it holds outside the inventory (a flag in
    a region the inventory does not list). ``drift`` reports these as unmanaged."""

    def discover(self) -> Sequence[tuple[Target, Observed]]: ...


@runtime_checkable
class CallBound(Protocol):
    """Optional: a provider that bounds each call's wall time. After taking the lock over
    from a loosening op, a revoke waits this long for that op's writes in flight to land
    (or die) before its final read-back."""

    def call_bound_seconds(self) -> float: ...


@runtime_checkable
class Affinity(Protocol):
    """Optional: a provider whose targets share rate limits and clients in groups finer
    than the whole provider entry (AWS: per account and region; per account for its
    global services). When worker processes make the calls (killswitch/workers.py),
    every target of one group goes to the same worker, so no rate-limit bucket is
    split between two processes. Without it, a provider entry is one group."""

    def affinity(self, target: Target) -> str: ...


@runtime_checkable
class Identifies(Protocol):
    """Optional: a provider whose credentials say who the caller is (killswitch/identity.py).

    ``caller_identity`` returns who the credentials belong to, as the provider names
    them (an ARN for AWS), within ``timeout`` seconds; it raises when they cannot be
    read."""

    def caller_identity(self, timeout: float) -> str: ...


@runtime_checkable
class Readiness(Protocol):
    """Optional: what a provider needs at run time that a valid inventory cannot show (a
    secret set, credentials found), checked by ``inventory validate`` without a call to
    the provider. Each problem names what is missing, never a secret's value."""

    def readiness(self) -> list[str]: ...


@runtime_checkable
class Reachability(Protocol):
    """Optional: what a kill needs that only a call can show, checked by ``inventory
    validate --reach`` (e.g. the AWS roles a deny policy is attached to exist in each
    account). Each problem names what is missing and where; reads only, bounded."""

    def reach(self) -> list[str]: ...


@runtime_checkable
class LeastPrivilege(Protocol):
    """Optional: a provider that can print the least-privilege policy its levers need."""

    def least_privilege(self) -> dict[str, Any]: ...


class Provider(Protocol):
    """One provider instance from the inventory (e.g. ``aws-prod``)."""

    type: ClassVar[str]
    config_model: ClassVar[builtins.type[BaseModel]]
    mechanism_names: ClassVar[frozenset[str]]

    @classmethod
    def check(cls, config: Any, models: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
        """Provider-specific checks beyond the schema (region names, model ids)."""
        ...

    def __init__(self, name: str, config: Any, models: Mapping[str, Mapping[str, Any]]) -> None: ...

    def targets(self) -> Sequence[Target]:
        """Every target this instance controls (region x mechanism x model)."""
        ...

    def mechanism(self, name: str) -> Mechanism:
        """The lever named ``name`` (as in the target id), built on first use."""
        ...
