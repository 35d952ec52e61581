"""The explanation methods themselves. They run in the explanation worker processes (worker.py) and in tests,
never in the server: this module imports shap (and through it numba), which the serving path must not load.

Every method explains one output column per row (the ``target`` class, or the row's predicted class) in one
output space:

- ``probability``: the class's probability (a ``probabilities`` output, or the softmax of ``logits``);
- ``logit``: log(p / (1 - p)) of that probability: for a binary logistic regression this is w.x + b, linear
  in the inputs, so its Shapley values are exactly coef_j * (x_j - E[x_j]);
- ``raw``: the output's values as the model gives them (a regression's prediction).

Methods, and what they promise:

- ``kernel`` (tabular, default): shap's KernelExplainer, a weighted regression over coalitions; additive by
  its constraint, and exact for a model additive in its inputs once its samples cover the coalitions'
  weights (numpy only: no compile step);
- ``permutation`` (tabular): shap's PermutationExplainer with an independent masker over the
  background rows. Additive (attributions sum to f(x) - E[f(X)] over the background), and exact for models
  additive in their inputs (a linear model in logit space), since every marginal contribution is the same;
- ``exact`` (tabular, at most 16 features): shap's ExactExplainer, every coalition; additive;
- ``occlusion`` (images, and text by tokens): f(x) - f(x with a region set to the baseline), per region
  (patch x patch pixels, or one token); not additive (interactions are not shared out).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stratus.types import Array

ADDITIVE = frozenset({"permutation", "kernel", "exact"})
TABULAR_METHODS = ("kernel", "permutation", "exact")
MAX_EXACT_FEATURES = 16
_EPS = 1e-7


@dataclass
class Request:
    """What a worker is asked: model-independent options plus the rows and the background."""

    kind: str  # tabular | image | text
    method: str
    input: str
    output: str
    output_form: str  # probabilities | logits | raw
    space: str  # probability | logit | raw
    target: int | None = None
    max_evals: int = 0  # permutation/kernel model evaluations per row; 0: the method's default
    patch: int = 1
    baseline: float = 0.0
    seed: int = 0
    feature_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


Scores = Callable[[Array], Array]


def scores_from(outputs: Array, form: str, space: str) -> Array:
    """Per-class scores (rows x classes) in the asked space from a model output."""
    values = np.asarray(outputs, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if form == "raw" or space == "raw":
        return values
    if form == "logits":
        shifted = values - values.max(axis=1, keepdims=True)
        values = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    if space == "probability":
        return values
    p = np.clip(values, _EPS, 1 - _EPS)
    return np.asarray(np.log(p) - np.log1p(-p))


def onnx_scores(session: Any, request: Request, dtype: Any, batch: int = 4096) -> Scores:
    """The model as a function of its input rows, in the request's output space (ONNX Runtime session)."""

    def run(x: Array) -> Array:
        parts = []
        for start in range(0, len(x), batch):
            chunk = np.ascontiguousarray(x[start : start + batch], dtype=dtype)
            (out,) = session.run([request.output], {request.input: chunk})
            parts.append(scores_from(out, request.output_form, request.space))
        return np.concatenate(parts, axis=0)

    return run


def _targets(request: Request, predictions: Array) -> Array:
    if request.target is not None:
        if not 0 <= request.target < predictions.shape[1]:
            raise ValueError(f"target {request.target} is not one of the model's {predictions.shape[1]} outputs")
        return np.full(len(predictions), request.target)
    if request.output_form == "raw" and predictions.shape[1] == 1:
        return np.zeros(len(predictions), dtype=np.int64)
    return np.asarray(predictions.argmax(axis=1))


def tabular(f: Scores, rows: Array, background: Array, request: Request) -> dict[str, Array]:
    """SHAP values of each row (rows x features) for its target column, with the base value E[f(X)]."""
    import shap  # type: ignore[import-untyped]  # the worker's own import: out of any module the server loads

    rows = np.asarray(rows, dtype=np.float64)
    background = np.asarray(background, dtype=np.float64)
    features = rows.shape[1]
    model = f

    def columns(x: Array) -> Array:  # always rows x outputs, so every method's values come per output
        out = np.asarray(model(x), dtype=np.float64)
        return out[:, None] if out.ndim == 1 else out

    f = columns
    if request.method == "permutation":
        # Antithetic permutations of 2M+1 evaluations each; at least 2 of them.
        evals = max(request.max_evals or 500, 2 * (2 * features + 1))
        masker = shap.maskers.Independent(background, max_samples=len(background))
        explainer = shap.PermutationExplainer(f, masker, seed=request.seed)
        result = explainer(rows, max_evals=evals, silent=True)
        values, base = np.asarray(result.values), np.asarray(result.base_values)
    elif request.method == "exact":
        if features > MAX_EXACT_FEATURES:
            raise ValueError(f"the exact method takes at most {MAX_EXACT_FEATURES} features, not {features}")
        masker = shap.maskers.Independent(background, max_samples=len(background))
        result = shap.ExactExplainer(f, masker)(rows, silent=True)
        values, base = np.asarray(result.values), np.asarray(result.base_values)
    elif request.method == "kernel":
        explainer = shap.KernelExplainer(f, background, silent=True)
        nsamples = request.max_evals or 2 * features + 2048
        raw = explainer.shap_values(rows, nsamples=nsamples, l1_reg=False, silent=True)
        values = np.asarray(raw)
        if values.ndim == 3 and values.shape[0] != len(rows):  # older shap: one array per output
            values = np.moveaxis(values, 0, -1)
        base = np.broadcast_to(np.asarray(explainer.expected_value), (len(rows), values.shape[-1]))
    else:
        raise ValueError(f"unknown tabular method {request.method!r}; one of {', '.join(TABULAR_METHODS)}")
    predictions = f(rows)
    if values.ndim == 2:  # a single output column
        values, base = values[:, :, None], np.asarray(base).reshape(len(rows), 1)
    target = _targets(request, predictions)
    picked = values[np.arange(len(rows)), :, target]
    return {
        "attributions": picked,
        "base_values": np.asarray(base)[np.arange(len(rows)), target],
        "scores": predictions[np.arange(len(rows)), target],
        "targets": target,
    }


def _regions(shape: tuple[int, ...], patch: int) -> list[tuple[slice, slice]]:
    height, width = shape[-2], shape[-1]
    return [
        (slice(top, min(top + patch, height)), slice(left, min(left + patch, width)))
        for top in range(0, height, patch)
        for left in range(0, width, patch)
    ]


def occlusion_image(f: Scores, images: Array, request: Request) -> dict[str, Array]:
    """Per-pixel attributions (the shape of the images): each patch's drop of the target score when it is
    set to the baseline, shared evenly by its pixels so a patch's pixels sum to its drop."""
    images = np.asarray(images, dtype=np.float64)
    predictions = f(images)
    target = _targets(request, predictions)
    regions = _regions(images.shape, max(1, request.patch))
    maps = np.zeros_like(images)
    for i, image in enumerate(images):
        variants = np.repeat(image[None], len(regions), axis=0)
        for r, (rows, cols) in enumerate(regions):
            variants[r, ..., rows, cols] = request.baseline
        drops = predictions[i, target[i]] - f(variants)[:, target[i]]
        for (rows, cols), drop in zip(regions, drops, strict=True):
            area = (rows.stop - rows.start) * (cols.stop - cols.start) * (image.shape[0] if image.ndim == 3 else 1)
            maps[i, ..., rows, cols] = drop / area
    return {"attributions": maps, "scores": predictions[np.arange(len(images)), target], "targets": target}


def occlusion_text(f: Callable[[list[str]], Array], texts: list[str], request: Request) -> dict[str, Any]:
    """Per-token attributions: the drop of the target score when one whitespace token is left out."""
    predictions = f(texts)
    target = _targets(request, predictions)
    tokens, attributions = [], []
    for i, text in enumerate(texts):
        words = text.split()
        variants = [" ".join(words[:k] + words[k + 1 :]) for k in range(len(words))]
        drops = predictions[i, target[i]] - f(variants)[:, target[i]] if variants else np.zeros(0)
        tokens.append(words)
        attributions.append(np.asarray(drops, dtype=np.float64))
    return {
        "tokens": tokens,
        "attributions": attributions,
        "scores": predictions[np.arange(len(texts)), target],
        "targets": target,
    }
