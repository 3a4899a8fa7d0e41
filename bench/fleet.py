"""Generated fleets: N ssm-flag targets as models x regions x accounts, and their inventory."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

# 25 regions where SSM exists, in the order an engineer would list them.
REGIONS = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-central-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-south-1",
    "ap-east-1",
    "sa-east-1",
    "me-south-1",
    "me-central-1",
    "af-south-1",
    "il-central-1",
]
PROVIDER = "aws-org"
ROLE = "arn:aws:iam::{account}:role/killswitch-operator"
PREFIX = "/killswitch/models"
RAISED = 10_000.0  # requests/second: "no rate limit", to measure the engine itself


@dataclass(frozen=True)
class Shape:
    """N = models x regions x accounts, one lever (ssm-flag)."""

    models: int
    regions: int
    accounts: int

    @property
    def n(self) -> int:
        return self.models * self.regions * self.accounts

    def describe(self) -> str:
        return f"{self.models} models × {self.regions} regions × {self.accounts} accounts"

    def model_names(self) -> list[str]:
        return [f"model-{i:02d}" for i in range(self.models)]

    def region_names(self) -> list[str]:
        return REGIONS[: self.regions]

    def account_ids(self) -> list[str]:
        return [f"{100000000001 + i:012d}" for i in range(self.accounts)]

    def targets(self) -> list[tuple[str, str, str]]:
        """(account, region, model), in the order a hand-written loop visits them."""
        return [
            (account, region, model)
            for account in self.account_ids()
            for region in self.region_names()
            for model in self.model_names()
        ]


# The writes per (account, region) bucket set how much the SSM PutParameter limit
# (3/s) weighs: 5 at N=100, 10 at N=1,000, 25 at N=5,000.
SHAPES: dict[int, Shape] = {
    100: Shape(models=5, regions=10, accounts=2),
    1000: Shape(models=10, regions=25, accounts=4),
    5000: Shape(models=25, regions=25, accounts=8),
}


def shape_for(n: int) -> Shape:
    if n in SHAPES:
        return SHAPES[n]
    raise SystemExit(f"no fleet shape for N={n}; known: {', '.join(map(str, SHAPES))}")


def inventory(
    shape: Shape,
    endpoint: str,
    *,
    raised_limits: bool = False,
    concurrency: tuple[int, int] | None = None,
) -> str:
    """The killswitch.yaml for ``shape``; state in ./state.db beside it."""
    provider: dict[str, object] = {
        "type": "aws",
        "regions": shape.region_names(),
        "mechanisms": ["ssm-flag"],
        "endpoint_url": endpoint,
        "role_arn": ROLE,
        "accounts": [{"id": a} for a in shape.account_ids()],
    }
    if raised_limits:
        provider["rate_limits"] = {"ssm": {"read": RAISED, "write": RAISED}}
    doc: dict[str, object] = {
        "version": 1,
        "state": "sqlite:///./state.db",
        "models": {m: {} for m in shape.model_names()},
        "providers": {PROVIDER: provider},
    }
    if concurrency is not None:
        doc["policy"] = {"concurrency": {"total": concurrency[0], "per_region": concurrency[1]}}
    return yaml.safe_dump(doc, sort_keys=False)


def small_inventory(endpoint: str) -> str:
    """Four targets, one account: what `killswitch status` start-up is timed on."""
    doc = {
        "version": 1,
        "state": "sqlite:///./state.db",
        "models": {"mythos-5": {}, "fable-5": {}},
        "providers": {
            "aws-prod": {
                "type": "aws",
                "regions": ["us-east-1", "eu-west-1"],
                "mechanisms": ["ssm-flag"],
                "endpoint_url": endpoint,
            }
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)
