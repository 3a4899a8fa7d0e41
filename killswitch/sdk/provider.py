"""``ProviderBase``: the part of a provider every one of them wrote again (its name,
config and models, the targets region x lever x model, levers built on first use, the
check that each listed lever exists, a generic least-privilege listing, the call bound).
A provider says only what is its own: ``type``, ``config_model``, ``levers`` and, where
it differs, which regions and models it covers."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from killswitch.contract import Mechanism, Problem
from killswitch.domain import Target, is_valid_name
from killswitch.sdk.levers import Levers

API_VERSION = 1  # what the `killswitch.providers` entry-point group promises (docs/sdk.md)
SUPPORTED_API_VERSIONS = frozenset({1})
DEFAULT_TIMEOUT_SECONDS = 10.0


class ProviderBase:
    """A ``contract.Provider`` from four class attributes. The config model may have
    ``regions`` (list), ``mechanisms`` (the levers this entry pulls; default: all) and
    ``timeout_seconds``; override ``regions`` or ``served`` when the entry says them
    differently."""

    api_version: ClassVar[int] = API_VERSION
    type: ClassVar[str]
    config_model: ClassVar[builtins.type[BaseModel]]
    levers: ClassVar[Mapping[str, str]] = {}  # lever name → "module:Class"
    mechanism_names: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "levers" in cls.__dict__:
            cls.mechanism_names = frozenset(cls.levers)

    # -- checks beyond the config's schema -------------------------------------------
    @classmethod
    def check(cls, config: Any, models: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
        """Each listed lever exists and is listed once, each region is a name a target id
        can carry, once; extend for more."""
        listed = getattr(config, "mechanisms", None)
        problems = [] if listed is None else cls.lever_problems(listed)
        return problems + cls.region_problems(getattr(config, "regions", None) or [])

    @staticmethod
    def region_problems(regions: Iterable[str]) -> list[Problem]:
        problems: list[Problem] = []
        seen: set[str] = set()
        for i, region in enumerate(regions):
            if not is_valid_name(region):
                problems.append(
                    Problem(("regions", i), f"region {region!r} must match [a-z0-9._-]")
                )
            elif region in seen:
                problems.append(Problem(("regions", i), f"region {region!r} listed twice"))
            seen.add(region)
        return problems

    @classmethod
    def lever_problems(cls, listed: Iterable[str]) -> list[Problem]:
        problems: list[Problem] = []
        seen: set[str] = set()
        for i, name in enumerate(listed):
            if name not in cls.mechanism_names:
                known = ", ".join(sorted(cls.mechanism_names))
                problems.append(
                    Problem(
                        ("mechanisms", i), f"unknown mechanism {name!r} ({cls.type} has: {known})"
                    )
                )
            elif name in seen:
                problems.append(Problem(("mechanisms", i), f"mechanism {name!r} listed twice"))
            seen.add(name)
        return problems

    @staticmethod
    def unknown_models(
        loc: str, listed: Iterable[str], models: Mapping[str, Mapping[str, Any]]
    ) -> list[Problem]:
        """A problem for each model in ``listed`` the inventory does not define; ``loc`` is
        the entry's key that lists them (items located by key, or by index for a list)."""
        problems = []
        for i, model in enumerate(listed):
            if model not in models:
                where: str | int = model if not isinstance(listed, list) else i
                problems.append(
                    Problem(
                        (loc, where), f"unknown model {model!r} (not in the inventory's models)"
                    )
                )
        return problems

    # -- one entry of the inventory ----------------------------------------------------
    def __init__(self, name: str, config: Any, models: Mapping[str, Mapping[str, Any]]) -> None:
        self.name = name
        self.config = config
        self.models = models
        self._levers = Levers(self, self.levers)

    def regions(self) -> list[str]:
        return list(self.config.regions)

    @property
    def served(self) -> list[str]:
        """The models this entry covers; default: every model of the inventory."""
        return list(self.models)

    @property
    def enabled(self) -> list[str]:
        """The levers this entry pulls: its ``mechanisms``, or every lever."""
        return list(getattr(self.config, "mechanisms", None) or sorted(self.levers))

    def targets(self) -> list[Target]:
        return [
            Target(self.type, self.name, region, lever, model)
            for region in self.regions()
            for lever in self.enabled
            for model in self.served
        ]

    def mechanism(self, name: str) -> Mechanism:
        return self._levers.get(name)

    def least_privilege(self) -> dict[str, Any]:
        """What each pulled lever may do, as it declares it (JSON); a provider with a
        native policy format (IAM, RBAC) overrides this."""
        return {
            "provider": self.name,
            "type": self.type,
            "permissions": [
                {"lever": lever, "action": p.action, "resource": p.resource}
                for lever in self.enabled
                for p in self.mechanism(lever).permissions
            ],
        }

    def call_bound_seconds(self) -> float:
        """A request's connect (at most 5 s) and read timeouts, end to end."""
        read = float(getattr(self.config, "timeout_seconds", DEFAULT_TIMEOUT_SECONDS))
        return min(5.0, read) + read
