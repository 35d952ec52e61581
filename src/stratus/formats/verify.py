"""Does an ONNX model reproduce its source? Comparison of outputs, with messages a person can act on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from stratus.errors import ConversionError
from stratus.types import Array

_EXACT_KINDS = "biuUSO"  # bool, integer, string and object outputs (labels) must be equal


def _rows(mismatch: Array) -> int:
    """How many rows (first dimension) hold at least one mismatching value."""
    if mismatch.ndim == 0:
        return int(mismatch)
    return int(np.count_nonzero(mismatch.reshape(mismatch.shape[0], -1).any(axis=1)))


def compare_outputs(
    expected: Array, actual: Array, *, what: str, exact: bool = False, rtol: float = 1e-4, atol: float = 1e-5
) -> float:
    """Raise ConversionError unless ``actual`` matches ``expected``; return the max absolute difference.

    Labels (integer, string, or ``exact``) must be equal; floats within ``rtol``/``atol``. The message
    says how many rows (first dimension) disagree.
    """
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    if expected.shape != actual.shape:
        raise ConversionError(f"{what}: ONNX output shape {actual.shape} differs from the source's {expected.shape}")
    rows = expected.shape[0] if expected.ndim else 1
    if exact or expected.dtype.kind in _EXACT_KINDS or actual.dtype.kind in _EXACT_KINDS:
        wrong_rows = _rows(expected != actual)
        if wrong_rows:
            raise ConversionError(f"{what}: the ONNX model disagrees with the source on {wrong_rows} of {rows} rows")
        return 0.0
    expected64, actual64 = expected.astype(np.float64), actual.astype(np.float64)
    delta = np.abs(expected64 - actual64)
    finite = np.isfinite(delta)
    diff = float(delta[finite].max()) if finite.any() else 0.0
    # NaN where the source has NaN is a faithful conversion, not a mismatch.
    wrong_rows = _rows(~np.isclose(actual64, expected64, rtol=rtol, atol=atol, equal_nan=True))
    if wrong_rows:
        raise ConversionError(
            f"{what}: the ONNX model's outputs differ from the source's on {wrong_rows} of {rows} rows, "
            f"by up to {diff:.3g} (tolerance rtol={rtol}, atol={atol})"
        )
    return diff


def run_onnx(onnx_bytes: bytes, feeds: dict[str, Array]) -> list[Array]:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return [np.asarray(out) for out in session.run(None, feeds)]


def verify_outputs(
    source: str,
    output_names: Sequence[str],
    expected: Sequence[Array],
    actual: Sequence[Array],
    *,
    rtol: float,
    atol: float,
) -> float:
    """Compare every output of the ONNX model with the source's; return the largest absolute difference."""
    if len(expected) != len(actual):
        raise ConversionError(
            f"{source}: the ONNX model has {len(actual)} outputs but the source produced {len(expected)}"
        )
    diff = 0.0
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        name = output_names[index] if index < len(output_names) else f"#{index}"
        diff = max(diff, compare_outputs(want, got, what=f"{source} output {name!r}", rtol=rtol, atol=atol))
    return diff
