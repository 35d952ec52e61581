"""scikit-learn and torch models to ONNX, verified: the ONNX must reproduce the source's outputs.

torch and sklearn are imported inside the functions only: the server imports this package and must
never load torch.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from stratus.errors import ConversionError
from stratus.formats.onnx_gate import inspect_onnx
from stratus.formats.verify import compare_outputs, run_onnx, verify_outputs
from stratus.types import Array, Signature

SKLEARN_SAMPLE_ROWS = 32
ONNX_OPSET = 17
# Tree converters compare float32 thresholds, which can move a borderline row to a neighbouring leaf
# in one tree of a forest: labels must still agree exactly, probabilities only this closely.
_PROBABILITY_ATOL = 0.05
# sklearn regressors compute in float64, the ONNX graph in float32: outputs near zero need some slack.
_REGRESSION_MIN_ATOL = 1e-4


@dataclass(frozen=True)
class ConvertedModel:
    onnx_bytes: bytes
    signature: Signature
    source: str
    max_abs_diff: float


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def sklearn_to_onnx(
    estimator: Any, sample_input: Array | None = None, *, rtol: float = 1e-4, atol: float = 1e-5
) -> ConvertedModel:
    """Convert a fitted estimator or Pipeline: input ``input`` FP32 [-1, n_features]; classifiers give
    ``label`` and ``probabilities`` tensors (no ZipMap). Verified on ``sample_input`` (or 32 seeded
    normal rows): labels must equal ``estimator.predict`` on every row."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier

    name = type(estimator).__name__
    if sample_input is not None:
        sample = np.asarray(sample_input, dtype=np.float32)
        if sample.ndim != 2 or sample.shape[0] == 0:
            raise ConversionError(f"sample_input must be a non-empty 2-D array (rows, features), got {sample.shape}")
        n_features = int(sample.shape[1])
    else:
        features = getattr(estimator, "n_features_in_", None)
        if features is None:
            raise ConversionError(f"cannot tell how many features {name} takes: pass sample_input or fit it first")
        n_features = int(features)
        sample = np.random.default_rng(0).normal(size=(SKLEARN_SAMPLE_ROWS, n_features)).astype(np.float32)
    classifier = is_classifier(estimator)
    try:
        model = to_onnx(
            estimator,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            # Keyed by the top-level object, so a Pipeline's final classifier gets it too.
            options={id(estimator): {"zipmap": False}} if classifier else None,
            target_opset=ONNX_OPSET,
        )
    except Exception as exc:
        raise ConversionError(f"skl2onnx cannot convert {name}: {_first_line(exc)}") from None
    onnx_bytes: bytes = model.SerializeToString()
    outputs = run_onnx(onnx_bytes, {"input": sample})
    if classifier:
        diff = compare_outputs(estimator.predict(sample), outputs[0], what=f"{name} labels", exact=True)
        if hasattr(estimator, "predict_proba") and len(outputs) > 1:
            probabilities = estimator.predict_proba(sample)
            what = f"{name} probabilities"
            atol_p = max(atol, _PROBABILITY_ATOL)
            diff = max(diff, compare_outputs(probabilities, outputs[1], what=what, rtol=rtol, atol=atol_p))
    else:
        expected = np.asarray(estimator.predict(sample))
        if expected.size == outputs[0].size:
            expected = expected.reshape(outputs[0].shape)  # sklearn gives [n], skl2onnx [n, 1]
        atol_r = max(atol, _REGRESSION_MIN_ATOL)
        diff = compare_outputs(expected, outputs[0], what=f"{name} predictions", rtol=rtol, atol=atol_r)
    return ConvertedModel(onnx_bytes, inspect_onnx(onnx_bytes).signature, f"sklearn:{name}", diff)


def _as_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    # Floats become float32, what torch modules hold; integer inputs (token ids) keep their type.
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array))


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def _names(given: tuple[str, ...], default: tuple[str, ...], count: int, prefix: str, what: str) -> tuple[str, ...]:
    if len(given) == count:
        return given
    if given == default:  # the caller did not choose names: number them
        return tuple(f"{prefix}_{i}" for i in range(count))
    raise ConversionError(f"{len(given)} {what} names {list(given)} given for {count} {what}s")


def _larger_batch(tensors: tuple[Any, ...], copies: int = 3) -> tuple[Any, ...]:
    """The example stacked ``copies`` times, floats jittered, to prove the batch dimension is dynamic."""
    import torch

    generator = torch.Generator().manual_seed(0)
    stacked = []
    for tensor in tensors:
        parts = [tensor]
        for _ in range(copies - 1):
            if tensor.is_floating_point():
                parts.append(tensor + 0.01 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype))
            else:
                parts.append(tensor)
        stacked.append(torch.cat(parts))
    return tuple(stacked)


def torch_to_onnx(
    module: Any,
    example_input: Any,
    *,
    input_names: tuple[str, ...] = ("input",),
    output_names: tuple[str, ...] = ("output",),
    dynamic_batch: bool = True,
    dynamic_axes_extra: dict[str, dict[int, str]] | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> ConvertedModel:
    """Export with the TorchScript exporter (opset 17) and verify in ONNX Runtime on the example and,
    with ``dynamic_batch``, on three jittered copies of it stacked into one batch.

    ``example_input`` is a tensor or array, or a tuple of them; numpy floats become float32.
    ``dynamic_axes_extra`` marks further dynamic dimensions, e.g. a sequence length.
    """
    import torch

    name = type(module).__name__
    tensors = tuple(_as_tensor(e) for e in _as_tuple(example_input))
    input_names = _names(input_names, ("input",), len(tensors), "input", "input")
    module.eval()
    try:
        with torch.no_grad():
            references = _as_tuple(module(*tensors))
    except Exception as exc:
        raise ConversionError(f"{name} cannot run on the example input: {_first_line(exc)}") from None
    output_names = _names(output_names, ("output",), len(references), "output", "output")
    dynamic_axes: dict[str, dict[int, str]] = (
        {n: {0: "batch"} for n in (*input_names, *output_names)} if dynamic_batch else {}
    )
    for tensor_name, axes in (dynamic_axes_extra or {}).items():
        dynamic_axes.setdefault(tensor_name, {}).update(axes)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo, which is far slower here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tensors,
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes or None,
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
    except Exception as exc:
        raise ConversionError(f"torch.onnx cannot export {name}: {_first_line(exc)}") from None
    onnx_bytes = buffer.getvalue()
    batches = [tensors, _larger_batch(tensors)] if dynamic_batch else [tensors]
    diff = 0.0
    for batch in batches:
        with torch.no_grad():
            expected = [t.detach().cpu().numpy() for t in _as_tuple(module(*batch))]
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(input_names, batch, strict=True)}
        actual = run_onnx(onnx_bytes, feeds)
        diff = max(diff, verify_outputs(name, output_names, expected, actual, rtol=rtol, atol=atol))
    return ConvertedModel(onnx_bytes, inspect_onnx(onnx_bytes).signature, f"torch:{name}", diff)


BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def bert_encoder_to_onnx(bert: Any) -> ConvertedModel:
    """A Hugging Face BERT-style encoder as ONNX: token ids, mask and types in (batch and sequence length
    dynamic), ``last_hidden_state`` out; verified against torch like any torch export."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            return hidden

    ones = torch.ones(2, 8, dtype=torch.long)
    return torch_to_onnx(
        Encoder(),
        (ones, ones, torch.zeros(2, 8, dtype=torch.long)),
        input_names=BERT_INPUTS,
        output_names=("last_hidden_state",),
        dynamic_axes_extra={name: {1: "sequence"} for name in (*BERT_INPUTS, "last_hidden_state")},
        rtol=1e-3,
        atol=1e-4,
    )
