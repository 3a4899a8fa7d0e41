"""Provider registry: an explicit entry-point map, loaded only when a provider is used.

Nothing registers itself as an import side effect. ``killswitch --help`` never
reaches this module's ``load``, so it never imports boto3 or kubernetes.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import cast

from killswitch.contract import Provider

GROUP = "killswitch.providers"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def provider_types() -> list[str]:
    return sorted(_entry_points())


@cache
def load(provider_type: str) -> type[Provider]:
    """The provider class for ``provider_type``; KeyError when none is registered."""
    return cast(type[Provider], _entry_points()[provider_type].load())
