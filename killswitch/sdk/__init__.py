"""What a lever author needs, in one import (docs/sdk.md).

    from killswitch.sdk import ProviderBase, Wave, Permission, Posture, ...

A provider is a ``ProviderBase`` subclass registered under the ``killswitch.providers``
entry-point group (API version ``API_VERSION``); each lever is a class with ``name``,
``supports``, ``wave``, ``permissions``, ``observe`` and ``apply``. The registry checks
both when the inventory first names the type; ``killswitch.testing`` proves a lever
keeps the contract against its real (or simulated) server. Nothing here imports a cloud
SDK, so a plug-in costs ``killswitch --help`` nothing.
"""

from killswitch.contract import (
    ApplyContext,
    Grouped,
    Mechanism,
    Permission,
    Preflight,
    Problem,
    Provider,
    time_left,
)
from killswitch.domain import OPEN, Access, Observed, Posture, Target
from killswitch.errors import PermanentError, ProviderError, RetryableError
from killswitch.sdk.flag import FLAG_SCHEMA, CorruptFlag, flag_document, parse_flag
from killswitch.sdk.levers import Levers, Wave, lever_class, within
from killswitch.sdk.provider import API_VERSION, SUPPORTED_API_VERSIONS, ProviderBase
from killswitch.sdk.ratelimit import TokenBucket
from killswitch.sdk.secrets import SecretFields, SecretRef

GROUP = "killswitch.providers"  # the entry-point group; its API version is API_VERSION

__all__ = [
    "API_VERSION",
    "FLAG_SCHEMA",
    "GROUP",
    "OPEN",
    "SUPPORTED_API_VERSIONS",
    "Access",
    "ApplyContext",
    "CorruptFlag",
    "Grouped",
    "Levers",
    "Mechanism",
    "Observed",
    "PermanentError",
    "Permission",
    "Posture",
    "Preflight",
    "Problem",
    "Provider",
    "ProviderBase",
    "ProviderError",
    "RetryableError",
    "SecretFields",
    "SecretRef",
    "Target",
    "TokenBucket",
    "Wave",
    "flag_document",
    "lever_class",
    "parse_flag",
    "time_left",
    "within",
]
