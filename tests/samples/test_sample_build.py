"""The bundled samples: built in a child process, verified, cached, and rebuilt when tampered with."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from conftest import scaled
from stratus.formats import inspect_onnx
from stratus.samples import BUILD_FORMAT, SampleBuildError, SampleManifest, ensure_samples, load_manifest
from stratus.samples.cache import built_from

# One real build (a minute on a quiet machine, ten or more on a crowded one) runs inside the first test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(scaled(400))]
Built = tuple[Path, SampleManifest]


@pytest.fixture(scope="module")
def built_samples(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A fresh build (not the shared cache the other suites use), so these tests see the builder run.

    Kept in this module: a conftest.py here would shadow tests/conftest.py for `from conftest import`."""
    cache_dir = tmp_path_factory.mktemp("samples")
    return cache_dir, ensure_samples(cache_dir)


def _model(manifest: SampleManifest, name: str) -> Any:
    return next(m for m in manifest.models if m.name == name)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_manifest_lists_verified_files(built_samples: Built) -> None:
    cache_dir, manifest = built_samples
    raw = json.loads((cache_dir / "manifest.json").read_text())
    assert raw["format"] == BUILD_FORMAT
    assert raw["stratus_version"] == manifest.stratus_version
    names = [m.name for m in manifest.models]
    assert names[:2] == ["iris", "digits"]
    for model in manifest.models:
        assert model.path.parent == cache_dir
        assert hashlib.sha256(model.path.read_bytes()).hexdigest() == model.sha256
        assert model.description and model.task and model.source
    iris, digits = _model(manifest, "iris"), _model(manifest, "digits")
    assert (iris.dataset, iris.source, iris.task) == ("sklearn:iris", "sklearn:LogisticRegression", "classification")
    assert (digits.dataset, digits.source) == ("sklearn:digits", "torch:DigitsCNN")
    assert digits.metrics["test_size"] == 450
    assert "divided by 16" in digits.description
    # A half-finished build leaves temp files behind only if it crashed; a finished one leaves none.
    assert not list(cache_dir.glob("*.part"))


def test_iris_agrees_with_sklearn_on_every_row(built_samples: Built) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    _, manifest = built_samples
    X, y = load_iris(return_X_y=True)
    expected = LogisticRegression(max_iter=1000).fit(X, y).predict(X.astype(np.float32))
    label, probabilities = _session(_model(manifest, "iris").path).run(None, {"input": X.astype(np.float32)})
    assert (label == expected).all()
    assert probabilities.shape == (150, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_digits_reaches_097_on_the_held_out_split(built_samples: Built) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _, manifest = built_samples
    digits = _model(manifest, "digits")
    signature = inspect_onnx(digits.path.read_bytes()).signature
    assert [(s.name, s.datatype, s.shape) for s in signature.inputs] == [("input", "FP32", (-1, 1, 8, 8))]
    assert [(s.name, s.datatype, s.shape) for s in signature.outputs] == [
        ("logits", "FP32", (-1, 10)),
        ("label", "INT64", (-1,)),
    ]
    X, y = load_digits(return_X_y=True)
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    images = (X_test / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    logits, label = _session(digits.path).run(None, {"input": images})
    accuracy = float((label == y_test).mean())
    assert accuracy >= 0.97
    assert (label == logits.argmax(axis=1)).all()
    assert accuracy == pytest.approx(digits.metrics["test_accuracy"], abs=1e-9)


def test_a_verified_cache_is_not_rebuilt(built_samples: Built) -> None:
    cache_dir, manifest = built_samples
    before = {p.name: p.stat().st_mtime_ns for p in cache_dir.iterdir()}
    assert ensure_samples(cache_dir) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in cache_dir.iterdir()} == before


def test_the_calling_process_never_imports_torch(built_samples: Built) -> None:
    cache_dir, _ = built_samples
    code = (
        "import sys\nfrom pathlib import Path\nfrom stratus.samples import ensure_samples\n"
        "ensure_samples(Path(sys.argv[1]))\n"
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(cache_dir)], capture_output=True, text=True, check=True, timeout=scaled(120)
    )
    assert result.stdout.strip() == "[]"


def test_a_corrupted_file_triggers_a_rebuild(
    built_samples: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_dir, manifest = built_samples
    cache_dir = tmp_path / "cache"
    shutil.copytree(source_dir, cache_dir)
    iris = cache_dir / "iris.onnx"
    iris.write_bytes(iris.read_bytes()[:-10])
    assert load_manifest(cache_dir) is None
    # The real builder ran for this module's fixture; a stand-in that writes the same files shows that
    # ensure_samples calls it again (a second real build would cost the suite another 20 s to minutes).
    fake = _fake_python(tmp_path, f'echo build >> "$out/builds"\ncp "{source_dir}"/* "$out"/\n')
    monkeypatch.setattr(sys, "executable", str(fake))
    rebuilt = ensure_samples(cache_dir)
    assert (cache_dir / "builds").read_text().split() == ["build"]
    assert hashlib.sha256(iris.read_bytes()).hexdigest() == _model(rebuilt, "iris").sha256
    assert [m.sha256 for m in rebuilt.models] == [m.sha256 for m in manifest.models]


def test_the_build_is_deterministic(built_samples: Built, sample_cache: Path) -> None:
    """This module's fresh build and the machine's shared cache (built by `make install` or an earlier run,
    from the same inputs: the cache key says so) hold the same iris model."""
    _, manifest = built_samples
    shared = load_manifest(sample_cache)
    assert shared is not None
    assert json.loads((sample_cache / "manifest.json").read_text())["built_from"] == built_from()
    assert _model(shared, "iris").sha256 == _model(manifest, "iris").sha256


def _fake_python(tmp_path: Path, body: str) -> Path:
    """Stands in for sys.executable: ensure_samples runs it as `<exe> -m stratus.samples.build --out DIR`."""
    script = tmp_path / "fake-python"
    script.write_text('#!/bin/sh\nout="$4"\n' + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_a_failing_build_reports_the_child_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_python(tmp_path, "echo 'Traceback: digits CNN reached only 0.5' >&2\nexit 3\n")
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(SampleBuildError, match=r"digits CNN reached only 0\.5"):
        ensure_samples(tmp_path / "cache")
    assert load_manifest(tmp_path / "cache") is None


def test_concurrent_callers_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = json.dumps({"format": BUILD_FORMAT, "stratus_version": "test", "models": []})
    fake = _fake_python(
        tmp_path, f'echo build >> "$out/builds"\nsleep 0.5\necho \'{manifest}\' > "$out/manifest.json"\n'
    )
    monkeypatch.setattr(sys, "executable", str(fake))
    cache_dir = tmp_path / "cache"
    results: list[SampleManifest] = []
    callers = [threading.Thread(target=lambda: results.append(ensure_samples(cache_dir))) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(results) == 3 and all(r.stratus_version == "test" for r in results)
    assert (cache_dir / "builds").read_text().split() == ["build"]
    assert os.path.exists(cache_dir / ".lock")
