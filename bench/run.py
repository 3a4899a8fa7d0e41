"""The benchmark run: for each N, killswitch and its baselines against the same rig."""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import awscli_loop, startup
from bench.bounds import Bound, lower_bound
from bench.fleet import PROVIDER, Shape, inventory, shape_for
from bench.rig import Proxy, Rig, child_env


@dataclass
class Figure:
    """One measured (or scaled) time, with what it cost."""

    seconds: float  # wall clock, median of the runs; from process start to exit
    runs: list[float] = field(default_factory=list)
    cpu: float | None = None  # the measured process's own CPU seconds (median)
    server_cpu: float | None = None  # server + proxy CPU seconds during the run
    reads: int | None = None
    writes: int | None = None
    calls: int | None = None
    scaled_from: int | None = None  # measured on this many targets, scaled linearly to N


@dataclass
class SizeResult:
    n: int
    shape: str
    bound_default: dict[str, Any]
    bound_raised: dict[str, Any]
    bound_tuned: dict[str, Any]
    figures: dict[str, Figure] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)


@dataclass
class Settings:
    sizes: list[int]
    rtt: float
    jitter: float
    repeats: int  # killswitch runs per figure (median); 1 at N=5,000
    baseline_max: int  # the boto3 loop runs on at most this many targets, then scales
    aws_cli: str | None
    aws_cli_targets: int
    workdir: Path
    startup_repeats: int
    server: str = "lean"  # what stands in for AWS behind the proxy: "lean" or "moto"
    killswitch: list[str] = field(default_factory=list)  # the command; default: installed
    tuned: tuple[int, int] = (64, 16)  # concurrency (total, per region) of the tuned run


def _timed(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall and CPU seconds of one child process and the processes it waited for (its
    workers); it is the only child reaped meanwhile."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        cmd,
        cwd=cwd,
        env=child_env(**(env or {})),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


class Bench:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.ks = settings.killswitch or startup.killswitch_command()
        self.rig = Rig(settings.workdir, settings.rtt, settings.jitter, settings.server)
        self.cli: tuple[awscli_loop.CliTiming, awscli_loop.CliTiming] | None = None

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # -- the rig's own ceiling ----------------------------------------------------
    def calibrate(self, calls: int = 2000) -> float:
        """Calls per second the server + a zero-delay proxy sustain with 32 client threads on
        this machine: no client can go faster than this against this rig."""
        import boto3
        from botocore.config import Config

        proxy = Proxy(self.rig.server.url, 0.0, 0.0)
        try:
            self.rig.reset()
            ssm = boto3.client(
                "ssm",
                region_name="us-east-1",
                endpoint_url=proxy.url,
                config=Config(max_pool_connections=32, retries={"total_max_attempts": 1}),
            )
            for i in range(20):
                ssm.put_parameter(Name=f"/calibrate/p{i}", Value="x", Type="String")
            started = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                list(
                    pool.map(
                        lambda i: ssm.get_parameter(Name=f"/calibrate/p{i % 20}"), range(calls)
                    )
                )
            return calls / (time.perf_counter() - started)
        finally:
            proxy.stop()

    # -- killswitch ---------------------------------------------------------------
    def workspace(
        self, name: str, shape: Shape, *, raised: bool, concurrency: tuple[int, int] | None
    ) -> Path:
        path = self.s.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        (path / "killswitch.yaml").write_text(
            inventory(shape, self.rig.endpoint, raised_limits=raised, concurrency=concurrency)
        )
        return path

    def killswitch(self, ws: Path, *args: str, expect: int) -> tuple[Figure, dict[str, Any]]:
        return measure_killswitch(self.rig, self.ks, ws, args, expect=expect)

    def revoke(
        self,
        shape: Shape,
        *,
        raised: bool,
        result: SizeResult,
        concurrency: tuple[int, int] | None = None,
    ) -> tuple[Figure, Path]:
        figures, ws = [], Path()
        name = f"n{shape.n}-{'raised' if raised else 'default'}"
        name += f"-c{concurrency[0]}" if concurrency else ""
        for i in range(self._repeats(shape)):
            self.rig.reset()
            ws = self.workspace(name, shape, raised=raised, concurrency=concurrency)
            figure, report = self.killswitch(
                ws, "revoke", "--model", "all", "--reason", "bench", "--yes", expect=0
            )
            results = {t["result"] for t in report["targets"]}
            held = self.rig.postures(shape)
            wrong = [t for t, p in held.items() if p != "revoked"]
            if report["status"] != "complete" or results != {"verified"} or wrong:
                raise RuntimeError(f"revoke not verified: {report['status']} {results} {wrong[:5]}")
            figures.append(figure)
            self.log(
                f"N={shape.n} killswitch revoke ({name}) "
                f"#{i + 1}: {figure.seconds:.2f}s, {figure.writes} writes"
            )
        if not raised:
            result.checks.append(
                f"revoke: status complete, {shape.n} targets verified, "
                f"the server holds revoked for all {shape.n}"
            )
        return _median(figures), ws

    def rerun(self, shape: Shape, ws: Path, result: SizeResult) -> Figure:
        figures = []
        for _ in range(self._repeats(shape)):
            figure, report = self.killswitch(
                ws, "revoke", "--model", "all", "--reason", "bench", "--yes", expect=0
            )
            if report["status"] != "already-done" or figure.writes:
                raise RuntimeError(f"re-run: {report['status']}, {figure.writes} writes")
            figures.append(figure)
        result.checks.append(f"re-run: status already-done, {figures[-1].writes} write calls")
        return _median(figures)

    def drift(self, shape: Shape, ws: Path, result: SizeResult) -> Figure:
        """Someone re-opens 1% of the flags by hand; the check must name exactly those."""
        targets = shape.targets()
        opened = targets[:: max(1, len(targets) // max(1, shape.n // 100))][
            : max(1, shape.n // 100)
        ]
        for target in opened:
            self.rig.set_posture(target, "open")
        figures = []
        for _ in range(self._repeats(shape)):
            figure, report = self.killswitch(ws, "drift", expect=2)
            drifted = {t["id"] for t in report["targets"] if t["result"] == "drift"}
            expected = {f"aws:{PROVIDER}@{a}/{r}/ssm-flag/{m}" for a, r, m in opened}
            if drifted != expected:
                raise RuntimeError(f"drift found {sorted(drifted)[:5]}…, opened {len(opened)}")
            figures.append(figure)
        result.checks.append(
            f"drift: {len(opened)} flags opened by hand, exactly those reported (exit 2)"
        )
        return _median(figures)

    def _repeats(self, shape: Shape) -> int:
        return 1 if shape.n >= 5000 else self.s.repeats

    # -- baselines ----------------------------------------------------------------
    def boto3_loop(self, shape: Shape, result: SizeResult) -> tuple[Figure, Figure]:
        """The loop's revoke, then its read-only pass (a re-run, or a drift check)."""
        targets = shape.targets()
        # A prefix in loop order, so clients and role sessions amortise as in the full loop.
        revoked = targets[: self.s.baseline_max]
        self.rig.reset()
        revoke = self._loop(shape, revoked, check=False)
        held = self.rig.postures(shape)
        if any(held[t] != "revoked" for t in revoked):
            raise RuntimeError("boto3 loop left targets open")
        result.checks.append(f"boto3 loop: the server holds revoked for its {len(revoked)} targets")
        # The read-only pass costs the same per target: it runs on at most half as many.
        check = self._loop(shape, revoked[: max(1, self.s.baseline_max // 2)], check=True)
        return revoke, check

    def threaded(self, shape: Shape, result: SizeResult) -> Figure:
        """The plain threaded boto3 script on the whole fleet: what botocore costs per call."""
        self.rig.reset()
        figure = self._loop(shape, shape.targets(), check=False, module="bench.boto3_threaded")
        held = self.rig.postures(shape)
        if any(p != "revoked" for p in held.values()):
            raise RuntimeError("threaded boto3 left targets open")
        result.checks.append(f"threaded boto3: the server holds revoked for all {shape.n}")
        return figure

    def _loop(
        self,
        shape: Shape,
        subset: list[tuple[str, str, str]],
        *,
        check: bool,
        module: str = "bench.boto3_loop",
    ) -> Figure:
        path = self.s.workdir / f"n{shape.n}-targets{'-check' if check else ''}.json"
        path.write_text(json.dumps(subset))
        wall, cpu, out, cost = baseline(self.rig, module, path, check=check)
        calls = self.rig.proxy.calls()
        scale = shape.n / len(subset)
        self.log(
            f"N={shape.n} {module} {'check' if check else 'revoke'}: {wall:.1f}s, CPU {cpu:.1f}s "
            f"on {len(subset)} targets"
        )
        return Figure(
            wall * scale,
            [wall],
            cpu,
            cost["server_cpu"],
            reads=round(out["reads"] * scale),
            writes=round(out["writes"] * scale),
            calls=round(sum(calls.values()) * scale),
            scaled_from=len(subset) if len(subset) < shape.n else None,
        )

    def aws_cli(self, shape: Shape) -> tuple[awscli_loop.CliTiming, awscli_loop.CliTiming] | None:
        """The aws CLI loop on a few targets of one account: revoke, then check."""
        aws = awscli_loop.find(self.s.aws_cli) if self.s.aws_cli != "" else None
        if aws is None:
            return None
        subset = shape.targets()[: self.s.aws_cli_targets]
        self.rig.reset()
        timings = []
        for check in (False, True):
            timing = awscli_loop.run(aws, self.rig.endpoint, subset, self.s.workdir, check=check)
            timings.append(timing)
            self.log(
                f"aws CLI {'check' if check else 'revoke'}: {timing.seconds:.1f}s, "
                f"{timing.calls} calls, {timing.per_call * 1000:.0f} ms/call"
            )
        return timings[0], timings[1]

    # -- one size -----------------------------------------------------------------
    def size(self, n: int) -> SizeResult:
        shape = shape_for(n)
        bound_d = lower_bound(shape, self.s.rtt, raised_limits=False)
        bound_r = lower_bound(shape, self.s.rtt, raised_limits=True)
        total, per_region = self.s.tuned
        bound_t = lower_bound(
            shape, self.s.rtt, raised_limits=True, total=total, per_region=per_region
        )
        result = SizeResult(n, shape.describe(), _bound(bound_d), _bound(bound_r), _bound(bound_t))
        self.log(
            f"N={n} ({shape.describe()}): lower bound {bound_d.revoke:.2f}s "
            f"(default limits), {bound_r.revoke:.2f}s (raised)"
        )
        figures = result.figures
        figures["killswitch revoke"], ws = self.revoke(shape, raised=False, result=result)
        figures["killswitch re-run"] = self.rerun(shape, ws, result)
        figures["killswitch drift"] = self.drift(shape, ws, result)
        figures["killswitch revoke, raised limits"], _ = self.revoke(
            shape, raised=True, result=result
        )
        figures["killswitch revoke, raised limits, tuned concurrency"], _ = self.revoke(
            shape, raised=True, result=result, concurrency=self.s.tuned
        )
        figures["boto3 threaded revoke"] = self.threaded(shape, result)
        figures["boto3 loop revoke"], figures["boto3 loop re-run / drift"] = self.boto3_loop(
            shape, result
        )
        if self.cli is not None:
            for label, timing in zip(("revoke", "re-run / drift"), self.cli, strict=True):
                figures[f"aws CLI loop {label}"] = Figure(
                    timing.seconds / timing.targets * n,
                    [timing.seconds],
                    calls=round(timing.calls / timing.targets * n),
                    scaled_from=timing.targets,
                )
        return result

    def run(self) -> dict[str, Any]:
        self.log(f"calibrating the rig ({self.s.server} + proxy, no added delay, 32 threads)")
        capacity = self.calibrate()
        self.log(f"rig capacity: {capacity:.0f} calls/s")
        self.log("start-up")
        started = startup.measure(
            self.s.workdir / "startup", self.rig.endpoint, self.s.startup_repeats, self.ks
        )
        self.cli = self.aws_cli(shape_for(self.s.sizes[0]))
        if self.cli is None:
            self.log("no aws CLI found (--aws-cli PATH, $AWS_CLI or `aws` on PATH): skipped")
        sizes = [self.size(n) for n in self.s.sizes]
        return {
            "settings": {
                "server": self.s.server,
                "rtt": self.s.rtt,
                "jitter": self.s.jitter,
                "repeats": self.s.repeats,
                "baseline_max": self.s.baseline_max,
                "aws_cli": awscli_loop.find(self.s.aws_cli) if self.s.aws_cli != "" else None,
                "concurrency": {"total": 32, "per_region": 8},
                "tuned": {"total": self.s.tuned[0], "per_region": self.s.tuned[1]},
                "killswitch": self.ks,
            },
            "rig_capacity": capacity,
            "aws_cli_per_call": self.cli[0].per_call if self.cli else None,
            "startup": [{"label": s.label, "median": s.median, "runs": s.runs} for s in started],
            "heavy_imports": startup.heavy_imports(),
            "sizes": [asdict(r) for r in sizes],
        }

    def close(self) -> None:
        self.rig.stop()


def measure_killswitch(
    rig: Rig,
    ks: list[str],
    ws: Path,
    args: tuple[str, ...],
    *,
    expect: int,
    env: dict[str, str] | None = None,
) -> tuple[Figure, dict[str, Any]]:
    """``killswitch ARGS --output json`` on the inventory in ``ws``, as its own process:
    its figure (wall, CPU, calls at the proxy, the rig's CPU) and its report."""
    rig.proxy.reset()
    cost: dict[str, float] = {}
    cmd = [*ks, "--inventory", str(ws / "killswitch.yaml"), "--actor", "bench", *args]
    with rig.server_cpu_during(cost):
        wall, cpu, done = _timed([*cmd, "--output", "json"], ws, env)
    if done.returncode != expect:
        raise RuntimeError(
            f"killswitch {' '.join(args)} exited {done.returncode}, wanted {expect}:\n"
            f"{done.stderr[-3000:]}"
        )
    calls = rig.proxy.calls()
    figure = Figure(
        wall,
        [wall],
        cpu,
        cost["server_cpu"],
        reads=calls.get("GetParameter", 0) + calls.get("GetParametersByPath", 0),
        writes=calls.get("PutParameter", 0),
        calls=sum(calls.values()),
    )
    return figure, json.loads(done.stdout)


def baseline(
    rig: Rig, module: str, targets: Path, *, check: bool = False
) -> tuple[float, float, dict[str, Any], dict[str, float]]:
    """A baseline script (``python -m MODULE``) on the targets in ``targets`` through the
    proxy: its wall and CPU seconds, its JSON line, and the rig's CPU meanwhile. Fails
    when it leaves a target not revoked."""
    rig.proxy.reset()
    cost: dict[str, float] = {}
    cmd = [sys.executable, "-m", module, "--endpoint", rig.endpoint, "--targets", str(targets)]
    with rig.server_cpu_during(cost):
        wall, cpu, done = _timed(
            [*cmd, *(["--check"] if check else [])], Path(__file__).resolve().parent.parent
        )
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{done.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(done.stdout)
    if out["wrong"]:  # --check: a flag not revoked; else: a read back that disagreed
        raise RuntimeError(f"{module}: {out['wrong']} targets not revoked")
    return wall, cpu, out, cost


def _median(figures: list[Figure]) -> Figure:
    runs = [f.seconds for f in figures]
    middle = sorted(figures, key=lambda f: f.seconds)[len(figures) // 2]
    return Figure(
        statistics.median(runs),
        runs,
        statistics.median(f.cpu for f in figures if f.cpu is not None),
        middle.server_cpu,
        middle.reads,
        middle.writes,
        middle.calls,
    )


def _bound(bound: Bound) -> dict[str, Any]:
    return {
        "revoke": bound.revoke,
        "read_only": bound.read_only,
        "plan": bound.plan,
        "apply": bound.apply,
        "concurrency": bound.concurrency,
        "limited_by": bound.limited_by,
    }
