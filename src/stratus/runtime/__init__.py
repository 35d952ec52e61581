"""ONNX Runtime execution: sessions, the model pool. No HTTP here."""

from stratus.runtime.pool import LoadedModel, ModelPool
from stratus.runtime.session import ModelRunner, Tensor, session_options

__all__ = ["LoadedModel", "ModelPool", "ModelRunner", "Tensor", "session_options"]
