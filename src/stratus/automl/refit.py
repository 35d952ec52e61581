"""The refit: a configuration trained on the whole training split by the training child's own code
(``stratus.training.worker.run``: the same export to ONNX, the same checks, the same evaluation files), in a
refit process that the AutoML child starts when the search starts and that warms up while the search runs.

Why a warm process: a fresh one spent most of a torch refit's time getting ready, not training. Importing
torch, then the first optimizer step (it imports ``torch._dynamo``, seconds of work) and the first ONNX export
(``torch.onnx``) took 9 s of a digits cnn refit's first epoch on a loaded machine, against 0.4 s for each later
epoch; a trial process pays that once for all its folds, so the folds' times never showed it, and the refit
estimated from them did not fit in the time the search left. The refit process pays it during the search.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from stratus.training.params import TrainRequest
from stratus.training.worker import report

TORCH_FAMILIES = ("mlp", "cnn")


def _warm_torch() -> None:
    """Load what a torch refit loads lazily, on a tiny network: torch, the optimizer's first step (it imports
    torch._dynamo), the ONNX exporter and its check in ONNX Runtime, the training graph."""
    import numpy as np
    import torch

    from stratus.formats import torch_to_onnx
    from stratus.training import graph  # noqa: F401  # imported for its torch-side modules
    from stratus.training.params import TrainParams
    from stratus.training.torch_trainers import Classifier, fit_preprocess, mlp

    torch.set_num_threads(1)  # the warm-up runs beside the search's trials: it must not take their cores
    X = np.zeros((4, 2), dtype=np.float32)
    model = Classifier(fit_preprocess(X, TrainParams(), image=False), mlp(2, 2, [4]), classify=True)
    optimizer = torch.optim.Adam(model.parameters())
    loss = model(torch.from_numpy(X))[0].sum()
    loss.backward()
    optimizer.step()
    model.eval()
    torch_to_onnx(model, X, output_names=("logits", "label"))


def _serve(conn: Connection, data: bytes, threads: int, warm: bool) -> None:
    """The refit process's loop: a job folder in, None (done) or why it failed out, until None."""
    from stratus.training import worker as training_worker

    if warm:
        with contextlib.suppress(Exception):  # a warm-up that fails only leaves the refit to load it all itself
            _warm_torch()
    stdout = sys.stdout
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the job's child is gone
            return
        if message is None:
            return
        folder = Path(message)
        # The training child's progress lines go to a file: they are not this job's events.
        with open(folder / "progress.log", "w", buffering=1) as progress:
            sys.stdout = progress
            try:
                training_worker.run(folder, data, threads)
            except Exception as exc:
                error: str | None = str(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
            else:
                error = None
            finally:
                sys.stdout = stdout
        try:
            conn.send(error)
        except (OSError, ValueError):
            return


class Refitter:
    """The refit process, started at once (forked from the trial processes' fork server, so it is in the
    job's process group: cancelling the job ends it too), warming up for torch when the search has a torch
    family. One refit at a time; a refit that overruns the budget is killed, and a later one starts a new
    process."""

    def __init__(self, context: Any, data: bytes, threads: int, families: list[str]) -> None:
        self.context, self.data, self.threads = context, data, threads
        self.warm = any(f in TORCH_FAMILIES for f in families)
        self.process: Any = None

    def start(self) -> None:
        self.conn, theirs = multiprocessing.Pipe(duplex=True)
        self.process = self.context.Process(
            target=_serve, args=(theirs, self.data, self.threads, self.warm), daemon=True
        )
        self.process.start()
        theirs.close()

    def refit(self, folder: Path, dataset: dict[str, Any], base: dict[str, Any], trial: Any, end: float) -> str | None:
        """Train ``trial``'s configuration in ``folder`` before ``end``; None, or why it failed."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        train = {"dataset": base["dataset"], "model": trial.family, "params": {**base["params"], **trial.params}}
        request = TrainRequest.model_validate(train).model_dump()
        (folder / "request.json").write_text(json.dumps({"request": request, "dataset": dataset}))
        report({"event": "log", "message": f"refit of trial {trial.number} ({trial.family}) on the training split"})
        if self.process is None or not self.process.is_alive():
            self.start()
        try:
            self.conn.send(str(folder))
            if self.conn.poll(max(0.1, end - time.monotonic())):
                error: str | None = self.conn.recv()
            else:
                self.stop(kill=True)  # at the budget's end: no time to wait for it
                return "stopped by the time budget"
        except (EOFError, OSError):
            self.stop(kill=True)
            return f"the refit's process exited with {self.process.exitcode}"
        if error is None and not (folder / "result.json").exists():
            return "the refit wrote no result"
        return error

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.is_alive() and not kill:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)
            self.process.join(timeout=0.5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2.0)
        with contextlib.suppress(OSError):
            self.conn.close()
