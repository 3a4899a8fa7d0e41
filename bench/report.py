"""Turn a run's results into Markdown tables and a plot (time vs N)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    try:
        mem = next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{int(mem) / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "python": sys.version.split()[0],
        "os": f"{platform.system()} {platform.release()}",
        "load": load,
        "boto3": _version("boto3"),
        "moto": _version("moto"),
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "-"


def busy_processes(limit: int = 5) -> list[str]:
    """The busiest other processes when the run ended (the machine may be shared)."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return []
    return [line.strip() for line in out.splitlines()[1 : limit + 1]]


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f}" if seconds < 100 else f"{seconds:.0f}"


def markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    tuned = settings.get("tuned", {"total": 64, "per_region": 16})
    lines = [
        f"Round trip {settings['rtt'] * 1000:.0f} ms ± {settings['jitter'] * 1000:.0f} ms "
        f"(uniform), server: {settings.get('server', 'lean')}. killswitch runs with its "
        "defaults (concurrency 32 in all, 8 per region; AWS's published SSM rates: "
        "PutParameter 3/s, GetParameter 40/s per account and region) unless a column says "
        f"otherwise; its figures are the median of {settings['repeats']} runs (1 at "
        "N=5,000). Every time runs from process start to exit. `~`: scaled linearly "
        "from a subset of the targets.",
        "",
        "Verified revoke (seconds):",
        "",
        "| N | fleet | lower bound | killswitch | × bound | sequential boto3 loop "
        "| boto3 ÷ killswitch | aws CLI loop | aws CLI ÷ killswitch |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in results["sizes"]:
        f = size["figures"]
        ks, b3, cli = f["killswitch revoke"], f["boto3 loop revoke"], f.get("aws CLI loop revoke")
        lb = size["bound_default"]["revoke"]
        lines.append(
            f"| {size['n']:,} | {size['shape']} | {_s(lb)} | {_s(ks['seconds'])} "
            f"| {ks['seconds'] / lb:.2f} | {_mark(b3)}{_s(b3['seconds'])} "
            f"| {b3['seconds'] / ks['seconds']:.1f}× "
            f"| {_mark(cli)}{_s(cli['seconds']) if cli else '-'} "
            f"| {_ratio(cli, ks['seconds'])} |"
        )
    lines += [
        "",
        "The engine itself: SSM rate limits raised to 10,000/s in the inventory "
        "(`rate_limits`), at the default concurrency and at "
        f"{tuned['total']} in all, {tuned['per_region']} per region "
        "(`policy.concurrency`):",
        "",
        "| N | lower bound, 32/8 | killswitch, 32/8 | × bound "
        f"| lower bound, {tuned['total']}/{tuned['per_region']} "
        f"| killswitch, {tuned['total']}/{tuned['per_region']} | × bound "
        "| boto3 ÷ killswitch |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in results["sizes"]:
        f = size["figures"]
        raised = f["killswitch revoke, raised limits"]
        fast = f.get("killswitch revoke, raised limits, tuned concurrency")
        lbr = size["bound_raised"]["revoke"]
        lbt = size.get("bound_tuned", {}).get("revoke")
        best = fast["seconds"] if fast else raised["seconds"]
        lines.append(
            f"| {size['n']:,} | {_s(lbr)} | {_s(raised['seconds'])} "
            f"| {raised['seconds'] / lbr:.2f} | {_s(lbt)} "
            f"| {_s(fast['seconds']) if fast else '-'} "
            f"| {_ratio(fast, lbt, '.2f', '')} "
            f"| {f['boto3 loop revoke']['seconds'] / best:.1f}× |"
        )
    lines += [
        "",
        "Nothing to do, and drift (seconds; writes in brackets):",
        "",
        "| N | bound (reads only) | killswitch re-run | boto3 loop re-run | killswitch drift "
        "| boto3 loop drift | aws CLI loop drift |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in results["sizes"]:
        f = size["figures"]
        rerun, drift, b3 = (
            f["killswitch re-run"],
            f["killswitch drift"],
            f["boto3 loop re-run / drift"],
        )
        cli = f.get("aws CLI loop re-run / drift")
        lines.append(
            f"| {size['n']:,} | {_s(size['bound_default']['read_only'])} "
            f"| {_s(rerun['seconds'])} ({rerun['writes']} writes) "
            f"| {_mark(b3)}{_s(b3['seconds'])} ({b3['writes']} writes) "
            f"| {_s(drift['seconds'])} | {_mark(b3)}{_s(b3['seconds'])} "
            f"| {_mark(cli)}{_s(cli['seconds']) if cli else '-'} |"
        )
    lines += [
        "",
        "Calls and CPU per run (CPU: the measured process; rig: server + proxy during the run):",
        "",
        "| N | run | seconds | reads | writes | all calls | CPU s | rig CPU s | rig floor s |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    capacity = results["rig_capacity"]
    for size in results["sizes"]:
        for label, fig in size["figures"].items():
            if label.startswith("aws CLI"):
                continue
            floor = fig["calls"] / capacity if fig["calls"] else None
            lines.append(
                f"| {size['n']:,} | {label} | {_mark(fig)}{_s(fig['seconds'])} "
                f"| {fig['reads'] if fig['reads'] is not None else '-'} "
                f"| {fig['writes'] if fig['writes'] is not None else '-'} "
                f"| {fig['calls'] if fig['calls'] is not None else '-'} | {_s(fig['cpu'])} "
                f"| {_s(fig['server_cpu'])} | {_s(floor)} |"
            )
    lines += [
        "",
        "Client CPU per call, killswitch against the plain threaded boto3 script "
        "(bench/boto3_threaded.py, 32 threads) on the same fleet in the same run:",
        "",
        "| N | killswitch revoke, ms/call | raised limits, ms/call "
        "| plain threaded boto3, ms/call | killswitch ÷ plain |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in results["sizes"]:
        f = size["figures"]
        plain = _per_call(f.get("boto3 threaded revoke"))
        ks = _per_call(f["killswitch revoke"])
        raised = _per_call(f["killswitch revoke, raised limits"])
        best = min(x for x in (ks, raised) if x is not None) if (ks or raised) else None
        lines.append(
            f"| {size['n']:,} | {_ms(ks)} | {_ms(raised)} | {_ms(plain)} "
            f"| {f'{best / plain:.2f}' if best and plain else '-'} |"
        )
    if results.get("seed"):
        lines += seed_markdown(results["seed"], settings)
    lines += ["", "Checked in this run:", ""]
    for size in results["sizes"]:
        lines += [f"- N={size['n']:,}: {check}" for check in size.get("checks", [])]
    for check in (results.get("seed") or {}).get("checks", []):
        lines.append(f"- seed-scale fleet: {check}")
    lines += ["", "Start-up (median of runs, seconds):", "", "| command | median | runs |"]
    lines.append("| --- | ---: | --- |")
    for item in results["startup"]:
        runs = ", ".join(f"{r:.3f}" for r in item["runs"])
        lines.append(f"| `{item['label']}` | {item['median']:.3f} | {runs} |")
    bare = results["startup"][0]["median"]
    helped = results["startup"][1]["median"]
    lines += [
        "",
        f"`killswitch --help` − bare Python: {(helped - bare) * 1000:.0f} ms. "
        f"Rig capacity (server + zero-delay proxy, 32 client threads): {capacity:.0f} calls/s. "
        + (
            f"aws CLI: {results['aws_cli_per_call'] * 1000:.0f} ms per call."
            if results.get("aws_cli_per_call")
            else "aws CLI: not measured (not installed)."
        ),
    ]
    return "\n".join(lines) + "\n"


def _per_call(figure: dict[str, Any] | None) -> float | None:
    if not figure or figure.get("cpu") is None or not figure.get("calls"):
        return None
    return float(figure["cpu"]) / float(figure["calls"])


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def seed_markdown(seed: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The seed-scale fleet: each worker count against the bound for the cores it uses."""
    figures = seed["figures"]
    plain = _per_call(figures.get("boto3 threaded revoke"))
    loop = figures.get("boto3 loop revoke")
    lines = [
        "",
        f"Seed-scale fleet: {seed['shape']} = {seed['n']:,} targets, "
        f"{seed['calls_per_revoke']:,} calls for a verified revoke (concurrency "
        f"{seed['concurrency']}). Round-trip bound {_s(seed['rtt_bound'])} s; the bound for "
        "the cores used is the longer of it and the plain script's CPU per call "
        f"({_ms(plain)} ms) × calls ÷ min(cores, processes making calls); "
        f"{seed['cores']} cores here.",
        "",
        "| run | seconds | bound for the cores used | × bound | CPU s | ms CPU/call "
        "| ÷ plain | boto3 loop ÷ |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, fig in figures.items():
        per_call = _per_call(fig)
        bound = None
        if label.startswith("killswitch revoke, "):
            workers = int(label.split(", ")[1].split()[0])
            bound = seed["bounds"].get(str(workers))
        over = f"{fig['seconds'] / bound:.2f}" if bound else "-"
        against = f"{per_call / plain:.2f}" if per_call and plain else "-"
        faster = "-"
        if loop and label != "boto3 loop revoke":
            faster = f"{loop['seconds'] / fig['seconds']:.1f}×"
        lines.append(
            f"| {label} | {_mark(fig)}{_s(fig['seconds'])} | {_s(bound)} | {over} "
            f"| {_s(fig['cpu'])} | {_ms(per_call)} | {against} | {faster} |"
        )
    return lines


def plot_workers(results: dict[str, Any], path: Path) -> bool:
    """The seed-scale revoke against worker count, with its bounds; False without
    matplotlib or a seed run."""
    seed = results.get("seed")
    if not seed:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    counts = seed["workers"]
    label = "killswitch revoke, {} worker{}"
    times = [seed["figures"][label.format(w, "" if w == 1 else "s")]["seconds"] for w in counts]
    bounds = [seed["bounds"][str(w)] for w in counts]
    plain = seed["figures"]["boto3 threaded revoke"]["seconds"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    ax.plot(counts, times, "o-", color="#1f77b4", label="killswitch verified revoke")
    ax.plot(counts, bounds, "x--", color="#1f77b4", alpha=0.6, label="bound for the cores used")
    ax.axhline(plain, color="#ff7f0e", linestyle=":", label="plain threaded boto3 script")
    ax.set_xticks(counts, [str(w) if w else "0 (threads)" for w in counts])
    ax.set_xlabel("worker processes")
    ax.set_ylabel("seconds")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"Seed-scale fleet: {seed['n']:,} targets, {results['machine']['cpus']} cores "
        f"(load {results['machine']['load'].split()[0]} at the end)",
        fontsize=10,
    )
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _ratio(
    figure: dict[str, Any] | None, over: float | None, spec: str = ".0f", unit: str = "×"
) -> str:
    if not figure or not over:
        return "-"
    return f"{figure['seconds'] / over:{spec}}{unit}"


def _mark(figure: dict[str, Any] | None) -> str:
    return "~" if figure and figure.get("scaled_from") else ""


def plot(results: dict[str, Any], path: Path) -> bool:
    """time vs N, log-log; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = results["sizes"]
    ns = [s["n"] for s in sizes]

    def series(label: str) -> list[float]:
        return [s["figures"].get(label, {}).get("seconds", float("nan")) for s in sizes]

    cli_from = next(
        (
            s["figures"]["aws CLI loop revoke"]["scaled_from"]
            for s in sizes
            if "aws CLI loop revoke" in s["figures"]
        ),
        None,
    )
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    ax.plot(
        ns,
        series("aws CLI loop revoke"),
        "v:",
        color="#999999",
        label=f"aws CLI loop (scaled from {cli_from} targets)",
    )
    ax.plot(ns, series("boto3 loop revoke"), "s-", color="#d62728", label="sequential boto3 loop")
    scaled = [
        (s["n"], s["figures"]["boto3 loop revoke"]["seconds"])
        for s in sizes
        if s["figures"].get("boto3 loop revoke", {}).get("scaled_from")
    ]
    if scaled:  # hollow: the loop ran on a subset and was scaled to N
        ax.plot(*zip(*scaled, strict=True), "s", color="#d62728", markerfacecolor="white")
    ax.plot(
        ns,
        series("killswitch revoke"),
        "o-",
        color="#1f77b4",
        label="killswitch (default rate limits)",
    )
    ax.plot(
        ns,
        [s["bound_default"]["revoke"] for s in sizes],
        "x--",
        color="#1f77b4",
        alpha=0.6,
        label="lower bound (default rate limits)",
    )
    ax.plot(
        ns,
        series("killswitch revoke, raised limits"),
        "o-",
        color="#2ca02c",
        label="killswitch (raised rate limits)",
    )
    ax.plot(
        ns,
        [s["bound_raised"]["revoke"] for s in sizes],
        "x--",
        color="#2ca02c",
        alpha=0.6,
        label="lower bound (raised rate limits)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns, [f"{n:,}" for n in ns])
    ax.set_xlabel("targets (N)")
    ax.set_ylabel("seconds to a verified revoke")
    settings = results["settings"]
    ax.set_title(
        f"Time to a verified revoke, {settings['rtt'] * 1000:.0f} ms round trip "
        "(hollow: scaled from a subset)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.report RESULTS.json [PNG]``: the tables again, and the plot."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    results = json.loads(Path(args[0]).read_text())
    print(markdown(results))
    if len(args) > 1:
        plot(results, Path(args[1]))


if __name__ == "__main__":
    main()
