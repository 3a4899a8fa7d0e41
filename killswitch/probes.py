"""Proof by effect: a posture holds when the serving path says so, not when a flag reads
back. Each probe of the inventory is an endpoint that serves the model (a gateway with
the reference enforcer in front, killswitch/enforcer); each of its callers asks for the
model and must be served or refused as the target's posture says:

- ``open``: everyone is served;
- ``restricted(A)``: a caller with an audience in A is served, every other is refused;
- ``revoked``: everyone is refused.

After an op is applied and read back, its targets are probed until every caller gets
what it should (``effective``, with the seconds from the write to the effect) or the
op's deadline passes (``not-effective``, with the answer that was wrong: exit 3).
Probes send read-only requests, only to the URLs the inventory names; a caller's token
comes from its environment variable and never reaches output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from killswitch.clock import SYSTEM, Clock
from killswitch.domain import Access, Posture, Target
from killswitch.inventory import CallerSpec, Inventory, ProbeSpec
from killswitch.sdk import within
from killswitch.text import excerpt, printable

log = structlog.get_logger("killswitch.probes")

EFFECTIVE = "effective"
NOT_EFFECTIVE = "not-effective"
EFFECT_AFTER = "effect after "  # how an effective target's detail begins: seconds follow


def effect_seconds(result: str, detail: str | None) -> float | None:
    """The seconds to effect a report row says (``effect after 1.42s``), if any."""
    if result != EFFECTIVE or not detail or not detail.startswith(EFFECT_AFTER):
        return None
    return float(detail.removeprefix(EFFECT_AFTER).rstrip("s"))


@dataclass(frozen=True)
class Effect:
    target_id: str
    effective: bool
    seconds: float | None  # from the write (or from the first probe) to the effect
    detail: str

    @property
    def result(self) -> str:
        return EFFECTIVE if self.effective else NOT_EFFECTIVE


def served(desired: Access, caller: CallerSpec) -> bool:
    """Whether ``caller`` should be served when the model's posture is ``desired``."""
    if desired.posture is Posture.OPEN:
        return True
    if desired.posture is Posture.RESTRICTED:
        return bool(set(caller.audience) & set(desired.audience))
    return False


Ask = Callable[[ProbeSpec, str, CallerSpec, float], "int | str"]
"""One request within the seconds given: the HTTP status, or why there was none."""


def ask(probe: ProbeSpec, model: str, caller: CallerSpec, seconds: float) -> int | str:
    """One read-only request to the probe's URL as ``caller``, bounded as a whole by its
    timeout and by ``seconds`` (what is left of the op's deadline)."""
    import urllib3

    headers = {}
    if caller.token_env:
        token = os.environ.get(caller.token_env)
        if not token:
            return f"no token in ${caller.token_env}"
        headers["Authorization"] = f"Bearer {token}"
    url = probe.url.replace("{model}", model)
    bound = max(0.05, min(probe.timeout_seconds, seconds))
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(bound))

    def call() -> int:
        return int(http.request(probe.method, url, headers=headers, redirect=False).status)

    # The whole request is bounded, not each read: a gateway that drips its answer is
    # no answer (killswitch.sdk.within).
    try:
        return within(bound, f"probe {url}", call)
    except Exception as exc:  # refused, reset, timed out: no answer is no proof either way
        return f"no answer ({type(exc).__name__})"


class Prober:
    """The inventory's probes, matched to targets, and the loop that waits for effect."""

    def __init__(self, inventory: Inventory, *, clock: Clock = SYSTEM, send: Ask = ask) -> None:
        from killswitch.selectors import Selector, resolve

        self.clock = clock
        self.send = send
        self.covering: dict[str, list[tuple[str, ProbeSpec]]] = {}
        for name, probe in sorted(inventory.spec.probes.items()):
            picks = probe.targets
            selector = Selector(
                tuple(picks.models), tuple(picks.regions), tuple(picks.providers),
                tuple(picks.targets),
            )  # fmt: skip
            for target in resolve(inventory, selector):
                self.covering.setdefault(target.id, []).append((name, probe))

    def covers(self, target: Target) -> bool:
        return target.id in self.covering

    def wrong(self, target: Target, desired: Access, deadline: float) -> str | None:
        """The first answer that contradicts ``desired`` (one try of every caller of every
        probe of the target), or None when all agree. Nothing is asked past ``deadline``."""
        for name, probe in self.covering.get(target.id, []):
            for who, caller in sorted(probe.callers.items()):
                left = deadline - self.clock.monotonic()
                if left <= 0:
                    return f"probe {name} as {who}: not asked, the op's deadline passed"
                answer = self.send(probe, target.model, caller, left)
                should = served(desired, caller)
                if isinstance(answer, str):
                    return f"probe {name} as {who}: {answer}"
                refused = answer in probe.refused
                if should and (refused or not 200 <= answer < 300):
                    return f"probe {name} as {who}: {answer}, should be served ({desired})"
                if not should and not refused:
                    return f"probe {name} as {who}: {answer}, should be refused ({desired})"
        return None

    def until(
        self,
        goals: Sequence[tuple[Target, Access]],
        *,
        written_at: Mapping[str, float],
        deadline: float,
        on_effect: Callable[[Target, Effect], None] | None = None,
    ) -> dict[str, Effect]:
        """Probe every (target, desired) in rounds until each is effective or ``deadline``
        (a monotonic time) passes. ``written_at``: when each target was written;
        ``on_effect``: told of each target's effect as soon as it is known."""
        started = self.clock.monotonic()
        waiting = {t.id: (t, d) for t, d in goals if self.covers(t)}
        every = min((p.every_seconds for t, _ in goals for _, p in self.covering.get(t.id, [])),
                    default=0.5)  # fmt: skip
        found: dict[str, Effect] = {}
        last: dict[str, str] = {}
        while waiting:
            for target_id, (target, desired) in list(waiting.items()):
                problem = self.wrong(target, desired, deadline)
                if problem is None:
                    now = self.clock.monotonic()
                    since = written_at.get(target_id, started)
                    seconds = max(0.0, now - since)
                    found[target_id] = Effect(
                        target_id, True, seconds, f"{EFFECT_AFTER}{seconds:.2f}s"
                    )
                    del waiting[target_id]
                    if on_effect is not None:
                        on_effect(target, found[target_id])
                else:
                    last[target_id] = problem
            if not waiting or self.clock.monotonic() + every > deadline:
                break
            self.clock.sleep(every)
        for target_id in waiting:
            detail = printable(excerpt(last.get(target_id, "not probed"), 300))
            found[target_id] = Effect(target_id, False, None, f"not effective: {detail}")
            log.warning("posture not effective", target=target_id, probe=detail)
            if on_effect is not None:
                on_effect(waiting[target_id][0], found[target_id])
        return found
