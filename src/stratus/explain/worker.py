"""An explanation worker: ``python -m stratus.explain.worker``, started by the server's pool (pool.py).

It reads request frames on stdin and writes one answer frame per request on stdout (wire.py) until stdin
closes, which is also how it learns that its server is gone. It imports shap, numba and ONNX Runtime
itself, so the server never does; it lowers its own priority and runs ONNX Runtime on one thread, so
explanations take what serving leaves. Before it says it is ready, it imports shap and explains a toy
model once (seconds on a loaded machine), which must not be charged to a request's time limit.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections import OrderedDict
from typing import Any

import numpy as np

from stratus.explain import methods, wire
from stratus.types import Array

_SESSIONS: OrderedDict[str, Any] = OrderedDict()
_KEEP_SESSIONS = 4
_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32}


def _session(digest: str, model: bytes) -> Any:
    import onnxruntime as ort

    if digest in _SESSIONS:
        _SESSIONS.move_to_end(digest)
        return _SESSIONS[digest]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    _SESSIONS[digest] = session
    while len(_SESSIONS) > _KEEP_SESSIONS:
        _SESSIONS.popitem(last=False)
    return session


Result = tuple[dict[str, Any], dict[str, Array]]


def _pipeline(digest: str, blobs: dict[str, bytes]) -> Any:
    """A text model's pipeline (tokenizer, then ONNX), kept like a session."""
    from stratus.runtime.pipeline import PipelineRunner, PipelineSpec

    if digest not in _SESSIONS:

        def no_ref(ref: Any) -> bytes:
            raise ValueError("pipelines that name other registered models are not explained yet")

        spec = PipelineSpec.parse(blobs["model"])
        _SESSIONS[digest] = PipelineRunner(spec, lambda name: blobs[f"file/{name}"], no_ref, threads=1)
        while len(_SESSIONS) > _KEEP_SESSIONS:
            _SESSIONS.popitem(last=False)
    _SESSIONS.move_to_end(digest)
    return _SESSIONS[digest]


def _text(meta: dict[str, Any], request: methods.Request, blobs: dict[str, bytes]) -> Result:
    runner = _pipeline(str(meta["digest"]), blobs)

    def scores(texts: list[str]) -> Array:
        feeds = {request.input: np.array([t.encode() for t in texts], dtype=object)}
        out = runner.run_checked(runner.check_inputs(feeds), [request.output])[request.output]
        return methods.scores_from(out, request.output_form, request.space)

    result = methods.occlusion_text(scores, [str(t) for t in meta["texts"]], request)
    answer = {"ok": True, "tokens": result["tokens"], "attributions": [a.tolist() for a in result["attributions"]]}
    return answer, {"scores": result["scores"], "targets": result["targets"]}


def handle(meta: dict[str, Any], arrays: dict[str, Array], blobs: dict[str, bytes]) -> Result:
    request = methods.Request.from_dict(meta["request"])
    if request.kind == "text":
        return _text(meta, request, blobs)
    session = _session(str(meta["digest"]), blobs["model"])
    scores = methods.onnx_scores(session, request, _DTYPES.get(str(meta.get("datatype")), np.float32))
    if request.kind == "tabular":
        result = methods.tabular(scores, arrays["rows"], arrays["background"], request)
    elif request.kind == "image":
        result = methods.occlusion_image(scores, arrays["rows"], request)
    else:
        raise ValueError(f"no explanation for a {request.kind} model here")
    return {"ok": True}, result


def warm_up() -> None:
    """Import shap and run the kernel method once, so the first request pays neither. (The permutation and
    exact methods go through shap's numba code, compiled on a worker's first use of them: about 10 s of CPU,
    and numba cannot cache it on disk, as it takes a function as an argument.)"""
    request = methods.Request("tabular", "kernel", "x", "y", "raw", "raw")
    weights = np.array([1.0, -2.0])
    methods.tabular(lambda x: x @ weights, np.ones((1, 2)), np.zeros((3, 2)), request)


def lower_priority() -> None:
    """Explanations take the CPU that serving leaves: Linux's SCHED_IDLE class runs the worker only when a core
    has nothing else to run (at nice 19, the fallback elsewhere, it still weighs 15 against serving's 1024).
    A scheduling class belongs to a thread, and threads made later inherit it; threads already running do not,
    such as a BLAS library's, started when numpy was imported: every thread of the process is moved."""
    try:
        for task in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(task), os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def main() -> None:
    lower_priority()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the real stdout (shap or numba may print)
    warm_up()
    stdout.write(wire.encode({"ready": True}, {}))
    stdout.flush()
    while (body := wire.read_frame(stdin)) is not None:
        started = time.process_time()
        try:
            meta, arrays, blobs = wire.decode(body)
            answer, result = handle(meta, arrays, blobs)
        except (ValueError, KeyError) as error:  # a request the method refuses: the caller's error
            answer, result = {"ok": False, "invalid": True, "error": str(error)}, {}
        except Exception as error:  # reported to the server, which answers 500 and logs it
            traceback.print_exc()
            answer, result = {"ok": False, "invalid": False, "error": f"{type(error).__name__}: {error}"}, {}
        answer["cpu_s"] = time.process_time() - started  # the pool's pause after it (ExplainPool.cpu_share)
        stdout.write(wire.encode(answer, result))
        stdout.flush()


if __name__ == "__main__":
    main()
