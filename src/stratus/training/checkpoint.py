"""A training checkpoint: everything an epoch loop needs to go on from the end of an epoch, as one NPZ of plain
arrays (never a pickle: the server stores it in the artifact store and a later attempt of the job reads it back).

Arrays ``model/<name>`` (the network's state), ``best/<name>`` (the best weights so far, for early stopping),
``optim/<i>/<name>`` (the optimizer's per-parameter state: Adam's moments and step, SGD's momentum), and ``meta``:
a JSON document stored as bytes (the epoch just finished, the optimizer's param groups, the schedule's state, the
early-stopping counters). Shuffling needs no generator state: each epoch's order is drawn from a generator seeded
with (seed, epoch, rank), so a resumed epoch draws exactly what it would have drawn.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class TrainState:
    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None = None
    best: dict[str, torch.Tensor] | None = None
    best_score: float = -math.inf
    stale: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def pack(state: TrainState) -> bytes:
    arrays: dict[str, Any] = {f"model/{k}": v.detach().cpu().numpy() for k, v in state.model.items()}
    if state.best is not None:
        arrays.update({f"best/{k}": v.detach().cpu().numpy() for k, v in state.best.items()})
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state.optimizer.get("state", {}).items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                arrays[f"optim/{index}/{name}"] = value.detach().cpu().numpy()
            else:
                scalars.setdefault(str(index), {})[name] = value
    meta = {
        "epoch": state.epoch,
        "param_groups": state.optimizer.get("param_groups", []),
        "optim_scalars": scalars,
        "scheduler": state.scheduler,
        "best_score": state.best_score,
        "stale": state.stale,
        "extra": state.extra,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack(data: bytes) -> TrainState:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    model: dict[str, torch.Tensor] = {}
    best: dict[str, torch.Tensor] = {}
    optim: dict[int, dict[str, Any]] = {}
    for name, value in arrays.items():
        kind, _, rest = name.partition("/")
        tensor = torch.from_numpy(np.array(value))
        if kind == "model":
            model[rest] = tensor
        elif kind == "best":
            best[rest] = tensor
        elif kind == "optim":
            index, _, key = rest.partition("/")
            optim.setdefault(int(index), {})[key] = tensor
    for index, values in meta["optim_scalars"].items():
        optim.setdefault(int(index), {}).update(values)
    return TrainState(
        epoch=int(meta["epoch"]),
        model=model,
        optimizer={"state": optim, "param_groups": meta["param_groups"]},
        scheduler=meta["scheduler"],
        best=best or None,
        best_score=float(meta["best_score"]),
        stale=int(meta["stale"]),
        extra=meta.get("extra") or {},
    )


__all__ = ["TrainState", "pack", "unpack"]
