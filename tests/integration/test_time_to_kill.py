"""Time to kill (issue #19): every op records how long it took from the command to its
last target read back (and, with probes, to the last probe agreeing) and where that time
went; `ops show`, the webhook and the drift metrics file tell it, so a team can hold
itself to an SLO.

The engine runs on a ManualClock that only the servers move: each request through the
fault proxy in front of moto (and of the gateway) moves it by a set latency, so every
figure is exact and nothing sleeps. Serial (``--concurrency 1``) so that the order of
writes and reads, and hence each phase, is one and the same on every run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from killswitch.clock import SYSTEM, Clock
from killswitch.domain import Action, Intent, OpTiming, iso
from killswitch.enforcer import Enforcer, SsmSource
from killswitch.engine import Switch
from killswitch.inventory import load
from killswitch.selectors import Selector
from killswitch.state import open_store
from tests.conftest import Workspace
from tests.integration.test_drift_schedule import Receiver, receiver  # noqa: F401
from tests.integration.test_probes import TOKENS, Ticking
from tests.integration.test_state_conformance import new_table
from tests.support.clocks import ManualClock
from tests.support.dynamodb_local import dynamodb_local_fixture  # noqa: F401
from tests.support.faultproxy import FaultProxy, aws_error, for_action, for_region
from tests.support.gateway import Gateway

# What each call costs on the test's clock.
IDENTITY, READ, WRITE, PROBE = 0.5, 0.25, 2.0, 0.25
SERIAL = ("--concurrency", "1")


def latencies(proxy: FaultProxy, clock: ManualClock) -> None:
    """Every identity check, flag read and flag write through ``proxy`` moves ``clock``."""
    for action, seconds in (
        ("GetCallerIdentity", IDENTITY),
        ("GetParameter", READ),
        ("PutParameter", WRITE),
    ):
        proxy.add(for_action(action), fault="delay", delay=seconds, advance=clock.advance)


@pytest.fixture
def clock(proxy: FaultProxy) -> ManualClock:
    clock = ManualClock()
    latencies(proxy, clock)
    return clock


@pytest.fixture(params=["sqlite", "dynamodb"])
def timed(
    request: pytest.FixtureRequest,
    faulty_ws: Workspace,
    receiver: Receiver,  # noqa: F811  (the fixture, imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> Workspace:
    """A workspace on either store whose ops are announced on a webhook."""
    state = {}
    if request.param == "dynamodb":
        state = {"state": new_table(request.getfixturevalue("dynamodb_local"))}
    monkeypatch.setenv("KS_WEBHOOK", receiver.url)
    faulty_ws.write_inventory(notify={"webhook_env": "KS_WEBHOOK", "on": ["op"]}, **state)
    return faulty_ws


def metrics(
    ws: Workspace, path: Path, *fix: str, code: int = 0, clock: Clock = SYSTEM
) -> dict[str, Any]:
    """What a scheduled drift run exports, parsed as Prometheus parses it."""
    result = ws.run(*SERIAL, "drift", *fix, "--metrics-file", str(path), clock=clock)
    assert result.code == code, result.stderr
    return {f.name: f for f in text_string_to_metric_families(path.read_text())}


def samples(family: Any, **labels: str) -> dict[tuple[str, str], float]:
    """(sample name, le) → value, of the samples carrying ``labels``."""
    return {
        (s.name, s.labels.get("le", "")): s.value
        for s in family.samples
        if all(s.labels.get(k) == v for k, v in labels.items())
    }


def test_a_revoke_reports_its_time_to_kill_in_ops_show_the_webhook_and_the_metrics(
    timed: Workspace,
    clock: ManualClock,
    receiver: Receiver,  # noqa: F811
    tmp_path: Path,
) -> None:
    revoke = timed.run(*SERIAL, "revoke", "-m", "mythos-5", "-r", "eu-*", "--reason", "order",
                       "--yes", "-o", "json", clock=clock)  # fmt: skip

    assert revoke.code == 0, revoke.stderr
    op = revoke.json()["op"]
    assert {timed.posture(r, "mythos-5") for r in ("eu-west-1", "eu-central-1")} == {"revoked"}
    # setup: who acts; plan: two reads under the lock; apply: write, read back, write;
    # verify: the last read-back.
    phases = {
        "setup": IDENTITY,
        "plan": 2 * READ,
        "confirm": 0.0,
        "lock": 0.0,
        "apply": WRITE + READ + WRITE,
        "verify": READ,
    }
    timing = {
        "started_at": iso(clock.start),
        "runs": 1,
        "verified_after": sum(phases.values()),
        "effective_after": None,
        "phases": phases,
    }
    assert timing["verified_after"] == 5.5
    shown = timed.run("ops", "show", op, "-o", "json").json()
    assert shown["operation"]["timing"] == timing
    [listed] = timed.run("ops", "list", "-o", "json").json()["ops"]
    assert listed["timing"] == timing
    table = timed.run("ops", "show", op).stdout.splitlines()
    assert table[-2:] == [
        f"time to kill: verified after 5.50s (from the command at {iso(clock.start)})",
        "phases: setup 0.50s · plan 0.50s · confirm 0.00s · lock 0.00s · apply 4.25s · "
        "verify 0.25s",
    ]
    [message] = receiver.messages
    assert message["text"].endswith("; time to kill: verified after 5.50s")
    events = timed.run("audit", "list", "-o", "json").json()["events"]
    assert [e["payload"]["timing"] for e in events if e["kind"] == "op.timed"] == [timing]
    assert timed.run("audit", "verify").code == 0

    families = metrics(timed, tmp_path / "killswitch.prom")

    histogram = samples(families["killswitch_time_to_kill_seconds"], action="revoke")
    assert histogram[("killswitch_time_to_kill_seconds_bucket", "5.0")] == 0
    assert histogram[("killswitch_time_to_kill_seconds_bucket", "10.0")] == 1
    assert histogram[("killswitch_time_to_kill_seconds_bucket", "+Inf")] == 1
    assert histogram[("killswitch_time_to_kill_seconds_count", "")] == 1
    assert histogram[("killswitch_time_to_kill_seconds_sum", "")] == 5.5
    restores = samples(families["killswitch_time_to_kill_seconds"], action="restore")
    assert restores[("killswitch_time_to_kill_seconds_count", "")] == 0
    last = families["killswitch_last_op_phase_seconds"].samples
    assert {s.labels["phase"]: s.value for s in last if s.labels["action"] == "revoke"} == phases
    started = families["killswitch_last_op_started_timestamp_seconds"].samples
    assert [(s.labels, s.value) for s in started] == [
        ({"action": "revoke"}, clock.start.timestamp())
    ]
    [to_kill] = families["killswitch_last_op_time_to_kill_seconds"].samples
    assert (to_kill.labels, to_kill.value) == ({"action": "revoke"}, 5.5)


def test_a_partial_revoke_resumed_ten_minutes_later_counts_from_the_first_command(
    timed: Workspace,
    proxy: FaultProxy,
    clock: ManualClock,
    receiver: Receiver,  # noqa: F811
    tmp_path: Path,
) -> None:
    proxy.clear()  # eu-west-1 refuses the write (before any latency rule can match)
    proxy.add(for_region("eu-west-1", "PutParameter"), **aws_error("AccessDeniedException", "no"))
    latencies(proxy, clock)
    revoke = timed.run(*SERIAL, "revoke", "-m", "mythos-5", "-r", "eu-*", "--reason", "order",
                       "--yes", "-o", "json", clock=clock)  # fmt: skip

    assert revoke.code == 3, revoke.stderr
    op = revoke.json()["op"]
    first = timed.run("ops", "show", op, "-o", "json").json()["operation"]["timing"]
    # eu-central-1 is written and read back; then eu-west-1's write is refused at once,
    # so nothing is read back after the last write.
    assert first == {
        "started_at": iso(clock.start),
        "runs": 1,
        "verified_after": None,
        "effective_after": None,
        "phases": {"setup": IDENTITY, "plan": 2 * READ, "confirm": 0.0, "lock": 0.0,
                   "apply": WRITE + READ, "verify": 0.0},
    }  # fmt: skip
    assert receiver.messages[-1]["text"].endswith("; time to kill: not verified everywhere yet")
    partial = metrics(timed, tmp_path / "partial.prom", code=2)  # eu-west-1 is still open
    unfinished = {
        (s.labels["action"], s.labels["status"]): s.value
        for s in partial["killswitch_unfinished_ops"].samples
        if s.value
    }
    assert unfinished == {("revoke", "partial"): 1}
    histogram = samples(partial["killswitch_time_to_kill_seconds"], action="revoke")
    assert histogram[("killswitch_time_to_kill_seconds_count", "")] == 0
    assert "killswitch_last_op_time_to_kill_seconds" not in {
        s.name for f in partial.values() for s in f.samples
    }

    clock.advance(600)  # ten minutes on, the permission is granted
    proxy.clear()
    latencies(proxy, clock)
    resumed = timed.run(*SERIAL, "ops", "resume", op, "--yes", clock=clock)

    assert resumed.code == 0, resumed.stderr
    assert timed.posture("eu-west-1", "mythos-5") == "revoked"
    # Run 1 took 3.25 s, the drift check's 16 reads 4 s, then 600 s passed. Run 2 reads
    # both targets to confirm, again under the lock, and writes and reads eu-west-1.
    last = {"setup": IDENTITY, "plan": 4 * READ, "confirm": 0.0, "lock": 0.0, "apply": WRITE,
            "verify": READ}  # fmt: skip
    timing = timed.run("ops", "show", op, "-o", "json").json()["operation"]["timing"]
    assert timing == {
        "started_at": iso(clock.start),
        "runs": 2,
        "verified_after": 3.25 + 4.0 + 600 + sum(last.values()),
        "effective_after": None,
        "phases": last,
    }
    assert timing["verified_after"] == 611.0
    assert timed.run("ops", "show", op).stdout.splitlines()[-2:] == [
        f"time to kill: verified after 10m11s (from the first of 2 commands, at "
        f"{iso(clock.start)})",
        "phases of the last run: setup 0.50s · plan 1.00s · confirm 0.00s · lock 0.00s · "
        "apply 2.00s · verify 0.25s",
    ]
    assert receiver.messages[-1]["text"].endswith("; time to kill: verified after 10m11s")
    assert timed.run("audit", "verify").code == 0

    families = metrics(timed, tmp_path / "complete.prom")

    histogram = samples(families["killswitch_time_to_kill_seconds"], action="revoke")
    assert histogram[("killswitch_time_to_kill_seconds_bucket", "600.0")] == 0  # SLO missed
    assert histogram[("killswitch_time_to_kill_seconds_bucket", "1800.0")] == 1
    assert histogram[("killswitch_time_to_kill_seconds_sum", "")] == 611.0
    assert all(s.value == 0 for s in families["killswitch_unfinished_ops"].samples)
    [to_kill] = families["killswitch_last_op_time_to_kill_seconds"].samples
    assert to_kill.value == 611.0


def test_with_probes_the_op_says_when_the_kill_took_effect_at_the_gateway(
    faulty_ws: Workspace,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The reference enforcer reads its flags from moto itself; each probe request goes
    # through a proxy in front of the gateway, which moves the clock.
    source = SsmSource("us-east-1", endpoint_url=faulty_ws.server, timeout=10)
    gateway = Gateway("gw", Enforcer(source, 1.0, 30, Ticking(5.0), 10), TOKENS)
    front = FaultProxy(gateway.url).start()
    front.add(lambda call: True, fault="delay", delay=PROBE, advance=clock.advance)
    monkeypatch.setenv("PROBE_US_TOKEN", "us-analyst")
    monkeypatch.setenv("PROBE_CONTRACTOR_TOKEN", "contractor")
    callers = {
        "anonymous": {},
        "contractor": {"token_env": "PROBE_CONTRACTOR_TOKEN"},
        "us-person": {"audience": ["us-person"], "token_env": "PROBE_US_TOKEN"},
    }
    url = f"{front.url}/v1/models/{{model}}/generate"
    faulty_ws.write_inventory(
        probes={"gw": {"url": url, "method": "POST", "callers": callers,
                       "targets": {"regions": ["us-east-1"]}}}
    )  # fmt: skip
    try:
        revoke = faulty_ws.run(*SERIAL, "revoke", "-m", "mythos-5", "-r", "us-east-1",
                               "--reason", "order", "--yes", "-o", "json", clock=clock)  # fmt: skip
        assert gateway.call("mythos-5", "us-analyst")[0] == 403
    finally:
        front.stop()
        gateway.served.stop()

    assert revoke.code == 0, revoke.stderr
    [row] = revoke.json()["targets"]
    assert (row["result"], row["error"]) == ("effective", "effect after 0.75s")
    op = faulty_ws.run("ops", "show", revoke.json()["op"], "-o", "json").json()["operation"]
    phases = {"setup": IDENTITY, "plan": READ, "confirm": 0.0, "lock": 0.0, "apply": WRITE,
              "verify": READ, "effect": 3 * PROBE}  # fmt: skip
    assert op["timing"] == {
        "started_at": iso(clock.start),
        "runs": 1,
        "verified_after": 3.0,
        "effective_after": 3.75,
        "phases": phases,
    }
    assert faulty_ws.run("ops", "show", op["id"]).stdout.splitlines()[-2] == (
        f"time to kill: verified after 3.00s, effective after 3.75s (from the command at "
        f"{iso(clock.start)})"
    )

    families = metrics(faulty_ws, tmp_path / "killswitch.prom")

    effective = samples(families["killswitch_time_to_effective_kill_seconds"], action="revoke")
    assert effective[("killswitch_time_to_effective_kill_seconds_bucket", "1.0")] == 0
    assert effective[("killswitch_time_to_effective_kill_seconds_bucket", "5.0")] == 1
    assert effective[("killswitch_time_to_effective_kill_seconds_sum", "")] == 3.75
    [last] = families["killswitch_last_op_time_to_effective_kill_seconds"].samples
    assert last.value == 3.75
    effect = [s for s in families["killswitch_last_op_phase_seconds"].samples
              if s.labels["phase"] == "effect"]  # fmt: skip
    assert [(s.labels["action"], s.value) for s in effect] == [("revoke", 0.75)]


def test_a_revoke_that_took_the_lock_from_a_dead_holder_says_how_long_it_waited(
    faulty_ws: Workspace, clock: ManualClock
) -> None:
    # Carol's laptop died holding the lock for another revoke: its heartbeat never moves.
    store = open_store(f"sqlite:///{faulty_ws.state_db}")
    store.acquire("carol@crashed-laptop", "op-ghost", ttl_seconds=60, intent=Intent.TIGHTEN)
    store.close()

    revoke = faulty_ws.run(*SERIAL, "revoke", "-m", "mythos-5", "-r", "eu-*", "--reason",
                           "order", "--yes", "-o", "json", clock=clock)  # fmt: skip

    assert revoke.code == 0, revoke.stderr
    assert "waiting for the lock: carol@crashed-laptop" in revoke.stderr
    op = faulty_ws.run("ops", "show", revoke.json()["op"], "-o", "json").json()["operation"]
    # The lock is taken once the heartbeat has stood still 3 beats and a second (7 s). A
    # write of carol's may land until 20 s (the AWS call bound) after that, so both
    # targets are read again then: that wait is part of verifying.
    last_write = 2 * READ + WRITE + READ + WRITE  # since the lock was taken
    settled = 20.0
    assert op["timing"]["phases"] == {
        "setup": IDENTITY,
        "plan": 2 * READ,
        "confirm": 0.0,
        "lock": 7.0,
        "apply": WRITE + READ + WRITE,
        "verify": settled + 2 * READ - last_write,
    }
    assert op["timing"]["verified_after"] == IDENTITY + 7.0 + settled + 2 * READ == 28.0


def test_the_time_on_call_spends_reading_the_plan_is_a_phase_of_its_own(
    faulty_ws: Workspace, clock: ManualClock
) -> None:
    inventory = load(faulty_ws.inventory)
    switch = Switch(
        inventory,
        open_store(inventory.state_url),
        "alice",
        concurrency=1,
        clock=clock,
        started=clock.monotonic(),
    )

    def reads_the_plan(plan: object) -> None:
        clock.advance(12.0)  # twelve seconds before saying yes

    report = switch.change(
        Action.REVOKE,
        Selector(models=("mythos-5",), regions=("eu-*",)),
        reason="order",
        confirm=reads_the_plan,
    )

    assert report.op_id is not None
    # The preview reads both targets, and so does the plan under the lock.
    assert switch.operation(report.op_id).timing == OpTiming(
        started_at=iso(clock.start),
        runs=1,
        verified_after=4 * READ + 12.0 + WRITE + READ + WRITE + READ,
        effective_after=None,
        phases=(("setup", 0.0), ("plan", 4 * READ), ("confirm", 12.0), ("lock", 0.0),
                ("apply", WRITE + READ + WRITE), ("verify", READ)),
    )  # fmt: skip


def test_a_heal_by_the_scheduled_drift_check_counts_in_that_run_s_export(
    faulty_ws: Workspace, clock: ManualClock, tmp_path: Path
) -> None:
    revoke = faulty_ws.run(*SERIAL, "revoke", "-m", "mythos-5", "-r", "eu-*", "--reason",
                           "order", "--yes", clock=clock)  # fmt: skip
    assert revoke.code == 0, revoke.stderr
    faulty_ws.ssm("eu-central-1").put_parameter(  # by hand, at the server
        Name="/killswitch/models/mythos-5",
        Value=json.dumps({"posture": "open", "audience": []}),
        Type="String",
        Overwrite=True,
    )

    families = metrics(faulty_ws, tmp_path / "killswitch.prom", "--fix", clock=clock)

    assert faulty_ws.posture("eu-central-1", "mythos-5") == "revoked"
    histogram = samples(families["killswitch_time_to_kill_seconds"], action="revoke")
    assert histogram[("killswitch_time_to_kill_seconds_bucket", "5.0")] == 0
    assert histogram[("killswitch_time_to_kill_seconds_bucket", "10.0")] == 2
    # The heal counts from the start of the drift run: who runs it, then the check's
    # 16 reads found the drift; then one read under the lock, the write, the read-back.
    heal = {"setup": IDENTITY + 16 * READ, "plan": READ, "confirm": 0.0, "lock": 0.0,
            "apply": WRITE, "verify": READ}  # fmt: skip
    assert histogram[("killswitch_time_to_kill_seconds_sum", "")] == 5.5 + sum(heal.values())
    last = families["killswitch_last_op_phase_seconds"].samples
    assert {s.labels["phase"]: s.value for s in last} == heal


def test_a_restore_counts_from_the_approval_that_applied_it_not_from_the_request(
    faulty_ws: Workspace, clock: ManualClock, tmp_path: Path
) -> None:
    revoke = ("revoke", "-m", "mythos-5", "-r", "eu-*", "--reason", "order", "--yes")
    assert faulty_ws.run(*SERIAL, *revoke, clock=clock).code == 0
    request = faulty_ws.run(*SERIAL, "restore", "-m", "mythos-5", "-r", "eu-*", "--reason",
                            "lifted", "--yes", "-o", "json", clock=clock)  # fmt: skip
    assert request.code == 5, request.stderr  # waits for a second person
    op = request.json()["op"]
    clock.advance(3600)  # bob approves an hour later
    approved_at = clock.now()

    approve = faulty_ws.run(*SERIAL, "approve", op, "--yes", actor="bob", clock=clock)

    assert approve.code == 0, approve.stderr
    assert faulty_ws.posture("eu-west-1", "mythos-5") == "open"
    assert "time to restore: verified after 6.00s" in approve.stdout  # bob sees it at once
    # Bob's command reads both targets to show him, again under the lock, then opens them.
    phases = {"setup": IDENTITY, "plan": 4 * READ, "confirm": 0.0, "lock": 0.0,
              "apply": WRITE + READ + WRITE, "verify": READ}  # fmt: skip
    timing = faulty_ws.run("ops", "show", op, "-o", "json").json()["operation"]["timing"]
    assert timing == {
        "started_at": iso(approved_at),
        "runs": 1,
        "verified_after": sum(phases.values()),
        "effective_after": None,
        "phases": phases,
    }
    assert f"time to restore: verified after 6.00s (from the command at {iso(approved_at)})" in (
        faulty_ws.run("ops", "show", op).stdout
    )
    families = metrics(faulty_ws, tmp_path / "killswitch.prom")
    restores = samples(families["killswitch_time_to_kill_seconds"], action="restore")
    assert restores[("killswitch_time_to_kill_seconds_bucket", "10.0")] == 1
    assert restores[("killswitch_time_to_kill_seconds_sum", "")] == 6.0
