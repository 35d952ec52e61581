"""Hard cases go to the cloud: a request whose top-class probability is below a threshold is sent to the cloud's
model, and the cloud's answer is returned when it comes within the deadline; otherwise the local answer is.

The probability is read from an output named ``probabilities`` (taken as it is) or ``logits`` (softmax); a
model with neither never forwards. The runner's device key may not infer (the ``edge`` scope syncs and reports
only), so forwarding uses a key of the ``predict`` scope given to the runner.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from stratus.types import Tensor
from stratus_edge import cloud


@dataclass(frozen=True)
class Forwarding:
    url: str
    key: str
    threshold: float
    deadline_s: float
    model: str | None = None  # the cloud's name for the model; default: the bundle's


def confidence(outputs: dict[str, Tensor]) -> np.ndarray | None:
    """Each row's top-class probability, or None when the model has no probabilities or logits output."""
    if "probabilities" in outputs:
        probs = np.asarray(outputs["probabilities"], dtype=np.float64)
    elif "logits" in outputs:
        logits = np.asarray(outputs["logits"], dtype=np.float64)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = shifted / shifted.sum(axis=-1, keepdims=True)
    else:
        return None
    if probs.ndim != 2 or probs.shape[0] == 0:
        return None
    top: np.ndarray = probs.max(axis=1)
    return top


class Forwarder:
    def __init__(self, forwarding: Forwarding) -> None:
        self.config = forwarding
        # Its own threads: a slow cloud must not hold the inference threads.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stratus-edge-forward")
        self.forwarded = 0
        self.fell_back = 0

    def wants(self, outputs: dict[str, Tensor]) -> bool:
        top = confidence(outputs)
        return top is not None and bool((top < self.config.threshold).any())

    async def forward(self, model: str, path_suffix: str, body: bytes, headers: dict[str, str]) -> cloud.Answer | None:
        """The cloud's answer to the same request, or None (unreachable, an error, or past the deadline)."""
        self.forwarded += 1
        name = self.config.model or model
        path = f"/v2/models/{name}{path_suffix}" if path_suffix.startswith("/") else f"/v1/models/{name}{path_suffix}"
        sent = {k: v for k, v in headers.items() if k in ("content-type", "inference-header-content-length")}
        sent["Authorization"] = f"Bearer {self.config.key}"

        def send() -> cloud.Answer:
            return cloud.call(self.config.url, "POST", path, body=body, headers=sent, timeout_s=self.config.deadline_s)

        try:
            answer = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self._pool, send), self.config.deadline_s
            )
        except (TimeoutError, cloud.Unreachable):
            self.fell_back += 1
            return None
        if answer.status != 200:
            self.fell_back += 1
            return None
        return answer

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
