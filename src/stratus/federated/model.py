"""The network a federation trains, built the same way on the server and on every client (torch; children only).

The trainers are central training's (training/torch_trainers.py): ``mlp`` and ``cnn`` as they are, and
``logistic_regression`` as a linear layer with softmax (multinomial logistic regression, trained by gradient steps,
since scikit-learn's solver cannot take part in rounds). The preprocessing is central training's ``Preprocess``
(impute, standardise per feature or channel), part of the exported model; its statistics are the federation's,
computed by secure aggregation before the first round (``stats_vector``/``preprocess_from``), never any client's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stratus.training.params import TrainParams
from stratus.training.torch_trainers import Classifier, Preprocess, cnn, init_weights, mlp
from stratus.types import Array

MODELS = ("logistic_regression", "mlp", "cnn")


@dataclass(frozen=True)
class Shape:
    """What every client's data must look like: features (tabular) or image shape, and the class names."""

    features: int
    image_shape: tuple[int, int, int] | None
    classes: list[str]

    @property
    def channels(self) -> int:
        """How many statistics the preprocessing keeps: one per feature, or one per image channel."""
        return self.image_shape[0] if self.image_shape is not None else self.features

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Shape:
        image = spec.get("image_shape")
        shape = (int(image[0]), int(image[1]), int(image[2])) if image else None
        return cls(int(spec.get("features") or 0), shape, [str(c) for c in spec["classes"]])


def build(model: str, shape: Shape, params: TrainParams) -> Classifier:
    """The untrained network with a neutral preprocessing (zeros, ones) that ``set_preprocess`` fills later."""
    torch.manual_seed(params.seed)
    outputs = len(shape.classes)
    channels = shape.channels
    view = (1, channels, 1, 1) if shape.image_shape is not None else (1, channels)
    neutral = Preprocess(np.zeros(channels), np.zeros(channels), np.ones(channels), view)
    resize = None if shape.image_shape is None else (shape.image_shape[1], shape.image_shape[2])
    body: nn.Module
    if model == "cnn":
        if shape.image_shape is None:
            raise ValueError("cnn takes images")
        body = cnn(shape.image_shape, outputs, params.channels)
    else:
        width = int(np.prod(shape.image_shape)) if shape.image_shape is not None else shape.features
        body = mlp(width, outputs, params.hidden if model == "mlp" else [])
        if shape.image_shape is not None:
            body = nn.Sequential(nn.Flatten(), body)
    init_weights(body, params.init)
    return Classifier(neutral, body, True, resize)


def weights_of(model: Classifier) -> list[Array]:
    """The trainable tensors, in order: what rounds average. The preprocessing is not among them."""
    return [p.detach().cpu().numpy().copy() for p in model.body.parameters()]


def set_weights(model: Classifier, weights: list[Array]) -> None:
    params = list(model.body.parameters())
    if len(params) != len(weights):
        raise ValueError(f"expected {len(params)} weight tensors, got {len(weights)}")
    with torch.no_grad():
        for param, value in zip(params, weights, strict=True):
            param.copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)).reshape(param.shape))


# -- the federation's preprocessing statistics ------------------------------------------------------------------
#
# Secure aggregation sums quantized values within a clipping range (8 by default), so raw statistics (a pixel mean
# of 16, an area of 2,500) cannot go through it as they are. Two exchanges, both through SecAgg+:
#   1. "scale": each client sends log2 of its largest |value| per channel; the average sets a public power of two;
#   2. "moments": each client sends mean / 2^s and mean of squares / 4^s per channel, weighted by its rows;
# the server gets the federation's mean and variance per channel and nothing per client.


def _per_channel(X: Array, image: bool) -> Array:
    """Rows x channels: images' pixels are pooled per channel, as the preprocessing does."""
    if not image:
        return np.asarray(X, dtype=np.float64)
    return np.moveaxis(np.asarray(X, dtype=np.float64), 1, -1).reshape(-1, X.shape[1])


def scale_vector(X: Array, image: bool) -> Array:
    values = np.nan_to_num(np.abs(_per_channel(X, image)))
    result: Array = np.log2(values.max(axis=0) + 1e-6).astype(np.float32) / 8.0  # /8: within the clipping range
    return result


def exponents_from(scale: Array) -> Array:
    """The public power of two per channel (2 above the average log2 max, so a client 4x larger still fits)."""
    return np.ceil(np.asarray(scale, dtype=np.float64) * 8.0) + 2


def moments_vector(X: Array, image: bool, exponents: Array) -> Array:
    values = _per_channel(X, image)
    valid = ~np.isnan(values)
    count = np.maximum(valid.sum(axis=0), 1)
    mean = np.where(valid, values, 0).sum(axis=0) / count
    square = np.where(valid, values**2, 0).sum(axis=0) / count
    unit = np.exp2(exponents)
    return np.concatenate([mean / unit, square / unit**2]).astype(np.float32)


def preprocess_from(model: Classifier, moments: Array, exponents: Array, scaling: str) -> None:
    """Fill the network's preprocessing from the federation's moments (central training's rule: impute with the
    mean, then standardise, or leave as it is for ``scaling=none``)."""
    half = len(moments) // 2
    unit = np.exp2(np.asarray(exponents, dtype=np.float64))
    mean = np.asarray(moments[:half], dtype=np.float64) * unit
    square = np.asarray(moments[half:], dtype=np.float64) * unit**2
    std = np.sqrt(np.maximum(square - mean**2, 0.0))
    pre = model.preprocess
    view = pre.fill.shape
    with torch.no_grad():
        pre.fill.copy_(torch.tensor(mean, dtype=torch.float32).reshape(view))
        if scaling == "standard":
            pre.offset.copy_(torch.tensor(mean, dtype=torch.float32).reshape(view))
            pre.scale.copy_(torch.tensor(np.where(std > 1e-12, std, 1.0), dtype=torch.float32).reshape(view))


def preprocess_arrays(model: Classifier) -> list[Array]:
    pre = model.preprocess
    return [t.detach().numpy().copy() for t in (pre.fill, pre.offset, pre.scale)]


def set_preprocess_arrays(model: Classifier, arrays: list[Array]) -> None:
    pre = model.preprocess
    with torch.no_grad():
        for tensor, value in zip((pre.fill, pre.offset, pre.scale), arrays, strict=True):
            tensor.copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)).reshape(tensor.shape))


def sample_input(shape: Shape, model: Classifier, rows: int = 4) -> Array:
    """Inputs for the export's check, drawn around the federation's statistics (the server has no rows)."""
    generator = np.random.default_rng(0)
    pre = model.preprocess
    size = (rows, *shape.image_shape) if shape.image_shape is not None else (rows, shape.features)
    offset, scale = pre.offset.numpy(), pre.scale.numpy()
    result: Array = (generator.normal(size=size) * scale.reshape((1, *scale.shape[1:])) + offset).astype(np.float32)
    return result


def finite(values: list[Array]) -> bool:
    return all(np.isfinite(v).all() for v in values) and not any(math.isnan(float(np.sum(v))) for v in values)
