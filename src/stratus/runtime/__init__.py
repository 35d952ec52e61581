"""ONNX Runtime execution: sessions, batching, the model pool. No HTTP here."""

from stratus.runtime.batching import Batcher, BatchPolicy, take_batch
from stratus.runtime.config import BatchingConfig, ServingConfig
from stratus.runtime.pool import LoadedModel, ModelPool, ServedModel
from stratus.runtime.session import ModelRunner, session_options
from stratus.types import Tensor

__all__ = [
    "BatchPolicy",
    "Batcher",
    "BatchingConfig",
    "LoadedModel",
    "ModelPool",
    "ModelRunner",
    "ServedModel",
    "ServingConfig",
    "Tensor",
    "session_options",
    "take_batch",
]
