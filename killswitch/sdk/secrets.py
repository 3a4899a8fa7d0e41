"""Secret references: an inventory names where a secret lives (an environment variable
or a file), never the secret itself. The value is read when first needed, and neither a
reference's repr nor any error it raises ever includes it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, field_validator, model_validator

from killswitch.errors import PermanentError

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


@dataclass(frozen=True)
class SecretRef:
    """Exactly one of ``env`` (a variable's name) or ``file`` (a path); see ``read``."""

    env: str | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of an environment variable or a file")
        if self.env is not None and not ENV_NAME.fullmatch(self.env):
            raise ValueError("the NAME of an environment variable (A-Z, 0-9, _), not the secret")

    def __str__(self) -> str:
        return f"environment variable {self.env}" if self.env else f"secret_file {self.file}"

    def read(self, owner: str) -> bytes:
        """The secret, stripped; PermanentError naming ``owner`` and the reference (never
        the value) when it is unset, unreadable or empty."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise PermanentError(f"{owner}: environment variable {self.env} is not set")
            return value.encode()
        assert self.file is not None
        try:
            value = Path(self.file).read_text().strip()
        except OSError as exc:
            raise PermanentError(
                f"{owner}: cannot read secret_file {self.file}: {exc.strerror}"
            ) from None
        if not value:
            raise PermanentError(f"{owner}: secret_file {self.file} is empty")
        return value.encode()


class SecretFields(BaseModel):
    """Mix into a provider's config model: ``secret_env`` or ``secret_file`` (exactly one),
    checked when the inventory loads; ``secret`` is the reference."""

    secret_env: str | None = None
    secret_file: str | None = None

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError("the NAME of an environment variable (A-Z, 0-9, _), not the secret")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> SecretFields:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret_env or secret_file (never the secret)")
        return self

    @property
    def secret(self) -> SecretRef:
        return SecretRef(env=self.secret_env, file=self.secret_file)
