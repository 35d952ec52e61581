from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from onnx_factory import affine_model, two_input_model
from stratus.errors import InvalidInput
from stratus.formats import inspect_onnx
from stratus.runtime import ModelPool, ModelRunner, ServingConfig


def runner_for(data: bytes) -> ModelRunner:
    return ModelRunner(data, inspect_onnx(data).signature, threads=1)


def test_runs_and_selects_outputs() -> None:
    runner = runner_for(two_input_model())
    out = runner.run(
        {
            "a": np.array([[1, 2]], dtype=np.float32),
            "b": np.array([[3, 4]], dtype=np.int64),
            "text": np.array([b"bytes in", "str in"], dtype=object)[:1],
        }
    )
    assert out["sum"].tolist() == [[4.0, 6.0]]
    assert out["text_out"].tolist() == ["bytes in"]
    only = runner.run(
        {
            "a": np.zeros((1, 2), np.float32),
            "b": np.zeros((1, 2), np.int64),
            "text": np.array(["x"], dtype=object),
        },
        ["sum"],
    )
    assert list(only) == ["sum"]


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ({}, "missing input"),
        ({"x": np.zeros((1, 3), np.float64)}, "FP64"),
        ({"x": np.zeros((1, 4), np.float32)}, "shape"),
        ({"x": np.zeros((3,), np.float32)}, "rank"),
        ({"x": np.zeros((1, 3), np.float32), "extra": np.zeros(1)}, "unknown input"),
    ],
)
def test_checks_inputs(inputs: dict[str, np.ndarray], needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        runner_for(affine_model()).run(inputs)


def test_pool_loads_once_and_unloads() -> None:
    pool = ModelPool(threads=1, executor=ThreadPoolExecutor(1))
    calls = []
    data = affine_model()
    sig = inspect_onnx(data).signature

    def loader(threads: int) -> ModelRunner:
        calls.append(threads)
        return ModelRunner(data, sig, threads=threads)

    first = pool.load(1, "affine", 1, loader, ServingConfig())
    assert pool.load(1, "affine", 1, loader, ServingConfig()) is first
    assert calls == [1]
    assert [m.name for m in pool.loaded()] == ["affine"]
    assert pool.unload(1)
    assert pool.get(1) is None and not pool.unload(1)


def test_pool_evicts_least_recently_used_idle_model_over_budget() -> None:
    data = affine_model()
    sig = inspect_onnx(data).signature
    pool = ModelPool(threads=1, executor=ThreadPoolExecutor(1), max_loaded_bytes=int(len(data) * 2.5))
    for key in (1, 2, 3):
        pool.load(key, f"m{key}", 1, lambda threads: ModelRunner(data, sig, threads=threads), ServingConfig())
    assert sorted(m.key for m in pool.loaded()) == [2, 3]
    assert pool.evictions == 1
    pool.get(2).last_used += 1000  # type: ignore[union-attr]  # 2 is now the most recent
    pool.load(4, "m4", 1, lambda threads: ModelRunner(data, sig, threads=threads), ServingConfig())
    assert sorted(m.key for m in pool.loaded()) == [2, 4]


def test_serving_config_defaults_and_validation() -> None:
    from stratus.errors import InvalidInput

    sig = inspect_onnx(affine_model()).signature
    assert ServingConfig.parse({}).batching_enabled(sig)
    assert not ServingConfig.parse({"batching": {"enabled": False}}).batching_enabled(sig)
    with pytest.raises(InvalidInput, match="max_batch_size"):
        ServingConfig.parse({"batching": {"max_batch_size": 0}})
    with pytest.raises(InvalidInput, match="invalid serving config"):
        ServingConfig.parse({"bogus": 1})


def test_instances_share_the_threads() -> None:
    data = affine_model()
    sig = inspect_onnx(data).signature
    threads: list[int] = []

    def factory(n: int) -> ModelRunner:
        threads.append(n)
        return ModelRunner(data, sig, threads=n)

    pool = ModelPool(threads=4, executor=ThreadPoolExecutor(1))
    shared = pool.load(1, "m", 1, factory, ServingConfig(instances=2))
    assert threads == [2] and len(shared.runners) == 1  # two batches in flight on one session
    assert shared.batcher is not None and shared.info().instances == 2
    separate = pool.load(2, "m", 2, factory, ServingConfig(instances=2, separate_sessions=True))
    assert threads == [2, 2, 2] and len(separate.runners) == 2
