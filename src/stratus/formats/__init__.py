"""Model formats: the ONNX gate every upload passes, and verified conversion to ONNX."""

from stratus.formats.convert import ConvertedModel, compare_outputs, sklearn_to_onnx, torch_to_onnx
from stratus.formats.onnx_gate import OnnxInfo, inspect_onnx

__all__ = ["ConvertedModel", "OnnxInfo", "compare_outputs", "inspect_onnx", "sklearn_to_onnx", "torch_to_onnx"]
