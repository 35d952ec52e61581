"""Triton's model configuration extension (``GET /v2/models/{name}/config``), built from what Stratus knows.

Stratus has no config.pbtxt: the answer is derived from the version's signature and its serving config
(runtime/config.py), in the JSON form Triton's HTTP server gives, so ``tritonclient``'s ``get_model_config``
and tools that read it (perf_analyzer, model analyzers) work unchanged. As in Triton, when the model batches
(``max_batch_size`` > 0) the first, dynamic dimension is left out of each tensor's ``dims``.
"""

from __future__ import annotations

from typing import Any

from stratus.registry import VersionInfo
from stratus.runtime.config import ServingConfig
from stratus.types import TensorSpec

PLATFORM_NAME = "onnxruntime_onnx"
#: Open Inference Protocol datatypes as Triton's config names them (BYTES is Triton's TYPE_STRING).
TRITON_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}


def _tensor(spec: TensorSpec, batched: bool, output: bool) -> dict[str, Any]:
    dims = list(spec.shape[1:] if batched else spec.shape)
    entry: dict[str, Any] = {
        "name": spec.name,
        "data_type": TRITON_TYPES.get(spec.datatype, "TYPE_INVALID"),
        "dims": dims or [1],
        "is_shape_tensor": False,
    }
    if not dims:
        # Triton needs at least one dim; a tensor that is only its batch dimension is declared [1] reshaped to [].
        entry["reshape"] = {"shape": []}
    if output:
        entry["label_filename"] = ""
    else:
        entry.update({"format": "FORMAT_NONE", "allow_ragged_batch": False, "optional": False})
    return entry


def triton_config(name: str, version: VersionInfo, versions: list[int]) -> dict[str, Any]:
    """The Triton-style config of ``version``, served under ``name`` (a model or an endpoint)."""
    serving = ServingConfig.parse(version.config)
    batched = serving.batching_enabled(version.signature)
    batching = serving.batching
    config: dict[str, Any] = {
        "name": name,
        "platform": PLATFORM_NAME,
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": versions}},
        "max_batch_size": batching.max_batch_size if batched else 0,
        "input": [_tensor(spec, batched, output=False) for spec in version.signature.inputs],
        "output": [_tensor(spec, batched, output=True) for spec in version.signature.outputs],
        "instance_group": [
            {"name": name, "kind": "KIND_CPU", "count": serving.instances, "gpus": [], "passive": False}
        ],
        "default_model_filename": "model.onnx",
        "parameters": {},
    }
    if batched:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": round(batching.max_queue_delay_ms * 1000),
            "preserve_ordering": False,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(batching.timeout_ms * 1000),
                "allow_timeout_override": True,
                "max_queue_size": batching.max_queue_size,
            },
        }
    return config


__all__ = ["PLATFORM_NAME", "TRITON_TYPES", "triton_config"]
