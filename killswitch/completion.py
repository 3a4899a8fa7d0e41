"""What TAB offers. Names come from the inventory file read as YAML, and nothing more:
no provider is loaded and none is asked anything (target ids alone need the providers
loaded, to know each lever's targets, still without a call). Op and run ids come from
the state store, read only, and bounded in time (a shared store may not answer). Any
problem (no inventory, a broken one, a store that does not answer) means no
candidates: a shell completing a word must never show an error or hang.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from killswitch.domain import Operation, OpStatus
from killswitch.selectors import EXCLUDE_PREFIXES

if TYPE_CHECKING:
    from killswitch.state import StateStore

T = TypeVar("T")
WORD = re.compile(r"[A-Za-z0-9._:@/*?!\[\]-]{1,512}")  # names, ids, globs: nothing else
SECONDS = 3.0  # the longest a look into the store may take before TAB offers nothing
MAX_OPS = 200  # the newest ops offered


@dataclass(frozen=True)
class Names:
    """What the inventory file names."""

    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()  # instance names, then provider types
    regions: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()


def bounded(lookup: Callable[[], list[T]], seconds: float = SECONDS) -> list[T]:
    """``lookup()``, or [] when it fails or takes longer than ``seconds`` (it is left to
    finish on a daemon thread; the completing process exits right after)."""
    found: list[list[T]] = []

    def run() -> None:
        with contextlib.suppress(Exception):  # no candidates: the answer to any problem
            found.append(lookup())

    worker = threading.Thread(target=run, name="killswitch-complete", daemon=True)
    worker.start()
    worker.join(seconds)
    return found[0] if found else []


def _document(path: Path) -> dict[str, Any]:
    from killswitch import yamlsrc

    source, _ = yamlsrc.read(path)  # bounded in size, depth and aliases
    data = source.data if source is not None else None
    return data if isinstance(data, dict) else {}


def _keys(section: object) -> tuple[str, ...]:
    return tuple(str(k) for k in section) if isinstance(section, dict) else ()


def _values(section: object) -> list[object]:
    return list(section.values()) if isinstance(section, dict) else []


def names(path: Path) -> Names:
    """The models, provider instances and types, regions and scopes ``path`` names. A
    provider entry with ``regions: all`` is loaded to list them (still no call)."""
    doc = _document(path)
    providers = doc.get("providers")
    entries = [e for e in _values(providers) if isinstance(e, dict)]
    regions: list[str] = []
    for entry in entries:
        listed = entry.get("regions", entry.get("region"))
        if isinstance(listed, str) and listed != "all":
            listed = [listed]
        if isinstance(listed, list):
            regions += [str(r) for r in listed]
        elif listed == "all":
            regions += [t.region for t in _targets(path)]
    types = [str(e["type"]) for e in entries if isinstance(e.get("type"), str)]
    return Names(
        models=_keys(doc.get("models")),
        providers=_unique([*_keys(providers), *types]),
        regions=_unique(regions),
        scopes=_keys(doc.get("scopes")),
    )


def target_ids(path: Path) -> list[str]:
    return [t.id for t in _targets(path)]


def _targets(path: Path) -> list[Any]:
    from killswitch import inventory
    from killswitch.selectors import all_targets

    return all_targets(inventory.load(path))


def ops(path: Path, which: Callable[[Operation], bool]) -> list[str]:
    """The ids of the newest ops that ``which`` keeps, newest first."""
    store = _store(path)
    if store is None:
        return []
    return [op.id for op in store.list_ops(MAX_OPS) if which(op)]


def awaiting_approval(op: Operation) -> bool:
    return op.status is OpStatus.AWAITING_APPROVAL


def resumable(op: Operation) -> bool:
    return op.status.unfinished and op.status is not OpStatus.AWAITING_APPROVAL


def run_ids(path: Path) -> list[str]:
    """Runbook runs in the audit log that did not go through, newest first."""
    store = _store(path)
    if store is None:
        return []
    runs: dict[str, bool] = {}  # run id → went through
    for event in store.audit_events():
        if event.kind == "run.started" and event.op_id:
            runs[event.op_id] = False
        elif event.kind == "run.finished" and event.op_id in runs:
            runs[event.op_id] = event.payload.get("code") == 0
    return [run for run, through in reversed(runs.items()) if not through]


def _store(path: Path) -> StateStore | None:
    """The inventory's store, read only; None when a sqlite file is not there yet."""
    from killswitch.state import SqliteUrl, open_store, parse_state_url

    state = _document(path).get("state", "sqlite:///./.killswitch/state.db")
    url = parse_state_url(str(state), path.parent)
    if isinstance(url, SqliteUrl):
        from killswitch.state.sqlite import SqliteStore

        return SqliteStore(url.path, read_only=True) if url.path.is_file() else None
    return open_store(url)


def matching(candidates: Iterable[str], incomplete: str) -> list[str]:
    """The candidates that complete ``incomplete``; after an exclude prefix (``not:``,
    ``!``) the candidates are offered with it. A candidate that is not a plain word
    (the file is read before it is validated; a store may be edited) is never offered:
    a line break or an escape would reach the shell."""
    prefix = next((p for p in EXCLUDE_PREFIXES if incomplete.startswith(p)), "")
    rest = incomplete.removeprefix(prefix)
    return [prefix + c for c in candidates if c.startswith(rest) and WORD.fullmatch(c)]


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))
