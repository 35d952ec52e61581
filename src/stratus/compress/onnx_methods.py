"""Compression methods that rewrite an ONNX graph: int8 quantization (dynamic and calibrated static),
fp16 weights, and ONNX Runtime's offline graph optimization. They run in the compression child."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from stratus.types import Array

Feeds = dict[str, Array]
#: SmoothQuant's migration strength for transformers, and the peak-to-RMS ratio of a smoothed MatMul input
#: above which that MatMul stays fp32. Chosen on all-MiniLM-L6-v2 (docs/compression.md): alpha 0.8 was the
#: best of 0.5-1.0; the ratio separates the first four layers' feed-forward outputs (22-29) from the rest.
DEFAULT_SMOOTH_ALPHA = 0.8
DEFAULT_OUTLIER_RATIO = 20.0


def _constants(model: onnx.ModelProto) -> set[str]:
    names = {init.name for init in model.graph.initializer}
    names |= {node.output[0] for node in model.graph.node if node.op_type == "Constant"}
    return names


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose two inputs are both activations: attention scores and their weighted sums."""
    constants = _constants(model)
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and not any(name in constants for name in node.input)
    ]


def is_transformer(model: onnx.ModelProto) -> bool:
    return bool(activation_matmuls(model))


def ffn_output_matmuls(model: onnx.ModelProto) -> list[str]:
    """The feed-forward output projections of a BERT-like encoder (``.../output/dense/MatMul`` outside the
    attention block). Their inputs follow GELU and have the widest range, so int8 hurts them most."""
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and "/output/dense" in node.name and "attention" not in node.name
    ]


def ffn_input_matmuls(model: onnx.ModelProto) -> list[str]:
    """The feed-forward input projections (``.../intermediate/dense/MatMul``) of a BERT-like encoder."""
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and "/intermediate/dense" in node.name]


def dynamic_recipe(model: onnx.ModelProto, params: dict[str, Any]) -> dict[str, Any]:
    """The quantize_dynamic arguments for this model: what the method decides when params leave it open."""
    transformer = is_transformer(model)
    op_types = params.get("op_types") or (["MatMul"] if transformer else ["MatMul", "Gemm", "Conv"])
    per_channel = params.get("per_channel")
    if per_channel is None:
        per_channel = transformer
    exclude: list[str] = []
    named_groups = {"ffn-output": ffn_output_matmuls, "ffn-input": ffn_input_matmuls}
    for name in params.get("keep_fp32", []):
        exclude += named_groups[name](model) if name in named_groups else [name]
    if params.get("weights_only", True):
        exclude += activation_matmuls(model)
    known = {node.name for node in model.graph.node}
    unknown = sorted(set(exclude) - known)
    if unknown:
        raise ValueError(f"keep_fp32 names nodes the model does not have: {unknown[:5]}")
    return {
        "op_types_to_quantize": list(op_types),
        "per_channel": bool(per_channel),
        "nodes_to_exclude": sorted(set(exclude)),
        "transformer": transformer,
    }


def _through_files(onnx_bytes: bytes, work: Path, convert: Callable[[str, str], object]) -> bytes:
    """ONNX Runtime's quantizers read and write model files: run ``convert(source, target)`` on temporary
    files in the job folder and return the target's bytes."""
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        source, target = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        source.write_bytes(onnx_bytes)
        convert(str(source), str(target))
        return target.read_bytes()


def quantize_dynamic(
    onnx_bytes: bytes, params: dict[str, Any], work: Path, calibration: Callable[[], Iterable[Feeds]] | None = None
) -> tuple[bytes, dict[str, Any]]:
    """``calibration`` gives feeds of the version's training data; without it there is no smoothing."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    source = onnx.load_from_string(onnx_bytes)
    recipe = dynamic_recipe(source, params)
    alpha = params.get("smooth_alpha")
    if alpha is None:
        alpha = DEFAULT_SMOOTH_ALPHA if recipe["transformer"] else 0.0
    recipe["smooth_alpha"] = 0.0
    if alpha > 0 and calibration is not None:
        from stratus.compress.smoothing import smooth

        excluded = set(recipe["nodes_to_exclude"])
        limit = params.get("outlier_ratio") or DEFAULT_OUTLIER_RATIO
        smoothed = smooth(source, calibration(), alpha, excluded, fp32_above=limit)
        source = smoothed.model
        recipe["nodes_to_exclude"] = sorted(excluded | set(smoothed.fp32))
        recipe.update(
            smooth_alpha=alpha,
            outlier_ratio=limit,
            smoothed_matmuls=len(smoothed.smoothed),
            kept_fp32_for_outliers=sorted(smoothed.fp32),
            int8_input_peak_to_rms_max=round(
                max((smoothed.peak_to_rms[name] for name in smoothed.smoothed), default=0.0), 1
            ),
        )
        onnx_bytes = source.SerializeToString()
    elif alpha > 0:
        recipe["notes"] = ["no calibration data known for this version: quantized without smoothing"]
    result = _through_files(
        onnx_bytes,
        work,
        lambda source_path, target: ort_quantize_dynamic(
            source_path,
            target,
            op_types_to_quantize=recipe["op_types_to_quantize"],
            per_channel=recipe["per_channel"],
            nodes_to_exclude=recipe["nodes_to_exclude"],
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        ),
    )
    recipe["excluded_nodes"] = len(recipe.pop("nodes_to_exclude"))
    return result, recipe


class _Calibration:
    """Feeds calibration rows to ONNX Runtime's calibrator, a few at a time."""

    def __init__(self, input_name: str, rows: Array, batch: int = 16) -> None:
        self._batches: Iterator[dict[str, Array]] = iter(
            {input_name: rows[i : i + batch]} for i in range(0, len(rows), batch)
        )

    def get_next(self) -> dict[str, Array] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - called by some ONNX Runtime versions only
        pass


def quantize_static(
    onnx_bytes: bytes, params: dict[str, Any], input_name: str, rows: Array, work: Path
) -> tuple[bytes, dict[str, Any]]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[params["calibration"]]
    op_types = params.get("op_types") or ["Conv", "MatMul", "Gemm"]
    result = _through_files(
        onnx_bytes,
        work,
        lambda source, target: ort_quantize_static(
            source,
            target,
            _Calibration(input_name, rows.astype(np.float32)),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=params["per_channel"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "CalibTensorRangeSymmetric": False},
        ),
    )
    recipe = {
        "format": "QDQ",
        "calibration": params["calibration"],
        "calibration_rows": len(rows),
        "per_channel": params["per_channel"],
        "op_types_to_quantize": op_types,
    }
    return result, recipe


def to_fp16(onnx_bytes: bytes) -> tuple[bytes, dict[str, Any]]:
    """fp16 weights and arithmetic, fp32 inputs and outputs so clients do not change."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    source = onnx.load_from_string(onnx_bytes)
    # The ai.onnx.ml operators (scikit-learn's trees, linear models, scalers) have no fp16 kernels.
    blocked = sorted({node.op_type for node in source.graph.node if node.domain == "ai.onnx.ml"})
    model = convert_float_to_float16(source, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *blocked])
    wrapped = OnnxModel(model)
    wrapped.topological_sort()  # the converter appends its casts at the end of the node list
    converted = sum(1 for node in source.graph.node if node.op_type not in blocked and node.domain != "ai.onnx.ml")
    return wrapped.model.SerializeToString(), {"keep_io_types": True, "kept_fp32_op_types": blocked, "nodes": converted}


def optimize(onnx_bytes: bytes, work: Path) -> tuple[bytes, dict[str, Any]]:
    """ONNX Runtime's graph optimizations applied once and saved. Extended, not 'all': the 'all' level adds
    layouts specific to this CPU, and the artifact may be served on another machine."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(dir=work) as tmp:
        target = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        result = target.read_bytes()
    return result, {"level": "extended"}


__all__ = ["dynamic_recipe", "optimize", "quantize_dynamic", "quantize_static", "to_fp16"]
