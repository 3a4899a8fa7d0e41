"""The partner simulator against the partner API document, over real sockets.

Every reply a test receives through ``api`` is also checked against
docs/partner-api.yaml (documented status, required headers, body schema), so these
tests are conformance tests of the simulator as much as behaviour tests. The last
test lets schemathesis generate requests from the document as well.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support.partnersim import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    PartnerSim,
    canonical_string,
    sign,
    signature,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "partner-api.yaml"
GUIDE_PATH = ROOT / "docs" / "partner-guide.md"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
REGISTRY: Registry = Registry().with_resource(
    "urn:partner-api", Resource.from_contents(SPEC, default_specification=DRAFT202012)
)

SECRET = "correct-horse-battery-staple"
KEY_ID = "killswitch-prod"
REGIONS = ["eu-west", "us-east", "ap-south"]
MODELS = {"mythos-5": "acme.mythos-5-v1:0", "fable-5": "acme.fable-5"}
MYTHOS = "acme.mythos-5-v1:0"


def access_path(model: str = MYTHOS, region: str = "eu-west") -> str:
    return f"/v1/models/{quote(model, safe='')}/regions/{quote(region, safe='')}/access"


def change(posture: str = "revoked", audience: list[str] | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"posture": posture, "reason": "export-control order", "op": "op-1"}
    if audience is not None:
        body["audience"] = audience
    body.update(extra)
    return body


# --------------------------------------------------------------------------- a client


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)

    @property
    def code(self) -> str:
        return str(self.body["error"]["code"])


def api(
    sim: PartnerSim,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    secret: str = SECRET,
    key_id: str = KEY_ID,
    timestamp: int | None = None,
    signed: bool = True,
    headers: dict[str, str] | None = None,
    send_body: bytes | None = None,
) -> Reply:
    """One request over a fresh connection, signed unless told not to; the reply is
    checked against the document before it is returned."""
    data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    sent: dict[str, str] = {}
    if data:
        sent["Content-Type"] = "application/json"
    if key is not None:
        sent["Idempotency-Key"] = key
    if signed:
        sent.update(sign(secret, method, path, data, timestamp, key_id=key_id, idempotency_key=key))
    sent.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        conn.request(method, path, body=send_body if send_body is not None else data, headers=sent)
        response = conn.getresponse()
        reply = Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()
    assert_conforms(method, path, reply)
    return reply


def _template(path: str) -> str | None:
    path = path.partition("?")[0]
    if path == "/v1/health":
        return path
    if re.fullmatch(r"/v1/models/[^/]+/regions/[^/]+/access", path):
        return "/v1/models/{model}/regions/{region}/access"
    if re.fullmatch(r"/v1/operations/[^/]+", path):
        return "/v1/operations/{id}"
    return None


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        found: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            found = found[part]
        node = found
    return node


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    wrapped = {"$ref": "urn:partner-api" + schema["$ref"]} if "$ref" in schema else schema
    validator = Draft202012Validator(
        wrapped, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(instance), key=str)
    assert not errors, f"{instance!r} does not match the document: {errors[0].message}"


def assert_conforms(method: str, path: str, reply: Reply) -> None:
    """The reply is one the document allows for this operation."""
    assert reply.headers.get("content-type") == "application/json"
    template = _template(path)
    operation = SPEC["paths"].get(template or "", {}).get(method.lower())
    if operation is None:  # not an operation of the API: still the one error shape
        assert reply.status in (404, 405)
        _validate(reply.body, {"$ref": "#/components/schemas/Error"})
        return
    documented = operation["responses"]
    assert str(reply.status) in documented, f"{method} {template} -> {reply.status} undocumented"
    response = _resolve(documented[str(reply.status)])
    for name, declared in response.get("headers", {}).items():
        header = _resolve(declared)
        value = reply.headers.get(name.lower())
        if header.get("required"):
            assert value is not None, f"{reply.status} must carry {name}"
        if value is not None:
            _validate(value, header["schema"])
    if method != "HEAD":
        _validate(reply.body, response["content"]["application/json"]["schema"])


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def sim() -> Iterator[PartnerSim]:
    s = PartnerSim(secret=SECRET, key_id=KEY_ID, regions=REGIONS, models=MODELS).start()
    yield s
    s.stop()


def put(sim: PartnerSim, body: Any, key: str = "k-1", **kwargs: Any) -> Reply:
    path = kwargs.pop("path", access_path())
    return api(sim, "PUT", path, body, key=key, **kwargs)


# --------------------------------------------------------------------------- the document


def test_the_document_is_a_valid_openapi_3_1_description() -> None:
    from openapi_spec_validator import validate

    validate(SPEC)
    assert SPEC["openapi"].startswith("3.1")
    assert set(SPEC["paths"]) == {
        "/v1/health",
        "/v1/models/{model}/regions/{region}/access",
        "/v1/operations/{id}",
    }


def test_the_guides_worked_example_is_what_the_signer_computes() -> None:
    guide = GUIDE_PATH.read_text()
    body = b'{"posture":"revoked","reason":"export-control order 2025-114","op":"op-0001"}'
    path = "/v1/models/acme.mythos-5-v1%3A0/regions/eu-west/access"
    canonical = canonical_string("PUT", path, body, 1700000000, "op-0001:acme/eu-west/mythos-5")
    digest = hashlib.sha256(body).hexdigest()
    mac = signature(
        "example-secret-do-not-use", "PUT", path, body, 1700000000, "op-0001:acme/eu-west/mythos-5"
    )
    assert canonical.split("\n") == [
        "v1",
        "1700000000",
        "PUT",
        path,
        "op-0001:acme/eu-west/mythos-5",
        digest,
    ]
    for shown in (body.decode(), path, digest, mac):
        assert shown in guide, f"the guide's worked example lacks {shown}"


# --------------------------------------------------------------------------- signatures


def test_an_unsigned_request_is_refused_and_changes_nothing(sim: PartnerSim) -> None:
    assert api(sim, "GET", access_path(), signed=False).code == "missing_signature"
    reply = put(sim, change(), signed=False)
    assert reply.status == 401
    assert reply.code == "missing_signature"
    assert sim.posture("mythos-5", "eu-west") == "open"
    assert sim.count("unauthenticated") == 2


@pytest.mark.parametrize(
    "tamper",
    ["secret", "body", "path", "idempotency-key", "method"],
)
def test_a_signature_that_does_not_cover_what_was_sent_is_refused(
    sim: PartnerSim, tamper: str
) -> None:
    body = json.dumps(change()).encode()
    path, method, key, secret = access_path(), "PUT", "k-1", SECRET
    headers = sign(SECRET, method, path, body, key_id=KEY_ID, idempotency_key=key)
    headers["Content-Type"] = "application/json"
    if tamper == "secret":
        headers = {
            **headers,
            **sign("not-the-secret", method, path, body, key_id=KEY_ID, idempotency_key=key),
        }
    elif tamper == "body":
        body = json.dumps(change("open")).encode()
    elif tamper == "path":
        path = access_path(region="us-east")
    elif tamper == "idempotency-key":
        headers["Idempotency-Key"] = "k-2"
    else:
        headers = {
            **headers,
            **sign(SECRET, "GET", path, body, key_id=KEY_ID, idempotency_key=key),
        }
    reply = api(sim, "PUT", path, signed=False, headers=headers, send_body=body, secret=secret)
    assert reply.status == 401
    assert reply.code == "bad_signature"
    assert sim.state()[MYTHOS]["eu-west"]["posture"] == "open"
    assert sim.state()[MYTHOS]["us-east"]["posture"] == "open"
    assert sim.count("applied") == 0


def test_an_unknown_key_id_is_refused(sim: PartnerSim) -> None:
    reply = api(sim, "GET", access_path(), key_id="someone-else")
    assert (reply.status, reply.code) == (401, "unknown_key")


def test_a_malformed_signature_header_is_refused(sim: PartnerSim) -> None:
    for value in ("deadbeef", "v2=abc", "v1="):
        headers = sign(SECRET, "GET", access_path(), key_id=KEY_ID)
        headers[SIGNATURE_HEADER] = value
        reply = api(sim, "GET", access_path(), signed=False, headers=headers)
        assert reply.status == 401, value
    headers = sign(SECRET, "GET", access_path(), key_id=KEY_ID)
    headers[TIMESTAMP_HEADER] = "1700000000.5"
    assert api(sim, "GET", access_path(), signed=False, headers=headers).status == 401


def test_one_good_v1_entry_among_several_is_enough(sim: PartnerSim) -> None:
    headers = sign(SECRET, "GET", access_path(), key_id=KEY_ID)
    good = headers[SIGNATURE_HEADER]
    headers[SIGNATURE_HEADER] = f"v2=future, v1={'0' * 64}, {good}"
    assert api(sim, "GET", access_path(), signed=False, headers=headers).status == 200


def test_timestamps_outside_the_window_are_refused(sim: PartnerSim) -> None:
    now = int(time.time())
    assert api(sim, "GET", access_path(), timestamp=now - 290).status == 200
    assert api(sim, "GET", access_path(), timestamp=now + 290).status == 200
    for stamp in (now - 310, now + 310, 0):
        reply = api(sim, "GET", access_path(), timestamp=stamp)
        assert (reply.status, reply.code) == (401, "stale_timestamp")
        details = reply.body["error"]["details"]
        assert details["window_seconds"] == 300
        assert abs(details["server_time"] - now) <= 5


def test_a_captured_write_replayed_later_is_refused_and_within_the_window_changes_nothing(
    sim: PartnerSim,
) -> None:
    body = json.dumps(change("revoked")).encode()
    captured = sign(SECRET, "PUT", access_path(), body, key_id=KEY_ID, idempotency_key="k-1")
    captured["Content-Type"] = "application/json"
    first = api(sim, "PUT", access_path(), signed=False, headers=captured, send_body=body)
    assert first.status == 200
    assert put(sim, change("open"), key="k-2").status == 200  # someone restores it

    # Within the window the exact same bytes only replay the first reply.
    again = api(sim, "PUT", access_path(), signed=False, headers=captured, send_body=body)
    assert again.status == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert sim.posture("mythos-5", "eu-west") == "open"

    # Once the window has passed they are refused outright.
    sim.behave(clock_skew=301)
    late = api(sim, "PUT", access_path(), signed=False, headers=captured, send_body=body)
    assert (late.status, late.code) == (401, "stale_timestamp")
    assert sim.posture("mythos-5", "eu-west") == "open"
    assert sim.count("applied") == 2


# --------------------------------------------------------------------------- health


def test_health_answers_unsigned_and_checks_a_signature_when_given(sim: PartnerSim) -> None:
    unsigned = api(sim, "GET", "/v1/health", signed=False)
    assert unsigned.status == 200
    assert unsigned.body["authenticated"] is False
    assert abs(unsigned.body["server_time"] - time.time()) <= 5
    assert unsigned.body["capabilities"] == {
        "postures": ["open", "restricted", "revoked"],
        "audiences": None,
    }
    assert api(sim, "GET", "/v1/health").body["authenticated"] is True
    wrong = api(sim, "GET", "/v1/health", secret="wrong")
    assert (wrong.status, wrong.code) == (401, "bad_signature")


# --------------------------------------------------------------------------- access


def test_an_access_never_set_reads_as_open(sim: PartnerSim) -> None:
    reply = api(sim, "GET", access_path())
    assert reply.status == 200
    assert reply.body == {
        "model": MYTHOS,
        "region": "eu-west",
        "posture": "open",
        "audience": [],
        "updated_at": None,
        "version": 0,
        "op": None,
        "reason": None,
    }


def test_a_write_is_applied_and_read_back(sim: PartnerSim) -> None:
    reply = put(sim, change("restricted", ["us-person", "eu-citizen"], op="op-7"))
    assert reply.status == 200
    assert reply.body["posture"] == "restricted"
    assert reply.body["audience"] == ["eu-citizen", "us-person"]
    assert reply.body["version"] == 1
    assert reply.body["op"] == "op-7"
    read = api(sim, "GET", access_path())
    assert read.body == reply.body
    assert sim.access("mythos-5", "eu-west") == reply.body  # by killswitch's name
    assert sim.access(MYTHOS, "eu-west") == reply.body  # or by the partner's id
    assert sim.posture("mythos-5", "us-east") == "open"  # other regions untouched
    assert sim.posture("fable-5", "eu-west") == "open"  # other models untouched

    revoked = put(sim, change("revoked"), key="k-2")
    assert (revoked.body["posture"], revoked.body["audience"], revoked.body["version"]) == (
        "revoked",
        [],
        2,
    )


def test_writing_the_posture_already_there_changes_nothing(sim: PartnerSim) -> None:
    first = put(sim, change("revoked"))
    second = put(sim, change("revoked", reason="again"), key="k-2")
    assert second.status == 200
    assert second.body == first.body  # same version, same updated_at, same op and reason
    assert sim.counters["applied"] == 1
    assert sim.counters["noops"] == 1


def test_unknown_model_region_operation_and_path_are_404_with_an_error_body(
    sim: PartnerSim,
) -> None:
    cases = {
        access_path(model="mythos-5"): "unknown_model",  # killswitch's name is not the id
        access_path(region="mars-1"): "unknown_region",
        "/v1/operations/opr-999999": "unknown_operation",
        "/v1/models": "not_found",
    }
    for path, code in cases.items():
        reply = api(sim, "GET", path)
        assert (reply.status, reply.code) == (404, code), path
    reply = put(sim, change(), path=access_path(region="mars-1"))
    assert (reply.status, reply.code) == (404, "unknown_region")


def test_a_method_the_path_does_not_take_is_405(sim: PartnerSim) -> None:
    reply = api(sim, "DELETE", access_path())
    assert (reply.status, reply.code) == (405, "method_not_allowed")
    assert reply.headers["allow"] == "GET, PUT"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (change("sealed"), "invalid_request"),
        (change("restricted"), "invalid_request"),  # no audience
        (change("restricted", []), "invalid_request"),
        (change("revoked", ["us-person"]), "invalid_request"),
        (change("restricted", ["US Person"]), "invalid_request"),
        (change("restricted", ["a", "a"]), "invalid_request"),
        (change(expires_at="2030-01-01T00:00:00Z"), "invalid_request"),  # unknown field
        ({"posture": "revoked", "op": "op-1"}, "invalid_request"),  # no reason
        (change(reason=""), "invalid_request"),
        (["revoked"], "invalid_request"),
        (b"{not json", "invalid_request"),
    ],
)
def test_an_invalid_write_is_400_and_changes_nothing(sim: PartnerSim, body: Any, code: str) -> None:
    reply = put(sim, body)
    assert (reply.status, reply.code) == (400, code)
    assert sim.posture("mythos-5", "eu-west") == "open"
    assert sim.count("accepted") == 0


def test_a_write_needs_an_idempotency_key_and_a_json_body(sim: PartnerSim) -> None:
    missing = api(sim, "PUT", access_path(), change())
    assert (missing.status, missing.code) == (400, "idempotency_key_required")
    spaced = api(sim, "PUT", access_path(), change(), key="has space")
    assert (spaced.status, spaced.code) == (400, "idempotency_key_required")
    form = put(sim, change(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (form.status, form.code) == (415, "unsupported_media_type")
    huge = put(sim, change(reason="x" * 70_000))
    assert (huge.status, huge.code) == (413, "payload_too_large")
    assert sim.posture("mythos-5", "eu-west") == "open"


def test_what_the_partner_cannot_enforce_is_422() -> None:
    with PartnerSim(
        secret=SECRET,
        key_id=KEY_ID,
        regions=REGIONS,
        models=MODELS,
        postures=["open", "revoked"],
        audiences=["us-person"],
    ) as narrow:
        health = api(narrow, "GET", "/v1/health").body
        assert health["capabilities"] == {
            "postures": ["open", "revoked"],
            "audiences": ["us-person"],
        }
        reply = put(narrow, change("restricted", ["us-person"]))
        assert (reply.status, reply.code) == (422, "unsupported_posture")
    with PartnerSim(
        secret=SECRET, key_id=KEY_ID, regions=REGIONS, models=MODELS, audiences=["us-person"]
    ) as tagged:
        reply = put(tagged, change("restricted", ["us-person", "nato"]))
        assert (reply.status, reply.code) == (422, "unsupported_audience")
        assert put(tagged, change("restricted", ["us-person"]), key="k-2").status == 200


def test_a_change_made_in_the_partner_console_shows_through_the_api(sim: PartnerSim) -> None:
    put(sim, change("revoked"))
    sim.set_access("mythos-5", "eu-west", "open", reason="console")
    reply = api(sim, "GET", access_path())
    assert (reply.body["posture"], reply.body["version"], reply.body["reason"]) == (
        "open",
        2,
        "console",
    )


# --------------------------------------------------------------------------- idempotency


def test_the_same_key_and_body_replays_the_first_reply_and_applies_once(sim: PartnerSim) -> None:
    first = put(sim, change("revoked"), key="op-1:eu-west")
    sim.set_access("mythos-5", "eu-west", "open")  # things move on meanwhile
    # Same JSON, other key order and spacing: still the same request.
    same = b'{ "op": "op-1", "reason": "export-control order", "posture": "revoked" }'
    again = put(sim, same, key="op-1:eu-west")
    assert again.status == 200
    assert again.raw == first.raw
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert sim.posture("mythos-5", "eu-west") == "open"  # the replay changed nothing
    assert (sim.count("accepted"), sim.count("replayed"), sim.count("applied")) == (1, 1, 1)


def test_the_same_key_with_another_request_is_409(sim: PartnerSim) -> None:
    put(sim, change("revoked"), key="k-1")
    other_body = put(sim, change("open"), key="k-1")
    assert (other_body.status, other_body.code) == (409, "idempotency_key_reused")
    other_region = put(sim, change("revoked"), key="k-1", path=access_path(region="us-east"))
    assert (other_region.status, other_region.code) == (409, "idempotency_key_reused")
    assert sim.posture("mythos-5", "eu-west") == "revoked"
    assert sim.posture("mythos-5", "us-east") == "open"
    assert sim.count("conflicts") == 2


def test_a_refused_write_is_not_recorded_under_its_key(sim: PartnerSim) -> None:
    sim.behave(errors=1)
    assert put(sim, change("revoked")).status == 500
    retry = put(sim, change("revoked"))
    assert retry.status == 200
    assert "idempotent-replayed" not in retry.headers
    assert sim.posture("mythos-5", "eu-west") == "revoked"


# --------------------------------------------------------------------------- operations


def test_a_slow_change_answers_202_and_completes_after_polls(sim: PartnerSim) -> None:
    sim.behave(slow_ops=2, poll_after=0)
    reply = put(sim, change("revoked"))
    assert reply.status == 202
    operation = reply.body
    assert operation["status"] == "pending"
    assert reply.headers["location"] == f"/v1/operations/{operation['id']}"
    assert reply.headers["retry-after"] == "0"
    assert sim.posture("mythos-5", "eu-west") == "open"  # not applied yet
    assert api(sim, "GET", access_path()).body["posture"] == "open"

    first = api(sim, "GET", reply.headers["location"])
    assert first.body["status"] == "running"
    assert first.headers["retry-after"] == "0"
    assert sim.posture("mythos-5", "eu-west") == "open"

    second = api(sim, "GET", reply.headers["location"])
    assert second.body["status"] == "succeeded"
    assert second.body["access"]["posture"] == "revoked"
    assert "retry-after" not in second.headers
    assert api(sim, "GET", access_path()).body["posture"] == "revoked"
    assert api(sim, "GET", reply.headers["location"]).body["status"] == "succeeded"  # final

    # A retry of the same write replays the 202 and the same operation.
    again = put(sim, change("revoked"))
    assert (again.status, again.body["id"]) == (202, operation["id"])
    assert sim.count("operations") == 1


def test_a_slow_change_completes_on_its_own_after_some_time(sim: PartnerSim) -> None:
    sim.behave(slow_ops_seconds=0.3)
    reply = put(sim, change("revoked"))
    assert reply.status == 202
    assert sim.posture("mythos-5", "eu-west") == "open"
    time.sleep(0.4)
    assert sim.posture("mythos-5", "eu-west") == "revoked"
    assert api(sim, "GET", reply.headers["location"]).body["status"] == "succeeded"


def test_a_failed_operation_says_why_and_applies_nothing(sim: PartnerSim) -> None:
    sim.behave(fail_ops=True)
    reply = put(sim, change("revoked"))
    assert reply.status == 202
    polled = api(sim, "GET", reply.headers["location"]).body
    assert polled["status"] == "failed"
    assert polled["error"]["code"] == "apply_failed"
    assert sim.posture("mythos-5", "eu-west") == "open"


def test_a_later_write_supersedes_an_unfinished_operation(sim: PartnerSim) -> None:
    sim.behave(slow_ops=5)
    revoke = put(sim, change("revoked"), key="k-revoke")
    restrict = put(sim, change("restricted", ["us-person"]), key="k-restrict")
    assert restrict.status == 202
    old = api(sim, "GET", revoke.headers["location"]).body
    assert (old["status"], old["error"]["code"]) == ("failed", "superseded")
    assert sim.finish_operations() == 1
    assert sim.access("mythos-5", "eu-west")["posture"] == "restricted"
    # Last write wins even when the later write is a no-op against what is applied.
    sim.behave(slow_ops=5)
    put(sim, change("revoked"), key="k-revoke-2")
    assert put(sim, change("restricted", ["us-person"]), key="k-3").status == 200
    sim.finish_operations()
    assert sim.posture("mythos-5", "eu-west") == "restricted"


# --------------------------------------------------------------------------- failure modes


def test_rate_limiting_says_when_to_come_back_and_applies_nothing(sim: PartnerSim) -> None:
    sim.behave(rate_limit=2, retry_after=7)
    for _ in range(2):
        reply = put(sim, change("revoked"))
        assert (reply.status, reply.code) == (429, "rate_limited")
        assert reply.headers["retry-after"] == "7"
        assert sim.posture("mythos-5", "eu-west") == "open"
    assert put(sim, change("revoked")).status == 200
    assert (sim.count("writes"), sim.count("rate_limited"), sim.count("applied")) == (3, 2, 1)
    assert [w.status for w in sim.writes] == [429, 429, 200]


def test_unavailable_and_internal_errors(sim: PartnerSim) -> None:
    sim.behave(unavailable=1, errors=1, retry_after=2)
    first = api(sim, "GET", access_path())
    assert (first.status, first.code, first.headers["retry-after"]) == (503, "unavailable", "2")
    second = put(sim, change("revoked"))
    assert (second.status, second.code) == (500, "internal")
    assert sim.posture("mythos-5", "eu-west") == "open"
    assert put(sim, change("revoked")).status == 200


def test_faults_can_hit_only_writes(sim: PartnerSim) -> None:
    sim.behave(errors=1, faults_on="writes")
    assert api(sim, "GET", access_path()).status == 200
    assert api(sim, "GET", "/v1/health").status == 200
    assert put(sim, change()).status == 500
    assert put(sim, change()).status == 200


def test_a_lost_reply_was_applied_and_the_retry_replays_it(sim: PartnerSim) -> None:
    sim.behave(lose_replies=1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        put(sim, change("revoked"), key="op-1:eu-west")
    assert sim.posture("mythos-5", "eu-west") == "revoked"  # applied all the same
    retry = put(sim, change("revoked"), key="op-1:eu-west")
    assert retry.status == 200
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.body["posture"] == "revoked"
    assert (sim.count("applied"), sim.count("lost_replies")) == (1, 1)
    assert [w.status for w in sim.writes] == [None, 200]


def test_rejecting_every_signature(sim: PartnerSim) -> None:
    sim.behave(reject_signatures=True)
    reply = put(sim, change())
    assert (reply.status, reply.code) == (401, "bad_signature")
    assert api(sim, "GET", "/v1/health").status == 401
    assert api(sim, "GET", "/v1/health", signed=False).status == 200
    sim.behave(reject_signatures=False)
    assert put(sim, change()).status == 200


def test_clock_skew_is_seen_in_refusals_and_in_health(sim: PartnerSim) -> None:
    sim.behave(clock_skew=600)
    reply = api(sim, "GET", access_path())
    assert (reply.status, reply.code) == (401, "stale_timestamp")
    server_time = api(sim, "GET", "/v1/health", signed=False).body["server_time"]
    assert abs(server_time - (time.time() + 600)) <= 5
    assert abs(reply.body["error"]["details"]["server_time"] - server_time) <= 5
    # A client that signs with the partner's clock gets through.
    assert api(sim, "GET", access_path(), timestamp=server_time).status == 200
    stamp = put(sim, change(), timestamp=server_time).body["updated_at"]
    assert stamp.startswith(time.strftime("%Y-%m-%dT", time.gmtime(time.time() + 600)))


def test_down_refuses_connections_and_comes_back_on_the_same_url(sim: PartnerSim) -> None:
    put(sim, change("revoked"))
    url = sim.url
    sim.behave(down=True)
    with pytest.raises(ConnectionRefusedError):
        api(sim, "GET", "/v1/health", signed=False)
    with pytest.raises(ConnectionRefusedError):
        put(sim, change("open"), key="k-2")
    sim.behave(down=False)
    assert sim.url == url
    assert api(sim, "GET", access_path()).body["posture"] == "revoked"


def test_down_also_cuts_a_kept_alive_connection(sim: PartnerSim) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    try:
        conn.request("GET", "/v1/health")
        assert conn.getresponse().read()
        sim.behave(down=True)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.request("GET", "/v1/health")
            conn.getresponse()
    finally:
        conn.close()
        sim.behave(down=False)


def test_latency_delays_each_reply(sim: PartnerSim) -> None:
    sim.behave(latency=0.3)
    started = time.monotonic()
    assert api(sim, "GET", access_path()).status == 200
    assert time.monotonic() - started >= 0.3
    sim.behave_well()
    assert sim.behaviour.latency == 0


def test_behave_refuses_unknown_switches(sim: PartnerSim) -> None:
    with pytest.raises(TypeError):
        sim.behave(explode=True)
    with pytest.raises(ValueError):
        sim.behave(faults_on="deletes")


# --------------------------------------------------------------------------- partners


def test_each_partner_is_its_own_server_with_its_own_secret(sim: PartnerSim) -> None:
    with PartnerSim(
        secret="other-secret", key_id=KEY_ID, regions=["eu-west"], models=[MYTHOS]
    ) as b:
        assert b.url != sim.url
        assert api(b, "GET", access_path(), secret=SECRET).code == "bad_signature"
        assert put(b, change("revoked"), secret="other-secret").status == 200
        assert b.posture(MYTHOS, "eu-west") == "revoked"
    assert sim.posture("mythos-5", "eu-west") == "open"


def test_the_secret_never_leaves_the_simulator(
    sim: PartnerSim, capfd: pytest.CaptureFixture[str]
) -> None:
    replies = [
        api(sim, "GET", access_path(), secret="wrong"),
        api(sim, "GET", access_path(), timestamp=1),
        put(sim, change()),
        api(sim, "GET", "/v1/health"),
    ]
    seen = b"".join(r.raw + json.dumps(r.headers).encode() for r in replies)
    assert SECRET.encode() not in seen
    out, err = capfd.readouterr()
    assert SECRET not in out + err
    assert SECRET not in repr(sim)
    assert SECRET not in repr(sim.requests)


def test_reset_forgets_everything(sim: PartnerSim) -> None:
    put(sim, change("revoked"))
    sim.behave(errors=3)
    sim.reset()
    assert sim.posture("mythos-5", "eu-west") == "open"
    assert sim.counters == {}
    assert put(sim, change("open")).status == 200  # the key was forgotten too


# --------------------------------------------------------------------------- schemathesis


def test_generated_requests_get_documented_replies(sim: PartnerSim) -> None:
    """Requests generated from the document, signed, answered as the document says."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    fresh = iter(range(1_000_000))

    class Signer(requests.auth.AuthBase):
        """Signs what is really sent; a key of "fresh" becomes one never used before."""

        def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
            body = r.body or b""
            key = r.headers.get("Idempotency-Key")
            if key == "fresh":
                key = r.headers["Idempotency-Key"] = f"fresh-{next(fresh)}"
            r.headers.update(
                sign(
                    SECRET,
                    r.method or "GET",
                    r.path_url,
                    body if isinstance(body, bytes) else str(body).encode(),
                    key_id=KEY_ID,
                    idempotency_key=key if isinstance(key, str) else None,
                )
            )
            return r

    session = requests.Session()
    session.auth = Signer()
    sim.behave(slow_ops=1, poll_after=0)
    pending = put(sim, change("revoked"), key="seed").body["id"]

    schema = schemathesis.openapi.from_path(SPEC_PATH)
    access_ops = schema["/v1/models/{model}/regions/{region}/access"]
    targets = [{"model": MYTHOS, "region": r} for r in REGIONS] + [
        {"model": "nope", "region": "eu-west"},
        {"model": MYTHOS, "region": "nowhere"},
    ]
    strategies = [
        access_ops[method].as_strategy(path_parameters=target)
        for method in ("GET", "PUT")
        for target in targets
    ]
    strategies += [
        schema["/v1/operations/{id}"]["GET"].as_strategy(path_parameters={"id": op_id})
        for op_id in (pending, "opr-000000")
    ]
    strategies.append(schema["/v1/health"]["GET"].as_strategy())
    signing = dict.fromkeys((KEY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER), "signed-later")
    # Headers, then bodies, that break the document must be refused (4xx), never applied.
    strategies += [
        access_ops["PUT"].as_strategy(
            GenerationMode.NEGATIVE, path_parameters={"model": MYTHOS, "region": r}
        )
        for r in REGIONS
    ]
    strategies += [
        access_ops["PUT"].as_strategy(
            GenerationMode.NEGATIVE,
            path_parameters={"model": MYTHOS, "region": r},
            headers={"Idempotency-Key": "fresh", "Content-Type": "application/json", **signing},
        )
        for r in REGIONS
    ]
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]
    statuses: set[int] = set()

    @settings(
        max_examples=60,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def exercise(case: Any) -> None:
        response = case.call(base_url=sim.url, session=session, timeout=10)
        statuses.add(response.status_code)
        case.validate_response(response, checks=checks)

    exercise()
    assert 200 in statuses  # generated writes and reads got through the signature
    assert statuses <= {200, 202, 400, 404, 409, 422}
    assert sim.count("unauthenticated") == 0
