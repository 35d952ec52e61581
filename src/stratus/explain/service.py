"""Explanations of a model's predictions: what a request asks, checked here, computed by a worker (pool.py).

The server side only: it resolves the version, reads its ONNX bytes and, for a tabular model, the
background rows (the version's sealed training split, its drift reference: training/drift_reference.py),
then hands all of it to a worker. Nothing here imports shap. See docs/explain.md.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stratus.errors import Conflict, InvalidInput, NotFound
from stratus.explain.methods import ADDITIVE, MAX_EXACT_FEATURES, TABULAR_METHODS, Request
from stratus.explain.pool import ExplainPool
from stratus.registry.records import VersionInfo
from stratus.runtime.pipeline import PipelineSpec
from stratus.training.drift_reference import Reference
from stratus.types import Tensor

MAX_ROWS = 100  # rows (or images) per explanation request
MAX_BACKGROUND = 200
_CACHED = 16  # models, files and backgrounds kept
SPACES = ("probability", "logit", "raw")
_NUMERIC = ("FP16", "FP32", "FP64", "INT32", "INT64")


class Versions(Protocol):
    def resolve(self, name: str, ref: str | None = None) -> VersionInfo: ...


@dataclass(frozen=True)
class Options:
    method: str | None = None  # default: kernel (tabular), occlusion (image)
    output: str | None = None  # the output space; default: probability for a classifier, else raw
    target: int | None = None  # the class explained; default: each row's predicted class
    background: int = 50  # background rows sampled from the reference (tabular)
    max_evals: int = 0
    patch: int = 0  # occlusion patch side in pixels; 0: about 16 x 16 regions
    baseline: float = 0.0


def _output_of(version: VersionInfo) -> tuple[str, str]:
    """The output explained and its form: class probabilities, logits, or a raw (regression) value."""
    outputs = {spec.name: spec for spec in version.signature.outputs}
    for name, form in (("probabilities", "probabilities"), ("logits", "logits")):
        if name in outputs:
            return name, form
    for spec in version.signature.outputs:
        if spec.datatype in ("FP16", "FP32", "FP64"):
            return spec.name, "raw"
    raise InvalidInput(f"model {version.model!r} has no numeric output to explain")


class ExplainService:
    def __init__(
        self, versions: Versions, read_model: Callable[[VersionInfo], bytes],
        read_file: Callable[[VersionInfo, str], bytes], references: Callable[[VersionInfo], Reference],
        pool: ExplainPool,
    ) -> None:  # fmt: skip
        self.versions, self._read_model, self._read_file = versions, read_model, read_file
        self.references, self.pool = references, pool
        # What each explanation reads from the sealed store (a DB lookup, a decryption, the reference's parse),
        # kept for the next: an explain request is then no more work for the event loop than an inference.
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def _cached(self, key: tuple[Any, ...], read: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = read()  # outside the lock: two first readers may both read, and store the same value
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > _CACHED:
                self._cache.popitem(last=False)
        return value

    def read_model(self, version: VersionInfo) -> bytes:
        """The version's model (content-addressed by its digest: never stale)."""
        data: bytes = self._cached(("model", version.digest), lambda: self._read_model(version))
        return data

    def read_file(self, version: VersionInfo, name: str) -> bytes:
        digest = version.files.get(name, "")
        data: bytes = self._cached(("file", version.id, name, digest), lambda: self._read_file(version, name))
        return data

    async def _explain_text(
        self, version: VersionInfo, inputs: Mapping[str, Tensor], options: Options
    ) -> dict[str, Any]:
        """A text classifier served as a pipeline (tokenizer, then ONNX): each whitespace token's occlusion."""
        specs = version.signature.inputs
        if len(specs) != 1 or specs[0].datatype != "BYTES":
            raise InvalidInput(f"pipeline {version.model!r} is not a text model (one BYTES input); not explained")
        spec = specs[0]
        if set(inputs) != {spec.name}:
            raise InvalidInput(f"the request must hold exactly the input {spec.name!r}")
        texts = [
            t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t)
            for t in np.asarray(inputs[spec.name], dtype=object).ravel()
        ]
        if not 1 <= len(texts) <= MAX_ROWS:
            raise InvalidInput(f"an explanation takes 1 to {MAX_ROWS} texts, not {len(texts)}")
        method = options.method or "occlusion"
        if method != "occlusion":
            raise InvalidInput(f"method {method!r} does not explain text models: occlusion")
        output, form = _output_of(version)
        space = options.output or ("probability" if form != "raw" else "raw")
        if form == "raw" and space != "raw":
            raise InvalidInput(f"model {version.model!r} outputs raw values ({output!r}); explain them with output=raw")
        blobs = await asyncio.to_thread(self._pipeline_blobs, version)
        request = Request("text", method, spec.name, output, form, space, options.target)
        meta = {"request": request.to_dict(), "digest": version.digest, "texts": texts}
        answer, result = await self.pool.run(meta, {}, blobs)
        return {
            "model_name": version.model,
            "model_version": str(version.version),
            "kind": "text",
            "method": method,
            "additive": False,
            "output": output,
            "output_space": space,
            "targets": result["targets"].tolist(),
            "scores": result["scores"].tolist(),
            "tokens": answer["tokens"],
            "attributions": answer["attributions"],
        }

    def _pipeline_blobs(self, version: VersionInfo) -> dict[str, bytes]:
        spec_bytes = self.read_model(version)
        pipeline = PipelineSpec.parse(spec_bytes)
        if pipeline.model_refs():
            raise InvalidInput(f"pipeline {version.model!r} names other registered models: not explained yet")
        return {"model": spec_bytes, **{f"file/{n}": self.read_file(version, n) for n in pipeline.files()}}

    def _background(self, version: VersionInfo, width: int, rows: int) -> tuple[Any, list[str]]:
        # A version's files (and so its reference) change only by an upload, which changes this key.
        key = ("background", version.id, tuple(sorted(version.files.items())), width, rows)
        found: tuple[Any, list[str]] = self._cached(key, lambda: self._read_background(version, width, rows))
        return found

    def _read_background(self, version: VersionInfo, width: int, rows: int) -> tuple[Any, list[str]]:
        try:
            reference = self.references(version)
        except NotFound as missing:
            raise Conflict(
                f"version {version.version} of model {version.model!r} has no background data to explain against: "
                "tabular explanations sample the version's training split, and this version was not trained here. "
                "Upload its training data as its reference (PUT /api/v1/models/NAME/versions/N/reference)"
            ) from missing
        layout = reference.layout
        if layout.kind != "tabular" or layout.categorical or len(layout.numeric) != width:
            raise InvalidInput(
                f"the background of model {version.model!r} has {len(layout.numeric)} numeric features"
                f"{' and categorical ones' if layout.categorical else ''}; the request has {width} features"
            )
        block = np.column_stack([reference.features[name] for name in layout.numeric]).astype(np.float64)
        if len(block) > rows:
            block = block[np.sort(np.random.default_rng(0).choice(len(block), size=rows, replace=False))]
        return block, list(layout.numeric)

    async def explain(
        self, name: str, ref: str | None, inputs: Mapping[str, Tensor], options: Options
    ) -> dict[str, Any]:
        version = self.versions.resolve(name, ref)
        if version.format == "pipeline":
            return await self._explain_text(version, inputs, options)
        if version.format != "onnx":
            raise InvalidInput(f"model {name!r} is a {version.format}; explanations take a single ONNX model")
        if len(version.signature.inputs) != 1:
            raise InvalidInput(f"model {name!r} has {len(version.signature.inputs)} inputs; explanations take one")
        spec = version.signature.inputs[0]
        if set(inputs) != {spec.name}:
            raise InvalidInput(f"the request must hold exactly the input {spec.name!r}")
        if spec.datatype not in _NUMERIC:
            raise InvalidInput(f"input {spec.name!r} is {spec.datatype}; explanations take numeric inputs")
        rows = np.asarray(inputs[spec.name])
        spec.check(rows)
        if not 1 <= len(rows) <= MAX_ROWS:
            raise InvalidInput(f"an explanation takes 1 to {MAX_ROWS} rows, not {len(rows)}")
        output, form = _output_of(version)
        space = options.output or ("probability" if form != "raw" else "raw")
        if space not in SPACES:
            raise InvalidInput(f"output space {space!r} is not one of {', '.join(SPACES)}")
        if form == "raw" and space != "raw":
            raise InvalidInput(f"model {name!r} outputs raw values ({output!r}); explain them with output=raw")
        kind = "image" if rows.ndim in (3, 4) else "tabular" if rows.ndim == 2 else ""
        if not kind:
            raise InvalidInput(f"input {spec.name!r} of rank {rows.ndim}: explanations take [n, features] or images")
        method = options.method or ("kernel" if kind == "tabular" else "occlusion")
        arrays: dict[str, Any] = {"rows": rows}
        features: list[str] = []
        if kind == "tabular":
            if method not in TABULAR_METHODS:
                raise InvalidInput(f"method {method!r} does not explain tabular models: {', '.join(TABULAR_METHODS)}")
            if method == "exact" and rows.shape[1] > MAX_EXACT_FEATURES:
                raise InvalidInput(f"the exact method takes at most {MAX_EXACT_FEATURES} features")
            # Reads from the sealed store (the first time: DB, decryption, parsing) stay off the event loop.
            background = await asyncio.to_thread(self._background, version, rows.shape[1], options.background)
            arrays["background"], features = background
        elif method != "occlusion":
            raise InvalidInput(f"method {method!r} does not explain image models: occlusion")
        patch = options.patch or max(1, max(rows.shape[-2:]) // 16)
        request = Request(
            kind, method, spec.name, output, form, space, options.target, options.max_evals, patch,
            options.baseline, feature_names=features,
        )  # fmt: skip
        meta = {"request": request.to_dict(), "digest": version.digest, "datatype": spec.datatype}
        model = await asyncio.to_thread(self.read_model, version)
        _, result = await self.pool.run(meta, arrays, {"model": model})
        answer: dict[str, Any] = {
            "model_name": version.model,
            "model_version": str(version.version),
            "kind": kind,
            "method": method,
            "additive": method in ADDITIVE,
            "output": output,
            "output_space": space,
            "targets": result["targets"].tolist(),
            "scores": result["scores"].tolist(),
            "attributions": result["attributions"].tolist(),
        }
        if kind == "tabular":
            answer["feature_names"] = features
            answer["base_values"] = result["base_values"].tolist()
            answer["background_rows"] = len(arrays["background"])
        else:
            answer["patch"] = patch
            answer["baseline"] = options.baseline
        return answer
