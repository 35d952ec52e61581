"""scikit-learn and torch models to ONNX, verified: the ONNX must reproduce the source's outputs.

torch and sklearn are imported inside the functions only: the server imports this package and must
never load torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from stratus.errors import ConversionError
from stratus.formats.onnx_gate import inspect_onnx
from stratus.types import Signature

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class ConvertedModel:
    onnx_bytes: bytes
    signature: Signature
    source: str
    max_abs_diff: float


def _run(onnx_bytes: bytes, feeds: dict[str, Array]) -> list[Array]:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def compare_outputs(
    expected: Array, actual: Array, *, what: str, exact: bool = False, rtol: float = 1e-4, atol: float = 1e-5
) -> float:
    """Raise ConversionError unless ``actual`` matches ``expected``; return the max absolute difference."""
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    if expected.shape != actual.shape:
        raise ConversionError(f"{what}: ONNX output shape {actual.shape} differs from the source's {expected.shape}")
    if exact or expected.dtype.kind in "iubUSO":
        wrong = int(np.sum(expected.ravel() != actual.ravel()))
        if wrong:
            raise ConversionError(
                f"{what}: the ONNX model disagrees with the source on {wrong} of {expected.size} values"
            )
        return 0.0
    diff = float(np.max(np.abs(expected.astype(np.float64) - actual.astype(np.float64)))) if expected.size else 0.0
    if not np.allclose(actual, expected, rtol=rtol, atol=atol):
        raise ConversionError(
            f"{what}: the ONNX model's outputs differ from the source's by up to {diff:.3g} "
            f"(tolerance rtol={rtol}, atol={atol})"
        )
    return diff


def sklearn_to_onnx(
    estimator: Any, sample_input: Array | None = None, *, rtol: float = 1e-4, atol: float = 1e-5
) -> ConvertedModel:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    n_features = sample_input.shape[1] if sample_input is not None else getattr(estimator, "n_features_in_", None)
    if n_features is None:
        raise ConversionError("cannot tell the number of input features: pass sample_input or fit the estimator")
    if sample_input is None:
        sample_input = np.random.default_rng(0).normal(size=(32, int(n_features)))
    sample = np.asarray(sample_input, dtype=np.float32)
    from sklearn.base import is_classifier as sklearn_is_classifier

    is_classifier = sklearn_is_classifier(estimator)
    try:
        model = to_onnx(
            estimator,
            initial_types=[("input", FloatTensorType([None, int(n_features)]))],
            options={id(estimator): {"zipmap": False}} if is_classifier else None,
            target_opset=17,
        )
    except Exception as exc:
        raise ConversionError(f"skl2onnx cannot convert {type(estimator).__name__}: {exc}") from None
    onnx_bytes = model.SerializeToString()
    outputs = _run(onnx_bytes, {"input": sample})
    name = type(estimator).__name__
    if is_classifier:
        diff = compare_outputs(estimator.predict(sample), outputs[0], what=f"{name} labels", exact=True)
        if hasattr(estimator, "predict_proba") and len(outputs) > 1:
            # Labels must agree exactly. Probabilities only closely: tree converters compare float32
            # thresholds, which can move a borderline row to a neighbouring leaf in one tree.
            diff = max(
                diff,
                compare_outputs(
                    estimator.predict_proba(sample), outputs[1], what=f"{name} probabilities", rtol=rtol, atol=0.05
                ),
            )
    else:
        expected = np.asarray(estimator.predict(sample)).reshape(outputs[0].shape)
        diff = compare_outputs(expected, outputs[0], what=f"{name} predictions", rtol=rtol, atol=max(atol, 1e-4))
    return ConvertedModel(onnx_bytes, inspect_onnx(onnx_bytes).signature, f"sklearn:{name}", diff)


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
    """Export with the TorchScript exporter and verify on the example and on a larger batch.

    ``dynamic_axes_extra`` marks further dynamic dimensions, e.g. a sequence length.
    """
    import io

    import torch

    examples = example_input if isinstance(example_input, tuple) else (example_input,)
    tensors = tuple(
        torch.as_tensor(np.asarray(e, dtype=np.float32) if not isinstance(e, torch.Tensor) else e) for e in examples
    )
    if len(input_names) != len(tensors):
        input_names = tuple(f"input_{i}" for i in range(len(tensors))) if len(tensors) > 1 else ("input",)
    module.eval()
    with torch.no_grad():
        reference = module(*tensors)
    references = reference if isinstance(reference, tuple) else (reference,)
    if len(output_names) != len(references):
        output_names = tuple(f"output_{i}" for i in range(len(references))) if len(references) > 1 else ("output",)
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
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:
        raise ConversionError(f"torch.onnx cannot export {type(module).__name__}: {exc}") from None
    onnx_bytes = buffer.getvalue()
    name = type(module).__name__
    diff = 0.0
    batches = [tensors]
    if dynamic_batch:
        # A second, larger batch proves the batch dimension really is dynamic.
        generator = torch.Generator().manual_seed(0)
        batches.append(
            tuple(
                torch.cat([t, t + 0.01 * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t])
                for t in tensors
            )
        )
    for batch in batches:
        with torch.no_grad():
            expected = module(*batch)
        expected_list = expected if isinstance(expected, tuple) else (expected,)
        actual = _run(onnx_bytes, {n: t.numpy() for n, t in zip(input_names, batch, strict=True)})
        for out_name, exp, act in zip(output_names, expected_list, actual, strict=True):
            diff = max(
                diff, compare_outputs(exp.numpy(), act, what=f"{name} output {out_name!r}", rtol=rtol, atol=atol)
            )
    return ConvertedModel(onnx_bytes, inspect_onnx(onnx_bytes).signature, f"torch:{name}", diff)
