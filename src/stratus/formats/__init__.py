"""Model formats: the ONNX gate every upload passes, and conversion to ONNX."""

from stratus.formats.onnx_gate import OnnxInfo, inspect_onnx

__all__ = ["OnnxInfo", "inspect_onnx"]
