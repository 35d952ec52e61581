"""Rate limits (token buckets per key and per project) and the monthly item quota.

Buckets live in memory: a limit is per server process, which is what a token bucket in front of one
process can promise. Idle buckets are dropped so the table cannot grow without bound.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from stratus.errors import RateLimited

MAX_BUCKETS = 100_000
#: Sane maxima of a project's or key's limits: larger values are typos, and must fit SQLite's int64.
MAX_RATE_LIMIT_RPS = 1_000_000.0
MAX_MONTHLY_ITEMS = 10**15


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``. Pure: the caller passes the clock."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.tokens = self.burst
        self.updated = now

    def try_take(self, now: float) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def check(
        self,
        key_id: str,
        key_rps: float | None,
        project: str,
        project_rps: float | None,
        default_rps: float,
        burst: int,
        now: float | None = None,
    ) -> None:
        """Raise RateLimited when the key's or the project's bucket is empty. 0 or None means unlimited;
        a key without its own rate gets the server default."""
        now = time.monotonic() if now is None else now
        key_rate = key_rps if key_rps is not None else default_rps
        with self._lock:
            if len(self._buckets) > MAX_BUCKETS:
                self._evict_idle(now)
            if key_id and key_rate:
                wait = self._bucket(("key", key_id), key_rate, burst, now).try_take(now)
                if wait:
                    raise RateLimited(
                        f"rate limit of {key_rate:g} requests/s for API key {key_id} exceeded; "
                        f"retry after {wait:.1f} s",
                        retry_after_s=wait,
                    )
            if project_rps:
                wait = self._bucket(("project", project), project_rps, burst, now).try_take(now)
                if wait:
                    raise RateLimited(
                        f"rate limit of {project_rps:g} requests/s for project {project} exceeded; "
                        f"retry after {wait:.1f} s",
                        retry_after_s=wait,
                    )

    def _bucket(self, key: tuple[str, str], rate: float, burst: int, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        size = burst or max(1, int(2 * rate))
        if bucket is None or bucket.rate != rate or bucket.burst != max(1, size):
            bucket = self._buckets[key] = TokenBucket(rate, size, now)
        return bucket

    def _evict_idle(self, now: float) -> None:
        """Drop buckets that have refilled completely: forgetting them changes nothing."""
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * b.rate >= b.burst]
        for key in full:
            del self._buckets[key]


def seconds_to_next_month(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    first = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return (first - now).total_seconds()


def check_quota(used: int, quota: int, project: str) -> None:
    """Raise RateLimited when the project used its monthly items (quota 0 = unlimited)."""
    if quota and used >= quota:
        raise RateLimited(
            f"project {project} used its monthly quota of {quota} inferred items; it resets at the start of "
            "next month (UTC)",
            retry_after_s=seconds_to_next_month(),
        )
