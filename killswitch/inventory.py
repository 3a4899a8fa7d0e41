"""Load and validate ``killswitch.yaml``; every error names file, line and field."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from killswitch import registry, yamlsrc
from killswitch.contract import Provider
from killswitch.domain import is_valid_name
from killswitch.errors import InventoryError

if TYPE_CHECKING:
    from killswitch.state import StateUrl

DEFAULT_PATH = "killswitch.yaml"
ENV_VAR = "KILLSWITCH_INVENTORY"

Loc = tuple[str | int, ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScopeSpec(_Strict):
    """A named selector: the same words as the command-line flags."""

    models: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    providers: list[str] = Field(default_factory=list)
    targets: list[str] = Field(default_factory=list)


class RestorePolicy(_Strict):
    """Who may re-open, and how (docs/reliability.md, "Who may re-open")."""

    approvals: StrictInt = Field(default=2, ge=1, le=10)
    # Principals whose approval counts, the requester's own included (empty: anyone,
    # each person once). Compared in their normalised form (killswitch/identity.py).
    approvers: list[str] = Field(default_factory=list, max_length=200)
    # An OpenSSH allowed_signers file (as git uses): which key speaks for which principal.
    # Relative to the inventory file.
    allowed_signers: str | None = Field(default=None, min_length=1, max_length=4096)
    # With signed: true, an approval without a valid signature counts for nothing.
    signed: StrictBool = False
    # An unapproved restore request ends (expired) this long after it was made:
    # seconds, or a duration such as 90m, 4h, 2d.
    expires_after: float = Field(default=4 * 3600.0, gt=0, le=30 * 86400)

    @field_validator("expires_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _signed_needs_signers(self) -> RestorePolicy:
        if self.signed and self.allowed_signers is None:
            raise ValueError(
                "signed: true needs allowed_signers (the OpenSSH allowed_signers file)"
            )
        return self


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """``90``, ``90s``, ``30m``, ``4h``, ``2d`` → seconds; anything else is left for the
    field's own type check to refuse (no bool, no float-looking string)."""
    if isinstance(value, bool):
        raise ValueError("a duration, e.g. 4h or 14400, not a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,7})\s*([smhd])\s*", value)
        if match:
            return float(int(match[1]) * DURATION_UNITS[match[2]])
        raise ValueError(f"{value!r} is not a duration: write e.g. 90m, 4h, 2d or seconds")
    raise ValueError("a duration, e.g. 4h or 14400")


class AuditPolicy(_Strict):
    # Where the engine writes a checkpoint of the audit chain's head after every op:
    # file:///path (append-only file) or s3://bucket/prefix?region=…[&endpoint_url=…]
    # (a bucket with Object Lock). None: no automatic anchoring.
    anchor: str | None = Field(default=None, min_length=1, max_length=2048)

    @field_validator("anchor")
    @classmethod
    def _anchor_url(cls, value: str | None) -> str | None:
        from killswitch.anchor import check_anchor_url
        from killswitch.errors import UsageError

        if value is not None:
            try:
                check_anchor_url(value)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return value


class RetryPolicy(_Strict):
    attempts: StrictInt = Field(default=5, ge=1, le=20)
    max_seconds: StrictFloat = Field(default=60.0, gt=0, le=3600)
    base_seconds: StrictFloat = Field(default=0.2, gt=0, le=60)


class ConcurrencyPolicy(_Strict):
    total: StrictInt = Field(default=32, ge=1, le=512)
    per_region: StrictInt = Field(default=8, ge=1, le=128)


class LockPolicy(_Strict):
    ttl_seconds: StrictFloat = Field(default=60.0, ge=1, le=3600)
    # The holder renews its lease this often; one whose beat stops for 3 beats is dead.
    heartbeat_seconds: StrictFloat = Field(default=2.0, ge=0.1, le=60)
    # How long a revoke or restrict waits for another tightening op to finish.
    wait_seconds: StrictFloat = Field(default=30.0, ge=0, le=3600)


class PolicySpec(_Strict):
    restore: RestorePolicy = Field(default_factory=RestorePolicy)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    concurrency: ConcurrencyPolicy = Field(default_factory=ConcurrencyPolicy)
    lock: LockPolicy = Field(default_factory=LockPolicy)
    audit: AuditPolicy = Field(default_factory=AuditPolicy)
    # An op stops starting new provider calls after this long; the rest fail and resume.
    deadline_seconds: StrictFloat = Field(default=900.0, gt=0, le=86400)
    # Worker processes that make a large fan-out's provider calls (killswitch/workers.py):
    # "auto" (on for a large plan when cores are free), or how many (0: threads only).
    workers: Literal["auto"] | Annotated[int, Field(ge=0, le=64)] = "auto"


class CallerSpec(_Strict):
    """One kind of caller a probe acts as: who it is to the gateway (its audiences), and
    where its credential comes from (an environment variable holding a bearer token;
    none: an anonymous caller). The token is a secret: it is never printed."""

    audience: list[str] = Field(default_factory=list, max_length=16)
    token_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")


class ProbeSpec(_Strict):
    """A serving endpoint that proves a posture by its effect: after an op is applied and
    read back, each caller kind asks it for the model and must be served or refused as
    the posture says (docs/probes.md). Read-only requests, only to this URL."""

    url: str = Field(min_length=8, max_length=2048)  # {model} stands for the model's name
    method: Literal["GET", "HEAD", "POST"] = "GET"
    # Which targets' effect it proves: the selector words, as in a scope.
    targets: ScopeSpec = Field(default_factory=ScopeSpec)
    callers: dict[str, CallerSpec] = Field(min_length=1, max_length=16)
    refused: list[StrictInt] = Field(default_factory=lambda: [401, 403, 451], min_length=1)
    timeout_seconds: StrictFloat = Field(default=2.0, gt=0, le=60)
    every_seconds: StrictFloat = Field(default=0.5, gt=0, le=60)  # between two tries

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        from urllib.parse import urlsplit

        if "{model}" in urlsplit(value).netloc:
            raise ValueError("{model} goes in a probe url's path, never in its host")
        parts = urlsplit(value.replace("{model}", "model"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a probe url is http(s)://HOST[:PORT]/path, {model} for the model")
        if parts.username or parts.password:
            raise ValueError("no credentials in a probe url: give a caller a token_env")
        return value


NotifyEvent = Literal["drift", "op"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("drift", "op")


class NotifySpec(_Strict):
    """Where to post Slack-compatible messages. The webhook URL is a secret: name the
    environment variable or the file that holds it, never the URL itself."""

    webhook_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")
    webhook_file: str | None = None
    on: list[NotifyEvent] = Field(default_factory=lambda: list(NOTIFY_EVENTS))

    @model_validator(mode="after")
    def _one_source(self) -> NotifySpec:
        if (self.webhook_env is None) == (self.webhook_file is None):
            raise ValueError("give exactly one of webhook_env or webhook_file")
        return self

    def url(self) -> str | None:
        """The webhook URL, or None when its variable or file is empty or missing."""
        if self.webhook_env is not None:
            return os.environ.get(self.webhook_env) or None
        try:
            return Path(str(self.webhook_file)).read_text().strip() or None
        except OSError:
            return None


class ProviderEntry(BaseModel):
    """Only ``type`` is checked here; the provider's own model checks the rest."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


class InventorySpec(_Strict):
    version: StrictInt
    state: str = "sqlite:///./.killswitch/state.db"
    models: dict[str, dict[str, Any]]
    providers: dict[str, ProviderEntry]
    scopes: dict[str, ScopeSpec] = Field(default_factory=dict)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    notify: NotifySpec | None = None
    probes: dict[str, ProbeSpec] = Field(default_factory=dict, max_length=256)

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"version {value} is unknown; this killswitch reads version: 1")
        return value

    @field_validator("models")
    @classmethod
    def _models_not_empty(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not value:
            raise ValueError("name at least one model")
        return value

    @field_validator("state")
    @classmethod
    def _state_url(cls, value: str) -> str:
        from killswitch.state import SUPPORTED, check_sqlite_url, parse_dynamodb_url

        if value.startswith("dynamodb://"):
            return str(parse_dynamodb_url(value))  # raises ValueError saying what is wrong
        if not value.startswith("sqlite:///"):
            raise ValueError(SUPPORTED)
        check_sqlite_url(value)  # raises ValueError saying what is wrong
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _null_model_is_empty(cls, value: Any) -> Any:
        # `mythos-5:` with nothing after it is a model with no provider-specific ids.
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value


@dataclass
class Inventory:
    """A validated inventory; providers are built on first use."""

    path: Path
    spec: InventorySpec
    provider_configs: dict[str, Any]
    _providers: dict[str, Provider] = field(default_factory=dict)
    _state: StateUrl | None = None

    @property
    def models(self) -> list[str]:
        return list(self.spec.models)

    @property
    def provider_names(self) -> list[str]:
        return list(self.spec.providers)

    @property
    def state(self) -> StateUrl:
        """The state URL, parsed once; a relative sqlite path is relative to the
        inventory's folder."""
        if self._state is None:
            from killswitch.state import parse_state_url

            self._state = parse_state_url(self.spec.state, self.path.parent)
        return self._state

    @property
    def state_url(self) -> str:
        return str(self.state)

    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            entry = self.spec.providers[name]
            cls = registry.load(entry.type)
            self._providers[name] = cls(name, self.provider_configs[name], self.spec.models)
        return self._providers[name]


def resolve_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load(path: Path) -> Inventory:
    """Read, parse and validate ``path``; raise InventoryError listing every problem."""
    source, unreadable = yamlsrc.read(path, f" (use --inventory PATH or set {ENV_VAR})")
    if source is None:
        raise InventoryError(unreadable)
    raw, at = source.data, source.at
    if not isinstance(raw, dict):
        raise InventoryError([f"{path}:1: the inventory must be a mapping (version, models, …)"])

    try:
        spec = InventorySpec.model_validate(raw)
    except ValidationError as exc:
        raise InventoryError([at(tuple(e["loc"]), e["msg"]) for e in exc.errors()]) from None

    problems: list[str] = []
    provider_configs: dict[str, Any] = {}
    for kind, names in (("model", spec.models), ("provider", spec.providers)):
        problems += [
            at((kind + "s", n), f"{kind} name must match [a-z0-9._-], 1-63 characters")
            for n in names
            if not is_valid_name(n)
        ]
    known_types = registry.provider_types()
    for name, entry in spec.providers.items():
        if entry.type not in known_types:
            problems.append(
                at(
                    ("providers", name, "type"),
                    f"unknown provider type {entry.type!r} (known: {', '.join(known_types)})",
                )
            )
            continue
        try:
            cls = registry.load(entry.type)
        except registry.PluginRefused as exc:
            problems.append(at(("providers", name, "type"), str(exc)))
            continue
        body = entry.model_dump(exclude={"type"})
        try:
            config = cls.config_model.model_validate(body)
        except ValidationError as exc:
            problems += [at(("providers", name, *e["loc"]), e["msg"]) for e in exc.errors()]
            continue
        problems += [
            at(p.loc if p.absolute else ("providers", name, *p.loc), p.message)
            for p in cls.check(config, spec.models)
        ]
        provider_configs[name] = config
    problems += _check_scopes(spec, at)
    inventory = Inventory(path=path, spec=spec, provider_configs=provider_configs)
    from killswitch.state import SqliteUrl, sqlite_file_problem

    if isinstance(inventory.state, SqliteUrl):
        problem = sqlite_file_problem(inventory.state.path)
        if problem is not None:
            problems.append(at(("state",), problem))
    if problems:
        raise InventoryError(problems)
    _resolve_scopes(inventory, at)
    return inventory


def _resolve_scopes(inventory: Inventory, at: Any) -> None:
    """Each scope must name real regions and targets and pick something."""
    from killswitch.errors import UsageError
    from killswitch.selectors import Selector, resolve

    problems = []
    for name in inventory.spec.scopes:
        try:
            resolve(inventory, Selector(scope=name))
        except UsageError as exc:
            message = str(exc).replace(f"selector --scope {name} ", "")
            problems.append(at(("scopes", name), message))
    if problems:
        raise InventoryError(problems)


def _check_scopes(spec: InventorySpec, at: Any) -> list[str]:
    problems = []
    for scope_name, scope in spec.scopes.items():
        for i, model in enumerate(scope.models):
            if model not in spec.models and not _is_pattern(model):
                problems.append(at(("scopes", scope_name, "models", i), f"unknown model {model!r}"))
        types = {entry.type for entry in spec.providers.values()}
        for i, provider in enumerate(scope.providers):
            if (
                provider not in spec.providers
                and provider not in types
                and not _is_pattern(provider)
            ):
                problems.append(
                    at(("scopes", scope_name, "providers", i), f"unknown provider {provider!r}")
                )
    return problems


def _is_pattern(value: str) -> bool:
    from killswitch.selectors import excluded

    return value == "all" or excluded(value) is not None or any(c in value for c in "*?[")
