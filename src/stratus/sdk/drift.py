"""Drift calls of the Python client: a model's or an endpoint's drift, its history, a version's reference."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


def _query(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class DriftCalls:
    """Mixed into ``Client``; every call goes through its ``_json``."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def drift(
        self,
        name: str,
        *,
        version: int | str | None = None,
        last: int | None = None,
        minutes: float | None = None,
        endpoint: bool = False,
    ) -> dict[str, Any]:
        """Drift of a model's version (default: the one served) or, with ``endpoint=True``, of each version an
        endpoint routes to: the reference against the last ``last`` logged input rows or ``minutes``."""
        if endpoint:
            path, params = f"/api/v1/endpoints/{name}/drift", _query(last=last, minutes=minutes)
        else:
            path, params = f"/api/v1/models/{name}/drift", _query(version=version, last=last, minutes=minutes)
        result: dict[str, Any] = self._json("GET", path, params=params)
        return result

    def drift_history(
        self, name: str, *, version: int | None = None, since: str | None = None, endpoint: bool = False
    ) -> list[dict[str, Any]]:
        """The stored drift reports (oldest first): the drift time series."""
        kind = "endpoints" if endpoint else "models"
        params = _query(since=since) if endpoint else _query(version=version, since=since)
        points: list[dict[str, Any]] = self._json("GET", f"/api/v1/{kind}/{name}/drift/history", params=params)[
            "points"
        ]
        return points

    def get_reference(self, name: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/models/{name}/versions/{version}/reference")
        return result

    def upload_reference(
        self,
        name: str,
        version: int,
        source: str | Path | bytes,
        *,
        format: str | None = None,
        target: str | None = None,
    ) -> dict[str, Any]:
        """A reference dataset (CSV or NPZ of the model's input features) for a version registered from
        outside; ``target`` names a CSV column that is not an input."""
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        filename = "reference" if isinstance(source, bytes) else Path(source).name
        form = _query(format=format, target=target)
        result: dict[str, Any] = self._json(
            "PUT",
            f"/api/v1/models/{name}/versions/{version}/reference",
            data=form,
            files={"file": (filename, io.BytesIO(data))},
        )
        return result
