"""sklearn and torch models to ONNX: the ONNX must reproduce the source, or conversion fails loudly."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stratus.errors import ConversionError
from stratus.formats import compare_outputs, inspect_onnx, sklearn_to_onnx, torch_to_onnx, verify_outputs


def _run(onnx_bytes: bytes, feeds: dict[str, Any]) -> list[Any]:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def _specs(specs: Any) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(s.name, s.datatype, s.shape) for s in specs]


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    X, y = load_iris(return_X_y=True)
    return X, y


def test_pipeline_classifier_gives_plain_label_and_probability_tensors(iris: Any) -> None:
    X, y = iris
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    converted = sklearn_to_onnx(pipeline, X)
    assert converted.source == "sklearn:Pipeline"
    assert _specs(converted.signature.inputs) == [("input", "FP32", (-1, 4))]
    assert _specs(converted.signature.outputs) == [("label", "INT64", (-1,)), ("probabilities", "FP32", (-1, 3))]
    assert converted.signature == inspect_onnx(converted.onnx_bytes).signature
    label, probabilities = _run(converted.onnx_bytes, {"input": X.astype(np.float32)})
    assert (label == pipeline.predict(X.astype(np.float32))).all()
    assert np.allclose(probabilities, pipeline.predict_proba(X.astype(np.float32)), atol=1e-4)
    assert 0 <= converted.max_abs_diff < 1e-4


def test_random_forest_converts_without_a_sample(iris: Any) -> None:
    X, y = iris
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    converted = sklearn_to_onnx(forest)  # verified on 32 seeded rows
    assert converted.source == "sklearn:RandomForestClassifier"
    assert _specs(converted.signature.outputs)[0] == ("label", "INT64", (-1,))
    label = _run(converted.onnx_bytes, {"input": X.astype(np.float32)})[0]
    assert (label == forest.predict(X.astype(np.float32))).all()


def test_linear_regression() -> None:
    X, y = load_diabetes(return_X_y=True)
    regression = LinearRegression().fit(X, y)
    converted = sklearn_to_onnx(regression, X[:50])
    assert converted.source == "sklearn:LinearRegression"
    assert _specs(converted.signature.inputs) == [("input", "FP32", (-1, 10))]
    (output,) = converted.signature.outputs
    assert (output.datatype, output.shape) == ("FP32", (-1, 1))
    prediction = _run(converted.onnx_bytes, {"input": X.astype(np.float32)})[0]
    assert np.allclose(prediction.ravel(), regression.predict(X), rtol=1e-4, atol=1e-3)


def test_sklearn_needs_a_way_to_know_the_features() -> None:
    with pytest.raises(ConversionError, match="sample_input"):
        sklearn_to_onnx(LogisticRegression())
    with pytest.raises(ConversionError, match="2-D"):
        sklearn_to_onnx(LinearRegression(), np.zeros(4))


class SmallMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.layers(x)
        return result


def test_torch_mlp_exports_with_a_dynamic_batch() -> None:
    torch.manual_seed(0)
    module = SmallMLP()
    example = np.random.default_rng(0).normal(size=(4, 4))  # float64: converted to float32
    converted = torch_to_onnx(module, example)
    assert not module.training  # Dropout off, in the reference and the export
    assert converted.source == "torch:SmallMLP"
    assert _specs(converted.signature.inputs) == [("input", "FP32", (-1, 4))]
    assert _specs(converted.signature.outputs) == [("output", "FP32", (-1, 3))]
    batch = np.random.default_rng(1).normal(size=(9, 4)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()
    assert np.allclose(_run(converted.onnx_bytes, {"input": batch})[0], expected, rtol=1e-3, atol=1e-5)


class TokenClassifier(torch.nn.Module):
    """Two integer inputs, two outputs (float logits and an int64 label)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(20, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = mask.unsqueeze(-1).float()
        pooled = (self.embedding(ids) * weights).sum(1) / weights.sum(1).clamp(min=1)
        logits = self.head(pooled)
        return logits, logits.argmax(dim=1)


def test_torch_tuple_of_integer_inputs_keeps_their_dtype() -> None:
    torch.manual_seed(0)
    ids = np.array([[1, 2, 3, 0], [4, 5, 0, 0]], dtype=np.int64)
    mask = (ids > 0).astype(np.int64)
    converted = torch_to_onnx(
        TokenClassifier(), (ids, mask), input_names=("input_ids", "attention_mask"), output_names=("logits", "label")
    )
    assert _specs(converted.signature.inputs) == [("input_ids", "INT64", (-1, 4)), ("attention_mask", "INT64", (-1, 4))]
    assert _specs(converted.signature.outputs) == [("logits", "FP32", (-1, 3)), ("label", "INT64", (-1,))]


def test_torch_names_must_match_the_tensors_when_chosen() -> None:
    with pytest.raises(ConversionError, match="names"):
        torch_to_onnx(SmallMLP(), torch.zeros(2, 4), output_names=("a", "b"))
    with pytest.raises(ConversionError, match="cannot run on the example input"):
        torch_to_onnx(SmallMLP(), torch.zeros(2, 5))


def test_wrong_reference_outputs_fail_with_rows_and_difference() -> None:
    actual = np.zeros((4, 3), dtype=np.float32)
    expected = actual.copy()
    expected[1, 2] = 0.5
    expected[3, 0] = -0.25
    with pytest.raises(ConversionError, match=r"2 of 4 rows, by up to 0\.5") as info:
        verify_outputs("SmallMLP", ["output"], [expected], [actual], rtol=1e-3, atol=1e-5)
    assert "'output'" in str(info.value)
    assert verify_outputs("SmallMLP", ["output"], [actual + 1e-7], [actual], rtol=1e-3, atol=1e-5) < 1e-6


def test_labels_must_agree_exactly() -> None:
    with pytest.raises(ConversionError, match="disagrees with the source on 1 of 3 rows"):
        compare_outputs(np.array([0, 1, 2]), np.array([0, 1, 1]), what="labels")
    with pytest.raises(ConversionError, match="shape"):
        compare_outputs(np.zeros((3, 1)), np.zeros(3), what="predictions")
    with pytest.raises(ConversionError, match="2 outputs"):
        verify_outputs("m", ["a"], [np.zeros(1)], [np.zeros(1), np.zeros(1)], rtol=0, atol=0)
    assert compare_outputs(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), what="nan is faithful") == 0.0
