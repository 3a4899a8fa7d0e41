"""A new user's first half hour: `make sandbox`, paste the two lines it prints, then paste
the README's tour of the seed incident, command by command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = [sys.executable, str(ROOT / "demo" / "sandbox.py")]


def _run(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, check=False, **kwargs)


def _tour() -> str:
    """The fenced block after the README's tour marker, exactly as a reader copies it."""
    readme = (ROOT / "README.md").read_text()
    after = readme[readme.index("<!-- tour:") :]
    block = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert block is not None
    return block.group(1)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    """`make sandbox` (demo/sandbox.py up) in a folder of the test's: its environment and
    the two lines it tells the user to paste."""
    env = {**os.environ, "KILLSWITCH_SANDBOX_DIR": str(tmp_path / "sandbox")}
    for name in ("KILLSWITCH_INVENTORY", "AWS_PROFILE", "AWS_ACCESS_KEY_ID"):
        env.pop(name, None)
    up = _run([*SANDBOX, "up"], env, timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        yield env, up.stdout.strip().splitlines()[-2:]
    finally:
        down = _run([*SANDBOX, "down"], env, timeout=60)
        assert down.returncode == 0, down.stderr


def test_the_readme_tour_runs_as_pasted_against_the_sandbox(
    sandbox: tuple[dict[str, str], list[str]], tmp_path: Path
) -> None:
    env, lines = sandbox
    assert lines[0].startswith('export PATH="') and lines[1].startswith("set -a; . ")
    here = tmp_path / "shell"
    here.mkdir()
    (here / "runbooks").symlink_to(ROOT / "runbooks")
    script = "\n".join(lines) + "\n" + _tour() + 'echo "op=$op"\n'

    shell = _run(["bash", "-c", script], env, cwd=here, timeout=400)

    out = shell.stdout
    assert shell.returncode == 0, shell.stdout[-3000:] + shell.stderr[-3000:]
    assert "valid — 70 targets: 2 model(s) (fable-5, mythos-5) in 11 region(s)" in out
    assert "reachable: the state store and every provider answered" in out
    assert "next: killswitch revoke --scope outside-us --reason '…'" in out
    assert re.search(r"export-control-lockdown: run run-\w+ complete \(exit 0\)", out)
    assert "ok — 12 targets" in out and "12 effective" in out  # verify --effect
    assert "in-sync — 70 targets" in out  # drift
    op = re.findall(r"^op=(op-\w+)$", out, re.MULTILINE)[-1]
    # Read what the tour left, as alice would from the same shell.
    shown = _run(["bash", "-c", "\n".join([*lines, f"killswitch ops show {op} -o json"])], env)
    restore = json.loads(shown.stdout)
    assert shown.returncode == 0 and restore["status"] == "complete"
    assert restore["operation"]["action"] == "restore"
    assert sorted(restore["approvals"]) == ["alice@123456789012", "bob@123456789012"]
