"""Provider registry: an explicit entry-point map, loaded only when a provider is used.

Nothing registers itself as an import side effect. ``killswitch --help`` never
reaches this module's ``load``, so it never imports boto3 or kubernetes.

A plug-in is checked when it loads (``problems``): it targets an API version this
killswitch speaks, implements ``contract.Provider``, names the type it is registered
under, and each lever its ``levers`` table names declares what it can express
(``supports``) and what it needs (``permissions``). A plug-in that fails is refused
with a usage error naming the entry point and what is missing, never a traceback.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

from pydantic import BaseModel

from killswitch.contract import Permission, Provider
from killswitch.domain import Posture
from killswitch.errors import UsageError
from killswitch.sdk import GROUP, SUPPORTED_API_VERSIONS, lever_class

PROVIDER_METHODS = ("check", "targets", "mechanism")
LEVER_METHODS = ("observe", "apply")


class PluginRefused(UsageError):
    """A provider plug-in that does not keep the contract; nothing was changed."""

    def __init__(self, entry_point: str, problems: list[str]) -> None:
        self.entry_point = entry_point
        self.problems = problems
        super().__init__(f"provider plug-in {entry_point} refused: " + "; ".join(problems))


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def provider_types() -> list[str]:
    return sorted(_entry_points())


@cache
def load(provider_type: str) -> type[Provider]:
    """The provider class for ``provider_type``, checked; KeyError when none is
    registered, PluginRefused when it cannot be imported or breaks the contract."""
    entry = _entry_points()[provider_type]
    where = f"{entry.name} = {entry.value!r}"
    try:
        found = entry.load()
    except Exception as exc:
        raise PluginRefused(where, [f"cannot be imported: {type(exc).__name__}: {exc}"]) from None
    problems = check_provider(found, entry.name)
    if problems:
        raise PluginRefused(where, problems)
    return cast(type[Provider], found)


def check_provider(cls: Any, registered_as: str) -> list[str]:
    """What ``cls`` lacks to be the provider registered as ``registered_as`` (empty: it
    keeps the contract as far as can be told without calling anything)."""
    if not inspect.isclass(cls):
        return [f"{cls!r} is not a class"]
    version = getattr(cls, "api_version", 1)  # before the SDK, every provider spoke v1
    if version not in SUPPORTED_API_VERSIONS:
        speaks = ", ".join(str(v) for v in sorted(SUPPORTED_API_VERSIONS))
        return [f"targets API version {version!r}; this killswitch speaks {speaks}"]
    problems = []
    if registered_as == "not":  # `--target not:…` excludes (killswitch/selectors.py)
        problems.append("the type name 'not' is reserved: `not:` starts a selector's exclusion")
    declared = getattr(cls, "type", None)
    if declared != registered_as:
        problems.append(f"declares type {declared!r}, but is registered as {registered_as!r}")
    model = getattr(cls, "config_model", None)
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        problems.append("config_model is not a pydantic model")
    names = getattr(cls, "mechanism_names", None)
    if not names or not isinstance(names, frozenset | set):
        problems.append("mechanism_names names no lever")
    problems += [
        f"has no method {method}()"
        for method in PROVIDER_METHODS
        if not callable(getattr(cls, method, None))
    ]
    table = getattr(cls, "levers", None)
    if isinstance(table, Mapping):
        for lever, path in table.items():
            problems += [f"lever {lever!r}: {p}" for p in check_lever(path)]
    return problems


def check_lever(path: str) -> list[str]:
    """What the lever class at ``path`` ("module:Class") lacks to be a ``Mechanism``."""
    try:
        cls: Any = lever_class(path)
    except Exception as exc:
        return [f"{path} cannot be imported: {type(exc).__name__}: {exc}"]
    problems = []
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        problems.append("declares no name")
    supports = getattr(cls, "supports", None)
    if not supports or not isinstance(supports, frozenset | set):
        problems.append("declares no postures it supports (supports)")
    elif not all(isinstance(p, Posture) for p in supports):
        problems.append(f"supports {sorted(map(str, supports))}: not all are postures")
    if not isinstance(getattr(cls, "wave", None), int):
        problems.append("declares no wave")
    permissions = getattr(cls, "permissions", None)
    if not permissions or not all(isinstance(p, Permission) for p in permissions):
        problems.append("declares no permissions")
    problems += [
        f"has no method {method}()"
        for method in LEVER_METHODS
        if not callable(getattr(cls, method, None))
    ]
    return problems
