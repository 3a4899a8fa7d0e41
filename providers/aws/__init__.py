"""Provider ``aws``: one inventory entry per organisation slice (one account, or many
through assumed roles), many regions, several levers.

boto3 is imported only when a lever is first used, not when the inventory is
validated or ``--help`` is shown.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel

from killswitch.contract import ApplyContext, Mechanism, Problem
from killswitch.domain import Observed, Target
from killswitch.errors import RetryableError
from providers.aws.config import SERVICES, AwsConfig, check, known_regions
from providers.base import Levers, within

if TYPE_CHECKING:
    from providers.aws.ratelimit import Kind, RateLimits
    from providers.aws.session import Clients

T = TypeVar("T")

# name → "module:Class", imported on first use.
MECHANISMS: dict[str, str] = {
    "ssm-flag": "providers.aws.ssm_flag:SsmFlag",
    "iam-deny": "providers.aws.iam_deny:IamDeny",
    "scp-deny": "providers.aws.scp_deny:ScpDeny",
    "elb-rule": "providers.aws.elb_rule:ElbRule",
}
GLOBAL = "global"  # the region key of global services (IAM)
GLOBAL_SERVICES = frozenset({"iam", "organizations"})  # one endpoint, in us-east-1
# Levers whose one write acts account-wide: they also control the `unlisted` target,
# every region the inventory does not list (and regions AWS adds later).
ACCOUNT_WIDE = frozenset({"iam-deny", "scp-deny"})
# Levers whose one resource serves the whole organisation: one target per region, not
# one per account.
ORGANISATION_WIDE = frozenset({"scp-deny"})
THROTTLE_HINTS = ("Throttl", "Rate exceeded", "TooManyRequests", "RequestLimitExceeded", "SlowDown")


def _unfenced() -> None:
    """Reads need no fence."""


class AwsProvider:
    type: ClassVar[str] = "aws"
    config_model: ClassVar[builtins.type[BaseModel]] = AwsConfig
    mechanism_names: ClassVar[frozenset[str]] = frozenset(MECHANISMS)
    # The lever table the plug-in check reads on load (killswitch/registry.py), and the
    # SDK version this provider is written against.
    levers: ClassVar[dict[str, str]] = MECHANISMS
    api_version: ClassVar[int] = 1

    @classmethod
    def check(cls, config: Any, models: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
        return check(config, models, set(MECHANISMS))

    def __init__(self, name: str, config: Any, models: Mapping[str, Mapping[str, Any]]) -> None:
        self.name = name
        self.config: AwsConfig = config
        self.models = models
        self._levers = Levers(self, MECHANISMS)
        self._clients: Clients | None = None
        self._limits: RateLimits | None = None
        self._lock = threading.RLock()  # fan-out threads build clients on first use

    # -- what it controls --------------------------------------------------------
    def regions(self) -> list[str]:
        if isinstance(self.config.regions, list):
            return list(self.config.regions)
        services = {SERVICES[m] for m in self.config.mechanisms}
        return sorted(known_regions(services))

    def accounts(self) -> list[str]:
        """Account ids this entry spans; [""] means the one account of its credentials."""
        return [a.id for a in self.config.accounts] or [""]

    def targets(self) -> list[Target]:
        from providers.aws.bedrock_access import UNLISTED

        regions = [*self.regions(), UNLISTED]
        accounts = self.accounts()
        return [
            Target(self.type, self.name, region, mechanism, model, where)
            for account in accounts
            for region in regions
            for mechanism in self.config.mechanisms
            if region != UNLISTED or mechanism in ACCOUNT_WIDE
            if mechanism not in ORGANISATION_WIDE or account == accounts[0]
            for where in ["" if mechanism in ORGANISATION_WIDE else account]
            for model in self.models
        ]

    def mechanism(self, name: str) -> Mechanism:
        return self._levers.get(name)

    def discover(self) -> list[tuple[Target, Observed]]:
        """Flags of the inventory's models in regions this entry does not list (a region
        someone manages by hand, or one dropped from the inventory): drift reports them
        as unmanaged. One GetParametersByPath per region; regions not enabled for the
        account are passed over."""
        if "ssm-flag" not in self.config.mechanisms or self.config.regions == "all":
            return []
        from concurrent.futures import ThreadPoolExecutor

        from providers.aws.ssm_flag import SsmFlag

        lever = self.mechanism("ssm-flag")
        assert isinstance(lever, SsmFlag)
        elsewhere = sorted(known_regions({"ssm"}) - set(self.regions()))
        probes = [
            Target(self.type, self.name, region, "ssm-flag", "", account)
            for account in self.accounts()
            for region in elsewhere
        ]
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = pool.map(lambda probe: lever.flags_in(probe, set(self.models)), probes)
            return [item for items in found for item in items]

    def least_privilege(self) -> dict[str, Any]:
        """The IAM policy document this entry's levers need, and nothing more."""
        from providers.aws.policy import assume_role_statement, statements

        levers = {name: self.mechanism(name) for name in self.config.mechanisms}
        found = statements(self.config, levers)
        roles = sorted({arn for a in self.accounts() if (arn := self.role_arn(a))})
        if roles:
            found.append(assume_role_statement(roles))
        return {"Version": "2012-10-17", "Statement": found}

    def permissions_boundary(self) -> dict[str, Any]:
        """The recommended permissions boundary for the operator role: no more than the
        least privilege, whatever else is attached to it, and never its own removal."""
        from providers.aws.policy import boundary_statements

        allowed = self.least_privilege()["Statement"]
        return {"Version": "2012-10-17", "Statement": allowed + boundary_statements()}

    def affinity(self, target: Target) -> str:
        """What a target's calls share (killswitch/workers.py): the account's global
        services (IAM's bucket is per account), the organisation (one Organizations
        endpoint), or the account and region (every regional bucket and client)."""
        if target.mechanism in ORGANISATION_WIDE:
            return "organisation"
        if target.mechanism in ACCOUNT_WIDE:
            return f"{target.account}/global"
        return f"{target.account}/{target.region}"

    # -- calling AWS -------------------------------------------------------------
    def role_arn(self, account: str) -> str | None:
        for spec in self.config.accounts:
            if spec.id == account and spec.role_arn:
                return spec.role_arn
        template = self.config.role_arn
        if template is None or (not account and "{account}" in template):
            return None  # the credentials' own account
        return template.replace("{account}", account)

    @property
    def clients(self) -> Clients:
        with self._lock:
            if self._clients is None:
                from providers.aws.session import Clients

                self._clients = Clients(
                    profile=self.config.profile,
                    endpoint_url=self.config.endpoint_url,
                    timeout=self.config.timeout_seconds,
                )
            return self._clients

    def reach(self) -> list[str]:
        """Each account answers (its role assumed), and the roles and groups iam-deny
        attaches its policy to exist there: what `inventory validate --reach` asks."""
        from killswitch.errors import KillswitchError
        from providers.aws.iam_deny import IamDeny

        problems = []
        for account in self.accounts():
            where = f"account {account}" if account else "the credentials' account"
            probe = Target(self.type, self.name, "us-east-1", "iam-deny", "", account)
            try:
                self.call(
                    probe, "sts", "read", "sts:GetCallerIdentity", lambda c: c.get_caller_identity()
                )
                lever = self.mechanism("iam-deny") if "iam-deny" in self.config.mechanisms else None
                if isinstance(lever, IamDeny):
                    problems += [f"{where}: {gap}" for gap in lever.absent_principals(account)]
            except KillswitchError as exc:
                problems.append(f"{where}: {exc}")
        return problems

    def caller_identity(self, timeout: float) -> str:
        """The ARN of the base credentials' caller (sts:GetCallerIdentity), never an
        assumed role of ours; the core makes a person's name of it."""
        from providers.aws.errors import aws_call

        client = self.clients.client("sts", "us-east-1", None, "")
        what = "sts:GetCallerIdentity"

        def ask() -> str:
            with aws_call(what):
                return str(client.get_caller_identity()["Arn"])

        return within(min(timeout, self.call_bound_seconds()), what, ask)

    def call_bound_seconds(self) -> float:
        """A call's connect and read timeouts, end to end (providers/aws/session.py)."""
        return min(5.0, self.config.timeout_seconds) + self.config.timeout_seconds

    @property
    def limits(self) -> RateLimits:
        with self._lock:
            if self._limits is None:
                from providers.aws.ratelimit import RateLimits

                overrides: dict[str, dict[Kind, float]] = {
                    service: {"read": spec.read, "write": spec.write}
                    for service, spec in self.config.rate_limits.items()
                }
                self._limits = RateLimits(overrides)
            return self._limits

    def call(
        self,
        target: Target,
        service: str,
        kind: Kind,
        what: str,
        fn: Callable[[Any], T],
        ctx: ApplyContext | None = None,
    ) -> T:
        """``fn(client)`` within the service-region rate limit, errors classified.

        Global services (IAM, Organizations) and the `unlisted` target use us-east-1;
        global services have one bucket per account.
        """
        from providers.aws.bedrock_access import UNLISTED
        from providers.aws.errors import aws_call
        from providers.aws.session import fenced, session_name, signed_as

        account_wide = service in GLOBAL_SERVICES or target.region == UNLISTED
        region = "us-east-1" if account_wide else target.region
        name = session_name(ctx.actor if ctx else None, ctx.op_id if ctx else None)
        # Organizations answers in the management account: scp.role_arn, else the entry's.
        org_role = self.config.scp.role_arn if service == "organizations" else None
        role = org_role or self.role_arn(target.account)
        client = self.clients.client(service, region, role, name)
        # One client per account, service and region; each request signed as its session.
        credentials = self.clients.credentials(role, name) if role else None
        bucket = self.limits.bucket(
            target.account, service, GLOBAL if service in GLOBAL_SERVICES else region, kind
        )
        bucket.acquire()
        fence = ctx.fence if kind == "write" and ctx else _unfenced

        def attempt() -> T:
            with aws_call(what), fenced(fence), signed_as(credentials):
                return fn(client)

        try:
            result = within(self.call_bound_seconds(), what, attempt)
        except RetryableError as exc:
            if any(hint in str(exc) for hint in THROTTLE_HINTS):
                bucket.throttled()
            raise
        bucket.succeeded()
        return result
