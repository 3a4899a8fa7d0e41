"""Time to kill: how long an op took to take hold, measured on the engine's clock
(killswitch/clock.py), so tests see exact figures without sleeping.

It counts from the start of the command (before the inventory is loaded or anyone is
identified) to the last target read back as set (``verified_after``) and, where probes
run, to the last probe that agreed (``effective_after``). A later op of the same
command (a runbook's next step, drift's next heal) counts from when it was asked for.
An op that needed more than one run (``ops resume``) counts from its first run's start,
so the run that finishes it reports the time the incident really took.

A run's phases follow one another, so they add up to its time to effect:

  setup    the command began → the engine was asked (inventory, identity, state store)
  plan     reading the targets (the preview, and again under the lock); recording the op
  confirm  waiting for the person at the terminal to say yes
  lock     waiting for the apply lock
  apply    journaling and writing, until the last write returned
  verify   reading back what the last writes left (after a takeover, also waiting out
           the fenced holder's writes in flight)
  effect   probing until the last probe answered as the posture says (probes only)

Writes and read-backs of different targets overlap, so ``apply`` ends with the last
write and ``verify`` is the read-back after it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

from killswitch.clock import Clock
from killswitch.domain import (
    DONE,
    PHASES,
    Action,
    OpStatus,
    OpTiming,
    Step,
    StepResult,
    Target,
    iso,
)
from killswitch.progress import QUIET, Phase, Progress

# A target whose lever reads back as set: done, or read back but not (yet) effective.
READ_BACK = DONE | {StepResult.NOT_EFFECTIVE}


class Stopwatch:
    """Where one run of an op spends its time. It stands between the engine and the
    display (killswitch/progress.py), passing on all it hears: what the engine tells
    a display marks the phases. ``advance`` comes from the fan-out's threads, so every
    mark is taken under a mutex."""

    def __init__(self, clock: Clock, shows: Progress = QUIET) -> None:
        self.clock = clock
        self.shows = shows
        self._mutex = threading.Lock()
        self.begin(clock.monotonic())

    def begin(self, started: float) -> None:
        """A new run, whose command began at ``started`` (monotonic). The engine is asked
        now: what came before was setup."""
        now = self.clock.monotonic()
        with self._mutex:
            self.started = started
            self.started_at = self.clock.now() - timedelta(seconds=now - started)
            self._spent = dict.fromkeys(PHASES, 0.0) | {"setup": now - started}
            self._current, self._since = "plan", now
            self._applying: float | None = None
            self._written: float | None = None  # when the last write returned (or failed)
            self._read: float | None = None  # when the last target was read back
            self._proven: float | None = None  # when the last probe verdict came

    def enter(self, name: str) -> str:
        """From now on the time goes to ``name``; returns the phase it went to before."""
        now = self.clock.monotonic()
        with self._mutex:
            was = self._current
            self._spent[was] += now - self._since
            self._current, self._since = name, now
        return was

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """The time inside the block goes to ``name`` (the confirmation prompt)."""
        back = self.enter(name)
        try:
            yield
        finally:
            self.enter(back)

    def applying(self) -> None:
        """The executor starts on the op: from here on, what it reports marks the phases."""
        self.enter("apply")
        with self._mutex:
            self._applying = self._since

    # -- Progress: marks, and the display told as before ----------------------------
    def start(self, phase: Phase, total: int) -> None:
        self.shows.start(phase, total)

    def advance(
        self, phase: Phase, target: Target, outcome: str, detail: str | None = None
    ) -> None:
        now = self.clock.monotonic()
        with self._mutex:
            if self._applying is not None:
                if phase is Phase.APPLY:  # written, or failed: either way it returned
                    self._written = now
                elif phase in (Phase.VERIFY, Phase.READ):  # read back, or read again
                    self._read = now
                elif phase is Phase.PROBE:
                    self._proven = now
        self.shows.advance(phase, target, outcome, detail)

    def end(self, phase: Phase) -> None:
        self.shows.end(phase)

    def timing(
        self,
        status: OpStatus,
        target_ids: Sequence[str],
        steps: Mapping[str, Step],
        before: OpTiming | None,
    ) -> OpTiming:
        """This run's figures, for an op it left ``status`` with ``steps``. ``before``:
        what its earlier runs recorded; the op counts from the first one's start. A run
        that wrote and read nothing decided on the reads under the lock: its targets
        were verified when it began to apply."""
        with self._mutex:
            applying = self._since if self._applying is None else self._applying
            written = max(applying, self._written or applying)
            read = max(written, self._read or written)
            spent = self._spent | {"apply": written - applying, "verify": read - written}
            if self._proven is not None:
                spent["effect"] = self._proven - read
            else:
                del spent["effect"]
            proven = self._proven
        offset, started_at = 0.0, iso(self.started_at)
        if before is not None:  # across runs the only common clock is the wall clock
            offset = (self.started_at - parse_stamp(before.started_at)).total_seconds()
            started_at = before.started_at
        read_back = all(
            (s := steps.get(t)) is not None and s.result in READ_BACK for t in target_ids
        )
        effective = proven is not None and status is OpStatus.COMPLETE
        return OpTiming(
            started_at=started_at,
            runs=(before.runs if before else 0) + 1,
            verified_after=_ms(offset + read - self.started) if read_back else None,
            effective_after=_ms(offset + proven - self.started)
            if effective and proven is not None
            else None,
            phases=tuple((p, _ms(spent[p])) for p in PHASES if p in spent),
        )


def _ms(seconds: float) -> float:
    """Seconds to the millisecond: what is stored is what is shown and compared."""
    return round(max(0.0, seconds), 3)


def parse_stamp(stamp: str) -> datetime:
    """A time as the stores write it (``iso``) back to a datetime."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def seconds_text(seconds: float) -> str:
    """``7.25s``, ``2m05s``, ``1h02m``: a duration as on-call reads it."""
    if seconds < 120:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 120:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def headline(timing: OpTiming, action: Action) -> str:
    """``time to kill: verified after 7.25s, effective after 8.91s``: what on-call and the
    webhook read first."""
    what = "time to kill" if action.tightens else "time to restore"
    if timing.verified_after is None:
        return f"{what}: not verified everywhere yet"
    line = f"{what}: verified after {seconds_text(timing.verified_after)}"
    if timing.effective_after is not None:
        line += f", effective after {seconds_text(timing.effective_after)}"
    return line


def describe(timing: OpTiming, action: Action) -> list[str]:
    """The lines ``ops show`` prints under the op: the headline, from when, the phases."""
    since = f"from the command at {timing.started_at}"
    if timing.runs > 1:
        since = f"from the first of {timing.runs} commands, at {timing.started_at}"
    phases = " · ".join(f"{name} {seconds_text(value)}" for name, value in timing.phases)
    last = " of the last run" if timing.runs > 1 else ""
    return [f"{headline(timing, action)} ({since})", f"phases{last}: {phases}"]
