"""YAML files read for people: every problem names the file, the line and the field.

Every file is bounded before it is built: its size, how deep it nests, and how many
nodes it holds once aliases are expanded (an alias "bomb" of a few hundred bytes
would otherwise expand to billions). What breaks a bound is refused with its line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

Loc = tuple[str | int, ...]

MAX_BYTES = 1_000_000
MAX_DEPTH = 40
MAX_NODES = 50_000  # with every alias expanded


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
        if not path.is_file():
            if not path.exists():
                return None, [f"{path}: no such file{missing_hint}"]
            return None, [f"{path}: not a regular file"]
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            return None, [f"{path}: larger than {MAX_BYTES:,} bytes; refused"]
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{path}: cannot read: {exc}"]
    try:
        too_deep = _too_deep(path, text)
        if too_deep:
            return None, [too_deep]
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        too_big = _too_big(path, node)
        if too_big:
            return None, [too_big]
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


def _too_deep(path: Path, text: str) -> str | None:
    """Nesting, measured on the event stream (no recursion, nothing built yet)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 1
                return f"{path}:{line}: nested more than {MAX_DEPTH} levels deep; refused"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _too_big(path: Path, root: yaml.Node | None) -> str | None:
    """The node count with aliases expanded, each shared node counted once per use but
    computed once; a node that contains itself is refused too."""
    sizes: dict[int, int] = {}
    building: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in building:  # an alias to one of its own parents
            return MAX_NODES + 1
        building.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > MAX_NODES:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
                if total > MAX_NODES:
                    break
        building.discard(key)
        sizes[key] = total
        return total

    if root is not None and size(root) > MAX_NODES:
        line = root.start_mark.line + 1
        return (
            f"{path}:{line}: more than {MAX_NODES:,} values once its aliases are expanded "
            "(an alias bomb?); refused"
        )
    return None


def _duplicate_keys(node: yaml.Node | None) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else repr(key.value)
            if name in seen:
                found.append((str(name), key.start_mark.line + 1))
            seen.add(name)
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
