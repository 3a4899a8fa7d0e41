"""Revoke and restrict at AWS (moto over HTTP), read back from the server itself."""

from __future__ import annotations

from tests.conftest import MODELS, NON_US, US, Workspace, person
from tests.support.faultproxy import FaultProxy, aws_error


def test_revoke_outside_us_leaves_us_regions_open(ws: Workspace) -> None:
    result = ws.run("revoke", "-s", "outside-us", "--reason", "export order", "--yes")

    assert result.code == 0, result.stderr
    for model in MODELS:
        for region in NON_US:
            assert ws.posture(region, model) == "revoked"
        for region in US:
            assert ws.flag(region, model) is None  # never written: still open


def test_revoke_writes_the_public_flag_document(ws: Workspace) -> None:
    result = ws.run(
        "revoke",
        "-m",
        "mythos-5",
        "-r",
        "eu-west-1",
        "--reason",
        "jailbreak found",
        "--ticket",
        "INC-7",
        "--yes",
        "-o",
        "json",
    )

    assert result.code == 0, result.stderr
    flag = ws.flag("eu-west-1", "mythos-5")
    assert flag is not None
    assert flag["schema"] == "killswitch.flag/v1"
    assert flag["model"] == "mythos-5"
    assert flag["posture"] == "revoked"
    assert flag["audience"] == []
    assert flag["op"] == result.json()["op"]
    assert flag["actor"] == person("alice")
    assert flag["reason"] == "jailbreak found"
    assert flag["ticket"] == "INC-7"
    assert flag["updated_at"].endswith("Z")


def test_revoke_json_reports_every_target_verified(ws: Workspace) -> None:
    result = ws.run("revoke", "-m", "all", "-r", "eu-*", "--reason", "r", "--yes", "-o", "json")

    report = result.json()
    assert result.code == 0
    assert report["status"] == "complete"
    assert report["op"].startswith("op-")
    ids = sorted(t["id"] for t in report["targets"])
    assert ids == sorted(
        f"aws:aws-prod/{r}/ssm-flag/{m}" for r in ("eu-west-1", "eu-central-1") for m in MODELS
    )
    for target in report["targets"]:
        assert set(target) == {
            "id",
            "model",
            "provider",
            "region",
            "mechanism",
            "desired",
            "observed",
            "result",
            "error",
        }
        assert target["provider"] == "aws-prod"
        assert target["mechanism"] == "ssm-flag"
        assert target["desired"] == {"posture": "revoked", "audience": []}
        assert target["observed"] == {"posture": "revoked", "audience": []}
        assert target["result"] == "verified"
        assert target["error"] is None


def test_rerun_makes_zero_writes(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    ws = faulty_ws
    first = ws.run("revoke", "-m", "all", "--reason", "r", "--yes", "-o", "json")
    assert first.code == 0
    versions = {(r, m): ws.flag(r, m)["_version"] for r in NON_US + US for m in MODELS}  # type: ignore[index]
    writes_before = proxy.count("PutParameter")

    again = ws.run("revoke", "-m", "all", "--reason", "r", "--yes", "-o", "json")

    assert again.code == 0
    assert again.json()["status"] == "already-done"
    assert again.json()["op"] == first.json()["op"]
    assert proxy.count("PutParameter") == writes_before
    assert {(r, m): ws.flag(r, m)["_version"] for r in NON_US + US for m in MODELS} == versions  # type: ignore[index]


def test_restrict_us_regions_to_us_persons(ws: Workspace) -> None:
    ws.run("revoke", "-s", "outside-us", "--reason", "export order", "--yes")

    result = ws.run(
        "restrict",
        "-m",
        "all",
        "-r",
        "us-*",
        "--audience",
        "us-person",
        "--reason",
        "export order",
        "--yes",
        "-o",
        "json",
    )

    assert result.code == 0, result.stderr
    for model in MODELS:
        for region in US:
            flag = ws.flag(region, model)
            assert flag is not None
            assert (flag["posture"], flag["audience"]) == ("restricted", ["us-person"])
        for region in NON_US:
            assert ws.posture(region, model) == "revoked"


def test_plan_exits_2_with_changes_pending_and_changes_nothing(ws: Workspace) -> None:
    result = ws.run("plan", "revoke", "-m", "mythos-5", "-o", "json")

    assert result.code == 2
    report = result.json()
    assert report["status"] == "changes-pending"
    assert {t["result"] for t in report["targets"]} == {"change"}
    assert all(ws.flag(r, "mythos-5") is None for r in US + NON_US)


def test_plan_exits_0_when_nothing_to_change(ws: Workspace) -> None:
    ws.run("revoke", "-m", "mythos-5", "--reason", "r", "--yes")

    result = ws.run("plan", "revoke", "-m", "mythos-5", "-o", "json")

    assert result.code == 0
    assert {t["result"] for t in result.json()["targets"]} == {"no-change"}


def test_dry_run_shows_the_plan_and_writes_nothing(ws: Workspace) -> None:
    result = ws.run("revoke", "-m", "all", "--reason", "r", "--dry-run", "-o", "json")

    assert result.code == 2
    assert len(result.json()["targets"]) == len(MODELS) * len(US + NON_US)
    assert all(ws.flag(r, m) is None for r in US + NON_US for m in MODELS)
    assert ws.run("ops", "list", "-o", "json").json()["ops"] == []


def test_nothing_to_change_writes_no_op(ws: Workspace) -> None:
    result = ws.run("restore", "-m", "all", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 0
    assert result.json()["status"] == "nothing-to-do"
    assert result.json()["op"] is None
    assert ws.run("ops", "list", "-o", "json").json()["ops"] == []


def test_same_intent_after_a_restore_is_a_new_op(ws: Workspace) -> None:
    ws.write_inventory(policy={"restore": {"approvals": 1}})
    first = ws.run("revoke", "-m", "fable-5", "--reason", "r", "--yes", "-o", "json").json()
    assert ws.run("restore", "-m", "fable-5", "--reason", "ok", "--yes").code == 0

    second = ws.run("revoke", "-m", "fable-5", "--reason", "r", "--yes", "-o", "json").json()

    assert second["status"] == "complete"
    assert second["op"] != first["op"]
    assert all(ws.posture(r, "fable-5") == "revoked" for r in US + NON_US)


def test_idempotency_key_names_one_op(ws: Workspace) -> None:
    args = ("revoke", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")
    first = ws.run(*args, "--idempotency-key", "page-42").json()
    again = ws.run(*args, "--idempotency-key", "page-42").json()
    other = ws.run(
        "revoke", "-m", "fable-5", "--reason", "r", "--yes", "--idempotency-key", "page-42"
    )

    assert again["op"] == first["op"]
    assert again["status"] == "already-done"
    assert other.code == 64
    assert "page-42" in other.stderr
    assert all(ws.flag(r, "fable-5") is None for r in US + NON_US)


def test_status_reads_every_target(ws: Workspace) -> None:
    ws.run("revoke", "-m", "mythos-5", "-r", "eu-west-1", "--reason", "r", "--yes")

    result = ws.run("status", "-o", "json")

    assert result.code == 0
    by_id = {t["id"]: t for t in result.json()["targets"]}
    assert len(by_id) == len(MODELS) * len(US + NON_US)
    assert by_id["aws:aws-prod/eu-west-1/ssm-flag/mythos-5"]["observed"]["posture"] == "revoked"
    assert by_id["aws:aws-prod/eu-west-1/ssm-flag/fable-5"]["observed"]["posture"] == "open"


def test_ops_show_tells_who_did_what_and_why(ws: Workspace) -> None:
    op = ws.run(
        "revoke",
        "-m",
        "mythos-5",
        "-r",
        "eu-*",
        "--reason",
        "export order",
        "--ticket",
        "INC-9",
        "--yes",
        "-o",
        "json",
    ).json()["op"]

    result = ws.run("ops", "show", op, "-o", "json")
    table = ws.run("ops", "show", op)

    assert result.code == 0
    shown = result.json()
    assert shown["operation"]["action"] == "revoke"
    assert shown["operation"]["actor"] == person("alice")
    assert shown["operation"]["reason"] == "export order"
    assert shown["operation"]["ticket"] == "INC-9"
    assert shown["operation"]["status"] == "complete"
    assert {t["result"] for t in shown["targets"]} == {"verified"}
    assert table.code == 0
    assert "export order" in table.stdout
    assert ws.run("ops", "show", "op-nope").code == 64


def test_a_region_alone_does_not_pick_every_model(ws: Workspace) -> None:
    result = ws.run("revoke", "-r", "eu-west-1", "--reason", "r", "--yes")
    dry = ws.run("revoke", "-r", "eu-west-1", "--reason", "r", "--dry-run")

    assert result.code == 64
    assert dry.code == 64
    assert "--region alone is not enough" in result.stderr
    assert all(ws.flag("eu-west-1", m) is None for m in MODELS)


def test_a_reason_longer_than_a_flag_can_hold_is_refused(ws: Workspace) -> None:
    result = ws.run("revoke", "-m", "all", "--reason", "x" * 1001, "--yes")

    assert result.code == 64
    assert "at most 1000 characters" in result.stderr
    assert all(ws.flag(r, m) is None for r in US + NON_US for m in MODELS)


def test_dry_run_says_when_targets_cannot_be_read(faulty_ws: Workspace, proxy: FaultProxy) -> None:
    ws = faulty_ws
    ws.run("revoke", "-m", "mythos-5", "--reason", "r", "--yes")
    proxy.add(
        lambda call: call.action == "GetParameter" and call.region == "eu-west-1",
        **aws_error("AccessDeniedException", "no reads here"),
    )

    plan = ws.run("plan", "revoke", "-m", "mythos-5", "-o", "json")
    dry = ws.run("revoke", "-m", "mythos-5", "--reason", "r", "--dry-run", "-o", "json")

    assert (plan.code, dry.code) == (3, 3)
    assert plan.json()["status"] == dry.json()["status"] == "unreadable"
