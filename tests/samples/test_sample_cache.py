"""The shared sample cache: one per machine (per user), keyed by what the samples are built from, imported by
every new home without a rebuild."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import as_admin, make_settings, scaled
from stratus import samples
from stratus.api import create_app
from stratus.samples import SampleBuildError, load_manifest
from stratus.samples.cache import built_from, cache_key, default_cache_dir, shared_cache_root
from stratus.settings import Settings


@pytest.fixture
def fresh_key() -> Iterator[None]:
    """built_from() is cached for the process; tests that change its inputs recompute it, then restore it."""
    built_from.cache_clear()
    yield
    built_from.cache_clear()


def test_the_cache_is_per_user_and_honours_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_key: None
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert shared_cache_root() == tmp_path / "xdg" / "stratus" / "samples"
    assert default_cache_dir() == tmp_path / "xdg" / "stratus" / "samples" / cache_key()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec: ignored
    assert shared_cache_root() == Path.home() / ".cache" / "stratus" / "samples"


def test_settings_default_to_the_shared_cache_and_the_env_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STRATUS_SAMPLE_CACHE_DIR", raising=False)
    # Two homes, one cache: nothing of it lives in either home.
    first, second = Settings(home=tmp_path / "a"), Settings(home=tmp_path / "b")  # type: ignore[call-arg]
    assert first.resolved_sample_cache_dir == second.resolved_sample_cache_dir == default_cache_dir()
    monkeypatch.setenv("STRATUS_SAMPLE_CACHE_DIR", str(tmp_path / "mine"))
    assert Settings(home=tmp_path / "a").resolved_sample_cache_dir == tmp_path / "mine"  # type: ignore[call-arg]


def test_an_upgrade_of_a_package_they_are_built_from_changes_the_key(
    monkeypatch: pytest.MonkeyPatch, fresh_key: None
) -> None:
    before = cache_key()
    assert built_from()["torch"] == metadata.version("torch")
    real = metadata.version

    def upgraded(name: str) -> str:
        return "99.0" if name == "scikit-learn" else real(name)

    monkeypatch.setattr(metadata, "version", upgraded)
    built_from.cache_clear()
    assert built_from()["scikit-learn"] == "99.0"
    assert cache_key() != before
    monkeypatch.setattr(samples, "BUILD_FORMAT", samples.BUILD_FORMAT + 1)
    built_from.cache_clear()
    assert built_from()["build_format"] == str(samples.BUILD_FORMAT)


def test_the_manifest_records_what_the_key_was_made_from(sample_cache: Path) -> None:
    import json

    raw = json.loads((sample_cache / "manifest.json").read_text())
    if os.environ.get("STRATUS_SAMPLE_CACHE_DIR") is None:
        assert sample_cache.name == cache_key()
        assert raw["built_from"] == built_from()
    for entry in raw["models"]:
        assert entry["signature"]["inputs"] and entry["signature"]["outputs"]


def _snapshot(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def test_a_new_home_imports_the_samples_without_building(
    sample_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _snapshot(sample_cache)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a verified cache must not be rebuilt")

    monkeypatch.setattr(samples.subprocess, "run", no_build)
    home = tmp_path / "home"
    with TestClient(create_app(make_settings(home, sample_cache))) as raw:
        client = as_admin(raw)
        manifest = load_manifest(sample_cache)
        assert manifest is not None
        for sample in manifest.models:
            version = client.get(f"/api/v1/models/{sample.name}/versions/1").json()
            assert version["signature"] == sample.signature
            # The digest of what the home serves is the digest of the verified cache file.
            assert version["digest"] == f"sha256:{sample.sha256}"
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
        assert client.post("/v2/models/iris/infer", json=body).status_code == 200
    assert _snapshot(sample_cache) == before
    assert not (home / "cache").exists()


def test_a_cache_file_changed_after_verification_is_not_registered(sample_cache: Path, tmp_path: Path) -> None:
    copy = tmp_path / "cache"
    shutil.copytree(sample_cache, copy)
    manifest = load_manifest(copy)
    assert manifest is not None
    iris = next(m for m in manifest.models if m.name == "iris")
    data, _ = iris.read()
    assert hashlib.sha256(data).hexdigest() == iris.sha256
    iris.path.write_bytes(data[:-1])
    with pytest.raises(SampleBuildError, match=r"iris\.onnx changed"):
        iris.read()


def test_python_m_stratus_samples_reports_the_cache_it_filled(sample_cache: Path, tmp_path: Path) -> None:
    copy = tmp_path / "cache"
    shutil.copytree(sample_cache, copy)
    before = _snapshot(copy)
    env = {**os.environ, "STRATUS_SAMPLE_CACHE_DIR": str(copy)}
    result = subprocess.run(
        [sys.executable, "-m", "stratus.samples"], capture_output=True, text=True, env=env, timeout=scaled(60)
    )
    assert result.returncode == 0, result.stderr
    assert f"ready in {copy}" in result.stdout
    assert _snapshot(copy) == before
