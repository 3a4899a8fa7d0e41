"""Provider ``partner``: a partner platform that implements docs/partner-api.yaml.

One inventory entry per partner. Every request is signed (HMAC-SHA256 over a
timestamp, the method, the path, the idempotency key and the body's digest);
the secret comes from an environment variable or a file, never from the
inventory itself, and never reaches a log, an error or the audit.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator

from killswitch.contract import Problem
from killswitch.domain import is_valid_name
from killswitch.errors import PermanentError
from killswitch.sdk import ProviderBase, SecretFields

PARTNER_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


class PartnerConfig(SecretFields):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    key_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
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


class PartnerProvider(ProviderBase):
    type: ClassVar[str] = "partner"
    config_model: ClassVar[builtins.type[BaseModel]] = PartnerConfig
    levers: ClassVar[Mapping[str, str]] = {"access-api": "providers.partner.access_api:AccessApi"}
    config: PartnerConfig

    @classmethod
    def check(cls, config: Any, models: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
        problems = cls.unknown_models("models", config.models, models)
        problems += cls.lever_problems(config.mechanisms)
        if config.ca_bundle is not None and not Path(config.ca_bundle).is_file():
            problems.append(Problem(("ca_bundle",), f"no such file: {config.ca_bundle}"))
        return problems

    @property
    def served(self) -> list[str]:
        """The models this partner serves: those its entry maps to partner ids."""
        return list(self.config.models)

    def readiness(self) -> list[str]:
        """The shared secret must be there before a kill needs it."""
        try:
            self.secret()
        except PermanentError as exc:
            return [str(exc)]
        return []

    def secret(self) -> bytes:
        """The shared secret, read when first needed; errors never include it."""
        return self.config.secret.read(f"partner {self.name}")
