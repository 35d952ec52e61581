"""Model formats: the ONNX gate every upload passes, and verified conversion to ONNX.

Importing this package loads numpy, onnx and ONNX Runtime only; torch and scikit-learn are imported
inside the conversion functions, so the server never loads them.
"""

from stratus.formats.convert import ConvertedModel, bert_encoder_to_onnx, sklearn_to_onnx, torch_to_onnx
from stratus.formats.onnx_gate import OnnxInfo, inspect_onnx
from stratus.formats.sniff import sniff_unsafe
from stratus.formats.verify import compare_outputs, verify_outputs

__all__ = [
    "ConvertedModel",
    "OnnxInfo",
    "bert_encoder_to_onnx",
    "compare_outputs",
    "inspect_onnx",
    "sklearn_to_onnx",
    "sniff_unsafe",
    "torch_to_onnx",
    "verify_outputs",
]
