"""TAB at 3 a.m.: the shell offers the inventory's names and the store's op ids, through
the installed command as bash, zsh and fish ask it, and never shows an error."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Workspace, killswitch_command

INVENTORY = {
    "version": 1,
    "models": {"mythos-5": {}, "fable-5": {}},
    "providers": {
        "aws-prod": {
            "type": "aws",
            "regions": ["us-east-1", "eu-west-1"],
            "mechanisms": ["ssm-flag"],
        },
        "edge": {
            "type": "kubernetes",
            "region": "eu-central-1",
            "context": "edge",
            "namespaces": ["models"],
            "mechanisms": ["configmap-flag"],
        },
    },
    "scopes": {"outside-us": {"models": ["all"], "regions": ["not:us-*"]}},
}


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "killswitch.yaml"
    path.write_text(yaml.safe_dump(INVENTORY, sort_keys=False))
    return path


def _tab(words: str, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> list[str]:
    """What click's bash protocol answers for ``words`` (the last one being completed),
    as the installed command, with nothing on stderr."""
    split = words.split(" ")
    done = subprocess.run(
        [killswitch_command()],
        env={
            **os.environ,
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(split) - 1),
            "_KILLSWITCH_COMPLETE": "bash_complete",
            **(env or {}),
        },
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if line]


def test_tab_offers_the_inventorys_models_regions_providers_and_scopes(inventory: Path) -> None:
    base = f"killswitch -i {inventory} revoke"

    assert _tab(f"{base} -m ") == ["all", "mythos-5", "fable-5"]
    assert _tab(f"{base} --model my") == ["mythos-5"]
    assert _tab(f"{base} -r ") == ["all", "us-east-1", "eu-west-1", "eu-central-1"]
    assert _tab(f"{base} -r eu-") == ["eu-west-1", "eu-central-1"]
    assert _tab(f"{base} -p ") == ["aws-prod", "edge", "aws", "kubernetes"]
    assert _tab(f"{base} --scope ") == ["outside-us"]


def test_after_an_exclude_tab_offers_the_names_with_it(inventory: Path) -> None:
    base = f"killswitch -i {inventory} revoke"

    assert _tab(f"{base} -r not:eu-") == ["not:eu-west-1", "not:eu-central-1"]
    assert _tab(f"{base} -m !fa") == ["!fable-5"]


def test_tab_reads_the_inventory_named_after_the_command_or_in_the_environment(
    inventory: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**INVENTORY, "models": {"haiku-9": {}}}, sort_keys=False))

    assert _tab(f"killswitch status -i {other} -m ") == ["all", "haiku-9"]
    assert _tab("killswitch status -m ", env={"KILLSWITCH_INVENTORY": str(other)}) == [
        "all",
        "haiku-9",
    ]
    # --inventory beats the environment, as it does when the command runs.
    assert (
        _tab(
            f"killswitch --inventory {inventory} status -m h",
            env={"KILLSWITCH_INVENTORY": str(other)},
        )
        == []
    )


def test_no_inventory_or_a_broken_one_means_no_candidates_and_no_error(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nmodels: [unclosed\n")

    assert _tab("killswitch status -m ", cwd=tmp_path) == []
    assert _tab(f"killswitch -i {broken} status -r ") == []
    assert _tab(f"killswitch -i {tmp_path} ops show ") == []  # a folder, not a file
    unanswered = tmp_path / "shared.yaml"  # a shared store nobody answers for
    state = "dynamodb://killswitch-state?region=us-east-1&endpoint_url=http://127.0.0.1:9"
    unanswered.write_text(yaml.safe_dump({**INVENTORY, "state": state}, sort_keys=False))
    assert _tab(f"killswitch -i {unanswered} approve ") == []
    hostile = tmp_path / "hostile.yaml"  # read before it is validated: names unchecked
    models = {"mythos-5": {}, "m\x1b[2J": {}, "m\nplain,rm -rf": {}}
    hostile.write_text(yaml.safe_dump({**INVENTORY, "models": models}, sort_keys=False))
    assert _tab(f"killswitch -i {hostile} status -m m") == ["mythos-5"]


def test_tab_offers_every_target_id_with_the_account(inventory: Path) -> None:
    doc = {**INVENTORY, "providers": {"aws-org": {
        "type": "aws", "regions": ["eu-west-1"], "mechanisms": ["ssm-flag"],
        "role_arn": "arn:aws:iam::{account}:role/killswitch-operator",
        "accounts": [{"id": "111111111111"}, {"id": "222222222222"}],
    }}, "scopes": {}}  # fmt: skip
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))

    assert sorted(_tab(f"killswitch -i {inventory} status --target aws:aws-org@2")) == [
        f"aws:aws-org@222222222222/eu-west-1/ssm-flag/{m}" for m in ("fable-5", "mythos-5")
    ]


def test_approve_offers_the_restores_awaiting_approval_and_ops_show_every_op(
    ws: Workspace,
) -> None:
    revoke = ws.run("revoke", "-m", "all", "--reason", "order", "--yes", "-o", "json")
    restore = ws.run("restore", "-m", "mythos-5", "--reason", "done", "--yes", "-o", "json")
    assert (revoke.code, restore.code) == (0, 5)
    revoked, restoring = revoke.json()["op"], restore.json()["op"]

    base = f"killswitch -i {ws.inventory}"
    assert _tab(f"{base} approve ") == [restoring]
    assert _tab(f"{base} decline op-") == [restoring]
    assert sorted(_tab(f"{base} ops show ")) == sorted([revoked, restoring])
    assert _tab(f"{base} ops resume ") == []  # nothing is partial or interrupted


def test_runbook_resume_offers_the_runs_that_did_not_go_through(inventory: Path) -> None:
    from killswitch.state.sqlite import SqliteStore

    state = inventory.parent / ".killswitch" / "state.db"
    assert _tab(f"killswitch -i {inventory} runbook resume ") == []
    assert not state.exists()  # TAB made no store
    store = SqliteStore(state)
    for run, code in (("run-stopped", 3), ("run-through", 0), ("run-crashed", None)):
        store.append_audit("alice", "run.started", run, {"runbook": "lockdown"})
        if code is not None:
            store.append_audit("alice", "run.finished", run, {"status": "x", "code": code})

    assert _tab(f"killswitch -i {inventory} runbook resume run-") == [
        "run-crashed",
        "run-stopped",
    ]


def test_the_scripts_for_each_shell_ask_the_command(inventory: Path) -> None:
    for shell in ("bash", "zsh", "fish"):
        done = subprocess.run(
            [killswitch_command(), "completion", shell], capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"_KILLSWITCH_COMPLETE={shell}_complete" in done.stdout.replace("'", "")


def test_a_real_bash_completes_an_exclusion_and_a_target_id_after_their_colon(
    inventory: Path, tmp_path: Path
) -> None:
    # Each line is typed with a TAB at its end; readline must put the rest on the line.
    _bash(
        tmp_path,
        inventory,
        ("killswitch revoke -r not:us-", "killswitch revoke -r not:us-east-1 "),
        ("killswitch status --target aws:aws-prod/us-east-1/ssm-flag/my",
         "killswitch status --target aws:aws-prod/us-east-1/ssm-flag/mythos-5 "),
        ("killswitch revoke -s out", "killswitch revoke -s outside-us "),
    )  # fmt: skip


def _bash(home: Path, inventory: Path, *lines: tuple[str, str]) -> None:
    """An interactive bash in a pseudo-terminal with our script sourced: for each
    (typed, completed), type ``typed`` and a TAB, and see readline make it ``completed``;
    then clear the line."""
    leader, follower = pty.openpty()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(home),
        "INPUTRC": os.devnull,
        "PS1": "$ ",
        "TERM": "dumb",
        "KILLSWITCH_INVENTORY": str(inventory),
    }
    bash = subprocess.Popen(
        ["bash", "--norc", "--noprofile", "-i"],
        stdin=follower, stdout=follower, stderr=follower, env=env, cwd=home,
    )  # fmt: skip
    os.close(follower)
    screen = b""

    def until(wanted: bytes) -> None:
        nonlocal screen
        deadline = time.monotonic() + 60  # generous: only a broken completion reaches it
        while wanted not in screen:
            assert time.monotonic() < deadline, f"{wanted!r} never shown: {screen!r}"
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                screen += os.read(leader, 65536)

    os.write(leader, b'eval "$(killswitch completion bash)"; echo sourced\n')
    until(b"sourced\r\n")
    for n, (typed, completed) in enumerate(lines):
        os.write(leader, typed.encode() + b"\t")
        until(completed.encode())
        os.write(leader, f"\x15echo line-{n}-cleared\n".encode())  # Ctrl-U drops the line
        until(f"line-{n}-cleared\r\n".encode())
    os.write(leader, b"exit\n")
    bash.wait(timeout=60)
    os.close(leader)
