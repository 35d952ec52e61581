"""The training graph: a torch network kept next to its ONNX export, so it can be pruned or fine-tuned later.

A version trained by Stratus stores two extra files: ``training-graph.json`` (the layer list, the input
shape, the preprocessing and resize) and ``training-weights.npz`` (every tensor, as plain arrays). NPZ is
read with ``allow_pickle=False`` and the graph is JSON, so loading them never unpickles anything, unlike
``torch.load`` of a state dict. Only the layer kinds Stratus's own trainers build are described; anything
else is not a training graph and compression methods that need one refuse the version.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stratus.errors import InvalidInput
from stratus.training.params import GRAPH_FILE, WEIGHTS_FILE
from stratus.types import Array

GRAPH_FORMAT = 1
#: Upper bound on a stored graph's tensors, so a crafted NPZ cannot make the child allocate without limit.
MAX_WEIGHT_BYTES = 512 << 20


def _layer_spec(layer: nn.Module) -> dict[str, Any]:
    if isinstance(layer, nn.Conv2d):
        return {
            "type": "conv2d",
            "in": layer.in_channels,
            "out": layer.out_channels,
            "kernel": list(layer.kernel_size),
            "padding": list(layer.padding) if isinstance(layer.padding, tuple) else layer.padding,
            "bias": layer.bias is not None,
        }
    if isinstance(layer, nn.Linear):
        return {"type": "linear", "in": layer.in_features, "out": layer.out_features, "bias": layer.bias is not None}
    if isinstance(layer, nn.ReLU):
        return {"type": "relu"}
    if isinstance(layer, nn.MaxPool2d):
        return {"type": "maxpool2d", "kernel": layer.kernel_size}
    if isinstance(layer, nn.AvgPool2d):
        return {"type": "avgpool2d", "kernel": layer.kernel_size}
    if isinstance(layer, nn.Flatten):
        return {"type": "flatten"}
    raise InvalidInput(f"layer {type(layer).__name__} cannot be described as a training graph")


def _build_layer(spec: dict[str, Any]) -> nn.Module:
    kind = spec.get("type")
    if kind == "conv2d":
        padding = spec["padding"]
        return nn.Conv2d(
            int(spec["in"]),
            int(spec["out"]),
            tuple(spec["kernel"]),
            padding=tuple(padding) if isinstance(padding, list) else padding,
            bias=bool(spec["bias"]),
        )
    if kind == "linear":
        return nn.Linear(int(spec["in"]), int(spec["out"]), bias=bool(spec["bias"]))
    if kind == "relu":
        return nn.ReLU()
    if kind == "maxpool2d":
        kernel = spec["kernel"]
        return nn.MaxPool2d(tuple(kernel) if isinstance(kernel, list) else int(kernel))
    if kind == "avgpool2d":
        kernel = spec["kernel"]
        return nn.AvgPool2d(tuple(kernel) if isinstance(kernel, list) else int(kernel))
    if kind == "flatten":
        return nn.Flatten()
    raise InvalidInput(f"unknown layer type {kind!r} in the training graph")


def flatten_layers(module: nn.Module) -> list[nn.Module]:
    """The leaf layers of nested Sequentials, in order."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in flatten_layers(child)]
    return [module]


class GraphModel(nn.Module):
    """Preprocess (optional) -> resize (optional) -> layers -> (scores, argmax) or a regression output. It
    computes what the trainers' own wrapper does, so its export serves the same contract."""

    fill: torch.Tensor
    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self,
        layers: list[nn.Module],
        *,
        classify: bool,
        preprocess: dict[str, Array] | None = None,
        resize: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.classify = classify
        self.resize = resize
        self.has_preprocess = preprocess is not None
        for name in ("fill", "offset", "scale"):
            value = torch.tensor(preprocess[name], dtype=torch.float32) if preprocess is not None else torch.zeros(1)
            self.register_buffer(name, value)

    def forward(self, x: torch.Tensor) -> Any:
        if self.resize is not None:
            x = nn.functional.interpolate(x, size=self.resize, mode="bilinear", align_corners=False)
        if self.has_preprocess:
            x = torch.where(torch.isnan(x), self.fill, x)
            x = (x - self.offset) / self.scale
        out = self.layers(x)
        if self.classify:
            return out, out.argmax(dim=1)
        return out.squeeze(-1)


@dataclass
class TrainingGraph:
    model: GraphModel
    input_shape: list[int]
    output_names: list[str]

    def to_files(self) -> dict[str, bytes]:
        graph = {
            "format": GRAPH_FORMAT,
            "layers": [_layer_spec(layer) for layer in self.model.layers],
            "classify": self.model.classify,
            "resize": list(self.model.resize) if self.model.resize else None,
            "preprocess": self.model.has_preprocess,
            "input_shape": self.input_shape,
            "output_names": self.output_names,
        }
        arrays = {name: tensor.detach().cpu().numpy() for name, tensor in self.model.state_dict().items()}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return {GRAPH_FILE: json.dumps(graph, indent=1).encode(), WEIGHTS_FILE: buffer.getvalue()}

    @classmethod
    def from_files(cls, graph_bytes: bytes, weights_bytes: bytes) -> TrainingGraph:
        try:
            graph = json.loads(graph_bytes)
            if graph.get("format") != GRAPH_FORMAT:
                raise InvalidInput(f"training graph format {graph.get('format')!r} is not supported")
            if len(weights_bytes) > MAX_WEIGHT_BYTES:
                raise InvalidInput("the training weights are larger than the allowed size")
            with np.load(io.BytesIO(weights_bytes), allow_pickle=False) as npz:
                arrays = {name: np.array(npz[name]) for name in npz.files}
        except InvalidInput:
            raise
        except Exception as exc:
            raise InvalidInput(f"the training graph cannot be read: {exc}") from None
        layers = [_build_layer(spec) for spec in graph["layers"]]
        preprocess = {k: arrays[k] for k in ("fill", "offset", "scale")} if graph["preprocess"] else None
        resize = tuple(graph["resize"]) if graph["resize"] else None
        model = GraphModel(layers, classify=bool(graph["classify"]), preprocess=preprocess, resize=resize)
        state = {name: torch.tensor(value) for name, value in arrays.items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise InvalidInput(f"the training weights do not fit the graph: {exc}") from None
        model.eval()
        return cls(model, [int(v) for v in graph["input_shape"]], [str(v) for v in graph["output_names"]])


def graph_of(
    network: nn.Module,
    input_shape: list[int],
    *,
    classify: bool,
    preprocess: nn.Module | None = None,
    resize: tuple[int, int] | None = None,
) -> TrainingGraph:
    """Describe a trained network (its leaf layers in order) as a training graph with the same weights."""
    fitted = None
    if preprocess is not None:
        fitted = {name: getattr(preprocess, name).detach().cpu().numpy() for name in ("fill", "offset", "scale")}
    layers = flatten_layers(network)
    for layer in layers:
        _layer_spec(layer)  # refuses layer kinds the graph cannot describe
    model = GraphModel(layers, classify=classify, preprocess=fitted, resize=resize)
    model.eval()
    names = ["logits", "label"] if classify else ["prediction"]
    return TrainingGraph(model, input_shape, names)


__all__ = ["GRAPH_FILE", "WEIGHTS_FILE", "GraphModel", "TrainingGraph", "flatten_layers", "graph_of"]
