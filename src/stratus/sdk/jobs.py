"""Datasets and training jobs from Python."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from stratus import errors
from stratus.sdk.errors import error_for_response

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import httpx

TERMINAL = ("succeeded", "failed", "cancelled")


class JobClient(Protocol):
    """What a Job needs of the client (stratus.Client): its public calls, so neither imports the other."""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

    def stream(self, method: str, path: str, **kwargs: Any) -> AbstractContextManager[httpx.Response]: ...


class Job:
    """A training job. ``job.metrics`` and ``job.version`` are filled in when it succeeds."""

    def __init__(self, client: JobClient, data: dict[str, Any]) -> None:
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
        self.data = self._client.request("GET", f"/api/v1/jobs/{self.id}").json()
        return self

    def events(self) -> Iterator[dict[str, Any]]:
        """The job's events as they happen (Server-Sent Events), ending when the job ends."""
        with self._client.stream("GET", f"/api/v1/jobs/{self.id}/events", timeout=None) as response:
            if response.status_code >= 400:
                response.read()
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
        self.data = self._client.request("POST", f"/api/v1/jobs/{self.id}/cancel").json()
        return self

    def __repr__(self) -> str:
        return f"Job({self.id!r}, state={self.state!r}, model={self.model!r}, version={self.version!r})"
