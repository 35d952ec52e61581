"""The upload gate: unsafe formats refused with a reason, broken ONNX refused, signatures read right."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest

from conftest import scaled
from onnx_factory import affine_model
from stratus.errors import InvalidInput, UnsafeFormat
from stratus.formats import inspect_onnx, sklearn_to_onnx, sniff_unsafe


@pytest.fixture(scope="module")
def iris_onnx() -> bytes:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    return sklearn_to_onnx(LogisticRegression(max_iter=1000).fit(X, y), X).onnx_bytes


def _assert_refused_as_unsafe(data: bytes, filename: str | None = None) -> str:
    with pytest.raises(UnsafeFormat) as info:
        inspect_onnx(data, filename)
    message = str(info.value)
    # A person must learn why, and what to do instead.
    assert "arbitrary code" in message
    assert "ONNX" in message and "SDK" in message
    return message


def test_sklearn_onnx_passes_with_its_signature(iris_onnx: bytes) -> None:
    info = inspect_onnx(iris_onnx, "iris.onnx")
    assert [(s.name, s.datatype, s.shape) for s in info.signature.inputs] == [("input", "FP32", (-1, 4))]
    assert [(s.name, s.datatype, s.shape) for s in info.signature.outputs] == [
        ("label", "INT64", (-1,)),
        ("probabilities", "FP32", (-1, 3)),
    ]
    assert info.opset == 17
    assert info.ir_version > 0
    assert info.producer == "skl2onnx"


def test_symbolic_dimension_reads_as_minus_one() -> None:
    info = inspect_onnx(affine_model(features=3))
    assert info.signature.inputs[0].shape == (-1, 3)
    assert info.signature.outputs[0].shape == (-1, 3)
    assert info.producer == "stratus-tests"


def test_random_bytes_are_invalid_not_unsafe() -> None:
    data = np.random.default_rng(7).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidInput, match=r"^not a valid ONNX model: ") as info:
        inspect_onnx(data)
    assert not isinstance(info.value, UnsafeFormat)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_onnx_is_invalid_with_a_short_reason(iris_onnx: bytes, keep: float) -> None:
    with pytest.raises(InvalidInput, match=r"^not a valid ONNX model: ") as info:
        inspect_onnx(iris_onnx[: int(len(iris_onnx) * keep)])
    assert not isinstance(info.value, UnsafeFormat)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_empty_and_zip_uploads_say_what_they_are() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        inspect_onnx(b"")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.onnx", affine_model())
    with pytest.raises(InvalidInput, match="ZIP archive") as info:
        inspect_onnx(buffer.getvalue())
    assert not isinstance(info.value, UnsafeFormat)


def test_unsupported_output_type_is_refused() -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    # The default ZipMap output is a sequence of maps, which no protocol here can carry.
    model = to_onnx(LogisticRegression(max_iter=1000).fit(X, y), X[:1].astype(np.float32), target_opset=17)
    with pytest.raises(InvalidInput, match="cannot serve"):
        inspect_onnx(model.SerializeToString())


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickles_are_refused(protocol: int) -> None:
    message = _assert_refused_as_unsafe(pickle.dumps({"weights": [1.0, 2.0], "name": "m"}, protocol=protocol))
    assert "pickle" in message


@pytest.mark.parametrize("compress", [0, 3, 9, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)])
def test_joblib_files_are_refused(tmp_path: Path, compress: object) -> None:
    path = tmp_path / "model.bin"
    joblib.dump({"coef": np.arange(10.0)}, path, compress=compress)
    _assert_refused_as_unsafe(path.read_bytes())


def test_torch_checkpoints_are_refused_whole_or_truncated() -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2).state_dict(), buffer)
    data = buffer.getvalue()
    assert "PyTorch checkpoint" in _assert_refused_as_unsafe(data)
    assert "PyTorch checkpoint" in _assert_refused_as_unsafe(data[:200])
    legacy = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2).state_dict(), legacy, _use_new_zipfile_serialization=False)
    _assert_refused_as_unsafe(legacy.getvalue())


@pytest.mark.parametrize("name", ["model.pkl", "m.PICKLE", "m.joblib", "m.pt", "m.pth", "m.ckpt", "m.sav"])
def test_unsafe_file_names_are_refused_even_with_onnx_content(name: str) -> None:
    _assert_refused_as_unsafe(affine_model(), name)


def test_onnx_never_looks_unsafe(iris_onnx: bytes) -> None:
    assert sniff_unsafe(iris_onnx, "iris.onnx") is None
    assert sniff_unsafe(affine_model(), None) is None


def test_importing_formats_loads_neither_torch_nor_sklearn() -> None:
    code = (
        "import sys\n"
        "from stratus.formats import inspect_onnx\n"
        "from onnx_factory import affine_model\n"
        "inspect_onnx(affine_model())\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'skl2onnx') if m in sys.modules))\n"
    )
    tests_dir = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tests_dir, capture_output=True, text=True, check=True, timeout=scaled(120)
    )
    assert result.stdout.strip() == "[]"
