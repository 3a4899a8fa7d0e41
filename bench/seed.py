"""The seed's incident at full size: every region of every account, where CPU in one
interpreter, not AWS's round trip, would set the time.

2 models x 30 regions x 50 accounts x 2 levers = 6,000 targets, each account reached
by assuming a role; a verified revoke makes about 18,000 calls. The two levers are two
SSM flags per region (the serving gateways' and the edge's), one provider entry each:
the lean server answers SSM and STS only, so the seed's IAM and SCP levers (one policy
per account) are not in this fleet.

In the same run: killswitch with its threads only and with 1, 2, … worker processes
(``$KILLSWITCH_WORKERS``), a re-run (0 writes), the plain threaded boto3 script
(bench/boto3_threaded.py: the CPU a botocore client needs per call), the sequential
boto3 loop (on a prefix, scaled), and the lower bound for the cores used: the round
trips at the policy's concurrency, or the plain script's CPU per call spread over the
processes that make calls (at most the machine's cores), whichever is longer.
"""

from __future__ import annotations

import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.fleet import REGIONS, ROLE
from bench.rig import Rig
from bench.run import Figure, _median, baseline, measure_killswitch

# Five more regions where SSM exists: 30 in all.
SEED_REGIONS = [
    *REGIONS,
    "ap-south-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ca-west-1",
    "mx-central-1",
]
LEVERS = {"aws-gateways": "/killswitch/models", "aws-edge": "/killswitch/edge"}
WORKERS_ENV = "KILLSWITCH_WORKERS"
Target = tuple[str, str, str, str]  # account, region, model, SSM prefix


@dataclass(frozen=True)
class SeedShape:
    models: int = 2
    regions: int = 30
    accounts: int = 50

    @property
    def n(self) -> int:
        return self.models * self.regions * self.accounts * len(LEVERS)

    def describe(self) -> str:
        return (
            f"{self.models} models × {self.regions} regions × {self.accounts} accounts × "
            f"{len(LEVERS)} levers"
        )

    def account_ids(self) -> list[str]:
        return [f"{200000000001 + i:012d}" for i in range(self.accounts)]

    def region_names(self) -> list[str]:
        return SEED_REGIONS[: self.regions]

    def targets(self) -> list[Target]:
        """In the order a hand-written loop visits them: account, region, lever, model."""
        return [
            (account, region, f"model-{m:02d}", prefix)
            for account in self.account_ids()
            for region in self.region_names()
            for prefix in LEVERS.values()
            for m in range(self.models)
        ]

    def inventory(self, endpoint: str) -> str:
        accounts = [{"id": a} for a in self.account_ids()]
        providers = {
            name: {
                "type": "aws",
                "regions": self.region_names(),
                "mechanisms": ["ssm-flag"],
                "ssm_prefix": prefix,
                "endpoint_url": endpoint,
                "role_arn": ROLE,
                "accounts": accounts,
            }
            for name, prefix in LEVERS.items()
        }
        doc = {
            "version": 1,
            "state": "sqlite:///./state.db",
            "models": {f"model-{m:02d}": {} for m in range(self.models)},
            "providers": providers,
        }
        return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class SeedResult:
    shape: str
    n: int
    calls_per_revoke: int
    concurrency: int
    cores: int
    rtt_bound: float
    figures: dict[str, Figure] = field(default_factory=dict)
    workers: list[int] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def cpu_per_call(self, label: str) -> float | None:
        figure = self.figures.get(label)
        if figure is None or figure.cpu is None or not figure.calls:
            return None
        return figure.cpu / figure.calls

    def bound(self, processes: int) -> float:
        """The lower bound with ``processes`` processes making calls, on this machine."""
        plain = self.cpu_per_call("boto3 threaded revoke")
        cores = max(1, min(self.cores, processes))
        cpu = 0.0 if plain is None else plain * self.calls_per_revoke / cores
        return max(self.rtt_bound, cpu)


def revoke_label(workers: int) -> str:
    return f"killswitch revoke, {workers} worker{'' if workers == 1 else 's'}"


def rtt_bound(n: int, rtt: float, concurrency: int) -> float:
    """A read of every target, then a write and a read back: 3 round trips per target,
    ``concurrency`` at a time (rate limits do not bind: 2 writes per account-region)."""
    return 3 * rtt * math.ceil(n / concurrency)


class SeedBench:
    def __init__(self, rig: Rig, workdir: Path, ks: list[str], rtt: float) -> None:
        self.rig, self.workdir, self.ks, self.rtt = rig, workdir, ks, rtt

    def log(self, message: str) -> None:
        print(f"[bench seed] {message}", file=sys.stderr, flush=True)

    def run(
        self, shape: SeedShape, workers: list[int], baseline_max: int, repeats: int = 1
    ) -> SeedResult:
        result = SeedResult(
            shape.describe(),
            shape.n,
            3 * shape.n,
            32,
            os.cpu_count() or 1,
            rtt_bound(shape.n, self.rtt, 32),
            workers=workers,
        )
        self.log(
            f"{shape.describe()} = {shape.n} targets; round-trip bound {result.rtt_bound:.1f}s"
        )
        result.figures["boto3 threaded revoke"] = self.threaded(shape, result)
        ws = self.workdir / "seed"
        for count in workers:
            runs = []
            for _ in range(repeats):
                self.rig.reset()
                ws = self.workspace(shape)
                runs.append(self.revoke(shape, ws, count, result))
            figure = _median(runs)
            result.figures[revoke_label(count)] = figure
            self.log(
                f"killswitch revoke, {count} workers: {figure.seconds:.1f}s, CPU {figure.cpu:.1f}s"
            )
        result.figures["killswitch re-run"] = self.rerun(ws, result)
        result.figures["boto3 loop revoke"] = self.loop(shape, baseline_max, result)
        return result

    def workspace(self, shape: SeedShape) -> Path:
        path = self.workdir / "seed"
        if path.exists():
            for child in path.iterdir():
                child.unlink()
        path.mkdir(parents=True, exist_ok=True)
        (path / "killswitch.yaml").write_text(shape.inventory(self.rig.endpoint))
        return path

    def _killswitch(self, ws: Path, workers: int) -> tuple[Figure, dict[str, Any]]:
        args = ("revoke", "--model", "all", "--reason", "bench", "--yes")
        env = {WORKERS_ENV: str(workers)}
        return measure_killswitch(self.rig, self.ks, ws, args, expect=0, env=env)

    def revoke(self, shape: SeedShape, ws: Path, workers: int, result: SeedResult) -> Figure:
        figure, report = self._killswitch(ws, workers)
        results = {t["result"] for t in report["targets"]}
        wrong = [t for t, p in self.postures(shape).items() if p != "revoked"]
        if report["status"] != "complete" or results != {"verified"} or wrong:
            raise RuntimeError(
                f"seed revoke not verified: {report['status']} {results} {wrong[:5]}"
            )
        result.checks.append(
            f"revoke with {workers} workers: complete, {shape.n} verified, the server holds "
            f"revoked for all {shape.n}"
        )
        return figure

    def rerun(self, ws: Path, result: SeedResult) -> Figure:
        figure, report = self._killswitch(ws, max(result.workers))
        if report["status"] != "already-done" or figure.writes:
            raise RuntimeError(f"seed re-run: {report['status']}, {figure.writes} writes")
        result.checks.append(f"re-run: already-done, {figure.writes} write calls")
        self.log(f"killswitch re-run: {figure.seconds:.1f}s, {figure.writes} writes")
        return figure

    def threaded(self, shape: SeedShape, result: SeedResult) -> Figure:
        """The plain threaded boto3 script on the whole fleet."""
        self.rig.reset()
        figure = self._baseline("bench.boto3_threaded", shape.targets(), shape)
        wrong = [t for t, p in self.postures(shape).items() if p != "revoked"]
        if wrong:
            raise RuntimeError(f"threaded boto3 left {len(wrong)} targets open")
        result.checks.append(f"threaded boto3: the server holds revoked for all {shape.n}")
        self.log(f"boto3 threaded: {figure.seconds:.1f}s, CPU {figure.cpu:.1f}s")
        return figure

    def loop(self, shape: SeedShape, baseline_max: int, result: SeedResult) -> Figure:
        """The sequential loop on a prefix in loop order, scaled to the fleet."""
        self.rig.reset()
        subset = shape.targets()[:baseline_max]
        figure = self._baseline("bench.boto3_loop", subset, shape)
        held = self.postures(shape)
        if any(held[t] != "revoked" for t in subset):
            raise RuntimeError("boto3 loop left targets open")
        result.checks.append(f"boto3 loop: the server holds revoked for its {len(subset)} targets")
        self.log(f"boto3 loop: {figure.runs[0]:.1f}s on {len(subset)} targets")
        return figure

    def _baseline(self, module: str, subset: list[Target], shape: SeedShape) -> Figure:
        path = self.workdir / f"seed-{module}.json"
        path.write_text(json.dumps(subset))
        wall, cpu, out, cost = baseline(self.rig, module, path)
        scale = shape.n / len(subset)
        calls = sum(self.rig.proxy.calls().values())
        return Figure(
            wall * scale,
            [wall],
            cpu * scale,
            cost["server_cpu"],
            reads=round(out["reads"] * scale),
            writes=round(out["writes"] * scale),
            calls=round(calls * scale),
            scaled_from=len(subset) if len(subset) < shape.n else None,
        )

    def postures(self, shape: SeedShape) -> dict[Target, str]:
        """Every flag the server holds, read straight from it (no proxy)."""
        places = [(a, r) for a in shape.account_ids() for r in shape.region_names()]
        for place in places:  # clients made serially (boto3 sessions are not thread-safe)
            self.rig.ssm(*place)

        def read(place: tuple[str, str]) -> dict[Target, str]:
            account, region = place
            found: dict[Target, str] = {}
            pages = self.rig.ssm(account, region).get_paginator("get_parameters_by_path")
            for prefix in LEVERS.values():
                for page in pages.paginate(Path=prefix, PaginationConfig={"PageSize": 10}):
                    for parameter in page["Parameters"]:
                        model = parameter["Name"].rsplit("/", 1)[-1]
                        posture = json.loads(parameter["Value"])["posture"]
                        found[(account, region, model, prefix)] = posture
            return found

        held: dict[Target, str] = {}
        with ThreadPoolExecutor(8) as pool:
            for found in pool.map(read, places):
                held.update(found)
        return {t: held.get(t, "open") for t in shape.targets()}


def as_json(result: SeedResult) -> dict[str, Any]:
    data = asdict(result)
    data["bounds"] = {str(w): result.bound(max(1, w)) for w in result.workers}
    data["cpu_per_call"] = {
        label: result.cpu_per_call(label) for label in result.figures if result.cpu_per_call(label)
    }
    return data
