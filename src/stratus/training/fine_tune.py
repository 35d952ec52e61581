"""The ``fine_tune`` trainer (training child only): the bundled MiniLM encoder with a classification head on its
mean-pooled token states, both trained on the dataset's one free-text column. Served as a pipeline
``tokenize -> encoder (ONNX) -> mean_pool -> head (ONNX)``, so clients send raw text, as to ``text_classifier``.

Defaults differ from training from scratch where the shared ones would wreck a pretrained encoder: unless the
request sets them, ``lr`` is 1e-4 (not 1e-3) and ``epochs`` 3 (not 20). The head is first fitted on the frozen
encoder (a linear probe), then both train together at ``lr``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stratus.training import minilm
from stratus.training.params import TrainParams, TrainRequest
from stratus.types import Array

DEFAULT_LR = 1e-4
DEFAULT_EPOCHS = 3
#: Full-batch Adam steps of the linear probe (the head on frozen features) before the encoder trains.
PROBE_STEPS = 300
FILES = ("tokenizer.json", "encoder.onnx", "head.onnx")
Report = Callable[[dict[str, Any]], None]


def settings_of(params: TrainParams) -> tuple[float, int]:
    """(learning rate, epochs): the request's when it set them, else the fine-tuning defaults."""
    lr = params.lr if "lr" in params.model_fields_set else DEFAULT_LR
    epochs = params.epochs if "epochs" in params.model_fields_set else DEFAULT_EPOCHS
    return lr, epochs


def pipeline_spec(classes: int, max_length: int) -> bytes:
    spec = {
        "kind": "pipeline",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "logits", "datatype": "FP32", "shape": [-1, classes]},
        ],
        "steps": [
            minilm.tokenize_step(max_length),
            minilm.encoder_step(),
            {"op": "mean_pool", "input": "token_embeddings", "mask": "attention_mask", "output": "pooled"},
            {
                "op": "onnx",
                "file": "head.onnx",
                "inputs": {"pooled": "pooled"},
                "outputs": {"logits": "logits", "label": "label"},
            },
        ],
    }
    return json.dumps(spec).encode()


def linear_probe(encoder: Any, tok: Any, texts: list[str], labels: Any, classes: int, report: Report) -> Any:
    """The head fitted first on the frozen encoder's pooled states (a linear probe). Fine-tuning from a random head
    lets its large early gradients distort the pretrained features (LP-FT, Kumar et al., 2022); measured here on
    the docstring task, a random head at 20x the encoder's rate ended below the bag-of-embeddings classifier."""
    import torch
    from torch import nn

    features = torch.from_numpy(minilm.embed(encoder, tok, texts, normalize=False))
    head = nn.Linear(features.shape[1], classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(PROBE_STEPS):  # full batch: a few hundred rows of 384 numbers
        loss: Any = nn.functional.cross_entropy(head(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = float((head(features).argmax(1) == labels).float().mean())
    report(
        {"event": "log", "message": f"fine_tune: linear probe on the frozen encoder, training accuracy {accuracy:.3f}"}
    )
    return head


def train_fine_tune(
    texts_train: list[str],
    y_train: Array,
    texts_test: list[str],
    classes: list[str],
    params: TrainParams,
    job_dir: Path,
    report: Report,
    threads: int,
) -> Array:
    """Fine-tune, export, write the pipeline into job_dir and return its (served) predictions on the test texts."""
    import torch
    from torch import nn

    from stratus.formats import bert_encoder_to_onnx, compare_outputs, torch_to_onnx

    torch.manual_seed(params.seed)
    encoder, tokenizer_json = minilm.load()
    tok = minilm.tokenizer(tokenizer_json, params.max_length)
    labels = torch.tensor(np.asarray(y_train), dtype=torch.long)
    head = linear_probe(encoder, tok, texts_train, labels, len(classes), report)
    lr, epochs = settings_of(params)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=lr, weight_decay=params.weight_decay)
    per_epoch = math.ceil(len(texts_train) / params.batch_size)
    total = per_epoch * epochs
    warmup = max(1, total // 10)
    # A short warm-up, then linear decay: the usual schedule for fine-tuning a pretrained transformer.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    generator = torch.Generator().manual_seed(params.seed)
    report({"event": "log", "message": f"fine_tune: {epochs} epochs of {per_epoch} steps, lr {lr:g}"})
    encoder.train()
    for epoch in range(1, epochs + 1):
        order, losses = torch.randperm(len(texts_train), generator=generator), []
        for start in range(0, len(order), params.batch_size):
            index = order[start : start + params.batch_size]
            batch = minilm.encode(tok, [texts_train[int(i)] for i in index])
            loss: Any = nn.functional.cross_entropy(head(minilm.pooled(encoder, batch, normalize=False)), labels[index])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*encoder.parameters(), *head.parameters()], 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        report({"event": "epoch", "epoch": epoch, "epochs": epochs, "loss": float(np.mean(losses))})
    encoder.eval()
    head.eval()

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = head

        def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.linear(pooled)
            return logits, logits.argmax(dim=1)

    files = {
        "tokenizer.json": tokenizer_json,
        "encoder.onnx": bert_encoder_to_onnx(encoder).onnx_bytes,
        "head.onnx": torch_to_onnx(
            Head(),
            torch.zeros(4, encoder.config.hidden_size),
            input_names=("pooled",),
            output_names=("logits", "label"),
        ).onnx_bytes,
    }
    spec = pipeline_spec(len(classes), params.max_length)
    served = minilm.run_pipeline(spec, files, texts_test, threads)
    with torch.no_grad():
        framework = np.concatenate(
            [
                head(minilm.pooled(encoder, minilm.encode(tok, chunk), normalize=False)).numpy()
                for chunk in minilm.batches(texts_test, 64)
            ]
        )
    # What is served (tokenizer + two ONNX graphs) must reproduce the trained model on the whole test split.
    compare_outputs(framework, served["logits"], what="test split", rtol=1e-3, atol=1e-3)
    (job_dir / "pipeline.json").write_bytes(spec)
    for name, content in files.items():
        (job_dir / name).write_bytes(content)
    result: Array = served["label"]
    return result


def text_trainer(request: TrainRequest, job_dir: Path, threads: int, report: Report) -> Callable[..., Array]:
    """What the worker's text path (run_text_classifier) calls to fine-tune on text: it writes the evaluation and
    the result as for every text model."""
    import torch

    torch.set_num_threads(threads)

    def train(texts_train: list[str], y: Array, texts_test: list[str], classes: list[str], *_: Any) -> Array:
        return train_fine_tune(texts_train, y, texts_test, classes, request.params, job_dir, report, threads)

    return train


__all__ = ["FILES", "text_trainer", "train_fine_tune"]
