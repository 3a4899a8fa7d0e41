"""Provider ``jsonfile``: each model's posture as a flag document in a file,
``<directory>/<region>/<model>.json`` (the format gateways read, docs/flag-format.md),
with a ``version`` that each write moves on, as an SSM parameter's does.

An outside plug-in: it imports only ``killswitch.sdk`` and registers itself through the
``killswitch.providers`` entry point (pyproject.toml)."""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from killswitch.sdk import (
    API_VERSION,
    OPEN,
    Access,
    ApplyContext,
    Observed,
    PermanentError,
    Permission,
    Posture,
    ProviderBase,
    Target,
    Wave,
    flag_document,
    parse_flag,
)


class JsonFileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: str
    regions: list[str] = Field(min_length=1)
    mechanisms: list[str] = Field(default_factory=lambda: ["flag-file"], min_length=1)


class JsonFileProvider(ProviderBase):
    api_version: ClassVar[int] = API_VERSION
    type: ClassVar[str] = "jsonfile"
    config_model: ClassVar[builtins.type[BaseModel]] = JsonFileConfig
    levers: ClassVar[Mapping[str, str]] = {"flag-file": "outside_lever:FlagFile"}
    config: JsonFileConfig


class FlagFile:
    name: ClassVar[str] = "jsonfile.flag-file"
    supports: ClassVar[frozenset[Posture]] = frozenset(Posture)
    wave: ClassVar[int] = Wave.EDGE
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission("read", "{directory}/*/*.json"),
        Permission("write", "{directory}/*/*.json"),
    )

    def __init__(self, provider: JsonFileProvider) -> None:
        self.root = Path(provider.config.directory)

    def path(self, target: Target) -> Path:
        return self.root / target.region / f"{target.model}.json"

    def _read(self, target: Target) -> dict[str, Any] | None:
        try:
            text = self.path(target).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentError(f"{self.path(target)}: {exc.strerror}") from None
        parse_flag(str(self.path(target)), text)  # CorruptFlag unless a flag document
        document: dict[str, Any] = json.loads(text)
        return document

    def observe(self, target: Target) -> Observed:
        document = self._read(target)
        if document is None:
            return Observed(OPEN, "no file")
        access = Access.from_json(document)
        return Observed(access, f"version {document.get('version')}")

    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        held = ctx.observed if ctx.observed is not None else self.observe(target).access
        if held == desired:
            return
        previous = self._read(target) or {}
        document = json.loads(flag_document(target.model, desired, ctx))
        document["version"] = int(previous.get("version", 0)) + 1
        path = self.path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(json.dumps(document, sort_keys=True), encoding="utf-8")
        ctx.fence()  # right before the write lands: a fenced op writes nothing more
        os.replace(staged, path)
