"""Proof by effect: after a revoke, restrict or restore reads back, the serving path is
asked as each kind of caller, and the op says whether the posture took effect there.

Each gateway is the reference enforcer (killswitch/enforcer) reading its flags from the
real moto server, in front of a stand-in model server, behind an identity layer that
sets a caller's audience from its bearer token: all on 127.0.0.1 over real HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from killswitch.enforcer import Enforcer, SsmSource
from tests.conftest import Workspace
from tests.integration.test_drift_schedule import Receiver, receiver  # noqa: F401
from tests.support.gateway import Gateway

TOKENS = {"us-analyst": "us-person", "contractor": ""}
REGION = "us-east-1"
TARGET = f"aws:aws-prod/{REGION}/ssm-flag/mythos-5"


class Ticking:
    """A gateway's clock that moves ``step`` seconds each time it is read: its cache ages
    with every request, so a stale posture gives way after a few, without waiting."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


StartGateway = Callable[..., Gateway]


@pytest.fixture
def gateways(ws: Workspace) -> Iterator[StartGateway]:
    started: list[Gateway] = []

    def start(*, obeys: bool = True, ttl: float = 1.0, step: float = 5.0) -> Gateway:
        enforcer = (
            Enforcer(
                SsmSource(REGION, endpoint_url=ws.server, timeout=10), ttl, 30, Ticking(step), 10
            )
            if obeys
            else None
        )
        gateway = Gateway("gw", enforcer, TOKENS)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.served.stop()


def with_probe(
    ws: Workspace, gateway: Gateway, monkeypatch: pytest.MonkeyPatch, **extra: object
) -> None:
    monkeypatch.setenv("PROBE_US_TOKEN", "us-analyst")
    monkeypatch.setenv("PROBE_CONTRACTOR_TOKEN", "contractor")
    ws.write_inventory(
        policy={
            "restore": {"approvals": 2},
            "retry": {"attempts": 2, "max_seconds": 3, "base_seconds": 0.05},
        },
        probes={
            "gw-us-east-1": {
                "url": f"{gateway.url}/v1/models/{{model}}/generate",
                "method": "POST",
                "targets": {"providers": ["aws-prod"], "regions": [REGION]},
                "callers": {
                    "anonymous": {},
                    "contractor": {"token_env": "PROBE_CONTRACTOR_TOKEN"},
                    "us-person": {"audience": ["us-person"], "token_env": "PROBE_US_TOKEN"},
                },
                "every_seconds": 0.05,
            }
        },
        **extra,
    )


def row(result: dict[str, object], target: str = TARGET) -> dict[str, object]:
    rows: list[dict[str, object]] = result["targets"]  # type: ignore[assignment]
    return next(r for r in rows if r["id"] == target)


def test_a_revoke_is_proven_by_the_gateway_refusing_every_caller(
    ws: Workspace,
    gateways: StartGateway,
    monkeypatch: pytest.MonkeyPatch,
    receiver: Receiver,  # noqa: F811  (the fixture, imported above)
) -> None:
    gateway = gateways()
    with_probe(ws, gateway, monkeypatch, notify={"webhook_env": "KS_WEBHOOK"})
    monkeypatch.setenv("KS_WEBHOOK", receiver.url)

    result = ws.run("revoke", "-m", "mythos-5", "-r", REGION, "--reason", "order", "--yes",
                    "-o", "json")  # fmt: skip

    assert result.code == 0, result.stderr
    proven = row(result.json())
    assert proven["result"] == "effective"
    assert str(proven["error"]).startswith("effect after ")
    assert gateway.call("mythos-5", "us-analyst")[0] == 403
    assert gateway.call("fable-5", "contractor")[0] == 200  # another model is untouched
    [message] = receiver.messages  # on-call hears how long the serving path took
    assert "effective at the gateways within" in message["text"]


def test_a_gateway_that_ignores_the_flag_makes_the_revoke_partial(
    ws: Workspace, gateways: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_probe(ws, gateways(obeys=False), monkeypatch)

    result = ws.run("revoke", "-m", "mythos-5", "-r", REGION, "--reason", "order", "--yes",
                    "--deadline", "3", "-o", "json")  # fmt: skip

    assert result.code == 3, result.stderr
    proven = row(result.json())
    assert proven["result"] == "not-effective"
    assert "should be refused" in str(proven["error"])
    assert ws.posture(REGION, "mythos-5") == "revoked"  # the lever did its part
    assert ws.run("verify", "--effect", "-m", "mythos-5", "-r", REGION, "--deadline", "2").code == 3


def test_a_stale_gateway_cache_takes_effect_late_and_the_op_says_how_late(
    ws: Workspace, gateways: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = gateways(ttl=60.0, step=5.0)  # a minute of cache; each request ages it 5 s
    with_probe(ws, gateway, monkeypatch)
    assert gateway.call("mythos-5", "contractor")[0] == 200  # the cache now holds "open"

    result = ws.run("revoke", "-m", "mythos-5", "-r", REGION, "--reason", "order", "--yes",
                    "-o", "json")  # fmt: skip

    assert result.code == 0, result.stderr
    assert row(result.json())["result"] == "effective"
    seconds = float(str(row(result.json())["error"]).split("effect after ")[1].rstrip("s"))
    assert seconds > 0  # it was served for a while after the write: the probes saw it


def test_restrict_then_restore_are_proven_for_each_kind_of_caller(
    ws: Workspace, gateways: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = gateways()
    with_probe(ws, gateway, monkeypatch)

    restricted = ws.run("restrict", "-m", "mythos-5", "-r", REGION, "-a", "us-person",
                        "--reason", "order", "--yes", "-o", "json")  # fmt: skip
    assert restricted.code == 0, restricted.stderr
    assert row(restricted.json())["result"] == "effective"
    assert gateway.call("mythos-5", "us-analyst")[0] == 200
    assert gateway.call("mythos-5", "contractor")[0] == 403

    asked = ws.run("restore", "-m", "mythos-5", "-r", REGION, "--reason", "review", "--yes",
                   "-o", "json")  # fmt: skip
    approved = ws.run("approve", asked.json()["op"], "--yes", "-o", "json", actor="bob")

    assert approved.code == 0, approved.stderr
    assert row(approved.json())["result"] == "effective"
    assert gateway.call("mythos-5", "contractor")[0] == 200
    assert ws.run("verify", "--effect", "-m", "mythos-5", "-r", REGION).code == 0


def test_a_probe_url_with_credentials_or_another_scheme_is_refused(ws: Workspace) -> None:
    for url in ("ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/x", "not a url"):
        ws.write_inventory(
            probes={"p": {"url": url, "callers": {"anonymous": {}}}},
        )

        result = ws.run("inventory", "validate")

        assert result.code == 64, url
        assert "probes.p.url" in result.stderr or "probes" in result.stderr
        assert "pw" not in result.stderr


def test_the_scheduled_drift_check_catches_a_gateway_that_stopped_obeying(
    ws: Workspace, gateways: StartGateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with_probe(ws, gateways(obeys=False), monkeypatch)
    faked = ws.run("revoke", "-m", "mythos-5", "-r", REGION, "--reason", "order", "--yes",
                   "--deadline", "2")  # fmt: skip
    assert faked.code == 3  # the gateway never obeyed
    metrics = tmp_path / "killswitch.prom"

    drift = ws.run("drift", "--effect", "-m", "mythos-5", "-r", REGION, "--deadline", "2",
                   "--metrics-file", str(metrics), "-o", "json")  # fmt: skip

    assert drift.code == 3, drift.stderr  # the levers agree with the ledger; the gateway not
    assert drift.json()["status"] == "in-sync"
    assert row(drift.json()["effect"])["result"] == "not-effective"
    samples = {
        (s.name, s.labels.get("target")): s.value
        for family in text_string_to_metric_families(metrics.read_text())
        for s in family.samples
    }
    assert samples[("killswitch_effective", TARGET)] == 0
