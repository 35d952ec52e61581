"""One ONNX Runtime session with the checks that guard it: names, datatypes and shapes of inputs."""

from __future__ import annotations

import contextlib
from typing import Protocol

import numpy as np
import onnxruntime as ort

from stratus.errors import InvalidInput, StratusError
from stratus.types import V2_TO_NUMPY, Signature, Tensor, v2_datatype


def session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return opts


def check_feeds(signature: Signature, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Refuse missing, unknown, mistyped or misshapen inputs with a message naming the input."""
    specs = {spec.name: spec for spec in signature.inputs}
    feeds: dict[str, Tensor] = {}
    for name, array in inputs.items():
        spec = specs.get(name)
        if spec is None:
            raise InvalidInput(f"unknown input {name!r}; the model's inputs are " + ", ".join(repr(s) for s in specs))
        datatype = v2_datatype(array.dtype)
        if datatype != spec.datatype:
            raise InvalidInput(f"input {name!r} has datatype {datatype} but the model expects {spec.datatype}")
        spec.check(array)
        if datatype == "BYTES":
            # ONNX Runtime and tokenizers take strings as str objects, not bytes.
            array = np.vectorize(_as_text, otypes=[object])(array) if array.size else array
        feeds[name] = array
    missing = [name for name in specs if name not in inputs]
    if missing:
        raise InvalidInput(
            "missing input(s) "
            + ", ".join(repr(n) for n in missing)
            + "; the model expects "
            + ", ".join(f"{s.name!r} ({s.datatype} {list(s.shape)})" for s in signature.inputs)
        )
    return feeds


def check_output_names(signature: Signature, outputs: list[str] | None) -> list[str]:
    names = signature.output_names()
    if not outputs:
        return names
    unknown = [n for n in outputs if n not in names]
    if unknown:
        raise InvalidInput(
            "unknown output(s) "
            + ", ".join(repr(n) for n in unknown)
            + "; the model's outputs are "
            + ", ".join(repr(n) for n in names)
        )
    return outputs


def warm_up_feeds(signature: Signature) -> dict[str, Tensor]:
    feeds: dict[str, Tensor] = {}
    for spec in signature.inputs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            feeds[spec.name] = np.full(shape, "warm up", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=V2_TO_NUMPY[spec.datatype])
    return feeds


class Runner(Protocol):
    """What the pool needs of anything it serves: a plain ONNX model or a pipeline."""

    signature: Signature
    size_bytes: int

    def check_inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def check_outputs(self, outputs: list[str] | None) -> list[str]: ...

    def run_checked(self, feeds: dict[str, Tensor], outputs: list[str] | None = None) -> dict[str, Tensor]: ...

    def warm_up(self) -> None: ...


def load_session(model: bytes, threads: int) -> ort.InferenceSession:
    """From bytes: models are decrypted in memory, never written out in plain (see the store)."""
    session = ort.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"])
    # ONNX Runtime's Python session keeps the bytes it was made from, only to rebuild itself on another execution
    # provider after a GPU provider fails: on CPU alone that is a second copy of every model for nothing (MiniLM:
    # 87 MB). Without the fallback nothing reads them.
    session.disable_fallback()
    session._model_bytes = None
    return session


def run_session(session: ort.InferenceSession, names: list[str], feeds: dict[str, Tensor]) -> list[Tensor]:
    """session.run with ONNX Runtime's errors turned into the core's kinds."""
    try:
        results: list[Tensor] = session.run(names, feeds)
    except ort.capi.onnxruntime_pybind11_state.InvalidArgument as exc:
        raise InvalidInput(f"the model rejected the input: {_short(exc)}") from None
    except ort.capi.onnxruntime_pybind11_state.Fail as exc:
        raise StratusError(f"the model failed on this input: {_short(exc)}") from None
    return results


class ModelRunner:
    """Validates inputs against the version's signature and runs the session. Thread-safe: ORT's
    ``run`` may be called from several threads at once."""

    def __init__(self, model: bytes, signature: Signature, *, threads: int) -> None:
        self.signature = signature
        self.session = load_session(model, threads)
        self.size_bytes = len(model)
        self._output_names = signature.output_names()

    def check_inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return check_feeds(self.signature, inputs)

    def check_outputs(self, outputs: list[str] | None) -> list[str]:
        return check_output_names(self.signature, outputs)

    def run_checked(self, feeds: dict[str, Tensor], outputs: list[str] | None = None) -> dict[str, Tensor]:
        """Run on inputs that ``check_inputs`` already accepted."""
        names = outputs or self._output_names
        return dict(zip(names, run_session(self.session, names, feeds), strict=True))

    def run(self, inputs: dict[str, Tensor], outputs: list[str] | None = None) -> dict[str, Tensor]:
        return self.run_checked(self.check_inputs(inputs), self.check_outputs(outputs))

    def warm_up(self) -> None:
        """One run on zeros, so the first real request does not pay for lazy initialisation."""
        # A model may refuse zeros (token ids, say): warm-up is best effort.
        with contextlib.suppress(Exception):
            self.session.run(None, warm_up_feeds(self.signature))


def _as_text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _short(exc: Exception) -> str:
    # ORT prefixes messages with internal status codes and file positions; keep the human part.
    return str(exc).split(" : ", 1)[-1][:500]
