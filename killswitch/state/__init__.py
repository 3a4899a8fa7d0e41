"""State stores, chosen by the inventory's ``state:`` URL."""

from __future__ import annotations

from pathlib import Path

from killswitch.errors import UsageError
from killswitch.state.base import Lease, StateStore

__all__ = ["Lease", "StateStore", "open_store"]


def open_store(url: str) -> StateStore:
    """The store behind ``url`` (``sqlite:///path``)."""
    if url.startswith("sqlite:///"):
        from killswitch.state.sqlite import SqliteStore

        return SqliteStore(Path(url[len("sqlite:///") :]))
    scheme = url.split(":", 1)[0]
    raise UsageError(f"state: unsupported state URL scheme {scheme!r} (supported: sqlite)")
