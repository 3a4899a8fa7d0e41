"""How a command shows the engine's progress (killswitch/progress.py), on stderr only.

On a terminal: a bar per phase (read, apply, verify, probe) with done/total and the
time left, then the time it took; rich redraws it on a thread of its own a few times a
second, so a target finishing costs the engine a counter, never a write. Off a terminal
(or with ``-o json``): one line as each phase starts and one per target as it finishes,
written by a thread of its own so that a slow reader of stderr never holds an op;
off a terminal those lines are JSON, as the logs are.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import IO, Any

from killswitch.domain import Target
from killswitch.progress import Phase
from killswitch.text import printable

# Outcomes worth a count beside the bar: the report's errors section says why.
TROUBLE = frozenset({"failed", "unreadable", "refused", "not-effective"})
# Phases whose targets each get a line off a terminal: the outcome of the op per
# target. Reads and writes only move the bars (their outcome is the read-back's).
REPORTED = frozenset({Phase.VERIFY, Phase.PROBE})
# Phases whose start gets a line (verify starts with apply: one line says both).
ANNOUNCED = frozenset({Phase.READ, Phase.APPLY, Phase.PROBE})
REFRESH_PER_SECOND = 5


class Bars:
    """rich bars on a terminal, drawn while a phase runs and left as one line each."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._bars: Any = None  # a rich.progress.Progress while any phase runs
        self._tasks: dict[Phase, Any] = {}
        self._trouble: dict[Phase, int] = {}

    def start(self, phase: Phase, total: int) -> None:
        with self._lock:
            if self._bars is None:
                self._bars = _rich_bars(self.stream)
                self._bars.start()
            self._tasks[phase] = self._bars.add_task(phase.value, total=total, trouble="")
            self._trouble[phase] = 0

    def advance(
        self, phase: Phase, target: Target, outcome: str, detail: str | None = None
    ) -> None:
        bars, task = self._bars, self._tasks.get(phase)
        if bars is None or task is None:
            return
        if outcome in TROUBLE:
            with self._lock:
                self._trouble[phase] += 1
                count = self._trouble[phase]
            bars.update(task, advance=1, trouble=f"{count} {outcome}")
        else:
            bars.advance(task)

    def end(self, phase: Phase) -> None:
        with self._lock:
            self._tasks.pop(phase, None)
            if not self._tasks:
                self._stop()

    def close(self) -> None:
        with self._lock:
            self._tasks.clear()
            self._stop()

    def _stop(self) -> None:
        if self._bars is not None:
            bars, self._bars = self._bars, None
            bars.stop()


def _rich_bars(stream: IO[str]) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(file=stream, no_color="NO_COLOR" in os.environ, highlight=False)
    return Progress(
        TextColumn("{task.description:<6}"),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TimeRemainingColumn(elapsed_when_finished=True),
        TextColumn("[red]{task.fields[trouble]}"),
        console=console,
        refresh_per_second=REFRESH_PER_SECOND,
        # Logs print above the bars; the report (stdout) is never taken into stderr.
        redirect_stdout=False,
        redirect_stderr=True,
        expand=False,
    )


class Lines:
    """A line per phase started and per target finished, for logs and scripts."""

    def __init__(self, stream: IO[str], *, as_json: bool) -> None:
        self.stream = stream
        self.as_json = as_json
        self._lock = threading.Lock()
        self._totals: dict[Phase, int] = {}
        self._done: dict[Phase, int] = {}
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def start(self, phase: Phase, total: int) -> None:
        with self._lock:
            self._totals[phase], self._done[phase] = total, 0
        if phase in ANNOUNCED:
            self._put({"phase": phase.value, "total": total})

    def advance(
        self, phase: Phase, target: Target, outcome: str, detail: str | None = None
    ) -> None:
        if phase not in REPORTED:
            return
        with self._lock:
            self._done[phase] = done = self._done.get(phase, 0) + 1
            total = self._totals.get(phase, done)
        line: dict[str, Any] = {
            "phase": phase.value,
            "done": done,
            "total": total,
            "target": target.id,
            "result": outcome,
        }
        if detail:
            line["detail"] = detail
        self._put(line)

    def end(self, phase: Phase) -> None:
        pass

    def close(self, wait: float = 2.0) -> None:
        """Write what is queued; wait at most ``wait`` seconds for a reader that is stuck."""
        writer = self._writer
        if writer is not None:
            self._queue.put(None)
            writer.join(wait)

    def _put(self, line: dict[str, Any]) -> None:
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write, name="killswitch-progress", daemon=True
                    )
                    self._writer.start()
        self._queue.put(line)

    def _write(self) -> None:
        log = None
        while (line := self._queue.get()) is not None:
            try:
                if self.as_json:
                    if log is None:
                        from killswitch.logs import progress_logger

                        log = progress_logger()
                    log.info("progress", **line)
                else:
                    self.stream.write(plain(line) + "\n")
                    self.stream.flush()
            except (OSError, ValueError):
                return  # stderr closed: nobody is reading; the op goes on regardless


def plain(line: dict[str, Any]) -> str:
    """``[12/40] aws:aws-prod/eu-west-1/ssm-flag/mythos-5 verified``, or a phase's start."""
    if "target" not in line:
        total = line["total"]
        return f"{line['phase']}: {total} target{'' if total == 1 else 's'}"
    text = f"[{line['done']}/{line['total']}] {line['target']} {line['result']}"
    if line.get("detail"):
        text += f" — {line['detail']}"
    return printable(text)
