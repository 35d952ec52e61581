"""Activation smoothing before dynamic int8 quantization (SmoothQuant, Xiao et al. 2023).

Dynamic quantization gives each activation tensor one int8 scale per call, so a few channels with large
values (BERT's feed-forward inputs have peaks near 90 times their RMS) leave the other channels with a
handful of levels. Smoothing divides each input channel ``k`` of a weight MatMul by
``s_k = max|X_k|^alpha / max|W_k|^(1 - alpha)`` and multiplies row ``k`` of the weight by the same
``s_k``: the product is unchanged in exact arithmetic, and part of the activations' range moves into the
weights, which are quantized per output channel and cope with it.

The per-channel maxima come from calibration feeds (the version's own training data). The division is
an explicit ``Mul`` before the MatMul: in a post-LayerNorm encoder the LayerNorm output also feeds the
residual branch, so it cannot be folded into the LayerNorm's scale.

What stays hard after smoothing is measured, not guessed: the peak-to-RMS ratio of every smoothed input
is returned, and the caller keeps in fp32 the MatMuls whose ratio stays high.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from stratus.types import Array

Feeds = dict[str, Array]


def _weight_matmuls(model: onnx.ModelProto, exclude: set[str]) -> dict[str, list[onnx.NodeProto]]:
    """MatMuls with a 2-D weight initializer as their second input, grouped by their activation input (the
    query, key and value projections share one)."""
    weights = {init.name: init for init in model.graph.initializer if len(init.dims) == 2}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        shared = uses.get(node.input[1], 0) > 1 if len(node.input) > 1 else True  # a tied weight is left alone
        if node.op_type == "MatMul" and node.input[1] in weights and not shared and node.name not in exclude:
            groups.setdefault(node.input[0], []).append(node)
    return groups


class _ChannelStats:
    """Per input channel: the largest |x| and the sum of x^2 over every calibration row."""

    def __init__(self) -> None:
        self.peak: Array | None = None
        self.squares: Array | None = None
        self.rows = 0

    def add(self, value: Array) -> None:
        rows = np.abs(value.reshape(-1, value.shape[-1]).astype(np.float64))
        peak, squares = rows.max(axis=0), (rows**2).sum(axis=0)
        self.peak = peak if self.peak is None else np.maximum(self.peak, peak)
        self.squares = squares if self.squares is None else self.squares + squares
        self.rows += rows.shape[0]

    def peak_to_rms(self, scale: Array) -> float:
        """max |x / scale| over the RMS of x / scale: how much of int8's range the bulk of values gets."""
        assert self.peak is not None and self.squares is not None
        rms = np.sqrt((self.squares / scale**2).sum() / (self.rows * scale.size))
        return float((self.peak / scale).max() / max(rms, 1e-12))


def _channel_stats(model: onnx.ModelProto, names: list[str], feeds: Iterable[Feeds]) -> dict[str, _ChannelStats]:
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {output.name for output in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    stats = {name: _ChannelStats() for name in names}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            stats[name].add(value)
    if any(s.rows == 0 for s in stats.values()):
        raise ValueError("smoothing needs at least one calibration batch")
    return stats


@dataclass
class Smoothed:
    """The smoothed model and what happened to each weight MatMul (by node name)."""

    model: onnx.ModelProto
    smoothed: list[str] = field(default_factory=list)  # to be quantized, after smoothing
    fp32: list[str] = field(default_factory=list)  # still spiky after smoothing: left in fp32, unsmoothed
    peak_to_rms: dict[str, float] = field(default_factory=dict)  # of each input after smoothing


def smooth(
    model: onnx.ModelProto,
    feeds: Iterable[Feeds],
    alpha: float,
    exclude: set[str],
    *,
    fp32_above: float = float("inf"),
) -> Smoothed:
    """Smooth the weight MatMuls of ``model`` (those not in ``exclude``), measuring activations on the
    calibration ``feeds``. A MatMul whose input still peaks above ``fp32_above`` times its RMS after
    smoothing is listed in ``fp32`` and left unchanged: it will not be quantized, so it does not pay for
    the elementwise Mul a smoothing adds."""
    result = Smoothed(onnx.ModelProto())
    result.model.CopyFrom(model)
    graph = result.model.graph
    groups = _weight_matmuls(result.model, exclude)
    if not groups:
        return result
    stats = _channel_stats(result.model, list(groups), feeds)
    initializers = {init.name: init for init in graph.initializer}
    positions = {id(node): index for index, node in enumerate(graph.node)}
    inserted: list[tuple[int, onnx.NodeProto]] = []
    for source, nodes in groups.items():
        names = [node.name for node in nodes]
        weights = [numpy_helper.to_array(initializers[node.input[1]]) for node in nodes]
        weight_peak = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        peak = stats[source].peak
        assert peak is not None
        scale = np.maximum(peak, 1e-5) ** alpha / np.maximum(weight_peak, 1e-5) ** (1 - alpha)
        scale = np.clip(scale, 1e-3, 1e3)
        ratio = stats[source].peak_to_rms(scale)
        result.peak_to_rms.update(dict.fromkeys(names, ratio))
        if ratio > fp32_above:
            result.fp32 += names
            continue
        result.smoothed += names
        inverse = numpy_helper.from_array((1.0 / scale).astype(np.float32), name=f"{source}/smooth_scale")
        graph.initializer.append(inverse)
        smoothed = f"{source}/smoothed"
        for node, weight in zip(nodes, weights, strict=True):
            initializers[node.input[1]].CopyFrom(
                numpy_helper.from_array((weight * scale[:, None]).astype(np.float32), name=node.input[1])
            )
            node.input[0] = smoothed
        first = min(positions[id(node)] for node in nodes)
        inserted.append((first, helper.make_node("Mul", [source, inverse.name], [smoothed], name=f"{source}/smooth")))
    # From the back, so the earlier positions stay valid while inserting.
    for position, node in sorted(inserted, key=lambda item: item[0], reverse=True):
        graph.node.insert(position, node)
    return result


__all__ = ["Smoothed", "smooth"]
