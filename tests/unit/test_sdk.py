"""The SDK's pieces on their own: secret references that never show their secret, the
token bucket on an injected clock, the checks and targets ProviderBase gives a provider."""

from __future__ import annotations

from pathlib import Path

import pytest
from outside_lever import JsonFileConfig, JsonFileProvider

from killswitch.domain import Target
from killswitch.errors import PermanentError
from killswitch.sdk import SecretFields, SecretRef, TokenBucket
from providers.partner import PartnerProvider
from tests.support.clocks import FakeClock

SECRET = "s3cr3t-never-shown"


def test_a_secret_reference_reads_its_value_and_never_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIT_SECRET", SECRET)
    (tmp_path / "secret").write_text(SECRET + "\n")
    by_env, by_file = SecretRef(env="KIT_SECRET"), SecretRef(file=str(tmp_path / "secret"))

    assert by_env.read("partner acme") == by_file.read("partner acme") == SECRET.encode()
    for ref in (by_env, by_file):
        assert SECRET not in repr(ref) and SECRET not in str(ref)


def test_an_unset_or_empty_secret_is_a_permanent_error_naming_where_not_what(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KIT_SECRET", raising=False)
    (tmp_path / "empty").write_text("\n")

    with pytest.raises(PermanentError, match="acme: environment variable KIT_SECRET is not set"):
        SecretRef(env="KIT_SECRET").read("acme")
    with pytest.raises(PermanentError, match=r"acme: secret_file .*empty is empty"):
        SecretRef(file=str(tmp_path / "empty")).read("acme")


def test_a_config_takes_one_secret_reference_by_name_never_the_secret() -> None:
    assert SecretFields(secret_env="KIT_SECRET").secret == SecretRef(env="KIT_SECRET")
    with pytest.raises(ValueError, match="exactly one of secret_env or secret_file"):
        SecretFields(secret_env="KIT_SECRET", secret_file="/run/secret")
    with pytest.raises(ValueError, match="the NAME of an environment variable"):
        SecretFields(secret_env=SECRET)


def test_the_token_bucket_waits_for_its_rate_and_halves_it_on_throttling() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, clock=clock, sleep=clock.sleep)

    waits = [bucket.acquire() for _ in range(4)]
    bucket.throttled()
    slowed = bucket.acquire()

    assert waits == [0.0, 0.0, 0.5, 0.5]
    assert bucket.rate == 1.0 and slowed == 1.0
    for _ in range(40):
        bucket.succeeded()
    assert bucket.rate == 2.0  # back to its base, never above


def test_provider_base_checks_listed_levers_and_models_and_builds_targets() -> None:
    config = JsonFileConfig(directory="/flags", regions=["eu", "us"], mechanisms=["flag-file"])
    provider = JsonFileProvider("files", config, {"mythos-5": {}})
    problems = PartnerProvider.lever_problems(["access-api", "access-api", "access-apl"])

    assert [t.id for t in provider.targets()] == [
        Target("jsonfile", "files", region, "flag-file", "mythos-5").id for region in ("eu", "us")
    ]
    assert [p.message for p in problems] == [
        "mechanism 'access-api' listed twice",
        "unknown mechanism 'access-apl' (partner has: access-api)",
    ]
    assert provider.least_privilege()["permissions"] == [
        {"lever": "flag-file", "action": "read", "resource": "{directory}/*/*.json"},
        {"lever": "flag-file", "action": "write", "resource": "{directory}/*/*.json"},
    ]
    assert [
        p.message
        for p in JsonFileProvider.check(
            JsonFileConfig(directory="/f", regions=["eu", "../x", "eu"]), {}
        )
    ] == [
        "region '../x' must match [a-z0-9._-]",
        "region 'eu' listed twice",
    ]
    assert provider.call_bound_seconds() == 15.0  # no timeout configured: 5 s + 10 s
