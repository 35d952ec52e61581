"""A fold function for the search's tests (run in the trial processes): trials of the family "raises" raise, of
"killed" are killed by a signal, of "memory" allocate past their process's limit; "good" ones score by their
sampled parameter, so the search has something to find; "lucky" ones lead on the search's folds only,
"steady" ones score the same on every fold."""

from __future__ import annotations

import os
import signal
from typing import Any


def fold(payload: Any, config: dict[str, Any], fold: int) -> dict[str, Any]:
    family = config["family"]
    if family == "raises":
        raise ValueError("this configuration cannot fit")
    if family == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if family == "memory":
        blocks = [bytearray(64 * 1024 * 1024) for _ in range(64)]  # 4 GiB, over the 256 MiB allowance
        return {"score": float(len(blocks)), "fit_s": 0.0, "size_bytes": 1, "latency_ms": 0.0}
    if family == "lucky":  # the best of all on the search's folds (0-2), poor on the confirmation split's (3-5)
        return {"score": 0.95 if fold < 3 else 0.5, "fit_s": 0.001, "size_bytes": 100, "latency_ms": 0.01}
    if family == "steady":
        return {"score": 0.9, "fit_s": 0.001, "size_bytes": 100, "latency_ms": 0.01}
    score = 0.9 if config["params"].get("scaling") == "minmax" else 0.8
    return {"score": score + 0.01 * fold, "fit_s": 0.001, "size_bytes": 100, "latency_ms": 0.01}
