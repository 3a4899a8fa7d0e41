"""Scheduled drift checks: out-of-band changes made at the servers are found, healed in
the safe direction only, exported as metrics and announced on a webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MODELS, NON_US, US, Workspace, person


def _reopen(ws: Workspace, region: str, model: str) -> None:
    ws.ssm(region).put_parameter(
        Name=f"/killswitch/models/{model}",
        Value=json.dumps({"posture": "open", "audience": []}),
        Type="String",
        Overwrite=True,
    )


class Receiver:
    """A local webhook receiver: what a Slack-compatible endpoint was sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.messages.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/XXXX"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_fix_recloses_a_target_reopened_by_hand(ws: Workspace) -> None:
    ws.run("revoke", "-s", "outside-us", "--reason", "order", "--yes")
    _reopen(ws, "eu-central-1", "mythos-5")

    result = ws.run("drift", "--fix", "-o", "json", actor="cron@host")

    assert result.code == 0, result.stdout
    assert result.json()["status"] == "in-sync"
    assert "healed by op" in result.json()["message"]
    assert ws.posture("eu-central-1", "mythos-5") == "revoked"
    ops = ws.run("ops", "list", "-o", "json").json()["ops"]
    heal = ops[0]
    assert heal["actor"] == person("cron@host")  # who runs the check, from its credentials
    assert heal["targets"] == 1
    assert person("cron@host") in heal["reason"]
    events = ws.run("audit", "list", "-o", "json").json()["events"]
    mine = [e for e in events if e["op"] == heal["id"]]
    assert {(e["actor"], e["kind"]) for e in mine} >= {
        (person("cron@host"), "op.requested"),
        (person("cron@host"), "op.finished"),
    }
    assert next(e for e in mine if e["kind"] == "op.requested")["payload"]["label"] == "drift-check"


def test_fix_never_reopens_without_fix_open(ws: Workspace) -> None:
    # The ledger says open everywhere; someone closed one region by hand.
    ws.ssm("us-west-2").put_parameter(
        Name="/killswitch/models/fable-5",
        Value=json.dumps({"posture": "revoked", "audience": []}),
        Type="String",
    )

    fixed = ws.run("drift", "--fix", "-o", "json")

    assert fixed.code == 2
    assert ws.posture("us-west-2", "fable-5") == "revoked"
    assert ws.run("ops", "list", "-o", "json").json()["ops"] == []

    reopened = ws.run("drift", "--fix-open", "-o", "json")

    assert reopened.code == 5  # a restore: it waits for the approvals policy names
    assert ws.posture("us-west-2", "fable-5") == "revoked"
    [op] = ws.run("ops", "list", "-o", "json").json()["ops"]
    assert (op["action"], op["status"], op["actor"]) == (
        "restore",
        "awaiting-approval",
        person("alice"),
    )
    assert ws.run("approve", op["id"], "--yes", actor="bob").code == 0
    assert ws.posture("us-west-2", "fable-5") == "open"


def test_metrics_file_parses_and_names_the_drifted_targets(ws: Workspace, tmp_path: Path) -> None:
    ws.run("revoke", "-m", "all", "-r", "eu-*", "--reason", "order", "--yes")
    _reopen(ws, "eu-west-1", "fable-5")
    path = tmp_path / "textfile" / "killswitch.prom"

    result = ws.run("drift", "--metrics-file", str(path))

    assert result.code == 2
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    drifted = [(s.labels, s.value) for s in families["killswitch_drift_targets"].samples]
    assert drifted == [({"model": "fable-5", "provider": "aws-prod", "region": "eu-west-1"}, 1.0)]
    assert families["killswitch_drift_targets_checked"].samples[0].value == len(MODELS) * 8
    assert families["killswitch_drift_last_success_timestamp_seconds"].samples[0].value > 1.7e9
    assert families["killswitch_drift_check_duration_seconds"].samples[0].value >= 0
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_notify_posts_a_slack_message_on_drift_only(ws: Workspace, receiver: Receiver) -> None:
    assert ws.run("drift", "--notify", receiver.url).code == 0
    assert receiver.messages == []
    ws.run("revoke", "-m", "mythos-5", "--reason", "order", "--yes")
    _reopen(ws, "ap-northeast-1", "mythos-5")

    result = ws.run("--log-level", "debug", "drift", "--notify", receiver.url)

    assert result.code == 2
    [message] = receiver.messages
    assert "1 target(s) differ" in message["text"]
    assert "aws:aws-prod/ap-northeast-1/ssm-flag/mythos-5" in json.dumps(message["blocks"])
    assert receiver.url not in result.stderr + result.stdout  # the URL holds a token


def test_inventory_notify_announces_ops_and_drift(
    ws: Workspace, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KS_WEBHOOK", receiver.url)
    ws.write_inventory(notify={"webhook_env": "KS_WEBHOOK"})

    ws.run("revoke", "-m", "fable-5", "--reason", "order", "--yes")
    _reopen(ws, "us-east-1", "fable-5")
    ws.run("drift", "--fix")

    texts = [m["text"] for m in receiver.messages]
    assert texts[0].startswith(f"killswitch revoke by {person('alice')}: op ")
    assert "complete" in texts[0]
    assert any("drift" in t and "healed by op" in t for t in texts)


def test_a_flag_in_a_region_the_inventory_does_not_list_is_unmanaged(ws: Workspace) -> None:
    ws.run("revoke", "-m", "mythos-5", "--reason", "order", "--yes")
    ws.ssm("sa-east-1").put_parameter(
        Name="/killswitch/models/mythos-5",
        Value=json.dumps({"posture": "open", "audience": []}),
        Type="String",
    )

    result = ws.run("drift", "-o", "json")

    assert result.code == 2
    unmanaged = [t for t in result.json()["targets"] if t["result"] == "unmanaged"]
    assert [t["id"] for t in unmanaged] == ["aws:aws-prod/sa-east-1/ssm-flag/mythos-5"]
    assert unmanaged[0]["observed"]["posture"] == "open"
    assert "add sa-east-1 to provider aws-prod" in unmanaged[0]["error"]
    assert all(t["result"] == "in-sync" for t in result.json()["targets"] if t not in unmanaged)


def test_partner_access_restored_silently_is_found_and_reclosed(ws: Workspace) -> None:
    from tests.support.partnersim import PartnerSim

    with PartnerSim(secret="s3", key_id="k", regions=["eu-west"], models={"mythos-5": "m5"}) as sim:
        ws.write_inventory(
            providers={
                "acme": {
                    "type": "partner",
                    "base_url": sim.url,
                    "key_id": "k",
                    "secret_file": str(_secret(ws, "s3")),
                    "regions": ["eu-west"],
                    "models": {"mythos-5": "m5"},
                }
            },
            scopes={},
        )
        ws.run("revoke", "-m", "mythos-5", "--reason", "order", "--yes")
        sim.set_access("mythos-5", "eu-west", "open")  # the partner's console

        assert ws.run("drift").code == 2
        assert ws.run("drift", "--fix").code == 0
        assert sim.posture("mythos-5", "eu-west") == "revoked"


def _secret(ws: Workspace, value: str) -> Path:
    path = ws.path / "partner.secret"
    path.write_text(value)
    return path


def test_drift_everywhere_at_once(ws: Workspace) -> None:
    ws.run("revoke", "-m", "all", "--reason", "order", "--yes")
    for region in US + NON_US:
        _reopen(ws, region, "mythos-5")

    result = ws.run("drift", "--fix", "-o", "json")

    assert result.code == 0
    assert all(ws.posture(r, m) == "revoked" for r in US + NON_US for m in MODELS)


def test_drift_names_what_drifted_and_the_fix_names_what_it_closed(ws: Workspace) -> None:
    ws.run("revoke", "-s", "outside-us", "--reason", "order", "--yes")
    _reopen(ws, "eu-central-1", "mythos-5")
    target = "aws:aws-prod/eu-central-1/ssm-flag/mythos-5"

    found = ws.run("drift", "-o", "json")
    fixed = ws.run("drift", "--fix", "-o", "json")

    assert found.code == 2
    assert target in found.json()["message"]
    assert (
        found.json()["next"].startswith("killswitch ")
        and " drift -o json --fix " in (found.json()["next"])
    )
    assert fixed.code == 0
    assert f"revoked again on {target}" in fixed.json()["message"]
