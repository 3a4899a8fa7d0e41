"""structlog to stderr: JSON when stderr is not a TTY (cron, CI), readable on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

from killswitch.text import printable

LEVELS = ("debug", "info", "warning", "error")


def _harmless(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """No control characters from user text or provider replies, no URL credentials."""
    return {key: printable(v) if isinstance(v, str) else v for key, v in event.items()}


class _Stderr:
    """``sys.stderr`` as it is at each write, not at start-up: a progress display on a
    terminal swaps in a proxy that prints each log line above its bars."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


STDERR = cast(TextIO, _Stderr())


def _processors() -> list[structlog.types.Processor]:
    tty = sys.stderr.isatty()
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if tty else structlog.processors.JSONRenderer()
    )
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _harmless,
        renderer,
    ]


level: str | None = None  # as configured; worker processes log at the same level


def configure(level: str) -> None:
    globals()["level"] = level
    structlog.configure(
        processors=_processors(),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(STDERR),
        cache_logger_on_first_use=False,
    )


def progress_logger() -> Any:
    """Where a change's progress goes off a terminal: lines shaped as the logs are (JSON),
    so stderr stays one JSON object a line, written whatever ``--log-level`` says."""
    # A stream object of its own: structlog locks per stream, and the engine's own log
    # lines must never wait behind a progress line.
    return structlog.wrap_logger(
        structlog.PrintLogger(cast(TextIO, _Stderr())),
        processors=_processors(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


def silence() -> None:
    """No log line at all (shell completion: stdout carries the candidates)."""
    logging.disable(logging.CRITICAL)
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
