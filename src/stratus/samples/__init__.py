"""The bundled sample models, built at most once per machine (in a child process) and cached.

The cache is shared by every home of the user (see samples/cache.py); a home registers the samples from it,
sealing them into its own artifact store like any upload.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stratus.errors import StratusError

MANIFEST = "manifest.json"
#: Bump when what the builder produces changes, so caches built by an older Stratus are rebuilt.
BUILD_FORMAT = 4


class SampleBuildError(StratusError):
    kind = "sample_build_failed"


@dataclass(frozen=True)
class SampleModel:
    name: str
    path: Path
    sha256: str
    description: str
    task: str
    tags: dict[str, Any]
    metrics: dict[str, Any]
    params: dict[str, Any]
    dataset: str | None
    source: str
    format: str = "onnx"
    config: dict[str, Any] = field(default_factory=dict)
    #: Further files of the version (a pipeline's encoder and tokenizer), by the name the spec uses.
    files: dict[str, Path] = field(default_factory=dict)
    #: The version's signature, read by the upload gate at build time (Signature.to_dict()).
    signature: dict[str, Any] = field(default_factory=dict)
    file_sha256: dict[str, str] = field(default_factory=dict)

    def read(self) -> tuple[bytes, dict[str, bytes]]:
        """The model's bytes and its files' bytes, checked against the manifest: the bytes registered are the
        bytes verified, even if the cache changed since load_manifest looked."""
        data = self.path.read_bytes()
        files = {name: path.read_bytes() for name, path in self.files.items()}
        expected = {self.path.name: self.sha256, **{self.files[n].name: d for n, d in self.file_sha256.items()}}
        actual = {self.path.name: data, **{self.files[n].name: c for n, c in files.items()}}
        for file_name, content in actual.items():
            if hashlib.sha256(content).hexdigest() != expected.get(file_name):
                raise SampleBuildError(f"sample file {file_name} changed since it was verified; start again")
        return data, files


@dataclass(frozen=True)
class SampleManifest:
    stratus_version: str
    models: tuple[SampleModel, ...]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        # In chunks: the MiniLM encoder is ~90 MB and this runs on every server start.
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(cache_dir: Path) -> SampleManifest | None:
    """The cached manifest, if present and every file still has its recorded checksum."""
    try:
        raw = json.loads((cache_dir / MANIFEST).read_text())
        if raw.get("format") != BUILD_FORMAT:
            return None
        models = []
        for entry in raw["models"]:
            path = cache_dir / Path(entry["file"]).name
            if _sha256(path) != entry["sha256"]:
                return None
            files = {name: cache_dir / Path(file).name for name, file in entry.get("files", {}).items()}
            if any(_sha256(files[name]) != digest for name, digest in entry.get("file_sha256", {}).items()):
                return None
            models.append(
                SampleModel(
                    name=entry["name"],
                    path=path,
                    sha256=entry["sha256"],
                    description=entry["description"],
                    task=entry["task"],
                    tags=entry["tags"],
                    metrics=entry["metrics"],
                    params=entry["params"],
                    dataset=entry["dataset"],
                    source=entry["source"],
                    format=entry.get("format", "onnx"),
                    config=entry.get("config", {}),
                    files=files,
                    signature=entry["signature"],
                    file_sha256=dict(entry.get("file_sha256", {})),
                )
            )
        return SampleManifest(stratus_version=raw["stratus_version"], models=tuple(models))
    except (OSError, KeyError, ValueError, TypeError):
        return None


def ensure_samples(cache_dir: Path, *, timeout_s: float = 900) -> SampleManifest:
    """Return the samples in ``cache_dir``, building them first in a child process if needed.

    Under an exclusive file lock: homes and test workers starting together share one build."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(cache_dir)
    if manifest is not None:
        return manifest
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another server sharing the cache may be building right now
        manifest = load_manifest(cache_dir)
        if manifest is not None:
            return manifest
        try:
            result = subprocess.run(
                [sys.executable, "-m", "stratus.samples.build", "--out", str(cache_dir)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SampleBuildError(f"building the sample models took longer than {timeout_s:.0f}s") from None
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise SampleBuildError(f"building the sample models failed:\n{tail}")
    manifest = load_manifest(cache_dir)
    if manifest is None:
        raise SampleBuildError("the sample build finished but its manifest is missing or does not verify")
    return manifest


__all__ = ["SampleBuildError", "SampleManifest", "SampleModel", "ensure_samples", "load_manifest"]
