"""What each Ray Train worker of a data-parallel job runs (``train --workers N``; the driver is
training/distributed.py). Ray Train started this process group (gloo, CPU) before calling ``train_loop``.

- **Data.** The network and the training tensors arrive as one object in Ray's object store, sealed under the
  run's key (it spills to disk under memory pressure); each worker unseals it in memory and keeps its shard:
  a contiguous block of one seeded permutation of the rows, all shards the same length (up to N-1 rows are left
  out), so every worker takes the same number of steps and DDP's all-reduces pair up.
- **Batch and learning rate.** The global batch stays ``batch_size``: each worker takes ``batch_size // N`` rows
  a step (at least 1) and DDP averages the gradients, so the learning rate is the one-worker job's, unchanged.
- **Order.** Each epoch's shuffle comes from a generator seeded with (seed, epoch, rank): the same seed and N
  give the same run, and a run resumed at epoch k draws what it would have drawn.
- **Checkpoints.** After every epoch, rank 0 packs the state (training/checkpoint.py), sends it to the driver
  (which prints it for the server to keep in the artifact store) and reports it to Ray Train sealed under the
  run's key (Ray's storage path on the node's disk holds only ciphertext). When Ray Train restarts the workers
  after one failed (FailureConfig), ``ray.train.get_checkpoint()`` is the last one; a new attempt of the job
  (a server restart) gets the platform's copy in its config instead.

Imports only what a Ray worker has: torch, numpy, ray and stratus leaves.
"""

from __future__ import annotations

import base64
import math
import os
import pickle  # only for the run's own payload, authenticated by AES-GCM under the run's key
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stratus.raycluster import seal, unseal
from stratus.training import checkpoint
from stratus.training.params import TrainParams
from stratus.training.torch_trainers import _optimizer, _scheduler, augment

STATE_FILE = "state.sealed"


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 1_009 + rank) % (2**63 - 1))


def shard_rows(rows: int, world: int, rank: int, seed: int) -> torch.Tensor:
    per = rows // world
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    return order[rank * per : (rank + 1) * per]


def train_loop(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    events = config["events"]
    torch.set_num_threads(int(config.get("threads", 1)))
    events.put(
        {
            "event": "worker",
            "rank": rank,
            "workers": world,
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }
    )
    key: bytes = config["key"]
    payload = pickle.loads(unseal(key, ray.get(config["payload"])))  # noqa: S301 - sealed by this run
    params = TrainParams.model_validate(config["params"])
    model: nn.Module = payload["model"]
    classify: bool = payload["classify"]
    inputs = [torch.from_numpy(a) for a in payload["inputs"]]
    labels = torch.from_numpy(payload["labels"])
    shard = shard_rows(len(labels), world, rank, params.seed)
    per_worker_batch = max(1, params.batch_size // world)
    loss_fn: nn.Module = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    optimizer = _optimizer(model, params)
    scheduler = _scheduler(optimizer, params)
    start, best_state, best_score, stale = 1, None, -math.inf, 0
    restored = _restore(config, key)
    if restored is not None:
        state, source = restored
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        if scheduler is not None and state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
        start, best_state, best_score, stale = state.epoch + 1, state.best, state.best_score, state.stale
        if rank == 0:
            events.put({"event": "resumed", "from_epoch": state.epoch, "next_epoch": start, "source": source})
    ddp = DistributedDataParallel(model)
    started = time.monotonic()
    for epoch in range(start, params.epochs + 1):
        ddp.train()  # type: ignore[no-untyped-call]  # DDP's train() is unannotated
        generator = epoch_generator(params.seed, epoch, rank)
        order = shard[torch.randperm(len(shard), generator=generator)]
        total, began = 0.0, time.monotonic()
        for first in range(0, len(order), per_worker_batch):
            index = order[first : first + per_worker_batch]
            batch = [t[index] for t in inputs]
            if payload["augment"]:
                batch[0] = augment(batch[0], payload["augment"], generator)
            out = ddp(*batch)
            loss = loss_fn(out[0] if classify else out, labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        sums = torch.tensor([total, float(len(order))], dtype=torch.float64)
        dist.all_reduce(sums)  # the epoch's loss over every worker's rows
        train_s = time.monotonic() - began
        event: dict[str, Any] = {
            "event": "epoch",
            "epoch": epoch,
            "epochs": params.epochs,
            "loss": float(sums[0] / sums[1]),
            "workers": world,
            "samples_per_s": float(sums[1]) / max(train_s, 1e-9),
        }
        if payload["val_inputs"] is not None:
            # Every worker scores the whole (small) validation split on identical weights: the same early-stopping
            # decision everywhere, with no extra exchange.
            score = _score(model, payload["val_inputs"], payload["val_labels"], classify)
            event["val_metric"], event["val_metric_name"] = score, "accuracy" if classify else "neg_mse"
            if score > best_score:
                best_score, stale = score, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
        if scheduler is not None:
            if params.schedule == "plateau":
                scheduler.step(-event.get("val_metric", -event["loss"]))
            else:
                scheduler.step()
        event["eta_s"] = (time.monotonic() - started) / (epoch - start + 1) * (params.epochs - epoch)
        event["lr"] = optimizer.param_groups[0]["lr"]
        stop = params.patience is not None and stale >= params.patience
        state = checkpoint.TrainState(
            epoch=epoch,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict() if scheduler is not None else None,
            best=best_state,
            best_score=best_score,
            stale=stale,
        )
        _report(rank, state, event, key, events)
        if stop:
            if rank == 0:
                events.put(
                    {"event": "log", "message": f"early stopping after epoch {epoch}: no gain for {stale} epochs"}
                )
            break
    if best_state is not None and params.patience is not None:
        model.load_state_dict(best_state)
    if rank == 0:
        final = checkpoint.pack(checkpoint.TrainState(epoch=params.epochs, model=model.state_dict(), optimizer={}))
        events.put({"event": "final", "state": base64.b64encode(final).decode()})


def _restore(config: dict[str, Any], key: bytes) -> tuple[checkpoint.TrainState, str] | None:
    """Ray Train's last checkpoint of this run (a worker failed and the group restarted), else the platform's copy
    a new attempt of the job was given (the server restarted), else nothing."""
    import ray.train

    found = ray.train.get_checkpoint()
    if found is not None:
        try:
            with found.as_directory() as folder:
                sealed = (Path(folder) / STATE_FILE).read_bytes()
            return checkpoint.unpack(unseal(key, sealed)), "ray-train"
        except OSError:  # written on another machine's disk (no shared storage path): the attempt's start point
            pass
    if config.get("resume") is not None:
        return checkpoint.unpack(unseal(key, config["resume"])), "artifact-store"
    return None


def _report(rank: int, state: checkpoint.TrainState, event: dict[str, Any], key: bytes, events: Any) -> None:
    """Every worker reports the epoch to Ray Train (it waits for all of them); rank 0 with the checkpoint, which it
    also sends to the driver for the platform's artifact store."""
    import ray.train

    if rank != 0:
        ray.train.report({"epoch": state.epoch})
        return
    began = time.monotonic()
    packed = checkpoint.pack(state)
    with tempfile.TemporaryDirectory(prefix="stratus-ckpt-") as folder:
        (Path(folder) / STATE_FILE).write_bytes(seal(packed, key)[1])
        ray.train.report({"epoch": state.epoch}, checkpoint=ray.train.Checkpoint.from_directory(folder))
    event["checkpoint_s"] = time.monotonic() - began
    events.put(event)
    events.put({"event": "checkpoint", "epoch": state.epoch, "state": base64.b64encode(packed).decode()})


def _score(model: nn.Module, inputs: list[Any], labels: Any, classify: bool) -> float:
    model.eval()
    with torch.no_grad():
        out = model(*[torch.from_numpy(a) for a in inputs])
    if classify:
        return float((out[1].numpy() == labels).mean())
    return -float(((out.numpy() - labels) ** 2).mean())


__all__ = ["STATE_FILE", "epoch_generator", "shard_rows", "train_loop"]
