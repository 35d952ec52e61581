"""The personalization child: ``python -m stratus.personalize.worker --job DIR --dataset - --threads N``.

It reads the project's rows (personalize/data.py, the same split the server checked), fine-tunes the MiniLM
encoder from the package's weights, exports it into the served `minilm` pipeline's shape, and judges the base
and the personalized model on the held-out rows: the personalized figure is computed from what will be
served (the exported pipeline, run as the server runs it), the base one from the package's weights, which the
served `minilm` reproduces (its build checks a cosine of 0.9999 to sentence-transformers). It writes
pipeline.json, encoder.onnx, tokenizer.json and personalize-report.json; the server registers them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from stratus.personalize.data import Examples, read
from stratus.personalize.request import REPORT_FILE, PersonalizeParams, PersonalizeRequest
from stratus.training import minilm
from stratus.training.worker import child_main, report
from stratus.types import Array

RECALL_AT = 10
KNN = 5
#: Held-out texts on which the served pipeline must reproduce the trained encoder.
CHECKED_TEXTS = 32


def recall_at(queries: Array, candidates: Array, targets: list[int], k: int) -> float:
    """Share of queries whose target candidate is among their k most similar (rows are L2-normalised)."""
    scores = queries @ candidates.T
    target_scores = scores[np.arange(len(targets)), targets]
    # Rank = how many candidates score strictly higher than the target: ties count in the query's favour.
    ranks = (scores > target_scores[:, None]).sum(axis=1)
    return float((ranks < k).mean())


def knn_accuracy(queries: Array, labels: list[str], train: Array, train_labels: list[str], k: int) -> float:
    """Majority label of each query's k nearest training texts (ties: the nearest of the tied labels)."""
    scores = queries @ train.T
    correct = 0
    for row, truth in zip(scores, labels, strict=True):
        nearest = np.argsort(-row, kind="stable")[:k]
        votes: dict[str, int] = {}
        for index in nearest:
            votes[train_labels[index]] = votes.get(train_labels[index], 0) + 1
        top = max(votes.values())
        winner = next(train_labels[i] for i in nearest if votes[train_labels[i]] == top)
        correct += winner == truth
    return correct / len(labels)


class Judge:
    """The held-out metric of one embedding function, the same way for the base and the personalized model."""

    def __init__(self, examples: Examples) -> None:
        self.examples = examples
        if examples.mode == "pairs":
            positives = sorted({p for _, p in examples.train} | {p for _, p in examples.held_out})
            index = {p: i for i, p in enumerate(positives)}
            self.texts = [a for a, _ in examples.held_out] + positives
            self.targets = [index[p] for _, p in examples.held_out]
            self.metric = f"recall@{RECALL_AT}"
        else:
            self.texts = [t for t, _ in examples.held_out] + [t for t, _ in examples.train]
            self.metric = "knn_accuracy"

    def score(self, embeddings: Array) -> dict[str, float]:
        count = len(self.examples.held_out)
        queries, rest = embeddings[:count], embeddings[count:]
        if self.examples.mode == "pairs":
            return {
                self.metric: recall_at(queries, rest, self.targets, RECALL_AT),
                "recall@1": recall_at(queries, rest, self.targets, 1),
            }
        held_labels = [label for _, label in self.examples.held_out]
        train_labels = [label for _, label in self.examples.train]
        k = min(KNN, len(train_labels))
        return {self.metric: knn_accuracy(queries, held_labels, rest, train_labels, k)}


def _pairs_for_step(examples: Examples, rng: np.random.Generator, size: int) -> tuple[list[str], list[str], Any]:
    """A batch of (anchor, positive) texts and the mask of its false negatives: another row's positive that is
    equally right for this anchor (the same positive text, or in labels mode the same label)."""
    import torch

    if examples.mode == "pairs":
        rows = rng.choice(len(examples.train), size=min(size, len(examples.train)), replace=False)
        anchors = [examples.train[i][0] for i in rows]
        positives = [examples.train[i][1] for i in rows]
        keys = positives
    else:
        by_label: dict[str, list[str]] = {}
        for text, label in examples.train:
            by_label.setdefault(label, []).append(text)
        pool = [(t, label) for t, label in examples.train if len(by_label[label]) >= 2]
        rows = rng.choice(len(pool), size=min(size, len(pool)), replace=False)
        anchors, positives, keys = [], [], []
        for i in rows:
            text, label = pool[i]
            others = [t for t in by_label[label] if t != text]
            anchors.append(text)
            positives.append(others[int(rng.integers(len(others)))])
            keys.append(label)
    same = torch.tensor([[a == b for b in keys] for a in keys])
    return anchors, positives, same & ~torch.eye(len(keys), dtype=torch.bool)


def train(model: Any, tok: Any, examples: Examples, params: PersonalizeParams) -> list[float]:
    """In-batch negatives (multiple-negatives ranking): each anchor must pick its own positive out of the batch's
    positives and the other way round, by cross-entropy over scaled cosines. Returns the loss of each step."""
    import torch

    rng = np.random.default_rng(params.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr)
    warmup = max(1, params.steps // 10)
    # A short warm-up, then linear decay: full-rate steps straight away can undo the pretraining on few rows.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (params.steps - s) / max(1, params.steps - warmup)))
    )
    losses: list[float] = []
    model.train()
    for step in range(1, params.steps + 1):
        anchors, positives, false_negatives = _pairs_for_step(examples, rng, params.batch_size)
        a = minilm.pooled(model, minilm.encode(tok, anchors), normalize=True)
        p = minilm.pooled(model, minilm.encode(tok, positives), normalize=True)
        scores = (a @ p.T * params.scale).masked_fill(false_negatives, float("-inf"))
        target = torch.arange(len(anchors))
        loss: Any = (
            torch.nn.functional.cross_entropy(scores, target) + torch.nn.functional.cross_entropy(scores.T, target)
        ) / 2
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == params.steps:
            report({"event": "epoch", "epoch": step, "epochs": params.steps, "loss": losses[-1], "step": "personalize"})
    model.eval()
    return losses


def run(job_dir: Path, data: bytes, threads: int) -> None:
    import torch

    from stratus.formats import bert_encoder_to_onnx

    spec = json.loads((job_dir / "request.json").read_text())
    request = PersonalizeRequest.model_validate(spec["request"])
    params = request.params
    torch.set_num_threads(threads)
    torch.manual_seed(params.seed)
    examples = read(data, spec["dataset"]["name"], mode=params.mode, held_out=params.held_out, seed=params.seed)
    report({"event": "log", "message": f"personalize {request.base} on {examples.summary()}"})
    model, tokenizer_json = minilm.load()
    judge = Judge(examples)
    # Judged with the served pipeline's truncation; trained with the (shorter) training one.
    served_tok = minilm.tokenizer(tokenizer_json, minilm.SERVED_MAX_TOKENS)
    base = judge.score(minilm.embed(model, served_tok, judge.texts))
    report({"event": "log", "message": f"base {judge.metric} {base[judge.metric]:.4f}"})

    started = time.monotonic()
    losses = train(model, minilm.tokenizer(tokenizer_json, params.max_length), examples, params)
    train_seconds = time.monotonic() - started

    converted = bert_encoder_to_onnx(model)
    files = {"encoder.onnx": converted.onnx_bytes, "tokenizer.json": tokenizer_json}
    spec_bytes = minilm.embedding_spec()
    served = minilm.run_pipeline(spec_bytes, files, judge.texts, threads)["embedding"]
    # What is served must be the model that was trained (the export itself is checked on a two-row example).
    check = judge.texts[:CHECKED_TEXTS]
    min_cosine = float((served[: len(check)] * minilm.embed(model, served_tok, check)).sum(axis=1).min())
    if min_cosine < 0.999:
        raise RuntimeError(f"the exported pipeline differs from the trained encoder: min cosine {min_cosine:.5f}")
    personalized = judge.score(served)
    result: dict[str, Any] = {
        "base_model": request.base,
        "mode": examples.mode,
        "metric": judge.metric,
        "base": base[judge.metric],
        "personalized": personalized[judge.metric],
        "improvement": personalized[judge.metric] - base[judge.metric],
        **{f"base_{k}": v for k, v in base.items() if k != judge.metric},
        **{f"personalized_{k}": v for k, v in personalized.items() if k != judge.metric},
        **examples.summary(),
        "judged_texts": len(judge.texts),
        "steps": params.steps,
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-10:])),
        "train_seconds": round(train_seconds, 2),
        "served_vs_trained_min_cosine": min_cosine,
    }
    (job_dir / "pipeline.json").write_bytes(spec_bytes)
    for name, content in files.items():
        (job_dir / name).write_bytes(content)
    (job_dir / REPORT_FILE).write_text(json.dumps(result))
    report({"event": "done", "metrics": {k: v for k, v in result.items() if isinstance(v, float)}})


def main() -> None:
    child_main(run)


if __name__ == "__main__":
    main()
