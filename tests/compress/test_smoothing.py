"""Activation smoothing before dynamic int8: same function, smaller activation peaks, better int8."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from stratus.compress.onnx_methods import quantize_dynamic
from stratus.compress.smoothing import smooth

Array = np.ndarray[Any, Any]
WIDTH = 64


def two_layer_model(tied: bool = False) -> onnx.ModelProto:
    """x -> MatMul(w1) -> Relu -> MatMul(w2); with ``tied`` the second MatMul reuses w1 (square)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.normal(size=(WIDTH, WIDTH)) / 8).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.normal(size=(WIDTH, WIDTH)) / 8).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w1" if tied else "w2"], ["y"], name="second"),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
        [w1] if tied else [w1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def inputs_with_outliers(rows: int, seed: int) -> Array:
    """Most channels near 1, three channels 100 times larger: the shape of a transformer's activations."""
    x = np.random.default_rng(seed).normal(size=(rows, WIDTH)).astype(np.float32)
    x[:, [3, 17, 40]] *= 100
    return x


def run(model: onnx.ModelProto | bytes, x: Array) -> Array:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    result: Array = session.run(["y"], {"x": x})[0]
    return result


def test_smoothing_keeps_the_function_and_flattens_the_peaks() -> None:
    model = two_layer_model()
    calibration = [{"x": inputs_with_outliers(32, seed)} for seed in range(4)]
    result = smooth(model, calibration, alpha=0.8, exclude=set())
    smoothed, ratios = result.model, result.peak_to_rms
    x = inputs_with_outliers(16, seed=99)
    np.testing.assert_allclose(run(smoothed, x), run(model, x), rtol=1e-4, atol=1e-3)
    assert set(ratios) == {"first", "second"} and result.smoothed == ["first", "second"] and result.fp32 == []
    # The outlier channels dominate the raw input (13x its RMS); smoothed, the peak is half as far out.
    raw_peak_to_rms = np.abs(calibration[0]["x"]).max() / np.sqrt((calibration[0]["x"] ** 2).mean())
    assert ratios["first"] < raw_peak_to_rms / 2
    assert sum(node.op_type == "Mul" for node in smoothed.graph.node) == 2


def test_a_tied_weight_is_not_smoothed_twice() -> None:
    model = two_layer_model(tied=True)
    result = smooth(model, [{"x": inputs_with_outliers(32, 0)}], alpha=0.8, exclude=set())
    assert result.peak_to_rms == {} and result.smoothed == []
    x = inputs_with_outliers(8, seed=5)
    np.testing.assert_allclose(run(result.model, x), run(model, x), rtol=1e-6)


def test_a_matmul_that_stays_spiky_is_left_alone_for_fp32() -> None:
    model = two_layer_model()
    calibration = [{"x": inputs_with_outliers(32, 0)}]
    ratios = smooth(model, calibration, alpha=0.8, exclude=set()).peak_to_rms
    limit = (ratios["first"] + ratios["second"]) / 2
    spiky = "first" if ratios["first"] > limit else "second"
    result = smooth(model, calibration, alpha=0.8, exclude=set(), fp32_above=limit)
    assert result.fp32 == [spiky] and result.smoothed == [{"first": "second", "second": "first"}[spiky]]
    assert sum(node.op_type == "Mul" for node in result.model.graph.node) == 1  # no Mul for the fp32 one
    untouched = {i.name: i for i in model.graph.initializer}
    weight = next(n.input[1] for n in result.model.graph.node if n.name == spiky)
    kept = next(i for i in result.model.graph.initializer if i.name == weight)
    np.testing.assert_array_equal(numpy_helper.to_array(kept), numpy_helper.to_array(untouched[weight]))


def test_smoothing_makes_dynamic_int8_closer_to_fp32(tmp_path: Path) -> None:
    model = two_layer_model()
    x = inputs_with_outliers(64, seed=7)
    exact = run(model, x)

    def error(params: dict[str, Any], calibrate: bool) -> tuple[float, dict[str, Any]]:
        feeds = (lambda: iter([{"x": inputs_with_outliers(32, s)} for s in range(4)])) if calibrate else None
        quantized, recipe = quantize_dynamic(model.SerializeToString(), params, tmp_path, feeds)
        approx = run(quantized, x)
        return float(np.abs(approx - exact).mean() / np.abs(exact).mean()), recipe

    # Not a transformer, so smoothing is off unless asked for.
    plain, plain_recipe = error({"per_channel": True}, calibrate=True)
    assert plain_recipe["smooth_alpha"] == 0.0
    smoothed, recipe = error({"per_channel": True, "smooth_alpha": 0.8, "outlier_ratio": 1000.0}, calibrate=True)
    assert recipe["smooth_alpha"] == 0.8 and recipe["kept_fp32_for_outliers"] == []
    assert smoothed < plain / 2, (smoothed, plain)
    # Without calibration data there is nothing to smooth with, and the recipe says so.
    _, uncalibrated = error({"per_channel": True, "smooth_alpha": 0.8}, calibrate=False)
    assert uncalibrated["smooth_alpha"] == 0.0 and "no calibration data" in uncalibrated["notes"][0]
    # A MatMul whose smoothed input still peaks above outlier_ratio stays fp32.
    _, strict = error({"per_channel": True, "smooth_alpha": 0.8, "outlier_ratio": 1.5}, calibrate=True)
    assert strict["kept_fp32_for_outliers"] == ["first", "second"] and strict["excluded_nodes"] == 2
