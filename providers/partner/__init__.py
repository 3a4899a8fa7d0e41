"""Provider ``partner``: a partner platform that implements docs/partner-api.yaml.

One inventory entry per partner. Every request is signed (HMAC-SHA256 over a
timestamp, the method, the path, the idempotency key and the body's digest);
the secret comes from an environment variable or a file, never from the
inventory itself, and never reaches a log, an error or the audit.
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator, model_validator

from killswitch.contract import Mechanism, Problem
from killswitch.domain import Target, is_valid_name
from killswitch.errors import PermanentError
from providers.base import Levers

MECHANISMS: dict[str, str] = {"access-api": "providers.partner.access_api:AccessApi"}
PARTNER_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


class PartnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    key_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
    secret_env: str | None = None
    secret_file: str | None = None
    regions: list[str] = Field(min_length=1)
    models: dict[str, str] = Field(min_length=1)  # killswitch model → the partner's model id
    mechanisms: list[str] = Field(default_factory=lambda: ["access-api"], min_length=1)
    ca_bundle: str | None = None  # PEM file for a private CA; TLS is always verified
    timeout_seconds: StrictFloat = Field(default=10.0, gt=0, le=300)
    operation_deadline_seconds: StrictFloat = Field(default=120.0, gt=0, le=3600)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        https = re.fullmatch(r"https://[^\s/?#]+(/[^\s?#]*)?", value)
        loopback = re.fullmatch(r"http://(127\.0\.0\.1|localhost)(:\d+)?(/[^\s?#]*)?", value)
        if not (https or loopback):
            raise ValueError("must be an https:// URL (plain http only for 127.0.0.1 or localhost)")
        return value.rstrip("/")

    @field_validator("secret_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError("the NAME of an environment variable (A-Z, 0-9, _), not the secret")
        return value

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        for region in value:
            if not is_valid_name(region):
                raise ValueError(f"region {region!r} must match [a-z0-9._-]")
        if len(set(value)) != len(value):
            raise ValueError("a region is listed twice")
        return value

    @field_validator("models")
    @classmethod
    def _ids(cls, value: dict[str, str]) -> dict[str, str]:
        for partner_id in value.values():
            if not PARTNER_ID.fullmatch(partner_id) or ".." in partner_id:
                raise ValueError(f"partner model id {partner_id!r}: letters, digits and ._:- only")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> PartnerConfig:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret_env or secret_file (never the secret)")
        return self


class PartnerProvider:
    type: ClassVar[str] = "partner"
    config_model: ClassVar[builtins.type[BaseModel]] = PartnerConfig
    mechanism_names: ClassVar[frozenset[str]] = frozenset(MECHANISMS)

    @classmethod
    def check(cls, config: Any, models: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
        problems = [
            Problem(("models", model), f"unknown model {model!r} (not in the inventory's models)")
            for model in config.models
            if model not in models
        ]
        problems += [
            Problem(("mechanisms", i), f"unknown mechanism {name!r} (partner has: access-api)")
            for i, name in enumerate(config.mechanisms)
            if name not in MECHANISMS
        ]
        if config.ca_bundle is not None and not Path(config.ca_bundle).is_file():
            problems.append(Problem(("ca_bundle",), f"no such file: {config.ca_bundle}"))
        return problems

    def __init__(self, name: str, config: Any, models: Mapping[str, Mapping[str, Any]]) -> None:
        self.name = name
        self.config: PartnerConfig = config
        self._levers = Levers(self, MECHANISMS)

    def targets(self) -> list[Target]:
        return [
            Target(self.type, self.name, region, mechanism, model)
            for region in self.config.regions
            for mechanism in self.config.mechanisms
            for model in self.config.models
        ]

    def mechanism(self, name: str) -> Mechanism:
        return self._levers.get(name)

    def call_bound_seconds(self) -> float:
        """A request's connect and read timeouts, end to end."""
        return min(5.0, self.config.timeout_seconds) + self.config.timeout_seconds

    def secret(self) -> bytes:
        """The shared secret, read when first needed; errors never include it."""
        if self.config.secret_env is not None:
            value = os.environ.get(self.config.secret_env)
            if not value:
                raise PermanentError(
                    f"partner {self.name}: environment variable {self.config.secret_env} is not set"
                )
            return value.encode()
        assert self.config.secret_file is not None
        try:
            value = Path(self.config.secret_file).read_text().strip()
        except OSError as exc:
            raise PermanentError(
                f"partner {self.name}: cannot read secret_file {self.config.secret_file}: "
                f"{exc.strerror}"
            ) from None
        if not value:
            raise PermanentError(
                f"partner {self.name}: secret_file {self.config.secret_file} is empty"
            )
        return value.encode()
