"""An op's progress, phase by phase, for whoever shows it (the CLI draws bars on a
terminal and writes lines elsewhere). The engine says what it did; it never draws, and
it never waits for a display: ``advance`` is called on the fan-out's threads and must
return at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Protocol

from killswitch.domain import Target


class Phase(StrEnum):
    READ = "read"  # every selected target observed: a plan, status, drift
    APPLY = "apply"  # a write sent to each target that needs one
    VERIFY = "verify"  # each of those read back: its outcome for this op
    PROBE = "probe"  # the serving path asked until it obeys (proof by effect)


class Progress(Protocol):
    """What the engine tells a display. Phases may overlap (a target is read back as
    soon as its write returns), and one may run twice in a command (a revoke reads once
    to ask, and again under the lock)."""

    def start(self, phase: Phase, total: int) -> None: ...

    def advance(
        self, phase: Phase, target: Target, outcome: str, detail: str | None = None
    ) -> None:
        """One target is done with ``phase``: ``outcome`` is the word its report row will
        show (``verified``, ``failed``, ``effective`` …, or the posture read)."""

    def end(self, phase: Phase) -> None: ...


class Quiet:
    """No display: library use, tests of the engine, commands off a terminal that
    report only at the end."""

    def start(self, phase: Phase, total: int) -> None:
        pass

    def advance(
        self, phase: Phase, target: Target, outcome: str, detail: str | None = None
    ) -> None:
        pass

    def end(self, phase: Phase) -> None:
        pass


QUIET = Quiet()


@contextmanager
def phase(progress: Progress, which: Phase, total: int) -> Iterator[None]:
    """``which`` from start to end, ended on every path (an error, Ctrl-C) so that no
    display is left drawing."""
    progress.start(which, total)
    try:
        yield
    finally:
        progress.end(which)
