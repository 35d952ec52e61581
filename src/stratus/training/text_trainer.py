"""The text classifier (training child only): a tokenizer built from the training text, and an
EmbeddingBag-style model (mean of word vectors, padding masked out) with a linear head. It is served as
a pipeline: tokenize -> ONNX classifier, so clients send raw text."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stratus.training.params import TrainParams
from stratus.training.torch_trainers import TorchSetup, init_weights, run_epochs
from stratus.types import Array


class BagOfWords(nn.Module):
    def __init__(self, vocab: int, dim: int, classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embedding(ids) * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        logits = self.head(pooled)
        return logits, logits.argmax(dim=1)


def build_tokenizer(texts: list[str], params: TrainParams) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))  # noqa: S106 - a vocabulary token
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=params.vocab_size, special_tokens=["[PAD]", "[UNK]"])
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a vocabulary token
    tokenizer.enable_truncation(max_length=params.max_length)
    return tokenizer


def encode(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encodings = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    return ids, mask


def train_text(
    texts_train: list[str],
    y_train: Array,
    texts_test: list[str],
    classes: list[str],
    params: TrainParams,
    job_dir: Path,
    report: Callable[[dict[str, Any]], None],
    fit: Callable[[TorchSetup], nn.Module] | None = None,
) -> Array:
    """Train, export, write the pipeline into job_dir and return its predictions on the test texts."""
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    tokenizer = build_tokenizer(texts_train, params)
    report({"event": "log", "message": f"built a {tokenizer.get_vocab_size()}-word vocabulary from the training text"})
    model = BagOfWords(tokenizer.get_vocab_size(), params.embedding_dim, len(classes))
    init_weights(model, params.init)
    ids, mask = encode(tokenizer, texts_train)
    labels = torch.tensor(y_train, dtype=torch.long)
    loss_fn = nn.CrossEntropyLoss()

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = loss_fn(model(ids[index], mask[index])[0], labels[index])
        return loss

    if fit is not None:  # data-parallel (training/distributed.py): the same network and tensors
        inputs = [ids.numpy(), mask.numpy()]
        fit(TorchSetup(model=model, inputs=inputs, labels=labels.numpy(), classify=True, augment=[]))
    else:
        run_epochs(model, len(ids), batch_loss, params, report, generator)
    model.eval()
    return export_text_pipeline(model, tokenizer, texts_test, classes, params, job_dir)


def export_text_pipeline(
    model: nn.Module, tokenizer: Any, texts_test: list[str], classes: list[str], params: TrainParams, job_dir: Path
) -> Array:
    """Export a trained text model (token ids and attention mask in; logits and label out) as the served pipeline
    tokenize -> ONNX, check that the pipeline reproduces the model on the whole test split, write it into job_dir
    and return its predictions. Every text trainer (text_classifier, rnn, transformer) is served this way."""
    from stratus.formats import compare_outputs, torch_to_onnx
    from stratus.runtime.pipeline import PipelineRunner, PipelineSpec

    example = encode(tokenizer, texts_test[:4])
    converted = torch_to_onnx(
        model,
        example,
        input_names=("input_ids", "attention_mask"),
        output_names=("logits", "label"),
        dynamic_axes_extra={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}},
        rtol=1e-4,
        atol=1e-4,
    )
    spec = {
        "kind": "pipeline",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "logits", "datatype": "FP32", "shape": [-1, len(classes)]},
        ],
        "steps": [
            {"op": "tokenize", "file": "tokenizer.json", "input": "text", "max_length": params.max_length},
            {
                "op": "onnx",
                "file": "classifier.onnx",
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask"},
                "outputs": {"logits": "logits", "label": "label"},
            },
        ],
    }
    files = {"tokenizer.json": tokenizer.to_str().encode(), "classifier.onnx": converted.onnx_bytes}
    spec_bytes = json.dumps(spec).encode()
    runner = PipelineRunner(PipelineSpec.parse(spec_bytes), files.__getitem__, lambda ref: b"", threads=1)
    served = runner.run_checked({"text": np.array(texts_test, dtype=object)})["label"]
    with torch.no_grad():
        framework = model(*encode(tokenizer, texts_test))[1].numpy()
    # What is served (tokenizer + ONNX) must reproduce the trained model on the whole test split.
    compare_outputs(framework, served, what="test split", exact=True)
    (job_dir / "pipeline.json").write_bytes(spec_bytes)
    for name, content in files.items():
        (job_dir / name).write_bytes(content)
    result: Array = served
    return result
