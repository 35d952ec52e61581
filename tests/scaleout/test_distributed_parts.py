"""Data-parallel training's parts that need no cluster (#21): the checkpoint format, the shards, the placement
arithmetic behind "refused at submit" and "waits queued", and the request's checks. The cluster runs are in
test_distributed_training.py."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from stratus.errors import InvalidInput
from stratus.jobs.ray_executor import placement_problem
from stratus.training import checkpoint
from stratus.training.distributed_loop import epoch_generator, shard_rows
from stratus.training.params import TrainParams, TrainRequest, check_applicable, parse_train_request
from stratus.training.torch_trainers import _optimizer, _scheduler


def _trained(params: TrainParams, steps: int, state: checkpoint.TrainState | None = None) -> tuple[nn.Module, ...]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = _optimizer(model, params)
    scheduler = _scheduler(optimizer, params)
    if state is not None:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(32) % 3
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_checkpoint_is_plain_arrays_and_training_resumed_from_it_matches_training_straight_through(
    optimizer: str,
) -> None:
    params = TrainParams(optimizer=optimizer, schedule="step", step_size=2, lr=0.01)
    model, opt, sched = _trained(params, 3)
    state = checkpoint.TrainState(
        epoch=3,
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        best={k: v.clone() for k, v in model.state_dict().items()},
        best_score=0.5,
        stale=1,
    )
    packed = checkpoint.pack(state)
    with np.load(io.BytesIO(packed), allow_pickle=False) as npz:  # no object arrays: no pickle anywhere
        assert "meta" in npz.files and all(npz[name].dtype != object for name in npz.files)
    back = checkpoint.unpack(packed)
    assert (back.epoch, back.best_score, back.stale) == (3, 0.5, 1) and back.best is not None
    resumed, _, _ = _trained(params, 2, back)
    straight, _, _ = _trained(params, 5)
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert checkpoint.unpack(checkpoint.pack(checkpoint.TrainState(1, {}, {}))).best_score == -math.inf


def test_shards_are_disjoint_equal_and_the_same_for_the_same_seed() -> None:
    shards = [shard_rows(1347, 2, rank, seed=7) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 673
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert torch.equal(shard_rows(1347, 2, 0, seed=7), shards[0])
    assert not torch.equal(shard_rows(1347, 2, 0, seed=8), shards[0])
    # A resumed epoch draws what it would have drawn: the order depends only on (seed, epoch, rank).
    assert torch.equal(
        torch.randperm(50, generator=epoch_generator(7, 3, 1)), torch.randperm(50, generator=epoch_generator(7, 3, 1))
    )
    assert not torch.equal(
        torch.randperm(50, generator=epoch_generator(7, 3, 1)), torch.randperm(50, generator=epoch_generator(7, 3, 0))
    )


def test_placement_counts_each_node_s_room_beside_the_job_s_driver() -> None:
    two_nodes = [{"CPU": 1.0, "memory": 2.0 * 2**30}, {"CPU": 1.0, "memory": 2.0 * 2**30}]
    need = {"workers": 2, "cpus_per_worker": 0.25, "memory_mb_per_worker": 0}
    assert placement_problem(two_nodes, need, 0.5, now=False) is None
    never = placement_problem(two_nodes, {**need, "workers": 64, "cpus_per_worker": 1.0}, 0.5, now=False)
    assert never is not None and "can never place 64 worker(s) of 1 CPU" in never and "room for 1 worker(s)" in never
    # Memory counts too: 3 GB a worker fits once on neither 2 GB node.
    assert placement_problem(two_nodes, {**need, "memory_mb_per_worker": 3072}, 0.5, now=False) is not None
    busy = [{"CPU": 0.25, "memory": 2.0 * 2**30}, {"CPU": 0.25, "memory": 2.0 * 2**30}]
    waiting = placement_problem(busy, need, 0.5, now=True)
    assert waiting is not None and waiting.startswith("waiting for room") and "free now: 0.25 CPU, 0.25 CPU" in waiting


def test_a_request_for_workers_is_checked_at_submit() -> None:
    with pytest.raises(InvalidInput, match="workers"):
        parse_train_request({"dataset": "d", "model": "cnn", "workers": 0})
    dataset = {"name": "d", "task": "classification", "schema": {"features": [{"kind": "numeric"}]}}
    request = TrainRequest(dataset="d", model="random_forest", workers=2)
    with pytest.raises(InvalidInput, match=r"only the torch trainers can \(mlp, cnn, text_classifier\)"):
        check_applicable(request, dataset)
    check_applicable(TrainRequest(dataset="d", model="mlp", workers=2), dataset)
