"""The compression pieces on their own: request checks, recipes, pruning, the bundle, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from stratus.cli.compress import parse_budget
from stratus.compress import corpus
from stratus.compress.evaluate import embedding_quality, plot_png, quality_drop, recommend, top_k
from stratus.compress.methods import parse_request
from stratus.compress.onnx_methods import dynamic_recipe
from stratus.compress.torch_methods import structured_prune, student_of, unstructured_prune
from stratus.errors import InvalidInput
from stratus.framing import pack, unpack
from stratus.training.graph import GraphModel, TrainingGraph, graph_of


def small_cnn() -> TrainingGraph:
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10),
    )  # fmt: skip
    return graph_of(body, [1, 8, 8], classify=True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"methods": ["shrink"]}, "unknown compression method 'shrink'"),
        ({"methods": []}, "methods"),
        ({"methods": ["fp16", "fp16"]}, "each method may be given once"),
        ({"methods": ["fp16"], "accuracy_budget": 1.5}, "accuracy_budget"),
        ({"methods": ["fp16"], "accuracy_budget": -0.1}, "accuracy_budget"),
        ({"methods": ["fp16"], "params": {"prune": {"ratio": 0.5}}}, "not among the methods"),
        ({"methods": ["prune"], "params": {"prune": {"ratio": 1.5}}}, "invalid params for prune"),
        ({"methods": ["quantize-static"], "params": {"quantize-static": {"calibration": "magic"}}}, "calibration"),
        ([1, 2], "a compression request is a JSON object"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_request(raw)


def test_defaults_are_filled_in() -> None:
    request, params = parse_request({"methods": ["prune", "quantize-static"]})
    assert request.accuracy_budget == 0.01
    assert params["prune"] == {"mode": "structured", "ratio": 0.5, "finetune_epochs": 10, "lr": 1e-3}
    assert params["quantize-static"]["calibration"] == "minmax"


@pytest.mark.parametrize(("text", "value"), [("1%", 0.01), ("0.5%", 0.005), ("0.02", 0.02), ("2", 0.02)])
def test_budget_parsing(text: str, value: float) -> None:
    assert parse_budget(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "150%", "-1%"])
def test_bad_budgets(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_budget(text)


def test_training_graph_round_trip_gives_the_same_outputs() -> None:
    graph = small_cnn()
    files = graph.to_files()
    again = TrainingGraph.from_files(files["training-graph.json"], files["training-weights.npz"])
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(graph.model(x)[0], again.model(x)[0])
    with pytest.raises(InvalidInput, match="cannot be read"):
        TrainingGraph.from_files(files["training-graph.json"], b"not an npz")
    bad = json.loads(files["training-graph.json"])
    bad["layers"][0]["type"] = "lstm"
    with pytest.raises(InvalidInput, match="unknown layer type"):
        TrainingGraph.from_files(json.dumps(bad).encode(), files["training-weights.npz"])


def test_structured_pruning_rebuilds_smaller_layers_that_still_run() -> None:
    graph = small_cnn()
    pruned, recipe = structured_prune(graph, 0.5)
    layers = [layer for layer in pruned.layers if isinstance(layer, nn.Conv2d | nn.Linear)]
    assert [type(layer).__name__ for layer in layers] == ["Conv2d", "Linear", "Linear"]
    assert layers[0].out_channels == 4 and layers[1].in_features == 4 * 16 and layers[1].out_features == 8
    assert layers[2].out_features == 10
    assert recipe == {"mode": "structured", "units_before": 24, "units_after": 12}
    logits, labels = pruned(torch.rand(3, 1, 8, 8))
    assert logits.shape == (3, 10) and labels.shape == (3,)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in graph.model.parameters()) / 2


def test_structured_pruning_keeps_the_strongest_channels_exactly() -> None:
    """With the weak channels' weights at zero, removing them must not change what the kept units compute."""
    graph = small_cnn()
    conv, linear = graph.model.layers[0], graph.model.layers[4]
    assert isinstance(conv, nn.Conv2d) and isinstance(linear, nn.Linear)
    with torch.no_grad():
        conv.weight[4:] = 0.0
        conv.bias[4:] = 0.0  # type: ignore[index]
    pruned, _ = structured_prune(graph, 0.5)
    # Units are ranked on the weights that remain once the removed channels are gone.
    kept_units = torch.sort(torch.topk(linear.weight[:, :64].abs().sum(dim=1), 8).indices).values
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        full = graph.model.layers[:5](x)[:, kept_units]
        small = pruned.layers[:5](x)
    assert torch.allclose(full, small, atol=1e-5)


def test_unstructured_pruning_zeroes_the_ratio_and_keeps_shapes() -> None:
    graph = small_cnn()
    pruned, _ = unstructured_prune(graph, 0.6)
    weights = torch.cat([m.weight.reshape(-1) for m in pruned.layers if isinstance(m, nn.Conv2d | nn.Linear)])
    assert float((weights == 0).float().mean()) == pytest.approx(0.6, abs=0.01)
    assert [p.shape for p in pruned.parameters()] == [p.shape for p in graph.model.parameters()]


def test_students_are_narrower_with_the_same_interface() -> None:
    student = student_of(small_cnn(), 0.5, seed=0)
    assert isinstance(student, GraphModel)
    logits, _ = student(torch.rand(2, 1, 8, 8))
    assert logits.shape == (2, 10)
    widths = [m.weight.shape[0] for m in student.layers if isinstance(m, nn.Conv2d | nn.Linear)]
    assert widths == [4, 8, 10]


def test_dynamic_recipe_differs_by_model(sample_cache: Path) -> None:
    encoder = onnx.load(str(sample_cache / "minilm-encoder.onnx"), load_external_data=False)
    transformer = dynamic_recipe(encoder, {})
    assert transformer["transformer"] and transformer["per_channel"]
    assert transformer["op_types_to_quantize"] == ["MatMul"]
    # The attention score products (activation x activation) stay fp32: 2 per layer, 6 layers.
    assert len(transformer["nodes_to_exclude"]) == 12
    kept = dynamic_recipe(encoder, {"keep_fp32": ["ffn-output"]})
    assert len(kept["nodes_to_exclude"]) == 18
    whole_ffn = dynamic_recipe(encoder, {"keep_fp32": ["ffn-output", "ffn-input"]})
    assert len(whole_ffn["nodes_to_exclude"]) == 24
    cnn = dynamic_recipe(onnx.load(str(sample_cache / "digits.onnx")), {})
    assert not cnn["transformer"] and not cnn["per_channel"]
    assert cnn["op_types_to_quantize"] == ["MatMul", "Gemm", "Conv"] and cnn["nodes_to_exclude"] == []
    with pytest.raises(ValueError, match="nodes the model does not have"):
        dynamic_recipe(encoder, {"keep_fp32": ["no-such-node"]})


def test_bundle_round_trip_and_truncation() -> None:
    entries = {"artifact": b"\x00" * 10, "file:tokenizer.json": b"{}", "dataset": b""}
    assert unpack(pack(entries)) == entries
    with pytest.raises(ValueError, match="truncated"):
        unpack(pack(entries)[:-3])
    with pytest.raises(ValueError, match="not a Stratus bundle"):
        unpack(b"PK\x03\x04")


def row(method: str, throughput: float, within: bool) -> dict[str, object]:
    return {"method": method, "throughput_batch32": throughput, "within_budget": within}


def test_recommendation_is_the_fastest_within_budget_and_faster_than_the_parent() -> None:
    rows = [row("a", 200.0, True), row("b", 500.0, False), row("c", 300.0, True)]
    assert recommend(rows, 0.01, 100.0) == rows[2]
    assert recommend(rows, 0.01, 400.0) is None
    assert recommend([row("a", 200.0, False)], 0.01, 100.0) is None


def test_quality_drop_scales() -> None:
    assert quality_drop("classifier", {"accuracy": 0.97}, {"accuracy": 0.98}) == pytest.approx(0.01)
    assert quality_drop("regressor", {"rmse": 1.1}, {"rmse": 1.0}) == pytest.approx(0.1)
    assert quality_drop("embedding", {"mean_cosine": 0.99}, {"mean_cosine": 1.0}) == pytest.approx(0.01)


def test_embedding_quality_of_identical_and_of_noisy_embeddings() -> None:
    rng = np.random.default_rng(0)
    parent = rng.normal(size=(50, 16))
    same = embedding_quality(parent, parent, top_k(parent))
    assert same == {"mean_cosine": pytest.approx(1.0), "min_cosine": pytest.approx(1.0), "top10_agreement": 1.0}
    noisy = embedding_quality(parent + rng.normal(scale=0.5, size=parent.shape), parent, top_k(parent))
    assert noisy["mean_cosine"] < 0.99 and noisy["top10_agreement"] < 1.0


def test_the_plot_is_a_png() -> None:
    parent = {"quality": {"accuracy": 0.98}, "p50_ms_batch1": 0.03, "size_bytes": 150_000}
    variant = {**parent, "method": "prune", "quality": {"accuracy": 0.975}, "p50_ms_batch1": 0.01}
    png = plot_png({"kind": "classifier", "parent": parent, "variants": [variant], "recommendation": None})
    assert png.startswith(b"\x89PNG")


def test_the_corpus_is_offline_stable_and_split_without_overlap() -> None:
    train, held_out = corpus.split()
    assert len(train) > 2000 and len(held_out) > 400
    assert not set(train) & set(held_out)
    assert corpus.split() == (train, held_out)
    assert all(6 <= len(s.split()) <= 67 and ">>>" not in s for s in held_out)


def test_the_extra_text_adds_training_sentences_but_leaves_the_evaluated_held_out_part_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train, held_out = corpus.split()
    monkeypatch.setattr(corpus, "_extra", list)
    corpus.sentences.cache_clear()
    try:
        core_train, core_held_out = corpus.split()
    finally:
        corpus.sentences.cache_clear()
    # The rest of the standard library at least doubles the training text; the core comes first in both
    # parts, so evaluations on the first held-out sentences see the same text as before it was added.
    assert len(train) > 2 * len(core_train) and len(core_held_out) > 600
    assert train[: len(core_train)] == core_train and held_out[: len(core_held_out)] == core_held_out
