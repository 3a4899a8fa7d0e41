"""A runbook at a terminal: it asks once, showing every change of every step, and says
which step runs as it runs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import MODELS, NON_US, US, Workspace
from tests.e2e.test_terminal import _at_terminal

LOCKDOWN = str(Path(__file__).resolve().parents[2] / "runbooks" / "export-control-lockdown.yaml")


def test_a_runbook_asks_once_with_the_whole_blast_radius_then_shows_each_step_live(
    ws: Workspace,
) -> None:
    code, screen = _at_terminal(ws, "y", "runbook", "run", LOCKDOWN, "--var", "ticket=INC-7")

    assert code == 0, screen
    assert screen.count("[y/N]") == 1  # the runbook's confirm step and both change steps
    question = screen[: screen.index("[y/N]")]
    assert "Lock down mythos-5, fable-5 (INC-7): revoke outside the US" in question
    assert "step 2 [revoke] Revoke everywhere outside the US:" in question
    assert "step 3 [restrict] Restrict US regions to the verified audience:" in question
    assert "step 4 [revoke] Cut off the partners in scope, every region: selects nothing" in (
        question
    )
    assert "the whole run changes 16 targets: 2 model(s) (fable-5, mythos-5) in 8 region(s)" in (
        question
    )
    assert "run export-control-lockdown (2 change steps) now? [y/N]" in screen
    # Each step's header comes before its result, in the order they ran.
    after = screen[screen.index("[y/N]") :]
    marks = [after.index(f"── step {n}/8 ") for n in range(1, 9)]
    assert marks == sorted(marks)
    revoke = after[marks[1] : marks[2]]
    assert "   ok op op-" in revoke and "complete" in revoke
    for model in MODELS:
        assert all(ws.posture(r, model) == "revoked" for r in NON_US)
        assert all(ws.posture(r, model) == "restricted" for r in US)


def test_no_to_the_one_question_changes_and_records_nothing(ws: Workspace) -> None:
    code, screen = _at_terminal(ws, "n", "runbook", "run", LOCKDOWN, "--var", "ticket=INC-7")

    assert code == 64
    assert "not confirmed; nothing was changed" in screen
    assert "── step" not in screen
    assert all(ws.flag(r, m) is None for r in US + NON_US for m in MODELS)
    events = json.loads(ws.run("audit", "list", "-o", "json").stdout)["events"]
    assert events == []
