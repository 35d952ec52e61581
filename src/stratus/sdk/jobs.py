"""Datasets and training jobs from Python."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from stratus import errors

if TYPE_CHECKING:
    from stratus.sdk.client import Client

TERMINAL = ("succeeded", "failed", "cancelled")


class Job:
    """A training job. ``job.metrics`` and ``job.version`` are filled in when it succeeds."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self._client = client
        self.data = data

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.data["metrics"]
        return metrics

    @property
    def model(self) -> str | None:
        return self.data.get("model")

    @property
    def version(self) -> int | None:
        return self.data.get("version")

    @property
    def error(self) -> str:
        return str(self.data.get("error", ""))

    def refresh(self) -> Job:
        self.data = self._client._json("GET", f"/api/v1/jobs/{self.id}")
        return self

    def events(self) -> Iterator[dict[str, Any]]:
        """The job's events as they happen (Server-Sent Events), ending when the job ends."""
        with self._client._http.stream("GET", f"/api/v1/jobs/{self.id}/events", timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                from stratus.sdk.client import error_for_response

                raise error_for_response(response)
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield orjson.loads(line[6:])

    def wait(self, timeout_s: float = 3600.0, raise_on_failure: bool = True) -> Job:
        deadline = time.monotonic() + timeout_s
        while self.refresh().state not in TERMINAL:
            if time.monotonic() > deadline:
                raise errors.NotReady(f"job {self.id} is still {self.state} after {timeout_s:.0f} s")
            time.sleep(0.3)
        if raise_on_failure and self.state == "failed":
            raise errors.StratusError(f"job {self.id} failed: {self.error}")
        return self

    def cancel(self) -> Job:
        self.data = self._client._json("POST", f"/api/v1/jobs/{self.id}/cancel")
        return self

    def __repr__(self) -> str:
        return f"Job({self.id!r}, state={self.state!r}, model={self.model!r}, version={self.version!r})"
