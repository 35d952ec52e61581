"""The served model: a verified bundle loaded through the platform's own runtime (stratus.runtime: the same
ONNX Runtime sessions, pipelines and batcher the platform serves with), and the holder that switches bundles
between requests."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from stratus.runtime import ModelPool, ModelRunner, ServedModel, ServingConfig
from stratus.runtime.session import Runner
from stratus.types import Signature
from stratus_edge.bundle import Verified


@dataclass(frozen=True)
class Loaded:
    manifest: dict[str, Any]
    signature: Signature
    served: ServedModel

    @property
    def name(self) -> str:
        return str(self.manifest["model"])

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def etag(self) -> str:
        return str(self.manifest["etag"])

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


def load(verified: Verified, executor: Executor, threads: int) -> Loaded:
    """Load ``verified`` into ONNX Runtime and warm it up (so the first request is not the slow one)."""
    manifest, files = verified.manifest, verified.files
    signature = Signature.from_dict(manifest["signature"])
    artifact = files[manifest["artifact"]]
    refs: dict[str, str] = manifest.get("refs") or {}

    def factory(per_instance: int) -> Runner:
        if manifest["model_format"] == "pipeline":
            # Imported here: its step models cost a plain ONNX model's cold start a tenth of a second.
            from stratus.runtime.pipeline import ModelRef, PipelineRunner, PipelineSpec

            def fetch_ref(ref: ModelRef) -> bytes:
                return files[refs[f"{ref.name}:{ref.version}"]]

            return PipelineRunner(PipelineSpec.parse(artifact), files.__getitem__, fetch_ref, threads=per_instance)
        return ModelRunner(artifact, signature, threads=per_instance)

    # One pool per bundle: a switch drops the old bundle's sessions as its last request finishes.
    pool = ModelPool(threads=threads, executor=executor)
    served = pool.load(1, manifest["model"], int(manifest["version"]), factory, ServingConfig.parse(manifest["config"]))
    return Loaded(manifest, signature, served)


def settle() -> None:
    """Give back what loading left behind (the plain files, ONNX Runtime's parse of them): a device's memory
    is small, and glibc keeps freed memory in its heap otherwise."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` glibc heaps: by default each of the inference threads may get its own heap (up to 8 per
    core), each holding memory freed by the batches it ran."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX


class Holder:
    """The bundle being served. A request takes the reference once; a switch replaces it for the next request,
    so requests in flight finish on the bundle they started on and none fails during a switch."""

    def __init__(self) -> None:
        self.current: Loaded | None = None
        self._lock = threading.Lock()
        self.switches = 0

    def swap(self, loaded: Loaded) -> None:
        with self._lock:
            self.current = loaded
            self.switches += 1
        settle()  # the previous bundle's sessions go with their last request; what loading freed goes now
