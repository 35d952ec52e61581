"""Tiny hand-built ONNX models for tests that need a model but not a trained one."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def affine_model(features: int = 3, scale: float = 2.0, offset: float = 1.0) -> bytes:
    """y = x * scale + offset on FP32 [-1, features]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features])
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array(offset, dtype=np.float32), "offset"),
    ]
    graph = helper.make_graph(nodes, "affine", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="stratus-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def two_input_model() -> bytes:
    """sum = a + b (FP32 [-1, 2]); count = cast(b) as INT64 identity; strings pass through."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 2])
    s = helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])
    total = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 2])
    same = helper.make_tensor_value_info("text_out", TensorProto.STRING, ["batch"])
    nodes = [
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "b_float"], ["sum"]),
        helper.make_node("Identity", ["text"], ["text_out"]),
    ]
    graph = helper.make_graph(nodes, "two", [a, b, s], [total, same])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="stratus-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


EMBEDDING_TABLE = np.arange(20, dtype=np.float32).reshape(5, 4) / 10.0


def embedding_lookup_model() -> bytes:
    """token_embeddings[b, s, :] = EMBEDDING_TABLE[input_ids[b, s]]: a stand-in for a text encoder."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", 4])
    table = numpy_helper.from_array(EMBEDDING_TABLE, "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"], axis=0)],
        "lookup",
        [ids],
        [out],
        [table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="stratus-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def word_tokenizer_json() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3, "stratus": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str().encode()
