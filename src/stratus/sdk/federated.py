"""Federated learning from Python (docs/federated.md): create a federated job, make client keys, join with local data.

Joining trains on this machine: it imports the federated client (Flower, torch), which the rest of the SDK never
loads; the data stays here, only the masked updates and held-out figures leave.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stratus import errors


class FederatedCalls:
    """Mixed into ``Client``; every call goes through its ``_json``."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def federated_create(
        self,
        model: str,
        *,
        classes: list[str],
        features: int | None = None,
        image_shape: list[int] | None = None,
        rounds: int = 10,
        min_clients: int = 2,
        strategy: str = "fedavg",
        secure_aggregation: bool = True,
        **options: Any,
    ) -> dict[str, Any]:
        """Queue a federated job; ``options`` are the other fields of the request (``proximal_mu``, ``local_epochs``,
        ``round_timeout_s``, ``params``, ``name``, ``timeout_s``). Returns the job record."""
        body: dict[str, Any] = {
            "model": model,
            "classes": classes,
            "rounds": rounds,
            "min_clients": min_clients,
            "strategy": strategy,
            "secure_aggregation": secure_aggregation,
            **options,
        }
        if features is not None:
            body["features"] = features
        if image_shape is not None:
            body["image_shape"] = image_shape
        job: dict[str, Any] = self._json("POST", "/api/v1/federated/jobs", json=body)
        return job

    def federated_key(self, job_id: str) -> dict[str, Any]:
        """A ``federated`` key bound to the job (its plaintext in ``key``, shown once): give one to each client."""
        key: dict[str, Any] = self._json("POST", f"/api/v1/federated/jobs/{job_id}/keys")
        return key

    def federated_join(
        self,
        job_id: str,
        data: bytes | str | Path,
        *,
        client: str,
        target: str | None = None,
        mods: Sequence[Any] = (),
        wait_s: float = 300.0,
        threads: int = 1,
    ) -> int:
        """Join the job as ``client`` (with a key bound to it) and train on ``data`` (a CSV/NPZ/image ZIP path or
        its bytes) until the job's last round. ``mods`` are Flower client mods run around each local fit (e.g. DP
        clipping and noise). Waits up to ``wait_s`` for a queued job's server to start. Returns the number of the
        server's messages answered."""
        from stratus.federated.client import prepare, train_joined

        filename = None
        if not isinstance(data, bytes):
            filename = str(data)
            data = Path(data).read_bytes()
        prepared = prepare(data, filename, target)
        body = {"client": client, **prepared.description}
        deadline = time.monotonic() + wait_s
        while True:
            try:
                answer: dict[str, Any] = self._json("POST", f"/api/v1/federated/jobs/{job_id}/join", json=body)
                break
            except errors.NotReady:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        return train_joined(answer, prepared, mods=mods, threads=threads)
