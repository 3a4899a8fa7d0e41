"""The AWS rate limiter backs off on throttling and recovers gradually."""

from __future__ import annotations

from providers.aws.ratelimit import DEFAULTS, RateLimits, TokenBucket


def test_throttling_halves_the_rate_and_success_creeps_back() -> None:
    bucket = TokenBucket(rate=8.0)

    bucket.throttled()
    assert bucket.rate == 4.0
    bucket.throttled()
    assert bucket.rate == 2.0
    for _ in range(5):
        bucket.succeeded()

    assert 2.0 < bucket.rate < 8.0
    for _ in range(100):
        bucket.succeeded()
    assert bucket.rate == 8.0


def test_rate_never_falls_below_a_sixteenth() -> None:
    bucket = TokenBucket(rate=16.0)
    for _ in range(20):
        bucket.throttled()

    assert bucket.rate == 1.0


def test_buckets_are_per_account_service_region_and_kind() -> None:
    limits = RateLimits({"ssm": {"read": 100.0, "write": 7.0}})

    east = limits.bucket("111111111111", "ssm", "us-east-1", "write")
    assert east is limits.bucket("111111111111", "ssm", "us-east-1", "write")
    assert east is not limits.bucket("222222222222", "ssm", "us-east-1", "write")
    assert east is not limits.bucket("111111111111", "ssm", "eu-west-1", "write")
    assert east.rate == 7.0
    assert limits.bucket("", "iam", "global", "write").rate == DEFAULTS["iam"]["write"]


def test_a_full_bucket_serves_its_burst_without_waiting() -> None:
    bucket = TokenBucket(rate=5.0)

    waits = [bucket.acquire() for _ in range(5)]

    assert waits == [0.0] * 5
