"""structlog to stderr: JSON when stderr is not a TTY (cron, CI), readable on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from killswitch.text import printable

LEVELS = ("debug", "info", "warning", "error")


def _harmless(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """No control characters from user text or provider replies, no URL credentials."""
    return {key: printable(v) if isinstance(v, str) else v for key, v in event.items()}


level: str | None = None  # as configured; worker processes log at the same level


def configure(level: str) -> None:
    globals()["level"] = level
    tty = sys.stderr.isatty()
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if tty else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _harmless,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
