"""What the compression child's methods pass around: the data, a parent or variant model, and a predictor
that runs one the way the server would. Its own module so the methods (distill_text.py, ...) and the
child's entry script (worker.py) both import it, and not each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stratus.types import Array


@dataclass
class Data:
    x_train: Array
    y_train: Array | None
    x_test: Array
    y_test: Array | None


@dataclass
class Model:
    """A parent or a variant: one ONNX artifact, or a pipeline spec with its files."""

    format: str
    artifact: bytes
    files: dict[str, bytes]
    method: str = "parent"
    params: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        if self.format == "pipeline":
            return len(self.artifact) + sum(len(v) for v in self.files.values())
        return len(self.artifact)


class Predictor:
    """Runs a model the way the server would (same session options), on rows of its one input."""

    def __init__(self, model: Model, request: dict[str, Any], threads: int) -> None:
        self._run: Callable[[Array], Array]
        if model.format == "pipeline":
            from stratus.runtime.pipeline import PipelineRunner, PipelineSpec

            runner = PipelineRunner(
                PipelineSpec.parse(model.artifact), model.files.__getitem__, lambda ref: b"", threads=threads
            )
            self._run = lambda rows: runner.run_checked({request["input"]: rows})[request["output"]]
        else:
            from stratus.runtime.session import load_session

            session = load_session(model.artifact, threads)
            self._run = lambda rows: session.run([request["output"]], {request["input"]: rows})[0]

    def __call__(self, rows: Array) -> Array:
        result: Array = self._run(rows)
        return result

    def all(self, rows: Array, batch: int = 256) -> Array:
        return np.concatenate([self(rows[i : i + batch]) for i in range(0, len(rows), batch)])
