"""The ``aws`` inventory entry and the per-model ``aws:`` section, validated offline."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from killswitch.contract import Problem
from killswitch.domain import did_you_mean, is_valid_name
from providers.aws.bedrock_access import ModelPaths
from providers.aws.ratelimit import DEFAULTS

ACCOUNT_ID = re.compile(r"^\d{12}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}|\{account\}):role/[\w+=,.@/-]{1,512}$")
SSM_PREFIX = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")
IAM_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
LISTENER_ARN = re.compile(
    r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:\d{12}:listener/app/[\w-]+/[0-9a-f]+/[0-9a-f]+$"
)
BEDROCK_ID = re.compile(r"^[a-z0-9-]+\.[A-Za-z0-9._:-]{1,200}$")
ROUTE_PATH = re.compile(r"^/[A-Za-z0-9._~/*?-]{0,127}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,40}$")
RESOURCE_ID = re.compile(r"^[a-z0-9]{1,64}$")
# Per model: the deny policy must stay within IAM's 6,144 characters for every region
# and 16 audiences (tests/unit/test_aws_deny_document.py).
MAX_IDS = 4
MAX_BUILT_ON = 2

# The service each lever talks to: `regions: all` means every region where all of them exist.
SERVICES = {"ssm-flag": "ssm", "iam-deny": "bedrock", "scp-deny": "bedrock", "elb-rule": "elbv2"}
# What an SCP attaches to: a root, an organizational unit or an account.
SCP_TARGET = re.compile(r"^(r-[0-9a-z]{4,32}|ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}|\d{12})$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccountSpec(_Strict):
    id: str
    role_arn: str | None = None  # overrides the entry's role_arn template

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ACCOUNT_ID.fullmatch(value):
            raise ValueError("account id must be 12 digits (quote it in YAML)")
        return value

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        return _role_arn(value)


class IamSpec(_Strict):
    roles: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    # Service roles of Bedrock agents that use the model: an agent invokes it as its role.
    agent_roles: list[str] = Field(default_factory=list)
    # A restrict when a caller role's trust policy lets a session set the audience tag:
    # refuse those targets (default), or only warn (the operator accepts the risk).
    session_tags: Literal["refuse", "warn"] = "refuse"
    # Opt-in: the read-back also asks AWS (iam:SimulatePrincipalPolicy) whether anything
    # attached to the roles still lets a kept-out caller through. Real AWS only.
    verify_effect: bool = False
    policy_name: str = "killswitch-deny-{model}"
    audience_tag: str = "killswitch-audience"

    @field_validator("roles", "groups", "agent_roles")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not IAM_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an IAM role or group name")
        return value

    @field_validator("policy_name")
    @classmethod
    def _policy_name(cls, value: str) -> str:
        if not IAM_NAME.fullmatch(value.replace("{model}", "m")):
            raise ValueError("policy name: letters, digits and +=,.@_- only ({model} allowed)")
        return value

    @field_validator("audience_tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not re.fullmatch(r"[\w.:/=+@-]{1,128}", value):
            raise ValueError("not a valid IAM tag key")
        return value


class ScpSpec(_Strict):
    """``scp:``: where the scp-deny service control policies are attached."""

    targets: list[str] = Field(default_factory=list)  # r-…, ou-…-…, or 12-digit account ids
    policy_name: str = "killswitch-deny-{model}"
    role_arn: str | None = None  # in the management account; default: the entry's credentials

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        for target in value:
            if not SCP_TARGET.fullmatch(target):
                raise ValueError(
                    f"{target!r} is not a root (r-…), an OU (ou-…-…) or a 12-digit account id"
                )
        return value

    @field_validator("policy_name")
    @classmethod
    def _policy_name(cls, value: str) -> str:
        if not re.fullmatch(r"[\w+=,.@-]{1,128}", value.replace("{model}", "m")):
            raise ValueError("policy name: letters, digits and +=,.@_- only ({model} allowed)")
        return value

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        return _role_arn(value)


class ElbSpec(_Strict):
    # region → listener ARNs; regions not named here are searched by the LB tag killswitch:model.
    listeners: dict[str, list[str]] = Field(default_factory=dict)
    status_code: StrictInt = Field(default=403, ge=400, le=599)

    @field_validator("listeners")
    @classmethod
    def _arns(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for arns in value.values():
            for arn in arns:
                if not LISTENER_ARN.fullmatch(arn):
                    raise ValueError(f"{arn!r} is not an ALB listener ARN")
        return value


class RateSpec(_Strict):
    read: StrictFloat = Field(gt=0, le=10_000)
    write: StrictFloat = Field(gt=0, le=10_000)


class AwsConfig(_Strict):
    regions: list[str] | Literal["all"]
    mechanisms: list[str] = Field(min_length=1)
    endpoint_url: str | None = None
    profile: str | None = None
    role_arn: str | None = None  # may hold {account} when accounts are listed
    accounts: list[AccountSpec] = Field(default_factory=list)
    ssm_prefix: str = "/killswitch/models"
    iam: IamSpec = Field(default_factory=IamSpec)
    scp: ScpSpec = Field(default_factory=ScpSpec)
    elb: ElbSpec = Field(default_factory=ElbSpec)
    rate_limits: dict[str, RateSpec] = Field(default_factory=dict)
    timeout_seconds: StrictFloat = Field(default=15.0, gt=0, le=300)  # connect and read, per try

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError("name at least one region, or `all`")
        return value

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        return _role_arn(value)

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

    @model_validator(mode="after")
    def _template_needs_accounts(self) -> AwsConfig:
        if self.role_arn and "{account}" in self.role_arn and not self.accounts:
            raise ValueError("role_arn holds {account} but no accounts are listed")
        return self


class Route(_Strict):
    path: str | None = None
    header: dict[str, list[str]] | None = None  # {header name: [values]}

    @model_validator(mode="after")
    def _one(self) -> Route:
        if (self.path is None) == (self.header is None):
            raise ValueError("give exactly one of path or header")
        if self.path is not None and not ROUTE_PATH.fullmatch(self.path):
            raise ValueError("path: a URL path pattern like /v1/models/mythos-5/*")
        for name, values in (self.header or {}).items():
            if not HEADER_NAME.fullmatch(name) or not values:
                raise ValueError("header: {name: [values]} with a plain header name")
            for value in values:
                if not re.fullmatch(r"[A-Za-z0-9._:*?-]{1,128}", value):
                    raise ValueError(f"header value {value!r}: letters, digits and ._:-*? only")
        return self


class ModelAws(_Strict):
    """``models.<name>.aws``: the model's ids and routes at AWS."""

    bedrock_ids: list[str] = Field(default_factory=list, max_length=MAX_IDS)
    # Application inference profiles and provisioned models built on the model: their
    # ids are arbitrary, so the deny names them (the last part of their ARNs).
    application_profiles: list[str] = Field(default_factory=list, max_length=MAX_BUILT_ON)
    # Invoking a provisioned model is authorised on its own ARN only: unless the ids are
    # listed, a closed region denies every provisioned model there (`*`).
    provisioned_models: list[str] | None = Field(default=None, max_length=MAX_BUILT_ON)
    route: Route | None = None

    def paths(self) -> ModelPaths:
        return ModelPaths(
            tuple(self.bedrock_ids),
            tuple(self.application_profiles),
            ("*",) if self.provisioned_models is None else tuple(self.provisioned_models),
        )

    @field_validator("application_profiles", "provisioned_models")
    @classmethod
    def _resource_ids(cls, value: list[str] | None) -> list[str] | None:
        for resource_id in value or []:
            if not RESOURCE_ID.fullmatch(resource_id):
                raise ValueError(f"{resource_id!r} is not a Bedrock resource id (ARN's last part)")
        return value

    @field_validator("bedrock_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for model_id in value:
            if not BEDROCK_ID.fullmatch(model_id) or ".." in model_id:
                raise ValueError(f"{model_id!r} is not a Bedrock model id (vendor.model-v1:0)")
        return value


def _role_arn(value: str | None) -> str | None:
    if value is not None and not ROLE_ARN.fullmatch(value):
        raise ValueError("must be an IAM role ARN, arn:aws:iam::<12 digits>:role/<name>")
    return value


def model_aws(models: Mapping[str, Mapping[str, Any]], model: str) -> ModelAws:
    return ModelAws.model_validate(models.get(model, {}).get("aws") or {})


def known_regions(services: set[str] | None = None) -> set[str]:
    """Regions from botocore's endpoint data (offline). With ``services``: where all exist."""
    return set(_known_regions(frozenset(services or ())))


@functools.cache
def _known_regions(services: frozenset[str]) -> frozenset[str]:
    """Read once per process: botocore parses its endpoint data anew for every session."""
    import botocore.session

    session = botocore.session.get_session()
    if services:
        found = [set(session.get_available_regions(s)) for s in sorted(services)]
        return frozenset(set.intersection(*found))
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("ssm", partition_name=partition)
    )


def unlisted_regions(listed: Sequence[str]) -> list[str]:
    """Bedrock regions (botocore's endpoint data, offline) an inventory does not list."""
    return sorted(known_regions({"bedrock"}) - set(listed))


def check(
    config: AwsConfig, models: Mapping[str, Mapping[str, Any]], mechanisms: set[str]
) -> list[Problem]:
    problems = []
    for i, name in enumerate(config.mechanisms):
        if name not in mechanisms:
            problems.append(
                Problem(
                    ("mechanisms", i),
                    f"unknown mechanism {name!r} (aws has: {', '.join(sorted(mechanisms))})",
                )
            )
    if isinstance(config.regions, list):
        regions = known_regions()
        for i, region in enumerate(config.regions):
            if config.regions.index(region) != i:
                problems.append(Problem(("regions", i), f"region {region!r} listed twice"))
            elif region not in regions:
                problems.append(
                    Problem(
                        ("regions", i),
                        f"unknown AWS region {region!r}{did_you_mean(region, regions)}",
                    )
                )
    seen_accounts = [a.id for a in config.accounts]
    for i, account in enumerate(seen_accounts):
        if seen_accounts.index(account) != i:
            problems.append(Problem(("accounts", i, "id"), f"account {account} listed twice"))
    for model in models:
        try:
            aws = model_aws(models, model)
        except ValidationError as exc:
            problems += [
                Problem(("models", model, "aws", *e["loc"]), e["msg"], absolute=True)
                for e in exc.errors()
            ]
            continue
        for lever in ("iam-deny", "scp-deny"):
            if lever in config.mechanisms and not aws.bedrock_ids:
                problems.append(
                    Problem(("models", model), f"{lever} needs aws.bedrock_ids", absolute=True)
                )
        if "elb-rule" in config.mechanisms and aws.route is None:
            problems.append(
                Problem(
                    ("models", model), "elb-rule needs aws.route (path or header)", absolute=True
                )
            )
    for service in config.rate_limits:
        if service not in DEFAULTS:
            problems.append(
                Problem(
                    ("rate_limits", service),
                    f"unknown service {service!r} (known: {', '.join(DEFAULTS)})",
                )
            )
    for i, account_spec in enumerate(config.accounts):
        if account_spec.role_arn is None and config.role_arn is None:
            problems.append(
                Problem(
                    ("accounts", i), "no role to assume: set role_arn here or a role_arn template"
                )
            )
    if "iam-deny" in config.mechanisms and not (config.iam.roles or config.iam.groups):
        problems.append(Problem(("iam",), "iam-deny needs iam.roles or iam.groups to attach to"))
    if "scp-deny" in config.mechanisms and not config.scp.targets:
        problems.append(
            Problem(("scp",), "scp-deny needs scp.targets (roots, OUs or accounts to attach to)")
        )
    for region in config.elb.listeners:
        if not is_valid_name(region):
            problems.append(Problem(("elb", "listeners", region), "not a region name"))
    return problems
