"""The reference enforcer in a serving path: flags written by the real CLI (to moto's
SSM, and to a Kubernetes test server's ConfigMap, mounted on disk as kubelet does), read
by the enforcer in front of a stand-in model server on 127.0.0.1, called over HTTP.

Time is a FakeClock the tests move: a gateway's cache TTL is what makes an effect late.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from killswitch.contract import ApplyContext
from killswitch.domain import Access, Posture
from killswitch.enforcer import (
    DirectorySource,
    Enforcer,
    ExtAuthzService,
    KillswitchMiddleware,
    Source,
    SsmSource,
    Verdict,
    decide,
    parse_document,
)
from providers.flag import flag_document
from tests.conftest import Workspace
from tests.integration.test_kubernetes import (  # noqa: F401  (fixtures)
    Cluster,
    clusters,
    kube_server_class,
)
from tests.support.clocks import FakeClock
from tests.support.faultproxy import FaultProxy, for_action
from tests.support.gateway import (
    Gateway,
    MountedConfigMap,
    Served,
    call,
    model_server,
)
from tests.support.processes import wait_for
from tests.support.servers import free_port

MODEL = "mythos-5"
TTL, GRACE = 5.0, 20.0
READ_TIMEOUT = 10.0  # generous: a loaded CI machine must not turn a slow read into a test failure
# Who the identity layer says each caller is (from their credential, not their headers).
TOKENS = {"us-analyst": "us-person", "contractor": "", "eu-analyst": "eu-citizen"}
DENIED = {"error": "model_unavailable", "model": MODEL}
RETRY = {"attempts": 3, "max_seconds": 5, "base_seconds": 0.05}
ONE_APPROVAL = {"restore": {"approvals": 1}, "retry": RETRY}
TWO_PEOPLE = {"restore": {"approvals": 2}, "retry": RETRY}

StartGateway = Callable[..., Gateway]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gateway(clock: FakeClock) -> Iterator[StartGateway]:
    """Starts gateways: ``gateway(source)`` enforces its flags, ``gateway(None)`` ignores
    them. Each is on its own 127.0.0.1 port (``.url``), sharing the test's clock."""
    started: list[Gateway] = []

    def start(
        source: Source | None,
        name: str = "gw",
        ttl: float = TTL,
        read_timeout: float = READ_TIMEOUT,
    ) -> Gateway:
        enforcer = None if source is None else Enforcer(source, ttl, GRACE, clock, read_timeout)
        found = Gateway(name, enforcer, TOKENS)
        started.append(found)
        return found

    yield start
    for found in started:
        found.served.stop()


def enforcer_for(source: Source, clock: FakeClock) -> Enforcer:
    return Enforcer(source, TTL, GRACE, clock, READ_TIMEOUT)


def ssm_gateway(start: StartGateway, endpoint: str, region: str = "us-east-1") -> Gateway:
    return start(
        SsmSource(region, endpoint_url=endpoint, timeout=READ_TIMEOUT), name=f"aws/{region}"
    )


def statuses(gw: Gateway) -> dict[str, int]:
    return {caller: gw.call(MODEL, caller)[0] for caller in TOKENS}


# ---------------------------------------------------------------- through SSM (moto)


def test_export_order_restrict_revoke_restore_reach_callers_through_an_ssm_gateway(
    ws: Workspace, gateway: StartGateway, clock: FakeClock
) -> None:
    ws.write_inventory(policy=TWO_PEOPLE)
    us, eu = ssm_gateway(gateway, ws.server), ssm_gateway(gateway, ws.server, "eu-west-1")
    assert statuses(us) == {"us-analyst": 200, "contractor": 200, "eu-analyst": 200}

    restrict = ("restrict", "-m", MODEL, "-r", "us-east-1", "-a", "us-person")
    assert ws.run(*restrict, "--reason", "export order", "--yes").code == 0
    clock.advance(TTL)

    assert statuses(us) == {"us-analyst": 200, "contractor": 403, "eu-analyst": 403}
    assert us.call(MODEL, "contractor") == (403, DENIED)
    assert statuses(eu) == {"us-analyst": 200, "contractor": 200, "eu-analyst": 200}
    assert us.call("fable-5", "contractor")[0] == 200  # another model is not touched

    revoke = ("revoke", "-m", MODEL, "-r", "us-east-1", "--reason", "jailbreak", "--yes")
    assert ws.run(*revoke).code == 0
    clock.advance(TTL)

    assert statuses(us) == {"us-analyst": 403, "contractor": 403, "eu-analyst": 403}

    restore = ("restore", "-m", MODEL, "-r", "us-east-1", "--reason", "fixed", "--yes", "-o")
    op = ws.run(*restore, "json").json()["op"]
    clock.advance(TTL)
    assert statuses(us)["us-analyst"] == 403  # awaiting the second person: still closed

    assert ws.run("approve", op, "--yes", actor="bob").code == 0
    clock.advance(TTL)

    assert statuses(us) == {"us-analyst": 200, "contractor": 200, "eu-analyst": 200}
    assert ws.posture("us-east-1", MODEL) == "open"  # an open flag, not a missing one


def test_stale_gateway_cache_keeps_serving_a_revoked_model_until_its_ttl(
    ws: Workspace, gateway: StartGateway, clock: FakeClock
) -> None:
    slow = gateway(
        SsmSource("us-east-1", endpoint_url=ws.server, timeout=READ_TIMEOUT), name="slow", ttl=60
    )
    ignoring = gateway(None, name="ignores-flags")
    assert slow.call(MODEL, "contractor")[0] == 200  # posture read (open) and cached

    assert ws.run("revoke", "-m", MODEL, "--reason", "jailbreak", "--yes").code == 0

    assert slow.call(MODEL, "contractor")[0] == 200  # verified by killswitch, not in effect
    clock.advance(59.9)
    assert slow.call(MODEL, "contractor")[0] == 200
    clock.advance(0.1)
    assert slow.call(MODEL, "contractor") == (403, DENIED)  # the effect arrives a TTL late
    assert ignoring.call(MODEL, "contractor")[0] == 200  # and never, where nobody enforces


def test_ssm_outage_serves_the_last_posture_for_the_grace_then_fails_closed(
    ws: Workspace, proxy: FaultProxy, gateway: StartGateway, clock: FakeClock
) -> None:
    gw = ssm_gateway(gateway, proxy.url)  # reads SSM through a proxy we can take away
    assert gw.call(MODEL, "contractor")[0] == 200
    assert proxy.count("GetParameter") == 1
    clock.advance(TTL - 1)
    assert gw.call(MODEL, "contractor")[0] == 200
    assert proxy.count("GetParameter") == 1  # within the TTL: from the cache, no read

    proxy.add(lambda _: True, fault="reset")  # SSM unreachable: pooled connections drop,
    proxy.stop()  # and the port closes

    clock.advance(1)
    assert gw.call(MODEL, "contractor")[0] == 200  # read fails; last good posture, in grace
    reading = gw.enforcer.reading(MODEL)  # type: ignore[union-attr]
    assert reading.stale and reading.access is not None
    clock.advance(GRACE)
    assert gw.call(MODEL, "contractor")[0] == 200  # exactly TTL + grace old: still served
    clock.advance(0.5)
    assert gw.call(MODEL, "us-analyst") == (403, DENIED)  # never open on a failed read
    reading = gw.enforcer.reading(MODEL)  # type: ignore[union-attr]
    assert reading.access is None and "no good read for" in reading.why


def test_ttl_expiry_under_load_costs_ssm_one_read_not_one_per_request(
    ws: Workspace, proxy: FaultProxy, gateway: StartGateway, clock: FakeClock
) -> None:
    gw = ssm_gateway(gateway, proxy.url)
    assert gw.call(MODEL, "contractor")[0] == 200
    assert ws.run("revoke", "-m", MODEL, "--reason", "jailbreak", "--yes").code == 0
    clock.advance(TTL)
    slow = proxy.add(for_action("GetParameter"), fault="hold", times=1)  # SSM answers late

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(gw.call, MODEL, "contractor")
        wait_for(lambda: proxy.count("GetParameter") == 2, "the refresh to reach SSM")
        others = [pool.submit(gw.call, MODEL, "contractor") for _ in range(7)]
        assert [f.result()[0] for f in others] == [200] * 7  # the posture there is, no wait
        slow.gate.set()
        assert first.result() == (403, DENIED)

    assert proxy.count("GetParameter") == 2  # one read for the whole burst
    assert gw.call(MODEL, "contractor")[0] == 403


def test_ssm_that_hangs_costs_a_request_at_most_the_read_timeout(
    ws: Workspace, proxy: FaultProxy, gateway: StartGateway, clock: FakeClock
) -> None:
    source = SsmSource("us-east-1", endpoint_url=proxy.url)
    source.read(MODEL)  # boto3 loaded and its client made, so only the hang is timed
    gw = gateway(source, read_timeout=0.5)
    assert gw.call(MODEL, "contractor")[0] == 200
    proxy.add(for_action("GetParameter"), fault="hold")  # answers nothing until teardown
    clock.advance(TTL)

    assert gw.call(MODEL, "contractor")[0] == 200  # after 0.5 s: the last posture, in grace
    reading = gw.enforcer.reading(MODEL)  # type: ignore[union-attr]
    assert reading.stale and reading.access is not None
    clock.advance(GRACE + 0.1)
    assert gw.call(MODEL, "contractor") == (403, DENIED)
    assert "read timed out after 0.5s" in gw.enforcer.reading(MODEL).why  # type: ignore[union-attr]


def test_gateway_that_never_read_its_flag_refuses_until_it_can(
    ws: Workspace, gateway: StartGateway
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    gw = ssm_gateway(gateway, unreachable)

    assert gw.call(MODEL, "us-analyst") == (403, DENIED)
    reading = gw.enforcer.reading(MODEL)  # type: ignore[union-attr]
    assert reading.access is None and reading.why.startswith("flag never read: GetParameter")


def test_forged_audience_header_does_not_pass_a_restricted_model(
    ws: Workspace, gateway: StartGateway, clock: FakeClock
) -> None:
    restrict = ("restrict", "-m", MODEL, "-a", "us-person", "--reason", "export order")
    assert ws.run(*restrict, "--yes").code == 0
    gw = ssm_gateway(gateway, ws.server)
    forged = {"x-killswitch-audience": "us-person"}

    assert gw.call(MODEL, "contractor", forged) == (403, DENIED)  # the edge dropped it
    assert gw.call(MODEL, None, forged) == (403, DENIED)
    assert gw.call(MODEL, "us-analyst")[0] == 200

    # Without an identity layer in the same process, the enforcer trusts the header only
    # from the identity proxy's address; a caller connecting straight in is nobody.
    enforcer = enforcer_for(SsmSource("us-east-1", endpoint_url=ws.server), clock)
    direct = Served(KillswitchMiddleware(model_server, enforcer, trusted_peers=["10.0.0.7"]))
    try:
        status, _ = call(direct.start().url, f"/v1/models/{MODEL}/generate", headers=forged)
        assert status == 403
    finally:
        direct.stop()


def test_path_the_model_pattern_misses_is_refused_when_a_model_is_required(
    ws: Workspace, clock: FakeClock
) -> None:
    assert ws.run("revoke", "-m", MODEL, "--reason", "jailbreak", "--yes").code == 0
    enforcer = enforcer_for(SsmSource("us-east-1", endpoint_url=ws.server), clock)
    seen: list[Verdict] = []
    strict = KillswitchMiddleware(
        model_server, enforcer, require_model=True, on_decision=seen.append
    )
    served = Served(strict).start()
    try:
        # A server that folds // into / would serve the revoked model on this path.
        assert call(served.url, f"//v1/models/{MODEL}/generate") == (
            403,
            {"error": "model_unavailable", "model": None},
        )
        assert call(served.url, f"/v1/models/{MODEL}/generate") == (403, DENIED)
    finally:
        served.stop()
    assert [(v.model, v.decision.reason) for v in seen] == [
        (None, "names no model"),
        (MODEL, "revoked"),
    ]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('"revoked"', "not an object"),
        ("{not json", "not valid JSON"),
        ('{"schema": "killswitch.flag/v2", "model": "mythos-5", "posture": "open"}', "schema"),
        ('{"schema": "killswitch.flag/v1", "model": "fable-5", "posture": "open"}', "model is"),
        ('{"schema": "killswitch.flag/v1", "model": "mythos-5", "posture": "closed"}', "posture"),
        (
            '{"schema": "killswitch.flag/v1", "model": "mythos-5", "posture": "restricted",'
            ' "audience": "us-person"}',
            "audience",
        ),
    ],
)
def test_hand_edited_flag_that_no_gateway_can_trust_fails_closed(
    ws: Workspace, clock: FakeClock, value: str, why: str
) -> None:
    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=ws.server)
    ssm.put_parameter(Name=f"/killswitch/models/{MODEL}", Value=value, Type="String")
    enforcer = enforcer_for(SsmSource("us-east-1", endpoint_url=ws.server), clock)

    reading = enforcer.refresh(MODEL)

    assert reading.access is None, reading
    assert why in reading.why and not reading.stale
    assert not enforcer.check(MODEL, {"us-person"}).allowed


def test_restricted_to_nobody_reads_as_revoked(tmp_path: Path, clock: FakeClock) -> None:
    flags = MountedConfigMap(tmp_path / "flags")
    flags.update({MODEL: _document("restricted", [])})
    enforcer = enforcer_for(DirectorySource(flags.directory), clock)

    decision = enforcer.check(MODEL, {"us-person"})

    assert not decision.allowed and "nobody" in decision.reason


# ---------------------------------------------------------------- through a ConfigMap


def test_jailbreak_revoke_reaches_callers_through_a_mounted_configmap(
    ws: Workspace,
    clusters: list[Cluster],  # noqa: F811  (the fixture, imported above)
    gateway: StartGateway,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    eu = clusters[0]
    eu.create("Namespace", None, {"metadata": {"name": eu.ns["serving"]}})
    entry = eu.entry_config() | {"mechanisms": ["configmap-flag"], "namespaces": ["serving"]}
    ws.write_inventory(providers={eu.entry: entry}, scopes={}, policy=ONE_APPROVAL)
    volume = MountedConfigMap(tmp_path / "killswitch-models")

    def kubelet_syncs() -> None:  # what kubelet does when the ConfigMap changes
        configmap = eu.get("ConfigMap", "serving", "killswitch-models") or {}
        volume.update(configmap.get("data") or {})
        clock.advance(TTL)

    gw = gateway(DirectorySource(volume.directory), name=f"{eu.entry}/serving")
    assert statuses(gw) == {"us-analyst": 200, "contractor": 200, "eu-analyst": 200}

    assert ws.run("revoke", "-m", MODEL, "--reason", "jailbreak", "--yes").code == 0
    assert statuses(gw)["contractor"] == 200  # in the ConfigMap, not yet on the volume
    kubelet_syncs()
    assert statuses(gw) == {"us-analyst": 403, "contractor": 403, "eu-analyst": 403}
    assert gw.call("fable-5", "contractor")[0] == 200  # no key for it: open

    assert ws.run("restore", "-m", MODEL, "--reason", "fixed", "--yes").code == 0
    restrict = ("restrict", "-m", MODEL, "-a", "us-person", "-a", "eu-citizen")
    assert ws.run(*restrict, "--reason", "export order", "--yes").code == 0
    kubelet_syncs()
    assert statuses(gw) == {"us-analyst": 200, "contractor": 403, "eu-analyst": 200}

    assert ws.run("restore", "-m", MODEL, "--reason", "order lifted", "--yes").code == 0
    kubelet_syncs()
    assert statuses(gw) == {"us-analyst": 200, "contractor": 200, "eu-analyst": 200}


def test_configmap_volume_that_is_not_mounted_fails_closed_not_open(
    tmp_path: Path, clock: FakeClock
) -> None:
    enforcer = enforcer_for(DirectorySource(tmp_path / "never-mounted"), clock)

    reading = enforcer.reading(MODEL)

    assert reading.access is None and "is not there" in reading.why
    assert not enforcer.check("../etc/passwd", set()).allowed  # never a path outside


# ---------------------------------------------------------------- Envoy ext_authz


def test_envoy_ext_authz_check_allows_and_denies_like_the_middleware(
    ws: Workspace, clock: FakeClock
) -> None:
    restrict = ("restrict", "-m", MODEL, "-a", "us-person", "--reason", "export order")
    assert ws.run(*restrict, "--yes").code == 0
    enforcer = enforcer_for(SsmSource("us-east-1", endpoint_url=ws.server), clock)
    authz = Served(ExtAuthzService(enforcer, path_prefix="/authz")).start()
    # What Envoy's http_service sends: the client's method, path_prefix + path, the
    # allowed headers (the identity layer's audience among them), and no body.
    path = f"/authz/v1/models/{MODEL}/generate"
    us = {"x-killswitch-audience": "us-person", "host": "api.example", "content-length": "0"}
    try:
        assert call(authz.url, path, headers=us) == (200, {})
        assert call(authz.url, path, headers={"content-length": "0"}) == (403, DENIED)
        assert call(authz.url, "/authz/v1/models/fable-5/generate", method="GET")[0] == 200
        assert call(authz.url, "/v1/models/mythos-5/generate")[0] == 403  # prefix missing
        assert ws.run("revoke", "-m", MODEL, "--reason", "jailbreak", "--yes").code == 0
        clock.advance(TTL)
        assert call(authz.url, path, headers=us) == (403, DENIED)
    finally:
        authz.stop()


def test_ext_authz_server_from_the_command_line_reads_ssm(ws: Workspace) -> None:
    assert ws.run("revoke", "-m", MODEL, "--reason", "jailbreak", "--yes").code == 0
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "killswitch.enforcer", "serve", "--ext-authz", "--port",
         str(port), "--source", "ssm:us-east-1", "--endpoint-url", ws.server],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), "the ext_authz server to listen", server, timeout=30)
        assert call(url, f"/v1/models/{MODEL}/generate") == (403, DENIED)
        assert call(url, "/v1/models/fable-5/generate") == (200, {})
    finally:
        server.terminate()
        server.wait(10)


# ---------------------------------------------------------------- the rule itself

LABELS = st.sampled_from(["us-person", "eu-citizen", "staff", "partner-a"])
ACCESS = st.one_of(
    st.just(Access(Posture.OPEN)),
    st.just(Access(Posture.REVOKED)),
    st.builds(lambda a: Access(Posture.RESTRICTED, tuple(a)), st.sets(LABELS, max_size=3)),
)


@settings(max_examples=150, deadline=None)
@given(ACCESS, ACCESS, st.sets(LABELS, max_size=3), st.text(max_size=300))
def test_gateway_lets_in_no_one_a_tighter_posture_keeps_out_and_reads_what_levers_write(
    tighter: Access, looser: Access, audiences: set[str], reason: str
) -> None:
    # The one order of postures (DESIGN.md invariant 2) holds at the gateway too:
    # whoever a posture lets in, every looser posture lets in.
    if tighter.at_least_as_tight_as(looser) and decide(tighter, audiences).allowed:
        assert decide(looser, audiences).allowed
    # And the enforcer reads exactly what every flag lever writes.
    ctx = ApplyContext("op-1", "alice@host", reason, None, "2026-11-30T00:00:00.000Z")
    assert parse_document(MODEL, flag_document(MODEL, tighter, ctx)) == tighter


# ---------------------------------------------------------------- the hot path


def test_importing_the_enforcer_never_loads_boto3_or_kubernetes() -> None:
    script = (
        "import sys, killswitch.enforcer\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'boto3', 'botocore', 'kubernetes', 'providers', 'uvicorn'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------- helpers


def _answers(url: str) -> bool:
    try:
        call(url, "/", method="GET")
        return True
    except OSError:
        return False


def _document(posture: str, audience: list[str]) -> str:
    doc: dict[str, Any] = {"schema": "killswitch.flag/v1", "model": MODEL, "posture": posture}
    return json.dumps(doc | {"audience": audience})
