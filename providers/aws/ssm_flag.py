"""Lever ``ssm-flag``: a JSON posture document in an SSM String parameter, per region.

Serving gateways read ``<ssm_prefix>/<model>`` and enforce it; the format is
public (docs/flag-format.md). A missing parameter reads as ``open``. A write is
made only when the posture differs, because every overwrite adds a version.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from botocore.exceptions import ClientError

from killswitch.contract import ApplyContext, Permission
from killswitch.domain import OPEN, Access, Observed, Posture, Target
from killswitch.errors import PermanentError, ProviderError
from providers.flag import CorruptFlag, flag_document, parse_flag

if TYPE_CHECKING:
    from providers.aws import AwsProvider


class SsmFlag:
    name: ClassVar[str] = "aws.ssm-flag"
    supports: ClassVar[frozenset[Posture]] = frozenset(Posture)
    wave: ClassVar[int] = 0
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission("ssm:GetParameter", "arn:aws:ssm:*:*:parameter{ssm_prefix}/*"),
        Permission("ssm:PutParameter", "arn:aws:ssm:*:*:parameter{ssm_prefix}/*"),
        # Drift discovery lists the path in unlisted regions: authorised on the path itself.
        Permission("ssm:GetParametersByPath", "arn:aws:ssm:*:*:parameter{ssm_prefix}"),
    )

    def __init__(self, provider: AwsProvider) -> None:
        self.provider = provider

    def parameter(self, target: Target) -> str:
        return f"{self.provider.config.ssm_prefix}/{target.model}"

    def observe(self, target: Target) -> Observed:
        name = self.parameter(target)
        try:
            reply = self.provider.call(
                target,
                "ssm",
                "read",
                f"ssm:GetParameter {name} in {target.region}",
                lambda ssm: ssm.get_parameter(Name=name),
            )
        except PermanentError as exc:
            if (
                isinstance(exc.__cause__, ClientError)
                and _code(exc.__cause__) == "ParameterNotFound"
            ):
                return Observed(OPEN, "no flag parameter (reads as open)")
            raise
        parameter = reply["Parameter"]
        access = parse_flag(name, parameter["Value"])
        return Observed(access, f"{name} version {parameter.get('Version')}")

    def flags_in(self, probe: Target, models: set[str]) -> list[tuple[Target, Observed]]:
        """Every flag of ``models`` in ``probe``'s region and account; [] where the region
        cannot be read (not enabled for the account, or no permission there)."""
        prefix = self.provider.config.ssm_prefix
        parameters: list[dict[str, str]] = []
        page: dict[str, str] = {}
        while True:

            def read(ssm: Any, page: dict[str, str] = page) -> Any:
                return ssm.get_parameters_by_path(Path=prefix, MaxResults=10, **page)

            try:
                reply = self.provider.call(
                    probe,
                    "ssm",
                    "read",
                    f"ssm:GetParametersByPath {prefix} in {probe.region}",
                    read,
                )
            except ProviderError:
                return []
            parameters += reply.get("Parameters", [])
            if not reply.get("NextToken"):
                break
            page = {"NextToken": reply["NextToken"]}
        found = []
        for parameter in parameters:
            model = parameter["Name"].rsplit("/", 1)[-1]
            if model not in models:
                continue
            target = replace(probe, model=model)
            try:
                access = parse_flag(parameter["Name"], parameter["Value"])
            except CorruptFlag:
                continue
            found.append((target, Observed(access, f"flag {parameter['Name']} says {access}")))
        return found

    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        try:
            # The plan's read, when the engine passes it on, saves a round trip per target.
            current = ctx.observed if ctx.observed is not None else self.observe(target).access
            if current == desired:
                return
        except CorruptFlag:
            pass  # a flag no gateway can read is overwritten with one it can
        name = self.parameter(target)
        self.provider.call(
            target,
            "ssm",
            "write",
            f"ssm:PutParameter {name} in {target.region}",
            lambda ssm: ssm.put_parameter(
                Name=name,
                Value=flag_document(target.model, desired, ctx),
                Type="String",
                Overwrite=True,
                Description=f"killswitch posture of {target.model}",
            ),
            ctx,
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
