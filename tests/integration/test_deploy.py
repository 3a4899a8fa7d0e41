"""The shipped schedules are valid: the Kubernetes manifests against the API schemas,
and the killswitch command each schedule runs, run for real against a workspace."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import Workspace

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _manifests() -> list[dict[str, Any]]:
    text = (DEPLOY / "kubernetes/drift-cronjob.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("manifest", _manifests(), ids=lambda m: str(m["kind"]))
def test_manifest_matches_the_kubernetes_schema(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, "1.30.0", strict=True)


def test_cronjob_never_overlaps_or_retries_an_answer() -> None:
    [job] = [m for m in _manifests() if m["kind"] == "CronJob"]

    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0


def _run_schedule(ws: Workspace, argv: list[str], tmp_path: Path) -> Path:
    """Run a schedule's killswitch arguments against the workspace; return the metrics file."""
    metrics = tmp_path / "textfile" / "killswitch.prom"
    args = list(argv)
    args[args.index("--metrics-file") + 1] = str(metrics)
    for flag in ("--inventory", "--actor"):  # the workspace supplies both
        if flag in args:
            del args[args.index(flag) : args.index(flag) + 2]
    result = ws.run(*args)
    assert result.code == 0, result.stderr
    assert result.json()["status"] == "in-sync"
    return metrics


def test_the_cronjob_command_runs(ws: Workspace, tmp_path: Path) -> None:
    [job] = [m for m in _manifests() if m["kind"] == "CronJob"]
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]

    assert _run_schedule(ws, container["args"], tmp_path).exists()


def test_the_systemd_service_command_runs(ws: Workspace, tmp_path: Path) -> None:
    text = (DEPLOY / "systemd/killswitch-drift.service").read_text().replace("\\\n", " ")
    found = re.search(r"^ExecStart=(.+)$", text, re.M)
    assert found is not None
    argv = shlex.split(found.group(1))

    assert argv[0].endswith("/killswitch")
    assert _run_schedule(ws, argv[1:], tmp_path).exists()
    assert "SuccessExitStatus=2" in text  # drift found is an answer, not a failed unit


def test_the_cron_line_command_runs(ws: Workspace, tmp_path: Path) -> None:
    lines = (DEPLOY / "cron/killswitch-drift.cron").read_text().splitlines()
    [line] = [entry for entry in lines if entry and not entry.startswith("#")]
    minute, hour, day, month, weekday, user, command = line.split(maxsplit=6)

    assert (minute, hour, day, month, weekday, user) == ("*/10", "*", "*", "*", "*", "killswitch")
    assert "flock -n" in command
    argv = shlex.split(command.split(";", 1)[1].split(">>")[0])
    killswitch = next(i for i, word in enumerate(argv) if word.endswith("/killswitch"))
    assert _run_schedule(ws, argv[killswitch + 1 :], tmp_path).exists()
