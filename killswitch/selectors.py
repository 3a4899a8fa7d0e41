"""Selector → targets. Names, globs, ``all`` and excludes; unknown names are errors.

An exclude is ``!glob``, or ``not:glob``: the same, spelled so that bash leaves it be
(``!`` starts a history expansion there unless quoted). No name or target id holds a
``:`` before its provider type's, and no provider type is called ``not``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from killswitch.domain import Target, did_you_mean
from killswitch.errors import UsageError

if TYPE_CHECKING:
    from killswitch.inventory import Inventory, ScopeSpec


@dataclass(frozen=True)
class Selector:
    models: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    scope: str | None = None

    @property
    def names_models(self) -> bool:
        """Whether it says which models: acting commands require it (``--model all`` is fine);
        ``--region eu-west-1`` alone must not quietly mean every model there."""
        return bool(self.models or self.targets or self.scope)

    def describe(self) -> str:
        parts = [f"--scope {self.scope}"] if self.scope else []
        for flag, values in (
            ("--model", self.models),
            ("--region", self.regions),
            ("--provider", self.providers),
            ("--target", self.targets),
        ):
            parts += [f"{flag} {v}" for v in values]
        return " ".join(parts) or "(everything)"


EXCLUDE_PREFIXES = ("!", "not:")


def excluded(value: str) -> str | None:
    """The glob ``value`` excludes (``!us-*`` and ``not:us-*`` both exclude ``us-*``), or
    None when it picks."""
    for prefix in EXCLUDE_PREFIXES:
        if value.startswith(prefix):
            return value.removeprefix(prefix)
    return None


def _is_pattern(value: str) -> bool:
    return any(c in value for c in "*?[")


def _pick(
    flag: str,
    patterns: Sequence[str],
    known: Iterable[str],
    aliases: dict[str, set[str]] | None = None,
) -> set[str]:
    """The subset of ``known`` that ``patterns`` select; unknown literal names are errors."""
    known_set = set(known)
    aliases = aliases or {}
    # `all` means everything, even beside names (`-m all -m mythos-5`).
    includes = [] if "all" in patterns else [p for p in patterns if excluded(p) is None]
    excludes = [x for p in patterns if (x := excluded(p)) is not None]
    named = [p if (x := excluded(p)) is None else x for p in patterns if p != "all"]
    for pattern in named:
        if not pattern:
            raise UsageError(f"{flag}: empty value")
        if _is_pattern(pattern) or pattern in known_set or pattern in aliases:
            continue
        suggestion = did_you_mean(pattern, known_set | set(aliases))
        raise UsageError(
            f"{flag} {pattern}: unknown{suggestion}; known: {', '.join(sorted(known_set))}"
        )

    def matches(value: str, pattern: str) -> bool:
        return fnmatchcase(value, pattern) or value in aliases.get(pattern, set())

    chosen = {v for v in known_set if not includes or any(matches(v, p) for p in includes)}
    return {v for v in chosen if not any(matches(v, p) for p in excludes)}


def all_targets(inventory: Inventory) -> list[Target]:
    return [t for name in inventory.provider_names for t in inventory.provider(name).targets()]


def resolve(inventory: Inventory, selector: Selector) -> list[Target]:
    """The targets ``selector`` picks, in a stable order; an empty pick is an error."""
    universe = all_targets(inventory)
    targets = universe
    if selector.scope is not None:
        if selector.scope not in inventory.spec.scopes:
            known = ", ".join(sorted(inventory.spec.scopes)) or "none defined"
            raise UsageError(f"--scope {selector.scope}: unknown scope (known: {known})")
        scope = inventory.spec.scopes[selector.scope]
        targets = _filter(inventory, universe, targets, scope)
    targets = _filter(inventory, universe, targets, selector)
    if not targets:
        raise UsageError(f"selector {selector.describe()} matched no targets")
    return sorted(targets, key=lambda t: t.id)


def _filter(
    inventory: Inventory,
    universe: list[Target],
    targets: list[Target],
    picks: Selector | ScopeSpec,
) -> list[Target]:
    """Keep the targets that every flag of ``picks`` selects; names are checked against all."""
    provider_types: dict[str, set[str]] = {}
    for t in universe:
        provider_types.setdefault(t.provider_type, set()).add(t.provider)
    keep_models = _pick("--model", picks.models, inventory.models)
    keep_regions = _pick("--region", picks.regions, {t.region for t in universe})
    keep_providers = _pick("--provider", picks.providers, inventory.provider_names, provider_types)
    keep_ids = _pick("--target", picks.targets, {t.id for t in universe})
    return [
        t
        for t in targets
        if t.model in keep_models
        and t.region in keep_regions
        and t.provider in keep_providers
        and t.id in keep_ids
    ]
