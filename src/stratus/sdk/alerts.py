"""Alert calls of the Python client (rules, history) and the receiving side's signature check."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


def verify_webhook(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """True if ``body`` (the raw bytes received) carries a valid ``Stratus-Signature`` made with the rule's
    ``secret`` less than ``tolerance_s`` seconds ago. Check it before parsing the body."""
    from stratus.monitoring.webhooks import verify_headers  # hashlib and hmac only: no server code

    return verify_headers(secret, headers, body, time.time() if now is None else now, tolerance_s)


class AlertCalls:
    """Mixed into ``Client``; every call goes through its ``_json`` / ``request``."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def request(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def create_alert(
        self,
        name: str,
        *,
        metric: str,
        threshold: float,
        model: str | None = None,
        endpoint: str | None = None,
        op: str = ">",
        for_seconds: float = 0.0,
        webhook_url: str | None = None,
        enabled: bool = True,
    ) -> dict[str, Any]:
        """A rule on ``metric`` (error_rate, p99_ms, drift_share, log_dropped) of a model or an endpoint. The
        answer's ``secret`` signs the rule's webhooks and is never shown again."""
        if (model is None) == (endpoint is None):
            from stratus.errors import InvalidInput

            raise InvalidInput("give exactly one of model= or endpoint=")
        body: dict[str, Any] = {
            "name": name,
            "target_kind": "model" if model is not None else "endpoint",
            "target": model if model is not None else endpoint,
            "metric": metric,
            "op": op,
            "threshold": float(threshold),
            "for_seconds": float(for_seconds),
            "enabled": enabled,
        }
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        result: dict[str, Any] = self._json("POST", "/api/v1/alerts", json=body)
        return result

    def list_alerts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/alerts")["alerts"]
        return result

    def get_alert(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/alerts/{name}")
        return result

    def update_alert(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change ``metric``, ``op``, ``threshold``, ``for_seconds``, ``webhook_url`` (None removes it) or
        ``enabled``."""
        result: dict[str, Any] = self._json("PATCH", f"/api/v1/alerts/{name}", json=changes)
        return result

    def delete_alert(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/alerts/{name}")

    def alert_history(self, rule: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        """Fire and resolve events, newest first, each with its webhook delivery attempts."""
        params: dict[str, Any] = {"limit": limit}
        if rule is not None:
            params["name"] = rule
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/alert-history", params=params)["events"]
        return result
