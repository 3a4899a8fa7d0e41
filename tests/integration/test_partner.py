"""The partner provider against two simulated partners (real HTTP on 127.0.0.1),
in the same ops as the AWS ssm-flag lever."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Workspace
from tests.support.faultproxy import FaultProxy
from tests.support.partnersim import PartnerSim

ACME_SECRET = "acme-shared-secret-4f1c9e"
GLOBEX_SECRET = "globex-shared-secret-77ab02"
PARTNER_MODELS = {"mythos-5": "acme.mythos-5-v1:0", "fable-5": "acme.fable-5"}
ACME_REGIONS = ["eu-west", "us-east"]
GLOBEX_REGIONS = ["ap-south", "eu-central", "us-west"]


@pytest.fixture
def acme() -> Iterator[PartnerSim]:
    sim = PartnerSim(
        secret=ACME_SECRET, key_id="ks-acme", regions=ACME_REGIONS, models=PARTNER_MODELS
    ).start()
    sim.behave(poll_after=0)
    yield sim
    sim.stop()


@pytest.fixture
def globex() -> Iterator[PartnerSim]:
    sim = PartnerSim(
        secret=GLOBEX_SECRET,
        key_id="ks-globex",
        regions=GLOBEX_REGIONS,
        models={"mythos-5": "gx-mythos5", "fable-5": "gx-fable5"},
    ).start()
    sim.behave(poll_after=0)
    yield sim
    sim.stop()


@pytest.fixture
def partners(
    ws: Workspace, acme: PartnerSim, globex: PartnerSim, monkeypatch: pytest.MonkeyPatch
) -> Workspace:
    monkeypatch.setenv("ACME_KILLSWITCH_SECRET", ACME_SECRET)
    secret_file = ws.path / "globex.secret"
    secret_file.write_text(GLOBEX_SECRET + "\n")
    ws.write_inventory(
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": ["us-east-1", "eu-west-1", "ap-northeast-1"],
                "mechanisms": ["ssm-flag"],
                "endpoint_url": ws.endpoint,
            },
            "acme": {
                "type": "partner",
                "base_url": acme.url,
                "key_id": "ks-acme",
                "secret_env": "ACME_KILLSWITCH_SECRET",
                "regions": ACME_REGIONS,
                "models": PARTNER_MODELS,
                "timeout_seconds": 2,
                "operation_deadline_seconds": 5,
            },
            "globex": {
                "type": "partner",
                "base_url": globex.url,
                "key_id": "ks-globex",
                "secret_file": str(secret_file),
                "regions": GLOBEX_REGIONS,
                "models": {"mythos-5": "gx-mythos5", "fable-5": "gx-fable5"},
                "timeout_seconds": 2,
            },
        },
        scopes={"outside-us": {"models": ["all"], "regions": ["!us-*"]}},
        policy={
            "restore": {"approvals": 1},
            "retry": {"attempts": 4, "max_seconds": 10, "base_seconds": 0.05},
        },
    )
    return ws


def _everywhere(ws: Workspace, acme: PartnerSim, globex: PartnerSim) -> dict[str, str]:
    found = {}
    for model in PARTNER_MODELS:
        for region in ACME_REGIONS:
            found[f"acme/{region}/{model}"] = acme.posture(model, region)
        for region in GLOBEX_REGIONS:
            found[f"globex/{region}/{model}"] = globex.posture(model, region)
        for region in ("us-east-1", "eu-west-1", "ap-northeast-1"):
            found[f"aws/{region}/{model}"] = ws.posture(region, model)
    return found


def test_export_control_across_partners_and_aws_in_one_op(
    partners: Workspace, acme: PartnerSim, globex: PartnerSim
) -> None:
    revoke = partners.run("revoke", "-s", "outside-us", "--reason", "order", "--yes", "-o", "json")
    restrict = partners.run(
        "restrict", "-m", "all", "-r", "us-*", "-a", "us-person", "--reason", "order", "--yes"
    )

    assert revoke.code == 0, revoke.stdout
    assert {t["provider"] for t in revoke.json()["targets"]} == {"aws-prod", "acme", "globex"}
    assert restrict.code == 0, restrict.stdout
    for where, posture in _everywhere(partners, acme, globex).items():
        region = where.split("/")[1]
        assert posture == ("restricted" if region.startswith("us-") else "revoked"), where
    assert acme.access("mythos-5", "us-east")["audience"] == ["us-person"]
    assert acme.access("mythos-5", "eu-west")["op"] == revoke.json()["op"]

    restore = partners.run("restore", "-m", "all", "--reason", "review done", "--yes")

    assert restore.code == 0, restore.stdout
    assert set(_everywhere(partners, acme, globex).values()) == {"open"}


def test_rerun_makes_no_partner_writes(
    partners: Workspace, acme: PartnerSim, globex: PartnerSim
) -> None:
    partners.run("revoke", "-m", "all", "--reason", "order", "--yes")
    writes = acme.count("writes") + globex.count("writes")

    again = partners.run("revoke", "-m", "all", "--reason", "order", "--yes", "-o", "json")

    assert again.json()["status"] == "already-done"
    assert acme.count("writes") + globex.count("writes") == writes


def test_slow_confirmations_are_followed_to_the_end(partners: Workspace, acme: PartnerSim) -> None:
    acme.behave(slow_ops=3, poll_after=0)

    result = partners.run("revoke", "-p", "acme", "-m", "all", "--reason", "r", "--yes")

    assert result.code == 0, result.stdout
    assert acme.count("polls") >= 3 * len(ACME_REGIONS) * len(PARTNER_MODELS)
    assert {acme.posture(m, r) for m in PARTNER_MODELS for r in ACME_REGIONS} == {"revoked"}


def test_an_operation_past_its_deadline_fails_the_target(
    partners: Workspace, acme: PartnerSim
) -> None:
    acme.behave(slow_ops=10_000, poll_after=0)
    text = partners.inventory.read_text().replace(
        "operation_deadline_seconds: 5", "operation_deadline_seconds: 0.3"
    )
    partners.inventory.write_text(text)

    result = partners.run(
        "revoke",
        "-p",
        "acme",
        "-m",
        "mythos-5",
        "-r",
        "eu-west",
        "--reason",
        "r",
        "--yes",
        "-o",
        "json",
    )

    assert result.code == 3
    [target] = result.json()["targets"]
    assert "still" in target["error"]


def test_429_bursts_and_500s_are_retried_with_the_same_key(
    partners: Workspace, acme: PartnerSim
) -> None:
    acme.behave(rate_limit=3, retry_after=0, errors=2, faults_on="writes")

    result = partners.run("revoke", "-p", "acme", "-m", "all", "--reason", "r", "--yes")

    assert result.code == 0, result.stdout
    assert acme.count("rate_limited") == 3
    assert acme.count("server_errors") == 2
    assert acme.count("applied") == len(ACME_REGIONS) * len(PARTNER_MODELS)


def test_lost_replies_never_apply_twice(partners: Workspace, globex: PartnerSim) -> None:
    globex.behave(lose_replies=2)

    result = partners.run("revoke", "-p", "globex", "-m", "all", "--reason", "r", "--yes")

    assert result.code == 0, result.stdout
    assert globex.count("lost_replies") == 2
    assert globex.count("applied") == len(GLOBEX_REGIONS) * 2
    for model in PARTNER_MODELS:
        for region in GLOBEX_REGIONS:
            assert globex.access(model, region)["version"] == 1


def test_rejected_signatures_fail_the_partner_only(
    partners: Workspace, acme: PartnerSim, globex: PartnerSim
) -> None:
    globex.behave(reject_signatures=True)

    result = partners.run("revoke", "-m", "mythos-5", "--reason", "r", "--yes", "-o", "json")

    assert result.code == 3
    failed = {t["provider"] for t in result.json()["targets"] if t["result"] == "failed"}
    assert failed == {"globex"}
    errors = [t["error"] for t in result.json()["targets"] if t["provider"] == "globex"]
    assert all("401" in e and "bad_signature" in e for e in errors)
    assert {acme.posture("mythos-5", r) for r in ACME_REGIONS} == {"revoked"}


def test_clock_skew_beyond_the_window_is_reported(partners: Workspace, acme: PartnerSim) -> None:
    acme.behave(clock_skew=900)

    result = partners.run(
        "revoke", "-p", "acme", "-m", "fable-5", "--reason", "r", "--yes", "-o", "json"
    )

    assert result.code == 3
    assert all("stale_timestamp" in t["error"] for t in result.json()["targets"])
    assert {acme.posture("fable-5", r) for r in ACME_REGIONS} == {"open"}


def test_partner_down_for_the_whole_op_then_resume(
    partners: Workspace, acme: PartnerSim, globex: PartnerSim
) -> None:
    acme.behave(down=True)

    first = partners.run("revoke", "-m", "all", "--reason", "order", "--yes", "-o", "json")

    assert first.code == 3
    by_provider: dict[str, set[str]] = {}
    for target in first.json()["targets"]:
        by_provider.setdefault(target["provider"], set()).add(target["result"])
    assert by_provider == {"aws-prod": {"verified"}, "globex": {"verified"}, "acme": {"failed"}}

    acme.behave(down=False)
    resumed = partners.run("ops", "resume", first.json()["op"], "--yes", "-o", "json")

    assert resumed.code == 0, resumed.stdout
    assert {t["result"] for t in resumed.json()["targets"]} == {"verified"}
    assert set(_everywhere(partners, acme, globex).values()) == {"revoked"}


def test_secrets_never_reach_output_audit_or_state(
    partners: Workspace, acme: PartnerSim, globex: PartnerSim
) -> None:
    globex.behave(reject_signatures=True)
    results = [
        partners.run("revoke", "-m", "all", "--reason", "r", "--yes", "-o", "json"),
        partners.run("status", "-o", "json"),
        partners.run("audit", "list", "-o", "json"),
        partners.run("--log-level", "debug", "drift"),
    ]

    for result in results:
        for secret in (ACME_SECRET, GLOBEX_SECRET):
            assert secret not in result.stdout
            assert secret not in result.stderr
    for path in partners.state_db.parent.iterdir():
        data = path.read_bytes()
        assert ACME_SECRET.encode() not in data
        assert GLOBEX_SECRET.encode() not in data


def test_missing_secret_names_the_variable_not_a_value(
    partners: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_KILLSWITCH_SECRET")

    result = partners.run("status", "-p", "acme", "-o", "json")

    assert result.code == 3
    assert all("ACME_KILLSWITCH_SECRET is not set" in t["error"] for t in result.json()["targets"])
    # Found before the night it is needed: validating says what to set, not a value.
    validated = partners.run("inventory", "validate")
    assert validated.code == 64
    assert "providers.acme" in validated.stderr
    assert "ACME_KILLSWITCH_SECRET is not set" in validated.stderr


def test_a_secret_inline_in_the_inventory_is_refused(partners: Workspace) -> None:
    text = partners.inventory.read_text().replace(
        "secret_env: ACME_KILLSWITCH_SECRET", f"secret: {ACME_SECRET}"
    )
    partners.inventory.write_text(text)

    result = partners.run("inventory", "validate")

    assert result.code == 64
    assert "providers.acme.secret" in result.stderr
    assert ACME_SECRET not in result.stderr


def test_plain_http_to_a_remote_host_is_refused(partners: Workspace, acme: PartnerSim) -> None:
    text = partners.inventory.read_text().replace(acme.url, "http://partner.example.com")
    partners.inventory.write_text(text)

    result = partners.run("inventory", "validate")

    assert result.code == 64
    assert "https://" in result.stderr


def test_a_partner_that_drips_its_replies_fails_on_the_whole_call_bound(
    partners: Workspace, acme: PartnerSim, globex: PartnerSim
) -> None:
    """acme's eu-west answers one byte every 0.3 s: no socket read ever times out, and only
    the bound on the whole call ends it. The rest of the kill goes on."""
    import yaml

    proxy = FaultProxy(acme.url).start()
    inventory = yaml.safe_load(partners.inventory.read_text())
    inventory["providers"]["acme"] |= {"base_url": proxy.url, "timeout_seconds": 1}
    inventory["policy"]["retry"] = {"attempts": 2, "max_seconds": 2, "base_seconds": 0.05}
    partners.inventory.write_text(yaml.safe_dump(inventory))
    proxy.add(lambda call: "/regions/eu-west/" in call.path, fault="drip", delay=0.3)
    try:
        result = partners.run("revoke", "-m", "all", "--reason", "r", "--yes", "-o", "json")
    finally:
        proxy.stop()

    assert result.code == 3, result.stderr
    failed = {t["id"]: t["error"] for t in result.json()["targets"] if t["result"] == "failed"}
    assert {i.split("/")[1] for i in failed} == {"eu-west"}
    assert all(i.startswith("partner:acme/") for i in failed)
    assert all("no complete reply within" in error for error in failed.values())
    for where, posture in _everywhere(partners, acme, globex).items():
        assert posture == ("open" if where.startswith("acme/eu-west/") else "revoked"), where


def test_the_longest_reason_accepted_reaches_each_partner_whole(
    partners: Workspace, acme: PartnerSim, globex: PartnerSim
) -> None:
    """At the limit (1,000 characters of 4-byte UTF-8) the partner body still fits the
    partner API's own limit (docs/partner-api.yaml: reason at most 1,000 characters)."""
    from killswitch.text import MAX_REASON_CHARS

    reason = "\U0001f6ab" * MAX_REASON_CHARS

    result = partners.run("revoke", "-m", "all", "--reason", reason, "--yes")

    assert result.code == 0, result.stderr
    assert set(_everywhere(partners, acme, globex).values()) == {"revoked"}
