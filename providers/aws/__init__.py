"""Provider ``aws``: one inventory entry per account (profile or role), many regions.

boto3 is imported only when a lever is first used, not when the inventory is
validated or ``--help`` is shown.
"""

from __future__ import annotations

import builtins
import importlib
import re
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from killswitch.contract import Mechanism, Problem
from killswitch.domain import Target, did_you_mean

if TYPE_CHECKING:
    from providers.aws.session import Clients

# name → "module:Class", imported on first use.
MECHANISMS: dict[str, str] = {
    "ssm-flag": "providers.aws.ssm_flag:SsmFlag",
}

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
SSM_PREFIX = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")


class AwsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    regions: list[str] = Field(min_length=1)
    mechanisms: list[str] = Field(min_length=1)
    endpoint_url: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    ssm_prefix: str = "/killswitch/models"

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str | None) -> str | None:
        if value is not None and not ROLE_ARN.fullmatch(value):
            raise ValueError("must be an IAM role ARN, arn:aws:iam::<12 digits>:role/<name>")
        return value

    @field_validator("ssm_prefix")
    @classmethod
    def _ssm_prefix(cls, value: str) -> str:
        if not SSM_PREFIX.fullmatch(value) or ".." in value:
            raise ValueError("must be a parameter path like /killswitch/models (no trailing /)")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError("must be an http(s) URL, e.g. http://127.0.0.1:5000")
        return value


def known_regions() -> set[str]:
    """Every region botocore knows, across partitions (aws, aws-cn, aws-us-gov, …)."""
    import botocore.session

    session = botocore.session.get_session()
    return {
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("ssm", partition_name=partition)
    }


class AwsProvider:
    type: ClassVar[str] = "aws"
    config_model: ClassVar[builtins.type[BaseModel]] = AwsConfig
    mechanism_names: ClassVar[frozenset[str]] = frozenset(MECHANISMS)

    @classmethod
    def check(cls, config: Any, models: Sequence[str]) -> list[Problem]:
        problems = []
        for i, name in enumerate(config.mechanisms):
            if name not in MECHANISMS:
                problems.append(
                    Problem(
                        ("mechanisms", i),
                        f"unknown mechanism {name!r} (aws has: {', '.join(sorted(MECHANISMS))})",
                    )
                )
        regions = known_regions()
        seen: set[str] = set()
        for i, region in enumerate(config.regions):
            if region in seen:
                problems.append(Problem(("regions", i), f"region {region!r} listed twice"))
            seen.add(region)
            if region not in regions:
                suggestion = did_you_mean(region, regions)
                problems.append(
                    Problem(("regions", i), f"unknown AWS region {region!r}{suggestion}")
                )
        return problems

    def __init__(self, name: str, config: Any, models: Mapping[str, Mapping[str, Any]]) -> None:
        self.name = name
        self.config: AwsConfig = config
        self.models = models
        self._mechanisms: dict[str, Mechanism] = {}
        self._clients: Clients | None = None
        self._lock = threading.RLock()  # fan-out threads build levers and clients on first use

    @property
    def clients(self) -> Clients:
        with self._lock:
            if self._clients is None:
                from providers.aws.session import Clients

                self._clients = Clients(
                    profile=self.config.profile,
                    role_arn=self.config.role_arn,
                    endpoint_url=self.config.endpoint_url,
                )
            return self._clients

    def targets(self) -> list[Target]:
        return [
            Target(self.type, self.name, region, mechanism, model)
            for region in self.config.regions
            for mechanism in self.config.mechanisms
            for model in self.models
        ]

    def mechanism(self, name: str) -> Mechanism:
        with self._lock:
            if name not in self._mechanisms:
                module, _, attr = MECHANISMS[name].partition(":")
                self._mechanisms[name] = getattr(importlib.import_module(module), attr)(self)
            return self._mechanisms[name]
