"""Security and metering calls of the Python client: projects, API keys, the audit log and usage."""

from __future__ import annotations

from typing import Any


class AdminCalls:
    """Mixed into ``Client``; every call goes through its ``_json``."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def whoami(self) -> dict[str, Any]:
        """The project, key id and scopes this client acts with."""
        result: dict[str, Any] = self._json("GET", "/api/v1/whoami")
        return result

    def list_projects(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/projects")["projects"]
        return result

    def create_project(
        self, name: str, *, rate_limit_rps: float | None = None, monthly_item_quota: int | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "rate_limit_rps": rate_limit_rps, "monthly_item_quota": monthly_item_quota}
        result: dict[str, Any] = self._json("POST", "/api/v1/projects", json=body)
        return result

    def update_project(self, name: str, **changes: float | int | None) -> dict[str, Any]:
        result: dict[str, Any] = self._json("PATCH", f"/api/v1/projects/{name}", json=changes)
        return result

    def create_key(
        self,
        scopes: list[str],
        *,
        project: str | None = None,
        name: str = "",
        expires_in_days: float | None = None,
        rate_limit_rps: float | None = None,
    ) -> dict[str, Any]:
        """Create an API key. The plaintext is in ``["key"]`` and is never shown again."""
        body = {
            "scopes": scopes,
            "project": project,
            "name": name,
            "expires_in_days": expires_in_days,
            "rate_limit_rps": rate_limit_rps,
        }
        result: dict[str, Any] = self._json("POST", "/api/v1/keys", json=body)
        return result

    def list_keys(self, project: str | None = None) -> list[dict[str, Any]]:
        params = {"project": project} if project else {}
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/keys", params=params)["keys"]
        return result

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("DELETE", f"/api/v1/keys/{key_id}")
        return result

    def audit(self, *, limit: int = 100, key_id: str | None = None, since: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if key_id:
            params["key_id"] = key_id
        if since:
            params["since"] = since
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/audit", params=params)["events"]
        return result

    def usage(
        self,
        *,
        start: str | None = None,
        end: str | None = None,
        group_by: str = "project,model",
        project: str | None = None,
    ) -> dict[str, Any]:
        """Usage counts and cost estimate; ``start``/``end`` are ISO dates or times (UTC)."""
        params: dict[str, Any] = {"group_by": group_by}
        for key, value in (("from", start), ("to", end), ("project", project)):
            if value:
                params[key] = value
        result: dict[str, Any] = self._json("GET", "/api/v1/usage", params=params)
        return result
