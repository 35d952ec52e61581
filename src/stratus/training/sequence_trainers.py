"""The ``rnn`` and ``transformer`` trainers (training child only): text, or numeric sequences.

Text goes through the text classifier's path (training/text_trainer.py): the same word-level tokenizer built from
the training text, and the same export, a pipeline tokenize -> ONNX checked on the whole test split, so clients
send raw text over V2 (BYTES) and V1 alike. Numeric sequences ([n, time, features], ragged ones padded with NaN
steps: training/sequence_data.py) export as one ONNX model whose input is [batch, time, features].

Both exports keep the sequence length dynamic, and both are checked at a second, shorter length against torch
beyond the usual export checks. The epoch loop is this module's own (gradient clipping, which recurrent networks
need, and batches cut to their longest real sequence); its events are the other torch trainers'.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stratus.errors import InvalidInput
from stratus.training.datasets import ParsedDataset
from stratus.training.params import TrainParams, TrainRequest
from stratus.training.sequence_data import pad
from stratus.training.sequence_models import NumericSequenceModel, TextSequenceModel
from stratus.training.torch_trainers import Report, _optimizer, _scheduler, init_weights
from stratus.types import Array

#: Gradients are clipped to this norm: an LSTM's can explode on long sequences.
CLIP_NORM = 1.0
#: The second sequence length the export is checked at (a fraction of the example's).
SHORTER = 0.5


def _validation_split(n: int, params: TrainParams, labels: Array, classify: bool) -> tuple[Array, Array]:
    """(fit rows, validation rows) of the training split: validation only when early stopping asks for it."""
    rows = np.arange(n)
    if params.patience is None or params.validation_split <= 0:
        return rows, rows[:0]
    from sklearn.model_selection import train_test_split

    # As the worker splits (stratified when every class has two rows), written here: the worker imports this module.
    stratify = labels if classify and np.bincount(labels).min() >= 2 else None
    fit_rows, val_rows = train_test_split(
        rows, test_size=params.validation_split, random_state=params.seed, stratify=stratify
    )
    return np.asarray(fit_rows), np.asarray(val_rows)


def fit(
    model: nn.Module,
    inputs: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    labels: torch.Tensor,
    rows: Array,
    val_rows: Array,
    *,
    classify: bool,
    params: TrainParams,
    report: Report,
) -> None:
    """Train ``model`` on ``rows`` (``inputs(index)`` gives a batch's tensors), a progress event per epoch, early
    stopping on ``val_rows`` with the best weights kept. Leaves the model in eval mode."""
    generator = torch.Generator().manual_seed(params.seed)
    optimizer = _optimizer(model, params)
    scheduler = _scheduler(optimizer, params)
    loss_fn: nn.Module = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    train_rows, held = torch.from_numpy(rows), torch.from_numpy(val_rows)
    best_state, best_score, stale = None, -math.inf, 0
    started = time.monotonic()
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = train_rows[torch.randperm(len(train_rows), generator=generator)]
        total = 0.0
        for start in range(0, len(order), params.batch_size):
            index = order[start : start + params.batch_size]
            optimizer.zero_grad()
            out = model(*inputs(index))
            loss: torch.Tensor = loss_fn(out[0] if classify else out, labels[index])
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            optimizer.step()
            total += float(loss.detach()) * len(index)
        event: dict[str, Any] = {"event": "epoch", "epoch": epoch, "epochs": params.epochs, "loss": total / len(order)}
        if len(held):
            score = _score(model, inputs, labels, held, classify)
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
        event["eta_s"] = (time.monotonic() - started) / epoch * (params.epochs - epoch)
        event["lr"] = optimizer.param_groups[0]["lr"]
        report(event)
        if params.patience is not None and stale >= params.patience:
            report({"event": "log", "message": f"early stopping after epoch {epoch}: no gain for {stale} epochs"})
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()


def _score(
    model: nn.Module,
    inputs: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    labels: torch.Tensor,
    rows: torch.Tensor,
    classify: bool,
) -> float:
    model.eval()
    with torch.no_grad():
        out = model(*inputs(rows))
    if classify:
        return float((out[1] == labels[rows]).float().mean())
    return -float(((out - labels[rows]) ** 2).mean())


def _check_shorter(model: nn.Module, onnx_bytes: bytes, feeds: dict[str, Array], what: str) -> None:
    """The exported graph at another sequence length gives torch's result (the export itself checked one)."""
    from stratus.formats.verify import compare_outputs, run_onnx

    with torch.no_grad():
        expected = model(*(torch.from_numpy(v) for v in feeds.values()))
    actual = run_onnx(onnx_bytes, feeds)
    compare_outputs(expected[0].numpy() if isinstance(expected, tuple) else expected.numpy(), actual[0], what=what)


def train_text_sequence(
    model_name: str,
    texts_train: list[str],
    y_train: Array,
    texts_test: list[str],
    classes: list[str],
    params: TrainParams,
    job_dir: Path,
    report: Report,
) -> Array:
    """Train an rnn or transformer on text, export it as the text classifier's pipeline (tokenize -> ONNX) and
    return the pipeline's predictions on the test texts."""
    from stratus.formats import torch_to_onnx
    from stratus.training.text_trainer import build_tokenizer, encode, export_text_pipeline

    torch.manual_seed(params.seed)
    tokenizer = build_tokenizer(texts_train, params)
    report({"event": "log", "message": f"built a {tokenizer.get_vocab_size()}-word vocabulary from the training text"})
    model = TextSequenceModel(model_name, tokenizer.get_vocab_size(), len(classes), params)
    init_weights(model, params.init)
    ids, mask = encode(tokenizer, texts_train)
    labels = torch.tensor(y_train, dtype=torch.long)
    noise = torch.Generator().manual_seed(params.seed + 1)

    def batch(index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Cut the batch to its longest text: the padding beyond it changes nothing (the models are exact under
        # padding) but costs recurrent steps.
        longest = max(int(mask[index].sum(1).max()), 1)
        batch_ids = ids[index, :longest]
        if params.token_dropout and model.training:
            # Word dropout: training words become [UNK] (id 1) at random, so no single word decides a text.
            drop = (torch.rand(batch_ids.shape, generator=noise) < params.token_dropout) & (batch_ids > 1)
            batch_ids = torch.where(drop, torch.ones_like(batch_ids), batch_ids)
        return batch_ids, mask[index, :longest]

    rows, val_rows = _validation_split(len(ids), params, np.asarray(y_train), True)
    fit(model, batch, labels, rows, val_rows, classify=True, params=params, report=report)
    test_ids, test_mask = encode(tokenizer, texts_test[:8])
    shorter = max(1, int(test_ids.shape[1] * SHORTER))
    converted = torch_to_onnx(
        model,
        (test_ids, test_mask),
        input_names=("input_ids", "attention_mask"),
        output_names=("logits", "label"),
        dynamic_axes_extra={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}},
        rtol=1e-4,
        atol=1e-4,
    )
    feeds = {"input_ids": test_ids[:, :shorter].numpy(), "attention_mask": test_mask[:, :shorter].numpy()}
    _check_shorter(model, converted.onnx_bytes, feeds, f"{shorter} tokens")
    return export_text_pipeline(model, tokenizer, texts_test, classes, params, job_dir)


def train_numeric_sequence(
    model_name: str,
    x_train: Array,
    y_train: Array,
    x_test: Array,
    *,
    classify: bool,
    classes: int,
    params: TrainParams,
    report: Report,
) -> tuple[nn.Module, bytes, Array]:
    """Train on [n, time, features] (NaN steps are padding) and export: (model, ONNX bytes, torch's test outputs:
    labels, or predictions for regression)."""
    from stratus.formats import torch_to_onnx

    torch.manual_seed(params.seed)
    model = NumericSequenceModel(
        model_name, x_train.shape[2], x_train.shape[1], classes if classify else 1, classify, params
    )
    model.fit_scaling(x_train)
    init_weights(model, params.init)
    xs = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    real = ~torch.isnan(xs).all(dim=-1)
    labels = torch.tensor(y_train, dtype=torch.long if classify else torch.float32)

    def batch(index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        longest = max(int(real[index].sum(1).max()), 1)
        return (xs[index, :longest],)

    rows, val_rows = _validation_split(len(xs), params, np.asarray(y_train), classify)
    fit(model, batch, labels, rows, val_rows, classify=classify, params=params, report=report)
    example = np.ascontiguousarray(x_test[:8], dtype=np.float32)
    names = ("logits", "label") if classify else ("prediction",)
    converted = torch_to_onnx(
        model, example, output_names=names, dynamic_axes_extra={"input": {1: "time"}}, rtol=1e-4, atol=1e-4
    )
    shorter = max(1, int(example.shape[1] * SHORTER))
    _check_shorter(model, converted.onnx_bytes, {"input": example[:, :shorter]}, f"{shorter} time steps")
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)))
    framework = out[1].numpy() if classify else out.numpy()
    return model, converted.onnx_bytes, framework


def sequences_of(parsed: ParsedDataset) -> Array:
    """The dataset's sequences as one NaN-padded [n, time, features] array: the CSV's list column, or an
    NPZ's 3-D X (parsed as one image channel)."""
    if parsed.sequences is not None:
        return pad(parsed.sequences)
    if parsed.image_shape is not None and parsed.image_shape[0] == 1:
        result: Array = parsed.X[:, 0].astype(np.float32)
        return result
    raise InvalidInput("the dataset holds no numeric sequences")


def text_trainer(request: TrainRequest, job_dir: Path, threads: int, report: Report) -> Callable[..., Array]:
    """What the worker's text path (run_text_classifier) calls to train an rnn or transformer on text."""
    torch.set_num_threads(threads)

    def train(texts_train: list[str], y: Array, texts_test: list[str], classes: list[str], *_: Any) -> Array:
        return train_text_sequence(request.model, texts_train, y, texts_test, classes, request.params, job_dir, report)

    return train


def run_numeric_sequence(
    job_dir: Path,
    parsed: ParsedDataset,
    train_rows: Array,
    test_rows: Array,
    y_train: Array,
    y_test: Array,
    request: TrainRequest,
    threads: int,
    report: Report,
) -> None:
    """The training child's part for rnn and transformer jobs on numeric sequences: model.onnx and the worker's
    evaluation files."""
    from stratus import __version__
    from stratus.formats import compare_outputs
    from stratus.formats.verify import run_onnx
    from stratus.training.evaluate import classification_metrics, confusion_png, regression_metrics

    torch.set_num_threads(threads)
    params = request.params
    classify = parsed.task == "classification"
    x = sequences_of(parsed)
    x_train, x_test = x[train_rows], x[test_rows]
    lengths = (~np.isnan(x).all(axis=-1)).sum(axis=1)
    report(
        {
            "event": "log",
            "message": f"train {len(x_train)} sequences, test {len(x_test)}: {int(lengths.min())} to "
            f"{int(lengths.max())} steps of {x.shape[2]} feature(s) ({parsed.task})",
        }
    )
    _, onnx_bytes, framework = train_numeric_sequence(
        request.model, x_train, y_train, x_test, classify=classify, classes=len(parsed.classes), params=params,
        report=report,
    )  # fmt: skip
    served = run_onnx(onnx_bytes, {"input": np.ascontiguousarray(x_test, dtype=np.float32)})[1 if classify else 0]
    # The artifact is what gets served: it must reproduce torch on the whole test split.
    compare_outputs(framework.reshape(served.shape), served, what="test split", exact=classify, rtol=1e-4, atol=1e-4)
    if classify:
        metrics = classification_metrics(y_test, served, parsed.classes)
        (job_dir / "confusion_matrix.png").write_bytes(confusion_png(metrics["confusion_matrix"], parsed.classes))
    else:
        metrics = regression_metrics(y_test, served)
    (job_dir / "model.onnx").write_bytes(onnx_bytes)
    evaluation = {"classes": parsed.classes, "test_predictions": served.ravel().tolist(), "seed": params.seed}
    (job_dir / "evaluation.json").write_text(json.dumps(evaluation))
    result = {
        "metrics": metrics,
        "task": parsed.task,
        "source": f"trainer:{request.model}",
        "stratus_version": __version__,
    }
    (job_dir / "result.json").write_text(json.dumps(result))
    report({"event": "done", "metrics": {k: v for k, v in metrics.items() if isinstance(v, float)}})
