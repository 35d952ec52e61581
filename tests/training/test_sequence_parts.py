"""The sequence trainers' parts without a server: list columns and their checks, the submit check with its length
limit, and the networks' ONNX export at two sequence lengths (and their exactness under padding)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from stratus.errors import InvalidInput
from stratus.formats import torch_to_onnx
from stratus.formats.verify import run_onnx
from stratus.training.datasets import parse, profile_of, schema_of
from stratus.training.params import TrainParams, TrainRequest, check_applicable
from stratus.training.sequence_data import pad
from stratus.training.sequence_models import NumericSequenceModel, TextSequenceModel
from stratus.training.sequence_trainers import sequences_of

torch.set_num_threads(1)


def test_a_column_of_lists_is_a_ragged_sequence_with_its_lengths_in_the_schema() -> None:
    csv = b'series,label\n"[1, 2, 3]",a\n"[4.5, 5]",b\n"[6, 7, 8, 9]",a\n'
    parsed = parse("csv", csv, target="label")
    assert parsed.feature_kinds == ["sequence"] and parsed.sequences is not None
    assert [s.shape for s in parsed.sequences] == [(3, 1), (2, 1), (4, 1)]
    schema = schema_of(parsed)
    assert schema["features"] == [{"name": "series", "kind": "sequence", "min_length": 2, "max_length": 4, "width": 1}]
    assert profile_of(parsed)["features"]["series"]["steps"]["max"] == 4
    padded = sequences_of(parsed)
    assert padded.shape == (3, 4, 1) and np.isnan(padded[1, 2:]).all() and padded[1, 1, 0] == 5
    wide = parse("csv", b'x,y\n"[[1, 2], [3, 4]]",0\n"[[5, 6]]",1\n', target="y")
    assert schema_of(wide)["features"][0]["width"] == 2


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ('"[1, two]"', "not a JSON list"),
        ('"[]"', "at least one time step"),
        ('"[[1, 2], [3]]"', "same number of features"),
        ('"[1, NaN]"', "NaN or infinite"),
        ('"[true, false]"', "list of numbers"),
        ('"[[1, 2], [3, 4]]"', "earlier rows have 1"),
    ],
)
def test_malformed_sequences_are_refused_naming_the_line(cell: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        parse("csv", f'x,y\n"[1, 2]",0\n{cell},1\n'.encode(), target="y")
    assert "CSV line 3" in str(caught.value)


def _dataset(features: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": "d", "task": "classification", "format": "csv", "schema": {"features": features}, **extra}


def test_the_submit_check_applies_the_length_limit_and_the_shape_rules() -> None:
    ragged = _dataset([{"name": "s", "kind": "sequence", "min_length": 3, "max_length": 40, "width": 1}])
    rnn = TrainRequest(dataset="d", model="rnn")
    check_applicable(rnn, ragged, 40)
    with pytest.raises(InvalidInput, match=r"from 3 to 40 steps \(ragged\).*limit of 39 steps"):
        check_applicable(rnn, ragged, 39)
    npz = _dataset([], format="npz")
    npz["schema"]["image"] = {"channels": 1, "height": 50, "width": 3}
    with pytest.raises(InvalidInput, match="sequences of 50 steps"):
        check_applicable(TrainRequest(dataset="d", model="transformer"), npz, 49)
    check_applicable(TrainRequest(dataset="d", model="transformer"), npz, 50)
    text = _dataset([{"name": "t", "kind": "text"}])
    check_applicable(TrainRequest(dataset="d", model="transformer"), text)
    refused = [
        (TrainRequest(dataset="d", model="transformer", params=TrainParams(embedding_dim=30, heads=4)), text, "heads"),
        (TrainRequest(dataset="d", model="rnn", workers=2), text, "cannot train data-parallel"),
        (rnn, _dataset([{"name": "t", "kind": "text"}, {"name": "n", "kind": "numeric"}]), "one free-text column"),
        (rnn, _dataset([{"name": "n", "kind": "numeric"}]), "none of these"),
        (rnn, {**text, "task": "regression"}, "classification target"),
        (TrainRequest(dataset="d", model="mlp"), ragged, "sequence column: use the rnn or transformer"),
    ]
    for request, dataset, message in refused:
        with pytest.raises(InvalidInput, match=message):
            check_applicable(request, dataset)


SETUPS = [
    ("rnn", {"rnn_cell": "lstm", "bidirectional": True}),
    ("rnn", {"rnn_cell": "gru", "num_layers": 2}),
    ("transformer", {"num_layers": 2, "heads": 2}),
]


@pytest.mark.parametrize(("kind", "extra"), SETUPS)
def test_numeric_export_matches_torch_at_two_lengths_and_padding_changes_nothing(
    kind: str, extra: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    params = TrainParams(embedding_dim=8, hidden_size=8, **extra)
    model = NumericSequenceModel(kind, 3, 12, 4, True, params)
    rng = np.random.default_rng(0)
    model.fit_scaling(rng.normal(2.0, 3.0, (20, 12, 3)).astype(np.float32))
    model.eval()
    example = rng.normal(2.0, 3.0, (4, 12, 3)).astype(np.float32)
    onnx = torch_to_onnx(model, example, output_names=("logits", "label"), dynamic_axes_extra={"input": {1: "time"}})
    for length in (5, 17):  # shorter than the example, and longer than any trained position
        batch = rng.normal(2.0, 3.0, (3, length, 3)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(batch))[0].numpy()
        np.testing.assert_allclose(run_onnx(onnx.onnx_bytes, {"input": batch})[0], expected, rtol=1e-4, atol=1e-5)
    # A ragged batch padded with NaN steps gives each sequence what it gives alone.
    sequences = [rng.normal(size=(n, 3)).astype(np.float32) for n in (2, 7, 4)]
    together = run_onnx(onnx.onnx_bytes, {"input": pad(sequences, 9)})[0]
    for row, sequence in enumerate(sequences):
        alone = run_onnx(onnx.onnx_bytes, {"input": sequence[None]})[0]
        np.testing.assert_allclose(together[row], alone[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("kind", "extra"), SETUPS)
def test_text_export_matches_torch_at_two_lengths(kind: str, extra: dict[str, Any]) -> None:
    torch.manual_seed(0)
    params = TrainParams(embedding_dim=8, hidden_size=8, max_length=16, **extra)
    model = TextSequenceModel(kind, 50, 3, params).eval()
    ids = torch.randint(2, 50, (4, 10))
    mask = torch.ones_like(ids)
    mask[0, 6:], mask[1, 3:] = 0, 0
    ids = ids * mask
    names = ("input_ids", "attention_mask")
    dynamic = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}
    onnx = torch_to_onnx(
        model, (ids, mask), input_names=names, output_names=("logits", "label"), dynamic_axes_extra=dynamic
    )
    for length in (6, 10):
        feeds = {"input_ids": ids[:, :length].numpy(), "attention_mask": mask[:, :length].numpy()}
        with torch.no_grad():
            expected = model(ids[:, :length], mask[:, :length])[0].numpy()
        np.testing.assert_allclose(run_onnx(onnx.onnx_bytes, feeds)[0], expected, rtol=1e-4, atol=1e-5)
    # Row 1 has 3 real tokens: its logits are the same in a batch of 10 steps and cut to its own 3.
    alone = run_onnx(onnx.onnx_bytes, {"input_ids": ids[1:2, :3].numpy(), "attention_mask": mask[1:2, :3].numpy()})
    full = run_onnx(onnx.onnx_bytes, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    np.testing.assert_allclose(full[0][1], alone[0][0], rtol=1e-4, atol=1e-5)
