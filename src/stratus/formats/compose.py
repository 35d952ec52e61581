"""Put preprocessing in front of a trained ONNX model, so the served model takes raw features.

``with_one_hot_front`` makes a graph whose inputs are the raw numeric columns (FP32) and the raw
categorical columns (strings); it one-hot encodes each categorical column with the categories fitted
on the training split (an unseen value becomes all zeros) and feeds the concatenation to the model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NUMERIC_INPUT = "numeric"
CATEGORICAL_INPUT = "categorical"
_FEATURES = "stratus_features"


def with_one_hot_front(model_bytes: bytes, n_numeric: int, categories: list[list[str]]) -> bytes:
    model = onnx.load_from_string(model_bytes)
    model_input = model.graph.input[0].name
    opsets = {o.domain: o.version for o in model.opset_import}
    nodes, inputs, initializers, parts = [], [], [], []
    if n_numeric:
        inputs.append(helper.make_tensor_value_info(NUMERIC_INPUT, TensorProto.FLOAT, ["batch", n_numeric]))
        parts.append(NUMERIC_INPUT)
    inputs.append(helper.make_tensor_value_info(CATEGORICAL_INPUT, TensorProto.STRING, ["batch", len(categories)]))
    for j, cats in enumerate(categories):
        index, column, encoded, flat, shape = (f"stratus_cat_{j}_{s}" for s in ("index", "col", "oh", "flat", "shape"))
        initializers.append(numpy_helper.from_array(np.array([j], dtype=np.int64), index))
        initializers.append(numpy_helper.from_array(np.array([-1, len(cats)], dtype=np.int64), shape))
        nodes.append(helper.make_node("Gather", [CATEGORICAL_INPUT, index], [column], axis=1))
        nodes.append(
            helper.make_node("OneHotEncoder", [column], [encoded], domain="ai.onnx.ml", cats_strings=cats, zeros=1)
        )
        nodes.append(helper.make_node("Reshape", [encoded, shape], [flat]))
        parts.append(flat)
    nodes.append(helper.make_node("Concat", parts, [_FEATURES], axis=1))
    width = n_numeric + sum(len(c) for c in categories)
    front = helper.make_model(
        helper.make_graph(
            nodes,
            "one_hot_front",
            inputs,
            [helper.make_tensor_value_info(_FEATURES, TensorProto.FLOAT, ["batch", width])],
            initializers,
        ),
        opset_imports=[helper.make_opsetid("", opsets.get("", 17)), helper.make_opsetid("ai.onnx.ml", 1)],
    )
    front.ir_version = model.ir_version
    # Both graphs must import the same opsets to be merged.
    if "ai.onnx.ml" not in opsets:
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))
    merged = onnx.compose.merge_models(front, model, io_map=[(_FEATURES, model_input)])
    onnx.checker.check_model(merged)
    data: bytes = merged.SerializeToString()
    return data
