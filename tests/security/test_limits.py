"""Token buckets, per-key and per-project rate limits, and the monthly quota, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stratus.errors import RateLimited
from stratus.security.ratelimit import RateLimiter, TokenBucket, check_quota, seconds_to_next_month


def test_token_bucket_burst_refill_and_retry_after() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.try_take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take(0.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert bucket.try_take(0.25) == pytest.approx(0.25)
    assert bucket.try_take(0.5) == 0.0
    assert bucket.try_take(10.0) == 0.0  # refills, but never above the burst
    assert bucket.tokens == pytest.approx(2.0)


def test_limits_per_key_and_per_project() -> None:
    limiter = RateLimiter()
    for _ in range(2):
        limiter.check("k1", 1.0, "p", None, 0.0, 2, now=0.0)
    with pytest.raises(RateLimited, match="1 requests/s for API key k1") as caught:
        limiter.check("k1", 1.0, "p", None, 0.0, 2, now=0.1)
    assert caught.value.retry_after_s == pytest.approx(0.9)
    limiter.check("k2", 1.0, "p", None, 0.0, 2, now=0.1)  # another key has its own bucket
    # The project's bucket is shared by its keys.
    limiter.check("a", None, "team", 1.0, 0.0, 1, now=0.0)
    with pytest.raises(RateLimited, match="project team"):
        limiter.check("b", None, "team", 1.0, 0.0, 1, now=0.0)
    # No limit anywhere: never refused.
    for _ in range(100):
        limiter.check("free", None, "free", None, 0.0, 0, now=0.0)


def test_server_default_applies_to_keys_without_their_own() -> None:
    limiter = RateLimiter()
    limiter.check("k", None, "p", None, 1.0, 1, now=0.0)
    with pytest.raises(RateLimited):
        limiter.check("k", None, "p", None, 1.0, 1, now=0.0)
    limiter.check("k", None, "p", None, 1.0, 1, now=1.0)


def test_monthly_quota() -> None:
    check_quota(99, 100, "p")
    check_quota(10**9, 0, "p")  # 0 = unlimited
    with pytest.raises(RateLimited, match="monthly quota of 100") as caught:
        check_quota(100, 100, "p")
    assert 0 < caught.value.retry_after_s <= 31 * 86400
    assert seconds_to_next_month(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == 60
