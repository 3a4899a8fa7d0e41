"""CLI start-up: `killswitch --help` and `killswitch status` against a bare interpreter."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.fleet import small_inventory
from bench.rig import child_env


@dataclass(frozen=True)
class Startup:
    label: str
    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def killswitch_command() -> list[str]:
    script = Path(sys.executable).parent / "killswitch"
    return [str(script)] if script.exists() else [sys.executable, "-m", "killswitch"]


def _time(cmd: list[str], cwd: Path, expect: int = 0) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=cwd, env=child_env(), capture_output=True, stdin=subprocess.DEVNULL, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != expect:
        raise RuntimeError(f"{cmd} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return seconds


def measure(workdir: Path, endpoint: str, repeats: int, ks: list[str]) -> list[Startup]:
    """Interleaved, so a burst of load on the machine hits every command alike."""
    workdir.mkdir(parents=True, exist_ok=True)
    inventory = workdir / "killswitch.yaml"
    inventory.write_text(small_inventory(endpoint))
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "killswitch --help": [*ks, "--help"],
        "python -c 'import boto3'": [sys.executable, "-c", "import boto3"],
        "killswitch status (4 targets, 1 round trip)": [
            *ks,
            "--inventory",
            str(inventory),
            "status",
            "--output",
            "json",
        ],
    }
    for cmd in commands.values():  # warm the page cache and .pyc files
        _time(cmd, workdir)
    warm = [
        *ks,
        "--inventory",
        str(inventory),
        "--actor",
        "bench",
        "revoke",
        "-m",
        "all",
        "--reason",
        "warm-up",
        "--yes",
        "--output",
        "json",
    ]
    _time(warm, workdir)  # compiles the engine and the AWS lever too
    runs: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeats):
        for label, cmd in commands.items():
            runs[label].append(_time(cmd, workdir))
    return [Startup(label, found) for label, found in runs.items()]


def heavy_imports(limit: int = 8) -> list[tuple[str, float]]:
    """The slowest top-level imports of `killswitch --help` (python -X importtime)."""
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "import sys; sys.argv=['killswitch','--help']\n"
            "from killswitch.cli import main\n"
            "try: main()\nexcept SystemExit: pass",
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        check=False,
    )
    found = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line[12:].split("|")
        name, cumulative = name[1:], cumulative.strip()
        if not name.startswith(" ") and cumulative.isdigit():  # top level only
            found.append((name, int(cumulative) / 1e6))
    return sorted(found, key=lambda item: -item[1])[:limit]
