"""Access control for one request: who is calling (API key), may they (scope), and may they now (rate
limit, monthly quota). Protocol adapters pass the bearer token and the route's required scope; nothing here
knows about HTTP."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stratus.errors import Forbidden, Unauthenticated
from stratus.security.ratelimit import RateLimiter, check_quota
from stratus.security.scopes import satisfies
from stratus.tenancy import DEFAULT_PROJECT, Caller

if TYPE_CHECKING:  # the key store (a database) is the full server's; a replica checks one key's hash
    from stratus.security.keys import KeyService

PUBLIC = "public"
#: The caller of a server started with --no-auth: the single local user, with every right.
LOCAL_USER = Caller(project=DEFAULT_PROJECT, key_id="", scopes=frozenset({"admin"}))


@dataclass(frozen=True)
class Limits:
    """Server-wide defaults; a project's or key's own value overrides them (0 = unlimited)."""

    rate_limit_rps: float = 0.0
    rate_limit_burst: int = 0
    monthly_item_quota: int = 0


class AccessControl:
    def __init__(
        self,
        keys: KeyService,
        *,
        enabled: bool,
        limits: Limits,
        items_this_month: Callable[[str], int],
        limits_ttl_s: float = 1.0,
    ) -> None:
        self.keys = keys
        self.enabled = enabled
        self.limits = limits
        self._items_this_month = items_this_month
        self._rate = RateLimiter()
        self._ttl = limits_ttl_s
        self._project_limits: dict[str, tuple[float, float | None, int | None]] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    def authenticate(self, token: str | None, required: str) -> tuple[Caller, float | None]:
        """The caller behind ``token`` and its key's own rate limit. Raises Unauthenticated."""
        if not self.enabled:
            return LOCAL_USER, None
        if required == PUBLIC:
            return Caller(), None
        if not token:
            raise Unauthenticated("this route needs an API key: send the header 'Authorization: Bearer stk_...'")
        return self.keys.authenticate(token)

    def authorize(self, caller: Caller, key_rps: float | None, required: str, *, counts_items: bool = False) -> None:
        """Whether ``caller`` may use a route requiring ``required`` now.

        Raises Forbidden (scope too weak) or RateLimited. Routes that infer (``counts_items``) also check the
        project's monthly item quota.
        """
        if required == PUBLIC:
            return
        if self.enabled and not satisfies(caller.scopes, required):
            raise Forbidden(
                f"API key {caller.key_id} has scope(s) {', '.join(sorted(caller.scopes))}; "
                f"this route needs {required!r}"
            )
        project_rps, quota = self._limits_of(caller.project)
        if key_rps or project_rps or self.limits.rate_limit_rps:
            self._rate.check(
                caller.key_id,
                key_rps,
                caller.project,
                project_rps,
                self.limits.rate_limit_rps,
                self.limits.rate_limit_burst,
            )
        quota = self.limits.monthly_item_quota if quota is None else quota
        if counts_items and quota:
            check_quota(self._items_this_month(caller.project), quota, caller.project)

    def _limits_of(self, project: str) -> tuple[float | None, int | None]:
        """A project's own rate limit and quota, cached for ``limits_ttl_s``.

        Stale entries are answered as they are while one background thread reads the new values: this runs on
        the event loop for every request, and a database read there stalls every request in flight (a round
        trip to PostgreSQL, or each wait to take the GIL back from the inference threads; a read measured
        several milliseconds under MiniLM load). Only a project's first request reads in line."""
        now = time.monotonic()
        cached = self._project_limits.get(project)
        if cached is None:
            cached = self._read_limits(project)
        elif now - cached[0] > self._ttl and project not in self._refreshing:
            self._refreshing.add(project)
            threading.Thread(target=self._refresh, args=(project,), name="stratus-limits", daemon=True).start()
        return cached[1], cached[2]

    def _read_limits(self, project: str) -> tuple[float, float | None, int | None]:
        info = self.keys.get_project(project)
        cached = (time.monotonic(), info.rate_limit_rps, info.monthly_item_quota)
        with self._lock:
            self._project_limits[project] = cached
        return cached

    def _refresh(self, project: str) -> None:
        try:
            self._read_limits(project)
        except Exception:  # the project is gone or the DB briefly away: the next request reads in line
            with self._lock:
                self._project_limits.pop(project, None)
        finally:
            self._refreshing.discard(project)

    def forget_project(self, project: str) -> None:
        with self._lock:
            self._project_limits.pop(project, None)


class SingleKeyAccess:
    """Access control of the single-endpoint mode (replicas, exported containers): one key, known only by
    its SHA-256 hash, that may do everything; or no key at all when ``key_sha256`` is None."""

    def __init__(self, key_sha256: str | None) -> None:
        self.key_sha256 = key_sha256.lower() if key_sha256 else None

    def authenticate(self, token: str | None, required: str) -> tuple[Caller, float | None]:
        if self.key_sha256 is None or required == PUBLIC:
            return LOCAL_USER, None
        if not token:
            raise Unauthenticated("this endpoint needs its key: send the header 'Authorization: Bearer <key>'")
        digest = hashlib.sha256(token.encode()).hexdigest()
        if not hmac.compare_digest(digest, self.key_sha256):
            raise Unauthenticated("invalid key for this endpoint")
        return LOCAL_USER, None

    def authorize(self, caller: Caller, key_rps: float | None, required: str, *, counts_items: bool = False) -> None:
        """The one key may do everything this mode serves."""
