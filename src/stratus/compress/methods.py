"""Compression requests: the methods, their parameters with validated ranges, and whether a method applies
to a version. Everything a job would fail on late is refused here, at submit time, with the reason."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stratus.errors import InvalidInput
from stratus.registry import VersionInfo
from stratus.training.params import GRAPH_FILE, WEIGHTS_FILE

MINILM_SOURCE = "sentence-transformers:all-MiniLM-L6-v2"
METHODS = ("quantize-dynamic", "quantize-static", "fp16", "prune", "distill", "optimize")


class QuantizeDynamicParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_channel: bool | None = Field(default=None, description="default: per channel for transformers")
    op_types: list[Literal["MatMul", "Gemm", "Conv", "Attention", "Gather"]] | None = Field(
        default=None, description="default: MatMul for transformers; MatMul, Gemm and Conv otherwise"
    )
    keep_fp32: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="node names, or 'ffn-output' / 'ffn-input' for a transformer's feed-forward projections",
    )
    weights_only: bool = Field(default=True, description="skip MatMuls between two activations (attention scores)")
    smooth_alpha: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="SmoothQuant strength before quantizing (0: off); default 0.8 for transformers, off otherwise",
    )
    outlier_ratio: float | None = Field(
        default=None,
        gt=1.0,
        le=1000.0,
        description="after smoothing, MatMuls whose input peak is more than this times its RMS stay fp32 (20)",
    )
    calibration_samples: int = Field(default=256, ge=8, le=10_000, description="training rows for smoothing")


class QuantizeStaticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    samples: int = Field(default=256, ge=8, le=10_000, description="calibration rows from the training split")
    per_channel: bool = True
    op_types: list[Literal["MatMul", "Gemm", "Conv"]] | None = None


class PruneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["structured", "unstructured"] = "structured"
    ratio: float = Field(default=0.5, gt=0.0, lt=1.0, description="fraction of channels (or weights) removed")
    finetune_epochs: int = Field(default=10, ge=0, le=500)
    lr: float = Field(default=1e-3, gt=0.0, le=1.0)


class DistillParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=4.0, gt=0.0, le=100.0)
    alpha: float = Field(default=0.7, ge=0.0, le=1.0, description="weight of the soft-target loss")
    epochs: int = Field(default=40, ge=1, le=1000)
    lr: float | None = Field(default=None, gt=0.0, le=1.0, description="default 2e-3; 5e-4 for text encoders")
    width: float = Field(default=0.5, gt=0.0, le=1.0, description="student channels/units as a fraction")
    layers: int | None = Field(default=None, ge=1, le=48, description="embedding students: encoder layers (4)")
    int8: bool = Field(default=True, description="embedding students: then quantize with the dynamic int8 recipe")
    # 1,500 steps took MiniLM's student past its cosine target (0.956) in about 20 minutes on 2 cores.
    steps: int = Field(default=1500, ge=1, le=100_000, description="embedding students: optimizer steps")


class EmptyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


PARAMS: dict[str, type[BaseModel]] = {
    "quantize-dynamic": QuantizeDynamicParams,
    "quantize-static": QuantizeStaticParams,
    "fp16": EmptyParams,
    "prune": PruneParams,
    "distill": DistillParams,
    "optimize": EmptyParams,
}


class CompressRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[str] = Field(min_length=1, max_length=len(METHODS))
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    accuracy_budget: float = Field(default=0.01, ge=0.0, le=1.0)
    promote_alias: str | None = Field(default=None, max_length=64)
    threads: int = Field(default=2, ge=1, le=64, description="threads for every variant's timing")
    timing_seconds: float = Field(
        default=1.0, ge=0.05, le=60.0, description="length of each timing phase, in each of the 3 alternating rounds"
    )
    timeout_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def parse_request(raw: Any) -> tuple[CompressRequest, dict[str, dict[str, Any]]]:
    """The request and each method's full parameters (defaults filled in)."""
    if not isinstance(raw, dict):
        raise InvalidInput("a compression request is a JSON object")
    try:
        request = CompressRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"invalid compression request: {_errors(exc)}") from None
    unknown = [m for m in request.methods if m not in METHODS]
    if unknown:
        raise InvalidInput(f"unknown compression method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if len(set(request.methods)) != len(request.methods):
        raise InvalidInput("each method may be given once")
    stray = sorted(set(request.params) - set(request.methods))
    if stray:
        raise InvalidInput(f"params given for {stray}, which are not among the methods")
    params: dict[str, dict[str, Any]] = {}
    for method in request.methods:
        try:
            params[method] = PARAMS[method].model_validate(request.params.get(method, {})).model_dump()
        except ValidationError as exc:
            raise InvalidInput(f"invalid params for {method}: {_errors(exc)}") from None
    return request, params


def kind_of(version: VersionInfo) -> str:
    """'classifier', 'regressor' or 'embedding': how variants of this version are judged."""
    outputs = {t.name for t in version.signature.outputs}
    if "embedding" in outputs:
        return "embedding"
    if "label" in outputs:
        return "classifier"
    return "regressor"


def data_source(version: VersionInfo) -> str | None:
    """Where the version's evaluation data comes from: a stored dataset, a built-in scikit-learn set, the
    offline text corpus (embedding models) or nowhere."""
    if kind_of(version) == "embedding":
        return "corpus"
    dataset = version.dataset or ""
    if dataset.startswith("sklearn:"):
        return "builtin"
    if "@" in dataset:
        return "dataset"
    return None


def check_applicable(version: VersionInfo, method: str) -> None:
    """Refuse a method that cannot work on this version, saying why."""
    what = f"version {version.version} of {version.model!r}"
    has_graph = GRAPH_FILE in version.files and WEIGHTS_FILE in version.files
    source = data_source(version)
    needs_data = method in ("quantize-static", "prune") or (method == "distill" and kind_of(version) != "embedding")
    if needs_data and source is None:
        raise InvalidInput(
            f"{method} needs the version's training data, and {what} records no dataset "
            "(register it with a dataset, or train it with Stratus)"
        )
    if method == "prune" and not has_graph:
        raise InvalidInput(
            f"prune needs a training graph (the torch weights it retrains from), and {what} has none; only "
            "versions trained by Stratus's torch trainers keep one"
        )
    if method == "distill" and kind_of(version) == "embedding" and version.source != MINILM_SOURCE:
        raise InvalidInput(f"distilling an embedding model needs its encoder's weights, which {what} does not keep")
    if method == "distill" and kind_of(version) == "regressor":
        raise InvalidInput("distill trains a student on the teacher's soft targets, so it applies to classifiers")
    if method == "distill" and kind_of(version) == "classifier" and not has_graph:
        raise InvalidInput(
            f"distill builds its student from the teacher's training graph, and {what} has none; only versions "
            "trained by Stratus's torch trainers keep one"
        )
    if version.format == "pipeline" and method in ("quantize-static", "prune"):
        raise InvalidInput(f"{method} applies to a single ONNX model; {what} is a pipeline")


__all__ = ["METHODS", "CompressRequest", "check_applicable", "data_source", "kind_of", "parse_request"]
