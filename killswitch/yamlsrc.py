"""YAML files read for people: every problem names the file, the line and the field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Source:
    """A parsed YAML file and where each of its paths stands."""

    path: Path
    data: Any
    lines: Mapping[Loc, int]

    def at(self, loc: Loc, message: str) -> str:
        """``file:line: field.path: message`` (a missing field points at its parent)."""
        field = ".".join(map(str, loc)) or "(top)"
        return f"{self.path}:{_line_for(self.lines, loc)}: {field}: {message}"

    def errors(self, exc: ValidationError, prefix: Loc = ()) -> list[str]:
        return [self.at((*prefix, *e["loc"]), e["msg"]) for e in exc.errors()]


def read(path: Path, missing_hint: str = "") -> tuple[Source | None, list[str]]:
    """Parse ``path``; (source, []) or (None, problems). Keys given twice are problems:
    YAML would keep the last one silently."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [f"{path}: no such file{missing_hint}"]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{path}: cannot read: {exc}"]
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [f"{where}: not valid YAML: {problem}"]
    duplicates = _duplicate_keys(node)
    if duplicates:
        return None, [f"{path}:{line}: {key}: given twice" for key, line in duplicates]
    return Source(path, data, _line_index(node)), []


def _duplicate_keys(node: yaml.Node | None) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                found.append((str(key.value), key.start_mark.line + 1))
            seen.add(key.value)
            found += _duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += _duplicate_keys(item)
    return found


def _line_index(node: yaml.Node | None) -> dict[Loc, int]:
    """Map each path in the document to its 1-based line."""
    index: dict[Loc, int] = {}

    def walk(n: yaml.Node, loc: Loc) -> None:
        index[loc] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                child = (*loc, key.value)
                walk(value, child)
                index[child] = key.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*loc, i))

    if node is not None:
        walk(node, ())
    return index


def _line_for(lines: Mapping[Loc, int], loc: Loc) -> int:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return 1
