"""Telemetry buffered on disk and uploaded in batches (docs/edge.md).

Each answered request appends one line to ``spool/open.log`` with a plain write: no fsync on the hot path, yet
the line is in the kernel's page cache as soon as the call returns, so a kill -9 of the runner loses none
(a power cut may lose the last seconds). Every interval the open log is sealed: renamed to a batch file whose
name is the batch id. A batch is uploaded whole and deleted only after the cloud answered that it counted it
(or had counted it before): the cloud records batch ids in the same transaction as the counts, so a batch
sent again after a crash is not counted twice. At most ``max_batches`` sealed batches are kept; past that the
oldest are dropped and the drop is counted and reported in the device's health.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

OPEN = "open.log"
_SUFFIX = ".batch"


class Telemetry:
    def __init__(self, spool: Path, *, max_batches: int = 10_000) -> None:
        self.spool = spool
        self.max_batches = max_batches
        spool.mkdir(parents=True, exist_ok=True)
        self.dropped = 0
        self._lock = threading.Lock()
        self._written = 0
        self.seal()  # what a previous run appended (even one killed mid-way) is a batch of its own
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.spool / OPEN, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def record(self, model: str, version: int, items: int, seconds: float, side: str) -> None:
        line = f"{model}\t{version}\t{items}\t{seconds * 1000.0:.3f}\t{side}\n".encode()
        with self._lock:
            os.write(self._fd, line)
            self._written += 1

    def seal(self) -> None:
        """Turn the open log into a batch (when it has lines) and start a new one."""
        with self._lock:
            path = self.spool / OPEN
            if path.exists() and path.stat().st_size > 0:
                os.replace(path, self.spool / f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{_SUFFIX}")
                if hasattr(self, "_fd"):
                    os.close(self._fd)
                    self._fd = self._open()
            self._written = 0
        self._bound()

    def _bound(self) -> None:
        batches = self.batches()
        for path in batches[: max(0, len(batches) - self.max_batches)]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                self.dropped += 1

    def batches(self) -> list[Path]:
        return sorted(self.spool.glob(f"*{_SUFFIX}"))

    def pending_requests(self) -> int:
        """Requests recorded and not yet acknowledged by the cloud (sealed or not)."""
        total = 0
        for path in [*self.batches(), self.spool / OPEN]:
            with contextlib.suppress(FileNotFoundError):
                total += path.read_bytes().count(b"\n")
        return total

    @staticmethod
    def summarize(path: Path) -> dict[str, Any]:
        """A batch file as the cloud's telemetry body: totals per model; a torn last line is skipped."""
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
        for line in path.read_bytes().splitlines():
            parts = line.decode(errors="replace").split("\t")
            if len(parts) != 5:
                continue
            try:
                items, ms = int(parts[2]), float(parts[3])
            except ValueError:
                continue
            entry = totals[parts[0]]
            entry[0] += 1
            entry[1] += items
            entry[2] += ms
        records = [
            {"model": model, "requests": int(r), "items": int(i), "compute_ms": round(ms, 3)}
            for model, (r, i, ms) in totals.items()
        ]
        return {"batch_id": path.name.removesuffix(_SUFFIX), "records": records}

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
