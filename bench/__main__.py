"""``python -m bench``: run the benchmarks and write results, a report and a plot.

python -m bench                 # N = 100, 1,000, 5,000, then the seed-scale fleet (6,000)
python -m bench --quick         # N = 100, 1,000, the seed-scale fleet at 10 accounts
python -m bench --plot docs/benchmarks.png
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.run import Bench, Settings  # noqa: E402
from bench.seed import SeedBench, SeedShape  # noqa: E402
from bench.seed import as_json as seed_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N=100 and 1,000, one run each, boto3 loop on 150 targets (~3 min)",
    )
    parser.add_argument("--sizes", help="comma-separated N (default 100,1000,5000); 0: none")
    parser.add_argument("--rtt", type=float, default=0.05, help="round trip, seconds")
    parser.add_argument("--jitter", type=float, default=0.005, help="± seconds, uniform")
    parser.add_argument("--repeats", type=int, help="killswitch runs per figure (median)")
    parser.add_argument(
        "--baseline-max",
        type=int,
        help="the boto3 loop runs on at most this many targets and is scaled to N "
        "(default 1000, the read-only loop on half as many; 150 with --quick)",
    )
    parser.add_argument(
        "--server",
        choices=["lean", "moto"],
        default="lean",
        help="the AWS stand-in behind the proxy (default lean: see bench/leanserver.py)",
    )
    parser.add_argument(
        "--killswitch",
        help="the command to measure (default: the installed `killswitch`), e.g. "
        "'env PYTHONPATH=/tmp/copy python -m killswitch' to time a change",
    )
    parser.add_argument(
        "--tuned",
        default="64,16",
        help="concurrency total,per_region of the tuned run (default 64,16)",
    )
    parser.add_argument("--aws-cli", default=os.environ.get("AWS_CLI"), help="path to `aws`")
    parser.add_argument("--no-aws-cli", action="store_true", help="skip the aws CLI loop")
    parser.add_argument(
        "--aws-cli-targets", type=int, default=8, help="targets the aws CLI loop runs on"
    )
    parser.add_argument(
        "--seed-accounts",
        type=int,
        help="accounts in the seed-scale fleet (2 models × 30 regions × 2 levers each; "
        "default 50, 10 with --quick; 0 skips it)",
    )
    parser.add_argument(
        "--workers",
        help="worker counts the seed-scale revoke runs with (default 0,1,2; 0,2 with --quick)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".bench", help="results folder")
    parser.add_argument("--plot", type=Path, help="where the PNG goes (default OUT/benchmarks.png)")
    args = parser.parse_args(argv)

    sizes = (
        [int(n) for n in args.sizes.split(",") if int(n) > 0]
        if args.sizes
        else ([100, 1000] if args.quick else [100, 1000, 5000])
    )
    args.out.mkdir(parents=True, exist_ok=True)
    # Children compile once into this cache, as an installed package would have
    # (PYTHONDONTWRITEBYTECODE would make every run compile killswitch afresh).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(args.out.resolve() / "pycache")
    settings = Settings(
        sizes=sizes,
        rtt=args.rtt,
        jitter=args.jitter,
        repeats=args.repeats or (1 if args.quick else 3),
        baseline_max=args.baseline_max or (150 if args.quick else 1000),
        aws_cli="" if args.no_aws_cli else args.aws_cli,  # "": skipped
        aws_cli_targets=args.aws_cli_targets,
        workdir=args.out / "work",
        startup_repeats=5 if args.quick else 10,
        server=args.server,
        killswitch=shlex.split(args.killswitch) if args.killswitch else [],
        tuned=(int(args.tuned.split(",")[0]), int(args.tuned.split(",")[1])),
    )
    settings.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    bench = Bench(settings)
    accounts = args.seed_accounts if args.seed_accounts is not None else (10 if args.quick else 50)
    counts = [int(w) for w in (args.workers or ("0,2" if args.quick else "0,1,2")).split(",")]
    try:
        results = bench.run()
        if accounts > 0:
            seeded = SeedBench(bench.rig, settings.workdir, bench.ks, settings.rtt)
            shape = SeedShape(accounts=accounts)
            # The loop runs on 300 targets (150 with --quick), scaled to the fleet.
            outcome = seeded.run(shape, counts, baseline_max=150 if args.quick else 300)
            results["seed"] = seed_json(outcome)
    finally:
        bench.close()
    results["machine"] = report.machine()
    results["busy"] = report.busy_processes()
    results["wall_seconds"] = time.monotonic() - started
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    text = report.markdown(results)
    (args.out / "report.md").write_text(text)
    plot_path = args.plot or args.out / "benchmarks.png"
    plotted = report.plot(results, plot_path)
    report.plot_workers(results, plot_path.with_name(plot_path.stem + "-workers.png"))
    print(text)
    m = results["machine"]
    print(
        f"machine: {m['cpus']} × {m['cpu']}, {m['memory']}, Python {m['python']}, "
        f"load at the end {m['load']}; run took {results['wall_seconds']:.0f}s"
    )
    print(
        f"results: {args.out / 'results.json'}; plot: "
        + (str(plot_path) if plotted else "skipped (pip install matplotlib)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
