"""Inference log and metrics history calls of the Python client: log settings, the log, exports, series."""

from __future__ import annotations

from typing import Any

import httpx


def _query(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _scope(endpoint: bool) -> str:
    return "endpoints" if endpoint else "models"


class MonitoringCalls:
    """Mixed into ``Client``; every call goes through its ``_json`` or ``request``."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:  # provided by Client
        raise NotImplementedError

    def get_logging(self, name: str, *, endpoint: bool = False) -> dict[str, Any]:
        """What the inference log keeps of a model's (or an endpoint's) requests."""
        result: dict[str, Any] = self._json("GET", f"/api/v1/{_scope(endpoint)}/{name}/logging")
        return result

    def set_logging(
        self, name: str, mode: str, *, rate: float = 1.0, payloads: bool = False, endpoint: bool = False
    ) -> dict[str, Any]:
        """``mode`` is off, sampled (keeps ``rate`` of the requests) or all; ``payloads`` keeps the tensors."""
        body = {"mode": mode, "rate": rate, "payloads": payloads}
        result: dict[str, Any] = self._json("PUT", f"/api/v1/{_scope(endpoint)}/{name}/logging", json=body)
        return result

    def reset_logging(self, name: str, *, endpoint: bool = False) -> dict[str, Any]:
        """Back to the server's default."""
        result: dict[str, Any] = self._json("DELETE", f"/api/v1/{_scope(endpoint)}/{name}/logging")
        return result

    def log(
        self,
        name: str,
        *,
        since: str | None = None,
        version: int | None = None,
        status: str | int | None = None,
        limit: int | None = None,
        before: str | None = None,
        endpoint: bool = False,
    ) -> dict[str, Any]:
        """One page of logged requests, newest first: ``{"records": [...], "next": cursor or None}``; pass
        ``before=next`` for the following page. ``since`` is a duration such as ``15m``, ``1h``, ``7d``."""
        params = _query(since=since, version=version, status=status, limit=limit, before=before)
        result: dict[str, Any] = self._json("GET", f"/api/v1/{_scope(endpoint)}/{name}/log", params=params)
        return result

    def export_log(
        self,
        name: str,
        format: str = "jsonl",
        *,
        since: str | None = None,
        version: int | None = None,
        status: str | int | None = None,
        limit: int | None = None,
        endpoint: bool = False,
    ) -> bytes:
        """Logged requests as JSON Lines or Parquet bytes (``format="parquet"``)."""
        params = _query(since=since, version=version, status=status, limit=limit, format=format)
        response = self.request("GET", f"/api/v1/{_scope(endpoint)}/{name}/log", params=params)
        return response.content

    def metrics_series(
        self,
        name: str,
        metrics: str | list[str],
        *,
        since: str | None = "1h",
        step: int = 60,
        version: int | None = None,
        endpoint: bool = False,
    ) -> dict[str, list[tuple[float, float | None]]]:
        """Metrics history: ``{metric: [(unix_time, value or None), ...]}``, one point per ``step`` seconds."""
        wanted = metrics if isinstance(metrics, str) else ",".join(metrics)
        params = _query(
            name=name, metric=wanted, scope="endpoint" if endpoint else "model", since=since, step=step, version=version
        )
        body = self._json("GET", "/api/v1/metrics/series", params=params)
        return {m: [(t, v) for t, v in points] for m, points in body["series"].items()}
