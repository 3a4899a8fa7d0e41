"""The shipped runbooks, run end to end against moto and a simulated partner; postures
checked by reading the servers directly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MODELS, NON_US, US, Workspace
from tests.support.faultproxy import FaultProxy, aws_error, for_region
from tests.support.partnersim import PartnerSim

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
PARTNER_REGIONS = ["eu-west", "us-east"]


@pytest.fixture
def acme() -> Iterator[PartnerSim]:
    sim = PartnerSim(
        secret="acme-secret",
        key_id="ks",
        regions=PARTNER_REGIONS,
        models={"mythos-5": "acme-m5", "fable-5": "acme-f5"},
    ).start()
    sim.behave(poll_after=0)
    yield sim
    sim.stop()


def _with_partner(ws: Workspace, sim: PartnerSim) -> Workspace:
    secret = ws.path / "acme.secret"
    secret.write_text("acme-secret")
    ws.write_inventory(
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": US + NON_US,
                "mechanisms": ["ssm-flag"],
                "endpoint_url": ws.endpoint,
            },
            "acme": {
                "type": "partner",
                "base_url": sim.url,
                "key_id": "ks",
                "secret_file": str(secret),
                "regions": PARTNER_REGIONS,
                "models": {"mythos-5": "acme-m5", "fable-5": "acme-f5"},
            },
        },
        scopes={},
    )
    return ws


def _run(ws: Workspace, book: str, *args: str, actor: str = "alice") -> tuple[int, dict]:  # type: ignore[type-arg]
    result = ws.run(
        "runbook", "run", str(RUNBOOKS / f"{book}.yaml"), *args, "-o", "json", actor=actor
    )
    return result.code, result.json() if result.stdout.strip() else {"stderr": result.stderr}


def test_export_control_lockdown_end_to_end(ws: Workspace, acme: PartnerSim) -> None:
    _with_partner(ws, acme)

    code, run = _run(ws, "export-control-lockdown", "--var", "ticket=INC-2041", "--yes")

    assert code == 0, run
    statuses = [s["status"] for s in run["steps"]]
    assert statuses == ["skipped", "ok", "ok", "skipped", "ok", "ok", "skipped", "skipped"]
    assert (
        run["steps"][3]["detail"]
        == run["steps"][6]["detail"]
        == (
            "selects nothing: providers is empty"  # no partner cut off: acme follows the split
        )
    )
    assert run["steps"][-1]["detail"] == "no webhook configured"
    for model in MODELS:
        assert all(ws.posture(r, model) == "revoked" for r in NON_US)
        for region in US:
            flag = ws.flag(region, model)
            assert flag is not None and (flag["posture"], flag["audience"]) == (
                "restricted",
                ["us-person"],
            )
        assert acme.posture(model, "eu-west") == "revoked"
        assert acme.access(model, "us-east")["audience"] == ["us-person"]
    events = ws.run("audit", "list", "-o", "json").json()["events"]
    kinds = [e["kind"] for e in events if e["op"] == run["run"]]
    assert kinds[0] == "run.started" and kinds[-1] == "run.finished"
    linked = [e["payload"]["op"] for e in events if e["kind"] == "run.step" and e["payload"]["op"]]
    assert len(linked) == 2  # the revoke op and the restrict op


def test_the_seed_incident_with_its_partner_leg_is_one_run(ws: Workspace, acme: PartnerSim) -> None:
    _with_partner(ws, acme)

    code, run = _run(
        ws, "export-control-lockdown", "--var", "ticket=INC-2041", "--var", "partners=acme", "--yes"
    )

    assert code == 0, run
    assert [s["status"] for s in run["steps"]][1:7] == ["ok"] * 6
    assert {acme.posture(m, r) for m in MODELS for r in PARTNER_REGIONS} == {"revoked"}
    for model in MODELS:  # the clouds still follow the region split
        assert all(ws.posture(r, model) == "revoked" for r in NON_US)
        assert all(ws.flag(r, model)["audience"] == ["us-person"] for r in US)  # type: ignore[index]


def test_a_partner_not_in_the_inventory_stops_the_run_before_its_first_step(
    ws: Workspace, acme: PartnerSim
) -> None:
    _with_partner(ws, acme)

    code, run = _run(
        ws,
        "export-control-lockdown",
        "--var",
        "ticket=INC-2041",
        "--var",
        "partners=acmee",
        "--yes",
    )

    assert code == 64
    message = run["error"]["message"]
    assert message.startswith("step 4 (Cut off the partners in scope, every region): ")
    assert "--provider acmee: unknown (did you mean 'acme'?)" in message
    assert all(ws.flag(r, m) is None for r in US + NON_US for m in MODELS)
    assert {acme.posture(m, r) for m in MODELS for r in PARTNER_REGIONS} == {"open"}
    events = ws.run("audit", "list", "-o", "json").json()["events"]
    assert not [e for e in events if e["kind"] == "run.started"]


def test_global_emergency_off_end_to_end(ws: Workspace, acme: PartnerSim) -> None:
    _with_partner(ws, acme)

    code, run = _run(
        ws,
        "global-emergency-off",
        "--var",
        "models=mythos-5",
        "--var",
        "ticket=INC-2042",
        "--yes",
    )

    assert code == 0, run
    assert all(ws.posture(r, "mythos-5") == "revoked" for r in US + NON_US)
    assert all(ws.flag(r, "fable-5") is None for r in US + NON_US)
    assert {acme.posture("mythos-5", r) for r in PARTNER_REGIONS} == {"revoked"}


def test_single_partner_cutoff_leaves_everyone_else(ws: Workspace, acme: PartnerSim) -> None:
    _with_partner(ws, acme)

    code, run = _run(
        ws,
        "single-partner-cutoff",
        "--var",
        "partner=acme",
        "--var",
        "ticket=INC-2043",
        "--yes",
    )

    assert code == 0, run
    assert {acme.posture(m, r) for m in MODELS for r in PARTNER_REGIONS} == {"revoked"}
    assert all(ws.flag(r, m) is None for r in US + NON_US for m in MODELS)


def test_export_control_after_a_partner_cutoff_keeps_that_partner_revoked(
    ws: Workspace, acme: PartnerSim
) -> None:
    _with_partner(ws, acme)
    cutoff, _ = _run(ws, "single-partner-cutoff", "--var", "partner=acme", "--var",
                     "ticket=INC-2043", "--yes")  # fmt: skip
    assert cutoff == 0

    code, run = _run(ws, "export-control-lockdown", "--var", "ticket=INC-2041", "--yes")

    # restrict only tightens: the partner's US region stays revoked, and the verify step
    # accepts a target tighter than it asks for.
    assert code == 0, run
    assert {acme.posture(m, r) for m in MODELS for r in PARTNER_REGIONS} == {"revoked"}
    for model in MODELS:
        assert all(ws.flag(r, model)["audience"] == ["us-person"] for r in US)  # type: ignore[index]
        assert all(ws.posture(r, model) == "revoked" for r in NON_US)


def test_staged_restore_waits_for_approvals_then_resumes(ws: Workspace) -> None:
    ws.run("revoke", "-m", "all", "--reason", "order", "--yes")
    args = ("--var", "models=mythos-5", "--var", "ticket=REV-7", "--var", "soak=0s", "--yes")

    code, run = _run(ws, "staged-restore", *args)

    assert code == 5, run
    canary_op = run["steps"][-1]["op"]
    assert all(ws.posture(r, "mythos-5") == "revoked" for r in US + NON_US)
    assert ws.run("approve", canary_op, "--yes", actor="bob").code == 0
    assert ws.posture("us-east-1", "mythos-5") == "open"

    resumed = ws.run("runbook", "resume", run["run"], "--yes", "-o", "json")

    assert resumed.code == 5, resumed.stdout  # the rest is a second restore: approvals again
    rest_op = resumed.json()["steps"][-1]["op"]
    assert ws.run("approve", rest_op, "--yes", actor="carol").code == 0
    final = ws.run("runbook", "resume", run["run"], "--yes", "-o", "json")
    assert final.code == 0, final.stdout
    assert all(ws.posture(r, "mythos-5") == "open" for r in US + NON_US)
    assert all(ws.posture(r, "fable-5") == "revoked" for r in US + NON_US)


def test_a_failing_step_stops_the_run_and_resume_finishes_it(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    proxy.add(
        for_region("eu-central-1", "PutParameter"), **aws_error("AccessDeniedException", "no")
    )

    code, run = _run(
        ws, "global-emergency-off", "--var", "models=fable-5", "--var", "ticket=INC-9", "--yes"
    )

    assert code == 3, run
    assert run["steps"][-1]["kind"] == "revoke"  # stopped there: verify never ran
    assert ws.posture("eu-central-1", "fable-5") == "open"
    proxy.clear()  # the permission is fixed

    resumed = ws.run("runbook", "resume", run["run"], "--yes", "-o", "json")

    assert resumed.code == 0, resumed.stdout
    assert [s["kind"] for s in resumed.json()["steps"]] == ["revoke", "verify", "notify"]
    assert resumed.json()["steps"][0]["op"] == run["steps"][0]["op"]  # the same op, resumed
    assert all(ws.posture(r, "fable-5") == "revoked" for r in US + NON_US)


def test_dry_run_changes_nothing(ws: Workspace, acme: PartnerSim) -> None:
    _with_partner(ws, acme)

    code, run = _run(ws, "export-control-lockdown", "--var", "ticket=INC-1", "--dry-run")

    assert code == 2, run  # changes pending, as `plan` says
    assert run["run"] is None
    assert [s["status"] for s in run["steps"]] == ["planned"] * 3 + ["skipped"] + [
        "planned"
    ] * 2 + ["skipped", "planned"]  # no partners cut off: those two steps select nothing
    assert run["next"].endswith("--var ticket=INC-1 -o json")  # the same, without --dry-run
    revoke = next(s for s in run["steps"] if s["kind"] == "revoke")
    assert "aws:" in revoke["detail"]  # names the targets it would change
    assert all(ws.flag(r, m) is None for r in US + NON_US for m in MODELS)
    assert acme.count("writes") == 0
    assert ws.run("audit", "list", "-o", "json").json()["events"] == []


def test_without_a_terminal_a_run_needs_yes(ws: Workspace) -> None:
    code, run = _run(ws, "global-emergency-off", "--var", "models=mythos-5", "--var", "ticket=X")

    assert code == 64
    assert "--yes" in run["error"]["message"]  # -o json: the error is JSON on stdout too
    assert all(ws.flag(r, "mythos-5") is None for r in US + NON_US)


def test_missing_and_unknown_inputs_are_usage_errors(ws: Workspace) -> None:
    missing = ws.run(
        "runbook",
        "run",
        str(RUNBOOKS / "global-emergency-off.yaml"),
        "--yes",
        "--var",
        "models=mythos-5",
    )
    unknown = ws.run(
        "runbook",
        "run",
        str(RUNBOOKS / "global-emergency-off.yaml"),
        "--yes",
        "--var",
        "models=mythos-5",
        "--var",
        "ticket=X",
        "--var",
        "regoin=eu",
    )

    assert missing.code == 64 and "--var ticket=… is required" in missing.stderr
    assert unknown.code == 64 and "regoin" in unknown.stderr


def test_validation_errors_carry_file_and_line(ws: Workspace, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad-book\n"
        "steps:\n"
        "  - name: off\n"
        "    kind: revoke\n"
        "    select: {models: '${model}'}\n"
        "  - name: check\n"
        "    kind: verfiy\n"
        "    select: {models: [all]}\n"
    )

    result = ws.run("runbook", "validate", str(bad))

    assert result.code == 64
    assert f"{bad}:7: steps.1.kind:" in result.stderr


def test_an_undeclared_input_is_named_with_its_line(ws: Workspace, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad-book\n"
        "inputs: {models: {type: list}}\n"
        "steps:\n"
        "  - name: all off\n"
        "    kind: revoke\n"
        "    select: {models: '${modles}'}\n"
    )

    result = ws.run("runbook", "validate", str(bad))

    assert result.code == 64
    assert f"{bad}:6: steps.0.select.models: ${{modles}} is not an input" in result.stderr


def test_shipped_runbooks_validate_and_list(ws: Workspace) -> None:
    listed = ws.run("runbook", "list", "--dir", str(RUNBOOKS), "-o", "json")

    assert listed.code == 0
    names = {r["name"] for r in listed.json()["runbooks"]}
    assert names == {
        "export-control-lockdown",
        "global-emergency-off",
        "staged-restore",
        "single-partner-cutoff",
    }
    for name in names:
        assert (RUNBOOKS / f"{name}.md").exists()  # each has its guide
    said = {r["name"]: r["description"] for r in listed.json()["runbooks"]}
    assert said["export-control-lockdown"] == (  # what it is for, in one whole sentence
        "An export-control order blocks the named models for everyone outside the US and "
        "for foreign nationals inside it."
    )
