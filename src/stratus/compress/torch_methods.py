"""Compression methods that retrain: magnitude pruning with a fine-tune, and distillation of a smaller
student from the teacher's soft targets. They start from a version's training graph (training/graph.py)
and run in the compression child, the only place besides training where torch is imported."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from stratus.training.graph import GraphModel, TrainingGraph
from stratus.types import Array

Report = Callable[[dict[str, Any]], None]
PARAMETRIC = (nn.Conv2d, nn.Linear)


def _flatten_shape(model: GraphModel, input_shape: list[int]) -> tuple[int, int]:
    """(channels, spatial positions) of the tensor that reaches the first Flatten, found by a dry run."""
    x = torch.zeros(1, *input_shape)
    if model.resize is not None:
        x = nn.functional.interpolate(x, size=model.resize, mode="bilinear", align_corners=False)
    for layer in model.layers:
        if isinstance(layer, nn.Flatten):
            return int(x.shape[1]), int(np.prod(x.shape[2:])) if x.dim() > 2 else 1
        x = layer(x)
    return int(x.shape[1]), 1


def _conv(layer: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    """A fresh Conv2d shaped like ``layer`` but with other channel counts."""
    kernel = cast(tuple[int, int], layer.kernel_size)
    padding = cast(Any, layer.padding)
    return nn.Conv2d(in_channels, out_channels, kernel, padding=padding, bias=layer.bias is not None)


def _slice_in(layer: nn.Module, keep: torch.Tensor, spatial: int) -> nn.Module:
    """A copy of ``layer`` that reads only the kept channels of its input."""
    new: nn.Conv2d | nn.Linear
    if isinstance(layer, nn.Conv2d):
        new = _conv(layer, len(keep), layer.out_channels)
        new.weight.data = layer.weight.data[:, keep].clone()
    else:
        assert isinstance(layer, nn.Linear)
        columns = (keep[:, None] * spatial + torch.arange(spatial)[None, :]).reshape(-1) if spatial > 1 else keep
        new = nn.Linear(len(columns), layer.out_features, bias=layer.bias is not None)
        new.weight.data = layer.weight.data[:, columns].clone()
    if layer.bias is not None:
        assert new.bias is not None
        new.bias.data = layer.bias.data.clone()
    return new


def _slice_out(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A copy of ``layer`` with only the kept output channels (or units)."""
    new: nn.Conv2d | nn.Linear
    if isinstance(layer, nn.Conv2d):
        new = _conv(layer, layer.in_channels, len(keep))
    else:
        assert isinstance(layer, nn.Linear)
        new = nn.Linear(layer.in_features, len(keep), bias=layer.bias is not None)
    new.weight.data = layer.weight.data[keep].clone()
    if layer.bias is not None:
        assert new.bias is not None
        new.bias.data = layer.bias.data[keep].clone()
    return new


def structured_prune(graph: TrainingGraph, ratio: float) -> tuple[GraphModel, dict[str, Any]]:
    """Remove the ``ratio`` of output channels (conv) or units (linear) with the smallest L1 weight norm
    from every layer but the last, and rebuild the next layer to read only what is left. The result is
    a genuinely smaller dense network, not a masked one."""
    model = copy.deepcopy(graph.model)
    layers = list(model.layers)
    parametric = [i for i, layer in enumerate(layers) if isinstance(layer, PARAMETRIC)]
    _, spatial = _flatten_shape(model, graph.input_shape)
    flatten_at = next((i for i, layer in enumerate(layers) if isinstance(layer, nn.Flatten)), -1)
    before, after = 0, 0
    for position, index in enumerate(parametric[:-1]):
        layer = layers[index]
        assert isinstance(layer, nn.Conv2d | nn.Linear)
        weight = layer.weight.data
        before += weight.shape[0]
        norms = weight.abs().reshape(weight.shape[0], -1).sum(dim=1)
        kept = max(1, round(weight.shape[0] * (1.0 - ratio)))
        keep = torch.sort(torch.topk(norms, kept).indices).values
        after += kept
        layers[index] = _slice_out(layer, keep)
        following = parametric[position + 1]
        crosses_flatten = isinstance(layers[following], nn.Linear) and isinstance(layer, nn.Conv2d)
        span = spatial if crosses_flatten and index < flatten_at < following else 1
        layers[following] = _slice_in(layers[following], keep, span)
    pruned = GraphModel(layers, classify=model.classify, resize=model.resize, preprocess=_preprocess_of(model))
    pruned.eval()
    return pruned, {"mode": "structured", "units_before": before, "units_after": after}


def _preprocess_of(model: GraphModel) -> dict[str, Array] | None:
    if not model.has_preprocess:
        return None
    return {name: getattr(model, name).detach().numpy() for name in ("fill", "offset", "scale")}


def unstructured_prune(graph: TrainingGraph, ratio: float) -> tuple[GraphModel, dict[str, Any]]:
    """Zero the ``ratio`` of weights with the smallest magnitude, over all layers together. The shapes stay
    the same, so on a CPU this saves nothing by itself: the report says so."""
    model = copy.deepcopy(graph.model)
    weights = [layer.weight for layer in model.layers if isinstance(layer, PARAMETRIC)]
    magnitudes = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    threshold = torch.quantile(magnitudes, ratio) if len(magnitudes) <= 16_000_000 else magnitudes.median()
    for weight in weights:
        weight.data[weight.detach().abs() <= threshold] = 0.0
    return model, {"mode": "unstructured", "threshold": float(threshold)}


def sparsity(model: GraphModel) -> float:
    weights = [layer.weight.detach() for layer in model.layers if isinstance(layer, PARAMETRIC)]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / max(1, total))


def fine_tune(
    model: GraphModel,
    X: Array,
    y: Array,
    *,
    epochs: int,
    lr: float,
    report: Report,
    label: str,
    teacher_logits: Array | None = None,
    temperature: float = 1.0,
    alpha: float = 0.0,
    keep_zeros: bool = False,
    seed: int = 0,
) -> None:
    """Mini-batch training on the training split. With teacher logits the loss mixes the soft-target KL
    divergence (scaled by T^2, as Hinton et al. do) with the hard-label cross entropy."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xs = torch.tensor(X, dtype=torch.float32)
    ys = torch.tensor(y, dtype=torch.long if model.classify else torch.float32)
    soft = torch.tensor(teacher_logits, dtype=torch.float32) if teacher_logits is not None else None
    masks = [(layer.weight.detach() != 0) for layer in model.layers if isinstance(layer, PARAMETRIC)]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    hard_loss: nn.Module = nn.CrossEntropyLoss() if model.classify else nn.MSELoss()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(xs), generator=generator)
        total = 0.0
        for start in range(0, len(xs), 32):
            index = order[start : start + 32]
            output = model(xs[index])
            logits = output[0] if model.classify else output
            loss = hard_loss(logits, ys[index])
            if soft is not None:
                kl = nn.functional.kl_div(
                    nn.functional.log_softmax(logits / temperature, dim=1),
                    nn.functional.softmax(soft[index] / temperature, dim=1),
                    reduction="batchmean",
                )
                loss = alpha * temperature**2 * kl + (1.0 - alpha) * loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if keep_zeros:
                with torch.no_grad():
                    parametric = [layer for layer in model.layers if isinstance(layer, PARAMETRIC)]
                    for layer, mask in zip(parametric, masks, strict=True):
                        layer.weight.mul_(mask)
            total += float(loss.detach()) * len(index)
        report({"event": "epoch", "epoch": epoch, "epochs": epochs, "loss": total / len(xs), "step": label})
    model.eval()


def student_of(graph: TrainingGraph, width: float, seed: int) -> GraphModel:
    """The teacher's architecture with every hidden layer ``width`` times as wide, freshly initialised."""
    torch.manual_seed(seed)
    layers = list(graph.model.layers)
    parametric = [i for i, layer in enumerate(layers) if isinstance(layer, PARAMETRIC)]
    _, spatial = _flatten_shape(graph.model, graph.input_shape)
    flatten_at = next((i for i, layer in enumerate(layers) if isinstance(layer, nn.Flatten)), -1)
    built: list[nn.Module] = [copy.deepcopy(layer) for layer in layers]
    previous_out: int | None = None
    previous_index = -1
    for position, index in enumerate(parametric):
        layer = layers[index]
        last = position == len(parametric) - 1
        if isinstance(layer, nn.Conv2d):
            in_channels = previous_out if previous_out is not None else layer.in_channels
            out = layer.out_channels if last else max(1, round(layer.out_channels * width))
            built[index] = _conv(layer, in_channels, out)
        else:
            assert isinstance(layer, nn.Linear)
            in_features = layer.in_features
            if previous_out is not None:
                crosses = isinstance(layers[previous_index], nn.Conv2d) and previous_index < flatten_at < index
                in_features = previous_out * (spatial if crosses else 1)
            out = layer.out_features if last else max(1, round(layer.out_features * width))
            built[index] = nn.Linear(in_features, out)
        previous_out, previous_index = out, index
    student = GraphModel(
        built, classify=graph.model.classify, resize=graph.model.resize, preprocess=_preprocess_of(graph.model)
    )
    return student


def export(model: GraphModel, graph: TrainingGraph, example: Array) -> tuple[bytes, dict[str, bytes]]:
    """The ONNX artifact (verified against torch by the exporter) and the new training graph's files, so a
    pruned or distilled version can itself be compressed again."""
    from stratus.formats import torch_to_onnx

    extra = {"input": {2: "height", 3: "width"}} if model.resize is not None else None
    converted = torch_to_onnx(
        model,
        example.astype(np.float32),
        output_names=tuple(graph.output_names),
        dynamic_axes_extra=extra,
        rtol=1e-4,
        atol=1e-4,
    )
    files = TrainingGraph(model, graph.input_shape, graph.output_names).to_files()
    return converted.onnx_bytes, files


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["export", "fine_tune", "sparsity", "structured_prune", "student_of", "unstructured_prune"]
