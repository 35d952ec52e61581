"""The explanation methods in process (what a worker runs): exactness on a linear model, additivity of every
method that promises it, and faithfulness of image occlusion on the digits CNN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from stratus.explain.methods import ADDITIVE, Request, occlusion_image, onnx_scores, tabular


def _session(model: bytes) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def cancer() -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """A logistic regression on standardized breast-cancer features, its ONNX session, background and rows.
    C keeps the logits moderate: the ONNX model outputs float32 probabilities, and a logit recovered from a
    probability within 1e-7 of 0 or 1 has lost its digits."""
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    train, test, y_train, _ = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    model = LogisticRegression(C=0.05, max_iter=2000).fit(train, y_train)
    onnx = to_onnx(model, train[:1].astype(np.float32), options={id(model): {"zipmap": False}}, target_opset=17)
    background = train[np.random.default_rng(0).choice(len(train), 50, replace=False)]
    return model, _session(onnx.SerializeToString()), background, test[:10]


@pytest.mark.parametrize("method", ["kernel", "permutation"])
def test_a_linear_model_in_logit_space_gets_its_exact_shapley_values(cancer: Any, method: str) -> None:
    """logit(p) = w.x + b, so the Shapley value of feature j is coef_j * (x_j - E[x_j]) over the background."""
    model, session, background, rows = cancer
    request = Request("tabular", method, "X", "probabilities", "probabilities", "logit", target=1)
    result = tabular(onnx_scores(session, request, np.float32), rows, background, request)
    expected = model.coef_[0] * (rows - background.mean(axis=0))
    assert result["attributions"].shape == (10, 30)
    assert np.abs(result["attributions"] - expected).max() < 1e-3
    assert np.abs(result["base_values"] - model.decision_function(background).mean()).max() < 1e-3


@pytest.mark.parametrize("method", sorted(ADDITIVE))
def test_every_additive_method_sums_to_the_prediction_minus_the_expected_value(method: str) -> None:
    """Iris (multinomial logistic regression) in probability space: nonlinear, 3 classes, 50 rows."""
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    onnx = to_onnx(model, x[:1].astype(np.float32), options={id(model): {"zipmap": False}}, target_opset=17)
    request = Request("tabular", method, "X", "probabilities", "probabilities", "probability", max_evals=200)
    f = onnx_scores(_session(onnx.SerializeToString()), request, np.float32)
    background = x[::5]  # 30 rows
    rows = x[np.random.default_rng(1).choice(len(x), 50, replace=False)]
    result = tabular(f, rows, background, request)
    expected_value = f(background).mean(axis=0)[result["targets"]]
    assert np.allclose(result["base_values"], expected_value, atol=1e-6)
    assert len(set(result["targets"].tolist())) == 3  # every class explained somewhere
    assert np.abs(result["attributions"].sum(axis=1) - (result["scores"] - expected_value)).max() < 1e-3


def test_deleting_the_most_attributed_pixels_costs_more_than_deleting_random_ones(sample_cache: Path) -> None:
    """Digits CNN, 100 test images: setting the 10% most-attributed pixels (occlusion) to 0 lowers the predicted
    class's probability at least twice as much as setting 10% random pixels to 0."""
    images, _ = load_digits(return_X_y=True)
    _, test = train_test_split(images, test_size=0.25, random_state=0)
    batch = (test[:100] / 16.0).reshape(100, 1, 8, 8)
    request = Request("image", "occlusion", "input", "logits", "logits", "probability", patch=1)
    f = onnx_scores(_session((sample_cache / "digits.onnx").read_bytes()), request, np.float32)
    result = occlusion_image(f, batch, request)
    assert result["attributions"].shape == batch.shape
    k = int(0.1 * 64)
    rng = np.random.default_rng(0)
    top_drop, random_drop = [], []
    for image, attribution, target, score in zip(
        batch, result["attributions"], result["targets"], result["scores"], strict=True
    ):
        for pixels, drops in (
            (np.argsort(-attribution.ravel())[:k], top_drop),
            (rng.choice(64, k, replace=False), random_drop),
        ):
            deleted = image.ravel().copy()
            deleted[pixels] = 0.0
            drops.append(score - f(deleted.reshape(1, 1, 8, 8))[0, target])
    assert np.mean(top_drop) >= 2 * np.mean(random_drop) > 0, (np.mean(top_drop), np.mean(random_drop))
