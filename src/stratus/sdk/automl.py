"""AutoML jobs from Python: ``Client.automl`` queues one, ``Client.leaderboard`` reads its trials."""

from __future__ import annotations

from typing import Any

from stratus.sdk.jobs import Job


class AutoMLCalls:
    """Mixed into ``Client``; every call goes through its ``_json``."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def automl(
        self,
        dataset: str,
        *,
        metric: str,
        budget: float | str,
        name: str | None = None,
        families: list[str] | None = None,
        folds: int = 5,
        ensemble: int = 0,
        wait: bool = True,
    ) -> Job:
        """Search the trainer families that fit ``dataset`` and their hyperparameters for ``metric`` within
        ``budget`` (seconds, or "90s", "5m"); the best model is refit and registered. ``job.metrics`` then holds
        its cross-validation and test scores; ``leaderboard(job.id)`` every trial (docs/automl.md)."""
        body: dict[str, Any] = {"dataset": dataset, "metric": metric, "budget": budget, "folds": folds}
        if name is not None:
            body["name"] = name
        if families is not None:
            body["families"] = families
        if ensemble:
            body["ensemble"] = ensemble
        job = Job(self, self._json("POST", "/api/v1/automl", json=body))  # type: ignore[arg-type]
        if not wait:
            return job
        seconds = float(job.data["timeout_s"])
        return job.wait(timeout_s=seconds + 60)

    def leaderboard(self, job_id: str) -> dict[str, Any]:
        """An AutoML job's trials, best first: family, parameters, CV mean and spread, fit time, size, latency."""
        result: dict[str, Any] = self._json("GET", f"/api/v1/jobs/{job_id}/leaderboard")
        return result
